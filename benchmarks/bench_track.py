"""The producer's own track (generator ``track``) raw vs fitted, on real recordings.

For each noise in ``../shared/data/noise`` and each excerpt in ``../shared/data/music``:
the track *raw* (looped or trimmed from its start: ``fit = false``) and *fitted* (tempo
to the noise's period, downbeats on its events, bar loops: the default), each measured
against the noise with the project's own Stage 2 tools:

- the music's loudness over the noise (LU) needed to mask 50 % and 90 % of the noise's
  high-energy bins, under the smr (paper) and spreading threshold models;
- the correlation of noise and music log-mel spectrograms;
- the share of the noise's onsets with a music onset within 30 ms (the project's onset
  detector), over all noises and over the periodic ones (where the track is
  tempo-locked).

``--align FILE.py`` also measures both after ``align(music, noise)`` from that file (an
alignment step under trial; mono float32 44.1 kHz in and out).

Usage::

    python benchmarks/bench_track.py [--data ../shared/data] [--align /path/align.py]

Writes ``benchmarks/results/track.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from bnmusic_bridge.alignment import floored_db, pearson  # noqa: E402
from bnmusic_bridge.amplify import solve_gain_for_coverage  # noqa: E402
from bnmusic_bridge.analysis import analyse_stem, onset_envelope, pick_onsets  # noqa: E402
from bnmusic_bridge.generators.track import fit_track, load_track, parse_track_options  # noqa: E402
from bnmusic_bridge.grid import IMAGE_FRAMES, SAMPLE_RATE_HZ  # noqa: E402
from bnmusic_bridge.loudness import integrated_lufs  # noqa: E402
from bnmusic_bridge.mask import high_energy_mask  # noqa: E402
from bnmusic_bridge.masking import masking_field  # noqa: E402
from bnmusic_bridge.request import RenderRequest  # noqa: E402
from bnmusic_bridge.spectrogram import audio_to_mel, num_frames  # noqa: E402
from bnmusic_bridge.windows import plan_windows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KEYS = ("smr_50", "smr_90", "spreading_50", "spreading_90")


def noise_analysis(noise: np.ndarray, req: RenderRequest) -> tuple[np.ndarray, np.ndarray, Any]:
    """The noise's mel, mask (per generation window) and StemAnalysis, as the pipeline
    makes them."""
    plan = plan_windows(noise.size, req.overlap_frames)
    padded = np.zeros(plan.padded_samples, dtype=np.float32)
    padded[: noise.size] = noise
    mel_padded = audio_to_mel(padded)
    mask_padded = high_energy_mask(
        mel_padded,
        req.mask_area,
        window_starts=list(plan.start_frames),
        window_frames=IMAGE_FRAMES,
        valid_frames=plan.valid_frames,
    )
    frames = num_frames(noise.size)
    mel, mask = mel_padded[:, :frames], mask_padded[:, :frames]
    return mel, mask, analyse_stem(noise, mel, mask)


def lu_needed(noise: np.ndarray, music: np.ndarray, nmel: np.ndarray, mask: np.ndarray, smr_db: float) -> dict[str, float]:
    """LU of the music over the noise needed for 50 / 90 % coverage of the mask, with the
    music first loudness-matched to the noise as the pipeline does (the spreading model
    has an absolute threshold, so the level it starts from matters)."""
    music = music * np.float32(
        10 ** ((integrated_lufs(noise[None], SAMPLE_RATE_HZ) - integrated_lufs(music[None], SAMPLE_RATE_HZ)) / 20)
    )
    mmel = audio_to_mel(music)
    offset = integrated_lufs(music[None], SAMPLE_RATE_HZ) - integrated_lufs(noise[None], SAMPLE_RATE_HZ)
    out: dict[str, float] = {}
    for model in ("smr", "spreading"):
        field = masking_field(model, nmel, mmel, smr_db=smr_db)
        for c in (0.5, 0.9):
            g = solve_gain_for_coverage(field, mask, c)
            out[f"{model}_{int(c * 100)}"] = offset + 20 * math.log10(g) if 0 < g < math.inf else math.inf
    out["logmel_corr"] = pearson(floored_db(nmel**2), floored_db(mmel**2))
    return out


def onsets(audio: np.ndarray) -> np.ndarray:
    return pick_onsets(onset_envelope(audio.astype(np.float64), audio.size // 441 + 1))


def onset_hit(noise_on: np.ndarray, music: np.ndarray, tol_s: float = 0.03) -> float:
    """Share of the noise's onsets with a music onset within ``tol_s``."""
    music_on = onsets(music)
    if noise_on.size == 0 or music_on.size == 0:
        return float("nan")
    return float(np.mean([np.min(np.abs(music_on - t)) <= tol_s for t in noise_on]))


