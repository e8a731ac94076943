"""Masking thresholds on the Riffusion mel grid (Stage 2, first half).

Every array here is on the analysis grid of the whole stem: float ``(n_mels=512, frames)``
of LINEAR MEL MAGNITUDE as :func:`bnmusic_bridge.spectrogram.audio_to_mel` returns it
(1.0 = full-scale audio), mel orientation (row 0 = lowest band, 0..10 kHz HTK mel), one
frame per 10 ms (frame ``j`` centred on sample ``j * 441`` at 44.1 kHz).

A :class:`MaskingField` says, per time-frequency bin, how much masker the noise needs
(``required``) and how much masking the music delivers per unit of linear gain
(``capacity``). A bin is masked at linear gain ``g`` iff ``g * capacity >= required``.
Two models fill it:

* ``smr`` (the paper): the music masks a bin when it is ``smr_db`` (the paper takes
  Painter and Spanias' tone-masking-noise SMR) above the noise in that very bin:
  ``required = noise * 10 ** (smr_db / 20)``, ``capacity = music``.
* ``spreading`` (ours, beyond the paper): ISO/MPEG psychoacoustic model 1 as simplified
  by Qin et al. 2019, run directly on the mel bands with the music as masker and the noise
  as maskee: ``required = noise`` (0 where the noise lies under the absolute threshold of
  hearing), ``capacity`` = the music's global masking threshold at unity gain, as a mel
  magnitude.

Whole-stem arrays (the mels, ``required``, ``capacity``) are block arrays
(:mod:`bnmusic_bridge.scratch`): numpy arrays or :class:`~bnmusic_bridge.scratch.DiskArray`
scratch files, read and written here only by frame slices ``x[:, a:b]``, so an hour-long
stem's field never sits in memory whole. Every value is computed per bin, so the blocks
give the whole array's values bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import numpy as np

from . import scratch
from .errors import ParameterError
from .request import THRESHOLD_MODELS
from .scratch import ArrayStore, BlockArray
from .spectrogram import (
    DEFAULT_PARAMS,
    SpectrogramParams,
    mel_center_hz,
    mel_filterbank,
)

FULL_SCALE_DB_SPL = 96.0
"""Sound pressure level a full-scale (0 dBFS) sine is taken to play at, dB SPL (the
MPEG/PAM-1 convention: 16-bit full scale <-> 96 dB)."""

MASKER_MIN_DISTANCE_BARK = 0.5
"""PAM-1: of two maskers closer than this, only the louder one is kept, Bark."""

_SLOPE_CLASS_RATIO = 1.15
"""Neighbouring upper-slope classes differ by this factor in dB/Bark (-27, -23.5, ...):
geometric, so two classes part by the same few dB where a masker's spread is 40 dB down,
whatever its slope (see :func:`masking_threshold_power`)."""
_SHALLOWEST_SLOPE_DB_PER_BARK = -1.0
"""PAM-1's upper slope reaches 0 dB/Bark at P = 113 dB SPL and rises beyond; ours stops
at this (maskers over 111 dB SPL, louder than a full-scale sine's 96 dB band level)."""
_SLOPE_FIT_DB = 40.0
"""A masker's split between its two slope classes is exact this far under its peak, dB."""


@dataclass(frozen=True)
class MaskingField:
    """What the noise needs and what the music gives, per mel bin.

    Attributes:
        required: float32 ``(n_mels, frames)``, mel orientation: the masker magnitude
            (linear mel magnitude, on ``capacity``'s scale) a bin needs to be masked;
            0 where the bin needs nothing (no noise, or noise under the threshold of
            hearing).
        capacity: float32 ``(n_mels, frames)``: the masking the music delivers in each
            bin at linear gain 1 (unity), linear mel magnitude; it scales linearly with
            the gain.
        model: ``"smr"`` or ``"spreading"``.
        margin_db: how far ``required`` sits above the noise's own magnitude on audible
            bins, dB (``smr_db`` for ``smr``, 0 for ``spreading``); metering uses it to
            express the threshold in noise units.

    A bin is masked at linear gain ``g`` (a scalar, or one value per frame) iff
    ``g * capacity >= required``.
    """

    required: BlockArray
    capacity: BlockArray
    model: str
    margin_db: float = 0.0

    def __post_init__(self) -> None:
        if self.model not in THRESHOLD_MODELS:
            raise ParameterError(f"model must be one of {THRESHOLD_MODELS}, got {self.model!r}")
        # shapes only: reading a DiskArray whole to check it would defeat its purpose
        req, cap = tuple(self.required.shape), tuple(self.capacity.shape)
        if len(req) != 2 or req != cap:
            raise ParameterError(
                "required and capacity must be 2-D (n_mels, frames) of one shape, got "
                f"{req} and {cap}"
            )

    @property
    def num_frames(self) -> int:
        """Number of 10 ms frames (columns)."""
        return int(self.required.shape[1])

    def required_gain_block(self, start: int, stop: int) -> np.ndarray:
        """:meth:`required_gain` of frames ``start..stop`` only: float64 ``(n_mels,
        stop - start)`` linear gain."""
        return _required_gain(self.required[:, start:stop], self.capacity[:, start:stop])

    def required_gain(self, *, store: ArrayStore | None = None) -> np.ndarray | BlockArray:
        """Lowest linear gain that masks each bin: ``required / capacity``.

        Args:
            store: where the whole-stem result lives (None: a numpy array).

        Returns:
            float64 ``(n_mels, frames)``: the smallest float64 ``g`` with
            ``masked(g)`` true in that bin; 0 where ``required == 0`` (masked at any
            gain), inf where ``required > 0`` and ``capacity == 0`` (never masked).
        """
        out = _store(store).empty(self.required.shape, np.float64)
        for a, b in scratch.blocks(self.num_frames, scratch.BLOCK_FRAMES):
            out[:, a:b] = self.required_gain_block(a, b)
        return out

    def masked_block(self, gain: np.ndarray, start: int, stop: int) -> np.ndarray:
        """:meth:`masked` of frames ``start..stop`` only: bool ``(n_mels, stop - start)``.

        Args:
            gain: float64 ``(frames,)`` linear gain for the whole field
                (:func:`gain_per_frame`).
        """
        cap = self.capacity[:, start:stop].astype(np.float64)
        return gain[None, start:stop] * cap >= self.required[:, start:stop]

    def masked(
        self, gain: float | np.ndarray, *, store: ArrayStore | None = None
    ) -> np.ndarray | BlockArray:
        """Bool ``(n_mels, frames)``: True where ``gain * capacity >= required``.

        Args:
            gain: linear gain, a scalar or one value per frame ``(frames,)``.
            store: where the whole-stem result lives (None: a numpy array).
        """
        g = gain_per_frame(gain, self.num_frames)
        out = _store(store).empty(self.required.shape, np.bool_)
        for a, b in scratch.blocks(self.num_frames, scratch.BLOCK_FRAMES):
            out[:, a:b] = self.masked_block(g, a, b)
        return out


def _store(store: ArrayStore | None) -> ArrayStore:
    """``store``, or numpy arrays (:class:`~bnmusic_bridge.scratch.MemoryStore`) for None."""
    # cast: the protocol's plain ``on_disk`` attribute does not match the frozen
    # dataclass's read-only one for mypy, though both answer it
    return cast(ArrayStore, scratch.MemoryStore()) if store is None else store


def _required_gain(required: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """``required / capacity`` per bin as :meth:`MaskingField.required_gain` defines it
    (float64; 0 where nothing is required, inf where nothing can mask)."""
    req = np.asarray(required, dtype=np.float64)
    cap = np.asarray(capacity, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = masking_gain(req, cap)
    gain[req <= 0.0] = 0.0
    gain[(req > 0.0) & (cap <= 0.0)] = np.inf
    return gain


def masking_gain(required: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """``required / capacity`` in float64, rounded up to the smallest ``g`` with
    ``g * capacity >= required`` in float64 (the plain quotient can land one ulp short).

    Args:
        required, capacity: float64 arrays of one shape, ``capacity > 0``.
    """
    gain = required / capacity
    short = gain * capacity < required
    gain[short] = np.nextafter(gain[short], np.inf)
    return gain


def gain_per_frame(gain: float | np.ndarray, num_frames: int) -> np.ndarray:
    """A linear gain (scalar or ``(frames,)``) as a float64 ``(frames,)`` array.

    Raises:
        ParameterError: the gain has the wrong length, or is negative or NaN.
    """
    g = np.asarray(gain, dtype=np.float64)
    if g.ndim == 0:
        g = np.full(num_frames, float(g))
    elif g.shape != (num_frames,):
        raise ParameterError(
            f"gain must be a scalar or one value per frame ({num_frames},), got shape {g.shape}"
        )
    if np.any(np.isnan(g)) or np.any(g < 0.0):
        raise ParameterError("gain must be >= 0 and not NaN (linear gain)")
    return g


def _float32(part: np.ndarray) -> np.ndarray:
    """A block of a mel as float32 (no copy when it is already)."""
    return np.asarray(part, dtype=np.float32)


def _check_pair(noise_mel: BlockArray, music_mel: BlockArray) -> None:
    """Check that both mels are 2-D of one shape, finite and >= 0 (as float32), frame
    block by frame block."""
    noise_shape, music_shape = tuple(noise_mel.shape), tuple(music_mel.shape)
    if len(noise_shape) != 2 or noise_shape != music_shape:
        raise ParameterError(
            "noise_mel and music_mel must be 2-D (n_mels, frames) of one shape, got "
            f"{noise_shape} and {music_shape}"
        )
    for name, arr in (("noise_mel", noise_mel), ("music_mel", music_mel)):
        for a, b in scratch.blocks(noise_shape[1], scratch.BLOCK_FRAMES):
            part = _float32(arr[:, a:b])
            if not np.all(np.isfinite(part)):
                raise ParameterError(f"{name} holds NaN or inf values")
            if np.any(part < 0.0):
                raise ParameterError(f"{name} holds negative values; expected a linear magnitude")


def _readonly_float32(music_mel: BlockArray, store: ArrayStore) -> BlockArray:
    """``music_mel`` as a float32 block array without a copy where it is one already (a
    read-only view of a numpy array; a block array as it is); else a float32 copy in
    ``store``, written block by block."""
    if music_mel.dtype == np.float32:
        if isinstance(music_mel, np.ndarray):
            view = music_mel.view()
            view.flags.writeable = False
            return view
        return music_mel
    return scratch.copy_into(store, music_mel, scratch.BLOCK_FRAMES, np.float32)


def smr_field(
    noise_mel: BlockArray,
    music_mel: BlockArray,
    smr_db: float,
    *,
    store: ArrayStore | None = None,
    progress: Callable[[float], None] | None = None,
) -> MaskingField:
    """The paper's threshold: the music must exceed the noise by ``smr_db`` in each bin.

    Args:
        noise_mel: float ``(n_mels, frames)`` linear mel magnitude of the noise (a block
            array: numpy or :class:`~bnmusic_bridge.scratch.DiskArray`).
        music_mel: same shape, the music at unity gain (loudness-matched to the noise).
        smr_db: signal-to-mask ratio in dB (``RenderRequest.smr_db``).
        store: where ``required`` lives (None: a numpy array).
        progress: called with the share of frames done after each block (a cancel
            raised from it stops the field there).

    Returns:
        ``required = noise * 10 ** (smr_db / 20)``, ``capacity = music`` (float32;
        ``capacity`` is ``music_mel`` itself, read-only, when it is float32).
    """
    if not np.isfinite(smr_db):
        raise ParameterError(f"smr_db must be finite, got {smr_db}")
    _check_pair(noise_mel, music_mel)
    store = _store(store)
    scale = np.float32(10.0 ** (smr_db / 20.0))
    required = store.empty(tuple(noise_mel.shape), np.float32)
    for a, b in scratch.blocks(noise_mel.shape[1], scratch.BLOCK_FRAMES):
        required[:, a:b] = _float32(noise_mel[:, a:b]) * scale
        if progress is not None:
            progress(b / noise_mel.shape[1])
    # capacity is the music itself, read-only (a copy would cost 2 kB a frame: 0.7 GB
    # for an hour)
    return MaskingField(
        required=required,
        capacity=_readonly_float32(music_mel, store),
        model="smr",
        margin_db=float(smr_db),
    )


# --- psychoacoustic model 1 on the mel grid -------------------------------------------


def bark(freq_hz: np.ndarray) -> np.ndarray:
    """Bark of a frequency in Hz (Zwicker): ``13 atan(0.00076 f) + 3.5 atan((f/7500)^2)``."""
    f = np.asarray(freq_hz, dtype=np.float64)
    return 13.0 * np.arctan(0.00076 * f) + 3.5 * np.arctan((f / 7500.0) ** 2)


def ath_db_spl(freq_hz: np.ndarray) -> np.ndarray:
    """Absolute threshold of hearing in dB SPL (Terhardt, as in PAM-1), f in Hz (> 0)."""
    f_khz = np.asarray(freq_hz, dtype=np.float64) / 1000.0
    return 3.64 * f_khz**-0.8 - 6.5 * np.exp(-0.6 * (f_khz - 3.3) ** 2) + 0.001 * f_khz**4 - 12.0


def _hann_dtft_magnitude(
    offset_hz: np.ndarray, win_samples: int, sample_rate_hz: int
) -> np.ndarray:
    """``|W(offset)|`` of a periodic Hann window of ``win_samples`` (sum = N/2 at 0 Hz)."""
    n = float(win_samples)
    omega = 2.0 * np.pi * np.asarray(offset_hz, dtype=np.float64) / sample_rate_hz

    def dirichlet(w: np.ndarray) -> np.ndarray:
        half = np.sin(w / 2.0)
        small = np.abs(half) < 1e-12
        out = np.empty_like(w)
        out[~small] = np.sin(n * w[~small] / 2.0) / half[~small]
        out[small] = n
        return out

    # periodic Hann = 0.5 - 0.5 cos(2 pi t / N): three shifted Dirichlet kernels whose
    # common linear phase drops out of the magnitude.
    phase = np.exp(1j * np.pi * (n - 1.0) / n)
    spec = (
        0.5 * dirichlet(omega)
        - 0.25 * dirichlet(omega - 2.0 * np.pi / n) * phase
        - 0.25 * dirichlet(omega + 2.0 * np.pi / n) / phase
    )
    return np.abs(spec)


@lru_cache(maxsize=4)
def _sine_response(params: SpectrogramParams) -> np.ndarray:
    fb = mel_filterbank(params).astype(np.float64)
    centers = mel_center_hz(params)
    bin_hz = np.linspace(0.0, params.sample_rate_hz // 2, params.n_freqs)
    band, freq_bin = np.nonzero(fb)
    mag = _hann_dtft_magnitude(
        bin_hz[freq_bin] - centers[band], params.win_samples, params.sample_rate_hz
    )
    # A unit sine puts half the window's transform on each side; only the positive
    # side reaches the band (the mirror image matters only for bands under ~20 Hz,
    # far under the threshold of hearing).
    response = np.zeros(params.n_mels)
    np.add.at(response, band, 0.5 * fb[band, freq_bin] * mag)
    response.setflags(write=False)
    return response


def sine_response(params: SpectrogramParams = DEFAULT_PARAMS) -> np.ndarray:
    """Mel magnitude a full-scale (amplitude 1.0) sine at each band's centre gives in that band.

    Computed from the window's transform and the filterbank (what
    :func:`~bnmusic_bridge.spectrogram.audio_to_mel` of a long sine returns, to float
    precision). float64 ``(n_mels,)``; read-only.
    """
    return _sine_response(params)


def calibration_db(
    params: SpectrogramParams = DEFAULT_PARAMS, full_scale_db_spl: float = FULL_SCALE_DB_SPL
) -> np.ndarray:
    """dB to add to ``20 log10(mel magnitude)`` to get dB SPL, per band ``(n_mels,)``.

    Fixed for every signal (no per-signal normalisation, since music and noise are
    compared): a full-scale sine at a band's centre reads ``full_scale_db_spl`` in that
    band.
    """
    return full_scale_db_spl - 20.0 * np.log10(sine_response(params))


def ath_mel_magnitude(
    params: SpectrogramParams = DEFAULT_PARAMS, full_scale_db_spl: float = FULL_SCALE_DB_SPL
) -> np.ndarray:
    """The absolute threshold of hearing at each band centre as a mel magnitude, ``(n_mels,)``."""
    ath = ath_db_spl(mel_center_hz(params))
    return 10.0 ** ((ath - calibration_db(params, full_scale_db_spl)) / 20.0)


@dataclass(frozen=True)
class _BandGeometry:
    bark: np.ndarray  # (n_mels,)
    ath_db: np.ndarray  # (n_mels,)
    ath_power: np.ndarray  # (n_mels,), 10 ** (ath_db / 10)
    cal_db: np.ndarray  # (n_mels,)


@lru_cache(maxsize=8)
def _geometry(params: SpectrogramParams, full_scale_db_spl: float) -> _BandGeometry:
    ath = ath_db_spl(mel_center_hz(params))
    return _BandGeometry(
        bark=bark(mel_center_hz(params)),
        ath_db=ath,
        ath_power=10.0 ** (ath / 10.0),
        cal_db=calibration_db(params, full_scale_db_spl),
    )


@dataclass(frozen=True)
class Maskers:
    """The tonal maskers PAM-1 keeps, as coordinates into a ``(n_mels, frames)`` array.

    Attributes:
        band: int ``(n,)`` mel band of each masker (row index); maskers are ordered
            by frame, then band.
        frame: int ``(n,)`` frame of each masker (column index).
        level_db_spl: float64 ``(n,)`` masker level P, dB SPL (power sum of the band and
            its two neighbours).
    """

    band: np.ndarray
    frame: np.ndarray
    level_db_spl: np.ndarray


def find_maskers(
    power_spl: np.ndarray,
    params: SpectrogramParams = DEFAULT_PARAMS,
    full_scale_db_spl: float = FULL_SCALE_DB_SPL,
) -> Maskers:
    """PAM-1 step 4: the maskers of a calibrated band power ``(n_mels, frames)``.

    Args:
        power_spl: linear band power on the dB SPL scale (``10 log10`` of it is dB SPL),
            e.g. ``mel ** 2 * 10 ** (calibration_db / 10)``.

    A masker is a strict local maximum across bands (edge bands excluded), with level
    ``P = 10 log10`` of the power sum of it and its two neighbours; maskers under the
    threshold of hearing are dropped, and a masker is dropped when a louder one lies
    closer than 0.5 Bark (a vectorised form of PAM-1's pairwise pruning: the sequential
    version can keep a masker whose louder neighbour was itself pruned, this one does
    not).
    """
    geo = _geometry(params, full_scale_db_spl)
    pw = np.asarray(power_spl, dtype=np.float64)
    centre = pw[1:-1]
    peak = (centre > pw[:-2]) & (centre > pw[2:])
    frame, band = np.nonzero(peak.T)  # ordered by frame, then band
    band = band + 1
    summed = pw[band - 1, frame] + pw[band, frame] + pw[band + 1, frame]
    audible = summed >= geo.ath_power[band]
    band, frame, summed = band[audible], frame[audible], summed[audible]
    level = 10.0 * np.log10(summed)
    # Pruning: neighbours in (frame, band) order are the only candidates closer than
    # 0.5 Bark, so compare each masker with the next 1, 2, ... in its frame until no
    # pair at that offset is close any more.
    z = geo.bark[band]
    dropped = np.zeros(band.size, dtype=bool)
    for offset in range(1, band.size):
        close = (frame[offset:] == frame[:-offset]) & (
            z[offset:] - z[:-offset] < MASKER_MIN_DISTANCE_BARK
        )
        if not close.any():
            break
        dropped[:-offset] |= close & (level[offset:] > level[:-offset])
        dropped[offset:] |= close & (level[:-offset] > level[offset:])
    keep = ~dropped
    return Maskers(band=band[keep], frame=frame[keep], level_db_spl=level[keep])


def _power_spl(mel: np.ndarray, cal_db: np.ndarray) -> np.ndarray:
    mel64 = mel.astype(np.float64)
    return mel64 * mel64 * (10.0 ** (cal_db / 10.0))[:, None]


def masking_threshold_power(
    maskers: Maskers,
    shape: tuple[int, int],
    params: SpectrogramParams = DEFAULT_PARAMS,
    full_scale_db_spl: float = FULL_SCALE_DB_SPL,
    *,
    num_classes: int | None = None,
) -> np.ndarray:
    """PAM-1 steps 5-6 without the ATH term: summed masker thresholds, linear power.

    Each masker ``j`` (Bark ``z_j``, level ``P_j``) spreads to band ``k`` with
    ``dz = z_k - z_j`` as ``P_j - 6.025 - 0.275 z_j + 27 dz`` (dz <= 0) or
    ``+ (-27 + 0.37 max(P_j - 40, 0)) dz`` (dz > 0); the powers are summed.

    Vectorised without a masker x band matrix: for one slope, a side's sum is a running
    sum along the bands of rescaled masker powers (one numpy operation per band, over all
    frames at once). The lower slope is one running sum; the level-dependent upper slopes
    share a few classes (slopes -27 / 1.15**c dB/Bark), one running sum per class: each masker's power is split between the two classes around its slope so that
    its spread is exact at the masker and 40 dB under it. For one masker the error is
    under 0.25 dB down to 40 dB under its peak and under 0.65 dB down to 60 dB (checked
    against :func:`spreading_threshold_reference` in the tests).

    Memory is ``n_mels x classes x frames`` float64 (about 50 kB per frame): callers
    with long stems pass blocks of frames (:func:`spreading_field` does, in blocks of
    :data:`SPREADING_BLOCK_FRAMES`); frames are independent, so blocks give the same
    values.

    Args:
        num_classes: upper-slope classes to allocate (at least the maskers' own need:
            their loudest level's class + 2); None: exactly what the maskers need.
            A block of frames passes the whole stem's count, so its classes (and so its
            arithmetic) are the whole stem's.

    Returns:
        float64 ``shape`` = ``(n_mels, frames)``, power on the dB SPL scale
        (``10 log10`` of it is dB SPL).
    """
    geo = _geometry(params, full_scale_db_spl)
    num_bands, num_frames = shape
    if maskers.band.size == 0:
        return np.zeros(shape, dtype=np.float64)
    z = geo.bark
    zj = z[maskers.band]
    p = maskers.level_db_spl
    amp_db = p - 6.025 - 0.275 * zj

    # Each side is sum_j a_j 10 ** (s (z_k - z_j) / 10) = 10 ** (s z_k / 10) *
    # cumsum_j(a_j 10 ** (-s z_j / 10)): a running sum along the bands of rescaled
    # masker powers. The factors stay inside float64 (at most 10 ** (2.7 * 22.4 + 11)),
    # and the sum at band k is dominated by the terms that dominate the threshold there.

    # lower side, including the masker's own band: reverse running sum
    lower = np.zeros(shape, dtype=np.float64)
    lower[maskers.band, maskers.frame] = 10.0 ** ((amp_db - 27.0 * zj) / 10.0)
    for k in range(num_bands - 2, -1, -1):
        np.add(lower[k], lower[k + 1], out=lower[k])
    lower *= (10.0 ** (27.0 * z / 10.0))[:, None]

    # upper side, strictly above the masker: one running sum per slope class
    slope = _upper_slope(p)
    cls0 = _slope_class(slope)
    needed = int(cls0.max()) + 2
    if num_classes is None:
        num_classes = needed
    elif num_classes < needed:
        raise ParameterError(f"num_classes={num_classes} is under the maskers' need ({needed})")
    slopes = -27.0 / _SLOPE_CLASS_RATIO ** np.arange(num_classes)
    # weights: exact at the masker (they sum to 1) and where the masker's own spread
    # has fallen by _SLOPE_FIT_DB
    fit_bark = _SLOPE_FIT_DB / -slope
    steep = 10.0 ** (slopes[cls0] * fit_bark / 10.0)
    shallow = 10.0 ** (slopes[cls0 + 1] * fit_bark / 10.0)
    w_steep = np.clip((10.0 ** (-_SLOPE_FIT_DB / 10.0) - shallow) / (steep - shallow), 0.0, 1.0)
    state = np.zeros((num_bands, num_classes, num_frames), dtype=np.float64)
    for cls, weight in ((cls0, w_steep), (cls0 + 1, 1.0 - w_steep)):
        state[maskers.band, cls, maskers.frame] = weight * 10.0 ** (
            (amp_db - slopes[cls] * zj) / 10.0
        )
    for k in range(1, num_bands - 1):
        np.add(state[k], state[k - 1], out=state[k])
    # band k receives what accumulated strictly below it, scaled back at z_k
    rise = 10.0 ** (np.outer(z[1:], slopes) / 10.0)  # (n_mels - 1, classes)
    lower[1:] += np.matmul(rise[:, None, :], state[:-1])[:, 0, :]
    return lower


def _upper_slope(level_db_spl: np.ndarray) -> np.ndarray:
    """PAM-1's level-dependent upper slope (dB/Bark), stopped at the shallowest class."""
    return np.minimum(
        -27.0 + 0.37 * np.maximum(level_db_spl - 40.0, 0.0), _SHALLOWEST_SLOPE_DB_PER_BARK
    )


def _slope_class(slope: np.ndarray) -> np.ndarray:
    """The steeper of the two slope classes a slope (dB/Bark, < 0) is split between."""
    return np.floor(np.log(27.0 / -slope) / math.log(_SLOPE_CLASS_RATIO)).astype(np.int64)


SPREADING_BLOCK_FRAMES = 1024
"""Frames (10 ms each) :func:`spreading_field` works on at a time: bounded memory (about
50 MB of slope-class sums per block) whatever the stem's length."""


def spreading_field(
    noise_mel: BlockArray,
    music_mel: BlockArray,
    *,
    full_scale_db_spl: float = FULL_SCALE_DB_SPL,
    params: SpectrogramParams = DEFAULT_PARAMS,
    store: ArrayStore | None = None,
    progress: Callable[[float], None] | None = None,
) -> MaskingField:
    """Psychoacoustic model 1 (simplified, Qin et al. 2019) on the mel grid.

    Masker = music (at unity gain), maskee = noise. Steps, per 10 ms frame:

    1. Level: ``L = 20 log10(mel) + calibration_db`` in dB SPL, with a FIXED calibration
       shared by both signals (a full-scale sine at a band's centre reads
       ``full_scale_db_spl`` = 96 dB in that band), not PAM-1's per-signal "loudest bin
       = 96 dB", because two signals are compared.
    2. Bark of each mel band centre; ATH at each band centre.
    3. Maskers: see :func:`find_maskers`.
    4. Spreading in Bark with the level-dependent upper slope, powers summed: see
       :func:`masking_threshold_power`.

    ``capacity`` is that threshold converted back to a mel magnitude; ``required`` is the
    noise magnitude, set to 0 where the noise lies under the ATH (inaudible, so counted
    as masked).

    Approximations (ours):

    * Mel bands stand in for PAM-1's FFT bins: a tone spreads over several narrow mel
      bands at low frequencies (its 3-band masker level then reads a few dB under the
      tone's power) and fits in one or two at high frequencies.
    * The level-dependent upper slope and the ATH pruning of maskers are evaluated at
      unity gain; the threshold is then scaled linearly by the gain. Above unity the
      true upper slopes get shallower (more masking), so above-unity coverage is slightly
      underestimated, and below unity slightly overestimated.
    * The ATH is not added to ``capacity`` (it does not scale with the gain); instead
      noise under the ATH needs nothing. Where noise is just above the ATH the true
      threshold (music + ATH) would mask slightly earlier than ``g * capacity``.
    * Upper slopes share classes 15 % apart (see :func:`masking_threshold_power`).

    Args:
        noise_mel: float ``(n_mels, frames)`` linear mel magnitude of the noise (scale of
            :func:`~bnmusic_bridge.spectrogram.audio_to_mel`, 1.0 = full-scale audio); a
            block array (numpy or :class:`~bnmusic_bridge.scratch.DiskArray`).
        music_mel: same shape and scale, the music at unity gain.
        full_scale_db_spl: playback level of a full-scale sine, dB SPL.
        params: the spectrogram settings the mels were made with.
        store: where ``required`` and ``capacity`` live (None: numpy arrays).

    Returns:
        a :class:`MaskingField` with ``model == "spreading"`` (float32 arrays).
    """
    _check_pair(noise_mel, music_mel)
    shape = tuple(noise_mel.shape)
    if shape[0] != params.n_mels:
        raise ParameterError(f"mels must have n_mels={params.n_mels} rows, got shape {shape}")
    if not np.isfinite(full_scale_db_spl):
        raise ParameterError(f"full_scale_db_spl must be finite, got {full_scale_db_spl}")
    store = _store(store)
    fs = float(full_scale_db_spl)
    geo = _geometry(params, fs)
    num_frames = shape[1]
    # Blocks of frames, so memory does not grow with the stem: frames are independent
    # (maskers and spreading are per frame), and each block sizes its slope classes to
    # its own maskers (extra classes hold zeros and leave the sums as they are; a test
    # checks blocks against the whole array, bit for bit).
    capacity = store.empty(shape, np.float32)
    to_mel = (10.0 ** (-geo.cal_db / 10.0))[:, None]
    for a, b in scratch.blocks(num_frames, SPREADING_BLOCK_FRAMES):
        part = _float32(music_mel[:, a:b])
        maskers = find_maskers(_power_spl(part, geo.cal_db), params, fs)
        threshold = masking_threshold_power(maskers, part.shape, params, fs)
        # dB SPL power -> mel magnitude: divide out the calibration
        threshold *= to_mel
        capacity[:, a:b] = np.sqrt(threshold, out=threshold)
        if progress is not None:
            progress(0.95 * b / num_frames)  # the threshold is nearly all of the work
    ath_mag = (10.0 ** ((geo.ath_db - geo.cal_db) / 20.0)).astype(np.float32)[:, None]
    required = store.empty(shape, np.float32)
    for a, b in scratch.blocks(num_frames, scratch.BLOCK_FRAMES):
        noise = _float32(noise_mel[:, a:b])
        required[:, a:b] = np.where(noise >= ath_mag, noise, np.float32(0.0))
    if progress is not None:
        progress(1.0)
    return MaskingField(
        required=required,
        capacity=capacity,
        model="spreading",
        margin_db=0.0,
    )


def spreading_threshold_reference(
    music_mel: np.ndarray,
    *,
    full_scale_db_spl: float = FULL_SCALE_DB_SPL,
    params: SpectrogramParams = DEFAULT_PARAMS,
) -> np.ndarray:
    """Slow reference for :func:`masking_threshold_power`: a loop over frames and maskers.

    Uses the same maskers (:func:`find_maskers`) and each masker's exact level-dependent
    upper slope (no slope classes). For tests and the benchmark's baseline only.

    Returns:
        float64 ``(n_mels, frames)`` threshold power on the dB SPL scale (no ATH term).
    """
    music = np.asarray(music_mel, dtype=np.float64)
    geo = _geometry(params, float(full_scale_db_spl))
    maskers = find_maskers(_power_spl(music, geo.cal_db), params, float(full_scale_db_spl))
    z = geo.bark
    out = np.zeros(music.shape)
    for frame in range(music.shape[1]):
        sel = maskers.frame == frame
        for band, p in zip(maskers.band[sel], maskers.level_db_spl[sel], strict=True):
            dz = z - z[band]
            slope_up = -27.0 + 0.37 * max(p - 40.0, 0.0)
            spread = np.where(dz <= 0.0, 27.0 * dz, slope_up * dz)
            out[:, frame] += 10.0 ** ((p - 6.025 - 0.275 * z[band] + spread) / 10.0)
    return out


def masking_field(
    model: str,
    noise_mel: BlockArray,
    music_mel: BlockArray,
    *,
    smr_db: float | None = None,
    full_scale_db_spl: float = FULL_SCALE_DB_SPL,
    store: ArrayStore | None = None,
    progress: Callable[[float], None] | None = None,
) -> MaskingField:
    """Build the :class:`MaskingField` of ``model`` (one of
    :data:`~bnmusic_bridge.request.THRESHOLD_MODELS`).

    ``smr_db`` (dB) applies to ``smr``, which needs it; ``full_scale_db_spl`` to
    ``spreading``. The mels are block arrays (numpy or
    :class:`~bnmusic_bridge.scratch.DiskArray`); ``store`` holds the field's whole-stem
    arrays (None: numpy arrays); ``progress(fraction)`` follows its blocks.
    """
    if model == "smr":
        if smr_db is None:
            raise ParameterError("threshold model 'smr' needs smr_db (dB)")
        return smr_field(noise_mel, music_mel, smr_db=smr_db, store=store, progress=progress)
    if model == "spreading":
        return spreading_field(
            noise_mel,
            music_mel,
            full_scale_db_spl=full_scale_db_spl,
            store=store,
            progress=progress,
        )
    raise ParameterError(f"threshold model must be one of {THRESHOLD_MODELS}, got {model!r}")
