"""The procedural generator: format, determinism, seams, rhythm lock, band alignment,
dynamics, styles, parameters."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from bnmusic_bridge.analysis import StemAnalysis, analyse_stem
from bnmusic_bridge.errors import CancelledError, ParameterError
from bnmusic_bridge.generators import get_generator
from bnmusic_bridge.generators.base import GenerationSettings, NoiseWindow
from bnmusic_bridge.generators.procedural import (
    Composer,
    ProceduralGenerator,
    TimelineRenderer,
    bed_voicing,
    chord_at,
    noise_profile,
    section_of,
)
from bnmusic_bridge.generators.styles import STYLES, instruments_in, style_from_prompt
from bnmusic_bridge.generators.synth import DRUM_MAX_CUT_DB, drum_kit
from bnmusic_bridge.grid import WINDOW_SAMPLES
from bnmusic_bridge.mask import high_energy_mask
from bnmusic_bridge.request import field_default
from bnmusic_bridge.spectrogram import audio_to_mel, mel_center_hz
from bnmusic_bridge.windows import plan_windows

SR = 44_100
MASK_AREA = field_default("mask_area")
NOISE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "noise"
MINUS_1_DBFS = 10 ** (-1 / 20)


def settings_of(
    prompt: str = "", *, negative_prompt: str = "", seed: int = 0, params: dict | None = None
) -> GenerationSettings:
    """Generation settings for a test: the given fields, the request's overlap."""
    return GenerationSettings(
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=seed,
        overlap_frames=field_default("overlap_frames"),
        params=params or {},
    )


def band_bursts(
    seconds: float, period_s: float, phase_s: float, band_hz: tuple[float, float], seed: int = 0
) -> np.ndarray:
    """Noise bursts (15 ms decay) in ``band_hz`` every ``period_s`` over a steady bed in
    the same band: mono float32, peak 0.5."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    x = 0.15 * rng.standard_normal(n)
    burst_len = int(0.08 * SR)
    env = np.exp(-np.arange(burst_len) / (0.015 * SR))
    for t in np.arange(phase_s, seconds - 0.1, period_s):
        i = int(round(t * SR))
        x[i : i + burst_len] += 1.5 * env * rng.standard_normal(burst_len)
    sos = signal.butter(4, list(band_hz), "bandpass", fs=SR, output="sos")
    x = signal.sosfilt(sos, x)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def steady_band(seconds: float, band_hz: tuple[float, float], seed: int = 0) -> np.ndarray:
    """Steady noise in ``band_hz`` (4th-order band-pass): mono float32, peak 0.3."""
    rng = np.random.default_rng(seed)
    sos = signal.butter(4, list(band_hz), "bandpass", fs=SR, output="sos")
    x = signal.sosfilt(sos, rng.standard_normal(int(seconds * SR)))
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def analyse(audio: np.ndarray) -> StemAnalysis:
    mel = audio_to_mel(audio)
    return analyse_stem(audio, mel, high_energy_mask(mel, MASK_AREA))


def windows_for(audio: np.ndarray, overlap_frames: int = 64) -> list[NoiseWindow]:
    plan = plan_windows(audio.size, overlap_frames)
    padded = np.zeros(plan.padded_samples, dtype=np.float32)
    padded[: audio.size] = audio
    blank = np.zeros((512, 512), dtype=bool)
    return [
        NoiseWindow(
            index=k,
            start_sample=s,
            num_samples=WINDOW_SAMPLES,
            valid_samples=max(0, min(WINDOW_SAMPLES, audio.size - s)),
            audio=padded[s : s + WINDOW_SAMPLES],
            image=np.zeros((512, 512), dtype=np.uint8),
            max_value=1.0,
            mask=blank,
            mask_enlarged=blank,
        )
        for k, s in enumerate(plan.start_samples)
    ]


def render(
    audio: np.ndarray, prompt: str = "pop", seed: int = 0, **params
) -> tuple[np.ndarray, list]:
    """Mono music over the whole stem (windows joined at their starts) and the outputs."""
    windows = windows_for(audio)
    out = ProceduralGenerator().generate(
        windows, analyse(audio), settings_of(prompt=prompt, seed=seed, params=params)
    )
    joined = np.zeros((2, windows[-1].start_sample + WINDOW_SAMPLES), dtype=np.float32)
    for w, m in zip(windows, out, strict=True):
        joined[:, w.start_sample : w.start_sample + w.num_samples] = m.audio
    return joined[:, : audio.size], out


def band_share(music_mono: np.ndarray, bands: np.ndarray) -> float:
    """Share of the music's mel magnitude that falls in the given mel rows."""
    per_band = audio_to_mel(music_mono).sum(axis=1)
    return float(per_band[bands].sum() / per_band.sum())


