"""Render jobs for the OSC server: a bounded queue, render threads, one generation gate.

A job is queued by the server thread and run by one of ``render_threads`` threads.
Loading, analysis, decoding, Stage 2 and writing run side by side on those threads;
the ``generate`` stage (the only one that touches the model) passes through a single
gate, so generation is serialized and the model, created once by the generator
registry, is used by one job at a time. With ``render_threads=1`` everything is serial.

Progress and cancellation ride on the pipeline's ``progress(stage, fraction)`` callback:
the callback raises :class:`~bnmusic_bridge.errors.CancelledError` once a job is
cancelled, and the pipeline stops at its next progress event. Outputs are written only
after a render has finished, atomically and under fresh names, so a cancelled or failed
job leaves no files behind.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import BNMusicError, CancelledError, OutputExistsError
from .protocol import OscArg, OscError

log = logging.getLogger("bnmusic.osc")

GENERATION_STAGES = frozenset({"generate"})
"""Pipeline stages that use the model; they pass through the generation gate."""
MAX_FRESH_NAMES = 1000
FINISHED_HISTORY = 256
"""Finished jobs remembered for /bnmusic/status (oldest forgotten first)."""

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
        origin: where the request came from (the server's endpoint object).
        state: one of queued, running, writing, done, failed, cancelled.
        stage: the pipeline stage last reported ("" before the first).
        fraction: progress of that stage, 0..1.
    """

    job_id: OscArg
    key: str
    noise_path: Path
    out_dir: Path
    request: Any
    export: Any
    origin: Any
    state: str = QUEUED
    stage: str = ""
    fraction: float = 0.0
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


@dataclass(frozen=True)
class Outcome:
    """What a finished job hands to the server for its done message and streams.

    Attributes:
        outputs: output kind -> path (music, blended, report, plot, lambda_csv, ...).
        coverage: overall masking coverage, 0..1.
        nmr_db: total noise-to-mask ratio in dB.
        lambda_min_db / lambda_max_db: range of the lambda lane in dB.
        lane_times_s / lane_gain_db: the compacted lambda lane, float64 ``(points,)``.
        meter_times_s / meter_coverage: coverage per meter block, float64 ``(blocks,)``.
        seconds: wall time of the render and export.
    """

    outputs: dict[str, str]
    coverage: float
    nmr_db: float
    lambda_min_db: float
    lambda_max_db: float
    lane_times_s: np.ndarray
    lane_gain_db: np.ndarray
    meter_times_s: np.ndarray
    meter_coverage: np.ndarray
    seconds: float


class JobEvents(Protocol):
    """What the manager tells the server. Called from render threads (progress, done,
    failed) or from the thread that cancels a queued job (failed)."""

    def progress(self, job: Job, stage: str, fraction: float) -> None: ...

    def done(self, job: Job, outcome: Outcome) -> None: ...

    def failed(self, job: Job, code: str, message: str) -> None: ...


RenderFn = Callable[..., Any]
"""``render_fn(noise_path, request, progress=callback) -> RenderResult``."""


def compact_lane(
    times_s: np.ndarray, gain_db: np.ndarray, tolerance_db: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Lane points only where the gain moved more than ``tolerance_db`` (dB) since the
    last kept point, plus the first and last point; non-finite gains are dropped.

    Uses :func:`bnmusic_bridge.export.lanes.compact_lane` when that exists.
    """
    times_s = np.asarray(times_s, dtype=np.float64)
    gain_db = np.asarray(gain_db, dtype=np.float64)
    finite = np.isfinite(gain_db) & np.isfinite(times_s)
    times_s, gain_db = times_s[finite], gain_db[finite]
    try:
        from ..export.lanes import compact_lane as shared  # type: ignore[attr-defined]
    except ImportError:
        shared = None
    if shared is not None:
        try:
            t, g = shared(times_s, gain_db, tolerance_db=tolerance_db)
            return np.asarray(t, dtype=np.float64), np.asarray(g, dtype=np.float64)
        except (TypeError, ValueError):
            log.debug("export.lanes.compact_lane has another shape; using the local helper")
    if times_s.size <= 2:
        return times_s, gain_db
    keep = [0]
    last = gain_db[0]
    for i in range(1, times_s.size - 1):
        if abs(gain_db[i] - last) > tolerance_db:
            keep.append(i)
            last = gain_db[i]
    keep.append(times_s.size - 1)
    idx = np.asarray(keep)
    return times_s[idx], gain_db[idx]


def meter_blocks(
    coverage_per_frame: np.ndarray, frame_rate_hz: float, meter_hz: float
) -> tuple[np.ndarray, np.ndarray]:
    """Coverage per frame averaged over blocks of ``1 / meter_hz`` seconds.

    Args:
        coverage_per_frame: share 0..1 per analysis frame, NaN where a frame has no
            high-energy bin; shape ``(frames,)``.
        frame_rate_hz: frames per second (100 for the 10 ms hop).
        meter_hz: meter values per second of audio; 0 gives no meter.

    Returns:
        (block start times in seconds, mean coverage per block); blocks with no
        high-energy bin at all are left out.
    """
    cov = np.asarray(coverage_per_frame, dtype=np.float64).ravel()
    if meter_hz <= 0 or cov.size == 0:
        return np.zeros(0), np.zeros(0)
    frames_per_block = max(1, int(round(frame_rate_hz / meter_hz)))
    n_blocks = -(-cov.size // frames_per_block)
    padded = np.full(n_blocks * frames_per_block, np.nan)
    padded[: cov.size] = cov
    blocks = padded.reshape(n_blocks, frames_per_block)
    valid = np.isfinite(blocks)
    counts = valid.sum(axis=1)
    sums = np.where(valid, blocks, 0.0).sum(axis=1)
    keep = counts > 0
    times_s = np.arange(n_blocks) * frames_per_block / frame_rate_hz
    return times_s[keep], sums[keep] / counts[keep]


class _Gate:
    """The single generation gate; waiting on it still notices cancellation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self, cancel: threading.Event) -> None:
        while not self._lock.acquire(timeout=0.05):
            if cancel.is_set():
                raise CancelledError("cancelled while waiting for the generator")

    def release(self) -> None:
        self._lock.release()


