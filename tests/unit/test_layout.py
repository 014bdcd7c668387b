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
