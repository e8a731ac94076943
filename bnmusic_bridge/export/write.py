"""Writing a render's outputs: stems, lambda lanes, the report and the plot, as one set
(all new or all old, see :mod:`bnmusic_bridge.export.fileset`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..audio import FILE_TYPES, encode_audio
from ..errors import BNMusicError, OutputError, OutputExistsError, ParameterError
from ..result import RenderResult, WholeStemArray
from ..scratch import BlockArray, blocks
from .fileset import (
    KEPT_NONE,
    KEPT_OLD,
    OutputFolder,
    check_name,
    commit_set,
    kept_message,
    mark_kept,
)
from .lane_files import lane_outputs
from .lanes import LANE_FORMATS
from .outputs import ExportOptions, OutputPaths, output_paths
from .picture_process import PictureProcess
from .plot import picture_data, render_plot_png
from .report import report_json, write_frames_csv
from .summary import metering_summary

PICTURE_COST = 8.0
"""The picture's expected write time relative to one stem or lane file (for progress)."""

INTEGER_ONLY_FILE_TYPES = ("flac", "aiff")
"""File types written as integers only: FLAC has no float samples, and pedalboard writes
AIFF at 8 to 24 bits."""


def audio_extremes(audio: np.ndarray | BlockArray) -> tuple[float, float]:
    """``(min, max)`` sample of ``(channels, samples)`` audio (full scale = 1.0), read a
    block of samples at a time (a :class:`~bnmusic_bridge.scratch.DiskArray` is never
    loaded whole). The same numbers as ``np.min``/``np.max`` of the whole (a NaN
    anywhere gives NaN for both); ``(0.0, 0.0)`` for empty audio."""
    lo, hi = np.inf, -np.inf
    length = int(audio.shape[-1])
    if length == 0 or int(np.prod(audio.shape)) == 0:
        return 0.0, 0.0
    for a, b in blocks(length):
        part = audio[:, a:b]
        # np.minimum/np.maximum (not min/max) so a NaN sticks, as in np.max of the whole
        lo = np.minimum(lo, np.min(part))
        hi = np.maximum(hi, np.max(part))
    return float(lo), float(hi)


def fits_integer(audio: np.ndarray | BlockArray, bit_depth: int) -> bool:
    """Whether ``audio`` (float, full scale = 1.0) fits ``bit_depth``-bit integer PCM
    without clipping: every sample within ``[-1, 1 - 2 ** (1 - bit_depth)]`` (the
    largest positive code is one step under full scale). Read block by block."""
    return _extremes_fit(*audio_extremes(audio), bit_depth)


def _extremes_fit(lo: float, hi: float, bit_depth: int) -> bool:
    # The largest positive code is one step under full scale; NaN fails both tests.
    return hi <= 1.0 - 2.0 ** (1 - bit_depth) and lo >= -1.0


def _stem_bit_depths(
    result: RenderResult, opts: ExportOptions, paths: OutputPaths
) -> tuple[int, int, list[str]]:
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
        if opts.bit_depth == 32:
            depths.append(opts.bit_depth)
            continue
        lo, hi = audio_extremes(audio)  # one pass over the stem serves both checks
        if _extremes_fit(lo, hi, opts.bit_depth):
            depths.append(opts.bit_depth)
            continue
        # np.max(np.abs(audio)) of the whole, from the extremes (NaN stays NaN)
        peak = float("nan") if np.isnan(lo) or np.isnan(hi) else max(abs(lo), abs(hi))
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


