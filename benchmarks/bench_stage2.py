"""Stage 2 benchmark: threshold + lambda + coverage per 5.12 s window, on one CPU core.

Run: ``python benchmarks/bench_stage2.py`` (writes benchmarks/results/stage2.json).

Timed per 512-frame window (the mels are inputs, so the STFT is not timed), for both
threshold models:

* ours: :func:`masking_field` + :func:`solve_lambda_exact` + :func:`coverage`;
* baseline, same run: the PAM-1 threshold as the public reference code computes it (a
  Python loop over frames and maskers, exact per-masker slopes:
  :func:`spreading_threshold_reference`; for ``smr`` the threshold is one product either
  way) + lambda by brute-force grid search of the paper's loss (1,201 gains, 0.1 dB
  apart, -60..+60 dB) + coverage;
* also the paper's gradient descent (:func:`solve_lambda_gd`, 3,000 steps) alone.

Then, on the shared recordings (10 noises x 3 music excerpts, first 5.11 s, music
loudness-matched to the noise = unity gain, mask = loudest 15 % of the noise's mel
bins, alpha 0.14): lambda* in dB, coverage at lambda*, the share of pairs with
lambda* = 0, the gain that reaches 90 % coverage, and NMR at lambda*, for both models.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy loads its BLAS

import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_description  # noqa: E402

from bnmusic_bridge.amplify import (  # noqa: E402
    paper_loss,
    solve_gain_for_coverage,
    solve_lambda_exact,
    solve_lambda_gd,
)
from bnmusic_bridge.grid import SAMPLE_RATE_HZ, WINDOW_SAMPLES  # noqa: E402
from bnmusic_bridge.loudness import integrated_lufs  # noqa: E402
from bnmusic_bridge.masking import (  # noqa: E402
    THRESHOLD_MODELS,
    MaskingField,
    ath_mel_magnitude,
    calibration_db,
    find_maskers,
    masking_field,
    masking_threshold_power,
    spreading_threshold_reference,
)
from bnmusic_bridge.metering import coverage, nmr_db  # noqa: E402
from bnmusic_bridge.request import field_default  # noqa: E402
from bnmusic_bridge.spectrogram import audio_to_mel  # noqa: E402

DATA = REPO.parent / "shared" / "data"
OUT = REPO / "benchmarks" / "results" / "stage2.json"
ALPHA = field_default("alpha")
MASK_SHARE = field_default("mask_area")
SMR_DB = field_default("smr_db")
GRID_DB = np.round(np.arange(-60.0, 60.0 + 1e-9, 0.1), 1)
TIMING_NOISE = "ambie_vacuum_cleaner_a.wav"  # 10 s: a full 512-frame window
TIMING_MUSIC = "xmoto_foxrun.wav"
REPEATS = 15


def _read_mono(path: Path) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE_HZ:
        raise SystemExit(f"{path}: expected {SAMPLE_RATE_HZ} Hz, got {rate}")
    return audio.mean(axis=1)


def _pair(noise_path: Path, music_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise and unity-gain music mels over the first min(noise, 5.11 s), and the mask."""
    noise = _read_mono(noise_path)
    music = _read_mono(music_path)
    n = min(noise.size, music.size, WINDOW_SAMPLES)
    noise, music = noise[:n], music[:n]
    match_db = integrated_lufs(noise, SAMPLE_RATE_HZ) - integrated_lufs(music, SAMPLE_RATE_HZ)
    music = music * np.float32(10.0 ** (match_db / 20.0))
    noise_mel = audio_to_mel(noise)
    music_mel = audio_to_mel(music)
    mask = noise_mel >= np.quantile(noise_mel, 1.0 - MASK_SHARE)
    return noise_mel, music_mel, mask


