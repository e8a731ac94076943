"""Whole-stem arrays that live on disk, and block-sliceable views of arrays.

A long stem's arrays (its audio, its mel, the music) do not fit the render's memory
budget: an hour of stereo at 48 kHz is 1.4 GB as float32, its mel another 0.7 GB. The
render keeps such arrays in a :class:`DiskArray` (a scratch file, read and written a
block of time at a time with ``pread``/``pwrite``, so that the data sits in the page
cache, which the kernel can drop, and never in the process's memory) and touches them
only through time slices: ``x[:, a:b]`` (``x[a:b]`` for 1-D). Short stems keep plain
numpy arrays; both answer the same slices with the same numbers, so every stage runs
the same code on both.

:func:`store_for` picks the store for a stem (:class:`MemoryStore` or
:class:`DiskStore`); :func:`blocks` walks a length in blocks. The views
(:class:`ChannelMean`, :class:`ZeroPadded`) compute what a stage asks for, slice by
slice, without a whole-stem copy.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # typing.TypeIs is Python 3.13+; only the type checker needs it
    from typing_extensions import TypeIs

BLOCK_SAMPLES = 1 << 18
"""Samples per block when a stage walks audio (5.9 s at 44.1 kHz)."""
BLOCK_FRAMES = 4096
"""10 ms frames per block when a stage walks a mel (41 s)."""
TILE_BYTES = 1 << 18
"""About how many bytes a :class:`DiskArray` keeps together per tile of samples."""
DISK_ABOVE_S = 300.0
"""Stems longer than this (seconds) keep their whole-stem arrays on disk by default."""
SCRATCH_ENV = "BNMUSIC_SCRATCH"
"""``memory``, ``disk`` or ``auto`` (the default): where whole-stem arrays live."""
SCRATCH_DIR_ENV = "BNMUSIC_SCRATCH_DIR"
"""The folder for scratch files (default: the system's temporary folder)."""


class BlockArray(Protocol):
    """What a stage needs of a whole-stem array: its shape, dtype and time slices."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype[Any]: ...

    def __getitem__(self, key: Any) -> np.ndarray: ...


def blocks(length: int, size: int = BLOCK_SAMPLES) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` ranges of at most ``size`` covering ``0..length``."""
    for a in range(0, length, size):
        yield a, min(a + size, length)


def _cols(key: Any, ndim: int, length: int) -> tuple[Any, int, int, bool]:
    """Split an index into (rows, first column, stop column, drop the column axis)."""
    if ndim == 1:
        rows, col = None, key
    else:
        if not isinstance(key, tuple):
            key = (key, slice(None))
        if len(key) != 2:
            raise IndexError(f"DiskArray takes [rows, columns], got {key!r}")
        rows, col = key
    if isinstance(col, slice):
        start, stop, step = col.indices(length)
        if step != 1:
            raise IndexError("DiskArray time slices take no step")
        return rows, start, max(start, stop), False
    if isinstance(col, (int, np.integer)):
        j = int(col) + (length if col < 0 else 0)
        if not 0 <= j < length:
            raise IndexError(f"column {col} out of range for length {length}")
        return rows, j, j + 1, True
    raise IndexError(f"DiskArray takes a time slice or index, got {col!r}")


class DiskArray:
    """A 1-D ``(samples,)`` or 2-D ``(rows, samples)`` array in an anonymous scratch file.

    Stored in tiles of :attr:`tile_columns` samples (each tile holds every row of its
    samples, row after row; about :data:`TILE_BYTES` a tile), so a time slice is one
    contiguous read of the tiles it touches, and turning them into ``(rows, n)`` copies
    runs of a tile's width rather than single values (a plain time-major file would need
    an element-by-element transpose on every read, the costliest part of a long render's
    disk traffic). A 1-row array is a plain contiguous file. The file has no name
    (``O_TMPFILE`` where the system has it): it goes when the array is garbage-collected
    or the process ends, whatever happens.

    Indexing returns contiguous numpy arrays: ``x[:, a:b]``, ``x[r, a:b]``, ``x[:, j]``
    (2-D) and ``x[a:b]``, ``x[j]`` (1-D); assignment takes the same time slices.
    ``np.asarray(x)`` reads it whole (for small arrays and tests).
    """

    max_read_bytes: int | None = None
    """Refuse reads larger than this (None: no limit): tests set it to prove that no stage
    reads a long stem's array whole."""

    def __init__(self, shape: tuple[int, ...], dtype: Any, folder: str | None = None) -> None:
        if len(shape) not in (1, 2) or min(shape) < 0:
            raise ValueError(f"DiskArray shape must be 1-D or 2-D, got {shape}")
        self._shape = tuple(int(s) for s in shape)
        self._dtype = np.dtype(dtype)
        self._rows = 1 if len(shape) == 1 else self._shape[0]
        row_bytes = max(1, self._rows * self._dtype.itemsize)
        self.tile_columns = 1 << max(0, (TILE_BYTES // row_bytes).bit_length() - 1)
        self._tile_bytes = self.tile_columns * row_bytes
        tiles = -(-self._shape[-1] // self.tile_columns)
        # closed with the array (garbage collection), not at the end of a block
        self._file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115
        self._fd = self._file.fileno()
        os.ftruncate(self._fd, tiles * self._tile_bytes)  # sparse: unwritten samples read as 0

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return int(np.prod(self._shape))

    @property
    def nbytes(self) -> int:
        return self.size * self._dtype.itemsize

    def __len__(self) -> int:
        return self._shape[0]

    def _length(self) -> int:
        return self._shape[-1]

    def _pread(self, buf: np.ndarray, offset: int) -> None:
        view = buf.reshape(-1).view(np.uint8).data  # buf's bytes, filled in place
        done = 0
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got <= 0:
                raise OSError(f"scratch file ended early ({done} of {len(view)} bytes)")
            done += got

    def _pwrite(self, buf: np.ndarray, offset: int) -> None:
        data = buf.reshape(-1).view(np.uint8).data
        done = 0
        while done < len(data):
            done += os.pwrite(self._fd, data[done:], offset + done)

    def _tiles(self, first: int, count: int) -> np.ndarray:
        """Tiles ``first..first+count`` as ``(count, rows, tile_columns)``."""
        buf = np.empty((count, self._rows, self.tile_columns), dtype=self._dtype)
        self._pread(buf, first * self._tile_bytes)
        return buf

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start..stop`` as ``(rows, stop - start)`` (``(n,)`` for 1-D)."""
        n = max(0, stop - start)
        limit = DiskArray.max_read_bytes
        if limit is not None and n * self._rows * self._dtype.itemsize > limit:
            raise MemoryError(
                f"a read of {n} samples x {self._rows} rows from {self!r} is over the "
                f"{limit} byte limit (DiskArray.max_read_bytes)"
            )
        if self._rows == 1 or n == 0:
            out = np.empty((self._rows, n), dtype=self._dtype)
            if n:
                self._pread(out, start * self._dtype.itemsize)
            return out[0] if self.ndim == 1 else out
        t = self.tile_columns
        first, last = start // t, (stop - 1) // t
        tiles = self._tiles(first, last - first + 1)
        out = np.empty((self._rows, n), dtype=self._dtype)
        for k in range(tiles.shape[0]):
            lo = max(start, (first + k) * t)
            hi = min(stop, (first + k + 1) * t)
            out[:, lo - start : hi - start] = tiles[k, :, lo - (first + k) * t : hi - (first + k) * t]
        return out

    def write(self, start: int, values: np.ndarray) -> None:
        """Store ``values`` (``(rows, n)``; ``(n,)`` for 1-D) at samples ``start..start+n``."""
        arr = np.asarray(values, dtype=self._dtype)
        arr = arr.reshape(1, -1) if self.ndim == 1 else arr
        n = arr.shape[1] if arr.ndim == 2 else -1
        if arr.ndim != 2 or arr.shape[0] != self._rows or start < 0 or start + n > self._length():
            raise ValueError(
                f"cannot write {np.shape(values)} at {start} into a DiskArray of shape {self._shape}"
            )
        if n == 0:
            return
        if self._rows == 1:
            self._pwrite(np.ascontiguousarray(arr), start * self._dtype.itemsize)
            return
        t = self.tile_columns
        stop = start + n
        first, last = start // t, (stop - 1) // t
        count = last - first + 1
        # tiles the write only partly covers keep their other samples: read them first
        buf = np.empty((count, self._rows, t), dtype=self._dtype)
        if start > first * t:
            self._pread(buf[:1], first * self._tile_bytes)
        if stop < (last + 1) * t and (count > 1 or start == first * t):
            self._pread(buf[-1:], last * self._tile_bytes)
        for k in range(count):
            lo = max(start, (first + k) * t)
            hi = min(stop, (first + k + 1) * t)
            buf[k, :, lo - (first + k) * t : hi - (first + k) * t] = arr[:, lo - start : hi - start]
        self._pwrite(buf, first * self._tile_bytes)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, a, b, drop = _cols(key, self.ndim, self._length())
        part = self.read(a, b)
        if self.ndim == 2:
            if rows is not None and not (isinstance(rows, slice) and rows == slice(None)):
                part = part[rows]
            return part[..., 0] if drop else np.ascontiguousarray(part)
        return part[0] if drop else part

    def __setitem__(self, key: Any, values: Any) -> None:
        rows, a, b, drop = _cols(key, self.ndim, self._length())
        if rows is not None and not (isinstance(rows, slice) and rows == slice(None)):
            raise IndexError("DiskArray assignment takes whole rows: x[:, a:b] = values")
        shape = (b - a,) if self.ndim == 1 else (self._rows, b - a)
        block = np.broadcast_to(
            np.asarray(values, dtype=self._dtype).reshape(
                (self._rows, 1) if drop and self.ndim == 2 else np.shape(values)
            ),
            shape,
        )
        self.write(a, block)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self.read(0, self._length())
        whole = np.ascontiguousarray(whole)
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __reduce__(self) -> tuple[Any, ...]:
        # another process cannot share the file: the array travels by value
        return (np.asarray, (np.asarray(self),))

    def __repr__(self) -> str:
        return f"DiskArray(shape={self._shape}, dtype={self._dtype})"


class ArrayStore(Protocol):
    """Where a render keeps its whole-stem arrays."""

    @property
    def on_disk(self) -> bool: ...

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray | DiskArray: ...


@dataclass(frozen=True)
class MemoryStore:
    """Whole-stem arrays as numpy arrays (short stems)."""

    on_disk: bool = False

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype=dtype)


@dataclass(frozen=True)
class DiskStore:
    """Whole-stem arrays as :class:`DiskArray` scratch files in ``folder``."""

    folder: str | None = None
    on_disk: bool = True

    def empty(self, shape: tuple[int, ...], dtype: Any) -> DiskArray:
        return DiskArray(shape, dtype, self.folder)


def store_for(duration_s: float, choice: str | None = None) -> MemoryStore | DiskStore:
    """The store for a stem of ``duration_s`` seconds.

    ``choice`` (else the ``BNMUSIC_SCRATCH`` environment variable): ``"memory"``,
    ``"disk"``, or ``"auto"`` (disk above :data:`DISK_ABOVE_S`).
    """
    mode = (choice or os.environ.get(SCRATCH_ENV) or "auto").strip().lower()
    if mode not in ("memory", "disk", "auto"):
        raise ValueError(f"{SCRATCH_ENV} must be memory, disk or auto, got {mode!r}")
    if mode == "disk" or (mode == "auto" and duration_s > DISK_ABOVE_S):
        folder = os.environ.get(SCRATCH_DIR_ENV) or None
        return DiskStore(os.path.expanduser(folder) if folder else None)
    return MemoryStore()


def is_whole(x: object) -> TypeIs[np.ndarray]:
    """True for a plain numpy array (whole-array numpy calls are cheap on it); the type
    checker narrows ``x`` to ``np.ndarray`` (and away from it when False)."""
    return isinstance(x, np.ndarray)


class ChannelMean:
    """The mean over channels of ``(channels, samples)`` audio, slice by slice:
    ``view[:, a:b]`` is ``audio[:, a:b].mean(axis=0, keepdims=True)`` (``keepdims``
    False: ``view[a:b]`` is 1-D)."""

    def __init__(self, audio: BlockArray, *, keepdims: bool = True) -> None:
        self.audio = audio
        self.keepdims = keepdims
        n = audio.shape[1]
        self.shape: tuple[int, ...] = (1, n) if keepdims else (n,)
        # what the mean gives (float32 for float32 audio): an empty slice's, nothing read
        self.dtype = audio[:, 0:0].mean(axis=0).dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, a, b, drop = _cols(key, self.ndim, self.shape[-1])
        mix = self.audio[:, a:b].mean(axis=0, keepdims=self.keepdims)
        if self.keepdims:
            if rows is not None and not (isinstance(rows, slice) and rows == slice(None)):
                mix = mix[rows]
            return mix[..., 0] if drop else mix
        return mix[0] if drop else mix

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        mix = self[:, 0 : self.shape[-1]] if self.keepdims else self[0 : self.shape[-1]]
        return mix if dtype is None else mix.astype(dtype)


class ZeroPadded:
    """1-D ``audio`` followed by zeros up to ``length`` samples (or cut to it), slice by
    slice: no padded copy."""

    def __init__(self, audio: BlockArray, length: int) -> None:
        self.audio = audio
        self.shape = (int(length),)
        self.dtype = np.dtype(np.float32)
        self.ndim = 1
        self.size = int(length)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        _, a, b, drop = _cols(key, 1, self.shape[0])
        n = self.audio.shape[-1]
        out = np.zeros(b - a, dtype=np.float32)
        hi = min(b, n)
        if hi > a:
            out[: hi - a] = self.audio[a:hi]
        return out[0] if drop else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[0 : self.shape[0]]
        return out if dtype is None else out.astype(dtype)


class Mapped:
    """``fn`` applied to each time slice of a ``(channels, samples)`` block array:
    ``view[:, a:b]`` is ``fn(source[:, a:b])``, ``rows`` rows (``fn`` must work sample by
    sample: a channel mix, a layout, a gain; never along time)."""

    def __init__(self, source: BlockArray, fn: Any, rows: int, dtype: Any = np.float32) -> None:
        self.source = source
        self.fn = fn
        self.shape = (int(rows), int(source.shape[-1]))
        self.dtype = np.dtype(dtype)
        self.ndim = 2

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, a, b, drop = _cols(key, 2, self.shape[1])
        part = self.fn(self.source[:, a:b])
        if rows is not None and not (isinstance(rows, slice) and rows == slice(None)):
            part = part[rows]
        return part[..., 0] if drop else part

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:, 0 : self.shape[1]]
        return whole if dtype is None else whole.astype(dtype)


class Cropped:
    """The first ``length`` samples (columns) of a block array, slice by slice."""

    def __init__(self, source: BlockArray, length: int) -> None:
        if length > source.shape[-1]:
            raise ValueError(f"cannot crop {source.shape} to {length} columns")
        self.source = source
        self.shape = (*source.shape[:-1], int(length))
        self.dtype = source.dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, a, b, drop = _cols(key, self.ndim, self.shape[-1])
        if self.ndim == 1:
            return self.source[a] if drop else self.source[a:b]
        if rows is None:
            rows = slice(None)
        return self.source[rows, a] if drop else self.source[rows, a:b]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[0 : self.shape[0]] if self.ndim == 1 else self[:, 0 : self.shape[1]]
        return whole if dtype is None else whole.astype(dtype)


def crop(x: Any, length: int) -> Any:
    """``x[..., :length]``: a numpy view for numpy, a :class:`Cropped` view otherwise."""
    if is_whole(x):
        return x[..., :length]
    return x if x.shape[-1] == length else Cropped(x, length)


def copy_into(store: ArrayStore, x: Any, size: int | None = None, dtype: Any = None) -> Any:
    """``x`` (any block array) written block by block (``size`` samples, default
    :data:`BLOCK_SAMPLES` as it is at the call) into a new array of ``store``, as
    ``dtype`` (default: ``x``'s)."""
    out = store.empty(tuple(x.shape), x.dtype if dtype is None else dtype)
    for a, b in blocks(x.shape[-1], BLOCK_SAMPLES if size is None else size):
        if len(x.shape) == 1:
            out[a:b] = x[a:b]
        else:
            out[:, a:b] = x[:, a:b]
    return out
