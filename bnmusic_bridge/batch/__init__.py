"""Batch rendering: many noise stems, one request, resumable, with a manifest.

Every stem is an independent :class:`StemTask` (its input file, its output folder and
name, every parameter) rendered by the pure function :func:`render_task`, whose only
side effects are the task's named output files. So the same tasks run in this process
(``jobs=1``), in a local process pool (``jobs=N``) or on a Ray cluster
(``backend="ray"``), and a stem never depends on another.

Resuming: each stem's report (``<stem>.report.json``) records a *task key*, a SHA-256 of
the input file's content and every render and export parameter. A stem whose report
holds the same key and whose outputs all exist is skipped, so an interrupted batch
(Ctrl-C, a crash, a lost machine) picks up where it stopped, and a changed input or
preset renders again. ``manifest.json`` in the output folder lists every stem with its
parameters, outputs, timings and coverage; it is rewritten atomically as results come
in (at most every :data:`MANIFEST_INTERVAL_S` seconds, and at the end).

Modules:

- :mod:`.inputs`: files, folders and glob patterns to input files and unique stem names.
- :mod:`.task`: one stem (:class:`StemTask`, :func:`render_task`, :class:`TaskResult`)
  and its task key.
- :mod:`.plan`: which stems are due and which an earlier run finished (:func:`plan_batch`).
- :mod:`.backends`: running tasks in this process, a process pool or on Ray
  (:func:`run_tasks`).
- :mod:`.manifest`: ``manifest.json``.
- :mod:`.run`: the whole batch (:func:`run_batch`).

The ``bnmusic batch`` command is :mod:`bnmusic_bridge.frontends.batch_cmd`.
"""

from __future__ import annotations

from .backends import BACKENDS, ResultHook, run_tasks
from .inputs import expand_inputs, stem_names
from .manifest import MANIFEST_INTERVAL_S, MANIFEST_NAME, MANIFEST_VERSION, Manifest
from .plan import BatchPlan, plan_batch
from .run import BatchSummary, run_batch
from .task import StemTask, TaskResult, file_sha256, render_task, task_key

__all__ = [
    "BACKENDS",
    "MANIFEST_INTERVAL_S",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "BatchPlan",
    "BatchSummary",
    "Manifest",
    "ResultHook",
    "StemTask",
    "TaskResult",
    "expand_inputs",
    "file_sha256",
    "plan_batch",
    "render_task",
    "run_batch",
    "run_tasks",
    "stem_names",
    "task_key",
]
