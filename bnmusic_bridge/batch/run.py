"""A whole batch: check the parameters, plan (resume), run the due stems on a backend,
keep the manifest up to date, and sum up (:func:`run_batch`)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..export import ExportOptions
from ..request import RenderRequest, check_request, expand_path
from .backends import run_tasks
from .manifest import MANIFEST_NAME, MANIFEST_VERSION, Manifest
from .plan import BatchPlan, plan_batch
from .task import TaskResult


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
    ray_num_gpus: float | None = None,
    worker_setup: Sequence[str] = (),
    threads: int | None = None,
) -> BatchSummary:
    """Render every stem named by ``inputs`` into ``out_dir`` and write the manifest.

    Args:
        inputs: files, folders (searched recursively) and glob patterns.
        out_dir: output folder (created); never searched for inputs.
        request: render parameters (default :class:`RenderRequest`).
        export: output options (default :class:`ExportOptions`).
        jobs: parallel tasks (see :func:`~bnmusic_bridge.batch.backends.run_tasks`).
        backend: "local" or "ray".
        preset: the preset's name, recorded in the manifest.
        progress: show a tqdm progress bar on stderr.
        ray_address: Ray cluster address, for ``backend="ray"``.
        ray_num_gpus: GPUs per Ray worker (None: 1 for a model generator, else 0).
        worker_setup: ``"module:function"`` names each Ray worker calls when it
            starts (e.g. to register a generator), for ``backend="ray"``.
        threads: torch/BLAS threads per stem's render (None: the free cores shared
            among ``jobs``, :func:`bnmusic_bridge.threads.default_threads`).

    Returns:
        a :class:`BatchSummary`; failed stems are in it, not raised.

    Raises:
        ParameterError: bad parameters (checked before any stem is rendered).
        KeyboardInterrupt: after the manifest was written with the finished stems.
    """
    # 1. Refuse bad parameters before any stem is touched
    req = request or RenderRequest()
    opts = export or ExportOptions()
    check_batch_parameters(req, opts)
    t0 = time.perf_counter()

    # 2. Plan: finished stems are skipped, stems in the way refused
    out = expand_path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_batch(inputs, out, req, opts)

    # 3. Prepare the manifest with what the plan already knows
    manifest = Manifest(out / MANIFEST_NAME, manifest_header(inputs, out, preset))
    results: dict[str, TaskResult] = {}
    order = [r.stem_name or r.input_path for r in plan.skipped + plan.failed]
    order += [t.stem_name for t in plan.tasks]
    for r in (*plan.skipped, *plan.failed):
        results[r.stem_name or r.input_path] = r
        manifest.add(r)
    bar = BatchProgress(plan) if progress else None

    def on_result(r: TaskResult) -> None:
        results[r.stem_name] = r
        manifest.add(r)
        manifest.write(throttle=True)
        if bar is not None:
            bar.update(r)

    # 4. Run the due stems; the manifest is brought up to date even after Ctrl-C
    try:
        manifest.write()
        run_tasks(
            plan.tasks,
            on_result,
            jobs=jobs,
            backend=backend,
            ray_address=ray_address,
            ray_num_gpus=ray_num_gpus,
            worker_setup=worker_setup,
            threads=threads,
        )
    finally:
        if bar is not None:
            bar.close()
        manifest.write()
    ordered = tuple(results[k] for k in order if k in results)
    return BatchSummary(ordered, manifest.path, time.perf_counter() - t0)


def check_batch_parameters(request: RenderRequest, export: ExportOptions) -> None:
    """Every check a render and its export would make, once for the whole batch.

    Raises:
        ParameterError: the first problem.
    """
    check_request(request)
    export.check()
    if request.effects:
        from ..fx import check_effects

        check_effects(request.effects, where="effects")


def manifest_header(
    inputs: Sequence[str | os.PathLike[str]], out: Path, preset: str | None
) -> dict[str, Any]:
    """The manifest's fields before the results (format: docs/batch.md)."""
    # The version's one home is the package root (always imported before this module).
    from ..version import __version__

    return {
        "manifest_version": MANIFEST_VERSION,
        "package": "bnmusic-bridge",
        "version": __version__,
        "preset": preset,
        "inputs": [str(i) for i in inputs],
        "out_dir": str(out),
    }


class BatchProgress:
    """A tqdm bar on stderr counting stems (finished ones from earlier runs included)
    and failures."""

    def __init__(self, plan: BatchPlan) -> None:
        from tqdm import tqdm

        self.failed = len(plan.failed)
        self.bar = tqdm(
            total=len(plan.tasks) + len(plan.skipped),
            initial=len(plan.skipped),
            desc="batch",
            unit="stem",
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self.bar.set_postfix(failed=self.failed)

    def update(self, result: TaskResult) -> None:
        if result.status == "failed":
            self.failed += 1
        self.bar.update(1)
        self.bar.set_postfix(failed=self.failed, last=result.stem_name[:24])

    def close(self) -> None:
        self.bar.close()
