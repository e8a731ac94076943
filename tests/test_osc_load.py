"""Load: 500 ping/status messages per second for 10 s while 50 render jobs are queued
and their lane and meter streams go out. Every reply is accounted for, the server
survives, and its memory stays bounded (the figures are printed; run with -s).

Memory is the resident set of this process (server, its job threads and the test
clients) plus the render worker process."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bnmusic_bridge.frontends.osc.server import OscServer
from bnmusic_bridge.frontends.osc.testing import (
    OscClient,
    fake_server_config,
    write_noise,
)

RATE_HZ = 500
DURATION_S = 10.0
JOBS = 50
GENERATE_S = 0.25


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process in MiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read RSS")
def test_500_messages_per_second_with_50_jobs_queued(tmp_path: Path) -> None:
    for k in range(5):
        write_noise(tmp_path / f"n{k}.wav", seconds=0.6, seed=k)
    config = fake_server_config(tmp_path, tcp_port=None, meter_hz=50.0, max_queued=64)
    with (
        OscServer(config) as server,
        OscClient(server.udp_address) as jobs,
        OscClient(server.udp_address, keep=False) as pinger,
    ):
        # Warm-up render: imports and caches, so the baseline RSS is the steady state.
        jobs.send("/bnmusic/render", "warm", "n0.wav")
        jobs.wait("/bnmusic/done", "warm", timeout_s=60)
        worker = server.worker_pid
        assert worker is not None

        def total_mb() -> float:
            return rss_mb() + rss_mb(worker)

        baseline_mb = total_mb()
        server_baseline_mb = rss_mb()
        samples_mb: list[float] = []
        server_mb: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.25):
                samples_mb.append(total_mb())
                server_mb.append(rss_mb())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # Each job's generate stage sleeps GENERATE_S; generation is serialized, so the
        # 50 jobs need at least 12.5 s and some are still queued when the load ends.
        for k in range(JOBS):
            jobs.send(
                "/bnmusic/render_ex",
                f"j{k}",
                f"n{k % 5}.wav",
                f"out{k % 3}",
                "param.delay_s",
                GENERATE_S,
            )
        assert jobs.wait_count("/bnmusic/ack", JOBS + 1, timeout_s=10) == JOBS + 1

        pongs: dict[int, float] = {}
        sent_at: dict[int, float] = {}
        lock = threading.Lock()

        # The pinger keeps counts only; pong arrival times come from a second client
        # that keeps its messages, for the latency figures.
        with OscClient(server.udp_address) as timer:
            t0 = time.monotonic()
            n = int(RATE_HZ * DURATION_S)
            for i in range(n):
                target = t0 + i / RATE_HZ
                delay = target - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if i % 2 == 0:
                    with lock:
                        sent_at[i] = time.monotonic()
                    timer.send("/bnmusic/ping", i)
                else:
                    pinger.send("/bnmusic/status")
            elapsed_s = time.monotonic() - t0
            assert timer.wait_count("/bnmusic/pong", n // 2, timeout_s=15) == n // 2
            assert pinger.wait_count("/bnmusic/status/all", n - n // 2, timeout_s=15) == n - n // 2
            for r in timer.of("/bnmusic/pong"):
                pongs[r.values[0]] = r.at_s
            assert not timer.of("/bnmusic/error") and pinger.counts.get("/bnmusic/error", 0) == 0

        # Every ping came back exactly once, with its own sequence number.
        assert sorted(pongs) == sorted(sent_at)
        latency_ms = np.array([(pongs[i] - sent_at[i]) * 1000 for i in sent_at])
        done_during = len(jobs.of("/bnmusic/done")) - 1

        # Cancel what is left; every job must end with exactly one done or error.
        for k in range(JOBS):
            jobs.send("/bnmusic/cancel", f"j{k}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            finished = {r.values[0] for r in jobs.of("/bnmusic/done") + jobs.of("/bnmusic/error")}
            if all(f"j{k}" in finished for k in range(JOBS)):
                break
            time.sleep(0.1)
        stop.set()
        sampler.join()
        cancelled = 0
        for k in range(JOBS):
            job = f"j{k}"
            done, errors = jobs.of("/bnmusic/done", job), jobs.of("/bnmusic/error", job)
            assert len(done) + len(errors) == 1, (job, done, errors)
            if errors:
                assert errors[0].values[1] == "cancelled", errors[0].values
                cancelled += 1
            else:
                values = done[0].values
                assert len(jobs.of("/bnmusic/lane", job)) == values[10]
                assert len(jobs.of("/bnmusic/meter", job)) == values[11] > 0
        meters = len(jobs.of("/bnmusic/meter"))
        peak_mb = max(samples_mb)
        print(
            f"\nload: {n} messages in {elapsed_s:.2f} s ({n / elapsed_s:.0f}/s); "
            f"pong latency median {np.median(latency_ms):.2f} ms, p99 {np.percentile(latency_ms, 99):.2f} ms, "
            f"max {latency_ms.max():.2f} ms; jobs done during the load {done_during}, "
            f"cancelled after {cancelled}, meter messages {meters}; RSS (server + worker) baseline "
            f"{baseline_mb:.0f} MiB, peak {peak_mb:.0f} MiB, end {samples_mb[-1]:.0f} MiB; server process "
            f"alone {server_baseline_mb:.0f} -> peak {max(server_mb):.0f} MiB"
        )
        assert elapsed_s < DURATION_S * 1.2
        assert done_during >= 3  # renders and their streams ran under the load
        assert cancelled >= 1  # and the queue was never empty
        assert peak_mb - baseline_mb < 400  # bounded: finished jobs keep no audio
        assert max(server_mb) - server_baseline_mb < 100  # the server holds no renders
        assert server.stats.send_failures == 0
        # The server still answers.
        assert jobs.request("/bnmusic/ping", "after", reply="/bnmusic/pong").values == ["after"]
