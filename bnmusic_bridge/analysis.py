"""Analysis of a noise stem that generators may use (rhythm and spectrum).

Everything here is on the analysis grid: mono, 44,100 Hz, Riffusion's 10 ms hop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import scratch
from .grid import FRAME_RATE_HZ, HOP_SAMPLES, SAMPLE_RATE_HZ


@dataclass(frozen=True)
class StemAnalysis:
    """What the pipeline measured on the whole noise stem (analysis rate, mono).

    Attributes:
        sample_rate_hz: always 44,100 (the analysis rate).
        num_samples: length of the analysed mono stem in samples at ``sample_rate_hz``.
        onset_envelope: spectral-flux onset strength, one value per 10 ms frame
            (frame ``j`` is centred on sample ``j * 441``), non-negative, arbitrary units.
        onset_times_s: detected onset times in seconds from the stem's start.
        tempo_bpm: tempo estimated from the onset envelope's periodicity, in beats per
            minute (clamped to 60..180), or None when no periodicity was found.
        beat_period_s: 60 / tempo_bpm, or None.
        beat_phase_s: time of the first beat in seconds (0 <= phase < beat_period_s).
        periodicity_strength: 0..1, how clearly periodic the onset envelope is
            (normalised autocorrelation peak).
        band_energy_db: mean mel magnitude per mel band in dB (length 512, index 0 is
            the lowest band, 0 to 10 kHz HTK mel scale), relative to the loudest band (0 dB).
        band_center_hz: centre frequency of each mel band in Hz (length 512).
        frame_energy_db: per-frame energy in dB relative to the loudest frame (0 dB).
        mask_band_share: share of high-energy-mask pixels in each mel band (length 512,
            sums to 1 when the mask is not empty).
        tonal_peaks_hz: frequencies in Hz of the noise's tonal peaks (hums, whines,
            engine orders) between 40 Hz and 5 kHz, found in the long-term spectrum
            (2.7 Hz resolution) and refined to a fraction of a bin, strongest first; at
            most :data:`MAX_TONAL_PEAKS`. Empty when none stands out (or when an older
            caller built the analysis without them).
        tonal_peaks_db: each peak's prominence in dB over the spectrum's running median
            (at least :data:`MIN_PEAK_PROMINENCE_DB`), same order.
    """

    sample_rate_hz: int
    num_samples: int
    onset_envelope: np.ndarray
    onset_times_s: np.ndarray
    tempo_bpm: float | None
    beat_period_s: float | None
    beat_phase_s: float
    periodicity_strength: float
    band_energy_db: np.ndarray
    band_center_hz: np.ndarray
    frame_energy_db: np.ndarray
    mask_band_share: np.ndarray
    tonal_peaks_hz: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tonal_peaks_db: np.ndarray = field(default_factory=lambda: np.zeros(0))


MIN_TEMPO_BPM = 60.0
MAX_TEMPO_BPM = 180.0
ONSET_WINDOW_SAMPLES = 2_048
"""STFT window (46 ms) for the onset envelope: Riffusion's 100 ms window smears a click
over ten frames and its flux peaks tens of ms before the click, which would put the
music's beats early."""
MIN_PERIOD_S = 0.2
"""Shortest onset period searched (300 BPM before folding into 60..180 BPM)."""
MAX_PERIOD_S = 2.0
"""Longest onset period searched (30 BPM before folding)."""
MIN_PERIODICITY = 0.4
"""Autocorrelation peak below which the onset envelope counts as not periodic."""
FLOOR_DB = -120.0
"""Floor of the relative dB arrays (silence instead of -inf)."""
_ONSET_BANDS = 8
PEAK_FFT_SAMPLES = 16_384
"""FFT length of the long-term spectrum for tonal peaks (2.7 Hz bins at 44.1 kHz)."""
MAX_PEAK_SEGMENTS = 256
"""Segments averaged for the long-term spectrum, at most (evenly spread over the stem)."""
MIN_PEAK_PROMINENCE_DB = 10.0
"""A tonal peak stands this far over the spectrum's running median (about 270 Hz wide)."""
MAX_TONAL_PEAKS = 8
TONAL_RANGE_HZ = (40.0, 5_000.0)
_MIN_ONSET_GAP_S = 0.05


