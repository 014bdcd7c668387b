"""No orphan, no lie (issue 26, must-hold 1), without a network.

The mark every process of a named cluster carries and the host operation
that finds and stops it; agents that run on only once armed and leave no
file when they never were; files an armed agent writes again; what ``down``
and ``clean`` say and exit with when a host could not be verified stopped;
``from_name`` of a cluster that is gone. The same on the real bed:
``tests/integration/test_named_orphans.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sshdeploy.arguments import ClusterArgs
from sshdeploy.bootstrap import (
    EVENT_MARK,
    MARK_ENV,
    AgentSpec,
    build_command,
    cluster_mark,
    encode_message,
    stdin_preamble,
)
from sshdeploy.cluster.kept import KeptCluster
from sshdeploy.errors import ClusterNotFoundError, ClusterStopError, HostError
from sshdeploy.named import flow
from sshdeploy.named.policy import KeepPolicy
from sshdeploy.named.state import ClusterRecord, StateStore
from sshdeploy.named.status import ClusterStatus
from sshdeploy.plan import plan_cluster
from sshdeploy.remote.agent.keep import Keep, keep_dir, keep_op
from sshdeploy.remote.agent.marks import marked

pytestmark = pytest.mark.timeout(60)

#: The cluster name of the tests that look for marked processes: this run's own, so that
#: two test runs on one machine (CI's legs side by side) never find each other's.
DEMO = f"demo{os.getpid()}"


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s")
        time.sleep(0.05)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This host's state directory (``XDG_STATE_HOME``), for the host ops and the agents."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def sleepers() -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Start ``sleep`` processes carrying a mark; teardown kills what is left."""
    started: list[subprocess.Popen[bytes]] = []

    def start(mark: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["sleep", "60"], env={**os.environ, MARK_ENV: mark})
        started.append(proc)
        name = mark.partition(":")[0]
        # until it execs, /proc shows the environment it was forked with
        wait_until(lambda: proc.pid in {p["pid"] for p in marked(name)}, 10, "sleep to exec")
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait(10)


# ------------------------------------------------------------------ the mark

def test_the_mark_is_exported_first_and_names_the_cluster_and_its_controller() -> None:
    keep = KeepPolicy("lab").spec()
    mark = cluster_mark(keep)
    assert mark == f"lab:{keep['session']}" and len(keep["session"]) == 8
    command = build_command("python3", setup="module load x", login_shell=True, mark=mark)
    assert command.splitlines()[0] == f"export {MARK_ENV}={mark}"
    # the dry run shows the very command: a named cluster's carries its mark
    named = ClusterArgs(["a", "b"], name="lab", shutdown_on_close=False)
    plans = plan_cluster(named).remote_plans()
    assert all(p.command.startswith(f"export {MARK_ENV}=lab:") for p in plans)
    assert MARK_ENV not in plan_cluster(ClusterArgs(["a", "b"])).remote_plans()[0].command


def test_a_process_that_carries_the_mark_is_found_and_stopped_with_no_record(
        home: Path, sleepers: Callable[[str], subprocess.Popen[bytes]]) -> None:
    ours = sleepers(f"{DEMO}:1f2e3d4c")
    other = sleepers(f"{DEMO}-2:1f2e3d4c")  # a name that starts like ours is another cluster
    assert [p["pid"] for p in marked(DEMO)] == [ours.pid]
    answer = keep_op("kill", DEMO, grace=2.0)
    assert [p["pid"] for p in answer["found"]] == [ours.pid] and answer["recorded"] == 0
    assert answer["marked"] == []
    assert ours.wait(10) != 0 and other.poll() is None
    assert flow._after_kill(answer).startswith("stopped (1 process(es) found by their mark")


def test_a_probe_shows_the_marked_processes_and_remove_waits_for_them(
        home: Path, sleepers: Callable[[str], subprocess.Popen[bytes]]) -> None:
    keep_op("write", DEMO, {"name": DEMO})
    proc = sleepers(f"{DEMO}:1f2e3d4c")
    started = time.monotonic()
    answer = keep_op("probe", DEMO)
    assert [p["pid"] for p in answer["marked"]] == [proc.pid]
    assert time.monotonic() - started >= 2.5  # it gave a record the time to come back
    keep_op("remove", DEMO, {"owner": True})
    assert Path(keep_dir(DEMO), "cluster.json").exists()  # something of it still runs
    keep_op("kill", DEMO, grace=2.0)
    keep_op("remove", DEMO, {"owner": True})
    assert not Path(keep_dir(DEMO)).exists()


# ------------------------------------------------------------------ arming, files

