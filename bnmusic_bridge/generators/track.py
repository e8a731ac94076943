"""The producer's own music (``track``): a track the producer already has, fitted to the
noise.

The paper's "personalized music" for people who bring their own. One file per render
(the request's ``music`` field, ``--music FILE``), fitted in this order:

1. **Tempo.** The track's beat period is estimated with the same onset envelope and
   autocorrelation the noise gets (:mod:`bnmusic_bridge.analysis`), or taken from the
   ``track_bpm`` parameter. When the noise is periodic, the track is time-stretched with
   pedalboard's Rubber Band (:func:`pedalboard.time_stretch`) to the noise's beat period,
   or to half or twice it, whichever needs the stretch closest to 1x; a stretch outside
   ``1 / max_stretch .. max_stretch`` is refused and the track keeps its tempo.
2. **Key.** An optional shift of ``key_shift_semitones`` in the same Rubber Band pass
   (formants kept).
3. **Beat phase.** The stretched track's beats are measured again and its downbeats
   (the beat of the bar with the strongest low-frequency onsets: kick and bass) are put
   on the noise's beats, on the beat of the noise's bar that collects the most onset
   strength. When the noise is not periodic, or the stretch was refused, the track keeps
   its tempo and one of its downbeats is put on the noise's strongest event.
4. **Length.** The track plays from the downbeat before the stem's first bar; when the
   stem is longer it loops a whole number of bars (a multiple of 4 when it can) from
   that downbeat, each repetition entering on a downbeat through a short crossfade that
   ends on the downbeat (so the downbeat's attack is never faded); when the stem is
   shorter it is trimmed. A 10 ms fade at the stem's start and end avoids clicks.

Everything is on the analysis grid (44.1 kHz) and sample-aligned with the stem: sample
``n`` of the fitted track belongs to stem sample ``n``. The generator returns that one
timeline cut into the windows (stereo when the track is stereo), so the pipeline's
crossfades at window joins meet identical audio and change nothing. What was done
(stretch ratio, shift, downbeat, loop points) is in every window's diagnostics, with a
``warnings`` list when something fell back.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis import (
    StemAnalysis,
    estimate_period,
    estimate_phase,
    fold_period,
    onset_envelope,
)
from ..errors import AudioInputError, ParameterError
from ..grid import FRAME_RATE_HZ, HOP_SAMPLES, SAMPLE_RATE_HZ
from ..windows import crossfade_gains
from .base import (
    GenerationSettings,
    NoiseWindow,
    OneFileCache,
    ProgressFn,
    WindowMusic,
    check_param_names,
)

GENERATOR_NAME = "track"

MIN_TRACK_S = 4.0
"""Shortest usable track (after ``start_s``), seconds: a tempo estimate needs a few
beats, and a loop at least one bar."""
MAX_ANALYSIS_S = 120.0
"""The track's tempo is estimated on at most its first two minutes (after ``start_s``)."""
EDGE_FADE_S = 0.01
"""Fade at the stem's start and end, seconds: the track starts and stops mid-sound."""
DOWNBEAT_LOWPASS_HZ = 150.0
"""Downbeats are found on the onsets of the track's content below this frequency (kick
drum, bass), which mark the first beat of a bar in most styles."""
SILENT_PEAK = 1e-5
"""A track whose sample peak is under this (-100 dBFS) is refused as silent."""
PHRASE_BARS = 4
"""Loops are a multiple of this many bars when the track has that many to give."""

PARAM_SPECS: dict[str, tuple[type, Any, float | None, float | None]] = {
    "fit": (bool, True, None, None),
    "key_shift_semitones": (float, 0.0, -12.0, 12.0),
    "track_bpm": (float, 0.0, 40.0, 240.0),
    "max_stretch": (float, 2.0, 1.0, 2.0),
    "beats_per_bar": (int, 4, 2, 12),
    "crossfade_s": (float, 0.05, 0.005, 0.5),
    "start_s": (float, 0.0, 0.0, 3600.0),
}
"""``settings.params`` of the track generator: key -> (type, default, low, high).
``track_bpm`` 0 means "estimate it" (otherwise 40 to 240)."""


