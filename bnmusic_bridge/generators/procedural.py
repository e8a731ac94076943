"""The embedded default generator: composes music aligned to the noise (no weights, CPU).

BNMusic's Stage 1 asks for music whose rhythm and spectral placement follow the noise's
high-energy regions. This generator composes such music directly instead of painting a
spectrogram:

1. *Beat grid* from the noise's onset periodicity (``analysis.tempo_bpm`` and
   ``beat_phase_s``), moved by octaves (x2, /2) into the style's tempo range so every
   music beat falls on a noise beat; a style tempo when the noise is not periodic.
2. *Key and register* from the noise's spectrum: its tonal peaks between 55 Hz and 2 kHz
   (``analysis.tonal_peaks_hz``) choose the key (a hum at 110 Hz pulls towards keys with
   A in them), the centroid of ``mask_band_share`` places the chord voicing.
3. *Composing for masking* (:class:`NoiseProfile`: the mask's band, the noise's spectral
   envelope, how steady or impulsive it is). Masking needs music energy in the noise's
   loud time-frequency bins, densely, so:

   - a *bed*, a sustained ensemble voiced densely across the noise's loud band (its
     lowest note two octaves under the band, so its harmonics fill the band; roots and
     fifths only below C3), held from chord to chord, its harmonics shaped exactly like
     the noise's envelope (cubed: the energy goes where the noise is loudest); low-band
     noise gets a low drone, treble noise high chords; loudest on a steady noise;
   - *hits on the noise's events*: on an impulsive noise, a short chord in its band at
     each of its hits that lies near the 16th grid (at the event's own time);
   - every other voice's harmonics follow the noise's envelope (up to 30 dB, the bass
     up to 12 dB, each note keeping its power);
   - the drums take the noise's colour (minimum-phase EQ, at most 6 dB quieter for the
     kick and 9 dB for snare and clap); cymbals keep theirs (they keep time up where
     nothing else plays) and get at most 6 dB quieter; hats and crash are a few
     inharmonic partials with soft attacks, not hiss, so the music stays tonal.
4. *Dynamics* follow the noise's frame energy (``frame_energy_db``, 0.3 s smoothing).
5. *Style and palette* from prompt words; structure in 8-bar sections (A B A C) whose
   chord progressions and melodic motifs recur, over one global timeline.

Determinism and seams: every note is a pure function of (plan, bar), the mix is built in
fixed 65,536-sample chunks on the absolute timeline, streamed in order from the start
through one reverb (the limiter is memoryless), and a window is a slice of those chunks.
So the same input and seed give bit-identical audio, and the part of window ``k`` that
overlaps window ``k + 1`` is sample-identical in both.
"""

from __future__ import annotations

import math
import numbers
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..analysis import StemAnalysis
from ..errors import ParameterError
from ..grid import HOP_SAMPLES, SAMPLE_RATE_HZ
from .base import GenerationSettings, NoiseWindow, ProgressFn, WindowMusic
from .styles import (
    MAJOR_SCALE,
    MINOR_SCALE,
    MODE_PROGRESSIONS,
    STEP_VELOCITY,
    STYLES,
    Chord,
    DrumPattern,
    Style,
    instruments_in,
    mode_from_prompt,
    note_name,
    parse_key,
    parse_progression,
    prompt_warning,
    style_from_prompt,
)
from .synth import (
    SpectralTilt,
    drum_kit,
    pan_gains,
    render_note,
    soft_clip,
)

CHUNK_SAMPLES = 65_536
"""Mix block on the absolute timeline (1.49 s); windows are slices of these blocks."""
BARS_PER_SECTION = 8
SECTION_CYCLE = ("A", "B", "A", "C")
MASTER_GAIN = 0.3
"""Mix bus gain: a full mix peaks around -3 to -8 dBFS, below the limiter's knee."""
_NOTE_CACHE_BYTES = 96 * 2**20
_FADE_IN_SAMPLES = 882
_CHUNK_CACHE = 8

PARAM_DEFAULTS: dict[str, Any] = {
    "style": None,
    "tempo_bpm": None,
    "key": None,
    "density": 0.5,
    "drums": None,
    "dynamics_depth": 0.5,
    "spectral_match": 1.0,
    "reverb_mix": 0.5,
}


@dataclass(frozen=True)
class ProceduralOptions:
    """Validated ``settings.params`` of the procedural generator (see the class doc)."""

    style: str | None = None
    tempo_bpm: float | None = None
    key: str | None = None
    density: float = 0.5
    drums: bool | None = None
    dynamics_depth: float = 0.5
    spectral_match: float = 1.0
    reverb_mix: float = 0.5


def parse_options(params: Mapping[str, Any]) -> ProceduralOptions:
    """Check ``settings.params`` and return them typed.

    Raises:
        ParameterError: an unknown key (all unknown keys are named), a wrong type or a
            value out of range.
    """
    unknown = sorted(set(params) - set(PARAM_DEFAULTS))
    if unknown:
        raise ParameterError(
            f"unknown procedural generator parameter(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(PARAM_DEFAULTS)}"
        )
    values = {**PARAM_DEFAULTS, **params}

    style = values["style"]
    if style is not None:
        if not isinstance(style, str):
            raise ParameterError(f"style must be a string, got {style!r}")
        name = _style_name(style)
        if name is None:
            raise ParameterError(f"unknown style {style!r}; known styles: {', '.join(STYLES)}")
        style = name

    tempo = values["tempo_bpm"]
    if tempo is not None:
        if isinstance(tempo, bool) or not isinstance(tempo, numbers.Real):
            raise ParameterError(f"tempo_bpm must be a number, got {tempo!r}")
        if not 40.0 <= float(tempo) <= 240.0:
            raise ParameterError(f"tempo_bpm={tempo} is out of range 40..240")
        tempo = float(tempo)

    key = values["key"]
    if key is not None:
        if not isinstance(key, str):
            raise ParameterError(f"key must be a string such as 'D' or 'F#m', got {key!r}")
        parse_key(key)

    drums = values["drums"]
    if drums is not None and not isinstance(drums, bool):
        raise ParameterError(f"drums must be true or false, got {drums!r}")

    unit: dict[str, float] = {}
    for name in ("density", "dynamics_depth", "spectral_match", "reverb_mix"):
        v = values[name]
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 <= float(v) <= 1.0:
            raise ParameterError(f"{name} must be a number from 0 to 1, got {v!r}")
        unit[name] = float(v)
    return ProceduralOptions(style=style, tempo_bpm=tempo, key=key, drums=drums, **unit)


def _style_name(text: str) -> str | None:
    lowered = text.strip().lower()
    if lowered in STYLES:
        return lowered
    found, word = style_from_prompt(lowered)
    return found if word is not None else None


# ------------------------------------------------------------------ planning


@dataclass(frozen=True)
class NoiseProfile:
    """Where and how the noise is loud: what the composition puts its energy into.

    Attributes:
        band_lo_hz, band_centre_hz, band_hi_hz: 10th, 50th and 90th percentile of the
            high-energy mask's frequencies (mask pixels counted per mel band), Hz; the
            band the music's dense energy goes into.
        envelope: the noise's mean spectral envelope (mel magnitude, smoothed over about
            a sixth of an octave), linear, peak 1; held flat below 30 Hz, falling 24 dB
            per octave above 10 kHz (the mel grid ends there).
        stationarity: 0..1, 1 = a steady noise (its slow level barely moves and it has
            no distinct hits): it gets sustained textures.
        impulsiveness: 0..1, 1 = distinct hits far above the noise's bed (a clock, rail
            joints): it gets hits on its events.
        low_share: share of the mask below 250 Hz: low-band noise gets low, dense parts.
        event_times_s: times of the noise's distinct hits, seconds from the stem's start
            (empty unless ``impulsiveness`` > 0).
    """

    band_lo_hz: float
    band_centre_hz: float
    band_hi_hz: float
    envelope: SpectralTilt
    stationarity: float
    impulsiveness: float
    low_share: float
    event_times_s: np.ndarray


