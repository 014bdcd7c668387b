"""Named clusters without a network: names, durations, state files, specs, probes (issue 17)."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from sshdeploy.arguments import ClusterArgs
from sshdeploy.cluster.kept import KeptCluster
from sshdeploy.errors import ClusterStateError, ConfigError, ConnectError
from sshdeploy.logs import LogBook
from sshdeploy.named.policy import KeepPolicy, check_name, parse_duration
from sshdeploy.named.spec import differences, hosts_of
from sshdeploy.named.state import ClusterRecord, StateStore
from sshdeploy.named.status import classify, table_row
from sshdeploy.plan import plan_cluster
from sshdeploy.remote.agent.group import running_since as start_time
from sshdeploy.remote.agent.keep import keep_op
from sshdeploy.ssh.pool import HostPool

pytestmark = pytest.mark.timeout(30)


def record(name: str = "demo", **kw: object) -> ClusterRecord:
    return ClusterRecord(name, "root@n1:22", "tcp://10.0.0.1:8786", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "1abc", "a b", "../x", "a" * 41, None, 3, "é"])
def test_a_name_is_a_short_identifier(bad: object) -> None:
    with pytest.raises(ConfigError, match="not a cluster name"):
        check_name(bad)


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10), ("30min", 1800), ("2h", 7200),
                                               ("1.5", 1.5), (90, 90)])
def test_durations_are_dasks(text: object, seconds: float) -> None:
    assert parse_duration(text, "idle_timeout") == seconds


@pytest.mark.parametrize("bad", ["soon", "-3s", 0, True, "10 parsecs"])
def test_a_bad_duration_names_its_setting(bad: object) -> None:
    with pytest.raises(ConfigError, match="max_lifetime: must be a duration"):
        parse_duration(bad, "max_lifetime")


def test_the_plan_keeps_only_a_named_cluster_that_does_not_shut_down() -> None:
    assert plan_cluster(ClusterArgs(["a", "b"])).keep is None
    keep = plan_cluster(ClusterArgs(["a", "b"], name="x", shutdown_on_close=False,
                                    idle_timeout="1min",
                                    worker_options={"death_timeout": "7s"})).keep
    assert keep == KeepPolicy("x", idle_timeout=60.0, death_timeout=7.0)
    assert plan_cluster(ClusterArgs(["a", "b"], name="x", shutdown_on_close=False)).launch(
        plan_cluster(ClusterArgs(["a", "b"])).placement.scheduler).keep is not None
    with pytest.raises(ConfigError, match="needs a name"):
        plan_cluster(ClusterArgs(["a", "b"], shutdown_on_close=False))
    with pytest.raises(ConfigError, match="idle_timeout: applies to a named cluster"):
        plan_cluster(ClusterArgs(["a", "b"], idle_timeout="1h"))


def test_state_files_are_private_and_written_whole(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "named")
    store.save(record(tls={"ca": "CA", "cert": "CERT", "key": "KEY"}))
    path = store.path("demo")
    assert stat.S_IMODE(os.stat(store.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = store.load("demo")
    assert loaded is not None and set(loaded.tls) == {"ca", "cert", "key"}
    assert store.tls_pems(loaded) == {"ca": "CA", "cert": "CERT", "key": "KEY"}
    for p in loaded.tls.values():
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".")] == []  # no temp left
    assert store.remove("demo") and not store.tls_dir("demo").exists()
    assert store.load("demo") is None


def _save_many(root: str, n: int) -> None:
    store = StateStore(Path(root))
    for i in range(n):
        store.save(record(dashboard_port=i, spec={"pad": "x" * 5000}))


def test_concurrent_writers_never_leave_a_torn_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(record())
    spawn = multiprocessing.get_context("spawn")  # fork() of a threaded pytest warns on 3.12+
    procs = [spawn.Process(target=_save_many, args=(str(tmp_path), 200)) for _ in range(3)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 20
    reads = 0
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        loaded = store.load("demo")  # raises on a torn file
        assert loaded is not None
        reads += 1
    for p in procs:
        p.join(5)
    assert reads > 0 and store.load("demo") is not None


def test_one_up_of_a_name_at_a_time(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.locked("demo"):
        with pytest.raises(ClusterStateError, match="another dask-ssh is starting"):
            with StateStore(tmp_path).locked("demo"):
                pass
    with store.locked("demo"):  # released
        pass


@pytest.mark.parametrize(("content", "why"), [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "is not a JSON object"),
    ('{"name": "demo"}', "has no scheduler_host, scheduler_address"),
    ('{"name": "other", "scheduler_host": "h", "scheduler_address": "a"}', "names another"),
    ('{"name": "demo", "scheduler_host": "h", "scheduler_address": "a", "format": 99}',
     "format 99"),
])
def test_a_corrupt_state_file_is_refused_naming_it(tmp_path: Path, content: str,
                                                   why: str) -> None:
    store = StateStore(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    store.path("demo").write_text(content)
    with pytest.raises(ClusterStateError, match=why) as info:
        store.load("demo")
    assert str(store.path("demo")) in str(info.value) and "dask-ssh clean" in str(info.value)


def test_the_spec_round_trips_and_names_what_differs() -> None:
    spec = ClusterArgs(["u@a:2222", "b"], {"known_hosts": "/kh", "key": object()},
                       {"n_workers": 2}).to_record()
    assert json.loads(json.dumps(spec)) == spec
    assert [h.as_written() for h in hosts_of(spec)] == ["u@a:2222", "b"]
    assert spec["dropped"] == ["connect_options.key", "connect_options.key"]
    other = {**spec, "worker_options": {"n_workers": 3}}
    assert differences(spec, other) == [
        "worker_options: {'n_workers': 2} -> {'n_workers': 3}"]
    assert differences(spec, {**spec, "wanted": 9}) == []  # scaling is not another cluster


def test_states_are_probed_not_read() -> None:
    rec = record(spec={"wanted": 1, "hosts": [{"hostname": "n1"}, {"hostname": "n2"}]},
                 created=10.0)
    running = {"agents": [{"role": "scheduler", "alive": True}],
               "status": {"workers": [{"name": "n2-0"}], "clients": 1, "idle_since": 20.0}}
    s = classify(rec, running, now=30.0)
    assert (s.state, s.running, s.idle, s.clients) == ("running", 1, None, 1)
    # the status file says "running" but its scheduler does not run: gone
    dead = {**running, "agents": [{"role": "scheduler", "alive": False}]}
    assert classify(rec, dead, now=30.0).state == "gone"
    assert table_row(classify(rec, running, now=30.0))[:4] == (
        "demo", "running", "tcp://10.0.0.1:8786", "1/1")


def test_host_ops_see_only_this_hosts_agents(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    keep_op("write", "demo", {"name": "demo"})
    answer = keep_op("probe", "demo")
    assert answer["cluster"] == {"name": "demo"} and answer["agents"] == []
    mine = Path(answer["host_dir"]) / "agents"
    mine.mkdir(parents=True)
    (mine / "1.json").write_text(json.dumps({"pid": os.getpid(), "start": start_time(os.getpid()),
                                             "role": "workers"}))
    (mine / "2.json").write_text(json.dumps({"pid": os.getpid(), "start": "0",
                                             "role": "workers"}))  # a reused pid: not ours
    alive = {a["file"]: a["alive"] for a in keep_op("probe", "demo")["agents"]}
    assert alive == {"1.json": True, "2.json": False}
    assert stat.S_IMODE(os.stat(answer["dir"]).st_mode) == 0o700
    (mine / "1.json").unlink()
    keep_op("remove", "demo")  # a worker host: its own files go, the scheduler's stay
    assert not Path(answer["host_dir"]).exists() and Path(answer["dir"], "cluster.json").exists()
    keep_op("remove", "demo", {"owner": True})
    assert not Path(answer["dir"]).exists()


def test_a_kept_agents_log_outlives_it_until_the_cluster_is_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sshdeploy.remote.agent.keep import Keep

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    keep = Keep({"name": "demo", "armed": True}, "workers", "n2")  # a recorded cluster
    keep.begin("n2")
    keep.log([("n2-0", "stderr", "a worker's line"), ("n2", "stderr", "the agent's")])
    keep.end_reason = "no worker left"
    keep.end()
    answer = keep_op("logs", "demo", {"lines": 0, "sources": True})
    assert answer["agents"] == []  # its record went with it; its log did not
    (text,) = answer["logs"].values()
    assert text[0].endswith("[n2-0] a worker's line")
    assert text[-1].endswith("[n2] sshdeploy agent: ended: no worker left")
    assert answer["sources"] == ["n2", "n2-0"]
    assert keep_op("logs", "demo", {"lines": 1})["sources"] == []  # only when asked
    keep_op("remove", "demo", {"owner": True})  # `down`: now it goes
    assert not Path(answer["dir"]).exists()


def test_the_scheduler_says_how_many_workers_the_record_wants(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sshdeploy.remote.agent.keep import Keep
    from sshdeploy.remote.agent.servers import WANTED_OP

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    keep = Keep({"name": "demo"}, "scheduler", "scheduler n1")
    keep.begin("scheduler n1")
    server = _FakeScheduler()
    keep.scheduler_status(server, {"since": 0.0})
    ask = server.handlers[WANTED_OP]
    assert ask() is None  # no record yet: not known
    keep_op("write", "demo", {"name": "demo", "spec": {"wanted": 3}})
    assert ask() == 3


def test_dask_ctl_finds_the_discovery_entry_point(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="dask_cluster_discovery") if e.name == "sshcluster"]
    discover = ep.load()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))

    async def names() -> list[str]:
        return [name async for name, _cls in discover()]

    assert asyncio.run(names()) == []  # nothing recorded here: nothing offered


class _FakeScheduler:
    """What Keep.scheduler_status reads of a distributed Scheduler."""

    def __init__(self) -> None:
        self.queued: list[object] = []
        self.unrunnable: list[object] = []
        self.workers: dict[str, object] = {}
        self.clients: dict[str, object] = {"fire-and-forget": object()}
        self.transition_counter = 0
        self.address = "tcp://10.0.0.1:8786"
        self.handlers: dict[str, object] = {}


def test_lifetime_policies_are_decided_on_the_scheduler_host(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sshdeploy.remote.agent.keep import Keep

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    keep = Keep({"name": "demo", "idle_timeout": 10, "max_lifetime": 100}, "scheduler",
                "scheduler n1")
    keep.begin("scheduler n1")
    server, idle = _FakeScheduler(), {"since": 0.0}
    now = [1000.0]
    monkeypatch.setattr("sshdeploy.remote.agent.keep.time.time", lambda: now[0])
    keep.started = 1000.0
    assert keep.scheduler_status(server, idle) is None  # first look: idle from now
    now[0] = 1009.0
    assert keep.scheduler_status(server, idle) is None
    server.clients["client-1"] = object()  # a client keeps it alive
    now[0] = 1050.0
    assert keep.scheduler_status(server, idle) is None
    del server.clients["client-1"]
    now[0] = 1055.0
    assert keep.scheduler_status(server, idle) is None
    now[0] = 1066.0
    assert "idle timeout" in str(keep.scheduler_status(server, idle))
    server.transition_counter = 5  # tasks ran: not idle, but too old
    now[0] = 1101.0
    assert "maximum lifetime" in str(keep.scheduler_status(server, idle))
    status = json.loads((Path(keep.dir) / "status.json").read_text())
    assert status["clients"] == 0 and status["address"] == server.address


def test_clean_envs_needs_the_hosts_and_hosts_need_envs() -> None:
    from click.testing import CliRunner

    from sshdeploy.cli.named import clean_command

    runner = CliRunner()
    out = runner.invoke(clean_command, ["--envs"])
    assert out.exit_code == 2 and "HOSTs named" in out.output
    out = runner.invoke(clean_command, ["node1"])
    assert out.exit_code == 2 and "go with --envs" in out.output


def test_subcommands_dispatch_and_a_host_named_like_one_is_given_after_dashes() -> None:
    from click.testing import CliRunner

    from sshdeploy.cli import main, subcommands

    assert set(subcommands()) == {"up", "list", "ls", "status", "logs", "scale", "add",
                                  "remove", "attach", "down", "clean",
                                  "submit", "jobs", "job", "exec"}
    runner = CliRunner()
    out = runner.invoke(main, ["up", "--help"])
    assert out.exit_code == 0 and "--idle-timeout" in out.output
    out = runner.invoke(main, ["up", "--name", "1bad", "a"])
    assert out.exit_code == 2 and "not a cluster name" in out.output
    out = runner.invoke(main, ["--dry-run", "--", "up", "down"])  # hosts named up and down
    assert out.exit_code == 0, out.output
    assert "# up  scheduler" in out.output and "# down  worker" in out.output


def unmarked(launch: Any) -> Any:
    """*launch* without the session of the controller that made it (each has its own)."""
    import dataclasses

    keep = {k: v for k, v in (launch.keep or {}).items() if k != "session"}
    return dataclasses.replace(launch, keep=keep)


def test_a_later_controller_plans_the_hosts_and_workers_as_the_start_did(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``up`` records the cluster; ``from_name`` (``add``, ``scale``, restarts) re-plans it
    from the record: hosts brought up later get the same stage (synced environment,
    uploads) and their agents the same launch (setup, env, login shell, dask config)."""
    import asyncio
    import dataclasses

    from sshdeploy.cluster.kept import KeptCluster, reattach
    from sshdeploy.named.flow import new_record

    monkeypatch.chdir(tmp_path)
    args = ClusterArgs(["s", "a", "b"], {"known_hosts": None}, {"nthreads": 2},
                       remote_python="/opt/py/bin/python", setup=["module load py"],
                       env={"A": "1"}, inherit_config=False, restart_workers=False,
                       name="demo", shutdown_on_close=False, idle_timeout="1h",
                       environment="sync", packages=["cloudpickle"], upload=["helpers.py"],
                       login_shell=True, spares=["c"])
    plan = plan_cluster(args)
    kept = KeptCluster.of(plan, args)
    assert kept is not None
    store = StateStore(tmp_path / "state")
    store.save(new_record("demo", kept.spec, "s", "tcp://s:8786", None, {}, {}))
    monkeypatch.chdir("/")  # another controller, elsewhere

    again = asyncio.run(reattach("demo", store=store))
    assert (again.name, again.shutdown_on_close, again.security) == ("demo", False, None)
    later = plan_cluster(again)
    assert plan.stage is not None and later.stage is not None
    # the same files (found from here: recorded as absolute paths), the same remote directory
    assert [later.stage.base / p for p in later.stage.upload] == [tmp_path / "helpers.py"]
    assert later.stage == dataclasses.replace(plan.stage, base=later.stage.base,
                                              upload=later.stage.upload)
    for key, hp in plan.placement.worker_hosts.items():
        # the same launch, but for the mark of the controller that starts it (its session)
        assert unmarked(later.launch(later.placement.worker_hosts[key])) == \
            unmarked(plan.launch(hp))
        assert later.worker_options(later.placement.worker_hosts[key]) == plan.worker_options(hp)
    assert later.placement.spares == plan.placement.spares
    assert (later.restart_workers, later.keep) == (plan.restart_workers, plan.keep)
    # the same cluster: taken over, not "another spec"
    relaunched = KeptCluster.of(later, again)
    assert relaunched is not None and differences(kept.spec, relaunched.spec) == []
    assert relaunched.spec == kept.spec


