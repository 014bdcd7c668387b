"""Who sends the environment's pack to whom (issue 29): the relay's plan, without a network.

The planner is pure; the driver runs here against fake transfers that record
what was sent from this machine, what was fetched from which holder, and
which servers were started and ended.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from sshdeploy.env.relay import PackServer, RelayPlanner, Step, network_of, plan_relay, run_relay
from sshdeploy.errors import EnvSyncError
from sshdeploy.settings import Settings

pytestmark = pytest.mark.timeout(30)


def drive(planner: RelayPlanner, refuse: dict[tuple[str, str], str] | None = None,
          ) -> list[Step]:
    """Run the plan synchronously: every step succeeds unless *refuse* names it."""
    refuse = refuse or {}
    order: list[Step] = []
    while not planner.finished:
        steps = planner.next_steps()
        assert steps, f"stuck: {planner.waiting}"
        for step in steps:
            order.append(step)
            kind = refuse.get((step.host, step.source or ""))
            if kind:
                planner.failed(step, kind)  # type: ignore[arg-type]
            else:
                planner.done(step)
    return order


def test_one_host_per_network_gets_it_from_here_the_others_from_holders() -> None:
    hosts = [(f"a{i}", f"10.0.0.{i + 2}") for i in range(6)] + [("b0", "10.0.9.2"),
                                                                 ("b1", "10.0.9.3")]
    steps = drive(plan_relay(hosts, [], fanout=8))
    direct = [s.host for s in steps if s.source is None]
    assert direct == ["a0", "b0"]
    assert len(steps) == 8
    fetched = {s.host: s.source for s in steps if s.source is not None}
    assert fetched == {"a1": "a0", "a2": "a0", "a3": "a0", "a4": "a0", "a5": "a0", "b1": "b0"}


def test_holders_serve_at_most_fanout_at_once_in_a_shallow_tree() -> None:
    planner = plan_relay([(f"h{i}", f"10.0.0.{i + 2}") for i in range(48)], [], fanout=3)
    # every host starts at once: a host serves the pack as soon as it is whole there
    wave = planner.next_steps()
    assert len(wave) == 48 and [s for s in wave if s.source is None] == [Step("h0", None)]
    served: dict[str, int] = {}
    for s in wave:
        if s.source is not None:
            served[s.source] = served.get(s.source, 0) + 1
    assert max(served.values()) == 3
    source = {s.host: s.source for s in wave}

    def hops(host: str) -> int:
        up = source[host]
        return 0 if up is None else 1 + hops(up)

    assert max(hops(h) for h in source) == 4  # 1 + 3 + 9 + 27 >= 48: four hops at most


def test_a_host_that_holds_it_from_an_earlier_start_is_the_source_nothing_from_here() -> None:
    steps = drive(plan_relay([("a", "10.0.0.2"), ("b", "10.0.0.3")], [("old", "10.0.0.9")], 8))
    assert steps == [Step("a", "old"), Step("b", "old")]


def test_a_corrupt_copy_is_refused_its_holder_serves_no_one_else_and_the_host_fetches_again(
) -> None:
    planner = plan_relay([("a", "10.0.0.2"), ("b", "10.0.0.3"), ("c", "10.0.0.4")],
                         [("bad", "10.0.0.9"), ("ok", "10.0.0.8")], fanout=1)
    first = planner.next_steps()
    assert first == [Step("a", "bad"), Step("b", "ok"), Step("c", "a")]
    planner.failed(first[0], "corrupt")
    assert "bad" in planner.bad
    planner.failed(first[2], "gone")  # c waited on a, whose server ends: nothing against a
    assert planner.bad == {"bad"} and "c" not in planner.tried
    planner.done(first[1])
    again = planner.next_steps()
    assert {s.host for s in again} == {"a", "c"}
    assert all(s.source in ("ok", "b") for s in again), again


def test_the_only_holder_refused_means_from_here() -> None:
    planner = plan_relay([("a", "10.0.0.2")], [("bad", "10.0.0.9")], fanout=8)
    assert planner.next_steps() == [Step("a", "bad")]
    planner.failed(Step("a", "bad"), "corrupt")
    assert planner.next_steps() == [Step("a", None)]


def test_hosts_that_cannot_reach_each_other_fall_back_to_this_machine() -> None:
    hosts = [(f"h{i}", None) for i in range(5)]  # behind a proxy: one network, unknown
    refuse = {(f"h{i}", src): "unreachable" for i in range(5) for src in ("h0", "h1", "h2")}
    steps = drive(plan_relay(hosts, [], fanout=8), refuse)
    tries = [s for s in steps if s.source is not None]
    # after two failed fetches and no success the network is sent to from here
    assert len(tries) <= 4
    assert {s.host for s in steps if s.source is None} == {f"h{i}" for i in range(5)}


def test_a_host_that_cannot_reach_one_holder_tries_another() -> None:
    planner = plan_relay([("a", "10.0.0.2"), ("b", "10.0.0.3")],
                         [("x", "10.0.0.8"), ("y", "10.0.0.9")], fanout=1)
    first = planner.next_steps()
    assert first == [Step("a", "x"), Step("b", "y")]
    planner.failed(first[0], "unreachable")
    planner.done(first[1])
    assert planner.next_steps() == [Step("a", "y")]


def test_networks_are_the_24_or_64_of_the_address_reached() -> None:
    assert network_of("10.1.2.3") == network_of("10.1.2.200") != network_of("10.1.3.3")
    assert network_of("fd00::1") == network_of("fd00::2") == "fd00::/64"
    assert network_of(None) == network_of("127.0.0.1") == network_of("not-an-ip") == "?"


def test_the_relay_settings() -> None:
    s = Settings.resolve()
    assert s.env_relay is True and s.env_relay_fanout == 8
    assert Settings.resolve(env_relay=False).env_relay is False


@dataclass
class FakeServer:
    host: str
    closed: list[tuple[str, bool]]

    async def close(self, drop: bool = False) -> None:
        self.closed.append((self.host, drop))

    def urls(self, reached_at: str | None) -> list[str]:
        return [f"http://{reached_at}:1/t"]


@dataclass
class Fakes:
    corrupt: set[str] = field(default_factory=set)
    sent: list[str] = field(default_factory=list)
    fetched: list[tuple[str, str]] = field(default_factory=list)
    closed: list[tuple[str, bool]] = field(default_factory=list)
    refused: list[tuple[str, str, str]] = field(default_factory=list)

    async def direct(self, host: str) -> None:
        await asyncio.sleep(0)
        self.sent.append(host)

    async def serve(self, host: str) -> PackServer:
        if host == "dead":
            raise EnvSyncError(host=host, what="serving", cause="no pack")
        return FakeServer(host, self.closed)  # type: ignore[return-value]

    async def fetch(self, host: str, source: str, server: PackServer) -> dict[str, Any]:
        await asyncio.sleep(0)
        self.fetched.append((host, source))
        if source in self.corrupt:
            return {"refused": "sha256 mismatch", "kind": "corrupt"}
        return {"received": 100}

    def run(self, planner: RelayPlanner) -> None:
        asyncio.run(run_relay(planner, self.direct, self.fetch, self.serve,
                              lambda h, s, why: self.refused.append((h, s, why))))


def test_the_driver_sends_once_from_here_and_ends_every_server() -> None:
    fakes = Fakes()
    fakes.run(plan_relay([(f"h{i}", f"10.0.0.{i + 2}") for i in range(4)], [], fanout=8))
    assert fakes.sent == ["h0"]
    assert sorted(fakes.fetched) == [("h1", "h0"), ("h2", "h0"), ("h3", "h0")]
    assert fakes.closed == [("h0", False)]


def test_the_driver_drops_a_refused_copy_and_sends_from_here_instead() -> None:
    fakes = Fakes(corrupt={"old"})
    fakes.run(plan_relay([("a", "10.0.0.2")], [("old", "10.0.0.9")], fanout=8))
    assert fakes.fetched == [("a", "old")] and fakes.sent == ["a"]
    assert fakes.refused == [("a", "old", "sha256 mismatch")]
    assert fakes.closed == [("old", True)]  # told to drop its copy


def test_a_holder_whose_server_does_not_start_is_passed_over() -> None:
    fakes = Fakes()
    fakes.run(plan_relay([("a", "10.0.0.2"), ("b", "10.0.0.3")], [("dead", "10.0.0.9")], 8))
    assert "a" in fakes.sent or "b" in fakes.sent
    assert all(src != "dead" for _h, src in fakes.fetched)


def test_a_send_from_here_that_fails_ends_the_relay_and_its_servers() -> None:
    fakes = Fakes()

    async def broken(host: str) -> None:
        if host == "b":
            raise EnvSyncError(host=host, what="env failed", cause="disk full")
        await fakes.direct(host)

    planner = plan_relay([("a", "10.0.0.2"), ("b", "10.0.9.3")], [("c", "10.0.0.4")], 8)
    with pytest.raises(EnvSyncError, match="disk full"):
        asyncio.run(run_relay(planner, broken, fakes.fetch, fakes.serve))
    assert fakes.closed == [("c", False)] or fakes.closed == []


def test_who_waits_on_a_host_whose_copy_is_refused_is_served_by_another() -> None:
    """h1 fetches from a corrupt holder while h2.. wait on h1 (served once whole there):
    h1's server ends at once, they fetch again, and nothing is held against h1."""
    has: dict[str, asyncio.Event] = {}
    closed: list[tuple[str, bool]] = []
    order: list[tuple[str, str | None]] = []

    class Waiting(FakeServer):
        async def close(self, drop: bool = False) -> None:
            closed.append((self.host, drop))
            has.setdefault(self.host, asyncio.Event())
            self.ended = True
            has[self.host].set()

    servers: dict[str, Waiting] = {}

    async def serve(host: str) -> PackServer:
        servers[host] = Waiting(host, closed)
        servers[host].ended = False  # type: ignore[attr-defined]
        return servers[host]  # type: ignore[return-value]

    async def direct(host: str) -> None:
        order.append((host, None))
        has.setdefault(host, asyncio.Event()).set()

    async def fetch(host: str, source: str, server: PackServer) -> dict[str, Any]:
        order.append((host, source))
        await has.setdefault(source, asyncio.Event()).wait()
        if source == "old" or getattr(server, "ended", False):
            return {"refused": "partial", "kind": "corrupt"}
        has.setdefault(host, asyncio.Event()).set()
        return {"received": 1}

    has["old"] = asyncio.Event()
    has["old"].set()
    planner = plan_relay([(f"h{i}", "10.0.0.2") for i in range(1, 6)], [("old", "10.0.0.9")],
                         fanout=1)
    asyncio.run(run_relay(planner, direct, fetch, serve))
    assert planner.finished and planner.bad == {"old"}
    assert sorted(planner.good) == ["h1", "h2", "h3", "h4", "h5", "old"]
    assert ("old", True) in closed
