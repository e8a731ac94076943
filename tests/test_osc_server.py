"""The OSC server over real sockets on 127.0.0.1: python-osc and our own test client,
UDP and TCP, with a tiny fake generator (no model)."""

from __future__ import annotations

import dataclasses
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pythonosc import osc_message, osc_packet, tcp_client, udp_client

from bnmusic_bridge.frontends.osc import protocol as P
from bnmusic_bridge.frontends.osc.server import OscServer, ServerConfig
from bnmusic_bridge.frontends.osc.testing import (
    OscClient,
    fake_server_config,
    write_noise,
)

REPO = Path(__file__).resolve().parents[1]
DONE_FIXED = ("music", "blended", "lambda_csv", "lambda_json", "report")


def make_server(root: Path, **changes) -> OscServer:  # type: ignore[no-untyped-def]
    config = fake_server_config(
        root,
        meter_hz=20.0,
        lane_timetags="playback",  # the time tags themselves are checked below
    )
    return OscServer(dataclasses.replace(config, **changes)).start()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    r = tmp_path_factory.mktemp("osc_root")
    write_noise(r / "noise.wav", seconds=1.0)
    write_noise(r / "other.wav", seconds=0.8, seed=1)
    (r / "not_audio.wav").write_bytes(b"this is not a wav file at all" * 10)
    (r / "folder.wav").mkdir()
    return r


@pytest.fixture(scope="module")
def server(root: Path):  # type: ignore[no-untyped-def]
    srv = make_server(root)
    yield srv
    srv.stop(timeout_s=10)


@pytest.fixture
def client(server: OscServer):  # type: ignore[no-untyped-def]
    with OscClient(server.udp_address) as c:
        yield c


def test_lane_bundles_are_immediate_by_default() -> None:
    # so a receiver that honours time tags (liblo) dispatches the lane before done
    assert ServerConfig().lane_timetags == "immediate"


def test_ping_pong_with_python_osc(server: OscServer) -> None:
    c = udp_client.SimpleUDPClient(*server.udp_address)
    c.send_message("/bnmusic/ping", [1, "two", 3.5, True])
    data = c.receive(timeout=5)
    [timed] = osc_packet.OscPacket(data).messages
    assert timed.message.address == "/bnmusic/pong"
    assert timed.message.params == [1, "two", 3.5, True]


def test_version_presets_status(client: OscClient) -> None:
    reply = client.request("/bnmusic/version", reply="/bnmusic/version/reply")
    assert reply.values[0] == P.API_VERSION
    presets = client.request("/bnmusic/presets", reply="/bnmusic/presets/reply", timeout_s=30)
    count, names = presets.values[0], presets.values[1::2]
    assert count >= 1 and len(names) == min(count, P.MAX_LIST_ENTRIES)
    status = client.request("/bnmusic/status", reply="/bnmusic/status/all")
    assert status.message.tags.startswith("iiii")
    assert status.values[3] == 64  # max_queued


