"""A batch's inputs: files, folders and glob patterns to input files, and a unique
output name per file."""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from ..audio import audio_files_in
from ..grid import AUDIO_EXTENSIONS
from ..request import expand_path


def expand_inputs(
    inputs: Sequence[str | os.PathLike[str]], exclude: Path | None = None
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files named by ``inputs``: files as given, folders searched recursively for audio
    files (:data:`~bnmusic_bridge.grid.AUDIO_EXTENSIONS`, case-insensitive; hidden files
    skipped), and glob patterns (``**`` recurses).

    Args:
        inputs: files, folders or glob patterns.
        exclude: a folder whose files are never inputs (the batch's output folder).

    Returns:
        (absolute file paths without duplicates, in input order; (input, problem) for
        inputs that named nothing).
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()
    ex = exclude.resolve() if exclude is not None else None

    def add(path: Path) -> None:
        p = path.resolve()
        if p in seen or (ex is not None and p.is_relative_to(ex)):
            return
        seen.add(p)
        files.append(p)

    for item in inputs:
        text = str(item)
        p = expand_path(text)
        if p.is_file():
            add(p)
        elif p.is_dir():
            found = [f for f in audio_files_in(p) if ex is None or not f.resolve().is_relative_to(ex)]
            if not found:
                problems.append((text, f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in folder"))
            for f in found:
                add(f)
        elif glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(str(expand_path(text)), recursive=True))
            hits = []
            for m in matches:
                hits.extend([m] if m.is_file() else audio_files_in(m) if m.is_dir() else [])
            if not hits:
                problems.append((text, "no files match this pattern"))
            for f in hits:
                add(f)
        else:
            problems.append((text, "no such file or folder"))
    return files, problems



def stem_names(files: Sequence[Path]) -> list[str]:
    """A unique output name per file: its name without suffix; files that share one get
    their folder's name in front, and a short hash of the path if that still clashes."""
    names = [f.stem for f in files]
    for attempt in range(2):
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        if all(c == 1 for c in counts.values()):
            return names
        clash = {n for n, c in counts.items() if c > 1}
        if attempt == 0:
            names = [
                f"{f.parent.name}__{n}" if n in clash else n
                for f, n in zip(files, names, strict=True)
            ]
        else:
            names = [
                f"{n}-{hashlib.sha1(str(f).encode()).hexdigest()[:8]}" if n in clash else n
                for f, n in zip(files, names, strict=True)
            ]
    return names
