"""``bnmusic serve``: the OSC bridge that DAW sessions talk to (see docs/osc.md).

Modules, lowest first (each imports only those above it, and the library's public names):

- :mod:`.protocol`: the ``/bnmusic/`` address space, decoding, argument checks, replies.
- :mod:`.framing`: OSC over a TCP byte stream (SLIP, liblo's length prefixes).
- :mod:`.transport`: UDP and TCP sockets, connections, endpoints, the stream rate limit.
- :mod:`.routing`: subscriptions, the outbox every reply leaves through, the counters.
- :mod:`.config`: :class:`ServerConfig`, the one home of the server's defaults.
- :mod:`.paths`: confining client paths to the ``--root`` folders.
- :mod:`.preset_cache`: the preset list ``/bnmusic/presets`` answers from.
- :mod:`.worker`: the render worker process that owns the model, the generation gate.
- :mod:`.jobs`: the bounded job queue and the job table.
- :mod:`.handlers`: one function per address, and the table of them.
- :mod:`.dispatch`: packet -> messages -> handlers; refusals -> error replies.
- :mod:`.pushes`: progress, lane, meter and done messages of the jobs.
- :mod:`.server`: :class:`OscServer`, the glue that wires the above together.
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
