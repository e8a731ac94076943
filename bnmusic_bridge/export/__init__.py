"""Writing a render's results to disk: stems, lambda lanes, the report and the plot.

Every file is written atomically (temporary name, then rename) and none is overwritten
unless ``force`` is given. All target names are checked before the first file is
written, so a refused export leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..audio import BIT_DEPTHS, FILE_TYPES, write_audio, write_bytes_atomic
from ..errors import OutputExistsError, ParameterError
from ..result import RenderResult
from .lanes import LANE_FORMATS, LaneOptions, compact_lane, lane_files, lane_kinds, lane_outputs
from .plot import render_plot_png
from .report import report_json

__all__ = [
    "ExportOptions",
    "OutputPaths",
    "output_paths",
    "write_outputs",
    "LANE_FORMATS",
    "LaneOptions",
    "compact_lane",
    "lane_files",
]


@dataclass(frozen=True)
class ExportOptions:
    """How to write a render.

    Attributes:
        bit_depth: 16 or 24 (integer PCM) or 32 (float).
        file_type: "wav", "flac" or "aiff".
        force: overwrite existing files.
        lane_formats: lane formats to write: "json", "csv", "midi", "reaper" (envelope
            chunk, track template and project) and "summary" (metering Markdown and
            PNG, and a "metering" section in the report); see
            :data:`bnmusic_bridge.export.lanes.LANE_FORMAT_FILES` and docs/lanes.md.
        plot: write the PNG.
        pattern: output name pattern; ``{stem}`` is the input's name without suffix,
            ``{kind}`` the output kind (music, blended, lambda, report).
    """

    bit_depth: int = 24
    file_type: str = "wav"
    force: bool = False
    lane_formats: Sequence[str] = ("json", "csv")
    plot: bool = True
    pattern: str = "{stem}.{kind}"
    lanes: LaneOptions = LaneOptions()
    """Compaction tolerance, full-lane CSV/JSON, MIDI CC/channel/mapping, session
    tempo and the stem's timeline position (:class:`~bnmusic_bridge.export.lanes.LaneOptions`)."""

    def check(self) -> None:
        if self.bit_depth not in BIT_DEPTHS:
            raise ParameterError(f"bit_depth={self.bit_depth} not supported; use one of {BIT_DEPTHS}")
        if self.file_type not in FILE_TYPES:
            raise ParameterError(f"file_type={self.file_type!r} not supported; use one of {FILE_TYPES}")
        unknown = [f for f in self.lane_formats if f not in LANE_FORMATS]
        if unknown:
            raise ParameterError(f"lane format(s) {unknown} unknown; use some of {list(LANE_FORMATS)}")
        if "{stem}" not in self.pattern or "{kind}" not in self.pattern:
            raise ParameterError(
                f"pattern={self.pattern!r} must contain {{stem}} and {{kind}} so outputs stay apart"
            )
        self.lanes.check()


@dataclass(frozen=True)
class OutputPaths:
    """Where each output goes (absent kinds are None). ``lanes`` maps each lane file
    kind ("json", "csv", "midi", "reaper-env", ...) to its path."""

    music: Path
    blended: Path
    report: Path
    plot: Path | None
    lanes: dict[str, Path]
    notes: tuple[str, ...] = ()
    """What the export changed for safety (e.g. a stem written as float), for the user."""

    def all(self) -> list[Path]:
        paths = [self.music, self.blended, self.report, *self.lanes.values()]
        if self.plot is not None:
            paths.append(self.plot)
        return paths

    def as_dict(self) -> dict[str, str]:
        d = {"music": str(self.music), "blended": str(self.blended), "report": str(self.report)}
        if self.plot is not None:
            d["plot"] = str(self.plot)
        d.update({f"lambda_{kind.replace('-', '_')}": str(p) for kind, p in self.lanes.items()})
        return d


def output_paths(stem_name: str, out_dir: str | os.PathLike[str], options: ExportOptions) -> OutputPaths:
    """The names a render of ``stem_name`` gets in ``out_dir`` (``x.music.wav``, ...)."""
    options.check()
    d = Path(out_dir)

    def name(kind: str, suffix: str) -> Path:
        return d / (options.pattern.format(stem=stem_name, kind=kind) + suffix)

    from .lanes import LANE_SUFFIXES

    return OutputPaths(
        music=name("music", "." + options.file_type),
        blended=name("blended", "." + options.file_type),
        report=name("report", ".json"),
        plot=(d / (options.pattern.format(stem=stem_name, kind="plot").removesuffix(".plot") + ".png"))
        if options.plot
        else None,
        lanes={kind: name("lambda", LANE_SUFFIXES[kind]) for kind in lane_kinds(options.lane_formats)},
    )


def _stem_bit_depths(result: RenderResult, opts: ExportOptions, paths: OutputPaths) -> tuple[int, int, list[str]]:
    """Bit depths for the music and blended stems, and what the user must be told.

    The unity music stem is loudness-matched to the noise, so under a loud noise it can
    peak over 0 dBFS. An integer file would clip it; such a stem is written as 32-bit
    float instead (WAV and AIFF), with a note, and a FLAC export is refused before any
    file is written (FLAC has no float samples).
    """
    import numpy as np

    depths, notes = [], []
    for audio, path in ((result.music, paths.music), (result.music_gained, paths.blended)):
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if opts.bit_depth == 32 or peak <= 1.0:
            depths.append(opts.bit_depth)
            continue
        peak_dbfs = 20 * np.log10(peak)
        if opts.file_type == "flac":
            raise ParameterError(
                f"{path}: the stem peaks at {peak_dbfs:+.1f} dBFS and FLAC holds integers only, so "
                "it would clip; use --format wav --bit-depth 32, or render a quieter noise stem"
            )
        depths.append(32)
        notes.append(
            f"{path.name} peaks at {peak_dbfs:+.1f} dBFS (loudness-matched to a loud noise): written "
            f"as 32-bit float instead of {opts.bit_depth}-bit so nothing clips"
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
            from .summary import metering_summary

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
