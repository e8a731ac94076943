"""One home for every default: what docs/presets.md, the README, ``--help`` and the
shipped presets say about render parameters agrees with ``RenderRequest`` and its
``FieldSpec``s (bnmusic_bridge/request.py) and with ``ExportOptions``.

A default or range changed in request.py must change everywhere it is stated (generated
where it can be) or fail here.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bnmusic_bridge.audio import BIT_DEPTHS, FILE_TYPES
from bnmusic_bridge.export import LANE_FORMATS, ExportOptions, LaneOptions
from bnmusic_bridge.frontends.cli import make_parser
from bnmusic_bridge.presets import SCHEMA_VERSION, read_preset, shipped_presets_dir
from bnmusic_bridge.request import FIELD_SPECS, FieldSpec, RenderRequest, check_request

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = RenderRequest()
EXPORT = ExportOptions()
PRESET_KEYS = {(spec.section, spec.toml_key or name): name for name, spec in FIELD_SPECS.items()}
"""(preset section, TOML key) -> request field, as the FieldSpecs declare it."""
PRESET_META = ("schema", "name", "description")
"""Top-level preset keys that are not render parameters."""
EXPORT_KEYS = {f.name for f in dataclasses.fields(ExportOptions)} - {"force"}
"""``[output]`` keys: ExportOptions fields (``force`` is a command-line choice only)."""
SHIPPED = sorted(shipped_presets_dir().glob("*.toml"))


def dash(name: str) -> str:
    return "--" + name.replace("_", "-")


def cells(line: str) -> list[str]:
    line = line.strip()
    if not line.startswith("|"):
        return []
    return [c.strip() for c in line.strip("|").split("|")]


def markdown_table(text: str, header: list[str]) -> list[list[str]]:
    """The body rows of the first Markdown table in ``text`` with this header row."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if cells(line) == header:
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(cells(row))
            assert rows, f"table {header} is empty"
            return rows
    raise AssertionError(f"no table with header {header}")


def numbers(text: str) -> list[float]:
    """Every number written in ``text`` (identifiers such as min_gain_db have none)."""
    return [float(n) for n in re.findall(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w.])", text)]


def parse_value(cell: str) -> Any:
    """A default as the docs write it: "text", true/false, [list], {table}, +6, 0.15."""
    text = cell.strip().strip("`")
    if text == "none":  # a nullable field left unset (TOML has no null)
        return None
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    if text[:1] in "[{":
        return json.loads(text)
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def request_default(name: str) -> Any:
    value = getattr(DEFAULTS, name)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def choice_words(cell: str) -> list[str]:
    """The values a cell lists, comma-separated, each maybe followed by an explanation:
    "smr (the paper's ...), spreading (...)" -> ["smr", "spreading"]."""
    return [part.split()[0].strip("`") for part in cell.split(",") if part.strip()]


def check_range(name: str, spec: FieldSpec, allowed: str) -> None:
    """An "allowed" cell states the field's choices, or its range (and unit)."""
    if spec.choices:
        assert sorted(choice_words(allowed)) == sorted(spec.choices), (name, allowed)
    elif spec.low is not None:
        stated = numbers(allowed)
        assert stated and stated[0] == spec.low, (name, allowed, spec.low)
        other_field = re.search(r"to `(\w+)`", allowed)
        if other_field:  # bounded by another field (lane_hop_s <= lane_window_s)
            assert other_field.group(1) in FIELD_SPECS, (name, allowed)
        else:
            assert len(stated) >= 2 and stated[1] == spec.high, (name, allowed, spec.high)
        if spec.low_open:
            assert "above" in allowed, (name, allowed)
        if spec.unit:
            assert spec.unit in allowed, (name, allowed, spec.unit)
    elif spec.allowed:
        assert numbers(allowed) == numbers(spec.allowed), (name, allowed, spec.allowed)


# ------------------------------------------------------------------ the request itself


def test_request_defaults_are_within_their_own_ranges():
    check_request(DEFAULTS)
    for name, spec in FIELD_SPECS.items():
        if spec.choices:
            assert getattr(DEFAULTS, name) in spec.choices, name


# ------------------------------------------------------------------ docs/presets.md


