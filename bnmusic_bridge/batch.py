"""Batch rendering: many noise stems, one preset, resumable, with a manifest.

``bnmusic batch INPUTS... --preset NAME --out DIR [--jobs N] [--backend local|ray]``

Every stem is an independent :class:`StemTask` (its input file, its output folder and
name, every parameter) rendered by the pure function :func:`render_task`, whose only
side effects are the task's named output files. So the same tasks run in this process
(``--jobs 1``), in a local process pool (``--jobs N``) or on a Ray cluster
(``--backend ray``), and a stem never depends on another.

Resuming: each stem's report (``<stem>.report.json``) records a *task key*, a SHA-256 of
the input file's content and every render and export parameter. A stem whose report
holds the same key and whose outputs all exist is skipped, so an interrupted batch
(Ctrl-C, a crash, a lost machine) picks up where it stopped, and a changed input or
preset renders again. ``manifest.json`` in the output folder lists every stem with its
parameters, outputs, timings and coverage; it is rewritten atomically as results come
in (at most every :data:`MANIFEST_INTERVAL_S` seconds, and at the end).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import BNMusicError, OutputExistsError, ParameterError
from .export import ExportOptions
from .grid import AUDIO_EXTENSIONS
from .request import RenderRequest

"""Files a folder input contributes (case-insensitive)."""
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
MANIFEST_INTERVAL_S = 2.0
"""Shortest time between two manifest rewrites while a batch runs."""
BACKENDS = ("local", "ray")
HASH_CHUNK_BYTES = 1 << 20

ResultHook = Callable[["TaskResult"], None]


@dataclass(frozen=True)
class StemTask:
    """One stem of a batch: everything needed to render it, named.

    Attributes:
        stem_name: output base name (``{stem}`` of the naming pattern), unique in the batch.
        input_path: the noise stem file (absolute).
        out_dir: folder the outputs go to (absolute).
        request: every render parameter.
        export: how outputs are written (``force`` replaces outputs of other parameters).
    """

    stem_name: str
    input_path: str
    out_dir: str
    request: RenderRequest
    export: ExportOptions


@dataclass(frozen=True)
class TaskResult:
    """What became of one stem. JSON-ready through :meth:`as_dict`.

    Attributes:
        stem_name: the task's stem name.
        input_path: the input file.
        status: "rendered" (this run), "skipped" (done by an earlier run with the same
            key) or "failed".
        key: task key (SHA-256 of the input content and every parameter), "" if the
            input could not be read.
        input_sha256: SHA-256 of the input file's bytes ("" if unreadable).
        outputs: output kind -> path (empty when failed).
        seconds: wall time of the task in seconds (of the earlier run, when skipped).
        timings_s: seconds per pipeline stage.
        coverage: share (0..1) of high-energy noise bins masked by the gained music.
        nmr_db: total noise-to-mask ratio in dB.
        noise_lufs: integrated loudness of the noise, LUFS.
        music_lufs: integrated loudness of the gained music, LUFS.
        lambda_db: (lowest, highest) lane gain in dB.
        warnings: the render's warnings.
        error: the error message when failed.
        error_code: the error's code (see :mod:`bnmusic_bridge.errors`), or "internal".
        parameters: every render parameter (``RenderRequest.to_dict()``).
        finished_at: ISO 8601 UTC time the task ended.
    """

    stem_name: str
    input_path: str
    status: str
    key: str = ""
    input_sha256: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    timings_s: dict[str, float] = field(default_factory=dict)
    coverage: float | None = None
    nmr_db: float | None = None
    noise_lufs: float | None = None
    music_lufs: float | None = None
    lambda_db: tuple[float | None, float | None] = (None, None)
    warnings: tuple[str, ...] = ()
    error: str | None = None
    error_code: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    finished_at: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lambda_db"] = list(self.lambda_db)
        d["warnings"] = list(self.warnings)
        return d


@dataclass(frozen=True)
class BatchPlan:
    """What a batch will do.

    Attributes:
        tasks: stems to render.
        skipped: results of stems finished by an earlier run (same key, outputs present).
        failed: inputs refused before rendering (missing, unreadable, outputs in the way).
    """

    tasks: tuple[StemTask, ...]
    skipped: tuple[TaskResult, ...]
    failed: tuple[TaskResult, ...]


@dataclass(frozen=True)
class BatchSummary:
    """The outcome of :func:`run_batch`.

    Attributes:
        results: every stem's result (skipped, rendered and failed), in input order.
        manifest_path: the manifest written.
        seconds: wall time of the whole batch in seconds.
    """

    results: tuple[TaskResult, ...]
    manifest_path: Path
    seconds: float

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def failures(self) -> list[TaskResult]:
        return [r for r in self.results if r.status == "failed"]


# --------------------------------------------------------------------------------------
# Inputs


def expand_inputs(
    inputs: Sequence[str | os.PathLike[str]], exclude: Path | None = None
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files named by ``inputs``: files as given, folders searched recursively for audio
    files (:data:`AUDIO_EXTENSIONS`), and glob patterns (``**`` recurses).

    Args:
        inputs: files, folders or glob patterns.
        exclude: a folder whose files are never inputs (the batch's output folder).

    Returns:
        (absolute file paths without duplicates, in input order; (input, problem) for
        inputs that named nothing).
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()
    ex = exclude.resolve() if exclude is not None else None

    def add(path: Path) -> None:
        p = path.resolve()
        if p in seen or (ex is not None and p.is_relative_to(ex)):
            return
        seen.add(p)
        files.append(p)

    def audio_in(folder: Path) -> list[Path]:
        return sorted(
            f
            for f in folder.rglob("*")
            if f.is_file()
            and f.suffix.lower() in AUDIO_EXTENSIONS
            and not any(part.startswith(".") for part in f.relative_to(folder).parts)
        )

    for item in inputs:
        text = str(item)
        p = Path(text).expanduser()
        if p.is_file():
            add(p)
        elif p.is_dir():
            found = [f for f in audio_in(p) if ex is None or not f.resolve().is_relative_to(ex)]
            if not found:
                problems.append((text, f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in folder"))
            for f in found:
                add(f)
        elif glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True))
            hits = []
            for m in matches:
                hits.extend([m] if m.is_file() else audio_in(m) if m.is_dir() else [])
            if not hits:
                problems.append((text, "no files match this pattern"))
            for f in hits:
                add(f)
        else:
            problems.append((text, "no such file or folder"))
    return files, problems


def stem_names(files: Sequence[Path]) -> list[str]:
    """A unique output name per file: its name without suffix; files that share one get
    their folder's name in front, and a short hash of the path if that still clashes."""
    names = [f.stem for f in files]
    for _ in range(2):
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        if all(c == 1 for c in counts.values()):
            return names
        clash = {n for n, c in counts.items() if c > 1}
        if _ == 0:
            names = [
                f"{f.parent.name}__{n}" if n in clash else n
                for f, n in zip(files, names, strict=True)
            ]
        else:
            names = [
                f"{n}-{hashlib.sha1(str(f).encode()).hexdigest()[:8]}" if n in clash else n
                for f, n in zip(files, names, strict=True)
            ]
    return names


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def task_key(input_sha256: str, request: RenderRequest, export: ExportOptions) -> str:
    """SHA-256 over the input's content hash and every render and export parameter
    (``force`` excluded: it changes what may be overwritten, not what is rendered)."""
    from .presets import thaw

    export_d = thaw(dataclasses.asdict(dataclasses.replace(export, force=False)))
    doc = {"input_sha256": input_sha256, "request": thaw(request.to_dict()), "export": export_d}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------
