"""Where renders run: a worker process that owns the model (default), or threads.

The server process only handles sockets and bookkeeping. Renders run in one worker
process (``multiprocessing`` "spawn" context) with ``render_threads`` threads: loading,
analysis, decoding, Stage 2 and writing run side by side there, while the ``generate``
stage, the only one that uses the model, passes a single gate, so generation is
serialized and the model, created once by the generator registry, is used by one job
at a time. The separate process keeps the server's replies quick (no render holds the
server's GIL) and keeps the server alive if a render crashes the interpreter (a
plugin, a driver): the jobs in flight fail with ``internal`` and a fresh worker starts.

``isolation="thread"`` runs the same code in the server process (for debugging).

Progress and cancellation ride on the pipeline's ``progress(stage, fraction)``
callback: once a job is cancelled the callback raises
:class:`~bnmusic_bridge.errors.CancelledError` and the pipeline stops at its next
progress event. Outputs are written only after a render finished, atomically and under
fresh names, so a cancelled or failed job leaves no files behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnmusic_bridge.errors import AudioInputError, BNMusicError, CancelledError, OutputExistsError
from bnmusic_bridge.export import ExportOptions, lanes
from bnmusic_bridge.request import RenderRequest

from .paths import RootSet
from .protocol import OscError

log = logging.getLogger("bnmusic.osc")

GENERATION_STAGES = frozenset({"generate"})
"""Pipeline stages that use the model; they pass through the generation gate."""
WRITE_STAGE = "write"
"""The progress stage reported while the outputs are written."""
MAX_FRESH_NAMES = 1000
"""Names tried for a job's outputs (stem, stem-2, ...) before giving up."""
EARLY_DEATH_S = 10.0
MAX_EARLY_DEATHS = 3
"""A worker that dies this many times in a row within EARLY_DEATH_S of starting is not
restarted again (it cannot start: a broken install, a bad setup hook)."""


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to run one job (picklable).

    Attributes:
        key: the job id as text.
        noise_path: resolved input path.
        out_dir: resolved output folder.
        request: the RenderRequest.
        export: the ExportOptions (``force`` is ignored: outputs never overwrite).
        client: the requesting endpoint, for the report.
        meter_hz: meter blocks per second of audio (0: none).
        lane_tolerance_db: lane compaction tolerance in dB.
        progress_interval_s: least time between progress events within a stage.
        roots: the server's roots (a :class:`~.paths.RootSet`): the output folder is
            opened beneath its root without following symlinks, and every read path is
            checked again after the render. None: no confinement (library use).
        max_stem_s: longest stem in seconds, checked from the header before it is read.
    """

    key: str
    noise_path: Path
    out_dir: Path
    request: RenderRequest
    export: ExportOptions
    client: str
    meter_hz: float
    lane_tolerance_db: float
    progress_interval_s: float
    roots: RootSet | None = None
    max_stem_s: float | None = None


@dataclass(frozen=True)
class Outcome:
    """What a finished job hands back for its done message and streams.

    Attributes:
        outputs: output kind -> absolute path (music, blended, report, lambda_csv, ...).
        coverage: overall masking coverage, 0..1.
        nmr_db: total noise-to-mask ratio in dB.
        lambda_min_db / lambda_max_db: range of the lambda lane in dB.
        lane_times_s / lane_gain_db: the compacted lambda lane, float64 ``(points,)``.
        meter_times_s / meter_coverage: coverage per meter block, float64 ``(blocks,)``.
        seconds: wall time of the render and export.
        warnings: the render's warnings, one line each (sent as ``/bnmusic/warning``).
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
    warnings: tuple[str, ...] = ()


