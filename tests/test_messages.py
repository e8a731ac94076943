"""Messages in the producer's language: the shortfall in one line (report, terminal, OSC)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from bnmusic_bridge.blend import BlendSettings, shortfall_line
from bnmusic_bridge.frontends.cli import main
from bnmusic_bridge.frontends.osc.pushes import warning_kind
from bnmusic_bridge.frontends.osc.server import OscServer
from bnmusic_bridge.frontends.osc.testing import (
    OscClient,
    fake_server_config,
    register_fake_generator,
    write_noise,
)
from bnmusic_bridge.request import RenderRequest
from bnmusic_bridge.result import Shortfall


def short(window: int, limited_by: str, needed: float | None, reached: float = 0.4) -> Shortfall:
    return Shortfall(
        window=window,
        start_s=1.28 * window,
        end_s=1.28 * window + 2.56,
        target=0.8,
        reached=reached,
        needed_gain_db=needed,
        capped_gain_db=6.0,
        lane_gain_db=6.0,
        limited_by=limited_by,
    )


def test_shortfall_line_names_the_lu_needed_and_each_cap() -> None:
    settings = BlendSettings.from_request(RenderRequest(max_loudness_lu=6.0, peak_mode="lane"))
    line = shortfall_line(
        (
            short(0, "loudness ceiling", 14.5, reached=0.3),
            short(1, "loudness ceiling", 9.0),
            short(4, "peak limit", 21.26),
        ),
        settings,
        num_windows=9,
    )
    assert line is not None and "\n" not in line
    assert line.startswith("shortfall: 3 of 9 windows mask less than the 80 % target")
    assert "worst 30 % at 0.0-2.6 s" in line
    assert "up to +21.3 LU over the noise" in line
    assert "the +6 LU loudness ceiling (--max-loudness-lu) in 2" in line
    assert "the -1 dBFS peak limit (--peak-mode lane) in 1" in line
    assert "details.shortfall" in line and "extra[" not in line
    assert "quieter" not in line
    gain = shortfall_line((short(2, "max_gain_db", 30.0),), settings, num_windows=3)
    assert gain is not None and gain.startswith("shortfall: 1 of 3 window masks less")
    assert "masking it needs the music +30.0 LU over the noise" in gain
    assert gain.endswith(
        "capped by the +24 dB gain limit (--max-gain-db) (report: details.shortfall)"
    )
    assert shortfall_line((), settings, num_windows=3) is None
    assert warning_kind(line) == "shortfall" and warning_kind("DC offset") == "render"


def test_terminal_prints_the_shortfall_as_one_line_and_the_report_keeps_it(
    tmp_path: Path, capsys
) -> None:
    generator = register_fake_generator()
    src = write_noise(tmp_path / "lobby.wav", seconds=3.0)
    args = ["render", str(src), "--generator", generator, "--no-plot", "--max-loudness-lu", "0"]
    assert main([*args, "--target-coverage", "0.95"]) == 0
    err = capsys.readouterr().err.splitlines()
    lines = [ln for ln in err if "shortfall" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: shortfall: ")
    assert "the +0 LU loudness ceiling (--max-loudness-lu)" in lines[0]
    report = json.loads((tmp_path / "lobby.report.json").read_text(encoding="utf-8"))
    details = report["details"]
    assert details["shortfall"] and lines[0] == "warning: " + details["shortfall_summary"]


def test_osc_client_gets_the_shortfall_before_done(tmp_path: Path) -> None:
    write_noise(tmp_path / "hall.wav", seconds=3.0)
    config = fake_server_config(
        tmp_path,
        request=RenderRequest(
            generator=register_fake_generator(), max_loudness_lu=0.0, target_coverage=0.95
        ),
    )
    server = OscServer(dataclasses.replace(config)).start()
    try:
        with OscClient(server.udp_address) as c:
            c.send("/bnmusic/render", "w1", "hall.wav")
            done = c.wait("/bnmusic/done", "w1", timeout_s=60)
            warnings = c.of("/bnmusic/warning", "w1")
            meters = c.of("/bnmusic/meter", "w1")
            c.send(
                "/bnmusic/render_ex", "w2", "hall.wav", "", "generator", "procedural",
                "prompt", "glitchy choir",
            )  # fmt: skip
            c.wait("/bnmusic/done", "w2", timeout_s=60)
            prompt = [w.values[1:] for w in c.of("/bnmusic/warning", "w2")]
    finally:
        server.stop(timeout_s=10)
    kinds = {w.values[1]: w.values[2] for w in warnings}
    assert "shortfall" in kinds and kinds["shortfall"].startswith("shortfall: ")
    assert "LU over the noise" in kinds["shortfall"] and "\n" not in kinds["shortfall"]
    [(kind, text)] = [w for w in prompt if w[0] == "prompt"]
    assert "'glitchy'" in text and "choir -> pad" in text
    assert all(w.at_s <= done.at_s for w in warnings)
    assert not meters or max(m.at_s for m in meters) <= min(w.at_s for w in warnings)


def test_osc_api_version_names_the_warning_message() -> None:
    from bnmusic_bridge.frontends.osc import API_VERSION

    docs = (Path(__file__).resolve().parents[1] / "docs" / "osc.md").read_text(encoding="utf-8")
    major, minor = (int(x) for x in API_VERSION.split("."))
    # the warning came with 1.2; later minor versions keep it
    assert (major, minor) >= (1, 2) and f"## Address space, version {API_VERSION}" in docs
    assert "| `/bnmusic/warning` | `job_id s:kind s:text` |" in docs


# --- prompts: words the generator does not understand are named; common instrument and
# mood words map to the closest timbre and style it has.


def test_common_instrument_and_mood_words_map_to_the_closest_the_generator_has() -> None:
    from bnmusic_bridge.generators.styles import read_prompt, style_from_prompt

    r = read_prompt("ethereal choir with harp and bagpipes")
    assert r.style == "ambient" and r.style_word == "ethereal" and r.unknown == ()
    assert dict(r.instruments) == {"choir": "pad", "harp": "pluck", "bagpipes": "pad"}
    expected_style = {
        "calm": "ambient", "dark": "ambient", "ethereal": "ambient", "energetic": "edm",
        "happy": "pop", "epic": "classical", "sad": "lo-fi", "funky": "hip-hop",
    }  # fmt: skip
    for word, style in expected_style.items():
        assert style_from_prompt(f"{word} music")[0] == style, word
    # a genre word wins over a mood word wherever it stands
    assert style_from_prompt("energetic jazz")[0] == "jazz"
    expected_voice = {
        "choir": "pad", "organ": "pad", "synth": "pad", "pad": "pad", "strings": "strings",
        "flute": "strings", "guitar": "guitar", "harp": "pluck", "bagpipes": "pad",
    }  # fmt: skip
    for word, voice in expected_voice.items():
        assert dict(read_prompt(f"with {word}").instruments) == {word: voice}, word
    assert read_prompt("dark").minor is True and read_prompt("happy").minor is False


def test_prompt_warning_names_unknown_words_and_approximations() -> None:
    from bnmusic_bridge.generators.styles import prompt_warning

    assert prompt_warning("lo-fi hip hop, warm piano") is None
    assert prompt_warning("jazz trio with strings and bells, no drums") is None
    line = prompt_warning("dark cinematic strings, 90 bpm, glitchy", "wobbly kazoo")
    assert line is not None and line.startswith("prompt: ") and "\n" not in line
    assert "'bpm', 'glitchy'" in line and "'wobbly', 'kazoo'" in line
    assert "style classical (from 'cinematic')" in line and "minor (from 'dark')" in line
    line = prompt_warning("ethereal choir with harp and bagpipes")
    assert line is not None and "choir -> pad" in line and "bagpipes -> pad" in line
    assert "does not understand" not in line
    assert warning_kind(line) == "prompt"


def test_the_plan_follows_the_mapped_words_and_carries_the_warning() -> None:
    import numpy as np

    from bnmusic_bridge.analysis import analyse_stem
    from bnmusic_bridge.generators.base import GenerationSettings
    from bnmusic_bridge.generators.procedural import ProceduralGenerator
    from bnmusic_bridge.mask import high_energy_mask
    from bnmusic_bridge.request import field_default
    from bnmusic_bridge.spectrogram import audio_to_mel

    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(3 * 44100)).astype(np.float32)
    mel = audio_to_mel(noise)
    analysis = analyse_stem(noise, mel, high_energy_mask(mel, field_default("mask_area")))

    def plan(prompt: str):  # type: ignore[no-untyped-def]
        settings = GenerationSettings(
            prompt=prompt, negative_prompt="", seed=0, overlap_frames=64, params={}
        )
        return ProceduralGenerator().plan(analysis, settings)

    p = plan("ethereal choir with harp and bagpipes")
    assert p.style.name == "ambient" and not p.drums_on
    assert "pad" in p.roles.values() and "pluck" in p.roles.values()
    assert "piano" not in p.roles.values()
    assert p.prompt_warning is not None and "choir -> pad" in p.prompt_warning
    assert plan("dark pop").minor is True and plan("happy edm").minor is False
    assert plan("pop").prompt_warning is None


def test_render_warns_on_the_terminal_and_over_osc(tmp_path: Path, capsys) -> None:
    src = write_noise(tmp_path / "hall.wav", seconds=1.0)
    args = ["render", str(src), "--no-plot", "--prompt", "glitchy choir", "-q"]
    assert main(args) == 0
    err = capsys.readouterr().err.splitlines()
    lines = [ln for ln in err if ln.startswith("warning: prompt: ")]
    assert len(lines) == 1 and "'glitchy'" in lines[0] and "choir -> pad" in lines[0]
    report = json.loads((tmp_path / "hall.report.json").read_text(encoding="utf-8"))
    assert any(w.startswith("prompt: ") for w in report["warnings"])


def test_shipped_presets_and_the_default_prompt_raise_no_prompt_warning() -> None:
    from bnmusic_bridge.generators.styles import instruments_in, prompt_warning
    from bnmusic_bridge.presets import list_presets, load_preset
    from bnmusic_bridge.request import field_default

    assert prompt_warning(field_default("prompt")) is None
    for entry in list_presets():
        r = load_preset(entry.name).request
        assert prompt_warning(r.prompt, r.negative_prompt) is None, entry.name
    # a negated approximation removes nothing (there are no vocals to remove)
    assert instruments_in("pop without vocals or drums") == ([], ["drums"])
    assert instruments_in("no vocals", closest=False) == ([], [])
