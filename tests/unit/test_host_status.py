"""The rows of host_status.host_rows, from a cluster's parts built without a network."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from distributed.core import Status

from sshdeploy.arguments import ClusterArgs
from sshdeploy.cluster.health import LOST, HostHealth
from sshdeploy.cluster.host_status import host_rows
from sshdeploy.cluster.processes import RemoteWorker, WorkerAgents
from sshdeploy.cluster.restarts import WorkerRestarts
from sshdeploy.cluster.roster import Roster
from sshdeploy.env.prestart import PreStart
from sshdeploy.errors import StartError
from sshdeploy.logs import LogBook
from sshdeploy.plan import plan_cluster
from sshdeploy.remote.agent.servers import Servers
from sshdeploy.ssh.pool import HostPool
from sshdeploy.views.hostrows import HostRow

from .test_roster import FakeCluster, FakeProcess

pytestmark = pytest.mark.timeout(30)


def rows(health: HostHealth | None = None, *, lose: str = "", fail: str = "",
         leave_out: bool = False) -> dict[str, HostRow]:
    """Rows of a cluster on s (scheduler), a, b (2 slots each) and a spare c, by host name.

    Every wanted worker runs, but *lose* (given up past its budget) and *fail*
    (failed to start after start-up); *leave_out*: b failed at the start.
    """
    plan = plan_cluster(ClusterArgs(["s", "a", "b"], worker_options={"n_workers": 2},
                        spares=["c"]))
    cluster = FakeCluster()
    pool = HostPool(settings=plan.settings)
    agents = WorkerAgents(pool, {}, LogBook())
    roster = Roster(cluster, plan,  # type: ignore[arg-type]
                    lambda hp, kw: {"options": {"host": hp.host}})
    for w in plan.placement.workers:
        roster.want(w.name, roster.spec_for(w.host))
        cluster.workers[w.name] = FakeProcess()
    restarts = WorkerRestarts(roster, limit=1, enabled=False, heartbeat_timeout=30)
    if lose:
        restarts.give_up(lose, "the remote agent was killed", "restarts are off")

    def failed(name: str, cause: str) -> RemoteWorker:
        host = roster.host_of(name)
        assert host is not None
        w = RemoteWorker("tcp://s:8786", name=name, host=host, agents=agents)
        w.start_error = StartError(host=pool.as_connected(host), role="worker", name=name,
                                   what="could not start", cause=cause)
        w.status = Status.failed
        cluster.workers[name] = w
        return w

    if fail:
        roster.note_start_failure(failed(fail, "no memory"))
    if leave_out:
        left = [failed(name, "connection refused") for name in ("b-0", "b-1")]
        assert left[0].start_error is not None
        roster.leave_out(left, {"b": left[0].start_error})
    assert plan.stage is not None
    stage = PreStart(plan.stage, pool, [])
    info: dict[str, Any] = {"workers": {}}
    got = host_rows(roster, None, restarts=restarts, health=health or HostHealth(),
                    pool=pool, stage=stage, agents=agents, scheduler_info=info)
    return {r.host: r for r in got}


def test_every_host_has_a_row_with_its_role_and_workers() -> None:
    got = rows()
    assert list(got) == ["s", "a", "b", "c"]
    assert [(r.role, r.running, r.wanted, r.health) for r in got.values()] == [
        ("scheduler", 0, 0, "ok"), ("workers", 2, 2, "ok"), ("workers", 2, 2, "ok"),
        ("spare", 0, 0, "spare")]
    assert got["c"].state == "spare" and not any(r.error for r in got.values())


def test_a_worker_given_up_or_failed_shows_on_its_hosts_row() -> None:
    got = rows(lose="a-1", fail="b-0")
    assert (got["a"].running, got["a"].wanted, got["a"].health) == (1, 1, "ok")
    assert got["a"].error == "a-1: the remote agent was killed; not restarted"
    assert got["b"].error.startswith("b-0: failed to start: ")
    assert "no memory" in got["b"].error and got["b"].wanted == 1


def test_a_host_taken_out_or_left_out_says_why() -> None:
    health = HostHealth()
    a = next(k for k in plan_cluster(ClusterArgs(["s", "a"])).placement.worker_hosts)
    health.take_out(a, LOST, "unreachable for 120 s")
    got = rows(health, leave_out=True)
    assert (got["a"].health, got["a"].state, got["a"].error) == (
        LOST, LOST, "unreachable for 120 s")
    assert got["b"].wanted == 0 and "connection refused" in got["b"].error


def nanny_gave_up(limit: int, window: float) -> str:
    """What the agent says of a Nanny whose worker process died past *limit* restarts."""
    async def on_exit(code: Any) -> None:
        return None

    nanny = SimpleNamespace(_on_worker_exit=on_exit, status="Status.running",
                            close_gracefully=lambda reason: None)
    Servers.limit_restarts(nanny, True, limit, window)

    async def die() -> None:
        for _ in range(limit + 1):
            await nanny._on_worker_exit(1)

    asyncio.run(die())
    return str(nanny._sshdeploy_gave_up)


def test_a_hosts_restarts_count_those_its_nanny_made_beside_the_deaths_it_shows() -> None:
    """Issue 26, finding 10: "restarts 0" beside "died 6 times" (the Nanny's restarts, made
    on the host, were not counted; only those the controller made were)."""
    reason = nanny_gave_up(5, 60)
    assert "died 6 times" in reason
    plan = plan_cluster(ClusterArgs(["s", "a", "b"]))
    cluster = FakeCluster()
    roster = Roster(cluster, plan,  # type: ignore[arg-type]
                    lambda hp, kw: {"options": {"host": hp.host}})
    for w in plan.placement.workers:
        roster.want(w.name, roster.spec_for(w.host))
        cluster.workers[w.name] = FakeProcess()
        cluster.workers[w.name].address = ""  # type: ignore[attr-defined]
    restarts = WorkerRestarts(roster, limit=5, enabled=True, heartbeat_timeout=30)

    async def main() -> None:
        restarts.lost("b-0", "the remote agent exited")  # one restart, by the controller
        restarts.lost("a-0", reason)  # given up by its Nanny after 5 restarts of its own
        await restarts.close()

    asyncio.run(main())
    pool = HostPool(settings=plan.settings)
    assert plan.stage is not None
    got = {r.host: r for r in host_rows(
        roster, None, restarts=restarts, health=HostHealth(), pool=pool,
        stage=PreStart(plan.stage, pool, []), agents=WorkerAgents(pool, {}, LogBook()),
        scheduler_info={"workers": {}})}
    assert "died 6 times" in got["a"].error and got["a"].restarts == 5
    assert got["b"].restarts == 1
    restarts.forget("a-0")  # moved away: its restarts stay on the host they were made on
    a = next(k for k in plan.placement.worker_hosts if k[1] == "a")
    assert restarts.restarted[a] == 5