class JobFailed(Exception):
    """A job ended without outputs; ``code`` is an OSC error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


ProgressFn = Callable[[str, float], None]


def compact_lane(
    times_s: np.ndarray, gain_db: np.ndarray, tolerance_db: float
) -> tuple[np.ndarray, np.ndarray]:
    """Lane points only where the gain moved more than ``tolerance_db`` (dB): straight
    lines between the kept points stay within the tolerance of the full lane; the first
    and last point are always kept, non-finite gains dropped.

    Uses :func:`bnmusic_bridge.export.lanes.compact_lane` (as the lane files do); where
    that refuses the lane (a tolerance of 0, times out of order), keeps a point
    whenever the gain moved more than the tolerance since the last kept one.
    """
    times_s = np.asarray(times_s, dtype=np.float64)
    gain_db = np.asarray(gain_db, dtype=np.float64)
    finite = np.isfinite(gain_db) & np.isfinite(times_s)
    times_s, gain_db = times_s[finite], gain_db[finite]
    if times_s.size:
        try:
            t, g = lanes.compact_lane(times_s, gain_db, tolerance_db=tolerance_db)
            return np.asarray(t, dtype=np.float64), np.asarray(g, dtype=np.float64)
        except (TypeError, ValueError, BNMusicError):
            log.debug("export.lanes.compact_lane refused the lane; using the local helper")
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


class Gate:
    """The single generation gate; a job waiting on it still notices cancellation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self, cancel: threading.Event) -> None:
        while not self._lock.acquire(timeout=0.05):
            if cancel.is_set():
                raise CancelledError("cancelled while waiting for the generator")

    def release(self) -> None:
        self._lock.release()


def execute_job(
    spec: JobSpec,
    progress: ProgressFn,
    cancel: threading.Event,
    gate: Gate,
    export_lock: threading.Lock,
    render: Callable[[JobSpec, ProgressFn], Any] | None = None,
) -> Outcome:
    """Render, write and summarise one job.

    ``render(spec, hook)`` computes the :class:`~bnmusic_bridge.result.RenderResult`
    (default: :func:`~bnmusic_bridge.pipeline.render_file` here; the Ray executor sends
    the audio to a cluster); it reports progress through ``hook``, which raises
    :class:`~bnmusic_bridge.errors.CancelledError` once the job is cancelled.

    Raises:
        JobFailed: with the OSC error code (``cancelled``, ``bad_audio``, ...).
    """
    holding = False
    last_sent_s = 0.0
    last_stage = ""

    def hook(stage: str, fraction: float) -> None:
        nonlocal holding, last_sent_s, last_stage
        if cancel.is_set():
            raise CancelledError(f"job {spec.key!r} was cancelled")
        if stage in GENERATION_STAGES and not holding:
            gate.acquire(cancel)
            holding = True
        elif stage not in GENERATION_STAGES and holding:
            gate.release()
            holding = False
        now = time.monotonic()
        if stage != last_stage or fraction >= 1.0 or now - last_sent_s >= spec.progress_interval_s:
            last_sent_s, last_stage = now, stage
            progress(stage, fraction)

    t0 = time.perf_counter()
    folder = None
    try:
        try:
            from bnmusic_bridge.pipeline import render_file

            before = _check_input(spec)
            # The output folder is opened (beneath its root, no symlink followed) before
            # the render and written through that handle: swapping it for a symlink
            # while the job runs cannot redirect the outputs.
            folder = _open_out(spec)
            if render is None:
                result = render_file(spec.noise_path, spec.request, progress=hook)
            else:
                result = render(spec, hook)
            if cancel.is_set():
                raise CancelledError(f"job {spec.key!r} was cancelled")
            _recheck_reads(spec, before)
        except CancelledError as e:
            raise JobFailed("cancelled", str(e) or "cancelled") from e
        except BNMusicError as e:
            raise JobFailed(getattr(e, "code", "error"), str(e)) from e
        except MemoryError as e:
            raise JobFailed(
                "generator_failed", "out of memory while rendering (a shorter stem needs less)"
            ) from e
        except Exception as e:  # noqa: BLE001 - any failure is reported, the worker goes on
            log.exception("job %s: render failed", spec.key)
            raise JobFailed("internal", f"{type(e).__name__}: {e}") from e
        finally:
            if holding:
                gate.release()
        progress(WRITE_STAGE, 0.0)
        try:
            outputs = _write(
                spec, result, folder, export_lock, lambda f: progress(WRITE_STAGE, min(f, 0.99))
            )
        except BNMusicError as e:
            raise JobFailed(getattr(e, "code", "error"), str(e)) from e
        except OSError as e:
            raise JobFailed(
                "path_unreadable", f"cannot write outputs in {spec.out_dir}: {e}"
            ) from e
    finally:
        if folder is not None:
            folder.close()
    progress(WRITE_STAGE, 1.0)
    return _outcome(spec, result, outputs, time.perf_counter() - t0)


