"""The smaller things a new user tripped on (issue 30), one test each."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sshdeploy.arguments import ClusterArgs
from sshdeploy.errors import ConfigError, HostfileError
from sshdeploy.hosts import Host
from sshdeploy.placement import HostPlan, kept_on_scale_down
from sshdeploy.plan import plan_cluster
from sshdeploy.settings import MIN_POLICY_DURATION, Settings, parse_duration

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("option", ["--idle-timeout", "--max-lifetime"])
def test_a_policy_duration_below_the_minimum_is_refused_naming_it(
        option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sshdeploy.cli import main

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    out = CliRunner().invoke(main, ["up", "--name", "short", option, "1ms", "n1"])
    assert out.exit_code == 2, out.output
    assert f"{option}: must be at least 10 s, got '1ms'" in out.output


def test_the_minimum_holds_for_the_python_api_and_the_settings_too() -> None:
    with pytest.raises(ConfigError, match="idle_timeout: must be at least 10 s"):
        plan_cluster(ClusterArgs(["a", "b"], name="x", shutdown_on_close=False,
                                 idle_timeout="2s"))
    with pytest.raises(ConfigError, match=r"sshdeploy\.max-lifetime: must be at least 10 s"):
        Settings.resolve(max_lifetime="500ms")
    assert parse_duration("10s", "idle_timeout", MIN_POLICY_DURATION) == 10.0


@pytest.mark.parametrize("n", ["-1", "-5", "two", "1.5"])
def test_a_negative_or_non_whole_scale_is_a_clear_usage_error(n: str) -> None:
    from sshdeploy.cli import main

    out = CliRunner().invoke(main, ["scale", "demo", n])
    assert out.exit_code == 2
    assert "No such option" not in out.output
    assert f"Invalid value for 'N': {n!r} is not a number of workers" in out.output


def test_a_bad_cluster_name_is_said_once() -> None:
    from sshdeploy.cli import main

    out = CliRunner().invoke(main, ["status", "../x"])
    assert out.exit_code == 2
    assert "Invalid value for 'NAME': '../x' is not a cluster name" in out.output
    assert "NAME: '../x'" not in out.output


def test_a_bad_host_argument_names_the_argument_not_a_file_line() -> None:
    from sshdeploy.cli import main

    out = CliRunner().invoke(main, ["--dry-run", "node1", "bad_host!"])
    assert out.exit_code == 2
    assert "Invalid value for 'HOSTNAMES': 'bad_host!': invalid characters '!'" in out.output
    assert "Fix the line" not in out.output and "<command line>" not in out.output
    with pytest.raises(HostfileError) as info:   # the Python API: no hostfile advice either
        Host("bad_host!")
    assert "Fix the line" not in str(info.value) and "[user@]host[:port]" in str(info.value)


def test_a_hostfile_line_keeps_its_hostfile_advice(tmp_path: Path) -> None:
    from sshdeploy.hostfile import load_hostfile

    path = tmp_path / "hosts"
    path.write_text("node1\nbad_host!\n")
    with pytest.raises(HostfileError) as info:
        load_hostfile(path)
    assert f"{path}:2" in str(info.value) and "Fix the line" in str(info.value)


def test_scale_down_keeps_the_regular_hosts_workers_before_the_spares() -> None:
    hosts = {h.key: HostPlan(h, "py", slots=1) for h in (Host("reg"), Host("spare"))}
    spec = {"reg-0": {"options": {"host": Host("reg")}},
            "spare-0": {"options": {"host": Host("spare")}}}
    assert list(kept_on_scale_down(spec, hosts, 1, spares={Host("spare").key})) == ["reg-0"]
    spec = dict(reversed(spec.items()))   # whatever the order they were added in
    assert list(kept_on_scale_down(spec, hosts, 1, spares={Host("spare").key})) == ["reg-0"]


@pytest.mark.parametrize(("answer", "kw", "health"), [
    # a gone or stopped cluster: its hosts say so, never ok, whatever its last status said
    ({"agents": []}, {"workers": 1, "cluster": "gone"}, "gone"),
    ({"agents": [{"alive": False}]}, {"workers": 1, "cluster": "stopped"}, "stopped"),
    ({"agents": [{"alive": True}]}, {"workers": 0, "cluster": "stopped"}, "left running"),
    ({"agents": [], "marked": [{"pid": 7}]}, {"workers": 0, "cluster": "gone"}, "left running"),
    # a worker host whose agent was SIGKILLed: its record stays, its process is gone
    ({"agents": [{"alive": False}]}, {"workers": 0}, "down"),
    ({"agents": [{"alive": False}]}, {"workers": 1}, "down"),
    ({"agents": []}, {"workers": 1}, "down"),     # the scheduler has its workers, no agent runs
    ({"agents": [{"alive": True}]}, {"workers": 2}, "ok"),
    ({"agents": [{"alive": True}]}, {"workers": 0}, "idle"),
    ({"agents": []}, {"workers": 0}, "idle"),      # no agent was started there (initial_workers)
    ({"agents": []}, {"workers": 0, "spare": True}, "spare"),
])
def test_a_host_is_ok_only_when_its_agent_runs_in_a_running_cluster(
        answer: dict[str, object], kw: dict[str, object], health: str) -> None:
    from sshdeploy.named.status import host_health

    args = {"runs_scheduler": False, "spare": False, **kw}
    assert host_health(answer, **args) == health  # type: ignore[arg-type]


def test_status_of_a_gone_cluster_shows_no_worker_as_ok(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    from sshdeploy.cli import main
    from sshdeploy.named import flow, hostops
    from sshdeploy.named.state import ClusterRecord, StateStore

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    StateStore().save(ClusterRecord("gonec", "root@n1:22", "tcp://10.0.0.1:8786",
                                    spec={"hosts": [{"hostname": "n1"}, {"hostname": "n2"}],
                                          "wanted": 1}))
    stale = {"status": {"workers": [{"name": "n2-0"}]}, "agents": [{"role": "scheduler",
                                                                     "alive": False}]}

    @contextlib.asynccontextmanager
    async def pool(spec: object):  # type: ignore[no-untyped-def]
        class P:
            def as_connected(self, host: Host) -> str:
                return f"root@{host.hostname}:22"
        yield P()

    async def on_hosts(pool: object, hosts: object, name: str, op: str) -> dict[Host, object]:
        return {Host("n1"): stale, Host("n2"): {"agents": [{"role": "workers", "alive": False}]}}

    monkeypatch.setattr(flow, "record_pool", pool)
    monkeypatch.setattr(flow, "launches", lambda spec: [])
    monkeypatch.setattr(hostops, "on_hosts", on_hosts)
    out = CliRunner().invoke(main, ["status", "gonec"])
    assert out.exit_code == 0, out.output
    assert "gonec: gone" in out.output
    assert " ok " not in out.output and "n2-0" not in out.output
    assert out.output.count("gone") >= 3, out.output   # the state, and each host's health


def test_list_says_stopping_until_the_last_process_is_gone() -> None:
    import asyncio
    import time

    from sshdeploy.named import flow
    from sshdeploy.named.state import ClusterRecord
    from sshdeploy.named.status import table_row

    record = ClusterRecord("life", "root@n1:22", "tcp://10.0.0.1:8786", created=1.0,
                           policy={"death_timeout": 60},
                           spec={"hosts": [{"hostname": "n1"}, {"hostname": "n2"}]})
    ended = {"agents": [{"role": "scheduler", "alive": False}], "exists": True,
             "end": {"reason": "maximum lifetime of 60 s reached", "time": time.time() - 5}}
    workers_left = {"agents": [{"role": "workers", "alive": True}], "marked": [{"pid": 9}] * 2}
    calls: list[str] = []

    async def host_op(pool: object, host: Host, launch: object, name: str, op: str,
                      **kw: object) -> dict[str, object]:
        calls.append(host.hostname)
        return ended

    async def on_hosts(pool: object, hosts: dict[Host, object], name: str, op: str,
                       **kw: object) -> dict[Host, object]:
        return {Host("n1"): ended, Host("n2"): left}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(flow, "host_op", host_op)
        mp.setattr(flow, "on_hosts", on_hosts)
        left: dict[str, object] = workers_left
        status = asyncio.run(flow.probe(record, None, every_host=True))  # type: ignore[arg-type]
        assert status.state == "stopping", status
        assert table_row(status)[1] == ("stopping (maximum lifetime of 60 s reached; 2 "
                                        "process(es) of it still stopping on 1 host(s))")
        left = {"agents": [{"role": "workers", "alive": False}], "marked": []}
        status = asyncio.run(flow.probe(record, None, every_host=True))  # type: ignore[arg-type]
        assert status.state == "stopped" and status.reason == "maximum lifetime of 60 s reached"
        # long after the end, the workers' own deadline has passed: the other hosts are not asked
        ended["end"] = {"reason": "idle timeout", "time": time.time() - 3600}
        left = workers_left
        assert asyncio.run(flow.probe(record, None, every_host=True)).state == "stopped"  # type: ignore[arg-type]


def test_the_roster_scales_down_a_spares_worker_before_a_regular_hosts() -> None:
    from sshdeploy.cluster.roster import Roster
    from tests.unit.test_roster import FakeCluster

    cluster = FakeCluster()
    plan = plan_cluster(ClusterArgs(["s", "a"], spares=["b"], worker_options={"n_workers": 1}))
    r = Roster(cluster, plan,  # type: ignore[arg-type]
               lambda hp, kw: {"options": {"host": hp.host, "kwargs": dict(kw)}})
    spare = next(hp.host for k, hp in plan.placement.worker_hosts.items()
                 if k in plan.placement.spares)
    for w in plan.placement.workers:
        r.want(w.name, r.spec_for(w.host, w.kwargs))
    r.want("b-0", r.spec_for(spare, name="b-0"))   # the spare took a worker (a lost host's)
    assert sorted(r) == ["a-0", "b-0"]
    r.shrink(1)
    assert list(r) == ["a-0"]
