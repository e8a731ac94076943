"""Stage 1 generators: the interface, the registry and the built-in implementations."""

from .base import GenerationSettings, Generator, NoiseWindow, ProgressFn, WindowMusic
from .registry import available_generators, get_generator, register_generator

__all__ = [
    "GenerationSettings",
    "Generator",
    "NoiseWindow",
    "ProgressFn",
    "WindowMusic",
    "available_generators",
    "get_generator",
    "register_generator",
]
