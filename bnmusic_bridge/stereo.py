"""Stereo width of the music: how wide it is, and a widening that keeps the mono sum.

Two numbers describe a stereo image here, both over the whole signal:

- L/R correlation: ``sum(L * R) / sqrt(sum(L^2) * sum(R^2))`` (1: mono, 0: unrelated
  channels, negative: out of phase);
- side-to-mid level: ``10 * log10(sum(S^2) / sum(M^2))`` dB with ``M = (L + R) / 2`` and
  ``S = (L - R) / 2`` (-inf: mono; 0 dB: as much side as mid).

Real stereo music measured for this package (``benchmarks/results/stereo_width.json``,
``benchmarks/bench_stereo_width.py``): the three excerpts in ``shared/data/music`` are
mono downmixes, so their original stereo Ogg files (Debian packages extremetuxracer-data,
xmoto-data, lincity-ng-data) were measured at the same cut points: correlation 0.806,
0.771, 0.363 and side-to-mid -9.6, -8.9, -3.3 dB; over all 20 music files of those
packages, side-to-mid quartiles -12.4 / -9.8 / -5.0 dB and correlation quartiles 0.52 /
0.81 / 0.89. The interquartile range is :data:`TARGET_SIDE_TO_MID_DB`. Music the
procedural generator gave before widening measured correlation 0.85 to 0.97 and
side-to-mid -11 to -18 dB on three real noise recordings (mono stems), and a stereo stem
got 0.989 / -22.5 dB (issue 15).

:func:`widen` adds a *side* signal made from the mid by a decorrelating filter (a short
burst of exponentially decaying noise, different for each seed: a dense early
reflection pattern, not a Haas delay), high-passed so the bass stays mono. The mid is
left alone, so ``(L + R) / 2`` is exactly the music before widening: the mono fold-down
(a phone, a club's mono sub, a broadcast downmix) hears no comb filter and no level
change, and Stage 2, computed on the mono sum, is unchanged by the widening.
"""

from __future__ import annotations

import math
from typing import Any, overload

import numpy as np

from .scratch import (
    BLOCK_SAMPLES,
    ArrayStore,
    BlockArray,
    DiskArray,
    MemoryStore,
    blocks,
    is_whole,
)

TARGET_SIDE_TO_MID_DB = (-12.4, -5.0)
"""Side-to-mid level range (dB) of the measured real stereo music: its interquartile range."""
DEFAULT_SIDE_TO_MID_DB = -9.0
"""Where :func:`widen` puts music narrower than that (near the measured median, -9.8 dB,
and the two pop excerpts, -9.6 and -8.9 dB; correlation about 0.78)."""
SIDE_HIGHPASS_HZ = 200.0
"""Below this the added side signal is cut: bass stays mono (vinyl, clubs, mono subs)."""
DECORRELATOR_S = 0.03
"""Length of the decorrelating filter, s: under the 50 ms echo threshold, so it widens
without being heard as an echo."""


def width_metrics(audio: np.ndarray) -> tuple[float, float]:
    """``(correlation, side_to_mid_db)`` of ``(2, samples)`` audio (see the module doc).

    A mono (1-channel) signal gives ``(1.0, -inf)``; silence gives ``(1.0, -inf)`` too.
    """
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 1 or x.shape[0] == 1:
        return 1.0, -math.inf
    if x.shape[0] != 2:
        raise ValueError(f"width_metrics needs (2, samples) audio, got shape {x.shape}")
    left, right = x[0], x[1]
    ll, rr = float(np.dot(left, left)), float(np.dot(right, right))
    if ll <= 0 or rr <= 0:
        return 1.0, -math.inf
    corr = float(np.dot(left, right)) / math.sqrt(ll * rr)
    mid = 0.5 * (left + right)
    side = 0.5 * (left - right)
    mm, ss = float(np.dot(mid, mid)), float(np.dot(side, side))
    if mm <= 0:
        return corr, math.inf
    return corr, (10.0 * math.log10(ss / mm) if ss > 0 else -math.inf)


def _decorrelator(sample_rate_hz: int, seed: int) -> np.ndarray:
    """Unit-energy FIR: exponentially decaying noise with a zero mean (no DC, little bass)."""
    n = max(8, int(round(DECORRELATOR_S * sample_rate_hz)))
    rng = np.random.default_rng(0x5EED_57E0 + int(seed))
    t = np.arange(n) / sample_rate_hz
    h = rng.standard_normal(n) * np.exp(-t / (DECORRELATOR_S / 4.0))
    h[0] = 0.0  # no direct path: the side must not be a copy of the mid
    h -= h.mean()
    return h / np.sqrt(np.sum(h * h))


