"""Lambda-lane files: compaction, JSON and CSV with units in keys and headers, and the
DAW formats (MIDI CC, Reaper envelope/track/project) and the metering summary.

The lane is a list of points ``(time in seconds, gain in dB relative to the unity music
stem)``; between points it is read by linear interpolation in dB (``interpolation="db"``)
unless a format says otherwise (Reaper's amplitude-scaled volume envelope draws straight
lines in linear amplitude, ``interpolation="linear"``).

User-facing formats (:data:`LANE_FORMATS`) map to one or more files, each with its own
*file kind* and suffix (:data:`LANE_FORMAT_FILES`, :data:`LANE_SUFFIXES`);
:mod:`~bnmusic_bridge.export.lane_files` encodes every kind.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..result import RenderResult

INTERPOLATIONS = ("db", "linear")
"""How a lane is read between its points: straight lines in dB, or in linear amplitude."""

DEFAULT_TOLERANCE_DB = 0.1

LANE_SUFFIXES: dict[str, str] = {
    "json": ".json",
    "csv": ".csv",
    "midi": ".mid",
    "reaper-env": ".reaper-env.txt",
    "reaper-track": ".reaper-track.RTrackTemplate",
    "reaper-project": ".reaper.rpp",
    "summary": ".summary.md",
    "summary-png": ".summary.png",
}
"""File kind -> name suffix (after ``{stem}.lambda``)."""

LANE_FORMAT_FILES: dict[str, tuple[str, ...]] = {
    "json": ("json",),
    "csv": ("csv",),
    "midi": ("midi",),
    "reaper": ("reaper-env", "reaper-track", "reaper-project"),
    "summary": ("summary", "summary-png"),
}
"""User-facing lane format (``--lane``) -> the file kinds it writes."""

LANE_FORMATS = tuple(LANE_FORMAT_FILES)


@dataclass(frozen=True)
class LaneOptions:
    """How lane files are written.

    Attributes:
        tolerance_db: compaction tolerance in dB: linear interpolation between the kept
            points stays within this of the full 10 ms lane (every compacted format).
        full_lane: CSV and JSON carry every 10 ms point instead of the compacted lane.
        midi_cc: MIDI controller number of the lane (7 = channel volume, 11 = expression;
            any of 0..119 is accepted).
        midi_channel: MIDI channel, 1..16.
        midi_range_db: ``(low_db, high_db)`` mapped to CC 0 and CC 127, linear in dB;
            None: the lane's own range widened by ``midi_headroom_db`` and rounded out to
            whole dB.
        midi_headroom_db: margin in dB added below and above the lane's range (default
            mapping only).
        ticks_per_beat: MIDI resolution in ticks per quarter note.
        session_bpm: session tempo in beats per minute (MIDI tempo map, Reaper project).
        time_signature: ``(numerator, denominator)``; the denominator is a power of two.
        stem_position_s: where the music stem starts on the DAW timeline, in seconds
            (Reaper item position; the envelope and the MIDI events shift with it).
    """

    tolerance_db: float = DEFAULT_TOLERANCE_DB
    full_lane: bool = False
    midi_cc: int = 11
    midi_channel: int = 1
    midi_range_db: tuple[float, float] | None = None
    midi_headroom_db: float = 3.0
    ticks_per_beat: int = 480
    session_bpm: float = 120.0
    time_signature: tuple[int, int] = (4, 4)
    stem_position_s: float = 0.0

    def check(self) -> None:
        """Refuse out-of-range settings, naming the field and the allowed range."""
        if not 0.001 <= self.tolerance_db <= 6.0:
            raise ParameterError(
                f"lane tolerance_db={self.tolerance_db} is out of range; allowed: 0.001 to 6 dB"
            )
        if not isinstance(self.midi_cc, int) or not 0 <= self.midi_cc <= 119:
            raise ParameterError(
                f"midi_cc={self.midi_cc!r} is out of range; allowed: 0 to 119 (7 volume, 11 expression)"
            )
        if not isinstance(self.midi_channel, int) or not 1 <= self.midi_channel <= 16:
            raise ParameterError(
                f"midi_channel={self.midi_channel!r} is out of range; allowed: 1 to 16"
            )
        if self.midi_range_db is not None:
            low, high = self.midi_range_db
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ParameterError(
                    f"midi_range_db={self.midi_range_db!r}: need finite low_db < high_db (dB)"
                )
        if not 0.0 <= self.midi_headroom_db <= 24.0:
            raise ParameterError(
                f"midi_headroom_db={self.midi_headroom_db} is out of range; allowed: 0 to 24 dB"
            )
        if not isinstance(self.ticks_per_beat, int) or not 24 <= self.ticks_per_beat <= 32767:
            raise ParameterError(
                f"ticks_per_beat={self.ticks_per_beat!r} is out of range; allowed: 24 to 32767"
            )
        if not 20.0 <= self.session_bpm <= 400.0:
            raise ParameterError(
                f"session_bpm={self.session_bpm} is out of range; allowed: 20 to 400 BPM"
            )
        num, den = self.time_signature
        if not (isinstance(num, int) and 1 <= num <= 32 and den in (1, 2, 4, 8, 16, 32)):
            raise ParameterError(
                f"time_signature={self.time_signature!r}: need (numerator 1..32, denominator 1, 2, 4, 8, 16 or 32)"
            )
        if not 0.0 <= self.stem_position_s <= 86_400.0:
            raise ParameterError(
                f"stem_position_s={self.stem_position_s} is out of range; allowed: 0 to 86400 s"
            )


# --------------------------------------------------------------------------- compaction


def check_lane(times_s: np.ndarray, gain_db: np.ndarray) -> None:
    """Refuse a lane that is not 1-D, empty, with non-finite gains (dB) or times (s) not
    strictly increasing; the message names the first bad point."""
    if times_s.ndim != 1 or times_s.shape != gain_db.shape:
        raise ParameterError(
            f"lane times {times_s.shape} and gains {gain_db.shape} must be 1-D arrays of the same length"
        )
    if times_s.size == 0:
        raise ParameterError("the lambda lane has no points")
    bad = ~np.isfinite(gain_db)
    if bad.any():
        k = int(np.argmax(bad))
        raise ParameterError(
            f"lane gain at point {k} ({times_s[k]:.3f} s) is {gain_db[k]}; lane gains must be finite dB"
        )
    if not np.all(np.isfinite(times_s)) or np.any(np.diff(times_s) <= 0):
        k = int(np.argmax(~(np.diff(times_s) > 0))) + 1 if times_s.size > 1 else 0
        raise ParameterError(
            f"lane times must be finite and strictly increasing (point {k}: {times_s[k]!r} s)"
        )


def _cone_indices(t: np.ndarray, v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Indices of the points to keep so that straight lines between kept points pass
    within ``[lo, hi]`` at every point (a greedy "feasible slope cone" sweep, O(n)).

    From the last kept point (the anchor) the slopes that pass every point since the
    anchor form an interval; a point is skipped while the line from the anchor to it
    lies inside that interval, otherwise the point before it becomes the new anchor.
    """
    tl, vl, lol, hil = t.tolist(), v.tolist(), lo.tolist(), hi.tolist()
    n = len(tl)
    keep = [0]
    ta, va = tl[0], vl[0]
    smin, smax = -math.inf, math.inf
    for j in range(1, n):
        dt = tl[j] - ta
        s = (vl[j] - va) / dt
        if not smin <= s <= smax:
            a = j - 1
            keep.append(a)
            ta, va = tl[a], vl[a]
            dt = tl[j] - ta
            smin, smax = -math.inf, math.inf
        s_lo = (lol[j] - va) / dt
        s_hi = (hil[j] - va) / dt
        if s_lo > smin:
            smin = s_lo
        if s_hi < smax:
            smax = s_hi
    if keep[-1] != n - 1:
        keep.append(n - 1)
    return np.asarray(keep, dtype=np.int64)


