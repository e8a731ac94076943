"""The alignment step: the music's band energy moves toward the noise's, within bounds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from bnmusic_bridge import RenderRequest, render
from bnmusic_bridge import align as A
from bnmusic_bridge.errors import ParameterError
from bnmusic_bridge.grid import SAMPLE_RATE_HZ

RATE = SAMPLE_RATE_HZ


def _noise(seconds: float, seed: int, band: tuple[float, float] | None = None) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(int(seconds * RATE))
    if band is not None:
        sos = signal.butter(4, band, btype="bandpass", fs=RATE, output="sos")
        x = signal.sosfilt(sos, x)
    return (0.1 * x / np.std(x)).astype(np.float64)


def _harmonic(seconds: float, f0: float = 110.0, partials: int = 60) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    k = np.arange(1, partials + 1)
    k = k[k * f0 < 16_000]
    return (np.sin(2 * np.pi * f0 * k[:, None] * t[None, :]) / k[:, None]).sum(axis=0) * 0.05


def _band_db(x: np.ndarray, lo: float, hi: float) -> float:
    f, p = signal.welch(x, RATE, nperseg=8192)
    sel = (f >= lo) & (f < hi)
    return float(10 * np.log10(p[sel].sum()))


def test_zero_gains_give_the_input_back_and_blocks_do_not_matter(monkeypatch) -> None:
    x = np.random.default_rng(1).standard_normal((2, RATE * 3)).astype(np.float32) * 0.1
    frames = A.num_stft_frames(x.shape[1])
    zero = np.zeros((A.band_centres_hz().size, frames))
    np.testing.assert_allclose(A.apply_band_gains(x, zero), x, atol=1e-6)
    gains = np.random.default_rng(2).uniform(-6, 6, zero.shape)
    whole = A.apply_band_gains(x, gains)
    monkeypatch.setattr(A, "BLOCK_FRAMES", 37)
    np.testing.assert_allclose(A.apply_band_gains(x, gains), whole, atol=1e-6)


def test_a_flat_gain_scales_the_level() -> None:
    x = _noise(2.0, 3)[None, :].astype(np.float32)
    gains = np.full((A.band_centres_hz().size, A.num_stft_frames(x.shape[1])), 6.0)
    y = A.apply_band_gains(x, gains)
    ratio_db = 20 * np.log10(np.std(y[0, 5000:-5000]) / np.std(x[0, 5000:-5000]))
    assert ratio_db == pytest.approx(6.0, abs=0.05)


def test_music_moves_toward_the_noise_spectrum_within_the_bound() -> None:
    music = _harmonic(4.0)[None, :].astype(np.float32)
    noise = _noise(4.0, 4, band=(150.0, 600.0))
    settings = A.AlignSettings(strength=1.0, max_db=12.0)
    aligned, summary = A.align_music(music, noise, settings)
    # Where the noise is absent (2-6 kHz) the music gives up energy by the full bound...
    for lo, hi in ((2000, 4000), (4000, 6000)):
        assert _band_db(aligned[0], lo, hi) - _band_db(music[0], lo, hi) == pytest.approx(-12.0, abs=1.0)
    # ...and inside the noise's band its shape moves toward the noise's (flat) one.
    edges = 150.0 * 2.0 ** (np.arange(13) / 6)  # sixth octaves, 150-600 Hz

    def distance_spread(x: np.ndarray) -> float:
        d = [_band_db(noise, a, b) - _band_db(x, a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        return float(np.std(d))

    # (a broadband music for this part: a harmonic one has gaps no equaliser fills)
    tilted = signal.sosfilt(
        signal.butter(1, 200.0, fs=RATE, output="sos"), _noise(4.0, 11)
    )[None, :].astype(np.float32)
    shaped, _ = A.align_music(tilted, noise, settings)
    assert distance_spread(shaped[0]) < 0.5 * distance_spread(tilted[0])
    assert summary.mean_abs_gain_db > 1.0
    assert 0.0 < summary.share_at_bound <= 1.0
    gains, _ = A.band_gains_db(A.band_powers(music[0]), A.band_powers(noise), settings)
    assert np.max(np.abs(gains)) <= 12.0 + 1e-9


def test_strength_zero_leaves_the_music_alone() -> None:
    music = _harmonic(2.0)[None, :].astype(np.float32)
    out, summary = A.align_music(music, _noise(2.0, 5), A.AlignSettings(0.0, 12.0))
    assert out is music or np.array_equal(out, music)
    assert summary.mean_abs_gain_db == 0.0


def test_bands_the_music_does_not_use_are_never_lifted() -> None:
    # Music only below 1 kHz; noise only above 3 kHz: the music's empty highs must not
    # be raised (that would only lift its noise floor).
    music = signal.sosfilt(
        signal.butter(8, 1000.0, fs=RATE, output="sos"), _noise(3.0, 6)
    )[None, :].astype(np.float32)
    noise = _noise(3.0, 7, band=(3000.0, 9000.0))
    settings = A.AlignSettings(1.0, 12.0)
    gains, _ = A.band_gains_db(A.band_powers(music[0]), A.band_powers(noise), settings)
    centres = A.band_centres_hz()
    assert np.all(gains[centres > 6000.0] <= 0.0)


def test_noise_events_lift_the_music_at_their_times() -> None:
    seconds = 4.0
    music = _harmonic(seconds, f0=220.0)[None, :].astype(np.float32)
    noise = _noise(seconds, 8) * 0.05
    hits = np.arange(0.5, seconds - 0.2, 0.5)
    for t in hits:
        i = int(t * RATE)
        noise[i : i + 1500] += _noise(1500 / RATE, 9)[:1500] * 20 * np.hanning(1500)
    aligned, summary = A.align_music(music, noise, A.AlignSettings(1.0, 12.0))
    assert summary.event_lift_db > 0.1
    env = np.abs(signal.hilbert(aligned[0]))
    at = np.mean([env[int((t + 0.01) * RATE) : int((t + 0.03) * RATE)].mean() for t in hits])
    between = np.mean([env[int((t + 0.2) * RATE) : int((t + 0.3) * RATE)].mean() for t in hits])
    assert 20 * np.log10(at / between) > 3.0


def test_silence_after_a_loud_passage_stays_finite() -> None:
    # Running-sum smoothing leaves tiny negative powers after loud passages: no NaN.
    noise = np.concatenate([_noise(1.0, 12) * 100.0, np.zeros(RATE)])
    music = np.concatenate([np.zeros(RATE // 2), _harmonic(1.5)])[None, :].astype(np.float32)
    out, _ = A.align_music(music, noise, A.AlignSettings(1.0, 12.0))
    assert np.all(np.isfinite(out))


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ParameterError, match="same length"):
        A.align_music(np.zeros((1, 100), np.float32), np.zeros(99), A.AlignSettings(1.0, 12.0))


def test_render_reports_the_alignment_and_strength_zero_is_the_unaligned_music() -> None:
    noise = _noise(6.0, 10, band=(80.0, 400.0))[None, :].astype(np.float32)
    aligned = render(noise, RATE, RenderRequest(seed=1))
    plain = render(noise, RATE, RenderRequest(seed=1, align_strength=0.0))
    assert aligned.details is not None and plain.details is not None
    assert aligned.details.alignment.mean_abs_gain_db > 1.0
    assert plain.details.alignment.mean_abs_gain_db == 0.0
    # More of the aligned music's energy falls inside the noise's high-energy mask M,
    # and its log-mel picture correlates better with the noise's.
    from bnmusic_bridge.alignment import floored_db, pearson, spectral_alignment
    from bnmusic_bridge.spectrogram import audio_to_mel

    noise_mel, mask = aligned.analysis.noise_mel, aligned.analysis.mask
    share = {}
    corr = {}
    for name, result in (("aligned", aligned), ("plain", plain)):
        music_mel = audio_to_mel(result.music[0])
        share[name] = spectral_alignment(noise_mel, music_mel, mask).mask_energy_share
        corr[name] = pearson(floored_db(noise_mel**2), floored_db(music_mel**2))
    assert share["aligned"] > 1.3 * share["plain"]
    assert corr["aligned"] > corr["plain"] + 0.05
