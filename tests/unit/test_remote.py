"""The boundary of what runs on the hosts: ``sshdeploy/remote/`` holds it, stdlib only.

The bed's hosts share this machine's Python, so a stray ``from sshdeploy import ...``
in the agent would pass every other test; this one parses each remote file instead.
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

REMOTE = Path(bootstrap.__file__).with_name("remote")
PROGRAMS = sorted(p for p in REMOTE.glob("*.py") if p.name != "__init__.py")


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


def test_remote_folder_holds_every_program_sent_to_the_hosts() -> None:
    assert {p.stem for p in PROGRAMS} == {"agent", "tagger", "launcher", "loader", "probe",
                                          "deep_probe", "envremote"}


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: p.name)
def test_remote_program_imports_only_the_standard_library_at_module_level(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [(line, name) for line, name in module_level_imports(tree)
           if name not in sys.stdlib_module_names]
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
    assert line.startswith(agent.EVENT)
    event = json.loads(line[len(agent.EVENT):])
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
