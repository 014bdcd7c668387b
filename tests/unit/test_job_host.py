"""A named cluster's jobs on its scheduler host (issue 27), run for real on this machine: the
supervisor, records, logs and stops of :mod:`sshdeploy.remote.agent.jobs` against a cluster
directory of the test's own, whose scheduler agent is a ``sleep``."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sshdeploy.named.jobs import JobRecord
from sshdeploy.remote.agent import jobs as agent_jobs

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Path]:
    """A named cluster's directory whose scheduler agent (a ``sleep``) runs on this host."""
    directory = tmp_path / "lab"
    agents = directory / "hosts" / (platform.node() or "localhost") / "agents"
    agents.mkdir(parents=True)
    sched = subprocess.Popen(["sleep", "300"])
    agent_jobs.write_json(str(agents / "1.json"), {
        "pid": sched.pid, "start": agent_jobs.started_at(sched.pid), "role": "scheduler"})
    agent_jobs.write_json(str(directory / "cluster.json"), {
        "scheduler_address": "tcp://10.0.0.1:8786", "spec": {"env": {"FROM_CLUSTER": "1"}}})
    yield directory
    for rec in agent_jobs.list_jobs(str(directory)):  # nothing left behind by a failed test
        if rec.get("alive") and rec.get("pid"):
            for pid in [*agent_jobs.descendants(int(rec["pid"])), int(rec["pid"])]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
    sched.kill()
    sched.wait()


