"""Unit tests for sshdeploy.ssh.pool with many hosts: slots, jump-host caps, backoff, limits.

``asyncssh.connect`` is replaced by a fake that records how many attempts run
at once (overall and per jump host) and answers per host name: connected,
refused, dropped during the handshake, or held until the test lets it go.
Name lookups (:func:`sshdeploy.ssh.pool.lookup`) are replaced by one that
refuses the names starting with ``bad`` (no DNS traffic).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sshdeploy.errors import ConnectError
from sshdeploy.hosts import Host
from sshdeploy.ssh import pool as pool_mod
from sshdeploy.ssh.pool import Connection, HostPool, backoff, raise_open_files
from sshdeploy.ssh.sshlib import asyncssh

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")

#: No file of ~/.ssh is read; an empty known_hosts (the fake never checks a key).
NO_FILES = {"known_hosts": asyncssh.import_known_hosts(""), "config": [], "agent_path": None,
            "client_keys": []}


def run(coro: Awaitable[T], timeout: float = 20) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


class FakeConn:
    """What the pool reads of a connection."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return ("10.0.0.1", 22) if name == "peername" else None

    def is_closed(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        return None


@dataclass
class FakeSSH:
    """A stand-in for asyncssh.connect that records concurrency and answers by host name."""

    delay: float = 0.0
    drops: dict[str, int] = field(default_factory=dict)  # host -> attempts to drop first
    held: dict[str, asyncio.Event] = field(default_factory=dict)  # host -> released when set
    calls: list[str] = field(default_factory=list)
    running: int = 0
    most: int = 0
    via: Counter[str] = field(default_factory=Counter)
    most_via: Counter[str] = field(default_factory=Counter)

    async def connect(self, options: asyncssh.SSHClientConnectionOptions | None = None,
                      **kw: Any) -> Any:
        host = str(kw["host"])
        tunnel = kw.get("tunnel") or (options.tunnel if options is not None else None)
        jump = tunnel if isinstance(tunnel, str) else None
        self.calls.append(host)
        self.running += 1
        self.most = max(self.most, self.running)
        if jump:
            self.via[jump] += 1
            self.most_via[jump] = max(self.most_via[jump], self.via[jump])
        try:
            if host in self.held:
                await self.held[host].wait()
            await asyncio.sleep(self.delay)
            if host.startswith("refused"):
                raise ConnectionRefusedError(111, "Connection refused")
            if self.drops.get(host, 0) > 0:
                self.drops[host] -= 1
                raise asyncssh.ConnectionLost("Connection lost")
            return FakeConn(host)
        finally:
            self.running -= 1
            if jump:
                self.via[jump] -= 1


@pytest.fixture
def fake_ssh(monkeypatch: pytest.MonkeyPatch) -> FakeSSH:
    fake = FakeSSH()
    monkeypatch.setattr(pool_mod.asyncssh, "connect", fake.connect)
    monkeypatch.setattr(pool_mod, "lookup", lambda host, port, **kw: asyncio.ensure_future(
        fake_getaddrinfo(host, port, **kw)))
    return fake


lookups: list[str] = []


async def fake_getaddrinfo(host: str, port: Any, **kw: Any) -> list[Any]:
    lookups.append(host)
    if host.startswith("bad"):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 22))]


def no_dns() -> None:
    """Name lookups go to :func:`fake_getaddrinfo` (see ``fake_ssh``); forget earlier ones."""
    lookups.clear()


async def connect_all(pool: HostPool, hosts: list[Host]) -> dict[str, Any]:
    got = await asyncio.gather(*(pool.get(h) for h in hosts), return_exceptions=True)
    return {h.hostname: r for h, r in zip(hosts, got, strict=True)}


