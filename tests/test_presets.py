"""Presets: shipped presets validate and render, load/save/reload is identical, bad
presets give one clear error naming the file, the key and what is allowed, user folders
override shipped presets, flags override preset values."""

from __future__ import annotations

import contextlib
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bnmusic_bridge import presets as P
from bnmusic_bridge.errors import ParameterError
from bnmusic_bridge.export import write_outputs
from bnmusic_bridge.frontends.args import build_request
from bnmusic_bridge.frontends.cli import main, make_parser
from bnmusic_bridge.pipeline import MODEL_GENERATORS, render

RATE = 44_100
SHIPPED = sorted(P.shipped_presets_dir().glob("*.toml"))


@pytest.fixture(autouse=True)
def no_env_presets(monkeypatch):
    monkeypatch.delenv(P.ENV_PRESETS_DIR, raising=False)


def short_noise(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """Ticks every 0.5 s over a low rumble: mono float32 at 44.1 kHz, peak 0.5."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = 0.05 * np.convolve(rng.standard_normal(n), np.ones(200) / 200, mode="same")
    burst = int(0.04 * RATE)
    env = np.exp(-np.arange(burst) / (0.008 * RATE))
    for start in range(0, n - burst, RATE // 2):
        out[start : start + burst] += 0.4 * env * rng.standard_normal(burst)
    return (out / np.max(np.abs(out)) * 0.5).astype(np.float32)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ------------------------------------------------------------------------- shipped


def test_at_least_eight_shipped_presets_across_genres():
    names = {p.stem for p in SHIPPED}
    assert len(names) >= 8
    styles = {P.read_preset(p).request.generator_params.get("style") for p in SHIPPED}
    assert {"lo-fi", "ambient", "jazz", "edm", "classical", "pop", "rock", "hip-hop"} <= styles
    # The repository's presets/ folder is the shipped folder.
    repo_presets = Path(__file__).resolve().parents[1] / "presets"
    assert {p.stem for p in repo_presets.glob("*.toml")} == names


def on_tiny_model(request, tmp_path_factory):
    """A model-based preset's request with the tests' tiny random Stable Diffusion in
    place of the weights (as ``--model`` does), at its size and two steps per call."""
    from tiny_sd import tiny_sd_folder_for

    fast = {"resolution": 64, "outpaint_steps": 2, "inpaint_steps": 2}
    fast = {key: value for key, value in fast.items() if key in request.generator_params}
    return request.replace(
        model=str(tiny_sd_folder_for(tmp_path_factory.getbasetemp())),
        local_files_only=True,
        device="cpu",
        generator_params={**request.generator_params, **fast},
    )


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_preset_validates_round_trips_and_renders(path, tmp_path, tmp_path_factory):
    preset = P.read_preset(path)
    assert preset.name == path.stem and preset.description
    # Round trip: save, reload, identical; saving again gives the same text.
    saved = P.save_preset(preset, tmp_path / f"{preset.name}.toml")
    again = P.read_preset(saved)
    assert again == preset
    assert P.dumps_preset(again) == saved.read_text(encoding="utf-8")
    # Renders a short noise with every parameter and writes its outputs.
    noise = short_noise()
    request = preset.request
    threads = contextlib.nullcontext()
    if request.generator in MODEL_GENERATORS:
        # The weights are not here (tests never download them).
        from tiny_sd import torch_single_thread

        request = on_tiny_model(request, tmp_path_factory)
        threads = torch_single_thread()
    with threads:
        result = render(noise, RATE, request)
    assert result.request == request
    assert result.music_gained.shape == (2, noise.size)  # stereo music for the mono noise
    assert np.all(np.isfinite(result.music_gained)) and np.any(result.music)
    assert 0.0 <= result.coverage <= 1.0
    out = write_outputs(result, tmp_path / "out", stem_name="n", options=preset.export)
    assert out.music.suffix == "." + preset.export.file_type
    assert all(p.exists() for p in out.all())


def test_presets_list_shows_every_shipped_preset(capsys):
    assert main(["presets", "list"]) == 0
    text = capsys.readouterr().out
    for path in SHIPPED:
        assert path.stem in text
    assert "INVALID" not in text


def test_presets_show_prints_complete_toml(capsys):
    assert main(["presets", "show", "lofi-commute"]) == 0
    text = capsys.readouterr().out
    assert 'name = "lofi-commute"' in text and "[generator.params]" in text
    assert "max_slew_db_per_s" in text  # defaults are written out too
    assert text.count("[[effects]]") == 3


# ------------------------------------------------------------------ validation

GOOD = """\
    name = "{name}"
    description = "test"
    prompt = "jazz"

    [generator]
    name = "procedural"

    [generator.params]
    style = "jazz"

    [lambda]
    min_gain_db = -20.0

    [[effects]]
    type = "Reverb"
    room_size = 0.5
"""


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('prompt = "jazz"', 'prompt = "jazz"\nmood = "happy"'),
            ["unknown key 'mood'", "allowed:"],
        ),
        (
            ("[lambda]", "[lambda]\nmask_area = 0.2"),
            ["[lambda] unknown key 'mask_area'", "belongs in [mask]"],
        ),
        (
            ("[lambda]", "[lambda]\nmin_gain = -3"),
            ["[lambda] unknown key 'min_gain'", "did you mean 'min_gain_db'"],
        ),
        (
            ("min_gain_db = -20.0", 'min_gain_db = "quiet"'),
            ["[lambda] min_gain_db = 'quiet'", "wrong type", "a number"],
        ),
        (('prompt = "jazz"', 'prompt = "jazz"\nseed = 1.5'), ["seed = 1.5", "a whole number"]),
        (
            ("[lambda]", "[mask]\nmask_area = 0.9\n[lambda]"),
            ["[mask] mask_area=0.9", "0.05 to 0.5"],
        ),
        (
            ("min_gain_db = -20.0", "min_gain_db = 30.0\nmax_gain_db = 20.0"),
            ["min_gain_db=30.0", "max_gain_db=20.0", "-80 <= min_gain_db < max_gain_db <= 48"],
        ),
        (
            ("[lambda]", '[threshold]\nthreshold_model = "loud"\n[lambda]'),
            ["[threshold] threshold_model='loud'", "smr or spreading"],
        ),
        (
            ('style = "jazz"', 'style = "jazz"\ndensity = 2.0'),
            ["[generator.params]", "density", "0 to 1"],
        ),
        (
            ('style = "jazz"', 'style = "jazz"\nsteps = 20'),
            ["[generator.params]", "'steps'", "known:"],
        ),
        (
            ('name = "procedural"', 'name = "magic"'),
            ["[generator] name = 'magic'", "allowed:", "procedural"],
        ),
        (
            ("room_size = 0.5", "room_size = 1.5"),
            ["effects[0] (Reverb)", "room_size = 1.5", "0 to 1"],
        ),
        (('type = "Reverb"', 'type = "Reverbz"'), ["effects[0]", "unknown effect type 'Reverbz'"]),
        (
            ('type = "Reverb"\nroom_size = 0.5', 'type = "plugin"\npath = "plugins/Missing.vst3"'),
            ["effects[0]", "plugin not found", "Missing.vst3"],
        ),
        (
            ("[lambda]", "[output]\nchannels = 2\n[lambda]"),
            ["[output] channels cannot be set", "follow the input"],
        ),
        (
            ("[lambda]", "[output]\nbit_depth = 20\n[lambda]"),
            ["[output]", "bit_depth=20", "(16, 24, 32)"],
        ),
        (("[lambda]", '[output]\npattern = "{stem}"\n[lambda]'), ["[output]", "{kind}"]),
        (
            ("[lambda]", '[output]\nlane_formats = "json"\n[lambda]'),
            ["[output] lane_formats = 'json'", "a list of format names"],
        ),
        (
            ("[lambda]", "[output.lanes]\nmidi_cc = 200\n[lambda]"),
            ["[output]", "midi_cc=200", "0 to 119"],
        ),
        (
            ("[lambda]", "[output.lanes]\ntime_signature = [4]\n[lambda]"),
            ["[output.lanes] time_signature", "a list of 2 values"],
        ),
        (('name = "{name}"', 'name = "other"'), ["name = 'other' differs from the file name"]),
        (
            ('description = "test"', 'description = "test"\nschema = 2'),
            ["schema = 2", "allowed: 1"],
        ),
        (("[generator]", "generator = [1"), ["not valid TOML"]),
    ],
)
def test_bad_preset_gives_one_clear_error(tmp_path, change, expected):
    old, new = change
    text = GOOD.format(name="broken")
    assert old.replace("{name}", "broken") in textwrap.dedent(text)
    text = textwrap.dedent(text).replace(old.replace("{name}", "broken"), new, 1)
    path = tmp_path / "broken.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ParameterError) as info:
        P.read_preset(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message.strip() or "TOML" in message
    for part in expected:
        assert part in message, (part, message)


def test_good_preset_loads_and_validate_command_agrees(tmp_path, capsys):
    good = write(tmp_path, "good", GOOD.format(name="good"))
    bad = write(tmp_path, "bad", GOOD.format(name="bad").replace("0.5", "5.0"))
    preset = P.read_preset(good)
    assert preset.request.min_gain_db == -20.0 and preset.request.prompt == "jazz"
    assert main(["presets", "validate", str(good)]) == 0
    assert main(["presets", "validate", str(good), str(bad)]) == 1
    captured = capsys.readouterr()
    assert f"ok: {good}" in captured.out
    assert main(["presets", "validate", "paper", "hiphop-street"]) == 0  # names work too
    assert str(bad) in captured.err and "room_size = 5.0" in captured.err


def test_relative_plugin_paths_start_at_the_preset_folder(tmp_path, monkeypatch):
    (tmp_path / "plugins" / "Foo.vst3").mkdir(parents=True)
    text = GOOD.format(name="plug").replace(
        'type = "Reverb"\n    room_size = 0.5',
        'type = "plugin"\n    path = "plugins/Foo.vst3"\n    parameters = { mix = 0.25 }',
    )
    path = write(tmp_path, "plug", text)
    monkeypatch.chdir("/")
    preset = P.read_preset(path)
    spec = preset.request.effects[0]
    assert spec["path"] == str(tmp_path / "plugins" / "Foo.vst3")
    assert spec["parameters"] == {"mix": 0.25}


# ------------------------------------------------------------ freezing and saving


def test_schema_reaches_every_request_and_export_field():
    """A new RenderRequest or ExportOptions field must get a preset key, or presets
    would silently stop round-tripping every parameter."""
    import dataclasses

    from bnmusic_bridge.export import ExportOptions
    from bnmusic_bridge.request import RenderRequest

    mapped = set(P.TOP_KEYS.values()) | {f for t in P.SECTIONS.values() for f in t.values()}
    mapped |= {"generator_params", "effects"}
    assert {f.name for f in dataclasses.fields(RenderRequest)} == mapped
    export_keys = {*P.OUTPUT_KEYS, "force", "lanes"}
    assert {f.name for f in dataclasses.fields(ExportOptions)} == export_keys


def test_loaded_preset_is_frozen_hashable_and_picklable():
    preset = P.load_preset("lofi-commute")
    with pytest.raises(TypeError):
        preset.request.generator_params["density"] = 1.0  # type: ignore[index]
    with pytest.raises(TypeError):
        preset.request.effects[0]["gain_db"] = 3.0  # type: ignore[index]
    assert hash(preset.request) == hash(P.load_preset("lofi-commute").request)
    assert pickle.loads(pickle.dumps(preset)) == preset
    assert preset.request.to_dict()["effects"][0]["type"] == "HighShelfFilter"


def test_save_refuses_overwrite_and_wrong_name(tmp_path):
    from bnmusic_bridge.errors import OutputExistsError

    preset = P.load_preset("paper")
    P.save_preset(preset, tmp_path / "paper.toml")
    with pytest.raises(OutputExistsError):
        P.save_preset(preset, tmp_path / "paper.toml")
    with pytest.raises(ParameterError, match="must be saved as paper.toml"):
        P.save_preset(preset, tmp_path / "other.toml")


def test_presets_save_command_applies_flags(tmp_path, capsys):
    target = tmp_path / "my-jazz.toml"
    code = main(
        [
            "presets",
            "save",
            str(target),
            "--preset",
            "jazz-elevator",
            "--smr-db",
            "18",
            "--param",
            "density=0.8",
            "--bit-depth",
            "16",
        ]
    )
    assert code == 0
    mine = P.read_preset(target)
    base = P.load_preset("jazz-elevator")
    assert mine.name == "my-jazz" and mine.description == base.description
    assert mine.request.smr_db == 18.0 and mine.request.generator_params["density"] == 0.8
    assert mine.export.bit_depth == 16
    assert mine.request.effects == base.request.effects
    assert (
        mine.request.replace(
            smr_db=base.request.smr_db, generator_params=base.request.generator_params
        )
        == base.request
    )


# ------------------------------------------------------------- lookup and overrides


def test_user_folder_overrides_shipped_and_env_var(tmp_path, monkeypatch, capsys):
    flag_dir, env_dir = tmp_path / "flag", tmp_path / "env"
    flag_dir.mkdir()
    env_dir.mkdir()
    write(
        env_dir,
        "paper",
        GOOD.format(name="paper").replace('prompt = "jazz"', 'prompt = "from env"'),
    )
    write(env_dir, "mine", GOOD.format(name="mine"))
    assert P.load_preset("paper").request.prompt == "pop music"  # shipped
    monkeypatch.setenv(P.ENV_PRESETS_DIR, str(env_dir))
    assert P.load_preset("paper").request.prompt == "from env"
    assert P.load_preset("mine").name == "mine"
    write(
        flag_dir,
        "paper",
        GOOD.format(name="paper").replace('prompt = "jazz"', 'prompt = "from flag"'),
    )
    assert P.load_preset("paper", presets_dir=flag_dir).request.prompt == "from flag"
    entries = {e.name: e for e in P.list_presets(flag_dir)}
    assert entries["paper"].origin == "user" and entries["paper"].path.parent == flag_dir
    assert entries["paper"].overrides == P.shipped_presets_dir() / "paper.toml"
    assert entries["jazz-elevator"].origin == "shipped"
    assert main(["presets", "list", "--presets-dir", str(flag_dir)]) == 0
    assert "overrides shipped" in capsys.readouterr().out


def test_broken_user_preset_is_listed_not_fatal(tmp_path):
    write(tmp_path, "broken", GOOD.format(name="broken").replace("0.5", "9.0"))
    entries = {e.name: e for e in P.list_presets(tmp_path)}
    assert entries["broken"].error and "room_size = 9.0" in entries["broken"].error
    assert entries["paper"].error is None


def test_missing_presets_dir_is_an_error(tmp_path):
    with pytest.raises(ParameterError, match="does not exist"):
        P.load_preset("paper", presets_dir=tmp_path / "nope")


def test_unknown_preset_name_suggests_and_lists():
    with pytest.raises(ParameterError) as info:
        P.load_preset("lofi-comute")
    message = str(info.value)
    assert "did you mean 'lofi-commute'" in message and "known presets:" in message


def test_flags_override_preset_values(tmp_path):
    args = make_parser().parse_args(
        [
            "render",
            "x.wav",
            "--preset",
            "edm-factory-floor",
            "--smr-db",
            "18",
            "--prompt",
            "techno",
            "--param",
            "density=0.9",
        ]
    )
    request = build_request(args)
    preset = P.load_preset("edm-factory-floor")
    assert request.smr_db == 18.0 and request.prompt == "techno"
    assert request.generator_params["density"] == 0.9
    assert request.generator_params["style"] == "edm"  # the rest of the params stay
    assert request.target_coverage == preset.request.target_coverage
    assert request.effects == preset.request.effects
    # A preset given as a file path works the same way.
    by_path = make_parser().parse_args(["render", "x.wav", "--preset", str(preset.path)])
    assert build_request(by_path) == preset.request


def test_none_sentinel_means_no_ceiling_and_round_trips(tmp_path):
    from bnmusic_bridge.presets import dumps_preset, load_preset, read_preset

    paper = load_preset("paper")
    assert paper.request.max_loudness_lu is None
    assert load_preset("lofi-commute").request.max_loudness_lu is not None
    path = tmp_path / "paper.toml"
    path.write_text(dumps_preset(paper))
    assert 'max_loudness_lu = "none"' in path.read_text()
    assert read_preset(path).request == paper.request


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("../../escaped_{stem}.{kind}", "stay in the output folder"),
        ("{stem}\x00.{kind}", "NUL"),
        ("{stem.__class__}.{kind}", "{stem.__class__} is not a plain"),
        ("{stem[0]}.{kind}", "{stem[0]} is not a plain"),
        ("{stem!r}.{kind}", "{stem!r} is not a plain"),
    ],
)
def test_output_patterns_that_could_leave_the_folder_are_refused(pattern, fragment):
    with pytest.raises(ParameterError) as info:
        P.preset_from_dict({"output": {"pattern": pattern}}, where="p.toml", file_stem="p")
    assert str(info.value).startswith("p.toml: [output]") and fragment in str(info.value)


def test_preset_parsing_is_bounded(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text('description = "' + "x" * (P.MAX_PRESET_BYTES + 10) + '"\n')
    with pytest.raises(ParameterError, match="big.toml: the preset is larger than 256 KiB"):
        P.read_preset(big)
    deep = tmp_path / "deep.toml"
    deep.write_text("[generator.params]\nx = " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ParameterError, match="deep.toml: arrays or inline tables nested deeper"):
        P.read_preset(deep)
    dotted = tmp_path / "dotted.toml"
    dotted.write_text("[generator.params]\n" + "a." * 20 + "b = 1\n")
    with pytest.raises(ParameterError, match="dotted.toml: tables or arrays nested deeper"):
        P.read_preset(dotted)
    # Brackets inside strings and comments do not count.
    text = 'description = "[[[[[[[[[[[[ {{{{{{{{{{"  # ]]]]]]]]]]]]]]\n'
    assert P.parse_preset_text(text)["description"].startswith("[[[[")
