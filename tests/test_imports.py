"""vidd's import structure, read with `ast`: no circle between its modules, and the
composition root (services.py) and the core know nothing of aiohttp."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vidd"
# Modules below the web layer: they must work without it (a worker, a test, the CLI).
NO_AIOHTTP = ("vidd.services", "vidd.pool", "vidd.store", "vidd.intake", "vidd.lifecycle")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The modules `path` imports at any depth of its code (inside functions too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # `from . import disk` names a module, not a symbol
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the vidd modules it imports. `from . import api` inside a package names
    its sibling, not the package's own __init__, so a module's ancestors are left out."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        edges[name] = {m for m in imports_of(path) if m in modules} - {name} - ancestors
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_reader_sees_imports_inside_functions_too() -> None:
    # The old circle hid behind an import inside a function; the reader must see those.
    edges = {"a": {"b"}, "b": {"a"}}
    assert find_cycle(edges) == ["a", "b", "a"]
    tree = imports_of(PACKAGE / "cli.py")
    assert "vidd.config" in tree and "vidd.client" in tree


def test_vidd_has_no_import_circle() -> None:
    edges = graph()
    assert len(edges) > 20  # the reader found the package
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_core_does_not_import_aiohttp() -> None:
    for name in NO_AIOHTTP:
        path = PACKAGE / (name.removeprefix("vidd.").replace(".", "/") + ".py")
        imported = imports_of(path)
        assert not any(m == "aiohttp" or m.startswith("aiohttp.") for m in imported), name
        assert not any(m.startswith("vidd.web") for m in imported), name
