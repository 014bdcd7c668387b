"""The package's layout rules, checked on the source (no imports of the modules checked)."""

from __future__ import annotations

import ast
from pathlib import Path

import sshdeploy

PACKAGE = Path(sshdeploy.__file__).parent


def private_imports() -> list[str]:
    """Every ``from <sshdeploy module> import _name`` (compat excepted: it names them)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            if node.module.endswith("compat") or not (
                    node.level or node.module.startswith("sshdeploy")):
                continue
            found += [f"{path.relative_to(PACKAGE)}:{node.lineno}: {a.name}"
                      for a in node.names if a.name.startswith("_")
                      and not a.name.startswith("__")]
    return found


def test_no_module_imports_another_ones_private_names() -> None:
    assert private_imports() == []


def test_leaf_modules_import_nothing_of_sshdeploy() -> None:
    for name in ("defaults.py", "stages.py", "roles.py"):
        tree = ast.parse((PACKAGE / name).read_text())
        imported = [n.module or "." for n in ast.walk(tree)
                    if isinstance(n, ast.ImportFrom) and n.module != "__future__"]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                     for a in n.names]
        assert not [m for m in imported if m == "." or m.startswith("sshdeploy")], name
    assert not [n for n in ast.walk(ast.parse((PACKAGE / "defaults.py").read_text()))
                if isinstance(n, (ast.Import, ast.ImportFrom))]


#: The attributes in which SpecCluster keeps its workers (wanted, running, made).
WORKER_STATE = ("worker_spec", "workers", "_created")
#: Calls that change a dict or set in place.
MUTATORS = ("pop", "popitem", "update", "setdefault", "clear", "add", "discard", "remove")
#: Writes that are not to SpecCluster's state: WorkerAgents keeps its own ``workers``.
NOT_SPECCLUSTERS = {"cluster/processes.py": {"workers"}}


def worker_state_writes() -> dict[str, list[str]]:
    """Module -> every line that assigns, deletes or changes one of :data:`WORKER_STATE`."""

    def state(node: ast.AST) -> str | None:
        if isinstance(node, ast.Subscript):
            node = node.value
        return node.attr if isinstance(node, ast.Attribute) and node.attr in WORKER_STATE \
            else None

    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = str(path.relative_to(PACKAGE))
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[ast.AST] = []
            if isinstance(node, ast.Assign | ast.Delete):
                targets = list(node.targets)
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in MUTATORS:
                targets = [node.func.value]
            for name in filter(None, map(state, targets)):
                if name not in NOT_SPECCLUSTERS.get(module, ()):
                    found.setdefault(module, []).append(f"{node.lineno}: {name}")
    return found


def test_only_the_roster_changes_the_workers_of_speccluster() -> None:
    # compat writes the private _created, called by the roster alone (the test below).
    assert set(worker_state_writes()) == {"cluster/roster.py", "compat.py"}, worker_state_writes()


def test_only_the_roster_forgets_workers_and_tells_the_user() -> None:
    calls = {"forget_created", "forget_unstarted", "correct_state", "record_cluster_log"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("roster.py", "compat.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in calls \
                    and isinstance(node.value, ast.Name) and node.value.id == "compat":
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.attr}")
    assert found == []


def test_the_clusters_collaborators_never_import_it() -> None:
    """They get the roster and what else they need, not SSHCluster (not even for mypy)."""
    for name in ("cluster/roster.py", "cluster/fleet.py", "cluster/restarts.py",
                 "cluster/processes.py", "cluster/host_status.py", "cluster/kept.py",
                 "cluster/adopted.py", "cluster/health.py"):
        tree = ast.parse((PACKAGE / name).read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                     for a in n.names]
        imported += [f"{n.module}.{a.name}" for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module for a in n.names]
        core = ("cluster", "sshdeploy.cluster", "core", "sshdeploy.cluster.core", ".core")
        assert not [m for m in imported if m in core or m.endswith(".SSHCluster")], name


#: What Python itself puts in a class's namespace.
CLASS_BOOKKEEPING = {"__module__", "__qualname__", "__doc__", "__dict__", "__weakref__",
                     "__annotations__", "__firstlineno__", "__static_attributes__",
                     "__orig_bases__", "__parameters__", "__abstractmethods__", "_abc_impl"}


def test_sshcluster_stays_small() -> None:
    """Members of its own (methods, properties, dunders it defines): at most 40 (61 on
    2026-12-07, when its collaborators reached back into it)."""
    from sshdeploy.cluster import SSHCluster

    members = sorted(set(vars(SSHCluster)) - CLASS_BOOKKEEPING)
    assert len(members) <= 40, members
