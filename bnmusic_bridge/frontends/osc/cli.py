"""``bnmusic serve``: run the OSC server until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

DEFAULT_SWITCH_INTERVAL_S = 0.001
"""Python's GIL switch interval while serving (default 0.005 s): a render thread in
pure-Python code would otherwise hold replies back by up to 5 ms."""


def register_cli(subparsers: Any) -> None:
    """Add the ``serve`` subcommand (picked up by :mod:`bnmusic_bridge.frontends.cli`)."""
    from ..args import add_render_args
    from .server import DEFAULT_TCP_PORT, DEFAULT_UDP_PORT

    p = subparsers.add_parser(
        "serve",
        help="run the OSC server that DAW sessions talk to (docs/osc.md)",
        description=(
            "Serve render requests over OSC (UDP, and OSC 1.1 SLIP or OSC 1.0 length-prefixed "
            "TCP). Audio travels by path, confined to the --root folders. Stop with Ctrl-C or "
            "SIGTERM: queued and running jobs are cancelled and no partial files are left."
        ),
    )
    net = p.add_argument_group("network")
    net.add_argument(
        "--host", default="127.0.0.1", help="bind address (default 127.0.0.1, loopback only)"
    )
    net.add_argument(
        "--port",
        type=int,
        default=DEFAULT_UDP_PORT,
        help=f"UDP port (default {DEFAULT_UDP_PORT}; 0: any free port)",
    )
    net.add_argument(
        "--tcp-port",
        type=int,
        default=DEFAULT_TCP_PORT,
        help=f"TCP port (default {DEFAULT_TCP_PORT}; 0: any free port)",
    )
    net.add_argument("--no-tcp", action="store_true", help="UDP only")
    net.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (anyone who reaches the port can render files inside the roots)",
    )
    files = p.add_argument_group("files")
    files.add_argument(
        "--root",
        action="append",
        type=Path,
        metavar="DIR",
        help="folder clients may read stems from and write outputs to (repeatable; default: the current folder)",
    )
    files.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="default output folder inside a root (default: next to each input)",
    )
    jobs = p.add_argument_group("jobs")
    jobs.add_argument(
        "--queue-size",
        type=int,
        default=64,
        help="jobs that may wait (default 64); more get a 'busy' error",
    )
    jobs.add_argument(
        "--render-threads",
        type=int,
        default=None,
        help="jobs run side by side (default 2, but 1 on a 2-core machine so a core stays "
        "free for replies; generation is serialized anyway)",
    )
    jobs.add_argument(
        "--meter-hz",
        type=float,
        default=10.0,
        help="coverage meter values per second of audio (default 10; 0: off)",
    )
    jobs.add_argument(
        "--stream-rate",
        type=float,
        default=1000.0,
        help="most meter/lane datagrams per second (default 1000)",
    )
    jobs.add_argument(
        "--lane-timetags",
        choices=["playback", "immediate"],
        default="immediate",
        help="lane bundles time-tagged 'immediately' (default: every message arrives before "
        "/bnmusic/done) or for real-time playback from the moment they are sent (receivers that "
        "honour time tags, like liblo, then dispatch lane points after done)",
    )
    jobs.add_argument(
        "--preload",
        action="store_true",
        help="load the generator (model) at start; jobs wait for it",
    )
    jobs.add_argument(
        "--isolation",
        choices=["process", "thread"],
        default="process",
        help="run renders in a worker process that owns the model (default) or in server threads (debugging)",
    )
    jobs.add_argument(
        "--worker-nice",
        type=int,
        choices=range(0, 20),
        default=10,
        metavar="0-19",
        help="CPU priority drop of the render worker (Unix nice; default 10): replies and the DAW come first",
    )
    jobs.add_argument(
        "--finish-on-exit",
        action="store_true",
        help="on SIGINT/SIGTERM let running jobs finish (queued ones are cancelled)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log requests (-v) and every error reply (-vv)",
    )
    p.add_argument(
        "--list-addresses", action="store_true", help="print the OSC address table and exit"
    )
    add_render_args(p)
    p.set_defaults(func=cmd_serve)


def _base_request(args: argparse.Namespace) -> tuple[Any, Any]:
    from bnmusic_bridge.errors import ParameterError

    from ..args import build_request, preset_export

    try:
        return build_request(args), preset_export(args)
    except ImportError as e:
        # bnmusic_bridge.presets is missing from this build: only "default" exists.
        if args.preset not in (None, "default"):
            raise ParameterError(
                f"--preset {args.preset!r}: presets are not available in this build ({e})"
            ) from e
        args.preset = None
        return build_request(args), None


def cmd_serve(args: argparse.Namespace) -> int:
    from bnmusic_bridge.errors import BNMusicError

    from .protocol import ADDRESSES
    from .server import OscServer, ServerConfig, default_render_threads, is_loopback

    if args.list_addresses:
        for spec in ADDRESSES.values():
            print(f"{spec.address} {spec.signature()}\n    {spec.meaning}\n    -> {spec.replies}")
        return 0
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose >= 2
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    if not is_loopback(args.host):
        if not args.allow_remote:
            print(
                f"bnmusic serve: error: --host {args.host} is not a loopback address; add --allow-remote "
                "to accept requests from other machines",
                file=sys.stderr,
            )
            return 2
        print(
            f"bnmusic serve: warning: listening on {args.host}: anyone who can reach this port can "
            "read and write audio inside the roots; OSC has no authentication",
            file=sys.stderr,
        )
    request, export = _base_request(args)
    roots = tuple(args.root or [Path.cwd()])
    config = ServerConfig(
        host=args.host,
        port=args.port,
        tcp_port=None if args.no_tcp else args.tcp_port,
        roots=roots,
        out_dir=args.out,
        request=request,
        export=export,
        presets_dir=args.presets_dir,
        allow_remote=args.allow_remote,
        max_queued=args.queue_size,
        render_threads=args.render_threads or default_render_threads(),
        meter_hz=args.meter_hz,
        stream_rate_hz=args.stream_rate,
        lane_timetags=args.lane_timetags,
        isolation=args.isolation,
        worker_niceness=args.worker_nice,
    )
    sys.setswitchinterval(DEFAULT_SWITCH_INTERVAL_S)
    server = OscServer(config)
    try:
        server.start()
    except OSError as e:
        raise BNMusicError(
            f"cannot listen on {args.host} port {args.port}/{args.tcp_port}: {e}"
        ) from e
    stop = threading.Event()
    signals = [0]

    def on_signal(signum: int, frame: Any) -> None:
        signals[0] += 1
        if signals[0] > 1:
            print(
                "bnmusic serve: forced exit; temporary files named .*.tmp* may remain",
                file=sys.stderr,
            )
            os._exit(130)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if args.preload:
            server.preload()
        udp, tcp = server.udp_address, server.tcp_address
        print(
            f"bnmusic serve: OSC on udp {udp[0]}:{udp[1]}"
            + (f", tcp {tcp[0]}:{tcp[1]} (SLIP or length-prefixed)" if tcp else "")
            + f"; roots: {', '.join(str(r) for r in server.roots.roots)}"
            + f"; generator {request.generator}, device {request.device}; Ctrl-C stops",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    except BNMusicError:
        server.stop()
        raise
    print(
        "bnmusic serve: stopping: cancelling jobs"
        + (" (running ones finish)" if args.finish_on_exit else ""),
        file=sys.stderr,
    )
    clean = server.stop(finish_running=args.finish_on_exit, timeout_s=60.0)
    s = server.stats
    print(
        f"bnmusic serve: stopped{'' if clean else ' (a render thread did not stop in time)'}; "
        f"{s.messages_in} messages in, {s.replies_out} replies out, {s.errors_out} errors",
        file=sys.stderr,
    )
    return 0 if clean else 1
