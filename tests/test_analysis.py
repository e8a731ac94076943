"""analyse_stem: rhythm (onsets, tempo, phase) and spectrum (bands, frames, mask share)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from bnmusic_bridge.analysis import (
    MIN_PEAK_PROMINENCE_DB,
    MIN_PERIODICITY,
    StemAnalysis,
    analyse_stem,
    tonal_peaks,
)
from bnmusic_bridge.errors import AudioInputError, ParameterError
from bnmusic_bridge.mask import high_energy_mask
from bnmusic_bridge.request import field_default
from bnmusic_bridge.spectrogram import audio_to_mel

SR = 44_100
MASK_AREA = field_default("mask_area")
NOISE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "noise"


def bursts(seconds: float, period_s: float, phase_s: float, seed: int = 0) -> np.ndarray:
    """Band-passed noise bursts (8 ms decay) every ``period_s`` from ``phase_s`` over a
    quiet noise bed: mono float32, peak 0.5."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    x = 0.02 * rng.standard_normal(n)
    burst_len = int(0.04 * SR)
    env = np.exp(-np.arange(burst_len) / (0.008 * SR))
    for t in np.arange(phase_s, seconds - 0.05, period_s):
        i = int(round(t * SR))
        x[i : i + burst_len] += 0.5 * env * rng.standard_normal(burst_len)
    sos = signal.butter(4, [200.0, 3_000.0], "bandpass", fs=SR, output="sos")
    x = signal.sosfilt(sos, x)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def analyse(audio: np.ndarray) -> StemAnalysis:
    mel = audio_to_mel(audio)
    return analyse_stem(audio, mel, high_energy_mask(mel, MASK_AREA))


@pytest.fixture(scope="module")
def clicks_120() -> tuple[np.ndarray, StemAnalysis]:
    audio = bursts(8.0, period_s=0.5, phase_s=0.13)
    return audio, analyse(audio)


def test_periodic_bursts_give_their_tempo_and_phase(clicks_120):
    _, a = clicks_120
    assert a.tempo_bpm == pytest.approx(120.0, rel=0.005)
    assert a.beat_period_s == pytest.approx(0.5, rel=0.005)
    assert a.beat_phase_s == pytest.approx(0.13, abs=0.015)
    assert a.periodicity_strength > 0.8


def test_onset_times_sit_on_the_bursts(clicks_120):
    _, a = clicks_120
    truth = np.arange(0.13, 7.95, 0.5)
    assert len(a.onset_times_s) == pytest.approx(len(truth), abs=2)
    errors = np.array([np.min(np.abs(truth - t)) for t in a.onset_times_s])
    assert np.median(errors) < 0.012
    assert np.mean(errors < 0.03) > 0.85


def test_slow_period_is_folded_into_range():
    a = analyse(bursts(9.0, period_s=1.1, phase_s=0.4, seed=1))
    # 54.5 BPM is doubled into 60..180; every noise burst stays on the beat grid.
    assert a.tempo_bpm == pytest.approx(2 * 60.0 / 1.1, rel=0.01)
    assert 0.0 <= a.beat_phase_s < a.beat_period_s
    assert (0.4 - a.beat_phase_s) / a.beat_period_s == pytest.approx(
        round((0.4 - a.beat_phase_s) / a.beat_period_s), abs=0.05
    )


def test_fast_period_is_folded_into_range():
    a = analyse(bursts(6.0, period_s=0.25, phase_s=0.05, seed=2))
    assert a.tempo_bpm == pytest.approx(120.0, rel=0.01)


def test_steady_noise_has_no_tempo():
    rng = np.random.default_rng(3)
    audio = (0.1 * rng.standard_normal(6 * SR)).astype(np.float32)
    a = analyse(audio)
    assert a.tempo_bpm is None
    assert a.beat_period_s is None
    assert a.beat_phase_s == 0.0
    assert a.periodicity_strength < MIN_PERIODICITY


def test_arrays_have_documented_shapes_and_scales(clicks_120):
    audio, a = clicks_120
    frames = audio.size // 441 + 1
    assert a.sample_rate_hz == SR
    assert a.num_samples == audio.size
    assert a.onset_envelope.shape == (frames,)
    assert np.all(a.onset_envelope >= 0)
    assert a.frame_energy_db.shape == (frames,)
    assert a.frame_energy_db.max() == pytest.approx(0.0)
    assert a.band_energy_db.shape == (512,)
    assert a.band_energy_db.max() == pytest.approx(0.0)
    assert a.band_center_hz.shape == (512,)
    assert np.all(np.diff(a.band_center_hz) > 0)
    assert 0 < a.band_center_hz[0] < 30 and 9_900 < a.band_center_hz[-1] < 10_000
    assert a.mask_band_share.sum() == pytest.approx(1.0)