def _check_input(spec: JobSpec) -> os.stat_result | None:
    """Before the render: the input is still inside the roots, no longer than the cap
    (from its header, nothing read yet); returns its identity for :func:`_recheck_reads`."""
    from bnmusic_bridge.audio import probe_stem

    if spec.roots is not None:
        spec.roots.input_file(str(spec.noise_path))
    if spec.max_stem_s is not None:
        info = probe_stem(spec.noise_path)
        if info.duration_s > spec.max_stem_s:
            raise AudioInputError(
                f"{spec.noise_path.name}: the stem is {info.duration_s / 60:.1f} min long; this "
                f"server renders at most {spec.max_stem_s / 60:g} min (bnmusic serve --max-stem-minutes)"
            )
    try:
        return os.stat(spec.noise_path)
    except OSError:
        return None


def _recheck_reads(spec: JobSpec, before: os.stat_result | None) -> None:
    """After the render, before anything is written: every path the job read is still
    the file it was and still inside the roots; otherwise nothing is written."""
    if spec.roots is None:
        return
    from .paths import confine_path, named_paths

    try:
        spec.roots.input_file(str(spec.noise_path))
        after = os.stat(spec.noise_path)
        if before is not None and not os.path.samestat(before, after):
            raise OscError("path_outside_root", "noise_path was replaced during the render")
        for named in named_paths(spec.request):
            confine_path(spec.roots, named)
    except (OscError, OSError) as e:
        raise OscError(
            getattr(e, "code", "path_not_found"),
            f"an input changed during the render ({e}); nothing was written",
        ) from e


def _open_out(spec: JobSpec) -> Any:
    """The job's output folder, opened once: beneath its root, without following any
    symlink, its place checked again just before the outputs are committed."""
    from bnmusic_bridge.export.fileset import OutputFolder

    if spec.roots is None:
        return OutputFolder.open(spec.out_dir)
    root = spec.roots.root_of(spec.out_dir)
    return OutputFolder.open_beneath(
        root, spec.out_dir.relative_to(root), guard=spec.roots.check_output_folder
    )


def _write(
    spec: JobSpec,
    result: Any,
    folder: Any,
    export_lock: threading.Lock,
    progress: Callable[[float], None] | None = None,
) -> dict[str, str]:
    from bnmusic_bridge.export import output_paths, write_outputs

    options = dataclasses.replace(spec.export, force=False)
    stem = spec.noise_path.stem
    # Serialized so two jobs on the same stem cannot pick the same fresh name.
    with export_lock:
        for n in range(1, MAX_FRESH_NAMES + 1):
            name = stem if n == 1 else f"{stem}-{n}"
            if any(folder.exists(p.name) for p in output_paths(name, spec.out_dir, options).all()):
                continue
            try:
                paths = write_outputs(
                    result,
                    folder,
                    stem_name=name,
                    options=options,
                    extra_report={"osc": {"job_id": spec.key, "client": spec.client}},
                    progress=progress,
                )
            except OutputExistsError:
                continue  # another program took the name meanwhile: try the next
            if spec.roots is not None and not spec.roots.inside(folder.real_path(), write=True):
                # Moved out between the commit's check and now: take the set back.
                for p in paths.all():
                    folder.unlink(p.name)
                spec.roots.check_output_folder(folder.real_path())
            return paths.as_dict()
    raise OutputExistsError(
        f"outputs for {stem!r} exist under {MAX_FRESH_NAMES} names in {spec.out_dir}; clean up the folder"
    )


def _outcome(spec: JobSpec, result: Any, outputs: dict[str, str], seconds: float) -> Outcome:
    gain_db = np.asarray(result.lane_gain_db, dtype=np.float64)
    finite = gain_db[np.isfinite(gain_db)]
    lane_t, lane_g = compact_lane(result.lane_times_s, gain_db, spec.lane_tolerance_db)
    meter_t, meter_c = meter_blocks(result.coverage_per_frame, result.frame_rate_hz, spec.meter_hz)
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
        warnings=tuple(" ".join(str(w).split()) for w in result.warnings),
    )


