"""Workers come back after crashes and lost agents, or the user is told why not."""

from __future__ import annotations

import contextlib
import os
import signal

import dask
import pytest
from distributed import Client

from sshdeploy import testbed
from sshdeploy.cluster import SSHCluster

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(240)


def test_two_crashing_tasks_leave_the_workers_running(bed: testbed.Bed) -> None:
    """Distributed retries a task that kills its worker on 4 workers: that is no crash loop."""
    with SSHCluster([n1, n2, n3], connect_options=bed.connect_options()) as cluster, \
            Client(cluster) as client:
        for _ in range(2):
            with pytest.raises(Exception, match=r"KilledWorker|worker"):
                client.submit(os._exit, 1, pure=False).result(timeout=90)
        client.wait_for_workers(2, timeout=60)
        assert client.submit(lambda: 2).result(timeout=30) == 2
        assert sorted(cluster.worker_spec) == [f"{n2}-0", f"{n3}-0"]
        assert "not restarted" not in "\n".join(cluster.get_logs()["Cluster"].splitlines())


def test_workers_return_after_their_hosts_agent_processes_are_killed(bed: testbed.Bed) -> None:
    with dask.config.set({"sshdeploy.heartbeat-timeout": 6}), SSHCluster(
        [n1, n2, n3], connect_options=bed.connect_options(), worker_options={"n_workers": 2}
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(4, timeout=60)
        for pid, cmd in testbed.processes(bed.host(n2)):
            if "python" in cmd:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        testbed.wait_until(lambda: len(client.scheduler_info()["workers"]) < 4, 30,
                           "the scheduler to notice the lost workers")
        row = next(r for r in cluster.host_rows() if n2 in r.host)
        assert row.error, row
        testbed.wait_until(lambda: len(client.scheduler_info()["workers"]) == 4, 90,
                           "the lost workers to be restarted")
        assert client.submit(lambda: 2).result(timeout=30) == 2


def test_workers_lost_with_their_hosts_link_return_when_it_is_back(bed: testbed.Bed) -> None:
    """While the host is unreachable the restart waits (its row says why) and spends no budget."""
    lost = bed.host(n3)
    settings = {"sshdeploy.heartbeat-timeout": 3, "sshdeploy.keepalive-interval": 1,
                "sshdeploy.keepalive-count-max": 2, "sshdeploy.connect-timeout": 2,
                "sshdeploy.connect-attempts": 1, "sshdeploy.worker-restarts": 1}
    with dask.config.set(settings), SSHCluster(
        [n1, n2, n3], connect_options=bed.connect_options()
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        testbed.set_link(lost, False)
        try:
            def waiting() -> bool:
                row = next(r for r in cluster.host_rows() if n3 in r.host)
                return "not reachable" in row.error
            testbed.wait_until(waiting, 60, f"{n3}'s row to say it is not reachable")
        finally:
            testbed.set_link(lost, True)
        testbed.wait_until(lambda: len(client.scheduler_info()["workers"]) == 2, 90,
                           f"the worker of {n3} to be restarted once it is reachable")
        assert f"{n3}-0" in cluster.worker_spec
        assert client.submit(lambda: 2, workers=[f"{n3}-0"]).result(timeout=30) == 2
