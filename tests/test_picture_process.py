"""The picture's helper process: the same PNG as drawing here, and every way it can fail
still gives the picture (or the drawing's own error)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from noise_signals import clacks

import bnmusic_bridge.export.picture_process as pp
from bnmusic_bridge.export import ExportOptions, write_outputs
from bnmusic_bridge.export.plot import draw_png, picture_data
from bnmusic_bridge.pipeline import render_file
from bnmusic_bridge.request import RenderRequest

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    path = tmp_path_factory.mktemp("picture") / "n.wav"
    sf.write(path, clacks(2.0, seed=5), 44100)
    return render_file(path, RenderRequest())


def _start() -> pp.PictureProcess:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pp, "available_cpus", lambda: 2)  # a one-CPU runner still tests it
        proc = pp.PictureProcess.start()
    assert proc is not None
    return proc


@pytest.fixture
def helper():
    """A helper of its own (the test may break it)."""
    proc = _start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def shared_helper():
    """One helper for the tests that leave it working (each start costs a warm-up)."""
    proc = _start()
    yield proc
    proc.kill()


def test_the_helper_draws_the_same_png_as_this_process(rendered, shared_helper):
    data = picture_data(rendered)
    png = shared_helper.submit(data)()
    assert png.startswith(PNG_MAGIC)
    assert png == draw_png(data)
    # And the next one, from the same helper.
    assert shared_helper.submit(pp.warm_up_data())() == draw_png(pp.warm_up_data())
    assert shared_helper.alive


def test_a_dead_helper_still_gives_the_picture(rendered, helper):
    helper._proc.kill()
    helper._proc.wait()
    data = picture_data(rendered)
    assert helper.submit(data)() == draw_png(data)


def test_a_slow_helper_is_stopped_and_the_picture_drawn_here(rendered, helper):
    helper.timeout_s = 0.0  # it cannot answer in no time
    data = picture_data(rendered)
    assert helper.submit(data)() == draw_png(data)
    assert not helper.alive


def test_a_drawing_error_is_raised_here_as_without_a_helper(rendered, helper):
    bad = dataclasses.replace(picture_data(rendered), noise_db=np.zeros(5))  # not 2-D
    with pytest.raises(TypeError, match="shape"):
        helper.submit(bad)()
    with pytest.raises(TypeError, match="shape"):
        draw_png(bad)


def test_closing_during_an_exchange_kills_the_helper_without_hanging(rendered, helper):
    os.kill(helper._proc.pid, signal.SIGSTOP)  # it never reads: the send blocks on the pipe
    data = picture_data(rendered)
    png = helper.submit(data)
    deadline = time.monotonic() + 30
    while not helper._lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)  # until the sending thread holds the pipes
    helper.close()  # an exchange holds the pipes: the helper is killed, nothing waits
    assert helper._proc.wait(timeout=30) == -signal.SIGKILL
    assert png() == draw_png(data)  # and the picture still comes


def test_the_helper_ends_when_its_input_closes(helper):
    helper.close()
    assert helper._proc.wait(timeout=30) == 0


def test_no_helper_on_one_cpu(monkeypatch):
    monkeypatch.setattr(pp, "available_cpus", lambda: 1)
    assert pp.PictureProcess.start() is None


def test_no_helper_when_python_cannot_start(monkeypatch):
    monkeypatch.setattr(pp, "available_cpus", lambda: 2)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    assert pp.PictureProcess.start() is None


def test_write_outputs_with_a_helper_writes_the_same_files(rendered, shared_helper, tmp_path):
    opts = ExportOptions(plot=True, lane_formats=("json", "csv"))
    plain = write_outputs(rendered, tmp_path / "plain", stem_name="n", options=opts)
    helped = write_outputs(
        rendered, tmp_path / "helped", stem_name="n", options=opts, picture_process=shared_helper
    )
    for a, b in zip(plain.all(), helped.all(), strict=True):
        assert a.name == b.name
        if a.suffix != ".json":  # the report names its own folder
            assert a.read_bytes() == b.read_bytes(), a.name
    assert sorted(os.listdir(tmp_path / "helped")) == sorted(os.listdir(tmp_path / "plain"))


def test_cli_render_picture_equals_the_in_process_one(rendered, tmp_path):
    """The real command, helper and all (started whatever the runner's CPU count)."""
    stem = tmp_path / "n.wav"
    sf.write(stem, clacks(2.0, seed=5), 44100)
    out = tmp_path / "out"
    code = (
        "import bnmusic_bridge.export.picture_process as pp, sys;"
        "pp.available_cpus = lambda: 2;"
        "from bnmusic_bridge.frontends.cli import main;"
        "sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "render", str(stem), "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    pngs = list(out.glob("*.png"))
    assert len(pngs) == 1
    assert pngs[0].read_bytes() == draw_png(picture_data(rendered))
