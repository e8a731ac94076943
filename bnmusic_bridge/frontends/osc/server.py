"""The OSC server: the glue between transport, dispatch, jobs and pushes.

- :mod:`.transport` receives packets (UDP, OSC over TCP) and sends them;
- :mod:`.dispatch` decodes each packet and calls the handler of each address
  (:mod:`.handlers`), which answers or queues a job;
- :mod:`.jobs` runs the jobs (renders happen in the worker process, :mod:`.worker`);
- :mod:`.pushes` sends their progress, lanes, meters and done messages;
- :mod:`.routing` decides who gets each reply and push (subscriptions).

Threads: one UDP receiver, one TCP acceptor plus one reader per TCP client, the job
threads of :class:`~.jobs.JobManager` (each relays one job to the render worker
process and back), and one pusher. Handlers only check arguments, answer queries and
queue jobs; no handler waits on a render, and renders run in another process.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from bnmusic_bridge.export import ExportOptions
from bnmusic_bridge.request import RenderRequest

from . import protocol as P
from .auth import TCP_AUTH_GRACE_S, Gatekeeper
from .config import (
    DEFAULT_TCP_PORT,
    DEFAULT_UDP_PORT,
    LANE_TIMETAGS,
    ServerConfig,
    default_render_threads,
)
from .dispatch import Dispatcher
from .handlers import HANDLERS, Context, check_job_request
from .jobs import Job, JobManager
from .paths import FolderQuota, RootSet, confine_request
from .preset_cache import PresetCache
from .pushes import Pusher
from .routing import Outbox, Stats, Subscriptions
from .transport import Endpoint, Transport, is_loopback

__all__ = [
    "DEFAULT_TCP_PORT",
    "DEFAULT_UDP_PORT",
    "OscServer",
    "ServerConfig",
    "default_render_threads",
    "is_loopback",
]

log = logging.getLogger("bnmusic.osc")

PUSH_THREAD = "bnmusic-osc-push"


class OscServer:
    """The ``bnmusic serve`` process, usable from Python (tests, benchmarks).

    Args:
        config: sockets, roots, base request and limits.

    Raises:
        OscError: ``bad_arguments`` (a non-loopback host without ``allow_remote``, an
            unknown ``lane_timetags``), ``path_not_found`` (a root that is no folder),
            or any refusal of the default output folder.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, config: ServerConfig) -> None:
        if not config.allow_remote and not is_loopback(config.host):
            raise P.OscError(
                "bad_arguments",
                f"--host {config.host} is not a loopback address; pass --allow-remote to listen there",
            )
        if not is_loopback(config.host) and config.secret is None:
            raise P.OscError(
                "bad_arguments",
                f"--host {config.host} is reachable from other machines: a shared secret is "
                "required (bnmusic serve --secret-file FILE, or $BNMUSIC_OSC_SECRET)",
            )
        self.gate = Gatekeeper(config.secret)
        if not (
            config.tcp_idle_timeout_s > 0 and config.max_stem_s > 0 and config.folder_quota >= 0
        ):
            raise P.OscError(
                "bad_arguments",
                f"tcp_idle_timeout_s={config.tcp_idle_timeout_s}, max_stem_s={config.max_stem_s} "
                f"must be > 0 and folder_quota={config.folder_quota} >= 0",
            )
        if config.lane_timetags not in LANE_TIMETAGS:
            raise P.OscError(
                "bad_arguments",
                f"lane_timetags={config.lane_timetags!r}; use playback or immediate",
            )
        # Model weights come from disk only, whatever the flags: a client's request must
        # never start a download from a model hub.
        request = (config.request or RenderRequest()).replace(local_files_only=True)
        self.config = dataclasses.replace(
            config, request=request, export=config.export or ExportOptions()
        )
        self.roots = RootSet(config.roots, config.read_roots)
        if self.config.out_dir is not None:
            self.roots.output_dir(str(self.config.out_dir))
        # The base request's own paths (from the server's preset) obey the roots too.
        self.config = dataclasses.replace(
            self.config, request=confine_request(self.config.request, self.roots)
        )
        self.quota = FolderQuota(self.config.folder_quota)
        self.stats = Stats()
        self.closing = threading.Event()
        """Set when :meth:`stop` begins: new renders are refused, streams hurry."""
        self._threads: list[threading.Thread] = []
        self.transport = Transport(
            config.host, config.port, config.tcp_port, check_every_s=config.tcp_idle_timeout_s / 4
        )
        self.subscriptions = Subscriptions(config.allow_monitors)
        self.out = Outbox(self.transport, self.subscriptions, self.stats)
        self.presets = PresetCache(self.config.presets_dir, self._spawn)
        self.pusher = Pusher(
            self.out, self.config.stream_rate_hz, self.config.lane_timetags, self.closing
        )
        self.manager: JobManager | None = None

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> OscServer:
        """Bind the sockets and start the threads. Raises OSError if a port is taken."""
        cfg = self.config
        # 1. Listing presets and checking the base request import the preset and
        # generator checks (about a second, once): done before the sockets open, so no
        # request ever waits on an import.
        self.presets.refresh()
        check_job_request(cfg.request, "the server's base request")
        import bnmusic_bridge.fx  # noqa: F401 - the path confinement lists effect files
        from bnmusic_bridge.pipeline import MODEL_GENERATORS

        unknown = sorted(set(cfg.model_generators) - set(MODEL_GENERATORS))
        if unknown:
            raise P.OscError(
                "bad_arguments",
                f"--allow-generator {', '.join(unknown)}: not a model generator; those are "
                f"{', '.join(MODEL_GENERATORS)} (the others need no permission)",
            )
        # 2. The sockets.
        self.transport.open()
        # 3. The job threads and the render worker.
        self.manager = JobManager(
            self.pusher,
            max_queued=cfg.max_queued,
            render_threads=cfg.render_threads,
            meter_hz=cfg.meter_hz,
            lane_tolerance_db=cfg.lane_tolerance_db,
            progress_interval_s=cfg.progress_interval_s,
            check_paths=self._recheck_paths,
            isolation=cfg.isolation,
            worker_setup=cfg.worker_setup,
            worker_niceness=cfg.worker_niceness,
            roots=self.roots,
            max_stem_s=cfg.max_stem_s,
            backend=cfg.backend,
            ray_address=cfg.ray_address,
            threads=cfg.threads,
        )
        # 4. Receive, dispatch, push.
        dispatcher = Dispatcher(
            HANDLERS,
            Context(
                config=cfg,
                roots=self.roots,
                jobs=self.manager,
                subscriptions=self.subscriptions,
                presets=self.presets,
                out=self.out,
                closing=self.closing,
                gate=self.gate,
                quota=self.quota,
                model_generators=frozenset(MODEL_GENERATORS),
            ),
        )
        self.transport.start(
            self._spawn,
            on_packet=dispatcher.handle_packet,
            on_bad_frame=dispatcher.refuse_packet,
            on_disconnect=self._disconnected,
            close_check=self._close_reason,
        )
        self._spawn(self.pusher.run, PUSH_THREAD)
        log.info(
            "OSC server on udp %s tcp %s, roots %s", self.udp_address, self.tcp_address, self.roots
        )
        return self

    def _spawn(self, target: Callable[[], object], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _recheck_paths(self, job: Job) -> None:
        # A file may have been swapped for a symlink while the job waited.
        self.roots.input_file(str(job.noise_path))
        self.roots.output_dir(str(job.out_dir))
        confine_request(job.request, self.roots)

    def _disconnected(self, endpoint: Endpoint) -> None:
        self.subscriptions.forget(endpoint)
        self.gate.forget(endpoint)

    def _close_reason(self, endpoint: Endpoint, idle_s: float, age_s: float) -> str | None:
        """Why a quiet TCP connection is closed, or None to keep it."""
        if (
            self.gate.required
            and not self.gate.is_authenticated(endpoint)
            and age_s > TCP_AUTH_GRACE_S
        ):
            return f"closed: not authenticated within {TCP_AUTH_GRACE_S:.0f} s"
        limit = self.config.tcp_idle_timeout_s
        if idle_s > limit and not (
            self.manager is not None and self.manager.has_active(endpoint.sender)
        ):
            return f"closed: idle for {limit:g} s (send anything, e.g. /bnmusic/ping, to stay)"
        return None

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
        return self.transport.udp_address

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        return self.transport.tcp_address

    def stop(self, *, finish_running: bool = False, timeout_s: float = 30.0) -> bool:
        """Refuse new jobs, cancel queued ones, cancel (or finish) running ones, send
        every job's final message, then close the sockets. Returns True when all
        threads stopped within ``timeout_s``."""
        if self.closing.is_set():
            return True
        self.closing.set()
        deadline = time.monotonic() + timeout_s
        clean = True
        if self.manager is not None:
            clean = self.manager.shutdown(finish_running=finish_running, timeout_s=timeout_s)
        # Every job has ended: let the pusher send what is left while the sockets are open.
        self.pusher.close()
        for t in self._threads:
            if t.name == PUSH_THREAD:
                t.join(max(0.0, deadline - time.monotonic()))
        self.transport.stop_receiving()
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            clean = clean and not t.is_alive()
        self.transport.close()
        return clean

    def __enter__(self) -> OscServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
