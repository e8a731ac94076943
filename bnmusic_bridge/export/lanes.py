"""Lambda-lane files: JSON and CSV with units in the keys and headers."""

from __future__ import annotations

import io
import json
import math

import numpy as np

from ..request import RenderResult

LANE_SUFFIXES = {"json": ".json", "csv": ".csv"}
LANE_FORMATS = tuple(LANE_SUFFIXES)


def lane_points(result: RenderResult) -> tuple[np.ndarray, np.ndarray]:
    """The lane as (times in seconds, gain in dB) arrays."""
    return np.asarray(result.lane_times_s, dtype=np.float64), np.asarray(result.lane_gain_db, dtype=np.float64)


def lane_json(result: RenderResult) -> bytes:
    times_s, gain_db = lane_points(result)
    data = {
        "units": {"time_s": "seconds from the stem start", "gain_db": "dB relative to the unity music stem", "gain_linear": "linear amplitude factor"},
        "sample_rate_hz": result.sample_rate_hz,
        "num_samples": result.num_samples,
        "points": [
            {"time_s": round(float(t), 4), "gain_db": round(float(g), 3), "gain_linear": round(10 ** (float(g) / 20), 6)}
            for t, g in zip(times_s, gain_db, strict=True)
            if math.isfinite(g)
        ],
    }
    return json.dumps(data, indent=1).encode("utf-8")


def lane_csv(result: RenderResult) -> bytes:
    times_s, gain_db = lane_points(result)
    buf = io.StringIO()
    buf.write("time_s,gain_db,gain_linear\n")
    for t, g in zip(times_s, gain_db, strict=True):
        buf.write(f"{t:.4f},{g:.3f},{10 ** (g / 20):.6f}\n")
    return buf.getvalue().encode("utf-8")


_WRITERS = {"json": lane_json, "csv": lane_csv}


def lane_files(result: RenderResult, fmt: str) -> bytes:
    """The lane encoded in ``fmt`` (one of :data:`LANE_FORMATS`)."""
    return _WRITERS[fmt](result)
