"""Riffusion's spectrogram format: audio <-> linear mel magnitude <-> 8-bit image.

The grid (Riffusion's defaults, which the BNMusic paper uses unchanged):

* mono audio at 44,100 Hz, float32, linear amplitude (1.0 = 0 dBFS);
* STFT with a 4,410-sample (100 ms) periodic Hann window, zero-padded to
  ``n_fft = 17,640`` samples (400 ms, 8,821 bins of 2.5 Hz), hop 441 samples (10 ms),
  ``center=True`` with reflect padding;
* linear magnitude ``|STFT|`` (no power, no log) through a 512-band HTK mel filterbank
  without normalisation, 0 to 10,000 Hz.

Column <-> sample arithmetic (``center=True``):

* frame (image column) ``j`` is centred on sample ``j * 441``; its window covers samples
  ``j * 441 - 2,205 .. j * 441 + 2,204`` (the 17,640-sample FFT frame is the 4,410-sample
  window plus zeros, so nothing outside that range contributes);
* ``num_samples`` samples give ``num_samples // 441 + 1`` frames;
* 512 frames <-> ``(512 - 1) * 441 = 225,351`` samples = 5.110 s (:data:`WINDOW_SAMPLES`):
  the audio length that yields exactly one 512-column image;
* a 5.12 s clip (225,792 samples) gives 513 frames, one column too many;
* decoding ``F`` frames with no requested length returns ``(F - 1) * 441`` samples
  (Riffusion's ``length=None``), so 512 columns -> 225,351 samples, and
  ``num_frames((F - 1) * 441) == F``: the round trip keeps the column count.

Orientation: a *mel* array is ``(n_mels, frames)`` with row 0 the lowest band; an *image*
is ``(n_mels, frames)`` uint8 in picture orientation, row 0 the highest band (10 kHz),
loud = dark.

Scale: :func:`audio_to_mel` takes float audio as given (1.0 = full scale). Riffusion fed
int16-valued samples, so its mel magnitudes, and its default ``max_value`` of 30e6
(:data:`DEFAULT_MAX_VALUE`), are 32,768 times ours for the same sound. The image keeps
only relative levels; pass the ``max_value`` that :func:`audio_to_image` returned to
:func:`image_to_audio` to get the original level back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .errors import AudioInputError, ParameterError

SAMPLE_RATE_HZ = 44_100
HOP_SAMPLES = 441
WIN_SAMPLES = 4_410
N_FFT = 17_640
N_MELS = 512
F_MIN_HZ = 0.0
F_MAX_HZ = 10_000.0
IMAGE_FRAMES = 512
WINDOW_SAMPLES = (IMAGE_FRAMES - 1) * HOP_SAMPLES
"""225,351 samples (5.110 s): the audio length that yields exactly 512 frames."""
DEFAULT_MAX_VALUE = 30e6
"""Riffusion's default mel magnitude for pixel 0 (on its int16 sample scale)."""
RIFFUSION_POWER_FOR_IMAGE = 0.25
"""Riffusion's contrast curve: pixel darkness ~ (mel / max) ** 0.25."""
_TRUNCATION_GUARD = np.float32(1e-4)
"""Added before truncating to uint8 so that image -> mel -> image is exact: the float32
round trip lands up to 1 ulp (1.5e-5) below the integer level; Riffusion's plain
truncation then loses a level for a few grey values. Only pixels within 1e-4 of a level
boundary can differ (by 1) from Riffusion's encoding."""
RIFFUSION_GRIFFIN_LIM_ITERS = 32
RIFFUSION_MOMENTUM = 0.99


