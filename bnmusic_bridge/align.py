"""The alignment step: every music source's band energy moved toward the noise's.

BNMusic's promise is that music *aligned* with the noise masks it at a lower level than
unrelated music. Whatever made the music (the embedded generator, Riffusion, a random
song, the producer's own track), this step reshapes it before Stage 2: a time-varying
equaliser, one gain per sixth-octave band per 10 ms frame, that moves the music's
spectral envelope toward the noise's, so that the music is strong where and when the
noise is strong (where the high-energy mask M is) and gives up energy where the noise
is quiet, where it would cost loudness without masking anything.

Two time scales (a slow one keeps the music's own rhythm):

* shape: both envelopes smoothed over :data:`SHAPE_SMOOTHING_S` (0.25 s); the gain is the
  dB distance between them times ``strength``, minus its noise-weighted mean over a lane
  window (the level itself is Stage 2's job);
* events: where the noise rises above its own slow envelope (an event: a tick, a
  hit, a passing car), the music in those bands is lifted by that rise times
  ``strength`` for as long as the event lasts, so music energy lands on the noise's
  events.

Bounds that keep it music, not shaped noise:

* no band moves more than ``max_db`` up or down (the sum of both scales included);
* a band the music hardly uses (more than :data:`MUSIC_GATE_DB` under the music's
  loudest band in that frame) is never lifted: lifting it would only raise the
  music's noise floor and leakage;
* gains are smooth across frequency (triangular sixth-octave bands, interpolated in
  log frequency) and time, so the music's harmonic fine structure is kept.

Audio is float ``(channels, samples)`` at 44.1 kHz (:data:`~bnmusic_bridge.grid.SAMPLE_RATE_HZ`),
linear amplitude; the gains come from the mono mixes and are applied to every channel
alike. Work is done in blocks of STFT frames, so memory does not grow with the stem.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast, overload

import numpy as np

from .errors import ParameterError
from .grid import FRAME_PERIOD_S, HOP_SAMPLES, SAMPLE_RATE_HZ
from .request import RenderRequest
from .result import AlignmentSummary
from .scratch import (
    BLOCK_SAMPLES,
    ArrayStore,
    BlockArray,
    ChannelMean,
    DiskArray,
    MemoryStore,
    blocks,
    copy_into,
    is_whole,
)

N_FFT = 4_096
"""STFT length of the equaliser, samples (93 ms, 10.8 Hz bins); hop = the grid's 441."""
BANDS_PER_OCTAVE = 6
"""Resolution of the equaliser: sixth-octave bands (about two semitones)."""
LOWEST_BAND_HZ = 31.25
"""Centre of the lowest band, Hz; bands go up by sixth octaves from here."""
HIGHEST_BAND_HZ = 16_000.0
"""Centre of the highest band, Hz (bins above take its gain)."""
SHAPE_SMOOTHING_S = 0.25
"""Time span both envelopes are averaged over for the shape gain, s: longer than a beat
at most tempos, so the music's own accents survive."""
EVENT_SMOOTHING_S = 0.03
"""Time span of the noise's fast envelope that finds its events, s."""
LEVEL_SPAN_S = 2.56
"""The shape gain's level offset is averaged over this span, s (Stage 2 sets the level)."""
MUSIC_GATE_DB = 40.0
"""A band more than this many dB under the music's loudest band (same frame) is never
lifted."""
FLOOR_POWER = 1e-20
"""Power added before taking dB, so silence gives a finite (very low) level."""
BLOCK_FRAMES = 2_048
"""STFT frames whose band powers and gains are one matrix product (about 20 s of audio):
bounded memory on long stems. The products' width stays 2,048 (a BLAS product of another
width may sum in another order, and renders are kept bit for bit)."""
FFT_FRAMES = 256
"""STFT frames transformed at a time inside a block (about 17 MB a channel of complex
spectrum, instead of 134 MB for the whole block)."""


