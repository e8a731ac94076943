"""Tests of the Riffusion spectrogram codec (bnmusic_bridge.spectrogram).

Independent reference formulas are written out here rather than imported, so a mistake
in the module cannot hide behind itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bnmusic_bridge import grid
from bnmusic_bridge import spectrogram as sp
from bnmusic_bridge.errors import AudioInputError, ParameterError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RATE = 44_100


def _harmonic_tone(seconds: float, f0_hz: float = 330.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(0.3 / k * np.sin(2 * np.pi * f0_hz * k * t) for k in range(1, 6))
    return tone.astype(np.float32)


# --- grid and frame arithmetic -------------------------------------------------------


def test_constants_match_riffusion_defaults() -> None:
    assert (grid.SAMPLE_RATE_HZ, grid.HOP_SAMPLES, grid.WIN_SAMPLES, grid.N_FFT) == (
        44_100,
        441,
        4_410,
        17_640,
    )
    assert (grid.N_MELS, grid.F_MIN_HZ, grid.F_MAX_HZ, grid.IMAGE_FRAMES) == (512, 0.0, 10_000.0, 512)
    assert grid.WINDOW_SAMPLES == 225_351
    assert (grid.FRAME_RATE_HZ, grid.FRAME_PERIOD_S) == (100.0, 0.01)
    assert sp.DEFAULT_MAX_VALUE == 30e6
    params = sp.SpectrogramParams()
    assert params == sp.DEFAULT_PARAMS
    assert params.n_freqs == 8_821


def test_frame_arithmetic() -> None:
    assert sp.num_frames(grid.WINDOW_SAMPLES) == 512
    assert sp.num_frames(int(5.12 * RATE)) == 513  # 225,792 samples
    assert sp.num_frames(grid.WINDOW_SAMPLES - 1) == 511
    assert sp.num_frames(0) == 1
    assert sp.frame_to_sample(511) == grid.WINDOW_SAMPLES
    assert sp.frame_to_sample(3) == 1_323
    with pytest.raises(ParameterError, match="-5"):
        sp.num_frames(-5)


def test_audio_to_mel_column_counts() -> None:
    rng = np.random.default_rng(0)
    for num_samples, frames in [(grid.WINDOW_SAMPLES, 512), (int(5.12 * RATE), 513), (9_000, 21)]:
        audio = (0.1 * rng.standard_normal(num_samples)).astype(np.float32)
        mel = sp.audio_to_mel(audio)
        assert mel.shape == (512, frames)
        assert mel.dtype == np.float32
        assert float(mel.min()) >= 0.0


def test_params_reject_bad_values() -> None:
    with pytest.raises(ParameterError, match="f_max_hz"):
        sp.SpectrogramParams(f_max_hz=30_000.0)
    with pytest.raises(ParameterError, match="win_samples"):
        sp.SpectrogramParams(win_samples=20_000)


# --- mel filterbank -------------------------------------------------------------------


def _reference_filterbank(n_mels: int, n_fft: int, rate: int, f_max: float) -> np.ndarray:
    """HTK triangles written band by band from the textbook definition."""

    def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (np.power(10.0, m / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(f_max), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * (rate / n_fft)
    fb = np.zeros((n_mels, freqs.size))
    for m in range(n_mels):
        lo, centre, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs - lo) / (centre - lo)
        falling = (hi - freqs) / (hi - centre)
        fb[m] = np.clip(np.minimum(rising, falling), 0.0, None)
    return fb


def test_mel_filterbank_matches_htk_formula() -> None:
    fb = sp.mel_filterbank()
    assert fb.shape == (512, 8_821)
    assert fb.dtype == np.float32
    ref = _reference_filterbank(512, 17_640, RATE, 10_000.0)
    np.testing.assert_allclose(fb, ref, atol=2e-6)
    assert sp.mel_filterbank() is fb  # cached
    # Every band has weight (no empty triangles), nothing above 10 kHz.
    assert float(fb.sum(axis=1).min()) > 0.0
    assert float(fb[:, 4_001:].max()) == 0.0  # bin 4,001 = 10,002.5 Hz


def test_mel_center_hz() -> None:
    centres = sp.mel_center_hz()
    assert centres.shape == (512,)
    top_mel = 2595.0 * np.log10(1.0 + 10_000.0 / 700.0)
    expected = 700.0 * (10.0 ** (top_mel * np.arange(1, 513) / 513 / 2595.0) - 1.0)
    np.testing.assert_allclose(centres, expected, rtol=1e-9)
    assert np.all(np.diff(centres) > 0)
    # The triangle of band m peaks at its centre frequency.
    fb = sp.mel_filterbank()
    peak_hz = np.argmax(fb, axis=1) * 2.5
    # Within one 2.5 Hz bin: triangles are lopsided (wider above), so the heavier bin
    # next to the apex can be the farther one.
    assert np.all(np.abs(peak_hz - centres) < 2.5)


@pytest.mark.parametrize("freq_hz", [50.0, 237.5, 440.0, 1_000.0, 3_000.0, 7_500.0, 9_800.0])
def test_sine_peaks_in_nearest_band(freq_hz: float) -> None:
    t = np.arange(RATE // 2) / RATE
    mel = sp.audio_to_mel(np.sin(2 * np.pi * freq_hz * t).astype(np.float32))
    band = int(np.argmax(mel.mean(axis=1)))
    assert band == int(np.argmin(np.abs(sp.mel_center_hz() - freq_hz)))


def test_audio_to_mel_checks_input() -> None:
    with pytest.raises(AudioInputError, match="8821"):
        sp.audio_to_mel(np.zeros(8_000, dtype=np.float32))
    with pytest.raises(AudioInputError, match="NaN"):
        sp.audio_to_mel(np.full(10_000, np.nan, dtype=np.float32))
    with pytest.raises(AudioInputError, match="mono"):
        sp.audio_to_mel(np.zeros((2, 10_000), dtype=np.float32))


# --- image encoding -------------------------------------------------------------------


def _riffusion_image(mel: np.ndarray, max_value: float) -> np.ndarray:
    """Riffusion's image_from_spectrogram, in float32 as it runs, plus a clip to 1."""
    data = np.minimum(mel.astype(np.float32) / np.float32(max_value), np.float32(1.0))
    data = np.power(data, np.float32(0.25)) * np.float32(255)
    data = np.float32(255) - data
    return np.flipud(data.astype(np.uint8))


