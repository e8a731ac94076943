"""The live engine without a sound server: rings, the offline check against a render,
the lane's reaction to a level step, the held texture when the worker stalls, joins.

The worker is stepped by hand after every block here (``run_offline``), so these runs
are deterministic and independent of the machine's load; tests/test_live_jack.py runs
the engine in real time on a JACK dummy server.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bnmusic_bridge.errors import ParameterError
from bnmusic_bridge.grid import HOP_SAMPLES
from bnmusic_bridge.live import LiveEngine, LiveSettings, SampleRing, lane_latency_s, run_offline
from bnmusic_bridge.live.engine import TEMPO_TOLERANCE, XFADE_SAMPLES
from bnmusic_bridge.request import RenderRequest
from tests.noise_signals import clacks

SR = 44_100
TRAIN = Path(__file__).resolve().parents[1] / "examples" / "noise" / "train.wav"


def _join_stats(x: np.ndarray, block: int, start: int) -> tuple[float, float]:
    """Mean |first difference| across block joins and elsewhere, from ``start`` on."""
    d = np.abs(np.diff(x.astype(np.float64)))
    joins = np.arange(block - 1, d.size, block)
    joins = joins[joins >= start]
    inside = np.ones(d.size, dtype=bool)
    inside[joins] = False
    inside[:start] = False
    return float(d[joins].mean()), float(d[inside].mean())


def _step_noise(seconds: float, step_s: float) -> np.ndarray:
    """Clacks whose level rises by 10 dB at ``step_s``."""
    x = clacks(seconds, SR, period_s=0.5, seed=3) * 0.2
    x[int(step_s * SR) :] *= np.float32(10.0 ** (10.0 / 20.0))
    return x


def test_ring_wraps_and_reports_what_is_valid() -> None:
    ring = SampleRing(2, 10)
    ring.write_from(np.arange(14, dtype=np.float32).reshape(2, 7))
    ring.read_pos = 7
    ring.write_from(np.arange(100, 106, dtype=np.float32).reshape(2, 3))
    out = np.zeros((2, 6), dtype=np.float32)
    assert ring.read_into(out, 5, 6) == 5  # 5..9 written, 10 not yet
    assert out[0].tolist() == [5, 6, 100, 101, 102, 0]
    ring.write_at(20, np.ones((2, 2), dtype=np.float32))  # a gap: 10..19 invalid
    assert ring.read_into(out, 8, 2) == 0
    assert ring.read_into(out, 20, 4) == 2


def test_settings_refuse_other_rates_and_block_sizes() -> None:
    with pytest.raises(ParameterError, match="sample_rate_hz"):
        LiveSettings(sample_rate_hz=4_000)
    with pytest.raises(ParameterError, match="max_block"):
        LiveSettings(max_block=8192)
    with pytest.raises(ParameterError, match="procedural"):
        LiveEngine(RenderRequest(generator="riffusion"))


@pytest.fixture(scope="module")
def train_runs() -> tuple[np.ndarray, object, object]:
    if not TRAIN.is_file():
        pytest.skip(f"{TRAIN} not present")
    from bnmusic_bridge import audio as audio_io
    from bnmusic_bridge.pipeline import render

    stem = audio_io.read_stem(TRAIN)
    noise = np.tile(stem.audio.mean(axis=0), 4)  # 28 s: the live engine needs history
    live = run_offline(noise, SR, block=512)
    offline = render(noise[None, :], SR)
    return noise, live, offline


def test_offline_check_tempo_key_and_lane_close_to_a_render(train_runs) -> None:  # type: ignore[no-untyped-def]
    """The live engine fed the recording block by block against a render of it.

    Stated closeness (docs/live.md): the same key and style, the tempo within the
    hysteresis' 4 %, and the lane's median distance to the render's lambda lane under
    1.5 dB once the music plays (4 s warm-up plus one lane window). Not identical: the
    live analysis sees a 12 s history (the render the whole stem), the lane is causal
    (the render's is zero-phase and sees the future), and live has no alignment step.
    """
    _, live, offline = train_runs
    diag = offline.generator_diagnostics[0]
    assert live.stats.key == diag["key"]
    assert live.stats.style == diag["style"]
    assert abs(math.log(live.stats.tempo_bpm / diag["tempo_bpm"])) <= math.log1p(TEMPO_TOLERANCE)
    start_s = live.stats.music_start_s + 2.56
    t = live.lane_times_s
    keep = t >= start_s
    ref = np.interp(t[keep], offline.lane_times_s, offline.lane_gain_db)
    median_db = float(np.median(np.abs(live.lane_db[keep] - ref)))
    assert keep.sum() > 1500  # at least 15 s of lane compared
    assert median_db < 1.5, median_db
    assert live.stats.underruns == 0 and live.stats.late_blocks == 0


def test_offline_music_plays_with_smooth_joins(train_runs) -> None:  # type: ignore[no-untyped-def]
    noise, live, _ = train_runs
    assert live.music.shape == (2, noise.size // 512 * 512)
    start = int((live.stats.music_start_s + 0.5) * SR)
    music = live.music[0, start:]
    assert np.sqrt(np.mean(music**2)) > 1e-3  # music, not silence
    at_joins, elsewhere = _join_stats(live.music[0], 512, start)
    assert at_joins < 1.3 * elsewhere, (at_joins, elsewhere)


@pytest.mark.parametrize("block", [64, 4096])
def test_smallest_and_largest_blocks_play_smoothly(block: int) -> None:
    noise = clacks(10.0, SR, seed=1)
    rec = run_offline(noise, SR, block=block)
    assert rec.music.shape == (2, noise.size // block * block)
    assert rec.stats.underruns == 0 and rec.stats.lane_late_blocks == 0
    # the plan is the noise's (0.5 s clacks: 120 BPM or an octave of it)
    assert rec.stats.tempo_bpm is not None
    octave = math.log2(rec.stats.tempo_bpm / 120.0)
    assert abs(octave - round(octave)) < 0.05
    start = int((rec.stats.music_start_s + 0.5) * SR)
    assert np.sqrt(np.mean(rec.music[0, start:] ** 2)) > 1e-3
    at_joins, elsewhere = _join_stats(rec.music[0], block, start)
    assert at_joins < 1.3 * elsewhere + 1e-6, (at_joins, elsewhere)
    # the lane: one value per 10 ms frame, no frame missing, all finite
    frames = np.round(rec.lane_times_s * SR / HOP_SAMPLES)
    assert np.all(np.diff(frames) == 1) and rec.lane_db.size > 400
    assert np.all(np.isfinite(rec.lane_db))


def test_lane_reacts_to_a_10_db_step_within_the_stated_latency() -> None:
    step_s = 16.0
    rec = run_offline(_step_noise(24.0, step_s), SR, block=256)
    latency = lane_latency_s(RenderRequest(), LiveSettings())
    before = float(
        np.median(rec.gain_db[(rec.lane_times_s > step_s - 4) & (rec.lane_times_s < step_s)])
    )
    after = rec.gain_db[rec.lane_times_s >= step_s]
    moved = np.nonzero(after >= before + 5.0)[0]
    assert moved.size, "the lane never rose by half of the step"
    reaction = float(rec.lane_times_s[rec.lane_times_s >= step_s][moved[0]] - step_s)
    assert reaction <= latency, (reaction, latency)
    # and it is a reaction, not noise: 8 s after the step it has taken most of it
    late = float(np.median(rec.gain_db[rec.lane_times_s > step_s + 6]))
    assert late - before > 7.0


def test_a_stalled_worker_crossfades_to_the_texture_and_back() -> None:
    noise = clacks(20.0, SR, seed=2)
    block = 256
    engine = LiveEngine(RenderRequest(), LiveSettings(record=True))
    engine.start(threaded=False)
    out = np.zeros((2, block), dtype=np.float32)
    stall = (int(9.0 * SR) // block, int(14.0 * SR) // block)  # 5 s without the worker
    for k, p in enumerate(range(0, noise.size - block + 1, block)):
        engine.process(noise[p : p + block], out)
        if not stall[0] <= k < stall[1]:
            while engine.step():
                pass
    engine.stop()
    rec = engine.recording()
    st = rec.stats
    assert st.underruns == 1
    assert 0 < st.underrun_frames < 5 * SR
    x = rec.music[0].astype(np.float64)
    # the texture keeps sounding while the worker is away
    held = x[int(11.0 * SR) : int(13.0 * SR)]
    playing = x[int(6.0 * SR) : int(8.0 * SR)]
    assert np.sqrt(np.mean(held**2)) > 0.2 * np.sqrt(np.mean(playing**2))
    # the music comes back after the stall
    back = x[int(17.0 * SR) : int(19.0 * SR)]
    assert np.sqrt(np.mean(back**2)) > 0.2 * np.sqrt(np.mean(playing**2))
    # no click where it left the music (the fade had music to fade out)
    leave = int(np.argmax(np.arange(x.size) >= stall[0] * block))
    d = np.abs(np.diff(x))
    around = d[leave - 2 * XFADE_SAMPLES : leave + 3 * XFADE_SAMPLES]
    assert around.max() < 4.0 * np.percentile(d[int(5 * SR) : int(9 * SR)], 99.9)


def test_the_device_callback_maps_interleaved_buffers() -> None:
    from types import SimpleNamespace

    from bnmusic_bridge.live.io import StreamInfo, device_callback

    engine = LiveEngine(
        RenderRequest(), LiveSettings(input_channels=2, output_channels=3, monitor=True)
    )
    info = StreamInfo(backend="device", sample_rate_hz=SR, block=128)
    indata = np.zeros((128, 2), dtype=np.float32)
    indata[:, 0], indata[:, 1] = 0.2, 0.4  # interleaved: frames x channels
    outdata = np.full((128, 3), 9.0, dtype=np.float32)
    ok = SimpleNamespace(input_overflow=False, output_underflow=False)
    device_callback(engine, info, indata, outdata, ok)
    # before the music starts: silence plus the monitor (the inputs' mono mix, 0.3)
    assert np.allclose(outdata, 0.3)
    assert engine.noise_ring.write_pos == 128
    assert np.allclose(engine.noise_ring.buffer[0, :128], 0.3)
    device_callback(
        engine, info, indata, outdata, SimpleNamespace(input_overflow=True, output_underflow=False)
    )
    assert info.xruns == 1 and engine.pos == 256


def test_a_48_khz_stream_is_resampled_in_the_worker() -> None:
    import soxr

    noise44 = clacks(12.0, SR, seed=1)
    noise48 = soxr.resample(noise44, SR, 48_000).astype(np.float32)
    rec = run_offline(noise48, 48_000, block=480)
    ref = run_offline(noise44, SR, block=441)
    assert rec.sample_rate_hz == 48_000
    assert rec.music.shape[1] == noise48.size // 480 * 480
    assert rec.stats.underruns == 0 and rec.stats.lane_late_blocks == 0
    # the same noise gives the same plan at either rate
    assert rec.stats.key == ref.stats.key
    assert abs(math.log(rec.stats.tempo_bpm / ref.stats.tempo_bpm)) < 0.01
    start = int((rec.stats.music_start_s + 0.5) * 48_000)
    assert np.sqrt(np.mean(rec.music[0, start:] ** 2)) > 1e-3
    at_joins, elsewhere = _join_stats(rec.music[0], 480, start)
    assert at_joins < 1.3 * elsewhere, (at_joins, elsewhere)
    # the lane lies on the same 10 ms grid and follows the same noise
    assert np.allclose(np.diff(rec.lane_times_s), 0.01)
    common, i, j = np.intersect1d(
        np.round(rec.lane_times_s, 2), np.round(ref.lane_times_s, 2), return_indices=True
    )
    assert common.size > 500
    assert float(np.median(np.abs(rec.lane_db[i] - ref.lane_db[j]))) < 1.0


def test_live_command_refuses_bad_flags_before_opening_audio(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from bnmusic_bridge.frontends.cli import main

    (tmp_path / "music.wav").write_bytes(b"keep me")
    assert main(["live", "--record", str(tmp_path), "--duration", "1"]) == 1
    assert "music.wav exist already" in capsys.readouterr().err
    assert (tmp_path / "music.wav").read_bytes() == b"keep me"
    assert main(["live", "--osc", "nowhere", "--duration", "1"]) == 1
    assert "HOST:PORT" in capsys.readouterr().err
    assert main(["live", "--generator", "riffusion", "--duration", "1"]) == 1
    assert "procedural" in capsys.readouterr().err


def test_a_timeline_can_start_at_a_later_chunk() -> None:
    from bnmusic_bridge.analysis import analyse_stem
    from bnmusic_bridge.generators.base import GenerationSettings
    from bnmusic_bridge.generators.procedural import (
        CHUNK_SAMPLES,
        TimelineRenderer,
        make_plan,
        parse_options,
    )
    from bnmusic_bridge.mask import high_energy_mask
    from bnmusic_bridge.spectrogram import audio_to_mel

    x = clacks(6.0, SR, seed=8).astype(np.float64)
    mel = audio_to_mel(x)
    plan = make_plan(
        analyse_stem(x, mel, high_energy_mask(mel, 0.15)),
        GenerationSettings.from_request(RenderRequest()),
        parse_options({}),
    )
    later = TimelineRenderer(plan, first_chunk=3)
    audio = later.render(3 * CHUNK_SAMPLES + 100, 1000)
    assert audio.shape == (2, 1000) and np.any(audio)
    whole = TimelineRenderer(plan).render(3 * CHUNK_SAMPLES + 100, 1000)
    # the same notes (only the reverb starts empty): close, not identical
    assert np.corrcoef(audio[0], whole[0])[0, 1] > 0.5
    with pytest.raises(ParameterError, match="first chunk"):
        later.render(2 * CHUNK_SAMPLES, 10)