def test_render_acks_then_progress_lane_meter_done(client: OscClient, root: Path) -> None:
    client.send("/bnmusic/render", "r1", str(root / "noise.wav"), "", "test prompt", 5)
    ack = client.wait("/bnmusic/ack", "r1")
    done = client.wait("/bnmusic/done", "r1", timeout_s=60)
    values = done.values
    assert done.message.tags == "s" + "s" * 5 + "ffffii" + "ss" * ((len(values) - 12) // 2)
    paths = dict(zip(DONE_FIXED, values[1:6], strict=True))
    for kind, path in paths.items():
        assert Path(path).is_file(), kind
        assert Path(path).parent == root.resolve()
    assert paths["music"].endswith("noise.music.wav")
    coverage, nmr_db, lo_db, hi_db, lane_n, meter_n = values[6:12]
    assert 0.0 <= coverage <= 1.0 and lo_db <= hi_db
    # Order: ack, progress..., lane bundles, meter, done; every stream item counted.
    progress = client.of("/bnmusic/progress", "r1")
    lanes = client.of("/bnmusic/lane", "r1")
    meters = client.of("/bnmusic/meter", "r1")
    assert progress and ack.at_s <= progress[0].at_s
    assert {p.values[1] for p in progress} >= {"analyse", "generate", "amplify"}
    # Then the whole job's share done (never falling, 1 once written) and the seconds
    # left (-1 while not known).
    overall = [p.values[3] for p in progress]
    assert all(len(p.values) == 5 for p in progress) and overall == sorted(overall)
    assert overall[-1] == pytest.approx(1.0) and all(p.values[4] >= -1.0 for p in progress)
    assert len(lanes) == lane_n >= 2 and len(meters) == meter_n >= 1
    assert max(r.at_s for r in lanes + meters) <= done.at_s
    # Lane points are time-tagged stream start + t, so their tags increase like t does.
    t = [r.values[1] for r in lanes]
    tags = [r.timetag_s for r in lanes]
    assert t == sorted(t) and t[0] == 0.0
    assert tags[-1] - tags[0] == pytest.approx(t[-1] - t[0], abs=1e-3)
    assert min(r.values[2] for r in lanes) == pytest.approx(lo_db, abs=1e-3)
    # The meter is at most 20 values per second of a 1 s stem, times in order.
    assert [m.values[1] for m in meters] == sorted(m.values[1] for m in meters)
    assert all(0.0 <= m.values[2] <= 1.0 for m in meters)
    # The lane file that the Reaper example reads.
    header = Path(paths["lambda_csv"]).read_text().splitlines()[0]
    assert header.startswith("time_s,gain_db")


def test_second_render_of_a_stem_gets_a_fresh_name(client: OscClient, root: Path) -> None:
    out = root / "fresh"
    for job in ("f1", "f2"):
        client.send("/bnmusic/render_ex", job, "other.wav", "fresh")
        client.wait("/bnmusic/done", job, timeout_s=60)
    first = client.of("/bnmusic/done", "f1")[0].values[1]
    second = client.of("/bnmusic/done", "f2")[0].values[1]
    assert first == str(out.resolve() / "other.music.wav")
    assert second == str(out.resolve() / "other-2.music.wav")


def test_render_ex_overrides_reach_the_request(client: OscClient, root: Path) -> None:
    client.send(
        "/bnmusic/render_ex",
        77,
        "noise.wav",
        "ex",
        "smr_db",
        15,
        "seed",
        9.0,
        "min_gain_db",
        -20,
        "lane_formats",
        "json",
    )
    done = client.wait("/bnmusic/done", 77, timeout_s=60)
    assert done.message.args[0].tag == "i"  # the job id comes back with the type it was sent with
    import json

    report = json.loads(Path(done.values[5]).read_text())
    assert report["parameters"]["smr_db"] == 15.0 and report["seed"] == 9
    assert report["parameters"]["min_gain_db"] == -20.0
    assert report["osc"]["job_id"] == "77"
    assert Path(done.values[3]).name == "noise.lambda.csv"  # csv is always written for done


@pytest.mark.parametrize(
    ("args", "code", "where"),
    [
        (("/bnmusic/render", "m1", "/etc/hostname"), "path_outside_root", "m1"),
        (("/bnmusic/render", "m2", "../x.wav"), "path_outside_root", "m2"),
        (("/bnmusic/render", "m3", "missing.wav"), "path_not_found", "m3"),
        (("/bnmusic/render", "m4", "folder.wav"), "path_not_found", "m4"),
        (("/bnmusic/render", "m5", 12), "bad_arguments", "m5"),
        (("/bnmusic/render", "m6"), "bad_arguments", "m6"),
        (("/bnmusic/render", "m7", "noise.wav", "", "", 1, "extra"), "bad_arguments", "m7"),
        (("/bnmusic/render", "m8", "noise.wav", "no/such/../preset"), "unknown_preset", "m8"),
        (("/bnmusic/render", "m9", "noise.wav", "no-such-preset"), "unknown_preset", "m9"),
        (("/bnmusic/render", "m10", "noise.wav", "", "", -1), "bad_parameter", "m10"),
        (("/bnmusic/render", 2.5, "noise.wav"), "bad_arguments", "/bnmusic/render"),
        (("/bnmusic/render_ex", "m11", "noise.wav", "/tmp"), "path_outside_root", "m11"),
        (("/bnmusic/render_ex", "m12", "noise.wav", "", "smr_db"), "bad_arguments", "m12"),
        (("/bnmusic/render_ex", "m13", "noise.wav", "", "smr_db", 99.0), "bad_parameter", "m13"),
        (("/bnmusic/render_ex", "m14", "noise.wav", "", "model", "evil"), "bad_parameter", "m14"),
        (
            ("/bnmusic/render_ex", "m15", "noise.wav", "", "generator", "nope"),
            "bad_parameter",
            "m15",
        ),
        (("/bnmusic/cancel", "never-seen"), "unknown_job", "never-seen"),
        (("/bnmusic/status", "never-seen"), "unknown_job", "never-seen"),
        (("/bnmusic/status", 1.5), "bad_arguments", "/bnmusic/status"),
        (("/bnmusic/subscribe", "127.0.0.1", "port"), "bad_arguments", "/bnmusic/subscribe"),
        (("/bnmusic/subscribe", "192.0.2.1", 9000), "bad_arguments", "/bnmusic/subscribe"),
        (("/bnmusic/version", 1), "bad_arguments", "/bnmusic/version"),
        (("/bnmusic/nope",), "unknown_address", "/bnmusic/nope"),
        (("/other/app", 1), "unknown_address", "/other/app"),
    ],
)
def test_refusals_get_an_error_reply_naming_job_or_address(
    client: OscClient, args: tuple, code: str, where: str
) -> None:
    client.send(*args)
    err = client.wait("/bnmusic/error", timeout_s=30)
    assert err.values[:2] == [where, code], err.values
    assert not client.of("/bnmusic/ack")  # nothing was queued


@pytest.mark.parametrize(
    "packet",
    [
        b"garbage!",
        b"\x00" * 7,
        b"/bnmusic/ping\x00\x00\x00,i\x00\x00",
        b"/bnmusic/render\x00,ss\x00j\x00\x00\x00",
        b"#bundle\x00" + b"\x00" * 8 + b"\x00\x00\x01\x00",
        b"/bnmusic/ping\x00\x00\x00" + b",s\x00\x00" + b"a" * 9000 + b"\x00" * 4,
        random.Random(0).randbytes(1024),
    ],
)
def test_garbage_and_oversized_packets_get_an_error_and_the_server_lives(
    client: OscClient, packet: bytes
) -> None:
    client.send_raw(packet)
    err = client.wait("/bnmusic/error", timeout_s=5)
    assert err.values[1] in ("bad_packet", "packet_too_large", "unknown_address", "bad_arguments")
    assert client.request("/bnmusic/ping", "alive", reply="/bnmusic/pong").values == ["alive"]


def test_blob_in_place_of_a_path_is_refused(client: OscClient) -> None:
    client.send("/bnmusic/render", "blob", b"RIFF....WAVE")
    err = client.wait("/bnmusic/error", "blob")
    assert err.values[1] == "bad_arguments" and "type tag 'b'" in err.values[2]


def test_unreadable_audio_fails_after_ack_and_server_keeps_serving(client: OscClient) -> None:
    client.send("/bnmusic/render", "bad", "not_audio.wav")
    client.wait("/bnmusic/ack", "bad")
    err = client.wait("/bnmusic/error", "bad", timeout_s=30)
    assert err.values[1] == "bad_audio"
    client.send("/bnmusic/render_ex", "boom", "noise.wav", "", "param.fail", True)
    err = client.wait("/bnmusic/error", "boom", timeout_s=30)
    assert err.values[1] == "generator_failed"
    assert client.request("/bnmusic/ping", reply="/bnmusic/pong") is not None


def test_cancel_queued_and_running_jobs_leaves_no_files(root: Path) -> None:
    out = root / "cancelled"
    srv = make_server(root, render_threads=1)
    try:
        with OscClient(srv.udp_address) as c:
            # 600 s of sleep per window: a job that ran to its end could not answer the
            # waits below (10 s), so they show the cancel stopped it mid-job.
            c.send("/bnmusic/render_ex", "slow", "noise.wav", "cancelled", "param.delay_s", 600.0)
            c.send("/bnmusic/render_ex", "waiting", "noise.wav", "cancelled")
            c.wait_for(
                lambda r: r.address == "/bnmusic/progress" and r.values[:2] == ["slow", "generate"],
                30,
            )
            status = c.request("/bnmusic/status", "waiting", reply="/bnmusic/status/job")
            assert status.values[1] == "queued" and status.values[4] == 0
            assert c.request(
                "/bnmusic/cancel", "waiting", reply="/bnmusic/cancel/reply"
            ).values == ["waiting", "queued"]
            assert c.wait("/bnmusic/error", "waiting").values[1] == "cancelled"
            assert c.request("/bnmusic/cancel", "slow", reply="/bnmusic/cancel/reply").values == [
                "slow",
                "running",
            ]
            # stops at the next progress event, not at the end of the 600 s window
            assert c.wait("/bnmusic/error", "slow", timeout_s=10).values[1] == "cancelled"
            assert (
                c.request("/bnmusic/status", "slow", reply="/bnmusic/status/job").values[1]
                == "cancelled"
            )
            assert not c.of("/bnmusic/done")
    finally:
        srv.stop(timeout_s=10)
    assert not out.exists() or not any(out.iterdir())


def test_full_queue_says_busy_and_duplicate_ids_are_refused(root: Path) -> None:
    srv = make_server(root, render_threads=1, max_queued=2, isolation="thread")
    try:
        with OscClient(srv.udp_address) as c:
            c.send("/bnmusic/render_ex", "q0", "noise.wav", "busy", "param.delay_s", 3.0)
            c.wait_for(lambda r: r.address == "/bnmusic/progress" and r.values[0] == "q0")
            c.send("/bnmusic/render_ex", "q0", "noise.wav", "busy")
            assert c.wait("/bnmusic/error", "q0").values[1] == "duplicate_job"
            for job in ("q1", "q2", "q3"):
                c.send("/bnmusic/render", job, "noise.wav")
            assert c.wait("/bnmusic/error", "q3").values[1] == "busy"
            assert [r.values[0] for r in c.of("/bnmusic/ack")] == ["q0", "q1", "q2"]
    finally:
        srv.stop(timeout_s=10)


def test_a_crashing_worker_fails_its_job_and_is_replaced(
    server: OscServer, client: OscClient
) -> None:
    first_pid = server.worker_pid
    client.send("/bnmusic/render_ex", "crash", "noise.wav", "crash", "param.crash", True)
    client.wait("/bnmusic/ack", "crash")
    err = client.wait("/bnmusic/error", "crash", timeout_s=30)
    assert err.values[1] == "internal" and "worker process died" in err.values[2]
    assert server.worker_pid != first_pid
    client.send("/bnmusic/render", "after-crash", "noise.wav")
    assert Path(client.wait("/bnmusic/done", "after-crash", timeout_s=60).values[1]).is_file()


def test_subscriptions_redirect_and_monitor(root: Path) -> None:
    server = make_server(root, allow_monitors=True)
    try:
        _redirect_and_monitor(server)
    finally:
        server.stop(timeout_s=10)


def test_monitors_are_off_unless_the_operator_allows_them(client: OscClient) -> None:
    client.send("/bnmusic/subscribe", "", client.address[1], "all")
    err = client.wait("/bnmusic/error")
    assert err.values[:2] == ["/bnmusic/subscribe", "forbidden"] and "--monitors" in err.values[2]


def _redirect_and_monitor(server: OscServer) -> None:
    with (
        OscClient(server.udp_address) as sender,
        OscClient(server.udp_address) as listener,
        OscClient(server.udp_address) as monitor,
    ):
        host, port = listener.address
        sender.send("/bnmusic/subscribe", host, port)
        assert listener.wait("/bnmusic/subscribe/reply").values == [host, port, "sender"]
        monitor.send("/bnmusic/subscribe", "", monitor.address[1], "all")
        monitor.wait("/bnmusic/subscribe/reply")
        sender.send("/bnmusic/ping", "to-listener")
        assert listener.wait("/bnmusic/pong").values == ["to-listener"]
        assert monitor.wait("/bnmusic/pong").values == ["to-listener"]
        sender.send("/bnmusic/render", "sub1", "noise.wav")
        listener.wait("/bnmusic/done", "sub1", timeout_s=60)
        monitor.wait("/bnmusic/done", "sub1", timeout_s=60)
        assert not sender.of("/bnmusic/pong") and not sender.of("/bnmusic/ack")
        sender.send("/bnmusic/unsubscribe")
        assert sender.wait("/bnmusic/unsubscribe/reply").values == [1]
        monitor.send("/bnmusic/unsubscribe", "127.0.0.1", monitor.address[1])
        monitor.wait("/bnmusic/unsubscribe/reply")
        sender.send("/bnmusic/ping", "back")
        assert sender.wait("/bnmusic/pong").values == ["back"]


def test_tcp_slip_with_python_osc_and_length_prefixed(server: OscServer, root: Path) -> None:
    assert server.tcp_address is not None
    with tcp_client.SimpleTCPClient(*server.tcp_address, timeout=5) as c:
        c.send_message("/bnmusic/ping", ["tcp", 2])
        [data] = c.receive(timeout=5)
        pong = osc_message.OscMessage(data)
        assert pong.address == "/bnmusic/pong" and pong.params == ["tcp", 2]
    with OscClient(server.tcp_address, transport="tcp-length") as c:
        c.send("/bnmusic/render", "tcp1", "noise.wav")
        done = c.wait("/bnmusic/done", "tcp1", timeout_s=60)
        assert len(c.of("/bnmusic/lane", "tcp1")) == done.values[10]
        c.send_raw(b"\x00" * 8)
        assert c.wait("/bnmusic/error").values[1] == "bad_packet"


def test_stop_cancels_running_job_and_leaves_no_partial_files(root: Path) -> None:
    out = root / "stopped"
    srv = make_server(root, render_threads=1)
    with OscClient(srv.udp_address) as c:
        c.send("/bnmusic/render_ex", "long", "noise.wav", "stopped", "param.delay_s", 600.0)
        c.send("/bnmusic/render_ex", "queued", "noise.wav", "stopped")
        c.wait_for(
            lambda r: r.address == "/bnmusic/progress" and r.values[:2] == ["long", "generate"], 30
        )
        # stop() waits at most 10 s: it returns True only if the 600 s job was cancelled
        assert srv.stop(timeout_s=10)
        assert c.wait("/bnmusic/error", "long").values[1] == "cancelled"
        assert c.wait("/bnmusic/error", "queued").values[1] == "cancelled"
    assert not out.exists() or not any(out.iterdir())


def test_stop_with_finish_running_lets_the_running_job_finish(root: Path) -> None:
    srv = make_server(root, render_threads=1)
    with OscClient(srv.udp_address) as c:
        c.send("/bnmusic/render_ex", "finish", "noise.wav", "finished", "param.delay_s", 0.5)
        c.send("/bnmusic/render_ex", "dropped", "noise.wav", "finished")
        c.wait_for(
            lambda r: r.address == "/bnmusic/progress" and r.values[:2] == ["finish", "generate"],
            30,
        )
        assert srv.stop(finish_running=True, timeout_s=30)
        done = c.wait("/bnmusic/done", "finish", timeout_s=5)
        assert Path(done.values[1]).is_file()
        assert c.wait("/bnmusic/error", "dropped").values[1] == "cancelled"


def _start_cli(root: Path, *extra: str) -> tuple[subprocess.Popen, tuple[str, int]]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bnmusic_bridge.frontends.cli",
            "serve",
            "--port",
            "0",
            "--tcp-port",
            "0",
            "--root",
            str(root),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"udp ([\d.]+):(\d+)", line)
    assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, (m.group(1), int(m.group(2)))


