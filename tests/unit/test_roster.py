"""The roster: the one writer of a cluster's workers, against a fake SpecCluster (no network)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from distributed.core import Status

from sshdeploy.arguments import ClusterArgs
from sshdeploy.cluster.processes import RemoteWorker
from sshdeploy.cluster.roster import Roster
from sshdeploy.errors import StartError
from sshdeploy.placement import extend, without
from sshdeploy.plan import plan_cluster

pytestmark = pytest.mark.timeout(30)


class FakeProcess:
    def __init__(self, status: Status = Status.running) -> None:
        self.status = status


class FakeCluster:
    """The state a SpecCluster keeps of its workers, and its cluster log."""

    def __init__(self) -> None:
        self.status = Status.running
        self.worker_spec: dict[str, Any] = {}
        self.workers: dict[str, Any] = {}
        self._created: set[Any] = set()
        self._cluster_manager_logs: list[Any] = []
        self.scheduler_comm = None
        self.corrected = 0

    async def _correct_state(self) -> None:
        self.corrected += 1

    def log(self) -> list[str]:
        return [line for _, line in self._cluster_manager_logs]


def roster(hosts: list[str] | None = None, n_workers: int = 2) -> tuple[FakeCluster, Roster]:
    cluster = FakeCluster()
    plan = plan_cluster(ClusterArgs(hosts or ["s", "a", "b"],
                                    worker_options={"n_workers": n_workers}))
    r = Roster(cluster, plan,  # type: ignore[arg-type]
               lambda hp, kw: {"options": {"host": hp.host, "kwargs": dict(kw)}})
    for w in plan.placement.workers:
        r.want(w.name, r.spec_for(w.host, w.kwargs))
    return cluster, r


def running(cluster: FakeCluster, *names: str) -> dict[str, FakeProcess]:
    """Give each of *names* a running process, as SpecCluster would."""
    made = {n: FakeProcess() for n in names}
    cluster.workers.update(made)
    cluster._created.update(made.values())
    return made


def test_the_roster_reads_the_workers_wanted_and_where_they_go() -> None:
    _, r = roster()
    assert list(r) == ["a-0", "a-1", "b-0", "b-1"] and len(r) == 4 and "a-1" in r
    a = r.host_of("a-0")
    assert a is not None and a.hostname == "a"
    assert r.names_on(a.key) == ["a-0", "a-1"] and r.host_of("c-0") is None


def test_the_next_worker_goes_to_a_free_slot_never_to_an_excluded_host() -> None:
    _, r = roster(n_workers=1)
    r.drop("b-0")
    b = next(k for k in r.placement.worker_hosts if k[1] == "b")
    assert list(r.next_spec(excluded=())) == ["b-0"]
    assert list(r.next_spec(excluded={b})) == ["a-1"]  # every slot taken: a fuller host
    assert r.next_spec(excluded=set(r.placement.worker_hosts)) == {}


def test_drop_forgets_a_worker_everywhere_once() -> None:
    cluster, r = roster()
    procs = running(cluster, "a-0", "a-1")
    r.drop("a-0")
    assert "a-0" not in cluster.worker_spec and "a-0" not in cluster.workers
    assert procs["a-0"] not in cluster._created
    r.drop("a-0")  # twice: nothing left to forget
    newer = running(cluster, "a-1")["a-1"]
    r.drop("a-1", procs["a-1"])  # an older process of that name: the newer one stays
    assert cluster.workers["a-1"] is newer and procs["a-1"] not in cluster._created
    assert "a-1" not in cluster.worker_spec


def test_release_forgets_the_process_and_keeps_the_worker_wanted() -> None:
    cluster, r = roster()
    old = running(cluster, "a-0")["a-0"]
    assert r.release("a-0") is old and r.release("a-0") is None
    assert "a-0" in r and "a-0" not in cluster.workers and old not in cluster._created


def test_retire_and_shrink_leave_the_processes_to_speccluster() -> None:
    cluster, r = roster()
    running(cluster, "a-0", "b-1")
    r.retire("b-1")
    r.shrink(2)
    assert sorted(r) == ["a-0", "b-0"]  # the fullest host (a) loses its highest name
    assert set(cluster.workers) == {"a-0", "b-1"}  # closed by SpecCluster's correction
    asyncio.run(r.correct())  # type: ignore[arg-type]
    assert cluster.corrected == 1


def test_the_placement_in_force_changes_the_plan_it_belongs_to() -> None:
    _, r = roster()
    plan = r.plan
    r.replace_placement(extend(r.placement, ["c slots=3"]))
    assert [k[1] for k in r.placement.worker_hosts] == ["a", "b", "c"]
    assert r.plan.settings is plan.settings and r.plan.placement is r.placement
    c = next(k for k in r.placement.worker_hosts if k[1] == "c")
    assert r.spec_for(r.placement.worker_hosts[c].host)["options"]["host"].hostname == "c"
    r.replace_placement(without(r.placement, [c]))
    assert [k[1] for k in r.placement.worker_hosts] == ["a", "b"]


def test_say_logs_and_keeps_a_cluster_log_line(caplog: pytest.LogCaptureFixture) -> None:
    cluster, r = roster()
    mine = logging.getLogger("sshdeploy.cluster.fleet")
    with caplog.at_level(logging.INFO, logger="sshdeploy"):
        r.say("host b lost")
        r.say("reached through SSH", log=mine, level=logging.INFO)
        r.say("b: left out", logged="b: no workers started there")
    assert cluster.log() == ["host b lost", "reached through SSH", "b: left out"]
    assert [(rec.name, rec.levelname, rec.getMessage()) for rec in caplog.records] == [
        ("sshdeploy.cluster.roster", "WARNING", "host b lost"),
        ("sshdeploy.cluster.fleet", "INFO", "reached through SSH"),
        ("sshdeploy.cluster.roster", "WARNING", "b: no workers started there"),
    ]


def failed_worker(cluster: FakeCluster, r: Roster, name: str) -> RemoteWorker:
    host = r.host_of(name)
    assert host is not None
    w = RemoteWorker("tcp://s:8786", name=name, host=host, agents=None)  # type: ignore[arg-type]
    w.start_error = StartError(host=f"root@{host.hostname}:22", role="worker", name=name,
                               what="could not start", cause="boom")
    w.status = Status.failed
    cluster.workers[name] = w
    cluster._created.add(w)
    return w


def test_a_start_failure_after_start_up_is_kept_by_name_until_it_runs() -> None:
    cluster, r = roster()
    w = failed_worker(cluster, r, "b-0")
    assert r.failed_starts() == [w]
    r.note_start_failure(w)
    assert r.failed_starts() == [] and w.start_error is None and "b-0" not in r
    err = r.start_failure("b-0")
    assert err is not None and "boom" in str(err)
    assert r.start_failures["b-0"][0] == w.host.key
    running(cluster, "b-0")  # started again later
    assert r.start_failure("b-0") is None


def test_hosts_left_out_at_the_start_are_kept_and_said_once() -> None:
    cluster, r = roster()
    running(cluster, "a-0", "a-1")
    failed = [failed_worker(cluster, r, n) for n in ("b-0", "b-1")]
    assert r.running_count() == 2 and r.running_count(besides=failed) == 2
    err = failed[0].start_error
    assert err is not None
    r.leave_out(failed, {"root@b:22": err})
    r.leave_out([], {"root@b:22": err})
    assert list(r) == ["a-0", "a-1"] and list(r.failed_hosts) == ["root@b:22"]
    assert cluster.log() == [f"host root@b:22 failed and is left out: {str(err).splitlines()[0]}"]


def test_install_takes_over_a_running_process_with_its_spec() -> None:
    _, r = roster()
    r.clear()
    assert len(r) == 0
    host = r.placement.workers[0].host
    w = RemoteWorker("tcp://s:8786", name="a-7", host=host, agents=None)  # type: ignore[arg-type]
    r.install(w)
    assert r.worker("a-7") is w and r.host_of("a-7") == host and list(r) == ["a-7"]
