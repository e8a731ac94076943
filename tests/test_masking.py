"""Masking fields: the paper's fixed SMR and psychoacoustic model 1 on the mel grid."""

from __future__ import annotations

import numpy as np
import pytest

from bnmusic_bridge import masking as mk
from bnmusic_bridge.errors import ParameterError
from bnmusic_bridge.grid import SAMPLE_RATE_HZ
from bnmusic_bridge.request import field_default
from bnmusic_bridge.spectrogram import audio_to_mel, mel_center_hz

SMR_DB = field_default("smr_db")
RNG = np.random.default_rng(7)


def _sine(freq_hz: float, amplitude: float, seconds: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _band_of(freq_hz: float) -> int:
    return int(np.argmin(np.abs(mel_center_hz() - freq_hz)))


def test_smr_threshold_is_exactly_21_db_above_the_noise():
    noise = (RNG.random((512, 20)) + 0.01).astype(np.float32)
    music = RNG.random((512, 20)).astype(np.float32)
    field = mk.smr_field(noise, music, 21.0)
    assert field.model == "smr"
    ratio_db = 20 * np.log10(field.required.astype(np.float64) / noise)
    np.testing.assert_allclose(ratio_db, 21.0, atol=1e-5)
    np.testing.assert_array_equal(field.capacity, music)
    # masked exactly when the music reaches noise + 21 dB
    music_at = noise * np.float32(10 ** (21.0 / 20.0))
    at = mk.smr_field(noise, music_at, 21.0)
    assert at.masked(1.0).all()
    assert not at.masked(0.99).any()


def test_dispatch_and_errors_name_the_value_at_fault():
    noise = np.ones((512, 4), np.float32)
    assert mk.masking_field("smr", noise, noise, smr_db=10.0).margin_db == 10.0
    assert mk.masking_field("spreading", noise, noise).model == "spreading"
    with pytest.raises(ParameterError, match="smr.*spreading.*'psy'"):
        mk.masking_field("psy", noise, noise, smr_db=SMR_DB)
    with pytest.raises(ParameterError, match=r"\(512, 4\) and \(512, 3\)"):
        mk.smr_field(noise, noise[:, :3], SMR_DB)
    with pytest.raises(ParameterError, match="negative"):
        mk.smr_field(noise, -noise, SMR_DB)


def test_required_gain_handles_zero_capacity_and_zero_need():
    field = mk.MaskingField(
        required=np.array([[0.0, 2.0, 3.0]], np.float32),
        capacity=np.array([[0.0, 0.0, 4.0]], np.float32),
        model="smr",
    )
    np.testing.assert_array_equal(field.required_gain(), [[0.0, np.inf, 0.75]])


def test_sine_response_matches_audio_to_mel():
    """The fixed calibration: a full-scale sine at a band centre reads 96 dB SPL there."""
    for band in (60, 250, 480):
        freq = float(mel_center_hz()[band])
        mel = audio_to_mel(_sine(freq, 1.0))
        measured = float(mel[band, 10])
        assert measured == pytest.approx(mk.sine_response()[band], rel=1e-3)
        level = 20 * np.log10(measured) + mk.calibration_db()[band]
        assert level == pytest.approx(96.0, abs=0.01)


def test_loud_tone_masks_nearby_noise_but_not_3_khz_away():
    music = audio_to_mel(_sine(1000.0, 0.3))[:, 5:15]
    tone_band = _band_of(1000.0)
    tone_level = float(music[tone_band].mean())
    noise = np.zeros_like(music)
    near = [tone_band + 1, _band_of(1150.0)]  # one mel band and ~0.6 Bark above
    far = _band_of(4000.0)
    for band in [*near, far]:
        noise[band] = tone_level * 10 ** (-20 / 20)  # 20 dB under the tone
    spread = mk.spreading_field(noise, music)
    masked = spread.masked(1.0)
    for band in near:
        assert masked[band].all(), band
    assert not masked[far].any()
    # the paper's SMR needs the music 21 dB above the noise in the very same band
    smr_masked = mk.smr_field(noise, music, SMR_DB).masked(1.0)
    assert not smr_masked[_band_of(1150.0)].any()
    assert not smr_masked[far].any()


def test_noise_under_the_threshold_of_hearing_needs_nothing():
    noise = np.full((512, 8), 1e-7, np.float32)  # about -100 dBFS per band
    field = mk.spreading_field(noise, np.zeros_like(noise))
    assert not field.required.any()
    assert not field.capacity.any()
    assert field.masked(0.0).all()
    low = _band_of(30.0)  # a loud 30 Hz hum is audible
    noise[low] = 100.0  # about 71 dB SPL there, over the 60 dB threshold of hearing
    assert mk.spreading_field(noise, np.zeros_like(noise)).required[low].all()


def test_masker_pruning_keeps_the_louder_of_close_peaks():
    power = np.full((512, 3), 10.0**3)  # 30 dB floor
    z = mk.bark(mel_center_hz())
    a = _band_of(2000.0)
    close = int(np.searchsorted(z, z[a] + 0.3))
    apart = int(np.searchsorted(z, z[a] + 2.0))
    power[a, :] = 10.0**8
    power[close, 0] = 10.0**7  # 0.3 Bark from a louder one: dropped
    power[apart, 1] = 10.0**7  # 2 Bark away: kept
    power[close, 2] = 10.0**9  # louder than a: a is dropped
    maskers = mk.find_maskers(power)
    kept = {(int(b), int(f)) for b, f in zip(maskers.band, maskers.frame, strict=True)}
    assert kept == {(a, 0), (a, 1), (apart, 1), (close, 2)}


def _tone_mix(seconds: float = 0.3) -> np.ndarray:
    audio = np.zeros(int(seconds * SAMPLE_RATE_HZ), np.float32)
    for freq, amp in ((120.0, 0.4), (440.0, 0.2), (1250.0, 0.05), (3100.0, 0.02), (7000.0, 0.01)):
        audio += _sine(freq, amp, seconds)
    audio += 0.003 * np.random.default_rng(3).standard_normal(audio.size).astype(np.float32)
    return audio


def test_vectorised_threshold_matches_per_masker_loop():
    music = audio_to_mel(_tone_mix())[:, 3:23]
    geo_cal = mk.calibration_db()
    maskers = mk.find_maskers(music.astype(np.float64) ** 2 * 10 ** (geo_cal / 10)[:, None])
    fast = mk.masking_threshold_power(maskers, music.shape)
    ref = mk.spreading_threshold_reference(music)
    assert np.all(ref > 0)
    diff_db = np.abs(10 * np.log10(fast / ref))
    within_40_db = ref >= ref.max(axis=0) * 1e-4
    assert diff_db[within_40_db].max() < 0.3
    assert diff_db.max() < 1.0


def test_spreading_needs_less_gain_than_smr_for_aligned_music():
    noise = audio_to_mel(_tone_mix(0.5))
    music = noise * np.float32(1.5)  # perfectly aligned, 3.5 dB louder
    mask = noise >= np.quantile(noise, 0.85)
    smr_gain = np.median(mk.smr_field(noise, music, SMR_DB).required_gain()[mask])
    spread_gain = np.median(mk.spreading_field(noise, music).required_gain()[mask])
    assert 20 * np.log10(smr_gain) == pytest.approx(21.0 - 20 * np.log10(1.5), abs=1e-3)
    assert spread_gain < smr_gain / 10 ** (6 / 20)  # at least 6 dB less


def test_spreading_on_real_recordings(shared_data):
    import soundfile as sf

    noise, _ = sf.read(shared_data / "noise" / "esc10_helicopter_2-188822-D.wav", dtype="float32")
    music, _ = sf.read(shared_data / "music" / "xmoto_foxrun.wav", dtype="float32")
    n = SAMPLE_RATE_HZ  # 1 s keeps the test fast
    noise_mel = audio_to_mel(noise[:n])
    music_mel = audio_to_mel(music[:n])
    field = mk.spreading_field(noise_mel, music_mel)
    assert field.capacity.shape == noise_mel.shape
    assert np.all(np.isfinite(field.capacity)) and np.all(field.capacity >= 0)
    assert field.capacity.dtype == np.float32 and field.required.dtype == np.float32
    # the music masks where it is: its own threshold sits within -30..0 dB of its peaks
    peak = music_mel.max(axis=0)
    ratio_db = 20 * np.log10(field.capacity.max(axis=0) / peak)
    assert np.all((ratio_db > -30.0) & (ratio_db < 3.0))
    # the vectorised threshold agrees with the per-masker loop on real music too
    cal = mk.calibration_db()
    part = music_mel[:, :20].astype(np.float64)
    fast = mk.masking_threshold_power(
        mk.find_maskers(part**2 * 10 ** (cal / 10)[:, None]), part.shape
    )
    ref = mk.spreading_threshold_reference(part)
    near = ref >= ref.max(axis=0) * 1e-4
    assert np.abs(10 * np.log10(fast[near] / ref[near])).max() < 0.3
