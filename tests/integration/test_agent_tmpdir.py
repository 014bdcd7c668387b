"""Nothing of ours stays on the hosts' disks: every agent cleans its private temp dir.

Each bed host has its own /tmp; other test runs use the same hosts at the
same time, so each test points the remote ``TMPDIR`` (through the setup
command) at a directory of its own in every host's /tmp, where the agents
make their private temp dirs, and checks (through ``testbed.host_path``) that
those directories are empty afterwards. Without
the private dir, multiprocessing's ``pymp-*`` dirs and dask's scratch space
would stay there.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

import sshdeploy
from sshdeploy import testbed
from sshdeploy.cluster import SSHCluster

n1, n2, n3 = testbed.host_names(3, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(240)


class HostDirs:
    """The same directory in each host's own /tmp, seen from here."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs

    def entries(self) -> list[str]:
        return [e for d in self.dirs for e in os.listdir(d)]

    def tree(self) -> list[str]:
        return sorted(str(p.relative_to(d)) for d in self.dirs for p in d.rglob("*"))

    def modes(self) -> list[int]:
        return [(d / e).stat().st_mode & 0o777 for d in self.dirs for e in os.listdir(d)]


@pytest.fixture
def remote_tmp(bed: testbed.Bed) -> Iterator[tuple[HostDirs, str]]:
    """A fresh directory in each host's /tmp and the setup command that makes it TMPDIR.

    Short: multiprocessing's socket paths under it must fit AF_UNIX's 108 bytes.
    """
    name = f"/tmp/sdt {uuid.uuid4().hex[:8]}"
    dirs = [testbed.host_path(h, name) for h in bed.hosts if h.name in (n1, n2, n3)]
    for d in dirs:
        d.mkdir()
    yield HostDirs(dirs), f"export TMPDIR={shlex.quote(name)}"
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def test_start_stop_cycles_leave_the_temp_dir_as_it_was(
    bed: testbed.Bed, remote_tmp: tuple[HostDirs, str]
) -> None:
    d, setup = remote_tmp
    for _cycle in range(3):
        with SSHCluster([n1, n2, n3], connect_options=bed.connect_options(), setup=setup,
                        worker_options={"n_workers": 2}) as cluster, Client(cluster) as client:
            client.wait_for_workers(4, timeout=60)
            assert client.submit(lambda: 1 + 1).result(timeout=30) == 2
            # while running, each agent keeps its things in one private dir
            entries = d.entries()
            assert entries and all(e.startswith("sshdeploy-agent-") for e in entries), entries
            assert set(d.modes()) == {0o700}
        testbed.wait_until(lambda: d.entries() == [], 10, f"{d.dirs} to be empty after close")


def test_sigkill_of_the_controller_leaves_the_temp_dir_as_it_was(
    bed: testbed.Bed, tmp_path: Path, remote_tmp: tuple[HostDirs, str]
) -> None:
    d, setup = remote_tmp
    script = tmp_path / "controller.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import time
            from distributed import Client
            from sshdeploy.cluster import SSHCluster
            cluster = SSHCluster({[n1, n2, n3]!r},
                                 connect_options={bed.connect_options()!r},
                                 setup={setup!r}, worker_options={{"n_workers": 2}})
            Client(cluster).wait_for_workers(4, timeout=60)
            print("READY", flush=True)
            time.sleep(600)
            """
        )
    )
    # This tree's sshdeploy, not an installed one (the script's directory comes first).
    env = {**os.environ, "PYTHONPATH": str(Path(sshdeploy.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        assert d.entries(), "the agents should have made their temp dirs"
    finally:
        proc.kill()
        proc.wait()
    start = time.monotonic()
    testbed.wait_until(lambda: testbed.python_processes(bed) == {}, 10,
                       "remote processes to stop after SIGKILL")
    testbed.wait_until(lambda: d.entries() == [], max(1.0, start + 10 - time.monotonic()),
                       f"{d.dirs} to be empty after the controller was killed: {d.tree()}")


def test_the_next_agent_removes_the_temp_dir_of_a_sigkilled_one(
    bed: testbed.Bed, remote_tmp: tuple[HostDirs, str]
) -> None:
    d, setup = remote_tmp
    with SSHCluster([n1, n2], connect_options=bed.connect_options(),
                    setup=setup) as cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=60)
        before = set(d.entries())
        for pid, cmd in testbed.processes(bed.host(n2)):
            if "python" in cmd:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        # The worker is restarted by a new agent on n2, which removes the dead one's dir.
        testbed.wait_until(
            lambda: len(set(d.entries()) - before) == 1 and len(d.entries()) == 2, 60,
            f"a new agent on {n2} and the killed one's dir removed: {d.tree()}")
        assert client.submit(lambda: 1).result(timeout=30) == 1
        testbed.wait_until(lambda: len(cluster.workers) == 1, 30, "the restarted worker")
    testbed.wait_until(lambda: d.entries() == [], 10, f"{d.dirs} to be empty after close")
