"""Running an evaluation: every method on every clip, rendered through the pipeline and
measured (:mod:`~bnmusic_bridge.evaluation.metrics`), with FAD/KL when an embedder is
available (:mod:`~bnmusic_bridge.evaluation.embeddings`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import BNMusicError, ModelNotFoundError, ParameterError
from ..pipeline import render
from ..request import RenderRequest
from ..result import RenderResult
from .data import LoadedClip, NoiseClip, analysis_mono, load_clip
from .embeddings import (
    AudioEmbedder,
    Embedding,
    distribution_metrics,
    distribution_setup,
    embed_analysis_mono,
)
from .methods import EvalConfig, method_request, method_spec, probe_method
from .metrics import ClipMetrics, measure_result

StepCallback = Callable[[NoiseClip, str], None]
"""Called after each clip x method with the clip and the method name (progress bars)."""
Mixtures = dict[tuple[str, str], list[tuple[str, Embedding]]]
"""``(method, scenario)`` -> ``(category, embedding)`` of each clip's noise + music mixture."""


@dataclass(frozen=True)
class SkippedMethod:
    """A method that could not run, and why (shown in the report)."""

    method: str
    reason: str


@dataclass(frozen=True)
class ClipInfo:
    """A clip as evaluated: loudness before normalisation, gain and peak after it."""

    clip: str
    category: str
    path: str
    duration_s: float
    original_lufs: float
    normalisation_gain_db: float
    peak_dbfs: float
    prompt: str
    seed: int


@dataclass(frozen=True)
class EvalResult:
    """Everything an evaluation measured.

    Attributes:
        rows: one :class:`~bnmusic_bridge.evaluation.metrics.ClipMetrics` per clip x
            method x scenario that ran.
        clips: the clips, with their normalisation.
        skipped: methods that did not run at all, and why.
        failures: ``(clip, method, message)`` for renders that failed.
        distribution: FAD/KL per ``(category, method, scenario)``: ``{"fad": .., "kl": ..}``
            (category ``"all"`` too); empty when not computed.
        distribution_note: why FAD/KL were (not) computed, and with what.
        config: the configuration.
    """

    rows: list[ClipMetrics]
    clips: list[ClipInfo]
    skipped: list[SkippedMethod]
    failures: list[tuple[str, str, str]]
    distribution: dict[tuple[str, str, str], dict[str, float]]
    distribution_note: str
    config: EvalConfig

    @property
    def methods_run(self) -> list[str]:
        done = {r.method for r in self.rows}
        return [m for m in self.config.methods if m in done]

    @property
    def categories(self) -> list[str]:
        return sorted({c.category for c in self.clips})


def check_config(config: EvalConfig) -> None:
    """Refuse an evaluation that cannot be run.

    Raises:
        ParameterError: no method, an unknown method, or a target coverage out of (0, 1].
    """
    if not config.methods:
        raise ParameterError("no method to evaluate")
    for m in config.methods:
        method_spec(m)
    if not 0.0 < config.target_coverage <= 1.0:
        raise ParameterError(
            f"target_coverage={config.target_coverage}; allowed: greater than 0, at most 1"
        )


def probe_methods(config: EvalConfig) -> tuple[list[str], list[SkippedMethod]]:
    """``(methods that can run here, methods that cannot and why)``, in config order."""
    active: list[str] = []
    skipped: list[SkippedMethod] = []
    for m in config.methods:
        reason = probe_method(config, m)
        if reason is None:
            active.append(m)
        else:
            skipped.append(SkippedMethod(m, reason))
    return active, skipped


def clip_info(clip: NoiseClip, loaded: LoadedClip, request: RenderRequest) -> ClipInfo:
    """The report's line about ``clip``: its normalisation and the prompt and seed of
    ``request`` (the request of the first method that can run)."""
    return ClipInfo(
        clip=clip.name,
        category=clip.category,
        path=str(clip.path),
        duration_s=loaded.duration_s,
        original_lufs=loaded.original_lufs,
        normalisation_gain_db=loaded.gain_db,
        peak_dbfs=loaded.peak_dbfs,
        prompt=request.prompt,
        seed=int(request.seed),
    )


def add_mixtures(
    mixtures: Mixtures,
    embedder: AudioEmbedder,
    *,
    clip: NoiseClip,
    method: str,
    loaded: LoadedClip,
    noise_mono: np.ndarray,
    result: RenderResult,
) -> None:
    """Embed the noise + music mixture of one render in each scenario into ``mixtures``."""
    for scenario, music in (("normalised", result.music), ("direct", result.music_gained)):
        mix = noise_mono + analysis_mono(music, loaded.sample_rate_hz)
        mixtures.setdefault((method, scenario), []).append(
            (clip.category, embed_analysis_mono(embedder, mix))
        )


