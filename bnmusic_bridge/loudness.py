"""Loudness (ITU-R BS.1770-4, as pyloudnorm meters it), streamed over the samples.

The one adapter between this package's ``(channels, samples)`` layout and BS.1770's
meter. Integrated loudness is measured in two passes, neither over the samples: the
K-weighting filters run over blocks of samples (their state carried from block to block),
and only the mean square of every 400 ms gating block (75 % overlap, 100 ms apart) is
kept; the absolute and relative gates are then two passes over those block energies.
Memory is one block of samples plus ten numbers per second of audio, so an hour-long
stem meters in a few MB.

The values are pyloudnorm's (``pyloudnorm.Meter(rate).integrated_loudness``, K-weighting,
its filter coefficients and its block boundaries) to the last bit: the filters are the
same recursion, each gating block's energy is the same sum over the same filtered samples,
and the gates take the same means (``tests/test_long_stems.py`` compares them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from .scratch import BlockArray

SILENCE_LUFS = -120.0
"""Reported for audio too quiet for BS.1770's gates (instead of -inf)."""
ABSOLUTE_GATE_LUFS = -70.0
"""BS.1770's absolute gate, LUFS."""
RELATIVE_GATE_LU = -10.0
"""BS.1770's relative gate, LU under the loudness of the blocks over the absolute gate."""
CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)
"""BS.1770 channel weights in pyloudnorm's order (L, R, C, Ls, Rs)."""
LOUDNESS_CHUNK_SAMPLES = 1 << 18
"""Samples filtered at a time (about 6 s at 44.1 kHz)."""

_Reader = Callable[[int, int], np.ndarray]


@lru_cache(maxsize=8)
def _meter(sample_rate_hz: int):  # type: ignore[no-untyped-def]
    import pyloudnorm

    return pyloudnorm.Meter(sample_rate_hz)


@lru_cache(maxsize=8)
def _k_weighting(sample_rate_hz: int) -> tuple[tuple[np.ndarray, np.ndarray, float], ...]:
    """The meter's filter stages in order: ``(b, a, passband_gain)`` each."""
    stages = _meter(sample_rate_hz)._filters.values()
    return tuple((np.asarray(f.b), np.asarray(f.a), float(f.passband_gain)) for f in stages)


def integrated_lufs(
    audio: np.ndarray | BlockArray, sample_rate_hz: int, *, offset: np.ndarray | None = None
) -> float:
    """Integrated loudness in LUFS of ``(channels, samples)`` or ``(samples,)`` audio.

    Audio shorter than the 400 ms gating block is measured over a zero-padded block;
    audio that the gates reject entirely gives :data:`SILENCE_LUFS`.

    Args:
        audio: linear amplitude, any float dtype (measured in float64): a numpy array or
            a block array (:class:`~bnmusic_bridge.scratch.DiskArray`, a lazy view),
            which is read only by time slices, a chunk of
            :data:`LOUDNESS_CHUNK_SAMPLES` at a time (the same values either way).
        sample_rate_hz: its rate, Hz.
        offset: optional ``(channels, 1)`` values subtracted from the audio (in the
            audio's dtype, block by block, as ``audio - offset`` would) before
            measuring: a DC offset removed without a copy of the whole stem.
    """
    take, channels, n = _slicer(audio)
    block = int(math.ceil(0.4 * sample_rate_hz)) + 1
    length = max(n, block)  # shorter audio is measured zero-padded to one block

    def read(lo: int, hi: int) -> np.ndarray:
        """Samples ``lo..hi`` as float64 ``(channels, hi - lo)``, zeros past the end."""
        part = take(lo, min(hi, n))
        if offset is not None:
            part = part - offset
        part = np.asarray(part, dtype=np.float64)
        if part.shape[1] < hi - lo:
            part = np.pad(part, ((0, 0), (0, hi - lo - part.shape[1])))
        return part

    if not _any_nonzero(read, length):
        return SILENCE_LUFS
    if channels > 5:
        # pyloudnorm takes at most 5 channels. Every channel weighs 1.0 here (no LFE
        # or surround weighting is known for an arbitrary layout), so the power sum of
        # groups of channels is the loudness of the whole; only the gating is per group.
        powers = []
        for first in range(0, channels, 5):
            rows = slice(first, min(first + 5, channels))

            def group(lo: int, hi: int, rows: slice = rows) -> np.ndarray:
                return read(lo, hi)[rows]

            powers.append(10 ** ((_gated(group, length, sample_rate_hz) + 0.691) / 10))
        total = sum(p for p in powers if p > 0)
        return max(-0.691 + 10 * math.log10(total), SILENCE_LUFS) if total > 0 else SILENCE_LUFS
    return _gated(read, length, sample_rate_hz)


def _slicer(audio: np.ndarray | BlockArray) -> tuple[_Reader, int, int]:
    """``(take, channels, samples)``: ``take(lo, hi)`` gives samples ``lo..hi`` of
    ``audio`` as ``(channels, hi - lo)`` in its own dtype. A numpy array (or a list) is
    taken whole with ``np.asarray``; a block array is only ever sliced in time."""
    if isinstance(audio, np.ndarray) or not hasattr(audio, "shape"):
        arr = np.asarray(audio)
        if arr.ndim == 1:
            arr = arr[None, :]
        return (lambda lo, hi: arr[:, lo:hi]), arr.shape[0], arr.shape[1]
    if len(audio.shape) == 1:
        return (lambda lo, hi: audio[lo:hi][None, :]), 1, audio.shape[0]
    return (lambda lo, hi: audio[:, lo:hi]), audio.shape[0], audio.shape[1]


def _any_nonzero(read: _Reader, length: int) -> bool:
    return any(
        np.any(read(lo, min(lo + LOUDNESS_CHUNK_SAMPLES, length)))
        for lo in range(0, length, LOUDNESS_CHUNK_SAMPLES)
    )


def _block_bounds(length: int, sample_rate_hz: int, block_s: float, step: float) -> np.ndarray:
    """Sample bounds ``[lo, hi)`` of every gating block, int ``(blocks, 2)``: the
    meter's own arithmetic (block count rounded, bounds truncated), so the blocks are
    its blocks to the sample."""
    duration = length / sample_rate_hz
    count = int(np.round((duration - block_s) / (block_s * step))) + 1
    j = np.arange(count, dtype=np.float64)
    lo = (block_s * (j * step) * sample_rate_hz).astype(np.int64)
    hi = (block_s * (j * step + 1.0) * sample_rate_hz).astype(np.int64)
    return np.stack([lo, hi], axis=1)


def block_energies(read: _Reader, length: int, sample_rate_hz: int) -> np.ndarray:
    """Pass 1: the mean square of the K-weighted audio in every gating block.

    Args:
        read: ``read(lo, hi)`` gives samples ``lo..hi`` as float64 ``(channels, hi - lo)``
            (at most 5 channels).
        length: samples in all (at least one gating block).
        sample_rate_hz: the rate, Hz.

    Returns:
        float64 ``(channels, blocks)``: per channel, the filtered signal's mean square
        over each 400 ms block (the sum over the block divided by the block's nominal
        length, as the meter does).
    """
    from scipy.signal import lfilter

    meter = _meter(sample_rate_hz)
    block_s, step = float(meter.block_size), 1.0 - float(meter.overlap)
    bounds = _block_bounds(length, sample_rate_hz, block_s, step)
    stages = _k_weighting(sample_rate_hz)
    scale = 1.0 / (block_s * sample_rate_hz)
    first = read(0, min(LOUDNESS_CHUNK_SAMPLES, length))
    channels = first.shape[0]
    state = [[np.zeros(max(len(a), len(b)) - 1) for b, a, _ in stages] for _ in range(channels)]
    energies = np.zeros((channels, bounds.shape[0]))
    kept = np.zeros((channels, 0))  # filtered samples from kept_from on
    kept_from = 0
    done = 0  # blocks measured
    for lo in range(0, length, LOUDNESS_CHUNK_SAMPLES):
        hi = min(lo + LOUDNESS_CHUNK_SAMPLES, length)
        x = first if lo == 0 else read(lo, hi)
        filtered = np.empty_like(x)
        for ch in range(channels):
            y = x[ch]
            for k, (b, a, gain) in enumerate(stages):
                y, state[ch][k] = lfilter(b, a, y, zi=state[ch][k])
                y = gain * y
            filtered[ch] = y
        kept = np.concatenate([kept, filtered], axis=1)
        # every block that ends in what is filtered so far (the meter cuts the last
        # block at the end of the audio)
        while done < bounds.shape[0] and (bounds[done, 1] <= hi or hi == length):
            b_lo, b_hi = int(bounds[done, 0]), int(min(bounds[done, 1], length))
            seg = kept[:, b_lo - kept_from : b_hi - kept_from]
            for ch in range(channels):
                energies[ch, done] = scale * np.sum(np.square(seg[ch]))
            done += 1
        if done < bounds.shape[0]:
            drop = int(bounds[done, 0]) - kept_from
            if drop > 0:
                kept = kept[:, drop:]
                kept_from += drop
    return energies


def gated_loudness(energies: np.ndarray) -> float:
    """Pass 2: integrated loudness (LUFS) from the gating blocks' energies.

    Args:
        energies: float64 ``(channels, blocks)`` from :func:`block_energies`.

    Returns:
        BS.1770-4's gated loudness: the blocks over the absolute gate (-70 LUFS), then
        over the relative gate (10 LU under those blocks' loudness), averaged per channel
        and weighted; :data:`SILENCE_LUFS` when no block passes.
    """
    channels = energies.shape[0]
    weights = CHANNEL_WEIGHTS[:channels]

    def loudness(z: np.ndarray) -> np.ndarray:
        total = np.zeros(z.shape[1:])
        for ch in range(channels):
            total = total + weights[ch] * z[ch]
        with np.errstate(divide="ignore"):
            return -0.691 + 10.0 * np.log10(total)

    per_block = loudness(energies)
    over_abs = per_block >= ABSOLUTE_GATE_LUFS
    if not over_abs.any():
        return SILENCE_LUFS
    relative = float(loudness(energies[:, over_abs].mean(axis=1))) + RELATIVE_GATE_LU
    gated = (per_block > relative) & (per_block > ABSOLUTE_GATE_LUFS)
    if not gated.any():
        return SILENCE_LUFS
    value = float(loudness(energies[:, gated].mean(axis=1)))
    if not math.isfinite(value):
        return SILENCE_LUFS
    return max(value, SILENCE_LUFS)


def _gated(read: _Reader, length: int, sample_rate_hz: int) -> float:
    if not _any_nonzero(read, length):
        return SILENCE_LUFS
    return gated_loudness(block_energies(read, length, int(sample_rate_hz)))
