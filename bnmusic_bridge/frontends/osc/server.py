"""The OSC server: UDP, OSC-over-TCP, subscriptions and the push streams.

Threads: one UDP receiver, one TCP acceptor plus one reader per TCP client, the job
threads of :class:`~bnmusic_bridge.frontends.osc.jobs.JobManager` (each relays one job to the
render worker process and back), and one pusher that sends each finished job's lambda
lane (time-tagged bundles), its coverage meter (rate-limited) and its done message, in
that order. Handlers only check arguments, answer queries and queue jobs; no handler
waits on a render, and renders run in another process (:mod:`.worker`).

Routing: a reply or push goes to the endpoint the request came from, unless that sender
subscribed another UDP target (``/bnmusic/subscribe host port``); targets subscribed
with scope ``all`` receive a copy of every reply and push the server sends (a monitor,
which is how fire-and-forget senders such as liblo's ``oscsend`` see results).
Subscription hosts must be the subscriber's own address, so the server cannot be used
to send traffic elsewhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import logging
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnmusic_bridge import __version__
from bnmusic_bridge.errors import BNMusicError

from . import protocol as P
from .jobs import Job, JobManager, Outcome
from .paths import RootSet

log = logging.getLogger("bnmusic.osc")

DEFAULT_UDP_PORT = 9750
DEFAULT_TCP_PORT = 9751
"""Clear of Reaper's usual 8000/9000 and AbletonOSC's 11000/11001."""
LANE_POINTS_PER_DATAGRAM = 16
MAX_SUBSCRIPTIONS = 32
MAX_TCP_CLIENTS = 16
TCP_SEND_TIMEOUT_S = 2.0
PRESETS_CACHE_S = 10.0
"""Age after which a /bnmusic/presets request triggers a background re-read."""
PRESET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def default_render_threads() -> int:
    """Jobs run side by side in the worker: 2, but never every core (one stays with the
    server so replies stay fast while renders run)."""
    return max(1, min(2, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True)
class Endpoint:
    """Where a message came from or goes to: UDP ``host:port``, or a TCP connection."""

    kind: str
    host: str
    port: int
    conn_id: int = 0

    def __str__(self) -> str:
        return f"{self.kind}://{self.host}:{self.port}" + (
            f"#{self.conn_id}" if self.kind == "tcp" else ""
        )


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``bnmusic serve`` decides before the sockets open.

    Attributes:
        host: bind address; loopback unless ``allow_remote``.
        port: UDP port (0: any free port).
        tcp_port: TCP port (0: any free port; None: no TCP).
        roots: folders clients may read from and write to.
        out_dir: default output folder (None: next to each input).
        request: the base RenderRequest (server preset plus flags); its model,
            device, dtype and local_files_only hold for every job.
        export: the base ExportOptions.
        presets_dir: user presets folder for per-job presets.
        allow_remote: permit a non-loopback ``host``.
        max_queued: jobs that may wait; one more gets ``busy``.
        render_threads: threads running jobs (generation is serialized regardless).
        meter_hz: meter values per second of audio (0: no meter stream).
        stream_rate_hz: most lane/meter datagrams sent per second, over all jobs.
        lane_timetags: "playback" (a lane point's bundle is time-tagged stream start +
            its time, so timetag-aware receivers replay it in real time) or "immediate".
        lane_tolerance_db: lane compaction tolerance in dB.
        progress_interval_s: least time between progress messages of a job in a stage.
        isolation: "process" (renders run in one worker process that owns the model;
            the default) or "thread" (in the server process, for debugging).
        worker_setup: ``"module:function"`` names called where renders run before the
            first job, e.g. to register a generator.
        worker_niceness: how much the worker process lowers its CPU priority (Unix
            ``nice``, 0 to 19; renders are batch work, replies and the DAW come first).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_UDP_PORT
    tcp_port: int | None = DEFAULT_TCP_PORT
    roots: tuple[Path, ...] = (Path("."),)
    out_dir: Path | None = None
    request: Any = None
    export: Any = None
    presets_dir: Path | None = None
    allow_remote: bool = False
    max_queued: int = 64
    render_threads: int = field(default_factory=default_render_threads)
    meter_hz: float = 10.0
    stream_rate_hz: float = 1000.0
    lane_timetags: str = "immediate"
    lane_tolerance_db: float = 0.1
    progress_interval_s: float = 0.05
    isolation: str = "process"
    worker_setup: tuple[str, ...] = ()
    worker_niceness: int = 10


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Stats:
    """Counters for tests, benchmarks and the log."""

    packets_in: int = 0
    messages_in: int = 0
    replies_out: int = 0
    errors_out: int = 0
    send_failures: int = 0
    by_code: dict[str, int] = field(default_factory=dict)


class _TcpClient:
    def __init__(self, sock: socket.socket, endpoint: Endpoint) -> None:
        self.sock = sock
        self.endpoint = endpoint
        self.decoder = P.StreamDecoder()
        self.lock = threading.Lock()
        self.alive = True

    def send(self, packet: bytes) -> bool:
        with self.lock:
            if not self.alive:
                return False
            try:
                self.sock.sendall(self.decoder.frame(packet))
                return True
            except OSError:
                # A client that stops reading must not stall the pushes of others.
                self.close_locked()
                return False

    def close_locked(self) -> None:
        self.alive = False
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class _TokenBucket:
    def __init__(self, rate_hz: float, burst: int = 64) -> None:
        self.rate_hz = rate_hz
        self.burst = float(burst)
        self.tokens = float(burst)
        self.t = time.monotonic()

    def take(self, stop: threading.Event) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate_hz)
            self.t = now
            if self.tokens >= 1.0 or stop.is_set():
                self.tokens -= 1.0
                return
            time.sleep((1.0 - self.tokens) / self.rate_hz)


class OscServer:
    """The ``bnmusic serve`` process, usable from Python (tests, benchmarks).

    Args:
        config: sockets, roots, base request and limits.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, config: ServerConfig) -> None:
        from bnmusic_bridge.export import ExportOptions
        from bnmusic_bridge.request import RenderRequest

        if not config.allow_remote and not is_loopback(config.host):
            raise P.OscError(
                "bad_arguments",
                f"--host {config.host} is not a loopback address; pass --allow-remote to listen there",
            )
        if config.lane_timetags not in ("playback", "immediate"):
            raise P.OscError(
                "bad_arguments",
                f"lane_timetags={config.lane_timetags!r}; use playback or immediate",
            )
        self.config = dataclasses.replace(
            config,
            request=config.request or RenderRequest(),
            export=config.export or ExportOptions(),
        )
        self.roots = RootSet(config.roots)
        if self.config.out_dir is not None:
            self.roots.output_dir(str(self.config.out_dir))
        self.stats = Stats()
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._flush = threading.Event()
        self._closing = False
        self._subs_lock = threading.Lock()
        self._redirects: dict[Any, Endpoint] = {}
        self._monitors: dict[Endpoint, Any] = {}
        self._tcp_clients: dict[int, _TcpClient] = {}
        self._next_conn = 0
        self._pushes: queue.Queue[tuple[Job, Outcome] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._presets_lock = threading.Lock()
        self._presets_cache: tuple[float, list[tuple[str, str]]] | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self.manager: JobManager | None = None
        self._handlers: dict[
            str, Callable[[P.Message, Endpoint, dict[str, Any], list[P.OscArg]], None]
        ] = {
            P.PREFIX + "ping": self._on_ping,
            P.PREFIX + "version": self._on_version,
            P.PREFIX + "render": self._on_render,
            P.PREFIX + "render_ex": self._on_render,
            P.PREFIX + "cancel": self._on_cancel,
            P.PREFIX + "status": self._on_status,
            P.PREFIX + "presets": self._on_presets,
            P.PREFIX + "subscribe": self._on_subscribe,
            P.PREFIX + "unsubscribe": self._on_unsubscribe,
        }
        assert set(self._handlers) == set(P.ADDRESSES)

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> OscServer:
        """Bind the sockets and start the threads. Raises OSError if a port is taken."""
        cfg = self.config
        # Listing presets and checking the base request import the preset and generator
        # checks (about a second, once): done before the sockets open, so no request
        # ever waits on an import.
        self._refresh_presets()
        _check_request(cfg.request, "the server's base request")
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        self._udp = socket.socket(family, socket.SOCK_DGRAM)
        # Bursts of requests (the load test: 500 per second) must not overflow the
        # default receive buffer while a render holds the CPU.
        self._udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self._udp.bind((cfg.host, cfg.port))
        self._udp.settimeout(0.2)
        if cfg.tcp_port is not None:
            self._tcp = socket.socket(family, socket.SOCK_STREAM)
            self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._tcp.bind((cfg.host, cfg.tcp_port))
            self._tcp.listen(MAX_TCP_CLIENTS)
            self._tcp.settimeout(0.2)
        self.manager = JobManager(
            self,
            max_queued=cfg.max_queued,
            render_threads=cfg.render_threads,
            meter_hz=cfg.meter_hz,
            lane_tolerance_db=cfg.lane_tolerance_db,
            progress_interval_s=cfg.progress_interval_s,
            check_paths=self._recheck_paths,
            isolation=cfg.isolation,
            worker_setup=cfg.worker_setup,
            worker_niceness=cfg.worker_niceness,
        )
        self._spawn(self._udp_loop, "bnmusic-osc-udp")
        if self._tcp is not None:
            self._spawn(self._tcp_accept_loop, "bnmusic-osc-tcp")
        self._spawn(self._push_loop, "bnmusic-osc-push")

        log.info(
            "OSC server on udp %s tcp %s, roots %s", self.udp_address, self.tcp_address, self.roots
        )
        return self

    def _spawn(self, target: Callable[[], object], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def preload(self) -> None:
        """Create the base request's generator (loads the model) where renders run."""
        assert self.manager is not None
        self.manager.executor.preload(self.config.request)

    @property
    def worker_pid(self) -> int | None:
        """The render worker's process id (None with ``isolation="thread"``)."""
        return self.manager.executor.pid if self.manager is not None else None

    @property
    def udp_address(self) -> tuple[str, int]:
        assert self._udp is not None
        return self._udp.getsockname()[:2]

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        return self._tcp.getsockname()[:2] if self._tcp is not None else None

    def stop(self, *, finish_running: bool = False, timeout_s: float = 30.0) -> bool:
        """Refuse new jobs, cancel queued ones, cancel (or finish) running ones, send
        every job's final message, then close the sockets. Returns True when all
        threads stopped within ``timeout_s``."""
        if self._closing:
            return True
        self._closing = True
        self._flush.set()
        deadline = time.monotonic() + timeout_s
        clean = True
        if self.manager is not None:
            clean = self.manager.shutdown(finish_running=finish_running, timeout_s=timeout_s)
        self._pushes.put(None)
        for t in self._threads:
            if t.name == "bnmusic-osc-push":
                t.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            clean = clean and not t.is_alive()
        for client in list(self._tcp_clients.values()):
            with client.lock:
                if client.alive:
                    client.close_locked()
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()
        return clean

    def __enter__(self) -> OscServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- receiving -------------------------------------------------------------------

    def _udp_loop(self) -> None:
        assert self._udp is not None
        while not self._stop.is_set():
            try:
                data, addr = self._udp.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                # Windows reports an earlier send's ICMP "port unreachable" here.
                continue
            self.handle_packet(data, Endpoint("udp", addr[0], addr[1]))

    def _tcp_accept_loop(self) -> None:
        assert self._tcp is not None
        while not self._stop.is_set():
            try:
                sock, addr = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._subs_lock:
                self._next_conn += 1
                endpoint = Endpoint("tcp", addr[0], addr[1], self._next_conn)
                full = len(self._tcp_clients) >= MAX_TCP_CLIENTS
                client = _TcpClient(sock, endpoint)
                if not full:
                    self._tcp_clients[endpoint.conn_id] = client
            if full:
                client.decoder.mode = "slip"
                client.send(
                    P.encode_message(
                        P.PREFIX + "error",
                        "#connection",
                        "busy",
                        f"at most {MAX_TCP_CLIENTS} TCP clients",
                    )
                )
                with client.lock:
                    client.close_locked()
                continue
            sock.settimeout(TCP_SEND_TIMEOUT_S)
            self._spawn(
                functools.partial(self._tcp_read_loop, client),
                f"bnmusic-osc-tcp-{endpoint.conn_id}",
            )

    def _tcp_read_loop(self, client: _TcpClient) -> None:
        sock = client.sock
        try:
            while not self._stop.is_set() and client.alive:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                for item in client.decoder.feed(data):
                    if isinstance(item, P.OscError):
                        self._count_in()
                        self._reply_error(
                            client.endpoint, item.where or "#packet", item.code, str(item)
                        )
                    else:
                        self.handle_packet(item, client.endpoint)
                if client.decoder.broken:
                    break
        finally:
            with self._subs_lock:
                self._tcp_clients.pop(client.endpoint.conn_id, None)
                self._redirects.pop(self._origin_key(client.endpoint), None)
            with client.lock:
                if client.alive:
                    client.close_locked()

    def _count_in(self, messages: int = 0) -> None:
        with self._stats_lock:
            self.stats.packets_in += 1
            self.stats.messages_in += messages

    def handle_packet(self, data: bytes, origin: Endpoint) -> None:
        """Decode one packet and answer every message in it. Never raises."""
        try:
            messages = P.decode_packet(data)
        except P.OscError as e:
            self._count_in()
            self._reply_error(origin, e.where or "#packet", e.code, str(e))
            return
        self._count_in(len(messages))
        for message in messages:
            self.handle_message(message, origin)

    def handle_message(self, message: P.Message, origin: Endpoint) -> None:
        """Dispatch one message; every refusal becomes a ``/bnmusic/error`` reply."""
        spec = P.ADDRESSES.get(message.address)
        if log.isEnabledFor(logging.INFO) and message.address != P.PREFIX + "ping":
            # -v: every request but pings (a DAW may ping many times a second)
            args = " ".join(repr(a.value) for a in message.args[:6])
            log.info("%s %s from %s", message.address, args, origin.kind)
        try:
            if spec is None:
                known = ", ".join(sorted(P.ADDRESSES))
                raise P.OscError(
                    "unknown_address", f"no address {message.address!r}; known: {known}"
                )
            values, rest = P.check_args(spec, message)
            self._handlers[spec.address](message, origin, values, rest)
        except BNMusicError as e:
            code = getattr(e, "code", "error")
            where = getattr(e, "where", None) or self._job_arg(message) or message.address
            self._reply_error(origin, where, code, str(e))
        except Exception as e:  # noqa: BLE001 - a bug must not take the server down
            log.exception("handler for %s failed", message.address)
            self._reply_error(origin, message.address, "internal", f"{type(e).__name__}: {e}")

    @staticmethod
    def _job_arg(message: P.Message) -> P.OscArg | None:
        spec = P.ADDRESSES.get(message.address)
        if spec is None or not spec.params or spec.params[0].kind != "job_id" or not message.args:
            return None
        try:
            return P.coerce(message.args[0], "job_id")
        except ValueError:
            return None

    # -- sending ---------------------------------------------------------------------

    @staticmethod
    def _origin_key(origin: Endpoint) -> Any:
        return (
            ("tcp", origin.conn_id) if origin.kind == "tcp" else ("udp", origin.host, origin.port)
        )

    def _targets(self, origin: Endpoint) -> list[Endpoint]:
        """The sender (or its redirect), then every 'all' subscriber once."""
        with self._subs_lock:
            first = self._redirects.get(self._origin_key(origin), origin)
            if not self._monitors:
                return [first]
            return [first, *(m for m in self._monitors if m != first)]

    def _send(self, endpoint: Endpoint, packet: bytes) -> None:
        ok = False
        if endpoint.kind == "udp":
            if self._udp is not None:
                try:
                    self._udp.sendto(packet, (endpoint.host, endpoint.port))
                    ok = True
                except OSError:
                    pass
        else:
            client = self._tcp_clients.get(endpoint.conn_id)
            ok = client is not None and client.send(packet)
        with self._stats_lock:
            if ok:
                self.stats.replies_out += 1
            else:
                self.stats.send_failures += 1

    def _reply(self, origin: Endpoint, packet: bytes) -> None:
        for target in self._targets(origin):
            self._send(target, packet)

    def _push(self, job: Job, packet: bytes) -> None:
        self._reply(job.origin, packet)

    def _error_packet(self, where: Any, code: str, message: str) -> bytes:
        with self._stats_lock:
            self.stats.errors_out += 1
            self.stats.by_code[code] = self.stats.by_code.get(code, 0) + 1
        log.debug("error %s %s: %s", where, code, message)
        return P.encode_message(P.PREFIX + "error", where, code, message[:1000])

    def _reply_error(self, origin: Endpoint, where: Any, code: str, message: str) -> None:
        self._reply(origin, self._error_packet(where, code, message))

    # -- handlers --------------------------------------------------------------------

    def _on_ping(self, message: P.Message, origin: Endpoint, values: dict, rest: list) -> None:
        self._reply(origin, P.echo_message(P.PREFIX + "pong", message))

    def _on_version(self, message: P.Message, origin: Endpoint, values: dict, rest: list) -> None:
        self._reply(
            origin, P.encode_message(P.PREFIX + "version/reply", P.API_VERSION, __version__)
        )

    def _on_render(self, message: P.Message, origin: Endpoint, values: dict, rest: list) -> None:
        assert self.manager is not None
        job_id: P.OscArg = values["job_id"]
        key = P.job_key(job_id)
        extended = message.address.endswith("render_ex")
        try:
            if self._closing:
                raise P.OscError("shutting_down", "the server is shutting down; no new jobs")
            noise = self.roots.input_file(values["noise_path"])
            overrides = P.parse_overrides(rest) if extended else P.Overrides({}, {}, {}, None)
            preset = values.get("preset") or overrides.preset
            request, export = self._preset(preset)
            changes = dict(overrides.request)
            if values.get("prompt"):
                changes["prompt"] = values["prompt"]
            if values.get("seed") is not None:
                changes["seed"] = values["seed"]
            if overrides.generator_params:
                changes["generator_params"] = {
                    **dict(request.generator_params),
                    **overrides.generator_params,
                }
            request = request.replace(**changes)
            _check_request(request, message.address)
            export = dataclasses.replace(export, **overrides.export, force=False)
            # The done message always names the CSV and JSON lanes.
            export = dataclasses.replace(
                export, lane_formats=tuple(dict.fromkeys(["csv", "json", *export.lane_formats]))
            )
            export.check()
            out_text = values.get("out_dir") or ""
            if out_text:
                out_dir = self.roots.output_dir(out_text)
            elif self.config.out_dir is not None:
                out_dir = self.roots.output_dir(str(self.config.out_dir))
            else:
                out_dir = self.roots.output_dir(str(noise.parent))
        except BNMusicError as e:
            e.where = job_id  # type: ignore[attr-defined]
            raise
        job = Job(job_id, key, noise, out_dir, request, export, origin)
        self.manager.submit(job)
        self._push(job, P.encode_message(P.PREFIX + "ack", job_id))
        job.released.set()

    def _preset(self, name: str | None) -> tuple[Any, Any]:
        base_request, base_export = self.config.request, self.config.export
        if not name:
            return base_request, base_export
        if not PRESET_NAME.match(name) or name.endswith(".toml"):
            raise P.OscError(
                "unknown_preset",
                f"preset {name!r}: give a preset name (letters, digits, _ . -), not a path",
            )
        try:
            from bnmusic_bridge.presets import load_preset
        except ImportError:
            if name == "default":
                from bnmusic_bridge.export import ExportOptions
                from bnmusic_bridge.request import RenderRequest

                preset_request, preset_export = RenderRequest(), ExportOptions()
            else:
                raise P.OscError(
                    "unknown_preset", f"no preset {name!r}; this build knows only 'default'"
                ) from None
        else:
            try:
                preset = load_preset(name, presets_dir=self.config.presets_dir)
            except BNMusicError as e:
                raise P.OscError("unknown_preset", str(e)) from e
            preset_request, preset_export = preset.request, preset.export
        # The model is the server's: presets choose prompts and parameters, not weights.
        owned = {k: getattr(base_request, k) for k in P.SERVER_OWNED_FIELDS}
        return preset_request.replace(**owned), preset_export

    def _recheck_paths(self, job: Job) -> None:
        self.roots.input_file(str(job.noise_path))
        self.roots.output_dir(str(job.out_dir))

    def _on_cancel(self, message: P.Message, origin: Endpoint, values: dict, rest: list) -> None:
        assert self.manager is not None
        job_id = values["job_id"]
        previous = self.manager.cancel(P.job_key(job_id))
        self._reply(origin, P.encode_message(P.PREFIX + "cancel/reply", job_id, previous))

    def _on_status(self, message: P.Message, origin: Endpoint, values: dict, rest: list) -> None:
        assert self.manager is not None
        job_id = values.get("job_id")
        if job_id is not None:
            s = self.manager.status(P.job_key(job_id))
            self._reply(
                origin,
                P.encode_message(
                    P.PREFIX + "status/job",
                    job_id,
                    s.state,
                    s.stage,
                    float(s.fraction),
                    s.queue_position,
                ),
            )
            return
        queued, running, finished, active = self.manager.overview()
        args: list[Any] = [queued, running, finished, self.config.max_queued]
        for s in active[: P.MAX_LIST_ENTRIES]:
            args.extend([s.job_id, s.state])
        self._reply(origin, P.encode_message(P.PREFIX + "status/all", *args))

    def _on_presets(self, message: P.Message, origin: Endpoint, values: dict, rest: list) -> None:
        with self._presets_lock:
            cached = self._presets_cache
        if cached is None:
            entries = self._refresh_presets()
        else:
            entries = cached[1]
            if time.monotonic() - cached[0] > PRESETS_CACHE_S:
                self._spawn(self._refresh_presets, "bnmusic-osc-presets")
        args: list[Any] = [len(entries)]
        for name, description in entries[: P.MAX_LIST_ENTRIES]:
            args.extend([name, description])
        self._reply(origin, P.encode_message(P.PREFIX + "presets/reply", *args))

    def _refresh_presets(self) -> list[tuple[str, str]]:
        try:
            entries = self.preset_list()
        except Exception:  # noqa: BLE001 - a broken presets folder must not stop serving
            log.exception("listing presets failed")
            entries = [("default", "built-in defaults")]
        with self._presets_lock:
            self._presets_cache = (time.monotonic(), entries)
        return entries

    def preset_list(self) -> list[tuple[str, str]]:
        """(name, description) of every preset a job may name."""
        try:
            from bnmusic_bridge.presets import list_presets
        except ImportError:
            return [("default", "built-in defaults")]
        out = []
        for entry in list_presets(self.config.presets_dir):
            if getattr(entry, "error", None):
                continue  # a broken preset cannot be used; `bnmusic presets list` shows why
            out.append((str(entry.name), str(getattr(entry, "description", "") or "")))
        return out

    def _on_subscribe(self, message: P.Message, origin: Endpoint, values: dict, rest: list) -> None:
        host = values["host"] or origin.host
        port = values["port"]
        scope = values.get("scope") or "sender"
        if scope not in ("sender", "all"):
            raise P.OscError("bad_arguments", f"scope {scope!r}: use 'sender' or 'all'")
        if not 1 <= port <= 65535:
            raise P.OscError("bad_arguments", f"port {port} is not a port number (1 to 65535)")
        target_host = self._own_host(host, origin)
        target = Endpoint("udp", target_host, port)
        with self._subs_lock:
            if scope == "all":
                if target not in self._monitors and len(self._monitors) >= MAX_SUBSCRIPTIONS:
                    raise P.OscError("busy", f"at most {MAX_SUBSCRIPTIONS} 'all' subscriptions")
                self._monitors[target] = self._origin_key(origin)
            else:
                key = self._origin_key(origin)
                if key not in self._redirects and len(self._redirects) >= MAX_SUBSCRIPTIONS:
                    raise P.OscError("busy", f"at most {MAX_SUBSCRIPTIONS} subscriptions")
                self._redirects[key] = target
        self._send(target, P.encode_message(P.PREFIX + "subscribe/reply", target_host, port, scope))

    def _own_host(self, host: str, origin: Endpoint) -> str:
        """``host`` as an IP address, refused unless it is the subscriber's own."""
        try:
            family = socket.AF_INET6 if ":" in origin.host else socket.AF_INET
            resolved = str(socket.getaddrinfo(host, None, family, socket.SOCK_DGRAM)[0][4][0])
        except (OSError, IndexError) as e:
            raise P.OscError(
                "bad_arguments", f"subscribe host {host!r} does not resolve ({e})"
            ) from e
        same = resolved == origin.host or (is_loopback(resolved) and is_loopback(origin.host))
        if not same:
            raise P.OscError(
                "bad_arguments",
                f"subscribe host {host!r} ({resolved}) is not your own address ({origin.host}); "
                "a subscription may only name the subscriber's host",
            )
        return resolved

    def _on_unsubscribe(
        self, message: P.Message, origin: Endpoint, values: dict, rest: list
    ) -> None:
        removed = 0
        with self._subs_lock:
            if "host" in values and "port" in values:
                target = Endpoint(
                    "udp", self._own_host(values["host"] or origin.host, origin), values["port"]
                )
                for key in [k for k, v in self._redirects.items() if v == target]:
                    del self._redirects[key]
                    removed += 1
                if self._monitors.pop(target, None) is not None:
                    removed += 1
            elif self._redirects.pop(self._origin_key(origin), None) is not None:
                removed = 1
        self._reply(origin, P.encode_message(P.PREFIX + "unsubscribe/reply", removed))

    # -- job events (render threads) and the pusher --------------------------------

    def progress(self, job: Job, stage: str, fraction: float) -> None:
        self._push(job, P.encode_message(P.PREFIX + "progress", job.job_id, stage, float(fraction)))

    def failed(self, job: Job, code: str, message: str) -> None:
        self._push(job, self._error_packet(job.job_id, code, message))

    def done(self, job: Job, outcome: Outcome) -> None:
        self._pushes.put((job, outcome))

    def _push_loop(self) -> None:
        bucket = _TokenBucket(self.config.stream_rate_hz)
        while True:
            item = self._pushes.get()
            if item is None:
                # Shutdown: whatever is left gets its done message without streams.
                while True:
                    try:
                        rest = self._pushes.get_nowait()
                    except queue.Empty:
                        return
                    if rest is not None:
                        self._send_done(*rest, lane_points=0, meter_points=0)
            else:
                try:
                    self._stream(*item, bucket)
                except Exception:  # noqa: BLE001 - keep pushing for other jobs
                    log.exception("streaming job %s failed", item[0].key)
                    self._send_done(*item, lane_points=0, meter_points=0)

    def _stream(self, job: Job, outcome: Outcome, bucket: _TokenBucket) -> None:
        lane_points = self._stream_lane(job, outcome, bucket)
        meter_points = 0
        for t_s, cov in zip(outcome.meter_times_s, outcome.meter_coverage, strict=True):
            bucket.take(self._flush)
            self._push(
                job, P.encode_message(P.PREFIX + "meter", job.job_id, float(t_s), float(cov))
            )
            meter_points += 1
        self._send_done(job, outcome, lane_points=lane_points, meter_points=meter_points)

    def _stream_lane(self, job: Job, outcome: Outcome, bucket: _TokenBucket) -> int:
        times, gains = outcome.lane_times_s, outcome.lane_gain_db
        origin_s = time.time()
        for start in range(0, len(times), LANE_POINTS_PER_DATAGRAM):
            inner = []
            for t_s, g_db in zip(
                times[start : start + LANE_POINTS_PER_DATAGRAM],
                gains[start : start + LANE_POINTS_PER_DATAGRAM],
                strict=True,
            ):
                tag = P.ntp_timetag(
                    origin_s + float(t_s) if self.config.lane_timetags == "playback" else None
                )
                inner.append(
                    P.encode_bundle(
                        tag,
                        [P.encode_message(P.PREFIX + "lane", job.job_id, float(t_s), float(g_db))],
                    )
                )
            bucket.take(self._flush)
            self._push(job, P.encode_bundle(P.ntp_timetag(None), inner))
        return len(times)

    def _send_done(
        self, job: Job, outcome: Outcome, *, lane_points: int, meter_points: int
    ) -> None:
        out = outcome.outputs
        fixed = ("music", "blended", "lambda_csv", "lambda_json", "report")
        extra: list[Any] = []
        for kind in sorted(k for k in out if k not in fixed):
            extra.extend([kind, out[kind]])
        self._push(
            job,
            P.encode_message(
                P.PREFIX + "done",
                job.job_id,
                *(out.get(k, "") for k in fixed),
                outcome.coverage,
                outcome.nmr_db,
                outcome.lambda_min_db,
                outcome.lambda_max_db,
                lane_points,
                meter_points,
                *extra,
            ),
        )


def _check_request(request: Any, where: str) -> None:
    """Refuse a bad request before the ack: ranges, and the generator's own check of its
    parameters when the presets module provides it (no weights are loaded)."""
    from bnmusic_bridge.request import check_request

    check_request(request)
    try:
        from bnmusic_bridge.presets import check_generator
    except ImportError:
        return
    check_generator(request.generator, request.generator_params, where)


def iter_addresses() -> Iterable[P.AddressSpec]:
    """The address table, for docs and ``bnmusic serve --list-addresses``."""
    return P.ADDRESSES.values()
