"""Running renders on a Ray cluster, by value: the audio travels, not the path.

A remote worker does not see this machine's disk. So this machine (the *driver*: the
``bnmusic batch`` process or the OSC server) hashes and decodes each input, sends the
decoded audio and the request through Ray's object store, gets the
:class:`~bnmusic_bridge.result.RenderResult` (arrays) back the same way, and writes the
files itself with the package's atomic export code. No folder is shared. (So a long
stem's result, whose whole-stem arrays are :class:`~bnmusic_bridge.scratch.DiskArray`
scratch files on the worker, travels whole: a DiskArray pickles by value. The local
backends and the OSC server's worker process write the outputs where they render and
pass back only a small summary.)

- Batches (:func:`run_on_ray`) run on a pool of :class:`StemWorker` actors, one per
  stem in flight. An actor keeps its generator (and a model's weights) loaded from
  stem to stem: plain Ray tasks that ask for a GPU get ``max_calls=1`` from Ray, which
  would load the model again for every stem. An actor that dies (its process killed,
  a crashing plugin) is restarted and the stem it was rendering is retried once; a stem
  that kills its worker twice is listed as failed and the batch goes on.
- The OSC server (:func:`stream_render`) runs one streaming task per job that yields
  progress events and then the result, so the server relays progress while the job
  runs and cancels it with ``ray.cancel``.

Ray is imported only inside these functions (``pip install 'bnmusic-bridge[ray]'``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import BNMusicError, ClusterUnreachableError, ParameterError
from ..request import RenderRequest
from .task import (
    LoadedStem,
    RenderFailure,
    StemTask,
    TaskResult,
    finish_task,
    load_task,
    render_loaded,
)

RAY_INSTALL_HINT = "pip install 'bnmusic-bridge[ray]' (or pip install 'ray[default]')"
CONNECT_TIMEOUT_S = 5.0
"""How long the reachability check of a cluster address waits for its TCP port (s)."""
TASK_RETRIES = 1
"""Times a stem is retried when its worker dies (so it fails after dying twice)."""
PROGRESS_INTERVAL_S = 0.05
"""Least time between two progress events a remote job sends within a stage (s)."""

ResultHook = Callable[[TaskResult], None]


def import_ray() -> Any:
    """``import ray``, or a :class:`ParameterError` that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ParameterError(
            f"the ray backend needs Ray, which is not installed: {RAY_INSTALL_HINT} "
            "(see docs/batch.md)"
        ) from e
    return ray


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse quickly an address whose host does not answer on its port (``ray.init``
    itself would wait a long time). ``"auto"``, ``"local"`` and ``ray://`` client
    addresses are left to Ray.

    Raises:
        ClusterUnreachableError: names the address and the reason.
    """
    if address in ("auto", "local") or "://" in address:
        return
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ClusterUnreachableError(
            f"Ray cluster address {address!r} is not HOST:PORT (e.g. 192.168.1.20:6379)"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout_s):
            pass
    except OSError as e:
        raise ClusterUnreachableError(
            f"the Ray cluster at {address} is unreachable ({e.strerror or e}); start it with "
            f"`ray start --head --port={port_text}` on that machine, or check the address"
        ) from e


def connect(address: str | None) -> Any:
    """Connect this process to the Ray cluster at ``address`` (None: ``$RAY_ADDRESS``,
    else a local Ray instance started here) unless it is connected already; returns
    the ``ray`` module.

    Raises:
        ParameterError: Ray is not installed.
        ClusterUnreachableError: the address does not answer, or Ray refused to connect.
    """
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        check_reachable(address)
    if ray.is_initialized():
        # One process, one cluster: a caller that connected already (a test, a script
        # around run_batch) keeps its connection.
        return ray
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, TimeoutError) as e:
        raise ClusterUnreachableError(f"cannot connect to the Ray cluster at {address}: {e}") from e
    return ray


def run_setup(setup: Sequence[str]) -> None:
    """Call each ``"module:function"`` (e.g. one that registers a generator)."""
    for item in setup:
        module, _, func = item.partition(":")
        getattr(importlib.import_module(module), func)()


def gpus_for(request: RenderRequest) -> float:
    """GPUs a render of ``request`` asks the cluster for: 1 for a model generator
    (:data:`~bnmusic_bridge.pipeline.MODEL_GENERATORS`), 0 otherwise."""
    from ..pipeline import MODEL_GENERATORS

    return 1.0 if request.generator in MODEL_GENERATORS else 0.0


def check_gpus(ray: Any, gpus: float, address: str | None) -> None:
    """Refuse a GPU request the cluster cannot meet now (Ray would wait for ever).

    Raises:
        ParameterError: names the cluster's GPU count and the way out.
    """
    if gpus <= 0:
        return
    have = float(ray.cluster_resources().get("GPU", 0.0))
    if have < gpus:
        where = f"the Ray cluster at {address}" if address else "the Ray cluster"
        raise ParameterError(
            f"a model generator asks Ray for {gpus:g} GPU per worker, but {where} has "
            f"{have:g}; start a machine with a GPU in the cluster (ray start --address=...) "
            "or pass --ray-gpus 0 to render on CPUs"
        )


@dataclass(frozen=True)
class WorkerStats:
    """What one :class:`StemWorker` did.

    Attributes:
        pid: its process id.
        node: the cluster node's IP address.
        stems: stems it rendered.
        generator_loads: generators (models) its process created; every other stem
            reused one (the registry's per-process cache).
        load_s: seconds spent creating them (imports and weights included).
        render_s: seconds spent rendering.
    """

    pid: int
    node: str
    stems: int
    generator_loads: int
    load_s: float
    render_s: float


_PROCESS_GENERATORS: dict[int, float] = {}
"""Generators this process created (by id; the registry keeps them alive, so ids are
not reused) and the seconds each took: what :class:`StemWorker` reports as loads."""


def use_generator(request: RenderRequest) -> None:
    """Create (or reuse, from the process cache) the generator ``request`` names, load
    its model now if it has one (``load()``; otherwise its first window would), and
    count it in :data:`_PROCESS_GENERATORS` when it is new to this process."""
    from ..pipeline import generator_for

    t0 = time.perf_counter()
    generator = generator_for(request)
    if id(generator) not in _PROCESS_GENERATORS:  # the process cache missed: a load
        load = getattr(generator, "load", None)
        if callable(load):
            load()
        _PROCESS_GENERATORS[id(generator)] = time.perf_counter() - t0


class StemWorker:
    """A Ray actor that renders stems sent to it by value and keeps its generator.

    Args:
        setup: ``"module:function"`` names called once when the actor starts (and
            again when Ray restarts it), e.g. to register a generator.
    """

    def __init__(self, setup: Sequence[str] = ()) -> None:
        run_setup(setup)
        self._stems = 0
        self._render_s = 0.0

    def render(self, stem: Any, request: RenderRequest, load_s: float) -> Any:
        """:func:`~bnmusic_bridge.batch.task.render_loaded` on this worker."""
        t0 = time.perf_counter()
        # A generator that cannot be created fails the render below with its own
        # message and code; here it is only counted.
        with contextlib.suppress(Exception):
            use_generator(request)
        out = render_loaded(stem, request, load_s)
        self._stems += 1
        self._render_s += time.perf_counter() - t0
        return out

    def stats(self) -> WorkerStats:
        return worker_stats(self._stems, self._render_s)


def worker_stats(stems: int, render_s: float) -> WorkerStats:
    """This process's :class:`WorkerStats` (run inside a Ray worker)."""
    import ray

    return WorkerStats(
        pid=os.getpid(),
        node=ray.util.get_node_ip_address(),
        stems=stems,
        generator_loads=len(_PROCESS_GENERATORS),
        load_s=sum(_PROCESS_GENERATORS.values()),
        render_s=render_s,
    )


def start_workers(ray: Any, count: int, num_gpus: float, setup: Sequence[str]) -> list[Any]:
    """``count`` :class:`StemWorker` actors (1 CPU and ``num_gpus`` GPUs each), restarted
    whenever they die, each call retried :data:`TASK_RETRIES` times on a death."""
    actor = ray.remote(
        num_cpus=1, num_gpus=num_gpus, max_restarts=-1, max_task_retries=TASK_RETRIES
    )(StemWorker)
    return [actor.remote(tuple(setup)) for _ in range(count)]


def run_on_ray(
    tasks: Sequence[StemTask],
    on_result: ResultHook,
    jobs: int,
    address: str | None,
    num_gpus: float | None,
    setup: Sequence[str] = (),
    stats: list[WorkerStats] | None = None,
) -> None:
    """Render ``tasks`` on ``jobs`` :class:`StemWorker` actors: each input is read here,
    its audio sent by value, the result sent back and written here.

    Args:
        tasks: the stems.
        on_result: called here with every result, in completion order.
        jobs: actors, and so stems in flight (at most one decoded stem per actor waits
            in the object store).
        address: Ray cluster address (None: ``$RAY_ADDRESS`` or a local Ray).
        num_gpus: GPUs per actor (None: 1 for a model generator, else 0).
        setup: ``"module:function"`` names each actor calls when it starts.
        stats: when given, each actor's :class:`WorkerStats` is appended at the end.

    Raises:
        ParameterError: Ray is missing, or the cluster has fewer GPUs than asked for.
        ClusterUnreachableError: the cluster does not answer.
        KeyboardInterrupt: passed on after the stems in flight were cancelled.
    """
    if not tasks:
        return
    ray = connect(address)
    gpus = gpus_for(tasks[0].request) if num_gpus is None else float(num_gpus)
    check_gpus(ray, gpus, address)
    workers = start_workers(ray, min(jobs, len(tasks)), gpus, setup)
    queue = list(reversed(tasks))
    idle = list(workers)
    in_flight: dict[Any, tuple[StemTask, LoadedStem, Any]] = {}
    try:
        while queue or in_flight:
            while queue and idle:
                task = queue.pop()
                loaded = load_task(task)  # read and hashed here: the worker sees no disk
                if isinstance(loaded, TaskResult):
                    on_result(loaded)
                    continue
                worker = idle.pop()
                ref = worker.render.remote(loaded.stem, task.request, loaded.load_s)
                in_flight[ref] = (task, loaded, worker)
            if not in_flight:
                continue
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                task, loaded, worker = in_flight.pop(ref)
                idle.append(worker)
                on_result(finish_task(task, loaded, fetch(ray, ref)))
        if stats is not None:
            stats.extend(ray.get([w.stats.remote() for w in workers]))
    except BaseException:
        for ref in in_flight:
            ray.cancel(ref)
        raise
    finally:
        for w in workers:
            ray.kill(w)


def fetch(ray: Any, ref: Any) -> Any:
    """The value of ``ref``, or a :class:`RenderFailure` when the worker died on every
    try or Ray lost the task."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as e:
        return RenderFailure(
            "internal",
            f"the Ray worker died {TASK_RETRIES + 1} times while rendering this stem "
            f"(stem failed, batch goes on): {first_line(e)}",
        )
    except ray.exceptions.RayError as e:
        return RenderFailure("internal", f"Ray task failed: {first_line(e)}")


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# --------------------------------------------------------------------------------------
# One job at a time, with progress (the OSC server)


def stream_render(
    stem: Any, request: RenderRequest, setup: Sequence[str] = ()
) -> Iterator[tuple[Any, ...]]:
    """Render ``stem`` (sent by value) and yield ``("progress", stage, fraction)`` events
    as the pipeline reports them, then ``("done", result)`` or ``("failed", code,
    message)``. Run as a Ray streaming task (see :func:`remote_stream`).

    Progress is collected in the render's thread and yielded between pipeline steps,
    which is as often as the pipeline reports (every window of the generator, ...).
    """
    import queue
    import threading

    from ..errors import CancelledError

    run_setup(setup)
    events: queue.Queue[tuple[Any, ...]] = queue.Queue()
    stop = threading.Event()
    last_stage, last_at = "", 0.0

    def progress(stage: str, fraction: float) -> None:
        nonlocal last_stage, last_at
        if stop.is_set():  # the job was cancelled: end the render at this step
            raise CancelledError("cancelled")
        now = time.monotonic()
        if stage != last_stage or fraction >= 1.0 or now - last_at >= PROGRESS_INTERVAL_S:
            last_stage, last_at = stage, now
            events.put(("progress", stage, float(fraction)))

    def work() -> None:
        from ..pipeline import render_stem

        try:
            events.put(("done", render_stem(stem, request, progress=progress)))
        except BNMusicError as e:
            events.put(("failed", e.code, str(e)))
        except Exception as e:  # noqa: BLE001 - reported to the client, worker goes on
            events.put(("failed", "internal", f"{type(e).__name__}: {e}"))

    thread = threading.Thread(target=work, name="bnmusic-ray-render", daemon=True)
    thread.start()
    try:
        while True:
            event = events.get()
            yield event
            if event[0] != "progress":
                return
    finally:
        # ray.cancel (KeyboardInterrupt here) or a consumer that went away: the render
        # thread stops at its next progress step instead of running on.
        stop.set()
        thread.join()


def remote_stream(ray: Any, request: RenderRequest) -> Any:
    """:func:`stream_render` as a Ray streaming task asking for 1 CPU and, for a model
    generator, 1 GPU; retried once if its worker dies. ``max_calls=0`` keeps the worker
    (and the model it loaded) for the next job, where Ray would retire a GPU task's
    worker after one call."""
    return ray.remote(
        num_cpus=1,
        num_gpus=gpus_for(request),
        num_returns="streaming",
        max_retries=TASK_RETRIES,
        max_calls=0,
    )(stream_render)
