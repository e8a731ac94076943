"""Writing a render's outputs: stems, lambda lanes, the report and the plot, atomically
and all or nothing (see :mod:`bnmusic_bridge.export`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..audio import FILE_TYPES, write_audio, write_bytes_atomic
from ..errors import OutputExistsError, ParameterError
from ..result import RenderResult
from .lane_files import lane_outputs
from .lanes import LANE_FORMATS
from .outputs import ExportOptions, OutputPaths, output_paths
from .plot import render_plot_png
from .report import report_json
from .summary import metering_summary

INTEGER_ONLY_FILE_TYPES = ("flac", "aiff")
"""File types written as integers only: FLAC has no float samples, and pedalboard writes
AIFF at 8 to 24 bits."""


def fits_integer(audio: np.ndarray, bit_depth: int) -> bool:
    """Whether ``audio`` (float, full scale = 1.0) fits ``bit_depth``-bit integer PCM
    without clipping: every sample within ``[-1, 1 - 2 ** (1 - bit_depth)]`` (the
    largest positive code is one step under full scale)."""
    if audio.size == 0:
        return True
    top = 1.0 - 2.0 ** (1 - bit_depth)
    return float(np.max(audio)) <= top and float(np.min(audio)) >= -1.0


def _stem_bit_depths(result: RenderResult, opts: ExportOptions, paths: OutputPaths) -> tuple[int, int, list[str]]:
    """Bit depths for the music and blended stems, and what the user must be told.

    Integer formats must never clip. The unity music stem is loudness-matched to the
    noise, and with ``peak_mode="bus-trim"`` (the default) the blended stem keeps the
    level the blend needs, so under a loud noise either can pass full scale. Such a stem
    is written as 32-bit float WAV instead, with a note; a FLAC or AIFF export is refused
    before any file is written (FLAC has no float samples; pedalboard writes AIFF as 8
    to 24-bit integers only).
    """
    depths, notes = [], []
    for audio, path in ((result.music, paths.music), (result.music_gained, paths.blended)):
        if opts.bit_depth == 32 or fits_integer(audio, opts.bit_depth):
            depths.append(opts.bit_depth)
            continue
        peak = float(np.max(np.abs(audio)))
        peak_dbfs = 20 * np.log10(peak)
        if opts.file_type in INTEGER_ONLY_FILE_TYPES:
            raise ParameterError(
                f"{path}: the stem peaks at {peak_dbfs:+.2f} dBFS and {opts.file_type.upper()} "
                "holds integers only here, so it would clip; use --format wav (such a stem is then "
                "written as 32-bit float, and the report gives the bus trim for noise and music), "
                "or --peak-mode lane (the lane keeps the blended music under -1 dBFS), or render "
                "a quieter noise stem"
            )
        depths.append(32)
        trim = result.bus_trim_db
        notes.append(
            f"{path.name} peaks at {peak_dbfs:+.2f} dBFS (the level the blend needs against this "
            f"noise stem): written as 32-bit float instead of {opts.bit_depth}-bit so nothing clips"
            + (
                f"; pull noise and music down together by {-trim:.1f} dB (the bus trim) to keep "
                "the mix under full scale"
                if trim is not None and trim < 0.0
                else ""
            )
        )
    return depths[0], depths[1], notes


def _stale_outputs(stem_name: str, out_dir: str | os.PathLike[str], opts: ExportOptions, paths: OutputPaths) -> list[str]:
    """Outputs of an earlier render of the same stem that this one does not rewrite (other
    lane formats, the plot, another file type): kept, never deleted, but named so nobody
    mistakes them for this render's."""
    current = set(paths.all())
    candidates: set[Path] = set()
    for file_type in FILE_TYPES:
        every = output_paths(
            stem_name,
            out_dir,
            dataclasses.replace(opts, file_type=file_type, lane_formats=LANE_FORMATS, plot=True),
        )
        candidates.update(every.all())
    stale = sorted(str(p) for p in candidates - current if p.exists())
    if not stale:
        return []
    return [f"left from an earlier render, not rewritten by this one: {', '.join(stale)}"]


def write_outputs(
    result: RenderResult,
    out_dir: str | os.PathLike[str],
    *,
    stem_name: str | None = None,
    options: ExportOptions | None = None,
    extra_report: dict | None = None,
) -> OutputPaths:
    """Write every output of ``result`` into ``out_dir``; returns the paths written.

    Raises:
        OutputExistsError: some target exists and ``options.force`` is False (checked for
            all targets before anything is written).
    """
    opts = options or ExportOptions()
    if stem_name is None:
        stem_name = result.source.stem if result.source is not None else "render"
    paths = output_paths(stem_name, out_dir, opts)
    if not opts.force:
        existing = [str(p) for p in paths.all() if p.exists()]
        if existing:
            raise OutputExistsError(
                f"output file(s) exist already: {', '.join(existing)}; pass --force to overwrite"
            )
    music_depth, blended_depth, notes = _stem_bit_depths(result, opts, paths)
    if opts.force:
        notes.extend(_stale_outputs(stem_name, out_dir, opts, paths))
    if notes:
        extra_report = {**(extra_report or {}), "export_notes": notes}
    extra_report = {
        **(extra_report or {}),
        "stem_bit_depths": {"music": music_depth, "blended": blended_depth},
    }
    written: list[Path] = []
    try:
        jobs: list[tuple[Path, Callable[[Path], object]]] = [
            (paths.music, lambda p: write_audio(p, result.music, result.sample_rate_hz, bit_depth=music_depth, force=opts.force)),
            (paths.blended, lambda p: write_audio(p, result.music_gained, result.sample_rate_hz, bit_depth=blended_depth, force=opts.force)),
        ]
        # Every lane file is encoded before the first write, so an encoding error
        # leaves nothing behind.
        summary = None
        if any(kind.startswith("summary") for kind in paths.lanes):
            summary = metering_summary(result, tolerance_db=opts.lanes.tolerance_db)
            extra_report = {**(extra_report or {}), "metering": summary.to_dict()}
        lane_data = lane_outputs(result, list(paths.lanes), paths=paths, options=opts.lanes, summary=summary)

        def bytes_job(data: bytes) -> Callable[[Path], object]:
            return lambda q: write_bytes_atomic(q, data, force=opts.force)

        for kind, p in paths.lanes.items():
            jobs.append((p, bytes_job(lane_data[kind])))
        if paths.plot is not None:
            jobs.append((paths.plot, lambda q: write_bytes_atomic(q, render_plot_png(result), force=opts.force)))
        for p, job in jobs:
            job(p)
            written.append(p)
        report = report_json(result, paths.as_dict(), extra=extra_report)
        write_bytes_atomic(paths.report, report, force=opts.force)
    except BaseException:
        # A half-written set is worse than none: take back what this call wrote.
        if not opts.force:
            for p in written:
                p.unlink(missing_ok=True)
        raise
    return dataclasses.replace(paths, notes=tuple(notes))