# One task


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _failed(task: StemTask, error: BaseException | str, code: str, **kw: Any) -> TaskResult:
    message = str(error)
    if task.input_path not in message:  # every listed failure names its file
        message = f"{task.input_path}: {message}"
    return TaskResult(
        stem_name=task.stem_name,
        input_path=task.input_path,
        status="failed",
        error=message,
        error_code=code,
        parameters=_params(task.request),
        finished_at=_now(),
        **kw,
    )


def _params(request: RenderRequest) -> dict[str, Any]:
    from .presets import thaw

    return thaw(request.to_dict())


def render_task(task: StemTask) -> TaskResult:
    """Render one stem and write its outputs; never raises for a bad stem.

    A pure function of ``task``: it reads ``task.input_path`` and writes only the files
    named by ``task.out_dir``, ``task.stem_name`` and ``task.export`` (the report records
    the task key used to resume). Safe to run in another process or on another machine
    that sees the same paths.

    Returns:
        a :class:`TaskResult` with status "rendered" or "failed" (the error and its code).
    """
    from .export import write_outputs
    from .pipeline import render_file

    t0 = time.perf_counter()
    try:
        digest = file_sha256(task.input_path)
    except OSError as e:
        return _failed(task, f"{task.input_path}: cannot read ({e.strerror or e})", "bad_audio")
    key = task_key(digest, task.request, task.export)
    try:
        result = render_file(task.input_path, task.request)
        Path(task.out_dir).mkdir(parents=True, exist_ok=True)
        paths = write_outputs(
            result,
            task.out_dir,
            stem_name=task.stem_name,
            options=task.export,
            extra_report={"batch": {"key": key, "input_sha256": digest}},
        )
    except BNMusicError as e:
        return _failed(
            task, e, e.code, key=key, input_sha256=digest, seconds=time.perf_counter() - t0
        )
    except Exception as e:
        # An unexpected failure of one stem must not stop the batch; it is reported with
        # its type so it can be filed as a bug.
        return _failed(
            task,
            f"{type(e).__name__}: {e}",
            "internal",
            key=key,
            input_sha256=digest,
            seconds=time.perf_counter() - t0,
        )
    lane = result.lane_gain_db
    return TaskResult(
        stem_name=task.stem_name,
        input_path=task.input_path,
        status="rendered",
        key=key,
        input_sha256=digest,
        outputs=paths.as_dict(),
        seconds=time.perf_counter() - t0,
        timings_s={k: round(v, 4) for k, v in result.timings_s.items()},
        coverage=float(result.coverage),
        nmr_db=_finite(result.nmr_db),
        noise_lufs=_finite(result.noise_lufs),
        music_lufs=_finite(result.music_lufs),
        lambda_db=(_finite(float(lane.min())), _finite(float(lane.max())))
        if lane.size
        else (None, None),
        warnings=tuple(result.warnings),
        parameters=_params(task.request),
        finished_at=_now(),
    )


