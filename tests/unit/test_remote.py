"""The boundary of what runs on the hosts: ``sshdeploy/remote/`` holds it, stdlib only.

The bed's hosts share this machine's Python, so a stray ``from sshdeploy import ...``
in the agent would pass every other test; this one parses each remote file instead.
The agent's parts may also import each other, each only the parts sent before it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sshdeploy import bootstrap
from sshdeploy.remote import agent
from sshdeploy.remote.agent import protocol

REMOTE = Path(bootstrap.__file__).with_name("remote")
AGENT = Path(agent.__file__).parent
#: Every file sent to the hosts: the programs, and the agent's parts.
PROGRAMS = sorted(p for p in REMOTE.rglob("*.py") if p.name != "__init__.py")


def module_level_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """Return (line, top-level module) of every import not inside a function."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name.split(".")[0]) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." if node.level else (node.module or "").split(".")[0]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def parts_imported(tree: ast.AST) -> set[str]:
    """Return what the relative imports of a part name (anywhere in it), as ``.name``.

    Only ``from .part import x`` and ``from . import part`` reach a part on the
    hosts; anything else (``from ..tagger``) is returned as written, to fail.
    """
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            dots = "." * node.level
            if node.module:
                found.add(dots + node.module)
            else:
                found.update(dots + a.name for a in node.names)
    return found


def test_remote_folder_holds_every_program_sent_to_the_hosts() -> None:
    assert {str(p.relative_to(REMOTE).with_suffix("")) for p in PROGRAMS} == {
        "tagger", "launcher", "loader", "probe", "deep_probe", "envremote", "gpus",
        *(f"agent/{name}" for name in agent.PARTS)}


def test_the_agent_parts_list_covers_its_folder_once_and_ends_with_main() -> None:
    assert sorted(agent.PARTS) == sorted(p.stem for p in AGENT.glob("*.py")
                                         if p.name != "__init__.py")
    assert len(set(agent.PARTS)) == len(agent.PARTS) and agent.PARTS[-1] == "main"
    assert {p.name for p in REMOTE.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "agent"}


def test_the_agent_package_only_lists_its_parts() -> None:
    """Its ``__init__.py`` is not sent: nothing on the hosts could run an import of it."""
    tree = ast.parse((AGENT / "__init__.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_each_part_imports_only_parts_sent_before_it() -> None:
    """PARTS is the order the loader runs the parts in: a topological order of their imports."""
    for i, name in enumerate(agent.PARTS):
        imported = parts_imported(ast.parse((AGENT / f"{name}.py").read_text()))
        earlier = {f".{part}" for part in agent.PARTS[:i]}
        assert imported <= earlier, f"{name}.py imports {sorted(imported - earlier)}"


def test_the_order_check_catches_a_later_or_foreign_import() -> None:
    tree = ast.parse("from .main import Agent\nfrom . import wire\nfrom ..tagger import x\n"
                     "def f():\n    from .keep import Keep\n")
    assert parts_imported(tree) == {".main", ".wire", "..tagger", ".keep"}


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: str(p.relative_to(REMOTE)))
def test_remote_program_imports_only_the_standard_library_at_module_level(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    part = path.parent == AGENT  # its relative imports: test_each_part_imports_only_parts_...
    bad = [(line, name) for line, name in module_level_imports(tree)
           if name not in sys.stdlib_module_names and not (part and name == ".")]
    assert not bad, f"{path.name}: module-level imports outside the standard library: {bad}"


def test_the_check_catches_a_stray_import() -> None:
    tree = ast.parse("import os\nfrom sshdeploy import hosts\nfrom . import x\n"
                     "def f():\n    import distributed\n")
    names = [n for _, n in module_level_imports(tree)]
    assert names == ["os", "sshdeploy", "."]
    assert [n for n in names if n not in sys.stdlib_module_names] == ["sshdeploy", "."]


@pytest.mark.parametrize("name", ["launcher", "probe", "deep_probe"])
def test_program_text_is_the_file_without_its_comments(name: str) -> None:
    path = REMOTE / f"{name}.py"
    text = bootstrap.program_text(name, one_line=name == "launcher")
    assert "\n#" not in "\n" + text
    assert "\n" not in text if name == "launcher" else text.endswith("\n")
    assert ast.dump(ast.parse(text)) == ast.dump(ast.parse(path.read_text()))


def test_launcher_says_python_started_then_runs_the_code_on_stdin() -> None:
    code = b"import os; os.write(1, b'ran ' + __name__.encode())"
    proc = subprocess.run([sys.executable, "-u", "-c", bootstrap.LAUNCHER],
                          input=b"%d\n" % len(code) + code, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    line, rest = proc.stdout.split(b"\n", 1)
    assert line.startswith(protocol.EVENT)
    event = json.loads(line[len(protocol.EVENT):])
    assert event["ev"] == "stage" and event["stage"] == "python" and event["pid"] > 1
    assert rest == b"ran __main__"


#: Two parts of a pretend agent: a dataclass under postponed annotations (it needs
#: its module in sys.modules while it runs), and a main part importing it relatively.
PARTS = [
    ("values", b"""from __future__ import annotations
import dataclasses
@dataclasses.dataclass(frozen=True)
class Point:
    x: int
"""),
    ("main", b"""from __future__ import annotations
import os, sys
from .values import Point
def main() -> None:
    if sys.stdin.buffer.readline() == b"fail\\n":
        raise RuntimeError("boom")
    os.write(1, f"{__name__} {__package__} {Point(1)}".encode())
"""),
]


def run_bundle(rest: bytes) -> subprocess.CompletedProcess[bytes]:
    """Run the launcher on the bundle of :data:`PARTS`, then *rest* on stdin."""
    return subprocess.run([sys.executable, "-u", "-c", bootstrap.LAUNCHER],
                          input=bootstrap.build_bundle(PARTS) + rest, capture_output=True,
                          timeout=30)


def test_loader_runs_the_parts_as_one_package_then_main_reads_the_rest() -> None:
    proc = run_bundle(b"go\n")
    assert proc.returncode == 0, proc.stderr
    _stage, out = proc.stdout.split(b"\n", 1)
    assert out == b"sshdeploy_agent.main sshdeploy_agent Point(x=1)"


def test_a_remote_traceback_names_the_part() -> None:
    proc = run_bundle(b"fail\n")
    assert proc.returncode == 1
    assert b'File "sshdeploy-agent/main.py", line 6, in main' in proc.stderr, proc.stderr
    assert b"RuntimeError: boom" in proc.stderr
