"""The OSC server against an independent OSC implementation: liblo's ``oscsend`` and
``oscdump`` (Debian/Ubuntu package liblo-tools)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bnmusic_bridge.frontends.osc import API_VERSION
from bnmusic_bridge.frontends.osc.server import OscServer
from bnmusic_bridge.frontends.osc.testing import (
    OscClient,
    fake_server_config,
    write_noise,
)

pytestmark = pytest.mark.skipif(
    shutil.which("oscsend") is None or shutil.which("oscdump") is None,
    reason="liblo-tools (oscsend, oscdump) not installed; apt-get install liblo-tools",
)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    r = tmp_path_factory.mktemp("liblo_root")
    write_noise(r / "noise.wav", seconds=1.0)
    return r


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[OscServer]:
    config = fake_server_config(
        root,
        lane_timetags="playback",  # liblo's handling of the time tags is checked below
        allow_monitors=True,  # oscsend cannot receive: a monitor sees its replies
    )
    with OscServer(config) as srv:
        yield srv


@pytest.fixture
def monitor(server: OscServer) -> Iterator[OscClient]:
    """A python client subscribed as a monitor: it sees every reply the server sends,
    including those to oscsend's short-lived ports."""
    with OscClient(server.udp_address) as m:
        m.send("/bnmusic/subscribe", "127.0.0.1", m.address[1], "all")
        m.wait("/bnmusic/subscribe/reply")
        yield m
        m.send("/bnmusic/unsubscribe", "127.0.0.1", m.address[1])
        m.wait("/bnmusic/unsubscribe/reply")