def _finite(x: float | None) -> float | None:
    import math

    return float(x) if x is not None and math.isfinite(x) else None


# --------------------------------------------------------------------------------------
# Planning (resume)


def plan_batch(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    request: RenderRequest,
    export: ExportOptions,
) -> BatchPlan:
    """Expand ``inputs`` into tasks, skipping stems an earlier run finished.

    A stem is skipped when its report in ``out_dir`` holds the same task key (same input
    content, same parameters) and every output it lists exists. A stem whose outputs
    exist from other parameters is refused (listed in ``failed``) unless
    ``export.force``.
    """
    from .export import output_paths

    out = Path(out_dir).expanduser().resolve()
    files, problems = expand_inputs(inputs, exclude=out)
    tasks: list[StemTask] = []
    skipped: list[TaskResult] = []
    failed = [
        TaskResult(
            stem_name="",
            input_path=text,
            status="failed",
            error=f"{text}: {msg}",
            error_code="bad_input",
            finished_at=_now(),
        )
        for text, msg in problems
    ]
    for path, name in zip(files, stem_names(files), strict=True):
        task = StemTask(name, str(path), str(out), request, export)
        paths = output_paths(name, out, export)
        try:
            digest = file_sha256(path)
        except OSError as e:
            failed.append(_failed(task, f"{path}: cannot read ({e.strerror or e})", "bad_audio"))
            continue
        key = task_key(digest, request, export)
        done = _finished_result(task, paths.report, key)
        if done is not None:
            skipped.append(done)
            continue
        existing = [str(p) for p in paths.all() if p.exists()]
        if existing and not export.force:
            failed.append(
                _failed(
                    task,
                    OutputExistsError(
                        f"{path}: outputs from another input or other parameters exist "
                        f"({', '.join(existing)}); pass --force to replace them or choose "
                        "another --out"
                    ),
                    OutputExistsError.code,
                    key=key,
                    input_sha256=digest,
                )
            )
            continue
        tasks.append(task)
    return BatchPlan(tuple(tasks), tuple(skipped), tuple(failed))


