"""How well the music masks the noise: coverage of the high-energy mask, and NMR.

Arrays are on the analysis grid of the whole stem: float ``(n_mels=512, frames)`` linear
mel magnitude, mel orientation (row 0 = lowest band), one frame per 10 ms. ``gain`` is a
LINEAR gain on the unity-gain music: a scalar, or one value per frame ``(frames,)`` (a
lambda lane sampled at the frames, ``10 ** (frame_gain_db / 20)``).
"""

from __future__ import annotations

import numpy as np

from .errors import ParameterError
from .masking import MaskingField, ath_mel_magnitude, gain_per_frame

DISTURBED_MARGIN_DB = 1.5
"""PEAQ: a frame is disturbed when some band's noise exceeds its mask by more than this, dB."""


def _check_mask(field: MaskingField, mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != field.required.shape or m.dtype != np.bool_:
        raise ParameterError(
            f"mask must be bool of shape {field.required.shape}, got {m.dtype} of shape {m.shape}"
        )
    return m


def coverage(
    field: MaskingField, mask: np.ndarray, gain: float | np.ndarray
) -> tuple[float, np.ndarray]:
    """Share of the high-energy mask's bins that the music masks at ``gain``.

    A bin is masked iff ``gain * capacity >= required`` (bins that need nothing,
    ``required == 0``, count as masked).

    Args:
        field: the masking field ``(n_mels, frames)``.
        mask: bool ``(n_mels, frames)``, the high-energy mask M.
        gain: linear gain, scalar or ``(frames,)``.

    Returns:
        ``(overall, per_frame)``: ``overall`` in 0..1 over all mask bins (1.0 when the
        mask is empty: nothing is left unmasked; never NaN); ``per_frame`` float64
        ``(frames,)`` in 0..1, NaN for frames without mask bins (no share to speak of).
    """
    m = _check_mask(field, mask)
    masked = field.masked(gain) & m
    per_bins = m.sum(axis=0)
    hit = masked.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_frame = np.where(per_bins > 0, hit / np.maximum(per_bins, 1), np.nan)
    total = int(per_bins.sum())
    overall = float(hit.sum() / total) if total > 0 else 1.0
    return overall, per_frame.astype(np.float64)


def _noise_to_mask_power(
    noise_mel: np.ndarray, field: MaskingField, gain: float | np.ndarray
) -> np.ndarray:
    """Per-bin noise power / masking-threshold power, float64 ``(n_mels, frames)``.

    The threshold in noise units is ``g * capacity / 10 ** (margin_db / 20)`` (for
    ``smr`` the music 21 dB down; for ``spreading`` the music's masking threshold),
    power-summed with the absolute threshold of hearing, which keeps it above 0 where
    the music is silent.
    """
    noise = np.asarray(noise_mel, dtype=np.float64)
    if noise.shape != field.required.shape:
        raise ParameterError(
            f"noise_mel shape {noise.shape} differs from the field's {field.required.shape}"
        )
    g = gain_per_frame(gain, field.num_frames)
    thr = field.capacity.astype(np.float64) * (g * 10.0 ** (-field.margin_db / 20.0))[None, :]
    ath = ath_mel_magnitude()
    if ath.shape[0] != noise.shape[0]:
        raise ParameterError(
            f"noise_mel must have {ath.shape[0]} mel bands, got shape {noise.shape}"
        )
    thr_power = thr * thr + (ath * ath)[:, None]
    return noise * noise / thr_power


def nmr_db(
    noise_mel: np.ndarray, field: MaskingField, gain: float | np.ndarray
) -> tuple[float, np.ndarray]:
    """PEAQ-style noise-to-mask ratio (ITU-R BS.1387) of the noise under the music.

    Per frame, the mean over the 512 mel bands of noise power / masking-threshold power
    (threshold as in :func:`_noise_to_mask_power`, floored by the ATH); total NMR is
    ``10 log10`` of the mean over frames of those linear per-frame values.

    Args:
        noise_mel: float ``(n_mels, frames)`` linear mel magnitude of the noise.
        field: its masking field against the music.
        gain: linear gain, scalar or ``(frames,)``.

    Returns:
        ``(total_db, per_frame_db)``: total NMR in dB and float64 ``(frames,)`` per-frame
        NMR in dB (``-inf`` for a silent noise frame). Negative = noise under the mask.
    """
    ratio = _noise_to_mask_power(noise_mel, field, gain)
    per_frame = ratio.mean(axis=0)
    with np.errstate(divide="ignore"):
        per_frame_db = 10.0 * np.log10(per_frame)
        total_db = float(10.0 * np.log10(per_frame.mean())) if per_frame.size else -np.inf
    return total_db, per_frame_db


def relative_disturbed_frames(
    noise_mel: np.ndarray,
    field: MaskingField,
    gain: float | np.ndarray,
    margin_db: float = DISTURBED_MARGIN_DB,
) -> float:
    """PEAQ's relative disturbed frames: share (0..1) of frames where some band's noise
    power exceeds its masking threshold by more than ``margin_db`` dB."""
    ratio = _noise_to_mask_power(noise_mel, field, gain)
    if ratio.shape[1] == 0:
        return 0.0
    disturbed = (ratio > 10.0 ** (margin_db / 10.0)).any(axis=0)
    return float(disturbed.mean())
