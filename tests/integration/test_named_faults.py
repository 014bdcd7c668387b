"""Named clusters under the faults and inputs of issue 26, on the real bed.

Each command is a real ``python -m sshdeploy.cli`` subprocess; the local state
lives in the test's own ``XDG_STATE_HOME``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sshdeploy import testbed
from sshdeploy.named import flow
from sshdeploy.named.state import StateStore

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yield {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    store = StateStore()
    for record in store.records():
        asyncio.run(flow.stop(record, store))


def credentials(bed: testbed.Bed) -> list[str]:
    return ["--known-hosts", str(bed.known_hosts), "--ssh-private-key", str(bed.client_key),
            "--ssh-username", "root"]


def dask_ssh(env: dict[str, str], *args: str, timeout: float = 180,
             shell_suffix: str = "") -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sshdeploy.cli", *args]
    if shell_suffix:   # e.g. ">&-": the shell closes stdout before the command starts
        line = " ".join(f"'{a}'" for a in argv) + " " + shell_suffix
        return subprocess.run(["sh", "-c", line], env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def up(bed: testbed.Bed, env: dict[str, str], name: str, *hosts: str,
       shell_suffix: str = "") -> subprocess.CompletedProcess[str]:
    return dask_ssh(env, "up", "--name", name, *credentials(bed), "--scheduler-port", "0",
                    "--dashboard-address", ":0", "--nworkers", "1", *hosts,
                    shell_suffix=shell_suffix)


def test_scale_past_the_slots_says_so_at_once_and_scale_0_is_valid(
        bed: testbed.Bed, env: dict[str, str]) -> None:
    """Finding 8: past the slots was 60 s of silence and a traceback; 0 was a ValueError."""
    name = f"sc-{uuid.uuid4().hex[:6]}"
    started = up(bed, env, name, n1, n2, n3)   # the scheduler on n1, a worker slot on n2, n3
    assert started.returncode == 0, started.stdout + started.stderr
    more = dask_ssh(env, "scale", name, "5")
    assert more.returncode == 0, more.stdout + more.stderr
    assert "5 workers asked, the hosts have 2 slots: scaling to 2" in more.stdout
    assert more.stdout.strip().endswith(f"{name}: 2 workers"), more.stdout
    assert "Traceback" not in more.stderr
    zero = dask_ssh(env, "scale", name, "0")
    assert zero.returncode == 0, zero.stdout + zero.stderr
    assert zero.stdout.strip().endswith(f"{name}: 0 workers"), zero.stdout
    assert "Traceback" not in zero.stderr
    down = dask_ssh(env, "down", name)
    assert down.returncode == 0, down.stdout + down.stderr


def test_up_with_stdout_closed_starts_the_cluster_and_exits_0(
        bed: testbed.Bed, env: dict[str, str]) -> None:
    """Finding 13: ``up ... >&-`` (cron, systemd) was a traceback and status 1."""
    name = f"cl-{uuid.uuid4().hex[:6]}"
    started = up(bed, env, name, n1, n2, shell_suffix=">&-")
    assert started.returncode == 0, started.stderr
    assert "Traceback" not in started.stderr
    listed = dask_ssh(env, "list")
    assert name in listed.stdout and "running" in listed.stdout, listed.stdout
    down = dask_ssh(env, "down", name)
    assert down.returncode == 0, down.stdout + down.stderr
