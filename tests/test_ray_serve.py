"""``bnmusic serve --backend ray`` on a real local Ray instance: jobs render on the
cluster while the server answers pings, status and cancel; the outputs are written
here; an unreachable cluster gets a clear ``/bnmusic/error`` and the server lives."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bnmusic_bridge.frontends.osc.server import OscServer
from bnmusic_bridge.frontends.osc.testing import (
    OscClient,
    fake_server_config,
    write_noise,
)


def ray_server(root: Path, address: str, **changes) -> OscServer:  # type: ignore[no-untyped-def]
    config = fake_server_config(
        root, tcp_port=None, backend="ray", ray_address=address, render_threads=1
    )
    return OscServer(dataclasses.replace(config, **changes)).start()


def test_jobs_render_on_the_cluster_and_the_server_stays_responsive(tmp_path, ray_address):
    write_noise(tmp_path / "noise.wav", seconds=1.0)
    srv = ray_server(tmp_path, ray_address)
    try:
        with OscClient(srv.udp_address) as c:
            # A slow job: the fake generator sleeps 3 s per window in 10 ms steps.
            c.send("/bnmusic/render_ex", "slow", "noise.wav", "cancelled", "param.delay_s", 3.0)
            c.wait_for(
                lambda r: r.address == "/bnmusic/progress" and r.values[:2] == ["slow", "generate"],
                60,
            )
            # The server answers while the cluster renders.
            assert c.request("/bnmusic/ping", "alive", reply="/bnmusic/pong").values == ["alive"]
            status = c.request("/bnmusic/status", "slow", reply="/bnmusic/status/job")
            assert status.values[1] == "running" and status.values[2] == "generate"
            assert c.request("/bnmusic/cancel", "slow", reply="/bnmusic/cancel/reply").values == [
                "slow",
                "running",
            ]
            assert c.wait("/bnmusic/error", "slow", timeout_s=20).values[1] == "cancelled"
            # Stopped in the middle of generating (ray.cancel reached the remote render).
            generate = [
                r.values[2] for r in c.of("/bnmusic/progress", "slow") if r.values[1] == "generate"
            ]
            assert generate and max(generate) < 1.0
            # A quick job on the same cluster finishes, its outputs written here.
            c.send("/bnmusic/render_ex", "quick", "noise.wav", "out")
            done = c.wait("/bnmusic/done", "quick", timeout_s=120)
            stages = {r.values[1] for r in c.of("/bnmusic/progress", "quick")}
            assert {"analyse", "generate", "amplify", "write"} <= stages
        assert not c.of("/bnmusic/done", "slow")
        outputs = sorted(p.name for p in (tmp_path / "out").iterdir())
        assert "noise.music.wav" in outputs and "noise.report.json" in outputs
        assert any(str(tmp_path / "out") in str(v) for v in done.values)
        assert not (tmp_path / "cancelled").exists() or not any((tmp_path / "cancelled").iterdir())
    finally:
        srv.stop(timeout_s=20)


def test_unreachable_cluster_gives_a_clear_error_and_the_server_lives(tmp_path):
    pytest.importorskip("ray")
    write_noise(tmp_path / "noise.wav", seconds=0.6)
    srv = ray_server(tmp_path, "127.0.0.1:9")  # the discard port: nothing listens
    try:
        with OscClient(srv.udp_address) as c:
            c.send("/bnmusic/render", "j1", "noise.wav")
            err = c.wait("/bnmusic/error", "j1", timeout_s=60)
            assert err.values[1] == "cluster_unreachable"
            assert "127.0.0.1:9" in err.values[2] and "unreachable" in err.values[2]
            assert c.request("/bnmusic/ping", "still", reply="/bnmusic/pong").values == ["still"]
    finally:
        srv.stop(timeout_s=10)


def test_serve_and_batch_flags_name_the_backend_and_address(tmp_path):
    from bnmusic_bridge.frontends.cli import make_parser
    from bnmusic_bridge.frontends.osc.cli import server_config

    args = make_parser().parse_args(
        ["serve", "--root", str(tmp_path), "--backend", "ray", "--address", "10.0.0.5:6379"]
    )
    config = server_config(args)
    assert (config.backend, config.ray_address) == ("ray", "10.0.0.5:6379")
    assert server_config(make_parser().parse_args(["serve"])).backend == "local"
    batch = make_parser().parse_args(
        ["batch", "x.wav", "--out", "o", "--backend", "ray", "--address", "h:1"]
    )
    assert (batch.backend, batch.ray_address, batch.ray_gpus) == ("ray", "h:1", None)


def test_a_job_whose_worker_dies_is_retried_and_one_that_kills_it_twice_fails(
    tmp_path, ray_address
):
    write_noise(tmp_path / "a_crash_once.wav", seconds=0.6)
    write_noise(tmp_path / "b_crash_always.wav", seconds=0.6, seed=1)
    srv = ray_server(tmp_path, ray_address, worker_setup=("ray_hooks:die_in_server_jobs",))
    try:
        with OscClient(srv.udp_address) as c:
            c.send("/bnmusic/render_ex", "once", "a_crash_once.wav", "out")
            c.wait("/bnmusic/done", "once", timeout_s=120)
            c.send("/bnmusic/render_ex", "always", "b_crash_always.wav", "out")
            err = c.wait("/bnmusic/error", "always", timeout_s=120)
            assert err.values[1] == "internal" and "lost" in err.values[2]
            assert c.request("/bnmusic/ping", "up", reply="/bnmusic/pong").values == ["up"]
    finally:
        srv.stop(timeout_s=20)
    assert len((tmp_path / "a_crash_once.wav.tries").read_text().split()) == 2
    assert len((tmp_path / "b_crash_always.wav.tries").read_text().split()) == 2
    assert (tmp_path / "out" / "a_crash_once.music.wav").is_file()
    assert not list((tmp_path / "out").glob("b_crash_always*"))