def analyse_stem(
    audio: np.ndarray | scratch.BlockArray,
    mel: np.ndarray | scratch.BlockArray,
    mask: np.ndarray | scratch.BlockArray,
) -> StemAnalysis:
    """Measure a noise stem's rhythm and spectrum for the generators.

    Each argument may be a numpy array or a block array
    (:class:`~bnmusic_bridge.scratch.DiskArray` or a lazy view), which is read only by
    time slices (blocks of samples or frames); the analysis is the same either way.

    Args:
        audio: mono float ``(num_samples,)`` at 44,100 Hz, linear amplitude, the whole
            stem (at least 2,048 samples).
        mel: linear mel magnitude ``(512, num_samples // 441 + 1)`` of ``audio``
            (:func:`bnmusic_bridge.spectrogram.audio_to_mel`), mel orientation (row 0
            lowest band).
        mask: bool, same shape as ``mel``, True on the high-energy core.

    Returns:
        A :class:`StemAnalysis`. The onset envelope is the half-wave rectified spectral
        flux of log-compressed magnitudes from a 23 ms STFT, one value per 10 ms frame
        (same frames as ``mel``). The tempo is the onset envelope's autocorrelation
        period, searched between 0.2 s and 2 s and folded by octaves into 60..180 BPM;
        None when the autocorrelation peak is below :data:`MIN_PERIODICITY`.

    Raises:
        AudioInputError: ``audio`` is not 1-D, too short, or holds NaN/inf.
        ParameterError: ``mel`` or ``mask`` has the wrong shape or ``mel`` holds NaN/inf.
    """
    from .errors import AudioInputError, ParameterError
    from .grid import N_MELS
    from .spectrogram import mel_center_hz

    samples = _whole_or_block(audio)
    shape = tuple(samples.shape)
    if len(shape) != 1:
        raise AudioInputError(f"audio must be mono 1-D (num_samples,), got shape {shape}")
    if shape[0] < 2 * ONSET_WINDOW_SAMPLES:
        raise AudioInputError(
            f"audio has {shape[0]} samples; analysis needs at least {2 * ONSET_WINDOW_SAMPLES}"
        )
    if not all(
        np.all(np.isfinite(samples[a:b]))
        for a, b in scratch.blocks(shape[0], scratch.BLOCK_SAMPLES)
    ):
        raise AudioInputError("audio holds NaN or inf samples")
    frames = shape[0] // HOP_SAMPLES + 1
    # The mel stays in its own dtype (float32 from audio_to_mel): a float64 copy of an
    # hour's mel is 1.5 GB. Its summaries are taken row by row and block by block below.
    mel_arr = _whole_or_block(mel)
    if tuple(mel_arr.shape) != (N_MELS, frames):
        raise ParameterError(
            f"mel has shape {tuple(mel_arr.shape)}; expected ({N_MELS}, {frames}) for "
            f"{shape[0]} samples"
        )
    if not all(np.all(np.isfinite(mel_arr[:, a:b])) for a, b in _frame_blocks(frames)):
        raise ParameterError("mel holds NaN or inf values")
    mask_arr = _whole_or_block(mask, dtype=bool)
    if tuple(mask_arr.shape) != tuple(mel_arr.shape):
        raise ParameterError(
            f"mask has shape {tuple(mask_arr.shape)}; mel has {tuple(mel_arr.shape)}"
        )

    envelope = onset_envelope(samples, frames)
    onsets_s = pick_onsets(envelope)
    period_s, strength = estimate_period(envelope)
    tempo_bpm: float | None = None
    beat_period_s: float | None = None
    phase_s = 0.0
    if period_s is not None:
        beat_period_s = fold_period(period_s)
        tempo_bpm = 60.0 / beat_period_s
        phase_s = estimate_phase(envelope, beat_period_s)

    # float64 as before: each band's mean over its own row (the same pairwise sum as
    # over the whole array), each frame's energy over its own column block
    if isinstance(mel_arr, np.ndarray):
        band_mean = np.array([row.astype(np.float64).mean() for row in mel_arr])
    else:
        band_mean = _pairwise_row_sums(mel_arr, 0, frames) / frames
    frame_energy = np.empty(frames)
    for a, b in _frame_blocks(frames):
        part = mel_arr[:, a:b].astype(np.float64)
        frame_energy[a:b] = np.sum(part * part, axis=0)
    if isinstance(mask_arr, np.ndarray):
        per_band = mask_arr.sum(axis=1)
    else:
        per_band = np.zeros(mask_arr.shape[0], dtype=np.int64)
        for a, b in _frame_blocks(frames, scratch.BLOCK_FRAMES):
            per_band += np.count_nonzero(np.asarray(mask_arr[:, a:b], dtype=bool), axis=1)
    total_mask = int(per_band.sum())
    share = per_band / total_mask if total_mask > 0 else np.zeros(N_MELS, np.float64)
    peaks_hz, peaks_db = tonal_peaks(samples)
    return StemAnalysis(
        sample_rate_hz=SAMPLE_RATE_HZ,
        num_samples=int(shape[0]),
        onset_envelope=envelope.astype(np.float32),
        onset_times_s=onsets_s,
        tempo_bpm=tempo_bpm,
        beat_period_s=beat_period_s,
        beat_phase_s=phase_s,
        periodicity_strength=strength,
        band_energy_db=_relative_db(band_mean, amplitude=True),
        band_center_hz=mel_center_hz(),
        frame_energy_db=_relative_db(frame_energy, amplitude=False),
        mask_band_share=share.astype(np.float64),
        tonal_peaks_hz=peaks_hz,
        tonal_peaks_db=peaks_db,
    )


