"""A render's outputs change as one set: all new files or all old ones, never a mix.

Two pieces:

- :class:`OutputFolder`: the output folder, opened once. Every file is created and
  renamed relative to that open folder (``dir_fd``), never through its path again, so
  a folder swapped for a symlink while a render runs does not redirect the writes;
  :meth:`OutputFolder.open_beneath` opens it from a root without following any
  symlink; :meth:`OutputFolder.real_path` says where the folder really is now.
- :func:`commit_set`: the files of a set are first written to temporary names
  (:func:`bnmusic_bridge.audio.temp_name`), then moved into place in one pass under the
  folder's lock, with a journal. Whatever fails or whoever interrupts (an exception, a
  signal, a full disk, ``kill -9``), the folder ends with the old set or the new one:
  an exception rolls back at once; a killed process leaves its journal, and the next
  commit into that folder (or :func:`repair_folder`) finishes the job, forward if the
  journal says the set was committed, back otherwise.

The journal (``.bnmusic-journal.<pid>-<hex>.json``) lists, per file, its final name,
its temporary name and, when an old file is replaced, the hidden name the old file is
moved to first (``.<name>.<pid>-<hex>.old<suffix>``). Its ``state`` becomes
``committed`` (an atomic rename of the journal) only after every file is in place:
that rename is the commit point. The lock (``flock`` on the open folder) serializes
commits, repairs and existence checks of every writer in every process, so two forced
renders of the same stem replace each other's sets whole.

Exceptions that leave here carry ``outputs_kept``: :data:`KEPT_NEW` (the new set is in
place), :data:`KEPT_OLD` (the earlier files are unchanged) or :data:`KEPT_NONE`
(nothing was written and nothing existed), so a front end can say which set survived.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import BinaryIO

from ..audio import O_CLOEXEC, O_DIRECTORY, O_NOFOLLOW, remove_stale_temp_files, temp_name
from ..errors import OutputError, OutputExistsError

KEPT_NEW = "new"
KEPT_OLD = "old"
KEPT_NONE = "none"
JOURNAL_PREFIX = ".bnmusic-journal."
JOURNAL_SUFFIX = ".json"
BACKUP_MARK = ".old"
MAX_NEW_FOLDERS_PER_OPEN = 8
"""Most folder levels :meth:`OutputFolder.open_beneath` creates for one output folder."""

try:  # Unix
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process at a time, by a thread lock
    fcntl = None  # type: ignore[assignment]

_THREAD_LOCK = threading.Lock()


def kept_message(kept: str | None) -> str:
    """What a user is told about the outputs after a failed or interrupted write."""
    return {
        KEPT_NEW: "the new outputs were all written",
        KEPT_OLD: "the earlier outputs are unchanged (none of this render's files was kept)",
        KEPT_NONE: "no output file was written",
    }.get(kept or "", "no partial outputs were left")


def mark_kept(exc: BaseException, kept: str) -> BaseException:
    """Record on ``exc`` which set survived (``outputs_kept``); returns ``exc``."""
    with contextlib.suppress(AttributeError, TypeError):
        exc.outputs_kept = kept  # type: ignore[attr-defined]
    return exc


class OutputFolder:
    """An output folder opened once; files are written relative to it.

    Args:
        fd: an open descriptor of the folder (owned: :meth:`close` closes it).
        path: the folder's path as the caller named it (for messages and reports).
        guard: called with :meth:`real_path` under the lock just before a set is
            committed; raising there aborts the commit (the server checks that the
            folder is still inside its roots).
    """

    def __init__(
        self, fd: int, path: str | os.PathLike[str], guard: Callable[[Path], None] | None = None
    ) -> None:
        self.fd = fd
        self.path = Path(path)
        self.guard = guard

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> OutputFolder:
        """Open ``path`` (created with its parents when ``create``).

        Raises:
            OutputError: it cannot be created or is not a folder.
        """
        p = Path(path)
        try:
            if create:
                p.mkdir(parents=True, exist_ok=True)
            fd = os.open(p, os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        except OSError as e:
            raise OutputError(f"output folder {p}: cannot open it ({e.strerror or e})") from e
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise OutputError(f"output folder {p}: not a folder")
        return cls(fd, p)

    @classmethod
    def open_beneath(
        cls,
        root: str | os.PathLike[str],
        relative: str | os.PathLike[str],
        *,
        create: bool = True,
        max_new: int = MAX_NEW_FOLDERS_PER_OPEN,
        guard: Callable[[Path], None] | None = None,
    ) -> OutputFolder:
        """Open ``root / relative`` one component at a time without following symlinks
        (any symlink on the way is refused), creating missing folders when ``create``.

        Raises:
            OutputError: a component is a symlink or not a folder, ``..`` appears, or
                more than ``max_new`` folders would be created.
        """
        rel = PurePath(relative)
        if rel.is_absolute() or ".." in rel.parts:
            raise OutputError(f"output folder {relative}: must be a plain path below {root}")
        flags = os.O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW
        try:
            fd = os.open(root, os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        except OSError as e:
            raise OutputError(f"root {root}: cannot open it ({e.strerror or e})") from e
        created = 0
        try:
            for part in rel.parts:
                if part in ("", "."):
                    continue
                try:
                    nxt = os.open(part, flags, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    created += 1
                    if created > max_new:
                        raise OutputError(
                            f"output folder {relative}: more than {max_new} new folders"
                        ) from None
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o777, dir_fd=fd)
                    nxt = os.open(part, flags, dir_fd=fd)
                os.close(fd)
                fd = nxt
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise OutputError(
                    f"output folder {relative}: a part of it is a symlink or not a folder"
                ) from e
            raise OutputError(f"output folder {relative}: {e.strerror or e}") from e
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, Path(root) / rel, guard)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- where it is ---------------------------------------------------------------

    def real_path(self) -> Path:
        """Where the open folder is now (Linux ``/proc/self/fd``, macOS ``F_GETPATH``);
        the path it was opened by where the system cannot tell."""
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{self.fd}")
            if target.startswith("/"):
                return Path(target)
        get_path = getattr(fcntl, "F_GETPATH", None) if fcntl is not None else None
        if get_path is not None:
            with contextlib.suppress(OSError):
                raw = fcntl.fcntl(self.fd, get_path, bytes(1024))
                return Path(os.fsdecode(raw.split(b"\0", 1)[0]))
        return Path(os.path.abspath(self.path))

    def report_path(self) -> Path:
        """The folder as outputs should be reported: the caller's path while it still
        names this folder, else where the folder really is."""
        real = self.real_path()
        with contextlib.suppress(OSError):
            if os.path.samestat(os.stat(self.path), os.fstat(self.fd)):
                return self.path
        return real

    # -- files ---------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        """Whether ``name`` exists in the folder (a dangling symlink counts)."""
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def write_temp(self, final_name: str, write: Callable[[BinaryIO], object]) -> str:
        """Write a temporary file for ``final_name`` through ``write(file)`` (a seekable
        binary file), flushed to disk; returns its name. A failure removes it.

        Raises:
            OutputError: naming ``final_name`` and the system's reason (a full disk).
        """
        check_name(final_name)
        tmp = temp_name(final_name)
        target = self.path / final_name
        try:
            fd = os.open(
                tmp,
                os.O_RDWR | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                0o666,  # less the umask: outputs get the usual permissions
                dir_fd=self.fd,
            )
        except OSError as e:
            raise OutputError(f"{target}: cannot write here ({e.strerror or e})") from e
        try:
            with os.fdopen(fd, "w+b") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.fd)
            if isinstance(e, OSError):
                raise OutputError(f"{target}: writing failed ({e.strerror or e})") from e
            if isinstance(e, RuntimeError):  # pedalboard reports a full disk this way
                raise OutputError(f"{target}: writing failed ({e})") from e
            raise
        return tmp

    def unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def sync(self) -> None:
        with contextlib.suppress(OSError):
            os.fsync(self.fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The folder's lock (``flock`` on the open folder: every process and thread
        that opened the folder itself waits for it)."""
        if fcntl is None:  # pragma: no cover
            with _THREAD_LOCK:
                yield
            return
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)


