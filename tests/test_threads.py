"""Thread counts: the default never oversubscribes, and ``--threads`` reaches torch and
the BLAS environment from every front end (render, batch, serve)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from bnmusic_bridge import threads as th
from bnmusic_bridge.frontends.cli import main, make_parser


@pytest.fixture
def restore_threads(monkeypatch):
    """Every test here may change torch's and the environment's thread counts: put both
    back afterwards."""
    for var in th.THREAD_ENV_VARS:
        monkeypatch.setenv(var, "7")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("cores", "load", "jobs", "expected"),
    [
        (2, 0.0, 1, 1),  # 2 cores: one kept for the DAW
        (2, 1.9, 1, 1),
        (1, 0.0, 1, 1),  # never below 1
        (16, 0.0, 1, 15),
        (16, 6.0, 1, 10),  # busy cores are left out
        (16, 0.1, 2, 7),  # shared among jobs
        (16, 40.0, 4, 1),
        (8, 2.2, 1, 6),  # a quarter of a core does not count as a core
    ],
)
def test_default_threads(cores, load, jobs, expected):
    assert th.default_threads(jobs, cores=cores, load=load) == expected


def test_default_never_exceeds_free_cores():
    for cores in range(1, 33):
        for load in (0.0, 0.5, 1.0, 3.7, 12.0):
            for jobs in (1, 2, 3, 8):
                n = th.default_threads(jobs, cores=cores, load=load)
                assert n >= 1
                if cores > 1:
                    assert n * jobs <= max(jobs, cores - 1)


def test_set_threads_reaches_torch_and_environment(restore_threads):
    import os

    torch.set_num_threads(2)
    assert th.set_threads(1) == 1
    assert torch.get_num_threads() == 1
    assert all(os.environ[var] == "1" for var in th.THREAD_ENV_VARS)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_set_threads_refuses_bad_counts(bad):
    with pytest.raises(ValueError, match="threads"):
        th.set_threads(bad)


class _Stop(Exception):
    pass


def _record_threads(seen: dict):
    def fake_render_file(*args, **kwargs):
        import os

        seen["torch"] = torch.get_num_threads()
        seen["env"] = {var: os.environ[var] for var in th.THREAD_ENV_VARS}
        raise _Stop

    return fake_render_file


def test_render_threads_flag_reaches_torch(tmp_path, monkeypatch, restore_threads):
    import bnmusic_bridge.pipeline as pipeline

    stem = tmp_path / "n.wav"
    sf.write(stem, np.zeros(44100, dtype=np.float32), 44100)
    seen: dict = {}
    monkeypatch.setattr(pipeline, "render_file", _record_threads(seen))
    torch.set_num_threads(2)
    with pytest.raises(_Stop):
        main(["render", str(stem), "--out", str(tmp_path / "o"), "--threads", "1", "-q"])
    assert seen["torch"] == 1
    assert set(seen["env"].values()) == {"1"}


def test_render_default_threads_is_the_default(tmp_path, monkeypatch, restore_threads):
    import bnmusic_bridge.pipeline as pipeline

    stem = tmp_path / "n.wav"
    sf.write(stem, np.zeros(44100, dtype=np.float32), 44100)
    seen: dict = {}
    monkeypatch.setattr(pipeline, "render_file", _record_threads(seen))
    monkeypatch.setattr(th, "default_threads", lambda jobs=1, **_: 3)
    with pytest.raises(_Stop):
        main(["render", str(stem), "--out", str(tmp_path / "o"), "-q"])
    assert seen["torch"] == 3 and set(seen["env"].values()) == {"3"}


def test_render_refuses_zero_threads(tmp_path, capsys):
    stem = tmp_path / "n.wav"
    sf.write(stem, np.zeros(44100, dtype=np.float32), 44100)
    assert main(["render", str(stem), "--out", str(tmp_path / "o"), "--threads", "0"]) == 1
    assert "--threads 0" in capsys.readouterr().err


def test_batch_threads_reach_torch(restore_threads):
    from bnmusic_bridge.batch.backends import run_tasks

    torch.set_num_threads(2)
    run_tasks([], lambda r: None, jobs=1, threads=1)
    assert torch.get_num_threads() == 1


def test_batch_flag_is_passed_on(tmp_path, monkeypatch):
    import bnmusic_bridge.frontends.batch_cmd as batch_cmd

    seen: dict = {}

    def fake_run_batch(*args, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(batch_cmd, "run_batch", fake_run_batch)
    with pytest.raises(_Stop):
        main(
            ["batch", str(tmp_path), "--out", str(tmp_path / "o"), "--jobs", "2", "--threads", "3"]
        )
    assert seen["threads"] == 3 and seen["jobs"] == 2


def test_serve_threads_flag_reaches_the_config_and_thread_executor(tmp_path, restore_threads):
    from bnmusic_bridge.frontends.osc.cli import server_config
    from bnmusic_bridge.frontends.osc.worker import ThreadExecutor

    args = make_parser().parse_args(["serve", "--root", str(tmp_path), "--threads", "1"])
    assert server_config(args).threads == 1
    args = make_parser().parse_args(["serve", "--root", str(tmp_path)])
    assert server_config(args).threads is None  # the worker picks default_threads
    torch.set_num_threads(2)
    ThreadExecutor((), 1)
    assert torch.get_num_threads() == 1
