"""Blend controls benchmark: what coverage costs in gain and loudness, per threshold model,
and what each objective reaches under a loudness ceiling. Chooses the defaults.

Run: ``python benchmarks/bench_blend.py`` (writes benchmarks/results/blend.json; about
10 minutes on one core of a loaded 2-core machine).

Inputs: the ten real noise recordings in ../shared/data/noise, each with

* ``procedural``: music from the embedded generator, rendered through
  :func:`bnmusic_bridge.pipeline.render` (unity music loudness-matched to the noise, as
  the pipeline does);
* ``real-music``: each of the three real music excerpts in ../shared/data/music, looped
  or cut to the noise's length and loudness-matched to it (integrated LUFS of the mono
  mixes, as the pipeline does): a stand-in for music that is not aligned with the noise.

The noise's mel and high-energy mask come from the pipeline's render (they depend on the
noise only). Measured per pair and model (``smr``: the paper's 21 dB SMR; ``spreading``:
psychoacoustic model 1 on the mel grid):

1. ``scalar``: the one gain for the whole clip that masks 50 / 80 / 90 % of the mask's
   bins (the paper's single lambda), the music loudness it gives (integrated LUFS of the
   gained music minus the noise's, LU, measured), and its sample peak (dBFS);
2. ``lane``: the coverage objective's lane for the same targets (default smoothing and
   slew; no ceiling, peak limit off), its loudness over the noise and the coverage
   reached;
3. ``capped``: every objective (paper; coverage at 0.5 and 0.8) under loudness ceilings
   of 0, +3, +6, +10 LU and none, with the peak limit on (-1 dBFS): coverage reached,
   loudness over the noise, peak, the share of lane windows that fell short;
   ``capped_no_peak_limit``: the same with the peak limit off (the masking/loudness
   trade-off alone, as if the noise stem had been recorded with more headroom);
4. ``baseline``, same run: the status quo before the blend controls (paper objective,
   smr model, no ceiling), as capped row ``paper/none``; the chosen defaults are also
   rendered end to end through ``render`` and checked against the same computation.

Stage 2 is run by :func:`bnmusic_bridge.blend.plan_blend` and
:func:`bnmusic_bridge.blend.finish_blend`, the functions the pipeline calls, on the very
arrays the pipeline gives them (all recordings are 44.1 kHz mono, so no resampling).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy loads its BLAS

import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_description  # noqa: E402

from bnmusic_bridge.amplify import solve_gain_for_coverage  # noqa: E402
from bnmusic_bridge.blend import PEAK_CEILING_DBFS, BlendSettings, finish_blend, plan_blend  # noqa: E402
from bnmusic_bridge.grid import SAMPLE_RATE_HZ  # noqa: E402
from bnmusic_bridge.loudness import integrated_lufs  # noqa: E402
from bnmusic_bridge.masking import THRESHOLD_MODELS, masking_field  # noqa: E402
from bnmusic_bridge.pipeline import render  # noqa: E402
from bnmusic_bridge.request import RenderRequest, field_default  # noqa: E402
from bnmusic_bridge.spectrogram import audio_to_mel  # noqa: E402

DATA = REPO.parent / "shared" / "data"
OUT = REPO / "benchmarks" / "results" / "blend.json"
TARGETS = (0.5, 0.8, 0.9)
CEILINGS_LU: tuple[float | None, ...] = (0.0, 3.0, 6.0, 10.0, None)
OBJECTIVES = (("paper", None), ("coverage", 0.5), ("coverage", 0.8))
NO_PEAK_LIMIT_DBFS = 300.0  # "peak limit off" for the uncapped lane rows
SEED = 0


def _read(path: Path) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE_HZ:
        raise SystemExit(f"{path}: expected {SAMPLE_RATE_HZ} Hz, got {rate}")
    return audio.T.copy()


def _fit(music: np.ndarray, n: int) -> np.ndarray:
    reps = int(math.ceil(n / music.shape[1]))
    return np.tile(music, (1, reps))[:, :n]


def _lu(audio: np.ndarray, noise: np.ndarray) -> float:
    return integrated_lufs(audio, SAMPLE_RATE_HZ) - integrated_lufs(noise, SAMPLE_RATE_HZ)


def _peak_dbfs(audio: np.ndarray) -> float:
    peak = float(np.max(np.abs(audio)))
    return 20.0 * math.log10(peak) if peak > 0 else -120.0


def _db(gain: float) -> float | None:
    if gain <= 0.0:
        return -120.0
    return None if not math.isfinite(gain) else 20.0 * math.log10(gain)


def _measure_pair(
    noise: np.ndarray,
    music: np.ndarray,
    noise_mel: np.ndarray,
    music_mel: np.ndarray,
    mask: np.ndarray,
) -> dict[str, Any]:
    """All measurements for one (noise, unity music) pair, both models."""
    noise_lufs = integrated_lufs(noise, SAMPLE_RATE_HZ)
    row: dict[str, Any] = {"unity_lu": _lu(music, noise), "unity_peak_dbfs": _peak_dbfs(music)}
    for model in THRESHOLD_MODELS:
        field = masking_field(model, noise_mel, music_mel, smr_db=field_default("smr_db"))
        out: dict[str, Any] = {"scalar": {}, "lane": {}}
        for t in TARGETS:
            g = solve_gain_for_coverage(field, mask, t)
            g_db = _db(g)
            out["scalar"][str(t)] = {
                "gain_db": g_db,
                "lu": None if g_db is None else _lu(music * g, noise),
                "peak_dbfs": None if g_db is None else _peak_dbfs(music * g),
            }
            settings = BlendSettings.from_request(
                RenderRequest(
                    objective="coverage",
                    threshold_model=model,
                    target_coverage=t,
                    max_loudness_lu=None,
                    max_gain_db=48.0,
                ),
                peak_ceiling_dbfs=NO_PEAK_LIMIT_DBFS,
            )
            gained, blend = finish_blend(
                plan_blend(noise_mel, music_mel, mask, music, noise_lufs, settings),
                music,
                SAMPLE_RATE_HZ,
            )
            out["lane"][str(t)] = {
                "lu": _lu(gained, noise),
                "mean_gain_db": float(np.mean(blend.lane.frame_gain_db)),
                "coverage": blend.coverage,
                "peak_dbfs": _peak_dbfs(gained),
            }
        for peak_key, peak_dbfs in (("capped", -1.0), ("capped_no_peak_limit", NO_PEAK_LIMIT_DBFS)):
            out[peak_key] = {}
            for objective, target in OBJECTIVES:
                for ceiling in CEILINGS_LU:
                    settings = BlendSettings.from_request(
                        RenderRequest(
                            objective=objective,
                            threshold_model=model,
                            target_coverage=target or field_default("target_coverage"),
                            max_loudness_lu=ceiling,
                            # the peak limit in the lane (peak_mode="lane"); the
                            # no-limit rows lift its ceiling out of reach
                            peak_mode="lane",
                        ),
                        peak_ceiling_dbfs=peak_dbfs,
                    )
                    gained, blend = finish_blend(
                        plan_blend(noise_mel, music_mel, mask, music, noise_lufs, settings),
                        music,
                        SAMPLE_RATE_HZ,
                    )
                    windows = blend.lane.window_times_s.size
                    out[peak_key][_config(objective, target, ceiling)] = {
                        "coverage": blend.coverage,
                        "lu": _lu(gained, noise),
                        "peak_dbfs": _peak_dbfs(gained),
                        "windows_short_share": len(blend.shortfalls) / windows,
                        "short_by": sorted({s.limited_by for s in blend.shortfalls}),
                        "trim_db": blend.trim_db,
                        "nmr_db": blend.nmr_db,
                    }
        row[model] = out
    return row


def _config(objective: str, target: float | None, ceiling: float | None) -> str:
    name = objective if target is None else f"{objective}{target:g}"
    return f"{name}/{'none' if ceiling is None else f'{ceiling:+g}LU'}"


def _stats(values: list[float | None]) -> dict[str, Any]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"median": None, "min": None, "max": None, "n": 0, "unreachable": len(values)}
    return {
        "median": round(statistics.median(finite), 3),
        "min": round(min(finite), 3),
        "max": round(max(finite), 3),
        "n": len(finite),
        "unreachable": len(values) - len(finite),
    }


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"pairs": len(rows)}
    for model in THRESHOLD_MODELS:
        m: dict[str, Any] = {"scalar": {}, "lane": {}}
        for t in TARGETS:
            key = str(t)
            m["scalar"][key] = {
                k: _stats([r[model]["scalar"][key][k] for r in rows])
                for k in ("gain_db", "lu", "peak_dbfs")
            }
            m["lane"][key] = {
                k: _stats([r[model]["lane"][key][k] for r in rows])
                for k in ("lu", "mean_gain_db", "coverage", "peak_dbfs")
            }
        for peak_key in ("capped", "capped_no_peak_limit"):
            m[peak_key] = {}
            for cfg in rows[0][model][peak_key]:
                vals = [r[model][peak_key][cfg] for r in rows]
                m[peak_key][cfg] = {
                    k: _stats([v[k] for v in vals])
                    for k in (
                        "coverage",
                        "lu",
                        "peak_dbfs",
                        "windows_short_share",
                        "nmr_db",
                        "trim_db",
                    )
                }
                m[peak_key][cfg]["short_by"] = sorted({s for v in vals for s in v["short_by"]})
                m[peak_key][cfg]["reached_target_pairs"] = (
                    sum(v["windows_short_share"] == 0.0 for v in vals)
                    if "coverage" in cfg
                    else None
                )
        out[model] = m
    return out


def _machine() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    return {
        **machine_description(),
        "threads": "1 (OMP/OPENBLAS/MKL_NUM_THREADS=1, torch.set_num_threads(1))",
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty_paths_that_matter": git(
            "status",
            "--porcelain",
            "--",
            "bnmusic_bridge/generators",
            "bnmusic_bridge/spectrogram.py",
            "bnmusic_bridge/masking.py",
            "bnmusic_bridge/amplify.py",
            "bnmusic_bridge/blend.py",
            "bnmusic_bridge/pipeline.py",
        ).splitlines(),
    }


def main() -> None:
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    machine = _machine()
    noises = sorted((DATA / "noise").glob("*.wav"))
    musics = sorted((DATA / "music").glob("*.wav"))
    if not noises:
        raise SystemExit(f"no recordings in {DATA / 'noise'}")
    base_req = RenderRequest(
        seed=SEED, objective="paper", threshold_model="smr", max_loudness_lu=None
    )
    proc_rows, real_rows, pipeline_checks = [], [], []
    timings: dict[str, list[float]] = {
        "render_s": [],
        "stage2_plan_ms_coverage_spreading": [],
        "stage2_plan_ms_paper_smr": [],
    }
    for noise_path in noises:
        noise = _read(noise_path)
        t0 = time.perf_counter()
        res = render(noise, SAMPLE_RATE_HZ, base_req)
        timings["render_s"].append(time.perf_counter() - t0)
        noise_mel, mask = res.analysis.noise_mel, res.analysis.mask
        music = res.music
        music_mel = res.analysis.music_mel
        noise_lufs = integrated_lufs(noise, SAMPLE_RATE_HZ)
        for key, settings in (
            (
                "stage2_plan_ms_coverage_spreading",
                BlendSettings.from_request(RenderRequest(max_loudness_lu=6.0)),
            ),
            (
                "stage2_plan_ms_paper_smr",
                BlendSettings.from_request(RenderRequest(objective="paper", threshold_model="smr")),
            ),
        ):
            t0 = time.perf_counter()
            plan_blend(noise_mel, music_mel, mask, music, noise_lufs, settings)
            timings[key].append(1e3 * (time.perf_counter() - t0))
        row = _measure_pair(noise, music, noise_mel, music_mel, mask)
        row.update({"noise": noise_path.stem, "music": "procedural", "noise_lufs": noise_lufs})
        proc_rows.append(row)
        # the defaults, end to end through render(), against the same computation here
        default = RenderRequest(seed=SEED)
        res_d = render(noise, SAMPLE_RATE_HZ, default)
        settings = BlendSettings.from_request(default)
        gained, blend = finish_blend(
            plan_blend(noise_mel, music_mel, mask, music, noise_lufs, settings),
            music,
            SAMPLE_RATE_HZ,
        )
        pipeline_checks.append(
            {
                "noise": noise_path.stem,
                "render_coverage": res_d.coverage,
                "here_coverage": blend.coverage,
                "render_lu": _lu(res_d.music_gained, noise),
                "here_lu": _lu(gained, noise),
                "render_peak_dbfs": _peak_dbfs(res_d.music_gained),
                "shortfall_windows": len(res_d.details.shortfalls),
                "short_by": sorted({s.limited_by for s in res_d.details.shortfalls}),
            }
        )
        print(
            f"{noise_path.stem}: procedural done ({time.perf_counter() - t_start:.0f} s)",
            flush=True,
        )
        for music_path in musics:
            raw = _fit(_read(music_path), noise.shape[1])
            mono = raw.mean(axis=0)
            matched = raw * np.float32(
                10.0
                ** (
                    (
                        integrated_lufs(noise.mean(axis=0), SAMPLE_RATE_HZ)
                        - integrated_lufs(mono, SAMPLE_RATE_HZ)
                    )
                    / 20.0
                )
            )
            matched = matched.mean(axis=0, keepdims=True).astype(np.float32)  # mono stems
            row = _measure_pair(noise, matched, noise_mel, audio_to_mel(matched[0]), mask)
            row.update(
                {"noise": noise_path.stem, "music": music_path.stem, "noise_lufs": noise_lufs}
            )
            real_rows.append(row)
        print(
            f"{noise_path.stem}: real music done ({time.perf_counter() - t_start:.0f} s)",
            flush=True,
        )

    result = {
        "benchmark": "blend",
        "machine": machine,
        "settings": {
            "seed": SEED,
            "mask": "loudest 15% of the noise's mel bins (pipeline default mask_area)",
            "unity_gain": "music loudness-matched to the noise (integrated LUFS, BS.1770, mono mixes)",
            "lu": "integrated LUFS of the (gained) music minus the noise's, measured on the stems",
            "targets": TARGETS,
            "ceilings_lu": CEILINGS_LU,
            "objectives": [_config(o, t, None).split("/")[0] for o, t in OBJECTIVES],
            "lane": "window 2.56 s, hop 1.28 s, smoothing 2 s, slew 12 dB/s, min -30 dB, max +24 dB "
            "(uncapped lane rows: max +48 dB, no peak limit)",
            "peak_limit_dbfs": PEAK_CEILING_DBFS,
            "pairs_capped_columns": CAPPED_COLUMNS,
            "baseline": "paper objective, smr model, no ceiling (capped 'paper/none' under smr), "
            "the Stage 2 behaviour before the blend controls except for the peak limit",
        },
        "timing": {k: _stats(v) for k, v in timings.items()},
        "pipeline_check_defaults": pipeline_checks,
        "summary": {"procedural": _summarise(proc_rows), "real_music": _summarise(real_rows)},
        "pairs": {"procedural": proc_rows, "real_music": real_rows},
        "elapsed_s": time.perf_counter() - t_start,
    }
    result["machine"]["load_average_1min_at_end"] = (
        os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # pairs: one compact line each, capped rows as [coverage, lu, peak_dbfs,
    # windows_short_share] (the summary keeps the rest), so the file stays small
    pairs = {src: [_compact(r) for r in rows] for src, rows in result.pop("pairs").items()}
    text = json.dumps(_rounded(result), indent=1, default=_json_default)
    lines = [
        f'  "{src}": [\n'
        + ",\n".join("   " + json.dumps(_rounded(r), default=_json_default) for r in rows)
        + "\n  ]"
        for src, rows in pairs.items()
    ]
    text = text[: text.rindex("}")].rstrip() + ',\n "pairs": {\n' + ",\n".join(lines) + "\n }\n}\n"
    json.loads(text)  # still valid JSON
    OUT.write_text(text)
    print(f"wrote {OUT} in {time.perf_counter() - t_start:.0f} s")


CAPPED_COLUMNS = ("coverage", "lu", "peak_dbfs", "windows_short_share")


def _compact(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for model in THRESHOLD_MODELS:
        m = dict(row[model])
        for key in ("capped", "capped_no_peak_limit"):
            m[key] = {cfg: [v[c] for c in CAPPED_COLUMNS] for cfg, v in m[key].items()}
        out[model] = m
    return out


def _rounded(obj: Any, digits: int = 4) -> Any:
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v, digits) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return round(float(obj), digits)
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(type(obj))


if __name__ == "__main__":
    main()
