"""The version gate of a default start: on what the agents say as they start (issue 29).

No remote Python of its own: every agent, asked by its spec (``describe``),
says what its host is (a ``described`` event, read from the packages' metadata)
before it imports anything; the gate waits for every host's first word, then
compares, and the scheduler is created only once it passed (the bed test
``tests/integration/test_gate_first.py`` shows no scheduler exists on a mismatch).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from sshdeploy.bootstrap import (
    EVENT_MARK,
    AgentSpec,
    Describe,
    Launch,
    build_command,
    stdin_preamble,
)
from sshdeploy.env import prestart
from sshdeploy.env.gate import GPU_STACK_DISTRIBUTIONS, local_description
from sshdeploy.env.prestart import PreStart
from sshdeploy.env.stageplan import plan_stage
from sshdeploy.errors import ConnectError, EnvironmentMismatchError
from sshdeploy.hostfile import parse_host
from sshdeploy.hosts import Host
from sshdeploy.logs import LogBook
from sshdeploy.settings import Settings
from sshdeploy.ssh.channel import AgentChannel

pytestmark = pytest.mark.timeout(60)


class _Pool:
    """What the gate asks of the pool: how a host was reached, and its connection."""

    def __init__(self, unreachable: tuple[str, ...] = ()) -> None:
        self.settings = Settings.resolve()
        self.unreachable = unreachable

    def as_connected(self, host: Host) -> str:
        return f"root@{host.hostname}"

    async def get(self, host: Host) -> object:
        if host.hostname in self.unreachable:
            raise ConnectError(host=self.as_connected(host), cause="host name does not resolve")
        await asyncio.sleep(3600)  # connecting: the agents' words decide
        return object()


def _stage(names: list[str], pool: _Pool | None = None) -> PreStart:
    plan = plan_stage(None, None, None, Settings.resolve())
    hosts = [(parse_host(n), "python3") for n in names]
    return PreStart(plan, pool or _Pool(), hosts)  # type: ignore[arg-type]


def _no_script(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the gate of a default start runs no remote script")


def test_a_default_start_asks_its_agents_to_describe_their_hosts() -> None:
    stage = _stage(["node1"])
    assert stage.agents_gate
    describe = stage.describe
    assert describe is not None
    assert list(describe.packages) == [*stage.plan.packages, *GPU_STACK_DISTRIBUTIONS]
    assert describe.packages[:2] == ("dask", "distributed")  # and the GPU stack, issue 28


def test_the_gate_compares_what_the_agents_said_and_runs_nothing_itself(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prestart, "run_script", _no_script)
    stage = _stage(["node1", "node2"])
    ours = local_description(stage.plan.packages)
    theirs = dict(ours, packages=dict(ours["packages"], cloudpickle="0.0.1"))

    async def go() -> None:
        gate = asyncio.ensure_future(stage.gate_agents())
        describe = stage.describe
        assert describe is not None
        describe.told(parse_host("node1"), ours)
        await asyncio.sleep(0.01)
        assert not gate.done()  # it waits for every host
        describe.told(parse_host("node2"), theirs)
        describe.told(parse_host("node2"), ours)  # a second agent of that host: too late
        with pytest.raises(EnvironmentMismatchError) as info:
            await gate
        assert info.value.hosts == ["root@node2"] and "cloudpickle" in info.value.table

    asyncio.run(go())
    assert stage.reports["root@node1"].description == ours


def test_hosts_the_agents_cannot_describe_are_left_to_the_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that does not connect, or whose agent ends first: the start says why."""
    monkeypatch.setattr(prestart, "run_script", _no_script)
    stage = _stage(["node1", "bad", "node3"], _Pool(unreachable=("bad",)))
    ours = local_description(stage.plan.packages)

    async def go() -> dict[str, prestart.HostPreStart]:
        gate = asyncio.ensure_future(stage.gate_agents())
        describe = stage.describe
        assert describe is not None
        describe.told(parse_host("node1"), ours)
        describe.told(parse_host("node3"), None)  # its agent's start failed first
        return await asyncio.wait_for(gate, 10)

    reports = asyncio.run(go())
    assert reports["root@node1"].description == ours
    assert reports["root@bad"].skipped and reports["root@node3"].skipped


