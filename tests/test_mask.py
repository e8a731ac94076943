"""The high-energy mask M and its enlargement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bnmusic_bridge.errors import ParameterError
from bnmusic_bridge.mask import enlarge_mask, high_energy_mask, remove_specks


def test_marks_the_loudest_share():
    rng = np.random.default_rng(1)
    mel = rng.random((64, 100)).astype(np.float32) + 0.01
    mel[10:18, :] += 5.0  # a loud band: 12.5 % of the area
    m = high_energy_mask(mel, 0.15)
    assert 0.12 <= m.mean() <= 0.151
    assert m[10:18].all()  # the loud band is inside


def test_silence_and_padding_never_enter():
    mel = np.zeros((32, 50), np.float32)
    assert not high_energy_mask(mel, 0.15).any()
    mel[:, :30] = 1.0 + np.random.default_rng(0).random((32, 30))
    m = high_energy_mask(mel, 0.15, valid_frames=30)
    assert not m[:, 30:].any()


def test_per_window_thresholds_follow_level_changes():
    rng = np.random.default_rng(2)
    mel = (0.05 + 0.01 * rng.random((64, 1024))).astype(np.float32)
    mel[5:13, :512] += 1.0  # the quiet half's loud band
    mel[:, 512:] *= 100.0
    mel[40:48, 512:] += 100.0  # the loud half's loud band
    whole = high_energy_mask(mel, 0.15)
    assert not whole[5:13, :256].any()  # a single threshold ignores the quiet half
    windowed = high_energy_mask(mel, 0.15, window_starts=[0, 512], window_frames=512)
    assert windowed[5:13, :256].all()  # per-window thresholds give each part its core
    assert windowed[40:48, 768:].all()


def test_specks_removed_enlargement_grows():
    m = np.zeros((40, 40), bool)
    m[5, 5] = True  # a lone pixel
    m[20:26, 20:26] = True
    cleaned = remove_specks(m)
    assert not cleaned[5, 5] and cleaned[20:26, 20:26].all()
    big = enlarge_mask(cleaned, 2, min_share=0.0)
    assert big[18:28, 18:28].all() and big.sum() == 100
    grown = enlarge_mask(cleaned, 2, min_share=0.5, max_enlarge_px=5)
    assert grown.sum() > big.sum()
    assert not enlarge_mask(np.zeros((8, 8), bool)).any()


def test_mask_area_range():
    with pytest.raises(ParameterError, match="mask_area=0.6 is out of range"):
        high_energy_mask(np.ones((4, 4), np.float32), 0.6)


def test_enlargement_is_slight_and_only_where_the_core_is_small():
    m = np.zeros((64, 64), bool)
    m[10:20, 10:20] = True  # 100 px: large enough to condition on, left as it is
    m[40:42, 40:43] = True  # 6 px: too small, grows by one pixel
    m[50, 5] = m[50, 6] = True  # 2 px
    e = enlarge_mask(m)
    np.testing.assert_array_equal(e[5:25, 5:25], m[5:25, 5:25])
    assert e[39:43, 39:44].all() and e.sum() == 100 + 4 * 5 + 3 * 4
    assert (e & m).sum() == m.sum()  # a superset
    # A larger threshold or step count is the caller's choice.
    assert enlarge_mask(m, 1, small_region_px=101)[9:21, 9:21].all()


SHARED_NOISE = Path(__file__).resolve().parents[2] / "shared" / "data" / "noise"


@pytest.mark.skipif(not SHARED_NOISE.is_dir(), reason="../shared/data absent")
def test_enlarged_share_stays_near_the_core_on_real_noise():
    # On real noise most core regions are a few pixels. Measured over the ten recordings'
    # first windows: the enlarged core is 1.11 to 1.76 times the core; the old rule
    # (2 pixels everywhere, more under 8 %) made it 1.61 to 3.11 times. Checked here on
    # the extremes (sea waves, vacuum cleaner: most specks; clock tick: fewest).
    from bnmusic_bridge import spectrogram as spec
    from bnmusic_bridge.audio import read_stem, to_analysis_mono

    names = ("esc10_sea_waves_2-102852-A", "ambie_vacuum_cleaner_a", "esc10_clock_tick_1-42139-A")
    for path in (SHARED_NOISE / f"{name}.wav" for name in names):
        mono = to_analysis_mono(read_stem(path))[: 511 * 441]
        core = high_energy_mask(spec.audio_to_mel(mono), 0.15)
        grown = enlarge_mask(core)
        old_rule = enlarge_mask(core, 2, small_region_px=10**9, min_share=0.08)
        assert core.mean() < grown.mean() < 1.8 * core.mean(), path.name
        assert old_rule.mean() > grown.mean(), path.name
