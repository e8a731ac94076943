"""Where a batch's tasks run: in this process, in a local process pool, or on a Ray
cluster (:mod:`.ray_backend`, imported only then). Every backend renders with the same
functions of :mod:`~bnmusic_bridge.batch.task` and hands each result back in this
process as it finishes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
    ray_num_gpus: float | None = None,
    worker_setup: Sequence[str] = (),
    threads: int | None = None,
) -> None:
    """Run ``tasks`` with :func:`render_task` and hand each result to ``on_result`` as it
    finishes (in completion order).

    Args:
        tasks: the stems.
        on_result: called in this process for every result.
        jobs: parallel tasks: processes for "local" (1 = in this process), Ray actors
            (stems in flight) for "ray".
        backend: "local" or "ray".
        ray_address: Ray cluster address (None: ``$RAY_ADDRESS`` or a local Ray).
        ray_num_gpus: GPUs Ray reserves per actor (None: 1 for a model generator such
            as riffusion, 0 otherwise).
        worker_setup: ``"module:function"`` names each Ray actor calls when it starts
            (e.g. to register a generator); "ray" only.
        threads: torch/BLAS threads per render, local backend (None: the free cores
            shared among ``jobs``, :func:`~bnmusic_bridge.threads.default_threads`); Ray
            gives each task one CPU and its own thread limit.

    Raises:
        ParameterError: bad ``jobs`` or ``backend``, or Ray missing.
        ClusterUnreachableError: ("ray") the cluster's address does not answer.
        KeyboardInterrupt: passed on after pending tasks were cancelled.
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ParameterError(f"jobs={jobs!r}: need a whole number >= 1")
    if backend not in BACKENDS:
        raise ParameterError(f"backend={backend!r} unknown; allowed: {', '.join(BACKENDS)}")
    if backend == "ray":
        run_on_ray(tasks, on_result, jobs, ray_address, ray_num_gpus, worker_setup)
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
    num_gpus: float | None,
    setup: Sequence[str] = (),
) -> None:
    """One Ray actor per stem in flight (at most ``jobs``); audio and results travel by
    value, files are written here (see :mod:`~bnmusic_bridge.batch.ray_backend`)."""
    from .ray_backend import run_on_ray as run

    run(tasks, on_result, jobs, address, num_gpus, setup)
