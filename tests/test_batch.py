"""Batch rendering: a batch goes on past a corrupt file and lists it, an interrupted batch
resumes without redoing finished stems, changed inputs or parameters render again, and
the Ray backend explains how to install Ray (tests/test_ray.py runs it on a real local
Ray instance)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from bnmusic_bridge.batch import (
    MANIFEST_NAME,
    StemTask,
    backends,  # runs the tasks: tests patch its render_task
    expand_inputs,
    plan_batch,
    render_task,
    run_batch,
    stem_names,
)
from bnmusic_bridge.errors import ParameterError
from bnmusic_bridge.export import ExportOptions
from bnmusic_bridge.frontends.cli import main
from bnmusic_bridge.request import RenderRequest

RATE = 44_100
FAST = ExportOptions(plot=False, lane_formats=("json",))
"""Short stems, no PNG: keeps 20 renders to a few seconds."""
REQUEST = RenderRequest(prompt="lo-fi", seed=3)


def ticks(seconds: float, seed: int) -> np.ndarray:
    """Ticks every 0.25-0.5 s over a rumble (the period depends on the seed); mono float32."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = 0.05 * np.convolve(rng.standard_normal(n), np.ones(100) / 100, mode="same")
    burst = int(0.03 * RATE)
    env = np.exp(-np.arange(burst) / (0.006 * RATE))
    period = int(RATE * (0.25 + 0.25 * rng.random()))
    for start in range(0, n - burst, period):
        out[start : start + burst] += 0.4 * env * rng.standard_normal(burst)
    return (out / np.max(np.abs(out)) * 0.5).astype(np.float32)


def make_stems(folder: Path, count: int, seconds: float = 1.0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        p = folder / f"stem{k:02d}.wav"
        soundfile.write(p, ticks(seconds, seed=k), RATE, subtype="PCM_16")
        paths.append(p)
    return paths


def manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))


