"""Test-only hooks run inside Ray workers (named by ``worker_setup``): they make a worker
die in the middle of a stem, as a crashing plugin or an out-of-memory kill would."""

from __future__ import annotations

import os
from typing import Any


def maybe_die(stem: Any) -> None:
    """A stem named ``*crash_once*`` kills the worker process on its first try (the
    tries are appended to ``<input>.tries`` beside the input), one named
    ``*crash_always*`` on every try."""
    name = stem.path.name
    if "crash" not in name:
        return
    tries = stem.path.with_name(name + ".tries")
    with open(tries, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")
    if "crash_always" in name or tries.read_text().count("\n") == 1:
        os._exit(1)  # no cleanup, no exception: the process is gone mid-stem


def die_on_marked_stems() -> None:
    """Batch workers (StemWorker): :func:`maybe_die` before each stem's render."""
    from bnmusic_bridge.batch import ray_backend

    real = ray_backend.render_loaded

    def render(stem: Any, request: Any, load_s: float = 0.0) -> Any:
        maybe_die(stem)
        return real(stem, request, load_s)

    ray_backend.render_loaded = render


def die_in_server_jobs() -> None:
    """The OSC server's remote jobs: :func:`maybe_die` when the render starts (after
    the job's first progress events went out)."""
    from bnmusic_bridge import pipeline
    from bnmusic_bridge.frontends.osc.testing import register_fake_generator

    register_fake_generator()
    real = pipeline.render_stem

    def render_stem(stem: Any, request: Any = None, **kw: Any) -> Any:
        maybe_die(stem)
        return real(stem, request, **kw)

    pipeline.render_stem = render_stem
