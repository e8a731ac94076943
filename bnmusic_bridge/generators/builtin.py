"""Registers the built-in generators. Factories import their modules lazily so that
listing generators never imports torch or diffusers."""

from __future__ import annotations

from typing import Any

from .base import Generator, register_generator


def _procedural(**options: Any) -> Generator:
    from .procedural import ProceduralGenerator

    return ProceduralGenerator(**options)


register_generator(
    "procedural",
    _procedural,
    "embedded default: composes music aligned to the noise's rhythm and bands; no weights, CPU",
)
