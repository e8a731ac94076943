"""File names a DAW can produce (en dash, CJK, emoji, spaces, parentheses, quotes) through
every output format, read back with independent readers: render, batch and OSC."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from bnmusic_bridge.errors import ParameterError
from bnmusic_bridge.export.reaper import track_chunk
from bnmusic_bridge.frontends.cli import main
from bnmusic_bridge.frontends.osc.testing import (
    OscClient,
    fake_server_config,
    register_fake_generator,
    write_noise,
)

try:
    from .test_reaper import parse
except ImportError:  # tests/ run as plain modules (no package)
    from test_reaper import parse

NAMES = ["tram – bounce (1)", "電車 ホーム", '🚋 café\'s "take" 2']
LANES = "json,csv,midi,reaper,summary"


def midi_text(path: Path) -> tuple[str, str]:
    """Track name and text meta event, decoded as UTF-8 (and readable by default mido)."""
    mid = mido.MidiFile(str(path), charset="utf-8")
    metas = {m.type: m for m in mid.tracks[0] if m.is_meta}
    # The default (latin-1) reader must not fail on the same file either.
    mido.MidiFile(str(path))
    return metas["track_name"].name, metas["text"].text


def strings_in(doc: object) -> list[str]:
    if isinstance(doc, str):
        return [doc]
    if isinstance(doc, dict):
        doc = list(doc.values())
    if isinstance(doc, list):
        return [s for item in doc for s in strings_in(item)]
    return []


def check_outputs(folder: Path, stem: str, suffix: str = ".wav") -> None:
    """Every output of ``stem`` in ``folder`` exists under its exact name and reads back."""
    noise_frames = None
    for kind in ("music", "blended"):
        info = sf.info(str(folder / f"{stem}.{kind}{suffix}"))
        noise_frames = noise_frames or info.frames
        assert info.frames == noise_frames
    report = json.loads((folder / f"{stem}.report.json").read_text(encoding="utf-8"))
    assert Path(report["outputs"]["music"]).name == f"{stem}.music{suffix}"
    rows = list(csv.reader(io.StringIO((folder / f"{stem}.lambda.csv").read_text("utf-8"))))
    assert rows[0][:2] == ["time_s", "gain_db"] and len(rows) >= 3
    lane = json.loads((folder / f"{stem}.lambda.json").read_text(encoding="utf-8"))
    assert lane
    name, text = midi_text(folder / f"{stem}.lambda.mid")
    assert name.startswith("lambda CC11") and stem in text
    rpp = parse((folder / f"{stem}.lambda.reaper.rpp").read_text(encoding="utf-8"))
    # the noise on its own track, the music under it
    noise_track, track = [c for c in rpp.children if c.tag == "TRACK"]
    assert noise_track.line("NAME") == [stem]
    source = track.child("ITEM").child("SOURCE")
    assert Path(source.line("FILE")[0]) == (folder / f"{stem}.music{suffix}").resolve()
    assert track.line("NAME")[0] == f"{stem}.music ({'lambda'})"
    summary = (folder / f"{stem}.lambda.summary.md").read_text(encoding="utf-8")
    assert stem in summary
    # the plot link resolves: a CommonMark destination, <...> when the name has spaces
    [dest] = re.findall(r"!\[[^\]]*\]\((<[^>]*>|[^)\s]*)\)", summary)
    assert (folder / dest.strip("<>")).is_file(), dest


@pytest.mark.parametrize("stem", NAMES)
def test_render_writes_every_format_under_any_name(tmp_path: Path, capsys, stem: str) -> None:
    generator = register_fake_generator()
    src = write_noise(tmp_path / f"{stem}.wav", seconds=1.0)
    out = tmp_path / "out ✓"
    args = ["render", str(src), "--generator", generator, "--lane", LANES, "--out", str(out)]
    assert main([*args, "-q", "--format", "flac", "--peak-mode", "lane", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["outputs"]["music"] == str(out / f"{stem}.music.flac")
    check_outputs(out, stem, ".flac")


def test_midi_text_is_utf8_and_round_trips() -> None:
    from bnmusic_bridge.export.midi import lane_midi

    data = lane_midi(np.array([0.0, 1.0]), np.array([0.0, 3.0]), description="source 電車 – 🚋")
    assert "source 電車 – 🚋".encode() in data
    mid = mido.MidiFile(file=io.BytesIO(data), charset="utf-8")
    texts = [m.text for m in mid.tracks[0] if m.type == "text"]
    assert texts and texts[0].endswith("source 電車 – 🚋")


def test_reaper_path_with_every_quote_kind_is_refused_not_mangled(tmp_path: Path) -> None:
    from bnmusic_bridge.export.reaper import reaper_envelope

    env = reaper_envelope(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    ok = track_chunk(env, music_path=tmp_path / 'it\'s "x".wav', length_s=1.0)
    file_line = parse(ok).child("ITEM").child("SOURCE").line("FILE")
    assert file_line == [str(tmp_path / 'it\'s "x".wav')]
    with pytest.raises(ParameterError, match="quote"):
        track_chunk(env, music_path=tmp_path / "a'b\"c`d.wav", length_s=1.0)


def test_batch_manifest_holds_the_names(tmp_path: Path, capsys) -> None:
    generator = register_fake_generator()
    stems = tmp_path / "stems (bounced)"
    stems.mkdir()
    for i, stem in enumerate(NAMES):
        write_noise(stems / f"{stem}.wav", seconds=0.8, seed=i)
    out = tmp_path / "renders"
    rc = main(
        ["batch", str(stems), "--generator", generator, "--lane", LANES, "--out", str(out), "-q"]
    )
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    strings = set(strings_in(manifest))
    for stem in NAMES:
        assert str(stems / f"{stem}.wav") in strings
        check_outputs(out, stem)


def test_osc_render_of_a_cjk_name_answers_done_with_the_paths(tmp_path: Path) -> None:
    import dataclasses

    from bnmusic_bridge.frontends.osc.server import OscServer

    root = tmp_path / "電車 (root) – 1"
    root.mkdir()
    config = fake_server_config(root)
    server = OscServer(dataclasses.replace(config)).start()
    try:
        for i, stem in enumerate(NAMES):
            write_noise(root / f"{stem}.wav", seconds=0.8, seed=i)
            with OscClient(server.udp_address) as c:
                c.send("/bnmusic/render_ex", f"j{i}", f"{stem}.wav", "", "lane_formats", LANES)
                done = c.wait("/bnmusic/done", f"j{i}", timeout_s=60)
            assert done.values[1] == str((root / f"{stem}.music.wav").resolve())
            pairs = dict(zip(done.values[12::2], done.values[13::2], strict=True))
            assert Path(pairs["lambda_midi"]).name == f"{stem}.lambda.mid"
            check_outputs(root, stem)
    finally:
        server.stop(timeout_s=10)


def test_a_lane_encoder_failure_is_one_clear_error_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import bnmusic_bridge.export.write as write_mod

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise UnicodeEncodeError("latin-1", "–", 0, 1, "ordinal not in range(256)")

    monkeypatch.setattr(write_mod, "lane_outputs", broken)
    src = write_noise(tmp_path / f"{NAMES[0]}.wav", seconds=0.8)
    out = tmp_path / "out"
    args = ["render", str(src), "--generator", register_fake_generator(), "--out", str(out)]
    assert main([*args, "--lane", "midi", "--no-plot", "-q"]) == 1
    err = capsys.readouterr().err
    assert "could not encode the lane files" in err and f"{NAMES[0]}.lambda.mid" in err
    assert "Traceback" not in err
    assert not out.exists() or not list(out.iterdir())
