"""Presets: TOML files that hold every parameter of a render and how to write it.

A preset is read, validated against the same checks a render uses, and frozen into a
:class:`Preset` (a :class:`~bnmusic_bridge.request.RenderRequest` plus
:class:`~bnmusic_bridge.export.ExportOptions`). :func:`save_preset` writes every field
back, so load -> save -> load gives an identical preset. The schema is documented in
``docs/presets.md``; in short::

    name = "lofi-commute"            # optional; equals the file name without .toml
    description = "..."
    prompt = "..."
    negative_prompt = ""
    seed = 0

    [generator]                      # name, music, model, device, dtype, scheduler,
    name = "procedural"              # local_files_only, overlap_frames
    [generator.params]               # the generator's own parameters
    [mask]                           # mask_area
    [threshold]                      # threshold_model, smr_db
    [lambda]                         # alpha, objective, target_coverage, min_gain_db,
                                     # max_gain_db, lane_window_s, lane_hop_s,
                                     # smoothing_s, max_slew_db_per_s
    [loudness]                       # max_loudness_lu (omit: the default; "none": no ceiling)
    [output]                         # bit_depth, file_type, lane_formats, plot, pattern
    [output.lanes]                   # DAW lane settings (ExportOptions.lanes)
    [[effects]]                      # one table per effect (see bnmusic_bridge.fx)

Presets are found by name in, first to last: the ``presets_dir`` argument
(``--presets-dir``), the folders in the ``BNMUSIC_PRESETS_DIR`` environment variable
(separated by ``os.pathsep``), and the presets shipped with the package. A user preset
with a shipped preset's name overrides it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .audio import BIT_DEPTHS
from .errors import ParameterError
from .export import ExportOptions, LaneOptions
from .request import FIELD_SPECS, RenderRequest, check_request, expand_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SCHEMA_VERSION = 1
"""Version of the preset schema this module reads and writes."""
ENV_PRESETS_DIR = "BNMUSIC_PRESETS_DIR"
"""Environment variable naming user preset folders (``os.pathsep``-separated)."""
SHIPPED_PRESETS_DIR = Path(__file__).resolve().parent / "data" / "presets"
"""Presets that come with the package (installed as package data)."""
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

TABLE_FIELDS = ("generator_params", "effects")
"""Request fields a preset holds as TOML tables of their own (``[generator.params]`` and
``[[effects]]``), not as one key each."""


def _preset_keys() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Where each request field sits in a preset, from its FieldSpec (section, toml_key),
    in the request's field order."""
    top: dict[str, str] = {}
    sections: dict[str, dict[str, str]] = {}
    for fname, spec in FIELD_SPECS.items():
        if fname in TABLE_FIELDS:
            continue
        key = spec.toml_key or fname
        if spec.section:
            sections.setdefault(spec.section, {})[key] = fname
        else:
            top[key] = fname
    return top, sections


TOP_KEYS, SECTIONS = _preset_keys()
"""``TOP_KEYS``: top-level TOML key -> RenderRequest field (besides schema, name and
description). ``SECTIONS``: ``[section]`` -> {TOML key -> RenderRequest field}. Both
derived from :data:`bnmusic_bridge.request.FIELD_SPECS`."""
OUTPUT_KEYS = tuple(
    f.name for f in dataclasses.fields(ExportOptions) if f.name not in ("force", "lanes")
)
"""Keys of ``[output]``: the ExportOptions fields, except ``force`` (a command-line choice
only) and ``lanes`` (the ``[output.lanes]`` table)."""
FOLLOWS_INPUT = ("sample_rate", "sample_rate_hz", "channels", "num_channels")
"""Output properties that follow the input stem (refused in ``[output]`` with a clear
message; the music's channels are the top-level key ``channels``)."""