def test_an_agent_never_armed_leaves_no_file(home: Path) -> None:
    for role in ("scheduler", "workers"):
        keep = Keep({"name": DEMO}, role, f"{role} n1")
        keep.begin(f"{role} n1")
        keep.log([("n1", "stderr", "a line")])
        assert Path(keep.record).exists() and Path(keep.log_path).exists()
        keep.end()
        assert not Path(keep_dir(DEMO)).exists(), role
    keep_op("write", DEMO, {"name": DEMO})  # recorded, then killed before it was armed
    keep = Keep({"name": DEMO}, "scheduler", "scheduler n1")
    keep.begin("scheduler n1")
    keep.end()
    assert sorted(os.listdir(keep_dir(DEMO))) == ["cluster.json"]  # `clean` finds it


def test_an_armed_agent_writes_its_removed_files_again(home: Path) -> None:
    keep_op("write", DEMO, {"name": DEMO, "spec": {"wanted": 2}})
    keep = Keep({"name": DEMO, "armed": False}, "scheduler", "scheduler n1")
    keep.begin("scheduler n1")
    assert keep.arm() and not keep.arm()
    shutil.rmtree(keep_dir(DEMO))
    assert sorted(Path(p).name for p in keep.restore()) == [f"{os.getpid()}.json",
                                                            "cluster.json"]
    assert json.loads(Path(keep_dir(DEMO), "cluster.json").read_text())["spec"] == {
        "wanted": 2}
    keep_op("write", DEMO, {"name": DEMO, "spec": {"wanted": 5}})  # a later scale
    assert keep.restore() == []
    shutil.rmtree(keep_dir(DEMO))
    keep.restore()
    assert json.loads(Path(keep_dir(DEMO), "cluster.json").read_text())["spec"] == {
        "wanted": 5}
    keep.end()  # armed: says why it ended, keeps the record for `list` and `clean`
    assert sorted(os.listdir(keep_dir(DEMO))) == ["cluster.json", "end.json", "hosts"]


