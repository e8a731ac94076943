"""The JSON report of a render: inputs, every parameter, lane, coverage, NMR, loudness,
the bus trim for the mix, timings."""

from __future__ import annotations

import json
import math
from typing import Any, BinaryIO

import numpy as np

from ..result import SHORTFALL_PREFIX, RenderResult
from ..version import __version__

REPORT_VERSION = 1


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _list(arr: np.ndarray, digits: int) -> list[float | None]:
    return [None if not math.isfinite(v) else round(float(v), digits) for v in np.asarray(arr).ravel()]


FRAMES_CSV_COLUMNS = ("time_s", "lane_gain_db", "coverage", "nmr_db")
"""Columns of the per-frame side file (``x.frames.csv``) of a long stem."""


def write_frames_csv(f: BinaryIO, result: RenderResult) -> None:
    """The per-frame series of ``result`` as CSV (:data:`FRAMES_CSV_COLUMNS`): one row per
    10 ms frame, the lane in dB (3 decimals), coverage 0..1 (4 decimals), NMR in dB
    (3 decimals); an empty cell where the report would say null (no mask bin, silence).
    Written in blocks of rows (an hour is 360,000 rows)."""
    columns = (
        (np.asarray(result.lane_times_s), 3),
        (np.asarray(result.lane_gain_db), 3),
        (np.asarray(result.coverage_per_frame), 4),
        (np.asarray(result.nmr_per_frame_db), 3),
    )
    f.write((",".join(FRAMES_CSV_COLUMNS) + "\n").encode())
    n = min(c.size for c, _ in columns)
    for lo in range(0, n, 20_000):
        hi = min(lo + 20_000, n)
        cells = [
            ["" if not math.isfinite(v) else f"{v:.{d}f}" for v in c[lo:hi].tolist()]
            for c, d in columns
        ]
        f.write("".join(",".join(row) + "\n" for row in zip(*cells, strict=True)).encode())


def report_dict(result: RenderResult, outputs: dict[str, str], extra: dict | None = None) -> dict[str, Any]:
    """The report as plain JSON-ready data. NaN and infinities become null.

    When ``outputs`` names a per-frame side file (``"frames"``, written for a long stem,
    see :data:`~bnmusic_bridge.export.outputs.LONG_STEM_FRAMES`), the per-frame series
    (lane, coverage, NMR) are in that file and the report names it in their place
    (``"per_frame_file"``); everything else is as for any stem.
    """
    req = result.request
    lane_db = result.lane_gain_db
    side = outputs.get("frames")
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "package": "bnmusic-bridge",
        "version": __version__,
        "input": str(result.source) if result.source is not None else None,
        "sample_rate": result.sample_rate_hz,
        "num_samples": result.num_samples,
        "duration_s": result.num_samples / result.sample_rate_hz,
        "channels": result.num_channels,
        # The music stem's speakers (WAV channel-mask names), one per channel.
        "speakers": list(result.details.speakers) if result.details is not None else None,
        "generator": req.generator,
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt,
        "seed": req.seed,
        "threshold_model": req.threshold_model,
        "objective": req.objective,
        "alpha": req.alpha,
        "smr_db": req.smr_db,
        "mask_area": req.mask_area,
        "parameters": req.to_dict(),
        "lambda": {
            "units": {"times_s": "seconds from the stem start", "gain_db": "dB relative to the unity music stem"},
            **(
                {"per_frame_file": side}
                if side
                else {"times_s": _list(result.lane_times_s, 3), "gain_db": _list(lane_db, 3)}
            ),
            "min_db": _finite_or_none(float(np.min(lane_db))) if lane_db.size else None,
            "max_db": _finite_or_none(float(np.max(lane_db))) if lane_db.size else None,
            "window_times_s": _list(result.window_times_s, 3),
            "window_optimum_db": _list(result.window_gain_db, 3),
        },
        "coverage": {
            "overall": round(float(result.coverage), 6),
            "frame_rate_hz": result.frame_rate_hz,
            **({"per_frame_file": side} if side else {"per_frame": _list(result.coverage_per_frame, 4)}),
        },
        "nmr_db": _finite_or_none(result.nmr_db),
        "loudness_lufs": {
            "noise": round(result.noise_lufs, 3),
            "music_blended": round(result.music_lufs, 3),
            "music_minus_noise_lu": round(result.music_lufs - result.noise_lufs, 3),
        },
        # the trim for a bus carrying the noise stem and the blended music (the blend is
        # relative: the music keeps the level it needs, the bus keeps the mix in range)
        "bus_trim": None if result.bus_trim is None else result.bus_trim.to_dict(),
        "timings_s": {k: round(v, 4) for k, v in result.timings_s.items()},
        "warnings": list(result.warnings),
        "generator_diagnostics": result.generator_diagnostics,
        "details": _jsonable(details_dict(result, per_frame_file=side)),
        "outputs": outputs,
    }
    if extra:
        report.update(_jsonable(extra))
    return report


def details_dict(result: RenderResult, *, per_frame_file: str | None = None) -> dict[str, Any]:
    """The report's ``details``: the render's other measurements, per-frame NMR (or,
    ``per_frame_file`` given, that file's name in its place) and Stage 2's summary and
    shortfalls (empty for a result without details)."""
    d = result.details
    if d is None:
        return {}
    return {
        "windows": d.generation_windows,
        "join_correlations": list(d.join_correlations),
        "tempo_bpm": d.tempo_bpm,
        **(
            {"nmr_per_frame_file": per_frame_file}
            if per_frame_file
            else {"nmr_per_frame_db": result.nmr_per_frame_db}
        ),
        "peak_dbfs": d.noise_peak_dbfs,
        "clipped_share": d.noise_clipped_share,
        "blend": d.blend.to_dict(),
        "shortfall": [s.to_dict() for s in d.shortfalls],
        # the same shortfalls as one line in the producer's terms (None: none)
        "shortfall_summary": next(
            (w for w in result.warnings if w.startswith(SHORTFALL_PREFIX)), None
        ),
        "alignment": d.alignment.to_dict(),
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def report_json(result: RenderResult, outputs: dict[str, str], extra: dict | None = None) -> bytes:
    """The report encoded as UTF-8 JSON (strict: no NaN tokens)."""
    return json.dumps(report_dict(result, outputs, extra), indent=1, allow_nan=False).encode("utf-8")
