"""The high-energy mask M of the noise (BNMusic preprocessing).

M marks the loudest ``mask_area`` share of each Riffusion image of the noise: the image's
smallest pixel values, which are the largest mel magnitudes because the encoding is
monotone. On a long stem the threshold is the one of the image window the frame is
centred in (interpolated in dB between window centres), so every generation window
sees the paper's per-image mask and overlapping windows agree.

Arrays here are in *mel orientation*: ``(512, frames)``, row 0 = lowest mel band.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import overload

import numpy as np
from scipy import ndimage

from . import scratch
from .errors import ParameterError
from .grid import IMAGE_FRAMES
from .request import FIELD_SPECS

FLOOR_DB = -80.0
"""Bins more than this far below the stem's loudest bin never enter M (silence)."""
MIN_COMPONENT_PX = 4
"""Connected high-energy regions smaller than this many pixels are isolated specks."""
ENLARGE_PX = 1
"""Pixels a small core region grows by for the inpainting step: the paper enlarges the
mask "slightly". Measured on every window of the ten recordings in
``../shared/data/noise`` (mask_area 0.15; ``benchmarks/bench_riffusion_masks.py``): the
enlarged core covers a median 19.5 % of the image (3.5 to 24.9 %) where the core covers
14.4 %; the rule before (2 pixels everywhere, more while under 8 %) gave 32.6 % (8.2 to
43.9 %)."""
SMALL_REGION_PX = 64
"""A connected core region (8-connected) of fewer pixels than this is "too small to
condition on" and is the only kind that grows: 64 pixels is one latent block of Stable
Diffusion's VAE (8 x 8 pixels), the smallest area the model paints as a unit. Larger
regions are repainted exactly as M marks them."""
MAX_ENLARGE_PX = 8
"""Upper bound of the optional whole-mask growth of :func:`enlarge_mask` (``min_share``)."""


def _to_db(mel: np.ndarray) -> np.ndarray:
    return 20.0 * np.log10(np.maximum(mel, 1e-12))


@overload
def high_energy_mask(
    mel: np.ndarray | scratch.BlockArray,
    mask_area: float,
    *,
    window_starts: list[int] | None = ...,
    window_frames: int = ...,
    valid_frames: int | None = ...,
    store: None = None,
) -> np.ndarray: ...


@overload
def high_energy_mask(
    mel: np.ndarray | scratch.BlockArray,
    mask_area: float,
    *,
    window_starts: list[int] | None = ...,
    window_frames: int = ...,
    valid_frames: int | None = ...,
    store: scratch.ArrayStore,
) -> np.ndarray | scratch.DiskArray: ...


def high_energy_mask(
    mel: np.ndarray | scratch.BlockArray,
    mask_area: float,
    *,
    window_starts: list[int] | None = None,
    window_frames: int = IMAGE_FRAMES,
    valid_frames: int | None = None,
    store: scratch.ArrayStore | None = None,
) -> np.ndarray | scratch.DiskArray:
    """The loudest ``mask_area`` share of the noise's mel image, cleaned of specks.

    Args:
        mel: ``(n_mels, frames)`` linear mel magnitude of the noise, mel orientation: a
            numpy array, or a block array (:class:`~bnmusic_bridge.scratch.DiskArray`)
            read only by slices of frames (each window's, then
            :data:`~bnmusic_bridge.scratch.BLOCK_FRAMES` at a time).
        mask_area: target share of each window's area (the range of
            ``RenderRequest.mask_area``); after removing specks smaller than
            :data:`MIN_COMPONENT_PX` the share can be slightly lower.
        window_starts: first frame of each image window; None = one window over all.
        window_frames: frames per window (one Riffusion image: ``grid.IMAGE_FRAMES``).
        valid_frames: frames that hold real audio (the rest is padding and is never
            in M); None = all.
        store: where the mask goes (``store.empty``); None: a numpy array. A numpy
            ``mel`` without a store takes the whole-array path; otherwise the mask is
            made a block of frames at a time (the same pixels: see
            :func:`_mask_in_blocks`).

    Returns:
        bool ``(n_mels, frames)``, True on the high-energy core. Empty when the noise is
        silent.
    """
    spec = FIELD_SPECS["mask_area"]
    assert spec.low is not None and spec.high is not None  # the request gives it a range
    if not spec.low <= mask_area <= spec.high:
        raise ParameterError(
            f"mask_area={mask_area} is out of range; allowed {spec.allowed_text()}"
        )
    if store is not None or not isinstance(mel, np.ndarray):
        return _mask_in_blocks(
            mel,
            mask_area,
            window_starts=window_starts,
            window_frames=window_frames,
            valid_frames=valid_frames,
            store=store,
        )
    n_mels, frames = mel.shape
    valid = frames if valid_frames is None else min(valid_frames, frames)
    if valid <= 0 or float(mel[:, :valid].max()) <= 0.0:
        return np.zeros_like(mel, dtype=bool)
    db = _to_db(mel)
    peak_db = float(db[:, :valid].max()) if valid > 0 else -240.0
    floor_db = peak_db + FLOOR_DB
    per_frame = _frame_thresholds_db(
        lambda a, b: db[:, a:b], mask_area, window_starts, window_frames, valid, frames
    )
    if per_frame is None:
        return np.zeros_like(mel, dtype=bool)
    core = (db >= per_frame[None, :]) & (db > floor_db)
    core[:, valid:] = False
    return remove_specks(core)


