"""A start that cannot succeed does not wait for names the resolver has not answered yet.

:func:`sshdeploy.cluster.build.connect_failures` (issue 29, must-hold 2): once a
host failed to connect (no ``min_workers``), names still being looked up
:data:`~sshdeploy.cluster.build.LOOKUP_GRACE` seconds later are reported as
such instead of waited for; a connect already past its lookup is waited for.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from sshdeploy.cluster import build
from sshdeploy.errors import ConnectError
from sshdeploy.hostfile import parse_host
from sshdeploy.hosts import Host

pytestmark = pytest.mark.timeout(30)


class _Pool:
    """bad* fail at once; slow* are looked up for ever; tcp* connect after a while."""

    def __init__(self) -> None:
        self.released = asyncio.Event()

    def as_connected(self, host: Host) -> str:
        return f"root@{host.hostname}"

    def resolving(self, host: Host) -> bool:
        return host.hostname.startswith("slow")

    async def get(self, host: Host) -> object:
        name = host.hostname
        if name.startswith("bad"):
            raise ConnectError(host=self.as_connected(host), cause="host name does not resolve")
        if name.startswith("tcp"):
            await self.released.wait()
            raise ConnectError(host=self.as_connected(host), cause="timed out")
        if name.startswith("slow"):
            await asyncio.sleep(3600)
        return object()


def _plan(names: list[str]) -> Any:
    hosts = {n: SimpleNamespace(host=parse_host(n)) for n in names}
    placement = SimpleNamespace(first_worker_hosts=lambda: hosts,
                                scheduler=SimpleNamespace(host=parse_host("sched")))
    return SimpleNamespace(min_workers=None, placement=placement)


def test_names_still_looked_up_are_reported_not_waited_for(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "LOOKUP_GRACE", 0.05)

    async def go() -> dict[str, Any]:
        pool = _Pool()
        first = asyncio.ensure_future(pool.get(parse_host("sched")))
        names = ["good1", "bad1", "slow1", "bad2", "slow2"]
        return await asyncio.wait_for(
            build.connect_failures(_plan(names), pool, first, named=False), 10)  # type: ignore[arg-type]

    failed = asyncio.run(go())
    assert sorted(failed) == ["root@bad1", "root@bad2", "root@slow1", "root@slow2"]
    assert "does not resolve" in str(failed["root@bad1"])
    assert "still being looked up" in str(failed["root@slow2"])
    assert all(isinstance(e, ConnectError) for e in failed.values())


def test_a_connect_past_its_lookup_is_waited_for() -> None:
    async def go() -> dict[str, Any]:
        pool = _Pool()
        first = asyncio.ensure_future(pool.get(parse_host("sched")))
        task = asyncio.ensure_future(build.connect_failures(
            _plan(["bad1", "tcp1"]), pool, first, named=False))  # type: ignore[arg-type]
        await asyncio.sleep(build.LOOKUP_GRACE + 0.2)
        assert not task.done()  # tcp1 connects (its connect timeout bounds it)
        pool.released.set()
        return await asyncio.wait_for(task, 10)

    failed = asyncio.run(go())
    assert sorted(failed) == ["root@bad1", "root@tcp1"]
    assert "timed out" in str(failed["root@tcp1"])


def test_with_min_workers_nothing_is_doomed() -> None:
    async def go() -> dict[str, Any]:
        pool = _Pool()
        plan = _plan(["bad1"])
        plan.min_workers = 1
        first = asyncio.ensure_future(pool.get(parse_host("sched")))
        return await build.connect_failures(plan, pool, first, named=False)  # type: ignore[arg-type]

    assert asyncio.run(go()) == {}
