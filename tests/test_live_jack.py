"""``bnmusic live`` on a real JACK server (jackd2's dummy driver), in real time.

One 60 s session (the dummy driver runs in real time; the tests share it), ended by
SIGINT as Ctrl-C would: a
noise player client (clacks, 10 dB louder from 40 s of its own time on), the engine as
``python -m bnmusic_bridge live`` in its own process (its ports connected to the player
and to a recorder client), and the recorder keeping the output with each cycle's JACK
frame time. Skipped where jackd or the ``jack`` module (JACK-Client) is missing.

Attribution under load (this machine is shared): the server's xruns are reported but
not asserted; what the project causes is asserted: callbacks that took more CPU time
than their period (``late_blocks``), music underruns and lost noise. Joins are judged
where the recorder's cycles are contiguous (an xrun skips a cycle for every client).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bnmusic_bridge.live import LiveSettings, lane_latency_s
from bnmusic_bridge.request import RenderRequest
from tests.noise_signals import clacks

try:
    import jack
except (ImportError, OSError) as _e:  # OSError: JACK-Client present, libjack missing
    pytest.skip(f"JACK-Client or libjack not installed: {_e}", allow_module_level=True)
if shutil.which("jackd") is None:
    pytest.skip("jackd (Debian jackd2) not installed", allow_module_level=True)

SR = 44_100
PERIOD = 256
RUN_S = 60.0
STEP_AT_S = 40.0  # of the player's time
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def jack_server(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A private jackd (dummy driver, 44.1 kHz, 256 frames, no realtime scheduling)."""
    name = f"bnmtest{os.getpid()}"
    # jackd logs every xrun: to a file, never a pipe nobody reads (a full pipe stalls it)
    log = tmp_path_factory.mktemp("jackd") / "jackd.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            ["jackd", "--no-realtime", "-n", name, "-d", "dummy", "-r", str(SR), "-p", str(PERIOD)],
            stdout=sink,
            stderr=sink,
        )
    deadline = time.monotonic() + 15.0
    while True:
        try:
            probe = jack.Client("probe", servername=name, no_start_server=True)
            probe.close()
            break
        except jack.JackOpenError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.skip(f"jackd did not start: {log.read_text(errors='replace')[-500:]}")
            time.sleep(0.2)
    yield name
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def session(jack_server, tmp_path_factory):  # type: ignore[no-untyped-def]
    server = jack_server
    noise = clacks(RUN_S + 15.0, SR, period_s=0.5, seed=5) * 0.2
    noise[int(STEP_AT_S * SR) :] *= np.float32(10.0 ** (10.0 / 20.0))

    player = jack.Client("player", servername=server, no_start_server=True)
    player_out = player.outports.register("out_1")
    pos = [0]

    @player.set_process_callback
    def play(frames: int) -> None:
        p = pos[0]
        buf = player_out.get_array()
        if p + frames <= noise.size:
            buf[:] = noise[p : p + frames]
        else:
            buf[:] = 0.0
        pos[0] = p + frames

    recorder = jack.Client("recorder", servername=server, no_start_server=True)
    ins = [recorder.inports.register(f"in_{i + 1}") for i in range(2)]
    cycles = int((RUN_S + 20.0) * SR / PERIOD)
    rec = np.zeros((2, cycles * PERIOD), dtype=np.float32)
    frame_times = np.zeros(cycles, dtype=np.int64)
    count = [0]

    @recorder.set_process_callback
    def record(frames: int) -> None:
        k = count[0]
        if k < cycles and frames == PERIOD:
            frame_times[k] = recorder.last_frame_time
            rec[0, k * PERIOD : (k + 1) * PERIOD] = ins[0].get_array()
            rec[1, k * PERIOD : (k + 1) * PERIOD] = ins[1].get_array()
            count[0] = k + 1

    meter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    meter.bind(("127.0.0.1", 0))
    meter.setblocking(False)
    folder = tmp_path_factory.mktemp("live") / "session"
    player.activate()
    recorder.activate()
    logs = tmp_path_factory.mktemp("live_logs")
    try:
        # files, not pipes: nothing can stall on a full pipe while the session runs
        with open(logs / "out", "w") as out_f, open(logs / "err", "w") as err_f:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "bnmusic_bridge", "live",
                    "--backend", "jack", "--jack-server", server, "--client-name", "engine",
                    "--inputs", "player:out_1", "--outputs", "recorder:in_1,recorder:in_2",
                    "--record", str(folder), "--json",
                    "--osc", f"127.0.0.1:{meter.getsockname()[1]}",
                ],
                cwd=REPO, stdout=out_f, stderr=err_f, text=True,
            )  # fmt: skip
        deadline = time.monotonic() + 90.0
        while "bnmusic live: jack" not in (logs / "err").read_text():
            assert proc.poll() is None, (logs / "err").read_text()[-2000:]
            assert time.monotonic() < deadline, "the live command did not start streaming"
            time.sleep(0.2)
        time.sleep(RUN_S)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: how a live session ends
        proc.wait(timeout=90)
        out, err = (logs / "out").read_text(), (logs / "err").read_text()
    finally:
        recorder.deactivate()
        player.deactivate()
        recorder.close()
        player.close()
    assert proc.returncode == 0, err[-2000:]
    packets = []
    while True:
        try:
            packets.append(meter.recv(65536))
        except BlockingIOError:
            break
    meter.close()
    n = count[0]
    return {
        "summary": json.loads(out),
        "player_noise": noise,
        "stderr": err,
        "folder": folder,
        "recorded": rec[:, : n * PERIOD],
        "frame_times": frame_times[:n],
        "osc": packets,
    }


