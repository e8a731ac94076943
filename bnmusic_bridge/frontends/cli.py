"""The ``bnmusic`` command line. Each subcommand builds a request and calls the pipeline."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bnmusic_bridge import __version__
from bnmusic_bridge.errors import BNMusicError

from .args import (
    EXIT_ERROR,
    EXIT_OK,
    add_output_args,
    add_render_args,
    build_export_options,
    build_request,
    preset_export,
)


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
    options = build_export_options(args, preset_export(args))
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
    add_render_args(p)
    add_output_args(p)
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

    for module in ("bnmusic_bridge.frontends.osc.cli", "bnmusic_bridge.frontends.presets_cmd", "bnmusic_bridge.batch", "bnmusic_bridge.frontends.eval_cmd"):
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