class JobManager:
    """The bounded queue and the render threads.

    Args:
        events: receives progress, done and failed events.
        render_fn: ``render_fn(path, request, progress=cb)``; default
            :func:`bnmusic_bridge.pipeline.render_file`.
        max_queued: most jobs waiting (running ones not counted); one more gets ``busy``.
        render_threads: threads running jobs; the generate stage is serialized anyway.
        meter_hz: meter blocks per second of audio (0: no meter).
        lane_tolerance_db: lane compaction tolerance in dB.
        progress_interval_s: least time between two progress events of one job within
            a stage (stage changes and completions always go out).
        check_paths: called with a job before it starts; raises OscError when a path no
            longer passes the root check.
    """

    def __init__(
        self,
        events: JobEvents,
        render_fn: RenderFn | None = None,
        *,
        max_queued: int = 64,
        render_threads: int = 2,
        meter_hz: float = 10.0,
        lane_tolerance_db: float = 0.1,
        progress_interval_s: float = 0.05,
        check_paths: Callable[[Job], None] | None = None,
    ) -> None:
        if max_queued < 1 or render_threads < 1:
            raise ValueError(
                f"max_queued={max_queued} and render_threads={render_threads} must be >= 1"
            )
        self.events = events
        self.render_fn = render_fn
        self.max_queued = max_queued
        self.meter_hz = meter_hz
        self.lane_tolerance_db = lane_tolerance_db
        self.progress_interval_s = progress_interval_s
        self.check_paths = check_paths
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[Job] = collections.deque()
        self._jobs: dict[str, Job] = {}
        self._finished: collections.deque[str] = collections.deque()
        self._export_lock = threading.Lock()
        self._gate = _Gate()
        self._closing = False
        self._threads = [
            threading.Thread(target=self._worker, name=f"bnmusic-render-{i}", daemon=True)
            for i in range(render_threads)
        ]
        for t in self._threads:
            t.start()

    # -- server side ---------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue ``job``. It starts only after ``job.released`` is set (the server sets
        it once the ack is out, so ack always precedes progress).

        Raises:
            OscError: ``shutting_down``, ``duplicate_job`` or ``busy``.
        """
        with self._lock:
            if self._closing:
                raise OscError(
                    "shutting_down", "the server is shutting down; no new jobs", where=job.key
                )
            old = self._jobs.get(job.key)
            if old is not None and old.state in ACTIVE_STATES:
                raise OscError(
                    "duplicate_job",
                    f"job {job.key!r} is still {old.state}; pick another id",
                    where=job.key,
                )
            if len(self._queue) >= self.max_queued:
                raise OscError(
                    "busy",
                    f"the queue is full ({self.max_queued} jobs waiting); retry when a job is done",
                    where=job.key,
                )
            if old is not None:
                self._forget(job.key)
            self._jobs[job.key] = job
            self._queue.append(job)
            self._wake.notify()

    def cancel(self, key: str) -> str:
        """Cancel a job; returns the state it was in.

        A queued job leaves the queue at once and gets its ``cancelled`` error now; a
        running job stops at its next progress event. Finished jobs are left alone.

        Raises:
            OscError: ``unknown_job``.
        """
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                raise OscError(
                    "unknown_job",
                    f"no job {key!r} (finished jobs are forgotten after {FINISHED_HISTORY})",
                    where=key,
                )
            previous = job.state
            if previous == QUEUED:
                self._queue.remove(job)
                self._finish(job, CANCELLED, "cancelled")
            elif previous in (RUNNING, WRITING):
                job.cancel.set()
        if previous == QUEUED:
            self.events.failed(job, "cancelled", "cancelled while queued")
        return previous

    def status(self, key: str) -> JobStatus:
        """One job's state. Raises OscError ``unknown_job``."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                raise OscError("unknown_job", f"no job {key!r}", where=key)
            return self._snapshot(job)

    def overview(self) -> tuple[int, int, int, list[JobStatus]]:
        """(queued, running, finished, snapshots of queued and running jobs)."""
        with self._lock:
            active = [self._snapshot(j) for j in self._jobs.values() if j.state in ACTIVE_STATES]
            queued = len(self._queue)
            return queued, len(active) - queued, len(self._finished), active

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
        return not any(t.is_alive() for t in self._threads)

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
        holding = False
        last_sent = [0.0, ""]

        def progress(stage: str, fraction: float) -> None:
            nonlocal holding
            if job.cancel.is_set():
                raise CancelledError(f"job {job.key!r} was cancelled")
            if stage in GENERATION_STAGES and not holding:
                self._gate.acquire(job.cancel)
                holding = True
            elif stage not in GENERATION_STAGES and holding:
                self._gate.release()
                holding = False
            job.stage, job.fraction = stage, fraction
            now = time.monotonic()
            if (
                stage != last_sent[1]
                or fraction >= 1.0
                or now - last_sent[0] >= self.progress_interval_s
            ):
                last_sent[0], last_sent[1] = now, stage
                self.events.progress(job, stage, fraction)

        t0 = time.perf_counter()
        try:
            if self.check_paths is not None:
                self.check_paths(job)
            render = self.render_fn
            if render is None:
                from ..pipeline import render_file as render
            result = render(job.noise_path, job.request, progress=progress)
        except CancelledError as e:
            self._fail(job, "cancelled", str(e) or "cancelled")
            return
        except BNMusicError as e:
            self._fail(job, getattr(e, "code", "error"), str(e))
            return
        except MemoryError:
            self._fail(job, "generator_failed", "out of memory while rendering")
            return
        except Exception as e:  # noqa: BLE001 - report, keep serving
            log.exception("job %s: render failed", job.key)
            self._fail(job, "internal", f"{type(e).__name__}: {e}")
            return
        finally:
            if holding:
                self._gate.release()
        if job.cancel.is_set():
            self._fail(job, "cancelled", f"job {job.key!r} was cancelled")
            return
        with self._lock:
            job.state = WRITING
        try:
            outputs = self._write(job, result)
        except BNMusicError as e:
            self._fail(job, getattr(e, "code", "error"), str(e))
            return
        except OSError as e:
            self._fail(job, "path_unreadable", f"cannot write outputs in {job.out_dir}: {e}")
            return
        outcome = self._outcome(result, outputs, time.perf_counter() - t0)
        del result  # the arrays are large; only the outcome travels on
        with self._lock:
            self._finish(job, DONE, None)
        self.events.done(job, outcome)

    def _write(self, job: Job, result: Any) -> dict[str, str]:
        from ..export import output_paths, write_outputs

        options = dataclasses.replace(job.export, force=False)
        stem = job.noise_path.stem
        # Serialized so two jobs on the same stem cannot pick the same fresh name.
        with self._export_lock:
            for n in range(1, MAX_FRESH_NAMES + 1):
                name = stem if n == 1 else f"{stem}-{n}"
                if any(p.exists() for p in output_paths(name, job.out_dir, options).all()):
                    continue
                try:
                    paths = write_outputs(
                        result,
                        job.out_dir,
                        stem_name=name,
                        options=options,
                        extra_report={"osc": {"job_id": job.key, "client": str(job.origin)}},
                    )
                except OutputExistsError:
                    continue  # another program took the name meanwhile: try the next
                return paths.as_dict()
        raise OutputExistsError(
            f"outputs for {stem!r} exist under {MAX_FRESH_NAMES} names in {job.out_dir}; clean up the folder"
        )

    def _outcome(self, result: Any, outputs: dict[str, str], seconds: float) -> Outcome:
        gain_db = np.asarray(result.lane_gain_db, dtype=np.float64)
        finite = gain_db[np.isfinite(gain_db)]
        lane_t, lane_g = compact_lane(result.lane_times_s, gain_db, self.lane_tolerance_db)
        meter_t, meter_c = meter_blocks(
            result.coverage_per_frame, result.frame_rate_hz, self.meter_hz
        )
        return Outcome(
            outputs=outputs,
            coverage=float(result.coverage),
            nmr_db=float(result.nmr_db),
            lambda_min_db=float(finite.min()) if finite.size else float("nan"),
            lambda_max_db=float(finite.max()) if finite.size else float("nan"),
            lane_times_s=lane_t,
            lane_gain_db=lane_g,
            meter_times_s=meter_t,
            meter_coverage=meter_c,
            seconds=seconds,
        )

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