@dataclass
class _Collected:
    """What :func:`evaluate` has gathered so far (filled in clip by clip)."""

    active: list[str]
    skipped: list[SkippedMethod]
    rows: list[ClipMetrics] = field(default_factory=list)
    clips: list[ClipInfo] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    mixtures: Mixtures = field(default_factory=dict)


def _measure_method(
    collected: _Collected,
    config: EvalConfig,
    method: str,
    clip_index: int,
    clip: NoiseClip,
    loaded: LoadedClip,
    noise_mono: np.ndarray,
    embedder: AudioEmbedder | None,
) -> None:
    """Render one clip with one method, measure it, and embed its mixtures."""
    result = render(loaded.noise, loaded.sample_rate_hz, method_request(config, method, clip_index))
    collected.rows.extend(
        measure_result(
            result,
            noise_mono,
            clip=clip,
            method=method,
            target_coverage=config.target_coverage,
            tolerance_ms=config.tolerance_ms,
        )
    )
    if embedder is not None:
        add_mixtures(
            collected.mixtures,
            embedder,
            clip=clip,
            method=method,
            loaded=loaded,
            noise_mono=noise_mono,
            result=result,
        )


def _evaluate_clip(
    collected: _Collected,
    config: EvalConfig,
    clip_index: int,
    clip: NoiseClip,
    embedder: AudioEmbedder | None,
    on_step: StepCallback | None,
) -> None:
    """Load one clip, then render and measure it with every method that can run; a
    failure is recorded, a method whose weights turn out missing is skipped from then on."""
    try:
        loaded = load_clip(clip, config.target_lufs)
    except BNMusicError as e:
        collected.failures.append((clip.name, "(all)", f"{clip.path}: {e}"))
        for m in config.methods:
            if on_step:
                on_step(clip, m)
        return
    active = collected.active
    base_req = method_request(config, active[0], clip_index) if active else config.base_request()
    collected.clips.append(clip_info(clip, loaded, base_req))
    noise_mono = analysis_mono(loaded.noise, loaded.sample_rate_hz)
    for m in config.methods:
        try:
            if m in active:
                _measure_method(
                    collected, config, m, clip_index, clip, loaded, noise_mono, embedder
                )
        except ModelNotFoundError as e:
            # Weights that the probe could not see (a generator without ``load``).
            active.remove(m)
            collected.skipped.append(
                SkippedMethod(m, f"model weights not available locally ({str(e).splitlines()[0]})")
            )
        except BNMusicError as e:
            collected.failures.append((clip.name, m, str(e)))
        finally:
            if on_step:
                on_step(clip, m)


def evaluate(
    clips: Sequence[NoiseClip],
    config: EvalConfig,
    *,
    embedder: AudioEmbedder | None = None,
    on_step: StepCallback | None = None,
) -> EvalResult:
    """Run every method on every clip and measure it.

    Each clip is normalised to ``config.target_lufs``, rendered once per method through
    :func:`bnmusic_bridge.pipeline.render`, and measured in every scenario of
    :data:`~bnmusic_bridge.evaluation.metrics.SCENARIOS`.

    Args:
        clips: the noise clips.
        config: methods, base request, prompts, folders, targets.
        embedder: an audio embedding model for FAD/KL; None:
            :func:`~bnmusic_bridge.evaluation.embeddings.find_embedding_model` is asked
            when ``config.reference_dir`` is set.
        on_step: called after each clip x method (progress bars).

    Returns:
        :class:`EvalResult`. Methods that cannot run here (missing weights, no music
        folder) are listed in ``skipped``; single failed renders in ``failures``.

    Raises:
        ParameterError: see :func:`check_config`.
    """
    # 1. Check the configuration
    check_config(config)
    # 2. Find the methods that can run on this machine
    active, skipped = probe_methods(config)
    # 3. Find the FAD/KL embedder and embed the reference music
    setup = distribution_setup(config.reference_dir, embedder, config.embedding_model)
    # 4. Render and measure every clip with every method
    collected = _Collected(active, skipped)
    for k, clip in enumerate(clips):
        _evaluate_clip(collected, config, k, clip, setup.embedder, on_step)
    # 5. FAD/KL of the mixtures against the reference
    distribution = (
        distribution_metrics(collected.mixtures, setup.reference)
        if setup.embedder is not None and setup.reference
        else {}
    )
    return EvalResult(
        collected.rows,
        collected.clips,
        collected.skipped,
        collected.failures,
        distribution,
        setup.note,
        config,
    )