def _highpass_sos(sample_rate_hz: int) -> np.ndarray:
    from scipy.signal import butter

    return butter(2, SIDE_HIGHPASS_HZ, btype="highpass", fs=sample_rate_hz, output="sos")


def _highpass(x: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """Zero-phase 4th-order Butterworth high-pass at :data:`SIDE_HIGHPASS_HZ`."""
    from scipy.signal import sosfiltfilt

    return sosfiltfilt(_highpass_sos(sample_rate_hz), x)


@overload
def widen(
    music: BlockArray,
    sample_rate_hz: int,
    *,
    side_to_mid_db: float = ...,
    seed: int = ...,
    store: None = None,
) -> np.ndarray: ...


@overload
def widen(
    music: BlockArray,
    sample_rate_hz: int,
    *,
    side_to_mid_db: float = ...,
    seed: int = ...,
    store: ArrayStore,
) -> np.ndarray | DiskArray: ...


def widen(
    music: BlockArray,
    sample_rate_hz: int,
    *,
    side_to_mid_db: float = DEFAULT_SIDE_TO_MID_DB,
    seed: int = 0,
    store: ArrayStore | None = None,
) -> np.ndarray | DiskArray:
    """Stereo music at least ``side_to_mid_db`` wide, with its mono sum unchanged.

    Args:
        music: float ``(1, samples)`` or ``(2, samples)``, linear amplitude.
        sample_rate_hz: its rate in Hz.
        side_to_mid_db: the side-to-mid level (dB) to reach; music already at least this
            wide is returned as stereo, unchanged.
        seed: picks the decorrelating filter (same seed, same output).
        store: where the output is allocated (None: a numpy array).

    Returns:
        float32 ``(2, samples)``: ``L = M + S0 + S``, ``R = M - S0 - S`` where ``M`` and
        ``S0`` are the input's mid and side and ``S`` is the added decorrelated side.

    A numpy ``music`` is widened as a whole. Any other block array (a DiskArray, a view)
    longer than :data:`WIDEN_BLOCK_SAMPLES` is widened a block at a time
    (:func:`_widen_blocks`): the same filter, high-pass and scaling, but the powers are
    summed per block and the convolution is done block by block, so the output differs
    from the numpy path by float rounding only (measured: at most 4e-9 on two minutes
    of music peaking at 0.62, a few dozen samples of ten million differing).
    Shorter block arrays are read whole and take the numpy path (identical output).
    """
    if not is_whole(music) and hasattr(music, "shape"):
        n = music.shape[-1]
        if n > WIDEN_BLOCK_SAMPLES:
            return _widen_blocks(
                music, sample_rate_hz, side_to_mid_db, seed, store, WIDEN_BLOCK_SAMPLES
            )
        music = music[0:n] if len(music.shape) == 1 else music[:, 0:n]
    out = _widen_whole(music, sample_rate_hz, side_to_mid_db, seed)
    if store is None or not store.on_disk:
        return out
    stored = store.empty(out.shape, np.float32)
    stored[:, 0 : out.shape[1]] = out
    return stored


def _widen_whole(music: Any, sample_rate_hz: int, side_to_mid_db: float, seed: int) -> np.ndarray:
    """:func:`widen` of an in-memory array, as a whole (the reference numerics)."""
    x = np.asarray(music, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.shape[0] not in (1, 2):
        raise ValueError(f"widen needs 1- or 2-channel music, got shape {x.shape}")
    mid = x.mean(axis=0)
    side0 = 0.5 * (x[0] - x[1]) if x.shape[0] == 2 else np.zeros_like(mid)
    mm = float(np.dot(mid, mid))
    s0 = float(np.dot(side0, side0))
    want = mm * 10.0 ** (side_to_mid_db / 10.0)
    if mm <= 0 or s0 >= want:
        out = x if x.shape[0] == 2 else np.repeat(x, 2, axis=0)
        return out.astype(np.float32)
    from scipy.signal import oaconvolve

    added = oaconvolve(mid, _decorrelator(sample_rate_hz, seed))[: mid.size]
    added = _highpass(added, sample_rate_hz)
    aa = float(np.dot(added, added))
    if aa <= 0:
        return np.stack([mid + side0, mid - side0]).astype(np.float32)
    # The added side is (nearly) uncorrelated with the existing side: powers add.
    added *= math.sqrt(max(want - s0, 0.0) / aa)
    side = side0 + added
    return np.stack([mid + side, mid - side]).astype(np.float32)


WIDEN_BLOCK_SAMPLES = BLOCK_SAMPLES
"""Samples per block when :func:`widen` walks a block array (DiskArray)."""


def _read64(music: BlockArray, a: int, b: int) -> np.ndarray:
    """Samples ``a..b`` of 1- or 2-channel music as float64 ``(channels, b - a)``."""
    part = music[a:b] if len(music.shape) == 1 else music[:, a:b]
    x = np.asarray(part, dtype=np.float64)
    return x[None, :] if x.ndim == 1 else x


def _mid_side(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # the same expressions as _widen_whole, on one block
    mid = x.mean(axis=0)
    side0 = 0.5 * (x[0] - x[1]) if x.shape[0] == 2 else np.zeros_like(mid)
    return mid, side0


def _widen_blocks(
    music: BlockArray,
    sample_rate_hz: int,
    side_to_mid_db: float,
    seed: int,
    store: ArrayStore | None,
    block: int,
) -> np.ndarray | DiskArray:
    """:func:`widen` of a block array, ``block`` samples at a time.

    Passes over the music: (1) the mid and side powers (float64 sums per block);
    (2) the decorrelated mid by overlap-add (each block convolved, its tail carried
    into the next) and the forward pass of the high-pass (filter state carried), kept
    in a float64 scratch array from ``store``; (3) the backward pass of the high-pass,
    last block first (state carried), in place, with the added side's power; (4) the
    output, scaled, written block by block. The zero-phase high-pass pads the ends as
    ``scipy.signal.sosfiltfilt`` does (odd extension), so it gives the same samples as
    one call, to rounding.
    """
    from scipy.signal import oaconvolve, sosfilt, sosfilt_zi

    store = store or MemoryStore()
    n = music.shape[-1]
    channels = 1 if len(music.shape) == 1 else music.shape[0]
    if channels not in (1, 2):
        raise ValueError(f"widen needs 1- or 2-channel music, got shape {music.shape}")
    out = store.empty((2, n), np.float32)
    mm = s0 = 0.0
    for a, b in blocks(n, block):
        mid, side0 = _mid_side(_read64(music, a, b))
        mm += float(np.dot(mid, mid))
        s0 += float(np.dot(side0, side0))
    want = mm * 10.0 ** (side_to_mid_db / 10.0)
    if mm <= 0 or s0 >= want:
        for a, b in blocks(n, block):
            x = _read64(music, a, b)
            out[:, a:b] = (x if x.shape[0] == 2 else np.repeat(x, 2, axis=0)).astype(np.float32)
        return out

    h = _decorrelator(sample_rate_hz, seed)
    sos = _highpass_sos(sample_rate_hz)
    # sosfiltfilt's default padding: odd extension of this many samples at each end
    ntaps = 2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    pad = 3 * ntaps
    zi = sosfilt_zi(sos)
    added = store.empty((n,), np.float64)
    carry = np.zeros(h.size - 1)  # convolution tail reaching into the next block
    last = np.zeros(0)  # the decorrelated mid's last pad + 1 samples so far
    state = None
    for a, b in blocks(n, block):
        mid, _ = _mid_side(_read64(music, a, b))
        conv = oaconvolve(mid, h)
        conv[: carry.size] += carry
        part, carry = conv[: b - a], conv[b - a :]  # carry: always h.size - 1 samples
        if state is None:  # the left end: filter the odd extension first
            left = 2 * part[0] - part[pad:0:-1]
            _, state = sosfilt(sos, left, zi=zi * left[0])
        y, state = sosfilt(sos, part, zi=state)
        added[a:b] = y
        last = np.concatenate([last, part])[-(pad + 1) :]
    right = 2 * last[-1] - last[-2 : -(pad + 2) : -1]
    y_right, _ = sosfilt(sos, right, zi=state)
    # backward pass, over the reversed forward output: the right extension first
    _, state = sosfilt(sos, y_right[::-1], zi=zi * y_right[-1])
    aa = 0.0
    for a, b in reversed(list(blocks(n, block))):
        z, state = sosfilt(sos, added[a:b][::-1], zi=state)
        z = z[::-1]
        aa += float(np.dot(z, z))
        added[a:b] = z
    if aa <= 0:
        for a, b in blocks(n, block):
            mid, side0 = _mid_side(_read64(music, a, b))
            out[:, a:b] = np.stack([mid + side0, mid - side0]).astype(np.float32)
        return out
    scale = math.sqrt(max(want - s0, 0.0) / aa)
    for a, b in blocks(n, block):
        mid, side0 = _mid_side(_read64(music, a, b))
        side = side0 + added[a:b] * scale
        out[:, a:b] = np.stack([mid + side, mid - side]).astype(np.float32)
    return out
