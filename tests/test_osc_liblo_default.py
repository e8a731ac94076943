"""liblo's oscdump, with the server's default (immediate) lane time tags."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_osc_liblo import Dump

from bnmusic_bridge.frontends.osc.server import OscServer
from bnmusic_bridge.frontends.osc.testing import (
    OscClient,
    fake_server_config,
    write_noise,
)

pytestmark = pytest.mark.skipif(shutil.which("oscdump") is None, reason="liblo-tools not installed")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    r = tmp_path_factory.mktemp("osc_root_default")
    write_noise(r / "noise.wav", seconds=1.0)
    return r


def test_oscdump_gets_the_whole_lane_before_done_by_default(root: Path) -> None:
    config = fake_server_config(root)
    with OscServer(config) as srv, OscClient(srv.udp_address) as c:
        dump = Dump()
        try:
            c.send("/bnmusic/subscribe", "127.0.0.1", dump.port)
            dump.wait_line(r"/bnmusic/subscribe/reply sis ")
            c.send("/bnmusic/render", "imm1", "noise.wav")
            done = dump.wait_line(r'/bnmusic/done ssssssffffii(ss)* "imm1"', timeout_s=60)
            lane_n = int(done.split()[13])
            done_at = next(i for i, line in enumerate(dump.out) if "/bnmusic/done" in line)
            lanes_before = [line for line in dump.out[:done_at] if "/bnmusic/lane sff" in line]
            assert len(lanes_before) == lane_n >= 2
        finally:
            dump.close()