def test_mel_to_image_matches_riffusion_formula() -> None:
    rng = np.random.default_rng(1)
    mel = (rng.random((512, 64)) ** 6 * 1_000.0).astype(np.float32)
    image, max_value = sp.mel_to_image(mel)
    assert image.dtype == np.uint8 and image.shape == (512, 64)
    assert max_value == pytest.approx(float(mel.max()))
    ref = _riffusion_image(mel, max_value)
    # The module's 1e-4 truncation guard may lift a pixel sitting within 1e-4 of a level
    # boundary by one level; nothing else may differ.
    diff = image.astype(int) - ref.astype(int)
    assert set(np.unique(diff)) <= {0, 1}
    assert np.count_nonzero(diff) <= mel.size * 1e-3
    assert image.min() == 0  # the loudest value is black


def test_mel_to_image_orientation_and_clipping() -> None:
    mel = np.zeros((512, 4), dtype=np.float32)
    mel[0, :] = 2.0  # lowest band, above max_value
    mel[511, :] = 0.0625  # (1/16) ** 0.25 = 0.5 of max_value 1
    image, max_value = sp.mel_to_image(mel, max_value=1.0)
    assert max_value == 1.0
    assert np.all(image[511] == 0)  # lowest band at the bottom, clipped to black
    assert np.all(image[0] == 127)  # 255 - 127.5, truncated
    assert np.all(image[1:511] == 255)  # silence is white


