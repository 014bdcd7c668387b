"""The examples in the docstrings run, each once (those marked +SKIP need a test bed or hosts).

The modules are found by walking the package, so a new module's examples run
without a list to update.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import sshdeploy

#: Programs that run when imported: the ones sent to the hosts, and the ``-m`` entry points.
RUN_ON_IMPORT = {
    "sshdeploy.remote.launcher", "sshdeploy.remote.probe", "sshdeploy.remote.deep_probe",
    "sshdeploy.cli.__main__", "sshdeploy.testbed.__main__",
}


def modules_with_examples() -> list[str]:
    """Every module of the package whose source holds a ``>>>`` line that is not skipped."""
    found = []
    for info in pkgutil.walk_packages(sshdeploy.__path__, "sshdeploy."):
        if info.name in RUN_ON_IMPORT:
            continue
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin is not None
        lines = Path(spec.origin).read_text().splitlines()
        if any(">>> " in ln and "+SKIP" not in ln for ln in lines):
            found.append(info.name)
    return found


MODULES = modules_with_examples()

#: At least this many examples (they were counted when each module had its own doctest test).
AT_LEAST = {"sshdeploy.hosts": 10, "sshdeploy.nodelists": 3}


def test_the_walk_finds_the_modules_with_examples() -> None:
    assert {"sshdeploy.hosts", "sshdeploy.cli.report", "sshdeploy.views.livestatus",
            "sshdeploy.remote.tagger", "sshdeploy.stages"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"no docstring example ran in {name}"
    assert result.attempted >= AT_LEAST.get(name, 1)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
