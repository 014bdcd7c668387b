"""Real networks on the test bed: port forwarding through SSH, TLS, partial starts.

The private-network half (scheduler and workers on a subnet the controller
cannot reach) is in test_private_net.py, next to the bed's second network.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest
from distributed import Client
from distributed.comm.addressing import get_address_host_port

from sshdeploy import testbed
from sshdeploy.cluster import SSHCluster
from sshdeploy.errors import SSHDeployError

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(180)


def port_open(address: str) -> bool:
    host, port = get_address_host_port(address)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError:
        return False
    return True


def compute_from_another_process(address: str, security: str = "") -> str:
    """Run a Client in a fresh local process against *address*; return its output."""
    code = textwrap.dedent(f"""
        from distributed import Client
        {security}
        with Client({address!r}, timeout=20{', security=sec' if security else ''}) as c:
            print(c.submit(sum, [20, 22]).result())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    return out.stdout.strip() + out.stderr[-2000:]


def test_forwarded_scheduler_and_dashboard_are_local_and_work(bed: testbed.Bed) -> None:
    with SSHCluster([n1, n2], connect_options=bed.connect_options(),
                    forward_ports=True) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert cluster.scheduler.address.startswith("tcp://" + bed.host(n1).address)
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")
        with Client(cluster) as client:
            assert client.submit(lambda x: x + 1, 41).result() == 42
            # workers register with the scheduler's real address, not the tunnel
            assert all(a.startswith("tcp://" + bed.host(n2).address)
                       for a in client.scheduler_info()["workers"])
        assert compute_from_another_process(cluster.scheduler_address).startswith("42")
        with urllib.request.urlopen(cluster.dashboard_link, timeout=10) as resp:
            assert resp.status == 200
        local = cluster.scheduler_address
        dashboard = cluster.dashboard_link.split("/status")[0].replace("http", "tcp", 1)
        # one SSH connection per host: the tunnel rides on the scheduler host's
        assert len(cluster._pool._conns) == 2
    assert not port_open(local), "the forwarded scheduler port outlived the cluster"
    assert not port_open(dashboard), "the forwarded dashboard port outlived the cluster"


def test_auto_mode_connects_directly_when_the_scheduler_is_reachable(bed: testbed.Bed) -> None:
    with SSHCluster([n1, n2], connect_options=bed.connect_options()) as cluster:
        assert cluster.scheduler.forwarding is None
        assert cluster.scheduler_address.startswith("tcp://" + bed.host(n1).address)
        assert [r.state for r in cluster.host_rows()] == ["ready", "ready"]


def test_tls_everywhere_and_a_plain_client_is_refused(bed: testbed.Bed) -> None:
    before = set(os.listdir("/tmp"))
    with SSHCluster([n1, n2, n3], connect_options=bed.connect_options(),
                    security=True) as cluster:
        assert cluster.scheduler_address.startswith("tls://" + bed.host(n1).address)
        with Client(cluster) as client:
            assert client.submit(lambda x: x * 2, 21).result() == 42
            # the controller's reachability probe was a client that connected and left
            assert "TLS handshake failed" not in str(cluster.get_logs()["Scheduler"])
            workers = client.scheduler_info()["workers"]
            assert len(workers) == 2 and all(a.startswith("tls://") for a in workers)
        plain = cluster.scheduler_address.replace("tls://", "tcp://")
        out = compute_from_another_process(plain)
        assert not out.startswith("42"), out
        secured = compute_from_another_process(
            cluster.scheduler_address,
            security="import pickle, base64; sec = pickle.loads(base64.b64decode("
            + repr(__import__("base64").b64encode(__import__("pickle").dumps(
                cluster.security)).decode()) + "))",
        )
        assert secured.startswith("42"), secured
    left = {n for n in set(os.listdir("/tmp")) - before if not n.startswith("pytest")}
    assert not [n for n in left if n.endswith((".pem", ".crt", ".key"))], left


def test_tls_through_forwarded_ports(bed: testbed.Bed) -> None:
    with SSHCluster([n1, n2], connect_options=bed.connect_options(), security=True,
                    forward_ports=True) as cluster:
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        with Client(cluster) as client:
            assert client.submit(sum, [1, 2]).result() == 3


