"""The mel's own STFT (reused buffers, magnitudes only where the filterbank reads) equals
``filterbank @ |torch.stft|`` bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnmusic_bridge import spectrogram as sp


def _reference_mel(x: np.ndarray) -> np.ndarray:
    magnitude = torch.from_numpy(sp.linear_magnitude(x, sp.DEFAULT_PARAMS))
    return (sp._mel_filterbank_torch(sp.DEFAULT_PARAMS) @ magnitude).numpy()


@pytest.mark.parametrize("frames", [42, 255, 256, 257, 513, 700])
def test_mel_block_equals_filterbank_times_stft_magnitude(frames: int) -> None:
    rng = np.random.default_rng(frames)
    # a tone and noise: magnitudes near |re| == |im| occur, where abs rounding differs
    n = (frames - 1) * 441 + 13
    t = np.arange(n) / 44_100
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    work = sp._MelWork(sp.DEFAULT_PARAMS)
    np.testing.assert_array_equal(sp._mel_block(x, sp.DEFAULT_PARAMS, work), _reference_mel(x))
    # the buffers, reused for a shorter block, still give the same numbers
    y = x[: n // 2]
    np.testing.assert_array_equal(sp._mel_block(y, sp.DEFAULT_PARAMS, work), _reference_mel(y))


def test_used_bins_cover_the_filterbank() -> None:
    fb = sp.mel_filterbank()
    used = sp._used_bins(sp.DEFAULT_PARAMS)
    assert used % sp._ABS_LANES == 0 or used == fb.shape[1]
    assert not fb[:, used:].any()