def test_cli_sigterm_cancels_the_running_job_and_leaves_no_partial_files(tmp_path: Path) -> None:
    write_noise(tmp_path / "stem.wav", seconds=1.0)
    proc, addr = _start_cli(tmp_path)
    try:
        with OscClient(addr) as c:
            c.send("/bnmusic/render", "cli", "stem.wav")
            c.wait("/bnmusic/ack", "cli", timeout_s=10)
            proc.send_signal(signal.SIGTERM)
            assert c.wait("/bnmusic/error", "cli", timeout_s=30).values[1] == "cancelled"
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stem.wav"]  # no partial outputs
    assert "stopped" in proc.stderr.read()


def test_cli_sigint_stops_an_idle_server(tmp_path: Path) -> None:
    proc, addr = _start_cli(tmp_path, "--no-tcp")
    try:
        with OscClient(addr) as c:
            assert c.request("/bnmusic/ping", 1, reply="/bnmusic/pong", timeout_s=10).values == [1]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert "1 messages in" in err and "Traceback" not in err


def test_cli_refuses_non_loopback_without_allow_remote(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bnmusic_bridge.frontends.cli",
            "serve",
            "--host",
            "0.0.0.0",
            "--root",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 2
    assert "--allow-remote" in r.stderr


def test_example_python_client_renders_and_reports(
    server: OscServer, root: Path, tmp_path: Path
) -> None:
    host, port = server.udp_address
    cmd = [
        sys.executable,
        str(REPO / "examples" / "osc_client.py"),
        "--host",
        host,
        "--port",
        str(port),
    ]
    r = subprocess.run([*cmd, "ping", "--count", "3"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "3 pings" in r.stdout, r.stderr
    result_file = tmp_path / "result.tsv"
    r = subprocess.run(
        [*cmd, "render", "noise.wav", "--job", "example", "--out", "example", "--set", "smr_db=18", "--wait",
         "--json", "--result-file", str(result_file)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    import json

    result = json.loads(r.stdout)
    assert Path(result["music"]).is_file() and result["lane_points"] == len(result["lane"]) >= 2
    lines = dict(line.split("\t", 1) for line in result_file.read_text().splitlines())
    assert lines["music"] == result["music"] and "error" not in lines
    r = subprocess.run(
        [*cmd, "render", "../escape.wav", "--wait"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1 and "path_outside_root" in r.stderr


REAPER_MOCK = r"""
local py = ...
local M = { log = {}, failures = {}, deferred = {}, tracks = {}, settings = {}, points = {}, inserted = {},
            cursor = 0, selected = nil }
local noise_track = { name = "noise", items = { { D_POSITION = 12.5, D_LENGTH = 1.0 } } }
M.tracks[1] = noise_track
reaper = {}
function reaper.GetOS() return "Other" end
function reaper.get_action_context() return false, py.script_path end
function reaper.ShowConsoleMsg(s) M.log[#M.log + 1] = s end
function reaper.ShowMessageBox(msg) M.failures[#M.failures + 1] = msg end
function reaper.GetSelectedTrack() return noise_track end
function reaper.CountTrackMediaItems(t) return #t.items end
function reaper.GetTrackMediaItem(t, i) return t.items[i + 1] end
function reaper.GetMediaItemInfo_Value(item, k) return item[k] end
function reaper.SetMediaItemInfo_Value(item, k, v) item[k] = v end
function reaper.GetProjectPath() return py.project end
function reaper.RecursiveCreateDirectory(d) py.makedirs(d) end
function reaper.GetSetProjectInfo(_, k, v, set) if set then M.settings[k] = v end return M.settings[k] or 0 end
function reaper.GetSetProjectInfo_String(_, k, v, set)
  if k == "RENDER_TARGETS" then
    return true, M.settings.RENDER_FILE .. "/" .. M.settings.RENDER_PATTERN:gsub("%$track", "noise") .. ".wav"
  end
  if set then M.settings[k] = v end
  return true, M.settings[k] or ""
end
function reaper.Main_OnCommand(cmd)
  if cmd == 42230 then
    local _, target = reaper.GetSetProjectInfo_String(0, "RENDER_TARGETS", "", false)
    M.rendered = target
    M.render_settings = { stems = M.settings.RENDER_SETTINGS, bounds = M.settings.RENDER_BOUNDSFLAG,
                          start = M.settings.RENDER_STARTPOS, stop = M.settings.RENDER_ENDPOS }
    py.copy_noise(target)
  elseif cmd == 40406 then
    M.selected.env = { points = M.points }
  end
end
function reaper.file_exists(p) return py.exists(p) end
function reaper.GetResourcePath() return "/nonexistent" end
function reaper.time_precise() return py.now() end
function reaper.defer(f) M.deferred[#M.deferred + 1] = f end
function reaper.GetMediaTrackInfo_Value() return 1 end
function reaper.InsertTrackAtIndex(i) table.insert(M.tracks, i + 1, { items = {} }) end
function reaper.GetTrack(_, i) return M.tracks[i + 1] end
function reaper.GetSetMediaTrackInfo_String(t, _, name) t.name = name end
function reaper.SetOnlyTrackSelected(t) M.selected = t end
function reaper.GetCursorPosition() return M.cursor end
function reaper.SetEditCurPos(p) M.cursor = p end
function reaper.InsertMedia(file) local t = M.selected; t.items[#t.items + 1] = { D_POSITION = M.cursor, file = file }
  M.inserted[#M.inserted + 1] = file return 1 end
function reaper.GetTrackEnvelopeByName(t) return t.env end
function reaper.GetEnvelopeScalingMode() return 0 end
function reaper.ScaleToEnvelopeMode(_, v) return v end
function reaper.DeleteEnvelopePointRange() end
function reaper.InsertEnvelopePoint(_, t, v) M.points[#M.points + 1] = { t, v } end
function reaper.ExecProcess(cmd) py.spawn(cmd) return "" end
for _, name in ipairs({ "Envelope_SortPoints", "PreventUIRefresh", "UpdateArrange", "TrackList_AdjustWindows",
                        "Undo_BeginBlock", "Undo_EndBlock" }) do reaper[name] = function() end end
if py.with_socket then
  package.preload["socket"] = function()
    return { udp = function()
      local id = py.udp_new()
      local o = {}
      function o:settimeout() end
      function o:setpeername(h, p) py.udp_connect(id, h, p) end
      function o:send(d) py.udp_send(id, d) end
      function o:receive() return py.udp_recv(id) end
      function o:close() py.udp_close(id) end
      return o
    end }
  end
end
return M
"""


@pytest.mark.parametrize("with_socket", [True, False], ids=["luasocket", "python-fallback"])
def test_reaper_script_renders_sends_imports_and_writes_the_envelope(
    server: OscServer, root: Path, with_socket: bool
) -> None:
    """Runs examples/reaper/bnmusic_render_selected.lua in Lua 5.4 (lupa) against a mock
    of the ReaScript API and the real server: over LuaSocket (mocked with a real UDP
    socket) and over the Python-client fallback."""
    lupa = pytest.importorskip(
        "lupa.lua54", reason="lupa (pip install lupa) runs the Reaper Lua example"
    )
    import shutil
    import socket as pysocket
    import types

    script = REPO / "examples" / "reaper" / "bnmusic_render_selected.lua"
    project = root / f"reaper_{'sock' if with_socket else 'py'}"
    project.mkdir()
    socks: dict[int, pysocket.socket] = {}
    procs: list[subprocess.Popen] = []

    def udp_new() -> int:
        s = pysocket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM)
        s.setblocking(False)
        socks[s.fileno()] = s
        return s.fileno()

    def udp_recv(i: int) -> bytes | None:
        try:
            return socks[i].recv(65536)
        except BlockingIOError:
            return None

    host, port = server.udp_address
    py = types.SimpleNamespace(
        script_path=str(script).encode(),
        project=str(project).encode(),
        makedirs=lambda d: os.makedirs(d, exist_ok=True),
        copy_noise=lambda target: shutil.copy(root / "noise.wav", target.decode()),
        exists=lambda p: os.path.exists(p),
        now=time.monotonic,
        with_socket=with_socket,
        udp_new=udp_new,
        udp_connect=lambda i, h, p: socks[i].connect((h.decode(), p)),
        udp_send=lambda i, d: socks[i].send(d),
        udp_recv=udp_recv,
        udp_close=lambda i: socks.pop(i).close(),
        spawn=lambda cmd: procs.append(subprocess.Popen(cmd.decode(), shell=True)),
    )
    lua = lupa.LuaRuntime(encoding=None)
    mock = lua.execute(REAPER_MOCK.encode(), py)
    source = (
        script.read_text()
        .replace("local PORT = 9750", f"local PORT = {port}")
        .replace('local HOST = "127.0.0.1"', f'local HOST = "{host}"')
    )
    if not with_socket:
        source = source.replace('"python3"', f'"{sys.executable}"')
    lua.execute(source.encode())
    deadline = time.monotonic() + 120
    while len(mock.deferred) and time.monotonic() < deadline:
        f = mock.deferred[len(mock.deferred)]
        mock.deferred[len(mock.deferred)] = None
        f()
        time.sleep(0.01)
    for p in procs:
        p.wait(30)
    assert not list(mock.failures.values()), list(mock.failures.values())
    # 1. The stem was rendered with stems-only, custom bounds = the item's extent.
    rs = mock.render_settings
    assert (rs.stems, rs.bounds, rs.start, rs.stop) == (2, 0, 12.5, 13.5)
    assert Path(mock.rendered.decode()).parent == project / "bnmusic"
    # 2./3. The music stem came back and sits on a new track at the stem's start.
    [music] = [m.decode() for m in mock.inserted.values()]
    assert music.endswith(".music.wav") and Path(music).is_file()
    new_track = mock.tracks[2]
    item = new_track[b"items"][1]  # (lupa's LuaTable.items() hides the attribute)
    assert new_track.name == b"bnmusic music" and item.D_POSITION == 12.5
    # 4. The envelope holds the CSV lane, shifted to the stem's start, in linear gain
    #    (minus what went into the item volume).
    csv_rows = Path(music.replace(".music.wav", ".lambda.csv")).read_text().splitlines()[1:]
    points = [(p[1], p[2]) for p in mock.points.values()]
    assert len(points) == len(csv_rows) >= 2
    offset = item.D_VOL or 1.0
    for (t, v), row in zip(points, csv_rows, strict=True):
        t_s, _, linear = (float(x) for x in row.split(","))
        assert t == pytest.approx(12.5 + t_s) and v * offset == pytest.approx(linear, rel=1e-3)


def test_ableton_helper_with_a_stand_in_for_abletonosc(server: OscServer, root: Path) -> None:
    """examples/ableton/bnmusic_live.py against the real server and a stand-in that
    answers like AbletonOSC's source (view.py: selected_clip -> track, scene; getters
    reply with their ids first)."""
    import socket as pysocket
    import threading

    live = pysocket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM)
    live.bind(("127.0.0.1", 0))
    live.settimeout(0.2)
    with pysocket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        reply_port = probe.getsockname()[1]
    seen: list[tuple] = []
    stop = threading.Event()

    def fake_live() -> None:
        while not stop.is_set():
            try:
                data, (host, _) = live.recvfrom(65536)
            except TimeoutError:
                continue
            [m] = P.decode_packet(data)
            args = tuple(a.value for a in m.args)
            seen.append((m.address, *args))
            replies = {
                "/live/view/get/selected_clip": (0, 2),
                "/live/clip/get/file_path": (0, 2, str(root / "noise.wav")),
                "/live/song/get/tempo": (120.0,),
            }
            if m.address in replies:
                live.sendto(P.encode_message(m.address, *replies[m.address]), (host, reply_port))

    thread = threading.Thread(target=fake_live, daemon=True)
    thread.start()
    try:
        host, port = server.udp_address
        r = subprocess.run(
            [sys.executable, str(REPO / "examples" / "ableton" / "bnmusic_live.py"), "--live-port",
             str(live.getsockname()[1]), "--live-reply-port", str(reply_port), "--host", host, "--port",
             str(port), "--out", "ableton"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        stop.set()
        thread.join()
        live.close()
    assert r.returncode == 0, r.stdout + r.stderr
    music = re.search(r"music stem:\s+(\S+)", r.stdout)
    assert (
        music and Path(music.group(1)).is_file() and Path(music.group(1)).parent.name == "ableton"
    )
    assert ("/live/clip/get/file_path", 0, 2) in seen
    assert ("/live/song/create_audio_track", 1) in seen and (
        "/live/track/set/name",
        1,
        "bnmusic music",
    ) in seen
    assert "clip-envelope steps" in r.stdout


def test_verbose_logs_requests_but_not_pings(server: OscServer, client: OscClient, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    with caplog.at_level(logging.INFO, logger="bnmusic.osc"):
        client.send("/bnmusic/ping", "quiet")
        client.wait("/bnmusic/pong")
        client.send("/bnmusic/version")
        client.wait("/bnmusic/version/reply")
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("/bnmusic/version") for m in logged)
    assert not any(m.startswith("/bnmusic/ping") for m in logged)