def test_a_host_after_the_start_is_gated_on_its_agents_words_with_no_probe(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A spare or an added host: compared as the start's were, by ``Describe.admit``
    (the workers' agents await it after their hello), and no remote script runs for it."""
    monkeypatch.setattr(prestart, "run_script", _no_script)
    stage = _stage(["node1"])
    ours = local_description(stage.plan.packages)
    theirs = dict(ours, packages=dict(ours["packages"], cloudpickle="0.0.1"))
    describe = stage.describe
    assert describe is not None and describe.admit is not None
    admit = describe.admit

    async def go() -> None:
        await admit(parse_host("node1"), "python3", theirs)  # the start's: gate_agents's
        await admit(parse_host("node2"), "python3", ours)
        with pytest.raises(EnvironmentMismatchError) as info:
            await admit(parse_host("node3"), "python3", theirs)
        assert info.value.hosts == ["root@node3"] and "cloudpickle" in info.value.table

    asyncio.run(go())
    assert [h.hostname for h, _py in stage.hosts] == ["node1", "node2"]  # node3 refused
    assert stage.reports["root@node2"].description == ours
    assert "root@node1" not in stage.reports


def test_the_gate_is_off_when_the_stage_sends_something() -> None:
    """A sync or an upload probes before anything starts (it must know what to send)."""
    stage = _stage(["node1"])
    stage.plan = plan_stage("sync", None, None, Settings.resolve())
    assert not stage.agents_gate and stage.describe is None


def test_the_channel_tells_the_description_once_and_none_when_the_agent_ends_first() -> None:
    said: list[tuple[str, Any]] = []
    describe = Describe(("dask",), lambda host, d: said.append((host.hostname, d)))
    pool = _Pool()
    ch = AgentChannel(pool, parse_host("node1"), "workers", Launch("python3"),  # type: ignore[arg-type]
                      LogBook(), describe=describe)
    ch._dispatch({"ev": "described", "description": {"packages": {"dask": "1"}}})
    ch._tell(None)
    assert said == [("node1", {"packages": {"dask": "1"}})]
    assert ch.description == {"packages": {"dask": "1"}}
    other = AgentChannel(pool, parse_host("node2"), "workers", Launch("python3"),  # type: ignore[arg-type]
                         LogBook(), describe=describe)
    other._tell(None)
    assert said[-1] == ("node2", None)


def test_the_spec_carries_the_packages_to_describe() -> None:
    assert "describe" not in json.loads(AgentSpec(role="workers", label="n").to_json())
    spec = json.loads(AgentSpec(role="workers", label="n", describe=("dask",)).to_json())
    assert spec["describe"] == ["dask"]


def _events(spec: AgentSpec) -> list[dict[str, Any]]:
    """Start an agent here (``sh -c``), read its events up to hello, then end it (EOF)."""
    proc = subprocess.Popen(["sh", "-c", build_command(sys.executable)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(stdin_preamble(spec))
        proc.stdin.flush()
        events: list[dict[str, Any]] = []
        for line in proc.stdout:
            if line.startswith(EVENT_MARK):
                events.append(json.loads(line[len(EVENT_MARK):]))
                if events[-1].get("ev") in ("hello", "fatal"):
                    break
        proc.stdin.close()
        proc.wait(30)
        return events
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_an_agent_describes_its_host_before_it_imports_anything() -> None:
    packages = ("dask", "distributed", "cloudpickle")
    events = _events(AgentSpec(role="scheduler", label="s", describe=packages))
    kinds = [e.get("stage", e["ev"]) for e in events]
    assert kinds == ["login", "python", "described", "import", "hello"], kinds
    said = events[2]["description"]
    assert said == json.loads(json.dumps(local_description(packages)))  # read alike here


def test_an_agent_not_asked_says_nothing_of_its_host() -> None:
    events = _events(AgentSpec(role="scheduler", label="s"))
    assert "described" not in [e["ev"] for e in events]


def test_describing_reads_metadata_and_imports_no_package() -> None:
    code = ("import sys, json\n"
            "from sshdeploy.remote.agent.facts import describe\n"
            "before = set(sys.modules)\n"
            "d = describe(['dask', 'distributed', 'numpy'])\n"
            "print(json.dumps([sorted(set(sys.modules) - before), d['packages']]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    new, packages = json.loads(out.stdout)
    assert not [m for m in new if m.split(".")[0] in ("dask", "distributed", "numpy")], new
    assert packages["dask"] and packages["distributed"]


# ------------------------------------------------------- dask-ssh --check: one probe


def test_the_checks_probe_describes_the_host_with_one_python_and_no_import() -> None:
    """``--check``'s probe is the stage's describing one: versions and the gate's facts."""
    from sshdeploy.ssh.preflight import _as_probed, _probe

    packages = ["dask", "distributed", "cloudpickle"]
    command, stdin = _probe(sys.executable, None, False, False, packages)
    assert stdin is not None
    out = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, timeout=60)
    answer = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert answer["packages"] == local_description(packages)["packages"]
    probed = _as_probed(answer)
    assert probed["error"] is None and probed["python"] == sys.executable
    assert set(probed["versions"]) == {"python", "dask", "distributed"}
    # --check-imports keeps its importing probe (and no description)
    assert _probe(sys.executable, None, True, False, packages)[1] is None


def test_check_gives_the_gate_what_its_probe_said(monkeypatch: pytest.MonkeyPatch) -> None:
    """No second pool, login or Python per host for the gate's table."""
    from types import SimpleNamespace

    from click.testing import CliRunner

    from sshdeploy import cli

    ours = local_description(["dask", "distributed"])
    theirs = dict(ours, packages=dict(ours["packages"], cloudpickle="0.0.1"))
    asked: list[Any] = []

    def check_hosts(hosts: list[Host], *args: Any, describe: Any = None, **kw: Any) -> list[Any]:
        asked.append(describe)
        return [SimpleNamespace(host=f"root@{h.hostname}:22", reachable=True, authenticated=True,
                                python="/py", versions={}, local_versions={}, error=None,
                                ok=True, gpus=None, description=theirs) for h in hosts]

    monkeypatch.setattr(cli, "check_hosts", check_hosts)
    monkeypatch.setattr(prestart, "check_gate_async", _no_script)
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli.main, ["--check", "n1"])
    assert asked and asked[0][:2] == ["dask", "distributed"]
    assert "version gate: 1 host(s) differ" in result.output, result.output
    assert "cloudpickle" in result.output and result.exit_code == 1


def test_a_mismatch_ends_the_scheduler_agent_before_it_is_asked_for_the_scheduler() -> None:
    """RemoteScheduler: the agent starts beside the gate; no ``start_scheduler`` on a mismatch."""
    from sshdeploy.cluster.processes import RemoteScheduler

    stage = _stage(["node1", "node2"])
    ours = local_description(stage.plan.packages)
    done: list[str] = []

    async def go() -> None:
        gate = asyncio.ensure_future(stage.gate_agents())

        async def passed() -> None:
            await asyncio.shield(gate)

        sched = RemoteScheduler(parse_host("node1"), _Pool(), Launch("python3"),  # type: ignore[arg-type]
                                LogBook(), gate=passed, describe=stage.describe)

        async def start(timeout: float) -> dict[str, Any]:  # the agent says its word, then hello
            sched.channel._dispatch({"ev": "described", "description": ours})
            done.append("hello")
            return {}

        async def call(cmd: str, *args: Any, **kw: Any) -> dict[str, Any]:
            done.append(cmd)
            return {"ev": "failed"}

        async def abort() -> None:
            done.append("abort")

        sched.channel.start, sched.channel.call, sched.channel.abort = (  # type: ignore[method-assign]
            start, call, abort)
        starting = asyncio.ensure_future(sched._start())
        await asyncio.sleep(0.05)
        assert done == ["hello"] and not starting.done()  # waiting for node2's word
        describe = stage.describe
        assert describe is not None
        describe.told(parse_host("node2"), dict(ours, machine="riscv64"))
        with pytest.raises(EnvironmentMismatchError):
            await starting

    asyncio.run(go())
    assert done == ["hello", "abort"]
