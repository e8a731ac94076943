"""Command-line arguments every render-shaped subcommand shares (render, batch, eval,
serve, presets save), and turning them into a request and export options.

The render flags are generated from :data:`bnmusic_bridge.request.FIELD_SPECS`, so a
flag's choices, range and default in ``--help`` are the request's own (one home).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from typing import Any

from bnmusic_bridge.audio import BIT_DEPTHS, FILE_TYPES
from bnmusic_bridge.errors import BNMusicError
from bnmusic_bridge.export import ExportOptions
from bnmusic_bridge.request import (
    FIELD_SPECS,
    TRACK_GENERATOR,
    FieldSpec,
    RenderRequest,
    expand_path,
    field_default,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C or SIGTERM (128 + SIGINT), as shells report it."""

NO_VALUE = object()
"""What ``--max-loudness-lu none`` parses to: the field is set to None (no ceiling)."""

RENDER_FLAG_FIELDS = tuple(name for name, spec in FIELD_SPECS.items() if spec.flag)
"""Request fields that have a ``--flag`` (the rest are set by presets or the library)."""

_FLAG_TYPES: dict[str, type] = {}


def _field_type(name: str) -> type:
    if not _FLAG_TYPES:
        hints = typing.get_type_hints(RenderRequest)
        for field_name in FIELD_SPECS:
            hint = hints[field_name]
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            _FLAG_TYPES[field_name] = args[0] if args else hint
    return _FLAG_TYPES[name]


def float_or_none(text: str) -> Any:
    """A number, or ``none`` for no value (:data:`NO_VALUE`)."""
    if text.strip().lower() == "none":
        return NO_VALUE
    try:
        return float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from e


def str_or_none(text: str) -> Any:
    """Text, or ``none`` for no value (:data:`NO_VALUE`)."""
    return NO_VALUE if text.strip().lower() == "none" else text


def _flag_help(name: str, spec: FieldSpec, default: Any) -> str:
    text = spec.help
    if spec.low is not None and not spec.choices:
        text += f"; {spec.allowed_text()}"
    if isinstance(default, bool):
        return text
    if default is None:
        shown = "none"
    elif isinstance(default, str):
        shown = default or "empty"
    else:
        shown = f"{default:g}" if isinstance(default, float) else str(default)
    unit = f" {spec.unit}" if spec.unit and default is not None else ""
    return f"{text} (default {shown}{unit})"


def add_render_args(parser: argparse.ArgumentParser) -> None:
    """Flags that override preset/request fields (render, batch, eval, serve, presets)."""
    g = parser.add_argument_group("render parameters (override the preset)")
    g.add_argument("--preset", help="preset name or .toml file (see `bnmusic presets list`)")
    g.add_argument("--presets-dir", type=expand_path, help="folder of user presets (overrides shipped ones)")
    defaults = RenderRequest()
    for name in RENDER_FLAG_FIELDS:
        spec = FIELD_SPECS[name]
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        help_text = _flag_help(name, spec, default)
        kind = _field_type(name)
        if kind is bool:
            g.add_argument(flag, action="store_true", default=None, help=help_text)
        elif spec.choices:
            g.add_argument(flag, choices=list(spec.choices), help=help_text)
        elif spec.nullable and kind is str:
            g.add_argument(flag, type=str_or_none, metavar="FILE|none" if name == "music" else "TEXT|none",
                           help=help_text)
        elif spec.nullable:
            g.add_argument(flag, type=float_or_none, metavar=f"{spec.unit or 'VALUE'}|none", help=help_text)
        else:
            g.add_argument(flag, type=kind, help=help_text)
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="generator parameter (repeatable), e.g. --param inpaint_steps=20")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """Flags for where and how outputs are written (render, batch)."""
    opts = ExportOptions()
    lanes = opts.lanes
    g = parser.add_argument_group("outputs")
    g.add_argument("--out", type=expand_path, help="output folder (default: next to the input)")
    g.add_argument("--force", action="store_true", help="overwrite existing outputs")
    add_format_args(g)
    g.add_argument("--lane-tolerance-db", type=float,
                   help=f"lane compaction tolerance, dB (default {lanes.tolerance_db:g})")
    g.add_argument("--full-lane", action="store_true", default=None, help="CSV/JSON lanes carry every 10 ms point")
    g.add_argument("--midi-cc", type=int,
                   help=f"MIDI controller of the lane (7 volume, 11 expression; default {lanes.midi_cc})")
    g.add_argument("--midi-channel", type=int, help=f"MIDI channel 1-16 (default {lanes.midi_channel})")
    g.add_argument("--session-bpm", type=float,
                   help=f"session tempo for MIDI/Reaper lanes (default {lanes.session_bpm:g})")
    g.add_argument("--time-signature",
                   help="session time signature, e.g. 3/4 (default {}/{})".format(*lanes.time_signature))
    g.add_argument("--stem-position-s", type=float, help="where the stem starts on the DAW timeline, s")


def add_format_args(parser: Any) -> None:
    """Flags for what is written (audio format, lane files, plot), on a parser or an
    argument group: render, batch and ``presets save``. The defaults in the help are
    :class:`ExportOptions`'s."""
    opts = ExportOptions()
    parser.add_argument("--bit-depth", type=int, choices=list(BIT_DEPTHS),
                        help=f"16/24-bit PCM or 32-bit float (default {opts.bit_depth})")
    parser.add_argument("--format", dest="file_type", choices=list(FILE_TYPES),
                        help=f"audio file type (default {opts.file_type})")
    parser.add_argument("--lane", default=None,
                        help="lane formats, comma-separated: json, csv, midi, reaper, summary; json and csv "
                        f"are always written (default {','.join(opts.lane_formats)})")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")