def _finished_result(task: StemTask, report_path: Path, key: str) -> TaskResult | None:
    """The earlier result of ``task`` when its report holds ``key`` and its outputs exist."""
    if not report_path.is_file():
        return None
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        if report.get("batch", {}).get("key") != key:
            return None
        outputs = {str(k): str(v) for k, v in report["outputs"].items()}
        if not all(Path(p).exists() for p in outputs.values()):
            return None
        lam = report.get("lambda", {})
        loud = report.get("loudness_lufs", {})
        return TaskResult(
            stem_name=task.stem_name,
            input_path=task.input_path,
            status="skipped",
            key=key,
            input_sha256=report["batch"].get("input_sha256", ""),
            outputs={**outputs, "report": str(report_path)},
            seconds=float(report.get("timings_s", {}).get("total", 0.0)),
            timings_s=dict(report.get("timings_s", {})),
            coverage=report.get("coverage", {}).get("overall"),
            nmr_db=report.get("nmr_db"),
            noise_lufs=loud.get("noise"),
            music_lufs=loud.get("music_blended"),
            lambda_db=(lam.get("min_db"), lam.get("max_db")),
            warnings=tuple(report.get("warnings", ())),
            parameters=report.get("parameters", _params(task.request)),
            finished_at=_now(),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable or foreign report: not a finished stem of this batch


# --------------------------------------------------------------------------------------
# Running


def run_tasks(
    tasks: Sequence[StemTask],
    on_result: ResultHook,
    *,
    jobs: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    ray_num_gpus: float = 0.0,
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

    Raises:
        ParameterError: bad ``jobs`` or ``backend``, or Ray missing.
        KeyboardInterrupt: passed on after pending tasks were cancelled.
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ParameterError(f"jobs={jobs!r}: need a whole number >= 1")
    if backend not in BACKENDS:
        raise ParameterError(f"backend={backend!r} unknown; allowed: {', '.join(BACKENDS)}")
    if backend == "ray":
        _run_ray(tasks, on_result, jobs, ray_address, ray_num_gpus)
    elif jobs == 1 or len(tasks) <= 1:
        for task in tasks:
            on_result(render_task(task))
    else:
        _run_pool(tasks, on_result, jobs)


def _worker_init(threads: int) -> None:
    # Keep N workers from each starting one BLAS/torch thread per core.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))


def _run_pool(tasks: Sequence[StemTask], on_result: ResultHook, jobs: int) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // jobs)
    # spawn, not fork: a forked copy of a process that already runs torch threads can hang.
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)),
        mp_context=ctx,
        initializer=_worker_init,
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
                    on_result(_failed(task, f"worker process died ({e})", "internal"))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _run_ray(
    tasks: Sequence[StemTask],
    on_result: ResultHook,
    jobs: int,
    address: str | None,
    num_gpus: float,
) -> None:
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
                    on_result(_failed(task, f"Ray task failed: {e}", "internal"))
    except BaseException:
        for ref in in_flight:
            ray.cancel(ref)
        raise