def oscsend(target: str | tuple[str, int], address: str, types: str = "", *values: str) -> None:
    head = [target] if isinstance(target, str) else [target[0], str(target[1])]
    subprocess.run(
        ["oscsend", *head, address, types, *values], check=True, timeout=10, capture_output=True
    )


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dump:
    """``oscdump -L port`` running in the background; :meth:`lines` are what it printed."""

    def __init__(self) -> None:
        self.port = free_udp_port()
        self.proc = subprocess.Popen(
            ["oscdump", "-L", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.out: list[str] = []
        self._partial = ""
        time.sleep(0.3)  # let it bind

    def wait_line(self, pattern: str, timeout_s: float = 30.0) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        rx = re.compile(pattern)
        for line in self.out:
            if rx.search(line):
                return line
        import os
        import selectors

        # Read raw bytes: a buffered readline() would pull several lines into Python's
        # buffer while select() on the pipe then sees nothing left to read.
        fd = self.proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.2):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self._partial += chunk.decode("utf-8", "replace")
            *lines, self._partial = self._partial.split("\n")
            found = None
            for line in lines:
                self.out.append(line)
                if found is None and rx.search(line):
                    found = line
            if found is not None:
                return found
        raise TimeoutError(f"oscdump printed no line matching {pattern!r}; got {self.out[-10:]}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def test_oscsend_ping_every_type_is_echoed_exactly(server: OscServer, monitor: OscClient) -> None:
    oscsend(
        server.udp_address,
        "/bnmusic/ping",
        "ihfdsScTFNm",
        "-7",
        "8589934592",
        "0.5",
        "-2.25",
        "text",
        "sym",
        "Z",
        "00903c7f",
    )
    pong = monitor.wait("/bnmusic/pong")
    assert pong.message.tags == "ihfdsScTFNm"
    values = pong.values
    assert values[:6] == [-7, 8589934592, 0.5, -2.25, "text", "sym"]
    assert values[6] == "Z" and values[7:10] == [True, False, None]
    assert values[10] == bytes.fromhex("00903c7f")


def test_oscsend_render_is_acked_and_done(
    server: OscServer, monitor: OscClient, root: Path
) -> None:
    oscsend(server.udp_address, "/bnmusic/render", "ss", "lo1", str(root / "noise.wav"))
    monitor.wait("/bnmusic/ack", "lo1")
    done = monitor.wait("/bnmusic/done", "lo1", timeout_s=60)
    assert Path(done.values[1]).is_file()
    oscsend(
        server.udp_address,
        "/bnmusic/render_ex",
        "ssssisf",
        "lo2",
        "noise.wav",
        "ex",
        "seed",
        "4",
        "smr_db",
        "18.5",
    )
    done = monitor.wait("/bnmusic/done", "lo2", timeout_s=60)
    assert Path(done.values[1]).parent.name == "ex"


@pytest.mark.parametrize(
    ("address", "types", "values", "where", "code"),
    [
        ("/bnmusic/render", "ii", ["1", "2"], 1, "bad_arguments"),
        ("/bnmusic/render", "ss", ["lo3", "/etc/hostname"], "lo3", "path_outside_root"),
        ("/bnmusic/render", "ss", ["lo4", "../noise.wav"], "lo4", "path_outside_root"),
        ("/bnmusic/render", "s", ["lo5"], "lo5", "bad_arguments"),
        ("/bnmusic/cancel", "ss", ["lo6", "extra"], "lo6", "bad_arguments"),
        ("/bnmusic/status", "f", ["1.5"], "/bnmusic/status", "bad_arguments"),
        ("/bnmusic/render_ex", "sssf", ["lo7", "noise.wav", "", "1"], "lo7", "bad_arguments"),
        ("/nothing/here", "", [], "/nothing/here", "unknown_address"),
    ],
)
def test_oscsend_malformed_requests_get_errors(
    server: OscServer,
    monitor: OscClient,
    address: str,
    types: str,
    values: list,
    where: object,
    code: str,
) -> None:
    oscsend(server.udp_address, address, types, *values)
    err = monitor.wait("/bnmusic/error")
    assert err.values[:2] == [where, code]


def test_oscsend_over_tcp_uses_length_prefixes(server: OscServer, monitor: OscClient) -> None:
    assert server.tcp_address is not None
    host, port = server.tcp_address
    oscsend(f"osc.tcp://{host}:{port}", "/bnmusic/ping", "si", "over-tcp", "5")
    assert monitor.wait("/bnmusic/pong").values == ["over-tcp", 5]


def test_oscdump_reads_every_reply_and_the_time_tagged_lane(server: OscServer, root: Path) -> None:
    dump = Dump()
    try:
        with OscClient(server.udp_address) as c:
            c.send("/bnmusic/subscribe", "127.0.0.1", dump.port)  # redirect this client's replies
            assert '"sender"' in dump.wait_line(r"/bnmusic/subscribe/reply sis ")
            c.send("/bnmusic/ping", "liblo", 3, 0.25)
            assert re.search(r'/bnmusic/pong sif "liblo" 3 0\.25', dump.wait_line("/bnmusic/pong"))
            c.send("/bnmusic/version")
            dump.wait_line(rf'/bnmusic/version/reply ss "{re.escape(API_VERSION)}"')
            c.send("/bnmusic/render", "dump1", "noise.wav")
            dump.wait_line(r'/bnmusic/ack s "dump1"')
            done = dump.wait_line(r'/bnmusic/done ssssssffffii(ss)* "dump1"', timeout_s=60)
            lane_n = int(done.split()[13])
            # liblo holds each lane bundle until its time tag (stream start + t_s), so
            # the last points print up to the lane's length after done.
            dump.wait_line(r"/bnmusic/lane sff .* 1\.000000 ", timeout_s=5)
            lanes = [line for line in dump.out if "/bnmusic/lane sff" in line]
            assert len(lanes) == lane_n >= 2
            # oscdump prints each bundle's NTP time tag (hex seconds.fraction) first.
            tags = [int(line.split()[0].replace(".", ""), 16) / 2**32 for line in lanes]
            times = [float(line.split()[-2]) for line in lanes]
            assert tags[-1] - tags[0] == pytest.approx(times[-1] - times[0], abs=1e-3)
            assert any("/bnmusic/meter sff" in line for line in dump.out)
            c.send("/bnmusic/status", "dump1")
            assert re.search(
                r'/bnmusic/status/job sssfi "dump1" "done"', dump.wait_line("/bnmusic/status/job")
            )
            c.send_raw(b"junk")
            assert re.search(
                r'/bnmusic/error sss "#packet" "bad_packet"', dump.wait_line("/bnmusic/error")
            )
            c.send("/bnmusic/unsubscribe")
    finally:
        dump.close()