def _frame_blocks(frames: int, size: int = 2048) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of at most ``size`` frames covering ``0..frames``."""
    return [(a, min(a + size, frames)) for a in range(0, frames, size)]


def _whole_or_block(x: object, dtype: object = None) -> np.ndarray | scratch.BlockArray:
    """A block array as it is (it is read by slices); anything else through
    ``np.asarray`` (with ``dtype``), as before."""
    if not isinstance(x, np.ndarray) and hasattr(x, "shape") and hasattr(x, "dtype"):
        return x  # type: ignore[return-value]
    return np.asarray(x, dtype=dtype)  # type: ignore[call-overload]


PAIRWISE_LEAF_FRAMES = 2048
"""Most frames :func:`_pairwise_row_sums` sums with one numpy call (below numpy's
8,192-element buffer, so the call is one pairwise summation)."""


_NUMPY_PAIRWISE_BLOCK = 128
"""numpy sums runs of up to this many elements in one unrolled loop (no halving)."""


def _pairwise_row_sums(x: scratch.BlockArray, start: int, count: int) -> np.ndarray:
    """float64 sum of each row of ``x[:, start:start + count]``, bit for bit what
    ``row.astype(np.float64).sum()`` gives on the whole row, reading only blocks of
    frames.

    numpy sums a float64 row pairwise: it halves a run of more than 128 elements at a
    multiple of 8 below the middle (``n2 = n // 2 - (n // 2) % 8``), sums both halves
    the same way and adds them. This follows the same halving down to runs of at most
    :data:`PAIRWISE_LEAF_FRAMES` frames (and never below numpy's unrolled 128), which
    numpy sums itself (one call per run: the same tree below), so every addition is the
    one numpy makes (``tests/test_analysis_blocks.py`` checks this against numpy).
    """
    if count <= max(PAIRWISE_LEAF_FRAMES, _NUMPY_PAIRWISE_BLOCK):
        return np.asarray(x[:, start : start + count], dtype=np.float64).sum(axis=1)
    half = count // 2
    half -= half % 8
    return _pairwise_row_sums(x, start, half) + _pairwise_row_sums(x, start + half, count - half)


def tonal_peaks(audio: np.ndarray | scratch.BlockArray) -> tuple[np.ndarray, np.ndarray]:
    """Tonal peaks of mono 44.1 kHz audio: (frequencies in Hz, prominences in dB).

    ``audio`` may be a block array: only its segments are read.

    The long-term power spectrum is the mean of Hann-windowed
    :data:`PEAK_FFT_SAMPLES`-sample periodograms (half-overlapping, at most
    :data:`MAX_PEAK_SEGMENTS` of them, evenly spread; a shorter stem is zero-padded to
    one). A peak is a local maximum within :data:`TONAL_RANGE_HZ` standing at least
    :data:`MIN_PEAK_PROMINENCE_DB` over the running median of the dB spectrum (101
    bins); its frequency is refined by a parabola through the three dB values around it.
    At most :data:`MAX_TONAL_PEAKS`, strongest first, at least 5 bins apart.
    """
    from scipy import ndimage, signal

    n = PEAK_FFT_SAMPLES
    x = _whole_or_block(audio)  # each segment is taken to float64 on its own
    size = int(x.shape[0])
    if size < n:
        x = np.pad(np.asarray(x[0:size]).astype(np.float64), (0, n - size))
        size = n
    starts = np.arange(0, size - n + 1, n // 2)
    if starts.size > MAX_PEAK_SEGMENTS:
        starts = starts[np.linspace(0, starts.size - 1, MAX_PEAK_SEGMENTS).round().astype(int)]
    window = np.hanning(n + 1)[:-1]
    power = np.zeros(n // 2 + 1)
    for s0 in starts:
        spec = np.fft.rfft(x[s0 : s0 + n].astype(np.float64) * window)
        power += spec.real**2 + spec.imag**2
    if power.max() <= 0.0:
        return np.zeros(0), np.zeros(0)
    db = 10.0 * np.log10(np.maximum(power / power.max(), 1e-15))
    prominence = db - ndimage.median_filter(db, size=101, mode="nearest")
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE_HZ)
    found, _ = signal.find_peaks(prominence, height=MIN_PEAK_PROMINENCE_DB, distance=5)
    lo, hi = TONAL_RANGE_HZ
    found = found[(freqs[found] >= lo) & (freqs[found] <= hi)]
    found = found[np.argsort(prominence[found])[::-1][:MAX_TONAL_PEAKS]]
    bin_hz = SAMPLE_RATE_HZ / n
    hz = np.array([_parabolic_peak(db, int(k)) * bin_hz for k in found])
    return hz.reshape(-1).astype(np.float64), prominence[found].astype(np.float64)


def _relative_db(values: np.ndarray, *, amplitude: bool) -> np.ndarray:
    """dB relative to the largest value (0 dB), floored at :data:`FLOOR_DB`."""
    peak = float(values.max()) if values.size else 0.0
    if peak <= 0.0:
        return np.full(values.shape, FLOOR_DB, dtype=np.float32)
    factor = 20.0 if amplitude else 10.0
    db = factor * np.log10(np.maximum(values / peak, 1e-30))
    return np.maximum(db, FLOOR_DB).astype(np.float32)


def onset_envelope(audio: np.ndarray | scratch.BlockArray, num_frames: int) -> np.ndarray:
    """Spectral-flux onset strength of mono 44.1 kHz audio, one value per 10 ms frame.

    Frame ``j`` is centred on sample ``j * 441`` (reflect-padded STFT, 2,048-sample Hann
    window). Power is summed into :data:`_ONSET_BANDS` log-spaced bands (43 Hz to 16 kHz)
    and taken in dB (floored 80 dB under the loudest band-frame); the positive increases
    from frame ``j - 2`` to frame ``j`` are summed over the bands. The level rises as soon
    as a sound enters the window's leading half, so this backward difference is what
    puts a click's peak on the click's own frame (measured on noise bursts: within 3 ms).
    A few wide bands average out the flicker of noise, which would otherwise bury the
    rhythm of a train or a clock.

    ``audio`` may be a 1-D block array (at least 1,466 samples, so that one
    reflection pads it): it is read a block of frames at a time, reflected at its two
    ends slice by slice (:func:`_reflected`), the same samples as the padded whole.

    Returns:
        float64 ``(num_frames,)``, non-negative, in dB (summed over bands).
    """
    half = ONSET_WINDOW_SAMPLES // 2
    source = _whole_or_block(audio)
    if isinstance(source, np.ndarray):
        # padded in the audio's own dtype; each block of frames is taken to float64
        padded = np.pad(source, (half, half + HOP_SAMPLES), mode="reflect")

        def take(lo: int, hi: int) -> np.ndarray:
            return padded[lo:hi]

    else:

        def take(lo: int, hi: int) -> np.ndarray:
            return _reflected(source, lo - half, hi - half)

    starts = np.arange(num_frames) * HOP_SAMPLES
    window = np.hanning(ONSET_WINDOW_SAMPLES + 1)[:-1]
    bands = _onset_band_edges()
    power = np.empty((len(bands) - 1, num_frames))
    # Blocks of frames keep the framed copy of the audio small on long stems.
    block = 1_024
    for b0 in range(0, num_frames, block):
        first = int(starts[b0])
        last = int(starts[min(b0 + block, num_frames) - 1]) + ONSET_WINDOW_SAMPLES
        segment = take(first, last)  # the padded samples these frames cover
        idx = starts[b0 : b0 + block, None] - first + np.arange(ONSET_WINDOW_SAMPLES)[None, :]
        spec = np.fft.rfft(segment[idx].astype(np.float64) * window, axis=1)
        cums = np.cumsum(spec.real**2 + spec.imag**2, axis=1)
        power[:, b0 : b0 + block] = (cums[:, bands[1:] - 1] - cums[:, bands[:-1] - 1]).T
    peak = float(power.max())
    if peak <= 0.0:
        return np.zeros(num_frames)
    level_db = 10.0 * np.log10(np.maximum(power / peak, 1e-8))
    edged = np.pad(level_db, ((0, 0), (2, 0)), mode="edge")
    return np.maximum(edged[:, 2:] - edged[:, :-2], 0.0).sum(axis=0)


def _reflected(audio: scratch.BlockArray, lo: int, hi: int) -> np.ndarray:
    """Samples ``lo..hi`` of 1-D ``audio`` extended by reflection at both ends (as
    ``np.pad(..., mode="reflect")``: sample ``-k`` is sample ``k``, sample ``n - 1 + k``
    is sample ``n - 1 - k``), for ``-n < lo`` and ``hi < 2 n - 1``; reads only the
    samples it needs, in the audio's dtype."""
    n = int(audio.shape[0])
    j = np.abs(np.arange(lo, hi))
    j = np.where(j >= n, 2 * (n - 1) - j, j)
    if j.size == 0:
        return np.zeros(0, dtype=audio.dtype)
    a, b = int(j.min()), int(j.max()) + 1
    return np.asarray(audio[a:b])[j - a]


def _onset_band_edges() -> np.ndarray:
    """FFT-bin edges of log-spaced bands from 43 Hz to 16 kHz (first bin edge >= 1)."""
    edges_hz = np.geomspace(43.0, 16_000.0, _ONSET_BANDS + 1)
    edges = np.round(edges_hz * ONSET_WINDOW_SAMPLES / SAMPLE_RATE_HZ).astype(int)
    return np.unique(np.maximum(edges, 1))


def pick_onsets(envelope: np.ndarray) -> np.ndarray:
    """Onset times in seconds: local maxima of the envelope (within +-30 ms) that rise
    above the local mean (+-200 ms) by half the envelope's standard deviation, at least
    50 ms apart."""
    from scipy import ndimage

    if envelope.size < 3 or float(envelope.std()) == 0.0:
        return np.zeros(0, dtype=np.float64)
    local_max = ndimage.maximum_filter1d(envelope, size=7, mode="nearest")
    local_mean = ndimage.uniform_filter1d(envelope, size=41, mode="nearest")
    threshold = local_mean + 0.5 * float(envelope.std())
    candidates = np.flatnonzero((envelope == local_max) & (envelope > threshold))
    min_gap = int(round(_MIN_ONSET_GAP_S * FRAME_RATE_HZ))
    kept: list[int] = []
    for j in candidates:
        if not kept or j - kept[-1] >= min_gap:
            kept.append(int(j))
        elif envelope[j] > envelope[kept[-1]]:
            kept[-1] = int(j)
    return np.asarray(kept, dtype=np.float64) / FRAME_RATE_HZ


def _capped(envelope: np.ndarray) -> np.ndarray:
    """The envelope capped at its 99th percentile: a few outsized onsets (the first sound
    after silence, a door slam) would otherwise own the statistics and hide the rhythm."""
    if envelope.size == 0:
        return envelope
    return np.minimum(envelope, np.percentile(envelope, 99.0))


def _autocorrelation(envelope: np.ndarray) -> np.ndarray:
    """Unbiased, normalised autocorrelation (lag 0 = 1) of the envelope, capped at its
    99th percentile, smoothed over +-20 ms (onsets of a real noise wobble by a frame or
    two) and without its 1 s moving mean (slow loudness changes are not rhythm)."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter1d(_capped(envelope), sigma=2.0, mode="nearest")
    x = smooth - ndimage.uniform_filter1d(smooth, size=101, mode="nearest")
    n = x.size
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spec = np.fft.rfft(x, size)
    ac = np.fft.irfft(spec * np.conj(spec), size)[:n]
    if ac[0] <= 0.0:
        return np.zeros(n)
    return ac / ac[0] * n / (n - np.arange(n))


def estimate_period(envelope: np.ndarray) -> tuple[float | None, float]:
    """The onset envelope's period in seconds and its strength (0..1).

    The period is the shortest autocorrelation peak between :data:`MIN_PERIOD_S` and
    :data:`MAX_PERIOD_S` (at most half the envelope) that reaches 85 % of the highest
    one, so a pattern that repeats every bar is not mistaken for its own multiple. It is
    refined to a fraction of a frame from the autocorrelation at a multiple of the
    period (long lags give the precision a long stem needs). None when the peak is below
    :data:`MIN_PERIODICITY`.
    """
    n = envelope.size
    min_lag = int(round(MIN_PERIOD_S * FRAME_RATE_HZ))
    max_lag = min(int(round(MAX_PERIOD_S * FRAME_RATE_HZ)), n // 2)
    if max_lag <= min_lag + 2:
        return None, 0.0
    ac = _autocorrelation(envelope)
    seg = ac[min_lag - 1 : max_lag + 2]
    is_peak = (seg[1:-1] > seg[:-2]) & (seg[1:-1] >= seg[2:])
    peaks = np.flatnonzero(is_peak) + min_lag
    if peaks.size == 0:
        return None, float(np.clip(ac[min_lag : max_lag + 1].max(), 0.0, 1.0))
    best = float(ac[peaks].max())
    strength = float(np.clip(best, 0.0, 1.0))
    if best < MIN_PERIODICITY:
        return None, strength
    lag = int(peaks[np.flatnonzero(ac[peaks] >= 0.85 * best)[0]])
    period = _refine_lag(ac, lag, n)
    return period / FRAME_RATE_HZ, strength


def _refine_lag(ac: np.ndarray, lag: int, n: int) -> float:
    """Sub-frame period from the autocorrelation peak near the largest multiple of
    ``lag`` within half the envelope (and 20 s)."""
    limit = min(n // 2, int(20.0 * FRAME_RATE_HZ))
    period = float(lag)
    multiple = 1
    while (multiple * 2) * period <= limit:
        target = multiple * 2 * period
        radius = max(2, int(np.ceil(0.02 * target)))
        lo = max(1, int(round(target)) - radius)
        hi = min(n - 2, int(round(target)) + radius)
        if hi <= lo:
            break
        k = lo + int(np.argmax(ac[lo : hi + 1]))
        if ac[k] < 0.5 * ac[lag]:
            break
        multiple *= 2
        period = _parabolic_peak(ac, k) / multiple
    if multiple == 1:
        period = _parabolic_peak(ac, lag)
    return period


def _parabolic_peak(values: np.ndarray, k: int) -> float:
    if k <= 0 or k >= values.size - 1:
        return float(k)
    a, b, c = values[k - 1], values[k], values[k + 1]
    denom = a - 2.0 * b + c
    if denom >= 0.0:
        return float(k)
    return float(k + 0.5 * (a - c) / denom)


def fold_period(period_s: float) -> float:
    """Halve or double a period until its tempo lies in 60..180 BPM; returns seconds."""
    if period_s <= 0.0:
        raise ValueError(f"period_s must be > 0, got {period_s}")
    while 60.0 / period_s > MAX_TEMPO_BPM:
        period_s *= 2.0
    while 60.0 / period_s < MIN_TEMPO_BPM:
        period_s /= 2.0
    return period_s


def estimate_phase(envelope: np.ndarray, period_s: float) -> float:
    """Time of the first beat in seconds (0 <= phase < period_s): the offset whose beat
    comb collects the most (capped) onset strength, searched in 2.5 ms steps."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter1d(_capped(envelope), sigma=1.0, mode="nearest")
    period_frames = period_s * FRAME_RATE_HZ
    offsets = np.arange(0.0, period_frames, 0.25)
    beats = np.arange(0.0, smooth.size - 1 - offsets[-1], period_frames)
    if beats.size == 0:
        return 0.0
    positions = offsets[:, None] + beats[None, :]
    scores = np.interp(positions, np.arange(smooth.size), smooth).sum(axis=1)
    return float(offsets[int(np.argmax(scores))] / FRAME_RATE_HZ)
