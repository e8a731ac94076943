"""Confining client paths to the server's ``--root`` folders.

A path from a client is accepted only when both its literal absolute form and its
resolved form (every symlink followed) lie inside one root. So ``..`` anywhere, a
symlink that leads out and an absolute path elsewhere are refused, with
``path_outside_root``. Relative paths are taken relative to the first root.

A path is checked when the message arrives and again when the job starts, so a file
swapped for a symlink while the job waited in the queue is caught; a swap in the few
milliseconds between that check and the read is not (see docs/osc.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePath

from .protocol import OscError

MAX_PATH_CHARS = 4096


class RootSet:
    """The folders clients may read from and write to.

    Args:
        roots: folders (they must exist); each is stored in its literal absolute form
            and its resolved form.
    """

    def __init__(self, roots: Iterable[str | os.PathLike[str]]) -> None:
        literal: list[Path] = []
        for r in roots:
            p = Path(os.path.abspath(os.fspath(r)))
            if not p.is_dir():
                raise OscError("path_not_found", f"--root {p} is not an existing folder")
            literal.append(p)
        if not literal:
            raise OscError("bad_arguments", "at least one --root folder is needed")
        self.roots = tuple(literal)
        self.resolved = tuple(Path(os.path.realpath(p)) for p in literal)

    def __repr__(self) -> str:
        return f"RootSet({[str(r) for r in self.roots]})"

    def _inside(self, path: Path) -> bool:
        return any(_is_within(path, r) for r in (*self.roots, *self.resolved))

    def confine(self, text: str, what: str = "path") -> Path:
        """The resolved absolute path for ``text`` if it stays inside a root.

        Raises:
            OscError: ``bad_arguments`` (empty, too long, NUL), ``path_outside_root``.
        """
        if not text:
            raise OscError("bad_arguments", f"{what} is empty")
        if len(text) > MAX_PATH_CHARS or "\x00" in text:
            raise OscError(
                "bad_arguments", f"{what} is longer than {MAX_PATH_CHARS} characters or holds NUL"
            )
        if ".." in PurePath(text).parts or ".." in text.replace("\\", "/").split("/"):
            raise OscError("path_outside_root", f"{what} {text!r}: '..' is not allowed in paths")
        given = Path(text)
        literal = Path(os.path.abspath(given if given.is_absolute() else self.roots[0] / given))
        resolved = Path(os.path.realpath(literal))
        if not self._inside(literal) or not self._inside(resolved):
            where = "" if resolved == literal else f" (it resolves to {resolved})"
            raise OscError(
                "path_outside_root",
                f"{what} {text!r}{where} is outside the server's roots: "
                + ", ".join(str(r) for r in self.roots),
            )
        return resolved

    def input_file(self, text: str) -> Path:
        """A readable regular file inside the roots.

        Raises:
            OscError: ``path_outside_root``, ``path_not_found`` (missing, a folder, a
                device), ``path_unreadable`` (no read permission).
        """
        path = self.confine(text, "noise_path")
        if not path.exists():
            raise OscError("path_not_found", f"noise_path {text!r}: no such file")
        if not path.is_file():
            raise OscError("path_not_found", f"noise_path {text!r} is not a regular file")
        if not os.access(path, os.R_OK):
            raise OscError("path_unreadable", f"noise_path {text!r}: no permission to read it")
        return path

    def output_dir(self, text: str) -> Path:
        """A folder inside the roots for outputs; it may not exist yet (it is created
        when the outputs are written), but what exists of it must be a writable folder.

        Raises:
            OscError: ``path_outside_root``, ``path_unreadable`` (a file, or not writable).
        """
        path = self.confine(text, "out_dir")
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise OscError("path_unreadable", f"out_dir {text!r}: {probe} is not a folder")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise OscError(
                "path_unreadable", f"out_dir {text!r}: no permission to write in {probe}"
            )
        return path


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True
