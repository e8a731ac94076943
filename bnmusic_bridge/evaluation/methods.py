"""The methods an evaluation compares (the full method, the paper's baselines and ablation
steps, any registered generator), what an evaluation runs, and the request each method
renders a clip with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..alignment import DEFAULT_TOLERANCE_MS
from ..errors import BNMusicError, ModelNotFoundError, ParameterError
from ..generators import available_generators
from ..pipeline import MODEL_GENERATORS, generator_for
from ..request import SEED_LIMIT, TRACK_GENERATOR, RenderRequest
from .data import TARGET_LUFS
from .metrics import NEEDED_LOUDNESS_COVERAGE


@dataclass(frozen=True)
class MethodSpec:
    """One row of Table 1.

    Attributes:
        name: the method's name on the command line.
        label: its name in the report.
        generator: the registered generator it renders with; None = the request's own
            (the preset's or ``--generator``), which is the full method.
        params: generator parameters it sets (on top of the generator's defaults).
        overrides: request fields it sets (e.g. the alignment step off).
    """

    name: str
    label: str
    generator: str | None
    params: Mapping[str, Any] = field(default_factory=dict)
    overrides: Mapping[str, Any] = field(default_factory=dict)


METHODS: dict[str, MethodSpec] = {
    "bnmusic": MethodSpec("bnmusic", "BNMusic (full)", None),
    "bnmusic-unaligned": MethodSpec(
        "bnmusic-unaligned", "BNMusic without the alignment step", None,
        overrides={"align_strength": 0.0},
    ),
    "track-raw": MethodSpec(
        "track-raw", "your track, raw (looped)", TRACK_GENERATOR,
        params={"fit": False}, overrides={"align_strength": 0.0},
    ),
    "track-aligned": MethodSpec(
        "track-aligned", "your track, fitted and aligned", TRACK_GENERATOR
    ),
    "noise-only": MethodSpec("noise-only", "noise only", "noise-only"),
    "random-music": MethodSpec("random-music", "random music", "random-music"),
    "riffusion-a2a": MethodSpec("riffusion-a2a", "Riffusion audio-to-audio", "riffusion-a2a"),
    "outpaint-only": MethodSpec("outpaint-only", "outpainting only", "outpaint-only"),
}
"""Named methods; any other registered generator name is accepted as a method too."""
DEFAULT_METHODS = tuple(METHODS)
"""The methods an evaluation runs unless told otherwise, in table order."""


def method_spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``name`` (a named method or any registered generator).

    Raises:
        ParameterError: neither a named method nor a registered generator.
    """
    if name in METHODS:
        return METHODS[name]
    if name in available_generators():
        return MethodSpec(name, name, name)
    raise ParameterError(
        f"unknown method {name!r}; use one of {', '.join(METHODS)} or a generator name "
        f"({', '.join(sorted(available_generators()))})"
    )


@dataclass(frozen=True)
class EvalConfig:
    """What an evaluation runs.

    Attributes:
        methods: method names in table order (see :data:`METHODS`).
        request: the base request (preset + flags); each method overrides its generator.
            None: the default :class:`~bnmusic_bridge.request.RenderRequest`.
        prompts: prompts cycled over the clips (clip ``k`` gets ``prompts[k % n]``);
            empty: the request's prompt.
        music_dir: folder of music files for ``random-music`` (None: that method is skipped).
        track: the producer's own music file for ``track-raw`` and ``track-aligned``
            (None: those methods are skipped).
        reference_dir: folder of reference music for FAD/KL (None: not computed).
        embedding_model: local folder or cached Hugging Face id of an audio classifier
            for FAD/KL (None: look in
            :data:`~bnmusic_bridge.evaluation.embeddings.ENV_EMBEDDING_MODEL` and the known ids).
        target_lufs: noise normalisation target, LUFS.
        target_coverage: share (0..1) of high-energy bins at which the loudness the music
            needs is reported (``--eval-coverage``). Not the request's
            ``target_coverage`` (the render's coverage objective), which stays in ``request``.
        tolerance_ms: onset tolerance of the rhythmic F-measure and the largest lag of
            the onset cross-correlation, ms.
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    request: RenderRequest | None = None
    prompts: tuple[str, ...] = ()
    music_dir: Path | None = None
    track: Path | None = None
    reference_dir: Path | None = None
    embedding_model: str | None = None
    target_lufs: float = TARGET_LUFS
    target_coverage: float = NEEDED_LOUDNESS_COVERAGE
    tolerance_ms: float = DEFAULT_TOLERANCE_MS

    def base_request(self) -> RenderRequest:
        return self.request if self.request is not None else RenderRequest()


def method_request(config: EvalConfig, method: str, clip_index: int) -> RenderRequest:
    """The request one method renders clip ``clip_index`` with.

    The base request's analysis, threshold and lambda settings are kept; the generator is
    the method's (the full method keeps the base generator and its parameters, the
    others get their defaults; ``random-music`` gets ``music_dir``, the ``track-*``
    methods the producer's ``track``). A method's own request overrides (the alignment
    step off, for the unaligned rows) are applied last. The seed is the
    base seed + ``clip_index`` (so ``random-music`` picks varied files); the prompt
    cycles over ``config.prompts``. Model-based generators never download weights here
    (``local_files_only``). Every method renders in the clip's own channel layout
    (``channels="match"``: a mono clip gets mono music, as in the paper).

    Raises:
        ParameterError: an unknown method, or ``random-music`` without a music folder.
    """
    base = config.base_request()
    spec = method_spec(method)
    generator = spec.generator or base.generator
    params: dict[str, Any] = dict(base.generator_params) if spec.generator is None else {}
    params.update(spec.params)
    music = base.music if spec.generator is None else None
    if spec.generator == TRACK_GENERATOR:
        if config.track is None:
            raise ParameterError(f"{method} needs --track FILE (the producer's own music)")
        music = str(config.track)
    if generator == "random-music":
        if config.music_dir is None and "music_dir" not in params:
            raise ParameterError("random-music needs --music-dir (a folder of music files)")
        if config.music_dir is not None:
            params["music_dir"] = str(config.music_dir)
    changes: dict[str, Any] = {
        "generator": generator,
        "generator_params": params,
        "music": music,
        "seed": int((base.seed + clip_index) % SEED_LIMIT),
        # The clip's own layout (a mono clip gets mono music), as the paper measures:
        # loudness, coverage and the mixtures compare like with like.
        "channels": "match",
        **spec.overrides,
    }
    if config.prompts:
        changes["prompt"] = config.prompts[clip_index % len(config.prompts)]
    if generator in MODEL_GENERATORS:
        changes["local_files_only"] = True
    return base.replace(**changes)


def probe_method(config: EvalConfig, method: str) -> str | None:
    """Why ``method`` cannot run on this machine (None: it can, as far as we can tell).

    Model-based generators are loaded here (``local_files_only``), so missing weights
    show up before any clip is rendered.
    """
    try:
        req = method_request(config, method, 0)
    except ParameterError as e:
        return str(e)
    if req.generator not in MODEL_GENERATORS:
        return None
    try:
        gen = generator_for(req)
        load = getattr(gen, "load", None)
        if callable(load):
            load()
    except ModelNotFoundError as e:
        first = str(e).strip().splitlines()[0]
        return f"generator {req.generator!r}: model weights not available locally ({first})"
    except BNMusicError as e:
        return f"generator {req.generator!r} could not start: {e}"
    return None
