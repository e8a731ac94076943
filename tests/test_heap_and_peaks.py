"""The allocator setting of one-render processes, and the true-peak meter skipping blocks that cannot reach the peak."""

from __future__ import annotations

import numpy as np

from bnmusic_bridge.heap import keep_freed_memory


def test_keep_freed_memory_answers_and_allocations_still_work() -> None:
    assert keep_freed_memory() in (True, False)
    big = np.ones(40_000_000 // 8)  # above glibc's largest mmap threshold
    assert float(big.sum()) == big.size


def _true_peak_every_block(audio: np.ndarray, rate: int) -> float:
    """The meter before it skipped blocks: every block resampled."""
    import math

    from scipy.signal import resample_poly

    from bnmusic_bridge import metering as m

    x = np.asarray(audio, dtype=np.float64)
    n = x.shape[1]
    factor = max(1, math.ceil(176_400 / rate))
    peak = float(np.max(np.abs(x)))
    for lo in range(0, n, m._TRUE_PEAK_CHUNK):
        hi = min(n, lo + m._TRUE_PEAK_CHUNK)
        a, b = max(0, lo - m._TRUE_PEAK_PAD), min(n, hi + m._TRUE_PEAK_PAD)
        up = resample_poly(x[:, a:b], factor, 1, axis=1)[:, (lo - a) * factor : (hi - a) * factor]
        peak = max(peak, float(np.max(np.abs(up))))
    return 20.0 * math.log10(peak)


def test_true_peak_skipping_quiet_blocks_gives_the_same_peak() -> None:
    from bnmusic_bridge.metering import _TRUE_PEAK_CHUNK, true_peak_dbtp

    rng = np.random.default_rng(7)
    n = 7 * _TRUE_PEAK_CHUNK + 123
    x = (0.01 * rng.standard_normal((2, n))).astype(np.float32)
    # a loud block, a block just under it, and an alternating run (intersample overs)
    x[:, 3 * _TRUE_PEAK_CHUNK : 3 * _TRUE_PEAK_CHUNK + 5000] *= 60.0
    x[0, 5 * _TRUE_PEAK_CHUNK + 10 : 5 * _TRUE_PEAK_CHUNK + 40] = 0.5 * (-1.0) ** np.arange(30)
    x[1, _TRUE_PEAK_CHUNK - 2 : _TRUE_PEAK_CHUNK + 2] = [0.7, 0.7, -0.7, -0.7]  # a block edge
    for rate in (44_100, 96_000):
        assert true_peak_dbtp(x, rate) == _true_peak_every_block(x, rate)
