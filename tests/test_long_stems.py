"""A 3-minute stem: windows continue each other and the joins are inaudible."""

from __future__ import annotations

import numpy as np
import pytest
from noise_signals import clacks

from bnmusic_bridge import RenderRequest, render
from bnmusic_bridge.generators import WindowMusic, register_generator
from bnmusic_bridge.windows import plan_windows

RATE = 44100
MINUTES_3 = 180.0


class _IndependentWindows:
    """Each window gets its own random chord (uncorrelated with its neighbours), so
    the crossfades do real work: the worst case for level jumps at joins."""

    name = "test-independent-windows"

    def generate(self, windows, analysis, settings, progress=None):
        out = []
        for w in windows:
            rng = np.random.default_rng(1000 + w.index)
            t = np.arange(w.num_samples) / RATE
            freqs = 110.0 * 2 ** (rng.integers(0, 24, size=4) / 12)
            phases = rng.uniform(0, 2 * np.pi, size=4)
            x = sum(np.sin(2 * np.pi * f * t + p) for f, p in zip(freqs, phases, strict=True))
            x = x + 0.3 * rng.standard_normal(w.num_samples)
            x = (0.1 * x / np.sqrt(np.mean(x**2))).astype(np.float32)
            out.append(WindowMusic(audio=np.stack([x, x])))
        return out


register_generator("test-independent-windows", lambda **_: _IndependentWindows(), "test only")


def _block_rms_db(x: np.ndarray, block: int) -> np.ndarray:
    n = x.size // block * block
    return 10 * np.log10(np.mean(x[:n].reshape(-1, block) ** 2, axis=1) + 1e-20)


@pytest.fixture(scope="module")
def long_noise() -> np.ndarray:
    return clacks(MINUTES_3, RATE, period_s=0.5)[None, :]


@pytest.mark.slow
def test_three_minute_joins_have_no_level_jump_or_click(long_noise):
    req = RenderRequest(generator="test-independent-windows", seed=0, channels="match")
    res = render(long_noise, RATE, req)
    music = res.music[0].astype(np.float64)
    assert music.shape[0] == long_noise.shape[1]
    plan = plan_windows(long_noise.shape[1], req.overlap_frames)
    assert plan.count >= 35
    block = 4410  # 100 ms
    rms_db = _block_rms_db(music, block)
    interior_spread = np.percentile(rms_db, 99.5) - np.median(rms_db)
    for start in plan.start_samples[1:]:
        fade = music[start : start + plan.overlap_samples]
        before = music[start - RATE : start]
        after = music[start + plan.overlap_samples : start + plan.overlap_samples + RATE]
        fade_db = 10 * np.log10(np.mean(fade**2))
        around_db = 10 * np.log10(0.5 * (np.mean(before**2) + np.mean(after**2)))
        # equal-power crossfade of uncorrelated windows: the join's mean level matches
        assert abs(fade_db - around_db) < 1.0, (start / RATE, fade_db - around_db)
        seg = rms_db[start // block : (start + plan.overlap_samples) // block]
        # and no 100 ms block dips or bumps beyond the stem's own variation
        assert np.max(np.abs(seg - np.median(rms_db))) < interior_spread + 1.0, start / RATE
    # no clicks: the biggest sample-to-sample step near joins is no larger than elsewhere
    step = np.abs(np.diff(music))
    near = np.zeros(step.size, bool)
    for start in plan.start_samples[1:]:
        near[start - 2000 : start + plan.overlap_samples + 2000] = True
    assert step[near].max() <= 1.2 * step[~near].max()


@pytest.mark.slow
def test_three_minute_default_render_is_continuous(long_noise):
    res = render(long_noise, RATE, RenderRequest(seed=3))
    music = res.music[0].astype(np.float64)
    plan = plan_windows(long_noise.shape[1], 64)
    # the embedded generator renders one timeline: overlaps are identical, joins seamless
    assert all(c > 0.999 for c in res.details.join_correlations)
    step = np.abs(np.diff(music))
    near = np.zeros(step.size, bool)
    for start in plan.start_samples[1:]:
        near[start - 2000 : start + plan.overlap_samples + 2000] = True
    assert step[near].max() <= 1.2 * step[~near].max()
    # the lane is sample-accurate and smooth at 44.1 kHz over the whole stem
    gain = res.music_gained[0] / np.where(res.music[0] == 0, 1, res.music[0])
    assert res.music_gained.shape == (2, long_noise.shape[1])  # stereo music for a mono stem
    assert np.all(np.isfinite(gain))


def test_mel_of_long_audio_is_computed_in_blocks_identically():
    from bnmusic_bridge import spectrogram as sp

    rng = np.random.default_rng(5)
    n = (sp.MEL_CHUNK_FRAMES * 2 + 300) * 441 + 17
    x = (0.1 * rng.standard_normal(n)).astype(np.float32)
    blocks = sp.audio_to_mel(x)
    whole = sp._mel_block(x, sp.DEFAULT_PARAMS)
    assert blocks.shape == whole.shape == (512, n // 441 + 1)
    np.testing.assert_allclose(blocks, whole, rtol=1e-5, atol=1e-6 * float(whole.max()))
