"""A cluster on the bed's private network, which the controller cannot reach: only SSH is open.

Scheduler and workers listen on ``eth1`` (``interface=``); the controller
reaches the scheduler and its dashboard through the scheduler host's SSH
connection, by itself (auto mode) or when asked; with forwarding off, the
start fails at once with an error that says what to do.
"""

from __future__ import annotations

import os
import time
import urllib.request

import pytest
from distributed import Client

from sshdeploy import testbed
from sshdeploy.cluster import SSHCluster
from sshdeploy.errors import StartError

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(180)


def private(bed: testbed.Bed) -> dict[str, dict[str, str]]:
    iface = bed.private_interface
    return {"scheduler_options": {"interface": iface}, "worker_options": {"interface": iface}}


@pytest.mark.parametrize("forward", [None, True], ids=["auto", "asked"])
def test_private_network_cluster_through_ssh(bed: testbed.Bed, forward: bool | None) -> None:
    with SSHCluster([n1, n2, n3], connect_options=bed.connect_options(),
                    forward_ports=forward, **private(bed)) as cluster:
        assert cluster.scheduler.address.startswith(
            "tcp://" + bed.host(n1).private_address + ":")
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        with Client(cluster) as client:
            assert client.submit(lambda x: x + 1, 1).result() == 2
            workers = client.scheduler_info()["workers"]
            assert sorted(a.split("//")[1].rsplit(":", 1)[0] for a in workers) == sorted(
                [bed.host(n2).private_address, bed.host(n3).private_address])
        with urllib.request.urlopen(cluster.dashboard_link, timeout=10) as resp:
            assert resp.status == 200
        if forward is None:
            logs = cluster.get_logs()["Cluster"]
            assert "not reachable from here" in logs


def test_forwarding_off_fails_fast_naming_the_address(bed: testbed.Bed) -> None:
    start = time.monotonic()
    with pytest.raises(StartError) as info:
        SSHCluster([n1, n2], connect_options=bed.connect_options(), forward_ports=False,
                   **private(bed))
    assert time.monotonic() - start < 30
    text = str(info.value)
    assert bed.host(n1).private_address in text and "forward_ports" in text
    assert "--forward-ports" in text
    assert testbed.python_processes(bed) == {}
