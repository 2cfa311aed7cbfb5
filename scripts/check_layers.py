#!/usr/bin/env python3
"""Check that the package's imports go one way: down the layers, with no circle.

Every import counts, at module level or inside a function; only imports under
``if TYPE_CHECKING:`` are left out (they never run). A module may import modules
of its own layer or of lower ones; within a layer the imports must not form a circle.

Usage: ``python scripts/check_layers.py [PACKAGE_DIR]`` (exit status 1 on any violation).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "django_semantic_images"

#: Lowest layer first. A module belongs to the first layer with a prefix that matches it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("settings", ("conf",)),
    ("encoders", ("encoders", "imaging", "device_jpeg", "fusion", "metrics")),
    ("pipeline", ("fields", "pipeline", "training", "signals", "dispatch", "sweep", "task_body")),
    (
        "query",
        (
            "bidi",
            "calibration",
            "expressions",
            "hnsw",
            "hnsw_message",
            "query",
            "words",
            "models",
            "duplicates",
            "keys",
            "replica",
        ),
    ),
    (
        "integrations",
        (
            "admin",
            "api",
            "tasks",
            "task_framework",
            "worker",
            "prefork",
            "checks",
            "apps",
            "extension",
            "management",
            "migrations",
            "contrib",
            "thumbnails",
            "thumbnail_engine",
            "uploads",
            "asgi",
        ),
    ),
]


def layer_of(module: str) -> int:
    """Index in LAYERS of a module (dotted, without the package name); the package root is on top."""
    if not module:
        return len(LAYERS)
    for index, (_name, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise SystemExit(f"{PACKAGE}.{module} belongs to no layer: add it to LAYERS in {__file__}.")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, skipping ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _imports(other)
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from _imports(child)


def imported_modules(root: Path, modules: set[str], module: str, path: Path) -> set[str]:
    """The package modules that ``module`` imports (dotted, without the package name)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name if name in modules else None

    for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                base = module.split(".") if module else []
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
                if not (prefix == PACKAGE or prefix.startswith(PACKAGE + ".")):
                    continue
                prefix = prefix[len(PACKAGE) + 1 :]
            targets = [f"{prefix}.{a.name}".strip(".") for a in node.names] or [prefix]
            targets = [t if known(t) == t else prefix for t in targets]
        for target in targets:
            if isinstance(node, ast.Import):
                if not (target == PACKAGE or target.startswith(PACKAGE + ".")):
                    continue
                target = target[len(PACKAGE) + 1 :]
            hit = known(target)
            if hit is not None and hit != module:
                found.add(hit)
    return found


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def problems(root: Path) -> list[str]:
    """Every upward import and every circle in the package at ``root``."""
    paths = {module_name(root, p): p for p in root.rglob("*.py")}
    modules = set(paths)
    edges = {m: imported_modules(root, modules, m, p) for m, p in paths.items()}
    found = []
    for module, targets in sorted(edges.items()):
        if not module:  # the package's __init__ re-exports lazily and may name any layer
            continue
        for target in sorted(targets):
            if layer_of(target) > layer_of(module):
                found.append(
                    f"{PACKAGE}.{module} ({LAYERS[layer_of(module)][0]}) imports {PACKAGE}.{target} "
                    f"({LAYERS[layer_of(target)][0]}), a higher layer"
                )
    for circle in circles(edges):
        found.append("import circle: " + " <-> ".join(f"{PACKAGE}.{m}" if m else PACKAGE for m in circle))
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / PACKAGE
    found = problems(root.resolve())
    for line in found:
        print(line)
    print(f"{len(found)} layering problems in {PACKAGE}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
