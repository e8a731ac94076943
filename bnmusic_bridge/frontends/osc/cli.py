"""``bnmusic serve``: run the OSC server until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bnmusic_bridge.errors import BNMusicError
from bnmusic_bridge.frontends.args import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    add_render_args,
    build_request,
    preset_export,
)
from bnmusic_bridge.request import expand_path

if TYPE_CHECKING:
    from .server import OscServer, ServerConfig

SECRET_ENV = "BNMUSIC_OSC_SECRET"
"""Environment variable that may hold the shared secret (instead of --secret-file)."""
DEFAULT_SWITCH_INTERVAL_S = 0.001
"""Python's GIL switch interval while serving (default 0.005 s): a render thread in
pure-Python code would otherwise hold replies back by up to 5 ms."""


def config_default(name: str) -> Any:
    """The default of :class:`~bnmusic_bridge.frontends.osc.server.ServerConfig` field
    ``name``: the flags' defaults are the server's own (one home)."""
    from .server import ServerConfig

    for f in dataclasses.fields(ServerConfig):
        if f.name == name:
            return (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
    raise KeyError(name)


def register(subparsers: Any) -> None:
    """Add the ``serve`` subcommand to the ``bnmusic`` parser."""
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
    host = config_default("host")
    net = p.add_argument_group("network")
    net.add_argument("--host", default=host, help=f"bind address (default {host}, loopback only)")
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
        help="allow a non-loopback --host (needs a shared secret: --secret-file or "
        f"${SECRET_ENV}; OSC is not encrypted, see docs/osc.md)",
    )
    net.add_argument(
        "--secret-file",
        type=expand_path,
        metavar="FILE",
        help="file whose first line is the shared secret every client must send with "
        f"/bnmusic/auth first (at least 16 characters; or set ${SECRET_ENV})",
    )
    idle = config_default("tcp_idle_timeout_s")
    net.add_argument(
        "--idle-timeout",
        type=float,
        default=idle,
        metavar="S",
        help=f"close a TCP connection silent for S seconds that owns no queued or running job (default {idle:g})",
    )
    net.add_argument(
        "--monitors",
        action="store_true",
        help="allow /bnmusic/subscribe ... all (a monitor sees every client's jobs; off by default)",
    )
    files = p.add_argument_group("files")
    files.add_argument(
        "--root",
        action="append",
        type=expand_path,
        metavar="DIR",
        help="folder clients may read stems from and write outputs to (repeatable; default: the current folder)",
    )
    files.add_argument(
        "--read-root",
        action="append",
        type=expand_path,
        metavar="DIR",
        help="folder clients and presets may read from but not write to: plugins, impulse "
        "responses, a music library (repeatable)",
    )
    files.add_argument(
        "--out",
        type=expand_path,
        metavar="DIR",
        help="default output folder inside a root (default: next to each input)",
    )
    quota = config_default("folder_quota")
    files.add_argument(
        "--folder-quota",
        type=int,
        default=quota,
        metavar="N",
        help=f"new output folders each client host may have created (default {quota})",
    )
    jobs = p.add_argument_group("jobs")
    queue_size = config_default("max_queued")
    jobs.add_argument(
        "--queue-size",
        type=int,
        default=queue_size,
        help=f"jobs that may wait (default {queue_size}); more get a 'busy' error",
    )
    jobs.add_argument(
        "--render-threads",
        type=int,
        default=None,
        help="jobs run side by side (default 2, but 1 on a 2-core machine so a core stays "
        "free for replies; generation is serialized anyway)",
    )
    jobs.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch and BLAS threads each job uses (default: the free cores, one kept for "
        "the server and the DAW and those other programs keep busy left out, shared among "
        "--render-threads jobs; 1 on a 2-core machine)",
    )
    meter_hz = config_default("meter_hz")
    jobs.add_argument(
        "--meter-hz",
        type=float,
        default=meter_hz,
        help=f"coverage meter values per second of audio (default {meter_hz:g}; 0: off)",
    )
    stream_rate = config_default("stream_rate_hz")
    jobs.add_argument(
        "--stream-rate",
        type=float,
        default=stream_rate,
        help=f"most meter/lane datagrams per second (default {stream_rate:g})",
    )
    jobs.add_argument(
        "--lane-timetags",
        choices=["playback", "immediate"],
        default=config_default("lane_timetags"),
        help="lane bundles time-tagged 'immediately' (default: every message arrives before "
        "/bnmusic/done) or for real-time playback from the moment they are sent (receivers that "
        "honour time tags, like liblo, then dispatch lane points after done)",
    )
    max_min = config_default("max_stem_s") / 60
    jobs.add_argument(
        "--max-stem-minutes",
        type=float,
        default=max_min,
        metavar="MIN",
        help=f"longest stem a job may render, from its header (default {max_min:g} minutes)",
    )
    jobs.add_argument(
        "--allow-generator",
        action="append",
        default=[],
        metavar="NAME",
        help="a model generator (riffusion, ...) clients may choose besides --generator; "
        "weights load from disk only, never from a hub (repeatable)",
    )
    jobs.add_argument(
        "--preload",
        action="store_true",
        help="load the generator (model) at start; jobs wait for it",
    )
    jobs.add_argument(
        "--isolation",
        choices=["process", "thread"],
        default=config_default("isolation"),
        help="run renders in a worker process that owns the model (default) or in server threads (debugging)",
    )
    jobs.add_argument(
        "--backend",
        choices=["local", "ray"],
        default=config_default("backend"),
        help="render on this machine (default) or on a Ray cluster: the bounce and the "
        "results travel by value, outputs are written here (docs/batch.md)",
    )
    jobs.add_argument(
        "--address",
        dest="ray_address",
        metavar="HOST:PORT",
        default=config_default("ray_address"),
        help="the Ray cluster's head, e.g. 192.168.1.20:6379 (--backend ray; default "
        "$RAY_ADDRESS, else a Ray instance started here)",
    )
    niceness = config_default("worker_niceness")
    jobs.add_argument(
        "--worker-nice",
        type=int,
        choices=range(0, 20),
        default=niceness,
        metavar="0-19",
        help=f"CPU priority drop of the render worker (Unix nice; default {niceness}): replies "
        "and the DAW come first",
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


def cmd_serve(args: argparse.Namespace) -> int:
    """Run ``bnmusic serve`` until SIGINT or SIGTERM: exit 0 after a clean stop, 1 when a
    render thread did not stop in time, 2 for a non-loopback host without
    ``--allow-remote``."""
    from .server import OscServer

    # 1. Answer --list-addresses without starting anything
    if args.list_addresses:
        print_addresses()
        return EXIT_OK
    configure_logging(args.verbose)
    # 2. Refuse a non-loopback address without --allow-remote and a secret
    secret = read_secret(args.secret_file)
    if not check_host(args.host, args.allow_remote, secret is not None):
        return EXIT_USAGE
    # 3. Build the server's configuration from the flags and the preset
    config = dataclasses.replace(server_config(args), secret=secret)
    # 4. Open the sockets
    sys.setswitchinterval(DEFAULT_SWITCH_INTERVAL_S)
    server = OscServer(config)
    try:
        server.start()
    except OSError as e:
        raise BNMusicError(
            f"cannot listen on {args.host} port {args.port}/{args.tcp_port}: {e}"
        ) from e
    # 5. Serve until a signal, then stop (cancelling jobs)
    stop = install_stop_handlers()
    try:
        if args.preload:
            server.preload()
        print_listening(server, config)
        while not stop.wait(0.5):
            pass
    except BNMusicError:
        server.stop()
        raise
    return stop_server(server, args.finish_on_exit)


def print_addresses() -> None:
    """The OSC address table: address, signature, meaning and replies."""
    from .protocol import ADDRESSES

    for spec in ADDRESSES.values():
        print(f"{spec.address} {spec.signature()}\n    {spec.meaning}\n    -> {spec.replies}")


def configure_logging(verbose: int) -> None:
    """Warnings only; requests with ``-v``; every error reply with ``-vv``."""
    logging.basicConfig(
        level=logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )


def read_secret(path: Path | None) -> str | None:
    """The shared secret: the first line of ``path``, else ``$BNMUSIC_OSC_SECRET``, else
    None (an open server, loopback only).

    Raises:
        BNMusicError: the file cannot be read or the secret is too short.
    """
    from .auth import check_secret

    text: str | None = None
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.readline()
        except (OSError, UnicodeDecodeError) as e:
            raise BNMusicError(f"--secret-file {path}: cannot read it ({e})") from e
    elif os.environ.get(SECRET_ENV):
        text = os.environ[SECRET_ENV]
    return None if text is None else check_secret(text)


def check_host(host: str, allow_remote: bool, has_secret: bool = False) -> bool:
    """False (with the error printed) for a non-loopback ``host`` without
    ``--allow-remote`` and a shared secret; a warning when it is allowed."""
    from .server import is_loopback

    if is_loopback(host):
        return True
    if not allow_remote or not has_secret:
        print(
            f"bnmusic serve: error: --host {host} is not a loopback address; add --allow-remote "
            "and a shared secret (--secret-file FILE or $" + SECRET_ENV + ") to accept requests "
            "from other machines",
            file=sys.stderr,
        )
        return False
    print(
        f"bnmusic serve: warning: listening on {host}: clients must send the shared secret "
        "first, but OSC is not encrypted: anyone who can watch the network sees the secret, "
        "the paths and the replies (docs/osc.md, Security)",
        file=sys.stderr,
    )
    return True


def _threads_flag(args: argparse.Namespace) -> int | None:
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise BNMusicError(f"--threads {threads}: need a whole number >= 1")
    return threads


def server_config(args: argparse.Namespace) -> ServerConfig:
    """The :class:`~bnmusic_bridge.frontends.osc.server.ServerConfig` of the flags; the
    base request is ``--preset`` (if any) with the render flags applied."""
    from .server import ServerConfig, default_render_threads

    return ServerConfig(
        host=args.host,
        port=args.port,
        tcp_port=None if args.no_tcp else args.tcp_port,
        roots=tuple(args.root or [Path.cwd()]),
        out_dir=args.out,
        request=build_request(args),
        export=preset_export(args),
        presets_dir=args.presets_dir,
        allow_remote=args.allow_remote,
        max_queued=args.queue_size,
        render_threads=args.render_threads or default_render_threads(),
        threads=_threads_flag(args),
        meter_hz=args.meter_hz,
        stream_rate_hz=args.stream_rate,
        lane_timetags=args.lane_timetags,
        isolation=args.isolation,
        worker_niceness=args.worker_nice,
        read_roots=tuple(args.read_root or []),
        allow_monitors=args.monitors,
        model_generators=tuple(args.allow_generator),
        max_stem_s=args.max_stem_minutes * 60.0,
        tcp_idle_timeout_s=args.idle_timeout,
        folder_quota=args.folder_quota,
        backend=args.backend,
        ray_address=args.ray_address,
    )


def install_stop_handlers() -> threading.Event:
    """SIGINT and SIGTERM set the returned event (a clean stop); a second signal exits
    at once."""
    stop = threading.Event()
    signals = [0]

    def on_signal(signum: int, frame: Any) -> None:
        signals[0] += 1
        if signals[0] > 1:
            print(
                "bnmusic serve: forced exit; an output set being written is completed or "
                "undone by the next render into its folder",
                file=sys.stderr,
            )
            os._exit(EXIT_INTERRUPTED)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop


def print_listening(server: OscServer, config: ServerConfig) -> None:
    """The one line a user (or a DAW script waiting for it) sees once the server runs."""
    udp, tcp = server.udp_address, server.tcp_address
    request = config.request
    print(
        f"bnmusic serve: OSC on udp {udp[0]}:{udp[1]}"
        + (f", tcp {tcp[0]}:{tcp[1]} (SLIP or length-prefixed)" if tcp else "")
        + f"; roots: {', '.join(str(r) for r in server.roots.roots)}"
        + f"; generator {request.generator}, device {request.device}"
        + ("; clients must send /bnmusic/auth first" if config.secret else "")
        + "; Ctrl-C stops",
        flush=True,
    )


def stop_server(server: OscServer, finish_running: bool) -> int:
    """Cancel queued jobs (and running ones unless ``finish_running``), print the
    totals; EXIT_ERROR when a render thread did not stop in time."""
    print(
        "bnmusic serve: stopping: cancelling jobs"
        + (" (running ones finish)" if finish_running else ""),
        file=sys.stderr,
    )
    clean = server.stop(finish_running=finish_running, timeout_s=60.0)
    s = server.stats
    print(
        f"bnmusic serve: stopped{'' if clean else ' (a render thread did not stop in time)'}; "
        f"{s.messages_in} messages in, {s.replies_out} replies out, {s.errors_out} errors",
        file=sys.stderr,
    )
    return EXIT_OK if clean else EXIT_ERROR
