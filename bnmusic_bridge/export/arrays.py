"""Reading a result's whole-stem arrays for the exporters, a block of time at a time.

A long stem's :class:`~bnmusic_bridge.result.RenderResult` holds its music and its
analysis mels and mask as :class:`~bnmusic_bridge.scratch.DiskArray` scratch files;
``np.asarray`` of one would read it whole. The exporters need only small reductions of
them (a count per frame, a share, every ``step``-th column for a picture), which these
functions compute from time slices ``x[:, a:b]``. For numpy arrays they give exactly the
numbers of the whole-array numpy expressions they replace (integer counts; picked
columns are copied, not computed).
"""

from __future__ import annotations

import numpy as np

from ..scratch import BLOCK_FRAMES, BlockArray, blocks


def mask_counts(mask: np.ndarray | BlockArray) -> np.ndarray:
    """High-energy bins per frame of a ``(bands, frames)`` mask: int64 ``(frames,)``,
    ``np.asarray(mask, dtype=bool).sum(axis=0)`` read in blocks of frames."""
    frames = int(mask.shape[1])
    out = np.zeros(frames, dtype=np.int64)
    for a, b in blocks(frames, BLOCK_FRAMES):
        out[a:b] = np.asarray(mask[:, a:b], dtype=bool).sum(axis=0)
    return out


def mask_share(mask: np.ndarray | BlockArray, counts: np.ndarray | None = None) -> float:
    """Share (0..1) of true bins in a bool ``(bands, frames)`` mask: ``mask.mean()``,
    counted block by block (the count is exact, so the share is the same float).
    ``counts``: :func:`mask_counts` of ``mask`` when the caller has it already."""
    size = int(np.prod(mask.shape))
    if size == 0:
        return float("nan")  # what mean() of an empty array gives (less its warning)
    total = (mask_counts(mask) if counts is None else counts).sum()
    return float(np.float64(total) / size)


def every_nth_column(x: np.ndarray | BlockArray, step: int) -> np.ndarray:
    """``x[:, ::step]`` of a ``(rows, frames)`` array, read in blocks of frames (a copy,
    in ``x``'s dtype)."""
    rows, frames = int(x.shape[0]), int(x.shape[1])
    out = np.empty((rows, len(range(0, frames, step))), dtype=x.dtype)
    for a, b in blocks(frames, BLOCK_FRAMES):
        first = -(-a // step) * step  # the first picked frame at or after a
        if first < b:
            out[:, first // step : (b - 1) // step + 1] = x[:, a:b][:, first - a :: step]
    return out