@pytest.fixture(scope="module")
def periodic_noise() -> np.ndarray:
    # 12 s: three overlapping windows; bursts every 0.5 s (120 BPM) from 0.13 s.
    return band_bursts(12.0, 0.5, 0.13, (150.0, 2_500.0))


@pytest.fixture(scope="module")
def periodic_render(periodic_noise):
    return render(periodic_noise, "pop", seed=3)


def test_registry_builds_it():
    gen = get_generator("procedural")
    assert isinstance(gen, ProceduralGenerator)
    assert gen.name == "procedural"


def test_output_format_levels_and_diagnostics(periodic_render):
    music, out = periodic_render
    assert len(out) == 3
    for m in out:
        assert m.image is None
        assert m.audio.dtype == np.float32
        assert m.audio.shape == (2, WINDOW_SAMPLES)
        assert np.all(np.isfinite(m.audio))
        assert np.max(np.abs(m.audio)) < MINUS_1_DBFS
        rms_dbfs = 20 * np.log10(np.sqrt(np.mean(m.audio**2)))
        assert rms_dbfs > -40.0
    d = out[0].diagnostics
    assert d["style"] == "pop"
    assert d["tempo_source"] == "noise"
    assert d["tempo_bpm"] == pytest.approx(120.0, rel=0.01)
    assert d["key"].endswith(("major", "minor"))
    assert {"piano", "bass", "drums"} <= set(d["instruments"])
    assert len(d["chord_progression"]) >= 2


def test_same_seed_is_bit_identical_and_seeds_differ(periodic_noise, periodic_render):
    music, _ = periodic_render
    again, _ = render(periodic_noise, "pop", seed=3)
    assert np.array_equal(music, again)
    other, _ = render(periodic_noise, "pop", seed=4)
    assert not np.array_equal(music, other)
    assert np.mean(np.abs(music - other)) > 0.1 * np.mean(np.abs(music))


def test_overlapping_window_regions_are_identical(periodic_render):
    _, out = periodic_render
    windows = windows_for(np.zeros(12 * SR, dtype=np.float32))
    for k in range(len(windows) - 1):
        a, b = windows[k], windows[k + 1]
        shared = a.start_sample + a.num_samples - b.start_sample
        assert shared > 0
        tail = out[k].audio[:, a.num_samples - shared :]
        head = out[k + 1].audio[:, :shared]
        assert np.array_equal(tail, head)


def test_a_window_alone_equals_it_within_the_sequence(periodic_noise, periodic_render):
    _, out = periodic_render
    windows = windows_for(periodic_noise)
    alone = ProceduralGenerator().generate(
        [windows[2]], analyse(periodic_noise), settings_of(prompt="pop", seed=3)
    )
    assert np.array_equal(alone[0].audio, out[2].audio)


def _grid_lock(music_mono: np.ndarray, period_s: float, phase_s: float) -> tuple[float, float]:
    """Music onsets against an 8th-note grid of the noise's beat: (resultant length 0..1
    of the onset phases, mean offset in seconds)."""
    onsets = analyse(music_mono).onset_times_s
    grid = period_s / 2
    angles = 2 * np.pi * ((onsets - phase_s) / grid)
    vector = np.mean(np.exp(1j * angles))
    return float(np.abs(vector)), float(np.angle(vector) / (2 * np.pi) * grid)


