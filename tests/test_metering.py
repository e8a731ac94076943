"""Coverage of the high-energy mask, NMR and relative disturbed frames."""

from __future__ import annotations

import numpy as np
import pytest

from bnmusic_bridge import metering as me
from bnmusic_bridge.errors import ParameterError
from bnmusic_bridge.masking import MaskingField, smr_field, spreading_field


def _case(frames: int = 50, bands: int = 512, seed: int = 0):
    rng = np.random.default_rng(seed)
    noise = (10.0 + 100.0 * rng.random((bands, frames)) ** 2).astype(np.float32)
    music = (50.0 * rng.random((bands, frames))).astype(np.float32)
    mask = noise >= np.quantile(noise, 0.85)
    return noise, music, mask


@pytest.mark.parametrize("model", ["smr", "spreading"])
def test_coverage_is_monotone_and_spans_0_to_1(model):
    noise, music, mask = _case()
    music += 1.0  # capacity > 0 everywhere
    field = smr_field(noise, music, 21.0) if model == "smr" else spreading_field(noise, music)
    needs = mask & (field.required > 0)
    assert needs.any()
    shares = [me.coverage(field, needs, g)[0] for g in np.geomspace(1e-3, 1e6, 40)]
    assert np.all(np.diff(shares) >= 0)
    assert me.coverage(field, needs, 0.0)[0] == 0.0
    assert me.coverage(field, needs, 1e9)[0] == 1.0
    mid = float(np.median(field.required_gain()[needs]))
    assert 0.5 <= me.coverage(field, needs, mid)[0] < 0.6


def test_per_frame_coverage_and_gain_per_frame():
    noise, music, mask = _case(frames=4, bands=8)
    field = smr_field(noise, music, 21.0)
    mask[:, 3] = False  # a frame without mask bins
    overall, per_frame = me.coverage(field, mask, 3.0)
    assert np.isnan(per_frame[3]) and np.all(np.isfinite(per_frame[:3]))
    same = me.coverage(field, mask, np.full(4, 3.0))
    assert same[0] == overall
    np.testing.assert_array_equal(same[1], per_frame)
    gains = np.array([0.0, 1e9, 0.0, 0.0])  # only frame 1 is fully masked
    overall, per_frame = me.coverage(field, mask, gains)
    np.testing.assert_array_equal(per_frame[:3], [0.0, 1.0, 0.0])
    assert overall == pytest.approx(mask[:, 1].sum() / mask.sum())
    empty = np.zeros_like(mask)
    assert me.coverage(field, empty, 1.0)[0] == 1.0
    with pytest.raises(ParameterError, match=r"\(3,\)"):
        me.coverage(field, mask, np.ones(3))
    with pytest.raises(ParameterError, match="bool"):
        me.coverage(field, mask.astype(np.float32), 1.0)


def test_nmr_equals_smr_margin_for_matched_music_and_falls_20_db_per_decade():
    noise, _, _ = _case()
    field = smr_field(noise, noise.copy(), 21.0)  # music = noise: it sits 21 dB short
    total, per_frame = me.nmr_db(noise, field, 1.0)
    # every band sits 21 dB over its mask except the few under ~20 Hz, where the
    # threshold of hearing dominates, which pulls the mean over 512 bands a little down
    assert total == pytest.approx(21.0, abs=0.15)
    np.testing.assert_allclose(per_frame, total, atol=0.05)
    louder, _ = me.nmr_db(noise, field, 10.0)
    assert total - louder == pytest.approx(20.0, abs=0.05)


def test_nmr_is_finite_under_silent_music_and_disturbed_frames_follow_gain():
    noise, music, _ = _case()
    music[:, :10] = 0.0  # silent music: the ATH keeps the threshold above 0
    field = spreading_field(noise, music)
    total, per_frame = me.nmr_db(noise, field, 1.0)
    assert np.isfinite(total) and np.all(np.isfinite(per_frame))
    assert np.all(per_frame[:10] > per_frame[10:].max())
    assert me.relative_disturbed_frames(noise, field, 1e-3) == 1.0
    loud = MaskingField(field.required, field.capacity + 1.0, "spreading")
    assert me.relative_disturbed_frames(noise, loud, 1e9) == 0.0
    share = me.relative_disturbed_frames(noise, field, 1e9)
    assert share == pytest.approx(0.2)  # the 10 silent frames of 50 stay disturbed
