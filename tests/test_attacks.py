"""The attacks of issue 14, shipped as tests: loopback only, bounded in count and time.

Confinement (every path a client or a preset names stays inside the roots, and nothing
says which outside folders exist), jobs that belong to their client, idle TCP clients,
the shared secret, folder quotas and the stem-length cap against a real server; then
the outputs of a render changing as one set (failures, interruptions, ``kill -9`` at
every step of the commit, two forced renders racing), stale temporary files, and hostile
input files (lying headers, cut-off compressed files, absurd levels, deep presets).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from noise_signals import clacks

from bnmusic_bridge.errors import AudioInputError, OutputError, ParameterError
from bnmusic_bridge.export import ExportOptions, write_outputs
from bnmusic_bridge.export.fileset import OutputFolder, commit_set, repair_folder
from bnmusic_bridge.frontends.osc import protocol as P
from bnmusic_bridge.frontends.osc.framing import StreamDecoder
from bnmusic_bridge.frontends.osc.paths import TEXT_FIELDS_NOT_PATHS, path_fields
from bnmusic_bridge.frontends.osc.server import OscServer, ServerConfig
from bnmusic_bridge.frontends.osc.testing import (
    OscClient,
    fake_server_config,
    write_noise,
)
from bnmusic_bridge.request import FIELD_SPECS, RenderRequest

REPO = Path(__file__).resolve().parents[1]
SECRET = "correct horse battery staple"


def make_server(root: Path, **changes) -> OscServer:  # type: ignore[no-untyped-def]
    config = fake_server_config(
        root,
        meter_hz=0.0,
        isolation="thread",  # the same job code, without a worker process to start
        render_threads=1,
    )
    return OscServer(dataclasses.replace(config, **changes)).start()


@pytest.fixture(scope="module")
def place(tmp_path_factory):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("attacks")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    write_noise(root / "noise.wav", seconds=1.0)
    write_noise(outside / "secret.wav", seconds=1.0, seed=3)
    (root / "music").mkdir()
    write_noise(root / "music" / "song.wav", seconds=1.0, seed=4)
    (root / "evil_music").mkdir()
    os.symlink(outside / "secret.wav", root / "evil_music" / "song.wav")
    os.symlink(outside, root / "linkdir")
    presets = base / "presets"
    presets.mkdir()
    (presets / "escape.toml").write_text('[output]\npattern = "../../escaped_{stem}.{kind}"\n')
    (presets / "attr.toml").write_text('[output]\npattern = "{stem.__class__}.{kind}"\n')
    (presets / "passwd.toml").write_text(
        '[[effects]]\ntype = "Convolution"\nimpulse_response_filename = "/etc/passwd"\n'
    )
    ir_out = outside / "ir.wav"
    sf.write(ir_out, np.exp(-np.arange(2000) / 300.0), 44100)
    (presets / "outside-ir.toml").write_text(
        f'[[effects]]\ntype = "Convolution"\nimpulse_response_filename = "{ir_out}"\n'
    )
    (presets / "deep.toml").write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    return root, outside, presets


@pytest.fixture(scope="module")
def server(place):  # type: ignore[no-untyped-def]
    root, _, presets = place
    srv = make_server(root, presets_dir=presets)
    yield srv
    srv.stop(timeout_s=10)


@pytest.fixture
def client(server: OscServer):  # type: ignore[no-untyped-def]
    with OscClient(server.udp_address) as c:
        yield c


def refused(client: OscClient, job: str, *args: object) -> list:
    """Send a render_ex for ``job``; its error reply's values (nothing may be acked)."""
    client.send("/bnmusic/render_ex", job, *args)
    err = client.wait("/bnmusic/error", job, timeout_s=15)
    assert not client.of("/bnmusic/ack", job), err.values
    return err.values


# ---- confinement -----------------------------------------------------------------------


def test_music_dir_outside_the_roots_is_refused_and_existence_is_not_revealed(
    client: OscClient, place
) -> None:  # type: ignore[no-untyped-def]
    root, outside, _ = place
    words = set()
    for i, folder in enumerate([outside, outside / "no-such-folder", "/etc", "/root/.ssh"]):
        values = refused(
            client, f"md{i}", "noise.wav", "", "generator", "random-music",
            "param.music_dir", str(folder),
        )  # fmt: skip
        assert values[1] == "path_outside_root", values
        words.add(values[2].replace(repr(str(folder)), "DIR"))
    assert len(words) == 1, words  # the same sentence for an existing and a missing folder


