"""Blend controls: objectives, loudness ceiling, peak limit, shortfall report, no zipper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
from noise_signals import clacks

from bnmusic_bridge import RenderRequest, render
from bnmusic_bridge import amplify as am
from bnmusic_bridge import blend as bl
from bnmusic_bridge.loudness import integrated_lufs
from bnmusic_bridge.mask import high_energy_mask
from bnmusic_bridge.masking import masking_field
from bnmusic_bridge.request import field_default
from bnmusic_bridge.spectrogram import audio_to_mel

SR = 44_100
QUIET = 0.05  # clacks peak at -6 dBFS; x 0.05 leaves the music room under the peak limit
SHORTFALL_KEYS = {
    "window", "start_s", "end_s", "target", "reached", "needed_gain_db", "capped_gain_db",
    "lane_gain_db", "limited_by",
}  # fmt: skip


def _shortfalls(res) -> list[dict]:
    """The result's shortfalls as the report writes them."""
    return [s.to_dict() for s in res.details.shortfalls]


def _lu(music: np.ndarray, noise: np.ndarray, rate: int = SR) -> float:
    return integrated_lufs(music, rate) - integrated_lufs(noise, rate)


def _window_coverages(res) -> list[float]:
    """Coverage per lane window recomputed from the result's own arrays."""
    req = res.request
    field = masking_field(
        req.threshold_model, res.analysis.noise_mel, res.analysis.music_mel, smr_db=req.smr_db
    )
    mask = res.analysis.mask
    masked = field.masked(10 ** (res.lane_gain_db / 20)) & mask
    bounds = am.window_bounds(
        mask.shape[1], round(req.lane_window_s * 100), round(req.lane_hop_s * 100)
    )
    return [masked[:, a:b].sum() / max(mask[:, a:b].sum(), 1) for a, b in bounds]


@pytest.mark.parametrize("model", ["smr", "spreading"])
@pytest.mark.parametrize("objective", ["paper", "coverage"])
def test_each_objective_on_synthetic_noise(objective, model):
    noise = clacks(3.0, seed=1) * QUIET
    req = RenderRequest(
        seed=1, objective=objective, threshold_model=model, target_coverage=0.5,
        max_loudness_lu=None, max_gain_db=30.0,
    )  # fmt: skip
    res = render(noise, SR, req)
    assert res.details.blend.objective == objective
    assert res.details.blend.threshold_model == model
    assert np.all(np.isfinite(res.lane_gain_db)) and 0.0 <= res.coverage <= 1.0
    # nothing clipped or limited: the gained stem is the unity stem times the lane
    loud = np.abs(res.music[0]) > 1e-4
    ratio_db = 20 * np.log10(np.abs(res.music_gained[0][loud]) / np.abs(res.music[0][loud]))
    lane_db = np.interp(np.arange(noise.size) / SR, res.lane_times_s, res.lane_gain_db)
    np.testing.assert_allclose(ratio_db, lane_db[loud], atol=1e-3)
    for entry in _shortfalls(res):
        assert set(entry) == SHORTFALL_KEYS
    if objective == "coverage":
        covs = _window_coverages(res)
        short = {s["window"] for s in _shortfalls(res)}
        # every window reaches the target unless the report names it
        assert all(c >= 0.5 - 0.005 for i, c in enumerate(covs) if i not in short)
        if model == "spreading":
            assert short == set() and res.coverage >= 0.49
    else:
        # the paper's target is the coverage of its own optimum: never reported as short
        # when no cap stops it
        assert all(s["limited_by"] != "smoothing" for s in _shortfalls(res))