@dataclass(frozen=True)
class SpectrogramParams:
    """STFT and mel settings (Riffusion's defaults).

    Attributes:
        sample_rate_hz: audio sample rate in Hz.
        hop_samples: STFT hop in samples.
        win_samples: Hann window length in samples.
        n_fft: FFT length in samples (window zero-padded to it).
        n_mels: number of mel bands.
        f_min_hz: lower edge of the filterbank in Hz.
        f_max_hz: upper edge of the filterbank in Hz.
    """

    sample_rate_hz: int = SAMPLE_RATE_HZ
    hop_samples: int = HOP_SAMPLES
    win_samples: int = WIN_SAMPLES
    n_fft: int = N_FFT
    n_mels: int = N_MELS
    f_min_hz: float = F_MIN_HZ
    f_max_hz: float = F_MAX_HZ

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0:
            raise ParameterError(f"sample_rate_hz must be > 0, got {self.sample_rate_hz}")
        if self.hop_samples <= 0:
            raise ParameterError(f"hop_samples must be > 0, got {self.hop_samples}")
        if not 0 < self.win_samples <= self.n_fft:
            raise ParameterError(
                f"win_samples must be in 1..n_fft={self.n_fft}, got {self.win_samples}"
            )
        if self.n_mels <= 0:
            raise ParameterError(f"n_mels must be > 0, got {self.n_mels}")
        if not 0.0 <= self.f_min_hz < self.f_max_hz <= self.sample_rate_hz / 2:
            raise ParameterError(
                f"need 0 <= f_min_hz < f_max_hz <= Nyquist, got f_min_hz={self.f_min_hz}, "
                f"f_max_hz={self.f_max_hz}"
            )

    @property
    def n_freqs(self) -> int:
        """Number of one-sided STFT bins, ``n_fft // 2 + 1`` (8,821 by default)."""
        return self.n_fft // 2 + 1


DEFAULT_PARAMS = SpectrogramParams()


def num_frames(num_samples: int, params: SpectrogramParams = DEFAULT_PARAMS) -> int:
    """Number of STFT frames (image columns) for ``num_samples`` samples (``center=True``).

    ``num_samples // hop_samples + 1``: 225,351 samples -> 512, 225,792 (5.12 s) -> 513.
    """
    if num_samples < 0:
        raise ParameterError(f"num_samples must be >= 0, got {num_samples}")
    return num_samples // params.hop_samples + 1


def frame_to_sample(frame: int, params: SpectrogramParams = DEFAULT_PARAMS) -> int:
    """Sample index on which frame (column) ``frame`` is centred: ``frame * hop_samples``."""
    return frame * params.hop_samples


def _hz_to_mel_htk(freq_hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + freq_hz / 700.0)


