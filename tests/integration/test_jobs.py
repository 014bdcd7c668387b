"""``dask-ssh submit / jobs / job / exec`` on the real bed (issue 27).

Each command is a real ``python -m sshdeploy.cli`` subprocess with the test's own
``XDG_STATE_HOME``; the jobs run on the scheduler's host (the first one).
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
from typing import Any

import pytest

from sshdeploy import testbed
from sshdeploy.named import flow
from sshdeploy.named.jobclient import jobs as all_jobs
from sshdeploy.named.jobclient import submit_script
from sshdeploy.named.state import StateStore

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(300)

COMPUTE = """\
import sys
from distributed import Client

client = Client()  # DASK_SCHEDULER_ADDRESS (and a TLS cluster's credentials) are set
print("workers:", len(client.scheduler_info()["workers"]), flush=True)
print("result:", client.submit(sum, range(int(sys.argv[1]))).result())
"""
FAIL = "import sys\nprint('failing now', file=sys.stderr)\nsys.exit(3)\n"
TICKS = """\
import sys, time
for i in range(int(sys.argv[1])):
    print("tick", i, flush=True)
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0.5)
print("done")
"""
#: Ignores SIGINT and SIGTERM and starts a child that does too and leaves the process group.
TRAP = """\
import signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import os, signal, time; "
                  "signal.signal(signal.SIGINT, signal.SIG_IGN); "
                  "signal.signal(signal.SIGTERM, signal.SIG_IGN); os.setsid(); time.sleep(600)",
                  sys.argv[1]])
