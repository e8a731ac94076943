"""Window arithmetic and joins."""

from __future__ import annotations

import numpy as np
import pytest

from bnmusic_bridge.grid import WINDOW_SAMPLES
from bnmusic_bridge.windows import crossfade_gains, plan_windows, stitch


def test_single_window_for_short_stems():
    plan = plan_windows(44100, 64)
    assert plan.count == 1 and plan.start_frames == (0,)
    assert plan.padded_samples == WINDOW_SAMPLES == 225_351


def test_exact_fit_and_coverage():
    assert plan_windows(WINDOW_SAMPLES, 64).count == 1
    assert plan_windows(WINDOW_SAMPLES + 1, 64).count == 2
    for n in (300_000, 44100 * 180 + 17):
        plan = plan_windows(n, 64)
        assert plan.step_frames == 448
        last = plan.start_samples[-1] + WINDOW_SAMPLES
        assert last >= n and plan.start_samples[-1] < n
        assert plan.overlap_samples == 63 * 441


@pytest.mark.parametrize("correlated", [False, True])
def test_crossfade_keeps_power(correlated):
    rng = np.random.default_rng(0)
    n = 20_000
    a = rng.standard_normal((1, n)).astype(np.float32)
    b = a.copy() if correlated else rng.standard_normal((1, n)).astype(np.float32)
    fo, fi, r = crossfade_gains(a, b, n)
    mixed = a * fo + b * fi
    # power in 10 blocks along the fade stays within 0.5 dB of the ends'
    blocks = mixed[0].reshape(10, -1)
    p_db = 10 * np.log10(np.mean(blocks**2, axis=1) / np.mean(a**2))
    assert np.max(np.abs(p_db)) < 0.5, p_db
    assert (r > 0.99) if correlated else (abs(r) < 0.05)


def test_stitch_identical_overlaps_is_seamless():
    """Windows cut from one continuous signal join back into exactly that signal."""
    n = 700_000
    t = np.arange(n) / 44100
    full = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None]
    plan = plan_windows(n, 64)
    padded = np.pad(full, ((0, 0), (0, plan.padded_samples - n)))
    pieces = [padded[:, s : s + WINDOW_SAMPLES] for s in plan.start_samples]
    out, corr = stitch(plan, pieces)
    assert out.shape == (1, n)
    assert np.max(np.abs(out - full)) < 1e-5
    assert all(c > 0.99 for c in corr)


def test_stitch_uncorrelated_windows_no_level_jump():
    rng = np.random.default_rng(3)
    n = 44100 * 20
    plan = plan_windows(n, 64)
    pieces = [(0.1 * rng.standard_normal((2, WINDOW_SAMPLES))).astype(np.float32) for _ in plan.start_samples]
    out, _ = stitch(plan, pieces)
    hop = 4410
    rms_db = 20 * np.log10(np.sqrt(np.mean(out[0, : n // hop * hop].reshape(-1, hop) ** 2, axis=1)))
    assert np.max(np.abs(rms_db - np.median(rms_db))) < 1.0