@dataclass(frozen=True)
class MusicPlan:
    """Everything decided once per stem; the composition is a pure function of it.

    Attributes:
        style: the chosen style; style_source says why ("params", "prompt word 'x'",
            "default").
        tempo_bpm: music tempo in BPM; tempo_source: "params", "noise" or "style".
        beat_s: seconds per beat; phase_s: time in seconds of beat 0, a downbeat.
        tonic_pc: key tonic pitch class (0 = C); minor: minor key; key_source: "params",
            "noise peaks" or "seed".
        chord_centre_midi: centre of the chord voicing (MIDI).
        bass_low_midi: lowest bass note (MIDI).
        lead_centre_midi: centre of melody and arpeggios (MIDI).
        roles: instrument of each role (chords, pad, bass, arp, lead); None = off.
        drums_on: whether the drum kit plays.
        role_gains: linear gain of each role and drum lane (style balance x noise bands).
        tilt: the spectral tilt applied to every pitched voice's harmonics.
        progressions: chord progression of section kinds A, B, C.
        density: 0..1 note density.
        seed: the settings' seed.
        gain_frames: linear music gain per 10 ms frame (dynamics following the noise).
        reverb_room: pedalboard room size; reverb_send_scale: multiplies each role's send.
        profile: where and how the noise is loud (:class:`NoiseProfile`).
        bed_tilt: the gain over frequency that gives the bed (the sustained texture in
            the noise's loud band) the noise's spectral envelope.
        bass_tilt: the bass's (milder) tilt; drum_envelope: the noise colour the drum
            kit is filtered with (None: unfiltered).
        prompt_warning: one line naming the prompt words not understood and the
            closest-timbre approximations made (None: every word understood exactly).
    """

    style: Style
    style_source: str
    tempo_bpm: float
    tempo_source: str
    beat_s: float
    phase_s: float
    tonic_pc: int
    minor: bool
    key_source: str
    chord_centre_midi: float
    bass_low_midi: int
    lead_centre_midi: float
    roles: dict[str, str | None]
    drums_on: bool
    role_gains: dict[str, float]
    tilt: SpectralTilt
    progressions: dict[str, tuple[Chord, ...]]
    density: float
    seed: int
    gain_frames: np.ndarray
    reverb_room: float
    reverb_send_scale: float
    profile: NoiseProfile | None = None
    bed_tilt: SpectralTilt | None = None
    bass_tilt: SpectralTilt | None = None
    drum_envelope: SpectralTilt | None = None
    prompt_warning: str | None = None

    @property
    def key_name(self) -> str:
        name = note_name(self.tonic_pc, self.tonic_pc, self.minor)
        return f"{name} {'minor' if self.minor else 'major'}"

    @property
    def bar_s(self) -> float:
        return 4.0 * self.beat_s


_REGIONS_HZ = {"low": (0.0, 160.0), "lowmid": (160.0, 640.0), "mid": (640.0, 2560.0)}
_REGIONS_HZ["high"] = (2560.0, 1e9)

_ROLE_LEVEL = {
    "chords": 0.16,
    "pad": 0.07,
    "bass": 0.4,
    "arp": 0.15,
    "lead": 0.3,
    "kick": 1.05,
    "snare": 2.85,
    "clap": 2.4,
    "hat": 0.8,
    "open_hat": 0.55,
    "ride": 0.4,
    "shaker": 0.5,
    "crash": 0.45,
}
"""Base linear level of each role at velocity 1 (a balanced mix on a flat noise). Kick,
snare and clap sit 3.5 dB over the uncoloured kit's balance: the noise's colour takes up
to 6 and 9 dB off them (synth.DRUM_MAX_CUT_DB), and the beat has to stay clear."""
_BED_LEVEL = 0.12
"""Linear level of the bed (all its notes together) on a fully steady noise."""
_HIT_LEVEL = 0.35
"""Linear level of a hit on a noise event (all its notes together), fully impulsive noise."""
HIT_TOLERANCE_STEPS = 0.35
"""A noise event gets a hit only within this many 16th notes of the grid: the hit lands
on the event itself, close enough to the grid to be heard on the beat."""
HIT_MAX_NOTES = 4
"""Linear level of the bed (all its notes together) on a fully steady noise."""
_DRUM_ROLES = frozenset({"kick", "snare", "clap", "hat", "open_hat", "ride", "shaker", "crash"})
_ROLE_REGIONS = {
    "chords": ("lowmid", "mid"),
    "pad": ("lowmid", "mid"),
    "bass": ("low", "lowmid"),
    "arp": ("mid",),
    "lead": ("mid", "high"),
    "kick": ("low",),
    "snare": ("mid", "high"),
    "clap": ("mid", "high"),
    "hat": ("high",),
    "open_hat": ("high",),
    "ride": ("high",),
    "shaker": ("high",),
    "crash": ("high",),
}
_ROLE_SEND = {
    "bed": 0.3,
    "hit": 0.1,
    "chords": 0.3,
    "pad": 0.5,
    "bass": 0.0,
    "arp": 0.45,
    "lead": 0.35,
    "kick": 0.0,
    "snare": 0.15,
    "clap": 0.2,
    "hat": 0.05,
    "open_hat": 0.08,
    "ride": 0.1,
    "shaker": 0.08,
    "crash": 0.15,
}
_LOWEST_BASS_MIDI = {"cello": 36, "upright": 28, "bass": 28, "sub": 26}
_DRUM_PAN = {"hat": 0.2, "open_hat": 0.2, "ride": -0.2, "shaker": 0.3, "crash": -0.15}


def make_plan(
    analysis: StemAnalysis, settings: GenerationSettings, options: ProceduralOptions
) -> MusicPlan:
    """Decide style, tempo, key, register, palette and levels for a stem."""
    # 1. Style and palette from the prompt (params win).
    if options.style is not None:
        style_name, style_source = options.style, "params"
    else:
        style_name, word = style_from_prompt(settings.prompt)
        style_source = f"prompt word {word!r}" if word else "default"
    style = STYLES[style_name]
    wanted, negated = instruments_in(settings.prompt)
    unwanted = set(negated) | set(sum(instruments_in(settings.negative_prompt, closest=False), []))
    roles = _choose_roles(style, wanted, unwanted)
    drums_on = style.drums is not None or "drums" in wanted
    if "drums" in unwanted:
        drums_on = False
    if options.drums is not None:
        drums_on = options.drums

    # 2. Tempo and beat grid locked to the noise.
    tempo, tempo_source, phase = _choose_tempo(analysis, style, options)
    beat_s = 60.0 / tempo

    # 3. Key from the noise's tonal peaks, register from its high-energy bands. (Retuning
    # the music off A440 onto the peaks was tried: it moved the masking figures by under
    # 1 LU and left the key unclear to an independent key finder; so the key is chosen,
    # the tuning kept.)
    mood_minor, mood_word = mode_from_prompt(settings.prompt)
    tonic_pc, minor, key_source = _choose_key(
        analysis, style, options, settings.seed, mood_minor, mood_word
    )
    shares = _region_shares(analysis)
    centroid_hz = _mask_centroid_hz(analysis)
    centroid_midi = 69.0 + 12.0 * math.log2(max(centroid_hz, 20.0) / 440.0)
    chord_centre = float(np.clip(60.0 + 0.6 * (centroid_midi - 60.0), 50.0, 76.0))
    bass_low = 28 if shares["low"] >= 0.5 * shares["lowmid"] else 33
    bass_low = max(bass_low, _LOWEST_BASS_MIDI.get(roles["bass"] or "", 28))
    lead_centre = float(np.clip(chord_centre + 10.0, 64.0, 84.0))

    # 4. Levels: the style's balance, tilted towards the noise's loud regions.
    match = options.spectral_match
    expected = _expected_region_shares(analysis)
    raw = {r: (shares[r] / expected[r] + 0.05) ** (0.75 * match) for r in shares}
    centre = math.exp(float(np.mean([math.log(v) for v in raw.values()])))
    role_gains = {}
    for role, level in _ROLE_LEVEL.items():
        tilt = float(np.mean([raw[r] / centre for r in _ROLE_REGIONS[role]]))
        # Relative to the mix's mean tilt, accompaniment moves by at most +-6 dB, the
        # melody by +-4 dB and drums by +-3 dB: the noise reshapes the balance, but the
        # beat and the tune stay audible.
        limit_db = 3.0 if role in _DRUM_ROLES else 4.0 if role == "lead" else 6.0
        lo, hi = 10.0 ** (-limit_db / 20.0), 10.0 ** (limit_db / 20.0)
        role_gains[role] = level * style.levels.get(role, 1.0) * float(np.clip(tilt, lo, hi))
    if "bass" in wanted:
        role_gains["bass"] *= 1.4
    profile = noise_profile(analysis)
    # The bed: loudest on a steady noise (a sustained texture is what masks it), softer
    # under hits (there the hits on the noise's events do the work).
    role_gains["bed"] = _BED_LEVEL * match * (0.4 + 0.6 * profile.stationarity)
    if not match or ("pad" in unwanted and "strings" in unwanted):
        roles["bed"] = None
    else:
        roles["bed"] = "ensemble"
    # Hits on the noise's own events, as loud as the noise is impulsive.
    role_gains["hit"] = _HIT_LEVEL * match * profile.impulsiveness
    roles["hit"] = "mallet" if role_gains["hit"] > 0 and "pluck" not in unwanted else None

    rng = np.random.default_rng([settings.seed & 0xFFFFFFFF, 0x51])
    texts = style.progressions if minor == style.minor else MODE_PROGRESSIONS[minor]
    order = rng.permutation(len(texts))
    progs = [parse_progression(texts[i], minor) for i in order]
    progressions = {kind: progs[i % len(progs)] for i, kind in enumerate(("A", "B", "C"))}

    return MusicPlan(
        style=style,
        style_source=style_source,
        tempo_bpm=tempo,
        tempo_source=tempo_source,
        beat_s=beat_s,
        phase_s=phase,
        tonic_pc=tonic_pc,
        minor=minor,
        key_source=key_source,
        chord_centre_midi=chord_centre,
        bass_low_midi=bass_low,
        lead_centre_midi=lead_centre,
        roles=roles,
        drums_on=drums_on,
        role_gains=role_gains,
        tilt=_voice_tilt(profile, match, VOICE_ENVELOPE_POWER, TILT_RANGE_DB),
        progressions=progressions,
        density=options.density,
        seed=int(settings.seed),
        gain_frames=_dynamics(analysis, options.dynamics_depth),
        reverb_room=style.reverb_room,
        reverb_send_scale=2.0 * options.reverb_mix * style.reverb_send / 0.25,
        profile=profile,
        bed_tilt=_bed_tilt(profile, match),
        bass_tilt=_voice_tilt(profile, match, BASS_ENVELOPE_POWER, BASS_TILT_RANGE_DB),
        drum_envelope=_drum_envelope(profile, match),
        prompt_warning=prompt_warning(
            settings.prompt, settings.negative_prompt, style_from_params=options.style is not None
        ),
    )


