"""The ``bnmusic`` program's own exit: status and output survive the fast exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import soundfile as sf
from noise_signals import clacks

REPO = Path(__file__).resolve().parents[1]


def _bnmusic(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bnmusic_bridge", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def test_error_status_and_message_survive_the_fast_exit(tmp_path):
    proc = _bnmusic("render", str(tmp_path / "missing.wav"), "--out", str(tmp_path))
    assert proc.returncode == 1
    assert "missing.wav" in proc.stderr


def test_piped_json_summary_is_complete(tmp_path):
    stem = tmp_path / "n.wav"
    sf.write(stem, clacks(1.5, seed=2), 44100)
    proc = _bnmusic("render", str(stem), "--out", str(tmp_path / "o"), "--no-plot", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # flushed in full before the process ended
    assert Path(summary["outputs"]["report"]).is_file()
    report = json.loads(Path(summary["outputs"]["report"]).read_text())
    assert "startup" in report["timings_s"]
