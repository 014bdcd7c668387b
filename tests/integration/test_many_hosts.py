"""Many hosts behind one jump host whose sshd keeps OpenSSH's ``MaxStartups 10:30:100``.

A bed of its own: 1 jump host + 32 hosts (``<bed>j1`` .. ``<bed>j33``), every
sshd with ``MaxStartups 10:30:100`` said explicitly and ``LogLevel VERBOSE``
(sshd then logs each connection it drops past MaxStartups). The 32 hosts are
reached with ``ProxyJump`` from an ssh config, so each opens a connection of
its own to the jump host: without a cap, 32 handshakes at once would reach
its sshd, which drops unauthenticated connections beyond 10. Whether the jump
was taken is read from the targets' sshd logs (the connection came from the
jump host's address).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import pytest
from distributed import Client

from sshdeploy import SSHCluster, testbed

TARGETS = 32
#: The bed's name: the session's bed name (SSHDEPLOY_TEST_BED) + "j", so that
#: concurrent sessions with their own beds do not share it.
NAME = (os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME) + "j")[:10]
SSHD = {"MaxStartups": "10:30:100", "LogLevel": "VERBOSE"}


@pytest.fixture(scope="module")
def jump_bed() -> Iterator[testbed.Bed]:
    bed = testbed.up(TARGETS + 1, NAME, sshd_options=SSHD, hold=True)
    yield bed
    if os.environ.get("SSHDEPLOY_KEEP_BED") != "1":
        testbed.release(bed.name)


def _ssh_config(bed: testbed.Bed, path: Path) -> Path:
    jump = bed.hosts[0]
    lines = []
    for i, h in enumerate(bed.hosts):
        lines += [
            f"Host {h.name}",
            f"    HostName {h.address}",
            "    User root",
            f"    IdentityFile {bed.client_key}",
            "    IdentitiesOnly yes",
            # asyncssh opens a ProxyJump hop with the config only: its key is found here.
            f"    UserKnownHostsFile {bed.known_hosts}",
            f"    HostKeyAlias {h.name}",
        ]
        if i > 0:
            lines.append(f"    ProxyJump {jump.name}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _accepted_from(log: str) -> list[str]:
    return re.findall(r"Accepted publickey for root from (\S+) port", log)


def _leftovers(bed: testbed.Bed) -> list[str]:
    return [f"{h.name}: {pid} {cmd}" for h in bed.hosts for pid, cmd in testbed.processes(h)
            if "python" in cmd or "dask" in cmd]


@pytest.mark.timeout(300)
def test_32_hosts_behind_a_jump_host_with_stock_maxstartups_all_start(
    jump_bed: testbed.Bed, tmp_path: Path
) -> None:
    """The scheduler on the jump host, one worker on each of the 32 hosts behind it: all
    32 start and compute; at most 8 handshakes went through the jump host at once, so its
    sshd dropped none; each host was reached through the jump host; nothing is left."""
    jump, targets = jump_bed.hosts[0], jump_bed.hosts[1:]
    config = _ssh_config(jump_bed, tmp_path / "ssh_config")
    before = {h.name: len(testbed.sshd_log(h)) for h in jump_bed.hosts}
    # 33 remote Pythons start at once on this machine's cores, and every login
    # shell of the bed runs the machine's ~/.bashrc (pyenv rehash under one lock).
    with dask.config.set({"sshdeploy.start-timeout": 180}), SSHCluster(
        [jump.name, *(h.name for h in targets)],
        connect_options={"config": [str(config)], "known_hosts": str(jump_bed.known_hosts)},
        worker_options={"nthreads": 1},
        scheduler_options={"port": 0, "dashboard_address": ":0"},
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(TARGETS, timeout=120)
        futures = client.map(lambda x: x * x, range(320))
        assert client.submit(sum, futures).result(timeout=60) == sum(x * x for x in range(320))
        assert sorted(client.run(lambda: __import__("socket").gethostname()).values()) \
            == sorted(h.name for h in targets)
        assert cluster.cluster_plan.settings.jump_host_parallelism == 8
    logs = {h.name: testbed.sshd_log(h)[before[h.name]:] for h in jump_bed.hosts}
    for h in targets:
        assert _accepted_from(logs[h.name]) == [jump.address], h.name
    # one direct login (the scheduler's host) and one per target for its own hop
    assert sorted(_accepted_from(logs[jump.name])) == [jump_bed.controller_address] * 33
    assert "MaxStartups" not in logs[jump.name], logs[jump.name][-2000:]
    deadline = time.monotonic() + 15
    while _leftovers(jump_bed) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _leftovers(jump_bed) == []
