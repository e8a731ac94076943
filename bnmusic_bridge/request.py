"""What a render is asked to do (:class:`RenderRequest`): every parameter, its default and
its range, once. Presets produce requests; flags and OSC arguments override fields. What
a render gives back is :class:`bnmusic_bridge.result.RenderResult`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ParameterError

THRESHOLD_MODELS = ("smr", "spreading")
"""Masking threshold models: the paper's fixed signal-to-mask ratio, or psychoacoustic
model 1 with spreading (:mod:`bnmusic_bridge.masking`)."""
OBJECTIVES = ("paper", "coverage")
"""Stage 2 objectives: the paper's loss per window, or the lowest gain per window that
masks ``target_coverage`` of its high-energy bins (:mod:`bnmusic_bridge.amplify`)."""
PEAK_MODES = ("bus-trim", "lane")
"""What keeps a loud blend from clipping (:mod:`bnmusic_bridge.blend`): ``bus-trim``: the
music is delivered at the level the blend needs (32-bit float where it passes full
scale) with the bus trim that keeps noise + music under -1 dBTP; ``lane``: the lane
itself keeps the music's peaks under -1 dBFS (the blend gives way on loud stems)."""
CHANNEL_MODES = ("stereo", "mono", "match")
"""The music's channels (:mod:`bnmusic_bridge.channel_layout`, :mod:`bnmusic_bridge.stereo`):
``stereo``: stereo music, widened into the range real stereo music has, for mono and
stereo stems alike (a multichannel stem gets it on its front pair, its other channels
silent); ``mono``: one-channel music whatever the stem; ``match``: the stem's channel
count (mono for a mono stem, otherwise as ``stereo``)."""
DEVICES = ("auto", "cpu", "cuda", "mps")
"""Compute devices a request may name (``auto``: the GPU only when one is present)."""
DTYPES = ("auto", "float32", "float16", "bfloat16")
"""Model precisions a request may name (``auto``: float16 on CUDA, float32 elsewhere)."""
SCHEDULERS = ("dpmsolver++", "ddim", "pndm", "euler", "lms")
"""Diffusion schedulers of the riffusion generators (each mapped to a diffusers class in
:mod:`bnmusic_bridge.generators.riffusion`)."""
TRACK_GENERATOR = "track"
"""The generator that plays the request's ``music`` file (the producer's own track)."""
DEFAULT_MODEL_ID = "riffusion/riffusion-model-v1"
"""The Riffusion weights on the Hugging Face Hub (a local folder works too)."""



def expand_path(text: str | os.PathLike[str]) -> Path:
    """A path the local user typed (a command-line argument, a preset file's value, a
    batch input), with ``~``/``~user`` and ``$VAR``/``${VAR}`` expanded, as a shell does
    for an unquoted word, so ``--root "~/Music/My Project"`` works quoted too. A file or
    folder whose literal name holds the ``~`` or ``$`` is kept as it is. Unset variables
    stay as written.

    Never for paths an OSC client sends: those are taken literally, relative to the
    server's root (``frontends/osc/paths.py``), so ``~`` or ``$HOME`` cannot lead out.
    """
    raw = os.fspath(text)
    expanded = os.path.expandvars(os.path.expanduser(raw))
    if expanded != raw and os.path.lexists(raw):
        return Path(raw)
    return Path(expanded)


MAX_PROMPT_CHARS = 1000
SEED_LIMIT = 2**32
"""Seeds are integers from 0 to ``SEED_LIMIT - 1``."""


