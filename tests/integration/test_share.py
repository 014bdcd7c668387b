"""A host's cores and memory divided among its workers, as the scheduler reports them (issue 21).

One cluster covers 1, 2 and 3 workers per host (a hostfile's ``slots=``), once
through :class:`SSHCluster` and once through ``dask-ssh``.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from dask.system import CPU_COUNT
from distributed import Client
from distributed.system import MEMORY_LIMIT

from sshdeploy import testbed
from sshdeploy.cluster import SSHCluster
from sshdeploy.hostfile import parse_host_line

from .test_cli import DaskSSH, dask_ssh, hostfile  # noqa: F401  (dask_ssh is a fixture)

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))
SLOTS = {n2: 1, n3: 2, n4: 3}
LINES = [n1, *(f"{host} slots={slots}" for host, slots in SLOTS.items())]

pytestmark = pytest.mark.timeout(180)


def expected(slots: int) -> tuple[int, int]:
    """Threads and memory limit of each of *slots* workers on a bed host.

    The bed's hosts are namespaces of this machine: they count the same cores
    and memory as this process does.
    """
    return max(1, CPU_COUNT // slots), MEMORY_LIMIT // slots


def check_scheduler_view(client: Client) -> None:
    client.wait_for_workers(sum(SLOTS.values()), timeout=90)
    info = client.scheduler_info(n_workers=-1)["workers"].values()
    by_host: dict[str, set[tuple[int, int]]] = {}
    for w in info:
        by_host.setdefault(w["name"].rpartition("-")[0], set()).add(
            (w["nthreads"], w["memory_limit"]))
    assert by_host == {host: {expected(slots)} for host, slots in SLOTS.items()}
    total = sum(w["memory_limit"] for w in info)
    assert total <= len(SLOTS) * MEMORY_LIMIT


def test_api_divides_each_host_among_its_workers(bed: testbed.Bed) -> None:
    hosts = [h for line in LINES for h in parse_host_line(line)]
    with SSHCluster(hosts, connect_options=bed.connect_options()) as cluster, \
            Client(cluster) as client:
        check_scheduler_view(client)
        assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
        rows = {r.host.split("@")[-1].split(":")[0]: r for r in cluster.host_rows()}
        threads, _memory = expected(3)
        assert rows[n4].each.startswith(f"{threads} thread"), rows[n4]
        assert "each worker" in repr(cluster)
        # distributed's own repr adds up the workers' limits: never above the hosts' memory
        assert "Total memory" in cluster._repr_html_()


def test_cli_divides_each_host_among_its_workers(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH], tmp_path: Path  # noqa: F811
) -> None:
    run = dask_ssh("--hostfile", hostfile(tmp_path, *LINES), "--scheduler-port", "8941",
                   "--dashboard-address", ":0", "-q")
    address = run.wait_for_scheduler()
    with Client(address, timeout=30) as client:
        check_scheduler_view(client)
    for host, slots in SLOTS.items():
        threads, _memory = expected(slots)
        assert re.search(rf"^\s+root@{host}\S*\s+{host}-0.*\({threads} threads?, .+ each\)$",
                         run.stdout, re.M), run.describe()
    run.proc.send_signal(signal.SIGINT)
    assert run.finish(30) == 0, run.describe()
    run.assert_nothing_left(timeout=10)