def _beat_comb(music_mono: np.ndarray, period_s: float, phase_s: float) -> tuple[float, float]:
    """The music's onset envelope folded on the noise's beat period: (offset in seconds
    of its strongest phase from the noise's beat, -period/2..period/2; its strength over
    the mean of all phases)."""
    env = analyse(music_mono).onset_envelope.astype(np.float64)
    frames = np.arange(env.size)
    offsets = np.arange(0.0, period_s, 0.005)
    beats = np.arange(phase_s, env.size / 100 - period_s, period_s)
    scores = np.array([np.interp((beats + o) * 100, frames, env).mean() for o in offsets])
    best = float(offsets[int(np.argmax(scores))])
    best = (best + period_s / 2) % period_s - period_s / 2
    return best, float(scores.max() / scores.mean())


@pytest.mark.parametrize("prompt", ["pop", "jazz", "classical", "ambient", "hip-hop"])
def test_music_onsets_lock_to_the_noise_period(periodic_noise, prompt):
    noise = periodic_noise[: 8 * SR]
    music, out = render(noise, prompt, seed=1)
    mono = music.mean(axis=0)
    a_noise = analyse(noise)
    a_music = analyse(mono)
    # The music's own tempo is the noise's up to an octave.
    ratio = a_music.tempo_bpm / a_noise.tempo_bpm
    assert ratio == pytest.approx(2.0 ** round(np.log2(ratio)), rel=0.01)
    # Its onsets pile up on the noise's beats.
    offset_s, contrast = _beat_comb(mono, a_noise.beat_period_s, a_noise.beat_phase_s)
    assert abs(offset_s) < 0.02, f"{prompt}: music beat {offset_s * 1000:.0f} ms off"
    assert contrast > 2.0
    if prompt == "pop":
        # Straight, percussive: the detected onset times themselves sit on the 8th grid
        # (sustained strings and swing blur single onset times, not the beat above).
        strength, mean_offset_s = _grid_lock(mono, a_noise.beat_period_s, a_noise.beat_phase_s)
        assert strength > 0.6, f"{prompt}: onset phases scatter (resultant {strength:.2f})"
        assert abs(mean_offset_s) < 0.02
        unrelated, _ = _grid_lock(mono, 0.37, 0.0)
        assert unrelated < strength - 0.3


def test_music_energy_follows_the_noise_bands():
    low_noise = band_bursts(5.11, 0.5, 0.1, (100.0, 400.0), seed=5)
    high_noise = band_bursts(5.11, 0.5, 0.1, (2_500.0, 6_000.0), seed=6)
    low_bands = np.flatnonzero(analyse(low_noise).mask_band_share > 0)
    high_bands = np.flatnonzero(analyse(high_noise).mask_band_share > 0)
    low_music, _ = render(low_noise, "lo-fi", seed=2)
    high_music, _ = render(high_noise, "lo-fi", seed=2)
    low_mono, high_mono = low_music.mean(axis=0), high_music.mean(axis=0)
    # Each rendering puts more of its energy in its own noise's loud bands than the
    # rendering for the other noise does.
    assert band_share(low_mono, low_bands) > band_share(high_mono, low_bands) + 0.1
    assert band_share(high_mono, high_bands) > band_share(low_mono, high_bands) + 0.1
    # And more than the same piece without spectral matching.
    flat_high, _ = render(high_noise, "lo-fi", seed=2, spectral_match=0.0)
    assert band_share(high_mono, high_bands) > band_share(flat_high.mean(axis=0), high_bands)