def _mask_in_blocks(
    mel: scratch.BlockArray,
    mask_area: float,
    *,
    window_starts: list[int] | None,
    window_frames: int,
    valid_frames: int | None,
    store: scratch.ArrayStore | None,
) -> np.ndarray | scratch.DiskArray:
    """:func:`high_energy_mask` a block of :data:`~bnmusic_bridge.scratch.BLOCK_FRAMES`
    frames at a time, into ``store``: the same pixels as the whole-array path.

    The peak and the windows' thresholds are the same values (the maximum, and each
    window's quantile over the window's own frames). Specks are removed per block over
    the block widened by ``min_pixels`` frames on each side: a region with fewer than
    ``min_pixels`` pixels spans fewer frames than that, so it lies whole in the widened
    block, and a region that leaves the widened block has at least ``min_pixels``
    pixels inside it (one per frame on its way out); either way each pixel of the block
    gets the whole-array verdict.

    Without ``window_starts`` the one window is all valid frames, and its quantile is
    taken over them read whole (the pipeline always passes its windows).
    """
    n_mels, frames = mel.shape
    valid = frames if valid_frames is None else min(valid_frames, frames)
    out = (store or scratch.MemoryStore()).empty((n_mels, frames), bool)
    peak, peak_db = 0.0, -np.inf
    for a, b in scratch.blocks(valid, scratch.BLOCK_FRAMES):
        part = mel[:, a:b]
        peak = max(peak, float(part.max()))
        peak_db = max(peak_db, float(_to_db(part).max()))
    if valid <= 0 or peak <= 0.0:
        return _fill(out, False)
    floor_db = peak_db + FLOOR_DB
    per_frame = _frame_thresholds_db(
        lambda a, b: _to_db(mel[:, a:b]), mask_area, window_starts, window_frames, valid, frames
    )
    if per_frame is None:
        return _fill(out, False)
    reach = MIN_COMPONENT_PX
    for a, b in scratch.blocks(frames, scratch.BLOCK_FRAMES):
        lo, hi = max(0, a - reach), min(frames, b + reach)
        db = _to_db(mel[:, lo:hi])
        core = (db >= per_frame[None, lo:hi]) & (db > floor_db)
        core[:, max(0, valid - lo) :] = False
        out[:, a:b] = remove_specks(core)[:, a - lo : b - lo]
    return out


def _frame_thresholds_db(
    db_of: Callable[[int, int], np.ndarray],
    mask_area: float,
    window_starts: list[int] | None,
    window_frames: int,
    valid: int,
    frames: int,
) -> np.ndarray | None:
    """Each frame's threshold, dB: every window's ``1 - mask_area`` quantile of its valid
    frames' dB (``db_of(a, b)``: frames ``a..b`` in dB), interpolated between the
    windows' centres; without ``window_starts`` one window of all frames. None when no
    window has a valid frame."""
    if window_starts is None:
        window_starts = [0]
        window_frames = frames
    centres, thresholds = [], []
    for start in window_starts:
        stop = min(start + window_frames, valid)
        if stop <= start:
            continue
        thresholds.append(float(np.quantile(db_of(start, stop), 1.0 - mask_area)))
        centres.append(0.5 * (start + stop - 1))
    if not thresholds:
        return None
    return np.interp(np.arange(frames), centres, thresholds).astype(np.float32)


def _fill(out: np.ndarray | scratch.DiskArray, value: bool) -> np.ndarray | scratch.DiskArray:
    """``out`` (``(rows, frames)``) set to ``value``, a block of frames at a time."""
    for a, b in scratch.blocks(out.shape[1], scratch.BLOCK_FRAMES):
        out[:, a:b] = value
    return out


def remove_specks(mask: np.ndarray, min_pixels: int = MIN_COMPONENT_PX) -> np.ndarray:
    """Drop 8-connected regions of fewer than ``min_pixels`` pixels."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def enlarge_mask(
    mask: np.ndarray,
    enlarge_px: int = ENLARGE_PX,
    *,
    small_region_px: int = SMALL_REGION_PX,
    min_share: float = 0.0,
    max_enlarge_px: int = MAX_ENLARGE_PX,
) -> np.ndarray:
    """Grow the core for the inpainting step, as the paper does: slightly, and only where
    the core is small.

    Every 8-connected region of ``mask`` with fewer than ``small_region_px`` pixels grows
    by ``enlarge_px`` pixels (3 x 3 dilation steps); larger regions stay as they are.
    ``min_share`` > 0 (off by default) then keeps growing the whole mask one pixel at a
    time while it covers less than that share of the image, up to ``max_enlarge_px``
    pixels in all. An empty mask stays empty.

    Args:
        mask: bool ``(rows, columns)``, True on the core (either orientation).
        enlarge_px: pixels a small region grows by.
        small_region_px: regions with fewer pixels than this grow.
        min_share: share of the image (0..1) the result should at least cover.
        max_enlarge_px: most pixels the ``min_share`` growth may add.

    Returns:
        bool, the shape of ``mask``; always a superset of it.
    """
    if not mask.any():
        return mask.copy()
    square = np.ones((3, 3), dtype=bool)
    grown = mask.copy()
    if enlarge_px > 0:
        labels, count = ndimage.label(mask, structure=square)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        small = sizes < small_region_px
        small[0] = False
        if small.any():
            grown |= ndimage.binary_dilation(small[labels], square, iterations=enlarge_px)
    steps = enlarge_px
    while grown.mean() < min_share and steps < max_enlarge_px:
        grown = ndimage.binary_dilation(grown, square)
        steps += 1
    return grown