@dataclass(frozen=True)
class FieldSpec:
    """What checks, presets, command-line flags and docs need to know about one field.

    Attributes:
        help: one line for a user (``--help``, docs), without the default or range.
        section: the preset TOML table holding the field ("" = the top level).
        toml_key: the key in that table when it differs from the field name.
        choices: allowed values of a text field.
        low, high: allowed range of a number (inclusive unless ``low_open``).
        low_open: the range excludes ``low``.
        unit: the unit a number is in ("dB", "LU", "s", ...), for messages and help.
        nullable: None is allowed (``"none"`` in presets and on the command line).
        flag: the render commands have a ``--flag`` for it.
        allowed: wording of the allowed values in messages, where the range alone
            does not say it.
        path: "file" or "dir" when the field names a file or folder to read ("" when
            it is no path): the OSC server resolves and confines such fields to its
            roots (bnmusic_bridge/frontends/osc/paths.py).
    """

    help: str
    section: str = ""
    toml_key: str | None = None
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    unit: str = ""
    nullable: bool = False
    flag: bool = True
    allowed: str | None = None
    path: str = ""

    def allowed_text(self) -> str:
        """The allowed values as an error message states them."""
        if self.allowed is not None:
            return self.allowed
        if self.choices:
            return " or ".join(self.choices) if len(self.choices) == 2 else ", ".join(self.choices)
        unit = f" {self.unit}" if self.unit else ""
        if self.low_open:
            text = f"greater than {self.low:g}, at most {self.high:g}{unit}"
        else:
            text = f"{self.low:g} to {self.high:g}{unit}"
        return text + (", or None for no limit" if self.nullable else "")


def _field(default: Any, spec: FieldSpec, *, factory: Any = None) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata={"spec": spec})
    return field(default=default, metadata={"spec": spec})