def test_names_that_do_not_resolve_fail_without_waiting_for_a_slot(fake_ssh: FakeSSH) -> None:
    """One slot, held by a slow host: 200 bad names still fail at once, never dialled."""

    async def flow() -> None:
        no_dns()
        release = fake_ssh.held["slow"] = asyncio.Event()
        async with HostPool(connect_options=NO_FILES, parallelism=1, attempts=3) as pool:
            slow = asyncio.ensure_future(pool.get(Host("slow")))
            bad = await asyncio.wait_for(
                connect_all(pool, [Host(f"bad{i}") for i in range(200)]), 5)
            assert not slow.done()  # the slot was never free meanwhile
            assert all(isinstance(e, ConnectError) for e in bad.values())
            assert all("host name does not resolve" in e.cause for e in bad.values())
            assert isinstance(bad["bad7"].__cause__, socket.gaierror)
            assert fake_ssh.calls == ["slow"]  # no bad name reached connect
            assert pool.state(Host("bad7")) == "failed"
            release.set()
            assert isinstance(await slow, Connection)

    run(flow())


def test_refused_hosts_give_their_slot_back_and_are_not_retried(fake_ssh: FakeSSH) -> None:
    """300 refused hosts and 3 good ones, 4 slots: never more than 4 at once, each refused
    host dialled once, and the good ones connect (a slot kept by a failure would hang it)."""

    async def flow() -> None:
        no_dns()
        fake_ssh.delay = 0.001
        hosts = [Host(f"refused{i}") for i in range(300)] + [Host(f"good{i}") for i in range(3)]
        async with HostPool(connect_options=NO_FILES, parallelism=4, attempts=4) as pool:
            got = await connect_all(pool, hosts)
        assert fake_ssh.most <= 4
        assert len(fake_ssh.calls) == 303
        assert sum(isinstance(v, ConnectError) and v.cause == "connection refused"
                   for v in got.values()) == 300
        assert all(isinstance(got[f"good{i}"], Connection) for i in range(3))

    run(flow())


def test_a_jump_host_reached_per_target_gets_its_own_cap(
    fake_ssh: FakeSSH, tmp_path: Path
) -> None:
    """ProxyJump from an ssh config (a connection to the jump host per target): at most
    ``jump_parallelism`` attempts through it at once, while direct hosts use the other slots."""
    config = tmp_path / "ssh_config"
    config.write_text("Host far*\n    ProxyJump bastion\n")

    async def flow() -> None:
        no_dns()
        fake_ssh.delay = 0.02
        opts = {**NO_FILES, "config": [str(config)]}
        far = [Host(f"far{i}") for i in range(24)]
        near = [Host(f"near{i}") for i in range(12)]
        async with HostPool(connect_options=opts, parallelism=16, jump_parallelism=3) as pool:
            got = await connect_all(pool, far + near)
        assert all(isinstance(c, Connection) for c in got.values())
        assert fake_ssh.most_via["bastion"] == 3
        assert fake_ssh.most > 3  # the direct hosts were not held behind the jump host's cap
        assert fake_ssh.most <= 16
        assert not any(h.startswith("far") for h in lookups)  # the jump host resolves them

    run(flow())


def test_a_shared_jump_connection_is_not_capped(fake_ssh: FakeSSH) -> None:
    """``tunnel="bastion"``: one pooled connection to it, so its targets use every slot."""

    async def flow() -> None:
        no_dns()
        fake_ssh.delay = 0.02
        opts = {**NO_FILES, "tunnel": "bastion"}
        async with HostPool(connect_options=opts, parallelism=16, jump_parallelism=2) as pool:
            got = await connect_all(pool, [Host(f"far{i}") for i in range(12)])
        assert all(isinstance(c, Connection) for c in got.values())
        assert fake_ssh.calls.count("bastion") == 1
        assert fake_ssh.most > 2

    run(flow())


def test_a_dropped_host_backs_off_without_holding_the_slot(fake_ssh: FakeSSH) -> None:
    """One slot; A is dropped twice: B connects during A's pause, then A gets in."""

    async def flow() -> None:
        no_dns()
        fake_ssh.drops["a"] = 2
        async with HostPool(connect_options=NO_FILES, parallelism=1, attempts=4) as pool:
            first = asyncio.ensure_future(pool.get(Host("a")))
            while not fake_ssh.calls:  # A holds the slot first
                await asyncio.sleep(0)
            b = await pool.get(Host("b"))
            a = await first
        assert (a.host, b.host) == ("a", "b")
        assert fake_ssh.calls[:2] == ["a", "b"]
        assert fake_ssh.calls.count("a") == 3

    run(flow())