def check_name(name: str) -> None:
    """Refuse an output name that is not one plain file name (a separator, NUL, ``.``
    or ``..``): outputs never leave their folder.

    Raises:
        OutputError: naming the name.
    """
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or any(ord(c) < 0x20 for c in name)
    ):
        raise OutputError(f"output name {name!r} is not a plain file name")


# --------------------------------------------------------------------------------------
# The journal


@dataclass
class _Entry:
    final: str
    tmp: str
    backup: str | None  # where the old file goes; None: there was no old file


def _backup_name(final: str) -> str:
    p = PurePath(final)
    return f".{p.stem}.{os.getpid()}-{secrets.token_hex(4)}{BACKUP_MARK}{p.suffix}"


def _write_journal(
    folder: OutputFolder, name: str, state: str, entries: Sequence[_Entry], replace: bool
) -> None:
    data = json.dumps(
        {
            "schema": 1,
            "state": state,
            "replace": replace,
            "pid": os.getpid(),
            "entries": [e.__dict__ for e in entries],
        }
    ).encode("utf-8")
    tmp = folder.write_temp(name, lambda f: f.write(data))
    try:
        os.replace(tmp, name, src_dir_fd=folder.fd, dst_dir_fd=folder.fd)
    except BaseException:
        folder.unlink(tmp)
        raise
    folder.sync()


