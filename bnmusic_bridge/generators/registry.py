"""The registry presets, the CLI and the pipeline pick generators from: the built-in
ones (:data:`~bnmusic_bridge.generators.builtin.BUILTIN_GENERATORS`) and any a program
registers. Listing generators imports no model code (the factories import it lazily).
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import ParameterError
from .base import Generator, GeneratorFactory
from .builtin import BUILTIN_GENERATORS

_FACTORIES: dict[str, GeneratorFactory] = {
    name: factory for name, (factory, _) in BUILTIN_GENERATORS.items()
}
_DESCRIPTIONS: dict[str, str] = {
    name: description for name, (_, description) in BUILTIN_GENERATORS.items()
}
_INSTANCES: dict[tuple[str, tuple[tuple[str, Any], ...]], Generator] = {}
_LOCK = threading.Lock()


def register_generator(name: str, factory: GeneratorFactory, description: str = "") -> None:
    """Make ``factory(**options)`` available under ``name``."""
    _FACTORIES[name] = factory
    _DESCRIPTIONS[name] = description


def available_generators() -> dict[str, str]:
    """Names of the registered generators and a one-line description of each."""
    return dict(_DESCRIPTIONS)


def get_generator(name: str, **options: Any) -> Generator:
    """Return the generator ``name`` built with ``options``.

    Instances are cached per (name, options) so a model-owning generator loads its
    weights once per process and is reused across jobs.
    """
    if name not in _FACTORIES:
        known = ", ".join(sorted(_FACTORIES))
        raise ParameterError(f"unknown generator {name!r}; known generators: {known}")
    key = (name, tuple(sorted((k, _hashable(v)) for k, v in options.items())))
    with _LOCK:
        inst = _INSTANCES.get(key)
        if inst is None:
            inst = _FACTORIES[name](**options)
            _INSTANCES[key] = inst
        return inst


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value