@pytest.mark.parametrize(
    ("music_dir", "why"),
    [("evil_music", "symlink that leads outside"), ("linkdir", "outside the server's roots")],
)
def test_music_dir_inside_that_leads_out_is_refused(
    client: OscClient, music_dir: str, why: str
) -> None:
    values = refused(
        client, f"ml-{music_dir}", "noise.wav", "", "generator", "random-music",
        "param.music_dir", music_dir,
    )  # fmt: skip
    assert values[1] == "path_outside_root" and why in values[2]


def test_music_dir_inside_the_roots_renders(client: OscClient, place) -> None:  # type: ignore[no-untyped-def]
    root, _, _ = place
    client.send(
        "/bnmusic/render_ex", "mi1", "noise.wav", "inside", "generator", "random-music",
        "param.music_dir", "music",
    )  # fmt: skip
    done = client.wait("/bnmusic/done", "mi1", timeout_s=60)
    report = json.loads(Path(done.values[5]).read_text())
    assert report["parameters"]["generator_params"]["music_dir"] == str((root / "music").resolve())


def test_model_generators_need_the_operator_and_never_download(
    client: OscClient, server: OscServer
) -> None:
    values = refused(client, "rf1", "noise.wav", "", "generator", "riffusion")
    assert values[1] == "forbidden" and "--allow-generator riffusion" in values[2]
    assert server.config.request.local_files_only  # forced, whatever the flags said
    values = refused(client, "rf2", "noise.wav", "", "local_files_only", False)
    assert values[1] == "bad_parameter"


def test_an_allowed_model_generator_loads_from_disk_only(place) -> None:  # type: ignore[no-untyped-def]
    root, _, _ = place
    srv = make_server(root, model_generators=("riffusion",))
    try:
        assert srv.config.request.local_files_only
        with OscClient(srv.udp_address) as c:
            # A slow job holds the only render thread, so the riffusion job stays queued
            # (no model is touched) and is cancelled there.
            c.send("/bnmusic/render_ex", "hold", "noise.wav", "", "param.delay_s", 1.0)
            c.send("/bnmusic/render_ex", "rf3", "noise.wav", "", "generator", "riffusion")
            c.wait("/bnmusic/ack", "rf3")
            assert c.request("/bnmusic/cancel", "rf3", reply="/bnmusic/cancel/reply").values == [
                "rf3",
                "queued",
            ]
    finally:
        srv.stop(timeout_s=10)


def test_output_folder_swapped_for_a_symlink_mid_render_cannot_redirect(place) -> None:  # type: ignore[no-untyped-def]
    root, outside, _ = place
    target = outside / "swap_target"
    target.mkdir()
    (root / "swap").mkdir()
    srv = make_server(root)
    try:
        with OscClient(srv.udp_address) as c:
            c.send("/bnmusic/render_ex", "sw1", "noise.wav", "swap", "param.delay_s", 1.0)
            c.wait_for(
                lambda r: r.address == "/bnmusic/progress" and r.values[:2] == ["sw1", "generate"],
                30,
            )
            os.rename(root / "swap", root / "swap_moved")
            os.symlink(target, root / "swap")
            done = c.wait("/bnmusic/done", "sw1", timeout_s=60)
    finally:
        srv.stop(timeout_s=10)
    assert list(target.iterdir()) == []  # nothing went outside
    music = Path(done.values[1])
    assert music.parent == (root / "swap_moved").resolve() and music.is_file()  # where it really is


def test_output_folder_moved_out_of_the_roots_mid_render_gets_nothing(place) -> None:  # type: ignore[no-untyped-def]
    root, outside, _ = place
    (root / "leaving").mkdir()
    srv = make_server(root)
    try:
        with OscClient(srv.udp_address) as c:
            c.send("/bnmusic/render_ex", "mv1", "noise.wav", "leaving", "param.delay_s", 1.0)
            c.wait_for(
                lambda r: r.address == "/bnmusic/progress" and r.values[:2] == ["mv1", "generate"],
                30,
            )
            os.rename(root / "leaving", outside / "left")
            err = c.wait("/bnmusic/error", "mv1", timeout_s=60)
    finally:
        srv.stop(timeout_s=10)
    assert err.values[1] == "path_outside_root", err.values
    assert list((outside / "left").iterdir()) == []


