"""``bnmusic batch INPUTS... --preset NAME --out DIR [--jobs N] [--backend local|ray]``:
the command line of :mod:`bnmusic_bridge.batch` (see docs/batch.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bnmusic_bridge.batch import BACKENDS, MANIFEST_NAME, run_batch
from bnmusic_bridge.errors import ParameterError
from bnmusic_bridge.frontends.args import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_output_args,
    add_render_args,
    add_threads_arg,
    build_export_options,
    build_request,
    preset_export,
    resolve_threads,
)


def register(subparsers: Any) -> None:
    """Add the ``batch`` command to the ``bnmusic`` parser."""
    p = subparsers.add_parser(
        "batch",
        help="render many noise stems with one preset (resumable, with a manifest)",
        description="Render every stem named by INPUTS (files, folders, glob patterns) into "
        "--out. Finished stems (same input content, same parameters) are skipped, so an "
        "interrupted batch resumes; manifest.json lists every output. See docs/batch.md.",
    )
    p.add_argument("inputs", nargs="+", help="noise stems: files, folders or glob patterns")
    p.add_argument("--jobs", type=int, default=1, help="stems rendered at once (default 1)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local processes (default) or a Ray cluster",
    )
    p.add_argument(
        "--address",
        "--ray-address",
        dest="ray_address",
        metavar="HOST:PORT",
        help="Ray cluster address, e.g. 192.168.1.20:6379 (default $RAY_ADDRESS, else a "
        "local Ray instance)",
    )
    p.add_argument(
        "--ray-gpus",
        type=float,
        default=None,
        help="GPUs Ray reserves per worker (default: 1 for a model generator such as "
        "riffusion, 0 otherwise)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_render_args(p)
    add_output_args(p)
    add_threads_arg(p, "each stem's render uses (default shares the free cores among --jobs)")
    p.set_defaults(func=cmd_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    """Run ``bnmusic batch``: exit 0 when every stem rendered or was done before, 1 when
    any failed, 130 after Ctrl-C or SIGTERM (finished stems kept)."""
    if args.out is None:
        raise ParameterError("batch needs --out DIR (the folder for every stem's outputs)")
    request = build_request(args)
    options = build_export_options(args, preset_export(args))
    try:
        summary = run_batch(
            args.inputs,
            args.out,
            request,
            options,
            jobs=args.jobs,
            backend=args.backend,
            preset=args.preset,
            progress=sys.stderr.isatty() and not args.quiet,
            ray_address=args.ray_address,
            ray_num_gpus=args.ray_gpus,
            threads=resolve_threads(args, jobs=max(1, args.jobs)),
        )
    except KeyboardInterrupt:
        print(
            f"bnmusic batch: interrupted; finished stems are kept and listed in "
            f"{Path(args.out) / MANIFEST_NAME}; run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    failures = summary.failures
    if args.json:
        print(
            json.dumps(
                {
                    "manifest": str(summary.manifest_path),
                    "rendered": summary.count("rendered"),
                    "skipped": summary.count("skipped"),
                    "failed": [{"input": r.input_path, "error": r.error} for r in failures],
                    "seconds": round(summary.seconds, 2),
                },
                indent=1,
            )
        )
    elif not args.quiet:
        print(
            f"{summary.count('rendered')} rendered, {summary.count('skipped')} skipped "
            f"(done before), {len(failures)} failed in {summary.seconds:.1f} s; "
            f"manifest: {summary.manifest_path}"
        )
    if failures:
        print(f"bnmusic batch: {len(failures)} stem(s) failed:", file=sys.stderr)
        for r in failures:
            print(f"  {r.error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK
