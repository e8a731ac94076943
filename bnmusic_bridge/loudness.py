"""Loudness (ITU-R BS.1770-4 through pyloudnorm): the one adapter between this package's
``(channels, samples)`` layout and pyloudnorm's ``(samples, channels)``."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

SILENCE_LUFS = -120.0
"""Reported for audio too quiet for BS.1770's gates (instead of -inf)."""


@lru_cache(maxsize=8)
def _meter(sample_rate_hz: int):  # type: ignore[no-untyped-def]
    import pyloudnorm

    return pyloudnorm.Meter(sample_rate_hz)


def integrated_lufs(audio: np.ndarray, sample_rate_hz: int) -> float:
    """Integrated loudness in LUFS of ``(channels, samples)`` or ``(samples,)`` audio.

    Audio shorter than the 400 ms gating block is measured over a zero-padded block;
    audio that the gates reject entirely gives :data:`SILENCE_LUFS`.
    """
    arr = np.asarray(audio, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    block = int(math.ceil(0.4 * sample_rate_hz)) + 1
    if arr.shape[1] < block:
        arr = np.pad(arr, ((0, 0), (0, block - arr.shape[1])))
    if not np.any(arr):
        return SILENCE_LUFS
    # pyloudnorm warns when the signal clips; the level is still right for our use.
    if arr.shape[0] > 5:
        # pyloudnorm takes at most 5 channels. Every channel weighs 1.0 here (no LFE
        # or surround weighting is known for an arbitrary layout), so the power sum of
        # groups of channels is the loudness of the whole; only the gating is per group.
        groups = [arr[i : i + 5] for i in range(0, arr.shape[0], 5)]
        powers = [10 ** ((_gated(g, sample_rate_hz) + 0.691) / 10) for g in groups]
        total = sum(p for p in powers if p > 0)
        return max(-0.691 + 10 * math.log10(total), SILENCE_LUFS) if total > 0 else SILENCE_LUFS
    return _gated(arr, sample_rate_hz)


def _gated(arr: np.ndarray, sample_rate_hz: int) -> float:
    import warnings

    if not np.any(arr):
        return SILENCE_LUFS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(_meter(int(sample_rate_hz)).integrated_loudness(arr.T))
    if not math.isfinite(value):
        return SILENCE_LUFS
    return max(value, SILENCE_LUFS)

