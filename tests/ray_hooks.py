"""Test-only hooks run inside Ray workers (named by ``worker_setup``): they make a worker
die in the middle of a stem, as a crashing plugin or an out-of-memory kill would."""

from __future__ import annotations

import os
from typing import Any


def die_on_marked_stems() -> None:
    """Wrap the worker's render: a stem named ``*crash_once*`` kills the worker process on
    its first try (a marker file beside the input remembers the try), one named
    ``*crash_always*`` on every try; each try is appended to ``<input>.tries``."""
    from bnmusic_bridge.batch import ray_backend

    real = ray_backend.render_loaded

    def render(stem: Any, request: Any, load_s: float = 0.0) -> Any:
        name = stem.path.name
        tries = stem.path.with_name(stem.path.name + ".tries")
        if "crash" in name:
            with open(tries, "a", encoding="utf-8") as f:
                f.write(f"{os.getpid()}\n")
            if "crash_always" in name or tries.read_text().count("\n") == 1:
                os._exit(1)  # no cleanup, no exception: the process is gone mid-stem
        return real(stem, request, load_s)

    ray_backend.render_loaded = render