def op(directory: Path, name: str, data: dict[str, Any] | None = None) -> tuple[dict[str, Any],
                                                                               list[Any]]:
    """Run a job operation as the agent runs it: in a process of its own (it may fork).

    Returns its answer and the events it wrote before it.
    """
    code = ("import json, sys; from sshdeploy.remote.agent.jobs import job_op; "
            "print(json.dumps({'ev': 'answer', **job_op(sys.argv[1], sys.argv[2], "
            "json.loads(sys.argv[3]))}))")
    out = subprocess.run([sys.executable, "-c", code, name, str(directory),
                          json.dumps(data or {})], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    events = []
    for line in out.stdout.splitlines():
        events.append(json.loads(line.split(b"\x1f", 1)[-1]) if b"\x1f" in line else
                      json.loads(line))
    return events[-1], events[:-1]


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def alive_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmd and agent_jobs.alive(int(entry), None):
                found.append(int(entry))
    return found


def test_a_job_runs_with_the_clusters_environment_and_its_log_and_exit_code_stay(
        cluster: Path, tmp_path: Path) -> None:
    script = write(tmp_path, "job.py", "import os, sys\n"
                   "env = os.environ\n"
                   "print(os.getcwd(), env['DASK_SCHEDULER_ADDRESS'], env['FROM_CLUSTER'],\n"
                   "      env['MINE'], env['SSHDEPLOY_JOB_ID'])\n"
                   "print('to stderr', file=sys.stderr)\n"
                   "sys.exit(3)\n")
    answer, _ = op(cluster, "job-submit", {"argv": [script], "python": True,
                                           "cwd": os.path.relpath(tmp_path, Path.home()),
                                           "env": {"MINE": "x"}, "who": "ann@lap",
                                           "name": "first"})
    job = JobRecord.from_json(answer["job"])
    assert (job.id, job.name, job.who) == ("1", "first", "ann@lap")
    answer, events = op(cluster, "job-follow", {"job": "first", "follow": True})
    job = JobRecord.from_json(answer["job"])
    assert (job.status, job.exit_status()) == ("failed", 3)
    text = "".join(e["data"] for e in events if e.get("ev") == "output")
    assert text == f"{tmp_path} tcp://10.0.0.1:8786 1 x 1\nto stderr\n"
    assert Path(job.log).read_text() == text  # kept on the host, for later readers
    assert oct(Path(job.log).stat().st_mode & 0o777) == "0o600"
    again, _ = op(cluster, "job-submit", {"argv": [script], "python": True, "cwd": ""})
    assert again["job"]["id"] == "2"  # ids follow each other


def test_stop_ends_the_whole_job_children_that_ignore_signals_and_leave_the_group_too(
        cluster: Path, tmp_path: Path) -> None:
    marker = f"jobchild-{os.getpid()}-{time.monotonic_ns()}"
    script = write(tmp_path, "trap.py", f"""
import os, signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import os, signal, time; "
                  "signal.signal(signal.SIGINT, signal.SIG_IGN); "
                  "signal.signal(signal.SIGTERM, signal.SIG_IGN); os.setsid(); "
                  "time.sleep(300)", "{marker}"])
print("ready", flush=True)
time.sleep(300)
""")
    answer, _ = op(cluster, "job-submit", {"argv": [script, marker], "python": True,
                                           "cwd": ""})
    job_id = answer["job"]["id"]
    deadline = time.monotonic() + 20
    while len(alive_with(marker)) < 2:  # the job and its child
        assert time.monotonic() < deadline, "the job did not start its child"
        time.sleep(0.05)
    started = time.monotonic()
    answer, _ = op(cluster, "job-stop", {"job": job_id, "grace": 0.5, "by": "ann@lap"})
    job = JobRecord.from_json(answer["job"])
    assert alive_with(marker) == []
    assert time.monotonic() - started < 15
    assert (job.status, job.reason, job.exit_status()) == ("stopped", "stopped by ann@lap", 137)
    answer, _ = op(cluster, "job-stop", {"job": job_id})
    assert answer["was"] == "stopped"  # a second stop says how it ended
    answer, _ = op(cluster, "job-stop", {"job": "99"})
    assert answer == {"ev": "answer", "error": "unknown-job", "job": "99", "known": [job_id]}


def test_a_job_ends_at_its_timeout_and_when_its_cluster_stops(cluster: Path,
                                                                tmp_path: Path) -> None:
    script = write(tmp_path, "sleepy.py", "import time\ntime.sleep(300)\n")
    answer, _ = op(cluster, "job-submit", {"argv": [script], "python": True, "cwd": "",
                                           "timeout": 1})
    answer, _ = op(cluster, "job-follow", {"job": answer["job"]["id"], "follow": True})
    job = JobRecord.from_json(answer["job"])
    assert (job.status, job.reason) == ("stopped", "timed out after 1 s")
    answer, _ = op(cluster, "job-submit", {"argv": [script], "python": True, "cwd": ""})
    assert agent_jobs.jobs_running(str(cluster))  # activity for the idle timeout
    agent_jobs.write_json(str(cluster / "end.json"), {"reason": "idle timeout: no tasks"})
    sched = agent_jobs.scheduler_agent(str(cluster))
    assert sched is not None
    os.kill(int(sched["pid"]), signal.SIGKILL)  # the scheduler's agent is gone
    answer, _ = op(cluster, "job-follow", {"job": answer["job"]["id"], "follow": True})
    job = JobRecord.from_json(answer["job"])
    assert (job.status, job.reason) == ("stopped", "the cluster stopped (idle timeout: no "
                                        "tasks)")
    assert not agent_jobs.jobs_running(str(cluster))
    answer, _ = op(cluster, "job-submit", {"argv": [script], "python": True, "cwd": ""})
    assert answer == {"ev": "answer", "error": "not-running",
                      "end": {"reason": "idle timeout: no tasks"}}


def test_a_job_whose_supervisor_is_killed_is_lost_and_a_missing_program_fails(
        cluster: Path, tmp_path: Path) -> None:
    script = write(tmp_path, "sleepy.py", "import time\ntime.sleep(300)\n")
    answer, _ = op(cluster, "job-submit", {"argv": [script], "python": True, "cwd": ""})
    rec = answer["job"]
    for pid in [*agent_jobs.descendants(int(rec["pid"])), int(rec["pid"])]:
        os.kill(pid, signal.SIGKILL)  # a reboot, as far as the record can tell
    deadline = time.monotonic() + 10
    while agent_jobs.alive(rec["pid"], rec["start"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    answer, _ = op(cluster, "job-list")
    assert [JobRecord.from_json(j).status for j in answer["jobs"]] == ["lost"]
    answer, _ = op(cluster, "job-submit", {"argv": [str(tmp_path / "no-such-program")],
                                           "cwd": ""})
    job = JobRecord.from_json(answer["job"])
    assert (job.status, job.exit_status()) == ("failed", 127) and "cannot start" in job.reason


def test_stopping_everything_removes_the_jobs_and_their_uploads(
        cluster: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    uploads = home / ".cache" / "sshdeploy" / "uploads"
    for name in ("job-lab.1234", "job-lab-2.1234", "named-lab"):
        (uploads / name).mkdir(parents=True)
    script = write(tmp_path, "sleepy.py", "import time\ntime.sleep(300)\n")
    answer, _ = op(cluster, "job-submit", {"argv": [script], "python": True, "cwd": ""})
    monkeypatch.setenv("HOME", str(home))
    answer, _ = op(cluster, "job-stop-all", {"grace": 0.5, "uploads":
                                             ".cache/sshdeploy/uploads/job-lab."})
    assert answer["stopped"] == ["1"]
    assert not (cluster / "jobs").exists()
    assert sorted(p.name for p in uploads.iterdir()) == ["job-lab-2.1234", "named-lab"]


def test_the_log_reader_follows_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / agent_jobs.JOB_LOG
    log.write_bytes(b"old part\n")
    reader = agent_jobs.LogReader(str(tmp_path))
    assert reader.read() == b"old part\n"
    with open(log, "ab") as f:
        f.write(b"more\n")
    os.replace(log, str(log) + ".1")  # rotated while read
    log.write_bytes(b"new part\n")
    assert reader.read() + reader.read() + reader.read() == b"more\nnew part\n"
    assert agent_jobs.LogReader(str(tmp_path)).read(1 << 20) == b"old part\nmore\n"
