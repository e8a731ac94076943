"""The ``bnmusic`` command line. Each subcommand builds a request and calls the pipeline."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bnmusic_bridge import __version__
from bnmusic_bridge.errors import BNMusicError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def _render_args(p: argparse.ArgumentParser) -> None:
    """Flags that override preset/request fields (shared by render, batch and eval)."""
    g = p.add_argument_group("render parameters (override the preset)")
    g.add_argument("--preset", help="preset name or .toml file (see `bnmusic presets list`)")
    g.add_argument("--presets-dir", type=Path, help="folder of user presets (overrides shipped ones)")
    g.add_argument("--prompt", help="text prompt: style and instruments")
    g.add_argument("--negative-prompt", help="what the generator should avoid")
    g.add_argument("--seed", type=int, help="integer seed (same seed, same output)")
    g.add_argument("--generator", help="generator name (see `bnmusic generators`)")
    g.add_argument("--model", help="model id or local folder (riffusion generators)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="compute device")
    g.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"],
                   help="model precision (riffusion generators; auto: float16 on CUDA, float32 on CPU)")
    g.add_argument("--scheduler", choices=["dpmsolver++", "ddim", "pndm", "euler", "lms"],
                   help="diffusion scheduler (riffusion generators)")
    g.add_argument("--local-files-only", action="store_true", default=None, help="never contact a model hub")
    g.add_argument("--mask-area", type=float, help="share of the noise image marked high-energy (0.05-0.5)")
    g.add_argument("--threshold-model", choices=["smr", "spreading"])
    g.add_argument("--smr-db", type=float, help="signal-to-mask ratio of the smr model, dB")
    g.add_argument("--alpha", type=float, help="music-level weight of the paper's loss")
    g.add_argument("--objective", choices=["paper", "coverage"])
    g.add_argument("--target-coverage", type=float, help="coverage objective's target share (0-1)")
    g.add_argument("--min-gain-db", type=float)
    g.add_argument("--max-gain-db", type=float)
    g.add_argument("--max-loudness-lu", type=_float_or_none, metavar="LU|none",
                   help="ceiling: music loudness over the noise, LU (default +6; none: no ceiling)")
    g.add_argument("--smoothing-s", type=float, help="lane smoothing time constant, seconds")
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="generator parameter (repeatable), e.g. --param inpaint_steps=20")


_NO_VALUE = object()


def _float_or_none(text: str) -> Any:
    if text.strip().lower() == "none":
        return _NO_VALUE
    try:
        return float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from e


def _output_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("outputs")
    g.add_argument("--out", type=Path, help="output folder (default: next to the input)")
    g.add_argument("--force", action="store_true", help="overwrite existing outputs")
    g.add_argument("--bit-depth", type=int, choices=[16, 24, 32], help="16/24-bit PCM or 32-bit float (default 24)")
    g.add_argument("--format", dest="file_type", choices=["wav", "flac", "aiff"], help="audio file type (default wav)")
    g.add_argument("--lane", default=None, help="lane formats, comma-separated (default json,csv)")
    g.add_argument("--no-plot", action="store_true", help="skip the PNG")
    g.add_argument("--lane-tolerance-db", type=float, help="lane compaction tolerance, dB (default 0.1)")
    g.add_argument("--full-lane", action="store_true", default=None, help="CSV/JSON lanes carry every 10 ms point")
    g.add_argument("--midi-cc", type=int, help="MIDI controller of the lane (7 volume, 11 expression; default 11)")
    g.add_argument("--midi-channel", type=int, help="MIDI channel 1-16 (default 1)")
    g.add_argument("--session-bpm", type=float, help="session tempo for MIDI/Reaper lanes (default 120)")
    g.add_argument("--time-signature", help="session time signature, e.g. 3/4 (default 4/4)")
    g.add_argument("--stem-position-s", type=float, help="where the stem starts on the DAW timeline, s")


_FIELD_FLAGS = (
    "prompt", "negative_prompt", "seed", "generator", "model", "device", "dtype", "scheduler",
    "local_files_only", "mask_area", "threshold_model", "smr_db", "alpha", "objective",
    "target_coverage", "min_gain_db", "max_gain_db", "max_loudness_lu", "smoothing_s",
)


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def build_request(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Preset (if any) first, then every flag that was given."""
    from bnmusic_bridge.request import RenderRequest

    base = RenderRequest()
    if getattr(args, "preset", None):
        from bnmusic_bridge.presets import load_preset

        base = load_preset(args.preset, presets_dir=args.presets_dir).request
    overrides = {k: getattr(args, k) for k in _FIELD_FLAGS if getattr(args, k, None) is not None}
    overrides = {k: (None if v is _NO_VALUE else v) for k, v in overrides.items()}
    # A preset's generator parameters belong to its generator; choosing another one on
    # the command line starts from that generator's defaults.
    switched = "generator" in overrides and overrides["generator"] != base.generator
    params = {} if switched else dict(base.generator_params)
    for item in getattr(args, "param", []) or []:
        if "=" not in item:
            raise BNMusicError(f"--param {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        params[key.strip()] = _parse_value(value.strip())
    if switched or params != dict(base.generator_params):
        overrides["generator_params"] = params
    return base.replace(**overrides)


def build_export_options(args: argparse.Namespace, preset_export: Any = None):  # type: ignore[no-untyped-def]
    from bnmusic_bridge.export import ExportOptions

    opts = preset_export or ExportOptions()
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
    import dataclasses

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
    opts = dataclasses.replace(opts, **changes)
    opts.check()
    return opts


def _preset_export(args: argparse.Namespace) -> Any:
    if getattr(args, "preset", None):
        from bnmusic_bridge.presets import load_preset

        return load_preset(args.preset, presets_dir=args.presets_dir).export
    return None


class _Bar:
    """A tqdm progress bar over the pipeline's stage events; silent when not a terminal."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.label = label

    def __call__(self, stage: str, fraction: float) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=1000, desc=self.label, unit="‰", leave=False, file=sys.stderr)
        self.bar.set_postfix_str(stage)
        self.bar.n = int(fraction * 1000)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_render(args: argparse.Namespace) -> int:
    from bnmusic_bridge.export import output_paths, write_outputs
    from bnmusic_bridge.pipeline import render_file

    noise = Path(args.noise)
    request = build_request(args)
    options = build_export_options(args, _preset_export(args))
    out_dir = args.out or noise.parent
    # Refuse before the (long) render when outputs cannot be written or would be overwritten.
    from bnmusic_bridge.audio import check_output_dir

    check_output_dir(out_dir)
    paths = output_paths(noise.stem, out_dir, options)
    if not options.force:
        existing = [str(p) for p in paths.all() if p.exists()]
        if existing:
            raise BNMusicError(f"output file(s) exist already: {', '.join(existing)}; pass --force to overwrite")
    bar = _Bar(noise.name, enabled=sys.stderr.isatty() and not args.quiet)
    try:
        result = render_file(noise, request, progress=bar)
    finally:
        bar.close()
    written = write_outputs(result, out_dir, stem_name=noise.stem, options=options)
    for w in (*result.warnings, *written.notes):
        print(f"warning: {w}", file=sys.stderr)
    lane = result.lane_gain_db
    summary = {
        "input": str(noise),
        "coverage": round(result.coverage, 4),
        "nmr_db": round(result.nmr_db, 2),
        "lambda_db": [round(float(lane.min()), 2), round(float(lane.max()), 2)],
        "noise_lufs": round(result.noise_lufs, 2),
        "music_lufs": round(result.music_lufs, 2),
        "seconds": round(result.timings_s.get("total", 0.0), 2),
        "outputs": written.as_dict(),
    }
    if args.json:
        print(json.dumps(summary, indent=1))
    elif not args.quiet:
        print(
            f"{noise.name}: coverage {summary['coverage'] * 100:.1f} %, NMR {summary['nmr_db']} dB, "
            f"lambda {summary['lambda_db'][0]:+.1f}..{summary['lambda_db'][1]:+.1f} dB, "
            f"music {summary['music_lufs']} LUFS over noise {summary['noise_lufs']} LUFS "
            f"({summary['seconds']} s)"
        )
        for kind, path in summary["outputs"].items():
            print(f"  {kind:14s} {path}")
    return EXIT_OK


def cmd_generators(args: argparse.Namespace) -> int:
    from bnmusic_bridge.generators import available_generators

    for name, desc in sorted(available_generators().items()):
        print(f"{name:16s} {desc}")
    return EXIT_OK


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnmusic",
        description="Blend environmental-noise stems into generated music (BNMusic) beside your DAW.",
    )
    parser.add_argument("--version", action="version", version=f"bnmusic-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("render", help="render one noise stem to music, lambda lane and report")
    p.add_argument("noise", help="noise stem (WAV, FLAC, AIFF, MP3, OGG)")
    _render_args(p)
    _output_args(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("generators", help="list the generators")
    p.set_defaults(func=cmd_generators)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


_EXTRA_COMMANDS: list = []
"""Other modules' ``register(subparsers)`` functions (serve, presets, batch, eval)."""


def _load_extra_commands() -> None:
    import importlib

    for module in ("bnmusic_bridge.frontends.osc.cli", "bnmusic_bridge.frontends.presets_cmd", "bnmusic_bridge.batch", "bnmusic_bridge.evaluate"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                continue  # that front end is not part of this build
            raise
        register = getattr(mod, "register_cli", None)
        if register is not None and register not in _EXTRA_COMMANDS:
            _EXTRA_COMMANDS.append(register)


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (a job scheduler, `timeout`, a DAW closing) gets the same clean stop as
    # Ctrl-C: no partial outputs, the batch manifest brought up to date.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    import signal
    import threading

    _load_extra_commands()
    parser = make_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)  # `serve` installs its own handlers
    try:
        return int(args.func(args) or 0)
    except BNMusicError as e:
        print(f"bnmusic: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("bnmusic: interrupted; no partial outputs were left", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
