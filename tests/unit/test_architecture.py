"""The shape of the package, held by tests: no import circle, no arrow up, no giant, a true map.

Imports are read with :mod:`ast`, all of them: module level, inside functions and
under ``TYPE_CHECKING`` (a circle that only mypy or a late import sees is still a
circle in the design). README.md's layout block must name every module.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import sshdeploy

pytestmark = pytest.mark.timeout(30)

PACKAGE = Path(sshdeploy.__file__).parent
README = PACKAGE.parent / "README.md"
#: No module of sshdeploy is longer than this (lines).
MAX_LINES = 750

#: The floors, top first. A module may import its own floor and the floors below it,
#: never one above. A module is on the floor of the longest prefix listed here.
FLOORS: list[tuple[str, ...]] = [
    # the faces: what a user runs or imports first
    ("sshdeploy", "sshdeploy.demo", "sshdeploy.cli"),
    # the running cluster: the only place that holds live SpecCluster state
    ("sshdeploy.cluster", "sshdeploy.cluster.kept", "sshdeploy.cluster.adopted",
     "sshdeploy.cluster.discovery"),
    # the plan of a cluster, and the two features: the stage before a start, clusters
    # that outlive the controller
    ("sshdeploy.plan", "sshdeploy.env", "sshdeploy.named"),
    # how the controller reaches the hosts
    ("sshdeploy.ssh",),
    # the pure ground floor: values, rules and plans (the test bed builds on it too)
    ("sshdeploy.placement", "sshdeploy.gpus", "sshdeploy.hostfile", "sshdeploy.hosts",
     "sshdeploy.nodelists", "sshdeploy.settings", "sshdeploy.bootstrap", "sshdeploy.defaults",
     "sshdeploy.roles", "sshdeploy.stages", "sshdeploy.versions", "sshdeploy.logs",
     "sshdeploy.errors", "sshdeploy.compat", "sshdeploy.argcheck", "sshdeploy.arguments",
     "sshdeploy.views", "sshdeploy.testbed"),
    # what runs on the hosts: imports nothing of sshdeploy outside itself
    ("sshdeploy.remote",),
]


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The sshdeploy modules that module *name* imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import sub` imports the submodule when there is one
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target
                # Python runs the __init__ of each package above the target first, unless
                # it is one of this module's own (already running, or done)
                parent = target.rpartition(".")[0]
                while parent and parent != "sshdeploy":
                    if not (name == parent or name.startswith(parent + ".")):
                        yield parent
                    parent = parent.rpartition(".")[0]


def import_graph() -> dict[str, set[str]]:
    known = modules()
    names = set(known)
    return {name: set(_imported(name, path, names)) for name, path in known.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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


def floor_of(name: str) -> int:
    best, floor = -1, -1
    for i, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), i
    return floor


def test_the_circle_finder_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle() -> None:
    assert circles(import_graph()) == []


def test_every_module_has_a_floor() -> None:
    assert [m for m in modules() if floor_of(m) < 0] == []


def test_no_import_runs_up_a_floor() -> None:
    graph = import_graph()
    up = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                if floor_of(t) < floor_of(m))
    assert up == []


def test_what_runs_on_the_hosts_imports_nothing_else_of_sshdeploy() -> None:
    graph = import_graph()
    out = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.startswith("sshdeploy.remote")
                 for t in targets if not t.startswith("sshdeploy.remote"))
    assert out == []


def test_no_giant_module() -> None:
    big = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def layout_block() -> set[str]:
    """The module paths README.md's layout block names (``sshdeploy/cli/named.py``...)."""
    text = README.read_text()
    start = text.index("\nsshdeploy/\n")
    block = text[start + 1: text.index("```", start)]
    named: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in block.splitlines():
        entry = re.match(r"^( *)([\w.]+(?:\.py|/))(?:\s|$)", line)
        if not entry:
            continue
        depth = len(entry.group(1))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        path = (stack[-1][1] if stack else "") + entry.group(2)
        if path.endswith("/"):
            stack.append((depth, path))
        named.add(path)
    return named


def test_readme_layout_names_every_module() -> None:
    named = layout_block()
    root = PACKAGE.parent
    missing = sorted(str(p.relative_to(root)) for p in PACKAGE.rglob("*.py")
                     if str(p.relative_to(root)) not in named
                     and not (p.name == "__init__.py" and p.parent != PACKAGE))
    assert missing == [], "add them to README.md's layout block"
    stale = sorted(p for p in named if p.endswith(".py") and not (root / p).exists())
    assert stale == [], "README.md's layout block names modules that do not exist"