@pytest.mark.parametrize(("rate", "channels", "ceiling_lu"), [(SR, 1, 0.0), (48_000, 2, 3.0)])
def test_loudness_ceiling_holds_on_the_rendered_stem(rate, channels, ceiling_lu):
    mono = clacks(3.0, rate, seed=2) * QUIET
    noise = np.stack([mono * (1.0 - 0.3 * c) for c in range(channels)])
    req = RenderRequest(
        seed=2, objective="coverage", threshold_model="spreading", target_coverage=0.95,
        max_loudness_lu=ceiling_lu,
    )  # fmt: skip
    res = render(noise, rate, req)
    rel = _lu(res.music_gained, noise, rate)
    assert rel <= ceiling_lu + 0.5
    assert rel >= ceiling_lu - 3.0  # the ceiling is what binds: the music goes near it
    assert res.details.blend.rendered.music_minus_noise_lu == pytest.approx(rel, abs=1e-3)
    short = _shortfalls(res)
    assert short and all(s["limited_by"] == "loudness ceiling" for s in short)
    for s in short:
        assert set(s) == SHORTFALL_KEYS
        assert s["reached"] < s["target"] == 0.95
        assert s["capped_gain_db"] < s["needed_gain_db"]
        assert 0.0 <= s["start_s"] < s["end_s"] <= 3.0 + 0.011  # frame-aligned end
    assert any("loudness ceiling (max_loudness_lu=" in w for w in res.warnings)


def test_coverage_objective_reaches_target_where_the_ceiling_allows():
    noise = clacks(3.0, seed=3) * QUIET
    base = RenderRequest(
        seed=3, objective="coverage", threshold_model="spreading", target_coverage=0.6
    )
    free = render(noise, SR, base.replace(max_loudness_lu=30.0))
    assert free.details.shortfalls == ()
    assert min(_window_coverages(free)) >= 0.6 - 0.005
    # the lane is the lowest that does it: 1.5 dB less loses the target somewhere
    req = free.request
    field = masking_field("spreading", free.analysis.noise_mel, free.analysis.music_mel)
    mask = free.analysis.mask
    lower = field.masked(10 ** ((free.lane_gain_db - 1.5) / 20)) & mask
    bounds = am.window_bounds(
        mask.shape[1], round(req.lane_window_s * 100), round(req.lane_hop_s * 100)
    )
    assert min(lower[:, a:b].sum() / mask[:, a:b].sum() for a, b in bounds) < 0.6
    # a ceiling under what it needed: short windows, reported, and never over the ceiling
    needed_lu = _lu(free.music_gained, noise)
    capped = render(noise, SR, base.replace(max_loudness_lu=round(needed_lu - 6.0)))
    assert capped.coverage < free.coverage
    assert capped.details.shortfalls
    assert _lu(capped.music_gained, noise) <= round(needed_lu - 6.0) + 0.5


def test_peaks_are_limited_by_the_lane_never_clipped():
    noise = clacks(3.0, seed=4) * 1.9  # peaks near 0 dBFS: a loud recording
    req = RenderRequest(seed=4, objective="paper", threshold_model="smr", peak_mode="lane")
    res = render(noise, SR, req)
    peak_dbfs = 20 * np.log10(np.abs(res.music_gained).max())
    assert peak_dbfs <= bl.PEAK_CEILING_DBFS + 0.05
    assert res.details.blend.rendered.peak_dbfs == pytest.approx(peak_dbfs, abs=1e-3)
    short = _shortfalls(res)
    assert short and {s["limited_by"] for s in short} == {"peak limit"}
    text = " ".join(res.warnings)
    assert "peak limit" in text and "render the noise stem quieter" in text
    # the waveform is the unity music times a smooth gain: no clipping, no limiter
    loud = np.abs(res.music[0]) > 1e-3
    ratio = res.music_gained[0][loud] / res.music[0][loud]
    assert np.all(ratio > 0) and np.abs(np.diff(20 * np.log10(ratio))).max() < 0.05


