"""The examples in the docstrings run (those marked +SKIP need a test bed or hosts)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "sshdeploy.bootstrap", "sshdeploy.cluster", "sshdeploy.logs",
    "sshdeploy.placement", "sshdeploy.pool", "sshdeploy.channel",
    "sshdeploy.testbed", "sshdeploy.cli.options", "sshdeploy.cli.report", "sshdeploy.hosts",
    "sshdeploy.errors", "sshdeploy.settings", "sshdeploy.versions", "sshdeploy.plan",
    "sshdeploy.causes", "sshdeploy.forwarding", "sshdeploy.views.hostrows",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"no docstring example ran in {name}"
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