def test_mel_to_image_all_zero_and_bad_values() -> None:
    image, max_value = sp.mel_to_image(np.zeros((512, 3), dtype=np.float32))
    assert max_value == 1.0
    assert np.all(image == 255)
    with pytest.raises(ParameterError, match="NaN"):
        sp.mel_to_image(np.full((512, 3), np.nan, dtype=np.float32))
    with pytest.raises(ParameterError, match="max_value"):
        sp.mel_to_image(np.ones((512, 3), dtype=np.float32), max_value=0.0)


def test_image_to_mel_inverse_formula() -> None:
    image = np.full((512, 2), 255, dtype=np.uint8)
    image[0, :] = 0  # highest band, black
    image[511, 0] = 127
    mel = sp.image_to_mel(image, max_value=30e6)
    assert mel.dtype == np.float32
    assert mel[511, 0] == pytest.approx(30e6)  # picture row 0 -> mel row 511
    assert mel[0, 0] == pytest.approx(30e6 * (128 / 255) ** 4, rel=1e-6)
    assert mel[0, 1] == 0.0


@pytest.mark.parametrize("max_value", [1.0, 3.3e-3, 1_234.5, 30e6])
def test_image_mel_image_round_trip_is_exact(max_value: float) -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(512, 40), dtype=np.uint8)
    image[:, 0] = np.arange(256).repeat(2)  # every grey level
    mel = sp.image_to_mel(image, max_value)
    back, used = sp.mel_to_image(mel, max_value)
    assert used == max_value
    np.testing.assert_array_equal(back, image)


def test_png_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(512, 96), dtype=np.uint8)
    path = tmp_path / "spec.png"
    sp.save_image_png(image, path)
    with Image.open(path) as img:
        assert img.mode == "RGB"
        rgb = np.asarray(img)
    assert np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2])
    np.testing.assert_array_equal(sp.load_image_png(path), image)
    grey_path = tmp_path / "grey.png"
    Image.fromarray(image, mode="L").save(grey_path)
    np.testing.assert_array_equal(sp.load_image_png(grey_path), image)
    # Colour images give their red channel, as Riffusion reads mono.
    colour = np.stack([image, 255 - image, np.zeros_like(image)], axis=-1)
    colour_path = tmp_path / "colour.png"
    Image.fromarray(colour, mode="RGB").save(colour_path)
    np.testing.assert_array_equal(sp.load_image_png(colour_path), image)
    with pytest.raises(ParameterError, match="missing.png"):
        sp.load_image_png(tmp_path / "missing.png")


def test_audio_to_image_returns_peak_as_max_value() -> None:
    audio = _harmonic_tone(0.5)
    image, max_value = sp.audio_to_image(audio)
    assert image.shape == (512, sp.num_frames(audio.size))
    assert max_value == pytest.approx(float(sp.audio_to_mel(audio).max()))


# --- decoding -------------------------------------------------------------------------


def test_mel_to_audio_length_and_determinism() -> None:
    mel = sp.audio_to_mel(_harmonic_tone(0.5))  # 51 frames
    frames = mel.shape[1]
    default = sp.mel_to_audio(mel, n_iter=4)
    assert default.dtype == np.float32 and default.shape == ((frames - 1) * 441,)
    exact = sp.mel_to_audio(mel, frames * 441 - 1, n_iter=4)
    assert exact.shape == (frames * 441 - 1,)
    again = sp.mel_to_audio(mel, n_iter=4)
    np.testing.assert_array_equal(default, again)  # bit-identical for one seed
    other = sp.mel_to_audio(mel, n_iter=4, seed=1)
    assert not np.array_equal(default, other)
    with pytest.raises(ParameterError, match="22491"):
        sp.mel_to_audio(mel, frames * 441, n_iter=1)
    with pytest.raises(ParameterError, match="method"):
        sp.mel_to_audio(mel, method="slow")