@dataclass(frozen=True)
class AlignSettings:
    """How far the music moves toward the noise (the request's ``align_*`` fields).

    Attributes:
        strength: share (0..1) of the dB distance between the music's and the noise's
            band envelopes that the music moves; 0 leaves the music as it is.
        max_db: largest boost or cut of any band at any time, dB.
    """

    strength: float
    max_db: float

    @classmethod
    def from_request(cls, req: RenderRequest) -> AlignSettings:
        return cls(strength=req.align_strength, max_db=req.align_max_db)

    @property
    def enabled(self) -> bool:
        return self.strength > 0.0 and self.max_db > 0.0


def band_centres_hz() -> np.ndarray:
    """Centres of the equaliser's bands, Hz (sixth octaves, 31.25 Hz to 16 kHz)."""
    count = int(round(math.log2(HIGHEST_BAND_HZ / LOWEST_BAND_HZ) * BANDS_PER_OCTAVE)) + 1
    return LOWEST_BAND_HZ * 2.0 ** (np.arange(count) / BANDS_PER_OCTAVE)


def _bin_freqs_hz() -> np.ndarray:
    return np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE_HZ)


def band_weights() -> np.ndarray:
    """Triangular band filters over the STFT bins, float64 ``(bands, bins)``: each band
    spans one band spacing either side of its centre in log frequency."""
    centres = np.log2(band_centres_hz())
    bins = np.log2(np.maximum(_bin_freqs_hz(), 1.0))
    return np.maximum(0.0, 1.0 - np.abs(bins[None, :] - centres[:, None]) * BANDS_PER_OCTAVE)


def _interpolation() -> np.ndarray:
    """Band gains (dB) -> bin gains (dB): linear in log frequency, constant beyond the
    outermost centres. float64 ``(bins, bands)``."""
    centres = np.log2(band_centres_hz())
    bins = np.clip(np.log2(np.maximum(_bin_freqs_hz(), 1.0)), centres[0], centres[-1])
    pos = np.interp(bins, centres, np.arange(centres.size))
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, centres.size - 1)
    frac = pos - lo
    out = np.zeros((bins.size, centres.size))
    rows = np.arange(bins.size)
    out[rows, lo] += 1.0 - frac
    out[rows, hi] += frac
    return out


def _window() -> np.ndarray:
    return np.hanning(N_FFT + 1)[:-1]  # periodic Hann


def num_stft_frames(num_samples: int) -> int:
    """Frames of the equaliser's centred STFT: one per 441 samples, as the mel grid."""
    return num_samples // HOP_SAMPLES + 1


def _frames(padded: np.ndarray, first: int, count: int) -> np.ndarray:
    # a strided view (no gathered copy): the caller's windowing makes the only copy
    views = np.lib.stride_tricks.sliding_window_view(padded, N_FFT, axis=-1)
    return views[..., first * HOP_SAMPLES : (first + count - 1) * HOP_SAMPLES + 1 : HOP_SAMPLES, :]


def _padded(audio: np.ndarray) -> np.ndarray:
    half = N_FFT // 2
    mode: Literal["reflect", "constant"] = "reflect" if audio.shape[-1] > half else "constant"
    return np.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(half, half)], mode=mode)


def _time_slice(audio: BlockArray, a: int, b: int) -> np.ndarray:
    """Samples ``a..b`` of a 1-D ``(samples,)`` or 2-D ``(channels, samples)`` block
    array (a DiskArray answers ``x[a:b]`` or ``x[:, a:b]``, not ``x[..., a:b]``)."""
    return audio[a:b] if len(audio.shape) == 1 else audio[:, a:b]