def test_min_workers_comes_up_without_the_host_that_failed(bed: testbed.Bed) -> None:
    closed_port = f"root@{n4}:1"  # nothing listens there: refused at once
    with SSHCluster([n1, n2, closed_port, n3], connect_options=bed.connect_options(),
                    min_workers=2) as cluster:
        assert sorted(cluster.workers) == [f"{n2}-0", f"{n3}-0"]
        assert list(cluster.failed_hosts) == [f"root@{n4}:1"]
        assert "connection refused" in str(cluster.failed_hosts[f"root@{n4}:1"])
        assert f"root@{n4}:1" in cluster.get_logs()["Cluster"]
        with Client(cluster) as client:
            assert len(client.scheduler_info()["workers"]) == 2
            assert client.submit(sum, [1, 2]).result() == 3
        # not retried in a loop: the spec no longer wants it
        assert f"{n4}-0" not in cluster.worker_spec
        # one row per host in the text and HTML reprs, the failed host with its error
        rows = {r.host: r for r in cluster.host_rows()}
        assert (rows[f"root@{n2}"].running, rows[f"root@{n2}"].wanted) == (1, 1)
        assert rows[f"root@{n1}"].role == "scheduler"
        assert "connection refused" in rows[f"root@{n4}:1"].error
        assert rows[f"root@{n4}:1"].state == "failed" and rows[f"root@{n2}"].state == "ready"
        text = repr(cluster)
        assert f"root@{n4}:1" in text and "1/1" in text and "last error" in text
        assert "connection refused" in cluster._repr_html_()


def test_too_few_workers_fails_naming_every_failed_host(bed: testbed.Bed) -> None:
    with pytest.raises(SSHDeployError) as info:
        SSHCluster([n1, n2, f"root@{n3}:1", f"root@{n4}:1"],
                   connect_options=bed.connect_options(), min_workers=2)
    text = str(info.value)
    assert f"root@{n3}:1" in text and f"root@{n4}:1" in text
    assert testbed.python_processes(bed) == {}


def test_one_host_two_spellings_one_connection_and_scale_edges(bed: testbed.Bed) -> None:
    with SSHCluster([n1, n2, f"root@{n2}:22"], connect_options=bed.connect_options(),
                    worker_options={"nthreads": 1}) as cluster:
        assert sorted(cluster.workers) == [f"{n2}-0", f"{n2}-1"]
        assert len(cluster._pool._conns) == 2  # node1 and node2, not three
        before = dict(cluster.worker_spec)
        with pytest.raises(ValueError):
            cluster.scale(-3)
        assert cluster.worker_spec == before
        cluster.scale(cores=50)  # 2 slots: capped, with a warning
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=30)
            assert len(cluster.worker_spec) == 2


def test_a_worker_dying_in_a_loop_is_reported_and_stopped(bed: testbed.Bed) -> None:
    import dask

    # 30 MB cannot hold a worker process: its Nanny kills it as soon as it runs
    with dask.config.set({"sshdeploy.worker-restarts": 1}), SSHCluster(
        [n1, n2, n3], connect_options=bed.connect_options(),
        worker_options={"memory_limit": "30MB"}, min_workers=0,
    ) as cluster:
        deadline = time.monotonic() + 60
        while cluster.worker_spec and time.monotonic() < deadline:
            time.sleep(0.2)
        assert cluster.worker_spec == {}, "workers dying in a loop were never stopped"
        logs = cluster.get_logs()
        reasons = "\n".join(str(r.error) for r in cluster.host_rows())
        assert "died" in reasons and "not restarted again" in reasons, (reasons, logs)
        assert "memory limit 28.6 MiB" in reasons, reasons  # 30MB: what it died of


def test_tls_sigkill_of_the_controller_leaves_no_credentials_or_dirs(
    bed: testbed.Bed, tmp_path: os.PathLike[str]
) -> None:
    # The remote TMPDIR points at a fresh dir, so what the agents leave there is ours alone
    # (short: multiprocessing's socket path inside it must stay under 108 bytes).
    import shutil

    # In each host's own /tmp (seen from here through testbed.host_path).
    remote_tmp = f"/tmp/sdk{os.urandom(4).hex()}"
    hosts = [h for h in bed.hosts if h.name in (n1, n2, n3)]
    for h in hosts:
        testbed.host_path(h, remote_tmp).mkdir()

    def entries() -> list[str]:
        return [e for h in hosts for e in os.listdir(testbed.host_path(h, remote_tmp))]

    def request_cleanup(_path: str, ignore_errors: bool = True) -> None:
        for h in hosts:
            shutil.rmtree(testbed.host_path(h, remote_tmp), ignore_errors=ignore_errors)
    script = os.path.join(str(tmp_path), "controller.py")
    with open(script, "w") as f:
        f.write(textwrap.dedent(f"""
            import time
            from distributed import Client
            from sshdeploy.cluster import SSHCluster
            cluster = SSHCluster({[n1, n2, n3]!r}, connect_options={bed.connect_options()!r},
                                 security=True, forward_ports=True,
                                 setup="export TMPDIR={remote_tmp}")
            with Client(cluster) as client:
                assert client.submit(sum, [1, 2]).result() == 3
            print("READY", flush=True)
            time.sleep(600)
        """))
    proc = subprocess.Popen([sys.executable, script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        assert entries(), "the agents' private dirs should be there while running"
    finally:
        proc.kill()
        proc.wait()
    testbed.wait_until(lambda: testbed.python_processes(bed) == {}, 10,
                       "remote processes to stop after SIGKILL")
    try:
        testbed.wait_until(lambda: entries() == [], 10,
                           "the agents' private dirs (and any credentials) to be removed")
    finally:
        request_cleanup(remote_tmp, ignore_errors=True)