@dataclass(frozen=True)
class RenderRequest:
    """Every parameter of one render, and the only home of every render default.

    Units are in the names (dB, LU, s, frames). Each field's allowed range, preset
    section and help text are in its :class:`FieldSpec` (:data:`FIELD_SPECS`); the
    field list with defaults and ranges follows (generated from them).

    Notes on the Stage 2 fields: nothing clips: with ``peak_mode="bus-trim"`` the music
    keeps the level the blend needs and the result carries the bus trim for noise and
    music together (a stem over full scale is written as 32-bit float); with ``"lane"``
    the lane holds the gained music's sample peak at -1 dBFS or under. Windows a cap
    keeps from their target are listed in the result's shortfalls. The effects chain is applied before Stage 2
    so lambda accounts for it: each entry is ``{"type": "Reverb", ...parameters}`` for a
    pedalboard built-in or ``{"type": "plugin", "path": ..., ...}`` for a VST3/AU plugin
    (see :mod:`bnmusic_bridge.fx`).
    """

    prompt: str = _field(
        "lo-fi hip hop beat with warm piano and soft drums",
        FieldSpec("text prompt: style and instruments", allowed=f"text of at most {MAX_PROMPT_CHARS} characters"),
    )
    negative_prompt: str = _field("", FieldSpec("what the generator should avoid"))
    seed: int = _field(
        0,
        FieldSpec(
            "integer seed; same input + same seed = bit-identical output on the CPU",
            allowed=f"an integer from 0 to {SEED_LIMIT - 1}",
        ),
    )
    channels: str = _field(
        "stereo",
        FieldSpec(
            "the music's channels: stereo (for mono and stereo stems; a multichannel stem "
            "gets it on its front pair), mono, or match (the stem's layout)",
            choices=CHANNEL_MODES,
        ),
    )
    generator: str = _field(
        "procedural",
        FieldSpec("generator name (see `bnmusic generators`)", section="generator", toml_key="name"),
    )
    music: str | None = _field(
        None,
        FieldSpec(
            "the producer's own track (an audio file) for generator track, fitted to the noise's "
            "tempo and beat; --music alone also selects generator track",
            section="generator",
            nullable=True,
            allowed="an audio file path, or None for none",
            path="file",
        ),
    )
    generator_params: Mapping[str, Any] = _field(
        None,
        FieldSpec("the generator's own parameters", section="generator", toml_key="params", flag=False),
        factory=dict,
    )
    model: str = _field(
        DEFAULT_MODEL_ID,
        FieldSpec("model id or local folder (riffusion generators)", section="generator"),
    )
    device: str = _field("auto", FieldSpec("compute device", section="generator", choices=DEVICES))
    dtype: str = _field(
        "auto",
        FieldSpec(
            "model precision (riffusion generators; auto: float16 on CUDA, float32 elsewhere)",
            section="generator",
            choices=DTYPES,
        ),
    )
    scheduler: str = _field(
        "dpmsolver++",
        FieldSpec("diffusion scheduler (riffusion generators)", section="generator", choices=SCHEDULERS),
    )
    local_files_only: bool = _field(
        False, FieldSpec("never contact a model hub (the model must be on disk)", section="generator")
    )
    align_strength: float = _field(
        1.0,
        FieldSpec(
            "share of the distance to the noise's band envelope the music moves "
            "(the alignment step; 0: off)",
            section="align",
            low=0.0,
            high=1.0,
        ),
    )
    align_max_db: float = _field(
        12.0,
        FieldSpec(
            "largest boost or cut the alignment step gives any band",
            section="align",
            low=0.0,
            high=24.0,
            unit="dB",
        ),
    )
    mask_area: float = _field(
        0.15,
        FieldSpec("share of the noise image marked high-energy", section="mask", low=0.05, high=0.5),
    )
    threshold_model: str = _field(
        "spreading",
        FieldSpec(
            "masking threshold: spreading (psychoacoustic model 1) or smr (the paper: noise + smr_db)",
            section="threshold",
            choices=THRESHOLD_MODELS,
        ),
    )
    smr_db: float = _field(
        21.0,
        FieldSpec("signal-to-mask ratio of the smr model", section="threshold", low=0.0, high=40.0, unit="dB"),
    )
    alpha: float = _field(
        0.14,
        FieldSpec("music-level weight of the paper's loss", section="lambda", low=0.0, high=10.0, low_open=True),
    )
    objective: str = _field(
        "coverage",
        FieldSpec(
            "coverage (lowest lane reaching target_coverage per window) or paper (the paper's loss)",
            section="lambda",
            choices=OBJECTIVES,
        ),
    )
    target_coverage: float = _field(
        0.8,
        FieldSpec(
            "share of each lane window's high-energy bins the coverage objective masks",
            section="lambda",
            low=0.0,
            high=1.0,
            low_open=True,
        ),
    )
    min_gain_db: float = _field(
        -30.0,
        FieldSpec("lowest lambda, relative to the loudness-matched music", section="lambda", low=-80.0, high=48.0, unit="dB"),
    )
    max_gain_db: float = _field(
        24.0,
        FieldSpec("highest lambda, relative to the loudness-matched music", section="lambda", low=-80.0, high=48.0, unit="dB"),
    )
    max_loudness_lu: float | None = _field(
        6.0,
        FieldSpec(
            "ceiling: the gained music's loudness over the noise's in every lane window",
            section="loudness",
            low=-40.0,
            high=40.0,
            unit="LU",
            nullable=True,
            allowed="-40 to 40 LU, or None for no ceiling",
        ),
    )
    peak_mode: str = _field(
        "bus-trim",
        FieldSpec(
            "what keeps a loud blend from clipping: bus-trim (music at the level the blend "
            "needs, float where it passes full scale, plus a bus trim for noise and music) "
            "or lane (the lane keeps the music under -1 dBFS)",
            section="loudness",
            choices=PEAK_MODES,
        ),
    )
    lane_window_s: float = _field(
        2.56,
        FieldSpec("length of one lambda window", section="lambda", low=0.1, high=10.24, unit="s", flag=False),
    )
    lane_hop_s: float = _field(
        1.28,
        FieldSpec("hop between lambda windows (at most lane_window_s)", section="lambda", low=0.01, high=10.24, unit="s", flag=False),
    )
    smoothing_s: float = _field(
        2.0,
        FieldSpec(
            "time constant of the lane's zero-phase smoothing (2 s: about a bar at 120 BPM)",
            section="lambda",
            low=0.0,
            high=30.0,
            unit="s",
        ),
    )
    max_slew_db_per_s: float = _field(
        12.0,
        FieldSpec("largest change of the lane", section="lambda", low=0.1, high=1000.0, unit="dB/s", flag=False),
    )
    overlap_frames: int = _field(
        64,
        FieldSpec(
            "overlap of consecutive generation windows in 10 ms frames",
            section="generator",
            low=8,
            high=256,
            flag=False,
            allowed="8 to 256 frames (0.08 to 2.56 s)",
        ),
    )
    effects: tuple[Mapping[str, Any], ...] = _field(
        (), FieldSpec("the music's effects chain (pedalboard built-ins or plugins)", section="effects", flag=False)
    )

    def replace(self, **changes: Any) -> RenderRequest:
        """A copy with ``changes`` applied; unknown field names raise ParameterError."""
        unknown = set(changes) - set(FIELD_SPECS)
        if unknown:
            raise ParameterError(
                f"unknown render parameter(s) {sorted(unknown)}; known: {sorted(FIELD_SPECS)}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["generator_params"] = dict(self.generator_params)
        d["effects"] = [dict(e) for e in self.effects]
        return d


FIELD_SPECS: dict[str, FieldSpec] = {
    f.name: f.metadata["spec"] for f in dataclasses.fields(RenderRequest)
}
"""Every request field's :class:`FieldSpec`, in declaration order."""


def field_default(name: str) -> Any:
    """The default of request field ``name`` (a fresh copy for mutable defaults)."""
    return getattr(RenderRequest(), name)


def _fields_doc() -> str:
    lines = ["", "    Fields (default; allowed):", ""]
    defaults = RenderRequest()
    for name, spec in FIELD_SPECS.items():
        default = getattr(defaults, name)
        shown = dict(default) if isinstance(default, Mapping) else default
        rng = f"; {spec.allowed_text()}" if (spec.choices or spec.low is not None or spec.allowed) else ""
        unit = f" {spec.unit}" if spec.unit and isinstance(default, (int, float)) else ""
        lines.append(f"    - ``{name}`` = {shown!r}{unit}{rng}: {spec.help}.")
    return "\n".join(lines) + "\n"


RenderRequest.__doc__ = (RenderRequest.__doc__ or "") + _fields_doc()


def check_request(req: RenderRequest) -> None:
    """Refuse out-of-range parameters before any work, naming the field and the range."""

    def bad(name: str) -> ParameterError:
        return ParameterError(
            f"{name}={getattr(req, name)!r} is out of range; allowed: {FIELD_SPECS[name].allowed_text()}"
        )

    if not isinstance(req.seed, int) or isinstance(req.seed, bool) or not 0 <= req.seed < SEED_LIMIT:
        raise bad("seed")
    for name, spec in FIELD_SPECS.items():
        value = getattr(req, name)
        if spec.choices and value not in spec.choices:
            raise bad(name)
        if spec.low is None or (value is None and spec.nullable):
            continue
        if spec.low_open:
            if not spec.low < value <= spec.high:
                raise bad(name)
        elif not spec.low <= value <= spec.high:
            raise bad(name)
    if not req.min_gain_db < req.max_gain_db:
        lo, hi = FIELD_SPECS["min_gain_db"].low, FIELD_SPECS["max_gain_db"].high
        raise ParameterError(
            f"min_gain_db={req.min_gain_db}, max_gain_db={req.max_gain_db}: need "
            f"{lo:g} <= min_gain_db < max_gain_db <= {hi:g} (dB)"
        )
    if not req.lane_hop_s <= req.lane_window_s:
        raise ParameterError(
            f"lane_hop_s={req.lane_hop_s!r} is out of range; allowed: "
            f"{FIELD_SPECS['lane_hop_s'].low:g} s to lane_window_s ({req.lane_window_s} s)"
        )
    if not isinstance(req.prompt, str) or len(req.prompt) > MAX_PROMPT_CHARS:
        raise bad("prompt")
    if req.music is not None and (not isinstance(req.music, str) or not req.music.strip()):
        raise bad("music")
    if req.generator == TRACK_GENERATOR and req.music is None:
        raise ParameterError(
            f"generator {TRACK_GENERATOR!r} needs music: the producer's track (--music FILE, "
            'music = "FILE" in the preset\'s [generator] table)'
        )
    if req.music is not None and req.generator != TRACK_GENERATOR:
        raise ParameterError(
            f"music={req.music!r} is played by generator {TRACK_GENERATOR!r}, but generator is "
            f"{req.generator!r}; set generator = {TRACK_GENERATOR!r} (--music does it on the "
            "command line unless --generator is given) or leave music unset"
        )
