"""The test bed's public API and its error: its own root, and it travels (pickle, copy)."""

from __future__ import annotations

import ast
import copy
import pickle
from pathlib import Path

import pytest

from sshdeploy import testbed
from sshdeploy.errors import SSHDeployError

PACKAGE = Path(testbed.__file__).parent


def _error() -> testbed.TestbedError:
    return testbed.TestbedError(
        "cannot create netns sdtb-x-x1", "Operation not permitted", "Run as root."
    )


@pytest.mark.timeout(10)
def test_error_message_names_what_cause_and_remedy() -> None:
    err = _error()
    assert str(err) == (
        "test bed: cannot create netns sdtb-x-x1: Operation not permitted. Run as root."
    )
    assert err.args == (str(err),)
    assert (err.what, err.cause, err.remedy) == (
        "cannot create netns sdtb-x-x1",
        "Operation not permitted",
        "Run as root.",
    )
    assert str(testbed.TestbedError("no free block")) == "test bed: no free block."


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "clone",
    [lambda e: pickle.loads(pickle.dumps(e)), copy.copy, copy.deepcopy],
    ids=["pickle", "copy", "deepcopy"],
)
def test_error_pickles_and_copies(clone: object) -> None:
    err = _error()
    again = clone(err)  # type: ignore[operator]
    assert type(again) is testbed.TestbedError
    assert str(again) == str(err)
    assert again.args == err.args
    assert (again.what, again.cause, again.remedy) == (err.what, err.cause, err.remedy)


@pytest.mark.timeout(10)
def test_error_is_its_own_root() -> None:
    assert not issubclass(testbed.TestbedError, SSHDeployError)
    assert issubclass(testbed.TestbedError, RuntimeError)
    with pytest.raises(testbed.TestbedError):
        try:
            raise _error()
        except SSHDeployError:  # must not catch a test-bed failure
            pytest.fail("except SSHDeployError caught a TestbedError")


@pytest.mark.timeout(10)
def test_testbed_never_imports_sshdeploy_errors() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n.startswith("sshdeploy.errors") for n in names), path.name
            assert not (isinstance(node, ast.ImportFrom) and node.level > 1), path.name


@pytest.mark.timeout(10)
def test_package_exports_only_its_public_api() -> None:
    public = {n for n in vars(testbed) if not n.startswith("_")}
    modules = {"cli", "dns", "lifecycle", "model", "net", "procs", "sshd", "system",
               "annotations"}
    assert public - modules == set(testbed.__all__)
    assert all(not n.startswith("_") for n in testbed.__all__)
    assert all(hasattr(testbed, n) for n in testbed.__all__)