def _choose_roles(style: Style, wanted: list[str], unwanted: set[str]) -> dict[str, str | None]:
    roles: dict[str, str | None] = {
        "chords": style.chord_instrument,
        "pad": style.pad_instrument,
        "bass": style.bass_instrument,
        "arp": style.arp_instrument if style.arp_pattern else None,
        "lead": style.lead_instrument,
    }
    # Named instruments take over the role they suit.
    if "piano" in wanted:
        if roles["chords"] in ("piano", "epiano", "guitar"):
            roles["chords"] = "piano"
        elif roles["arp"] is not None:
            roles["arp"] = "piano"
        else:
            roles["lead"] = "piano"
    if "epiano" in wanted:
        roles["chords"] = "epiano"
    if "pad" in wanted and "pad" not in roles.values():
        roles["pad"] = "pad"
    if "strings" in wanted and "strings" not in roles.values():
        roles["pad"] = "strings"
    if "guitar" in wanted and "guitar" not in roles.values():
        if style.chord_pattern in ("stabs", "strum"):
            roles["chords"] = "guitar"
        else:
            roles["lead"] = "guitar"
    if "pluck" in wanted and "pluck" not in roles.values():
        if roles["arp"] is not None:
            roles["arp"] = "pluck"
        else:
            roles["lead"] = "pluck"
    if "bell" in wanted and "bell" not in roles.values():
        roles["lead"] = "bell"
    # A negative prompt removes an instrument; a role that loses its instrument falls
    # back to a neighbour (chords must keep sounding, the rest may go quiet).
    fallback = {"piano": "epiano", "epiano": "piano", "pad": "strings", "strings": "pad"}
    for role, inst in list(roles.items()):
        if inst is None:
            continue
        family = "bass" if inst in ("bass", "sub", "upright", "cello") else inst
        if family in unwanted:
            repl = fallback.get(inst) if role == "chords" else None
            roles[role] = repl if repl not in unwanted else None
    if roles["chords"] is None:
        roles["chords"] = next(
            i for i in ("pad", "strings", "piano", "epiano") if i not in unwanted
        )
    return roles


def _choose_tempo(
    analysis: StemAnalysis, style: Style, options: ProceduralOptions
) -> tuple[float, str, float]:
    noise_period = analysis.beat_period_s
    if options.tempo_bpm is not None:
        tempo = options.tempo_bpm
        phase = analysis.beat_phase_s % (60.0 / tempo) if noise_period else 0.0
        return tempo, "params", phase
    if analysis.tempo_bpm is None or noise_period is None:
        return style.tempo_bpm, "style", 0.0
    lo, hi = style.tempo_range_bpm
    candidates = [analysis.tempo_bpm * 2.0**k for k in (-2, -1, 0, 1, 2)]

    def distance(t: float) -> float:
        if lo <= t <= hi:
            return 0.0
        return abs(math.log(t / (lo if t < lo else hi)))

    tempo = min(candidates, key=lambda t: (distance(t), abs(math.log(t / style.tempo_bpm))))
    return tempo, "noise", analysis.beat_phase_s % (60.0 / tempo)


def _choose_key(
    analysis: StemAnalysis,
    style: Style,
    options: ProceduralOptions,
    seed: int,
    mood_minor: bool | None = None,
    mood_word: str | None = None,
) -> tuple[int, bool, str]:
    # A mood word ("dark", "happy") picks the mode over the style's; a key parameter
    # that names its mode picks it over both.
    minor = style.minor if mood_minor is None else mood_minor
    if options.key is not None:
        pc, mode = parse_key(options.key)
        return pc, minor if mode is None else mode, "params"
    tonic_pc, minor, source = _key_from_noise_or_seed(analysis, minor, seed)
    if mood_minor is not None and mood_minor != style.minor:
        source += f", {'minor' if minor else 'major'} from prompt word {mood_word!r}"
    return tonic_pc, minor, source


def _key_from_noise_or_seed(
    analysis: StemAnalysis, minor: bool, seed: int
) -> tuple[int, bool, str]:
    profile = _peak_profile(analysis)
    if profile.sum() >= 6.0:
        scale = MINOR_SCALE if minor else MAJOR_SCALE
        third = 3 if minor else 4
        template = np.full(12, -0.6)
        template[list(scale)] = 0.35
        template[0], template[7], template[third] = 1.0, 0.8, 0.7
        scores = [float(np.dot(np.roll(template, r), profile)) for r in range(12)]
        return int(np.argmax(scores)), minor, "noise peaks"
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x4B])
    comfortable = (0, 2, 3, 5, 7, 9, 10)
    return int(comfortable[rng.integers(len(comfortable))]), minor, "seed"


def _peak_profile(analysis: StemAnalysis) -> np.ndarray:
    """Pitch-class weights of the noise's tonal peaks between 55 Hz and 2 kHz (dB of
    prominence over 7 dB each, each peak on its nearest equal-tempered pitch); the mel-band profile
    (:func:`_tonal_profile`) when the analysis carries no peaks."""
    hz = np.asarray(analysis.tonal_peaks_hz, dtype=np.float64)
    if hz.size == 0:
        return _tonal_profile(analysis)
    db = np.asarray(analysis.tonal_peaks_db, dtype=np.float64)
    # Pitch lives in the fundamentals: a whine at 5 kHz is some motor's high harmonic.
    keep = (hz >= 55.0) & (hz <= 2_000.0)
    profile = np.zeros(12)
    midi = 69.0 + 12.0 * np.log2(hz[keep] / 440.0)
    for m, w in zip(midi, db[keep] - 7.0, strict=True):
        profile[int(round(m)) % 12] += w
    return profile


def _tonal_profile(analysis: StemAnalysis) -> np.ndarray:
    """Pitch-class weights (dB above the local spectral floor, summed) of narrow peaks in
    the noise's mean spectrum between 55 Hz and 2 kHz: hums, whines, engine orders."""
    from scipy import ndimage

    db = np.asarray(analysis.band_energy_db, dtype=np.float64)
    hz = np.asarray(analysis.band_center_hz, dtype=np.float64)
    floor = ndimage.median_filter(db, size=15, mode="nearest")
    peak = np.maximum(db - floor - 3.0, 0.0)
    is_peak = (db >= np.roll(db, 1)) & (db >= np.roll(db, -1))
    keep = is_peak & (hz >= 55.0) & (hz <= 2000.0) & (db > -50.0)
    profile = np.zeros(12)
    for f, w in zip(hz[keep], peak[keep], strict=True):
        profile[int(round(69 + 12 * math.log2(f / 440.0))) % 12] += w
    return profile


def _band_weights(analysis: StemAnalysis) -> np.ndarray:
    share = np.asarray(analysis.mask_band_share, dtype=np.float64)
    if share.sum() > 0:
        return share / share.sum()
    lin = 10.0 ** (np.asarray(analysis.band_energy_db, dtype=np.float64) / 10.0)
    return lin / lin.sum() if lin.sum() > 0 else np.full(lin.size, 1.0 / lin.size)


def _region_shares(analysis: StemAnalysis) -> dict[str, float]:
    w = _band_weights(analysis)
    hz = np.asarray(analysis.band_center_hz)
    return {r: float(w[(hz >= lo) & (hz < hi)].sum()) for r, (lo, hi) in _REGIONS_HZ.items()}


def _expected_region_shares(analysis: StemAnalysis) -> dict[str, float]:
    hz = np.asarray(analysis.band_center_hz)
    return {
        r: max(float(np.mean((hz >= lo) & (hz < hi))), 1e-3) for r, (lo, hi) in _REGIONS_HZ.items()
    }