@pytest.mark.slow
def test_batch_of_twenty_with_a_corrupt_file(tmp_path, capsys):
    stems = tmp_path / "stems"
    make_stems(stems, 19)
    corrupt = stems / "stem07_corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
    out = tmp_path / "out"
    code = main(
        [
            "batch",
            str(stems),
            "--out",
            str(out),
            "--preset",
            "lofi-commute",
            "--no-plot",
            "--lane",
            "json",
            "--seed",
            "3",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1  # one stem failed
    assert "1 stem(s) failed" in captured.err and str(corrupt) in captured.err
    assert "19 rendered, 0 skipped" in captured.out
    doc = manifest(out)
    entries = {e["stem_name"]: e for e in doc["stems"]}
    assert len(entries) == 20 and doc["preset"] == "lofi-commute"
    assert doc["summary"]["rendered"] == 19 and doc["summary"]["failed"] == 1
    bad = entries["stem07_corrupt"]
    assert bad["status"] == "failed" and bad["error_code"] == "bad_audio"
    assert str(corrupt) in bad["error"] and bad["outputs"] == {}
    for name, e in entries.items():
        if name == "stem07_corrupt":
            continue
        assert e["status"] == "rendered"
        assert set(e["outputs"]) >= {"music", "blended", "report", "lambda_json"}
        assert all(Path(p).is_file() for p in e["outputs"].values())
        assert 0.0 <= e["coverage"] <= 1.0 and e["timings_s"]["total"] > 0
        assert e["parameters"]["seed"] == 3  # the flag beat the preset's seed
        assert e["parameters"]["effects"][0]["type"] == "HighShelfFilter"  # the preset's chain
        assert len(e["key"]) == 64 and len(e["input_sha256"]) == 64
    # The preset's output naming and formats were used.
    assert (out / "stem00.music.wav").is_file() and not (out / "stem00.png").exists()


def test_interrupted_batch_resumes_without_redoing_finished_stems(tmp_path, monkeypatch):
    stems = make_stems(tmp_path / "stems", 5)
    out = tmp_path / "out"
    real = backends.render_task
    calls: list[str] = []

    def interrupt_on_third(task: StemTask):
        calls.append(task.stem_name)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of stem 3
        return real(task)

    monkeypatch.setattr(backends, "render_task", interrupt_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_batch([str(tmp_path / "stems")], out, REQUEST, FAST)
    doc = manifest(out)
    assert [e["stem_name"] for e in doc["stems"]] == ["stem00", "stem01"]
    finished = {n: (out / f"{n}.music.wav").stat().st_mtime_ns for n in ("stem00", "stem01")}
    assert not (out / "stem02.music.wav").exists()

    calls.clear()
    monkeypatch.setattr(backends, "render_task", lambda t: (calls.append(t.stem_name), real(t))[1])
    summary = run_batch([str(tmp_path / "stems")], out, REQUEST, FAST)
    assert calls == ["stem02", "stem03", "stem04"]  # the finished two were not redone
    assert summary.count("skipped") == 2 and summary.count("rendered") == 3
    assert not summary.failures
    for name, mtime in finished.items():
        assert (out / f"{name}.music.wav").stat().st_mtime_ns == mtime
    doc = manifest(out)
    assert [e["status"] for e in doc["stems"]] == ["skipped"] * 2 + ["rendered"] * 3
    assert doc["stems"][0]["coverage"] is not None  # carried over from the report

    # A third run has nothing to do.
    calls.clear()
    assert run_batch(stems, out, REQUEST, FAST).count("skipped") == 5 and calls == []


def test_changed_input_or_parameters_render_again(tmp_path):
    stems = make_stems(tmp_path / "stems", 2)
    out = tmp_path / "out"
    run_batch(stems, out, REQUEST, FAST)
    # New content in one input: that stem's key changes, and its old outputs are in the way.
    soundfile.write(stems[1], ticks(1.0, seed=99), RATE, subtype="PCM_16")
    plan = plan_batch(stems, out, REQUEST, FAST)
    assert [r.stem_name for r in plan.skipped] == ["stem00"]
    assert [r.stem_name for r in plan.failed] == ["stem01"]
    assert "pass --force" in plan.failed[0].error
    # With force it renders again; a changed parameter renders everything again.
    forced = ExportOptions(plot=False, lane_formats=("json",), force=True)
    summary = run_batch(stems, out, REQUEST.replace(smr_db=18.0), forced)
    assert summary.count("rendered") == 2
    report = json.loads((out / "stem01.report.json").read_text())
    assert report["parameters"]["smr_db"] == 18.0


def test_inputs_files_folders_globs_and_missing(tmp_path):
    a = make_stems(tmp_path / "a", 2, seconds=0.6)
    b = make_stems(tmp_path / "b", 1, seconds=0.6)  # b/stem00.wav clashes with a/stem00.wav
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    out = tmp_path / "a" / "out"  # output folder inside an input folder
    make_stems(out, 1, seconds=0.6)
    files, problems = expand_inputs(
        [
            str(tmp_path / "a"),
            str(tmp_path / "b" / "*.wav"),
            str(a[0]),
            "missing.wav",
            str(tmp_path / "c*"),
        ],
        exclude=out,
    )
    assert files == [a[0].resolve(), a[1].resolve(), b[0].resolve()]
    assert problems == [
        ("missing.wav", "no such file or folder"),
        (str(tmp_path / "c*"), "no files match this pattern"),
    ]
    assert stem_names(files) == ["a__stem00", "stem01", "b__stem00"]


def test_render_task_is_a_pure_named_task(tmp_path):
    src = make_stems(tmp_path / "in", 1)[0]
    task = StemTask("x", str(src), str(tmp_path / "o"), REQUEST, FAST)
    result = render_task(task)
    assert result.status == "rendered" and result.error is None
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(
        Path(p).name for p in result.outputs.values()
    )
    again = render_task(task)  # outputs exist and force is off: a clear failure
    assert again.status == "failed" and again.error_code == "output_exists"
    missing = render_task(
        StemTask("y", str(tmp_path / "nope.wav"), str(tmp_path / "o"), REQUEST, FAST)
    )
    assert missing.status == "failed" and "nope.wav" in missing.error


def test_process_pool_gives_the_same_outputs(tmp_path):
    stems = make_stems(tmp_path / "stems", 2, seconds=0.6)
    one = run_batch(stems, tmp_path / "one", REQUEST, FAST, jobs=1)
    two = run_batch(stems, tmp_path / "two", REQUEST, FAST, jobs=2)
    assert one.count("rendered") == two.count("rendered") == 2
    for name in ("stem00", "stem01"):
        a, _ = soundfile.read(tmp_path / "one" / f"{name}.music.wav")
        b, _ = soundfile.read(tmp_path / "two" / f"{name}.music.wav")
        np.testing.assert_array_equal(a, b)


def test_ray_backend_without_ray_says_how_to_install(tmp_path, monkeypatch):
    stems = make_stems(tmp_path / "stems", 1, seconds=0.6)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ParameterError, match=r"pip install 'bnmusic-bridge\[ray\]'"):
        run_batch(stems, tmp_path / "out", REQUEST, FAST, backend="ray")


def test_batch_needs_out_and_reports_missing_inputs(tmp_path, capsys):
    assert main(["batch", str(tmp_path)]) == 1
    assert "--out" in capsys.readouterr().err
    code = main(["batch", str(tmp_path / "none*.wav"), "--out", str(tmp_path / "o")])
    assert code == 1
    err = capsys.readouterr().err
    assert "no files match this pattern" in err
    doc = manifest(tmp_path / "o")
    assert doc["input_errors"][0]["input"] == str(tmp_path / "none*.wav")