def test_dynamics_follow_the_noise_energy():
    noise = band_bursts(10.0, 0.5, 0.1, (150.0, 2_500.0), seed=7)
    noise[5 * SR :] *= 0.1  # second half 20 dB quieter

    def halves_db(music: np.ndarray) -> float:
        mono = music.mean(axis=0)
        first = np.sqrt(np.mean(mono[SR : 4 * SR] ** 2))
        second = np.sqrt(np.mean(mono[6 * SR : 9 * SR] ** 2))
        return float(20 * np.log10(first / second))

    following, _ = render(noise, "pop", seed=1)
    steady, _ = render(noise, "pop", seed=1, dynamics_depth=0.0)
    assert halves_db(following) > halves_db(steady) + 6.0


def test_stereo_is_mono_compatible_with_centred_bass(periodic_render):
    music, _ = periodic_render
    left, right = music[0].astype(np.float64), music[1].astype(np.float64)
    mid, side = (left + right) / 2, (left - right) / 2
    assert np.sum(side**2) < 0.15 * np.sum(mid**2)
    assert np.corrcoef(left, right)[0, 1] > 0.7
    sos = signal.butter(4, 150.0, "lowpass", fs=SR, output="sos")
    low_side = signal.sosfilt(sos, side)
    low_mid = signal.sosfilt(sos, mid)
    assert np.sum(low_side**2) < 0.05 * np.sum(low_mid**2)


def test_music_is_harmonic_not_a_buzz(periodic_render):
    music, _ = periodic_render
    mono = music.mean(axis=0)
    # Spectral flatness of a harmonic mix is low; white noise would be near 0.56.
    _, _, spec = signal.stft(mono, fs=SR, nperseg=4096)
    power = np.abs(spec) ** 2 + 1e-20
    flatness = np.exp(np.mean(np.log(power), axis=0)) / np.mean(power, axis=0)
    assert np.median(flatness) < 0.05
    # And it moves: the onset envelope has clear peaks.
    a = analyse(mono)
    assert len(a.onset_times_s) >= 12 * 1.5


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_style_word_selects_its_style(style):
    gen = ProceduralGenerator()
    a = analyse(band_bursts(3.0, 0.5, 0.1, (150.0, 2_500.0)))
    for word in STYLES[style].words:
        assert style_from_prompt(f"some {word} music")[0] == style, word
        plan = gen.plan(a, settings_of(prompt=f"a {word} track"))
        assert plan.style.name == style, word


def test_style_choice_rules():
    assert style_from_prompt("gentle music") == ("pop", None)
    assert style_from_prompt("lo fi hip hop beat")[0] == "lo-fi"  # first word wins
    assert style_from_prompt("Hip Hop with jazz samples")[0] == "hip-hop"
    gen = ProceduralGenerator()
    a = analyse(band_bursts(3.0, 0.5, 0.1, (150.0, 2_500.0)))
    plan = gen.plan(a, settings_of(prompt="jazz", params={"style": "edm"}))
    assert plan.style.name == "edm" and plan.style_source == "params"


def test_every_style_renders_cleanly():
    noise = band_bursts(3.0, 0.5, 0.1, (150.0, 2_500.0), seed=8)
    a = analyse(noise)
    window = windows_for(noise)[0]
    for style in STYLES:
        out = ProceduralGenerator().generate([window], a, settings_of(prompt=style))
        audio = out[0].audio
        assert np.all(np.isfinite(audio)), style
        assert 0.01 < np.max(np.abs(audio)) < MINUS_1_DBFS, style
        assert out[0].diagnostics["style"] == style


def test_prompt_instruments_and_negative_prompt():
    gen = ProceduralGenerator()
    a = analyse(band_bursts(3.0, 0.5, 0.1, (150.0, 2_500.0)))
    plan = gen.plan(a, settings_of(prompt="jazz trio with strings and bells"))
    assert "strings" in plan.roles.values() and plan.roles["lead"] == "bell"
    plan = gen.plan(a, settings_of(prompt="ambient", params={"drums": True}))
    assert plan.drums_on
    plan = gen.plan(a, settings_of(prompt="ambient with drums"))
    assert plan.drums_on
    plan = gen.plan(a, settings_of(prompt="pop", negative_prompt="drums, piano"))
    assert not plan.drums_on and "piano" not in plan.roles.values()
    assert plan.roles["chords"] is not None
    plan = gen.plan(a, settings_of(prompt="lo-fi with piano but no drums"))
    assert not plan.drums_on and plan.roles["chords"] == "piano"
    assert instruments_in("ambient pads without any piano or drums") == (
        ["pad"],
        ["piano", "drums"],
    )


