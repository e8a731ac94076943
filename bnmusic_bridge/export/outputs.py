"""What a render's export writes and where: :class:`ExportOptions` (bit depth, file type,
lane formats, name pattern), :class:`OutputPaths` and :func:`output_paths`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..audio import BIT_DEPTHS, FILE_TYPES
from ..errors import ParameterError
from .lanes import LANE_FORMATS, LANE_SUFFIXES, LaneOptions, lane_kinds


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

    return OutputPaths(
        music=name("music", "." + options.file_type),
        blended=name("blended", "." + options.file_type),
        report=name("report", ".json"),
        plot=(d / (options.pattern.format(stem=stem_name, kind="plot").removesuffix(".plot") + ".png"))
        if options.plot
        else None,
        lanes={kind: name("lambda", LANE_SUFFIXES[kind]) for kind in lane_kinds(options.lane_formats)},
    )
