"""A later run removes the private directories of agents and dask-ssh runs that are gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sshdeploy.cli.run import ClientCredentials
from sshdeploy.remote.agent.group import OWNER_FILE, process_start, remove_stale_dirs, write_owner

pytestmark = pytest.mark.timeout(30)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make(base: Path, name: str, owner: str | None) -> Path:
    d = base / name
    d.mkdir()
    (d / "pymp-x").mkdir()
    if owner is not None:
        (d / OWNER_FILE).write_text(owner)
    return d


def test_only_directories_of_processes_that_are_gone_on_this_host_are_removed(
    tmp_path: Path,
) -> None:
    me, here = os.getpid(), socket.gethostname()
    mine = make(tmp_path, "sshdeploy-agent-live", f"{here} {me} {process_start(me)}")
    dead = make(tmp_path, "sshdeploy-agent-dead", f"{here} {dead_pid()} 1")
    reused = make(tmp_path, "sshdeploy-agent-reused", f"{here} {me} 1")  # pid reused since
    other_host = make(tmp_path, "sshdeploy-agent-elsewhere", f"not-{here} {dead_pid()} 1")
    no_owner = make(tmp_path, "sshdeploy-agent-old", None)
    other_prefix = make(tmp_path, "something-else", f"{here} {dead_pid()} 1")
    removed = remove_stale_dirs(str(tmp_path), "sshdeploy-agent-")
    assert sorted(removed) == sorted([str(dead), str(reused)])
    assert all(d.exists() for d in (mine, other_host, no_owner, other_prefix))
    assert not dead.exists() and not reused.exists()


def test_an_agent_dir_records_its_owner(tmp_path: Path) -> None:
    write_owner(str(tmp_path))
    host, pid, start = (tmp_path / OWNER_FILE).read_text().split()
    me = os.getpid()
    assert (host, int(pid), start) == (socket.gethostname(), me, process_start(me))
    assert (tmp_path / OWNER_FILE).stat().st_mode & 0o777 == 0o600


def test_a_tls_run_removes_the_client_dir_of_a_killed_dask_ssh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed import Security

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    left = make(tmp_path, "dask-ssh-tls-killed", f"{socket.gethostname()} {dead_pid()} 1")
    with ClientCredentials() as creds:
        creds.write(Security.temporary(), "tls://127.0.0.1:8786")
        assert creds.directory is not None and creds.directory.parent == tmp_path
        assert not left.exists()