def test_presets_doc_schema_table_states_the_request_defaults_and_ranges():
    text = (REPO / "docs" / "presets.md").read_text(encoding="utf-8")
    rows = markdown_table(text, ["key", "type", "default", "allowed", "flag"])
    render_flags = {s for a in _subcommand(make_parser(), "render")._actions for s in a.option_strings}
    section, seen_fields, seen_output = "", set(), set()
    previous_allowed = ""
    for key_cell, type_cell, default_cell, allowed_cell, flag_cell in rows:
        heading = re.fullmatch(r"\*\*`\[+([\w.]+)\]+`\*\*", key_cell)
        for flag in re.findall(r"`(--[\w-]+)", flag_cell):
            assert flag in render_flags, f"docs/presets.md names {flag}, which render lacks"
        if heading:
            section = heading.group(1)
            table_field = {"generator.params": ("generator", "params"), "effects": ("effects", "effects")}
            if section not in table_field:
                continue
            name = PRESET_KEYS[table_field[section]]  # a field held as a table of its own
            expected = request_default(name)
            assert (expected in ({}, []) and default_cell in ("{}", "none")), (name, default_cell)
            seen_fields.add(name)
            continue
        key = key_cell.strip("`")
        allowed = previous_allowed if allowed_cell == "(same)" else allowed_cell
        previous_allowed = allowed
        if section == "" and key in PRESET_META:
            if key == "schema":
                assert parse_value(default_cell) == SCHEMA_VERSION
            continue
        if section == "output":
            seen_output.add(key)
            check_output_row(key, default_cell, allowed)
            continue
        assert (section, key) in PRESET_KEYS, f"docs/presets.md: [{section}] {key} is no request field"
        name = PRESET_KEYS[(section, key)]
        spec = FIELD_SPECS[name]
        seen_fields.add(name)
        assert parse_value(default_cell) == request_default(name), (
            f"docs/presets.md gives [{section}] {key} the default {default_cell}; "
            f"RenderRequest has {getattr(DEFAULTS, name)!r}"
        )
        check_range(name, spec, allowed)
        if spec.nullable:
            assert '"none"' in type_cell or '"none"' in allowed, name
        if spec.flag:
            assert flag_cell == f"`{dash(name)}`", (name, flag_cell)
        else:
            assert dash(name) not in flag_cell, (name, flag_cell)
    assert seen_fields == set(FIELD_SPECS), f"undocumented: {set(FIELD_SPECS) - seen_fields}"
    assert seen_output == EXPORT_KEYS - {"lanes"}, f"undocumented: {EXPORT_KEYS - seen_output}"


def check_output_row(key: str, default_cell: str, allowed: str) -> None:
    expected = getattr(EXPORT, key)
    expected = list(expected) if isinstance(expected, tuple) else expected
    assert parse_value(default_cell) == expected, (key, default_cell, expected)
    if key == "bit_depth":
        assert numbers(allowed) == [float(b) for b in BIT_DEPTHS], allowed
    elif key == "file_type":
        assert choice_words(allowed) == list(FILE_TYPES), allowed
    elif key == "lane_formats":
        assert choice_words(allowed) == list(LANE_FORMATS), allowed


# ------------------------------------------------------------------ README.md


def test_readme_render_options_table_states_the_request_defaults():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Rendering a stem") :]
    rows = markdown_table(section, ["flag", "meaning", "default"])
    dests = {
        s: a.dest for a in _subcommand(make_parser(), "render")._actions for s in a.option_strings
    }
    checked = 0
    for flag_cell, meaning, default_cell in rows:
        flags = re.findall(r"`(--[\w-]+)", flag_cell)
        assert flags and all(f in dests for f in flags), f"README names unknown flags {flag_cell}"
        if not default_cell:
            continue
        stated = re.split(r",\s+", default_cell)
        assert len(stated) == len(flags), (flag_cell, default_cell)
        for flag, value in zip(flags, stated, strict=True):
            expected = flag_default(dests[flag])
            got = parse_value(value.strip("`"))
            if isinstance(expected, str):
                got = value.strip("`")
            assert got == expected, f"README: {flag} default {value}; the code has {expected!r}"
            checked += 1
            check_meaning(dests[flag], meaning)
    assert checked >= 10


def flag_default(dest: str) -> Any:
    """The default a render flag leaves in place: the request's or ExportOptions'."""
    if dest in FIELD_SPECS:
        return getattr(DEFAULTS, dest)
    if dest == "lane":
        return ",".join(EXPORT.lane_formats)
    return getattr(EXPORT, dest)


def check_meaning(name: str, meaning: str) -> None:
    """Ranges, choices and other defaults a README explanation restates."""
    spec = FIELD_SPECS.get(name)
    if spec is None:
        return
    rng = re.search(r"\(([-+]?[\d.]+) to ([-+]?[\d.]+)\)", meaning)
    if rng:
        assert (float(rng.group(1)), float(rng.group(2))) == (spec.low, spec.high), meaning
    if spec.choices:
        assert set(spec.choices) <= set(re.findall(r"`([^`]+)`", meaning)), meaning
    smr = re.search(r"noise \+ ([\d.]+) dB", meaning)
    if smr:
        assert float(smr.group(1)) == DEFAULTS.smr_db, meaning


# ------------------------------------------------------------------ --help


def _subcommand(parser: Any, *names: str) -> Any:
    for name in names:
        action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = action.choices[name]
    return parser


