"""Render jobs for the OSC server: the bounded queue and the job table.

The server thread queues jobs; ``render_threads`` job threads take them in order and
hand each to an executor (:mod:`bnmusic_bridge.frontends.osc.worker`): by default one worker
process that owns the model, where the generate stage is serialized behind one gate
while the other stages of other jobs run beside it. A job thread relays the job's
progress, forwards a cancellation, and reports the end: done (with an
:class:`~bnmusic_bridge.frontends.osc.worker.Outcome`) or failed (with an error code),
to its :class:`JobEvents` (the server's :class:`~bnmusic_bridge.frontends.osc.pushes.Pusher`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bnmusic_bridge.export import ExportOptions
from bnmusic_bridge.progress import RenderProgress, stage_weights
from bnmusic_bridge.request import RenderRequest

from .config import BACKENDS, ISOLATIONS
from .paths import RootSet
from .protocol import OscArg, OscError
from .transport import Endpoint
from .worker import WRITE_STAGE, JobFailed, JobSpec, Outcome, ProcessExecutor, ThreadExecutor

if TYPE_CHECKING:
    from .ray_executor import RayExecutor

log = logging.getLogger("bnmusic.osc")

FINISHED_HISTORY = 256
"""Finished jobs remembered for /bnmusic/status (oldest forgotten first)."""
ID_DIGEST_BYTES = 16
"""Job ids are remembered for the server's lifetime as 16-byte digests (about 100 bytes
each with the set's overhead), so an id is never taken twice."""

QUEUED, RUNNING, WRITING, DONE, FAILED, CANCELLED = (
    "queued",
    "running",
    "writing",
    "done",
    "failed",
    "cancelled",
)
ACTIVE_STATES = (QUEUED, RUNNING, WRITING)


