"""``~`` and environment variables in every path the local user gives (CLI paths,
``serve --root``, preset paths, batch inputs), quoted or not; never in paths an OSC
client sends (those stay literal, confined to the root)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bnmusic_bridge.frontends.cli import main, make_parser
from bnmusic_bridge.frontends.osc.cli import server_config
from bnmusic_bridge.frontends.osc.server import OscServer
from bnmusic_bridge.frontends.osc.testing import (
    OscClient,
    fake_server_config,
    register_fake_generator,
    write_noise,
)
from bnmusic_bridge.presets import load_preset
from bnmusic_bridge.request import expand_path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake home folder (``~``) and ``$BNM_SESSION`` pointing into it."""
    h = tmp_path / "home"
    (h / "Music" / "My Project").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.setenv("BNM_SESSION", str(h / "Music" / "My Project"))
    monkeypatch.delenv("BNM_UNSET", raising=False)
    return h


def test_expand_path_rules(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    session = home / "Music" / "My Project"
    assert expand_path("~/Music/My Project") == session
    assert expand_path("$BNM_SESSION/a b.wav") == session / "a b.wav"
    assert expand_path("${BNM_SESSION}/x") == session / "x"
    assert expand_path("$BNM_UNSET/x") == Path("$BNM_UNSET/x")  # unset: left as written
    assert expand_path("plain/rel.wav") == Path("plain/rel.wav")
    # a file whose literal name holds the ~ or $ is kept as it is
    monkeypatch.chdir(tmp_path)
    (tmp_path / "~").mkdir()
    assert expand_path("~") == Path("~")
    (tmp_path / "$BNM_SESSION.wav").write_bytes(b"")
    assert expand_path("$BNM_SESSION.wav") == Path("$BNM_SESSION.wav")


def test_render_expands_quoted_tilde_and_variables(home: Path, capsys) -> None:
    generator = register_fake_generator()
    write_noise(home / "Music" / "My Project" / "tram 1.wav", seconds=0.8)
    args = [
        "render", "~/Music/My Project/tram 1.wav", "--out", "$BNM_SESSION/renders",
        "--generator", generator, "--no-plot", "-q", "--json",
    ]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    out = home / "Music" / "My Project" / "renders"
    assert summary["outputs"]["music"] == str(out / "tram 1.music.wav")
    assert (out / "tram 1.music.wav").is_file()


def test_batch_expands_inputs_globs_and_out(home: Path, capsys) -> None:
    generator = register_fake_generator()
    for i in range(2):
        write_noise(home / "Music" / "My Project" / f"s{i}.wav", seconds=0.8, seed=i)
    args = [
        "batch", "~/Music/My Project/*.wav", "--out", "${BNM_SESSION}/batch",
        "--generator", generator, "-q",
    ]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    manifest = json.loads((home / "Music" / "My Project" / "batch" / "manifest.json").read_text())
    assert manifest["inputs"] == ["~/Music/My Project/*.wav"]  # as the user typed it
    out = home / "Music" / "My Project" / "batch"
    assert (out / "s0.music.wav").is_file() and (out / "s1.music.wav").is_file()


def test_serve_root_and_out_expand(home: Path) -> None:
    args = make_parser().parse_args(
        ["serve", "--root", "~/Music/My Project", "--read-root", "$BNM_SESSION", "--port", "0"]
    )
    config = server_config(args)
    assert tuple(config.roots) == (home / "Music" / "My Project",)
    assert tuple(config.read_roots) == (home / "Music" / "My Project",)


def test_preset_paths_expand(home: Path) -> None:
    track = home / "Music" / "My Project" / "track.wav"
    write_noise(track, seconds=0.8)
    preset = home / "mine.toml"
    preset.write_text(
        'name = "mine"\n[generator]\nname = "track"\nmusic = "$BNM_SESSION/track.wav"\n',
        encoding="utf-8",
    )
    loaded = load_preset("~/mine.toml")
    assert loaded.request.music == str(track)
    args = make_parser().parse_args(["presets", "list", "--presets-dir", "~"])
    assert args.presets_dir == home


def test_osc_client_paths_stay_literal_and_confined(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's user has ~/secret.wav; a client asking for "~/secret.wav" or
    # "$HOME/secret.wav" must not get it: both are names inside the root.
    write_noise(home / "secret.wav", seconds=0.8)
    root = tmp_path / "root"
    root.mkdir()
    write_noise(root / "noise.wav", seconds=0.8)
    config = fake_server_config(root)
    server = OscServer(dataclasses.replace(config)).start()
    try:
        with OscClient(server.udp_address) as c:
            for job, path in (("t1", "~/secret.wav"), ("t2", "$HOME/secret.wav")):
                c.send("/bnmusic/render", job, path)
                err = c.wait("/bnmusic/error", job, timeout_s=30)
                assert err.values[1] == "path_not_found", err.values
            c.send("/bnmusic/render", "t3", str(home / "secret.wav"))
            assert c.wait("/bnmusic/error", "t3", timeout_s=30).values[1] == "path_outside_root"
    finally:
        server.stop(timeout_s=10)
    assert not list(home.glob("secret.*.wav"))
