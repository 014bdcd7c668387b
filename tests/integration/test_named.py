"""Named clusters that outlive the terminal (issue 17), on the real bed.

Each test starts a cluster with ``name=..., shutdown_on_close=False`` (or
``dask-ssh up``), lets its controller go, and checks what users see: it
still computes from a new controller, supervises itself on the hosts, stops
by its policies, and ``down`` leaves nothing on any host. Cluster names are
unique per test; the local state lives in the test's own ``XDG_STATE_HOME``.
"""

from __future__ import annotations

import asyncio
import os
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

from sshdeploy import testbed
from sshdeploy.cluster import SSHCluster
from sshdeploy.errors import ClusterExistsError
from sshdeploy.named import flow
from sshdeploy.named.state import StateStore

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StateStore]:
    """This machine's state files in the test's own directory; every cluster left is stopped."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    store = StateStore()
    yield store
    for record in store.records():
        asyncio.run(flow.stop(record, store))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def status_of(name: str) -> str:
    record = StateStore().load(name)
    assert record is not None
    return asyncio.run(flow.probe_all([record]))[0].state


def controller(tmp_path: Path, bed: testbed.Bed, name: str, **options: object
               ) -> subprocess.Popen[str]:
    """A separate controller process that starts the named cluster, says READY and waits."""
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from sshdeploy.cluster import SSHCluster
        cluster = SSHCluster({[n1, n2, n3]!r}, connect_options={bed.connect_options()!r},
                             name={name!r}, shutdown_on_close=False, **{options!r})
        print("READY", cluster.scheduler_address, flush=True)
        sys.stdin.read()
        """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, text=True, env=dict(os.environ))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY"), line
    return proc


def test_a_named_cluster_survives_its_controller_killed_and_computes_again(
        bed: testbed.Bed, tmp_path: Path, state: StateStore) -> None:
    name = unique("survive")
    proc = controller(tmp_path, bed, name, worker_options={"n_workers": 2})
    proc.kill()  # SIGKILL: no close(), its SSH connections just drop
    proc.wait()
    # Nothing of ours runs on this machine, yet the cluster does, on its hosts.
    testbed.wait_until(lambda: status_of(name) == "running", 30, "the cluster to run on")
    assert {n1, n2, n3} <= set(testbed.python_processes(bed))
    started = time.monotonic()
    with SSHCluster.from_name(name) as cluster:
        assert time.monotonic() - started < 30
        assert sorted(cluster.workers) == [f"{n2}-0", f"{n2}-1", f"{n3}-0", f"{n3}-1"]
        with Client(cluster) as client:
            assert client.submit(lambda x: x * 2, 21).result(timeout=30) == 42
        rows = {r.host.split("@")[-1].split(":")[0]: r for r in cluster.host_rows()}
        assert rows[n2].running == 2
    # close() of from_name detached: it still runs
    testbed.wait_until(lambda: status_of(name) == "running", 15, "the cluster to run on")
    cluster = SSHCluster.from_name(name)
    cluster.shutdown()
    assert testbed.python_processes(bed) == {}
    assert state.load(name) is None


def test_a_worker_killed_on_its_host_comes_back_with_no_controller(
        bed: testbed.Bed, tmp_path: Path, state: StateStore) -> None:
    name = unique("supervise")
    cluster = SSHCluster([n1, n2], connect_options=bed.connect_options(), name=name,
                         shutdown_on_close=False)
    with Client(cluster) as client:
        (pid,) = client.run(os.getpid).values()
    address = cluster.scheduler_address
    cluster.close()  # detached: no controller from here on
    os.kill(pid, signal.SIGKILL)
    with Client(address, timeout=30) as client:
        def back() -> bool:
            try:  # a worker that is restarting may drop the call
                pids = set(client.run(os.getpid, wait=True).values())
            except (OSError, asyncio.TimeoutError):
                return False
            return len(pids) == 1 and pid not in pids
        testbed.wait_until(back, 60, "the killed worker to be restarted by its Nanny")
        assert client.submit(sum, [1, 2]).result(timeout=30) == 3


def test_scheduler_host_killed_then_list_says_gone_and_every_host_is_clean(
        bed: testbed.Bed, tmp_path: Path, state: StateStore) -> None:
    name = unique("gone")
    cluster = SSHCluster([n1, n2, n3], connect_options=bed.connect_options(), name=name,
                         shutdown_on_close=False, worker_options={"death_timeout": "5s"})
    cluster.close()
    sched = [pid for pid, cmd in testbed.processes(bed.host(n1)) if "python" in cmd]
    assert sched
    for pid in sched:
        with _ignore():
            os.kill(pid, signal.SIGKILL)
    assert status_of(name) == "gone"
    # the workers' agents notice the scheduler is gone and stop everything, on their own
    testbed.wait_until(lambda: testbed.python_processes(bed) == {}, 30,
                       "every worker host to stop its processes")
    record = state.load(name)
    assert record is not None
    asyncio.run(flow.stop(record, state))  # forgets it: nothing was left to stop