def _padded_block(audio: BlockArray, lo: int, hi: int) -> np.ndarray:
    """``_padded(audio)[..., lo:hi]`` as float64, without padding (or copying) the whole
    stem: the same samples, reflected at the ends as ``np.pad`` reflects them."""
    n = audio.shape[-1]
    half = N_FFT // 2
    if n <= half:  # a tiny stem: zero-padded as a whole
        return _padded(np.asarray(_time_slice(audio, 0, n), dtype=np.float64))[..., lo:hi]
    src = np.arange(lo, hi) - half
    if src.size and (src[0] < 0 or src[-1] >= n):
        # reflect mode: x[-k] = x[k], x[n - 1 + k] = x[n - 1 - k]
        src = np.abs(src)
        src = np.where(src >= n, 2 * (n - 1) - src, src)
        a = int(src.min())
        part = _time_slice(audio, a, int(src.max()) + 1)
        return np.asarray(part, dtype=np.float64)[..., src - a]
    return np.asarray(_time_slice(audio, lo - half, hi - half), dtype=np.float64)


def _block_frames(audio: BlockArray, first: int, count: int) -> np.ndarray:
    """Frames ``first..first + count`` of the centred STFT of ``audio``: float64
    ``(..., count, N_FFT)`` (a strided view of one padded block)."""
    lo = first * HOP_SAMPLES
    block = _padded_block(audio, lo, lo + (count - 1) * HOP_SAMPLES + N_FFT)
    return _frames(block, 0, count)


class BandRows:
    """A float64 ``(bands, frames)`` matrix kept as one scratch array per band, for a
    long stem's band powers and gains (two such matrices take 5.3 MB per minute of
    audio; an hour's would hold 0.3 GB in memory).

    The equaliser's smoothing reads and writes whole rows (``x[i]``, ``x[i] = row``);
    band powers are written and the filter reads by time slices (``x[:, a:b]``, every
    row's slice stacked: a C-contiguous copy with the values a numpy matrix's slice
    holds, so the products over it are the same)."""

    def __init__(self, store: ArrayStore, bands: int, frames: int) -> None:
        self.rows = [store.empty((frames,), np.float64) for _ in range(bands)]
        self.shape = (bands, frames)
        self.dtype = np.dtype(np.float64)

    def _columns(self, key: Any) -> slice:
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None)):
            raise IndexError(f"BandRows takes x[i] or x[:, a:b], got {key!r}")
        return cast(slice, key[1])

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return np.asarray(self.rows[key][:])
        cols = self._columns(key)
        return np.stack([row[cols] for row in self.rows])

    def __setitem__(self, key: Any, values: Any) -> None:
        if isinstance(key, (int, np.integer)):
            self.rows[key][:] = values
            return
        cols = self._columns(key)
        for row, part in zip(self.rows, np.asarray(values), strict=True):
            row[cols] = part


