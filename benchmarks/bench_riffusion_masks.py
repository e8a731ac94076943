"""The riffusion generator's masks at Stable Diffusion's latent scale, on real noise.

Run: ``python benchmarks/bench_riffusion_masks.py`` (writes
benchmarks/results/riffusion_masks.json; about a minute on one core). No model is needed:
the masks the generator hands diffusers are computed by the generator's own functions
and diffusers' own downsampling is reproduced (nearest-neighbour resizing to the
64 x 64 latent grid takes the top-left pixel of each 8 x 8 block).

For every generation window of the ten recordings in ../shared/data/noise (the pipeline's
own windows and masks, mask_area 0.15), shares of the 512 x 512 image or of the core M:

* ``before`` (the masks handed over as they were): the enlarged core grew 2 pixels
  everywhere, more while under 8 % of the image; diffusers sampled one pixel per block.
  ``core_missed``: core pixels whose block was kept by the inpainting (they came out as
  the VAE's reconstruction of the noise), and the share of the core's mel energy they
  carry; ``outpaint_not_generated``: pixels outside M whose block the outpainting kept;
  ``inpaint_pixel_share``: pixels the inpainting took from the model;
  ``inpaint_latent_share``: latent blocks it repainted.
* ``after`` (this version): :func:`bnmusic_bridge.mask.enlarge_mask` (1 pixel, regions
  under 64 pixels only), outpainting keeps blocks at least half core
  (:func:`~bnmusic_bridge.generators.riffusion.latent_keep_mask`), inpainting repaints
  every block touching the enlarged core or the pixels outpainting did not generate
  (:func:`~bnmusic_bridge.generators.riffusion.latent_repaint_mask`).
* ``outpaint_keep_rules``: the outpainting's kept blocks under other rules (a block kept
  when any / a quarter / half / all of its pixels are core): the image share kept, the
  share of the core's pixels the model conditions on, and the inpainting's pixel share
  that follows.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result  # noqa: E402

from bnmusic_bridge import audio as audio_io  # noqa: E402
from bnmusic_bridge.generators.riffusion import (  # noqa: E402
    OUTPAINT_KEEP_SHARE,
    latent_keep_mask,
    latent_repaint_mask,
)
from bnmusic_bridge.mask import enlarge_mask  # noqa: E402
from bnmusic_bridge.pipeline import NoiseWindows, _analyse_noise  # noqa: E402
from bnmusic_bridge.request import RenderRequest  # noqa: E402

NOISE_DIR = REPO.parent / "shared" / "data" / "noise"
FACTOR = 8  # Stable Diffusion 1.x's VAE: one latent per 8 x 8 pixels
KEEP_RULES = {"any": 1e-9, "quarter": 0.25, "half": 0.5, "all": 1.0}


def sampled(mask: np.ndarray) -> np.ndarray:
    """What diffusers made of a pixel mask: the top-left pixel of each block, spread back."""
    top_left = mask[::FACTOR, ::FACTOR]
    return np.repeat(np.repeat(top_left, FACTOR, 0), FACTOR, 1)


def old_enlarge(core: np.ndarray) -> np.ndarray:
    """The enlargement before this version: 2 pixels everywhere, more while under 8 %."""
    return enlarge_mask(core, 2, small_region_px=10**9, min_share=0.08, max_enlarge_px=8)


def measure_window(core: np.ndarray, energy: np.ndarray, enlarged: np.ndarray) -> dict[str, Any]:
    core_px = max(int(core.sum()), 1)
    core_energy = max(float(energy[core].sum()), 1e-30)

    before_e = old_enlarge(core)
    before_inpaint = sampled(before_e)  # blocks diffusers repainted
    missed = core & ~before_inpaint
    before_outpaint_kept = sampled(core)
    before = {
        "enlarged_share": float(before_e.mean()),
        "inpaint_pixel_share": float(before_e.mean()),
        "inpaint_latent_share": float(before_inpaint.mean()),
        "core_missed_pixel_share": float(missed.sum() / core_px),
        "core_missed_energy_share": float(energy[missed].sum() / core_energy),
        "outpaint_not_generated": float((before_outpaint_kept & ~core).mean()),
    }

    kept = latent_keep_mask(core, FACTOR, OUTPAINT_KEEP_SHARE)
    not_generated = kept & ~core
    repaint = enlarged | not_generated
    latent = latent_repaint_mask(repaint, FACTOR)
    after = {
        "enlarged_share": float(enlarged.mean()),
        "outpaint_kept_share": float(kept.mean()),
        "core_conditioned_share": float((core & kept).sum() / core_px),
        "outpaint_not_generated": float(not_generated.mean()),
        "inpaint_pixel_share": float(repaint.mean()),
        "inpaint_latent_share": float(latent.mean()),
        "core_missed_pixel_share": float((core & ~latent).sum() / core_px),
    }
    rules = {}
    for name, share in KEEP_RULES.items():
        k = latent_keep_mask(core, FACTOR, share)
        r = enlarged | (k & ~core)
        rules[name] = {
            "outpaint_kept_share": float(k.mean()),
            "core_conditioned_share": float((core & k).sum() / core_px),
            "inpaint_pixel_share": float(r.mean()),
        }
    return {"core_share": float(core.mean()), "before": before, "after": after, "keep_rules": rules}


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"windows": len(rows), "core_share": summary([r["core_share"] for r in rows])}
    for part in ("before", "after"):
        out[part] = {key: summary([r[part][key] for r in rows]) for key in rows[0][part]}
    out["keep_rules"] = {
        name: {key: summary([r["keep_rules"][name][key] for r in rows]) for key in rows[0]["keep_rules"][name]}
        for name in KEEP_RULES
    }
    return out


def main() -> int:
    files = sorted(NOISE_DIR.glob("*.wav"))
    if not files:
        print(f"no recordings in {NOISE_DIR}", file=sys.stderr)
        return 2
    request = RenderRequest()
    per_file: dict[str, list[dict[str, Any]]] = {}
    for path in files:
        analysed = _analyse_noise(audio_io.read_stem(path), request)
        rows = []
        for window in NoiseWindows(analysed):
            f0 = analysed.plan.start_frames[window.index]
            mel = analysed.mel_padded[:, f0 : f0 + window.image.shape[1]][::-1]  # picture orientation
            rows.append(
                {
                    "window": window.index,
                    **measure_window(window.mask, mel.astype(np.float64) ** 2, window.mask_enlarged),
                }
            )
        per_file[path.name] = rows
        first = rows[0]
        print(
            f"{path.stem[:30]:30s} core {first['core_share']:.3f} | before: inpaint "
            f"{first['before']['inpaint_pixel_share']:.3f} missed {first['before']['core_missed_pixel_share']:.3f}"
            f" ({first['before']['core_missed_energy_share']:.3f} energy) | after: inpaint "
            f"{first['after']['inpaint_pixel_share']:.3f} (latent {first['after']['inpaint_latent_share']:.3f})"
            f" conditioned {first['after']['core_conditioned_share']:.3f}",
            flush=True,
        )
    every = [r for rows in per_file.values() for r in rows]
    firsts = [rows[0] for rows in per_file.values()]
    path = write_result(
        "riffusion_masks",
        {
            "benchmark": __doc__.split("\n\n")[0],
            "inputs": [p.name for p in files],
            "mask_area": request.mask_area,
            "latent_factor": FACTOR,
            "outpaint_keep_share": OUTPAINT_KEEP_SHARE,
            "all_windows": summarise(every),
            "first_window_of_each_recording": summarise(firsts),
            "per_file": per_file,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