def test_from_name_of_an_unknown_name_says_where_to_look(tmp_path: Path) -> None:
    import asyncio

    from sshdeploy.cluster.kept import reattach
    from sshdeploy.errors import ClusterNotFoundError

    with pytest.raises(ClusterNotFoundError, match="no record of it on this machine"):
        asyncio.run(reattach("nosuch", store=StateStore(tmp_path)))


def test_taking_over_a_running_cluster_adopts_only_the_workers_of_its_hosts(
        tmp_path: Path) -> None:
    plan = plan_cluster(ClusterArgs(["s", "a", "b"], name="demo", shutdown_on_close=False))
    assert plan.keep is not None
    kept = KeptCluster(plan.keep, {}, StateStore(tmp_path))
    pool = HostPool(settings=plan.settings)
    adoption = kept.adoption(record(), plan, pool, LogBook())
    assert adoption.scheduler.address == "tcp://10.0.0.1:8786"
    assert adoption.scheduler.host.hostname == "s"
    assert kept.record is None and not kept.adopted  # nothing is its own before the workers

    async def retire(name: str) -> None:
        return None

    identity = {"workers": {"tcp://10.0.0.2:1": {"name": "a-0"},
                            "tcp://10.0.0.9:1": {"name": "by-hand"},
                            "tcp://10.0.0.3:1": {"name": "b-3"}}}
    workers = adoption.workers(identity, retire, agents=None)  # type: ignore[arg-type]
    assert [(w.name, w.host.hostname, w.address) for w in workers] == [
        ("a-0", "a", "tcp://10.0.0.2:1"), ("b-3", "b", "tcp://10.0.0.3:1")]
    kept.adopted_from(adoption, pool, len(workers))
    assert kept.record is adoption.record and kept.adopted and kept.pool is pool


def test_a_record_that_cannot_be_saved_is_logged_not_raised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    plan = plan_cluster(ClusterArgs(["s", "a"], name="demo", shutdown_on_close=False))
    assert plan.keep is not None
    kept = KeptCluster(plan.keep, {"wanted": 1}, StateStore(tmp_path),
                       record=record(spec={"wanted": 1}),
                       pool=HostPool(settings=plan.settings))

    async def unreachable(*args: object) -> None:
        raise ConnectError(host="root@s:22", cause="connection refused")

    monkeypatch.setattr("sshdeploy.named.flow.save", unreachable)
    with caplog.at_level(logging.WARNING, logger="sshdeploy.cluster.kept"):
        asyncio.run(kept.note_wanted(2))
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("cluster 'demo': could not record its worker count: ")
    assert "connection refused" in message
    assert kept.record is not None and kept.record.spec == {"wanted": 1}  # unchanged
