"""The producer's own music (generator ``track``, ``--music FILE``): tempo, beat phase,
key shift, bar loops and errors, measured with the project's own analysis (and once with
librosa when it is installed)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from noise_signals import clacks
from scipy import signal

from bnmusic_bridge import RenderRequest, render
from bnmusic_bridge.analysis import (
    StemAnalysis,
    analyse_stem,
    estimate_period,
    fold_period,
    onset_envelope,
    pick_onsets,
)
from bnmusic_bridge.errors import AudioInputError, ParameterError
from bnmusic_bridge.frontends.args import add_render_args, build_request
from bnmusic_bridge.generators import available_generators, get_generator
from bnmusic_bridge.generators.base import GenerationSettings, NoiseWindow
from bnmusic_bridge.generators.track import (
    FittedTrack,
    TrackGenerator,
    choose_target_period,
    fit_track,
    load_track,
    parse_track_options,
)
from bnmusic_bridge.grid import WINDOW_SAMPLES
from bnmusic_bridge.mask import high_energy_mask
from bnmusic_bridge.presets import preset_from_dict
from bnmusic_bridge.request import check_request, field_default
from bnmusic_bridge.spectrogram import audio_to_mel
from bnmusic_bridge.windows import plan_windows

SR = 44_100


# ------------------------------------------------------------------ signals


def tone(freq: float, seconds: float, decay_s: float, attack_s: float = 0.004) -> np.ndarray:
    """A sine with a raised-cosine attack, an exponential decay and a 10 ms raised-cosine
    release (no clicks of its own)."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    env = np.exp(-t / decay_s)
    a, r = int(attack_s * SR), int(0.01 * SR)
    env[:a] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(a) / a)
    env[-r:] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(r) / r)
    return env * np.sin(2 * np.pi * freq * t)


def click_track(bpm: float, seconds: float, phase_s: float = 0.1) -> np.ndarray:
    """A metronome: a kick (55 Hz) and a 1 kHz click on each bar's first beat, 2 kHz
    clicks on the other three. Mono float32, peak 0.5."""
    n = int(seconds * SR)
    x = np.zeros(n)
    kick = tone(55.0, 0.25, 0.06)
    hi, lo = tone(2000.0, 0.04, 0.006), tone(1000.0, 0.04, 0.006)
    for i, t in enumerate(np.arange(phase_s, seconds - 0.3, 60.0 / bpm)):
        s = int(round(t * SR))
        click = lo if i % 4 == 0 else 0.5 * hi
        x[s : s + click.size] += click
        if i % 4 == 0:
            x[s : s + kick.size] += 0.8 * kick
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


NOTES_HZ = (110.0, 330.0, 440.0, 550.0)
"""Pitch of beats 1..4 of each bar in :func:`bar_track` (beat 1 low: the downbeat)."""


def bar_track(bpm: float, seconds: float, phase_s: float = 0.2) -> np.ndarray:
    """Bars of four notes, one pitch per beat (:data:`NOTES_HZ`), each note ringing
    through its beat: smooth sines only, so any click comes from the fitting."""
    n = int(seconds * SR)
    x = np.zeros(n)
    beat = 60.0 / bpm
    for i, t in enumerate(np.arange(phase_s, seconds - beat, beat)):
        s = int(round(t * SR))
        note = tone(NOTES_HZ[i % 4], beat, beat / 3) * (1.0 if i % 4 == 0 else 0.6)
        x[s : s + note.size] += note
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def analyse(noise: np.ndarray) -> StemAnalysis:
    mel = audio_to_mel(noise)
    return analyse_stem(noise, mel, high_energy_mask(mel, field_default("mask_area")))