# --------------------------------------------------------------------------------------
# Manifest


class Manifest:
    """``manifest.json``: every stem's latest result, rewritten atomically."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.header = header
        self.entries: dict[str, dict[str, Any]] = {}
        self.input_errors: list[dict[str, Any]] = []
        self._last_write = 0.0
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
                for e in old.get("stems", []):
                    self.entries[str(e["stem_name"])] = e
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                pass  # a damaged manifest is rebuilt from this run and the reports

    def add(self, result: TaskResult) -> None:
        if result.stem_name:
            self.entries[result.stem_name] = result.as_dict()
        else:
            self.input_errors.append({"input": result.input_path, "error": result.error})

    def write(self, *, throttle: bool = False) -> None:
        if throttle and time.monotonic() - self._last_write < MANIFEST_INTERVAL_S:
            return
        from .audio import write_bytes_atomic

        stems = [self.entries[k] for k in sorted(self.entries)]
        counts: dict[str, int] = {}
        for e in stems:
            counts[e["status"]] = counts.get(e["status"], 0) + 1
        doc = {
            **self.header,
            "updated": _now(),
            "summary": {"stems": len(stems), **counts, "input_errors": len(self.input_errors)},
            "stems": stems,
            "input_errors": self.input_errors,
        }
        data = json.dumps(doc, indent=1, allow_nan=False, default=str).encode("utf-8")
        write_bytes_atomic(self.path, data, force=True)
        self._last_write = time.monotonic()


def run_batch(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    request: RenderRequest | None = None,
    export: ExportOptions | None = None,
    *,
    jobs: int = 1,
    backend: str = "local",
    preset: str | None = None,
    progress: bool = False,
    ray_address: str | None = None,
    ray_num_gpus: float = 0.0,
) -> BatchSummary:
    """Render every stem named by ``inputs`` into ``out_dir`` and write the manifest.

    Args:
        inputs: files, folders (searched recursively) and glob patterns.
        out_dir: output folder (created); never searched for inputs.
        request: render parameters (default :class:`RenderRequest`).
        export: output options (default :class:`ExportOptions`).
        jobs: parallel tasks (see :func:`run_tasks`).
        backend: "local" or "ray".
        preset: the preset's name, recorded in the manifest.
        progress: show a tqdm progress bar on stderr.
        ray_address: Ray cluster address, for ``backend="ray"``.
        ray_num_gpus: GPUs per task, for ``backend="ray"``.

    Returns:
        a :class:`BatchSummary`; failed stems are in it, not raised.

    Raises:
        ParameterError: bad parameters (checked before any stem is rendered).
        KeyboardInterrupt: after the manifest was written with the finished stems.
    """
    from . import __version__
    from .request import check_request

    req = request or RenderRequest()
    opts = export or ExportOptions()
    check_request(req)
    opts.check()
    if req.effects:
        from .fx import check_effects

        check_effects(req.effects, where="effects")
    t0 = time.perf_counter()
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_batch(inputs, out, req, opts)
    manifest = Manifest(
        out / MANIFEST_NAME,
        {
            "manifest_version": MANIFEST_VERSION,
            "package": "bnmusic-bridge",
            "version": __version__,
            "preset": preset,
            "inputs": [str(i) for i in inputs],
            "out_dir": str(out),
        },
    )
    results: dict[str, TaskResult] = {}
    order = [r.stem_name or r.input_path for r in plan.skipped + plan.failed]
    order += [t.stem_name for t in plan.tasks]
    for r in (*plan.skipped, *plan.failed):
        results[r.stem_name or r.input_path] = r
        manifest.add(r)
    bar = None
    if progress:
        from tqdm import tqdm

        total = len(plan.tasks) + len(plan.skipped)
        bar = tqdm(
            total=total,
            initial=len(plan.skipped),
            desc="batch",
            unit="stem",
            file=sys.stderr,
            dynamic_ncols=True,
        )
        bar.set_postfix(failed=len(plan.failed))
    failed_count = len(plan.failed)

    def on_result(r: TaskResult) -> None:
        nonlocal failed_count
        results[r.stem_name] = r
        manifest.add(r)
        manifest.write(throttle=True)
        if r.status == "failed":
            failed_count += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(failed=failed_count, last=r.stem_name[:24])

    try:
        manifest.write()
        run_tasks(
            plan.tasks,
            on_result,
            jobs=jobs,
            backend=backend,
            ray_address=ray_address,
            ray_num_gpus=ray_num_gpus,
        )
    finally:
        if bar is not None:
            bar.close()
        manifest.write()
    ordered = tuple(results[k] for k in _stable_order(order, results))
    return BatchSummary(ordered, manifest.path, time.perf_counter() - t0)


def _stable_order(order: Iterable[str], results: dict[str, TaskResult]) -> list[str]:
    return [k for k in order if k in results]


# --------------------------------------------------------------------------------------
# Command line


def register_cli(subparsers: Any) -> None:
    """Add the ``batch`` command to the ``bnmusic`` parser."""
    from .frontends.args import add_output_args, add_render_args

    p = subparsers.add_parser(
        "batch",
        help="render many noise stems with one preset (resumable, with a manifest)",
        description="Render every stem named by INPUTS (files, folders, glob patterns) into "
        "--out. Finished stems (same input content, same parameters) are skipped, so an "
        "interrupted batch resumes; manifest.json lists every output. See docs/batch.md.",
    )
    p.add_argument("inputs", nargs="+", help="noise stems: files, folders or glob patterns")
    p.add_argument("--jobs", type=int, default=1, help="stems rendered at once (default 1)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local processes (default) or a Ray cluster",
    )
    p.add_argument("--ray-address", help="Ray cluster address (default $RAY_ADDRESS or local)")
    p.add_argument(
        "--ray-gpus",
        type=float,
        default=0.0,
        help="GPUs Ray reserves per stem (1 for the riffusion generator)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_render_args(p)
    add_output_args(p)
    p.set_defaults(func=cmd_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    from .frontends.args import build_export_options, build_request, preset_export

    if args.out is None:
        raise ParameterError("batch needs --out DIR (the folder for every stem's outputs)")
    request = build_request(args)
    options = build_export_options(args, preset_export(args))
    try:
        summary = run_batch(
            args.inputs,
            args.out,
            request,
            options,
            jobs=args.jobs,
            backend=args.backend,
            preset=args.preset,
            progress=sys.stderr.isatty() and not args.quiet,
            ray_address=args.ray_address,
            ray_num_gpus=args.ray_gpus,
        )
    except KeyboardInterrupt:
        print(
            f"bnmusic batch: interrupted; finished stems are kept and listed in "
            f"{Path(args.out) / MANIFEST_NAME}; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    failures = summary.failures
    if args.json:
        print(
            json.dumps(
                {
                    "manifest": str(summary.manifest_path),
                    "rendered": summary.count("rendered"),
                    "skipped": summary.count("skipped"),
                    "failed": [{"input": r.input_path, "error": r.error} for r in failures],
                    "seconds": round(summary.seconds, 2),
                },
                indent=1,
            )
        )
    elif not args.quiet:
        print(
            f"{summary.count('rendered')} rendered, {summary.count('skipped')} skipped "
            f"(done before), {len(failures)} failed in {summary.seconds:.1f} s; "
            f"manifest: {summary.manifest_path}"
        )
    if failures:
        print(f"bnmusic batch: {len(failures)} stem(s) failed:", file=sys.stderr)
        for r in failures:
            print(f"  {r.error}", file=sys.stderr)
        return 1
    return 0