print("child started", flush=True)
time.sleep(600)
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yield {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    store = StateStore()
    for record in store.records():
        asyncio.run(flow.stop(record, store))


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    for name, text in (("compute.py", COMPUTE), ("fail.py", FAIL), ("ticks.py", TICKS),
                       ("trap.py", TRAP)):
        (folder / name).write_text(text)
    return folder


def dask_ssh(env: dict[str, str], *args: str, timeout: float = 180
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sshdeploy.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def up(bed: testbed.Bed, env: dict[str, str], name: str, *hosts: str, extra: tuple[str, ...] = ()
       ) -> None:
    out = dask_ssh(env, "up", "--name", name, "--known-hosts", str(bed.known_hosts),
                   "--ssh-private-key", str(bed.client_key), "--ssh-username", "root",
                   "--scheduler-port", "0", "--dashboard-address", ":0", *extra, *hosts)
    assert out.returncode == 0, out.stdout + out.stderr


def jobs(env: dict[str, str], name: str) -> dict[str, dict[str, Any]]:
    out = dask_ssh(env, "jobs", name, "--json")
    assert out.returncode == 0, out.stderr
    return {j["id"]: j for j in json.loads(out.stdout)}


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


def marked(bed: testbed.Bed, marker: str) -> list[str]:
    """The processes on any bed host whose command line holds *marker*."""
    return [f"{h.name}: {cmd}" for h in bed.hosts for _pid, cmd in testbed.processes(h)
            if marker in cmd]


def test_a_script_computes_on_the_cluster_streams_and_exits_with_its_code(
        bed: testbed.Bed, env: dict[str, str], scripts: Path) -> None:
    name = f"job-{uuid.uuid4().hex[:6]}"
    up(bed, env, name, n1, n2, n3)
    done = dask_ssh(env, "submit", name, str(scripts / "compute.py"), "100")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "workers: 2\nresult: 4950\n", done.stdout + done.stderr
    assert f"job 1 of {name} succeeded" in done.stderr
    failed = dask_ssh(env, "submit", name, "--job-name", "bad", str(scripts / "fail.py"))
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert "failing now" in failed.stdout and "failed with exit code 3" in failed.stderr
    listed = jobs(env, name)
    assert [(j["status"], j["exit_status"], j["name"]) for j in listed.values()] == [
        ("succeeded", 0, ""), ("failed", 3, "bad")]
    # the work ran beside the scheduler, on its host, from the files sent there
    assert listed["1"]["cwd"].endswith(f"/{scripts.name}") and ".cache/sshdeploy/uploads/" in \
        listed["1"]["cwd"]
    unknown = dask_ssh(env, "job", "logs", name, "7")
    assert unknown.returncode == 1 and "job 7: no such job" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    # the same from Python
    job = submit_script(name, scripts / "fail.py", name="py")
    assert (job.id, job.wait(timeout=60), job.exit_code) == ("3", 3, 3)
    assert job.logs() == "failing now\n" and job.status == "failed"
    assert [(j.id, j.record.name) for j in all_jobs(name)] == [("1", ""), ("2", "bad"),
                                                              ("3", "py")]


def test_a_cluster_from_name_submits_a_script_waits_and_reads_its_logs(
        bed: testbed.Bed, env: dict[str, str], scripts: Path) -> None:
    """``cluster.submit_script`` and ``cluster.jobs()`` on ``SSHCluster.from_name``."""
    from sshdeploy import SSHCluster

    name = f"jpy-{uuid.uuid4().hex[:6]}"
    up(bed, env, name, n1, n2)
    cluster = SSHCluster.from_name(name)
    try:
        job = cluster.submit_script(scripts / "compute.py", ["10"], name="sum")
        assert job.id == "1" and job.wait(timeout=120) == 0 and job.exit_code == 0
        assert job.logs() == "workers: 1\nresult: 45\n"
        failing = cluster.submit_script(scripts / "fail.py")
        assert failing.wait(timeout=60) == 3 and failing.logs() == "failing now\n"
        assert [(j.id, j.record.name, j.status) for j in cluster.jobs()] == [
            ("1", "sum", "succeeded"), ("2", "", "failed")]
    finally:
        cluster.close()  # detaches: the cluster runs on (the fixture stops it)


def test_a_job_outlives_its_submitter_and_its_logs_stay_on_the_scheduler_host(
        bed: testbed.Bed, env: dict[str, str], scripts: Path) -> None:
    name = f"jlog-{uuid.uuid4().hex[:6]}"
    up(bed, env, name, n1, n2)
    detached = dask_ssh(env, "submit", name, "--detach", "--job-name", "bg",
                        str(scripts / "ticks.py"), "4", "2")
    assert detached.returncode == 0 and detached.stdout == "1\n", detached.stderr
    assert f"dask-ssh job logs {name} 1 -f" in detached.stderr
    assert jobs(env, name)["1"]["status"] == "running"
    submitter = subprocess.Popen(
        [sys.executable, "-m", "sshdeploy.cli", "submit", name, str(scripts / "ticks.py"), "12"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert submitter.stdout is not None
    assert submitter.stdout.readline() == b"tick 0\n"
    submitter.kill()  # SIGKILL mid-job: no goodbye to anyone
    submitter.wait(10)
    assert jobs(env, name)["2"]["status"] == "running"
    follow = dask_ssh(env, "job", "logs", name, "2", "--follow")  # a new process, later
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout == "".join(f"tick {i}\n" for i in range(12)) + "done\n"
    assert f"job 2 of {name} succeeded" in follow.stderr
    waited = dask_ssh(env, "job", "wait", name, "bg")
    assert waited.returncode == 0 and "succeeded" in waited.stderr, waited.stderr
    listed = jobs(env, name)
    assert [j["status"] for j in listed.values()] == ["succeeded", "succeeded"]
    logs = dask_ssh(env, "job", "logs", name, "bg")
    assert logs.stdout == "tick 0\ntick 1\ntick 2\ntick 3\ndone\n", logs.stderr
    # Ctrl-C only detaches: the job runs on, and says how to follow it
    submitter = subprocess.Popen(
        [sys.executable, "-m", "sshdeploy.cli", "submit", name, str(scripts / "ticks.py"), "6"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert submitter.stdout is not None and submitter.stdout.readline() == b"tick 0\n"
    submitter.send_signal(signal.SIGINT)
    _out, err = submitter.communicate(timeout=30)
    assert submitter.returncode == 130, err
    assert b"keeps running" in err and f"dask-ssh job stop {name} 3".encode() in err
    waited = dask_ssh(env, "job", "wait", name, "3")
    assert waited.returncode == 0, waited.stderr


def test_stop_leaves_nothing_of_the_job_and_down_stops_the_running_ones(
        bed: testbed.Bed, env: dict[str, str], scripts: Path) -> None:
    name = f"jstop-{uuid.uuid4().hex[:6]}"
    marker = f"jobchild-{uuid.uuid4().hex[:8]}"
    up(bed, env, name, n1, n2)
    started = dask_ssh(env, "submit", name, "-d", str(scripts / "trap.py"), marker)
    assert started.returncode == 0, started.stderr
    wait_for(lambda: len(marked(bed, marker)) == 2, 30, "the job and its child")
    assert all(p.startswith(f"{n1}: ") for p in marked(bed, marker))  # beside the scheduler
    stopped = dask_ssh(env, "job", "stop", name, "1", "--grace", "1")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "nothing of it is left" in stopped.stdout
    assert marked(bed, marker) == []  # the child that left the group and ignores TERM too
    job = jobs(env, name)["1"]
    assert (job["status"], job["exit_status"]) == ("stopped", 137)
    assert job["reason"].startswith("stopped by ")
    again = dask_ssh(env, "job", "stop", name, "1")
    assert again.returncode == 0 and "was not running: stopped" in again.stdout
    # down: the running jobs first, then the cluster; nothing left on any host
    for _ in range(2):
        assert dask_ssh(env, "submit", name, "-d", str(scripts / "trap.py"),
                        marker).returncode == 0
    wait_for(lambda: len(marked(bed, marker)) == 4, 30, "two jobs and their children")
    down = dask_ssh(env, "down", name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert (f"{name}: stopped 2 running job(s) first: 2 (trap.py {marker}), "
            f"3 (trap.py {marker})") in down.stdout, down.stdout  # said, not only logged
    assert marked(bed, marker) == [] and testbed.python_processes(bed) == {}
    assert not testbed.host_path(bed.hosts[0], f"/root/.local/state/sshdeploy/clusters/"
                                                f"{name}").exists()
    gone = dask_ssh(env, "submit", name, str(scripts / "fail.py"))
    assert gone.returncode == 1 and f"cluster '{name}' is unknown" in gone.stderr


def test_a_running_job_keeps_an_idle_cluster_up_and_ends_with_its_lifetime(
        bed: testbed.Bed, env: dict[str, str], scripts: Path) -> None:
    name = f"jidle-{uuid.uuid4().hex[:6]}"
    # The idle timeout leaves room for a loaded machine between two commands
    up(bed, env, name, n1, n2, extra=("--idle-timeout", "20s", "--max-lifetime", "75s"))
    short = dask_ssh(env, "submit", name, str(scripts / "ticks.py"), "30", "1")  # no Client
    assert short.returncode == 0, short.stderr  # 30 s, well past the idle timeout
    long = dask_ssh(env, "submit", name, "-d", str(scripts / "ticks.py"), "100", "1")
    assert long.returncode == 0, long.stderr  # the cluster was still up for it
    waited = dask_ssh(env, "job", "wait", name, "2", timeout=90)
    assert waited.returncode == 130, waited.stderr  # SIGINT, by the end of the cluster
    job = jobs(env, name)["2"]
    assert job["status"] == "stopped" and "maximum lifetime" in job["reason"], job


def test_a_job_has_the_clusters_environment_and_a_tls_clusters_credentials(
        bed: testbed.Bed, env: dict[str, str], scripts: Path, tmp_path: Path) -> None:
    name = f"jtls-{uuid.uuid4().hex[:6]}"
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "helpers.py").write_text("WHERE = 'uploaded with the cluster'\n")
    (scripts / "uses.py").write_text(
        "import os, helpers\n"
        "print(helpers.WHERE, os.environ['FROM_SETUP'], os.environ['OF_CLUSTER'],\n"
        "      os.environ['OF_JOB'])\n")
    up(bed, env, name, n1, n2, extra=("--tls", "--upload", str(shared / "helpers.py"),
                                      "--setup", "export FROM_SETUP=setup",
                                      "--env", "OF_CLUSTER=cluster"))
    done = dask_ssh(env, "submit", name, str(scripts / "compute.py"), "10")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "workers: 1\nresult: 45\n"  # Client() over TLS, no arguments
    # the credentials were the job's only while it ran
    jobdir = testbed.host_path(bed.hosts[0], f"/root/.local/state/sshdeploy/clusters/{name}/"
                                             "jobs/1")
    assert sorted(p.name for p in jobdir.iterdir()) == ["job.json", "output.log"]
    # the scheduler's environment: its setup, its uploads on PYTHONPATH, its env; then the job's
    done = dask_ssh(env, "submit", name, "--env", "OF_JOB=job", str(scripts / "uses.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "uploaded with the cluster setup cluster job\n"


def test_exec_runs_on_every_host_and_fails_when_one_host_does(
        bed: testbed.Bed, env: dict[str, str]) -> None:
    name = f"jexec-{uuid.uuid4().hex[:6]}"
    up(bed, env, name, n1, n2, n3, n4)
    out = dask_ssh(env, "exec", name, "--", f"echo $(hostname); test $(hostname) != {n3}")
    assert out.returncode == 1, out.stdout + out.stderr
    assert sorted(out.stdout.splitlines()) == sorted(f"{h}: {h}" for h in (n1, n2, n3, n4))
    table = {line.split()[0]: line.split()[1] for line in out.stderr.splitlines()
             if line.startswith("root@")}
    assert table == {f"root@{n1}": "0", f"root@{n2}": "0", f"root@{n3}": "1",
                     f"root@{n4}": "0"}, out.stderr
    some = dask_ssh(env, "exec", name, "--hosts", f"{n2},{n4}", "echo", "$DASK_SCHEDULER_ADDRESS")
    assert some.returncode == 0, some.stderr
    assert sorted(ln.split(": ")[0] for ln in some.stdout.splitlines()) == [n2, n4]
    assert all(ln.split(": ")[1].startswith("tcp://") for ln in some.stdout.splitlines())
    slow = dask_ssh(env, "exec", name, "--timeout", "1s", "--", "sleep", "60")
    assert slow.returncode == 1 and slow.stderr.count("timeout") == 4, slow.stderr
    assert "sleep 60" not in " ".join(marked(bed, "sleep"))
