"""The house rules of ``agent/``: rooms import only the rooms below them, no module imports
itself back in a circle, and imports sit at the top of a module except for the optional extras."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("policies", "run", "evaluate", "engine", "training", "benchmark", "scale")
"""In import order: a room may import the rooms before it, never one after it."""
LAZY = ("wandb", "ray", "matplotlib")
MAX_LINES = 450
"""A module longer than this is doing more than one job: split it by job."""
"""Imported inside functions on purpose: optional extras, or slow to import for a rare use."""


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted((ROOT / "agent").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _imports(tree: ast.Module) -> list[tuple[ast.stmt, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
            found.append((node, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "drive_attention":
            # ``from drive_attention import agent``
            found.extend((node, f"drive_attention.{alias.name}") for alias in node.names)
    # the package's parts are named as their folders
    return [(node, name.removeprefix("drive_attention.")) for node, name in found]


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "agent" and len(parts) > 1 else None


def test_rooms_import_only_the_rooms_before_them() -> None:
    wrong = []
    for name, tree in _modules().items():
        room = _room(name)
        if room is None:
            continue
        for _, target in _imports(tree):
            other = _room(target)
            if other is not None and other != room and ROOMS.index(other) > ROOMS.index(room):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "a room imports one listed after it in ROOMS: " + "; ".join(wrong)


def test_no_import_circle() -> None:
    modules = _modules()
    graph = {
        name: {t for _, t in _imports(tree) if t in modules and t != name}
        for name, tree in modules.items()
    }
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, "import circle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_imports_at_the_top_but_for_the_optional_extras() -> None:
    inside = []
    for name, tree in _modules().items():
        top = set(map(id, tree.body))
        for node, target in _imports(tree):
            if id(node) not in top and target.split(".")[0] not in LAZY:
                inside.append(f"{name}:{node.lineno} {target}")
    assert not inside, "import inside a function (move it to the top): " + "; ".join(inside)


def test_no_module_over_the_length_of_one_job() -> None:
    long = [
        f"{path.relative_to(ROOT)} ({n} lines)"
        for path in sorted((ROOT / "agent").rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, f"over {MAX_LINES} lines, split by job: " + "; ".join(long)
