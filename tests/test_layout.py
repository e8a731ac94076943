"""The package's house rules, read from the source (AST, nothing imported):

- the library (every ``bnmusic_bridge`` module outside ``frontends/``) never imports a front
  end; ``python -m bnmusic_bridge`` (``__main__``) is the one door from the library side;
- front ends use only the library's public names (no ``_name``, no ``_module``);
- no import cycles between modules, lazy (function-level) imports included;
- imports go down the layers listed in :data:`LAYERS` (or sideways), never up;
- heavy libraries are imported lazily where the README promises fast start-up.

Imports under ``if TYPE_CHECKING:`` are not executed and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bnmusic_bridge"
ROOT = "bnmusic_bridge"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "grid", "version", "threads", "progress", "scratch", "heap"),
    ("request", "loudness", "device", "channel_layout", "stereo"),
    ("result",),
    ("audio", "spectrogram", "mask", "analysis", "windows", "masking", "alignment"),
    ("generators", "amplify", "metering", "fx", "align"),
    ("blend",),
    ("export", "pipeline", "live"),
    ("presets", "batch", "evaluation"),
    ("__init__",),
    ("frontends", "__main__"),
)
"""Layers, low to high, by the first name under ``bnmusic_bridge``."""


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    package = name if _is_package(path) else name.rpartition(".")[0]
    out: list[tuple[str, str, int]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == ROOT:
                    out.append((alias.name, "", node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != ROOT:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    out.append((sub, "", node.lineno))
                else:
                    out.append((target, alias.name, node.lineno))
    return out


def _graph() -> dict[str, list[tuple[str, str, int]]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(module: str) -> int:
    top = _top(module)
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: not in any layer of tests/test_layout.py; add it to LAYERS")


def test_every_module_has_a_layer() -> None:
    for module in _modules():
        _layer(module)


def test_the_library_never_imports_a_front_end() -> None:
    bad = [
        f"{module}:{line} imports {target}"
        for module, edges in _graph().items()
        if _top(module) not in ("frontends", "__main__")
        for target, _, line in edges
        if _top(target) == "frontends"
    ]
    assert not bad, "\n".join(bad)


def _private(name: str) -> bool:
    """``_name`` is private; dunders (``__version__``) are not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_front_ends_use_public_names_only() -> None:
    bad = []
    for module, edges in _graph().items():
        if _top(module) != "frontends":
            continue
        for target, name, line in edges:
            if _top(target) == "frontends":
                continue
            private_module = any(_private(p) for p in target.split("."))
            if private_module or _private(name):
                bad.append(f"{module}:{line} imports {target}{'.' + name if name else ''}")
    assert not bad, "\n".join(bad)


def test_imports_go_down_the_layers() -> None:
    bad = [
        f"{module}:{line} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, edges in _graph().items()
        for target, _, line in edges
        if _layer(target) > _layer(module)
    ]
    assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    graph = {
        module: {target for target, _, _ in edges if target != module}
        for module, edges in _graph().items()
    }
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize(
    "module",
    [
        "bnmusic_bridge.grid",
        "bnmusic_bridge.request",
        "bnmusic_bridge.frontends.cli",
        "bnmusic_bridge.batch.backends",
        "bnmusic_bridge.batch.ray_backend",
        "bnmusic_bridge.threads",
        "bnmusic_bridge.progress",
    ],
)
def test_light_modules_import_nothing_heavy_at_the_top(module: str) -> None:
    path = _modules()[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    heavy = {"torch", "diffusers", "transformers", "matplotlib", "scipy", "ray"}
    top_level = [
        n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
    ]
    names = set()
    for node in top_level:
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif node.module and not node.level:
            names.add(node.module.split(".")[0])
    assert not names & heavy