def _same_file(folder: OutputFolder, a: str, b: str) -> bool:
    try:
        sa = os.stat(a, dir_fd=folder.fd, follow_symlinks=False)
        sb = os.stat(b, dir_fd=folder.fd, follow_symlinks=False)
    except OSError:
        return False
    return os.path.samestat(sa, sb)


def _roll_back(folder: OutputFolder, entries: Sequence[_Entry]) -> None:
    """Put the old set back from the state of the files alone (works after a crash)."""
    for e in reversed(entries):
        if e.backup is not None:
            if folder.exists(e.backup):
                os.replace(e.backup, e.final, src_dir_fd=folder.fd, dst_dir_fd=folder.fd)
            # else: the old file was never moved away, it is still under its name
            folder.unlink(e.tmp)
            continue
        if folder.exists(e.tmp):
            # Not moved yet, or linked into place but the temporary not yet removed.
            if folder.exists(e.final) and _same_file(folder, e.final, e.tmp):
                folder.unlink(e.final)
            folder.unlink(e.tmp)
        else:
            # The temporary is gone, so it became the final file (the name did not
            # exist when the set was prepared, under the lock).
            folder.unlink(e.final)
    folder.sync()


def _roll_forward(folder: OutputFolder, entries: Sequence[_Entry]) -> None:
    """Finish a committed set: drop the old files and leftover temporaries."""
    for e in entries:
        if e.backup is not None:
            folder.unlink(e.backup)
        if folder.exists(e.tmp) and _same_file(folder, e.final, e.tmp):
            folder.unlink(e.tmp)  # linked into place, temporary not removed yet
    folder.sync()


def _journal_names(folder: OutputFolder) -> list[str]:
    try:
        names = os.listdir(folder.fd)
    except OSError:
        return []
    return sorted(n for n in names if n.startswith(JOURNAL_PREFIX) and n.endswith(JOURNAL_SUFFIX))


def _repair_locked(folder: OutputFolder) -> list[str]:
    notes: list[str] = []
    for name in _journal_names(folder):
        try:
            fd = os.open(name, os.O_RDONLY | O_NOFOLLOW | O_CLOEXEC, dir_fd=folder.fd)
            with os.fdopen(fd, "rb") as f:
                data = json.loads(f.read(1 << 20))
            entries = [
                _Entry(str(e["final"]), str(e["tmp"]), e.get("backup")) for e in data["entries"]
            ]
            for e in entries:
                for n in (e.final, e.tmp, *([e.backup] if e.backup else [])):
                    check_name(n)
        except (OSError, ValueError, KeyError, TypeError, OutputError) as e:
            notes.append(f"{folder.path / name}: unreadable output journal left alone ({e})")
            continue
        if data.get("state") == "committed":
            _roll_forward(folder, entries)
            notes.append(
                f"finished an interrupted write in {folder.path}: the new set "
                f"({', '.join(e.final for e in entries)}) is complete"
            )
        else:
            _roll_back(folder, entries)
            notes.append(
                f"repaired an interrupted write in {folder.path}: the earlier set "
                f"({', '.join(e.final for e in entries)}) is back"
            )
        folder.unlink(name)
    folder.sync()
    return notes


def repair_folder(folder: OutputFolder) -> list[str]:
    """Finish or undo every interrupted set in ``folder`` and remove stale temporary
    files of dead writers; returns a note per repaired set. Takes the folder's lock."""
    with folder.locked():
        notes = _repair_locked(folder)
        remove_stale_temp_files(folder.fd)
    return notes