@dataclass
class Job:
    """One render job. Mutable fields change under the manager's lock.

    Attributes:
        job_id: the id as the client sent it (replies echo its type tag).
        key: the id as text (the job table's key).
        noise_path: resolved input path (inside the roots).
        out_dir: resolved output folder (inside the roots).
        request: the full render request.
        export: a :class:`~bnmusic_bridge.export.ExportOptions` (``force`` is False).
        origin: where the request came from; its sender (UDP address and port, or TCP
            connection) owns the job: only it may cancel it or ask its status.
        state: one of queued, running, writing, done, failed, cancelled.
        stage: the pipeline stage last reported ("" before the first).
        fraction: progress of that stage, 0..1.
        overall: share of the whole job done, 0..1, never decreasing
            (:class:`bnmusic_bridge.progress.RenderProgress`).
        eta_s: estimated seconds left; None while too little is done to tell.
    """

    job_id: OscArg
    key: str
    noise_path: Path
    out_dir: Path
    request: RenderRequest
    export: ExportOptions
    origin: Endpoint
    state: str = QUEUED
    stage: str = ""
    fraction: float = 0.0
    overall: float = 0.0
    eta_s: float | None = None
    created_s: float = field(default_factory=time.monotonic)
    started_s: float | None = None
    finished_s: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    error_code: str | None = None


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of a job for ``/bnmusic/status``. ``queue_position`` is 0-based, -1
    when the job is not queued."""

    job_id: OscArg
    state: str
    stage: str
    fraction: float
    queue_position: int


class JobEvents(Protocol):
    """What the manager tells the server. Called from render threads (progress, done,
    failed) or from the thread that cancels a queued job (failed)."""

    def progress(self, job: Job, stage: str, fraction: float) -> None: ...

    def done(self, job: Job, outcome: Outcome) -> None: ...

    def failed(self, job: Job, code: str, message: str) -> None: ...


class JobManager:
    """The bounded queue, the job table and the job threads (the defaults of every
    argument are :class:`~.config.ServerConfig`'s).

    Args:
        events: receives progress, done and failed events.
        max_queued: most jobs waiting (running ones not counted); one more gets ``busy``.
        render_threads: jobs running at once (generation is serialized anyway).
        meter_hz: meter blocks per second of audio (0: no meter).
        lane_tolerance_db: lane compaction tolerance in dB.
        progress_interval_s: least time between two progress events of one job within
            a stage (stage changes and completions always go out).
        check_paths: called with a job before it starts; raises OscError when a path no
            longer passes the root check.
        isolation: "process" (one worker process owns the model) or "thread".
        worker_setup: ``"module:function"`` names called where renders run, before the
            first job (e.g. to register a generator).
        worker_niceness: CPU priority drop of the worker process (Unix ``nice``).
        roots: the server's roots, handed to the worker, which opens the output folder
            beneath its root and checks the read paths again after the render.
        max_stem_s: longest stem (seconds) a job may render; None: no limit.
        backend: "local" (as ``isolation`` says) or "ray" (jobs render on the Ray
            cluster at ``ray_address``: :mod:`~bnmusic_bridge.frontends.osc.ray_executor`).
        ray_address: the cluster's address (None: ``$RAY_ADDRESS`` or a local Ray).
        threads: torch/BLAS threads of each job (None: the free cores shared among
            ``render_threads`` jobs).
    """

    def __init__(
        self,
        events: JobEvents,
        *,
        max_queued: int,
        render_threads: int,
        meter_hz: float,
        lane_tolerance_db: float,
        progress_interval_s: float,
        check_paths: Callable[[Job], None] | None,
        isolation: str,
        worker_setup: tuple[str, ...],
        worker_niceness: int,
        roots: RootSet | None = None,
        max_stem_s: float | None = None,
        backend: str = "local",
        ray_address: str | None = None,
        threads: int | None = None,
    ) -> None:
        if max_queued < 1 or render_threads < 1:
            raise ValueError(
                f"max_queued={max_queued} and render_threads={render_threads} must be >= 1"
            )
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation={isolation!r}; use 'process' or 'thread'")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}; use one of {', '.join(BACKENDS)}")
        self.events = events
        self.max_queued = max_queued
        self.meter_hz = meter_hz
        self.lane_tolerance_db = lane_tolerance_db
        self.progress_interval_s = progress_interval_s
        self.check_paths = check_paths
        self.roots = roots
        self.max_stem_s = max_stem_s
        self._used_ids: set[bytes] = set()
        self.executor: ProcessExecutor | ThreadExecutor | RayExecutor
        if backend == "ray":
            from .ray_executor import RayExecutor  # Ray itself loads at the first job

            self.executor = RayExecutor(ray_address, worker_setup)
        elif isolation == "process":
            self.executor = ProcessExecutor(render_threads, worker_setup, worker_niceness, threads)
        else:
            self.executor = ThreadExecutor(worker_setup, threads)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[Job] = collections.deque()
        self._jobs: dict[str, Job] = {}
        self._finished: collections.deque[str] = collections.deque()
        self._closing = False
        self._threads = [
            threading.Thread(target=self._worker, name=f"bnmusic-job-{i}", daemon=True)
            for i in range(render_threads)
        ]
        for t in self._threads:
            t.start()

    # -- server side ---------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue ``job``. It starts only after ``job.released`` is set (the server sets
        it once the ack is out, so ack always precedes progress).

        Raises:
            OscError: ``shutting_down``, ``duplicate_job`` (the id was used before, by
                anyone: ids are unique for the server's lifetime) or ``busy``.
        """
        digest = _id_digest(job.key)
        with self._lock:
            if self._closing:
                raise OscError(
                    "shutting_down", "the server is shutting down; no new jobs", where=job.key
                )
            if digest in self._used_ids:
                old = self._jobs.get(job.key)
                still = (
                    f" and is still {old.state}"
                    if old is not None and old.state in ACTIVE_STATES
                    else ""
                )
                raise OscError(
                    "duplicate_job",
                    f"job id {job.key!r} was used before{still}; ids are unique for the "
                    "server's lifetime, pick another",
                    where=job.key,
                )
            if len(self._queue) >= self.max_queued:
                raise OscError(
                    "busy",
                    f"the queue is full ({self.max_queued} jobs waiting); retry when a job is done",
                    where=job.key,
                )
            self._used_ids.add(digest)
            self._jobs[job.key] = job
            self._queue.append(job)
            self._wake.notify()

    def _owned(self, key: str, owner: Any) -> Job:
        # Caller holds the lock.
        job = self._jobs.get(key)
        if job is None:
            raise OscError(
                "unknown_job",
                f"no job {key!r} (finished jobs are forgotten after {FINISHED_HISTORY})",
                where=key,
            )
        if owner is not None and job.origin.sender != owner:
            raise OscError(
                "not_owner",
                f"job {key!r} belongs to another client; only the sender that queued it "
                "(same UDP address and port, or same TCP connection) may cancel it or ask its status",
                where=key,
            )
        return job

    def cancel(self, key: str, owner: Any = None) -> str:
        """Cancel a job of ``owner`` (a sender; None: any); returns the state it was in.

        A queued job leaves the queue at once and gets its ``cancelled`` error now; a
        running job stops at its next progress event. Finished jobs are left alone.

        Raises:
            OscError: ``unknown_job``, ``not_owner``.
        """
        with self._lock:
            job = self._owned(key, owner)
            previous = job.state
            if previous == QUEUED:
                self._queue.remove(job)
                self._finish(job, CANCELLED, "cancelled")
            elif previous in (RUNNING, WRITING):
                job.cancel.set()
        if previous == QUEUED:
            self.events.failed(job, "cancelled", "cancelled while queued")
        return previous

    def status(self, key: str, owner: Any = None) -> JobStatus:
        """One job's state, for its ``owner`` (None: anyone).

        Raises:
            OscError: ``unknown_job``, ``not_owner``.
        """
        with self._lock:
            return self._snapshot(self._owned(key, owner))

    def overview(self, owner: Any = None) -> tuple[int, int, int, list[JobStatus]]:
        """(queued, running, finished: counts over every client; snapshots of the
        queued and running jobs of ``owner``, or of all when None)."""
        with self._lock:
            active = [j for j in self._jobs.values() if j.state in ACTIVE_STATES]
            queued = len(self._queue)
            mine = [self._snapshot(j) for j in active if owner is None or j.origin.sender == owner]
            return queued, len(active) - queued, len(self._finished), mine

    def has_active(self, owner: Any) -> bool:
        """Whether ``owner`` has a queued or running job (its connection is not idle)."""
        with self._lock:
            return any(
                j.origin.sender == owner for j in self._jobs.values() if j.state in ACTIVE_STATES
            )

    def _snapshot(self, job: Job) -> JobStatus:
        position = -1
        if job.state == QUEUED:
            position = next(i for i, j in enumerate(self._queue) if j is job)
        return JobStatus(job.job_id, job.state, job.stage, job.fraction, position)

    def shutdown(self, *, finish_running: bool = False, timeout_s: float = 30.0) -> bool:
        """Stop taking jobs, cancel the queued ones and cancel (or, with
        ``finish_running``, finish) the running ones; wait up to ``timeout_s`` for the
        threads. Returns True when every thread stopped."""
        with self._lock:
            self._closing = True
            dropped = list(self._queue)
            self._queue.clear()
            for job in dropped:
                self._finish(job, CANCELLED, "cancelled")
            running = [j for j in self._jobs.values() if j.state in (RUNNING, WRITING)]
            if not finish_running:
                for job in running:
                    job.cancel.set()
            self._wake.notify_all()
        for job in dropped:
            self.events.failed(job, "cancelled", "the server is shutting down")
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stopped = not any(t.is_alive() for t in self._threads)
        self.executor.close(max(1.0, deadline - time.monotonic()))
        return stopped

    # -- render threads ------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if not self._queue:
                    return
                job = self._queue.popleft()
                job.state = RUNNING
                job.started_s = time.monotonic()
            job.released.wait(2.0)
            try:
                self._run(job)
            except BaseException as e:  # noqa: BLE001 - a job must never take the thread down
                log.exception("job %s: unexpected failure", job.key)
                self._fail(job, "internal", f"{type(e).__name__}: {e}")

    def _run(self, job: Job) -> None:
        # One figure for the whole job (stages weighed by their expected time); the
        # worker has imported everything before its first job, so no startup share.
        tracker = RenderProgress(stage_weights(job.request, startup=False, write=True))

        def progress(stage: str, fraction: float) -> None:
            state = tracker.update(stage, fraction)
            job.stage, job.fraction = stage, fraction
            job.overall, job.eta_s = state.overall, state.eta_s
            if stage == WRITE_STAGE and job.state == RUNNING:
                with self._lock:
                    job.state = WRITING
            self.events.progress(job, stage, fraction)

        try:
            if self.check_paths is not None:
                self.check_paths(job)
        except OscError as e:
            self._fail(job, e.code, str(e))
            return
        spec = JobSpec(
            key=job.key,
            noise_path=job.noise_path,
            out_dir=job.out_dir,
            request=job.request,
            export=job.export,
            client=str(job.origin),
            meter_hz=self.meter_hz,
            lane_tolerance_db=self.lane_tolerance_db,
            progress_interval_s=self.progress_interval_s,
            roots=self.roots,
            max_stem_s=self.max_stem_s,
        )
        try:
            outcome = self.executor.run(spec, progress, job.cancel)
        except JobFailed as e:
            self._fail(job, e.code, e.message)
            return
        with self._lock:
            self._finish(job, DONE, None)
        self.events.done(job, outcome)

    def _fail(self, job: Job, code: str, message: str) -> None:
        with self._lock:
            self._finish(job, CANCELLED if code == "cancelled" else FAILED, code)
        self.events.failed(job, code, message)

    def _finish(self, job: Job, state: str, code: str | None) -> None:
        # Caller holds the lock.
        job.state = state
        job.error_code = code
        job.finished_s = time.monotonic()
        self._finished.append(job.key)
        while len(self._finished) > FINISHED_HISTORY:
            self._forget(self._finished[0])

    def _forget(self, key: str) -> None:
        # Caller holds the lock.
        with contextlib.suppress(ValueError):
            self._finished.remove(key)
        job = self._jobs.get(key)
        if job is not None and job.state not in ACTIVE_STATES:
            del self._jobs[key]


def _id_digest(key: str) -> bytes:
    import hashlib

    return hashlib.blake2b(
        key.encode("utf-8", "surrogatepass"), digest_size=ID_DIGEST_BYTES
    ).digest()
