"""``bnmusic serve --backend ray``: render jobs on a Ray cluster, the server beside the DAW.

The server keeps its sockets, job table and output writing; only the render travels.
For each job it checks and reads the bounce here, sends the decoded audio and the
request to the cluster (a streaming task asking for 1 CPU, and 1 GPU for a model
generator such as riffusion: see
:func:`~bnmusic_bridge.batch.ray_backend.remote_stream`), relays the task's progress
events as ``/bnmusic/progress``, gets the result's arrays back and writes the outputs
here, atomically, as a local job would. ``/bnmusic/cancel`` becomes ``ray.cancel``.

The job threads block in ``ray.wait`` (the GIL released), so pings, status and cancels
are answered while jobs run. An unreachable cluster fails the job with
``cluster_unreachable`` naming the address; the next job tries to connect again.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from bnmusic_bridge.batch.ray_backend import (
    check_gpus,
    connect,
    first_line,
    gpus_for,
    remote_stream,
)
from bnmusic_bridge.errors import BNMusicError, CancelledError

from .worker import Gate, JobSpec, Outcome, ProgressFn, execute_job

WAIT_S = 0.05
"""How often a job thread looks at its cancel flag while the cluster works (s)."""


class RemoteJobError(BNMusicError):
    """A job failed on the cluster; ``code`` is the error code the worker reported."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class OpenGate(Gate):
    """No generation gate here: the cluster schedules the GPUs (one job per GPU)."""

    def acquire(self, cancel: threading.Event) -> None:
        pass

    def release(self) -> None:
        pass


class RayExecutor:
    """Runs jobs on the Ray cluster at ``address`` (None: ``$RAY_ADDRESS``, else a Ray
    instance started beside the server).

    Args:
        address: the cluster's address, ``HOST:PORT`` of its head (``ray start --head``).
        setup: ``"module:function"`` names called in the remote worker before a job.
    """

    def __init__(self, address: str | None, setup: Sequence[str] = ()) -> None:
        self.address = address
        self.setup = tuple(setup)
        self.pid: int | None = None  # no local worker process
        self._lock = threading.Lock()
        self._export_lock = threading.Lock()
        self._ray: Any = None

    def _connect(self) -> Any:
        # Lazily and again after a failure: the server starts (and stays up) while the
        # cluster is down, and picks it up once it answers.
        with self._lock:
            if self._ray is None:
                self._ray = connect(self.address)
            return self._ray

    def run(self, spec: JobSpec, progress: ProgressFn, cancel: threading.Event) -> Outcome:
        def render(job: JobSpec, hook: ProgressFn) -> Any:
            return self._render(job, hook, cancel)

        return execute_job(spec, progress, cancel, OpenGate(), self._export_lock, render=render)

    def _render(self, spec: JobSpec, hook: ProgressFn, cancel: threading.Event) -> Any:
        from bnmusic_bridge.audio import read_stem

        ray = self._connect()
        check_gpus(ray, gpus_for(spec.request), self.address)  # else it would wait for ever
        stem = read_stem(spec.noise_path, max_duration_s=spec.max_stem_s)  # here, by value
        stream = remote_stream(ray, spec.request).remote(stem, spec.request, self.setup)
        try:
            while True:
                if cancel.is_set():
                    raise CancelledError(f"job {spec.key!r} was cancelled")
                ready, _ = ray.wait([stream], timeout=WAIT_S)
                if not ready:
                    continue
                try:
                    ref = next(stream)
                except StopIteration:
                    raise RemoteJobError(
                        "internal", "the cluster's task ended without a result"
                    ) from None
                event = get_event(ray, ref)
                if event[0] == "progress":
                    hook(event[1], event[2])  # raises CancelledError once cancelled
                elif event[0] == "done":
                    return event[1]
                else:
                    raise RemoteJobError(event[1], event[2])
        except BaseException:
            ray.cancel(stream)  # the remote render stops at its next progress step
            raise

    def preload(self, request: Any) -> None:
        pass  # the model loads on the cluster, in the worker that gets the first job

    def close(self, timeout_s: float = 10.0) -> None:
        pass  # running jobs were cancelled by the manager; the cluster stays up


def get_event(ray: Any, ref: Any) -> tuple[Any, ...]:
    """One event of the job's stream; a lost worker or task becomes ``internal``."""
    try:
        return tuple(ray.get(ref))
    except ray.exceptions.TaskCancelledError as e:
        raise CancelledError("cancelled") from e
    except ray.exceptions.RayError as e:
        raise RemoteJobError(
            "internal", f"the Ray worker rendering this job was lost: {first_line(e)}"
        ) from e