def test_no_zipper_noise_on_the_rendered_audio():
    """A 1 kHz sine under a lane that swings by tens of dB: no sample-to-sample gain
    steps beyond the slew limit and no modulation sidebands; the same lane held per
    10 ms frame (a zipper) fails both."""
    noise = np.concatenate([clacks(2.0, seed=5) * QUIET, clacks(2.0, seed=6)])
    req = RenderRequest(
        seed=5, objective="coverage", threshold_model="spreading", target_coverage=0.9,
        smoothing_s=0.5, max_slew_db_per_s=12.0, peak_mode="lane",
    )  # fmt: skip
    res = render(noise, SR, req)
    assert np.ptp(res.lane_gain_db) > 10.0  # the lane really moves (the peak limit)
    lane = am.LambdaLane(
        frame_times_s=res.lane_times_s, frame_gain_db=res.lane_gain_db,
        window_times_s=res.window_times_s, window_gain_db=res.window_gain_db,
        window_clamped=np.zeros(res.window_times_s.size, bool), min_gain_db=-30.0,
        max_gain_db=24.0, warnings=(), objective="coverage",
    )  # fmt: skip
    n = noise.size
    sine = np.sin(2 * np.pi * 1000.0 * np.arange(n) / SR).astype(np.float32)[None, :]
    out = am.apply_lane(sine, SR, lane)[0].astype(np.float64)
    gain = am.lane_gain_at(lane, n, SR).astype(np.float64)
    steps_db = np.abs(np.diff(20 * np.log10(gain)))
    assert steps_db.max() <= 12.0 / SR * 1.01 + 1e-6
    zipper = sine[0] * np.repeat(10 ** (res.lane_gain_db / 20), 441)[:n]

    def sideband_db(x: np.ndarray) -> float:
        spec = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
        freqs = np.fft.rfftfreq(x.size, 1 / SR)
        return float(10 * np.log10(spec[np.abs(freqs - 1000.0) > 50.0].sum() / spec.sum()))

    assert sideband_db(out) < -70.0
    assert sideband_db(zipper) > sideband_db(out) + 15.0
    # the pipeline's own gained stem carries the same smooth gain
    loud = np.abs(res.music[0]) > 1e-3
    applied = 20 * np.log10(res.music_gained[0][loud] / res.music[0][loud])
    expected = 20 * np.log10(gain[loud])
    np.testing.assert_allclose(applied, expected, atol=1e-3)


def test_finish_blend_trims_the_rendered_stem_to_the_ceiling():
    noise = clacks(3.0, seed=7)[None, :] * QUIET
    res = render(noise, SR, RenderRequest(seed=7))
    settings = bl.BlendSettings.from_request(
        RenderRequest(objective="coverage", target_coverage=0.95, max_loudness_lu=0.0),
        peak_ceiling_dbfs=20.0,
    )
    music = res.music
    plan = bl.plan_blend(
        res.analysis.noise_mel, res.analysis.music_mel, res.analysis.mask, music,
        integrated_lufs(noise, SR), settings,
    )  # fmt: skip
    # the rendered music comes out 6 dB hotter than planned (a stand-in for any drift)
    gained, done = bl.finish_blend(plan, music * 2.0, SR)
    assert _lu(gained, noise) == pytest.approx(0.0, abs=0.05)
    assert done.trim_db == pytest.approx(-6.0, abs=1.0)
    assert any("trimmed" in w for w in done.warnings)
    np.testing.assert_allclose(done.lane.frame_gain_db, plan.lane.frame_gain_db + done.trim_db)
    assert done.coverage <= plan.coverage


def test_peak_caps_keep_any_lane_under_the_ceiling():
    rng = np.random.default_rng(8)
    n = 3 * SR
    music = (
        rng.standard_normal((2, n)) * np.exp(rng.standard_normal(n) * 2)[None, :] * 0.05
    ).astype(np.float32)
    frames = n // 441 + 1
    caps = bl.peak_caps_db(music, frames, -1.0)
    lane_db = am.slew_envelope_db(np.minimum(caps, 40.0), 0.12, upper=False)
    lane = am.LambdaLane(
        frame_times_s=np.arange(frames) * 0.01, frame_gain_db=lane_db,
        window_times_s=np.array([1.5]), window_gain_db=np.array([0.0]),
        window_clamped=np.array([False]), min_gain_db=-30.0, max_gain_db=40.0, warnings=(),
        objective="coverage",
    )  # fmt: skip
    peak = np.abs(am.apply_lane(music, SR, lane)).max()
    assert 20 * np.log10(peak) <= -1.0 + 1e-4
    assert 20 * np.log10(peak) > -2.0  # and the caps are tight, not wasteful


