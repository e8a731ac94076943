"""The preset list ``/bnmusic/presets`` answers from, cached so a reply never waits on
the disk: read once before the sockets open, then re-read in the background when a
request finds it older than :data:`PRESETS_CACHE_S`."""

from __future__ import annotations

import logging
import os
import threading
import time

from .transport import Spawn

log = logging.getLogger("bnmusic.osc")

PRESETS_CACHE_S = 10.0
"""Age after which a /bnmusic/presets request triggers a background re-read."""
FALLBACK_ENTRY = ("default", "built-in defaults")
"""What clients see when the presets folder cannot be listed."""


def list_presets_for_clients(
    presets_dir: str | os.PathLike[str] | None,
) -> list[tuple[str, str]]:
    """(name, description) of every preset a job may name; broken presets left out."""
    from bnmusic_bridge.presets import list_presets

    out = []
    for entry in list_presets(presets_dir):
        if entry.error:
            continue  # a broken preset cannot be used; `bnmusic presets list` shows why
        out.append((str(entry.name), str(entry.description or "")))
    return out


class PresetCache:
    """The cached preset list.

    Args:
        presets_dir: the user presets folder (``--presets-dir``).
        spawn: starts the background re-read.
    """

    def __init__(self, presets_dir: str | os.PathLike[str] | None, spawn: Spawn) -> None:
        self.presets_dir = presets_dir
        self._spawn = spawn
        self._lock = threading.Lock()
        self._cache: tuple[float, list[tuple[str, str]]] | None = None

    def entries(self) -> list[tuple[str, str]]:
        """The list; read now if never read, re-read in the background if stale."""
        with self._lock:
            cached = self._cache
        if cached is None:
            return self.refresh()
        if time.monotonic() - cached[0] > PRESETS_CACHE_S:
            self._spawn(self.refresh, "bnmusic-osc-presets")
        return cached[1]

    def refresh(self) -> list[tuple[str, str]]:
        """Read the list now (imports the preset checks the first time: about a second)."""
        try:
            entries = list_presets_for_clients(self.presets_dir)
        except Exception:  # noqa: BLE001 - a broken presets folder must not stop serving
            log.exception("listing presets failed")
            entries = [FALLBACK_ENTRY]
        with self._lock:
            self._cache = (time.monotonic(), entries)
        return entries