def test_riffusion_method_length() -> None:
    # One call only: the per-call least-squares inverse mel is what makes it slow.
    mel = sp.audio_to_mel(_harmonic_tone(0.25))  # 26 frames, 11,025 samples
    a = sp.mel_to_audio(mel, 11_030, n_iter=2, method="riffusion")
    assert a.shape == (11_030,) and a.dtype == np.float32
    assert np.all(np.isfinite(a)) and float(np.abs(a).max()) > 0.0
    short = sp.audio_to_mel(_harmonic_tone(0.25))[:, :12]
    with pytest.raises(ParameterError, match="fast"):
        sp.mel_to_audio(short, n_iter=1, method="riffusion")


def test_mel_to_audio_checks_mel() -> None:
    with pytest.raises(ParameterError, match="shape"):
        sp.mel_to_audio(np.ones((128, 10), dtype=np.float32))
    with pytest.raises(ParameterError, match=">= 0"):
        sp.mel_to_audio(-np.ones((512, 10), dtype=np.float32))


def test_decoded_tone_matches_its_mel() -> None:
    audio = _harmonic_tone(1.0)
    mel = sp.audio_to_mel(audio)
    decoded = sp.mel_to_audio(mel, audio.size)
    # Measured on this 1 s five-partial tone, default 64 iterations: 0.041 / 0.021 / 0.029
    # for seeds 0 / 1 / 2 (Riffusion's decoder: 0.07 to 0.11). The margin allows other
    # FFT builds.
    assert sp.spectral_convergence(mel, decoded) < 0.06
    # Level is kept: decoding does not normalise.
    rms_ratio = float(np.sqrt(np.mean(decoded**2)) / np.sqrt(np.mean(audio**2)))
    assert 0.9 < rms_ratio < 1.1


def test_fast_no_worse_than_riffusion_on_short_input() -> None:
    # Default settings of each method, one seed (Riffusion's per-call least squares is the
    # slow part). Measured seeds 0/1/2: fast 0.044/0.030/0.043, riffusion 0.097/0.065/0.061.
    rng = np.random.default_rng(4)
    audio = _harmonic_tone(0.6) + (0.02 * rng.standard_normal(int(0.6 * RATE))).astype(np.float32)
    mel = sp.audio_to_mel(audio)
    fast = sp.spectral_convergence(mel, sp.mel_to_audio(mel))
    riff = sp.spectral_convergence(mel, sp.mel_to_audio(mel, method="riffusion"))
    assert fast <= riff


def test_image_to_audio_restores_level() -> None:
    audio = _harmonic_tone(0.5)
    image, max_value = sp.audio_to_image(audio)
    decoded = sp.image_to_audio(image, max_value, num_samples=audio.size, n_iter=8)
    assert decoded.shape == audio.shape
    rms_ratio = float(np.sqrt(np.mean(decoded**2)) / np.sqrt(np.mean(audio**2)))
    assert 0.8 < rms_ratio < 1.2


def test_spectral_convergence() -> None:
    audio = _harmonic_tone(0.5)
    mel = sp.audio_to_mel(audio)
    assert sp.spectral_convergence(mel, audio) == pytest.approx(0.0, abs=1e-6)
    assert sp.spectral_convergence(mel, 0.5 * audio) == pytest.approx(0.5, rel=1e-4)
    with pytest.raises(ParameterError, match="shape"):
        sp.spectral_convergence(mel, audio[: audio.size // 2])
    with pytest.raises(ParameterError, match="zero"):
        sp.spectral_convergence(np.zeros_like(mel), audio)


def test_fast_decoder_on_real_noise() -> None:
    path = SHARED_DATA / "noise" / "esc10_rain_3-157149-A.wav"
    if not path.is_file():
        pytest.skip(f"real recordings not present ({SHARED_DATA})")
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32", frames=RATE)
    assert rate == RATE
    image, max_value = sp.audio_to_image(audio)
    mel = sp.image_to_mel(image, max_value)
    fast = sp.spectral_convergence(mel, sp.mel_to_audio(mel))
    riff = sp.spectral_convergence(mel, sp.mel_to_audio(mel, method="riffusion"))
    assert fast < riff