def test_loudness_caps_per_window():
    n = 5 * SR
    t = np.arange(n) / SR
    music = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
    music[:, 3 * SR :] *= 0.1  # 20 dB quieter from 3 s
    bounds = am.window_bounds(n // 441 + 1, 100, 100)
    caps = bl.loudness_caps_db(music, -30.0, 6.0, bounds, n // 441 + 1)
    level = integrated_lufs(music[:, :44100], SR)
    assert caps[50] == pytest.approx(-30.0 + 6.0 - level, abs=1e-6)
    assert caps[450] - caps[50] == pytest.approx(20.0, abs=0.1)
    assert np.all(np.isinf(bl.loudness_caps_db(music, -30.0, None, bounds, n // 441 + 1)))


def test_settings_follow_the_request():
    req = RenderRequest(
        objective="paper", target_coverage=0.7, max_loudness_lu=4.0, max_slew_db_per_s=3.0
    )
    s = bl.BlendSettings.from_request(req)
    lane = s.lane
    assert (lane.objective, lane.target_coverage, s.max_loudness_lu, lane.max_slew_db_per_s) == (
        "paper", 0.7, 4.0, 3.0,
    )  # fmt: skip
    assert lane.window_frames == round(req.lane_window_s * 100)


# --- the shared real recordings -------------------------------------------------------


def _real_pair(shared_data, noise_name: str, seconds: float = 2.56):
    noise, rate = sf.read(shared_data / "noise" / noise_name, dtype="float32", always_2d=True)
    music, _ = sf.read(shared_data / "music" / "xmoto_foxrun.wav", dtype="float32", always_2d=True)
    n = int(seconds * rate)
    noise, music = noise[:n].mean(axis=1), music[:n].mean(axis=1)
    music = music * np.float32(
        10 ** ((integrated_lufs(noise, rate) - integrated_lufs(music, rate)) / 20)
    )
    noise_mel, music_mel = audio_to_mel(noise), audio_to_mel(music)
    return noise_mel, music_mel, high_energy_mask(noise_mel, field_default("mask_area"))


@pytest.mark.parametrize("objective", ["paper", "coverage"])
def test_each_objective_on_a_real_recording(shared_data, objective):
    noise, rate = sf.read(
        shared_data / "noise" / "esc10_helicopter_2-188822-D.wav", dtype="float32"
    )
    noise = noise[: 3 * rate] * np.float32(0.1)  # -20 dB: room under the peak limit
    for model in ("smr", "spreading"):
        req = RenderRequest(
            seed=0, objective=objective, threshold_model=model, target_coverage=0.5,
            max_loudness_lu=6.0,
        )  # fmt: skip
        res = render(noise, rate, req)
        rel = _lu(res.music_gained, noise[None, :], rate)
        assert rel <= 6.0 + 0.5
        assert 20 * np.log10(np.abs(res.music_gained).max()) <= bl.PEAK_CEILING_DBFS + 0.05
        if objective == "coverage" and model == "spreading":
            # helicopter: +6 LU is not enough for half the mask; the report says where
            assert res.coverage > 0.2
            assert all(s["limited_by"] == "loudness ceiling" for s in _shortfalls(res))
        if model == "smr":
            assert res.coverage < 0.05  # 21 dB over the noise in every bin: out of reach


def test_spreading_needs_less_gain_than_smr_on_the_recordings(shared_data):
    """Measured: for 50 % coverage of the loudest 15 % of bins, with a real music excerpt
    loudness-matched to each noise, the spreading model needs 10 to 40 dB less gain than
    the smr model on every one of the ten recordings (see docs/blend.md)."""
    savings = []
    for path in sorted((shared_data / "noise").glob("*.wav")):
        noise_mel, music_mel, mask = _real_pair(shared_data, path.name)
        gains = {
            m: am.solve_gain_for_coverage(
                masking_field(m, noise_mel, music_mel, smr_db=field_default("smr_db")), mask, 0.5
            )
            for m in ("smr", "spreading")
        }
        assert gains["spreading"] < gains["smr"], path.name
        savings.append(20 * math.log10(gains["smr"] / gains["spreading"]))
    assert len(savings) == 10
    assert float(np.median(savings)) > 15.0
