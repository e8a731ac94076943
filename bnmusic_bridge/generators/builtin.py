"""The built-in generators: a factory and a one-line description each
(:data:`BUILTIN_GENERATORS`, which :mod:`~bnmusic_bridge.generators.registry` starts
from). Factories import their modules lazily so that listing generators never imports
torch or diffusers."""

from __future__ import annotations

from typing import Any

from ..errors import ParameterError
from .base import Generator, GeneratorFactory


def _procedural(**options: Any) -> Generator:
    from .procedural import ProceduralGenerator

    return ProceduralGenerator(**options)


def _riffusion(**options: Any) -> Generator:
    from .riffusion import RiffusionGenerator

    return RiffusionGenerator(**options)


def _riffusion_a2a(**options: Any) -> Generator:
    from .baselines import RiffusionA2AGenerator

    return RiffusionA2AGenerator(**options)


def _outpaint_only(**options: Any) -> Generator:
    from .baselines import OutpaintOnlyGenerator

    return OutpaintOnlyGenerator(**options)


def _noise_only(**options: Any) -> Generator:
    from .baselines import NoiseOnlyGenerator

    if options:
        raise ParameterError(f"generator 'noise-only' takes no options, got {sorted(options)}")
    return NoiseOnlyGenerator()


def _random_music(**options: Any) -> Generator:
    from .baselines import RandomMusicGenerator

    return RandomMusicGenerator(**options)


def _track(**options: Any) -> Generator:
    from .track import TrackGenerator

    return TrackGenerator(**options)


BUILTIN_GENERATORS: dict[str, tuple[GeneratorFactory, str]] = {
    "procedural": (
        _procedural,
        "embedded default: composes music aligned to the noise's rhythm and bands; no weights, CPU",
    ),
    "track": (
        _track,
        "the producer's own music (--music FILE): time-stretched to the noise's tempo, "
        "downbeats on its events, looped at bar boundaries",
    ),
    "riffusion": (
        _riffusion,
        "BNMusic Stage 1: Riffusion (Stable Diffusion 1.x) outpaints around the noise core, "
        "then inpaints it; needs the weights, GPU recommended",
    ),
    "riffusion-a2a": (
        _riffusion_a2a,
        "baseline: Riffusion audio-to-audio (image-to-image of the noise image, strength 0.55)",
    ),
    "outpaint-only": (
        _outpaint_only,
        "ablation: BNMusic's outpainting step only (no inpainting of the core)",
    ),
    "noise-only": (_noise_only, "baseline: silent music (the noise heard alone)"),
    "random-music": (
        _random_music,
        "baseline: an unrelated music file from music_dir, chosen by seed, looped to the stem",
    ),
}
"""Generator name -> (factory, one-line description), in listing order."""