@pytest.mark.parametrize(
    ("preset", "fragment"),
    [
        ("escape", "outputs stay in the output folder"),
        ("attr", "{stem.__class__} is not a plain"),
        ("passwd", "is not an audio file"),
    ],
)
def test_hostile_presets_are_refused_before_any_work(
    client: OscClient, place, preset: str, fragment: str
) -> None:  # type: ignore[no-untyped-def]
    root, _, _ = place
    values = refused(client, f"pr-{preset}", "noise.wav", "", "preset", preset)
    assert values[1] == "unknown_preset" and fragment in values[2], values
    assert not list(root.parent.glob("escaped_*"))


def test_a_presets_impulse_response_outside_the_roots_is_refused(client: OscClient) -> None:
    values = refused(client, "ir1", "noise.wav", "", "preset", "outside-ir")
    assert values[1] == "path_outside_root" and "impulse_response_filename" in values[2]


def test_a_nul_in_the_output_pattern_is_refused_when_checked() -> None:
    with pytest.raises(ParameterError, match="NUL"):
        ExportOptions(pattern="{stem}\x00.{kind}").check()


def test_cli_refuses_a_preset_pattern_that_escapes_out(place, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from bnmusic_bridge.frontends.cli import main

    root, _, presets = place
    out = tmp_path / "deep" / "out"
    rc = main(
        [
            "render",
            str(root / "noise.wav"),
            "--preset",
            str(presets / "escape.toml"),
            "--out",
            str(out),
        ]
    )
    assert rc == 1 and "pattern" in capsys.readouterr().err
    assert not list(tmp_path.rglob("escaped_*"))


def test_every_text_field_is_known_to_be_a_path_or_not() -> None:
    """A new request field that names a file must say so (FieldSpec.path), so the server
    confines it; this fails for a text field that is neither marked nor listed."""
    texty = {"str", "Path", "str | Path", "Path | str"}
    fields = {
        f.name
        for f in dataclasses.fields(RenderRequest)
        if str(f.type).replace(" | None", "").replace("None | ", "") in texty
    }
    assert {"prompt", "model"} <= fields
    choices = {name for name, spec in FIELD_SPECS.items() if spec.choices}
    unknown = fields - choices - set(TEXT_FIELDS_NOT_PATHS) - set(path_fields())
    assert not unknown, (
        f"mark these RenderRequest fields FieldSpec(path=...) or list them: {unknown}"
    )


# ---- jobs, connections, secret, quotas, cap ---------------------------------------------


def test_jobs_answer_only_to_their_client_and_ids_are_never_reused(server: OscServer) -> None:
    with OscClient(server.udp_address) as a, OscClient(server.udp_address) as b:
        a.send("/bnmusic/render_ex", "own1", "noise.wav", "", "param.delay_s", 0.5)
        a.wait("/bnmusic/ack", "own1")
        for address in ("/bnmusic/cancel", "/bnmusic/status"):
            b.send(address, "own1")
            assert b.wait("/bnmusic/error", "own1").values[1] == "not_owner"
            b.received.clear()
        listing = b.request("/bnmusic/status", reply="/bnmusic/status/all")
        assert "own1" not in listing.values[4:]
        assert a.request("/bnmusic/status", "own1", reply="/bnmusic/status/job").values[0] == "own1"
        a.wait("/bnmusic/done", "own1", timeout_s=60)
        for c in (a, b):
            c.send("/bnmusic/render", "own1", "noise.wav")
            err = c.wait("/bnmusic/error", "own1", timeout_s=10)
            assert err.values[1] == "duplicate_job" and "lifetime" in err.values[2]


def _read_closed(sock: socket.socket, timeout_s: float) -> list[bytes]:
    """Packets a TCP (SLIP) connection received until the server closed it."""
    dec = StreamDecoder()
    dec.mode = "slip"
    got: list[bytes] = []
    sock.settimeout(timeout_s)
    while True:
        data = sock.recv(65536)
        if not data:
            return got
        got.extend(p for p in dec.feed(data) if isinstance(p, bytes))


def test_idle_tcp_clients_time_out_and_cannot_lock_others_out(place) -> None:  # type: ignore[no-untyped-def]
    root, _, _ = place
    srv = make_server(root, tcp_idle_timeout_s=0.3)
    try:
        assert srv.tcp_address is not None
        idle = [socket.create_connection(srv.tcp_address, timeout=5) for _ in range(16)]
        for s in idle:
            [packet] = _read_closed(s, timeout_s=10)
            [m] = P.decode_packet(packet)
            assert [a.value for a in m.args][:2] == ["#connection", "timeout"]
            s.close()
        with OscClient(srv.tcp_address, transport="tcp") as c:  # a 17th gets in
            assert c.request("/bnmusic/ping", "in", reply="/bnmusic/pong").values == ["in"]
            # A client waiting silently for its job is not idle.
            c.send("/bnmusic/render_ex", "tcpjob", "noise.wav", "", "param.delay_s", 1.0)
            assert Path(c.wait("/bnmusic/done", "tcpjob", timeout_s=60).values[1]).is_file()
    finally:
        srv.stop(timeout_s=10)


def test_beyond_loopback_a_secret_is_required(place) -> None:  # type: ignore[no-untyped-def]
    from bnmusic_bridge.frontends.osc.cli import check_host

    root, _, _ = place
    with pytest.raises(P.OscError, match="shared secret"):
        OscServer(
            ServerConfig(host="0.0.0.0", allow_remote=True, roots=(root,), port=0, tcp_port=0)
        )
    assert not check_host("0.0.0.0", allow_remote=True, has_secret=False)
    with pytest.raises(P.OscError, match="at least 16"):
        OscServer(ServerConfig(roots=(root,), port=0, tcp_port=0, secret="short"))


def test_shared_secret_gates_every_sender(place) -> None:  # type: ignore[no-untyped-def]
    root, _, _ = place
    srv = make_server(root, secret=SECRET)
    try:
        with OscClient(srv.udp_address) as c, OscClient(srv.udp_address) as guesser:
            c.send("/bnmusic/ping", "no")
            assert c.wait("/bnmusic/error").values[1] == "unauthorized"
            assert not c.of("/bnmusic/pong")
            assert c.request("/bnmusic/auth", SECRET, reply="/bnmusic/auth/reply").values == ["ok"]
            assert c.request("/bnmusic/ping", "yes", reply="/bnmusic/pong").values == ["yes"]
            with OscClient(srv.tcp_address, transport="tcp") as t:  # one bundle: auth, request
                t.send_raw(P.encode_bundle(P.ntp_timetag(None), [
                    P.encode_message("/bnmusic/auth", SECRET), P.encode_message("/bnmusic/ping", 1)]))  # fmt: skip
                assert t.wait("/bnmusic/pong").values == [1]
            # Guessing: every wrong secret is refused, then the host is shut out for a while.
            for i in range(6):
                guesser.send("/bnmusic/auth", f"guess number {i:08d}")
            guesser.send("/bnmusic/auth", SECRET)
            assert guesser.wait_count("/bnmusic/error", 7) == 7
            assert not guesser.of("/bnmusic/auth/reply")
            assert "too many failed attempts" in guesser.of("/bnmusic/error")[-1].values[2]
            assert c.request("/bnmusic/ping", "still", reply="/bnmusic/pong").values == ["still"]
    finally:
        srv.stop(timeout_s=10)


def test_an_unauthenticated_tcp_connection_is_closed(place, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import bnmusic_bridge.frontends.osc.server as server_mod
    from bnmusic_bridge.frontends.osc.framing import slip_encode

    monkeypatch.setattr(server_mod, "TCP_AUTH_GRACE_S", 0.2)
    root, _, _ = place
    srv = make_server(root, secret=SECRET, tcp_idle_timeout_s=1.0)
    try:
        assert srv.tcp_address is not None
        with socket.create_connection(srv.tcp_address, timeout=5) as s:
            s.sendall(slip_encode(P.encode_message("/bnmusic/ping", 1)))
            packets = _read_closed(s, timeout_s=10)
    finally:
        srv.stop(timeout_s=10)
    codes = [[a.value for a in P.decode_packet(p)[0].args][1] for p in packets]
    assert codes == ["unauthorized", "timeout"]


def test_folder_quota_and_depth(place) -> None:  # type: ignore[no-untyped-def]
    root, _, _ = place
    srv = make_server(root, folder_quota=2)
    try:
        with OscClient(srv.udp_address) as c:
            c.send("/bnmusic/render_ex", "qa", "noise.wav", "quota/a", "param.fail", True)
            c.wait("/bnmusic/ack", "qa")
            values = refused(c, "qb", "noise.wav", "quota/b", "param.fail", True)
            assert values[1] == "quota_exceeded" and "--folder-quota" in values[2]
            values = refused(c, "qd", "noise.wav", "d1/d2/d3/d4")
            assert values[1] == "quota_exceeded" and "at most 3" in values[2]
            c.send("/bnmusic/render_ex", "qa2", "noise.wav", "quota/a", "param.fail", True)
            c.wait("/bnmusic/ack", "qa2")  # an existing (or already counted) folder is free
    finally:
        srv.stop(timeout_s=10)


def test_stem_length_cap(place) -> None:  # type: ignore[no-untyped-def]
    root, _, _ = place
    srv = make_server(root, max_stem_s=0.5)
    try:
        with OscClient(srv.udp_address) as c:
            c.send("/bnmusic/render", "long", "noise.wav")
            err = c.wait("/bnmusic/error", "long", timeout_s=30)
    finally:
        srv.stop(timeout_s=10)
    assert err.values[1] == "bad_audio" and "--max-stem-minutes" in err.values[2]
    assert ServerConfig().max_stem_s == 30 * 60


def test_cli_and_server_renders_are_byte_identical(place, server: OscServer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bnmusic_bridge.frontends.cli import main

    root, _, _ = place
    srv = make_server(root, request=RenderRequest(), isolation="process")  # procedural, worker
    try:
        with OscClient(srv.udp_address) as c:
            c.send("/bnmusic/render_ex", "same", "noise.wav", "same", "seed", 5)
            done = c.wait("/bnmusic/done", "same", timeout_s=120)
    finally:
        srv.stop(timeout_s=10)
    assert (
        main(
            [
                "render",
                str(root / "noise.wav"),
                "--out",
                str(tmp_path),
                "--seed",
                "5",
                "--no-plot",
                "-q",
            ]
        )
        == 0
    )
    for index, kind in ((1, "music"), (2, "blended")):
        assert (
            Path(done.values[index]).read_bytes() == (tmp_path / f"noise.{kind}.wav").read_bytes()
        )


# ---- outputs change as one set ----------------------------------------------------------


@pytest.fixture(scope="module")
def results():  # type: ignore[no-untyped-def]
    from bnmusic_bridge.pipeline import render

    noise = clacks(1.0, 44100)[None, :]
    return [render(noise, 44100, RenderRequest(seed=s)) for s in (1, 2)]


FORCE = ExportOptions(force=True, plot=False)


def _set(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _seed_of(folder: Path) -> int:
    return json.loads((folder / "x.report.json").read_text())["seed"]


def test_a_failed_forced_render_keeps_the_whole_old_set(results, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    write_outputs(results[0], tmp_path, stem_name="x", options=FORCE)
    old = _set(tmp_path)
    real = OutputFolder.write_temp
    calls = {"n": 0}

    def full_disk(self, name, write):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:  # the disk fills up after both stems are written

            def write(f):  # type: ignore[no-untyped-def]
                f.write(b"half a lane")
                raise OSError(28, "No space left on device")

        return real(self, name, write)

    monkeypatch.setattr(OutputFolder, "write_temp", full_disk)
    with pytest.raises(
        OutputError, match="No space left.*the earlier outputs are unchanged"
    ) as info:
        write_outputs(results[1], tmp_path, stem_name="x", options=FORCE)
    assert info.value.outputs_kept == "old"  # type: ignore[attr-defined]
    assert _set(tmp_path) == old  # every old file, byte for byte, and nothing else


def test_a_failed_commit_rolls_back_to_the_old_set(results, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    write_outputs(results[0], tmp_path, stem_name="x", options=FORCE)
    old = _set(tmp_path)
    real = OutputFolder.rename
    calls = {"n": 0}

    def failing(self, a, b):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        real(self, a, b)

    monkeypatch.setattr(OutputFolder, "rename", failing)
    with pytest.raises(OutputError, match="earlier outputs are unchanged"):
        write_outputs(results[1], tmp_path, stem_name="x", options=FORCE)
    assert _set(tmp_path) == old


def test_an_interrupt_while_writing_keeps_the_old_set_and_says_so(
    results, tmp_path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    import bnmusic_bridge.export.write as write_mod
    from bnmusic_bridge.frontends.cli import main

    src = tmp_path / "x.wav"
    sf.write(src, clacks(1.0, 44100), 44100)
    assert main(["render", str(src), "--seed", "1", "--no-plot", "-q"]) == 0
    old = _set(tmp_path)

    def sigterm(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt  # what the CLI's SIGTERM handler raises

    monkeypatch.setattr(write_mod, "report_json", sigterm)
    assert main(["render", str(src), "--seed", "2", "--no-plot", "-q", "--force"]) == 130
    assert "the earlier outputs are unchanged" in capsys.readouterr().err
    assert _set(tmp_path) == old


CRASH = r"""
import os, sys
from bnmusic_bridge.export import fileset
folder = fileset.OutputFolder.open(sys.argv[1])
kill_at, names = int(sys.argv[2]), sys.argv[3:]
count = [0]
rename = fileset.OutputFolder.rename
def dying_rename(self, a, b):
    if count[0] == kill_at:
        os.kill(os.getpid(), 9)
    count[0] += 1
    rename(self, a, b)
fileset.OutputFolder.rename = dying_rename
if kill_at < 0:  # after the commit point, before the clean-up
    fileset._roll_forward = lambda *a: os.kill(os.getpid(), 9)
staged = [(n, folder.write_temp(n, lambda f, n=n: f.write(b"new " + n.encode()))) for n in names]
fileset.commit_set(folder, staged, replace=True)
"""


@pytest.mark.parametrize("kill_at", [0, 1, 2, 3, 5, -1])
def test_kill_9_at_any_step_of_a_forced_write_is_repaired_to_one_set(
    tmp_path, kill_at: int
) -> None:
    names = ["x.music.wav", "x.blended.wav", "x.report.json"]
    for n in names:
        (tmp_path / n).write_bytes(b"old " + n.encode())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-c", CRASH, str(tmp_path), str(kill_at), *names], env=env, timeout=60
    )
    assert r.returncode == -signal.SIGKILL
    with OutputFolder.open(tmp_path) as folder:
        notes = repair_folder(folder)
    assert len(notes) == 1, notes
    contents = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(contents) == sorted(names)  # no journal, backup or temporary left
    ages = {v.split()[0] for v in contents.values()}
    assert ages == ({b"new"} if kill_at < 0 else {b"old"}), contents


def test_two_forced_renders_of_one_stem_never_mix(results, tmp_path) -> None:  # type: ignore[no-untyped-def]
    refs = []
    for i, result in enumerate(results):
        ref = tmp_path / f"ref{i}"
        write_outputs(result, ref, stem_name="x", options=FORCE)
        refs.append({k: v for k, v in _set(ref).items() if not k.endswith(".json")})
    out = tmp_path / "contested"
    for _ in range(4):
        threads = [
            threading.Thread(
                target=write_outputs, args=(r, out), kwargs={"stem_name": "x", "options": FORCE}
            )
            for r in results
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        files = {k: v for k, v in _set(out).items() if not k.endswith(".json")}
        winner = refs.index(files)  # every stem and lane file from the same render
        assert _seed_of(out) == results[winner].request.seed  # and the report too


def test_stale_temporaries_of_dead_writers_are_removed(results, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bnmusic_bridge.audio import PROCESS_START_S

    dead = 2**22 - 3
    while True:
        try:
            os.kill(dead, 0)
            dead -= 1
        except ProcessLookupError:
            break
        except PermissionError:
            dead -= 1
    old_dead = tmp_path / f".x.music.{dead}-deadbeef.tmp.wav"
    old_format = tmp_path / ".x.music.k2j3h4a_.tmp.wav"
    new_dead = tmp_path / f".x.blended.{dead}-cafef00d.tmp.wav"
    mine = tmp_path / f".x.lambda.{os.getpid()}-00000000.tmp.csv"
    users = tmp_path / ".notes.tmp.wav"
    for p in (old_dead, old_format, new_dead, mine, users):
        p.write_bytes(b"half")
    for p in (old_dead, old_format, mine, users):
        os.utime(p, (PROCESS_START_S - 100, PROCESS_START_S - 100))
    write_outputs(results[0], tmp_path, stem_name="x", options=FORCE)
    left = {p.name for p in tmp_path.iterdir() if p.name.startswith(".")}
    assert left == {new_dead.name, mine.name, users.name}


def test_committing_into_a_name_taken_by_a_folder_is_refused(tmp_path) -> None:
    (tmp_path / "x.music.wav").mkdir()
    with OutputFolder.open(tmp_path) as folder:
        tmp = folder.write_temp("x.music.wav", lambda f: f.write(b"new"))
        with pytest.raises(OutputError, match="a folder has the output's name"):
            commit_set(folder, [("x.music.wav", tmp)], replace=True)
    assert [p.name for p in tmp_path.iterdir()] == ["x.music.wav"]


# ---- hostile input files -----------------------------------------------------------------


def _lying_wav(path: Path, data_bytes: int) -> Path:
    sf.write(
        path,
        (0.1 * np.random.default_rng(0).standard_normal(44100 * 2)).astype(np.float32),
        44100,
        subtype="PCM_16",
    )
    b = bytearray(path.read_bytes())  # 176 kB
    i = b.find(b"data")
    b[i + 4 : i + 8] = struct.pack("<I", data_bytes)
    path.write_bytes(bytes(b))
    return path


@pytest.mark.parametrize("claim", [10 * 3600 * 44100 * 2, 0xFFFFFFFF])
def test_a_wav_header_that_lies_is_refused_before_allocating(tmp_path, claim: int) -> None:
    from bnmusic_bridge.audio import read_stem

    p = _lying_wav(tmp_path / "liar.wav", claim)
    tracemalloc.start()
    try:
        with pytest.raises(AudioInputError, match="liar.wav: file is truncated"):
            read_stem(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20  # 10 h of samples would be 6 GB


def test_cut_off_compressed_files_are_refused(tmp_path) -> None:
    from pedalboard.io import AudioFile

    from bnmusic_bridge.audio import read_stem

    x = (0.1 * np.random.default_rng(1).standard_normal((2, 44100 * 4))).astype(np.float32)
    for suffix in (".mp3", ".flac"):
        whole = tmp_path / f"whole{suffix}"
        with AudioFile(str(whole), "w", 44100, 2) as f:
            f.write(x)
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
        assert read_stem(whole).num_samples >= x.shape[1]
        with pytest.raises(AudioInputError, match=f"cut{suffix}: file is truncated"):
            read_stem(cut)


def test_absurd_levels_are_refused_naming_the_file(tmp_path) -> None:
    from bnmusic_bridge.audio import read_stem

    x = (0.1 * np.random.default_rng(2).standard_normal(44100)).astype(np.float32)
    x[300] = 1e30
    p = tmp_path / "hot.wav"
    sf.write(p, x, 44100, subtype="FLOAT")
    with pytest.raises(AudioInputError, match=r"hot.wav: audio peaks at \+600 dBFS .*sample 300"):
        read_stem(p)


def test_a_deeply_nested_preset_breaks_neither_the_list_nor_the_server(
    client: OscClient, place
) -> None:  # type: ignore[no-untyped-def]
    from bnmusic_bridge.presets import list_presets

    _, _, presets = place
    entries = {e.name: e for e in list_presets(presets)}
    assert "nested deeper than" in (entries["deep"].error or "")
    assert entries["escape"].error and not entries["lofi-commute"].error
    reply = client.request("/bnmusic/presets", reply="/bnmusic/presets/reply", timeout_s=30)
    names = reply.values[1::2]
    assert "lofi-commute" in names and "deep" not in names
    values = refused(client, "deep1", "noise.wav", "", "preset", "deep")
    assert values[1] == "unknown_preset" and "nested deeper" in values[2]


def test_the_guarantee_table_in_docs_names_tests_that_exist() -> None:
    import re

    doc = (REPO / "docs" / "osc.md").read_text(encoding="utf-8")
    table = doc[doc.index("**What the server guarantees") : doc.index("## Python")]
    names = re.findall(r"`((?:test_osc_\w+\.py::)?test_\w+)(?:\[\w+\])?`", table)
    assert len(names) >= 20
    for name in names:
        module, _, test = name.rpartition("::")
        source = (REPO / "tests" / (module or "test_attacks.py")).read_text(encoding="utf-8")
        assert f"def {test}(" in source, name
