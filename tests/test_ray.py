"""The Ray backend on a real local Ray instance (the session's ``ray_address`` fixture):
outputs byte-identical to the local backend's, audio and results by value, resume, a
worker that dies mid-stem retried, a stem that kills its worker twice listed as failed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile
from test_batch import FAST, REQUEST, make_stems, manifest, ticks

from bnmusic_bridge.batch import run_batch

REPO = Path(__file__).resolve().parents[1]
RATE = 44_100


def output_files(folder: Path) -> dict[str, bytes]:
    """Every output file's bytes, by name (the manifest left out: it holds times)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "manifest.json"}


WALL_CLOCK_KEYS = ("timings_s", "render_s")
"""Report fields that hold measured seconds (the stage timings, the generator's time
per window): the only ones that differ from run to run, on any backend."""


def without_timings(report: bytes) -> object:
    def strip(x: object) -> object:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in WALL_CLOCK_KEYS}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    doc = json.loads(report)
    assert "timings_s" in doc
    return strip(doc)


def test_ray_batch_gives_the_local_backends_bytes_and_resumes(tmp_path, ray_address):
    stems = make_stems(tmp_path / "stems", 2, seconds=0.6)
    local = run_batch(stems, tmp_path / "local", REQUEST, FAST)
    remote = run_batch(
        stems, tmp_path / "ray", REQUEST, FAST, backend="ray", jobs=2, ray_address=ray_address
    )
    assert local.count("rendered") == remote.count("rendered") == 2
    a, b = output_files(tmp_path / "local"), output_files(tmp_path / "ray")
    assert sorted(a) == sorted(b) and len(a) == 2 * 4  # music, blended, lambda json, report
    for name in a:
        if name.endswith(".report.json"):
            ra, rb = without_timings(a[name]), without_timings(b[name])
            # Every path in the report names the output folder of its own run.
            assert json.dumps(ra).replace(str(tmp_path / "local"), "OUT") == json.dumps(rb).replace(
                str(tmp_path / "ray"), "OUT"
            )
            assert rb["input"] == str(stems[int(name[4:6])].resolve())  # read here, by value
        else:
            assert a[name] == b[name], f"{name} differs between the local and the Ray backend"
    doc = manifest(tmp_path / "ray")
    assert [e["status"] for e in doc["stems"]] == ["rendered", "rendered"]
    # Resume: a second run into the same folder skips both stems, touching nothing.
    again = run_batch(
        stems, tmp_path / "ray", REQUEST, FAST, backend="ray", jobs=2, ray_address=ray_address
    )
    assert again.count("skipped") == 2 and again.count("rendered") == 0
    assert output_files(tmp_path / "ray") == b


def test_a_dying_worker_is_retried_and_a_stem_that_kills_it_twice_fails(tmp_path, ray_address):
    folder = tmp_path / "stems"
    folder.mkdir()
    for k, name in enumerate(["a_fine", "b_crash_once", "c_crash_always"]):
        soundfile.write(folder / f"{name}.wav", ticks(0.6, seed=k), RATE, subtype="PCM_16")
    summary = run_batch(
        [folder],
        tmp_path / "out",
        REQUEST,
        FAST,
        backend="ray",
        jobs=2,
        ray_address=ray_address,
        worker_setup=("ray_hooks:die_on_marked_stems",),
    )
    status = {r.stem_name: r.status for r in summary.results}
    assert status == {"a_fine": "rendered", "b_crash_once": "rendered", "c_crash_always": "failed"}
    # Each dying stem really killed a worker process: two tries, two processes.
    once = (folder / "b_crash_once.wav.tries").read_text().split()
    always = (folder / "c_crash_always.wav.tries").read_text().split()
    assert len(once) == 2 and len(always) == 2 and always[0] != always[1]
    failed = summary.failures[0]
    assert "died 2 times" in failed.error and str(folder / "c_crash_always.wav") in failed.error
    assert (tmp_path / "out" / "b_crash_once.music.wav").is_file()
    assert not list((tmp_path / "out").glob("c_crash_always.*"))
    doc = manifest(tmp_path / "out")
    assert doc["summary"]["rendered"] == 2 and doc["summary"]["failed"] == 1


def test_unreachable_cluster_is_named(tmp_path):
    pytest.importorskip("ray")
    stems = make_stems(tmp_path / "stems", 1, seconds=0.6)
    code = subprocess.run(
        [
            sys.executable,
            "-m",
            "bnmusic_bridge",
            "batch",
            str(stems[0]),
            "--out",
            str(tmp_path / "o"),
            "--backend",
            "ray",
            "--address",
            "127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert code.returncode == 1
    assert "Ray cluster at 127.0.0.1:9 is unreachable" in code.stderr


def test_ray_is_imported_only_for_the_ray_backend():
    code = (
        "import sys, bnmusic_bridge.batch, bnmusic_bridge.frontends.cli, "
        "bnmusic_bridge.frontends.osc.server; assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_a_model_generator_asks_for_a_gpu_and_a_cluster_without_one_is_refused(
    tmp_path, ray_address
):
    from bnmusic_bridge.batch.ray_backend import gpus_for
    from bnmusic_bridge.errors import ParameterError

    assert gpus_for(REQUEST.replace(generator="riffusion")) == 1.0
    assert gpus_for(REQUEST) == 0.0  # the procedural generator runs on CPUs
    stems = make_stems(tmp_path / "stems", 1, seconds=0.6)
    with pytest.raises(ParameterError, match=r"1 GPU per worker.*has 0.*--ray-gpus 0"):
        run_batch(
            stems,
            tmp_path / "o",
            REQUEST.replace(generator="riffusion"),
            FAST,
            backend="ray",
            ray_address=ray_address,
        )