def _time(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """Wall-clock and CPU (process) time per call, ms. On a shared machine the wall time
    includes waiting for a core; the CPU time does not."""
    fn()  # warm caches (filterbank, geometry)
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return {
        "median_ms": 1e3 * statistics.median(wall),
        "min_ms": 1e3 * min(wall),
        "cpu_median_ms": 1e3 * statistics.median(cpu),
        "repeats": repeats,
    }


def _stage2_ours(model: str, noise_mel, music_mel, mask) -> tuple[float, float]:
    field = masking_field(model, noise_mel, music_mel, smr_db=SMR_DB)
    gain = solve_lambda_exact(music_mel, field, mask, ALPHA)
    return gain, coverage(field, mask, gain)[0]


def _baseline_field(model: str, noise_mel, music_mel) -> MaskingField:
    if model == "smr":
        return masking_field("smr", noise_mel, music_mel, smr_db=SMR_DB)
    threshold = spreading_threshold_reference(music_mel)
    cal = calibration_db()
    capacity = np.sqrt(threshold * (10.0 ** (-cal / 10.0))[:, None]).astype(np.float32)
    ath = ath_mel_magnitude().astype(np.float32)
    required = np.where(noise_mel >= ath[:, None], noise_mel, np.float32(0.0))
    return MaskingField(required, capacity, "spreading")


def _stage2_baseline(model: str, noise_mel, music_mel, mask) -> tuple[float, float]:
    field = _baseline_field(model, noise_mel, music_mel)
    candidates = [0.0, *(10.0 ** (GRID_DB / 20.0))]
    losses = [paper_loss(float(g), music_mel, field, mask, ALPHA) for g in candidates]
    gain = candidates[int(np.argmin(losses))]
    return gain, coverage(field, mask, gain)[0]


def _db(gain: float) -> float | None:
    return None if gain <= 0.0 else round(20.0 * math.log10(gain), 3)


def _timings() -> dict[str, Any]:
    noise_mel, music_mel, mask = _pair(DATA / "noise" / TIMING_NOISE, DATA / "music" / TIMING_MUSIC)
    assert noise_mel.shape == (512, 512), noise_mel.shape
    out: dict[str, Any] = {
        "window": {
            "noise": TIMING_NOISE,
            "music": TIMING_MUSIC,
            "frames": int(noise_mel.shape[1]),
            "mask_bins": int(mask.sum()),
        }
    }
    for model in THRESHOLD_MODELS:
        ours = _time(partial(_stage2_ours, model, noise_mel, music_mel, mask), REPEATS)
        base = _time(partial(_stage2_baseline, model, noise_mel, music_mel, mask), 3)
        field = masking_field(model, noise_mel, music_mel, smr_db=SMR_DB)
        parts = {
            "threshold": _time(
                partial(masking_field, model, noise_mel, music_mel, smr_db=SMR_DB), REPEATS
            ),
            "lambda_exact": _time(partial(solve_lambda_exact, music_mel, field, mask, ALPHA), REPEATS),
            "coverage": _time(partial(coverage, field, mask, 1.0), REPEATS),
            "lambda_gd_3000_steps": _time(partial(solve_lambda_gd, music_mel, field, mask, ALPHA), 3),
        }
        g_ours, cov_ours = _stage2_ours(model, noise_mel, music_mel, mask)
        g_base, cov_base = _stage2_baseline(model, noise_mel, music_mel, mask)
        g_gd = solve_lambda_gd(music_mel, field, mask, ALPHA)
        out[model] = {
            "ours_ms": ours,
            "baseline_ms": base,
            "speedup_median": base["median_ms"] / ours["median_ms"],
            "parts_ms": parts,
            "lambda_db": {"exact": _db(g_ours), "grid_search": _db(g_base), "gd": _db(g_gd)},
            "coverage": {"ours": cov_ours, "baseline": cov_base},
            "meets_20ms_goal_wall": ours["median_ms"] <= 20.0,
            "meets_20ms_goal_cpu": ours["cpu_median_ms"] <= 20.0,
        }
    # accuracy of the vectorised PAM-1 threshold against the per-masker loop
    cal = calibration_db()
    power = music_mel.astype(np.float64) ** 2 * (10.0 ** (cal / 10.0))[:, None]
    fast = masking_threshold_power(find_maskers(power), music_mel.shape)
    ref = spreading_threshold_reference(music_mel)
    diff = np.abs(10.0 * np.log10(fast / ref))
    below_peak_db = 10.0 * np.log10(ref / ref.max(axis=0))
    out["spreading_threshold_vs_reference_db"] = {
        f"max_abs_within_{lim}db_of_frame_peak": float(diff[below_peak_db >= -lim].max())
        for lim in (40, 60, 100)
    }
    return out


def _recordings() -> dict[str, Any]:
    noises = sorted((DATA / "noise").glob("*.wav"))
    musics = sorted((DATA / "music").glob("*.wav"))
    rows: list[dict[str, Any]] = []
    for noise_path in noises:
        for music_path in musics:
            noise_mel, music_mel, mask = _pair(noise_path, music_path)
            row: dict[str, Any] = {
                "noise": noise_path.stem,
                "music": music_path.stem,
                "frames": int(noise_mel.shape[1]),
            }
            for model in THRESHOLD_MODELS:
                field = masking_field(model, noise_mel, music_mel, smr_db=SMR_DB)
                gain = solve_lambda_exact(music_mel, field, mask, ALPHA)
                gd = solve_lambda_gd(music_mel, field, mask, ALPHA)
                g90 = solve_gain_for_coverage(field, mask, 0.9)
                row[model] = {
                    "lambda_db": _db(gain),
                    "lambda_zero": gain == 0.0,
                    "coverage_at_lambda": round(coverage(field, mask, gain)[0], 4),
                    "coverage_at_unity": round(coverage(field, mask, 1.0)[0], 4),
                    "gain_for_90pct_coverage_db": _db(g90) if math.isfinite(g90) else None,
                    "nmr_db_at_lambda": round(nmr_db(noise_mel, field, gain)[0], 2),
                    "gd_vs_exact_rel": None if gain == 0.0 else abs(gd - gain) / gain,
                    "gd_zero_when_exact_zero": None if gain > 0.0 else gd == 0.0,
                }
            rows.append(row)
    summary: dict[str, Any] = {}
    for model in THRESHOLD_MODELS:
        per = [r[model] for r in rows]
        lam = [p["lambda_db"] for p in per if p["lambda_db"] is not None]
        g90_all = [p["gain_for_90pct_coverage_db"] for p in per]
        g90_finite = [g for g in g90_all if g is not None]
        gd_rel = [p["gd_vs_exact_rel"] for p in per if p["gd_vs_exact_rel"] is not None]
        summary[model] = {
            "pairs": len(per),
            "lambda_zero_pairs": sum(p["lambda_zero"] for p in per),
            "lambda_zero_share": sum(p["lambda_zero"] for p in per) / len(per),
            "lambda_db_nonzero_min_median_max": [min(lam), statistics.median(lam), max(lam)]
            if lam
            else None,
            "coverage_at_lambda_min_median_max": [
                min(p["coverage_at_lambda"] for p in per),
                statistics.median(p["coverage_at_lambda"] for p in per),
                max(p["coverage_at_lambda"] for p in per),
            ],
            "gain_for_90pct_db_min_median_max": [
                min(g90_finite),
                statistics.median(g90_finite),
                max(g90_finite),
            ]
            if g90_finite
            else None,
            "gain_for_90pct_unreachable_pairs": sum(g is None for g in g90_all),
            "gd_vs_exact_max_rel": max(gd_rel) if gd_rel else None,
        }
    return {"pairs": rows, "summary": summary}


def main() -> None:
    torch.set_num_threads(1)
    if not (DATA / "noise").is_dir():
        raise SystemExit(f"shared recordings not found at {DATA}")
    result: dict[str, Any] = {
        "benchmark": "stage2",
        "machine": {
            **machine_description(),
            "threads": "1 (OMP/OPENBLAS/MKL_NUM_THREADS=1, torch.set_num_threads(1))",
        },
        "settings": {
            "alpha": ALPHA,
            "mask": f"loudest {MASK_SHARE:.0%} of the noise's mel bins",
            "unity_gain": "music loudness-matched to the noise (integrated LUFS, BS.1770)",
            "smr_db": SMR_DB,
            "spreading_calibration": "full-scale sine at a band centre = 96 dB SPL",
            "goal_ms_per_512_frame_window": 20.0,
            "paper_reference": "0.28 s preprocessing + amplification per sample (RTX 4090)",
        },
        "timing": _timings(),
        "recordings": _recordings(),
    }
    result["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    t = result["timing"]
    for model in THRESHOLD_MODELS:
        m = t[model]
        print(
            f"{model:9s} ours {m['ours_ms']['median_ms']:7.2f} ms "
            f"(cpu {m['ours_ms']['cpu_median_ms']:.2f})  baseline "
            f"{m['baseline_ms']['median_ms']:9.1f} ms  x{m['speedup_median']:.0f}  "
            f"lambda exact/grid/gd {m['lambda_db']}"
        )
    for model, s in result["recordings"]["summary"].items():
        print(model, json.dumps(s))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