class MarkedAgent:
    """A real agent started as its remote command would be, with its mark."""

    def __init__(self, spec: AgentSpec, mark: str) -> None:
        self.proc = subprocess.Popen(
            ["sh", "-c", build_command(sys.executable, mark=mark)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        self.hello = threading.Event()
        self.armed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.proc.stdin is not None
        self.proc.stdin.write(stdin_preamble(spec))
        self.proc.stdin.flush()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(EVENT_MARK):
                ev = json.loads(line[len(EVENT_MARK):]).get("ev")
                {"hello": self.hello, "armed": self.armed}.get(ev, threading.Event()).set()

    def send_and_close(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)


@pytest.fixture
def marked_agents() -> Iterator[Callable[[AgentSpec, str], MarkedAgent]]:
    started: list[MarkedAgent] = []

    def start(spec: AgentSpec, mark: str) -> MarkedAgent:
        agent = MarkedAgent(spec, mark)
        started.append(agent)
        assert agent.hello.wait(40), "no hello from the agent"
        return agent

    yield start
    for agent in started:
        agent.kill()


def test_a_kept_agent_stops_with_its_controller_until_armed(
        home: Path, marked_agents: Callable[[AgentSpec, str], MarkedAgent]) -> None:
    keep = {"name": DEMO, "death_timeout": 60}
    agent = marked_agents(AgentSpec(role="scheduler", label="scheduler n1", keep=keep),
                          f"{DEMO}:aaaa0001")
    agent.send_and_close(b"")
    assert agent.proc.wait(15) == 3  # EOF: the emergency exit of a classic agent
    assert not agent.armed.is_set()
    assert not Path(keep_dir(DEMO)).exists()  # and no file of it left


def test_an_armed_agent_runs_on_and_is_still_found_and_stopped_by_its_mark(
        home: Path, marked_agents: Callable[[AgentSpec, str], MarkedAgent]) -> None:
    keep = {"name": DEMO, "death_timeout": 60}
    agent = marked_agents(AgentSpec(role="scheduler", label="scheduler n1", keep=keep),
                          f"{DEMO}:aaaa0002")
    agent.send_and_close(encode_message("arm"))  # armed, then EOF at once: in that order
    assert agent.armed.wait(15), "the agent did not say it is armed"
    logs = Path(keep_dir(DEMO), "hosts")

    def said(text: str) -> bool:
        return any(text in p.read_text() for p in logs.rglob("*.log"))

    wait_until(lambda: said("running on without a controller"), 15, "the agent to run on")
    assert agent.proc.poll() is None
    shutil.rmtree(keep_dir(DEMO))  # a tmp cleaner, a re-imaged home
    wait_until(lambda: logs.exists() and said("written again"), 15, "its record back")
    shutil.rmtree(keep_dir(DEMO))
    answer = keep_op("kill", DEMO, grace=3.0)  # whatever its files say now
    assert agent.proc.pid in {p["pid"] for p in answer["found"]} and answer["marked"] == []
    assert agent.proc.wait(10) != 0


# ------------------------------------------------------------------ stop, down, clean

N1, N2, N3 = "root@n1:22", "root@n2:22", "root@n3:22"


def _record(**kw: Any) -> ClusterRecord:
    spec = {"hosts": [{"hostname": h, "user": "root", "port": 22} for h in ("n1", "n2", "n3")],
            "wanted": 2}
    return ClusterRecord("demo", N1, "tcp://10.0.0.1:8786", spec=spec, **kw)


def _fake_hosts(monkeypatch: pytest.MonkeyPatch, answers: dict[str, Any]) -> list[str]:
    """Host ops answer from *answers* (hostname -> answer or exception); returns the ops run."""
    ran: list[str] = []

    async def on_hosts(pool: Any, hosts: Any, name: str, op: str, timeout: float = 30.0
                       ) -> dict[Any, Any]:
        ran.extend(f"{op} {h.hostname}" for h in hosts)
        return {h: answers[h.hostname] for h in hosts}

    async def host_op(pool: Any, host: Any, launch: Any, name: str, op: str, data: Any = None,
                      timeout: float = 30.0) -> dict[str, Any]:
        ran.append(f"{op} {host.hostname}")
        return {}

    monkeypatch.setattr(flow, "on_hosts", on_hosts)
    monkeypatch.setattr(flow, "host_op", host_op)
    return ran


def _clean(workers: list[str] | None = None) -> dict[str, Any]:
    return {"agents": [], "marked": [], "found": [], "recorded": 1,
            "status": {"workers": [{"name": w} for w in workers or []]}}


def test_stop_forgets_the_cluster_only_when_every_host_is_verified_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore(tmp_path)
    lost = HostError(host=N3, role="agent", what="cannot kill", cause="timed out")
    ran = _fake_hosts(monkeypatch, {"n1": _clean(["n2-0"]), "n2": _clean(), "n3": lost})
    store.save(_record())
    report = asyncio.run(flow.stop(_record(), store))
    assert flow.left(report) == {N3: "unreachable: [root@n3:22] agent: cannot kill: timed out."}
    assert store.load("demo") is not None  # kept: n3 may still run its workers
    assert "remove n3" not in ran  # no second wait for a host that did not answer
    # n3 was left out at the start and the scheduler never had a worker there
    report = asyncio.run(flow.stop(_record(left_out=[N3]), store))
    assert flow.left(report) == {} and report[N3].startswith("stopped (left out at the start")
    assert store.load("demo") is None
    # ... unless a later scale put one there
    _fake_hosts(monkeypatch, {"n1": _clean(["n3-0"]), "n2": _clean(), "n3": lost})
    store.save(_record(left_out=[N3]))
    assert list(flow.left(asyncio.run(flow.stop(_record(left_out=[N3]), store)))) == [N3]


def test_a_process_that_survives_sigkill_is_named_and_the_record_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore(tmp_path)
    stuck = {**_clean(), "marked": [{"pid": 4242, "cmd": "python -u -c worker"}]}
    _fake_hosts(monkeypatch, {"n1": _clean(), "n2": stuck, "n3": _clean()})
    store.save(_record())
    report = asyncio.run(flow.stop(_record(), store))
    assert flow.left(report) == {
        N2: "1 process(es) still running after SIGKILL: 4242 (python -u -c worker)"}
    assert store.load("demo") is not None


def _fake_stop(monkeypatch: pytest.MonkeyPatch, report: dict[str, str]) -> None:
    async def stop(record: ClusterRecord, store: StateStore, grace: float = 5.0,
                   on_jobs: Any = None) -> dict[str, str]:
        if not flow.left(report):
            store.remove(record.name)
        return dict(report)

    monkeypatch.setattr(flow, "stop", stop)


def test_down_succeeds_only_when_verified_and_else_says_what_is_left(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sshdeploy.cli.named import down_command

    store = StateStore()
    store.save(_record())
    _fake_stop(monkeypatch, {N1: "stopped", N2: "stopped", N3: "unreachable: timed out"})
    result = CliRunner().invoke(down_command, ["demo"])
    assert result.exit_code == 1, result.output
    assert f"demo: {N3}: unreachable: timed out" in result.stdout
    assert "cluster 'demo' was not verified stopped on 1 of 3 host(s)" in result.stderr
    assert "its record is kept" in result.stderr and "Its scheduler is stopped" in result.stderr
    assert store.load("demo") is not None and "Traceback" not in result.output
    _fake_stop(monkeypatch, {N1: "unreachable: timed out", N2: "stopped", N3: "stopped"})
    result = CliRunner().invoke(down_command, ["demo"])
    assert result.exit_code == 1 and "the cluster may still run" in result.stderr
    _fake_stop(monkeypatch, {N1: "stopped", N2: "stopped", N3: "stopped"})
    result = CliRunner().invoke(down_command, ["demo"])
    assert result.exit_code == 0 and "demo: stopped on 3 of 3 hosts" in result.stdout
    assert store.load("demo") is None
    result = CliRunner().invoke(down_command, ["demo"])  # no record here: where to look
    assert result.exit_code == 1
    assert "`dask-ssh down demo --host HEAD` stops it" in result.stderr.replace("\n", " ")


def test_down_says_on_the_terminal_which_running_jobs_it_stopped_first(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27: ``down`` stops the running jobs first and says so, naming them."""
    from sshdeploy.cli.named import down_command

    store = StateStore()
    store.save(_record())
    ran = _fake_hosts(monkeypatch, {"n1": _clean(), "n2": _clean(), "n3": _clean()})

    async def stop_jobs(pool: Any, host: Any, launch: Any, name: str) -> list[str]:
        ran.append(f"stop-jobs {host.hostname}")
        return ["2 (long: train.py 600)", "3 (a.py)"]

    monkeypatch.setattr(flow, "stop_jobs", stop_jobs)
    result = CliRunner().invoke(down_command, ["demo"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "demo: stopped 2 running job(s) first: 2 (long: train.py 600), 3 (a.py)")
    assert "demo: stopped on 3 of 3 hosts" in result.stdout
    assert ran[0] == "stop-jobs n1"  # before anything else of the cluster
    # none running: nothing said about jobs
    store.save(_record())
    monkeypatch.setattr(flow, "stop_jobs", lambda *a: asyncio.sleep(0, []))
    result = CliRunner().invoke(down_command, ["demo"])
    assert result.exit_code == 0 and "job" not in result.stdout, result.output


def test_clean_says_removed_only_for_what_it_removed(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sshdeploy.cli.named import clean_command

    store = StateStore()
    store.save(_record())

    async def probe_all(records: list[ClusterRecord]) -> list[ClusterStatus]:
        return [ClusterStatus(r.name, "gone", r.scheduler_address) for r in records]

    monkeypatch.setattr(flow, "probe_all", probe_all)
    _fake_stop(monkeypatch, {N1: "stopped", N2: "stopped", N3: "unreachable: timed out"})
    result = CliRunner().invoke(clean_command, [])
    assert result.exit_code == 1 and "removed" not in result.stdout, result.output
    assert "cluster 'demo' was not verified stopped" in result.stderr
    assert store.load("demo") is not None
    _fake_stop(monkeypatch, {N1: "stopped", N2: "stopped", N3: "stopped"})
    result = CliRunner().invoke(clean_command, [])
    assert result.exit_code == 0 and "removed: demo (gone)" in result.stdout
    assert store.load("demo") is None


def test_a_cluster_stop_error_says_whether_it_may_still_run() -> None:
    err = ClusterStopError(name="lab", left={N3: "unreachable: timed out"}, hosts=3,
                           scheduler_host=N1)
    assert str(err).startswith("cluster 'lab' was not verified stopped on 1 of 3 host(s) "
                               f"({N3}: unreachable: timed out); its record is kept.")
    assert "death_timeout" in str(err) and "dask-ssh down lab" in str(err)
    assert "may still run" in str(ClusterStopError(name="lab", left={N1: "x"},
                                                   scheduler_host=N1))


# ------------------------------------------------------------------ from_name

def test_from_name_reattaches_and_never_starts_a_cluster_that_is_gone(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_cluster(ClusterArgs(["n1", "n2"], name="demo", shutdown_on_close=False))
    assert plan.keep is not None
    store = StateStore()
    assert not KeptCluster(plan.keep, {}, store).must_run
    with flow.reattaching():
        kept = KeptCluster(plan.keep, {}, store)  # from_name: read once, when made
    assert kept.must_run
    store.save(_record())

    async def probe(record: ClusterRecord, pool: Any) -> ClusterStatus:
        return ClusterStatus(record.name, "gone", record.scheduler_address,
                             reason="its scheduler no longer runs")

    stopped: list[str] = []

    async def stop(record: ClusterRecord, store: StateStore, grace: float = 5.0
                   ) -> dict[str, str]:
        stopped.append(record.name)
        return {}

    monkeypatch.setattr(flow, "probe", probe)
    monkeypatch.setattr(flow, "stop", stop)
    settings = plan.settings
    with pytest.raises(ClusterNotFoundError) as info:
        asyncio.run(flow.existing("demo", {}, settings, store, must_run=True))
    text = str(info.value)
    assert text.startswith("cluster 'demo' is gone: its scheduler no longer runs. Nothing "
                           "was started")
    assert "from_name('demo', start_if_gone=True)" in text and "dask-ssh clean" in text
    assert stopped == [] and store.load("demo") is not None  # still listed: `clean` forgets
    assert asyncio.run(flow.existing("demo", {}, settings, store)) is None  # asked to start
    assert stopped == ["demo"]