def compact_lane(
    times_s: np.ndarray,
    gain_db: np.ndarray,
    tolerance_db: float = DEFAULT_TOLERANCE_DB,
    *,
    interpolation: str = "db",
) -> tuple[np.ndarray, np.ndarray]:
    """The lane with only the points it needs: straight lines between the kept points
    stay within ``tolerance_db`` of the full lane at every one of its points (and, the
    full lane being straight lines between its points, everywhere for ``"db"``).

    Args:
        times_s: point times in seconds, 1-D, strictly increasing.
        gain_db: gain at each point in dB, same shape, finite.
        tolerance_db: largest allowed deviation in dB (> 0).
        interpolation: how the *kept* points are read between them: ``"db"`` (straight
            lines in dB) or ``"linear"`` (straight lines in linear amplitude, as Reaper's
            amplitude-scaled volume envelope plays them). The full lane is always read
            in dB; with ``"linear"`` the error between two 10 ms points is at most about
            ``(step_dB * 0.115)**2 / 8`` in relative amplitude (0.0015 dB for a 1 dB
            step) beyond ``tolerance_db``.

    Returns:
        ``(times_s, gain_db)`` of the kept points (a subset of the input points; the
        first and the last are always kept). O(n) time.

    Raises:
        ParameterError: mismatched shapes, non-finite gains, times not increasing, or a
            tolerance or interpolation out of range.
    """
    t = np.asarray(times_s, dtype=np.float64)
    g = np.asarray(gain_db, dtype=np.float64)
    check_lane(t, g)
    if not (math.isfinite(tolerance_db) and tolerance_db > 0):
        raise ParameterError(f"tolerance_db={tolerance_db!r} must be a positive number of dB")
    if interpolation not in INTERPOLATIONS:
        raise ParameterError(
            f"interpolation={interpolation!r} unknown; use one of {INTERPOLATIONS}"
        )
    if t.size <= 2:
        return t.copy(), g.copy()
    # Keep a hair of the tolerance back so rounding in the sweep never lets a point
    # land just outside it.
    tol = tolerance_db * (1.0 - 1e-9)
    if interpolation == "db":
        keep = _cone_indices(t, g, g - tol, g + tol)
    else:
        amp = np.power(10.0, g / 20.0)
        keep = _cone_indices(t, amp, amp * 10.0 ** (-tol / 20.0), amp * 10.0 ** (tol / 20.0))
    return t[keep], g[keep]


