"""The environment stage under the inputs of issue 26 (finding 14), on the real bed."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sshdeploy import testbed

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(240)


def _other_minor_python() -> str:
    """A Python of another minor version than this one, with no dask (pyenv's, shared by the
    bed hosts' file system)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}."
    for path in sorted(glob.glob(f"{root}/versions/3.*/bin/python")):
        version = Path(path).parents[1].name
        if not version.startswith(mine) and tuple(map(int, version.split(".")[:2])) >= (3, 8):
            done = subprocess.run([path, "-c", "import dask"], capture_output=True, timeout=30)
            if done.returncode != 0:
                return path
    pytest.skip("no Python of another minor version without dask under pyenv")


def _dask_ssh(bed: testbed.Bed, hostfile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sshdeploy.cli", "--known-hosts", str(bed.known_hosts),
            "--ssh-username", "root", "--ssh-private-key", str(bed.client_key),
            "--hostfile", str(hostfile), "--no-progress", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
                          stdin=subprocess.DEVNULL)


def test_a_host_of_another_minor_python_without_dask_is_stopped_at_the_gate(
        bed: testbed.Bed, tmp_path: Path) -> None:
    other = _other_minor_python()
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text(f"{n1}\n{n2} remote_python={other}\n")
    check = _dask_ssh(bed, hostfile, "--check")
    assert check.returncode == 1, check.stdout + check.stderr
    assert "every host" not in check.stdout, check.stdout   # it said every host matched
    gate = [ln.split() for ln in check.stdout.splitlines()]
    assert any(row[:2] == [f"root@{n2}", "python"] for row in gate), check.stdout
    start = _dask_ssh(bed, hostfile)
    assert start.returncode == 1, start.stdout + start.stderr
    assert "differ from this machine, nothing was started" in start.stderr, start.stderr
    assert "Traceback" not in start.stderr


CACHE = "/root/.cache/sshdeploy"


@pytest.fixture
def code(tmp_path: Path) -> Path:
    module = tmp_path / "mymod_14.py"
    module.write_text("WHERE = 'uploaded'\n" + "# padding\n" * 100_000)  # about 1 MB
    return module


def _start_with_upload(bed: testbed.Bed, code: Path) -> str:
    """Start a cluster on n1, n2 that uploads *code*; return the error it raised."""
    from sshdeploy import SSHCluster
    from sshdeploy.errors import EnvSyncError

    with pytest.raises(EnvSyncError) as info:
        SSHCluster([n1, n2], connect_options=bed.connect_options(), upload=[str(code)])
    assert testbed.python_processes(bed) == {}  # nothing started: the stage comes first
    return " ".join(str(info.value).split())


def test_an_upload_to_a_host_whose_cache_is_a_file_fails_naming_host_and_directory(
        bed: testbed.Bed, code: Path) -> None:
    """Finding 14a: not a start without the code (``import mymod`` failing later)."""
    host = next(h for h in bed.hosts if h.name == n2)
    in_way = testbed.host_path(host, CACHE)
    with testbed.mounted(host, "/root/.cache", ["-t", "tmpfs", "-o", "size=4m", "tmpfs"]):
        in_way.write_text("a file where the cache directory should be\n")
        said = _start_with_upload(bed, code)
    assert f"[root@{n2}" in said and "cannot write its cache for the uploads" in said, said
    assert CACHE in said and "Make ~/.cache/sshdeploy on that host a directory" in said, said


def test_an_upload_to_a_read_only_cache_fails_naming_host_and_directory(
        bed: testbed.Bed, code: Path) -> None:
    """Finding 14a, as root: permissions do not stop root, a read-only mount does."""
    host = next(h for h in bed.hosts if h.name == n2)
    with testbed.mounted(host, CACHE, ["--bind", CACHE], ["-o", "remount,bind,ro"]):
        said = _start_with_upload(bed, code)
    assert f"[root@{n2}" in said and "cannot write its cache for the uploads" in said, said
    assert "Read-only file system" in said and CACHE in said, said


def test_a_full_disk_while_uploading_is_said_in_words(bed: testbed.Bed, code: Path) -> None:
    """Finding 14c: ENOSPC named with the host, the directory, what is free and needed."""
    host = next(h for h in bed.hosts if h.name == n2)
    with testbed.mounted(host, CACHE, ["-t", "tmpfs", "-o", "size=256k", "tmpfs"]):
        said = _start_with_upload(bed, code)
    assert f"no space left on root@{n2} in {CACHE}: free 0." in said, said
    assert "need 1.0 MB" in said and f"dask-ssh clean --envs --uploads root@{n2}`" in said
    assert "sshdeploy.env-cache-size" in said, said
