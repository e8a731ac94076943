"""`bnmusic render` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import soundfile as sf
from noise_signals import clacks

from bnmusic_bridge.frontends.cli import main


def test_help_does_not_import_torch():
    code = "import sys; from bnmusic_bridge.frontends.cli import make_parser; make_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_render_writes_next_to_input_and_never_overwrites(tmp_path, capsys):
    src = tmp_path / "elevator.flac"
    sf.write(src, clacks(1.2, 44100), 44100, subtype="PCM_16")
    assert main(["render", str(src), "--seed", "3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["outputs"]["music"] == str(tmp_path / "elevator.music.wav")
    music = tmp_path / "elevator.music.wav"
    assert sf.info(music).frames == sf.info(src).frames
    before = music.read_bytes()
    assert main(["render", str(src), "--seed", "4"]) == 1
    err = capsys.readouterr().err
    assert "exist already" in err and "--force" in err
    assert music.read_bytes() == before
    assert main(["render", str(src), "--seed", "4", "--force", "-q"]) == 0
    assert music.read_bytes() != before


def test_render_options(tmp_path, capsys):
    src = tmp_path / "hum.wav"
    sf.write(src, np.stack([clacks(1.0), clacks(1.0, seed=2)]).T, 44100)
    out = tmp_path / "renders"
    rc = main([
        "render", str(src), "--out", str(out), "--bit-depth", "16", "--format", "flac",
        "--threshold-model", "spreading", "--no-plot", "--prompt", "ambient pad", "-q",
    ])
    assert rc == 0
    assert sf.info(out / "hum.music.flac").subtype == "PCM_16"
    assert not (out / "hum.png").exists()
    report = json.loads((out / "hum.report.json").read_text())
    assert report["threshold_model"] == "spreading" and report["prompt"] == "ambient pad"


def test_bad_input_errors_name_the_file(tmp_path, capsys):
    missing = tmp_path / "missing.wav"
    assert main(["render", str(missing)]) == 1
    assert f"{missing}: no such file" in capsys.readouterr().err
    bad = tmp_path / "text.wav"
    bad.write_text("hello")
    assert main(["render", str(bad)]) == 1
    assert "text.wav" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.wav"]


def test_flags_override_preset_and_none_lifts_the_ceiling():
    from bnmusic_bridge.frontends.args import build_request
    from bnmusic_bridge.frontends.cli import make_parser

    args = make_parser().parse_args(["render", "x.wav", "--preset", "lofi-commute", "--max-loudness-lu", "none", "--seed", "9"])
    req = build_request(args)
    assert req.max_loudness_lu is None and req.seed == 9
    args = make_parser().parse_args(["render", "x.wav", "--max-loudness-lu", "3"])
    assert build_request(args).max_loudness_lu == 3.0


def test_unusable_output_folder_is_refused_before_rendering(tmp_path, capsys):
    src = tmp_path / "n.wav"
    sf.write(src, clacks(1.0), 44100)
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    assert main(["render", str(src), "--out", str(blocker)]) == 1
    assert "afile is not a folder" in capsys.readouterr().err
    assert main(["render", str(src), "--out", str(blocker / "sub")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_write_failure_is_one_clear_error(tmp_path, monkeypatch):
    import bnmusic_bridge.audio as audio_mod
    from bnmusic_bridge.errors import OutputError

    def full_disk(tmp: str) -> None:
        raise OSError(28, "No space left on device")

    import pytest

    with pytest.raises(OutputError, match="x.wav: writing failed \\(No space left on device\\)"):
        audio_mod._atomic(tmp_path / "x.wav", full_disk, force=False)
    assert list(tmp_path.iterdir()) == []


def test_sigterm_stops_a_batch_cleanly(tmp_path):
    import os
    import signal
    import time

    stems = tmp_path / "in"
    stems.mkdir()
    for k in range(6):
        sf.write(stems / f"s{k}.wav", clacks(3.0, seed=k), 44100)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bnmusic_bridge", "batch", str(stems), "--out", str(out), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob("*.report.json")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err.lower()
    assert not [p for p in out.iterdir() if ".tmp" in p.name]  # no partial files
    assert os.path.exists(out / "manifest.json")
