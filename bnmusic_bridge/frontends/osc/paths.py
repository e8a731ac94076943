"""Every path a client or a preset names, resolved and confined to the server's roots:
the one place that does it (:func:`confine_request` for what a render request names,
:meth:`RootSet.input_file` and :meth:`RootSet.output_dir` for the job's own paths).

A path is accepted only when both its literal absolute form and its resolved form
(every symlink followed) lie inside one root. So ``..`` anywhere, a symlink that leads
out and an absolute path elsewhere are refused, with ``path_outside_root``, and the
refusal is the same whether the outside path exists or not (nothing about outside
folders is revealed). Relative paths are taken relative to the first root. ``--root``
folders take reads and writes; ``--read-root`` folders (plugin folders, impulse
responses, a music library) take reads only.

What a request names, and so what is confined (adding a path field is one entry):

- request fields whose :class:`~bnmusic_bridge.request.FieldSpec` has ``path`` set
  ("file" or "dir");
- generator parameters whose name ends in one of :data:`PATH_PARAM_SUFFIXES`
  (``music_dir``, ``music_file``, ...);
- every file of the effects chain (:func:`bnmusic_bridge.fx.effect_paths`: impulse
  responses, plugins, ``.vstpreset`` files);
- the output folder (:meth:`RootSet.output_dir`; the name pattern is checked by
  :class:`~bnmusic_bridge.export.ExportOptions` and holds no separator).

Paths are checked when the message arrives, again when the job starts, and the read
paths once more after the render (:meth:`RootSet.recheck`); outputs are written through
a folder opened beneath its root without following symlinks
(:class:`~bnmusic_bridge.export.fileset.OutputFolder`), so an output folder swapped for
a symlink during the render cannot redirect them. A file swapped for an outside symlink
and back while it is being read is not caught (see docs/osc.md).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from bnmusic_bridge.grid import AUDIO_EXTENSIONS

from .protocol import OscError

MAX_PATH_CHARS = 4096
PATH_PARAM_SUFFIXES = ("_dir", "_file", "_path", "_folder")
"""A generator parameter whose name ends so names a path (``music_dir``): confined."""
TEXT_FIELDS_NOT_PATHS = frozenset({"prompt", "negative_prompt", "generator", "model"})
"""Free-text RenderRequest fields known not to be paths (``model`` is the server's own);
fields with a fixed set of choices are not paths either. A test fails when a text field
is neither, nor marked ``path`` in its FieldSpec, so a new path field cannot slip past
the confinement."""
MAX_NEW_FOLDER_LEVELS = 3
"""Most folder levels one output folder may add below what exists."""


class RootSet:
    """The folders clients may read from and write to.

    Args:
        roots: folders (they must exist) clients may read from and write to; each is
            stored in its literal absolute form and its resolved form.
        read_roots: further folders clients may only read from.
    """

    def __init__(
        self,
        roots: Iterable[str | os.PathLike[str]],
        read_roots: Iterable[str | os.PathLike[str]] = (),
    ) -> None:
        self.roots = self._folders(roots, "--root")
        if not self.roots:
            raise OscError("bad_arguments", "at least one --root folder is needed")
        self.read_roots = self._folders(read_roots, "--read-root")
        self.resolved = tuple(Path(os.path.realpath(p)) for p in self.roots)
        self.read_resolved = tuple(Path(os.path.realpath(p)) for p in self.read_roots)

    @staticmethod
    def _folders(folders: Iterable[str | os.PathLike[str]], flag: str) -> tuple[Path, ...]:
        out: list[Path] = []
        for r in folders:
            p = Path(os.path.abspath(os.fspath(r)))
            if not p.is_dir():
                raise OscError("path_not_found", f"{flag} {p} is not an existing folder")
            out.append(p)
        return tuple(out)

    def __repr__(self) -> str:
        return f"RootSet({[str(r) for r in self.roots]}, read={[str(r) for r in self.read_roots]})"

    def _candidates(self, write: bool) -> tuple[Path, ...]:
        if write:
            return (*self.roots, *self.resolved)
        return (*self.roots, *self.resolved, *self.read_roots, *self.read_resolved)

    def inside(self, path: Path, *, write: bool = False) -> bool:
        """Whether ``path`` (absolute) lies inside a root (a writable one if ``write``)."""
        return any(_is_within(path, r) for r in self._candidates(write))

    def root_of(self, resolved: Path) -> Path:
        """The resolved writable root that holds ``resolved`` (the deepest one).

        Raises:
            OscError: ``path_outside_root``.
        """
        holding = [r for r in self.resolved if _is_within(resolved, r)]
        if not holding:
            raise OscError("path_outside_root", "the output folder is outside the server's roots")
        return max(holding, key=lambda r: len(r.parts))

    def describe(self, *, write: bool = False) -> str:
        shown = [str(r) for r in self.roots]
        if not write:
            shown += [f"{r} (read only)" for r in self.read_roots]
        return ", ".join(shown)

    def confine(self, text: str, what: str = "path", *, write: bool = False) -> Path:
        """The resolved absolute path for ``text`` if it stays inside a root (a
        writable one if ``write``). Says nothing of whether it exists.

        Raises:
            OscError: ``bad_arguments`` (empty, too long, NUL), ``path_outside_root``.
        """
        if not isinstance(text, str):
            raise OscError("bad_arguments", f"{what} must be text, got {type(text).__name__}")
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
        if not self.inside(literal, write=write) or not self.inside(resolved, write=write):
            # The same words whether the outside path exists or not.
            kind = "writable roots" if write and self.read_roots else "roots"
            raise OscError(
                "path_outside_root",
                f"{what} {text!r} is outside the server's {kind}: {self.describe(write=write)}",
            )
        return resolved

    def input_file(self, text: str, what: str = "noise_path") -> Path:
        """A readable regular file inside the roots.

        Raises:
            OscError: ``path_outside_root``, ``path_not_found`` (missing, a folder, a
                device), ``path_unreadable`` (no read permission).
        """
        path = self.confine(text, what)
        if not path.exists():
            raise OscError("path_not_found", f"{what} {text!r}: no such file")
        if not path.is_file():
            raise OscError("path_not_found", f"{what} {text!r} is not a regular file")
        if not os.access(path, os.R_OK):
            raise OscError("path_unreadable", f"{what} {text!r}: no permission to read it")
        return path

    def input_dir(self, text: str, what: str) -> Path:
        """A readable folder inside the roots whose audio files (the ones a generator
        may pick) all resolve inside the roots too.

        Raises:
            OscError: ``path_outside_root`` (the folder, or a file in it, leads out),
                ``path_not_found``, ``path_unreadable``.
        """
        path = self.confine(text, what)
        if not path.is_dir():
            raise OscError("path_not_found", f"{what} {text!r}: no such folder")
        if not os.access(path, os.R_OK | os.X_OK):
            raise OscError("path_unreadable", f"{what} {text!r}: no permission to read it")
        try:
            entries = list(os.scandir(path))
        except OSError as e:
            raise OscError("path_unreadable", f"{what} {text!r}: cannot list it") from e
        for entry in entries:
            if (
                entry.name.lower().endswith(AUDIO_EXTENSIONS)
                and entry.is_symlink()
                and not self.inside(Path(os.path.realpath(entry.path)))
            ):
                raise OscError(
                    "path_outside_root",
                    f"{what} {text!r}: {entry.name} is a symlink that leads outside the roots",
                )
        return path

    def input_any(self, text: str, what: str) -> Path:
        """An existing file or folder (a plugin bundle) inside the roots."""
        path = self.confine(text, what)
        if not path.exists():
            raise OscError("path_not_found", f"{what} {text!r}: not found")
        return path

    def output_dir(self, text: str) -> Path:
        """A folder inside the writable roots for outputs; it may not exist yet (it is
        created when the outputs are written), but what exists of it must be a writable
        folder, and at most :data:`MAX_NEW_FOLDER_LEVELS` levels may be new.

        Raises:
            OscError: ``path_outside_root``, ``path_unreadable`` (a file, or not
                writable), ``quota_exceeded`` (too many new levels).
        """
        path = self.confine(text, "out_dir", write=True)
        missing = self.new_folders(path)
        probe = missing[-1].parent if missing else path
        if not probe.is_dir():
            raise OscError("path_unreadable", f"out_dir {text!r}: a part of it is not a folder")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise OscError("path_unreadable", f"out_dir {text!r}: no permission to write there")
        if len(missing) > MAX_NEW_FOLDER_LEVELS:
            raise OscError(
                "quota_exceeded",
                f"out_dir {text!r} would create {len(missing)} folder levels; at most "
                f"{MAX_NEW_FOLDER_LEVELS} may be new",
            )
        return path

    @staticmethod
    def new_folders(path: Path) -> list[Path]:
        """The folders that writing into ``path`` would create, deepest first."""
        missing: list[Path] = []
        probe = path
        while not probe.exists() and probe != probe.parent:
            missing.append(probe)
            probe = probe.parent
        return missing

    def check_output_folder(self, real: Path) -> None:
        """Refuse to commit outputs into a folder that is no longer inside a writable
        root (it was moved out during the render).

        Raises:
            OscError: ``path_outside_root``.
        """
        if not self.inside(real, write=True):
            raise OscError(
                "path_outside_root",
                "the output folder was moved outside the server's roots during the render; "
                "nothing was written",
            )


class FolderQuota:
    """How many new folders each client host may have the server create (over the
    server's lifetime; a folder counts once, however many jobs write into it).

    Args:
        limit: folders per client host (0: none may be created).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._made: dict[str, set[Path]] = {}

    def reserve(self, host: str, folders: Iterable[Path]) -> None:
        """Count ``folders`` against ``host``'s quota.

        Raises:
            OscError: ``quota_exceeded`` (nothing is counted then).
        """
        new = set(folders)
        if not new:
            return
        with self._lock:
            made = self._made.setdefault(host, set())
            total = len(made | new)
            if total > self.limit:
                raise OscError(
                    "quota_exceeded",
                    f"this client may have at most {self.limit} new output folders created "
                    f"(bnmusic serve --folder-quota); write into an existing folder",
                )
            made.update(new)


# --------------------------------------------------------------------------------------
# What a render request names


@dataclass(frozen=True)
class NamedPath:
    """One path a request names.

    Attributes:
        what: where it sits, for messages (``param.music_dir``, ``effects[0].path``).
        text: the value as given.
        kind: "file", "dir" or "any" (a file or a bundle folder).
    """

    what: str
    text: str
    kind: str


def path_fields() -> dict[str, str]:
    """RenderRequest fields that hold a path, with their kind ("file" or "dir"), from
    the FieldSpecs (``FieldSpec.path``)."""
    from bnmusic_bridge.request import FIELD_SPECS

    return {
        name: str(getattr(spec, "path", "") or "")
        for name, spec in FIELD_SPECS.items()
        if getattr(spec, "path", "")
    }


def is_path_param(name: str) -> bool:
    """Whether a generator parameter's name says it holds a path."""
    return str(name).lower().endswith(PATH_PARAM_SUFFIXES)


def named_paths(request: Any) -> list[NamedPath]:
    """Every path ``request`` names (see the module docstring)."""
    from bnmusic_bridge.fx import effect_paths

    found: list[NamedPath] = []
    for name, kind in path_fields().items():
        value = getattr(request, name, None)
        if value is None or value == "":
            continue
        found.append(NamedPath(name, _text(value, name), kind))
    for key, value in dict(request.generator_params).items():
        if is_path_param(key) and value is not None and value != "":
            kind = "dir" if str(key).lower().endswith(("_dir", "_folder")) else "file"
            found.append(NamedPath(f"param.{key}", _text(value, f"param.{key}"), kind))
    for index, key, value, kind in effect_paths(request.effects):
        found.append(
            NamedPath(f"effects[{index}].{key}", value, "any" if kind == "plugin" else "file")
        )
    return found


def _text(value: Any, what: str) -> str:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise OscError("bad_parameter", f"{what} must be a path (text), got {value!r}")


def confine_path(roots: RootSet, named: NamedPath) -> Path:
    """The resolved path of one named path, checked as its kind requires."""
    if named.kind == "dir":
        return roots.input_dir(named.text, named.what)
    if named.kind == "file":
        return roots.input_file(named.text, named.what)
    return roots.input_any(named.text, named.what)


def confine_request(request: Any, roots: RootSet) -> Any:
    """``request`` with every path it names resolved and confined to the roots (the
    resolved form replaces the given one, so later reads use the checked path).

    Raises:
        OscError: ``path_outside_root``, ``path_not_found``, ``path_unreadable``,
            ``bad_arguments``/``bad_parameter`` (not text, NUL, too long).
    """
    paths = named_paths(request)
    if not paths:
        return request
    changes: dict[str, Any] = {}
    params = dict(request.generator_params)
    effects = [dict(e) for e in request.effects]
    fields = path_fields()
    for named in paths:
        resolved = str(confine_path(roots, named))
        if named.what in fields:
            changes[named.what] = resolved
        elif named.what.startswith("param."):
            params[named.what[len("param.") :]] = resolved
        else:
            index = int(named.what[len("effects[") : named.what.index("]")])
            key = named.what[named.what.index("].") + 2 :]
            effects[index][key] = resolved
    if params != dict(request.generator_params):
        changes["generator_params"] = _like(request.generator_params, params)
    if effects != [dict(e) for e in request.effects]:
        changes["effects"] = tuple(
            _like(old, new) for old, new in zip(request.effects, effects, strict=True)
        )
    return dataclasses.replace(request, **changes) if changes else request


def _like(template: Mapping[str, Any], values: dict[str, Any]) -> Mapping[str, Any]:
    """``values`` as the same mapping type as ``template`` (presets freeze theirs)."""
    try:
        return type(template)(values)  # type: ignore[call-arg]
    except TypeError:
        return values


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True