def commit_set(
    folder: OutputFolder,
    staged: Sequence[tuple[str, str]],
    *,
    replace: bool,
) -> list[str]:
    """Move staged temporary files to their final names as one change.

    Under the folder's lock: interrupted sets of earlier runs are repaired first, stale
    temporaries removed, then (``replace=False``) the final names must all be free, the
    folder's guard is asked, and the files are moved with the journal described in the
    module docstring. On any exception the temporaries are removed and the old set is
    put back before it propagates, carrying ``outputs_kept``.

    Args:
        staged: (final name, temporary name) pairs, temporaries already written and
            flushed in ``folder``.
        replace: replace existing files (``--force``); otherwise any existing final
            name refuses the whole set.

    Returns:
        notes for the user (repairs of earlier interrupted sets).

    Raises:
        OutputExistsError: a final name exists and ``replace`` is False.
        OutputError: a file could not be moved.
    """
    entries: list[_Entry] = []
    journal = f"{JOURNAL_PREFIX}{os.getpid()}-{secrets.token_hex(4)}{JOURNAL_SUFFIX}"
    had_old = False
    journal_written = False
    committed = False
    try:
        with folder.locked():
            notes = _repair_locked(folder)
            remove_stale_temp_files(folder.fd)
            for final, _ in staged:
                check_name(final)
            existing = [final for final, _ in staged if folder.exists(final)]
            if existing and not replace:
                raise OutputExistsError(
                    f"output file(s) exist already: {', '.join(str(folder.path / n) for n in existing)}; "
                    "pass --force to overwrite"
                )
            for name in existing:
                mode = os.stat(name, dir_fd=folder.fd, follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    raise OutputError(f"{folder.path / name}: a folder has the output's name")
            had_old = bool(existing)
            if folder.guard is not None:
                folder.guard(folder.real_path())
            entries = [
                _Entry(final, tmp, _backup_name(final) if final in existing else None)
                for final, tmp in staged
            ]
            _write_journal(folder, journal, "prepared", entries, replace)
            journal_written = True
            try:
                for e in entries:
                    if e.backup is not None:
                        folder.rename(e.final, e.backup)
                    if replace:
                        folder.rename(e.tmp, e.final)
                    else:
                        _link_no_clobber(folder, e.tmp, e.final)
                folder.sync()
                _write_journal(folder, journal, "committed", entries, replace)  # the commit point
                committed = True
            except BaseException:
                _roll_back(folder, entries)
                folder.unlink(journal)
                journal_written = False
                raise
            _roll_forward(folder, entries)
            folder.unlink(journal)
            folder.sync()
    except BaseException as exc:
        if not journal_written:
            for _, tmp in staged:
                with contextlib.suppress(OSError):
                    folder.unlink(tmp)
        mark_kept(exc, KEPT_NEW if committed else KEPT_OLD if had_old else KEPT_NONE)
        if isinstance(exc, OSError):
            raise mark_kept(
                OutputError(
                    f"{folder.path}: moving the outputs into place failed ({exc.strerror or exc}); "
                    + kept_message(exc.outputs_kept)
                ),  # type: ignore[attr-defined]
                exc.outputs_kept,  # type: ignore[attr-defined]
            ) from exc
        raise
    return notes


def _link_no_clobber(folder: OutputFolder, tmp: str, final: str) -> None:
    try:
        os.link(tmp, final, src_dir_fd=folder.fd, dst_dir_fd=folder.fd, follow_symlinks=False)
    except FileExistsError as e:
        raise OutputExistsError(
            f"{folder.path / final}: exists already; pass --force to overwrite it"
        ) from e
    except (OSError, NotImplementedError):
        # Filesystems without hard links: claim the name exclusively, then rename over
        # the empty placeholder.
        try:
            fd = os.open(
                final, os.O_CREAT | os.O_EXCL | os.O_WRONLY | O_NOFOLLOW, 0o666, dir_fd=folder.fd
            )
        except FileExistsError as e:
            raise OutputExistsError(
                f"{folder.path / final}: exists already; pass --force to overwrite it"
            ) from e
        os.close(fd)
        folder.rename(tmp, final)
        return
    folder.unlink(tmp)


__all__ = [
    "KEPT_NEW",
    "KEPT_NONE",
    "KEPT_OLD",
    "OutputFolder",
    "check_name",
    "commit_set",
    "kept_message",
    "mark_kept",
    "repair_folder",
]