def run_setup(setup: Sequence[str]) -> None:
    """Call each ``"module:function"`` (e.g. one that registers a generator)."""
    for item in setup:
        module, _, func = item.partition(":")
        getattr(importlib.import_module(module), func)()


def warm_imports() -> None:
    """Import what every render needs (pipeline, stages, audio I/O, export), so the first
    job does not pay for it; no model is loaded."""
    with contextlib.suppress(ImportError):
        from bnmusic_bridge.pipeline import warm_up

        warm_up()  # torch, scipy, pyloudnorm: the render's own list
    for module in (
        "bnmusic_bridge.pipeline",
        "bnmusic_bridge.spectrogram",
        "bnmusic_bridge.analysis",
        "bnmusic_bridge.amplify",
        "bnmusic_bridge.masking",
        "bnmusic_bridge.metering",
        "bnmusic_bridge.export",
        "pedalboard.io",
    ):
        try:
            importlib.import_module(module)
        except ImportError as e:
            log.debug("warm-up import of %s failed: %s", module, e)


def preload(request: Any) -> None:
    """Create the generator a request names (loads its model) and warm the imports."""
    from bnmusic_bridge.pipeline import generator_for

    generator_for(request)


# --------------------------------------------------------------------------------------
# Executors: the server's job threads call ``run`` and block until the job ends.


class ThreadExecutor:
    """Runs jobs in the calling thread (the server process)."""

    def __init__(self, setup: Sequence[str], threads: int | None = None) -> None:
        if threads is not None:
            from bnmusic_bridge.threads import set_threads

            set_threads(threads)  # the server's own process: only when asked
        run_setup(setup)
        self._gate = Gate()
        self._export_lock = threading.Lock()
        self.pid: int | None = None

    def run(self, spec: JobSpec, progress: ProgressFn, cancel: threading.Event) -> Outcome:
        return execute_job(spec, progress, cancel, self._gate, self._export_lock)

    def preload(self, request: Any) -> None:
        preload(request)

    def close(self, timeout_s: float = 10.0) -> None:
        pass