def _stale_outputs(
    stem_name: str, out_dir: str | os.PathLike[str], opts: ExportOptions, paths: OutputPaths
) -> list[str]:
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
    out_dir: str | os.PathLike[str] | OutputFolder,
    *,
    stem_name: str | None = None,
    options: ExportOptions | None = None,
    extra_report: dict | None = None,
    progress: Callable[[float], None] | None = None,
    picture_process: PictureProcess | None = None,
) -> OutputPaths:
    """Write every output of ``result`` into ``out_dir``; returns the paths written.

    All or nothing: every file is first written to a temporary name inside the output
    folder, then the whole set is moved into place in one pass
    (:func:`~bnmusic_bridge.export.fileset.commit_set`). Whatever fails or interrupts
    (a full disk, an error, a signal, ``kill -9``), the folder keeps the earlier set or
    gets the complete new one, never a mix; an exception carries ``outputs_kept``
    (``"old"``, ``"new"`` or ``"none"``) and a :class:`BNMusicError` says it in its
    message. The folder is opened once and written relative to, so swapping it for a
    symlink during the write does not redirect files; the returned paths name where the
    files really are. ``out_dir`` may be an
    :class:`~bnmusic_bridge.export.fileset.OutputFolder` the caller opened (the OSC
    server opens it beneath its root).

    ``progress(fraction)`` is called as files are written (0..1; the picture, the
    slowest, reports its own steps). Raising from it stops the write like any error:
    the temporary files are removed and the earlier set kept.

    ``picture_process``: a helper that draws the picture while the other files are
    written (:mod:`~bnmusic_bridge.export.picture_process`); the same PNG, drawn here
    when there is none or it fails.

    Raises:
        OutputExistsError: some target exists and ``options.force`` is False (checked for
            all targets before anything is written, and again when the set is moved).
        OutputError: a file could not be written or moved.
    """
    opts = options or ExportOptions()
    if stem_name is None:
        stem_name = result.source.stem if result.source is not None else "render"
    opts.check()
    if isinstance(out_dir, OutputFolder):
        folder, owned = out_dir, False
    else:
        folder, owned = OutputFolder.open(out_dir), True
    staged: list[tuple[str, str]] = []
    existed = False
    try:
        num_frames = int(np.size(result.coverage_per_frame))
        paths = output_paths(stem_name, folder.report_path(), opts, num_frames=num_frames)
        for p in paths.all():
            check_name(p.name)
        existing = [str(p) for p in paths.all() if folder.exists(p.name)]
        existed = bool(existing)
        if existing and not opts.force:
            raise OutputExistsError(
                f"output file(s) exist already: {', '.join(existing)}; pass --force to overwrite"
            )
        helper_png = None
        if paths.plot is not None and picture_process is not None:
            # Drawn by the helper while this process encodes and writes the other files.
            helper_png = picture_process.submit(picture_data(result))
        music_depth, blended_depth, notes = _stem_bit_depths(result, opts, paths)
        if opts.force:
            notes.extend(_stale_outputs(stem_name, folder.report_path(), opts, paths))
        if notes:
            extra_report = {**(extra_report or {}), "export_notes": notes}
        extra_report = {
            **(extra_report or {}),
            "stem_bit_depths": {"music": music_depth, "blended": blended_depth},
        }
        mask = _channel_mask(result)

        def audio_job(audio: WholeStemArray, bit_depth: int) -> Callable[[BinaryIO], object]:
            return lambda f: encode_audio(
                f,
                audio,
                result.sample_rate_hz,
                bit_depth=bit_depth,
                file_type=opts.file_type,
                channel_mask=mask,
            )

        jobs: list[tuple[Path, Callable[[BinaryIO], object]]] = [
            (paths.music, audio_job(result.music, music_depth)),
            (paths.blended, audio_job(result.music_gained, blended_depth)),
        ]
        # Every lane file is encoded before the first write, so an encoding error
        # leaves nothing behind.
        summary = None
        if any(kind.startswith("summary") for kind in paths.lanes):
            summary = metering_summary(result, tolerance_db=opts.lanes.tolerance_db)
            extra_report = {**(extra_report or {}), "metering": summary.to_dict()}
        try:
            lane_data = lane_outputs(
                result, list(paths.lanes), paths=paths, options=opts.lanes, summary=summary
            )
        except (UnicodeError, ValueError) as e:
            # An encoder's own failure (a name a format cannot hold, ...) becomes one
            # clear error naming the files, not a traceback or an OSC "internal".
            names = ", ".join(p.name for p in paths.lanes.values())
            raise OutputError(f"could not encode the lane files ({names}): {e}") from e

        def bytes_job(data: bytes) -> Callable[[BinaryIO], object]:
            return lambda f: f.write(data)

        for kind, p in paths.lanes.items():
            jobs.append((p, bytes_job(lane_data[kind])))
        # Expected share of the write's time per file (for progress): one unit per stem,
        # lane file and the report; the picture dominates.
        costs = [1.0] * len(jobs)
        if paths.frames is not None:
            costs.append(1.0)
            jobs.append((paths.frames, lambda f: write_frames_csv(f, result)))
        if paths.plot is not None:
            before = sum(costs)
            costs.append(PICTURE_COST)
            whole = sum(costs) + 1.0
            picture_progress = _scaled(progress, before / whole, (before + PICTURE_COST) / whole)
            # Last: with a helper, its wait is what is left of the drawing.
            png = helper_png or (lambda: render_plot_png(result, progress=picture_progress))
            jobs.append((paths.plot, lambda f: f.write(png())))
        total_cost = sum(costs) + 1.0  # the report
        done_cost = 0.0
        for (p, job), cost in zip(jobs, costs, strict=True):
            staged.append((p.name, folder.write_temp(p.name, job)))
            done_cost += cost
            if progress is not None:
                progress(done_cost / total_cost)
        report = report_json(result, paths.as_dict(), extra=extra_report)
        staged.append((paths.report.name, folder.write_temp(paths.report.name, bytes_job(report))))
        # Every file is on disk under a temporary name: now the set changes as one.
        notes.extend(commit_set(folder, staged, replace=opts.force))
        final_dir = folder.report_path()
        if progress is not None:
            progress(1.0)
    except BaseException as exc:
        for _, tmp in staged:
            with contextlib.suppress(OSError):
                folder.unlink(tmp)
        kept = getattr(exc, "outputs_kept", None) or (KEPT_OLD if existed else KEPT_NONE)
        mark_kept(exc, kept)
        if isinstance(exc, BNMusicError) and not isinstance(exc, OutputExistsError):
            exc.args = (f"{exc}; {kept_message(kept)}",)
        raise
    finally:
        if owned:
            folder.close()
    if final_dir != paths.music.parent:
        paths = output_paths(stem_name, final_dir, opts, num_frames=num_frames)
    return dataclasses.replace(paths, notes=tuple(notes))


def _channel_mask(result: RenderResult) -> int | None:
    """The WAV channel mask of a multichannel music stem: the stem's own layout (so the
    music drops onto the stem's track with the same speakers), None for mono/stereo."""
    speakers = result.details.speakers if result.details is not None else ()
    if result.num_channels <= 2 or len(speakers) != result.num_channels:
        return None
    from ..channel_layout import mask_of

    return mask_of(speakers) or None


def _scaled(
    progress: Callable[[float], None] | None, start: float, end: float
) -> Callable[[float], None] | None:
    # The picture's own 0..1 mapped onto its share of the write.
    if progress is None:
        return None
    return lambda f: progress(start + (end - start) * min(max(f, 0.0), 1.0))
