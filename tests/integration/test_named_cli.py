"""``dask-ssh up/list/status/logs/scale/attach/down`` on the real bed (issue 17).

Each command is a real ``python -m sshdeploy.cli`` subprocess; the local
state lives in the test's own ``XDG_STATE_HOME``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sshdeploy import testbed
from sshdeploy.cluster import SSHCluster
from sshdeploy.named import flow
from sshdeploy.named.state import StateStore

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yield {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    store = StateStore()
    for record in store.records():
        asyncio.run(flow.stop(record, store))


def credentials(bed: testbed.Bed) -> list[str]:
    return ["--known-hosts", str(bed.known_hosts), "--ssh-private-key", str(bed.client_key),
            "--ssh-username", "root"]


def dask_ssh(env: dict[str, str], *args: str, timeout: float = 180
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sshdeploy.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def listing(env: dict[str, str], settled: bool = True) -> list[dict[str, object]]:
    """``dask-ssh list --json``; *settled*: poll until no cluster is ``degraded`` (the
    scheduler's status file is rewritten every second, bounded wait)."""
    deadline = time.monotonic() + 15
    while True:
        out = dask_ssh(env, "list", "--json")
        assert out.returncode == 0, out.stderr
        found = list(json.loads(out.stdout))
        if not settled or all(c["state"] != "degraded" for c in found) or \
                time.monotonic() > deadline:
            return found


def test_up_then_list_status_logs_scale_and_down(bed: testbed.Bed,
                                                  env: dict[str, str]) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"
    up = dask_ssh(env, "up", "--name", name, *credentials(bed), "--scheduler-port", "0",
                  "--dashboard-address", ":0", "--nworkers", "2", n1, n2, n3)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "scheduler  tcp://" in up.stdout and f"dask-ssh down {name}" in up.stdout
    assert f"SSHCluster.from_name({name!r})" in up.stdout
    # up returned: nothing of ours runs here, the cluster runs on its hosts
    assert {n1, n2, n3} <= set(testbed.python_processes(bed))
    again = dask_ssh(env, "up", "--name", name, *credentials(bed), "--scheduler-port", "0",
                     "--dashboard-address", ":0", "--nworkers", "2", n1, n2, n3)
    assert again.returncode == 0 and "already runs" in again.stdout, again.stdout + again.stderr
    other = dask_ssh(env, "up", "--name", name, *credentials(bed), "--nworkers", "2", n1, n2)
    assert other.returncode == 1 and "another spec (hosts:" in other.stderr, other.stderr
    (entry,) = listing(env)
    assert (entry["name"], entry["state"], entry["workers"]) == (name, "running", "4/4")
    status = dask_ssh(env, "status", name)
    assert status.returncode == 0 and f"{n2}-0" in status.stdout, status.stdout
    logs = dask_ssh(env, "logs", name, "--worker", f"{n2}-0", "--lines", "100")
    assert logs.returncode == 0 and f"[{n2}-0]" in logs.stdout, logs.stdout + logs.stderr
    assert f"[{n3}-0]" not in logs.stdout
    scaled = dask_ssh(env, "scale", name, "2")  # within the hosts' slots (2 each)
    assert scaled.returncode == 0 and "2 workers" in scaled.stdout, scaled.stdout + scaled.stderr
    (entry,) = listing(env)
    assert entry["workers"] == "2/2", entry
    down = dask_ssh(env, "down", name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert testbed.python_processes(bed) == {}
    assert listing(env) == []


def test_attach_shows_the_cluster_and_ctrl_c_only_detaches(bed: testbed.Bed,
                                                            env: dict[str, str]) -> None:
    name = f"att-{uuid.uuid4().hex[:6]}"
    up = dask_ssh(env, "up", "--name", name, *credentials(bed), "--scheduler-port", "0",
                  "--dashboard-address", ":0", n1, n2)
    assert up.returncode == 0, up.stdout + up.stderr
    proc = subprocess.Popen([sys.executable, "-m", "sshdeploy.cli", "attach", name], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "Ctrl-C detaches" in line:
            break
    assert any(f"attached to {name}" in ln for ln in lines), lines
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, out + err
    assert "keeps running" in out
    (entry,) = listing(env)
    assert entry["state"] == "running"


def test_another_machine_reads_the_record_on_the_scheduler_host(
        bed: testbed.Bed, env: dict[str, str], tmp_path: Path) -> None:
    name = f"far-{uuid.uuid4().hex[:6]}"
    up = dask_ssh(env, "up", "--name", name, *credentials(bed), "--scheduler-port", "0",
                  "--dashboard-address", ":0", n1, n2)
    assert up.returncode == 0, up.stdout + up.stderr
    elsewhere = {**env, "XDG_STATE_HOME": str(tmp_path / "other-machine")}
    found = dask_ssh(elsewhere, "list", "--json", "--host", f"root@{n1}",
                     "--known-hosts", str(bed.known_hosts),
                     "--ssh-private-key", str(bed.client_key))
    assert found.returncode == 0, found.stderr
    assert [c["state"] for c in json.loads(found.stdout) if c["name"] == name] == ["running"]
    os.environ["XDG_STATE_HOME"] = elsewhere["XDG_STATE_HOME"]
    try:
        with SSHCluster.from_name(name, host=f"root@{n1}",
                                  connect_options=bed.connect_options()) as cluster:
            assert list(cluster.workers) == [f"{n2}-0"]
        cluster.shutdown()
        assert testbed.python_processes(bed) == {}
    finally:
        os.environ["XDG_STATE_HOME"] = env["XDG_STATE_HOME"]


def test_add_and_remove_hosts_of_a_named_cluster(bed: testbed.Bed, env: dict[str, str]) -> None:
    name = f"hosts-{uuid.uuid4().hex[:6]}"
    up = dask_ssh(env, "up", "--name", name, *credentials(bed), "--scheduler-port", "0",
                  "--dashboard-address", ":0", n1, n2)
    assert up.returncode == 0, up.stdout + up.stderr
    added = dask_ssh(env, "add", name, f"{n3} slots=2")
    assert added.returncode == 0, added.stdout + added.stderr
    assert f"workers started: {n3}-0, {n3}-1" in added.stdout and "3 worker(s)" in added.stdout
    spare = dask_ssh(env, "add", name, "--spare", n4)
    assert spare.returncode == 0 and "as spares" in spare.stdout, spare.stdout + spare.stderr
    assert n4 not in testbed.python_processes(bed)  # a spare: nothing started there
    status = dask_ssh(env, "status", name)
    assert status.returncode == 0, status.stderr
    rows = {line.split()[0].rpartition("@")[2].partition(":")[0]: line.split()[1:3]
            for line in status.stdout.splitlines() if line.startswith("root@")}
    # (the hosts added take the user of the first worker host: root@ on every row)
    assert rows == {n1: ["scheduler", "ok"], n2: ["workers", "ok"], n3: ["workers", "ok"],
                    n4: ["spare", "spare"]}, status.stdout
    removed = dask_ssh(env, "remove", name, n2)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert f"workers retired: {n2}-0" in removed.stdout
    # a new controller finds the hosts as they are now
    with SSHCluster.from_name(name) as cluster:
        hosts = {hp.host.hostname: hp.slots for hp in cluster.placement.worker_hosts.values()}
        assert hosts == {n3: 2, n4: 1}
        assert {hp.host.hostname for k, hp in cluster.placement.worker_hosts.items()
                if k in cluster.placement.spares} == {n4}
        assert sorted(cluster.worker_spec) == [f"{n3}-0", f"{n3}-1"]
    assert n2 not in testbed.python_processes(bed)
    down = dask_ssh(env, "down", name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert testbed.python_processes(bed) == {}