class ProcessExecutor:
    """Runs jobs in one worker process with ``threads`` threads; restarts it if it dies.

    Args:
        threads: jobs the worker runs at once.
        setup: ``"module:function"`` names called in the worker at start.
        niceness: how much the worker lowers its CPU priority (Unix ``nice``, 0 to 19).
        compute_threads: torch/BLAS threads of each job (``--threads``); None: the free
            cores shared among ``threads`` jobs
            (:func:`bnmusic_bridge.threads.default_threads`).
    """

    def __init__(
        self,
        threads: int,
        setup: Sequence[str],
        niceness: int,
        compute_threads: int | None = None,
    ) -> None:
        self.threads = threads
        self.compute_threads = compute_threads
        self.setup = tuple(setup)
        self.niceness = niceness
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._inboxes: dict[str, queue.Queue[tuple]] = {}
        self._closed = False
        self._early_deaths = 0
        self._broken: str | None = None
        self._start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def _start(self) -> None:
        self._started_s = time.monotonic()
        self._commands: Any = self._ctx.Queue()
        self._events: Any = self._ctx.Queue()
        self._proc = self._ctx.Process(
            target=_worker_main,
            args=(
                self._commands,
                self._events,
                self.setup,
                self.threads,
                self.niceness,
                self.compute_threads,
            ),
            name="bnmusic-render-worker",
            daemon=True,
        )
        self._proc.start()
        threading.Thread(
            target=self._read_loop,
            args=(self._proc, self._events),
            name="bnmusic-worker-events",
            daemon=True,
        ).start()

    def _read_loop(self, proc: Any, events: Any) -> None:
        while True:
            try:
                event = events.get(timeout=0.2)
            except queue.Empty:
                if not proc.is_alive():
                    self._died(proc)
                    return
                if self._closed:
                    return
                continue
            except (EOFError, OSError):
                self._died(proc)
                return
            with self._lock:
                box = self._inboxes.get(event[1])
            if box is not None:
                box.put(event)

    def _died(self, proc: Any) -> None:
        proc.join(1.0)
        if self._closed and proc.exitcode == 0:
            return
        early = time.monotonic() - self._started_s < EARLY_DEATH_S
        self._early_deaths = self._early_deaths + 1 if early else 0
        give_up = self._early_deaths >= MAX_EARLY_DEATHS
        message = f"the render worker process died (exit code {proc.exitcode})"
        if give_up:
            message += f"; it died {self._early_deaths} times within {EARLY_DEATH_S:.0f} s of starting, so no new one is started (see the server log)"
        elif not self._closed:
            message += "; a new one was started"
        log.error(message)
        with self._lock:
            boxes = list(self._inboxes.items())
            if give_up:
                self._broken = message
            elif not self._closed and proc is self._proc:
                self._start()
        for key, box in boxes:
            box.put(("failed", key, "internal", message))

    def run(self, spec: JobSpec, progress: ProgressFn, cancel: threading.Event) -> Outcome:
        box: queue.Queue[tuple] = queue.Queue()
        with self._lock:
            if self._broken is not None:
                raise JobFailed("internal", self._broken)
            self._inboxes[spec.key] = box
            commands = self._commands
        try:
            commands.put(("run", spec))
            cancel_sent = False
            while True:
                if cancel.is_set() and not cancel_sent:
                    commands.put(("cancel", spec.key))
                    cancel_sent = True
                try:
                    event = box.get(timeout=0.05)
                except queue.Empty:
                    continue
                if event[0] == "progress":
                    progress(event[2], event[3])
                elif event[0] == "done":
                    return event[2]
                else:
                    raise JobFailed(event[2], event[3])
        finally:
            with self._lock:
                self._inboxes.pop(spec.key, None)

    def preload(self, request: Any) -> None:
        with self._lock:
            self._commands.put(("preload", request))

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the worker (its running jobs are cancelled first by the manager)."""
        self._closed = True
        with contextlib.suppress(Exception):
            self._commands.put(("stop",))
        self._proc.join(timeout_s)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(2.0)


def _worker_main(
    commands: Any,
    events: Any,
    setup: Sequence[str],
    threads: int,
    niceness: int,
    compute_threads: int | None = None,
) -> None:
    """The worker process: runs jobs on a thread pool until told to stop or orphaned."""
    # Ctrl-C in a terminal signals the whole process group; the server decides what
    # happens to jobs and tells the worker, so the worker itself ignores it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Renders are batch work; replies are interactive. A lower priority keeps the
    # server's threads first in line for a CPU when the renders use every core.
    with contextlib.suppress(AttributeError, OSError):
        os.nice(niceness)
    # Before torch is imported: the jobs share the free cores, and one core stays with
    # the server's socket threads (and the DAW): with every core busy in torch, reply
    # latency grows by milliseconds even at a lower priority.
    from bnmusic_bridge.threads import default_threads, set_threads

    set_threads(compute_threads or default_threads(threads))
    run_setup(setup)
    warm_imports()

    gate = Gate()
    export_lock = threading.Lock()
    cancels: dict[str, threading.Event] = {}
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bnmusic-render")
    parent = multiprocessing.parent_process()

    def job(spec: JobSpec, cancel: threading.Event) -> None:
        try:
            outcome = execute_job(
                spec,
                lambda s, f: events.put(("progress", spec.key, s, f)),
                cancel,
                gate,
                export_lock,
            )
            events.put(("done", spec.key, outcome))
        except JobFailed as e:
            events.put(("failed", spec.key, e.code, e.message))
        except BaseException as e:  # noqa: BLE001 - report anything, keep the worker
            events.put(("failed", spec.key, "internal", f"{type(e).__name__}: {e}"))
        finally:
            cancels.pop(spec.key, None)

    while True:
        try:
            command = commands.get(timeout=0.5)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                command = ("stop",)
            else:
                continue
        if command[0] == "run":
            spec = command[1]
            cancel = threading.Event()
            cancels[spec.key] = cancel
            pool.submit(job, spec, cancel)
        elif command[0] == "cancel":
            ev = cancels.get(command[1])
            if ev is not None:
                ev.set()
        elif command[0] == "preload":
            try:
                preload(command[1])
            except BNMusicError as e:
                log.error("preload failed: %s", e)
        elif command[0] == "stop":
            for ev in list(cancels.values()):
                ev.set()
            pool.shutdown(wait=True)
            events.close()
            events.join_thread()
            return