def test_progress_is_reported_and_can_cancel(periodic_noise):
    noise = periodic_noise[: 10 * SR]
    windows = windows_for(noise)
    a = analyse(noise)
    seen: list[tuple[str, float]] = []
    out = ProceduralGenerator().generate(
        windows, a, settings_of(), lambda stage, f: seen.append((stage, f))
    )
    assert len(out) == len(windows)
    assert [f for _, f in seen] == pytest.approx(
        [(k + 1) / len(windows) for k in range(len(windows))]
    )
    assert {stage for stage, _ in seen} == {"generate"}
    # Diagnostics travel as JSON (reports, OSC replies).
    json.dumps([m.diagnostics for m in out])

    def cancel(stage: str, fraction: float) -> None:
        raise CancelledError("stop")

    with pytest.raises(CancelledError):
        ProceduralGenerator().generate(windows, a, settings_of(), cancel)


def test_parameters_are_checked():
    gen = ProceduralGenerator()
    a = analyse(band_bursts(3.0, 0.5, 0.1, (150.0, 2_500.0)))
    with pytest.raises(ParameterError, match="'steps'.*'swagger'"):
        gen.plan(a, settings_of(params={"steps": 20, "swagger": 1}))
    for bad in (
        {"style": "polka"},
        {"tempo_bpm": 300},
        {"tempo_bpm": "fast"},
        {"density": 1.5},
        {"key": "H major"},
        {"drums": "yes"},
    ):
        with pytest.raises(ParameterError):
            gen.plan(a, settings_of(params=bad))
    with pytest.raises(ParameterError, match="construction options"):
        ProceduralGenerator(device="cuda")


def test_tempo_and_key_overrides():
    gen = ProceduralGenerator()
    a = analyse(band_bursts(3.0, 0.5, 0.13, (150.0, 2_500.0)))
    plan = gen.plan(a, settings_of(params={"tempo_bpm": 97, "key": "F#m"}))
    assert plan.tempo_bpm == 97.0 and plan.tempo_source == "params"
    assert plan.key_name == "F# minor" and plan.key_source == "params"
    # A major style in a minor key gets minor-key progressions: roots on the F# minor
    # scale (natural minor, plus the major V).
    scale = {(6 + d) % 12 for d in (0, 2, 3, 5, 7, 8, 10)}
    for prog in plan.progressions.values():
        assert all((6 + ch.degree_semitones) % 12 in scale for ch in prog)
        assert any(ch.quality == "min" and ch.degree_semitones == 0 for ch in prog)


def test_unperiodic_noise_gets_the_style_tempo():
    rng = np.random.default_rng(9)
    noise = (0.1 * rng.standard_normal(3 * SR)).astype(np.float32)
    plan = ProceduralGenerator().plan(analyse(noise), settings_of(prompt="hip-hop"))
    assert plan.tempo_source == "style"
    assert plan.tempo_bpm == STYLES["hip-hop"].tempo_bpm


