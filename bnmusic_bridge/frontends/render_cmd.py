"""``bnmusic render NOISE`` (one stem to music, lambda lane and report) and ``bnmusic
generators`` (the names ``--generator`` takes)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bnmusic_bridge.errors import BNMusicError
from bnmusic_bridge.frontends.args import (
    EXIT_OK,
    add_output_args,
    add_render_args,
    add_threads_arg,
    build_export_options,
    build_request,
    preset_export,
    resolve_threads,
)
from bnmusic_bridge.request import expand_path


def register(subparsers: Any) -> None:
    """Add the ``render`` and ``generators`` commands to the ``bnmusic`` parser."""
    p = subparsers.add_parser(
        "render", help="render one noise stem to music, lambda lane and report"
    )
    p.add_argument("noise", help="noise stem (WAV, FLAC, AIFF, MP3, OGG)")
    add_render_args(p)
    add_output_args(p)
    add_threads_arg(p, "the render uses")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=cmd_render)

    p = subparsers.add_parser("generators", help="list the generators")
    p.set_defaults(func=cmd_generators)


class ProgressBar:
    """One tqdm bar for a whole render, outputs included: the share of the render done
    in percent (never reset between stages), the stage now running and an estimate of
    the time left (:class:`bnmusic_bridge.progress.RenderProgress`). Silent when not
    enabled (stderr not a terminal, or ``--quiet``).

    Args:
        label: shown before the bar (the stem's name).
        enabled: draw it.
        weights: the stages' expected shares (:func:`~bnmusic_bridge.progress.stage_weights`).
    """

    REFRESH_S = 0.1
    """Least time between two redraws within a stage."""

    def __init__(self, label: str, enabled: bool, weights: dict[str, float] | None = None) -> None:
        from bnmusic_bridge.progress import RenderProgress

        self.enabled = enabled
        self.bar: Any = None  # a tqdm bar once the first event arrives
        self.label = label
        self.tracker = RenderProgress(weights)
        self._last_draw = -1.0
        self._last_stage = ""

    def __call__(self, stage: str, fraction: float) -> None:
        state = self.tracker.update(stage, fraction)
        if not self.enabled:
            return
        if (
            stage == self._last_stage
            and fraction < 1.0
            and state.elapsed_s - self._last_draw < self.REFRESH_S
        ):
            return
        self._last_draw, self._last_stage = state.elapsed_s, stage
        from tqdm import tqdm

        from bnmusic_bridge.progress import format_eta

        if self.bar is None:
            self.bar = tqdm(
                total=100,
                desc=self.label,
                leave=False,
                file=sys.stderr,
                bar_format="{percentage:3.0f}%|{bar}| {desc}",
            )
        eta = format_eta(state.eta_s)
        self.bar.set_description_str(
            f"{self.label}: {stage}" + (f", {eta}" if eta else ""), refresh=False
        )
        self.bar.n = round(state.overall * 100, 1)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_render(args: argparse.Namespace) -> int:
    """Run ``bnmusic render``: refuse unwritable or existing outputs first, render, write,
    print the summary."""
    from bnmusic_bridge.audio import check_output_dir
    from bnmusic_bridge.export import output_paths, write_outputs
    from bnmusic_bridge.export.picture_process import PictureProcess
    from bnmusic_bridge.pipeline import render_file
    from bnmusic_bridge.progress import stage_weights
    from bnmusic_bridge.threads import set_threads

    # Before torch is imported (the render imports it), so its pool starts at this size.
    set_threads(resolve_threads(args))
    # One render per process: freed blocks stay for the next block (no page faults).
    from bnmusic_bridge.heap import keep_freed_memory

    keep_freed_memory()
    noise = expand_path(args.noise)
    request = build_request(args)
    options = build_export_options(args, preset_export(args))
    out_dir = args.out or noise.parent
    # Refuse before the (long) render when outputs cannot be written or would be overwritten.
    check_output_dir(out_dir)
    paths = output_paths(noise.stem, out_dir, options)
    if not options.force:
        existing = [str(p) for p in paths.all() if p.exists()]
        if existing:
            raise BNMusicError(
                f"output file(s) exist already: {', '.join(existing)}; pass --force to overwrite"
            )
    bar = ProgressBar(
        noise.name,
        enabled=sys.stderr.isatty() and not args.quiet,
        weights=stage_weights(request, startup=True, write=True),
    )
    # The picture's helper imports matplotlib and warms up on the core the render
    # leaves, then draws while the stems are written (none on a one-CPU machine).
    picture = PictureProcess.start() if options.plot else None
    try:
        result = render_file(noise, request, progress=bar)
        written = write_outputs(
            result,
            out_dir,
            stem_name=noise.stem,
            options=options,
            progress=lambda f: bar("write", f),
            picture_process=picture,
        )
    finally:
        bar.close()
        if picture is not None:
            picture.close()
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
        print_summary(noise, summary)
    return EXIT_OK


def print_summary(noise: Path, summary: dict[str, Any]) -> None:
    """The render summary for a person: one line of numbers, then one line per output."""
    print(
        f"{noise.name}: coverage {summary['coverage'] * 100:.1f} %, NMR {summary['nmr_db']} dB, "
        f"lambda {summary['lambda_db'][0]:+.1f}..{summary['lambda_db'][1]:+.1f} dB, "
        f"music {summary['music_lufs']} LUFS over noise {summary['noise_lufs']} LUFS "
        f"({summary['seconds']} s)"
    )
    for kind, path in summary["outputs"].items():
        print(f"  {kind:14s} {path}")


def cmd_generators(args: argparse.Namespace) -> int:
    """Run ``bnmusic generators``: every registered generator with its description."""
    from bnmusic_bridge.generators import available_generators

    for name, desc in sorted(available_generators().items()):
        print(f"{name:16s} {desc}")
    return EXIT_OK