def _mask_centroid_hz(analysis: StemAnalysis) -> float:
    w = _band_weights(analysis)
    hz = np.maximum(np.asarray(analysis.band_center_hz, dtype=np.float64), 20.0)
    return float(np.exp(np.sum(w * np.log(hz))))


_ENVELOPE_FLOOR_DB = -60.0
"""The noise envelope is floored this far under its peak: quieter bands get no music."""
_ENVELOPE_TOP_HZ = 10_000.0
_IMPULSE_DB = (2.5, 7.5)
"""Hit prominence (dB, see :func:`noise_profile`) mapped to impulsiveness 0 and 1."""
_SLOW_MOVE_DB = (1.0, 5.0)
"""Standard deviation of the noise's slow level (dB) mapped to stationarity 1 and 0."""


def noise_profile(analysis: StemAnalysis) -> NoiseProfile:
    """Where (band, envelope) and how (steady or hits) the noise is loud.

    Impulsiveness comes from the hits' prominence: the 97th percentile of the frame
    energy (dB) over its own 0.5 s moving mean, less the median of that; 2.5 dB or less
    is a steady noise, 7.5 dB or more a train of distinct hits (rail joints, a clock).
    Stationarity falls with the standard deviation of the 0.3 s smoothed level (1 dB or
    less: steady; 5 dB: swells, waves, passing traffic) and with impulsiveness. Events
    are the analysis' onsets whose onset strength reaches half its 99th percentile.
    """
    from scipy import ndimage

    hz = np.asarray(analysis.band_center_hz, dtype=np.float64)
    w = _band_weights(analysis)
    cum = np.cumsum(w)
    cum = cum / cum[-1] if cum[-1] > 0 else np.linspace(0.0, 1.0, cum.size)
    lo, centre, hi = (
        float(hz[min(int(np.searchsorted(cum, q)), hz.size - 1)]) for q in (0.1, 0.5, 0.9)
    )
    lo, centre, hi = max(lo, 20.0), max(centre, 20.0), max(hi, 20.0)

    db = np.maximum(np.asarray(analysis.band_energy_db, dtype=np.float64), _ENVELOPE_FLOOR_DB)
    db = ndimage.gaussian_filter1d(db, sigma=4.0, mode="nearest")
    db -= db.max()
    db = np.maximum(db, _ENVELOPE_FLOOR_DB)
    # Beyond the mel grid's 10 kHz the envelope falls 24 dB/octave: nothing up there to
    # mask, and bright partials with nothing to mask would only make the music hiss.
    top = float(db[-1])
    ext_hz = _ENVELOPE_TOP_HZ * 2.0 ** np.arange(0.25, 2.01, 0.25)
    ext_db = np.maximum(top - 24.0 * np.log2(ext_hz / _ENVELOPE_TOP_HZ), _ENVELOPE_FLOOR_DB - 20)
    env_hz = np.concatenate([hz[hz < _ENVELOPE_TOP_HZ], ext_hz])
    env_db = np.concatenate([db[hz < _ENVELOPE_TOP_HZ], ext_db])
    envelope = SpectralTilt(env_hz, 10.0 ** (env_db / 20.0))

    e = np.maximum(np.asarray(analysis.frame_energy_db, dtype=np.float64), -60.0)
    if e.size >= 8:
        detail = e - ndimage.uniform_filter1d(e, size=51, mode="nearest")
        prominence = float(np.percentile(detail, 97) - np.median(detail))
        slow_std = float(np.std(ndimage.uniform_filter1d(e, size=31, mode="nearest")))
    else:
        prominence, slow_std = 0.0, 0.0
    lo_db, hi_db = _IMPULSE_DB
    impulsiveness = float(np.clip((prominence - lo_db) / (hi_db - lo_db), 0.0, 1.0))
    s_lo, s_hi = _SLOW_MOVE_DB
    steady = float(np.clip((s_hi - slow_std) / (s_hi - s_lo), 0.0, 1.0))
    stationarity = steady * (1.0 - impulsiveness)

    events = np.zeros(0)
    env = np.asarray(analysis.onset_envelope, dtype=np.float64)
    onsets = np.asarray(analysis.onset_times_s, dtype=np.float64)
    if impulsiveness > 0.0 and env.size and onsets.size:
        frames = np.clip(np.round(onsets * 100.0).astype(int), 0, env.size - 1)
        strong = env[frames] >= 0.5 * float(np.percentile(env, 99))
        events = onsets[strong]
    low_share = float(w[hz < 250.0].sum() / max(w.sum(), 1e-12))
    return NoiseProfile(
        band_lo_hz=lo,
        band_centre_hz=centre,
        band_hi_hz=hi,
        envelope=envelope,
        stationarity=stationarity,
        impulsiveness=impulsiveness,
        low_share=low_share,
        event_times_s=events,
    )


BED_ENVELOPE_POWER = 3.0
"""The bed's harmonics follow the noise envelope to this power (1 = its shape exactly)."""


VOICE_ENVELOPE_POWER = 1.0
TILT_RANGE_DB = 30.0
BASS_ENVELOPE_POWER = 0.5
BASS_TILT_RANGE_DB = 12.0
DRUM_ENVELOPE_POWER = 1.0


def _voice_tilt(profile: NoiseProfile, match: float, power: float, range_db: float) -> SpectralTilt:
    """A voice's harmonics follow the noise's envelope to ``power`` (``match`` 0: flat),
    over at most ``range_db`` dB (each note keeps its power)."""
    db = 20.0 * np.log10(profile.envelope.gains)
    db = np.maximum(power * match * db, -range_db)
    return SpectralTilt(profile.envelope.freqs_hz, 10.0 ** (db / 20.0))


def _drum_envelope(profile: NoiseProfile, match: float) -> SpectralTilt | None:
    if match <= 0.0:
        return None
    gains = profile.envelope.gains ** (DRUM_ENVELOPE_POWER * match)
    return SpectralTilt(profile.envelope.freqs_hz, gains)


def _bed_tilt(profile: NoiseProfile, match: float) -> SpectralTilt:
    """The bed's gain over frequency: the noise's envelope (``match`` 0: flat)."""
    gains = profile.envelope.gains ** (BED_ENVELOPE_POWER * match)
    return SpectralTilt(profile.envelope.freqs_hz, gains)


def _dynamics(analysis: StemAnalysis, depth: float) -> np.ndarray:
    """Linear music gain per frame: ``depth`` dB of music per dB of (smoothed) noise
    energy relative to its 90th percentile, limited to -12..+3 dB."""
    from scipy import ndimage

    e = np.maximum(np.asarray(analysis.frame_energy_db, dtype=np.float64), -60.0)
    if e.size == 0:
        return np.ones(1)
    smooth = ndimage.uniform_filter1d(e, size=31, mode="nearest")
    ref = float(np.percentile(smooth, 90))
    gain_db = np.clip(depth * (smooth - ref), -12.0, 3.0)
    return 10.0 ** (gain_db / 20.0)


# ------------------------------------------------------------------ composition


@dataclass(frozen=True)
class Event:
    """A note or drum hit on the absolute timeline.

    Attributes:
        start_sample: onset, samples from the stem's start at 44.1 kHz.
        voice: synth voice name, or ``"drum:<name>"``.
        midi: MIDI pitch (0 for drums).
        on_samples: samples until note-off (drums: 0).
        gain: linear amplitude.
        pan: -1 (left) .. 1 (right).
        send: share sent to the reverb (0..1).
        role: composing role ("chords", "bass", "kick", ...).
    """

    start_sample: int
    voice: str
    midi: float
    on_samples: int
    gain: float
    pan: float
    send: float
    role: str


def section_of(bar: int) -> tuple[str, int]:
    """Section kind (A, B, C) and position (0..7) of a bar (bar 0 = first downbeat)."""
    section = bar // BARS_PER_SECTION
    return SECTION_CYCLE[section % len(SECTION_CYCLE)], bar % BARS_PER_SECTION


