"""Effects chains on the music stem: pedalboard built-ins and external VST3/AU plugins.

An effects chain is a sequence of *effect specs*, plain mappings that live in presets
(``[[effects]]`` tables) and in :attr:`RenderRequest.effects
<bnmusic_bridge.request.RenderRequest.effects>`:

* a pedalboard built-in, by class name, with its constructor parameters::

      {"type": "Reverb", "room_size": 0.4, "wet_level": 0.2}

* an external plugin (VST3 on every platform, Audio Unit on macOS), by path::

      {"type": "plugin", "path": "/Library/Audio/Plug-Ins/VST3/Foo.vst3",
       "plugin_name": "Foo Stereo",          # optional: one plugin of a bundle
       "preset": "warm.vstpreset",           # optional: VST3 preset file
       "parameters": {"mix": 0.3, "drive_db": 4.0}}   # optional

The pipeline runs the chain on the stitched music at 44.1 kHz before loudness matching
and Stage 2, so lambda is computed for the music as it will sound.

Buffers are pedalboard's layout: float32 ``(channels, samples)``, linear amplitude, with
the sample rate passed alongside in Hz. Output length always equals input length:
reverb and delay tails past the end are cut, and latency that a plugin reports is
compensated by pedalboard (the chain is fed extra silence so nothing is lost at the end).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from .errors import ParameterError
from .grid import AUDIO_EXTENSIONS
from .scratch import (
    BLOCK_SAMPLES,
    ArrayStore,
    BlockArray,
    DiskArray,
    MemoryStore,
    blocks,
    is_whole,
)

PLUGIN_TYPE = "plugin"
"""``type`` of an external (VST3 / Audio Unit) plugin spec."""
PLUGIN_KEYS = ("type", "path", "plugin_name", "preset", "parameters")
"""Keys an external plugin spec may hold."""
PLUGIN_SUFFIXES = (".vst3", ".component")
"""Plugin file or bundle suffixes: VST3, and Audio Unit (macOS only)."""
TAIL_PAD_SAMPLES = 8192
"""Silence appended past the end so plugins that buffer (latency) give back every input
sample; the padding is cut off again."""
STREAMING_UNSAFE = frozenset({"MP3Compressor", "PitchShift", "Resample", PLUGIN_TYPE})
"""Effects whose output run block by block (pedalboard's ``reset=False``) differs from
one call over the whole: the built-ins that buffer (latency; measured: other samples,
not just a delay) and external plugins (unknown). A chain with one of them is run in one
call even on a block array (its audio is then read into memory whole)."""
EFFECTS_BLOCK_SAMPLES = BLOCK_SAMPLES
"""Samples per call when a block array runs through a chain: a multiple of pedalboard's
internal 8,192-sample buffer, as it processes one long call."""


@dataclass(frozen=True)
class ParamRange:
    """What one built-in parameter accepts.

    Attributes:
        kind: "number", "choice" (one of ``choices``) or "file" (an existing file path).
        low: smallest number allowed (inclusive), for "number".
        high: largest number allowed (inclusive), for "number".
        unit: unit of the number, for messages ("dB", "Hz", "ms", "s", "", ...).
        choices: allowed names, for "choice".
        below_nyquist: the number is a frequency that must stay below half the sample rate.
    """

    kind: str = "number"
    low: float = -math.inf
    high: float = math.inf
    unit: str = ""
    choices: tuple[str, ...] = ()
    below_nyquist: bool = False

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "file":
            return "the path of an existing audio file"
        unit = f" {self.unit}" if self.unit else ""
        extra = " (below half the sample rate)" if self.below_nyquist else ""
        return f"a number from {self.low:g} to {self.high:g}{unit}{extra}"


def _n(low: float, high: float, unit: str = "") -> ParamRange:
    return ParamRange("number", low, high, unit)


def _hz(low: float = 1.0, high: float = 96_000.0) -> ParamRange:
    return ParamRange("number", low, high, "Hz", below_nyquist=True)


_UNIT = _n(0.0, 1.0)
_THRESHOLD_DB = _n(-100.0, 0.0, "dB")
_TIME_MS = _n(0.0, 5000.0, "ms")
_SHELF = {"cutoff_frequency_hz": _hz(), "gain_db": _n(-48.0, 48.0, "dB"), "q": _n(0.01, 100.0)}

BUILTIN_EFFECTS: dict[str, dict[str, ParamRange]] = {
    "Bitcrush": {"bit_depth": _n(1.0, 32.0, "bits")},
    "Chorus": {
        "rate_hz": _n(0.0, 99.0, "Hz"),
        "depth": _UNIT,
        "centre_delay_ms": _n(0.0, 100.0, "ms"),
        "feedback": _n(-1.0, 1.0),
        "mix": _UNIT,
    },
    "Clipping": {"threshold_db": _THRESHOLD_DB},
    "Compressor": {
        "threshold_db": _THRESHOLD_DB,
        "ratio": _n(1.0, 100.0),
        "attack_ms": _TIME_MS,
        "release_ms": _TIME_MS,
    },
    "Convolution": {"impulse_response_filename": ParamRange("file"), "mix": _UNIT},
    "Delay": {"delay_seconds": _n(0.0, 30.0, "s"), "feedback": _UNIT, "mix": _UNIT},
    "Distortion": {"drive_db": _n(0.0, 100.0, "dB")},
    "Gain": {"gain_db": _n(-96.0, 48.0, "dB")},
    "HighShelfFilter": dict(_SHELF),
    "HighpassFilter": {"cutoff_frequency_hz": _hz()},
    "LadderFilter": {
        "mode": ParamRange(
            "choice", choices=("LPF12", "HPF12", "BPF12", "LPF24", "HPF24", "BPF24")
        ),
        "cutoff_hz": _hz(),
        "resonance": _UNIT,
        "drive": _n(1.0, 100.0),
    },
    "Limiter": {"threshold_db": _THRESHOLD_DB, "release_ms": _n(0.1, 5000.0, "ms")},
    "LowShelfFilter": dict(_SHELF),
    "LowpassFilter": {"cutoff_frequency_hz": _hz()},
    "MP3Compressor": {"vbr_quality": _n(0.0, 9.0)},
    "NoiseGate": {
        "threshold_db": _THRESHOLD_DB,
        "ratio": _n(1.0, 100.0),
        "attack_ms": _TIME_MS,
        "release_ms": _TIME_MS,
    },
    "PeakFilter": dict(_SHELF),
    "Phaser": {
        "rate_hz": _n(0.0, 99.0, "Hz"),
        "depth": _UNIT,
        "centre_frequency_hz": _hz(),
        "feedback": _n(-0.99, 0.99),
        "mix": _UNIT,
    },
    "PitchShift": {"semitones": _n(-72.0, 72.0, "semitones")},
    "Resample": {
        "target_sample_rate": _n(1000.0, 192_000.0, "Hz"),
        "quality": ParamRange(
            "choice",
            choices=(
                "ZeroOrderHold",
                "Linear",
                "CatmullRom",
                "Lagrange",
                "WindowedSinc",
                "WindowedSinc256",
                "WindowedSinc128",
                "WindowedSinc64",
                "WindowedSinc32",
                "WindowedSinc16",
                "WindowedSinc8",
            ),
        ),
    },
    "Reverb": {
        "room_size": _UNIT,
        "damping": _UNIT,
        "wet_level": _UNIT,
        "dry_level": _UNIT,
        "width": _UNIT,
        "freeze_mode": _UNIT,
    },
}
"""pedalboard built-ins an effect spec may name, and what each parameter accepts.

Ranges are pedalboard's own where it checks them, and otherwise limits that keep the
output finite and the chain usable (pedalboard accepts, for example, a 30 kHz high-pass
at 44.1 kHz and then returns NaN)."""


def _fail(where: str, message: str) -> ParameterError:
    return ParameterError(f"{where}: {message}" if where else message)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def check_effects(
    effects: Sequence[Mapping[str, Any]],
    where: str = "effects",
    *,
    sample_rate_hz: float | None = None,
    load_plugins: bool = False,
) -> None:
    """Refuse a bad effects chain before any audio is processed.

    Checks every spec: a known ``type``, known parameter names, numbers in range, choice
    values among the allowed names, and that plugin, ``.vstpreset`` and impulse-response
    files exist. With ``load_plugins=True`` external plugins are also loaded (slow) to
    check their parameter names.

    Args:
        effects: the chain, a sequence of effect-spec mappings (see the module docstring).
        where: what to name in messages (a preset file and table, an OSC address).
        sample_rate_hz: when given, frequencies must also be below its half.
        load_plugins: load external plugins to check parameter names and the preset.

    Raises:
        ParameterError: the first problem, naming ``where``, the effect's position and
            type, the key and what is allowed.
    """
    if isinstance(effects, (str, bytes, Mapping)) or not isinstance(effects, Sequence):
        raise _fail(where, f"must be a list of effect tables, got {type(effects).__name__}")
    for index, spec in enumerate(effects):
        _check_spec(spec, f"{where}[{index}]", sample_rate_hz, load_plugins)


def _check_spec(spec: Any, where: str, sample_rate_hz: float | None, load_plugins: bool) -> None:
    if not isinstance(spec, Mapping):
        raise _fail(where, f"must be a table with a 'type' key, got {spec!r}")
    kind = spec.get("type")
    allowed_types = ", ".join([*BUILTIN_EFFECTS, PLUGIN_TYPE])
    if not isinstance(kind, str):
        raise _fail(where, f"needs 'type' = the name of an effect; allowed: {allowed_types}")
    if kind == PLUGIN_TYPE:
        _check_plugin_spec(spec, where, load_plugins)
        return
    if kind not in BUILTIN_EFFECTS:
        hint = _did_you_mean(kind, [*BUILTIN_EFFECTS, PLUGIN_TYPE])
        raise _fail(where, f"unknown effect type {kind!r}{hint}; allowed: {allowed_types}")
    where = f"{where} ({kind})"
    ranges = BUILTIN_EFFECTS[kind]
    for key, value in spec.items():
        if key == "type":
            continue
        if key not in ranges:
            hint = _did_you_mean(key, list(ranges))
            raise _fail(
                where,
                f"unknown parameter {key!r}{hint}; allowed: {', '.join(ranges) or 'none'}",
            )
        _check_value(ranges[key], value, where, key, sample_rate_hz)


def _check_value(
    rng: ParamRange, value: Any, where: str, key: str, sample_rate_hz: float | None
) -> None:
    said = f"{key} = {value!r}"
    if rng.kind == "choice":
        if value not in rng.choices:
            raise _fail(where, f"{said} is not allowed; allowed: {rng.describe()}")
        return
    if rng.kind == "file":
        if not isinstance(value, (str, os.PathLike)) or "\x00" in str(value) or not str(value):
            raise _fail(where, f"{said} has the wrong type; allowed: {rng.describe()}")
        p = Path(value).expanduser()
        if p.suffix.lower() not in AUDIO_EXTENSIONS:
            raise _fail(
                where,
                f"{said} is not an audio file; allowed: {rng.describe()} "
                f"({', '.join(AUDIO_EXTENSIONS)})",
            )
        if not p.is_file():
            raise _fail(where, f"{said}: file not found")
        return
    if not _is_number(value) or not math.isfinite(float(value)):
        raise _fail(where, f"{said} has the wrong type; allowed: {rng.describe()}")
    if not rng.low <= float(value) <= rng.high:
        raise _fail(where, f"{said} is out of range; allowed: {rng.describe()}")
    if rng.below_nyquist and sample_rate_hz is not None and float(value) >= sample_rate_hz / 2:
        raise _fail(
            where,
            f"{said} is not below half the sample rate ({sample_rate_hz / 2:g} Hz)",
        )


def effect_paths(effects: Sequence[Mapping[str, Any]]) -> list[tuple[int, str, str, str]]:
    """Every file an effects chain names, for whoever must confine them (the OSC server
    keeps them inside its roots): ``(index, key, value, kind)`` with ``kind`` "file"
    (an impulse response, a ``.vstpreset``) or "plugin" (a plugin file or bundle, which
    may be a folder). Values that are not text are left out (the chain's check refuses
    them)."""
    found: list[tuple[int, str, str, str]] = []
    for index, spec in enumerate(effects):
        if not isinstance(spec, Mapping):
            continue
        kind = spec.get("type")
        if kind == PLUGIN_TYPE:
            keys = [("path", "plugin"), ("preset", "file")]
        else:
            ranges = BUILTIN_EFFECTS.get(str(kind), {})
            keys = [(key, "file") for key, rng in ranges.items() if rng.kind == "file"]
        for key, path_kind in keys:
            value = spec.get(key)
            if isinstance(value, (str, os.PathLike)) and str(value):
                found.append((index, key, os.fspath(value), path_kind))
    return found


def _check_plugin_spec(spec: Mapping[str, Any], where: str, load_plugins: bool) -> None:
    unknown = [k for k in spec if k not in PLUGIN_KEYS]
    if unknown:
        hint = _did_you_mean(unknown[0], list(PLUGIN_KEYS))
        raise _fail(
            where,
            f"unknown key {unknown[0]!r}{hint} in a plugin effect; allowed: "
            f"{', '.join(PLUGIN_KEYS)} (plugin parameters go in 'parameters')",
        )
    path = spec.get("path")
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise _fail(where, "a plugin effect needs 'path' = the .vst3 or .component file")
    p = Path(path).expanduser()
    if p.suffix.lower() not in PLUGIN_SUFFIXES:
        raise _fail(
            where,
            f"path {str(path)!r} is not a plugin; allowed: a {' or '.join(PLUGIN_SUFFIXES)} "
            "file or bundle",
        )
    if not p.exists():
        raise _fail(where, f"plugin not found: {p}")
    name = spec.get("plugin_name")
    if name is not None and not isinstance(name, str):
        raise _fail(where, f"plugin_name = {name!r} must be text")
    preset = spec.get("preset")
    if preset is not None:
        if (
            not isinstance(preset, (str, os.PathLike))
            or Path(preset).suffix.lower() != ".vstpreset"
        ):
            raise _fail(where, f"preset = {preset!r} must be the path of a .vstpreset file")
        if p.suffix.lower() != ".vst3":
            raise _fail(where, "a .vstpreset can only be loaded into a VST3 plugin")
        if not Path(preset).expanduser().is_file():
            raise _fail(where, f"preset file not found: {preset}")
    params = spec.get("parameters", {})
    if not isinstance(params, Mapping):
        raise _fail(where, f"parameters must be a table of name = value, got {params!r}")
    for key, value in params.items():
        if not isinstance(value, (str, int, float, bool)):
            raise _fail(where, f"parameters.{key} = {value!r} must be a number, text or boolean")
    if load_plugins:
        _build_plugin(spec, where)


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def build_pedalboard(
    effects: Sequence[Mapping[str, Any]], sample_rate_hz: float | None = None
) -> Any:
    """A ``pedalboard.Pedalboard`` for ``effects`` (checked first with :func:`check_effects`).

    Returns:
        a new ``pedalboard.Pedalboard``; add your own plugins to it or run it yourself.

    Raises:
        ParameterError: a bad spec, or a plugin that fails to load or refuses a value.
    """
    import pedalboard

    check_effects(effects, sample_rate_hz=sample_rate_hz)
    plugins = []
    for index, spec in enumerate(effects):
        where = f"effects[{index}] ({spec['type']})"
        if spec["type"] == PLUGIN_TYPE:
            plugins.append(_build_plugin(spec, where))
        else:
            plugins.append(_build_builtin(spec, where))
    return pedalboard.Pedalboard(plugins)


def _build_builtin(spec: Mapping[str, Any], where: str) -> Any:
    import pedalboard

    cls = getattr(pedalboard, spec["type"])
    kwargs: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "type":
            continue
        rng = BUILTIN_EFFECTS[spec["type"]][key]
        if rng.kind == "choice":
            # Enum parameters: LadderFilter.Mode, Resample.Quality.
            enum = cls.Mode if key == "mode" else cls.Quality
            kwargs[key] = getattr(enum, value)
        elif rng.kind == "file":
            kwargs[key] = str(Path(value).expanduser())
        else:
            kwargs[key] = float(value)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, RuntimeError) as e:
        raise _fail(where, f"pedalboard refused the parameters: {e}") from e


def _build_plugin(spec: Mapping[str, Any], where: str) -> Any:
    import pedalboard

    path = str(Path(spec["path"]).expanduser())
    try:
        plugin = pedalboard.load_plugin(path, plugin_name=spec.get("plugin_name"))
    except (ValueError, ImportError, RuntimeError, OSError) as e:
        raise _fail(where, f"could not load plugin {path}: {e}") from e
    preset = spec.get("preset")
    if preset is not None:
        try:
            # Only VST3Plugin has load_preset; the spec check allows a .vstpreset only
            # with a .vst3 path.
            plugin.load_preset(str(Path(preset).expanduser()))  # type: ignore[attr-defined]
        except (ValueError, RuntimeError, OSError, AttributeError) as e:
            raise _fail(where, f"could not load preset {preset}: {e}") from e
    params = dict(spec.get("parameters", {}))
    known = list(getattr(plugin, "parameters", {}).keys())
    for key, value in params.items():
        if key not in known:
            hint = _did_you_mean(key, known)
            raise _fail(
                where,
                f"plugin {Path(path).name} has no parameter {key!r}{hint}; it has: "
                f"{', '.join(known) or 'none'}",
            )
        try:
            setattr(plugin, key, value)
        except (ValueError, TypeError, RuntimeError) as e:
            raise _fail(where, f"plugin {Path(path).name} refused {key} = {value!r}: {e}") from e
    return plugin


@overload
def apply_effects(
    audio: BlockArray,
    sample_rate_hz: float,
    effects: Sequence[Mapping[str, Any]],
    *,
    store: None = None,
) -> np.ndarray: ...


@overload
def apply_effects(
    audio: BlockArray,
    sample_rate_hz: float,
    effects: Sequence[Mapping[str, Any]],
    *,
    store: ArrayStore,
) -> np.ndarray | DiskArray: ...


def apply_effects(
    audio: BlockArray,
    sample_rate_hz: float,
    effects: Sequence[Mapping[str, Any]],
    *,
    store: ArrayStore | None = None,
) -> np.ndarray | DiskArray:
    """Run ``audio`` through the effects chain described by ``effects``.

    Args:
        audio: float ``(channels, samples)`` or mono ``(samples,)``, linear amplitude.
        sample_rate_hz: the audio's sample rate in Hz.
        effects: effect specs (see the module docstring); empty returns a copy.
        store: where the output is allocated (None: a numpy array).

    Returns:
        float32 audio of the same length as ``audio`` (tails past the end are cut,
        latency that plugins report is compensated). The channel count is what the chain
        gives back: the input's for built-ins; a 1-D input gives 1-D output.

    A numpy ``audio`` is run through the chain in one call. Any other block array
    (a DiskArray, a view) is run :data:`~bnmusic_bridge.scratch.BLOCK_SAMPLES` at a
    time with the chain's state carried (``reset=False``), written block by block into
    ``store``: the same samples as one call for every built-in except those in
    :data:`STREAMING_UNSAFE`, whose chains are run in one call on the whole audio.

    Raises:
        ParameterError: a bad spec, a plugin that will not load, or a chain whose output
            holds NaN or infinite samples.
    """
    if not is_whole(audio) and hasattr(audio, "shape"):
        return _apply_effects_blocks(audio, sample_rate_hz, effects, store or MemoryStore())
    x = np.asarray(audio, dtype=np.float32)
    mono = x.ndim == 1
    if mono:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] > x.shape[1]:
        raise ParameterError(
            f"apply_effects: audio must be (channels, samples) (pedalboard's layout), "
            f"got shape {np.shape(audio)}"
        )
    if not effects:
        return (x[0] if mono else x).copy()
    board = build_pedalboard(effects, sample_rate_hz)
    n = x.shape[1]
    padded = np.concatenate([x, np.zeros((x.shape[0], TAIL_PAD_SAMPLES), np.float32)], axis=1)
    y = np.asarray(board(padded, float(sample_rate_hz), reset=True), dtype=np.float32)
    if y.shape[1] < n:
        # A plugin kept more than the padding inside: give back what it returned, zero-filled.
        y = np.concatenate([y, np.zeros((y.shape[0], n - y.shape[1]), np.float32)], axis=1)
    y = np.ascontiguousarray(y[:, :n])
    if not np.all(np.isfinite(y)):
        raise _not_finite(effects)
    if mono:
        # A mono buffer stays mono even when a plugin answers in stereo.
        return np.ascontiguousarray(y.mean(axis=0)) if y.shape[0] > 1 else y[0]
    return y


def _not_finite(effects: Sequence[Mapping[str, Any]]) -> ParameterError:
    kinds = ", ".join(str(s.get("type")) for s in effects)
    return ParameterError(
        f"the effects chain ({kinds}) produced NaN or infinite samples; check its "
        "gains, feedback and filter frequencies"
    )


def _apply_effects_blocks(
    audio: BlockArray,
    sample_rate_hz: float,
    effects: Sequence[Mapping[str, Any]],
    store: ArrayStore,
) -> np.ndarray | DiskArray:
    """:func:`apply_effects` of a block array, a block at a time, into ``store``."""
    shape = tuple(audio.shape)
    mono = len(shape) == 1
    n = shape[-1]
    if len(shape) not in (1, 2) or (not mono and shape[0] > shape[1]):
        raise ParameterError(
            f"apply_effects: audio must be (channels, samples) (pedalboard's layout), "
            f"got shape {shape}"
        )

    def read(a: int, b: int) -> np.ndarray:
        part = audio[a:b] if mono else audio[:, a:b]
        part = np.asarray(part, dtype=np.float32)
        return part[None, :] if mono else part

    def put(out: np.ndarray | DiskArray, a: int, y: np.ndarray) -> None:
        if mono:
            # A mono buffer stays mono even when a plugin answers in stereo.
            out[a : a + y.shape[1]] = y.mean(axis=0) if y.shape[0] > 1 else y[0]
        else:
            out[:, a : a + y.shape[1]] = y

    def allocate(channels: int) -> np.ndarray | DiskArray:
        return store.empty((n,) if mono else (channels, n), np.float32)

    in_channels = 1 if mono else shape[0]
    out: np.ndarray | DiskArray | None  # None: not allocated yet (the streaming loop)
    if not effects:
        out = allocate(in_channels)
        for a, b in blocks(n, EFFECTS_BLOCK_SAMPLES):
            put(out, a, read(a, b))
        return out
    kinds = {str(spec.get("type")) for spec in effects if isinstance(spec, Mapping)}
    if kinds & STREAMING_UNSAFE:
        # One call over the whole audio: these effects do not stream sample-exactly.
        whole = read(0, n)
        y = apply_effects(whole[0] if mono else whole, sample_rate_hz, effects)
        out = allocate(1 if mono else y.shape[0])
        put(out, 0, y[None, :] if mono else y)
        return out
    board = build_pedalboard(effects, sample_rate_hz)
    rate = float(sample_rate_hz)
    out = None
    pos = 0  # output samples written so far

    def take(y: np.ndarray) -> None:
        nonlocal out, pos
        y = np.asarray(y, dtype=np.float32)
        if out is None:
            out = allocate(y.shape[0])
        keep = y[:, : max(0, n - pos)]
        if not np.all(np.isfinite(keep)):
            raise _not_finite(effects)
        if keep.shape[1]:
            put(out, pos, keep)
        pos += keep.shape[1]

    for a, b in blocks(n, EFFECTS_BLOCK_SAMPLES):
        take(board(read(a, b), rate, reset=a == 0))
    if pos < n:  # the chain still holds samples: the padding brings them out
        silence = np.zeros((in_channels, TAIL_PAD_SAMPLES), np.float32)
        take(board(silence, rate, reset=False))
    if out is None:  # no samples at all
        out = allocate(in_channels)
    if pos < n:
        # A plugin kept more than the padding inside: what it returned, zero-filled.
        put(out, pos, np.zeros((1 if mono else out.shape[0], n - pos), np.float32))
    return out
