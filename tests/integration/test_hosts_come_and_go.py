"""Hosts that come and go: a lost host replaced by a spare, hosts added and removed while
a computation runs, adapt bringing hosts up only when it places a worker there."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable

import dask
import pytest
from distributed import Client

from sshdeploy import testbed
from sshdeploy.cluster import SSHCluster
from sshdeploy.hosts import Host
from sshdeploy.views.hostrows import HostRow

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(240)

#: A cut link noticed in ~2 s, the host declared lost 4 s after its first failed reconnect.
FAST_LOSS = {"sshdeploy.heartbeat-timeout": 3, "sshdeploy.keepalive-interval": 1,
             "sshdeploy.keepalive-count-max": 2, "sshdeploy.connect-timeout": 2,
             "sshdeploy.connect-attempts": 1, "sshdeploy.host-lost-after": 4}


def slowly(seconds: float) -> Callable[[int], int]:
    """A task that takes *seconds* and returns its argument (a lambda: sent by value)."""
    return lambda x: __import__("time").sleep(seconds) or x


def row(cluster: SSHCluster, host: str) -> HostRow:
    return next(r for r in cluster.host_rows()
                if r.host.rpartition("@")[2].partition(":")[0] == host)


def test_a_host_cut_off_for_good_is_replaced_by_a_spare(bed: testbed.Bed) -> None:
    lost = bed.host(n3)
    with dask.config.set(FAST_LOSS), SSHCluster(
        [n1, n2, n3], connect_options=bed.connect_options(), spares=[n4],
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        assert row(cluster, n4).health == "spare"
        assert cluster.pool.state(Host(n4)) == "waiting"  # not connected to
        futures = client.map(slowly(0.2), range(60))  # runs across the loss
        testbed.wait_until(lambda: any(f.status == "finished" for f in futures), 30,
                           "the computation to get going")
        testbed.set_link(lost, False)
        try:
            testbed.wait_until(lambda: f"{n4}-0" in cluster.workers and len(
                client.scheduler_info()["workers"]) == 2, 90,
                f"{n3}'s worker to be replaced on the spare {n4}")
            assert sum(client.gather(futures)) == sum(range(60))
            assert sorted(cluster.worker_spec) == [f"{n2}-0", f"{n4}-0"]
            assert row(cluster, n3).health == "lost"
            assert row(cluster, n4).health == "ok"
            log = cluster.get_logs()["Cluster"]
            assert f"{n3}-0 -> {n4}-0 (spare)" in log and "lost" in log, log
            # a lost host takes no worker again: scale has no slot left for it
            cluster.scale(3)
            assert len(cluster.worker_spec) == 2
        finally:
            testbed.set_link(lost, True)
        # readmitted, it may take a worker again
        assert cluster.readmit(n3) is True
        cluster.scale(3)
        client.wait_for_workers(3, timeout=90)
        assert row(cluster, n3).health == "ok"


def test_hosts_added_and_removed_while_a_computation_runs(bed: testbed.Bed) -> None:
    with SSHCluster([n1, n2], connect_options=bed.connect_options()) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(1, timeout=60)
        # data that lives only on n2's worker: removing n2 must move it, not lose it
        [held] = client.scatter([list(range(1000))], workers=[f"{n2}-0"])
        futures = client.map(slowly(0.2), range(40))
        started = cluster.add_hosts([f"{n3} slots=2"])
        assert sorted(started) == [f"{n3}-0", f"{n3}-1"]
        assert len(client.scheduler_info()["workers"]) == 3
        retired = cluster.remove_hosts([n2])
        assert retired == [f"{n2}-0"]
        names = {w["name"] for w in client.scheduler_info()["workers"].values()}
        assert names == {f"{n3}-0", f"{n3}-1"}
        assert sum(client.gather(futures)) == sum(range(40))
        assert held.result(timeout=30) == list(range(1000))  # moved before n2 left
        assert all(n2 not in r.host for r in cluster.host_rows())
        assert n2 not in testbed.python_processes(bed)
        log = cluster.get_logs()["Cluster"]
        assert "hosts added" in log and "hosts removed" in log
        with pytest.raises(Exception, match="runs the scheduler"):
            cluster.remove_hosts([n1])
        with pytest.raises(Exception, match="already a host of the cluster"):
            cluster.add_hosts([n3])


def test_adapt_brings_hosts_up_only_when_it_places_a_worker_there(bed: testbed.Bed) -> None:
    with SSHCluster([n1, n2, n3, n4], connect_options=bed.connect_options(),
                    initial_workers=1) as cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=60)
        assert sorted(cluster.worker_spec) == [f"{n2}-0"]
        for name in (n3, n4):  # never connected to, nothing started there
            assert cluster.pool.state(Host(name)) == "waiting"
            assert row(cluster, name).health == "idle"
            assert name not in testbed.python_processes(bed)
        cluster.adapt(minimum=1, maximum=3, interval="300ms", wait_count=50)
        futures = client.map(slowly(1.0), range(30))
        testbed.wait_until(lambda: len(client.scheduler_info()["workers"]) == 3, 120,
                           "adapt to bring the other two hosts up")
        assert sum(client.gather(futures)) == sum(range(30))
        assert sorted(cluster.worker_spec) == [f"{n2}-0", f"{n3}-0", f"{n4}-0"]
        assert {row(cluster, h).health for h in (n2, n3, n4)} == {"ok"}


def test_a_host_whose_workers_die_past_their_budget_is_quarantined(bed: testbed.Bed) -> None:
    settings = {"sshdeploy.heartbeat-timeout": 6, "sshdeploy.worker-restarts": 1}
    with dask.config.set(settings), SSHCluster(
        [n1, n2, n3], connect_options=bed.connect_options(), spares=[n4],
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        for round_ in range(2):  # the first loss is restarted (1/1), the second is one too many
            testbed.wait_until(lambda: f"{n3}-0" in {
                w["name"] for w in client.scheduler_info()["workers"].values()}, 90,
                f"{n3}-0 to run (round {round_})")
            for pid, cmd in testbed.processes(bed.host(n3)):
                if "python" in cmd:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            testbed.wait_until(lambda: f"{n3}-0" not in {
                w["name"] for w in client.scheduler_info()["workers"].values()}, 60,
                f"the scheduler to see {n3}-0 gone (round {round_})")
        testbed.wait_until(lambda: f"{n4}-0" in cluster.worker_spec, 60,
                           f"{n3}'s worker to move to the spare")
        client.wait_for_workers(2, timeout=90)
        assert row(cluster, n3).health == "quarantined"
        assert "quarantined" in cluster.get_logs()["Cluster"]
        assert client.submit(lambda: 3, workers=[f"{n4}-0"]).result(timeout=30) == 3
        assert "quarantined" in repr(cluster)


def test_tasks_that_kill_their_workers_quarantine_every_host_until_the_window_ends(
        bed: testbed.Bed) -> None:
    """Issue 26, finding 10: tasks calling os._exit quarantined every host for good, and the
    rows said "restarts 0" beside "died 6 times"."""
    window = 20  # each Nanny restarts its worker once within it; the quarantine lasts it
    settings = {"sshdeploy.worker-restarts": 1, "sshdeploy.worker-restart-window": window,
                # the poison tasks stay until cancelled, whoever dies first
                "distributed.scheduler.allowed-failures": 50}
    with dask.config.set(settings), SSHCluster(
        [n1, n2, n3], connect_options=bed.connect_options(),
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        poison = client.map(lambda i: __import__("os")._exit(1), range(3), pure=False)
        testbed.wait_until(lambda: {row(cluster, h).health for h in (n2, n3)} == {
            "quarantined"}, 90, "every worker host to be quarantined")
        client.cancel(poison)  # else they kill the workers of the hosts readmitted too
        log = cluster.get_logs()["Cluster"]
        assert "every host's workers died past their restart budget the same way" in log, log
        assert "the tasks may be killing their workers (os._exit, segfaults)" in log
        assert f"It is readmitted in {window} s" in log
        assert cluster.worker_spec == {}
        for host in (n2, n3):  # the restarts its Nanny made count beside the deaths shown
            r = row(cluster, host)
            died = re.search(r"died (\d+) times", r.error)
            assert died is not None and r.restarts >= int(died.group(1)) - 1 >= 1, r
        testbed.wait_until(lambda: len(client.scheduler_info()["workers"]) == 2, 90,
                           "the hosts to be readmitted and their workers to run again")
        assert client.submit(lambda: 3, pure=False).result(timeout=30) == 3
        assert sum(client.gather(client.map(slowly(0.1), range(20)))) == sum(range(20))
        assert sorted(cluster.worker_spec) == [f"{n2}-0", f"{n3}-0"]  # its count, no more
        assert len(client.scheduler_info()["workers"]) == 2
        log = cluster.get_logs()["Cluster"]
        assert f"readmitted after {window} s of quarantine" in log, log
        assert "failed to start" not in log, log  # a start the quarantine ended is no failure
        assert [(row(cluster, h).health, row(cluster, h).error) for h in (n2, n3)] == [
            ("ok", ""), ("ok", "")]


def test_scaling_down_moves_the_results_the_workers_hold(bed: testbed.Bed) -> None:
    with SSHCluster([n1, n2, n3], connect_options=bed.connect_options()) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        held = {name: client.scatter([name * 100], workers=[name])[0]
                for name in (f"{n2}-0", f"{n3}-0")}  # whichever goes holds one
        cluster.scale(1)
        testbed.wait_until(lambda: len(client.scheduler_info()["workers"]) == 1, 60,
                           "the scale down")
        assert {name: f.result(timeout=30) for name, f in held.items()} == {
            name: name * 100 for name in held}


def test_scaling_down_then_straight_up_starts_the_new_workers(bed: testbed.Bed) -> None:
    """A scale up while the workers of a scale down still retire: the new ones start."""
    with SSHCluster([n1, n2, n3], connect_options=bed.connect_options(),
                    worker_options={"n_workers": 2}) as cluster, Client(cluster) as client:
        client.wait_for_workers(4, timeout=60)
        for i in range(4):
            cluster.scale(2)
            if i % 2:  # else the scale up comes while the scaled-away workers retire
                testbed.wait_until(lambda: len(client.scheduler_info()["workers"]) == 2, 60,
                                   "the scale down")
            cluster.scale(4)
            testbed.wait_until(lambda: {w["name"] for w in client.scheduler_info()[
                "workers"].values()} == set(cluster.worker_spec), 60,
                "the scheduler to run exactly the workers of the spec")
            assert len(cluster.worker_spec) == 4


def test_a_spare_that_is_down_too_is_passed_over_for_the_next(bed: testbed.Bed) -> None:
    first_spare, lost = bed.host(n3), bed.host(n2)
    with dask.config.set(FAST_LOSS), SSHCluster(
        [n1, n2], connect_options=bed.connect_options(), spares=[n3, n4],
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=60)
        testbed.set_link(first_spare, False)  # down before it is ever needed
        testbed.set_link(lost, False)
        try:
            testbed.wait_until(lambda: f"{n4}-0" in cluster.workers and len(
                client.scheduler_info()["workers"]) == 1 and {w["name"] for w in client.
                scheduler_info()["workers"].values()} == {f"{n4}-0"}, 120,
                f"{n2}'s worker to end up on the second spare {n4}")
            assert client.submit(lambda: 5).result(timeout=30) == 5
            assert row(cluster, n2).health == "lost" and row(cluster, n3).health == "lost"
            log = cluster.get_logs()["Cluster"]
            assert f"{n2}-0 -> {n3}-0 (spare)" in log
            assert f"unreachable when {n3}-0 was moved there" in log
            assert f"{n3}-0 -> {n4}-0 (spare)" in log, log
        finally:
            testbed.set_link(first_spare, True)
            testbed.set_link(lost, True)


def test_a_host_that_cannot_be_added_is_named_and_left_out(bed: testbed.Bed) -> None:
    with SSHCluster([n1, n2], connect_options=bed.connect_options()) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(1, timeout=60)
        with pytest.raises(Exception, match=rf"{n4}:1.*refused") as info:
            cluster.add_hosts([f"{n3} slots=1", f"{n4}:1"])  # nothing listens on port 1
        assert f"{n3}" not in str(info.value)  # the good host is not blamed
        hosts = {hp.host.hostname for hp in cluster.placement.worker_hosts.values()}
        assert hosts == {n2, n3}  # the bad one is left out again, the good one stays
        assert sorted(w["name"] for w in client.scheduler_info()["workers"].values()) == [
            f"{n2}-0", f"{n3}-0"]