def interpolate_lane(
    times_s: np.ndarray, gain_db: np.ndarray, at_s: np.ndarray | float, *, interpolation: str = "db"
) -> np.ndarray:
    """The lane's gain in dB at ``at_s`` (seconds), read as straight lines between its
    points in dB or in linear amplitude; held flat before the first and after the last
    point (as DAW envelopes are)."""
    t = np.asarray(times_s, dtype=np.float64)
    g = np.asarray(gain_db, dtype=np.float64)
    at = np.asarray(at_s, dtype=np.float64)
    if interpolation == "db":
        return np.interp(at, t, g)
    if interpolation == "linear":
        return 20.0 * np.log10(np.interp(at, t, np.power(10.0, g / 20.0)))
    raise ParameterError(f"interpolation={interpolation!r} unknown; use one of {INTERPOLATIONS}")


def lane_points(result: RenderResult) -> tuple[np.ndarray, np.ndarray]:
    """The lane as (times in seconds, gain in dB) arrays."""
    return np.asarray(result.lane_times_s, dtype=np.float64), np.asarray(
        result.lane_gain_db, dtype=np.float64
    )


def export_points(
    result: RenderResult, options: LaneOptions | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The points CSV and JSON carry: the compacted lane, or every 10 ms point when
    ``options.full_lane``."""
    opts = options or LaneOptions()
    times_s, gain_db = lane_points(result)
    if opts.full_lane:
        check_lane(times_s, gain_db)
        return times_s, gain_db
    return compact_lane(times_s, gain_db, opts.tolerance_db)


# --------------------------------------------------------------------------- JSON and CSV

LANE_JSON_VERSION = 2


def lane_json(result: RenderResult, options: LaneOptions | None = None) -> bytes:
    """The lane as UTF-8 JSON: ``{"units": ..., "points": [{"time_s", "gain_db",
    "gain_linear"}, ...]}`` plus how it was compacted."""
    opts = options or LaneOptions()
    times_s, gain_db = export_points(result, opts)
    full_count = int(np.asarray(result.lane_times_s).size)
    data = {
        "lane_json_version": LANE_JSON_VERSION,
        "units": {
            "time_s": "seconds from the stem start",
            "gain_db": "dB relative to the unity music stem",
            "gain_linear": "linear amplitude factor (10 ** (gain_db / 20))",
        },
        "interpolation": "straight lines in dB between points; held before the first and after the last",
        "compaction": {
            "compacted": not opts.full_lane,
            "tolerance_db": None if opts.full_lane else opts.tolerance_db,
            "full_points": full_count,
            "points": int(times_s.size),
            "frame_rate_hz": result.frame_rate_hz,
        },
        "sample_rate_hz": result.sample_rate_hz,
        "num_samples": result.num_samples,
        "duration_s": result.num_samples / result.sample_rate_hz,
        "points": [
            {
                "time_s": round(t, 6),
                "gain_db": round(g, 4),
                "gain_linear": float(f"{10 ** (g / 20):.7g}"),
            }
            for t, g in zip(times_s.tolist(), gain_db.tolist(), strict=True)
        ],
    }
    return json.dumps(data, indent=1, allow_nan=False).encode("utf-8")


def lane_csv(result: RenderResult, options: LaneOptions | None = None) -> bytes:
    """The lane as UTF-8 CSV with the header ``time_s,gain_db,gain_linear``."""
    times_s, gain_db = export_points(result, options)
    buf = io.StringIO()
    buf.write("time_s,gain_db,gain_linear\n")
    for t, g in zip(times_s.tolist(), gain_db.tolist(), strict=True):
        buf.write(f"{t:.6f},{g:.4f},{10 ** (g / 20):.7g}\n")
    return buf.getvalue().encode("utf-8")


# --------------------------------------------------------------------------- dispatch


def lane_kinds(formats: Iterable[str]) -> list[str]:
    """The file kinds that ``formats`` write, in order, without repeats."""
    kinds: list[str] = []
    for fmt in formats:
        if fmt not in LANE_FORMAT_FILES:
            raise ParameterError(f"lane format {fmt!r} unknown; use some of {list(LANE_FORMATS)}")
        kinds.extend(k for k in LANE_FORMAT_FILES[fmt] if k not in kinds)
    return kinds


def lane_options_from_mapping(values: Mapping[str, Any]) -> LaneOptions:
    """A :class:`LaneOptions` from plain data (a preset table, OSC arguments); unknown
    keys raise ParameterError naming them. Lists become tuples."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(LaneOptions)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ParameterError(f"unknown lane option(s) {unknown}; known: {sorted(known)}")
    clean: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    opts = LaneOptions(**clean)
    opts.check()
    return opts


def default_music_path(result: RenderResult) -> Path:
    """Where the music stem is assumed to be when no output paths are given."""
    stem = result.source.stem if result.source is not None else "render"
    folder = result.source.parent if result.source is not None else Path(".")
    return folder / f"{stem}.music.wav"
