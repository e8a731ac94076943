"""One stem of a batch: the task (:class:`StemTask`), the pure function that renders it
(:func:`render_task`), what became of it (:class:`TaskResult`) and its task key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import BNMusicError
from ..export import ExportOptions
from ..request import RenderRequest

HASH_CHUNK_BYTES = 1 << 20
"""Bytes read at a time while hashing an input file."""


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


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (manifest and result times)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def request_parameters(request: RenderRequest) -> dict[str, Any]:
    """Every render parameter of ``request`` as plain JSON-ready values."""
    from ..presets import thaw

    return thaw(request.to_dict())


def failed_result(task: StemTask, error: BaseException | str, code: str, **kw: Any) -> TaskResult:
    """A "failed" result of ``task``; the message always names the input file.

    Args:
        task: the stem.
        error: the exception or message.
        code: the error code (see :mod:`bnmusic_bridge.errors`), or "internal".
        **kw: further :class:`TaskResult` fields (key, input_sha256, seconds).
    """
    message = str(error)
    if task.input_path not in message:  # every listed failure names its file
        message = f"{task.input_path}: {message}"
    return TaskResult(
        stem_name=task.stem_name,
        input_path=task.input_path,
        status="failed",
        error=message,
        error_code=code,
        parameters=request_parameters(task.request),
        finished_at=utc_now(),
        **kw,
    )


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
    from ..presets import thaw

    export_d = thaw(dataclasses.asdict(dataclasses.replace(export, force=False)))
    doc = {"input_sha256": input_sha256, "request": thaw(request.to_dict()), "export": export_d}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def finite_or_none(x: float | None) -> float | None:
    """``x`` as a float, or None when it is missing or not finite (JSON has no inf/NaN)."""
    return float(x) if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class LoadedStem:
    """A stem read on the calling machine, ready to travel by value to a worker that
    does not see this machine's disk.

    Attributes:
        key: the task key (see :func:`task_key`).
        input_sha256: SHA-256 of the input file's bytes.
        stem: the decoded audio (float32 ``(channels, samples)``, its own rate in Hz; its
            ``path`` names the file, as a label only).
        load_s: seconds spent reading and decoding the file.
        t0: ``time.perf_counter()`` when the task started (this machine's clock).
    """

    key: str
    input_sha256: str
    stem: Any
    load_s: float
    t0: float


@dataclass(frozen=True)
class RenderFailure:
    """A render that raised, as a picklable value (it crosses process and machine
    boundaries where an exception might not unpickle).

    Attributes:
        code: the error code (see :mod:`bnmusic_bridge.errors`), or "internal".
        message: the message (for "internal": the exception's type and message).
    """

    code: str
    message: str


def load_task(task: StemTask) -> LoadedStem | TaskResult:
    """Hash and read ``task``'s input on this machine: a :class:`LoadedStem`, or the
    stem's "failed" result (unreadable, not audio, truncated, ...)."""
    from ..audio import read_stem

    t0 = time.perf_counter()
    try:
        digest = file_sha256(task.input_path)
    except OSError as e:
        return failed_result(
            task, f"{task.input_path}: cannot read ({e.strerror or e})", "bad_audio"
        )
    key = task_key(digest, task.request, task.export)
    t_read = time.perf_counter()
    try:
        stem = read_stem(task.input_path)
    except BNMusicError as e:
        return failed_result(
            task, e, e.code, key=key, input_sha256=digest, seconds=time.perf_counter() - t0
        )
    except Exception as e:  # a decoder's own error: this stem fails, the batch goes on
        return failed_result(
            task,
            f"{type(e).__name__}: {e}",
            "internal",
            key=key,
            input_sha256=digest,
            seconds=time.perf_counter() - t0,
        )
    return LoadedStem(key, digest, stem, time.perf_counter() - t_read, t0)


def render_loaded(stem: Any, request: RenderRequest, load_s: float = 0.0) -> Any:
    """Render a stem read by :func:`load_task`: pure computation (no file is read or
    written, except a model's weights), so it runs wherever the audio is sent.

    Returns:
        the :class:`~bnmusic_bridge.result.RenderResult`, or a :class:`RenderFailure`
        (never raises for a bad stem or a generator error).
    """
    from ..pipeline import render_stem

    try:
        return render_stem(stem, request, load_s=load_s)
    except BNMusicError as e:
        return RenderFailure(e.code, str(e))
    except Exception as e:
        # An unexpected failure of one stem must not stop the batch; it is reported with
        # its type so it can be filed as a bug.
        return RenderFailure("internal", f"{type(e).__name__}: {e}")


def finish_task(task: StemTask, loaded: LoadedStem, rendered: Any) -> TaskResult:
    """Write a rendered stem's outputs on this machine (atomically, as named by
    ``task``) and sum it up; ``rendered`` is what :func:`render_loaded` returned."""
    from ..export import write_outputs

    def failed(code: str, message: object) -> TaskResult:
        return failed_result(
            task,
            message if isinstance(message, BaseException) else str(message),
            code,
            key=loaded.key,
            input_sha256=loaded.input_sha256,
            seconds=time.perf_counter() - loaded.t0,
        )

    if isinstance(rendered, RenderFailure):
        return failed(rendered.code, rendered.message)
    result = rendered
    try:
        Path(task.out_dir).mkdir(parents=True, exist_ok=True)
        paths = write_outputs(
            result,
            task.out_dir,
            stem_name=task.stem_name,
            options=task.export,
            extra_report={"batch": {"key": loaded.key, "input_sha256": loaded.input_sha256}},
        )
    except BNMusicError as e:
        return failed(e.code, e)
    except Exception as e:
        return failed("internal", f"{type(e).__name__}: {e}")
    lane = result.lane_gain_db
    return TaskResult(
        stem_name=task.stem_name,
        input_path=task.input_path,
        status="rendered",
        key=loaded.key,
        input_sha256=loaded.input_sha256,
        outputs=paths.as_dict(),
        seconds=time.perf_counter() - loaded.t0,
        timings_s={k: round(v, 4) for k, v in result.timings_s.items()},
        coverage=float(result.coverage),
        nmr_db=finite_or_none(result.nmr_db),
        noise_lufs=finite_or_none(result.noise_lufs),
        music_lufs=finite_or_none(result.music_lufs),
        lambda_db=(finite_or_none(float(lane.min())), finite_or_none(float(lane.max())))
        if lane.size
        else (None, None),
        warnings=tuple(result.warnings),
        parameters=request_parameters(task.request),
        finished_at=utc_now(),
    )


def render_task(task: StemTask) -> TaskResult:
    """Render one stem and write its outputs; never raises for a bad stem.

    A pure function of ``task``: it reads ``task.input_path`` and writes only the files
    named by ``task.out_dir``, ``task.stem_name`` and ``task.export`` (the report records
    the task key used to resume). It is :func:`load_task`, :func:`render_loaded` and
    :func:`finish_task` in a row; the Ray backend runs the middle one on a worker and
    the other two here, so both give the same files.

    Returns:
        a :class:`TaskResult` with status "rendered" or "failed" (the error and its code).
    """
    loaded = load_task(task)
    if isinstance(loaded, TaskResult):
        return loaded
    return finish_task(task, loaded, render_loaded(loaded.stem, task.request, loaded.load_s))
