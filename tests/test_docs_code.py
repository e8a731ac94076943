"""Docs that match the code: the lane rule (JSON and CSV always), ``presets save``
where ``--preset`` finds it, the weights command, the pedalboard example's names."""

from __future__ import annotations

import json
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bnmusic_bridge.frontends.cli import main
from bnmusic_bridge.frontends.osc.testing import register_fake_generator, write_noise
from bnmusic_bridge.presets import default_user_presets_dir, load_preset, read_preset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv("BNMUSIC_PRESETS_DIR", raising=False)
    return home


def test_cli_lane_formats_always_include_json_and_csv(tmp_path: Path, capsys) -> None:
    src = write_noise(tmp_path / "hvac.wav", seconds=0.8)
    args = ["render", str(src), "--generator", register_fake_generator(), "--no-plot"]
    assert main([*args, "--lane", "midi,reaper", "-q", "--json"]) == 0
    outputs = json.loads(capsys.readouterr().out)["outputs"]
    assert {"lambda_json", "lambda_csv", "lambda_midi"} <= set(outputs)
    for suffix in (".lambda.json", ".lambda.csv", ".lambda.mid", ".lambda.reaper.rpp"):
        assert (tmp_path / f"hvac{suffix}").is_file(), suffix
    # the rule is written where users read it
    lanes_doc = (REPO / "docs" / "lanes.md").read_text(encoding="utf-8")
    assert "JSON and CSV are always written" in lanes_doc
    assert "JSON and CSV are always written" in (REPO / "README.md").read_text(encoding="utf-8")


def test_presets_save_by_name_goes_where_preset_finds_it(config_home: Path, capsys) -> None:
    assert main(["presets", "save", "mine", "--preset", "jazz-elevator", "--smr-db", "18"]) == 0
    out = capsys.readouterr().out
    target = default_user_presets_dir() / "mine.toml"
    assert target == config_home / "bnmusic" / "presets" / "mine.toml"
    assert f"saved {target}; --preset mine finds it" in out
    assert load_preset("mine").request.smr_db == 18.0
    assert load_preset("mine").path == target
    # NAME.toml is a name too
    assert main(["presets", "save", "other.toml"]) == 0
    assert (target.parent / "other.toml").is_file()


def test_presets_save_to_a_folder_says_how_to_use_it(
    config_home: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["presets", "save", "./here.toml"]) == 0
    out = capsys.readouterr().out
    written = Path("here.toml").resolve()
    assert read_preset(written).name == "here"
    assert "--preset here does not look in" in out and f"--preset {written.name}" in out
    assert "--presets-dir" in out
    # --presets-dir folders are where --preset looks: saving there says so
    folder = tmp_path / "mine"
    folder.mkdir()
    assert main(["presets", "save", "x", "--presets-dir", str(folder)]) == 0
    assert "--preset x finds it" in capsys.readouterr().out
    assert (folder / "x.toml").is_file()


def test_weights_command_is_hf_download_with_one_exclude_per_pattern() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "huggingface-cli download" not in text
    for command in re.findall(r"^hf download .*(?:\n    .*)*", text, flags=re.M):
        # hf download reads a bare word after --exclude PATTERN as a file name to fetch
        tokens = command.replace("\\\n", " ").split()
        for i, tok in enumerate(tokens[:-1]):
            if tok == "--exclude":
                after = tokens[i + 2] if i + 2 < len(tokens) else "--"
                assert after.startswith("--"), command
    from bnmusic_bridge.generators.riffusion import MODEL_HOWTO

    assert "hf download" in MODEL_HOWTO and "huggingface-cli" not in MODEL_HOWTO


def run_example(argv: list[str]) -> None:
    script = REPO / "examples" / "pedalboard_noise_to_music.py"
    old = sys.argv
    sys.argv = [str(script), *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = old


def test_pedalboard_example_uses_its_own_name_and_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    noise = write_noise(tmp_path / "train.wav", seconds=1.0)
    run_example([str(noise)])
    out = tmp_path / "train.pedalboard-blended.wav"
    assert out.is_file() and not (tmp_path / "train.music.wav").exists()
    before = out.read_bytes()
    with pytest.raises(SystemExit, match="exists already; pass --force"):
        run_example([str(noise)])
    assert out.read_bytes() == before
    run_example([str(noise), "--force"])
    music, rate = sf.read(out, always_2d=True)
    assert rate == 44100 and np.any(music)