def test_drops_beyond_the_attempts_name_maxstartups_and_the_setting(
    fake_ssh: FakeSSH, tmp_path: Path
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host far*\n    ProxyJump bastion\n")

    async def flow() -> None:
        no_dns()
        fake_ssh.drops.update({"near": 9, "far": 9})
        opts = {**NO_FILES, "config": [str(config)]}
        async with HostPool(connect_options=opts, attempts=2) as pool:
            got = await connect_all(pool, [Host("near"), Host("far")])
        near, far = got["near"], got["far"]
        assert isinstance(near, ConnectError) and isinstance(far, ConnectError)
        assert near.cause.startswith(
            "the server closed the connection during the SSH handshake, 2 times")
        assert "MaxStartups" in near.remedy and "sshdeploy.connect-parallelism" in near.remedy
        assert "(through the jump host bastion)" in far.cause
        assert "sshdeploy.jump-host-parallelism" in far.remedy
        assert isinstance(near.__cause__, asyncssh.ConnectionLost)

    run(flow())


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    pauses = [backoff(a) for a in range(1, 10) for _ in range(20)]
    assert min(pauses) >= 0.125 and max(pauses) <= 7.5
    assert len({round(p, 6) for p in pauses[:20]}) > 1  # jittered
    assert backoff(9, rand=lambda: 0.5) == pool_mod.BACKOFF_CAP


def test_the_open_files_limit_is_raised_to_what_the_hosts_need() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = pool_mod.FILES_BASE + pool_mod.FILES_PER_HOST * 500
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"hard open-files limit {hard} is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (300, hard))
    try:
        assert raise_open_files(500) == (wanted, wanted)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (wanted, hard)
        assert raise_open_files(10)[0] == wanted  # never lowered
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_open_files_hard_limit_too_low_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    set_to: list[tuple[int, int]] = []
    monkeypatch.setattr(pool_mod.resource, "getrlimit", lambda _: (256, 1024))
    monkeypatch.setattr(pool_mod.resource, "setrlimit", lambda _, v: set_to.append(v))
    monkeypatch.setattr(pool_mod, "_warned_files", [0])
    with caplog.at_level(logging.WARNING, logger="sshdeploy.ssh.pool"):
        assert raise_open_files(3000) == (1024, 12256)
    assert set_to == [(1024, 1024)]
    assert "the open-files limit is 1024 (hard limit 1024) but 3000 hosts need about 12256" \
        in caplog.text


def test_with_many_hosts_the_first_failure_is_said_at_once_then_a_count(
    fake_ssh: FakeSSH, caplog: pytest.LogCaptureFixture
) -> None:
    async def flow() -> None:
        no_dns()
        fake_ssh.held["slow"] = asyncio.Event()
        async with HostPool(connect_options=NO_FILES, parallelism=8) as pool:
            pool._failures.every = 0.05
            slow = asyncio.ensure_future(pool.get(Host("slow")))
            await connect_all(pool, [Host(f"bad{i}") for i in range(30)])
            first = [r.getMessage() for r in caplog.records]
            assert len(first) == 1, first
            deadline = asyncio.get_running_loop().time() + 5
            while len(caplog.records) < 2 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            fake_ssh.held["slow"].set()
            await slow
        msgs = [r.getMessage() for r in caplog.records]
        assert msgs[0].startswith("[bad0] ssh: cannot connect: host name does not resolve")
        assert "the first of 31 hosts to fail to connect; the others go on" in msgs[0]
        assert msgs[1] == "30 of 31 hosts failed to connect so far"

    with caplog.at_level(logging.WARNING, logger="sshdeploy.ssh.pool"):
        run(flow())


def test_with_few_hosts_a_failure_is_not_said_twice(
    fake_ssh: FakeSSH, caplog: pytest.LogCaptureFixture
) -> None:
    async def flow() -> None:
        no_dns()
        async with HostPool(connect_options=NO_FILES) as pool:
            await connect_all(pool, [Host("bad1"), Host("good")])

    with caplog.at_level(logging.WARNING, logger="sshdeploy.ssh.pool"):
        run(flow())
    assert caplog.records == []