def load_align(path: str | None) -> Any:
    if not path:
        return None
    spec = importlib.util.spec_from_file_location("align_under_trial", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.align


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--align", help="a .py file defining align(music, noise) -> music")
    args = ap.parse_args()
    align = load_align(args.align)
    req = RenderRequest()
    musics = {p.stem: load_track(p) for p in sorted((args.data / "music").glob("*.wav"))}
    variants = ["raw", "fitted"] + (["raw+align", "fitted+align"] if align else [])
    rows: list[dict[str, Any]] = []
    fit_seconds: list[float] = []
    for path in sorted((args.data / "noise").glob("*.wav")):
        noise, rate = sf.read(path, dtype="float32", always_2d=True)
        assert rate == SAMPLE_RATE_HZ, path
        noise = noise.mean(axis=1)
        nmel, mask, analysis = noise_analysis(noise, req)
        noise_on = onsets(noise)
        for name, track in musics.items():
            row: dict[str, Any] = {"noise": path.stem, "music": name, "noise_tempo_bpm": analysis.tempo_bpm}
            for mode, fit in (("raw", False), ("fitted", True)):
                t0 = time.perf_counter()
                fitted = fit_track(track, analysis, noise.size, parse_track_options({"fit": fit}), name)
                if fit:
                    fit_seconds.append(time.perf_counter() - t0)
                music = fitted.audio.mean(axis=0)
                found = {mode: music}
                if align:
                    found[mode + "+align"] = np.asarray(align(music, noise), dtype=np.float32)
                for variant, m in found.items():
                    row[variant] = lu_needed(noise, m, nmel, mask, req.smr_db)
                    row[variant]["onset_hit_30ms"] = onset_hit(noise_on, m)
                d = fitted.diagnostics
                row[mode + "_diagnostics"] = {
                    k: d.get(k)
                    for k in ("mode", "track_tempo_bpm", "target_tempo_bpm", "stretch_ratio",
                              "fitted_tempo_bpm", "downbeat_s", "loop_bars", "loop_joins", "warnings")
                }
            rows.append(row)
            print(path.stem[:24], name[:12], {v: {k: round(row[v][k], 1) for k in KEYS} for v in variants}, flush=True)

    def median(values: list[float]) -> float:
        return round(float(np.nanmedian(values)), 3)

    periodic = [r for r in rows if r["noise_tempo_bpm"] is not None]
    summary: dict[str, Any] = {}
    for v in variants:
        summary[v] = {k: median([r[v][k] for r in rows]) for k in (*KEYS, "logmel_corr", "onset_hit_30ms")}
        summary[v]["onset_hit_30ms_periodic_noises"] = median([r[v]["onset_hit_30ms"] for r in periodic])
    for v in variants[1:]:
        summary[f"{v} minus raw (paired median, LU)"] = {k: median([r[v][k] - r["raw"][k] for r in rows]) for k in KEYS}
    summary["periodic_noises"] = sorted({r["noise"] for r in periodic})
    summary["fit_seconds_median"] = median(fit_seconds)
    for key, value in summary.items():
        print(key, value)
    out = write_result(
        "track",
        {
            "command": "python benchmarks/bench_track.py" + (f" --align {args.align}" if args.align else ""),
            "pairs": len(rows),
            "summary": summary,
            "rows": rows,
        },
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