@dataclass(frozen=True)
class TrackOptions:
    """Validated ``settings.params`` of the track generator.

    Attributes:
        fit: fit tempo, beat phase and loop points to the noise (False: the track is
            only looped or trimmed from its start, the "raw" track; a key shift still
            applies).
        key_shift_semitones: pitch shift, semitones (-12 to 12; formants preserved).
        track_bpm: the track's tempo in BPM when the producer knows it, or None to
            estimate it.
        max_stretch: largest speed change allowed, as a ratio (1 to 2: the tempo may
            change between ``1 / max_stretch`` and ``max_stretch`` times).
        beats_per_bar: beats in one bar of the track (4 for 4/4).
        crossfade_s: length of the crossfade at each loop join, seconds.
        start_s: seconds of the track skipped before anything else (an intro).
    """

    fit: bool = True
    key_shift_semitones: float = 0.0
    track_bpm: float | None = None
    max_stretch: float = 2.0
    beats_per_bar: int = 4
    crossfade_s: float = 0.05
    start_s: float = 0.0


def parse_track_options(params: Mapping[str, Any]) -> TrackOptions:
    """Check the track generator's ``settings.params`` and return them typed.

    Raises:
        ParameterError: an unknown key (all named), a wrong type or a value out of range.
    """
    check_param_names(GENERATOR_NAME, params, PARAM_SPECS)
    values: dict[str, Any] = {}
    for key, (kind, default, low, high) in PARAM_SPECS.items():
        value = params.get(key, default)
        where = f"generator {GENERATOR_NAME!r} parameter {key!r}"
        if kind is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise ParameterError(f"{where} must be true or false, got {value!r}")
            values[key] = bool(value)
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise ParameterError(f"{where} must be a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise ParameterError(f"{where} must be finite, got {value!r}")
        if kind is int and number != int(number):
            raise ParameterError(f"{where} must be a whole number, got {value!r}")
        if key == "track_bpm" and number == 0.0:
            values[key] = None
            continue
        assert low is not None and high is not None
        if not low <= number <= high:
            extra = " (0: estimate it)" if key == "track_bpm" else ""
            raise ParameterError(f"{where} = {value!r} is out of range; allowed: {low:g} to {high:g}{extra}")
        values[key] = int(number) if kind is int else number
    return TrackOptions(**values)


# ---------------------------------------------------------------------------------------
# reading the track


def load_track(path: str | os.PathLike[str]) -> np.ndarray:
    """Read the producer's track as float32 ``(channels, samples)`` at 44.1 kHz.

    Mono stays mono, stereo stays stereo; a file with more channels keeps its first two.
    Resampled with pedalboard when the file's rate differs.

    Raises:
        AudioInputError: missing, a folder, empty, not audio, truncated or holding NaN/inf
            (the message names the file).
    """
    from ..audio import read_stem, resample

    p = Path(path).expanduser()
    try:
        stem = read_stem(p)
    except AudioInputError as e:
        raise AudioInputError(f"music track {e}") from e
    audio = stem.audio[:2]
    if stem.sample_rate_hz != SAMPLE_RATE_HZ:
        n = int(round(stem.num_samples * SAMPLE_RATE_HZ / stem.sample_rate_hz))
        audio = resample(audio, stem.sample_rate_hz, SAMPLE_RATE_HZ, n)
    return np.ascontiguousarray(audio, dtype=np.float32)


# ---------------------------------------------------------------------------------------
# the track's beat


@dataclass(frozen=True)
class TrackBeat:
    """The track's own beat, measured like the noise's (:mod:`bnmusic_bridge.analysis`).

    Attributes:
        period_s: beat period in seconds (60 / BPM, folded into 60..180 BPM when
            estimated), or None when no tempo was found.
        phase_s: time of the first beat in seconds from the audio's start.
        periodicity: autocorrelation strength of the onset envelope, 0..1.
        source: ``"estimated"``, ``"track_bpm"`` (given) or ``"none"``.
    """

    period_s: float | None
    phase_s: float
    periodicity: float
    source: str


def track_onsets(mono: np.ndarray) -> np.ndarray:
    """The onset envelope of 44.1 kHz mono audio, one value per 10 ms frame (the noise's
    own measure, :func:`bnmusic_bridge.analysis.onset_envelope`)."""
    return onset_envelope(np.asarray(mono, dtype=np.float64), mono.size // HOP_SAMPLES + 1)


def estimate_beat(mono: np.ndarray, period_s: float | None = None) -> TrackBeat:
    """Beat period and phase of a 44.1 kHz mono track.

    Args:
        mono: float ``(samples,)``.
        period_s: a known beat period in seconds (only the phase is measured), or None
            to estimate it from the onset envelope's autocorrelation.
    """
    envelope = track_onsets(mono)
    if period_s is not None:
        _, strength = estimate_period(envelope)
        return TrackBeat(period_s, estimate_phase(envelope, period_s), strength, "track_bpm")
    found, strength = estimate_period(envelope)
    if found is None:
        return TrackBeat(None, 0.0, strength, "none")
    period = fold_period(found)
    return TrackBeat(period, estimate_phase(envelope, period), strength, "estimated")


def choose_target_period(
    track_period_s: float, noise_period_s: float, max_stretch: float
) -> tuple[float, float] | None:
    """The noise-locked beat period for the track and the speed factor that gets there.

    The target is the noise's period times a power of two (half, same, double, ...),
    whichever is closest to the track's own period, so the stretch stays near 1x.

    Returns:
        ``(target_period_s, speed)`` with ``speed = track_period_s / target_period_s``
        (pedalboard's ``stretch_factor``: above 1 plays faster), or None when even the
        nearest target needs a speed outside ``1 / max_stretch .. max_stretch``.
    """
    octave = round(math.log2(track_period_s / noise_period_s))
    target = noise_period_s * 2.0**octave
    speed = track_period_s / target
    if abs(math.log(speed)) > math.log(max_stretch) + 1e-9:
        return None
    return target, speed


def downbeat_offset(mono: np.ndarray, phase_s: float, period_s: float, beats_per_bar: int) -> int:
    """Which beat (0 .. beats_per_bar - 1, counted from the beat at ``phase_s``) starts
    the track's bars: the one whose beats collect the most low-frequency onset strength
    (kick, bass), falling back to all frequencies when the track has no low end."""
    from scipy import signal

    sos = signal.butter(4, DOWNBEAT_LOWPASS_HZ, "lowpass", fs=SAMPLE_RATE_HZ, output="sos")
    low = signal.sosfilt(sos, np.asarray(mono, dtype=np.float64))
    envelope = track_onsets(low)
    if float(envelope.max(initial=0.0)) <= 0.0 or float(np.max(np.abs(low), initial=0.0)) < 1e-4:
        envelope = track_onsets(mono)
    beats = np.arange(phase_s, envelope.size / FRAME_RATE_HZ, period_s) * FRAME_RATE_HZ
    strength = np.interp(beats, np.arange(envelope.size), envelope)
    scores = [float(strength[k::beats_per_bar].mean()) if strength[k::beats_per_bar].size else 0.0
              for k in range(beats_per_bar)]
    return int(np.argmax(scores))


def noise_downbeat(
    analysis: StemAnalysis, bar_s: float, locked: bool
) -> tuple[float, str]:
    """Where the music's bars start on the stem (seconds, 0 <= t < bar_s), and why.

    ``locked`` (the track follows the noise's beat): the noise beat, among those in one
    bar, whose comb of bars collects the most noise onset strength. Otherwise the
    noise's strongest onset (folded into the first bar), or the stem's start when the
    noise has no onsets.
    """
    envelope = np.asarray(analysis.onset_envelope, dtype=np.float64)
    frames = np.arange(envelope.size)
    if locked and analysis.beat_period_s is not None:
        period = analysis.beat_period_s
        candidates = np.arange(analysis.beat_phase_s, bar_s - 1e-9, period)
        if candidates.size == 0:
            candidates = np.array([analysis.beat_phase_s % bar_s])
        duration = envelope.size / FRAME_RATE_HZ
        scores = []
        for c in candidates:
            bars = np.arange(c, duration, bar_s) * FRAME_RATE_HZ
            scores.append(float(np.interp(bars, frames, envelope).sum()))
        best = float(candidates[int(np.argmax(scores))])
        return best, "the noise's beat with the strongest onsets"
    onsets = np.asarray(analysis.onset_times_s, dtype=np.float64)
    if onsets.size == 0:
        return 0.0, "the stem's start (the noise has no onsets)"
    strength = np.interp(onsets * FRAME_RATE_HZ, frames, envelope)
    strongest = float(onsets[int(np.argmax(strength))])
    return strongest % bar_s, f"the noise's strongest event at {strongest:.3f} s"


# ---------------------------------------------------------------------------------------
# fitting


@dataclass
class FittedTrack:
    """The track on the stem's timeline.

    Attributes:
        audio: float32 ``(channels, num_samples)`` at 44.1 kHz (channels as the track).
        diagnostics: what was done (JSON-serialisable): mode, tempi, stretch ratio,
            key shift, downbeat, loop points, warnings.
    """

    audio: np.ndarray
    diagnostics: dict[str, Any]


def fit_track(
    track: np.ndarray,
    analysis: StemAnalysis,
    num_samples: int,
    options: TrackOptions,
    where: str = "<track>",
) -> FittedTrack:
    """Fit a track to the noise and lay it on a timeline of ``num_samples`` samples.

    Args:
        track: float32 ``(channels, samples)`` at 44.1 kHz, 1 or 2 channels.
        analysis: the noise stem's analysis (tempo, beat phase, onsets).
        num_samples: timeline length at 44.1 kHz (the stem's, or more: window padding).
        options: the generator's parameters.
        where: what error messages and warnings name (the file).

    Returns:
        A :class:`FittedTrack` (see the module doc for the steps).

    Raises:
        AudioInputError: the track (after ``start_s``) is silent, shorter than
            :data:`MIN_TRACK_S`, or shorter than one bar after its first usable downbeat.
    """
    sr = SAMPLE_RATE_HZ
    start = int(round(options.start_s * sr))
    audio = np.ascontiguousarray(track[:, start:], dtype=np.float32)
    seconds = audio.shape[1] / sr
    if seconds < MIN_TRACK_S:
        after = f" after start_s={options.start_s:g} s" if start else ""
        raise AudioInputError(
            f"music track {where}: {seconds:.2f} s long{after}; at least {MIN_TRACK_S:g} s is needed"
        )
    if float(np.max(np.abs(audio))) < SILENT_PEAK:
        raise AudioInputError(f"music track {where}: the track is silent (peak below -100 dBFS)")
    xfade = max(1, int(round(options.crossfade_s * sr)))
    diag: dict[str, Any] = {
        "generator": GENERATOR_NAME,
        "music_file": Path(where).name,
        "track_seconds": round(track.shape[1] / sr, 3),
        "track_channels": int(track.shape[0]),
        "key_shift_semitones": options.key_shift_semitones,
        "crossfade_s": round(xfade / sr, 4),
        "noise_tempo_bpm": None if analysis.tempo_bpm is None else round(analysis.tempo_bpm, 3),
        "warnings": [],
    }
    shift = options.key_shift_semitones
    if not options.fit:
        diag["mode"] = "raw"
        out, joins = _loop_whole(_stretch(audio, 1.0, shift), num_samples, xfade)
        diag.update(stretch_ratio=1.0, loop_joins=joins)
        return FittedTrack(_edge_fades(out, analysis.num_samples), diag)

    mono = audio[:, : int(MAX_ANALYSIS_S * sr)].mean(axis=0)
    given = None if options.track_bpm is None else 60.0 / options.track_bpm
    beat = estimate_beat(mono, given)
    diag.update(
        track_tempo_source=beat.source,
        track_periodicity=round(beat.periodicity, 3),
        track_tempo_bpm=None if beat.period_s is None else round(60.0 / beat.period_s, 3),
    )
    if beat.period_s is None:
        diag["mode"] = "unaligned"
        diag["warnings"].append(
            f"music track {where}: no tempo found (periodicity {beat.periodicity:.2f}); "
            "played at its own tempo and looped whole, not aligned to the noise "
            "(set --param track_bpm=BPM if it has a beat)"
        )
        out, joins = _loop_whole(_stretch(audio, 1.0, shift), num_samples, xfade)
        diag.update(stretch_ratio=1.0, loop_joins=joins)
        return FittedTrack(_edge_fades(out, analysis.num_samples), diag)

    target_period, speed, locked = beat.period_s, 1.0, False
    if analysis.beat_period_s is not None:
        chosen = choose_target_period(beat.period_s, analysis.beat_period_s, options.max_stretch)
        if chosen is None:
            diag["warnings"].append(
                f"music track {where}: reaching the noise's tempo ({analysis.tempo_bpm:.1f} BPM, "
                f"or half or double it) from {60.0 / beat.period_s:.1f} BPM needs more than "
                f"max_stretch={options.max_stretch:g}x; the track keeps its tempo"
            )
        else:
            (target_period, speed), locked = chosen, True
    if abs(speed - 1.0) < 1e-6:
        speed = 1.0
    diag.update(
        mode="tempo-locked" if locked else "downbeat-on-strongest-event",
        target_tempo_bpm=round(60.0 / target_period, 3),
        stretch_ratio=round(speed, 5),
    )
    if not locked and analysis.beat_period_s is None:
        diag["noise_periodicity"] = round(analysis.periodicity_strength, 3)

    bar_s = options.beats_per_bar * target_period
    bar = bar_s * sr
    downbeat_s, why = noise_downbeat(analysis, bar_s, locked)
    d0 = downbeat_s * sr
    # Only the part of the track the timeline can use is stretched (Rubber Band costs
    # about a tenth of real time per channel).
    needed = (num_samples + 2 * bar + xfade) * speed + 4 * sr
    segment = audio[:, : int(min(audio.shape[1], math.ceil(needed)))]
    stretched = _stretch(segment, speed, shift)
    y_mono = stretched.mean(axis=0)
    # The beats are measured again after stretching: Rubber Band keeps them within a
    # millisecond or two, but measuring is what the noise got too.
    phase_s = estimate_phase(track_onsets(y_mono), target_period)
    first = downbeat_offset(y_mono, phase_s, target_period, options.beats_per_bar)
    first_downbeat = (phase_s + first * target_period) * sr
    fitted_period, _ = estimate_period(track_onsets(y_mono))
    diag.update(
        fitted_tempo_bpm=None if fitted_period is None else round(60.0 / fold_period(fitted_period), 3),
        downbeat_s=round(downbeat_s, 4),
        downbeat_on=why,
    )
    # The timeline starts inside the track's first bar that reaches the stem's first
    # bar line d0: track position = timeline position + offset, with the track's
    # downbeats landing on d0 + j * bar.
    offset_f = (first_downbeat - d0) % bar
    offset = int(round(offset_f))
    # Repetitions jump back to a downbeat with a crossfade's worth of pre-roll before it.
    loop_start = first_downbeat if first_downbeat >= xfade else first_downbeat + bar
    length = stretched.shape[1]
    to_track_s = speed / sr  # stretched samples -> seconds of the original track
    diag["track_start_s"] = round(options.start_s + offset * to_track_s, 4)
    if offset + num_samples <= length:
        out = stretched[:, offset : offset + num_samples]
        diag.update(loop_bars=None, loop_joins=0)
        return FittedTrack(_edge_fades(np.ascontiguousarray(out), analysis.num_samples), diag)

    available = int((length - loop_start) // bar)
    if available < 1:
        raise AudioInputError(
            f"music track {where}: too short to loop: after its first usable downbeat "
            f"({options.start_s + loop_start * to_track_s:.2f} s) it holds less than one bar "
            f"({bar_s * speed:.2f} s at its own tempo)"
        )
    bars = available - available % PHRASE_BARS if available >= PHRASE_BARS else 1 << (available.bit_length() - 1)
    loop_len = bars * bar
    first_join = loop_start + loop_len - offset_f
    out, joins = _loop_bars(stretched, offset, int(round(loop_start)), first_join, loop_len, num_samples, xfade)
    diag.update(
        loop_bars=bars,
        loop_start_s=round(options.start_s + loop_start * to_track_s, 4),
        loop_end_s=round(options.start_s + (loop_start + loop_len) * to_track_s, 4),
        loop_joins=joins,
        first_join_s=round(first_join / sr, 4),
        loop_period_s=round(loop_len / sr, 4),
    )
    return FittedTrack(_edge_fades(out, analysis.num_samples), diag)


def _stretch(audio: np.ndarray, speed: float, semitones: float) -> np.ndarray:
    """Rubber Band through pedalboard: ``speed`` (above 1: faster) and a pitch shift in
    semitones, formants preserved; the input itself when neither changes anything."""
    if speed == 1.0 and semitones == 0.0:
        return audio
    from pedalboard import time_stretch

    out = time_stretch(
        np.ascontiguousarray(audio, dtype=np.float32),
        float(SAMPLE_RATE_HZ),
        stretch_factor=float(speed),
        pitch_shift_in_semitones=float(semitones),
    )
    return np.asarray(out, dtype=np.float32)


def _loop_bars(
    y: np.ndarray,
    offset: int,
    loop_start: int,
    first_join: float,
    loop_len: float,
    num_samples: int,
    xfade: int,
) -> tuple[np.ndarray, int]:
    """Lay ``y`` on the timeline: ``y[offset:]`` from sample 0, then from each join
    ``first_join + m * loop_len`` (m >= 0, rounded to samples) ``y[loop_start:]`` again.
    Each repetition's pre-roll (the ``xfade`` samples before ``loop_start``) crossfades
    with the end of the one before, ending exactly on the join, so the downbeat enters at
    full level. Returns the timeline and the number of joins."""
    out = np.zeros((y.shape[0], num_samples), dtype=np.float32)
    # Joins are rounded to samples, so a repetition may ask for one sample past the bars
    # the track holds.
    y = np.pad(y, ((0, 0), (0, 2)))
    src, pos, m = offset, 0, 0
    joins = 0
    while pos < num_samples:
        nxt = int(round(first_join + m * loop_len))
        stop = min(nxt, num_samples)
        out[:, pos:stop] = y[:, src : src + stop - pos]
        if nxt >= num_samples:
            break
        # The last xfade samples before the join get the next repetition's pre-roll
        # faded in while the previous repetition's tail, already there, fades out.
        a = nxt - xfade
        head = out[:, a:nxt]
        tail = y[:, loop_start - xfade : loop_start]
        fade_out, fade_in = _gains(head, tail, xfade)
        out[:, a:nxt] = head * fade_out + tail * fade_in
        src, pos, m = loop_start, nxt, m + 1
        joins += 1
    return out, joins


def _loop_whole(y: np.ndarray, num_samples: int, xfade: int) -> tuple[np.ndarray, int]:
    """The whole track from its start, repeated back to back with a crossfade over each
    repetition's last ``xfade`` samples (the raw track: no tempo, phase or bar logic)."""
    n = y.shape[1]
    if n >= num_samples:
        return np.ascontiguousarray(y[:, :num_samples]), 0
    xfade = min(xfade, n // 4)
    out = np.zeros((y.shape[0], num_samples), dtype=np.float32)
    step = n - xfade
    pos, joins = 0, 0
    while pos < num_samples:
        stop = min(pos + n, num_samples)
        piece = y[:, : stop - pos]
        if pos == 0:
            out[:, pos:stop] = piece
        else:
            k = min(xfade, stop - pos)
            fade_out, fade_in = _gains(out[:, pos : pos + k], piece[:, :k], xfade)
            out[:, pos : pos + k] = out[:, pos : pos + k] * fade_out[:k] + piece[:, :k] * fade_in[:k]
            out[:, pos + k : stop] = piece[:, k:]
            joins += 1
        pos += step
    return out, joins


def _gains(head: np.ndarray, tail: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Crossfade gains for ``n`` samples, corrected for the overlap's correlation
    (:func:`bnmusic_bridge.windows.crossfade_gains`); ``head``/``tail`` may be shorter at
    the timeline's end."""
    k = min(head.shape[1], tail.shape[1])
    fade_out, fade_in, _ = crossfade_gains(head[:, :k], tail[:, :k], n)
    return fade_out, fade_in


def _edge_fades(audio: np.ndarray, stem_samples: int) -> np.ndarray:
    """Fade in over the first 10 ms and out over the 10 ms before the stem's end (the
    samples after it are window padding, cut by the pipeline)."""
    out = np.array(audio, dtype=np.float32, copy=True)
    n = int(round(EDGE_FADE_S * SAMPLE_RATE_HZ))
    ramp = np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n).astype(np.float32) ** 2
    k = min(n, out.shape[1])
    out[:, :k] *= ramp[:k]
    end = min(stem_samples, out.shape[1])
    k = min(n, end)
    out[:, end - k : end] *= ramp[:k][::-1]
    out[:, end:] = 0.0
    return out


# ---------------------------------------------------------------------------------------
# the generator


class TrackGenerator:
    """The producer's own track, fitted to the noise (see the module doc).

    Args:
        music: default track path; the request's ``music`` field
            (``settings.music``) overrides it.

    ``settings.params``: ``fit`` (true), ``key_shift_semitones`` (0), ``track_bpm`` (0:
    estimate), ``max_stretch`` (2), ``beats_per_bar`` (4), ``crossfade_s`` (0.05),
    ``start_s`` (0); see :class:`TrackOptions`.

    Returns per window: ``audio`` float32 ``(channels, window.num_samples)`` at 44.1 kHz,
    channels as the track (1 or 2), the window's slice of one fitted timeline.
    """

    name = GENERATOR_NAME

    def __init__(self, music: str | os.PathLike[str] | None = None) -> None:
        self.music = None if music is None else str(music)
        self._track = OneFileCache()

    def generate(
        self,
        windows: Sequence[NoiseWindow],
        analysis: StemAnalysis,
        settings: GenerationSettings,
        progress: ProgressFn | None = None,
    ) -> list[WindowMusic]:
        options = parse_track_options(settings.params)
        music = settings.music or self.music
        if not music:
            raise ParameterError(
                "generator 'track' needs the producer's track: --music FILE on the command "
                'line, music = "FILE" in the preset\'s [generator] table, or the music '
                "override of an OSC render_ex job"
            )
        if not windows:
            return []
        path = Path(music).expanduser()
        track = self._track.get(path, load_track)
        if progress is not None:
            progress("generate", 0.2)
        total = max(w.start_sample + w.num_samples for w in windows)
        fitted = fit_track(track, analysis, total, options, where=str(path))
        if progress is not None:
            progress("generate", 1.0)
        return [
            WindowMusic(
                audio=np.ascontiguousarray(fitted.audio[:, w.start_sample : w.start_sample + w.num_samples]),
                image=None,
                diagnostics=dict(fitted.diagnostics),
            )
            for w in windows
        ]