def test_a_60_s_run_has_no_xruns_caused_by_the_project(session) -> None:  # type: ignore[no-untyped-def]
    st = session["summary"]["stats"]
    stream = session["summary"]["stream"]
    print(f"server xruns reported: {stream['xruns']}; callback CPU max {st['max_callback_s'] * 1e3:.3f} ms, "
          f"worker CPU {st['worker_cpu_s']:.1f} s")  # fmt: skip
    assert stream["backend"] == "jack" and stream["block"] == PERIOD
    assert st["frames"] >= 0.9 * RUN_S * SR
    # No callback used more CPU than its 5.8 ms period, but for at most two isolated
    # spikes: on this shared VM a thread's CPU clock now and then charges it a few ms it
    # did not spend in our code (benchmarks/results/live.json lists the slowest blocks:
    # two of about 7 ms in 10 minutes at 256 frames, against a median of 0.06 ms, and
    # outside the span the engine's own counter times). A callback that
    # allocated, locked or waited would be late far more often and cost far more on average.
    assert st["late_blocks"] <= 2, st["late_at_s"]
    assert st["total_callback_s"] / st["blocks"] < 0.05 * PERIOD / SR  # mean under 5 %
    assert st["underruns"] == 0 and st["noise_overruns"] == 0
    assert st["music_start_s"] is not None and st["music_start_s"] < 10.0
    files = sorted(p.name for p in session["folder"].iterdir())
    assert files == ["lane.csv", "lane.json", "music.wav", "noise.wav", "session.json"]


