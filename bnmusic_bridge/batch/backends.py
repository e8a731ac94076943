"""Where a batch's tasks run: in this process, in a local process pool, or on a Ray
cluster. Every backend runs the same :func:`~bnmusic_bridge.batch.task.render_task` and
hands each result back in this process as it finishes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ParameterError
from ..threads import default_threads, set_threads
from .task import StemTask, TaskResult, failed_result, render_task

BACKENDS = ("local", "ray")
"""Backend names: "local" (this process or a process pool) and "ray"."""

ResultHook = Callable[[TaskResult], None]
"""Called in this process with every task's result, in completion order."""


def run_tasks(
    tasks: Sequence[StemTask],
    on_result: ResultHook,
    *,
    jobs: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    ray_num_gpus: float = 0.0,
    threads: int | None = None,
) -> None:
    """Run ``tasks`` with :func:`render_task` and hand each result to ``on_result`` as it
    finishes (in completion order).

    Args:
        tasks: the stems.
        on_result: called in this process for every result.
        jobs: parallel tasks: processes for "local" (1 = in this process), tasks in
            flight for "ray".
        backend: "local" or "ray".
        ray_address: Ray cluster address (None: ``$RAY_ADDRESS`` or a local Ray).
        ray_num_gpus: GPUs Ray reserves per task (1 for a GPU generator).
        threads: torch/BLAS threads per render, local backend (None: the free cores
            shared among ``jobs``, :func:`~bnmusic_bridge.threads.default_threads`); Ray
            gives each task one CPU and its own thread limit.

    Raises:
        ParameterError: bad ``jobs`` or ``backend``, or Ray missing.
        KeyboardInterrupt: passed on after pending tasks were cancelled.
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ParameterError(f"jobs={jobs!r}: need a whole number >= 1")
    if backend not in BACKENDS:
        raise ParameterError(f"backend={backend!r} unknown; allowed: {', '.join(BACKENDS)}")
    if backend == "ray":
        run_on_ray(tasks, on_result, jobs, ray_address, ray_num_gpus)
    elif jobs == 1 or len(tasks) <= 1:
        set_threads(threads or default_threads(1))
        run_in_process(tasks, on_result)
    else:
        run_in_pool(tasks, on_result, jobs, threads or default_threads(jobs))


def run_in_process(tasks: Sequence[StemTask], on_result: ResultHook) -> None:
    """One task after the other in this process (a generator is created once and reused)."""
    for task in tasks:
        on_result(render_task(task))


def limit_worker_threads(threads: int) -> None:
    """Pool worker initializer: keep N workers from each starting one BLAS/torch thread
    per core."""
    set_threads(threads)


def run_in_pool(
    tasks: Sequence[StemTask], on_result: ResultHook, jobs: int, threads: int | None = None
) -> None:
    """``jobs`` spawned worker processes, each limited to ``threads`` threads (default:
    the free cores shared among them, :func:`~bnmusic_bridge.threads.default_threads`)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    threads = threads or default_threads(jobs)
    # spawn, not fork: a forked copy of a process that already runs torch threads can hang.
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)),
        mp_context=ctx,
        initializer=limit_worker_threads,
        initargs=(threads,),
    )
    try:
        pending = {pool.submit(render_task, t): t for t in tasks}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                task = pending.pop(fut)
                try:
                    on_result(fut.result())
                except BrokenProcessPool as e:
                    on_result(failed_result(task, f"worker process died ({e})", "internal"))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def run_on_ray(
    tasks: Sequence[StemTask],
    on_result: ResultHook,
    jobs: int,
    address: str | None,
    num_gpus: float,
) -> None:
    """One Ray task per stem (1 CPU, ``num_gpus`` GPUs, retried once), at most ``jobs``
    in flight."""
    try:
        import ray
    except ImportError as e:
        raise ParameterError(
            "--backend ray needs Ray, which is not installed: pip install 'ray[default]' "
            "(see docs/batch.md)"
        ) from e
    if not ray.is_initialized():
        ray.init(address=address)
    remote = ray.remote(num_cpus=1, num_gpus=num_gpus, max_retries=1)(render_task)
    queue = list(tasks)
    in_flight: dict[Any, StemTask] = {}
    try:
        while queue or in_flight:
            # Keep at most `jobs` tasks submitted, so a 10,000-stem batch does not
            # hold 10,000 requests in the object store at once.
            while queue and len(in_flight) < jobs:
                task = queue.pop(0)
                in_flight[remote.remote(task)] = task
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                task = in_flight.pop(ref)
                try:
                    on_result(ray.get(ref))
                except Exception as e:  # a lost node or worker: this stem failed
                    on_result(failed_result(task, f"Ray task failed: {e}", "internal"))
    except BaseException:
        for ref in in_flight:
            ray.cancel(ref)
        raise
