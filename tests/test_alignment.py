"""Spectral and rhythmic alignment metrics on synthetic signals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bnmusic_bridge.alignment import (
    envelope_cross_correlation,
    match_onsets,
    onset_f_measure,
    pearson,
    rhythmic_alignment,
    spectral_alignment,
)
from bnmusic_bridge.errors import ParameterError
from bnmusic_bridge.mask import high_energy_mask
from bnmusic_bridge.spectrogram import audio_to_mel

RATE = 44_100


def band_noise(seconds: float, low_hz: float, high_hz: float, seed: int) -> np.ndarray:
    """White noise band-limited to ``low_hz..high_hz`` (FFT brick wall), peak 0.5."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / RATE)
    spec[(freqs < low_hz) | (freqs > high_hz)] = 0.0
    x = np.fft.irfft(spec, n)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def gate(seconds: float, period_s: float, on_first: bool) -> np.ndarray:
    """Square envelope: 1 for the first (or second) half of every period, else 0.05."""
    t = np.arange(int(seconds * RATE)) / RATE
    first = (t % period_s) < period_s / 2
    return np.where(first == on_first, 1.0, 0.05).astype(np.float32)


def bursts(seconds: float, times_s: np.ndarray, freq_hz: float, seed: int) -> np.ndarray:
    """Short decaying tone-plus-noise bursts starting at ``times_s``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = 0.002 * rng.standard_normal(n)
    length = int(0.06 * RATE)
    t = np.arange(length) / RATE
    shape = np.exp(-t / 0.012) * (
        np.sin(2 * np.pi * freq_hz * t) + 0.3 * rng.standard_normal(length)
    )
    for start_s in times_s:
        s = int(round(start_s * RATE))
        if s + length <= n:
            out[s : s + length] += shape
    return (0.5 * out / np.max(np.abs(out))).astype(np.float32)


def test_pearson_and_constant_input() -> None:
    x = np.arange(10.0)
    assert pearson(x, 2 * x + 3) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)
    assert math.isnan(pearson(x, np.ones(10)))
    with pytest.raises(ParameterError):
        pearson(x, x[:5])


def test_spectral_alignment_matching_vs_disjoint_spectra() -> None:
    seconds = 2.0
    noise = band_noise(seconds, 300.0, 1500.0, seed=1)
    same_band = band_noise(seconds, 300.0, 1500.0, seed=2)
    other_band = band_noise(seconds, 5000.0, 9000.0, seed=3)
    noise_mel = audio_to_mel(noise)
    mask = high_energy_mask(noise_mel, 0.15)
    matching = spectral_alignment(noise_mel, audio_to_mel(same_band), mask)
    disjoint = spectral_alignment(noise_mel, audio_to_mel(other_band), mask)
    assert matching.frequency_correlation > 0.8
    assert disjoint.frequency_correlation < 0.2
    assert matching.mask_energy_share > 0.1
    assert disjoint.mask_energy_share < 0.01
    # The overall gain of the music does not change any of the metrics.
    louder = spectral_alignment(noise_mel, 10.0 * audio_to_mel(same_band), mask)
    assert louder.frequency_correlation == pytest.approx(matching.frequency_correlation, abs=1e-9)
    assert louder.mask_energy_share == pytest.approx(matching.mask_energy_share, rel=1e-9)


def test_spectral_alignment_over_time_in_and_out_of_phase() -> None:
    seconds = 2.0
    carrier = band_noise(seconds, 200.0, 4000.0, seed=4)
    noise = carrier * gate(seconds, 0.5, on_first=True)
    music_in = band_noise(seconds, 200.0, 4000.0, seed=5) * gate(seconds, 0.5, on_first=True)
    music_out = band_noise(seconds, 200.0, 4000.0, seed=6) * gate(seconds, 0.5, on_first=False)
    noise_mel = audio_to_mel(noise)
    in_phase = spectral_alignment(noise_mel, audio_to_mel(music_in))
    out_of_phase = spectral_alignment(noise_mel, audio_to_mel(music_out))
    assert in_phase.time_correlation > 0.8
    assert out_of_phase.time_correlation < -0.5
    assert math.isnan(in_phase.mask_energy_share)  # no mask given


def test_spectral_alignment_silent_music_is_nan_and_bad_shapes_raise() -> None:
    noise_mel = audio_to_mel(band_noise(1.0, 300.0, 1500.0, seed=7))
    silent = spectral_alignment(
        noise_mel, np.zeros_like(noise_mel), high_energy_mask(noise_mel, 0.15)
    )
    assert math.isnan(silent.time_correlation)
    assert math.isnan(silent.frequency_correlation)
    assert math.isnan(silent.mask_energy_share)
    with pytest.raises(ParameterError):
        spectral_alignment(noise_mel, noise_mel[:, :-1])
    with pytest.raises(ParameterError):
        spectral_alignment(noise_mel, -noise_mel)


def test_onset_f_measure_counts_one_to_one_matches() -> None:
    ref = np.array([0.5, 1.0, 1.5, 2.0])
    assert onset_f_measure(ref, ref + 0.03) == pytest.approx((1.0, 1.0, 1.0))
    # Two estimates near one reference onset: only one may match it.
    p, r, f = onset_f_measure(ref, np.array([0.49, 0.51, 1.5]))
    assert (p, r) == pytest.approx((2 / 3, 2 / 4))
    assert f == pytest.approx(2 * p * r / (p + r))
    assert onset_f_measure(ref, ref + 0.25) == (0.0, 0.0, 0.0)
    p, r, f = onset_f_measure(ref, np.zeros(0))
    assert math.isnan(p) and r == 0.0 and math.isnan(f)
    assert match_onsets(np.array([0.0, 0.1]), np.array([0.05]), 0.05) == 1


def test_envelope_cross_correlation_finds_the_lag() -> None:
    rng = np.random.default_rng(0)
    env = rng.random(300)
    later = np.concatenate([np.zeros(3), env[:-3]])  # the same envelope, 3 frames later
    r, lag = envelope_cross_correlation(env, later, 5)
    assert lag == 3
    assert r > 0.99
    r0, lag0 = envelope_cross_correlation(env, later, 0)
    assert lag0 == 0 and r0 < 0.3
    with pytest.raises(ParameterError):
        envelope_cross_correlation(env, env, -1)


def test_rhythmic_alignment_aligned_vs_shifted_onsets() -> None:
    seconds = 3.0
    times = np.arange(0.25, seconds - 0.1, 0.5)
    noise = bursts(seconds, times, 1800.0, seed=1)
    aligned = bursts(seconds, times + 0.01, 440.0, seed=2)
    shifted = bursts(seconds, times + 0.25, 440.0, seed=3)
    good = rhythmic_alignment(noise, aligned)
    bad = rhythmic_alignment(noise, shifted)
    assert good.noise_onsets == len(times)
    assert good.onset_f_measure > 0.9
    assert bad.onset_f_measure < 0.2
    assert good.envelope_correlation > 0.6
    assert good.envelope_correlation > bad.envelope_correlation + 0.4
    assert abs(good.envelope_lag_ms) <= 20.0
    silent = rhythmic_alignment(noise, np.zeros_like(noise))
    assert silent.music_onsets == 0 and math.isnan(silent.onset_f_measure)
    assert math.isnan(silent.envelope_correlation)
    with pytest.raises(ParameterError):
        rhythmic_alignment(noise, aligned[:-10])