def _mel_to_hz_htk(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def _mel_points_hz(params: SpectrogramParams) -> np.ndarray:
    """The ``n_mels + 2`` band edges/centres in Hz, equally spaced on the HTK mel scale."""
    mel_lo = _hz_to_mel_htk(np.float64(params.f_min_hz))
    mel_hi = _hz_to_mel_htk(np.float64(params.f_max_hz))
    return _mel_to_hz_htk(np.linspace(mel_lo, mel_hi, params.n_mels + 2))


@lru_cache(maxsize=8)
def _mel_filterbank_cached(params: SpectrogramParams) -> np.ndarray:
    # Same construction as torchaudio's melscale_fbanks (htk, norm=None): triangles with
    # apexes at the mel points, evaluated at the bin frequencies linspace(0, sr // 2).
    bin_hz = np.linspace(0.0, params.sample_rate_hz // 2, params.n_freqs)
    points_hz = _mel_points_hz(params)
    widths_hz = np.diff(points_hz)
    offsets = points_hz[None, :] - bin_hz[:, None]  # (n_freqs, n_mels + 2)
    rising = -offsets[:, :-2] / widths_hz[:-1]
    falling = offsets[:, 2:] / widths_hz[1:]
    fb = np.maximum(0.0, np.minimum(rising, falling)).T.astype(np.float32)
    fb.setflags(write=False)
    return fb


@lru_cache(maxsize=8)
def _mel_filterbank_torch(params: SpectrogramParams) -> torch.Tensor:
    return torch.from_numpy(_mel_filterbank_cached(params).copy())


def mel_filterbank(params: SpectrogramParams = DEFAULT_PARAMS) -> np.ndarray:
    """HTK mel filterbank without normalisation (torchaudio ``MelScale(norm=None, 'htk')``).

    Returns:
        float32 ``(n_mels, n_fft // 2 + 1)``, read-only (cached); row ``m`` is the triangle
        of band ``m`` (row 0 lowest) over the STFT bins at ``k * sr / n_fft`` Hz; peak 1.
    """
    return _mel_filterbank_cached(params)


def mel_center_hz(params: SpectrogramParams = DEFAULT_PARAMS) -> np.ndarray:
    """Centre (apex) frequency of each mel band in Hz, float64 ``(n_mels,)``, ascending."""
    return _mel_points_hz(params)[1:-1].copy()


def _check_audio(audio: np.ndarray, params: SpectrogramParams) -> np.ndarray:
    arr = np.asarray(audio)
    if arr.ndim != 1:
        raise AudioInputError(f"audio must be mono 1-D (num_samples,), got shape {arr.shape}")
    min_samples = params.n_fft // 2 + 1
    if arr.shape[0] < min_samples:
        raise AudioInputError(
            f"audio has {arr.shape[0]} samples; the reflect-padded STFT needs at least "
            f"{min_samples} ({min_samples / params.sample_rate_hz:.3f} s)"
        )
    if not np.all(np.isfinite(arr)):
        raise AudioInputError("audio holds NaN or inf samples")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _hann(win_samples: int) -> torch.Tensor:
    # Periodic Hann, as torch.hann_window's default (and torchaudio's Spectrogram) use.
    return torch.hann_window(win_samples, periodic=True, dtype=torch.float32)


def _stft(
    audio_t: torch.Tensor, n_fft: int, hop_samples: int, win_samples: int, window: torch.Tensor
) -> torch.Tensor:
    return torch.stft(
        audio_t,
        n_fft=n_fft,
        hop_length=hop_samples,
        win_length=win_samples,
        window=window,
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )


def _istft(
    spec: torch.Tensor,
    n_fft: int,
    hop_samples: int,
    win_samples: int,
    window: torch.Tensor,
    length: int,
) -> torch.Tensor:
    return torch.istft(
        spec,
        n_fft=n_fft,
        hop_length=hop_samples,
        win_length=win_samples,
        window=window,
        center=True,
        normalized=False,
        onesided=True,
        length=length,
    )


def linear_magnitude(audio: np.ndarray, params: SpectrogramParams = DEFAULT_PARAMS) -> np.ndarray:
    """``|STFT|`` of mono audio on the Riffusion grid.

    Returns:
        float32 ``(n_fft // 2 + 1, num_frames)``, linear magnitude, row 0 = 0 Hz.
    """
    arr = _check_audio(audio, params)
    spec = _stft(
        torch.from_numpy(arr),
        params.n_fft,
        params.hop_samples,
        params.win_samples,
        _hann(params.win_samples),
    )
    return spec.abs().numpy()


def audio_to_mel(audio: np.ndarray, params: SpectrogramParams = DEFAULT_PARAMS) -> np.ndarray:
    """Riffusion's mel spectrogram of mono audio.

    Args:
        audio: mono float ``(num_samples,)`` at ``params.sample_rate_hz``, linear amplitude;
            at least ``n_fft // 2 + 1`` (8,821) samples, as reflect padding needs.

    Returns:
        float32 ``(n_mels, num_frames(num_samples))``, linear magnitude (no power, no log),
        mel orientation (row 0 = lowest band). A full-scale sine gives about 1,100 in its
        band (the Hann window's sum / 2 times the filter weight).
    """
    magnitude = torch.from_numpy(linear_magnitude(audio, params))
    return (_mel_filterbank_torch(params) @ magnitude).numpy()


def _check_finite(name: str, arr: np.ndarray) -> None:
    if not np.all(np.isfinite(arr)):
        raise ParameterError(f"{name} holds NaN or inf values")


def mel_to_image(mel: np.ndarray, max_value: float | None = None) -> tuple[np.ndarray, float]:
    """Encode a linear mel magnitude as Riffusion's 8-bit image.

    ``x = clip(mel / max_value, 0, 1) ** 0.25 * 255``; pixel ``= uint8(255 - x)``
    (truncation, as Riffusion's ``astype(np.uint8)``, with a 1e-4 guard that makes
    :func:`image_to_mel` an exact inverse), computed in float32 as Riffusion does; then
    flipped so row 0 is the highest band. Loud = dark: ``max_value`` -> 0,
    silence -> 255.

    Args:
        mel: ``(n_mels, frames)`` linear mel magnitude, mel orientation (row 0 lowest).
        max_value: magnitude that maps to pixel 0; None -> ``mel.max()`` (Riffusion), or
            1.0 when the mel is all zero. Values above it are clipped to pixel 0.

    Returns:
        ``(image, max_value_used)``: uint8 ``(n_mels, frames)`` in picture orientation and
        the float magnitude that pixel 0 stands for.
    """
    arr = np.asarray(mel, dtype=np.float32)
    if arr.ndim != 2:
        raise ParameterError(f"mel must be 2-D (n_mels, frames), got shape {arr.shape}")
    _check_finite("mel", arr)
    if max_value is None:
        peak = float(arr.max()) if arr.size else 0.0
        max_value = peak if peak > 0.0 else 1.0
    if not (np.isfinite(max_value) and max_value > 0.0):
        raise ParameterError(f"max_value must be finite and > 0, got {max_value}")
    x = np.clip(arr / np.float32(max_value), np.float32(0.0), np.float32(1.0))
    x = np.power(x, np.float32(RIFFUSION_POWER_FOR_IMAGE)) * np.float32(255.0)
    image = np.clip(np.float32(255.0) - x + _TRUNCATION_GUARD, 0.0, 255.0).astype(np.uint8)
    return np.ascontiguousarray(image[::-1]), float(max_value)


def image_to_mel(image: np.ndarray, max_value: float = DEFAULT_MAX_VALUE) -> np.ndarray:
    """Decode Riffusion's 8-bit image to a linear mel magnitude (inverse of the encoding).

    ``mel = ((255 - pixel) / 255) ** 4 * max_value`` after flipping back to mel
    orientation, in float32 as Riffusion does.

    Args:
        image: uint8 ``(n_mels, frames)``, picture orientation (row 0 = highest band).
        max_value: magnitude that pixel 0 stands for (the value :func:`mel_to_image`
            returned; Riffusion's default 30e6 is on its int16 sample scale).

    Returns:
        float32 ``(n_mels, frames)``, mel orientation (row 0 = lowest band).
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ParameterError(f"image must be 2-D (n_mels, frames), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ParameterError(f"image must be uint8, got dtype {arr.dtype}")
    if not (np.isfinite(max_value) and max_value > 0.0):
        raise ParameterError(f"max_value must be finite and > 0, got {max_value}")
    x = (np.float32(255.0) - arr[::-1].astype(np.float32)) / np.float32(255.0)
    mel = np.power(x, np.float32(1.0 / RIFFUSION_POWER_FOR_IMAGE)) * np.float32(max_value)
    return np.ascontiguousarray(mel, dtype=np.float32)


def save_image_png(image: np.ndarray, path: str | Path) -> None:
    """Write a uint8 ``(rows, cols)`` image as Riffusion does: an RGB PNG, three equal channels."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ParameterError(f"image must be uint8 2-D, got dtype {arr.dtype} shape {arr.shape}")
    Image.fromarray(np.ascontiguousarray(arr), mode="L").convert("RGB").save(
        Path(path), format="PNG"
    )


def load_image_png(path: str | Path) -> np.ndarray:
    """Read a spectrogram image (grey or colour) as uint8 ``(rows, cols)``.

    Grey (L, P) images are used as they are; colour images give their first (red)
    channel, which is what Riffusion's ``spectrogram_from_image`` reads for mono.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as img:
            img.load()
            # Riffusion converts every mode to RGB and keeps channel 0 for mono.
            arr = np.asarray(img.convert("RGB"))[:, :, 0]
    except (OSError, UnidentifiedImageError) as e:
        raise ParameterError(f"cannot read spectrogram image {p}: {e}") from e
    return np.ascontiguousarray(arr, dtype=np.uint8)


def audio_to_image(
    audio: np.ndarray,
    max_value: float | None = None,
    params: SpectrogramParams = DEFAULT_PARAMS,
) -> tuple[np.ndarray, float]:
    """Mono audio -> Riffusion image: :func:`audio_to_mel` then :func:`mel_to_image`.

    Returns:
        ``(image, max_value_used)``: uint8 ``(n_mels, num_frames)`` in picture orientation.
    """
    return mel_to_image(audio_to_mel(audio, params), max_value)


def spectral_convergence(target_mel: np.ndarray, audio: np.ndarray) -> float:
    """Mel spectral convergence ``||mel(audio) - target|| / ||target||`` (Frobenius).

    Lower is better; 0 means the audio's mel equals the target. ``audio`` is compared
    over the target's frames, so it must give at least as many frames.
    """
    target = np.asarray(target_mel, dtype=np.float64)
    mel = audio_to_mel(audio).astype(np.float64)
    if mel.shape[0] != target.shape[0] or mel.shape[1] < target.shape[1]:
        raise ParameterError(f"audio gives mel shape {mel.shape}, target mel is {target.shape}")
    norm = float(np.linalg.norm(target))
    if norm == 0.0:
        raise ParameterError("target_mel is all zero; spectral convergence is undefined")
    return float(np.linalg.norm(mel[:, : target.shape[1]] - target) / norm)
