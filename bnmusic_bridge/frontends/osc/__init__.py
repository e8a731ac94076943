"""``bnmusic serve``: the OSC bridge that DAW sessions talk to (see docs/osc.md).

- :mod:`.protocol`: the ``/bnmusic/`` address space, decoding, argument checks, replies.
- :mod:`.paths`: confining client paths to the ``--root`` folders.
- :mod:`.jobs`: the bounded job queue and the job table.
- :mod:`.worker`: the render worker process that owns the model, the generation gate.
- :mod:`.server`: UDP and TCP sockets, subscriptions, progress/meter/lane pushes.
- :mod:`.cli`: the ``bnmusic serve`` subcommand.
- :mod:`.testing`: a collecting test client and a fake generator (tests, benchmarks).

Imports are lazy so ``bnmusic --help`` stays fast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["API_VERSION", "OscServer", "ServerConfig"]


def __getattr__(name: str) -> Any:
    if name == "API_VERSION":
        from .protocol import API_VERSION

        return API_VERSION
    if name in ("OscServer", "ServerConfig"):
        from . import server

        return getattr(server, name)
    raise AttributeError(name)
