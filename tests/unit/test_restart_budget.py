"""Restart budgets as a rate, and workers given up or waiting for their host, said loudly."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from distributed.core import Status

from sshdeploy.cluster.restarts import WorkerRestarts
from sshdeploy.errors import ConnectError
from sshdeploy.remote.agent.servers import RestartBudget, Servers

from .test_restarts import roster_of

pytestmark = pytest.mark.timeout(30)


def test_a_budget_is_a_rate_and_comes_back_after_a_quiet_window() -> None:
    budget = RestartBudget(3, window=60)
    assert [budget.spend(t) for t in (0, 5, 10)] == [True, True, True]
    assert budget.spend(11) is False  # a fourth death within 60 s: a loop
    assert budget.used(200) == 0  # ran fine for a window: the whole budget is back
    assert [budget.spend(t) for t in (200, 201, 202)] == [True, True, True]


class FakeCluster:
    """What WorkerRestarts reads of a SpecCluster."""

    def __init__(self, names: list[str]) -> None:
        self.status = Status.running
        host = SimpleNamespace(key=("h", 22), hostname="h")
        self.worker_spec: dict[str, Any] = {n: {"options": {"host": host}} for n in names}
        self.workers: dict[str, Any] = {}
        self.scheduler_comm = None
        self._cluster_manager_logs: list[tuple[Any, str]] = []
        self._created: set[Any] = set()
        self.started: list[str] = []

    async def _correct_state(self) -> None:
        self.started.extend(sorted(set(self.worker_spec) - set(self.workers)))

    def log(self) -> str:
        return "\n".join(line for _t, line in self._cluster_manager_logs)


def test_a_worker_lost_too_often_is_given_up_with_a_warning_and_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = FakeCluster(["h-0"])

    async def main() -> None:
        restarts = WorkerRestarts(roster_of(cluster), 1, True, 0.0, window=60)
        restarts.lost("h-0", "the remote agent was killed by SIGKILL")
        assert "restarting it in 1 s (1/1)" in restarts.steps["h-0"]
        restarts.lost("h-0", "the remote agent was killed by SIGKILL")
        await restarts.close()

    with caplog.at_level(logging.WARNING, logger="sshdeploy.cluster.restarts"):
        asyncio.run(main())
    assert cluster.worker_spec == {}
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("h-0" in m and "not restarted" in m and "1 restarts within 60 s" in m
               for m in messages), messages
    assert any("no workers left" in m for m in messages), messages
    assert "not restarted" in cluster.log() and "no workers left" in cluster.log()


def test_a_restart_waits_for_an_unreachable_host_without_spending_its_budget() -> None:
    cluster = FakeCluster(["h-0"])
    tries: list[int] = []
    steps: list[str] = []

    async def reach(host: Any) -> None:
        tries.append(1)
        steps.append(restarts.steps.get("h-0", ""))
        if len(tries) < 3:
            raise ConnectError(host="root@h", cause="timed out")

    async def main() -> None:
        nonlocal restarts
        restarts = WorkerRestarts(roster_of(cluster), 1, True, 0.0, window=60,
                                  reach=reach)
        restarts.lost("h-0", "the SSH connection was lost")
        for _ in range(500):
            if cluster.started:
                break
            await asyncio.sleep(0.01)
        await restarts.close()

    restarts: WorkerRestarts
    asyncio.run(main())
    assert cluster.started == ["h-0"]
    assert len(tries) == 3
    assert "not reachable" in steps[2] and "timed out" in steps[2], steps
    assert restarts.budgets["h-0"].used(0) <= 1 and "h-0" not in restarts.steps


def test_the_agent_gives_a_worker_up_only_past_the_rate_and_names_its_memory_limit() -> None:
    exits: list[Any] = []
    closed: list[str] = []

    async def on_exit(code: Any) -> None:
        exits.append(code)

    nanny = SimpleNamespace(
        _on_worker_exit=on_exit, status="Status.running",
        close_gracefully=lambda reason: closed.append(reason),
        memory_manager=SimpleNamespace(memory_limit=2 * 2**30),
    )
    Servers.limit_restarts(nanny, True, 2, 60)

    async def main() -> None:
        for code in (1, 1):
            await nanny._on_worker_exit(code)
        assert not closed
        await nanny._on_worker_exit(-15)

    asyncio.run(main())
    assert exits == [1, 1, -15] and closed
    assert "memory limit 2.0 GiB" in nanny._sshdeploy_gave_up
    assert "2 restarts within 60 s" in nanny._sshdeploy_gave_up