def band_powers(
    mono: BlockArray,
    progress: Callable[[float], None] | None = None,
    *,
    store: ArrayStore | None = None,
) -> np.ndarray | BandRows:
    """Power per equaliser band per frame of mono audio, float64 ``(bands, frames)``;
    ``progress(fraction)`` is called after every :data:`FFT_FRAMES` frames.

    ``mono`` is a ``(samples,)`` block array (numpy, DiskArray or a view), read only
    by time slices. Works through the audio in blocks of :data:`BLOCK_FRAMES` frames
    (each converted to float64 on its own): memory does not grow with the stem beyond
    the result, which is a numpy array, or :class:`BandRows` in ``store`` when that
    keeps arrays on disk (the same values)."""
    x = mono if hasattr(mono, "shape") else np.asarray(mono)
    if len(x.shape) != 1:
        raise ParameterError(f"band_powers takes mono audio (samples,), got shape {x.shape}")
    frames = num_stft_frames(x.shape[0])
    weights = band_weights()
    window = _window()
    out: np.ndarray | BandRows
    if store is not None and store.on_disk:
        out = BandRows(store, weights.shape[0], frames)
    else:
        out = np.empty((weights.shape[0], frames))
    for first in range(0, frames, BLOCK_FRAMES):
        count = min(BLOCK_FRAMES, frames - first)
        power = np.empty((count, N_FFT // 2 + 1))
        for sub in range(0, count, FFT_FRAMES):
            c = min(FFT_FRAMES, count - sub)
            spectrum = np.fft.rfft(_block_frames(x, first + sub, c) * window, axis=-1)
            power[sub : sub + c] = np.abs(spectrum) ** 2
            if progress is not None:
                progress((first + sub + c) / frames)
        out[:, first : first + count] = weights @ power.T
    return out


class _AsFloat32:
    """A ``(channels, samples)`` block array read as float32, slice by slice (what
    ``np.asarray(x, dtype=np.float32)`` gives, without a whole-stem copy)."""

    def __init__(self, audio: BlockArray) -> None:
        self.audio = audio
        self.shape = tuple(audio.shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)

    def __getitem__(self, key: object) -> np.ndarray:
        return np.asarray(self.audio[key], dtype=np.float32)  # type: ignore[index]


def _any_nonzero(audio: BlockArray) -> bool:
    """``np.any(audio)`` of a ``(channels, samples)`` block array, a block at a time
    (stopping at the first block with a non-zero sample)."""
    if is_whole(audio):
        return bool(np.any(audio))
    return any(bool(np.any(audio[:, a:b])) for a, b in blocks(audio.shape[1], BLOCK_SAMPLES))


def _smooth(x: np.ndarray, span_s: float) -> np.ndarray:
    from scipy.ndimage import uniform_filter1d

    size = max(1, int(round(span_s / FRAME_PERIOD_S)))
    return uniform_filter1d(x, size=size, axis=-1, mode="nearest")


def _db(power: np.ndarray) -> np.ndarray:
    # A running-sum smoother can leave tiny negative powers after loud passages.
    return 10.0 * np.log10(np.maximum(power, 0.0) + FLOOR_POWER)


def band_gains_db(
    music_power: np.ndarray, noise_power: np.ndarray, settings: AlignSettings
) -> tuple[np.ndarray, np.ndarray]:
    """The equaliser's gain per band per frame, dB, and the event lift inside it.

    Args:
        music_power: float ``(bands, frames)`` band powers of the music (mono mix).
        noise_power: the same for the noise, same shape.
        settings: strength and bound.

    Returns:
        ``(gain_db, event_db)``: float64 ``(bands, frames)`` each; ``gain_db`` is the
        total (within ``+-max_db``), ``event_db`` the part the noise's events added.
    """
    if music_power.shape != noise_power.shape:
        raise ParameterError(
            f"music and noise band powers differ in shape: {music_power.shape} vs {noise_power.shape}"
        )
    gain = np.array(music_power, dtype=np.float64)
    event = np.array(noise_power, dtype=np.float64)
    _band_gains_in_place(gain, event, settings)
    return gain, event


def _band_gains_in_place(
    music_power: np.ndarray | BandRows, noise_power: np.ndarray | BandRows, settings: AlignSettings
) -> None:
    """:func:`band_gains_db`, overwriting ``music_power`` with ``gain_db`` and
    ``noise_power`` with ``event_db`` (float64 ``(bands, frames)`` each).

    Works one band (row) at a time: the smoothing runs along each row on its own (a
    row's result is the same as in a whole-matrix call), the level and the loudest band
    are accumulated over the rows in row order (as numpy sums over axis 0), so the
    results are bit for bit those of the whole-matrix formulas while only two more rows
    are held at a time, not a dozen matrices (on an hour-long stem each matrix is
    160 MB)."""
    bands = music_power.shape[0]
    if bands == 0:
        return

    def slow_rows(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # the envelopes on the slow (shape) scale, their distance, dB
        music_slow = _smooth(music_power[i], SHAPE_SMOOTHING_S)
        noise_slow = _smooth(noise_power[i], SHAPE_SMOOTHING_S)
        return noise_slow, _db(noise_slow), _db(noise_slow) - _db(music_slow)

    # 1. The level of the shape gain (noise-weighted mean of the distance over the
    #    bands, then over a lane window) and the music's loudest band per frame.
    # set together by the first row (bands >= 1 here): arrays wherever they are read
    numerator = denominator = loudest = cast(Any, None)
    for i in range(bands):
        noise_slow, _, distance = slow_rows(i)
        weight = np.maximum(noise_slow, 0.0)
        music_now_db = _db(_smooth(music_power[i], EVENT_SMOOTHING_S))
        if numerator is None:
            numerator, denominator, loudest = distance * weight, weight, music_now_db
        else:
            numerator = numerator + distance * weight
            denominator = denominator + weight
            loudest = np.maximum(loudest, music_now_db)
    level = numerator / np.maximum(denominator, FLOOR_POWER)
    level = _smooth(level, LEVEL_SPAN_S)

    # 2. Per band: shape (distance less level) and events (where the noise rises above
    #    its slow envelope), bounded to +-max_db, never lifting a band the music hardly
    #    uses.
    for i in range(bands):
        _, noise_db, distance = slow_rows(i)
        noise_fast_db = _db(_smooth(noise_power[i], EVENT_SMOOTHING_S))
        music_now_db = _db(_smooth(music_power[i], EVENT_SMOOTHING_S))
        shape_db = settings.strength * (distance - level)
        event_db = settings.strength * np.maximum(noise_fast_db - noise_db, 0.0)
        gain = np.clip(shape_db + event_db, -settings.max_db, settings.max_db)
        quiet = music_now_db < loudest - MUSIC_GATE_DB
        gain = np.where(quiet, np.minimum(gain, 0.0), gain)
        music_power[i] = gain
        noise_power[i] = np.minimum(event_db, np.maximum(gain, 0.0))


def _overlap_add(out: np.ndarray, frames: np.ndarray, first: int) -> np.ndarray:
    """Add ``frames`` (``(channels, count, N_FFT)``, frame ``i`` starting at sample
    ``(first + i) * HOP_SAMPLES``) into ``out`` (``(channels, samples)``, room for
    ``first + count + N_FFT / HOP_SAMPLES`` whole hops) in place.

    A frame spans ``N_FFT / HOP_SAMPLES`` hops: its pieces of one hop each are added
    for all frames at once, one piece offset at a time. The offsets run from the last
    piece to the first, so every output sample receives its frames in frame order, as
    a loop over frames adds them: the same sums, bit for bit.
    """
    count = frames.shape[1]
    pieces = -(-N_FFT // HOP_SAMPLES)
    for p in range(pieces - 1, -1, -1):
        lo = p * HOP_SAMPLES
        width = min(HOP_SAMPLES, N_FFT - lo)
        start = (first + p) * HOP_SAMPLES
        dest = out[:, start : start + count * HOP_SAMPLES].reshape(out.shape[0], count, HOP_SAMPLES)
        dest[:, :, :width] += frames[:, :, lo : lo + width]
    return out


@overload
def apply_band_gains(
    audio: BlockArray,
    gain_db: np.ndarray | BandRows,
    progress: Callable[[float], None] | None = None,
    *,
    store: None = None,
) -> np.ndarray: ...


@overload
def apply_band_gains(
    audio: BlockArray,
    gain_db: np.ndarray | BandRows,
    progress: Callable[[float], None] | None = None,
    *,
    store: ArrayStore,
) -> np.ndarray | DiskArray: ...


def apply_band_gains(
    audio: BlockArray,
    gain_db: np.ndarray | BandRows,
    progress: Callable[[float], None] | None = None,
    *,
    store: ArrayStore | None = None,
) -> np.ndarray | DiskArray:
    """Filter ``audio`` with a time-varying equaliser (STFT, weighted overlap-add).

    Args:
        audio: float ``(channels, samples)`` at 44.1 kHz.
        gain_db: float ``(bands, frames)``, one gain per equaliser band and 10 ms frame
            (``frames == num_stft_frames(samples)``).
        progress: called with the share of frames done, every
            :data:`FFT_FRAMES` frames (so a cancel is noticed within that many).
        store: where the output is allocated (None: a numpy array).

    Returns:
        float32 ``(channels, samples)``: with all gains 0 dB, the input (to rounding);
        a DiskArray when ``store`` keeps arrays on disk. ``audio`` (numpy or any
        block array) is read a block of frames at a time, the output written so.
    """
    x = audio if hasattr(audio, "shape") else np.asarray(audio)
    if len(x.shape) != 2:
        raise ParameterError(f"audio must be (channels, samples), got shape {x.shape}")
    channels, n = x.shape
    frames = num_stft_frames(n)
    if gain_db.shape[1] != frames:
        raise ParameterError(f"gain_db has {gain_db.shape[1]} frames; the audio has {frames}")
    interp = _interpolation()
    window = _window()
    half = N_FFT // 2
    result = (store or MemoryStore()).empty((channels, n), np.float32)
    pieces = -(-N_FFT // HOP_SAMPLES)
    # The overlap-add runs in a buffer that starts at the current block's first frame
    # (padded coordinates); what no later frame reaches is divided out and emitted.
    tail = np.zeros((channels, 0))
    tail_norm = np.zeros(0)
    for first in range(0, frames, BLOCK_FRAMES):
        count = min(BLOCK_FRAMES, frames - first)
        bin_gain = 10.0 ** ((interp @ gain_db[:, first : first + count]).T / 20.0)
        out = np.zeros((channels, (count + pieces) * HOP_SAMPLES))
        norm = np.zeros((count + pieces) * HOP_SAMPLES)
        out[:, : tail.shape[1]] = tail
        norm[: tail_norm.size] = tail_norm
        for sub in range(0, count, FFT_FRAMES):
            c = min(FFT_FRAMES, count - sub)
            spectrum = np.fft.rfft(_block_frames(x, first + sub, c) * window, axis=-1)
            frames_out = (
                np.fft.irfft(spectrum * bin_gain[None, sub : sub + c], n=N_FFT, axis=-1) * window
            )
            _overlap_add(out, frames_out, sub)
            _overlap_add(norm[None, :], np.broadcast_to(window**2, (1, c, N_FFT)), sub)
            if progress is not None:
                progress((first + sub + c) / frames)
        origin = first * HOP_SAMPLES  # padded position of out[:, 0]
        last = first + count == frames
        done = out.shape[1] if last else count * HOP_SAMPLES
        t0, t1 = max(origin - half, 0), min(origin + done - half, n)
        if t1 > t0:
            a, b = t0 + half - origin, t1 + half - origin
            body = out[:, a:b] / np.maximum(norm[a:b], 1e-12)
            result[:, t0:t1] = body.astype(np.float32)
        tail, tail_norm = out[:, done:], norm[done:]
    return result


_Music = TypeVar("_Music", bound=BlockArray)
"""The music's own type: :func:`align_music` may hand the music itself back."""


@overload
def align_music(
    music: np.ndarray,
    noise: BlockArray,
    settings: AlignSettings,
    progress: Callable[[float], None] | None = None,
    *,
    store: None = None,
) -> tuple[np.ndarray, AlignmentSummary]: ...


@overload
def align_music(
    music: _Music,
    noise: BlockArray,
    settings: AlignSettings,
    progress: Callable[[float], None] | None = None,
    *,
    store: ArrayStore | None = None,
) -> tuple[np.ndarray | DiskArray | _Music, AlignmentSummary]: ...


def align_music(
    music: BlockArray,
    noise: BlockArray,
    settings: AlignSettings,
    progress: Callable[[float], None] | None = None,
    *,
    store: ArrayStore | None = None,
) -> tuple[np.ndarray | BlockArray, AlignmentSummary]:
    """Move the music's band energy toward the noise's (see the module docstring).

    Args:
        music: float ``(channels, samples)`` at 44.1 kHz, any level: a numpy array or
            a block array (DiskArray, view), read only by time slices.
        noise: mono float ``(samples,)`` at 44.1 kHz, the same length, numpy or a
            block array.
        settings: strength and bound.
        progress: called with the share done (0..1) as the work goes on.
        store: where the aligned music is allocated (None: a numpy array).

    Returns:
        ``(aligned, alignment)``: float32 ``(channels, samples)`` and what was done.
        When nothing is done (alignment off, silent music) ``aligned`` is the float32
        music itself (``music`` when it already is float32), not a copy in ``store``.
    """
    if is_whole(music) or not hasattr(music, "shape"):
        music = np.asarray(music, dtype=np.float32)
    elif music.dtype != np.float32:
        music = _AsFloat32(music)
    if not hasattr(noise, "shape"):
        noise = np.asarray(noise)  # converted to float64 block by block
    if len(music.shape) != 2 or len(noise.shape) != 1 or music.shape[1] != noise.shape[0]:
        raise ParameterError(
            f"align_music: music (channels, samples) and mono noise of the same length, got "
            f"{music.shape} and {noise.shape}"
        )
    if not settings.enabled or not _any_nonzero(music):
        if isinstance(music, _AsFloat32):  # a lazy view goes back as a real array
            music = copy_into(store or MemoryStore(), music, BLOCK_SAMPLES)
        return music, AlignmentSummary(settings.strength, settings.max_db, 0.0, 0.0, 0.0)
    music_power = band_powers(
        ChannelMean(music, keepdims=False), _part(progress, 0.0, 0.15), store=store
    )
    noise_power = band_powers(noise, _part(progress, 0.15, 0.3), store=store)
    # gain_db and event_db overwrite the band powers: two frame matrices, not four
    _band_gains_in_place(music_power, noise_power, settings)
    gain_db, event_db = music_power, noise_power
    del music_power, noise_power
    alignment = _summary(gain_db, event_db, settings)
    del event_db  # only the gains are needed to filter the music
    if progress is not None:
        progress(0.35)
    aligned = apply_band_gains(music, gain_db, _part(progress, 0.35, 1.0), store=store)
    return aligned, alignment


def _summary(
    gain_db: np.ndarray | BandRows, event_db: np.ndarray | BandRows, settings: AlignSettings
) -> AlignmentSummary:
    """What the equaliser did: means over every band and frame. Band rows (a long stem)
    are summed a row at a time, which can move the means' last digits (about 1e-15
    relative) from numpy's whole-matrix means."""
    bound_db = settings.max_db - 1e-9
    if isinstance(gain_db, BandRows) or isinstance(event_db, BandRows):
        abs_sum = at_bound = event_sum = 0.0
        for i in range(gain_db.shape[0]):
            magnitude = np.abs(gain_db[i])
            abs_sum += float(magnitude.sum())
            at_bound += float(np.count_nonzero(magnitude >= bound_db))
            event_sum += float(event_db[i].sum())
        size = max(1, gain_db.shape[0] * gain_db.shape[1])
        mean_abs, share, event = abs_sum / size, at_bound / size, event_sum / size
    else:
        magnitude = np.abs(gain_db)
        mean_abs = float(np.mean(magnitude))
        share = float(np.mean(magnitude >= bound_db))
        event = float(np.mean(event_db))
    return AlignmentSummary(
        strength=settings.strength,
        max_db=settings.max_db,
        mean_abs_gain_db=mean_abs,
        share_at_bound=share,
        event_lift_db=event,
    )


def _part(
    progress: Callable[[float], None] | None, start: float, end: float
) -> Callable[[float], None] | None:
    # A step's own 0..1 mapped onto start..end of the caller's progress.
    if progress is None:
        return None
    return lambda f: progress(start + (end - start) * f)
