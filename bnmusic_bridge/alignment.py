"""How well music lines up with a noise: spectral and rhythmic alignment metrics.

BNMusic's claim is that music *aligned* with the noise masks it at a lower level. These
metrics measure that alignment directly, independently of any masking model:

* spectral alignment: does the music put its energy where and when the noise has its
  energy? Pearson correlation of the two mel energies in dB over time (per-frame energy)
  and over frequency (per-band mean energy), plus the share of the music's energy that
  falls inside the noise's high-energy mask M (the quantity the paper's loss rewards).
* rhythmic alignment: do the music's onsets fall on the noise's onsets? The peak of the
  normalised cross-correlation of the two onset envelopes within +-50 ms, and an onset
  F-measure with a +-50 ms tolerance (one-to-one matching, as MIREX onset evaluation).

Mel arrays are float ``(n_mels=512, frames)`` LINEAR mel magnitude in mel orientation
(row 0 = lowest band), one frame per 10 ms, as :func:`bnmusic_bridge.spectrogram.audio_to_mel`
returns them. Audio is mono float ``(samples,)`` at 44.1 kHz, linear amplitude. Every
metric is invariant to the music's overall gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ParameterError
from .grid import FRAME_RATE_HZ
from .scratch import Cropped, DiskArray

DEFAULT_FLOOR_DB = -80.0
"""Energies more than this far under a signal's loudest frame or band are floored, dB:
silence and near-silence should not dominate a correlation taken in dB."""
DEFAULT_MAX_LAG_MS = 50.0
"""Largest lag searched by the onset-envelope cross-correlation, ms."""
DEFAULT_TOLERANCE_MS = 50.0
"""Onset-matching tolerance of the F-measure, ms (MIREX uses 50 ms)."""


@dataclass(frozen=True)
class SpectralAlignment:
    """Spectral alignment of music with a noise.

    Attributes:
        time_correlation: Pearson r (-1..1) between the noise's and the music's per-frame
            mel energy in dB (floored): 1 when the music is loud exactly when the noise is.
            NaN when either is constant (e.g. silent music).
        frequency_correlation: Pearson r (-1..1) between the per-band mean mel energies
            in dB (floored): 1 when the music's spectral envelope follows the noise's.
            NaN when either is constant.
        mask_energy_share: share (0..1) of the music's mel energy (power) that lies in the
            high-energy mask M; NaN without a mask or for silent music. The paper's loss
            gives the music a positive gain only when this is above about alpha (0.14).
    """

    time_correlation: float
    frequency_correlation: float
    mask_energy_share: float


@dataclass(frozen=True)
class RhythmicAlignment:
    """Rhythmic alignment of music with a noise.

    Attributes:
        envelope_correlation: the highest Pearson r (-1..1) between the noise's and the
            music's onset envelopes over lags within +-``max_lag_ms``; NaN when either
            envelope is constant.
        envelope_lag_ms: the lag of that peak in ms (positive: the music comes later).
        onset_precision: share (0..1) of the music's onsets within the tolerance of a
            noise onset (one-to-one); NaN when the music has no onset.
        onset_recall: share (0..1) of the noise's onsets matched by a music onset; NaN
            when the noise has no onset.
        onset_f_measure: harmonic mean of precision and recall (0 when both are 0); NaN
            when either is NaN.
        noise_onsets: number of onsets detected in the noise.
        music_onsets: number of onsets detected in the music.
    """

    envelope_correlation: float
    envelope_lag_ms: float
    onset_precision: float
    onset_recall: float
    onset_f_measure: float
    noise_onsets: int
    music_onsets: int


def _check_mels(
    noise_mel: np.ndarray | DiskArray | Cropped, music_mel: np.ndarray | DiskArray | Cropped
) -> tuple[np.ndarray, np.ndarray]:
    noise = np.asarray(noise_mel, dtype=np.float64)
    music = np.asarray(music_mel, dtype=np.float64)
    if noise.ndim != 2 or noise.shape != music.shape:
        raise ParameterError(
            f"noise_mel and music_mel must be 2-D (n_mels, frames) of one shape, got "
            f"{noise.shape} and {music.shape}"
        )
    if not (np.all(np.isfinite(noise)) and np.all(np.isfinite(music))):
        raise ParameterError("noise_mel and music_mel must be finite")
    if np.any(noise < 0.0) or np.any(music < 0.0):
        raise ParameterError("noise_mel and music_mel must be non-negative magnitudes")
    return noise, music


def floored_db(power: np.ndarray, floor_db: float = DEFAULT_FLOOR_DB) -> np.ndarray:
    """``10 log10(power)`` relative to the largest value (0 dB), floored at ``floor_db``.

    Args:
        power: non-negative linear power, any shape.
        floor_db: floor in dB (negative).

    Returns:
        float64 array of ``power``'s shape, in dB re the maximum; all ``floor_db`` when
        ``power`` is all zero.
    """
    p = np.asarray(power, dtype=np.float64)
    peak = float(p.max()) if p.size else 0.0
    if peak <= 0.0:
        return np.full(p.shape, float(floor_db))
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(p / peak)
    return np.maximum(db, float(floor_db))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally long 1-D arrays; NaN when either is constant."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ParameterError(f"pearson: arrays differ in length ({x.size} and {y.size})")
    if x.size < 2:
        return math.nan
    if float(np.ptp(x)) == 0.0 or float(np.ptp(y)) == 0.0:
        return math.nan
    x = x - x.mean()
    y = y - y.mean()
    denom = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    if denom == 0.0:
        return math.nan
    return float(np.clip(np.dot(x, y) / denom, -1.0, 1.0))


def spectral_alignment(
    noise_mel: np.ndarray | DiskArray | Cropped,
    music_mel: np.ndarray | DiskArray | Cropped,
    mask: np.ndarray | DiskArray | Cropped | None = None,
    *,
    floor_db: float = DEFAULT_FLOOR_DB,
) -> SpectralAlignment:
    """Correlate the noise's and the music's mel energy over time and over frequency.

    Args:
        noise_mel: float ``(n_mels, frames)`` linear mel magnitude of the noise.
        music_mel: the music's, same shape (its overall gain does not matter).
        mask: optional bool ``(n_mels, frames)`` high-energy mask M of the noise.
        floor_db: each energy curve is floored this far under its own maximum, dB.

    Returns:
        :class:`SpectralAlignment`.
    """
    noise, music = _check_mels(noise_mel, music_mel)
    noise_p = noise * noise
    music_p = music * music
    time_r = pearson(
        floored_db(noise_p.sum(axis=0), floor_db), floored_db(music_p.sum(axis=0), floor_db)
    )
    freq_r = pearson(
        floored_db(noise_p.mean(axis=1), floor_db), floored_db(music_p.mean(axis=1), floor_db)
    )
    share = math.nan
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != noise.shape or m.dtype != np.bool_:
            raise ParameterError(
                f"mask must be bool of shape {noise.shape}, got {m.dtype} {m.shape}"
            )
        total = float(music_p.sum())
        if total > 0.0:
            share = float(music_p[m].sum() / total)
    return SpectralAlignment(time_r, freq_r, share)


def envelope_cross_correlation(
    reference: np.ndarray, other: np.ndarray, max_lag_frames: int
) -> tuple[float, int]:
    """Highest Pearson r between two envelopes over lags ``-max_lag_frames..+max_lag_frames``.

    At lag ``L`` the pairs are ``(reference[t], other[t + L])`` over their overlap, so a
    positive lag means ``other`` comes later.

    Args:
        reference, other: float ``(frames,)`` envelopes of one length.
        max_lag_frames: largest lag in frames (>= 0).

    Returns:
        ``(peak r, lag in frames)``; ``(NaN, 0)`` when no lag gives a defined r. Ties go
        to the smallest absolute lag.
    """
    a = np.asarray(reference, dtype=np.float64).ravel()
    b = np.asarray(other, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ParameterError(f"envelopes differ in length ({a.size} and {b.size})")
    if max_lag_frames < 0:
        raise ParameterError(f"max_lag_frames must be >= 0, got {max_lag_frames}")
    best, best_lag = math.nan, 0
    lags = sorted(range(-max_lag_frames, max_lag_frames + 1), key=abs)
    for lag in lags:
        if lag >= 0:
            x, y = a[: a.size - lag], b[lag:]
        else:
            x, y = a[-lag:], b[: b.size + lag]
        r = pearson(x, y)
        if not math.isnan(r) and (math.isnan(best) or r > best):
            best, best_lag = r, lag
    return best, best_lag


def match_onsets(reference_s: np.ndarray, estimated_s: np.ndarray, tolerance_s: float) -> int:
    """Largest number of one-to-one pairs of onsets closer than ``tolerance_s`` seconds.

    On a line with a symmetric tolerance, walking both sorted lists and pairing the
    earliest compatible onsets is optimal (no bipartite solver needed).
    """
    if tolerance_s < 0.0:
        raise ParameterError(f"tolerance_s must be >= 0, got {tolerance_s}")
    ref = np.sort(np.asarray(reference_s, dtype=np.float64).ravel())
    est = np.sort(np.asarray(estimated_s, dtype=np.float64).ravel())
    i = j = hits = 0
    while i < ref.size and j < est.size:
        d = est[j] - ref[i]
        if abs(d) <= tolerance_s + 1e-9:
            hits += 1
            i += 1
            j += 1
        elif d < 0:
            j += 1
        else:
            i += 1
    return hits


def onset_f_measure(
    reference_s: np.ndarray,
    estimated_s: np.ndarray,
    tolerance_s: float = DEFAULT_TOLERANCE_MS / 1000.0,
) -> tuple[float, float, float]:
    """Onset precision, recall and F-measure of ``estimated_s`` against ``reference_s``.

    Args:
        reference_s: reference onset times in seconds (here: the noise's).
        estimated_s: onset times to score in seconds (here: the music's).
        tolerance_s: a pair matches when the times differ by at most this, seconds.

    Returns:
        ``(precision, recall, f_measure)`` in 0..1; precision is NaN without estimated
        onsets, recall NaN without reference onsets, F NaN when either is.
    """
    ref = np.asarray(reference_s).ravel()
    est = np.asarray(estimated_s).ravel()
    hits = match_onsets(ref, est, tolerance_s)
    precision = hits / est.size if est.size else math.nan
    recall = hits / ref.size if ref.size else math.nan
    if math.isnan(precision) or math.isnan(recall):
        return precision, recall, math.nan
    f = 0.0 if precision + recall == 0.0 else 2.0 * precision * recall / (precision + recall)
    return precision, recall, f


def rhythmic_alignment(
    noise_audio: np.ndarray,
    music_audio: np.ndarray,
    *,
    max_lag_ms: float = DEFAULT_MAX_LAG_MS,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
) -> RhythmicAlignment:
    """Compare the music's onsets with the noise's.

    The onset envelopes and onsets are those the pipeline's analysis uses
    (:func:`bnmusic_bridge.analysis.onset_envelope`, :func:`~bnmusic_bridge.analysis.pick_onsets`):
    spectral flux in eight log-spaced bands, one value per 10 ms frame.

    Args:
        noise_audio: mono float ``(samples,)`` at 44.1 kHz.
        music_audio: mono float ``(samples,)`` at 44.1 kHz, the same length.
        max_lag_ms: the cross-correlation searches lags within +- this, ms.
        tolerance_ms: onset-matching tolerance of the F-measure, ms.

    Returns:
        :class:`RhythmicAlignment`.
    """
    from .analysis import onset_envelope, pick_onsets
    from .spectrogram import num_frames

    noise = np.asarray(noise_audio, dtype=np.float64)
    music = np.asarray(music_audio, dtype=np.float64)
    if noise.ndim != 1 or noise.shape != music.shape:
        raise ParameterError(
            f"noise_audio and music_audio must be mono (samples,) of one length, got "
            f"{noise.shape} and {music.shape}"
        )
    if max_lag_ms < 0.0 or tolerance_ms < 0.0:
        raise ParameterError(
            f"max_lag_ms={max_lag_ms} and tolerance_ms={tolerance_ms} must be >= 0"
        )
    frames = num_frames(noise.size)
    noise_env = onset_envelope(noise, frames)
    if np.any(music):
        music_env = onset_envelope(music, frames)
        music_onsets = pick_onsets(music_env)
    else:
        music_env = np.zeros(frames)
        music_onsets = np.zeros(0)
    noise_onsets = pick_onsets(noise_env)
    max_lag = int(round(max_lag_ms / 1000.0 * FRAME_RATE_HZ))
    r, lag = envelope_cross_correlation(noise_env, music_env, max_lag)
    precision, recall, f = onset_f_measure(noise_onsets, music_onsets, tolerance_ms / 1000.0)
    return RhythmicAlignment(
        envelope_correlation=r,
        envelope_lag_ms=lag * 1000.0 / FRAME_RATE_HZ,
        onset_precision=precision,
        onset_recall=recall,
        onset_f_measure=f,
        noise_onsets=int(noise_onsets.size),
        music_onsets=int(music_onsets.size),
    )
