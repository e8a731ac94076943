"""How well the music masks the noise: coverage of the high-energy mask, and NMR; and how
a mix engineer would meter the result: true peak (:func:`true_peak_dbtp`) and how the
lane moves (:func:`lane_motion`).

Arrays are on the analysis grid of the whole stem: float ``(n_mels=512, frames)`` linear
mel magnitude, mel orientation (row 0 = lowest band), one frame per 10 ms. ``gain`` is a
LINEAR gain on the unity-gain music: a scalar, or one value per frame ``(frames,)`` (a
lambda lane sampled at the frames, ``10 ** (frame_gain_db / 20)``).

Whole-stem inputs (mels, the field's arrays, the mask, audio) are block arrays
(:mod:`bnmusic_bridge.scratch`: numpy or :class:`~bnmusic_bridge.scratch.DiskArray`),
metered frame block by frame block (sample block by sample block for audio); per-frame
results are small numpy vectors.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from .errors import ParameterError
from .masking import MaskingField, ath_mel_magnitude, gain_per_frame
from .result import LaneMotion
from .scratch import BlockArray

DISTURBED_MARGIN_DB = 1.5
"""PEAQ: a frame is disturbed when some band's noise exceeds its mask by more than this, dB."""


def _check_mask(field: MaskingField, mask: BlockArray) -> BlockArray:
    # shape and dtype only: the mask may be a scratch file, read by blocks later
    if tuple(mask.shape) != tuple(field.required.shape) or mask.dtype != np.bool_:
        raise ParameterError(
            f"mask must be bool of shape {field.required.shape}, got {mask.dtype} of shape "
            f"{tuple(mask.shape)}"
        )
    return mask


class Rows:
    """A 1-D ``(samples,)`` or 2-D ``(channels, samples)`` block array seen as 2-D:
    ``view[:, a:b]`` is ``x[:, a:b]`` (``x[a:b][None, :]`` for 1-D), cast to ``dtype``
    when one is given (as ``np.asarray(x, dtype)`` would cast the whole), slice by slice:
    no whole copy.
    """

    def __init__(self, x: BlockArray, dtype: Any = None) -> None:
        shape = tuple(x.shape)
        if len(shape) not in (1, 2):
            raise ParameterError(f"audio must be (channels, samples) or (samples,), got {shape}")
        self.x = x
        self.flat = len(shape) == 1
        self.shape: tuple[int, int] = (1, shape[0]) if self.flat else (shape[0], shape[1])
        self.dtype = np.dtype(x.dtype if dtype is None else dtype)
        self.ndim = 2

    def __getitem__(self, key: Any) -> np.ndarray:
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], slice)):
            raise IndexError(f"Rows takes [rows, a:b], got {key!r}")
        rows, cols = key
        part = np.asarray(self.x[cols])[None, :] if self.flat else np.asarray(self.x[:, cols])
        part = part.astype(self.dtype, copy=False)
        if not (isinstance(rows, slice) and rows == slice(None)):
            part = part[rows]
        return part


def as_rows(x: BlockArray, dtype: Any = None) -> BlockArray:
    """``x`` as a 2-D ``(channels, samples)`` block array: ``x`` itself when it is 2-D
    and of ``dtype`` (or no dtype is asked for), else a :class:`Rows` view."""
    if len(x.shape) == 2 and (dtype is None or np.dtype(dtype) == x.dtype):
        return x
    return Rows(x, dtype)


