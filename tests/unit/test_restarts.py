"""The restart policy of lost workers (sshdeploy.cluster.restarts), against a fake cluster.

No network and no real timers are waited for: a scheduled restart is read from
its timer (when it would fire) and run by hand.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from distributed.core import Status

from sshdeploy.arguments import ClusterArgs
from sshdeploy.cluster.restarts import GAVE_UP, WorkerRestarts
from sshdeploy.cluster.roster import Roster
from sshdeploy.hosts import Host
from sshdeploy.plan import plan_cluster
from sshdeploy.remote.agent.servers import RestartBudget
from sshdeploy.ssh.channel import CONNECTION_LOST

pytestmark = pytest.mark.timeout(30)


class FakeComm:
    def __init__(self) -> None:
        self.unregistered: list[str] = []

    async def unregister(self, address: str, stimulus_id: str, close: bool) -> None:
        assert stimulus_id.startswith("sshdeploy-lost-") and close is False
        self.unregistered.append(address)


class FakeWorker:
    def __init__(self, address: str) -> None:
        self.address = address


class FakeCluster:
    """What WorkerRestarts uses of a SpecCluster."""

    def __init__(self, names: list[str]) -> None:
        self.status = Status.running
        host = Host("node2", user="u", port=22)
        self.worker_spec: dict[str, Any] = {n: {"options": {"host": host}} for n in names}
        self.workers: dict[str, Any] = {
            n: FakeWorker(f"tcp://10.0.0.2:{4000 + i}")
            for i, n in enumerate(names)}
        self._created: set[Any] = set(self.workers.values())
        self.scheduler_comm = FakeComm()
        self.corrected = 0
        self.fail_correct = False
        self._cluster_manager_logs: list[Any] = []

    async def _correct_state(self) -> None:
        self.corrected += 1
        if self.fail_correct:
            raise RuntimeError("cannot start")


def roster_of(cluster: Any) -> Roster:
    """A roster of a fake cluster (its plan only places specs, which these tests never do)."""
    return Roster(cluster, plan_cluster(ClusterArgs(["s", "node2"])),
                  lambda hp, kw: {"options": {"host": hp.host}})


def died(r: WorkerRestarts, name: str, times: int) -> None:
    """Record *times* earlier deaths of *name*, just now (within the budget's window)."""
    r.budgets[name] = RestartBudget(r.limit, r.window)
    r.budgets[name].deaths = [time.monotonic()] * times


def delays(r: WorkerRestarts) -> list[float]:
    """Seconds until each pending restart fires."""
    loop = asyncio.get_running_loop()
    return sorted(round(t.when() - loop.time()) for t in r._timers)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_lost_worker_is_unregistered_at_once_and_restarted_after_a_second() -> None:
    async def main() -> None:
        c = FakeCluster(["node2-0"])
        r = WorkerRestarts(roster_of(c), limit=3, enabled=True, heartbeat_timeout=30)
        r.lost("node2-0", "the agent exited")
        assert delays(r) == [1]
        await asyncio.gather(*r._tasks)
        assert c.scheduler_comm.unregistered == ["tcp://10.0.0.2:4000"]
        assert r.restarted == {("u", "node2", 22): 1} and "node2-0" in c.worker_spec
        await r.close()
    run(main())


def test_each_restart_of_a_worker_waits_twice_as_long() -> None:
    async def main() -> None:
        c = FakeCluster(["a", "b"])
        r = WorkerRestarts(roster_of(c), limit=5, enabled=True, heartbeat_timeout=30)
        died(r, "a", 2)
        r.lost("a", "killed")
        r.lost("b", "killed")
        assert delays(r) == [1, 4]
        await r.close()
    run(main())


def test_a_worker_lost_with_its_connection_waits_for_the_heartbeat_timeout() -> None:
    async def main() -> None:
        c = FakeCluster(["a"])
        r = WorkerRestarts(roster_of(c), limit=5, enabled=True, heartbeat_timeout=30)
        r.lost("a", CONNECTION_LOST)
        assert delays(r) == [30]
        await r.close()
    run(main())


@pytest.mark.parametrize(("enabled", "tries", "reason", "why"), [
    (False, 0, "killed", "restarts are off"),
    (True, 3, "killed", "it was lost 4 times within 60 s"),
    (True, 0, f"worker died; {GAVE_UP}", "it died in a loop"),
])
def test_a_worker_given_up_on_leaves_the_spec_and_is_shown_on_its_host(
        enabled: bool, tries: int, reason: str, why: str,
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        c = FakeCluster(["a"])
        r = WorkerRestarts(roster_of(c), limit=3, enabled=enabled, heartbeat_timeout=30)
        died(r, "a", tries)
        r.lost("a", reason)
        assert delays(r) == []
        assert "a" not in c.worker_spec and "a" not in c.workers
        assert r.given_up == {"a": (("u", "node2", 22), f"a: {reason}; not restarted")}
        await r.close()
    run(main())
    assert f"not restarted ({why}" in caplog.text


def test_nothing_happens_for_a_closing_cluster_or_an_unwanted_worker() -> None:
    async def main() -> None:
        c = FakeCluster(["a"])
        r = WorkerRestarts(roster_of(c), limit=3, enabled=True, heartbeat_timeout=30)
        r.lost("scaled-away", "killed")
        c.status = Status.closing
        r.lost("a", "killed")
        assert delays(r) == [] and not r._tasks and r.restarted == {}
        await r.close()
    run(main())


def test_a_restart_forgets_the_old_process_and_corrects_the_state() -> None:
    async def main() -> None:
        c = FakeCluster(["a"])
        old = c.workers["a"]
        r = WorkerRestarts(roster_of(c), limit=3, enabled=True, heartbeat_timeout=30)
        await r._restart("a", "killed")
        assert "a" not in c.workers and old not in c._created and c.corrected == 1
        await r.close()
    run(main())


def test_a_failed_restart_counts_against_the_limit() -> None:
    async def main() -> None:
        c = FakeCluster(["a"])
        c.fail_correct = True
        r = WorkerRestarts(roster_of(c), limit=1, enabled=True, heartbeat_timeout=30)
        died(r, "a", 1)
        await r._restart("a", "killed")
        assert r.given_up["a"][1] == "a: restart failed: cannot start; not restarted"
        assert "a" not in c.worker_spec
        await r.close()
    run(main())


def test_close_cancels_pending_restarts_and_nothing_runs_after() -> None:
    async def main() -> None:
        c = FakeCluster(["a"])
        r = WorkerRestarts(roster_of(c), limit=3, enabled=True, heartbeat_timeout=30)
        r.lost("a", "killed")
        timers = list(r._timers)
        await r.close()
        assert all(t.cancelled() for t in timers) and not r._timers and not r._tasks
        r.lost("a", "killed")  # after close: ignored
        assert not r._timers and c.corrected == 0
    run(main())
