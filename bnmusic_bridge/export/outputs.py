"""What a render's export writes and where: :class:`ExportOptions` (bit depth, file type,
lane formats, name pattern), :class:`OutputPaths` and :func:`output_paths`."""

from __future__ import annotations

import os
import string
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
        check_pattern(self.pattern)
        self.lanes.check()


MAX_PATTERN_CHARS = 200
PATTERN_FIELDS = ("stem", "kind")


def check_pattern(pattern: str) -> None:
    """Refuse an output name pattern that could name anything but one file in the output
    folder: it must be text with ``{stem}`` and ``{kind}`` (each as it is: no attribute,
    index, conversion or format spec) and no other field, and hold no path separator,
    NUL or control character; so ``../x_{stem}.{kind}`` and ``{stem.__class__}`` are
    refused when the options are checked, before any work.

    Raises:
        ParameterError: naming the pattern and what is allowed.
    """
    allowed = (
        "text with {stem} and {kind} and no other {field}, no '/', '\\', NUL or control "
        f"characters, at most {MAX_PATTERN_CHARS} characters"
    )

    def bad(why: str) -> ParameterError:
        return ParameterError(f"pattern={pattern!r} is not allowed: {why}; allowed: {allowed}")

    if not isinstance(pattern, str):
        raise ParameterError(f"pattern={pattern!r} must be text; allowed: {allowed}")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise bad(f"{len(pattern)} characters")
    if any(c in pattern for c in "/\\") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in pattern):
        raise bad("outputs stay in the output folder (no path separator, NUL or control character)")
    seen: list[str] = []
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as e:
        raise bad(str(e)) from None
    for _, field_name, format_spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in PATTERN_FIELDS or format_spec or conversion:
            shown = "{" + field_name + (f"!{conversion}" if conversion else "") + (f":{format_spec}" if format_spec else "") + "}"
            raise bad(f"{shown} is not a plain {{stem}} or {{kind}}")
        seen.append(field_name)
    missing = [f for f in PATTERN_FIELDS if f not in seen]
    if missing:
        raise bad(f"it must contain {{{missing[0]}}} so outputs stay apart")
    if pattern.format(stem="x", kind="music") in (".", ".."):
        raise bad("it names no file")


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
    frames: Path | None = None
    """The per-frame side file (``x.frames.csv``) of a long stem (:data:`LONG_STEM_FRAMES`),
    which holds the per-frame series instead of the report; None for shorter stems."""

    def all(self) -> list[Path]:
        paths = [self.music, self.blended, self.report, *self.lanes.values()]
        if self.plot is not None:
            paths.append(self.plot)
        if self.frames is not None:
            paths.append(self.frames)
        return paths

    def as_dict(self) -> dict[str, str]:
        d = {"music": str(self.music), "blended": str(self.blended), "report": str(self.report)}
        if self.plot is not None:
            d["plot"] = str(self.plot)
        if self.frames is not None:
            d["frames"] = str(self.frames)
        d.update({f"lambda_{kind.replace('-', '_')}": str(p) for kind, p in self.lanes.items()})
        return d


LONG_STEM_FRAMES = 30_000
"""A stem of more 10 ms frames than this (5 minutes) is long: its per-frame series (lane,
coverage, NMR) go to a side file, ``x.frames.csv``, instead of the JSON report, which
then stays small (the lists would add about 0.34 MB a minute: 3.4 MB for 10 minutes)."""


def output_paths(
    stem_name: str,
    out_dir: str | os.PathLike[str],
    options: ExportOptions,
    *,
    num_frames: int | None = None,
) -> OutputPaths:
    """The names a render of ``stem_name`` gets in ``out_dir`` (``x.music.wav``, ...).

    ``num_frames``: the render's 10 ms frames; over :data:`LONG_STEM_FRAMES`, the paths
    include the per-frame side file (``x.frames.csv``).
    """
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
        frames=name("frames", ".csv")
        if num_frames is not None and num_frames > LONG_STEM_FRAMES
        else None,
    )