class FrozenDict(dict):  # type: ignore[type-arg]
    """A dict that refuses changes; equal to (and JSON-encoded as) a plain dict.

    Used for the mappings inside a frozen :class:`RenderRequest` so that a loaded
    preset cannot be changed behind its back. Hashable when its values are.
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> typing.NoReturn:
        raise TypeError("a preset's parameters are frozen; build a new one with .replace()")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda kv: str(kv[0]))))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"


def freeze(value: Any) -> Any:
    """Deep copy with mappings as :class:`FrozenDict` and lists as tuples."""
    if isinstance(value, Mapping):
        return FrozenDict((str(k), freeze(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Deep copy with mappings as plain dicts and tuples as lists (TOML/JSON-ready)."""
    if isinstance(value, Mapping):
        return {str(k): thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Preset:
    """A validated, frozen preset.

    Attributes:
        name: the preset's name (its file name without ``.toml``).
        description: one or two sentences for ``bnmusic presets list``.
        request: every render parameter.
        export: how outputs are written (``force`` is always False in a preset).
        path: the file it was read from (not part of equality).
    """

    name: str
    description: str
    request: RenderRequest
    export: ExportOptions
    path: Path | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PresetEntry:
    """One line of ``bnmusic presets list``.

    Attributes:
        name: preset name.
        path: the file that wins for this name.
        origin: "user" or "shipped".
        overrides: the shipped file this user preset hides, if any.
        description: the preset's description ("" when it failed to load).
        error: why the preset failed to load, or None.
    """

    name: str
    path: Path
    origin: str
    overrides: Path | None
    description: str
    error: str | None = None


# --------------------------------------------------------------------------------------
# Finding presets


def shipped_presets_dir() -> Path:
    """The folder of presets shipped with the package."""
    return SHIPPED_PRESETS_DIR


def default_user_presets_dir() -> Path:
    """The user presets folder that needs no setting: ``$XDG_CONFIG_HOME/bnmusic/presets``
    (``~/.config/bnmusic/presets`` when that variable is unset). ``bnmusic presets save
    NAME`` writes there unless ``--presets-dir`` or ``$BNMUSIC_PRESETS_DIR`` names
    another folder, and ``--preset NAME`` looks there."""
    base = os.environ.get("XDG_CONFIG_HOME", "").strip() or "~/.config"
    return expand_path(base) / "bnmusic" / "presets"


def user_presets_dirs(presets_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """User preset folders, highest priority first: ``presets_dir``, then the folders in
    ``$BNMUSIC_PRESETS_DIR``, then :func:`default_user_presets_dir` (missing ones are
    skipped; error messages list them).

    Raises:
        ParameterError: ``presets_dir`` is given and is not a folder.
    """
    dirs: list[Path] = []
    if presets_dir is not None:
        folder = expand_path(presets_dir)
        if not folder.is_dir():
            raise ParameterError(f"presets folder {folder} does not exist (--presets-dir)")
        dirs.append(folder)
    env = os.environ.get(ENV_PRESETS_DIR, "")
    dirs.extend(expand_path(p) for p in env.split(os.pathsep) if p.strip())
    default = default_user_presets_dir()
    if default not in dirs:
        dirs.append(default)
    return dirs


def _looks_like_path(name_or_path: str | os.PathLike[str]) -> bool:
    text = str(name_or_path)
    return text.endswith(".toml") or "/" in text or os.sep in text


def find_preset(name: str, presets_dir: str | os.PathLike[str] | None = None) -> Path:
    """The file for preset ``name``: the first match in the user folders, else shipped.

    Raises:
        ParameterError: no preset of that name; the message lists the known names.
    """
    for folder in [*user_presets_dirs(presets_dir), shipped_presets_dir()]:
        candidate = folder / f"{name}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({e.name for e in list_presets(presets_dir, load=False)})
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    searched = ", ".join(str(d) for d in [*user_presets_dirs(presets_dir), shipped_presets_dir()])
    raise ParameterError(
        f"no preset named {name!r}{hint}; known presets: {', '.join(known) or 'none'} "
        f"(searched {searched})"
    )


def list_presets(
    presets_dir: str | os.PathLike[str] | None = None, *, load: bool = True
) -> list[PresetEntry]:
    """Every preset visible by name, sorted by name, user presets winning over shipped.

    With ``load=True`` each preset is loaded so the entry carries its description, or
    the error that stops it loading (a broken preset is listed, not fatal).
    """
    found: dict[str, tuple[Path, str]] = {}
    hidden: dict[str, Path] = {}
    folders = [(d, "user") for d in user_presets_dirs(presets_dir)]
    folders.append((shipped_presets_dir(), "shipped"))
    for folder, origin in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            name = path.stem
            if name in found:
                if origin == "shipped":
                    hidden[name] = path
                continue
            found[name] = (path, origin)
    entries = []
    for name in sorted(found):
        path, origin = found[name]
        description, error = "", None
        if load:
            try:
                description = read_preset(path).description
            except ParameterError as e:
                error = str(e)
            except (RecursionError, MemoryError, OSError, ValueError) as e:
                # One broken preset must not break the list (and the server's listing).
                error = f"{path}: cannot be read ({type(e).__name__}: {e})"
        entries.append(PresetEntry(name, path, origin, hidden.get(name), description, error))
    return entries


def load_preset(
    name_or_path: str | os.PathLike[str], presets_dir: str | os.PathLike[str] | None = None
) -> Preset:
    """Load a preset by name (see the module docstring for the search order) or by path.

    A value ending in ``.toml`` or holding a path separator is read as a file.

    Raises:
        ParameterError: no such preset, or the preset is invalid (the message names the
            file, the key and what is allowed).
    """
    if _looks_like_path(name_or_path):
        return read_preset(name_or_path)
    return read_preset(find_preset(str(name_or_path), presets_dir))


# --------------------------------------------------------------------------------------
# Reading and validating


def read_preset(path: str | os.PathLike[str]) -> Preset:
    """Read, validate and freeze the preset file at ``path``.

    Relative plugin, ``.vstpreset`` and impulse-response paths are taken relative to the
    preset's folder.

    Raises:
        ParameterError: a missing or unreadable file, invalid TOML, or an invalid value.
    """
    p = expand_path(path)
    if not p.is_file():
        raise ParameterError(f"{p}: no such preset file")
    data = parse_preset_text(_read_bounded(p), str(p))
    preset = preset_from_dict(data, where=str(p), base_dir=p.parent, file_stem=p.stem)
    return dataclasses.replace(preset, path=p)


MAX_PRESET_BYTES = 256 * 1024
"""Largest preset file read (bytes): the shipped ones are about 2 kB."""
MAX_PRESET_DEPTH = 8
"""Deepest nesting of tables and arrays a preset may hold (the schema needs 4:
``[output.lanes]`` values, ``[[effects]]`` ``parameters``)."""
MAX_PRESET_ITEMS = 10_000
"""Most values (keys and array items, all levels) in one preset."""


def _read_bounded(p: Path) -> str:
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_PRESET_BYTES + 1)
    except OSError as e:
        raise ParameterError(f"{p}: cannot read the preset ({e.strerror or e})") from e
    if len(raw) > MAX_PRESET_BYTES:
        raise ParameterError(
            f"{p}: the preset is larger than {MAX_PRESET_BYTES // 1024} KiB; presets are small"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ParameterError(f"{p}: not valid TOML: not UTF-8 text ({e})") from e


def parse_preset_text(text: str, where: str = "<preset>") -> dict[str, Any]:
    """Parse preset TOML with bounds: at most :data:`MAX_PRESET_BYTES`, nesting at most
    :data:`MAX_PRESET_DEPTH` deep, at most :data:`MAX_PRESET_ITEMS` values; a hostile
    file gets an error naming it, never a RecursionError or a hang.

    Raises:
        ParameterError: too large, too deep, too many values, or not valid TOML.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PRESET_BYTES:
        raise ParameterError(f"{where}: the preset is larger than {MAX_PRESET_BYTES // 1024} KiB")
    # The parser recurses once per nesting level: refuse deep nesting before it runs.
    if _bracket_depth(text) > MAX_PRESET_DEPTH:
        raise ParameterError(
            f"{where}: arrays or inline tables nested deeper than {MAX_PRESET_DEPTH} levels"
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ParameterError(f"{where}: not valid TOML: {e}") from e
    except RecursionError as e:
        raise ParameterError(f"{where}: nested deeper than {MAX_PRESET_DEPTH} levels") from e
    _check_shape(data, where)
    return data


def _bracket_depth(text: str) -> int:
    """Deepest nesting of ``[`` / ``{`` outside strings and comments (an upper bound on
    what the TOML parser will recurse into; table headers count 1 or 2)."""
    depth = deepest = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "\"'":
            triple = text.startswith(c * 3, i)
            quote = c * 3 if triple else c
            j = i + len(quote)
            while j < n:
                if text.startswith(quote, j):
                    break
                if c == '"' and text[j] == "\\":
                    j += 1
                elif not triple and text[j] == "\n":
                    break
                j += 1
            i = j + len(quote)
            continue
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return deepest


def _check_shape(data: Any, where: str) -> None:
    """Depth and size of the parsed document (iteratively: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    items = 0
    while stack:
        value, depth = stack.pop()
        if depth > MAX_PRESET_DEPTH:
            raise ParameterError(
                f"{where}: tables or arrays nested deeper than {MAX_PRESET_DEPTH} levels"
            )
        children = list(value.values()) if isinstance(value, Mapping) else value if isinstance(value, list) else ()
        items += len(children)
        if items > MAX_PRESET_ITEMS:
            raise ParameterError(f"{where}: more than {MAX_PRESET_ITEMS} values; presets are small")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (Mapping, list)))


def preset_from_dict(
    data: Mapping[str, Any],
    *,
    where: str = "<preset>",
    base_dir: Path | None = None,
    file_stem: str | None = None,
) -> Preset:
    """Validate TOML-shaped ``data`` and build a frozen :class:`Preset`.

    Args:
        data: the parsed TOML document.
        where: what error messages name (the preset file).
        base_dir: folder that relative plugin and impulse-response paths start from.
        file_stem: the file name without ``.toml``; ``name`` must equal it when both
            are given, and is taken from it when ``name`` is absent.

    Raises:
        ParameterError: the first problem found, naming ``where``, the key and what is
            allowed.
    """
    allowed_top = ["schema", "name", "description", *TOP_KEYS, *SECTIONS, "output", "effects"]
    _refuse_unknown(data, allowed_top, where, "")
    schema = data.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        raise ParameterError(
            f"{where}: schema = {schema!r} is not supported; allowed: {SCHEMA_VERSION}"
        )
    name = data.get("name", file_stem)
    if name is None:
        raise ParameterError(f"{where}: name is missing; allowed: letters, digits, - and _")
    _expect(isinstance(name, str), where, "", "name", name, "text")
    if not NAME_PATTERN.match(name):
        raise ParameterError(
            f"{where}: name = {name!r} is not allowed; allowed: 1 to 64 letters, digits, "
            "- and _, starting with a letter or digit"
        )
    if file_stem is not None and name != file_stem:
        raise ParameterError(
            f"{where}: name = {name!r} differs from the file name {file_stem!r}.toml; "
            "presets are found by file name, so rename one of them"
        )
    description = data.get("description", "")
    _expect(isinstance(description, str), where, "", "description", description, "text")

    hints = typing.get_type_hints(RenderRequest)
    changes: dict[str, Any] = {}
    for key, fname in TOP_KEYS.items():
        if key in data:
            changes[fname] = _coerce(data[key], hints[fname], where, "", key)
    for section, keys in SECTIONS.items():
        if section not in data:
            continue
        table = data[section]
        _expect(isinstance(table, Mapping), where, "", section, table, "a table")
        extra = ["params"] if section == "generator" else []
        _refuse_unknown(table, [*keys, *extra], where, section)
        for key, fname in keys.items():
            if key in table:
                changes[fname] = _coerce(table[key], hints[fname], where, section, key)
        if section == "generator" and "params" in table:
            params = table["params"]
            _expect(isinstance(params, Mapping), where, section, "params", params, "a table")
            # A parameter naming a file or folder (music_dir, ...) may use ~ and $VAR.
            params = {
                k: str(expand_path(v))
                if isinstance(v, str) and v and k.endswith(("_dir", "_file", "_path", "_folder"))
                else v
                for k, v in params.items()
            }
            changes["generator_params"] = freeze(params)
    music = changes.get("music")
    if isinstance(music, str) and music and base_dir is not None:
        # A relative track path is the preset folder's, like plugin paths.
        mp = expand_path(music)
        changes["music"] = str(mp if mp.is_absolute() else (base_dir / mp).resolve())
    effects_raw = data.get("effects", [])
    _expect(isinstance(effects_raw, list), where, "", "effects", effects_raw, "[[effects]] tables")
    effects = [_resolve_effect_paths(e, base_dir) for e in effects_raw]
    changes["effects"] = freeze(effects)
    request = RenderRequest().replace(**changes)
    check_preset_request(request, where)
    export = _export_from(data.get("output", {}), where)
    return Preset(name=name, description=description, request=request, export=export)


def check_preset_request(request: RenderRequest, where: str) -> None:
    """Every check a render would make on ``request``, with messages naming the preset
    key (``[lambda] max_gain_db``) instead of the request field.

    Raises:
        ParameterError: the first problem.
    """
    from . import fx

    try:
        check_request(request)
    except ParameterError as e:
        raise ParameterError(f"{where}: {_qualify(str(e))}") from e
    check_generator(request.generator, request.generator_params, where)
    fx.check_effects(request.effects, where=f"{where}: effects")


def check_generator(generator: str, params: Mapping[str, Any], where: str) -> None:
    """The generator is registered and accepts ``params`` (its own check, no weights).

    Raises:
        ParameterError: an unknown generator or a parameter it refuses.
    """
    from .generators import available_generators

    known = available_generators()
    if generator not in known:
        raise ParameterError(
            f"{where}: [generator] name = {generator!r} is not a registered generator; "
            f"allowed: {', '.join(sorted(known))}"
        )
    checker = _param_checker(generator)
    if checker is None:
        return
    try:
        checker(dict(params))
    except ParameterError as e:
        raise ParameterError(f"{where}: [generator.params] {e}") from e


def _param_checker(generator: str) -> Callable[[dict[str, Any]], Any] | None:
    """The generator's own parameter check, which loads no weights (None: the generator
    checks its parameters when it runs)."""
    if generator == "procedural":
        from .generators.procedural import parse_options

        return parse_options
    if generator == "riffusion":
        from .generators.riffusion import riffusion_plan

        return lambda params: riffusion_plan(params, generator)
    if generator == "track":
        from .generators.track import parse_track_options

        return parse_track_options
    if generator in ("outpaint-only", "riffusion-a2a"):
        from .generators.baselines import a2a_plan, outpaint_only_plan

        plan = outpaint_only_plan if generator == "outpaint-only" else a2a_plan
        return lambda params: plan(params, generator)
    return None


def _qualify(message: str) -> str:
    """Prefix a request-field error with its preset section ("[lambda] min_gain_db=...")."""
    for section, keys in [("", TOP_KEYS), *SECTIONS.items()]:
        for key, fname in keys.items():
            if message.startswith(f"{fname}="):
                label = f"[{section}] {key}" if section else key
                return label + message[len(fname) :]
    return message


def _refuse_unknown(
    table: Mapping[str, Any], allowed: Sequence[str], where: str, section: str
) -> None:
    for key in table:
        if key in allowed:
            continue
        place = f"[{section}] " if section else ""
        if key in FOLLOWS_INPUT:
            raise ParameterError(
                f"{where}: {place}{key} cannot be set: the outputs' sample rate and length "
                "follow the input stem; the music's channels are the top-level key "
                "channels (stereo, mono or match)"
            )
        close = difflib.get_close_matches(str(key), list(allowed), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        where_else = _section_of(str(key))
        moved = (
            f"; {key} belongs in {where_else}" if where_else and where_else != place.strip() else ""
        )
        raise ParameterError(
            f"{where}: {place}unknown key {key!r}{hint}{moved}; allowed: {', '.join(allowed)}"
        )


def _section_of(key: str) -> str | None:
    if key in TOP_KEYS:
        return "the top level"
    for section, keys in SECTIONS.items():
        if key in keys:
            return f"[{section}]"
    if key in OUTPUT_KEYS:
        return "[output]"
    return None


def _expect(ok: bool, where: str, section: str, key: str, value: Any, allowed: str) -> None:
    if not ok:
        place = f"[{section}] " if section else ""
        raise ParameterError(
            f"{where}: {place}{key} = {value!r} has the wrong type; allowed: {allowed}"
        )


def _describe_type(hint: Any) -> str:
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return _describe_type(inner[0]) + ' or "none"'
    if origin is tuple:
        parts = [_describe_type(a) for a in args if a is not Ellipsis]
        return f"a list of {len(parts)} values ({', '.join(parts)})"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(
        hint, str(hint)
    )


def _coerce(value: Any, hint: Any, where: str, section: str, key: str) -> Any:
    """Check a TOML value against a dataclass field's type hint and return it typed.

    bool, int, float (ints accepted), str, ``X | None`` (None is an absent key) and
    fixed-length ``tuple[...]`` (a TOML list) are supported.
    """
    args = typing.get_args(hint)
    if type(None) in args:
        # TOML has no null: the text "none" stands for None.
        if isinstance(value, str) and value.lower() == "none":
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(value, inner[0], where, section, key)
    ok: bool
    if typing.get_origin(hint) is tuple:
        fixed = [a for a in args if a is not Ellipsis]
        ok = isinstance(value, list) and len(value) == len(fixed)
        _expect(ok, where, section, key, value, _describe_type(hint))
        return tuple(
            _coerce(v, t, where, section, f"{key}[{i}]")
            for i, (v, t) in enumerate(zip(value, fixed, strict=True))
        )
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
    elif hint is str:
        ok = isinstance(value, str)
    else:
        raise AssertionError(f"no TOML type for field {key} ({hint})")
    _expect(ok, where, section, key, value, _describe_type(hint))
    return float(value) if hint is float else value


_PATH_KEYS = {"plugin": ("path", "preset"), "Convolution": ("impulse_response_filename",)}


def _resolve_effect_paths(spec: Any, base_dir: Path | None) -> Any:
    """Make relative plugin, preset and impulse-response paths absolute from the preset's
    folder (so the preset works from any working directory)."""
    if not isinstance(spec, Mapping) or base_dir is None:
        return spec
    keys = _PATH_KEYS.get(str(spec.get("type")), ())
    out = dict(spec)
    for key in keys:
        value = out.get(key)
        if isinstance(value, str) and value:
            p = expand_path(value)
            out[key] = str(p if p.is_absolute() else (base_dir / p).resolve())
    return out


def _lane_options_from(table: Any, where: str) -> LaneOptions:
    _expect(isinstance(table, Mapping), where, "output", "lanes", table, "a table")
    hints = typing.get_type_hints(LaneOptions)
    names = [f.name for f in dataclasses.fields(LaneOptions)]
    _refuse_unknown(table, names, where, "output.lanes")
    values = {k: _coerce(v, hints[k], where, "output.lanes", k) for k, v in table.items()}
    return LaneOptions(**values)


def _export_from(table: Any, where: str) -> ExportOptions:
    _expect(isinstance(table, Mapping), where, "", "output", table, "a table")
    _refuse_unknown(table, [*OUTPUT_KEYS, "lanes"], where, "output")
    changes: dict[str, Any] = {}
    if "bit_depth" in table:
        v = table["bit_depth"]
        _expect(
            isinstance(v, int) and not isinstance(v, bool),
            where,
            "output",
            "bit_depth",
            v,
            ", ".join(str(b) for b in BIT_DEPTHS[:-1]) + f" or {BIT_DEPTHS[-1]}",
        )
        changes["bit_depth"] = v
    for key in ("file_type", "pattern"):
        if key in table:
            _expect(isinstance(table[key], str), where, "output", key, table[key], "text")
            changes[key] = table[key]
    if "plot" in table:
        _expect(
            isinstance(table["plot"], bool), where, "output", "plot", table["plot"], "true or false"
        )
        changes["plot"] = table["plot"]
    if "lane_formats" in table:
        v = table["lane_formats"]
        _expect(
            isinstance(v, list) and all(isinstance(f, str) for f in v),
            where,
            "output",
            "lane_formats",
            v,
            'a list of format names, e.g. ["json", "csv"]',
        )
        changes["lane_formats"] = tuple(v)
    if "lanes" in table:
        changes["lanes"] = _lane_options_from(table["lanes"], where)
    options = dataclasses.replace(ExportOptions(), **changes)
    try:
        options.check()
        if "pattern" in changes:
            # The pattern must format with exactly {stem} and {kind}.
            options.pattern.format(stem="x", kind="music")
    except ParameterError as e:
        raise ParameterError(f"{where}: [output] {e}") from e
    except (KeyError, IndexError, ValueError) as e:
        raise ParameterError(
            f"{where}: [output] pattern = {options.pattern!r} is not allowed ({e!r}); allowed: "
            "text with {stem} and {kind} and no other {fields}"
        ) from e
    return options


# --------------------------------------------------------------------------------------
# Writing


def preset_to_dict(preset: Preset) -> dict[str, Any]:
    """The complete TOML document of ``preset``: every field, defaults included, so a
    saved preset does not change meaning when package defaults change."""
    req = preset.request
    doc: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "name": preset.name,
        "description": preset.description,
    }
    for key, fname in TOP_KEYS.items():
        doc[key] = getattr(req, fname)
    for section, keys in SECTIONS.items():
        table = {}
        for key, fname in keys.items():
            value = getattr(req, fname)
            table[key] = "none" if value is None else value  # TOML has no null
        if section == "generator":
            table["params"] = thaw(req.generator_params)
        doc[section] = table
    exp = preset.export
    doc["output"] = {
        "bit_depth": exp.bit_depth,
        "file_type": exp.file_type,
        "lane_formats": list(exp.lane_formats),
        "plot": exp.plot,
        "pattern": exp.pattern,
    }
    lanes = dataclasses.asdict(exp.lanes)
    doc["output"]["lanes"] = {k: thaw(v) for k, v in lanes.items() if v is not None}
    doc["effects"] = thaw(req.effects)
    return doc


def dumps_preset(preset: Preset) -> str:
    """``preset`` as TOML text (see :func:`preset_to_dict`)."""
    import tomli_w

    return tomli_w.dumps(preset_to_dict(preset))


def save_preset(preset: Preset, path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write ``preset`` to ``path`` atomically; the file name must match the preset name.

    Raises:
        OutputExistsError: the file exists and ``force`` is False.
        ParameterError: ``path`` does not end in ``<name>.toml``.
    """
    from .audio import write_bytes_atomic

    p = expand_path(path)
    if p.suffix != ".toml" or p.stem != preset.name:
        raise ParameterError(
            f"{p}: a preset named {preset.name!r} must be saved as {preset.name}.toml "
            "(presets are found by file name)"
        )
    p.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes_atomic(p, dumps_preset(preset).encode("utf-8"), force=force)


def make_preset(
    name: str,
    request: RenderRequest,
    export: ExportOptions | None = None,
    description: str = "",
) -> Preset:
    """Build a validated, frozen preset from a request (e.g. to save command-line flags).

    Raises:
        ParameterError: an invalid name or request.
    """
    opts = dataclasses.replace(export or ExportOptions(), force=False)
    data = preset_to_dict(Preset(name, description, request, opts))
    return preset_from_dict(data, where=f"preset {name!r}")