def coverage(
    field: MaskingField, mask: BlockArray, gain: float | np.ndarray
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
    hit, per_bins = masked_counts(field, mask, gain)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_frame = np.where(per_bins > 0, hit / np.maximum(per_bins, 1), np.nan)
    total = int(per_bins.sum())
    overall = float(hit.sum() / total) if total > 0 else 1.0
    return overall, per_frame.astype(np.float64)


METER_BLOCK_FRAMES = 2048
"""Frames metered at a time (about 20 s): the float64 work arrays of coverage and NMR stay
about 8 MB each whatever the stem's length; frames are independent, so the results are
the whole array's, bit for bit."""


def frame_blocks(num_frames: int, size: int | None = None) -> list[tuple[int, int]]:
    """``(start, stop)`` frame ranges of at most ``size`` (default
    :data:`METER_BLOCK_FRAMES`) covering ``0..num_frames``."""
    step = METER_BLOCK_FRAMES if size is None else size
    return [(a, min(a + step, num_frames)) for a in range(0, num_frames, step)]


def masked_block(field: MaskingField, gain: np.ndarray, start: int, stop: int) -> np.ndarray:
    """:meth:`MaskingField.masked` of frames ``start..stop`` only: bool ``(n_mels,
    stop - start)``; ``gain`` is float64 ``(frames,)`` for the whole field (linear)."""
    return field.masked_block(gain, start, stop)


def masked_counts(
    field: MaskingField, mask: BlockArray, gain: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the mask bins the music masks at ``gain`` and the mask bins in all.

    Args:
        field: the masking field ``(n_mels, frames)``.
        mask: bool ``(n_mels, frames)``, the high-energy mask M.
        gain: linear gain, scalar or ``(frames,)``.

    Returns:
        ``(hit, bins)``: int ``(frames,)`` each; a window's coverage is
        ``hit[a:b].sum() / bins[a:b].sum()``.
    """
    m = _check_mask(field, mask)
    g = gain_per_frame(gain, field.num_frames)
    per_bins = np.empty(field.num_frames, dtype=np.int_)
    hit = np.empty(field.num_frames, dtype=np.int_)
    # in blocks of frames: the float64 products of a long stem would not fit in memory
    for a, b in frame_blocks(field.num_frames):
        block = m[:, a:b]
        per_bins[a:b] = block.sum(axis=0)
        hit[a:b] = (masked_block(field, g, a, b) & block).sum(axis=0)
    return hit, per_bins


def _noise_to_mask_power(
    noise_mel: np.ndarray, field: MaskingField, gain: float | np.ndarray
) -> np.ndarray:
    """Per-bin noise power / masking-threshold power, float64 ``(n_mels, frames)``, of
    numpy arrays (one block of frames: the callers walk a stem block by block).

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
    thr = (
        np.asarray(field.capacity).astype(np.float64)
        * (g * 10.0 ** (-field.margin_db / 20.0))[None, :]
    )
    ath = ath_mel_magnitude()
    if ath.shape[0] != noise.shape[0]:
        raise ParameterError(
            f"noise_mel must have {ath.shape[0]} mel bands, got shape {noise.shape}"
        )
    thr_power = thr * thr + (ath * ath)[:, None]
    return noise * noise / thr_power


def _check_noise_mel(noise_mel: BlockArray, field: MaskingField) -> None:
    if tuple(noise_mel.shape) != tuple(field.required.shape):
        raise ParameterError(
            f"noise_mel shape {tuple(noise_mel.shape)} differs from the field's "
            f"{field.required.shape}"
        )


def nmr_db(
    noise_mel: BlockArray, field: MaskingField, gain: float | np.ndarray
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
    _check_noise_mel(noise_mel, field)
    g = gain_per_frame(gain, field.num_frames)
    per_frame = np.empty(field.num_frames, dtype=np.float64)
    # in blocks of frames (each frame's mean is over its own bands: the same sums)
    for a, b in frame_blocks(field.num_frames):
        sub = MaskingField(
            field.required[:, a:b], field.capacity[:, a:b], field.model, field.margin_db
        )
        per_frame[a:b] = _noise_to_mask_power(noise_mel[:, a:b], sub, g[a:b]).mean(axis=0)
    with np.errstate(divide="ignore"):
        per_frame_db = 10.0 * np.log10(per_frame)
        total_db = float(10.0 * np.log10(per_frame.mean())) if per_frame.size else -np.inf
    return total_db, per_frame_db


def relative_disturbed_frames(
    noise_mel: BlockArray,
    field: MaskingField,
    gain: float | np.ndarray,
    margin_db: float = DISTURBED_MARGIN_DB,
) -> float:
    """PEAQ's relative disturbed frames: share (0..1) of frames where some band's noise
    power exceeds its masking threshold by more than ``margin_db`` dB."""
    _check_noise_mel(noise_mel, field)
    if field.num_frames == 0:
        return 0.0
    g = gain_per_frame(gain, field.num_frames)
    disturbed = np.empty(field.num_frames, dtype=bool)
    for a, b in frame_blocks(field.num_frames):
        sub = MaskingField(
            field.required[:, a:b], field.capacity[:, a:b], field.model, field.margin_db
        )
        ratio = _noise_to_mask_power(noise_mel[:, a:b], sub, g[a:b])
        disturbed[a:b] = (ratio > 10.0 ** (margin_db / 10.0)).any(axis=0)
    return float(disturbed.mean())


_TRUE_PEAK_CHUNK = 1 << 18
"""Samples per block of the true-peak meter (bounded memory on hour-long stems)."""
_TRUE_PEAK_PAD = 64
"""Samples of context each block borrows from its neighbours (the interpolation filter's
half length is 40 at 4x)."""


def _blocks_f64(audio: BlockArray, plus: BlockArray | None):  # type: ignore[no-untyped-def]
    """``audio`` (+ ``plus``) as 2-D ``(channels, samples)`` block arrays, and a reader
    of float64 blocks: ``read(a, b) = audio[:, a:b].astype(float64) (+ plus[:, a:b])``,
    no whole copy (1-D inputs are one channel)."""
    arr = as_rows(audio)
    other = None
    if plus is not None:
        other = as_rows(plus)
        if tuple(other.shape) != tuple(arr.shape):
            raise ParameterError(f"plus has shape {tuple(other.shape)}, the audio {arr.shape}")

    def read(a: int, b: int) -> np.ndarray:
        part = arr[:, a:b].astype(np.float64)
        return part if other is None else part + other[:, a:b]

    return arr, read


def sample_peak_dbfs(audio: BlockArray, *, plus: BlockArray | None = None) -> float:
    """Largest ``|x|`` over all channels and samples in dBFS (-inf for silence), metered
    block by block.

    ``plus``: an array of the same shape added (in float64) first: the peak of a mix,
    metered block by block without a copy of it.
    """
    arr, read = _blocks_f64(audio, plus)
    peak = 0.0
    for lo in range(0, arr.shape[1], _TRUE_PEAK_CHUNK):
        hi = min(lo + _TRUE_PEAK_CHUNK, arr.shape[1])
        part = read(lo, hi) if plus is not None else arr[:, lo:hi]
        if part.size:
            peak = max(peak, float(np.max(np.abs(part))))
    return 20.0 * math.log10(peak) if peak > 0.0 else -math.inf


def true_peak_dbtp(
    audio: BlockArray, sample_rate_hz: int, *, plus: BlockArray | None = None
) -> float:
    """True peak as ITU-R BS.1770-4 Annex 2 meters it: the sample peak of the signal
    oversampled to at least 176.4 kHz (4x at 44.1 and 48 kHz, 2x at 88.2 and 96 kHz),
    in dB true peak; never under the sample peak.

    Args:
        audio: float ``(channels, samples)`` or ``(samples,)``, linear; a block array
            (numpy or :class:`~bnmusic_bridge.scratch.DiskArray`), read block by block.
        sample_rate_hz: its rate, Hz.
        plus: optional array of the same shape added (in float64) first: the true peak
            of a mix, metered block by block without a copy of it.

    Returns:
        dBTP (-inf for silence).
    """
    if sample_rate_hz <= 0:
        raise ParameterError(f"sample_rate_hz must be > 0, got {sample_rate_hz}")
    arr, read = _blocks_f64(audio, plus)
    factor = max(1, math.ceil(176_400 / sample_rate_hz))
    n = arr.shape[1]
    peak = 0.0
    block_peaks = []
    for lo in range(0, n, _TRUE_PEAK_CHUNK):
        part = read(lo, min(lo + _TRUE_PEAK_CHUNK, n))
        block_peaks.append(float(np.max(np.abs(part))) if part.size else 0.0)
        peak = max(peak, block_peaks[-1])
    if factor > 1 and n > 1:
        from scipy.signal import resample_poly

        # Loudest blocks first; a block whose samples (with the context it borrows) are
        # too quiet for its interpolation to reach the peak found so far cannot change
        # the maximum, so the rest are skipped: the same peak, far fewer resamplings.
        gain = _interpolation_gain(factor)
        starts = list(range(0, n, _TRUE_PEAK_CHUNK))
        reach = [  # the block's samples and its neighbours' (the context is < a block)
            max(block_peaks[max(0, i - 1) : i + 2]) for i in range(len(starts))
        ]
        for i in sorted(range(len(starts)), key=lambda k: -reach[k]):
            if reach[i] * gain < peak:
                break
            lo = starts[i]
            hi = min(n, lo + _TRUE_PEAK_CHUNK)
            a, b = max(0, lo - _TRUE_PEAK_PAD), min(n, hi + _TRUE_PEAK_PAD)
            up = resample_poly(read(a, b), factor, 1, axis=1)
            # keep only the block's own span (its edges see the zero padding)
            up = up[:, (lo - a) * factor : (hi - a) * factor]
            peak = max(peak, float(np.max(np.abs(up))) if up.size else 0.0)
    return 20.0 * math.log10(peak) if peak > 0.0 else -math.inf


@functools.lru_cache(maxsize=8)
def _interpolation_gain(factor: int) -> float:
    """An upper bound of ``max|resample_poly(x, factor, 1)| / max|x|``: the largest sum
    of absolute taps over the filter's phases, measured on an impulse (so it is the
    filter scipy uses), with a margin for the rounding of the sums."""
    from scipy.signal import resample_poly

    impulse = np.zeros(4 * _TRUE_PEAK_PAD + 1)
    impulse[2 * _TRUE_PEAK_PAD] = 1.0
    taps = np.abs(resample_poly(impulse, factor, 1))
    return float(max(taps[p::factor].sum() for p in range(factor))) * (1.0 + 1e-9) + 1e-12


MOTION_SPIKE_DB = 0.05
"""A lane spike stands more than this off its running median, dB."""
MOTION_SPIKE_FRAMES = 5
"""... for at most this many frames (50 ms)."""
_MOTION_MEDIAN_FRAMES = 9
_MOTION_STILL_DB = 1e-9
"""Frame steps under this (dB) are flat: no direction."""


def lane_motion(
    gain_db: np.ndarray, frame_period_s: float, max_slew_db_per_s: float | None
) -> LaneMotion:
    """How a lane on a regular frame grid moves (:class:`~bnmusic_bridge.result.LaneMotion`):
    the share of time at the slew limit, its turns (rise to fall and back) per second and
    the shortest gap between two, the median range within 1 s, and short spikes.

    A turn is counted where a step's direction differs from the last moving step's; it
    happens at the first step of the new direction. Flat stretches (steps under 1e-9 dB)
    have no direction, so a hold between a fall and a rise is one turn, after the hold.

    Args:
        gain_db: float ``(frames,)`` the lane, dB.
        frame_period_s: time between frames, s (0.01 on the analysis grid).
        max_slew_db_per_s: the lane's slew limit, dB/s (None: no limit; the slew share
            is then 0).

    Returns:
        :class:`~bnmusic_bridge.result.LaneMotion`.
    """
    x = np.asarray(gain_db, dtype=np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise ParameterError(f"gain_db must be finite (frames,), got shape {x.shape}")
    if not frame_period_s > 0.0:
        raise ParameterError(f"frame_period_s must be > 0, got {frame_period_s}")
    duration_s = x.size * frame_period_s
    d = np.diff(x)
    if d.size == 0:
        return LaneMotion(duration_s, 0.0, 0.0, 0, 0.0, None, 0.0, 0)
    step = math.inf if max_slew_db_per_s is None else max_slew_db_per_s * frame_period_s
    slew_share = float(np.mean(np.abs(d) >= 0.95 * step)) if math.isfinite(step) else 0.0
    moving_share = float(np.mean(np.abs(d) > 1e-3))
    moving = np.nonzero(np.abs(d) > _MOTION_STILL_DB)[0]
    signs = np.sign(d[moving])
    turn_at = moving[1:][signs[1:] != signs[:-1]]
    gaps = np.diff(turn_at) * frame_period_s
    span = max(1, int(round(1.0 / frame_period_s)))
    if x.size > span:
        from numpy.lib.stride_tricks import sliding_window_view

        win = sliding_window_view(x, span + 1)
        swing = float(np.median(win.max(axis=1) - win.min(axis=1)))
    else:
        swing = float(np.ptp(x))
    return LaneMotion(
        duration_s=duration_s,
        slew_share=slew_share,
        moving_share=moving_share,
        turns=int(turn_at.size),
        turns_per_s=float(turn_at.size / duration_s),
        min_turn_gap_s=float(gaps.min()) if gaps.size else None,
        median_swing_1s_db=swing,
        spikes=_count_spikes(x),
    )


def _count_spikes(x: np.ndarray) -> int:
    """Runs of at most :data:`MOTION_SPIKE_FRAMES` frames standing more than
    :data:`MOTION_SPIKE_DB` off the lane's running median over 9 frames."""
    if x.size < _MOTION_MEDIAN_FRAMES:
        return 0
    from scipy.ndimage import median_filter

    off = np.abs(x - median_filter(x, _MOTION_MEDIAN_FRAMES, mode="nearest")) > MOTION_SPIKE_DB
    if not off.any():
        return 0
    edges = np.diff(np.concatenate([[0], off.astype(np.int8), [0]]))
    starts, stops = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return int(np.sum(stops - starts <= MOTION_SPIKE_FRAMES))
