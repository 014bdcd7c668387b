"""An output that is closed or full (cron, service managers, ``> /dev/full``) is no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).parents[2]
_SCRIPT = Path(sys.executable).parent / "dask-ssh"
DASK_SSH = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "sshdeploy.cli"]


def _run(argv: list[str], stdout: str, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    """Run ``dask-ssh ARGV`` with stdout full (``/dev/full``) or closed (``>&-``)."""
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
    if stdout == "full":
        with open("/dev/full", "wb") as full:
            return subprocess.run([*DASK_SSH, *argv], stdout=full, stderr=subprocess.PIPE,
                                  timeout=60, cwd=ROOT, env=env)
    # the shell closes descriptor 1 before it starts the command
    line = " ".join(f"'{a}'" for a in [*DASK_SSH, *argv]) + " >&-"
    return subprocess.run(["sh", "-c", line], stderr=subprocess.PIPE, timeout=60, cwd=ROOT,
                          env=env)


@pytest.mark.parametrize(("argv", "full_rc"), [
    (["--dry-run", "node1"], 1),   # the dry run's output is its product: lost is a failure
    (["--help"], 1),
    (["up", "--help"], 1),
    (["list"], 0),                 # the command did its work; the lost output is said
])
def test_a_full_output_is_said_once_and_never_a_traceback(argv: list[str], full_rc: int,
                                                          tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    done = _run(argv, "full", tmp_path)
    err = done.stderr.decode()
    assert "Traceback" not in err, err
    assert "No space left on device" in err
    assert done.returncode == full_rc, err


@pytest.mark.parametrize("argv", [["--dry-run", "node1"], ["--help"], ["list"]])
def test_a_closed_stdout_is_not_a_crash(argv: list[str], tmp_path: Path) -> None:
    done = _run(argv, "closed", tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr.decode() == ""
