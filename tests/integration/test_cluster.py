"""SSHCluster on the real test bed: real sshd per host, real scheduler and workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import dask
import pytest
from distributed import Client

from sshdeploy import testbed
from sshdeploy.cluster import SSHCluster
from sshdeploy.errors import ConfigError

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(180)


def worker_hosts(client: Client) -> dict[str, str]:
    """Return worker name -> hostname the worker process runs on."""
    by_addr = client.run(socket.gethostname)
    info = client.scheduler_info(n_workers=-1)["workers"]
    return {info[a]["name"]: host for a, host in by_addr.items()}


def test_basic_computation_on_the_right_hosts(bed: testbed.Bed) -> None:
    with SSHCluster([n1, n2, n3], connect_options=bed.connect_options()) as cluster:
        assert cluster.scheduler_address.startswith("tcp://" + bed.host(n1).address)
        with Client(cluster) as client:
            assert client.submit(lambda x: x + 1, 41).result() == 42
            assert worker_hosts(client) == {f"{n2}-0": n2, f"{n3}-0": n3}
            scheduler_host = client.run_on_scheduler(socket.gethostname)
            assert scheduler_host == n1
        with urllib.request.urlopen(cluster.dashboard_link, timeout=10) as resp:
            assert resp.status == 200
        assert "SSHCluster" in repr(cluster)
        assert "SSHCluster" in cluster._repr_html_()  # the Jupyter widget renders
    left = testbed.python_processes(bed)
    assert left == {}, "close() returned before every remote process was gone"


def test_n_workers_per_host_and_keywords(bed: testbed.Bed) -> None:
    with SSHCluster(
        [n1, n2, n3],
        connect_options=bed.connect_options(),
        worker_options={"n_workers": 3, "nthreads": 2, "memory_limit": "1GiB"},
        scheduler_options={"port": 8799, "dashboard_address": ":8790"},
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(6, timeout=60)
        info = client.scheduler_info(n_workers=-1)["workers"].values()
        assert sorted(w["name"] for w in info) == [
            f"{n2}-0", f"{n2}-1", f"{n2}-2", f"{n3}-0", f"{n3}-1", f"{n3}-2",
        ]
        assert {w["nthreads"] for w in info} == {2}
        assert {w["memory_limit"] for w in info} == {2**30}
        assert cluster.scheduler_address.endswith(":8799")
        assert ":8790/" in cluster.dashboard_link
        assert sorted(cluster.workers) == sorted(w["name"] for w in info)


def test_per_host_lists(bed: testbed.Bed) -> None:
    opts = bed.connect_options()
    with SSHCluster(
        [n1, n2],
        connect_options=[opts, opts],
        remote_python=[sys.executable, sys.executable],
    ) as cluster, Client(cluster) as client:
        assert client.run(lambda: __import__("sys").executable) == {
            w: sys.executable for w in client.scheduler_info()["workers"]
        }
    for bad in ({"connect_options": [opts]}, {"remote_python": [sys.executable] * 3}):
        with pytest.raises(ConfigError, match="one entry per host"):
            SSHCluster([n1, n2], **({"connect_options": opts} | bad))


def test_hosts_required() -> None:
    for hosts in (None, []):
        with pytest.raises(ValueError, match="at least one host"):
            SSHCluster(hosts)


def test_config_is_inherited_with_opt_out(bed: testbed.Bed) -> None:
    def read() -> object:
        import dask

        return dask.config.get("sshdeploy-test.value", None)

    with dask.config.set({"sshdeploy-test.value": 42}):
        with SSHCluster([n1, n2], connect_options=bed.connect_options()) as cluster:
            with Client(cluster) as client:
                assert list(client.run(read).values()) == [42]
                assert client.run_on_scheduler(read) == 42
        with SSHCluster(
            [n1, n2], connect_options=bed.connect_options(), inherit_config=False
        ) as cluster:
            with Client(cluster) as client:
                assert list(client.run(read).values()) == [None]


def test_starts_with_logging_at_warning(bed: testbed.Bed) -> None:
    quiet = {"distributed.logging.distributed": "error", "logging.distributed": "error"}
    with dask.config.set(quiet):
        with SSHCluster([n1, n2], connect_options=bed.connect_options()) as cluster:
            with Client(cluster) as client:
                assert client.submit(sum, [1, 2, 3]).result() == 6
            # Readiness came from the handshake: no INFO line was needed or written.
            worker = cluster.get_logs(cluster=False, scheduler=False, workers=[f"{n2}-0"])
            assert not any(" - INFO - " in ln for ln in worker[f"{n2}-0"].splitlines())


def test_ten_mib_of_worker_output_does_not_stall(bed: testbed.Bed) -> None:
    def flood() -> int:
        import sys

        line = "x" * 1023
        for i in range(10 * 1024):
            print(line, file=sys.stdout if i % 2 else sys.stderr)
        print("END-OF-FLOOD stdout", file=sys.stdout, flush=True)
        print("END-OF-FLOOD stderr", file=sys.stderr, flush=True)
        return 1

    class Count(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.n = 0
            self.ends: set[str] = set()

        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, "sshdeploy_label", None) != f"{n2}-0":
                return
            msg = record.getMessage()
            if msg == "x" * 1023:
                self.n += 1
            elif msg.startswith("END-OF-FLOOD"):
                self.ends.add(getattr(record, "sshdeploy_stream", "?"))

    count = Count()
    remote = logging.getLogger("sshdeploy.remote")
    remote.addHandler(count)
    remote.setLevel(logging.INFO)
    try:
        with SSHCluster([n1, n2], connect_options=bed.connect_options()) as cluster:
            with Client(cluster) as client:
                assert client.submit(flood, pure=False).result(timeout=60) == 1
                assert client.submit(lambda: 7, pure=False).result(timeout=30) == 7
                testbed.wait_until(lambda: count.ends == {"stdout", "stderr"}, 60,
                           "the end of the flood on both streams")
                assert count.n == 10 * 1024
                logs = cluster.get_logs()
                assert f"{n2}-0" in logs and "Scheduler" in logs
                assert "END-OF-FLOOD stderr" in logs[f"{n2}-0"]
    finally:
        remote.removeHandler(count)
        remote.setLevel(logging.NOTSET)


def test_scale_up_and_down_by_free_slots(bed: testbed.Bed) -> None:
    hosts = [n1, n2, n3]
    with SSHCluster(hosts, connect_options=bed.connect_options(),
                    worker_options={"n_workers": 2}) as cluster:
        with Client(cluster) as client:
            client.wait_for_workers(4, timeout=60)
            cluster.scale(1)
            testbed.wait_until(lambda: len(client.scheduler_info()["workers"]) == 1, 60, "scale(1)")
            testbed.wait_until(lambda: len(cluster.workers) == 1, 30, "the cluster to drop workers")
            assert client.submit(lambda: 1).result() == 1
            cluster.scale(40)  # capped at the 4 slots, with a warning
            client.wait_for_workers(4, timeout=60)
            assert sorted(worker_hosts(client).items()) == [
                (f"{n2}-0", n2), (f"{n2}-1", n2),
                (f"{n3}-0", n3), (f"{n3}-1", n3),
            ]
            assert len(cluster.worker_spec) == 4


def test_adapt(bed: testbed.Bed) -> None:
    with SSHCluster(
        [n1, n2, n3],
        connect_options=bed.connect_options(),
        worker_options={"n_workers": 0},
    ) as cluster, Client(cluster) as client:
        assert cluster.workers == {}
        cluster.adapt(minimum=0, maximum=2, interval="100ms", wait_count=3)
        futs = client.map(lambda x: __import__("time").sleep(0.5) or x, range(20))
        assert sum(client.gather(futs)) == sum(range(20))
        assert len(cluster.worker_spec) >= 1
        del futs
        testbed.wait_until(lambda: not client.scheduler_info()["workers"], 60,
                           "adapt to scale down")


def test_name_and_identity(bed: testbed.Bed) -> None:
    async def main() -> None:
        opts = bed.connect_options()
        async with SSHCluster(
            [n1, n2], connect_options=opts, asynchronous=True, name="mine"
        ) as a, SSHCluster(
            [n3, n4], connect_options=opts, asynchronous=True, name="mine"
        ) as b:
            assert a.name == b.name == "mine"
            assert a != b and a == a
            async with Client(a, asynchronous=True) as client:
                assert await client.submit(lambda: 5) == 5

    asyncio.run(main())


def test_sigkill_of_controller_leaves_nothing_within_5s(bed: testbed.Bed, tmp_path: Path) -> None:
    script = tmp_path / "controller.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            from sshdeploy.cluster import SSHCluster
            cluster = SSHCluster({[n1, n2, n3]!r},
                                 connect_options={bed.connect_options()!r},
                                 worker_options={{"n_workers": 2}})
            print("READY", flush=True)
            time.sleep(600)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        assert testbed.python_processes(bed), "the cluster should be running remotely"
    finally:
        proc.kill()
        proc.wait()
    start = time.monotonic()
    testbed.wait_until(lambda: testbed.python_processes(bed) == {}, 5,
                       "remote processes to stop after SIGKILL")
    assert time.monotonic() - start < 5


def test_forty_workers_on_one_host_one_connection(bed: testbed.Bed) -> None:
    with SSHCluster(
        [n1, n2],
        connect_options=bed.connect_options(),
        worker_options={"n_workers": 40, "nthreads": 1, "memory_limit": "256MiB"},
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(40, timeout=120)
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 40
        sessions = [c for _p, c in testbed.processes(bed.host(n2)) if c.startswith("sshd:")]
        # One connection: sshd runs one privileged and one user process for it.
        assert 1 <= len(sessions) <= 2, sessions
        assert len(cluster._pool._conns) == 2


def test_lost_network_stops_the_remote_processes(bed: testbed.Bed) -> None:
    """A host cut off from the controller kills what it runs (heartbeat), and close() is bounded."""
    lost = bed.host(n3)
    with dask.config.set({"sshdeploy.heartbeat-timeout": 3, "sshdeploy.keepalive-interval": 1,
                          "sshdeploy.keepalive-count-max": 2}):
        cluster = SSHCluster([n1, n2, n3], connect_options=bed.connect_options())
        try:
            assert [c for _p, c in testbed.processes(lost) if "python" in c]
            testbed.set_link(lost, False)
            testbed.wait_until(
                lambda: not [c for _p, c in testbed.processes(lost) if "python" in c],
                15,
                f"the processes on {n3} to stop once it lost the controller",
            )
            with Client(cluster) as client:
                testbed.wait_until(lambda: len(client.scheduler_info()["workers"]) == 1, 60,
                           "the scheduler to drop the lost worker")
                assert client.submit(lambda: 3).result(timeout=30) == 3
        finally:
            start = time.monotonic()
            cluster.close()
            testbed.set_link(lost, True)
        assert time.monotonic() - start < 30


def test_lost_worker_agent_is_restarted_with_the_same_names(bed: testbed.Bed) -> None:
    with SSHCluster([n1, n2, n3], connect_options=bed.connect_options(),
                    worker_options={"n_workers": 2}) as cluster, Client(cluster) as client:
        client.wait_for_workers(4, timeout=60)
        agent = next(p for p, c in testbed.processes(bed.host(n2)) if "sshdeploy-agent" in c)
        os.kill(agent, signal.SIGKILL)
        testbed.wait_until(lambda: len(client.scheduler_info()["workers"]) < 4, 30,
                   "the scheduler to notice the lost workers")
        testbed.wait_until(lambda: len(client.scheduler_info()["workers"]) == 4, 60,
                   "the lost workers to be restarted")
        assert sorted(worker_hosts(client).items()) == [
            (f"{n2}-0", n2), (f"{n2}-1", n2), (f"{n3}-0", n3), (f"{n3}-1", n3),
        ]
        assert client.submit(lambda: 2).result(timeout=30) == 2


def test_no_restart_when_turned_off(bed: testbed.Bed) -> None:
    with SSHCluster([n1, n2, n3], connect_options=bed.connect_options(),
                    restart_workers=False) as cluster, Client(cluster) as client:
        agent = next(p for p, c in testbed.processes(bed.host(n2)) if "sshdeploy-agent" in c)
        os.kill(agent, signal.SIGKILL)
        testbed.wait_until(lambda: f"{n2}-0" not in cluster.worker_spec, 30,
                   "the lost worker to leave the cluster's spec")
        testbed.wait_until(lambda: len(client.scheduler_info()["workers"]) == 1, 60,
                   "the scheduler to drop the lost worker")
        assert client.submit(lambda: 2).result(timeout=30) == 2


def test_no_restart_of_a_dead_worker_process_when_turned_off(bed: testbed.Bed) -> None:
    with SSHCluster([n1, n2, n3], connect_options=bed.connect_options(),
                    restart_workers=False) as cluster, Client(cluster) as client:
        addr = next(a for a, w in client.scheduler_info()["workers"].items()
                    if w["name"] == f"{n2}-0")
        with contextlib.suppress(Exception):
            client.run(os._exit, 1, workers=[addr])
        testbed.wait_until(lambda: f"{n2}-0" not in cluster.worker_spec, 30,
                           "the dead worker to leave the cluster")
        assert [w["name"] for w in client.scheduler_info()["workers"].values()] == [f"{n3}-0"]


def test_scale_on_a_single_host_cluster(bed: testbed.Bed) -> None:
    with SSHCluster([n1], connect_options=bed.connect_options(),
                    worker_options={"nthreads": 2}) as cluster, Client(cluster) as client:
        assert cluster.workers == {}
        cluster.scale(cores=4)  # two workers of 2 threads, beside the scheduler
        client.wait_for_workers(2, timeout=60)
        assert sorted(worker_hosts(client).items()) == [(f"{n1}-0", n1), (f"{n1}-1", n1)]


def test_scale_down_then_up_reuses_names(bed: testbed.Bed) -> None:
    with SSHCluster([n1, n2], connect_options=bed.connect_options()) as cluster, \
            Client(cluster) as client:
        cluster.scale(0)
        testbed.wait_until(lambda: not client.scheduler_info()["workers"], 30, "scale(0)")
        cluster.scale(1)
        client.wait_for_workers(1, timeout=60)
        assert worker_hosts(client) == {f"{n2}-0": n2}
        # The reused name still reports its own exit (and is restarted).
        addr = next(iter(client.scheduler_info()["workers"]))
        client.retire_workers([addr], close_workers=True)
        testbed.wait_until(lambda: len(client.scheduler_info()["workers"]) == 1
                           and next(iter(client.scheduler_info()["workers"])) != addr, 60,
                           "the retired worker to be started again")


def test_processes_that_leave_the_group_are_stopped_too(bed: testbed.Bed) -> None:
    def escape() -> int:
        import subprocess

        return subprocess.Popen(["sleep", "1001"], start_new_session=True).pid

    with SSHCluster([n1, n2], connect_options=bed.connect_options()) as cluster, \
            Client(cluster) as client:
        assert cluster.workers
        client.submit(escape, pure=False).result(timeout=30)
        assert any("sleep 1001" in c for _p, c in testbed.processes(bed.host(n2)))
    testbed.wait_until(
        lambda: not any("sleep 1001" in c for _p, c in testbed.processes(bed.host(n2))), 10,
        "the escaped process to be stopped with the cluster")


def test_login_output_on_stdout_does_not_break_start_up(bed: testbed.Bed) -> None:
    setup = "printf 'Welcome to the cluster'; echo 3; echo '{\"ev\": \"hello\"}'"
    with SSHCluster([n1, n2], connect_options=bed.connect_options(), setup=setup) as cluster, \
            Client(cluster) as client:
        assert client.submit(lambda: 4).result(timeout=30) == 4
        scheduler = cluster.get_logs(cluster=False, workers=False)["Scheduler"]
        assert any("Welcome to the cluster" in ln for ln in scheduler.splitlines())