def windows_for(noise: np.ndarray) -> list[NoiseWindow]:
    """The pipeline's windows over ``noise`` (images and masks blank: unused here)."""
    plan = plan_windows(noise.size, field_default("overlap_frames"))
    padded = np.zeros(plan.padded_samples, dtype=np.float32)
    padded[: noise.size] = noise
    blank = np.zeros((512, 512), dtype=bool)
    return [
        NoiseWindow(k, s, WINDOW_SAMPLES, max(0, min(WINDOW_SAMPLES, noise.size - s)),
                    padded[s : s + WINDOW_SAMPLES], np.zeros((512, 512), np.uint8), 1.0, blank, blank)
        for k, s in enumerate(plan.start_samples)
    ]


def fit(track: np.ndarray, noise: np.ndarray, **params) -> FittedTrack:
    audio = track[None] if track.ndim == 1 else track
    return fit_track(audio, analyse(noise), noise.size, parse_track_options(params), "t.wav")


def onsets_s(audio: np.ndarray) -> np.ndarray:
    return pick_onsets(onset_envelope(audio.astype(np.float64), audio.size // 441 + 1))


def tempo_bpm(audio: np.ndarray) -> float:
    period, _ = estimate_period(onset_envelope(audio.astype(np.float64), audio.size // 441 + 1))
    assert period is not None
    return 60.0 / fold_period(period)


def nearest_ms(times: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.array([1000.0 * np.min(np.abs(reference - t)) for t in times])


@pytest.fixture(scope="module")
def pulse_noise() -> np.ndarray:
    """A train-like noise with a 120 BPM pulse (clacks every 0.5 s), 16 s."""
    return clacks(16.0, period_s=0.5)


@pytest.fixture(scope="module")
def clicks_fitted(pulse_noise: np.ndarray) -> FittedTrack:
    """A 100 BPM click track (12 s) fitted to the 120 BPM noise."""
    return fit(click_track(100.0, 12.0), pulse_noise)


# ------------------------------------------------------------------ tempo and phase


def test_a_100_bpm_click_track_comes_out_at_the_noises_120_bpm(clicks_fitted, pulse_noise):
    d = clicks_fitted.diagnostics
    assert d["mode"] == "tempo-locked"
    assert d["track_tempo_bpm"] == pytest.approx(100.0, abs=0.2)
    assert d["stretch_ratio"] == pytest.approx(1.2, abs=0.003)
    assert d["warnings"] == []
    music = clicks_fitted.audio[0]
    assert music.shape == pulse_noise.shape
    assert tempo_bpm(music) == pytest.approx(120.0, abs=0.3)


def test_the_clicks_land_on_the_noises_events(clicks_fitted, pulse_noise):
    noise_on = onsets_s(pulse_noise)
    music_on = onsets_s(clicks_fitted.audio[0])
    inner = music_on[(music_on > 0.3) & (music_on < pulse_noise.size / SR - 0.3)]
    assert inner.size >= 25  # a click on every beat
    off = nearest_ms(inner, noise_on)
    assert np.median(off) <= 10.0 and np.percentile(off, 90) <= 15.0, off


def test_the_kicks_fall_on_the_noises_beats_and_bars(clicks_fitted, pulse_noise):
    """The downbeats (kick + low click) are on noise beats, one bar (2 s) apart."""
    music = clicks_fitted.audio[0].astype(np.float64)
    sos = signal.butter(4, 120.0, "lowpass", fs=SR, output="sos")
    kicks = onsets_s(signal.sosfilt(sos, music))
    kicks = kicks[(kicks > 0.3) & (kicks < pulse_noise.size / SR - 0.3)]
    assert kicks.size >= 5
    assert np.max(nearest_ms(kicks, onsets_s(pulse_noise))) <= 15.0
    assert np.allclose(np.diff(kicks), 2.0, atol=0.02), kicks
    assert clicks_fitted.diagnostics["downbeat_s"] == pytest.approx(kicks[0] % 2.0, abs=0.02)


def test_librosa_measures_the_same_tempo_and_onsets(clicks_fitted, pulse_noise):
    librosa = pytest.importorskip("librosa")
    music = clicks_fitted.audio[0]
    onset_env = librosa.onset.onset_strength(y=music, sr=SR)
    tempo = float(np.atleast_1d(librosa.feature.tempo(onset_envelope=onset_env, sr=SR))[0])
    assert min(abs(tempo - t) for t in (60.0, 120.0, 240.0)) <= 3.0, tempo
    noise_on = librosa.onset.onset_detect(y=pulse_noise, sr=SR, units="time")
    music_on = librosa.onset.onset_detect(y=music, sr=SR, units="time")
    inner = music_on[(music_on > 0.3) & (music_on < pulse_noise.size / SR - 0.3)]
    assert inner.size >= 25
    assert np.median(nearest_ms(inner, noise_on)) <= 15.0


def test_the_stretch_stays_near_one_by_halving_or_doubling_the_target():
    # 170 BPM against an 80 BPM noise: 160 BPM (x0.94), not 80 (x0.47).
    target, speed = choose_target_period(60 / 170, 60 / 80, 2.0)
    assert 60 / target == pytest.approx(160.0) and speed == pytest.approx(160 / 170)
    target, speed = choose_target_period(60 / 62, 60 / 175, 2.0)
    assert 60 / target == pytest.approx(87.5) and speed == pytest.approx(87.5 / 62)
    assert choose_target_period(60 / 100, 60 / 120, 1.1) is None


def test_a_stretch_beyond_max_stretch_keeps_the_tracks_tempo_and_says_so(pulse_noise):
    fitted = fit(click_track(100.0, 8.0), pulse_noise, max_stretch=1.1)
    d = fitted.diagnostics
    assert d["stretch_ratio"] == 1.0 and d["mode"] == "downbeat-on-strongest-event"
    assert any("max_stretch=1.1" in w for w in d["warnings"]), d["warnings"]
    assert tempo_bpm(fitted.audio[0]) == pytest.approx(100.0, abs=0.3)


def test_a_noise_without_a_pulse_keeps_the_tempo_and_puts_a_downbeat_on_its_strongest_event():
    rng = np.random.default_rng(3)
    noise = (0.05 * rng.standard_normal(10 * SR)).astype(np.float32)
    hit = int(3.3 * SR)
    noise[hit : hit + 2000] += (0.9 * np.exp(-np.arange(2000) / 300.0) * rng.standard_normal(2000)).astype(np.float32)
    assert analyse(noise).tempo_bpm is None
    fitted = fit(click_track(100.0, 12.0), noise)
    d = fitted.diagnostics
    assert d["mode"] == "downbeat-on-strongest-event" and d["stretch_ratio"] == 1.0
    assert "strongest event at 3.3" in d["downbeat_on"]
    sos = signal.butter(4, 120.0, "lowpass", fs=SR, output="sos")
    kicks = onsets_s(signal.sosfilt(sos, fitted.audio[0].astype(np.float64)))
    assert np.min(np.abs(kicks - 3.3)) <= 0.015, kicks


def test_a_track_without_a_beat_is_not_stretched_and_the_diagnostics_warn(pulse_noise):
    pad = tone(220.0, 6.0, 100.0).astype(np.float32) * 0.3
    fitted = fit(pad, pulse_noise)
    d = fitted.diagnostics
    assert d["mode"] == "unaligned" and d["stretch_ratio"] == 1.0
    assert d["track_tempo_source"] == "none"
    assert any("t.wav" in w and "no tempo" in w for w in d["warnings"])
    assert fitted.audio.shape == (1, pulse_noise.size)


def test_the_generators_warnings_reach_the_render_result(tmp_path, pulse_noise):
    track = tmp_path / "pad.wav"
    sf.write(track, tone(220.0, 6.0, 100.0).astype(np.float32) * 0.3, SR)
    result = render(pulse_noise[None, :], SR, RenderRequest(generator="track", music=str(track)))
    hits = [w for w in result.warnings if "pad.wav" in w and "no tempo" in w]
    assert len(hits) == 1, result.warnings  # once, though every window carries it


def test_track_bpm_skips_the_estimate(pulse_noise):
    d = fit(click_track(100.0, 8.0), pulse_noise, track_bpm=100).diagnostics
    assert d["track_tempo_source"] == "track_bpm" and d["stretch_ratio"] == pytest.approx(1.2, abs=0.003)


# ------------------------------------------------------------------ loops and key


def hf_rms(audio: np.ndarray, frame: int = 441) -> np.ndarray:
    """RMS per 10 ms frame above 5 kHz (the test tracks have nothing there but clicks)."""
    sos = signal.butter(6, 5000.0, "highpass", fs=SR, output="sos")
    hf = signal.sosfilt(sos, audio.astype(np.float64))
    n = hf.size // frame
    return np.sqrt(np.mean(hf[: n * frame].reshape(n, frame) ** 2, axis=1))


def test_loops_at_bar_boundaries_without_clicks_at_the_joins():
    noise = clacks(20.0, period_s=0.5)
    track = bar_track(100.0, 11.0)
    fitted = fit(track, noise)
    d = fitted.diagnostics
    music = fitted.audio[0]
    assert d["loop_joins"] >= 2 and d["loop_bars"] >= 1
    assert d["loop_period_s"] == pytest.approx(d["loop_bars"] * 4 * 0.5, abs=0.002)
    joins = d["first_join_s"] + d["loop_period_s"] * np.arange(d["loop_joins"])
    # Every join is a bar line: a noise beat, and the low note (beat 1) starts there.
    beat = 60.0 / analyse(noise).tempo_bpm
    phase = joins[0] % beat
    residue = ((joins - analyse(noise).beat_phase_s) / beat) % 1.0
    assert np.all(np.minimum(residue, 1 - residue) * beat < 0.005), (joins, phase)
    # The pitch sequence 1-2-3-4 runs on across every join.
    beats = np.arange(d["downbeat_s"], music.size / SR - beat, beat)
    freqs = np.fft.rfftfreq(4096, 1 / SR)
    sequence = []
    for t in beats:
        s = int((t + 0.05) * SR)
        spec = np.abs(np.fft.rfft(music[s : s + 4096] * np.hanning(4096)))
        sequence.append(int(np.argmin([abs(freqs[np.argmax(spec)] - f) for f in NOTES_HZ])))
    assert sequence == [k % 4 for k in range(len(sequence))], sequence
    # No click: the energy above 5 kHz at a join is no more than anywhere else.
    hf = hf_rms(music)
    join_frames = np.concatenate([np.arange(int(j * 100) - 3, int(j * 100) + 4) for j in joins])
    elsewhere = np.delete(hf, join_frames)
    assert hf[join_frames].max() <= 1.5 * np.percentile(elsewhere[5:-5], 99.5) + 1e-6
    # ... and the measure does see a click: the same music cut at a join without a fade.
    cut = int(joins[0] * SR)
    butt = np.concatenate([music[:cut], music[cut + int(0.13 * SR) :]])
    assert hf_rms(butt)[int(joins[0] * 100) - 3 : int(joins[0] * 100) + 4].max() > 3 * hf[join_frames].max()


def test_a_stem_shorter_than_the_track_is_trimmed_not_looped(pulse_noise):
    fitted = fit(click_track(100.0, 30.0), pulse_noise[: 6 * SR])
    assert fitted.diagnostics["loop_joins"] == 0 and fitted.audio.shape == (1, 6 * SR)


@pytest.mark.parametrize("semitones", [3.0, -5.0])
def test_key_shift_moves_a_sines_pitch_by_the_asked_semitones(semitones, pulse_noise):
    sine = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(6 * SR) / SR)).astype(np.float32)
    fitted = fit(sine, pulse_noise[: 8 * SR], key_shift_semitones=semitones)
    music = fitted.audio[0][SR : 5 * SR]
    spec = np.abs(np.fft.rfft(music * np.hanning(music.size)))
    peak_hz = np.fft.rfftfreq(music.size, 1 / SR)[np.argmax(spec)]
    assert peak_hz == pytest.approx(440.0 * 2 ** (semitones / 12), rel=0.003)
    assert fitted.diagnostics["key_shift_semitones"] == semitones


def test_raw_mode_only_loops_the_track_from_its_start(pulse_noise):
    track = click_track(100.0, 5.0)
    fitted = fit(track, pulse_noise, fit=False)
    assert fitted.diagnostics["mode"] == "raw" and fitted.diagnostics["loop_joins"] == 3
    np.testing.assert_array_equal(fitted.audio[0][441 : 4 * SR], track[441 : 4 * SR])


# ------------------------------------------------------------------ the generator in a render


@pytest.fixture(scope="module")
def stereo_track(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("music") / "song.flac"
    left = click_track(100.0, 10.0)
    right = 0.7 * bar_track(100.0, 10.0, phase_s=0.1)
    # 48 kHz on disk: the generator resamples to the analysis rate.
    up = signal.resample_poly(np.stack([left, right]), 160, 147, axis=1)
    sf.write(path, up.T, 48_000)
    return path


def test_output_length_and_rate_equal_the_stems_and_stereo_stays_stereo(stereo_track):
    rate = 48_000
    n = 5 * rate + 123  # not a multiple of anything
    noise = np.stack([clacks(n / rate, rate=rate, period_s=0.5)[:n]] * 2)
    result = render(noise, rate, RenderRequest(generator="track", music=str(stereo_track)))
    assert result.music.shape == noise.shape
    assert result.music_gained.shape == noise.shape
    d = result.generator_diagnostics[0]
    assert d["generator"] == "track" and d["music_file"] == "song.flac" and d["track_channels"] == 2
    left, right = result.music
    assert np.corrcoef(left, right)[0, 1] < 0.5  # two different channels, not a mono copy


def test_the_generator_returns_one_timeline_cut_into_windows(stereo_track, pulse_noise):
    plan = plan_windows(pulse_noise.size, field_default("overlap_frames"))
    windows = windows_for(pulse_noise)
    settings = GenerationSettings("", "", 0, plan.overlap_frames, {}, music=str(stereo_track))
    out = get_generator("track").generate(windows, analyse(pulse_noise), settings)
    assert len(out) == plan.count
    for a, b, wa, wb in zip(out, out[1:], windows, windows[1:], strict=False):
        assert a.audio.shape == (2, wa.num_samples)
        shared = wa.start_sample + wa.num_samples - wb.start_sample
        np.testing.assert_array_equal(a.audio[:, -shared:], b.audio[:, :shared])


# ------------------------------------------------------------------ errors name the file


def test_missing_unreadable_and_too_short_tracks_are_refused_naming_the_file(tmp_path, pulse_noise):
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioInputError, match="nope.wav.*no such file"):
        load_track(missing)
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    with pytest.raises(AudioInputError, match="notes.wav"):
        load_track(text)
    short = tmp_path / "short.wav"
    sf.write(short, click_track(100.0, 2.0), SR)
    analysis = analyse(pulse_noise)
    with pytest.raises(AudioInputError, match=r"short.wav: 2.00 s long; at least 4 s"):
        fit_track(load_track(short), analysis, pulse_noise.size, parse_track_options({}), str(short))
    with pytest.raises(AudioInputError, match=r"quiet.wav: the track is silent"):
        fit_track(np.zeros((2, 5 * SR), np.float32), analysis, pulse_noise.size, parse_track_options({}), "quiet.wav")
    settings = GenerationSettings("", "", 0, 64, {}, music=str(missing))
    with pytest.raises(AudioInputError, match="nope.wav"):
        TrackGenerator().generate(windows_for(pulse_noise), analysis, settings)


def test_bad_parameters_and_requests_are_refused_by_name():
    with pytest.raises(ParameterError, match="key_shift_semitones"):
        parse_track_options({"key_shift_semitones": 13})
    with pytest.raises(ParameterError, match="'tempo'"):
        parse_track_options({"tempo": 120})
    with pytest.raises(ParameterError, match="max_stretch"):
        parse_track_options({"max_stretch": 3})
    assert parse_track_options({"track_bpm": 0}).track_bpm is None
    with pytest.raises(ParameterError, match="generator 'track' needs music"):
        check_request(RenderRequest(generator="track"))
    with pytest.raises(ParameterError, match="music='a.wav' is played by generator 'track'"):
        check_request(RenderRequest(music="a.wav"))
    check_request(RenderRequest(generator="track", music="a.wav"))
    with pytest.raises(ParameterError, match="needs the producer's track"):
        TrackGenerator().generate([], None, GenerationSettings("", "", 0, 64, {}))  # type: ignore[arg-type]


# ------------------------------------------------------------------ flags and presets


def test_registry_lists_track():
    assert "track" in available_generators()


def parse(*argv: str) -> RenderRequest:
    parser = argparse.ArgumentParser()
    add_render_args(parser)
    return build_request(parser.parse_args(list(argv)))


def test_the_music_flag_picks_the_track_generator_with_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    req = parse("--music", "song.wav")
    assert req.generator == "track" and req.music == str(tmp_path / "song.wav")
    assert parse("--music", "song.wav", "--generator", "random-music").generator == "random-music"
    assert parse("--music", "none").music is None
    req = parse("--music", "song.wav", "--param", "key_shift_semitones=-2")
    assert dict(req.generator_params) == {"key_shift_semitones": -2}


def test_a_presets_music_path_is_the_preset_folders_and_its_params_are_checked(tmp_path):
    data = {"generator": {"name": "track", "music": "songs/mine.wav", "params": {"key_shift_semitones": 2}}}
    preset = preset_from_dict(data, where="p.toml", base_dir=tmp_path, file_stem="p")
    assert preset.request.music == str((tmp_path / "songs" / "mine.wav").resolve())
    data["generator"]["params"] = {"key_shift_semitones": 40}
    with pytest.raises(ParameterError, match="p.toml.*key_shift_semitones"):
        preset_from_dict(data, where="p.toml", base_dir=tmp_path, file_stem="p")


# ------------------------------------------------------------------ real music


def test_real_music_fits_a_real_periodic_noise(shared_data):
    noise, rate = sf.read(shared_data / "noise" / "esc10_clock_tick_1-42139-A.wav", dtype="float32")
    assert rate == SR
    analysis = analyse(noise)
    assert analysis.tempo_bpm is not None
    for path in sorted((shared_data / "music").glob("*.wav")):
        track = load_track(path)
        fitted = fit_track(track, analysis, noise.size, parse_track_options({}), str(path))
        d = fitted.diagnostics
        assert d["mode"] == "tempo-locked", (path.name, d)
        assert fitted.audio.shape == (track.shape[0], noise.size)
        assert np.all(np.isfinite(fitted.audio)) and np.abs(fitted.audio).max() > 0.01
        # The fitted music's own tempo is the noise's (or twice, or half).
        ratio = tempo_bpm(fitted.audio.mean(axis=0)) / analysis.tempo_bpm
        assert min(abs(ratio - r) for r in (0.5, 1.0, 2.0)) <= 0.02, (path.name, ratio, d)


def test_a_track_shorter_than_one_bar_after_its_downbeat_cannot_loop(pulse_noise):
    # 50 BPM: a bar is 4.8 s, longer than the 4.5 s track can give after its first beat.
    with pytest.raises(AudioInputError, match=r"t.wav: too short to loop.*less than one bar \(4.80 s"):
        fit(click_track(50.0, 4.5, phase_s=0.4), pulse_noise, track_bpm=50, max_stretch=1.0)