def parse_value(text: str) -> Any:
    """A ``--param`` value: int, float, true/false, or the text itself."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def build_request(args: argparse.Namespace) -> RenderRequest:
    """Preset (if any) first, then every flag that was given."""
    base = RenderRequest()
    if getattr(args, "preset", None):
        from bnmusic_bridge.presets import load_preset

        base = load_preset(args.preset, presets_dir=args.presets_dir).request
    overrides = {k: getattr(args, k) for k in RENDER_FLAG_FIELDS if getattr(args, k, None) is not None}
    overrides = {k: (None if v is NO_VALUE else v) for k, v in overrides.items()}
    if isinstance(overrides.get("model"), str):
        # A local model folder may be given as ~/models/x or $MODELS/x; a Hub id is
        # left as it is.
        overrides["model"] = str(expand_path(overrides["model"]))
    if overrides.get("music") is not None:
        # A path from the command line is the shell's working folder's; batch workers
        # (and Ray) may run elsewhere.
        overrides["music"] = os.path.abspath(expand_path(overrides["music"]))
        # --music FILE is a music source of its own: it picks the track generator
        # unless --generator says otherwise.
        overrides.setdefault("generator", TRACK_GENERATOR)
    elif "music" in overrides and base.generator == TRACK_GENERATOR and "generator" not in overrides:
        overrides["generator"] = field_default("generator")  # --music none: back to the default
    # A preset's generator parameters belong to its generator; choosing another one on
    # the command line starts from that generator's defaults.
    switched = "generator" in overrides and overrides["generator"] != base.generator
    params = {} if switched else dict(base.generator_params)
    for item in getattr(args, "param", []) or []:
        if "=" not in item:
            raise BNMusicError(f"--param {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        params[key.strip()] = parse_value(value.strip())
    if switched or params != dict(base.generator_params):
        overrides["generator_params"] = params
    return base.replace(**overrides)


def preset_export(args: argparse.Namespace) -> ExportOptions | None:
    """The export options of ``--preset``, if one was given."""
    if getattr(args, "preset", None):
        from bnmusic_bridge.presets import load_preset

        return load_preset(args.preset, presets_dir=args.presets_dir).export
    return None


ALWAYS_LANE_FORMATS = ("json", "csv")
"""Lane files every front end writes, whatever ``--lane`` (or a preset's
``lane_formats``) asks for: the CLI and batch as the OSC server (whose done message
names them), so ``--lane midi,reaper`` adds MIDI and Reaper files to JSON and CSV."""


def build_export_options(args: argparse.Namespace, base: ExportOptions | None = None) -> ExportOptions:
    """``base`` (a preset's, or the defaults) with every output flag that was given; the
    lane formats always include :data:`ALWAYS_LANE_FORMATS`."""
    opts = base or ExportOptions()
    changes: dict[str, Any] = {}
    if getattr(args, "bit_depth", None):
        changes["bit_depth"] = args.bit_depth
    if getattr(args, "file_type", None):
        changes["file_type"] = args.file_type
    if getattr(args, "lane", None):
        changes["lane_formats"] = tuple(f.strip() for f in args.lane.split(",") if f.strip())
    if getattr(args, "force", False):
        changes["force"] = True
    if getattr(args, "no_plot", False):
        changes["plot"] = False
    lane_changes: dict[str, Any] = {}
    for flag, name in (
        ("lane_tolerance_db", "tolerance_db"), ("full_lane", "full_lane"), ("midi_cc", "midi_cc"),
        ("midi_channel", "midi_channel"), ("session_bpm", "session_bpm"), ("stem_position_s", "stem_position_s"),
    ):
        if getattr(args, flag, None) is not None:
            lane_changes[name] = getattr(args, flag)
    if getattr(args, "time_signature", None):
        try:
            num, den = (int(v) for v in args.time_signature.split("/"))
        except ValueError as e:
            raise BNMusicError(f"--time-signature {args.time_signature!r}: expected N/D such as 4/4") from e
        lane_changes["time_signature"] = (num, den)
    if lane_changes:
        changes["lanes"] = dataclasses.replace(opts.lanes, **lane_changes)
    asked = changes.get("lane_formats", opts.lane_formats)
    changes["lane_formats"] = tuple(dict.fromkeys([*ALWAYS_LANE_FORMATS, *asked]))
    opts = dataclasses.replace(opts, **changes)
    opts.check()
    return opts


def add_threads_arg(p: argparse.ArgumentParser, what: str) -> None:
    """``--threads N``: torch and BLAS threads ``what`` uses (see
    :func:`bnmusic_bridge.threads.default_threads` for the default)."""
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help=f"torch and BLAS threads {what} (default: the free cores, one kept for the DAW "
        "and those other programs keep busy left out, shared among renders running at once; "
        "1 on a 2-core machine)",
    )


def resolve_threads(args: argparse.Namespace, jobs: int = 1) -> int:
    """``--threads`` or the default for ``jobs`` renders at once.

    Raises:
        BNMusicError: ``--threads`` below 1.
    """
    from bnmusic_bridge.threads import default_threads

    threads = getattr(args, "threads", None)
    if threads is None:
        return default_threads(jobs)
    if threads < 1:
        raise BNMusicError(f"--threads {threads}: need a whole number >= 1")
    return int(threads)