def test_the_lane_reacts_to_a_10_db_step_within_the_stated_latency(session) -> None:  # type: ignore[no-untyped-def]
    import soundfile as sf

    folder = session["folder"]
    noise, sr = sf.read(folder / "noise.wav", dtype="float32")
    lane = np.loadtxt(folder / "lane.csv", delimiter=",", skiprows=1)
    t_lane, gain = lane[:, 0], lane[:, 2]
    # the step in the engine's own timeline: the first 0.5 s window 5 dB over the median
    # before it (its start: a conservative, early estimate of the step)
    win, hop = sr // 2, sr // 20
    starts = np.arange(0, noise.size - win, hop)
    level = np.array([10 * np.log10(np.mean(noise[s : s + win] ** 2) + 1e-20) for s in starts])
    base = np.median(level[(starts > 12 * sr) & (starts < 25 * sr)])
    over = np.nonzero((level > base + 5.0) & (starts > 12 * sr))[0]
    assert over.size, "no step found in the recorded noise"
    rough = int(starts[over[0]])  # the step lies in [rough, rough + win)
    # To the sample: find the half second before that window in the player's noise
    # (cross-correlation; the engine's recording is the player's output, joined where
    # an xrun skipped a cycle), then count to the player's step from there.
    from scipy.signal import correlate

    player = session["player_noise"]
    snippet = noise[rough - sr : rough - sr // 2]
    lo = int((STEP_AT_S - 20.0) * SR)
    corr = correlate(player[lo : int(STEP_AT_S * SR)], snippet, mode="valid", method="fft")
    found = lo + int(np.argmax(corr))  # the snippet's first sample in the player's noise
    step_s = (rough - sr + int(STEP_AT_S * SR) - found) / sr
    assert rough / sr - 0.05 <= step_s <= (rough + win) / sr + 0.05, (step_s, rough / sr)
    before = float(np.median(gain[(t_lane > step_s - 6) & (t_lane < step_s)]))
    after = np.nonzero((t_lane >= step_s) & (gain >= before + 5.0))[0]
    assert after.size, "the lane never rose by half of the step"
    reaction = float(t_lane[after[0]] - step_s)
    stated = lane_latency_s(RenderRequest(), LiveSettings())
    print(
        f"step at {step_s:.2f} s of the stream; lane +5 dB after {reaction:.2f} s (stated {stated:.2f} s)"
    )
    assert reaction <= stated


def test_no_clicks_at_block_joins_in_the_recorded_output(session) -> None:  # type: ignore[no-untyped-def]
    x = session["recorded"][0].astype(np.float64)
    ft = session["frame_times"]
    start_cycle = int((session["summary"]["stats"]["music_start_s"] + 5.0) * SR / PERIOD)
    d = np.abs(np.diff(x))
    contiguous = np.nonzero(np.diff(ft) == PERIOD)[0] + 1  # cycle k follows k - 1 directly
    joins = contiguous[contiguous > start_cycle] * PERIOD - 1  # d index across the join
    inside = np.ones(d.size, dtype=bool)
    inside[np.arange(1, ft.size) * PERIOD - 1] = False
    inside[: start_cycle * PERIOD] = False
    assert joins.size > 0.5 * (ft.size - start_cycle), "too few contiguous cycles to judge"
    assert np.sqrt(np.mean(x[start_cycle * PERIOD :] ** 2)) > 1e-3  # music is playing
    ratio = d[joins].mean() / d[inside].mean()
    print(f"mean |diff| at {joins.size} joins / elsewhere: {ratio:.3f}")
    assert ratio < 1.3
    assert np.percentile(d[joins], 99.9) <= d[inside].max()


def test_the_meter_reaches_osc_subscribers(session) -> None:  # type: ignore[no-untyped-def]
    from bnmusic_bridge.frontends.osc.protocol import decode_message

    addresses = [decode_message(p).address for p in session["osc"]]
    assert addresses.count("/bnmusic/meter") >= 20  # one per 1.28 s lane hop
    assert addresses.count("/bnmusic/meter") == addresses.count("/bnmusic/lane")
    assert addresses.count("/bnmusic/loudness") == addresses.count("/bnmusic/meter")
    first = decode_message(session["osc"][0])
    assert first.address == "/bnmusic/meter" and first.args[0].value == "live"


def test_ctrl_c_stops_cleanly_and_writes_the_recording(session) -> None:  # type: ignore[no-untyped-def]
    # the session ended with SIGINT (Ctrl-C): exit status 0 (asserted in the fixture),
    # the stream closed, the recording complete and no temporary file left behind
    assert "bnmusic live: stopped" in session["stderr"]
    folder = session["folder"]
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name or p.name.startswith(".")]
    recorded = json.loads((folder / "session.json").read_text())
    assert recorded["duration_s"] >= 0.9 * RUN_S
    assert recorded["stats"]["frames"] == session["summary"]["stats"]["frames"]
