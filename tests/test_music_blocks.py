"""The music side on block arrays (issue 18): streaming generation, stitching from an
iterator, alignment, effects and widening on DiskArray inputs into a DiskStore give
what the numpy path gives."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from test_procedural import analyse, band_bursts, settings_of, windows_for

from bnmusic_bridge import fx, stereo
from bnmusic_bridge.align import (
    AlignSettings,
    BandRows,
    _band_gains_in_place,
    align_music,
    apply_band_gains,
    band_powers,
)
from bnmusic_bridge.errors import ParameterError
from bnmusic_bridge.generators.base import StreamingGenerator, iter_music
from bnmusic_bridge.generators.procedural import ProceduralGenerator
from bnmusic_bridge.grid import WINDOW_SAMPLES
from bnmusic_bridge.scratch import (
    ChannelMean,
    DiskArray,
    DiskStore,
    MemoryStore,
    ZeroPadded,
    copy_into,
)
from bnmusic_bridge.windows import crossfade_gains, plan_windows, stitch

SR = 44_100


def disk(x: np.ndarray) -> DiskArray:
    """``x`` copied into a scratch-file DiskArray."""
    return copy_into(DiskStore(), x)

def music_and_noise(seconds: float, channels: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    tone = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    music = np.stack([tone + 0.05 * rng.standard_normal(n) for _ in range(channels)])
    noise = 0.1 * rng.standard_normal(n) * (1 + np.sin(2 * np.pi * 2 * t) ** 2)
    return music.astype(np.float32), noise.astype(np.float32)


# ------------------------------------------------------------------ stitch


def _stitch_reference(plan, windows_audio):
    """stitch as it was before block arrays (whole padded array, cut at the end)."""
    channels = max(w.shape[0] for w in windows_audio)
    out = np.zeros((channels, plan.padded_samples), dtype=np.float32)
    n_ov = plan.overlap_samples
    correlations = []
    for k, (start, audio) in enumerate(zip(plan.start_samples, windows_audio, strict=True)):
        w = audio if audio.shape[0] == channels else np.repeat(audio, channels, axis=0)
        if k == 0 or n_ov == 0:
            out[:, start : start + WINDOW_SAMPLES] = w
            continue
        prev = out[:, start : start + n_ov]
        fade_out, fade_in, r = crossfade_gains(prev, w[:, :n_ov], n_ov)
        correlations.append(r)
        out[:, start : start + n_ov] = prev * fade_out + w[:, :n_ov] * fade_in
        out[:, start + n_ov : start + WINDOW_SAMPLES] = w[:, n_ov:]
    return out[:, : plan.num_samples], correlations


@pytest.mark.parametrize("overlap_frames", [1, 64, 300, 480])
def test_stitch_of_an_iterator_into_a_disk_store_equals_the_list(overlap_frames):
    plan = plan_windows(int(13.3 * SR), overlap_frames)
    rng = np.random.default_rng(overlap_frames)
    # mono and stereo windows mixed (mono ones are repeated), some correlated joins
    pieces = [
        rng.standard_normal((1 if k % 3 == 1 else 2, WINDOW_SAMPLES)).astype(np.float32)
        for k in range(plan.count)
    ]
    ref, ref_corr = _stitch_reference(plan, pieces)
    listed, corr = stitch(plan, pieces)
    assert isinstance(listed, np.ndarray)
    assert listed.shape == (2, plan.num_samples)
    np.testing.assert_array_equal(listed, ref)
    assert corr == ref_corr
    streamed, corr2 = stitch(plan, iter(pieces), channels=2, store=DiskStore())
    assert isinstance(streamed, DiskArray) and streamed.shape == (2, plan.num_samples)
    np.testing.assert_array_equal(np.asarray(streamed), ref)
    assert corr2 == ref_corr
    # an iterator without channels is read into a list first: same result
    np.testing.assert_array_equal(stitch(plan, iter(pieces))[0], ref)


def test_stitch_holds_one_window_at_a_time():
    plan = plan_windows(int(20 * SR), 64)
    made = []

    def windows():
        for k in range(plan.count):
            made.append(k)
            # the previous window was written before this one was asked for
            yield np.full((2, WINDOW_SAMPLES), k + 1, dtype=np.float32)

    out, _ = stitch(plan, windows(), channels=2, store=DiskStore())
    assert made == list(range(plan.count))
    last = plan.start_samples[-1] + plan.overlap_samples
    if last < plan.num_samples:
        assert out[:, last : last + 1][0, 0] == plan.count


def test_stitch_refuses_a_wrong_window_count():
    plan = plan_windows(int(10 * SR), 64)
    pieces = [np.zeros((2, WINDOW_SAMPLES), np.float32)] * (plan.count - 1)
    with pytest.raises(ValueError):
        stitch(plan, iter(pieces), channels=2)


# ------------------------------------------------------------------ align


@pytest.mark.parametrize("channels", [1, 2])
def test_align_music_on_disk_arrays_equals_numpy(channels):
    music, noise = music_and_noise(47.0, channels)
    settings = AlignSettings(strength=0.7, max_db=9.0)
    ref, ref_summary = align_music(music, noise, settings)
    seen: list[float] = []
    out, summary = align_music(disk(music), disk(noise), settings, seen.append, store=DiskStore())
    assert isinstance(out, DiskArray) and out.shape == music.shape and out.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(out), ref)
    # On disk the gains are kept a band per scratch file and the summary's means are
    # summed a band at a time: the same numbers to float rounding.
    assert dataclasses.asdict(summary) == pytest.approx(
        dataclasses.asdict(ref_summary), rel=1e-12, abs=1e-15
    )
    assert summary.share_at_bound == ref_summary.share_at_bound  # a count: exact
    assert seen and seen[-1] == pytest.approx(1.0)


def test_band_rows_on_disk_hold_the_numpy_band_powers_and_gains():
    music, noise = music_and_noise(31.0, 1, seed=3)
    settings = AlignSettings(strength=0.8, max_db=10.0)
    mem_m, mem_n = band_powers(music[0]), band_powers(noise)
    disk_m = band_powers(disk(music[0]), store=DiskStore())
    disk_n = band_powers(disk(noise), store=DiskStore())
    assert isinstance(disk_m, BandRows) and disk_m.shape == mem_m.shape
    np.testing.assert_array_equal(disk_m[:, 0 : mem_m.shape[1]], mem_m)
    _band_gains_in_place(mem_m, mem_n, settings)
    _band_gains_in_place(disk_m, disk_n, settings)
    for i in range(mem_m.shape[0]):
        np.testing.assert_array_equal(disk_m[i], mem_m[i])
        np.testing.assert_array_equal(disk_n[i], mem_n[i])
    # No band row ever lives in memory as a whole matrix: each is its own scratch file.
    assert all(isinstance(row, DiskArray) for row in disk_m.rows)
    with pytest.raises(IndexError):
        disk_m[1:3]


def test_align_music_takes_views_and_float64_disk_music():
    music, noise = music_and_noise(9.0, 2, seed=4)
    settings = AlignSettings(strength=1.0, max_db=12.0)
    ref, _ = align_music(music, noise, settings)
    # noise as a zero-padded view of a shorter array padded out again: the same samples
    padded_noise = ZeroPadded(disk(noise), noise.size)
    out, _ = align_music(disk(music.astype(np.float64)), padded_noise, settings)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, ref)


def test_align_music_off_or_silent_returns_the_music():
    music, noise = music_and_noise(3.0)
    d = disk(music)
    out, summary = align_music(d, disk(noise), AlignSettings(0.0, 9.0), store=DiskStore())
    assert out is d and summary.mean_abs_gain_db == 0.0
    silent = disk(np.zeros_like(music))
    out, summary = align_music(silent, disk(noise), AlignSettings(0.5, 9.0))
    assert out is silent and summary.share_at_bound == 0.0
    out, _ = align_music(disk(music.astype(np.float64)), noise, AlignSettings(0.0, 9.0))
    np.testing.assert_array_equal(np.asarray(out), music)
    with pytest.raises(ParameterError, match="same length"):
        align_music(d, disk(noise[:-1]), AlignSettings(0.5, 9.0))


def test_band_powers_and_gains_on_views_equal_numpy():
    music, _ = music_and_noise(30.0, 2, seed=2)
    mono = music.mean(axis=0)
    np.testing.assert_array_equal(
        band_powers(ChannelMean(disk(music), keepdims=False)), band_powers(mono)
    )
    frames = band_powers(mono).shape[1]
    gains = np.random.default_rng(0).uniform(-6, 6, (band_powers(mono).shape[0], frames))
    ref = apply_band_gains(music, gains)
    out = apply_band_gains(disk(music), gains, store=DiskStore())
    np.testing.assert_array_equal(np.asarray(out), ref)


def _band_gains_reference(music_power, noise_power, settings):
    """band_gains_db as whole-matrix formulas (before it went one band at a time)."""
    from bnmusic_bridge import align as A

    music_db = A._db(A._smooth(music_power, A.SHAPE_SMOOTHING_S))
    noise_db = A._db(A._smooth(noise_power, A.SHAPE_SMOOTHING_S))
    noise_fast_db = A._db(A._smooth(noise_power, A.EVENT_SMOOTHING_S))
    distance = noise_db - music_db
    weight = np.maximum(A._smooth(noise_power, A.SHAPE_SMOOTHING_S), 0.0)
    level = (distance * weight).sum(axis=0) / np.maximum(weight.sum(axis=0), A.FLOOR_POWER)
    level = A._smooth(level, A.LEVEL_SPAN_S)
    shape_db = settings.strength * (distance - level[None, :])
    event_db = settings.strength * np.maximum(noise_fast_db - noise_db, 0.0)
    gain = np.clip(shape_db + event_db, -settings.max_db, settings.max_db)
    music_now_db = A._db(A._smooth(music_power, A.EVENT_SMOOTHING_S))
    quiet = music_now_db < music_now_db.max(axis=0, keepdims=True) - A.MUSIC_GATE_DB
    gain = np.where(quiet, np.minimum(gain, 0.0), gain)
    return gain, np.minimum(event_db, np.maximum(gain, 0.0))


def test_band_gains_one_band_at_a_time_are_bit_identical():
    from bnmusic_bridge.align import band_gains_db

    rng = np.random.default_rng(3)
    music_power = rng.random((55, 5_000)) ** 6
    music_power[10:20, 1_000:2_000] = 0.0  # silent bands: the gate and the floor
    noise_power = rng.random((55, 5_000)) ** 3
    for settings in (AlignSettings(0.5, 9.0), AlignSettings(1.0, 3.0)):
        ref_gain, ref_event = _band_gains_reference(music_power, noise_power, settings)
        mp, npw = music_power.copy(), noise_power.copy()
        gain, event = band_gains_db(mp, npw, settings)
        np.testing.assert_array_equal(gain, ref_gain)
        np.testing.assert_array_equal(event, ref_event)
        np.testing.assert_array_equal(mp, music_power)  # the public function copies


# ------------------------------------------------------------------ effects

STREAMING_CHAINS = [
    [{"type": "Reverb", "room_size": 0.6, "wet_level": 0.3}],
    [{"type": "Compressor", "threshold_db": -20.0, "ratio": 4.0}, {"type": "Gain", "gain_db": -3}],
    [{"type": "Delay", "delay_seconds": 0.25, "feedback": 0.4, "mix": 0.5}],
    [{"type": "Chorus"}, {"type": "Phaser"}, {"type": "LadderFilter", "mode": "LPF24"}],
    [{"type": "HighpassFilter", "cutoff_frequency_hz": 300.0}, {"type": "Limiter"}],
]


@pytest.mark.parametrize("block", [8192, 3 * 8192, fx.EFFECTS_BLOCK_SAMPLES])
@pytest.mark.parametrize("chain", STREAMING_CHAINS, ids=lambda c: "+".join(s["type"] for s in c))
def test_effects_on_a_disk_array_in_blocks_equal_one_call(chain, block, monkeypatch):
    monkeypatch.setattr(fx, "EFFECTS_BLOCK_SAMPLES", block)
    music, _ = music_and_noise(7.0, 2, seed=5)
    ref = fx.apply_effects(music, SR, chain)
    out = fx.apply_effects(disk(music), SR, chain, store=DiskStore())
    assert isinstance(out, DiskArray) and out.shape == music.shape
    np.testing.assert_array_equal(np.asarray(out), ref)


def test_effects_mono_empty_and_buffering_chains_on_disk_arrays(monkeypatch):
    monkeypatch.setattr(fx, "EFFECTS_BLOCK_SAMPLES", 8192)
    music, _ = music_and_noise(2.0, 2, seed=6)
    mono = music[0].copy()
    chain = [{"type": "Reverb"}]
    out = fx.apply_effects(disk(mono), SR, chain)
    assert out.shape == mono.shape
    np.testing.assert_array_equal(out, fx.apply_effects(mono, SR, chain))
    # the empty chain: a copy
    out = fx.apply_effects(disk(music), SR, [], store=DiskStore())
    np.testing.assert_array_equal(np.asarray(out), music)
    # effects that do not stream sample-exactly run in one call: still the same output
    for chain in ([{"type": "Resample", "target_sample_rate": 8000.0}], [{"type": "PitchShift"}]):
        assert {chain[0]["type"]} <= fx.STREAMING_UNSAFE
        out = fx.apply_effects(disk(music), SR, chain, store=DiskStore())
        np.testing.assert_array_equal(np.asarray(out), fx.apply_effects(music, SR, chain))
    with pytest.raises(ParameterError, match="pedalboard's layout"):
        fx.apply_effects(disk(np.zeros((3, 2), np.float32)), SR, chain)


def test_effects_nan_in_a_block_is_refused():
    music, _ = music_and_noise(1.0, 2)
    music[:, 30_000] = np.nan
    with pytest.raises(ParameterError, match="NaN or infinite"):
        fx.apply_effects(disk(music), SR, [{"type": "Gain", "gain_db": 1.0}])


# ------------------------------------------------------------------ widen


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("block", [10_000, 65_536])
def test_widen_in_blocks_matches_numpy_to_rounding(channels, block, monkeypatch):
    monkeypatch.setattr(stereo, "WIDEN_BLOCK_SAMPLES", block)
    music, _ = music_and_noise(5.0, channels, seed=7)
    if channels == 2:
        music[1] = 0.95 * music[0] + 0.05 * music[1]  # narrow: widening is needed
    ref = stereo.widen(music, SR, seed=3)
    out = stereo.widen(disk(music), SR, seed=3, store=DiskStore())
    assert isinstance(out, DiskArray) and out.shape == (2, music.shape[1])
    got = np.asarray(out)
    # float rounding only (blockwise sums and FFT convolution); measured <= 2e-11 here
    assert np.max(np.abs(got - ref)) < 1e-6
    # the mono sum is still the music's
    np.testing.assert_allclose(got.mean(axis=0), music.mean(axis=0), atol=1e-6)
    corr, s2m = stereo.width_metrics(got)
    assert s2m == pytest.approx(stereo.width_metrics(ref)[1], abs=1e-4)
    assert math.isfinite(corr)


def test_widen_short_or_wide_block_arrays_are_exact(monkeypatch):
    music, _ = music_and_noise(2.0, 2, seed=8)
    # shorter than a block: read whole, the numpy path
    np.testing.assert_array_equal(
        np.asarray(stereo.widen(disk(music), SR, store=DiskStore())), stereo.widen(music, SR)
    )
    monkeypatch.setattr(stereo, "WIDEN_BLOCK_SAMPLES", 10_000)
    # already wide (unrelated channels): returned as it is, block by block
    wide = np.random.default_rng(1).standard_normal((2, 50_000)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(stereo.widen(disk(wide), SR)), wide)
    silent = np.zeros((1, 50_000), np.float32)
    np.testing.assert_array_equal(np.asarray(stereo.widen(disk(silent), SR)), np.zeros((2, 50_000)))
    out = stereo.widen(disk(music[0].copy()), SR, store=MemoryStore())  # 1-D music
    assert isinstance(out, np.ndarray) and out.shape == (2, music.shape[1])
    assert np.max(np.abs(out - stereo.widen(music[0], SR))) < 1e-6


# ------------------------------------------------------------------ streaming generation


class _LazyWindows:
    """A Sequence that builds windows on demand and counts how often it is walked."""

    def __init__(self, windows):
        self._windows = windows
        self.built = 0
        self.iterations = 0

    def __len__(self):
        return len(self._windows)

    def __getitem__(self, k):
        self.built += 1
        return self._windows[k]

    def __iter__(self):
        self.iterations += 1
        for k in range(len(self)):
            yield self[k]


@pytest.fixture(scope="module")
def noise_and_analysis():
    noise = band_bursts(14.0, 0.5, 0.13, (150.0, 2_500.0))
    return noise, analyse(noise)


def _without_timing(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "render_s"}


def test_procedural_stream_equals_generate(noise_and_analysis):
    noise, a = noise_and_analysis
    windows = windows_for(noise)
    gen = ProceduralGenerator()
    assert isinstance(gen, StreamingGenerator)
    settings = settings_of(prompt="jazz", seed=5)
    seen_generate: list = []
    listed = gen.generate(windows, a, settings, lambda s, f: seen_generate.append((s, f)))
    lazy = _LazyWindows(windows)
    seen_stream: list = []
    stream = gen.stream(lazy, a, settings, lambda s, f: seen_stream.append((s, f)))
    streamed = []
    for k, m in enumerate(stream):
        # one window made per window handed over
        assert lazy.built == k + 1 and len(seen_stream) == k + 1
        streamed.append(m)
    assert lazy.iterations == 1 and lazy.built == len(windows)
    assert seen_stream == seen_generate
    assert len(streamed) == len(listed)
    for s, g in zip(streamed, listed, strict=True):
        np.testing.assert_array_equal(s.audio, g.audio)
        assert s.image is None and g.image is None
        assert _without_timing(s.diagnostics) == _without_timing(g.diagnostics)
    via_helper = list(iter_music(gen, windows, a, settings))
    np.testing.assert_array_equal(via_helper[-1].audio, listed[-1].audio)


def test_iter_music_falls_back_to_generate(noise_and_analysis):
    _, a = noise_and_analysis

    class Plain:
        name = "plain"
        calls = 0

        def generate(self, windows, analysis, settings, progress=None):
            Plain.calls += 1
            return ["w"] * len(windows)

    assert list(iter_music(Plain(), [1, 2], a, settings_of())) == ["w", "w"]
    assert Plain.calls == 1


def test_stream_checks_each_window_as_it_comes(noise_and_analysis):
    noise, a = noise_and_analysis
    windows = windows_for(noise)
    import dataclasses

    bad = list(windows)
    bad[2] = dataclasses.replace(bad[2], start_sample=-1)
    stream = ProceduralGenerator().stream(bad, a, settings_of())
    assert next(stream).audio is not None
    assert next(stream).audio is not None
    with pytest.raises(ParameterError, match="window 2 has start_sample=-1"):
        next(stream)
    with pytest.raises(ParameterError, match="window 2 has start_sample=-1"):
        ProceduralGenerator().generate(bad, a, settings_of())
