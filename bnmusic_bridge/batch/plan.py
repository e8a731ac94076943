"""Planning a batch: which stems are due, which an earlier run finished (resume), and
which are refused before rendering."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import OutputExistsError
from ..export import ExportOptions, output_paths
from ..request import RenderRequest, expand_path
from .inputs import expand_inputs, stem_names
from .task import (
    StemTask,
    TaskResult,
    failed_result,
    file_sha256,
    request_parameters,
    task_key,
    utc_now,
)


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
    out = expand_path(out_dir).resolve()
    files, problems = expand_inputs(inputs, exclude=out)
    tasks: list[StemTask] = []
    skipped: list[TaskResult] = []
    failed = [input_error(text, msg) for text, msg in problems]
    for path, name in zip(files, stem_names(files), strict=True):
        task = StemTask(name, str(path), str(out), request, export)
        paths = output_paths(name, out, export)
        try:
            digest = file_sha256(path)
        except OSError as e:
            failed.append(failed_result(task, f"{path}: cannot read ({e.strerror or e})", "bad_audio"))
            continue
        key = task_key(digest, request, export)
        done = finished_result(task, paths.report, key)
        if done is not None:
            skipped.append(done)
            continue
        existing = [str(p) for p in paths.all() if p.exists()]
        if existing and not export.force:
            error = OutputExistsError(
                f"{path}: outputs from another input or other parameters exist "
                f"({', '.join(existing)}); pass --force to replace them or choose another --out"
            )
            failed.append(
                failed_result(task, error, OutputExistsError.code, key=key, input_sha256=digest)
            )
            continue
        tasks.append(task)
    return BatchPlan(tuple(tasks), tuple(skipped), tuple(failed))


def input_error(text: str, message: str) -> TaskResult:
    """The failed result of an input that named no file (it has no stem name)."""
    return TaskResult(
        stem_name="",
        input_path=text,
        status="failed",
        error=f"{text}: {message}",
        error_code="bad_input",
        finished_at=utc_now(),
    )


def finished_result(task: StemTask, report_path: Path, key: str) -> TaskResult | None:
    """The earlier result of ``task`` when its report holds ``key`` and its outputs exist
    (None otherwise: the stem is due)."""
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
            parameters=report.get("parameters", request_parameters(task.request)),
            finished_at=utc_now(),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable or foreign report: not a finished stem of this batch