def test_key_follows_a_tonal_hum():
    t = np.arange(4 * SR) / SR
    hum = sum(0.3 / k * np.sin(2 * np.pi * 110.0 * k * t) for k in range(1, 6))
    rng = np.random.default_rng(10)
    noise = (hum + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    plan = ProceduralGenerator().plan(analyse(noise), settings_of(prompt="pop"))
    # A hum on A2 (harmonics A, E, C#) picks A major, whose tonic triad it spells.
    assert plan.key_source == "noise peaks"
    assert plan.key_name == "A major"


def test_structure_continues_over_a_long_stem():
    gen = ProceduralGenerator()
    a = analyse(band_bursts(3.0, 0.5, 0.0, (150.0, 2_500.0)))
    plan = gen.plan(a, settings_of(prompt="pop", seed=5))
    composer = Composer(plan)
    # 3 minutes at 120 BPM is 90 bars: sections cycle A B A C and come back.
    kinds = [section_of(b)[0] for b in range(0, 90, 8)]
    assert kinds[:5] == ["A", "B", "A", "C", "A"]
    chords = [chord_at(plan, b).symbol(plan.tonic_pc, plan.minor) for b in range(90)]
    assert chords[0:8] == chords[16:24]  # the A progression returns
    assert chords[0:4] != chords[8:12]  # B has its own progression
    # Bars are pure functions: a fresh composer gives the same bar 80.
    assert Composer(plan).bar_events(80) == composer.bar_events(80)
    late = [e.start_sample for e in composer.bar_events(80)]
    assert min(late) >= int((plan.phase_s + 80 * plan.bar_s) * SR) - 1


@pytest.mark.skipif(not NOISE_DIR.is_dir(), reason="real recordings not present")
def test_real_train_recording():
    noise, sr = sf.read(NOISE_DIR / "blanket_train_train.wav", dtype="float32")
    assert sr == SR
    music, out = render(noise, "lo-fi piano", seed=0)
    d = out[0].diagnostics
    assert d["tempo_source"] == "noise"
    a_noise = analyse(noise)
    mono = music.mean(axis=0)
    offset_s, contrast = _beat_comb(mono, a_noise.beat_period_s, a_noise.beat_phase_s)
    assert abs(offset_s) < 0.02 and contrast > 2.0
    assert np.max(np.abs(music)) < MINUS_1_DBFS
    bands = np.flatnonzero(a_noise.mask_band_share > np.quantile(a_noise.mask_band_share, 0.75))
    flat, _ = render(noise, "lo-fi piano", seed=0, spectral_match=0.0)
    assert band_share(mono, bands) > band_share(flat.mean(axis=0), bands) + 0.05


# ------------------------------------------------------------ composing for masking


def test_noise_profile_reads_band_and_character():
    steady = noise_profile(analyse(steady_band(5.0, (60.0, 300.0), seed=1)))
    assert 40.0 < steady.band_lo_hz < steady.band_centre_hz < steady.band_hi_hz < 450.0
    assert steady.stationarity > 0.8 and steady.impulsiveness == 0.0
    assert steady.event_times_s.size == 0
    assert steady.low_share > 0.5
    env_peak_hz = steady.envelope.freqs_hz[int(np.argmax(steady.envelope.gains))]
    assert 60.0 < env_peak_hz < 300.0 and steady.envelope.gains.max() == pytest.approx(1.0)
    # Above the mel grid's 10 kHz the envelope only falls.
    top = steady.envelope.freqs_hz >= 10_000.0
    assert np.all(np.diff(steady.envelope.gains[top]) <= 0)

    hits = noise_profile(analyse(band_bursts(8.0, 0.5, 0.13, (150.0, 2_500.0))))
    assert hits.impulsiveness > 0.8 and hits.stationarity < 0.2
    truth = np.arange(0.13, 7.9, 0.5)
    assert hits.event_times_s.size == pytest.approx(truth.size, abs=2)
    assert all(np.min(np.abs(truth - t)) < 0.015 for t in hits.event_times_s)


def _low_power_share(music: np.ndarray, below_hz: float = 300.0) -> float:
    power = audio_to_mel(music.mean(axis=0)) ** 2
    return float(power[mel_center_hz() < below_hz].sum() / power.sum())


def test_low_band_noise_gets_low_dense_parts():
    low_noise = steady_band(5.11, (60.0, 300.0), seed=1)
    high_noise = steady_band(5.11, (2_000.0, 6_000.0), seed=2)
    gen = ProceduralGenerator()
    low_plan = gen.plan(analyse(low_noise), settings_of("pop"))
    high_plan = gen.plan(analyse(high_noise), settings_of("pop"))
    # The bed: a low drone (roots and fifths, rich in harmonics) under a low noise,
    # chords up in the treble (their upper harmonics in the band) under a high one.
    low_bed = bed_voicing(low_plan, chord_at(low_plan, 0))
    high_bed = bed_voicing(high_plan, chord_at(high_plan, 0))
    assert len(low_bed) >= 3 and min(low_bed) <= 36 and max(low_bed) < 60
    assert len(high_bed) >= 5 and min(high_bed) >= 55
    low_music, _ = render(low_noise, "pop", seed=1)
    high_music, _ = render(high_noise, "pop", seed=1)
    unmatched, _ = render(low_noise, "pop", seed=1, spectral_match=0.0)
    # Low-band noise gets far more low-band music energy than high-band noise does,
    # and more than the same piece composed without looking at the noise's bands.
    assert _low_power_share(low_music) > _low_power_share(high_music) + 0.5
    assert _low_power_share(low_music) > _low_power_share(unmatched) + 0.2


def test_steady_noise_gets_a_sustained_bed():
    noise = steady_band(5.0, (200.0, 2_000.0), seed=3)
    plan = ProceduralGenerator().plan(analyse(noise), settings_of("pop"))
    assert plan.roles["bed"] is not None and plan.roles["hit"] is None
    composer = Composer(plan)
    # Notes shared by neighbouring chords are held over: bars before also sound here.
    bed = [e for b in range(-3, 4) for e in composer.bar_events(b) if e.role == "bed"]
    assert len({e.midi for e in bed}) >= 5  # a dense voicing
    start = int(plan.phase_s * SR)
    stop = int((plan.phase_s + 4 * plan.bar_s) * SR)
    sounding = np.zeros(stop - start, dtype=bool)
    for e in bed:
        sounding[max(e.start_sample - start, 0) : e.start_sample - start + e.on_samples] = True
    assert sounding.mean() > 0.97  # held from chord to chord, no gaps


def test_bed_holds_common_tones_over_chord_changes():
    noise = steady_band(5.0, (200.0, 2_000.0), seed=3)
    plan = ProceduralGenerator().plan(analyse(noise), settings_of("pop", seed=2))
    composer = Composer(plan)
    starts: dict[float, list[tuple[int, int]]] = {}
    for b in range(-3, 12):
        for e in composer.bar_events(b):
            if e.role == "bed":
                starts.setdefault(e.midi, []).append((e.start_sample, e.on_samples))
    held = 0
    for notes in starts.values():
        notes.sort()
        for (s0, n0), (s1, _) in zip(notes, notes[1:], strict=False):
            assert s1 >= s0 + n0 - 1  # a pitch is never struck while it still sounds
        held += sum(n > 1.5 * plan.bar_s * SR for _, n in notes)
    assert held > 0  # some tones carry over a chord change
def test_impulsive_noise_gets_hits_on_its_events():
    noise = band_bursts(8.0, 0.5, 0.13, (150.0, 2_500.0))
    plan = ProceduralGenerator().plan(analyse(noise), settings_of("pop"))
    assert plan.roles["hit"] is not None
    composer = Composer(plan)
    events = np.round(plan.profile.event_times_s * SR)
    hits = sorted(
        {e.start_sample for b in range(-1, 9) for e in composer.bar_events(b) if e.role == "hit"}
    )
    # Every hit sits on a noise event, to the sample; nearly every event has one.
    assert len(hits) >= 0.8 * events.size
    assert all(np.min(np.abs(events - h)) == 0 for h in hits)
    # An event far from the 16th grid gets no hit (the beat stays the beat); one close
    # to it gets its hit at the event's own time.
    step_s = plan.beat_s / 4
    on_grid = plan.phase_s + 8 * step_s + 0.2 * step_s
    off_grid = plan.phase_s + 24 * step_s + 0.5 * step_s
    moved = dataclasses.replace(
        plan,
        profile=dataclasses.replace(plan.profile, event_times_s=np.array([on_grid, off_grid])),
    )
    moved_hits = [e.start_sample for b in range(3) for e in Composer(moved).bar_events(b)
                  if e.role == "hit"]  # fmt: skip
    assert set(moved_hits) == {int(round(on_grid * SR))}
    # In the audio: more music in the noise's band right after each event with the hits.
    n = noise.size
    with_hits = TimelineRenderer(plan).render(0, n).mean(axis=0)
    no_hits = dataclasses.replace(plan, roles={**plan.roles, "hit": None})
    without = TimelineRenderer(no_hits).render(0, n).mean(axis=0)
    sos = signal.butter(4, [150.0, 2_500.0], "bandpass", fs=SR, output="sos")

    def after_events(x: np.ndarray) -> float:
        y = signal.sosfilt(sos, x)
        return float(np.mean([np.sum(y[int(e) : int(e) + 2_205] ** 2) for e in events[:-1]]))

    assert 10 * np.log10(after_events(with_hits) / after_events(without)) > 1.0


def test_drums_take_the_noise_colour_and_cymbals_keep_theirs():
    dark = noise_profile(analyse(steady_band(5.0, (60.0, 400.0), seed=4))).envelope
    plain, coloured = drum_kit(0, 0.8), drum_kit(0, 0.8, dark)

    def high_share(x: np.ndarray) -> float:
        power = np.abs(np.fft.rfft(x)) ** 2
        return float(power[np.fft.rfftfreq(x.size, 1 / SR) > 4_000.0].sum() / power.sum())

    assert high_share(coloured["snare"]) < 0.01 * high_share(plain["snare"])
    for name, cut_db in DRUM_MAX_CUT_DB.items():
        # Darker, but never quieter than the cap: the beat stays audible.
        assert np.max(np.abs(coloured[name])) >= 10 ** (-cut_db / 20) - 1e-6, name
    for name in ("hat", "open_hat", "ride", "crash"):
        # Cymbals keep their colour and only get quieter (at most 6 dB).
        ratio = np.max(np.abs(coloured[name])) / np.max(np.abs(plain[name]))
        assert 10 ** (-6 / 20) - 1e-6 <= ratio <= 1.0 + 1e-6
        assert np.allclose(coloured[name], plain[name] * ratio, atol=1e-6)
    assert drum_kit(0, 0.8, dark)["snare"].tobytes() == coloured["snare"].tobytes()


def test_hats_are_metal_not_hiss():
    hat = drum_kit(0, 0.8)["hat"][:2_048].astype(np.float64)
    rng = np.random.default_rng(0)
    hiss = signal.sosfilt(
        signal.butter(4, 7_000.0, "highpass", fs=SR, output="sos"), rng.standard_normal(2_048)
    ) * np.exp(-np.arange(2_048) / (0.025 * SR))

    def flatness(x: np.ndarray) -> float:
        power = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
        band = power[(np.fft.rfftfreq(x.size, 1 / SR) > 6_000.0)] + 1e-20
        return float(np.exp(np.mean(np.log(band))) / np.mean(band))

    assert flatness(hat) < 0.1 * flatness(hiss)


def test_music_over_a_low_noise_stays_tonal():
    music, _ = render(steady_band(5.11, (60.0, 300.0), seed=1), "pop", seed=1)
    _, _, spec = signal.stft(music.mean(axis=0), fs=SR, nperseg=4096)
    power = np.abs(spec) ** 2 + 1e-20
    flatness = np.exp(np.mean(np.log(power), axis=0)) / np.mean(power, axis=0)
    # A dense bed in the noise's band, and still lines with silence between them.
    assert np.median(flatness) < 1e-4