def test_band_energy_peaks_at_a_tone():
    t = np.arange(3 * SR) / SR
    audio = (0.3 * np.sin(2 * np.pi * 1_000.0 * t)).astype(np.float32)
    a = analyse(audio)
    peak_hz = a.band_center_hz[int(np.argmax(a.band_energy_db))]
    assert peak_hz == pytest.approx(1_000.0, rel=0.02)
    near = (a.band_center_hz > 700.0) & (a.band_center_hz < 1_400.0)
    # Uniform shares would put 9 % there; the onset and end frames add broadband pixels.
    assert a.mask_band_share[near].sum() > 0.5


def test_tonal_peaks_find_a_hum_and_its_harmonics():
    t = np.arange(4 * SR) / SR
    rng = np.random.default_rng(11)
    # A 117.3 Hz hum (between A#2 and B2) with four harmonics over a noise floor.
    hum = sum(0.2 / k * np.sin(2 * np.pi * 117.3 * k * t) for k in range(1, 5))
    audio = (hum + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    a = analyse(audio)
    assert a.tonal_peaks_hz.shape == a.tonal_peaks_db.shape
    found = np.sort(a.tonal_peaks_hz[:4])
    assert found == pytest.approx(117.3 * np.arange(1, 5), abs=0.3)
    assert np.all(a.tonal_peaks_db >= MIN_PEAK_PROMINENCE_DB)
    assert np.all(np.diff(a.tonal_peaks_db) <= 0)  # strongest first


def test_noise_has_no_tonal_peaks():
    rng = np.random.default_rng(12)
    hz, db = tonal_peaks(0.1 * rng.standard_normal(3 * SR))
    assert hz.size == 0 and db.size == 0
    short_hz, _ = tonal_peaks(np.sin(2 * np.pi * 440.0 * np.arange(4_000) / SR))
    assert short_hz.size <= 1  # shorter than one FFT: zero-padded, still analysed


def test_an_analysis_built_without_peaks_still_works(clicks_120):
    _, a = clicks_120
    fields = {k: getattr(a, k) for k in StemAnalysis.__dataclass_fields__}
    del fields["tonal_peaks_hz"], fields["tonal_peaks_db"]
    older = StemAnalysis(**fields)
    assert older.tonal_peaks_hz.size == 0 and older.tonal_peaks_db.size == 0


def test_frame_energy_follows_loudness():
    rng = np.random.default_rng(4)
    audio = 0.2 * rng.standard_normal(4 * SR)
    audio[2 * SR :] *= 0.1  # -20 dB in the second half
    a = analyse(audio.astype(np.float32))
    first = np.median(a.frame_energy_db[20:180])
    second = np.median(a.frame_energy_db[220:380])
    assert first - second == pytest.approx(20.0, abs=1.5)


def test_empty_mask_gives_zero_share():
    audio = bursts(3.0, 0.5, 0.1)
    mel = audio_to_mel(audio)
    a = analyse_stem(audio, mel, np.zeros_like(mel, dtype=bool))
    assert np.all(a.mask_band_share == 0)


def test_mask_share_counts_rows():
    audio = bursts(3.0, 0.5, 0.1)
    mel = audio_to_mel(audio)
    mask = np.zeros_like(mel, dtype=bool)
    mask[10, :] = True
    mask[20, : mel.shape[1] // 2] = True
    a = analyse_stem(audio, mel, mask)
    assert a.mask_band_share[10] == pytest.approx(2 / 3, abs=0.01)
    assert a.mask_band_share[20] == pytest.approx(1 / 3, abs=0.01)


def test_bad_inputs_raise():
    audio = bursts(2.0, 0.5, 0.1)
    mel = audio_to_mel(audio)
    mask = np.zeros_like(mel, dtype=bool)
    with pytest.raises(ParameterError, match="mel has shape"):
        analyse_stem(audio, mel[:, :-1], mask[:, :-1])
    with pytest.raises(ParameterError, match="mask has shape"):
        analyse_stem(audio, mel, mask[:-1])
    with pytest.raises(AudioInputError, match="mono"):
        analyse_stem(np.stack([audio, audio]), mel, mask)
    bad = audio.copy()
    bad[5] = np.nan
    with pytest.raises(AudioInputError, match="NaN"):
        analyse_stem(bad, mel, mask)


@pytest.mark.skipif(not NOISE_DIR.is_dir(), reason="real recordings not present")
def test_real_train_is_periodic():
    audio, sr = sf.read(NOISE_DIR / "blanket_train_train.wav", dtype="float32")
    assert sr == SR
    a = analyse(audio)
    # The wheel pattern repeats every 1.46 s; folded by an octave that is 82.3 BPM.
    assert a.tempo_bpm == pytest.approx(82.3, abs=1.5)
    assert a.periodicity_strength >= MIN_PERIODICITY


@pytest.mark.skipif(not NOISE_DIR.is_dir(), reason="real recordings not present")
def test_real_rain_is_not_periodic():
    audio, _ = sf.read(NOISE_DIR / "esc10_rain_3-157149-A.wav", dtype="float32")
    a = analyse(audio)
    assert a.tempo_bpm is None
