"""Small numpy synthesisers for the procedural generator: pitched voices and drums.

Everything is a pure function of its arguments (no global state, no time), so a note
rendered twice is bit-identical: that is what lets overlapping windows agree exactly.
Audio is mono float32 at 44,100 Hz, linear amplitude; a voice at velocity 1 peaks near
1.0. Pitched voices read band-limited single-cycle wavetables built per note by an
inverse FFT of their harmonic amplitudes (harmonics above 18 kHz are left out, so there
is no aliasing), with a bright table that fades into a dark one for decaying sounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from ..grid import SAMPLE_RATE_HZ

TABLE_SIZE = 2_048
MAX_PARTIAL_HZ = 18_000.0
A4_HZ = 440.0


def midi_to_hz(midi: float) -> float:
    """Equal-tempered frequency in Hz of a MIDI note number (69 = A4 = 440 Hz)."""
    return A4_HZ * 2.0 ** ((midi - 69.0) / 12.0)


@dataclass(frozen=True)
class SpectralTilt:
    """A gain curve over frequency that voices apply to their harmonics.

    Attributes:
        freqs_hz: ascending frequencies in Hz.
        gains: linear gain at each frequency (interpolated between, held beyond).
    """

    freqs_hz: np.ndarray
    gains: np.ndarray

    def at(self, freqs_hz: np.ndarray) -> np.ndarray:
        return np.interp(freqs_hz, self.freqs_hz, self.gains)


FLAT_TILT = SpectralTilt(np.array([0.0, 20_000.0]), np.array([1.0, 1.0]))


@dataclass(frozen=True)
class Voice:
    """A pitched instrument.

    Attributes:
        name: instrument name.
        bright_slope, dark_slope: harmonic ``k`` has amplitude ``k ** -slope`` at the
            attack (bright) and after ``bright_tau_s`` (dark).
        bright_cutoff_hz, dark_cutoff_hz: a gentle 2nd-order roll-off on the harmonics.
        odd_boost: extra weight on odd harmonics (0 = none), a hollow/driven colour.
        explicit_bright, explicit_dark: fixed harmonic amplitudes that replace the slopes.
        attack_s: linear attack time in seconds.
        decay_s: amplitude decay time constant at A4 in seconds (None = sustain).
        fast_share, fast_decay_s: share of the level that falls with a fast time
            constant first (the percussive drop of a struck or plucked string).
        sustain: level the decay settles to (0..1).
        release_s: fade after note-off in seconds.
        bright_tau_s: time constant of the bright-to-dark fade (None = always bright).
        pitch_decay_exponent: decays scale by ``(440 / f) ** exponent`` (low notes ring
            longer).
        detune_cents: one entry per unison voice.
        vibrato_hz, vibrato_cents, vibrato_delay_s: a delayed sine vibrato.
        fm_ratio, fm_index, fm_tau_s: two-operator FM instead of the wavetable when
            ``fm_index > 0`` (bells).
        click: level of a short band-passed noise burst at the attack (hammer, pick).
        click_band_hz: the burst's pass band in Hz.
    """

    name: str
    bright_slope: float = 1.0
    dark_slope: float = 1.0
    bright_cutoff_hz: float = 8_000.0
    dark_cutoff_hz: float = 8_000.0
    odd_boost: float = 0.0
    explicit_bright: tuple[float, ...] | None = None
    explicit_dark: tuple[float, ...] | None = None
    attack_s: float = 0.005
    decay_s: float | None = None
    fast_share: float = 0.0
    fast_decay_s: float = 0.1
    sustain: float = 1.0
    release_s: float = 0.2
    bright_tau_s: float | None = None
    pitch_decay_exponent: float = 0.0
    detune_cents: tuple[float, ...] = (0.0,)
    vibrato_hz: float = 0.0
    vibrato_cents: float = 0.0
    vibrato_delay_s: float = 0.0
    fm_ratio: float = 0.0
    fm_index: float = 0.0
    fm_tau_s: float = 0.3
    click: float = 0.0
    click_band_hz: tuple[float, float] = (500.0, 5_000.0)


VOICES: dict[str, Voice] = {
    "piano": Voice(
        "piano",
        bright_slope=1.05,
        dark_slope=2.1,
        bright_cutoff_hz=5_000.0,
        dark_cutoff_hz=1_600.0,
        attack_s=0.002,
        decay_s=1.6,
        fast_share=0.6,
        fast_decay_s=0.09,
        sustain=0.0,
        release_s=0.18,
        bright_tau_s=0.25,
        pitch_decay_exponent=0.45,
        click=0.25,
        click_band_hz=(300.0, 3_000.0),
    ),
    "epiano": Voice(
        "epiano",
        explicit_bright=(1.0, 0.45, 0.12, 0.06, 0.03, 0.02, 0.16, 0.1, 0.04),
        explicit_dark=(1.0, 0.14, 0.03),
        attack_s=0.003,
        decay_s=1.9,
        fast_share=0.45,
        fast_decay_s=0.15,
        sustain=0.0,
        release_s=0.3,
        bright_tau_s=0.2,
        pitch_decay_exponent=0.35,
        click=0.08,
        click_band_hz=(1_000.0, 6_000.0),
    ),
    "pad": Voice(
        "pad",
        bright_slope=1.0,
        dark_slope=1.0,
        bright_cutoff_hz=2_200.0,
        dark_cutoff_hz=2_200.0,
        attack_s=0.35,
        release_s=0.9,
        detune_cents=(-7.0, 7.0),
    ),
    "strings": Voice(
        "strings",
        bright_slope=0.95,
        dark_slope=0.95,
        bright_cutoff_hz=3_200.0,
        dark_cutoff_hz=3_200.0,
        attack_s=0.1,
        release_s=0.4,
        detune_cents=(-3.0, 3.0),
        vibrato_hz=5.3,
        vibrato_cents=7.0,
        vibrato_delay_s=0.3,
    ),
    "cello": Voice(
        "cello",
        bright_slope=0.95,
        dark_slope=0.95,
        bright_cutoff_hz=2_400.0,
        dark_cutoff_hz=2_400.0,
        attack_s=0.06,
        release_s=0.3,
        detune_cents=(-2.0, 2.0),
        vibrato_hz=5.0,
        vibrato_cents=6.0,
        vibrato_delay_s=0.3,
    ),
    "bass": Voice(
        "bass",
        explicit_bright=(1.0, 0.55, 0.3, 0.16, 0.09, 0.05),
        explicit_dark=(1.0, 0.3, 0.08),
        attack_s=0.006,
        decay_s=0.9,
        fast_share=0.35,
        fast_decay_s=0.08,
        sustain=0.45,
        release_s=0.07,
        bright_tau_s=0.18,
    ),
    "sub": Voice(
        "sub",
        explicit_bright=(1.0, 0.22, 0.06),
        explicit_dark=(1.0, 0.12, 0.02),
        attack_s=0.004,
        decay_s=1.3,
        sustain=0.0,
        release_s=0.1,
        bright_tau_s=0.25,
    ),
    "upright": Voice(
        "upright",
        explicit_bright=(1.0, 0.62, 0.36, 0.2, 0.1, 0.05),
        explicit_dark=(1.0, 0.25, 0.05),
        attack_s=0.007,
        decay_s=0.7,
        fast_share=0.45,
        fast_decay_s=0.06,
        sustain=0.25,
        release_s=0.08,
        bright_tau_s=0.09,
        click=0.15,
        click_band_hz=(200.0, 1_500.0),
    ),
    "pluck": Voice(
        "pluck",
        bright_slope=0.9,
        dark_slope=2.6,
        bright_cutoff_hz=7_000.0,
        dark_cutoff_hz=1_300.0,
        attack_s=0.002,
        decay_s=0.45,
        fast_share=0.4,
        fast_decay_s=0.05,
        sustain=0.0,
        release_s=0.12,
        bright_tau_s=0.07,
        pitch_decay_exponent=0.3,
        click=0.12,
        click_band_hz=(2_000.0, 9_000.0),
    ),
    "guitar": Voice(
        "guitar",
        bright_slope=0.8,
        dark_slope=1.35,
        bright_cutoff_hz=4_500.0,
        dark_cutoff_hz=2_500.0,
        odd_boost=0.4,
        attack_s=0.003,
        decay_s=1.4,
        fast_share=0.4,
        fast_decay_s=0.08,
        sustain=0.3,
        release_s=0.08,
        bright_tau_s=0.3,
        detune_cents=(-4.0, 4.0),
        click=0.15,
        click_band_hz=(1_500.0, 7_000.0),
    ),
    "mallet": Voice(
        # Hits on the noise's events: a struck bar, its colour (like the bed's) the noise's
        # envelope, so the harmonics start flat; the bright attack fades fast.
        "mallet",
        bright_slope=0.4,
        dark_slope=1.2,
        bright_cutoff_hz=1e9,
        dark_cutoff_hz=1e9,
        attack_s=0.001,
        decay_s=0.35,
        fast_share=0.5,
        fast_decay_s=0.04,
        sustain=0.0,
        release_s=0.08,
        bright_tau_s=0.05,
        pitch_decay_exponent=0.3,
    ),
    "ensemble": Voice(
        # The bed: a bowed/organ-like ensemble whose colour is the noise's own spectral
        # envelope (given as the tilt), so its harmonics start flat and unfiltered.
        "ensemble",
        bright_slope=0.5,
        dark_slope=0.5,
        bright_cutoff_hz=1e9,
        dark_cutoff_hz=1e9,
        attack_s=0.15,
        release_s=0.5,
        detune_cents=(-12.0, 0.0, 12.0),
        vibrato_hz=4.7,
        vibrato_cents=5.0,
        vibrato_delay_s=0.4,
    ),
    "bell": Voice(
        "bell",
        attack_s=0.002,
        decay_s=1.1,
        fast_share=0.35,
        fast_decay_s=0.08,
        sustain=0.0,
        release_s=0.4,
        pitch_decay_exponent=0.3,
        fm_ratio=3.0,
        fm_index=1.6,
        fm_tau_s=0.25,
    ),
}


def _harmonic_amps(voice: Voice, f0_hz: float, bright: bool, tilt: SpectralTilt) -> np.ndarray:
    count = max(1, min(TABLE_SIZE // 2 - 1, int(MAX_PARTIAL_HZ / f0_hz)))
    k = np.arange(1, count + 1, dtype=np.float64)
    explicit = voice.explicit_bright if bright else voice.explicit_dark
    if explicit is not None:
        amps = np.zeros(count)
        n = min(count, len(explicit))
        amps[:n] = explicit[:n]
    else:
        slope = voice.bright_slope if bright else voice.dark_slope
        cutoff = voice.bright_cutoff_hz if bright else voice.dark_cutoff_hz
        amps = k**-slope / (1.0 + (k * f0_hz / cutoff) ** 2)
        amps *= 1.0 + voice.odd_boost * (k % 2 == 1)
    tilted = amps * tilt.at(k * f0_hz)
    # The tilt moves energy between harmonics but keeps the note's power, so it changes
    # where the music sits, not how loud each note is.
    power_before = float(np.sum(amps**2))
    power_after = float(np.sum(tilted**2))
    if power_after > 0.0:
        tilted *= np.sqrt(power_before / power_after)
    return tilted


def _wavetable(amps: np.ndarray) -> np.ndarray:
    """One cycle (TABLE_SIZE + 1 samples, last = first) of sine harmonics with random-free
    phases: sines in alternating sign keep the crest factor modest."""
    spec = np.zeros(TABLE_SIZE // 2 + 1, dtype=np.complex128)
    signs = np.where(np.arange(amps.size) % 2 == 0, 1.0, -1.0)
    spec[1 : amps.size + 1] = -0.5j * amps * signs * TABLE_SIZE
    table = np.fft.irfft(spec, TABLE_SIZE)
    return np.concatenate([table, table[:1]])


def _lookup(table: np.ndarray, phase_cycles: np.ndarray) -> np.ndarray:
    pos = (phase_cycles - np.floor(phase_cycles)) * TABLE_SIZE
    idx = pos.astype(np.int64)
    frac = pos - idx
    lo = table[idx]
    return lo + frac * (table[idx + 1] - lo)


def _amplitude_envelope(
    voice: Voice, on_samples: int, total: int, decay_scale: float
) -> np.ndarray:
    t = np.arange(total, dtype=np.float64) / SAMPLE_RATE_HZ
    attack = np.minimum(1.0, t / max(voice.attack_s, 1e-4))
    if voice.decay_s is None:
        body = np.ones(total)
    else:
        tau = voice.decay_s * decay_scale
        fast = voice.fast_decay_s * decay_scale
        shape = voice.fast_share * np.exp(-t / fast) + (1.0 - voice.fast_share) * np.exp(-t / tau)
        body = voice.sustain + (1.0 - voice.sustain) * shape
    env = attack * body
    release = max(total - on_samples, 0)
    if release > 0:
        fade = np.linspace(1.0, 0.0, release + 1)[1:] ** 2
        env[on_samples:] *= fade
    return env


def render_note(
    voice_name: str, midi: float, on_samples: int, tilt: SpectralTilt = FLAT_TILT
) -> np.ndarray:
    """One note of a pitched voice at velocity 1.

    Args:
        voice_name: a key of :data:`VOICES`.
        midi: MIDI note number (may be fractional).
        on_samples: samples from note-on to note-off (>= 1).
        tilt: gain over frequency applied to the harmonics (power-preserving).

    Returns:
        float32 ``(on_samples + release samples,)``, peak about 1.
    """
    voice = VOICES[voice_name]
    f0 = midi_to_hz(midi)
    release = int(round(voice.release_s * SAMPLE_RATE_HZ))
    total = max(on_samples, 1) + release
    t = np.arange(total, dtype=np.float64) / SAMPLE_RATE_HZ
    decay_scale = float(np.clip((A4_HZ / f0) ** voice.pitch_decay_exponent, 0.3, 4.0))
    env = _amplitude_envelope(voice, max(on_samples, 1), total, decay_scale)

    if voice.fm_index > 0.0:
        index = voice.fm_index * np.exp(-t / voice.fm_tau_s)
        mod = np.sin(2.0 * np.pi * voice.fm_ratio * f0 * t)
        out = np.sin(2.0 * np.pi * f0 * t + index * mod)
        return (0.8 * env * out).astype(np.float32)

    bright_table = _wavetable(_harmonic_amps(voice, f0, True, tilt))
    dark_table = None
    mix = None
    if voice.bright_tau_s is not None:
        dark_table = _wavetable(_harmonic_amps(voice, f0, False, tilt))
        mix = np.exp(-t / (voice.bright_tau_s * decay_scale))
    vibrato = None
    if voice.vibrato_cents > 0.0:
        depth = voice.vibrato_cents / 1200.0 * np.log(2.0)
        ramp = np.clip((t - voice.vibrato_delay_s) / 0.3, 0.0, 1.0)
        # Phase offset of a sine frequency modulation: the integral of f0 * depth * sin.
        vibrato = (
            ramp * f0 * depth / voice.vibrato_hz * (1.0 - np.cos(2 * np.pi * voice.vibrato_hz * t))
        )
        vibrato /= 2.0 * np.pi
    out = np.zeros(total)
    for i, cents in enumerate(voice.detune_cents):
        f = f0 * 2.0 ** (cents / 1200.0)
        # Fixed, different start phases keep unison voices from starting in phase.
        phase = f * t + 0.37 * i
        if vibrato is not None:
            phase = phase + vibrato
        bright = _lookup(bright_table, phase)
        if dark_table is not None and mix is not None:
            dark = _lookup(dark_table, phase)
            out += dark + mix * (bright - dark)
        else:
            out += bright
    out *= env / len(voice.detune_cents)
    if voice.click > 0.0:
        out[:_CLICK_SAMPLES] += voice.click * _click(voice.click_band_hz, midi)[: out.size]
    return out.astype(np.float32)


_CLICK_SAMPLES = round(0.010 * SAMPLE_RATE_HZ)
"""A click lasts 10 ms."""


def _click(band_hz: tuple[float, float], midi: float) -> np.ndarray:
    """10 ms of band-passed noise with a 2 ms decay; the noise is seeded by the pitch so
    a note always gets the same click."""
    rng = np.random.default_rng([int(round(midi * 100)) & 0xFFFF, 0xC1])
    noise = _filtered(rng.standard_normal(_CLICK_SAMPLES), "bandpass", list(band_hz))
    burst = noise * _decay(_CLICK_SAMPLES, 0.002, 0.0003)
    peak = float(np.max(np.abs(burst)))
    return burst / peak if peak > 0 else burst


# ---------------------------------------------------------------- drums

def _filtered(noise: np.ndarray, kind: str, freqs_hz: float | list[float]) -> np.ndarray:
    sos = signal.butter(2, freqs_hz, btype=kind, fs=SAMPLE_RATE_HZ, output="sos")
    return signal.sosfilt(sos, noise)


def _decay(n: int, tau_s: float, attack_s: float = 0.0005) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE_HZ
    return np.minimum(1.0, t / attack_s) * np.exp(-t / tau_s)


DRUM_EQ_RANGE_DB = 40.0
"""The noise's envelope reshapes each drum's spectrum over at most this range, dB."""
DRUM_MAX_CUT_DB = {"kick": 6.0, "snare": 9.0, "clap": 9.0}
"""How much quieter the reshaping may leave a drum (cymbals: :data:`_CYMBAL_MAX_CUT_DB`),
dB: every drum stays audible on any noise, so the beat does too."""
_CYMBAL_MAX_CUT_DB = 6.0
_CYMBALS = frozenset({"hat", "open_hat", "ride", "shaker", "crash"})


_HAT_HZ = (6_820.0, 7_410.0, 8_130.0, 8_790.0, 9_460.0, 10_070.0)
"""Partials of the hats, Hz: a few inharmonic lines, as a small struck plate has; hiss
would fill the whole top of the spectrum at every hit (the music would measure as noise)."""
_CRASH_HZ = (3_610.0, 4_030.0, 4_470.0, 4_980.0, 5_420.0, 5_930.0, 6_510.0, 7_060.0, 7_690.0,
             8_260.0, 8_870.0, 9_540.0)  # fmt: skip
"""Partials of the crash cymbal, Hz."""


def _partials(n: int, rng: np.random.Generator, freqs_hz: tuple[float, ...]) -> np.ndarray:
    """``n`` samples of equal sines at ``freqs_hz`` with random start phases, peak about 1."""
    t = np.arange(n) / SAMPLE_RATE_HZ
    phases = rng.random(len(freqs_hz))
    out = sum(np.sin(2.0 * np.pi * (f * t + p)) for f, p in zip(freqs_hz, phases, strict=True))
    return out / np.sqrt(len(freqs_hz))


def drum_kit(
    seed: int, tone: float, envelope: SpectralTilt | None = None
) -> dict[str, np.ndarray]:
    """One-shot drum samples, float32 mono, peak 1 each before the envelope.

    Args:
        seed: noise seed (the kit is a pure function of it, ``tone`` and ``envelope``).
        tone: 0 = dark, muffled (low-passed at 4 kHz), 1 = bright (18 kHz).
        envelope: a gain over frequency (peak 1) each drum is filtered with after
            normalising (minimum phase, so attacks stay sharp; over at most
            :data:`DRUM_EQ_RANGE_DB`), then brought back up to at most
            :data:`DRUM_MAX_CUT_DB` under its peak of 1: drums take the noise's colour,
            and stay audible where the noise has none of their band. Cymbals keep their
            colour and only get quieter, by the envelope's power-weighted gain over their
            spectrum, at most 12 dB. None: unfiltered.
    """
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xD2])
    sr = SAMPLE_RATE_HZ
    lowpass_hz = 4_000.0 + float(np.clip(tone, 0.0, 1.0)) * 14_000.0
    kit: dict[str, np.ndarray] = {}

    n = int(0.45 * sr)
    t = np.arange(n) / sr
    # Pitch sweep 160 -> 48 Hz; the phase is the closed-form integral of the frequency.
    phase = 48.0 * t + 112.0 * 0.035 * (1.0 - np.exp(-t / 0.035))
    body = np.sin(2 * np.pi * phase) * _decay(n, 0.28, 0.001)
    click = _filtered(rng.standard_normal(n), "lowpass", 3_000.0) * _decay(n, 0.004)
    kit["kick"] = body + 0.25 * click

    n = int(0.35 * sr)
    t = np.arange(n) / sr
    tone_part = (np.sin(2 * np.pi * 185 * t) + 0.6 * np.sin(2 * np.pi * 330 * t)) * _decay(n, 0.05)
    rattle = _filtered(rng.standard_normal(n), "bandpass", [1_500.0, 9_000.0]) * _decay(n, 0.11)
    kit["snare"] = 0.6 * tone_part + 1.2 * rattle

    n = int(0.4 * sr)
    noise = _filtered(rng.standard_normal(n), "bandpass", [900.0, 4_500.0])
    env = np.zeros(n)
    for k, off_s in enumerate((0.0, 0.011, 0.022)):
        i = int(off_s * sr)
        env[i:] += (0.7 if k < 2 else 1.0) * _decay(n - i, 0.006 if k < 2 else 0.09)
    kit["clap"] = noise * env

    # Hats are metal, not hiss: six square waves (the TR-808's hat) high-passed. Their
    # lines leave the spectrum between them empty, as a struck cymbal's partials do.
    n = int(0.12 * sr)
    # A 4 ms attack and a Gaussian fall keep each hit's lines narrow: a sharp edge would
    # splash over the whole spectrum, and a hat plays on every 8th note.
    t = np.arange(n) / sr
    soft = np.sin(0.5 * np.pi * np.minimum(t / 0.004, 1.0)) ** 2
    kit["hat"] = _partials(n, rng, _HAT_HZ) * soft * np.exp(-((t / 0.04) ** 2))
    n = int(0.6 * sr)
    kit["open_hat"] = _partials(n, rng, _HAT_HZ) * _decay(n, 0.2, 0.004)

    n = int(1.3 * sr)
    t = np.arange(n) / sr
    partials = sum(
        np.sin(2 * np.pi * f * t + 0.7 * i)
        for i, f in enumerate((2_960.0, 3_720.0, 4_640.0, 5_510.0, 6_280.0))
    )
    wash = _partials(n, rng, _HAT_HZ)
    kit["ride"] = (0.35 * partials * _decay(n, 0.45) + 0.3 * wash * _decay(n, 0.35)) * (
        1.0 + 1.5 * _decay(n, 0.01)
    )

    n = int(0.1 * sr)
    shaker = _filtered(rng.standard_normal(n), "bandpass", [4_000.0, 11_000.0])
    t = np.arange(n) / sr
    kit["shaker"] = shaker * np.sin(np.pi * np.minimum(t / 0.06, 1.0)) ** 2 * _decay(n, 0.03, 0.01)

    n = int(2.0 * sr)
    kit["crash"] = _partials(n, rng, _CRASH_HZ) * _decay(n, 0.7, 0.001)

    out: dict[str, np.ndarray] = {}
    for name, sample in kit.items():
        shaped = _filtered(sample, "lowpass", lowpass_hz) if name != "kick" else sample
        peak = float(np.max(np.abs(shaped)))
        if peak > 0:
            shaped = shaped / peak
        if envelope is not None:
            floor = 10.0 ** (-DRUM_MAX_CUT_DB.get(name, _CYMBAL_MAX_CUT_DB) / 20.0)
            if name in _CYMBALS:
                # Cymbals keep their colour (they keep time up where nothing else
                # plays) and only get quieter where the noise has none of their band.
                spec = np.abs(np.fft.rfft(shaped)) ** 2
                freqs = np.fft.rfftfreq(shaped.size, 1.0 / SAMPLE_RATE_HZ)
                level = np.sqrt(np.sum(spec * envelope.at(freqs) ** 2) / max(np.sum(spec), 1e-30))
                shaped = shaped * float(np.clip(level, floor, 1.0))
            else:
                # The noise's colour (over at most DRUM_EQ_RANGE_DB), then the level back
                # up to within the drum's cut of where it was.
                eq = min_phase_filter(shaped, envelope, 10.0 ** (-DRUM_EQ_RANGE_DB / 20.0))
                eq_peak = float(np.max(np.abs(eq)))
                if eq_peak > 0:
                    shaped = eq * (min(max(eq_peak, floor), 1.0) / eq_peak)
        out[name] = shaped.astype(np.float32)
    return out


def min_phase_filter(x: np.ndarray, gain: SpectralTilt, floor: float = 0.0) -> np.ndarray:
    """``x`` (mono, 44.1 kHz) through the minimum-phase filter whose magnitude response
    is ``gain`` (linear, clipped to ``floor``..1), same length as ``x``.

    The minimum-phase response (from the folded real cepstrum of the log magnitude)
    puts all the filter's delay after the attack, so a drum hit gains no pre-echo.
    """
    n = 1 << int(np.ceil(np.log2(x.size + 16_384)))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE_HZ)
    mag = np.clip(gain.at(freqs), max(floor, 1e-6), 1.0)
    cep = np.fft.irfft(np.log(mag), n)
    fold = np.zeros(n)
    fold[0] = cep[0]
    fold[1 : n // 2] = 2.0 * cep[1 : n // 2]
    fold[n // 2] = cep[n // 2]
    response = np.exp(np.fft.rfft(fold))
    return np.fft.irfft(np.fft.rfft(x, n) * response, n)[: x.size]


# ---------------------------------------------------------------- mix helpers


def pan_gains(pan: float) -> tuple[float, float]:
    """Constant-power (left, right) gains for ``pan`` in -1 (left) .. 1 (right)."""
    angle = 0.25 * np.pi * (1.0 + float(np.clip(pan, -1.0, 1.0)))
    return float(np.cos(angle) * np.sqrt(2.0)), float(np.sin(angle) * np.sqrt(2.0))


def soft_clip(x: np.ndarray, knee: float = 0.5, ceiling: float = 0.88) -> np.ndarray:
    """Memoryless soft limiter: linear below ``knee``, tanh-shaped above, never reaching
    ``ceiling`` (0.88 = -1.1 dBFS). Being memoryless it treats every sample the same
    wherever a window starts."""
    mag = np.abs(x)
    over = mag > knee
    if not np.any(over):
        return x
    out = x.copy()
    span = ceiling - knee
    out[over] = np.sign(x[over]) * (knee + span * np.tanh((mag[over] - knee) / span))
    return out