def test_idle_timeout_stops_everything_and_list_says_why(
        bed: testbed.Bed, tmp_path: Path, state: StateStore) -> None:
    name = unique("idle")
    cluster = SSHCluster([n1, n2], connect_options=bed.connect_options(), name=name,
                         shutdown_on_close=False, idle_timeout="10s")
    cluster.close()
    testbed.wait_until(lambda: testbed.python_processes(bed) == {}, 60,
                       "the idle cluster to stop on every host")
    record = state.load(name)
    assert record is not None
    (status,) = asyncio.run(flow.probe_all([record]))
    assert status.state == "stopped" and "idle timeout" in status.reason, status


def test_up_of_a_running_name_takes_it_over_or_refuses_another_spec(
        bed: testbed.Bed, tmp_path: Path, state: StateStore) -> None:
    name = unique("same")
    first = SSHCluster([n1, n2], connect_options=bed.connect_options(), name=name,
                       shutdown_on_close=False)
    address = first.scheduler_address
    first.close()
    again = SSHCluster([n1, n2], connect_options=bed.connect_options(), name=name,
                       shutdown_on_close=False)
    assert again.scheduler_address == address and list(again.workers) == [f"{n2}-0"]
    again.close()
    with pytest.raises(ClusterExistsError, match=rf"hosts: .*{n2} -> .*{n3}"):
        SSHCluster([n1, n3], connect_options=bed.connect_options(), name=name,
                   shutdown_on_close=False)
    # (the scheduler's status file is rewritten every second: poll, bounded)
    testbed.wait_until(lambda: status_of(name) == "running", 15, "the cluster to run on")


def test_a_tls_cluster_is_reattached_with_its_kept_credentials(
        bed: testbed.Bed, tmp_path: Path, state: StateStore) -> None:
    name = unique("tls")
    cluster = SSHCluster([n1, n2], connect_options=bed.connect_options(), name=name,
                         shutdown_on_close=False, security=True,
                         worker_options={"n_workers": 2})
    assert cluster.scheduler_address.startswith("tls://")
    cluster.close()
    record = state.load(name)
    assert record is not None and record.tls
    for path in record.tls.values():
        assert os.stat(path).st_mode & 0o777 == 0o600
    with SSHCluster.from_name(name) as again, Client(again) as client:
        assert client.submit(lambda: 7).result(timeout=30) == 7
        again.scale(1)  # retires one worker through the TLS scheduler
        testbed.wait_until(
            lambda: len(client.scheduler_info(n_workers=-1)["workers"]) == 1, 60,
            "one worker left")


class _ignore:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is ProcessLookupError


def test_a_cluster_on_a_private_network_is_reached_again_through_a_fresh_forward(
        bed: testbed.Bed, tmp_path: Path, state: StateStore) -> None:
    name = unique("private")
    iface = bed.private_interface
    cluster = SSHCluster([n1, n2], connect_options=bed.connect_options(), name=name,
                         shutdown_on_close=False, scheduler_options={"interface": iface},
                         worker_options={"interface": iface})
    assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")  # forwarded
    cluster.close()
    with SSHCluster.from_name(name) as again:
        assert again.scheduler_address.startswith("tcp://127.0.0.1:")
        with Client(again) as client:
            assert client.submit(lambda: 11).result(timeout=30) == 11


def test_a_named_clusters_upload_reaches_a_host_added_by_a_later_controller(
        bed: testbed.Bed, tmp_path: Path, state: StateStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given as a relative path from where the cluster was started; the controller that
    # adds the host runs elsewhere (the record keeps where the file is).
    module = f"shipped_{uuid.uuid4().hex[:8]}"
    start_dir = tmp_path / "project"
    start_dir.mkdir()
    (start_dir / f"{module}.py").write_text("VALUE = 'uploaded'\n")
    name = unique("upload")
    monkeypatch.chdir(start_dir)
    cluster = SSHCluster([n1, n2], connect_options=bed.connect_options(), name=name,
                         shutdown_on_close=False, upload=[f"{module}.py"])
    cluster.close()
    monkeypatch.chdir(tmp_path)

    def use() -> str:
        import importlib

        return str(importlib.import_module(module).VALUE)

    with SSHCluster.from_name(name) as again, Client(again) as client:
        assert again.add_hosts([n3]) == [f"{n3}-0"]
        client.wait_for_workers(2, timeout=60)
        assert client.run(use) == {w: "uploaded" for w in client.scheduler_info()["workers"]}
    SSHCluster.from_name(name).shutdown()
    assert testbed.python_processes(bed) == {}