def help_blocks(text: str) -> dict[str, str]:
    """``--flag`` -> its help entry (whitespace collapsed) from argparse's help text."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        m = re.match(r"^  (-\S+)", line)
        if m:
            current = blocks.setdefault(m.group(1).rstrip(","), [])
            for extra in re.findall(r"(?<=, )(--[\w-]+)", line):
                blocks[extra] = current
            current.append(line)
        elif current is not None and line.startswith("   "):
            current.append(line)
        else:
            current = None
    return {flag: " ".join(" ".join(lines).split()) for flag, lines in blocks.items()}


def shown_default(value: Any, unit: str) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        return value or "empty"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text} {unit}" if unit else text


@pytest.mark.parametrize("command", [["render"], ["batch"], ["serve"], ["presets", "save"]])
def test_help_states_every_render_flags_default_from_the_request(command, capsys):
    with pytest.raises(SystemExit):
        make_parser().parse_args([*command, "--help"])
    blocks = help_blocks(capsys.readouterr().out)
    for name, spec in FIELD_SPECS.items():
        if not spec.flag:
            assert dash(name) not in blocks, name
            continue
        block = blocks[dash(name)]
        default = getattr(DEFAULTS, name)
        if isinstance(default, bool):
            continue  # a switch: off unless given
        assert f"(default {shown_default(default, spec.unit)})" in block, (command, name, block)
        if spec.choices:
            assert "{" + ",".join(spec.choices) + "}" in block, (name, block)
        elif spec.low is not None:
            assert f"{spec.low:g}" in block and f"{spec.high:g}" in block, (name, block)


def test_render_help_states_the_output_defaults_from_export_options(capsys):
    with pytest.raises(SystemExit):
        make_parser().parse_args(["render", "--help"])
    blocks = help_blocks(capsys.readouterr().out)
    lanes = EXPORT.lanes
    expected = {
        "--bit-depth": f"default {EXPORT.bit_depth}",
        "--format": f"default {EXPORT.file_type}",
        "--lane": f"default {','.join(EXPORT.lane_formats)}",
        "--lane-tolerance-db": f"default {lanes.tolerance_db:g}",
        "--midi-cc": f"default {lanes.midi_cc}",
        "--midi-channel": f"default {lanes.midi_channel}",
        "--session-bpm": f"default {lanes.session_bpm:g}",
        "--time-signature": "default {}/{}".format(*lanes.time_signature),
    }
    for flag, text in expected.items():
        assert text in blocks[flag], (flag, blocks[flag])


# ------------------------------------------------------------------ shipped presets


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_preset_uses_only_known_keys_and_validates(path):
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    sections = {section for section, _ in PRESET_KEYS if section}
    top_keys = {key for section, key in PRESET_KEYS if not section}
    for key, value in data.items():
        if key in PRESET_META or key in top_keys:
            continue
        if key == "output":
            assert set(value) <= EXPORT_KEYS, f"{path.name}: [output] {set(value) - EXPORT_KEYS}"
            lane_keys = {f.name for f in dataclasses.fields(LaneOptions)}
            assert set(value.get("lanes", {})) <= lane_keys, f"{path.name}: [output.lanes]"
            continue
        assert key in sections, f"{path.name}: unknown top-level key {key!r}"
        if key == "effects":
            assert isinstance(value, list) and all(isinstance(e, dict) for e in value)
            continue
        known = {k for section, k in PRESET_KEYS if section == key}
        assert set(value) <= known, f"{path.name}: [{key}] {sorted(set(value) - known)}"
    preset = read_preset(path)  # every check a render makes
    assert preset.name == path.stem


# ------------------------------------------------------------------ generator parameters


def test_presets_doc_states_the_track_generators_parameter_ranges_and_defaults():
    """docs/presets.md's `track` bullet: every parameter, its range and any default
    it states, against the generator's PARAM_SPECS."""
    from bnmusic_bridge.generators.track import PARAM_SPECS

    text = (REPO / "docs" / "presets.md").read_text(encoding="utf-8")
    bullet = re.search(r"^- `track` .*?(?=^\S|^- `|\Z)", text, flags=re.M | re.S)
    assert bullet, "docs/presets.md has no `track` bullet"
    body = " ".join(bullet.group(0).split())
    named = set(re.findall(r"`(\w+)` \(", body)) - {"track"}
    assert named == set(PARAM_SPECS), named ^ set(PARAM_SPECS)
    for name, (_, default, low, high) in PARAM_SPECS.items():
        m = re.search(rf"`{name}` \(([^()]*(?:\([^()]*\)[^()]*)*)\)", body)
        if m is None:
            continue
        stated = m.group(1)
        if name == "track_bpm":  # "0: estimate it; else 40 to 240"
            assert numbers(stated) == [default, low, high], (name, stated)
        elif low is not None:
            assert numbers(stated)[:2] == [low, high], (name, stated)
        d = re.search(r"default ([-\d.]+)", stated)
        if d:
            assert float(d.group(1)) == default, (name, stated, default)


def test_presets_doc_names_every_lane_option():
    text = (REPO / "docs" / "presets.md").read_text(encoding="utf-8")
    [row] = [r for r in text.splitlines() if r.startswith("| **`[output.lanes]`**")]
    listed = set(re.findall(r"`(\w+)`", row.split("|")[4]))
    assert listed == {f.name for f in dataclasses.fields(LaneOptions)}, listed
