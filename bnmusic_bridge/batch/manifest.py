"""``manifest.json``: every stem of a batch folder with its latest result, rewritten
atomically while the batch runs (format: docs/batch.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..audio import write_bytes_atomic
from .task import TaskResult, utc_now

MANIFEST_NAME = "manifest.json"
"""File name of the manifest in the batch's output folder."""
MANIFEST_VERSION = 1
"""Version of the manifest format."""
MANIFEST_INTERVAL_S = 2.0
"""Shortest time between two manifest rewrites while a batch runs, in seconds."""


class Manifest:
    """``manifest.json``: every stem's latest result, rewritten atomically.

    Entries of an existing manifest at ``path`` (stems of earlier runs into the same
    folder) are kept; a damaged one is rebuilt from this run.

    Args:
        path: the manifest file.
        header: the fields written before the results (version, preset, inputs, ...).
    """

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
        """Record ``result`` (an input that named no file goes to ``input_errors``)."""
        if result.stem_name:
            self.entries[result.stem_name] = result.as_dict()
        else:
            self.input_errors.append({"input": result.input_path, "error": result.error})

    def write(self, *, throttle: bool = False) -> None:
        """Rewrite the file atomically; with ``throttle``, not sooner than
        :data:`MANIFEST_INTERVAL_S` after the last write."""
        if throttle and time.monotonic() - self._last_write < MANIFEST_INTERVAL_S:
            return
        stems = [self.entries[k] for k in sorted(self.entries)]
        counts: dict[str, int] = {}
        for e in stems:
            counts[e["status"]] = counts.get(e["status"], 0) + 1
        doc = {
            **self.header,
            "updated": utc_now(),
            "summary": {"stems": len(stems), **counts, "input_errors": len(self.input_errors)},
            "stems": stems,
            "input_errors": self.input_errors,
        }
        data = json.dumps(doc, indent=1, allow_nan=False, default=str).encode("utf-8")
        write_bytes_atomic(self.path, data, force=True)
        self._last_write = time.monotonic()
