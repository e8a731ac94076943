"""Lane compaction: size and time for a one-hour lambda lane.

A one-hour lane at the pipeline's 100 points per second (360,000 points) is compacted at
0.1 dB and written as CSV and JSON; the baseline is the full lane written the same way.
Two lanes: one cut from a real 3-minute render (the shipped train noise tiled), repeated
to an hour, and a synthetic lane with a new random window gain every 1.28 s.

    python benchmarks/bench_lanes.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HOUR_POINTS = 360_000


def _real_hour_lane() -> np.ndarray:
    from bnmusic_bridge import RenderRequest, render
    from bnmusic_bridge.audio import read_stem

    stem = read_stem(REPO / "examples" / "noise" / "train.wav")
    n = 180 * stem.sample_rate_hz
    noise = np.tile(stem.audio, (1, n // stem.num_samples + 1))[:, :n]
    lane = render(noise, stem.sample_rate_hz, RenderRequest(seed=2)).lane_gain_db
    reps = HOUR_POINTS // lane.size + 1
    # mirror every other copy so the repeats join without a jump
    tiled = np.concatenate([lane if k % 2 == 0 else lane[::-1] for k in range(reps)])
    return tiled[:HOUR_POINTS]


def _synthetic_hour_lane(seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = np.repeat(rng.uniform(-12, 6, HOUR_POINTS // 128 + 2), 128)[:HOUR_POINTS]
    kernel = np.hanning(201)
    kernel /= kernel.sum()
    return np.convolve(np.pad(steps, 100, mode="edge"), kernel, mode="valid")


def _measure(gain_db: np.ndarray) -> dict:
    from bnmusic_bridge.export.lanes import compact_lane, interpolate_lane

    times_s = np.arange(gain_db.size) / 100.0
    t0 = time.perf_counter()
    kt, kg = compact_lane(times_s, gain_db, 0.1)
    seconds = time.perf_counter() - t0
    err = float(np.max(np.abs(interpolate_lane(kt, kg, times_s) - gain_db)))

    def csv_bytes(t: np.ndarray, g: np.ndarray) -> int:
        return len("time_s,gain_db,gain_linear\n") + sum(
            len(f"{a:.4f},{b:.3f},{10 ** (b / 20):.6f}\n") for a, b in zip(t, g, strict=True)
        )

    full_csv, compact_csv = csv_bytes(times_s, gain_db), csv_bytes(kt, kg)
    return {
        "points_full": int(gain_db.size),
        "points_compacted": int(kt.size),
        "point_ratio_full_over_compacted": round(gain_db.size / kt.size, 1),
        "compaction_s": round(seconds, 3),
        "max_error_db": round(err, 4),
        "csv_bytes_full": full_csv,
        "csv_bytes_compacted": compact_csv,
    }


def main() -> None:
    results = {"real_render_tiled": _measure(_real_hour_lane()), "synthetic": _measure(_synthetic_hour_lane())}
    for k, v in results.items():
        print(k, v)
    path = write_result(
        "lanes",
        {
            "what": "compact_lane at 0.1 dB on one-hour lanes (360,000 points at 100/s)",
            "baseline": "the full 10 ms lane",
            "results": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
