"""Reaper envelope chunk, track template and project, read back with a plain parser of
this test's own (balanced ``<``/``>`` blocks, tokens with Reaper's quoting)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from bnmusic_bridge.errors import ParameterError
from bnmusic_bridge.export import ExportOptions, write_outputs
from bnmusic_bridge.export.lanes import LaneOptions, interpolate_lane
from bnmusic_bridge.export.reaper import (
    reaper_envelope,
    result_reaper_files,
    track_chunk,
    volume_envelope_chunk,
)

try:
    from .test_lanes import FRAME_RATE_HZ, smooth_lane, synthetic_result
except ImportError:  # tests/ run as plain modules (no package)
    from test_lanes import FRAME_RATE_HZ, smooth_lane, synthetic_result

TOKEN = re.compile(r'"[^"]*"|\'[^\']*\'|`[^`]*`|\S+')


@dataclass
class Block:
    tag: str
    args: list[str]
    lines: list[list[str]] = field(default_factory=list)
    children: list[Block] = field(default_factory=list)

    def child(self, tag: str) -> Block:
        found = [c for c in self.children if c.tag == tag]
        assert len(found) == 1, (tag, [c.tag for c in self.children])
        return found[0]

    def line(self, key: str) -> list[str]:
        found = [ln for ln in self.lines if ln[0] == key]
        assert len(found) == 1, (key, found)
        return found[0][1:]


def unquote(token: str) -> str:
    return token[1:-1] if token[:1] in "\"'`" and token[-1:] == token[:1] else token


def parse(text: str) -> Block:
    """One top-level block; raises AssertionError on unbalanced or stray text."""
    stack: list[Block] = []
    root: Block | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("<"):
            tokens = [unquote(t) for t in TOKEN.findall(line[1:])]
            block = Block(tokens[0], tokens[1:])
            if stack:
                stack[-1].children.append(block)
            else:
                assert root is None, "more than one top-level block"
                root = block
            stack.append(block)
        elif line == ">":
            assert stack, "'>' without an open block"
            stack.pop()
        else:
            assert stack, f"text outside any block: {line!r}"
            if line.startswith("|"):  # notes text, kept whole
                stack[-1].lines.append(["|", line[1:]])
            else:
                stack[-1].lines.append([unquote(t) for t in TOKEN.findall(line)])
    assert not stack, f"unclosed block(s): {[b.tag for b in stack]}"
    assert root is not None
    return root


def points(env: Block) -> tuple[np.ndarray, np.ndarray, list[int]]:
    pts = [ln for ln in env.lines if ln[0] == "PT"]
    assert pts and all(len(p) == 4 for p in pts)
    return (
        np.array([float(p[1]) for p in pts]),
        np.array([float(p[2]) for p in pts]),
        [int(p[3]) for p in pts],
    )


def ext_offset_db(env: Block) -> float:
    return float(env.child("EXT").line("bnmusic_offset_db")[0])


def check_envelope(
    env: Block, times_s: np.ndarray, gain_db: np.ndarray, position_s: float, tol_db: float
) -> float:
    assert env.tag == "VOLENV2"
    assert env.line("ACT")[0] == "1" and not any(ln[0] == "VOLTYPE" for ln in env.lines)
    t, v, shapes = points(env)
    assert np.all(np.diff(t) > 0), "PT times must increase"
    assert set(shapes) == {0} and np.all(v > 0)
    assert t[0] == pytest.approx(position_s + times_s[0]) and t[-1] == pytest.approx(
        position_s + times_s[-1]
    )
    offset_db = ext_offset_db(env)
    # Reaper plays straight lines in amplitude between the points of this envelope.
    played_db = interpolate_lane(
        t - position_s, 20 * np.log10(v) + offset_db, times_s, interpolation="linear"
    )
    assert np.max(np.abs(played_db - gain_db)) <= tol_db + 1e-6
    return offset_db


def test_envelope_chunk_decodes_back_to_the_lane():
    times_s = np.arange(4000) / FRAME_RATE_HZ
    gain_db = smooth_lane(4000, seed=2) - 4.0
    assert gain_db.max() < 6.0
    text = volume_envelope_chunk(reaper_envelope(times_s, gain_db, tolerance_db=0.1))
    env = parse(text)
    assert check_envelope(env, times_s, gain_db, 0.0, 0.1) == 0.0
    assert len(points(env)[0]) < 4000 / 8


def test_loud_lane_is_lowered_into_reapers_range_and_the_item_makes_up(tmp_path):
    times_s = np.arange(2000) / FRAME_RATE_HZ
    gain_db = smooth_lane(2000, seed=4) + 14.0  # well above +6 dB
    env = reaper_envelope(times_s, gain_db, tolerance_db=0.05, position_s=12.5)
    assert env.offset_db > 0 and env.values.max() <= 2.0 + 1e-12
    music = tmp_path / "song.music.wav"
    track = parse(
        track_chunk(env, music_path=music, length_s=20.0, position_s=12.5, name='say "hi"')
    )
    assert track.tag == "TRACK" and track.line("NAME") == ['say "hi"']
    offset_db = check_envelope(track.child("VOLENV2"), times_s, gain_db, 12.5, 0.05)
    assert offset_db == pytest.approx(env.offset_db)
    item = track.child("ITEM")
    assert float(item.line("POSITION")[0]) == 12.5 and float(item.line("LENGTH")[0]) == 20.0
    assert 20 * np.log10(float(item.line("VOLPAN")[0])) == pytest.approx(offset_db, abs=1e-6)
    source = item.child("SOURCE")
    assert source.args == ["WAVE"] and source.line("FILE") == [str(music)]


def test_result_files_name_the_music_stem_and_the_session(tmp_path):
    res = synthetic_result(7.0)
    opts = LaneOptions(
        session_bpm=96.0, time_signature=(6, 8), stem_position_s=3.0, tolerance_db=0.2
    )
    files = result_reaper_files(res, opts, music_path=tmp_path / "a b.music.flac")
    assert set(files) == {"reaper-env", "reaper-track", "reaper-project"}
    project = parse(files["reaper-project"].decode("utf-8"))
    assert project.tag == "REAPER_PROJECT"
    assert project.line("TEMPO") == ["96", "6", "8"] and project.line("SAMPLERATE")[0] == "8000"
    noise_track, track = [c for c in project.children if c.tag == "TRACK"]
    assert parse(files["reaper-track"].decode("utf-8")) == track
    assert noise_track.line("NAME") == ["hvac"]
    env = parse(files["reaper-env"].decode("utf-8"))
    assert env == track.child("VOLENV2")
    check_envelope(env, res.lane_times_s, res.lane_gain_db, 3.0, 0.2)
    item = track.child("ITEM")
    assert float(item.line("LENGTH")[0]) == pytest.approx(7.0)
    source = item.child("SOURCE")
    assert source.args == ["FLAC"] and source.line("FILE") == [
        str((tmp_path / "a b.music.flac").resolve())
    ]
    notes = item.child("NOTES")
    assert any("dB" in ln[1] for ln in notes.lines)


def test_write_outputs_points_the_track_at_the_written_music(tmp_path):
    res = synthetic_result(3.0, channels=2)
    opts = ExportOptions(lane_formats=("reaper",), plot=False, file_type="flac", bit_depth=16)
    paths = write_outputs(res, tmp_path / "out", stem_name="train", options=opts)
    track = parse(paths.lanes["reaper-track"].read_text())
    file_token = track.child("ITEM").child("SOURCE").line("FILE")[0]
    assert Path(file_token) == paths.music.resolve() and Path(file_token).exists()


def test_unknown_source_type_and_bad_length_are_refused(tmp_path):
    env = reaper_envelope(np.arange(10) / 100, np.zeros(10))
    with pytest.raises(ParameterError, match="source type"):
        track_chunk(env, music_path=tmp_path / "x.music.caf", length_s=1.0)
    with pytest.raises(ParameterError, match="length_s"):
        track_chunk(env, music_path=tmp_path / "x.music.wav", length_s=0.0)


def test_parser_catches_unbalanced_text():
    # the parser the other tests rely on must fail where Reaper would
    good = volume_envelope_chunk(reaper_envelope(np.arange(10) / 100, np.zeros(10)))
    with pytest.raises(AssertionError):
        parse(good.rstrip().removesuffix(">"))
    with pytest.raises(AssertionError):
        parse(good + ">\n")
    res = dataclasses.replace(synthetic_result(2.0), lane_gain_db=np.full(200, -6.0))
    env = parse(result_reaper_files(res)["reaper-env"].decode("utf-8"))
    t, v, _ = points(env)
    assert t.size == 2 and np.allclose(20 * np.log10(v), -6.0)


# ---------------------------------------------------------------- the project (issue 15)


def _render_project(
    tmp_path: Path, channels: int = 1, position_s: float = 2.0
) -> tuple[Path, object]:
    import soundfile as sf

    from bnmusic_bridge.pipeline import render_file

    rate = 44100
    rng = np.random.default_rng(5)
    noise = 0.1 * rng.standard_normal((int(1.5 * rate), channels))
    src = tmp_path / "tram – bounce (1).wav"
    sf.write(src, noise, rate)
    result = render_file(src)
    opts = ExportOptions(
        lane_formats=("reaper",), plot=False, lanes=LaneOptions(stem_position_s=position_s)
    )
    paths = write_outputs(result, tmp_path / "out", stem_name="tram", options=opts)
    return src, paths


def test_project_holds_the_noise_track_with_the_music_track_under_it(tmp_path):
    src, paths = _render_project(tmp_path, channels=1, position_s=2.0)
    text = paths.lanes["reaper-project"].read_text(encoding="utf-8")
    project = parse(text)
    tracks = [c for c in project.children if c.tag == "TRACK"]
    assert len(tracks) == 2
    noise_track, music_track = tracks
    noise_item, music_item = noise_track.child("ITEM"), music_track.child("ITEM")
    assert Path(noise_item.child("SOURCE").line("FILE")[0]) == src.resolve()
    assert Path(music_item.child("SOURCE").line("FILE")[0]) == paths.music.resolve()
    # Same start, same length: sample-aligned (the music has the noise's length in samples).
    assert noise_item.line("POSITION") == music_item.line("POSITION") == ["2.000000"]
    assert noise_item.line("LENGTH") == music_item.line("LENGTH")
    assert float(music_item.line("LENGTH")[0]) * 44100 == pytest.approx(1.5 * 44100, abs=0.05)
    # The lambda envelope is on the music track only; the noise plays at unity.
    assert [c.tag for c in noise_track.children] == ["ITEM"]
    assert "VOLENV2" in [c.tag for c in music_track.children]
    assert float(noise_item.line("VOLPAN")[0]) == 1.0
    assert noise_track.line("NAME") == ["tram – bounce (1)"]


def test_project_reads_back_with_the_rpp_package(tmp_path):
    rpp = pytest.importorskip("rpp", reason="pip install rpp: an independent .rpp reader")
    src, paths = _render_project(tmp_path, channels=6, position_s=0.5)
    project = rpp.loads(paths.lanes["reaper-project"].read_text(encoding="utf-8"))
    assert project.tag == "REAPER_PROJECT"
    noise_track, music_track = project.findall("TRACK")

    def value(element, key):
        [found] = [c for c in element.children if isinstance(c, list) and c[0] == key]
        return found[1:]

    assert value(noise_track, "NCHAN") == value(music_track, "NCHAN") == ["6"]
    n_item, m_item = noise_track.find("ITEM"), music_track.find("ITEM")
    assert value(n_item, "POSITION") == value(m_item, "POSITION") == ["0.500000"]
    assert value(n_item, "LENGTH") == value(m_item, "LENGTH")
    assert Path(value(n_item.find("SOURCE"), "FILE")[0]) == src.resolve()
    assert noise_track.find("VOLENV2") is None and music_track.find("VOLENV2") is not None


# ------------------------------------------------------------ the Reaper script (issue 15)

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "reaper" / "bnmusic_render_selected.lua"


def test_reaper_script_is_one_self_contained_file():
    text = SCRIPT.read_text(encoding="utf-8")
    code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("--"))
    assert "../osc_client" not in code and "examples/" not in code and "script_dir" not in code
    assert "dofile" not in code and "loadfile" not in code
    # The only module it may require is LuaSocket (optional); the Python fallback is
    # embedded and uses the standard library only.
    assert set(re.findall(r"require,?\s*\(?\s*\"([^\"]+)\"", code)) <= {"socket"}
    client = _embedded_client()
    imports = set(re.findall(r"^import (.+)$", client, re.M))
    assert imports == {"os, socket, struct, sys, time"}
    assert "from " not in client.split("DONE =")[0]


def _embedded_client() -> str:
    text = SCRIPT.read_text(encoding="utf-8")
    return text.split("local PY_CLIENT = [==[\n", 1)[1].split("]==]", 1)[0]


def _oscdump(messages: list[bytes]) -> list[str]:
    import shutil
    import socket
    import subprocess
    import time

    if shutil.which("oscdump") is None:
        pytest.skip("oscdump (liblo-tools) not installed")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        ["oscdump", "-L", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        time.sleep(0.5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for m in messages:
                s.sendto(m, ("127.0.0.1", port))
        time.sleep(0.5)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    # Each line: "<timetag> <address> <types> <args...>"; drop the time tag.
    return [line.split(" ", 1)[1] for line in out.decode("utf-8").splitlines() if line.strip()]


NAME = "/stems/電車 ホーム – bounce (1).wav"


def test_embedded_python_osc_encoder_against_oscdump():
    ns: dict = {}
    exec(compile(_embedded_client(), "PY_CLIENT", "exec"), ns)
    msg = ns["osc_message"]("/bnmusic/render_ex", "job-1", NAME, "", "seed", 3, "gain", 1.5, True)
    lines = _oscdump([msg])
    assert lines == [f'/bnmusic/render_ex ssssisfT "job-1" "{NAME}" "" "seed" 3 "gain" 1.500000 #T']
    # Its decoder reads the package's own encoder (bundles included).
    from bnmusic_bridge.frontends.osc import protocol as P

    packet = P.encode_message("/bnmusic/done", "job-1", NAME, 0.25, 7)
    assert ns["osc_decode"](packet, []) == [("/bnmusic/done", ["job-1", NAME, 0.25, 7])]


def test_lua_osc_encoder_against_oscdump():
    lupa = pytest.importorskip("lupa.lua54", reason="lupa runs the Reaper script's Lua")
    text = SCRIPT.read_text(encoding="utf-8")
    start = text.index("local function osc_string(")
    stop = text.index("local function read_string(")
    lua = lupa.LuaRuntime(encoding=None)
    encode = lua.execute((text[start:stop] + "\nreturn osc_message\n").encode("utf-8"))
    msg = encode(b"/bnmusic/render_ex", b"job-2", NAME.encode("utf-8"), b"", b"seed", 3, 1.5, False)
    lines = _oscdump([bytes(msg)])
    assert lines == [f'/bnmusic/render_ex ssssifF "job-2" "{NAME}" "" "seed" 3 1.500000 #F']


def test_lua_shell_quoting_survives_sh():
    import subprocess

    lupa = pytest.importorskip("lupa.lua54", reason="lupa runs the Reaper script's Lua")
    text = SCRIPT.read_text(encoding="utf-8")
    chunk = text[
        text.index("local function shell_quote(") : text.index("local function wait_with_python(")
    ]
    lua = lupa.LuaRuntime()
    quote = lua.execute(
        'reaper = { GetOS = function() return "Linux" end }\n' + chunk + "\nreturn shell_quote"
    )
    for name in ('it\'s "x" $HOME `id` back\\slash', NAME):
        out = subprocess.run("printf %s " + quote(name), shell=True, capture_output=True, text=True)
        assert out.stdout == name
