"""A synced environment damaged on a host after it was unpacked is sent again, not trusted."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

_spec = importlib.util.spec_from_file_location(
    "test_envsync_helpers", Path(__file__).with_name("test_envsync.py"))
assert _spec is not None and _spec.loader is not None
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
run_remote, small_tar = _helpers.run_remote, _helpers.small_tar


@pytest.mark.parametrize("damage", ["removed", "truncated"])
def test_a_damaged_environment_is_not_present_and_is_unpacked_anew(tmp_path: Path,
                                                                    damage: str) -> None:
    tar = small_tar({"mymod.py": b"X = 1\n" * 100, "pkg/__init__.py": b"Y = 2\n"})
    assert run_remote(tmp_path, {"op": "env", "env": "h1"}, tar)["unpacked"] is True
    env = tmp_path / ".cache/sshdeploy/envs/h1"
    # the host compiles its own bytecode there: that is no damage
    (env / "__pycache__").mkdir()
    (env / "__pycache__" / "mymod.cpython-311.pyc").write_bytes(b"\0" * 64)
    assert run_remote(tmp_path, {"op": "probe", "env": "h1"})["env_present"] is True
    if damage == "removed":
        (env / "pkg" / "__init__.py").unlink()
    else:
        (env / "mymod.py").write_bytes(b"X = ")
    assert run_remote(tmp_path, {"op": "probe", "env": "h1"})["env_present"] is False
    again = run_remote(tmp_path, {"op": "env", "env": "h1"}, tar)
    assert again["unpacked"] is True
    assert (env / "mymod.py").read_bytes() == b"X = 1\n" * 100
    assert (env / "pkg" / "__init__.py").read_bytes() == b"Y = 2\n"
    assert run_remote(tmp_path, {"op": "probe", "env": "h1"})["env_present"] is True


def test_an_environment_unpacked_by_an_older_sshdeploy_is_still_trusted(tmp_path: Path) -> None:
    env = tmp_path / ".cache/sshdeploy/envs/h1"
    env.mkdir(parents=True)
    (env / "mymod.py").write_text("X = 1\n")
    (env / ".sshdeploy-complete").write_text("")   # its mark said nothing more
    assert run_remote(tmp_path, {"op": "probe", "env": "h1"})["env_present"] is True