def chord_at(plan: MusicPlan, bar: int, beat: float = 0.0) -> Chord:
    """The chord sounding at ``beat`` (0..4) of ``bar``."""
    kind, pos = section_of(bar)
    prog = plan.progressions[kind]
    index = int((pos * 4 + beat) // plan.style.chord_beats)
    return prog[index % len(prog)]


def _pcs(plan: MusicPlan, chord: Chord) -> list[int]:
    root = plan.tonic_pc + chord.degree_semitones
    return [(root + i) % 12 for i in chord.intervals()]


def _voice_around(pcs: Sequence[int], centre: float) -> list[int]:
    """Each pitch class at its octave in [centre - 6, centre + 6): close voicing whose
    notes move little from chord to chord."""
    lo = int(math.floor(centre - 6.0))
    notes = {lo + ((pc - lo) % 12) for pc in pcs}
    return sorted(notes)


def _scale_notes(plan: MusicPlan, lo: int, hi: int) -> list[int]:
    scale = MINOR_SCALE if plan.minor else MAJOR_SCALE
    pcs = {(plan.tonic_pc + s) % 12 for s in scale}
    return [m for m in range(lo, hi + 1) if m % 12 in pcs]


BED_LOWEST_MIDI = 31
"""G1 (49 Hz): the bed's lowest note."""
BED_TOP_MIDI = (60, 84)
"""The bed's lowest note is at most C5 and its highest at most E6; a noise louder
higher up gets the bed's upper harmonics (the bed's tilt lifts them)."""
BED_MAX_NOTES = 10
BED_MAX_TIE = 2
"""A bed note shared by consecutive chords is held over at most this many changes."""
BED_SUBHARMONIC = 4.0
"""The bed's lowest note sits this far under the band's low edge, so that its
harmonics (not its fundamentals, which the tilt turns down) fill the band densely."""
_OPEN_BELOW_MIDI = 48
"""Below C3 the bed plays only roots and fifths (thirds down there are mud)."""


def bed_voicing(plan: MusicPlan, chord: Chord) -> list[int]:
    """MIDI notes of the bed for a chord: the chord's tones in every octave from the
    noise band's low edge up to half its high edge (roots and fifths only below C3), at
    most :data:`BED_MAX_NOTES`, thinned evenly from the middle when there are more."""
    profile = plan.profile
    if profile is None:
        return []
    lo = _hz_to_midi(profile.band_lo_hz / BED_SUBHARMONIC)
    hi = _hz_to_midi(profile.band_centre_hz / 2.0)
    lo = int(np.clip(round(lo), BED_LOWEST_MIDI, BED_TOP_MIDI[0]))
    hi = int(np.clip(round(hi), lo + 12, BED_TOP_MIDI[1]))
    pcs = _pcs(plan, chord)
    root = pcs[0]
    fifth = (root + 7) % 12
    notes = []
    for m in range(lo, hi + 1):
        pc = m % 12
        if m < _OPEN_BELOW_MIDI:
            if pc == root or (pc == fifth and fifth in pcs):
                notes.append(m)
        elif pc in pcs:
            notes.append(m)
    if len(notes) > BED_MAX_NOTES:
        keep = np.round(np.linspace(0, len(notes) - 1, BED_MAX_NOTES)).astype(int)
        notes = [notes[i] for i in sorted(set(keep.tolist()))]
    return notes


def _chord_at_beat(plan: MusicPlan, beat: float) -> Chord:
    """The chord sounding at ``beat`` beats from the first downbeat (any sign)."""
    bar = math.floor(beat / 4.0)
    return chord_at(plan, bar, beat - 4.0 * bar)


def _hz_to_midi(hz: float) -> float:
    return 69.0 + 12.0 * math.log2(max(hz, 1.0) / 440.0)


class Composer:
    """Turns a plan into events, bar by bar; ``bar_events(b)`` is a pure function of
    (plan, b), memoised."""

    def __init__(self, plan: MusicPlan) -> None:
        self.plan = plan
        self._cache: OrderedDict[int, list[Event]] = OrderedDict()

    # timing ---------------------------------------------------------------
    def beat_time_s(self, beat: float) -> float:
        return self.plan.phase_s + beat * self.plan.beat_s

    def step_sample(self, bar: int, step: float) -> int:
        """Sample of a 16th-note step (0..16, fractional allowed) with the style's swing."""
        style = self.plan.style
        beat_in_bar = step / 4.0
        frac = step % 4
        if frac == 2 and style.swing > 0:
            beat_in_bar += style.swing / 6.0
        elif frac in (1, 3) and style.swing_16 > 0:
            beat_in_bar += style.swing_16 / 12.0
        return int(round(self.beat_time_s(4 * bar + beat_in_bar) * SAMPLE_RATE_HZ))

    def steps_samples(self, steps: float) -> int:
        return max(1, int(round(steps / 4.0 * self.plan.beat_s * SAMPLE_RATE_HZ)))

    def bar_at_sample(self, sample: int) -> int:
        return math.floor((sample / SAMPLE_RATE_HZ - self.plan.phase_s) / self.plan.bar_s)

    # events ---------------------------------------------------------------
    def bar_events(self, bar: int) -> list[Event]:
        cached = self._cache.get(bar)
        if cached is not None:
            self._cache.move_to_end(bar)
            return cached
        events = self._compose_bar(bar)
        self._cache[bar] = events
        if len(self._cache) > 256:
            self._cache.popitem(last=False)
        return events

    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self.plan.seed & 0xFFFFFFFF, *[k & 0xFFFFFFFF for k in keys]])

    def _compose_bar(self, bar: int) -> list[Event]:
        plan = self.plan
        kind, pos = section_of(bar)
        events: list[Event] = []
        events += self._chords(bar, kind, pos)
        if plan.roles["pad"]:
            events += self._pad(bar)
        if plan.roles.get("bed"):
            events += self._bed(bar)
        if plan.roles.get("hit"):
            events += self._hits(bar)
        if plan.roles["bass"]:
            events += self._bass(bar)
        if plan.roles["arp"] and plan.style.arp_pattern:
            events += self._arp(bar, kind)
        if plan.roles["lead"]:
            events += self._lead(bar, kind, pos)
        if plan.drums_on:
            events += self._drums(bar, kind, pos)
        return events

    def _note(
        self, role: str, start: int, steps: float, midi: float, vel: float, pan: float
    ) -> Event:
        plan = self.plan
        voice = plan.roles[role] or "piano"
        return Event(
            start_sample=start,
            voice=voice,
            midi=float(midi),
            on_samples=self.steps_samples(steps),
            gain=plan.role_gains[role] * vel,
            pan=pan,
            send=min(1.0, _ROLE_SEND[role] * plan.reverb_send_scale),
            role=role,
        )

    def _chord_changes(self, bar: int) -> list[tuple[int, Chord, float]]:
        """(step, chord, length in steps) of each chord that starts in this bar."""
        plan = self.plan
        chord_steps = 4 * plan.style.chord_beats
        _, pos = section_of(bar)
        out = []
        for step in range(0, 16, 4):
            global_step = pos * 16 + step
            if global_step % chord_steps == 0:
                out.append((step, chord_at(plan, bar, step / 4), float(chord_steps)))
        return out

    def _chords(self, bar: int, kind: str, pos: int) -> list[Event]:
        plan = self.plan
        style = plan.style
        rng = self._rng(bar, 0xC0)
        events: list[Event] = []
        pattern = style.chord_pattern
        if pattern == "sustain":
            for step, chord, length in self._chord_changes(bar):
                notes = _voice_around(_pcs(plan, chord), plan.chord_centre_midi)
                for i, m in enumerate(notes):
                    pan = 0.3 * (i / max(len(notes) - 1, 1) - 0.5)
                    vel = 0.85 + 0.1 * rng.random()
                    events.append(
                        self._note(
                            "chords", self.step_sample(bar, step), length * 0.98, m, vel, pan
                        )
                    )
            return events
        if pattern == "comp":
            slots = [0, 2, 4, 6, 8, 10, 12, 14]
            count = 2 + int(rng.random() < 0.4 + 0.4 * plan.density)
            steps = sorted(rng.choice(slots, size=count, replace=False).tolist())
        elif pattern == "strum" and kind == "A":
            steps = [i for i, c in enumerate(style.chord_steps) if c != "."]
        elif pattern == "strum":
            steps = [0, 6, 8, 14]
        else:
            steps = [i for i, c in enumerate(style.chord_steps) if c != "."]
        for j, step in enumerate(steps):
            nxt = steps[j + 1] if j + 1 < len(steps) else 16
            length = max(1.0, (nxt - step) * 0.9)
            chord = chord_at(plan, bar, step / 4)
            if pattern == "strum":
                root = plan.tonic_pc + chord.degree_semitones
                low = _voice_around([root % 12], plan.chord_centre_midi - 5)[0]
                notes = [low, low + 7, low + 12]
                if kind == "A":
                    length = 1.6
            else:
                notes = _voice_around(_pcs(plan, chord), plan.chord_centre_midi)
            accent = 1.0 if step % 4 == 0 else 0.8
            start = self.step_sample(bar, step)
            for i, m in enumerate(notes):
                # A strum sweeps the strings 5 ms apart; keys hit together.
                offset = int(0.005 * SAMPLE_RATE_HZ) * i if pattern == "strum" else 0
                pan = 0.3 * (i / max(len(notes) - 1, 1) - 0.5)
                vel = accent * (0.85 + 0.1 * rng.random())
                events.append(self._note("chords", start + offset, length, m, vel, pan))
        return events

    def _pad(self, bar: int) -> list[Event]:
        plan = self.plan
        events = []
        for step, chord, length in self._chord_changes(bar):
            pcs = _pcs(plan, chord)[:4]
            notes = _voice_around(pcs, plan.chord_centre_midi + 5.0)
            for i, m in enumerate(notes):
                pan = 0.35 if i % 2 else -0.35
                events.append(
                    self._note("pad", self.step_sample(bar, step), length * 0.99, m, 1.0, pan)
                )
        return events

    def _bed(self, bar: int) -> list[Event]:
        """The sustained texture in the noise's loud band: every chord change, the chord
        voiced densely across that band (see :func:`bed_voicing`). Notes the chord shares
        with the one before are held over, not struck again (up to
        :data:`BED_MAX_TIE` chords on), so the texture never dips at a change."""
        plan = self.plan
        beats = plan.style.chord_beats
        events = []
        for step, chord, length in self._chord_changes(bar):
            notes = bed_voicing(plan, chord)
            if not notes:
                continue
            at_beat = 4 * bar + step / 4
            before = set(bed_voicing(plan, _chord_at_beat(plan, at_beat - beats)))
            after = [
                set(bed_voicing(plan, _chord_at_beat(plan, at_beat + k * beats)))
                for k in range(1, BED_MAX_TIE + 1)
            ]
            # The bed's level does not grow with its number of notes.
            vel = 1.0 / math.sqrt(len(notes))
            for i, m in enumerate(notes):
                if m in before:
                    continue
                held = next((k for k, later in enumerate(after) if m not in later), len(after))
                # Low notes centred, the upper ones spread a little (mono-compatible).
                pan = 0.0 if m < 52 else (0.25 if i % 2 else -0.25)
                steps = length * (1 + held) - 0.01 * length
                events.append(self._note("bed", self.step_sample(bar, step), steps, m, vel, pan))
        return events

    def _hits(self, bar: int) -> list[Event]:
        """A short chord in the noise's band on each of the noise's events in this bar
        that lies near the 16th-note grid, at the event's own time."""
        plan = self.plan
        profile = plan.profile
        if profile is None or profile.event_times_s.size == 0:
            return []
        t0 = self.beat_time_s(4 * bar)
        t1 = self.beat_time_s(4 * bar + 4)
        times = profile.event_times_s[(profile.event_times_s >= t0) & (profile.event_times_s < t1)]
        step_s = plan.beat_s / 4.0
        events = []
        for t in times:
            step = (t - t0) / step_s
            if abs(step - round(step)) > HIT_TOLERANCE_STEPS:
                continue
            chord = chord_at(plan, bar, min(round(step), 15) / 4.0)
            notes = bed_voicing(plan, chord)
            if len(notes) > HIT_MAX_NOTES:
                # The upper notes: their harmonics reach into the band with less mud.
                notes = notes[-HIT_MAX_NOTES:]
            vel = 1.0 / math.sqrt(max(len(notes), 1))
            start = int(round(t * SAMPLE_RATE_HZ))
            for i, m in enumerate(notes):
                pan = 0.0 if m < 52 else (0.2 if i % 2 else -0.2)
                events.append(self._note("hit", start, 1.0, m, vel, pan))
        return events

    def _bass_note(self, pc: int) -> int:
        lo = self.plan.bass_low_midi
        return lo + (pc - lo) % 12

    def _bass(self, bar: int) -> list[Event]:
        plan = self.plan
        style = plan.style
        pattern = style.bass_pattern
        rng = self._rng(bar, 0xBA)

        def root_at(step: float) -> int:
            chord = chord_at(plan, bar, step / 4)
            return self._bass_note((plan.tonic_pc + chord.degree_semitones) % 12)

        def fifth_at(step: float) -> int:
            return root_at(step) + 7

        notes: list[tuple[float, float, int, float]] = []  # step, length, midi, vel
        if pattern == "pop":
            notes = [(0, 5.5, root_at(0), 1.0), (6, 1.8, root_at(6), 0.75)]
            notes += [(8, 3.6, root_at(8), 0.9), (12, 1.8, fifth_at(12), 0.75)]
            notes += [(14, 1.8, root_at(14) + 12, 0.7)]
        elif pattern == "rock":
            notes = [(s, 1.7, root_at(s), 1.0 if s % 4 == 0 else 0.8) for s in range(0, 16, 2)]
        elif pattern == "offbeat":
            notes = [(s, 1.6, root_at(s), 1.0) for s in (2, 6, 10, 14)]
        elif pattern == "sub":
            kicks = [i for i, c in enumerate(style.drums.kick if style.drums else "x") if c != "."]
            for j, s in enumerate(kicks):
                nxt = kicks[j + 1] if j + 1 < len(kicks) else 16
                notes.append((s, max(1.5, (nxt - s) * 0.95), root_at(s), 1.0))
        elif pattern == "lofi":
            notes = [(0, 7.0, root_at(0), 1.0), (8, 2.5, fifth_at(8) - 12, 0.8)]
            notes += [(11, 4.5, root_at(11), 0.85)]
        elif pattern == "walking":
            chord = chord_at(plan, bar)
            pcs = _pcs(plan, chord)
            root = root_at(0)
            third = root + (pcs[1] - pcs[0]) % 12
            fifth = root + (pcs[2] - pcs[0]) % 12
            nxt = self._bass_note((plan.tonic_pc + chord_at(plan, bar + 1).degree_semitones) % 12)
            approach = nxt + (1 if rng.random() < 0.5 else -1)
            second = third if rng.random() < 0.6 else root + 2
            notes = [(0, 3.6, root, 1.0), (4, 3.6, second, 0.85), (8, 3.6, fifth, 0.9)]
            notes += [(12, 3.6, approach, 0.85)]
        elif pattern == "classical":
            notes = [(0, 7.6, root_at(0), 1.0), (8, 7.6, fifth_at(8) - 12, 0.8)]
        else:  # sustain
            for chord_step, chord, length in self._chord_changes(bar):
                pc = (plan.tonic_pc + chord.degree_semitones) % 12
                notes.append((chord_step, length * 0.99, self._bass_note(pc), 1.0))
        events = []
        for step, length, pitch, vel in notes:
            midi = pitch if pitch >= plan.bass_low_midi - 5 else pitch + 12
            v = vel * (0.92 + 0.08 * rng.random())
            events.append(self._note("bass", self.step_sample(bar, step), length, midi, v, 0.0))
        return events

    def _arp(self, bar: int, kind: str) -> list[Event]:
        plan = self.plan
        pattern = plan.style.arp_pattern
        rng = self._rng(bar, 0xA2)
        events = []
        centre = plan.lead_centre_midi - 4.0
        if pattern == "alberti":
            # 16ths at slow tempos, 8ths at fast ones: about 5 notes a second either way.
            step_len = 1 if plan.tempo_bpm < 96.0 else 2
            for i, s in enumerate(range(0, 16, step_len)):
                chord = chord_at(plan, bar, s / 4)
                triad = _voice_around(_pcs(plan, chord)[:3], plan.chord_centre_midi - 3.0)
                low, mid, high = triad[0], triad[len(triad) // 2], triad[-1]
                midi = (low, high, mid, high)[i % 4]
                vel = 0.9 if s % 4 == 0 else 0.7
                length = 1.1 * step_len
                events.append(self._note("arp", self.step_sample(bar, s), length, midi, vel, -0.15))
            return events
        sixteenths = pattern == "up16"
        step_len = 1 if sixteenths else 2
        for s in range(0, 16, step_len):
            chord = chord_at(plan, bar, s / 4)
            tones = _voice_around(_pcs(plan, chord), centre)
            seq = tones + [t + 12 for t in tones]
            if pattern == "updown8":
                seq = seq + seq[-2:0:-1]
            index = s // step_len
            if pattern == "sparse8":
                # A gentle pulse: every beat sounds, soft off-beats unless density is low.
                if s % 4 != 0 and rng.random() > 2.0 * plan.density:
                    continue
                midi = seq[int(rng.integers(len(seq)))]
            else:
                if sixteenths and plan.density < 0.35 and s % 2 == 1:
                    continue
                midi = seq[index % len(seq)]
            offbeat_vel = 0.5 if pattern == "sparse8" else 0.75
            vel = (1.0 if s % 4 == 0 else offbeat_vel) * (0.9 + 0.1 * rng.random())
            pan = 0.3 if index % 2 else -0.3
            length = step_len * (1.5 if pattern == "sparse8" else 0.9)
            events.append(self._note("arp", self.step_sample(bar, s), length, midi, vel, pan))
        return events

    def _lead(self, bar: int, kind: str, pos: int) -> list[Event]:
        plan = self.plan
        # Phrases are A A' A A'' : bars that share a motif index share rhythm and contour.
        motif = (0, 1, 0, 2, 0, 1, 0, 3)[pos]
        rng = self._rng(0x1EAD, ord(kind), motif)
        # Section A states the melody sparsely, B and C in full.
        section_density = 0.6 if kind == "A" else 1.0
        density = plan.style.lead_density * (0.5 + plan.density) * section_density
        density = float(np.clip(density, 0.05, 0.95))
        slot_weight = (1.0, 0.45, 0.7, 0.45, 0.9, 0.45, 0.7, 0.55)
        onsets = [s for s in range(8) if rng.random() < density * slot_weight[s] * 1.4]
        if not onsets:
            onsets = [0]
        centre = plan.lead_centre_midi
        lo, hi = int(centre - 7), int(centre + 9)
        scale = _scale_notes(plan, lo, hi)
        prev = int(round(centre))
        events = []
        for j, slot in enumerate(onsets):
            step = slot * 2
            nxt = onsets[j + 1] * 2 if j + 1 < len(onsets) else 16
            length = min(nxt - step, 12) * 0.92
            chord = chord_at(plan, bar, step / 4)
            if slot % 2 == 0:
                tones = [m for m in range(lo, hi + 1) if m % 12 in _pcs(plan, chord)]
                target = prev + int(rng.integers(-4, 5))
                midi = min(tones, key=lambda m: (abs(m - target), m)) if tones else prev
            else:
                i = int(np.argmin([abs(m - prev) for m in scale]))
                move = int(rng.choice([-2, -1, 1, 2]))
                midi = scale[int(np.clip(i + move, 0, len(scale) - 1))]
            prev = midi
            vel = (1.0 if slot % 2 == 0 else 0.8) * (0.85 + 0.15 * rng.random())
            events.append(self._note("lead", self.step_sample(bar, step), length, midi, vel, 0.1))
        return events

    def _drums(self, bar: int, kind: str, pos: int) -> list[Event]:
        plan = self.plan
        style = plan.style
        groove = style.drums or DrumPattern(
            kick="x.......x.......", snare="....x.......x...", hat="o.o.o.o.o.o.o.o."
        )
        pattern = style.fill if (pos == BARS_PER_SECTION - 1 and style.fill) else groove
        rng = self._rng(bar, 0xD7)
        events = []
        for lane, steps in pattern.lanes().items():
            for s, ch in enumerate(steps):
                if ch == ".":
                    continue
                vel = STEP_VELOCITY[ch] * (0.9 + 0.1 * rng.random())
                events.append(self._hit(lane, self.step_sample(bar, s), vel))
        if pos == 0 and bar > 0 and style.fill is not None:
            events.append(self._hit("crash", self.step_sample(bar, 0), 0.9))
        if plan.density > 0.6 and style.drums is not None:
            # Extra 16th shaker on busy settings, on the grid like everything else.
            for s in range(1, 16, 2):
                if rng.random() < plan.density - 0.4:
                    events.append(self._hit("shaker", self.step_sample(bar, s), 0.5))
        return events

    def _hit(self, lane: str, start: int, vel: float) -> Event:
        plan = self.plan
        return Event(
            start_sample=start,
            voice=f"drum:{lane}",
            midi=0.0,
            on_samples=0,
            gain=plan.role_gains[lane] * vel,
            pan=_DRUM_PAN.get(lane, 0.0),
            send=min(1.0, _ROLE_SEND[lane] * plan.reverb_send_scale),
            role=lane,
        )


# ------------------------------------------------------------------ rendering


def _tilt_family(role: str) -> str:
    """Which of the plan's tilts a role's notes take: the bed's (the noise's colour),
    the bass's (a milder one: a bass stays a bass) or every other voice's."""
    if role in ("bed", "hit"):
        return "bed"
    return "bass" if role == "bass" else "voice"


class TimelineRenderer:
    """Renders the global timeline as a stream of fixed chunks; windows are slices.

    Chunks are produced strictly in order from chunk 0 through one streaming reverb, so
    chunk ``c`` is always the same function of the composition whichever windows asked
    for it. Recent chunks are kept; asking for an older, evicted one restarts the
    stream from chunk 0 (correct, only slower).

    ``first_chunk`` (default 0) starts the stream at a later chunk, with the reverb empty
    there: a live stream (:mod:`bnmusic_bridge.live`) starts a new plan's timeline at the
    chunk where it takes over instead of rendering everything before it.
    """

    def __init__(self, plan: MusicPlan, first_chunk: int = 0) -> None:
        import pedalboard

        if first_chunk < 0:
            raise ParameterError(f"first_chunk must be >= 0, got {first_chunk}")

        self.plan = plan
        self.composer = Composer(plan)
        self.kit = drum_kit(plan.seed, plan.style.drum_tone, plan.drum_envelope)
        self._notes: OrderedDict[tuple[str, float, int, str], np.ndarray] = OrderedDict()
        self._note_bytes = 0
        self._out: OrderedDict[int, np.ndarray] = OrderedDict()
        self._first_chunk = first_chunk
        self._next_chunk = first_chunk
        self._reverb = pedalboard.Reverb(
            room_size=plan.reverb_room, damping=0.5, wet_level=1.0, dry_level=0.0, width=0.6
        )
        longest_beats = max(8.0, (2.0 + BED_MAX_TIE) * plan.style.chord_beats)
        self._lookback = int((longest_beats * plan.beat_s + 2.5) * SAMPLE_RATE_HZ)

    def render(self, start_sample: int, num_samples: int) -> np.ndarray:
        """Stereo float32 ``(2, num_samples)`` of the timeline from ``start_sample``."""
        first = start_sample // CHUNK_SAMPLES
        last = (start_sample + num_samples - 1) // CHUNK_SAMPLES
        blocks = [self._chunk(c) for c in range(first, last + 1)]
        joined = np.concatenate(blocks, axis=1)
        offset = start_sample - first * CHUNK_SAMPLES
        return np.ascontiguousarray(joined[:, offset : offset + num_samples])

    def events_between(self, start_sample: int, stop_sample: int) -> list[Event]:
        """Events that start in ``[start_sample, stop_sample)``, in timeline order."""
        c = self.composer
        bars = range(c.bar_at_sample(start_sample) - 1, c.bar_at_sample(stop_sample) + 1)
        return [
            e for b in bars for e in c.bar_events(b) if start_sample <= e.start_sample < stop_sample
        ]

    def _chunk(self, c: int) -> np.ndarray:
        cached = self._out.get(c)
        if cached is not None:
            return cached
        if c < self._first_chunk:
            raise ParameterError(
                f"chunk {c} is before this stream's first chunk {self._first_chunk}"
            )
        if c < self._next_chunk:
            self._reverb.reset()
            self._next_chunk = self._first_chunk
        while self._next_chunk <= c:
            k = self._next_chunk
            main, send = self._dry_chunk(k)
            wet = self._reverb.process(send.astype(np.float32), SAMPLE_RATE_HZ, reset=False)
            mix = main + wet
            out = soft_clip(mix * MASTER_GAIN).astype(np.float32)
            self._out[k] = out
            if len(self._out) > _CHUNK_CACHE:
                self._out.popitem(last=False)
            self._next_chunk += 1
        return self._out[c]

    def _dry_chunk(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        c0 = c * CHUNK_SAMPLES
        c1 = c0 + CHUNK_SAMPLES
        main = np.zeros((2, CHUNK_SAMPLES))
        send = np.zeros((2, CHUNK_SAMPLES))
        if c1 > 0:
            pump = self._pump_gain(c0) if self.plan.style.sidechain > 0 else None
            # Notes that began before the stem (the pickup bar) sound from sample 0 on.
            for e in self.events_between(c0 - self._lookback, c1):
                audio = self._event_audio(e)
                a = max(c0, e.start_sample)
                b = min(c1, e.start_sample + audio.size)
                if b <= a:
                    continue
                seg = audio[a - e.start_sample : b - e.start_sample].astype(np.float64)
                if pump is not None and e.role in ("chords", "pad", "bass"):
                    seg = seg * pump[a - c0 : b - c0]
                left, right = pan_gains(e.pan)
                dry = e.gain * (1.0 - 0.5 * e.send)
                main[0, a - c0 : b - c0] += (dry * left) * seg
                main[1, a - c0 : b - c0] += (dry * right) * seg
                if e.send > 0:
                    send[0, a - c0 : b - c0] += (e.gain * e.send * left) * seg
                    send[1, a - c0 : b - c0] += (e.gain * e.send * right) * seg
            gain = self._dynamics_gain(c0)
            if c0 < _FADE_IN_SAMPLES:
                # The timeline starts inside the pickup bar's notes: fade in over 20 ms.
                ramp = np.clip((c0 + np.arange(CHUNK_SAMPLES)) / _FADE_IN_SAMPLES, 0.0, 1.0)
                gain = gain * np.where(c0 + np.arange(CHUNK_SAMPLES) < 0, 0.0, ramp)
            main *= gain
            send *= gain
        return main, send

    def _event_audio(self, e: Event) -> np.ndarray:
        if e.voice.startswith("drum:"):
            return self.kit[e.voice[5:]]
        key = (e.voice, e.midi, e.on_samples, _tilt_family(e.role))
        cached = self._notes.get(key)
        if cached is not None:
            self._notes.move_to_end(key)
            return cached
        audio = render_note(e.voice, e.midi, e.on_samples, self._tilt_of(e.role))
        self._notes[key] = audio
        self._note_bytes += audio.nbytes
        while self._note_bytes > _NOTE_CACHE_BYTES and len(self._notes) > 1:
            _, old = self._notes.popitem(last=False)
            self._note_bytes -= old.nbytes
        return audio

    def _tilt_of(self, role: str) -> SpectralTilt:
        plan = self.plan
        family = _tilt_family(role)
        if family == "bed" and plan.bed_tilt is not None:
            return plan.bed_tilt
        if family == "bass" and plan.bass_tilt is not None:
            return plan.bass_tilt
        return plan.tilt

    def _dynamics_gain(self, c0: int) -> np.ndarray:
        frames = (c0 + np.arange(CHUNK_SAMPLES)) / HOP_SAMPLES  # gain_frames: one per 10 ms frame
        g = self.plan.gain_frames
        return np.interp(frames, np.arange(g.size, dtype=np.float64), g)

    def _pump_gain(self, c0: int) -> np.ndarray:
        """EDM side-chain: a dip after every beat, a pure function of absolute time."""
        plan = self.plan
        t = (c0 + np.arange(CHUNK_SAMPLES)) / SAMPLE_RATE_HZ
        since_beat = np.mod(t - plan.phase_s, plan.beat_s)
        return 1.0 - plan.style.sidechain * np.exp(-since_beat / (0.22 * plan.beat_s))


# ------------------------------------------------------------------ generator


class ProceduralGenerator:
    """Composes music aligned to the noise (BNMusic Stage 1 without a diffusion model).

    Output per window: stereo float32 ``(2, window.num_samples)`` at 44,100 Hz (image
    None), peaks below -1 dBFS, from one global timeline (see the module doc).

    Prompt words pick the style (lo-fi, jazz, ambient, EDM, rock, classical, pop,
    hip-hop, with synonyms such as "house", "punk", "orchestral", "rap"; the first
    style word wins; default pop) and instruments (piano, rhodes/keys, pad/synth,
    strings/violin, bass, pluck/harp/arp, guitar, bell/vibes, drums/beat). Without a
    style word a mood word picks the closest style ("ethereal" -> ambient), mood words
    pick the mode ("dark" -> minor), and instruments without a voice map to the closest
    one (:data:`~.styles.CLOSEST_TIMBRES`: choir -> pad). Words in the negative prompt
    remove instruments ("drums", "piano", ...). Words not understood and the
    approximations made are named in one warning (diagnostics ``warnings``).

    ``settings.params`` (all optional; any other key raises ParameterError):
        style (str): a style name or synonym; overrides the prompt.
        tempo_bpm (float, 40..240): fixed tempo; the beat phase still follows the noise
            when it is periodic.
        key (str): e.g. "D", "F#m", "Bb minor"; overrides the key taken from the noise.
        density (0..1, default 0.5): melody, arpeggio and percussion density.
        drums (bool): force the drum kit on or off.
        dynamics_depth (0..1, default 0.5): dB of music level change per dB of noise
            level change (0 = constant level).
        spectral_match (0..1, default 1): how strongly the music is composed for the
            noise: voices, drums and levels tilted towards its spectral envelope and
            loud bands, the bed and the hits on its events (0 = the style's own balance,
            no bed, no hits).
        reverb_mix (0..1, default 0.5): reverb amount (0 = dry).

    Diagnostics per window: tempo_bpm, tempo_source, beat_phase_s, key, key_source,
    style, style_source, instruments, chord_progression (chords in the window),
    progressions (per section kind), sections, register_midi, noise_profile (band_hz:
    the mask band's 10th, 50th, 90th percentile in Hz; stationarity; impulsiveness;
    events), render_s.
    """

    name = "procedural"

    def __init__(self, **options: Any) -> None:
        if options:
            raise ParameterError(
                f"the procedural generator takes no construction options, got "
                f"{', '.join(sorted(options))}; use settings.params instead"
            )

    def plan(self, analysis: StemAnalysis, settings: GenerationSettings) -> MusicPlan:
        """The musical decisions for a stem (what :meth:`generate` will play)."""
        _check_analysis(analysis)
        return make_plan(analysis, settings, parse_options(settings.params))

    def generate(
        self,
        windows: Sequence[NoiseWindow],
        analysis: StemAnalysis,
        settings: GenerationSettings,
        progress: ProgressFn | None = None,
    ) -> list[WindowMusic]:
        """Music for each window, in order (see the class doc)."""
        return list(self.stream(windows, analysis, settings, progress))

    def stream(
        self,
        windows: Sequence[NoiseWindow],
        analysis: StemAnalysis,
        settings: GenerationSettings,
        progress: ProgressFn | None = None,
    ) -> Iterator[WindowMusic]:
        """Music for each window, in order, one window at a time (what :meth:`generate`
        returns, made only as the caller asks for it).

        ``windows`` is iterated once (a lazy Sequence builds each window on demand); a
        bad window raises ParameterError when it is reached.
        """
        plan = self.plan(analysis, settings)
        renderer = TimelineRenderer(plan)
        base = _plan_diagnostics(plan)
        total = len(windows)
        for k, w in enumerate(windows):
            # Checked as each window comes, so the windows are not walked twice.
            if w.num_samples <= 0 or w.start_sample < 0:
                raise ParameterError(
                    f"window {w.index} has start_sample={w.start_sample}, "
                    f"num_samples={w.num_samples}; need start >= 0 and length > 0"
                )
            t0 = time.perf_counter()
            audio = renderer.render(w.start_sample, w.num_samples)
            diag = dict(base)
            diag.update(_window_diagnostics(renderer, w.start_sample, w.num_samples))
            diag["render_s"] = round(time.perf_counter() - t0, 4)
            music = WindowMusic(audio=audio, image=None, diagnostics=diag)
            # Reported before the window is handed over, as generate reported it.
            if progress is not None:
                progress("generate", (k + 1) / total)
            yield music


def _check_analysis(analysis: StemAnalysis) -> None:
    if analysis.sample_rate_hz != SAMPLE_RATE_HZ:
        raise ParameterError(
            f"analysis.sample_rate_hz={analysis.sample_rate_hz}; the procedural generator "
            f"needs the analysis grid at {SAMPLE_RATE_HZ} Hz"
        )
    if len(analysis.band_center_hz) != len(analysis.mask_band_share) or len(
        analysis.band_energy_db
    ) != len(analysis.band_center_hz):
        raise ParameterError(
            "analysis band arrays differ in length: band_center_hz "
            f"{len(analysis.band_center_hz)}, mask_band_share {len(analysis.mask_band_share)}, "
            f"band_energy_db {len(analysis.band_energy_db)}"
        )


def _plan_diagnostics(plan: MusicPlan) -> dict[str, Any]:
    instruments = sorted(
        {v for v in plan.roles.values() if v} | ({"drums"} if plan.drums_on else set())
    )
    return {
        "generator": "procedural",
        "style": plan.style.name,
        "style_source": plan.style_source,
        "tempo_bpm": round(plan.tempo_bpm, 3),
        "tempo_source": plan.tempo_source,
        "beat_phase_s": round(plan.phase_s, 4),
        "key": plan.key_name,
        "key_source": plan.key_source,
        "instruments": instruments,
        "roles": {k: v for k, v in plan.roles.items()},
        "progressions": {
            kind: [ch.symbol(plan.tonic_pc, plan.minor) for ch in prog]
            for kind, prog in plan.progressions.items()
        },
        "register_midi": round(plan.chord_centre_midi, 1),
        "noise_profile": _profile_diagnostics(plan.profile),
        **({"warnings": [plan.prompt_warning]} if plan.prompt_warning else {}),
    }


def _profile_diagnostics(profile: NoiseProfile | None) -> dict[str, Any] | None:
    if profile is None:
        return None
    return {
        "band_hz": [
            round(profile.band_lo_hz),
            round(profile.band_centre_hz),
            round(profile.band_hi_hz),
        ],  # fmt: skip
        "stationarity": round(profile.stationarity, 3),
        "impulsiveness": round(profile.impulsiveness, 3),
        "events": int(profile.event_times_s.size),
    }


def _window_diagnostics(renderer: TimelineRenderer, start: int, num: int) -> dict[str, Any]:
    c = renderer.composer
    plan = renderer.plan
    first = c.bar_at_sample(start)
    last = c.bar_at_sample(start + num - 1)
    chords: list[str] = []
    sections: list[str] = []
    for bar in range(first, last + 1):
        for beat in range(0, 4, 2 if plan.style.chord_beats < 4 else 4):
            sym = chord_at(plan, bar, beat).symbol(plan.tonic_pc, plan.minor)
            if not chords or chords[-1] != sym:
                chords.append(sym)
        kind, _ = section_of(bar)
        if not sections or sections[-1] != kind:
            sections.append(kind)
    return {"chord_progression": chords, "sections": sections, "bars": [first, last]}
