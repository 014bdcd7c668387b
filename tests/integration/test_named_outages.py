"""A named cluster supervises itself through outages (issue 26, must-hold 2), on the real bed.

Each test starts a named cluster, lets its controller go and cuts a host's
link (``testbed.set_link``): workers lost in an outage shorter than their
``death_timeout`` come back by themselves, to the count the cluster wants; a
longer one leaves nothing on the host, and the logs say why. ``attach`` ends
when its cluster is stopped or replaced. The local state lives in the
test's own ``XDG_STATE_HOME``; commands are real ``python -m sshdeploy.cli``
subprocesses.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from sshdeploy import testbed
from sshdeploy.cluster import SSHCluster
from sshdeploy.named import flow
from sshdeploy.named.state import StateStore
from sshdeploy.named.status import ClusterStatus

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(300)

#: A connection that stays silent this long breaks (distributed's TCP timeout, 30 s by
#: default; 11 s at least): a short cut is enough to lose workers. On the hosts only.
FAST_BREAK = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP": "12s"}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """This machine's state in the test's own directory; every cluster left is stopped."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yield {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    store = StateStore()
    for record in store.records():
        asyncio.run(flow.stop(record, store))


def dask_ssh(env: dict[str, str], *args: str, timeout: float = 180
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sshdeploy.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def status_of(name: str) -> ClusterStatus:
    record = StateStore().load(name)
    assert record is not None
    return asyncio.run(flow.probe_all([record]))[0]


def wait_for_workers(name: str, running: int, wanted: int, timeout: float) -> None:
    testbed.wait_until(lambda: (lambda s: (s.running, s.wanted) == (running, wanted))(
        status_of(name)), timeout, f"{name} to have {running} of {wanted} workers")


def logs(env: dict[str, str], name: str, *args: str) -> str:
    out = dask_ssh(env, "logs", name, "--lines", "0", *args)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def named_cluster(bed: testbed.Bed, name: str, **options: object) -> str:
    """Start named cluster *name* (scheduler on n1, a worker on n2 and n3); leave it."""
    cluster = SSHCluster([n1, n2, n3], connect_options=bed.connect_options(), name=name,
                         shutdown_on_close=False, **options)  # type: ignore[arg-type]
    address = str(cluster.scheduler_address)
    cluster.close()  # no controller from here on
    return address


def test_a_worker_host_cut_until_its_worker_is_lost_gets_it_back_with_no_controller(
        bed: testbed.Bed, env: dict[str, str]) -> None:
    """Finding 5: distributed's default timings (a 40 s cut lost the worker for good)."""
    name = f"cut-{uuid.uuid4().hex[:6]}"
    address = named_cluster(bed, name)
    wait_for_workers(name, 2, 2, 30)
    cut = time.monotonic()
    testbed.set_link(bed.host(n3), False)
    try:  # the scheduler drops the worker once the connection breaks (30 s into the cut)
        wait_for_workers(name, 1, 2, 60)
    finally:
        testbed.set_link(bed.host(n3), True)
    assert time.monotonic() - cut < 60  # shorter than the workers' death_timeout
    wait_for_workers(name, 2, 2, 60)
    with Client(address, timeout=30) as client:
        assert client.submit(lambda: 3, workers=[f"{n3}-0"]).result(timeout=30) == 3
    text = logs(env, name)
    assert f"sshdeploy agent: worker {n3}-0 lost (worker-handle-scheduler-connection-broken)" \
        in text and f"sshdeploy agent: worker {n3}-0 started again" in text, text[-3000:]


def test_workers_lost_with_their_scheduler_host_come_back_to_the_wanted_count(
        bed: testbed.Bed, env: dict[str, str]) -> None:
    name = f"sched-{uuid.uuid4().hex[:6]}"
    address = named_cluster(bed, name, env=FAST_BREAK, worker_options={"death_timeout": "40s"})
    wait_for_workers(name, 2, 2, 30)
    testbed.set_link(bed.host(n1), False)
    try:  # both workers close once their connection breaks; their agents wait
        testbed.wait_until(lambda: all(
            f"worker {h}-0 lost" in _host_log(bed, name, h) for h in (n2, n3)), 60,
            "both workers to be lost")
    finally:
        testbed.set_link(bed.host(n1), True)
    wait_for_workers(name, 2, 2, 60)
    with Client(address, timeout=30) as client:
        assert client.submit(sum, [1, 2]).result(timeout=30) == 3


def test_an_outage_past_the_death_timeout_leaves_nothing_and_the_count_stays_wanted(
        bed: testbed.Bed, env: dict[str, str]) -> None:
    """Findings 5 and 6: attach keeps the wanted count; the logs outlive the agent."""
    name = f"long-{uuid.uuid4().hex[:6]}"
    named_cluster(bed, name, env=FAST_BREAK, worker_options={"death_timeout": "20s"})
    wait_for_workers(name, 2, 2, 30)
    testbed.set_link(bed.host(n3), False)
    try:
        testbed.wait_until(lambda: n3 not in testbed.python_processes(bed), 60,
                           f"nothing of the cluster to be left on {n3}")
    finally:
        testbed.set_link(bed.host(n3), True)
    wait_for_workers(name, 1, 2, 30)
    # Taking it over (attach, scale, from_name) never lowers the count it wants.
    with SSHCluster.from_name(name) as cluster:
        assert sorted(cluster.workers) == [f"{n2}-0"]
    record = StateStore().load(name)
    assert record is not None and record.spec["wanted"] == 2
    assert (status_of(name).state, status_of(name).reason) == ("degraded", "1 worker(s) missing")
    # What happened is still there to read, after the agent ended.
    assert f"[{n3}-0]" in logs(env, name, "--worker", f"{n3}-0")
    text = logs(env, name)
    assert "sshdeploy agent: stopping: the scheduler" in text and "unreachable for 20 s" in text
    nope = dask_ssh(env, "logs", name, "--worker", "nope")
    assert nope.returncode == 2 and not nope.stdout, nope.stdout + nope.stderr
    assert f"has no worker 'nope' (its workers: {n2}-0, {n3}-0)" in nope.stderr, nope.stderr
    # The user asks for the count back: it is started again.
    scaled = dask_ssh(env, "scale", name, "2")
    assert scaled.returncode == 0, scaled.stdout + scaled.stderr
    wait_for_workers(name, 2, 2, 30)


def _host_log(bed: testbed.Bed, name: str, host: str) -> str:
    """The log files a host keeps for the cluster, read from this machine."""
    where = testbed.host_path(bed.host(host), "/root/.local/state/sshdeploy/clusters") / name
    return "".join(p.read_text(errors="replace")
                   for p in sorted(where.glob(f"hosts/{host}/logs/*.log")))


def _attach(env: dict[str, str], name: str) -> subprocess.Popen[str]:
    """``dask-ssh attach NAME``, read until it says how to detach."""
    proc = subprocess.Popen([sys.executable, "-m", "sshdeploy.cli", "attach", name], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "Ctrl-C detaches" in line or not line:
            break
    testbed.wait_until(lambda: len(_tails_of(name)) > 0, 30, "attach to follow the logs")
    return proc


def _tails_of(name: str) -> list[int]:
    """Pids of this machine's ``dask-ssh attach NAME``'s remote tails (any bed host)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            cmd = testbed.cmdline(int(entry)) or ""
            if cmd.startswith("tail ") and f"/clusters/{name}/" in cmd:
                out.append(int(entry))
    return out


def _read_line(proc: subprocess.Popen[str], word: str, timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if word in line:
            return line
        if not line:
            break
    pytest.fail(f"attach printed no line with {word!r}: {''.join(seen)[-2000:]}")


def test_attach_sees_workers_change_and_ends_when_its_cluster_is_stopped_or_replaced(
        bed: testbed.Bed, env: dict[str, str]) -> None:
    """Finding 7: it ends (status 1, saying why) and leaves no tail on the hosts."""
    name = f"att-{uuid.uuid4().hex[:6]}"
    creds = ["--known-hosts", str(bed.known_hosts), "--ssh-private-key", str(bed.client_key),
             "--ssh-username", "root", "--scheduler-port", "0", "--dashboard-address", ":0"]
    started = dask_ssh(env, "up", "--name", name, *creds, "--nworkers", "2", n1, n2)
    assert started.returncode == 0, started.stdout + started.stderr
    attached = _attach(env, name)
    try:
        scaled = dask_ssh(env, "scale", name, "1")
        assert scaled.returncode == 0, scaled.stdout + scaled.stderr
        changed = _read_line(attached, "workers changed", 30)
        assert "2 -> 1 (gone: " in changed, changed
        down = dask_ssh(env, "down", name)
        assert down.returncode == 0, down.stdout + down.stderr
        out, err = attached.communicate(timeout=60)
    finally:
        if attached.poll() is None:
            attached.send_signal(signal.SIGINT)
            attached.communicate(timeout=30)
    assert attached.returncode == 1, out + err
    assert f"cluster {name!r} is stopped: `dask-ssh down {name}` stopped it" in err, err
    assert "keeps running" not in out and "Traceback" not in err
    testbed.wait_until(lambda: not _tails_of(name), 10, "attach's tails to end on the hosts")
    # Replaced while attached: the same.
    started = dask_ssh(env, "up", "--name", name, *creds, n1, n2)
    assert started.returncode == 0, started.stdout + started.stderr
    attached = _attach(env, name)
    try:
        again = dask_ssh(env, "up", "--name", name, "--replace", *creds, n1, n3)
        assert again.returncode == 0, again.stdout + again.stderr
        out, err = attached.communicate(timeout=60)
    finally:
        if attached.poll() is None:
            attached.send_signal(signal.SIGINT)
            attached.communicate(timeout=30)
    assert attached.returncode == 1, out + err
    assert f"cluster {name!r} is replaced: another cluster" in err or \
        f"cluster {name!r} is stopped" in err, err
    testbed.wait_until(lambda: not _tails_of(name), 10, "attach's tails to end on the hosts")
