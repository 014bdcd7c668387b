"""Unit tests for sshdeploy.ssh.pool: connect options, error classes, and the connection flow.

The flow tests run against in-process asyncssh servers on 127.0.0.1, port 0,
with throwaway keys and a known_hosts built for the test; a small TCP proxy in
front of a server drops the first connections to play sshd's MaxStartups.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from sshdeploy import settings as config
from sshdeploy.errors import (
    AuthenticationError,
    ConnectError,
    HostKeyError,
    SSHDeployError,
    failures_by_host,
)
from sshdeploy.hosts import Host
from sshdeploy.ssh.pool import Connection, HostPool, classify, connect_kwargs
from sshdeploy.ssh.sshlib import asyncssh

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 20) -> T:
    """Run *coro* in a fresh event loop, bounded by *timeout* seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


# ------------------------------------------------------------------ connect_kwargs


def test_connect_kwargs_defaults_from_config() -> None:
    kw = connect_kwargs(Host("node1"), None)
    assert kw == {
        "host": "node1",
        "connect_timeout": config.get("connect-timeout"),
        "keepalive_interval": config.get("keepalive-interval"),
        "keepalive_count_max": config.get("keepalive-count-max"),
    }
    assert "username" not in kw and "port" not in kw


def test_connect_kwargs_host_user_and_port_win() -> None:
    opts = {"username": "bob", "port": 22, "client_keys": ["k"]}
    kw = connect_kwargs(Host("node1", user="alice", port=2222), opts)
    assert (kw["host"], kw["username"], kw["port"]) == ("node1", "alice", 2222)
    assert kw["client_keys"] == ["k"]
    assert opts == {"username": "bob", "port": 22, "client_keys": ["k"]}  # not mutated


def test_connect_kwargs_options_fill_unset_user_and_port() -> None:
    kw = connect_kwargs(Host("node1"), {"username": "bob", "port": 2200})
    assert (kw["username"], kw["port"]) == ("bob", 2200)


def test_connect_kwargs_callers_timeouts_win() -> None:
    kw = connect_kwargs(Host("n"), {"connect_timeout": 1.5, "keepalive_interval": 0})
    assert kw["connect_timeout"] == 1.5
    assert kw["keepalive_interval"] == 0
    assert kw["keepalive_count_max"] == config.get("keepalive-count-max")


def test_connect_kwargs_follow_dask_config() -> None:
    import dask.config

    with dask.config.set({"sshdeploy.connect-timeout": 3, "sshdeploy.keepalive-interval": 7}):
        kw = connect_kwargs(Host("n"), {})
    assert (kw["connect_timeout"], kw["keepalive_interval"]) == (3, 7)


def test_pool_display() -> None:
    pool = HostPool(connect_options={"username": "bob", "port": 2200})
    assert pool.as_connected(Host("node1")) == "bob@node1:2200"
    assert pool.as_connected(Host("node1", user="alice", port=22)) == "alice@node1:22"
    assert pool.as_connected(Host("::1", port=22)) == "bob@[::1]:22"
    pool.set_options(Host("node2"), {"username": "carol"})
    pool.set_options(Host("node3"), None)  # None keeps the pool-wide options
    assert pool.as_connected(Host("node2")) == "carol@node2"
    assert pool.as_connected(Host("node3")) == "bob@node3:2200"


def test_pool_settings_from_config() -> None:
    pool = HostPool()
    assert pool.parallelism == config.get("connect-parallelism")
    assert pool.attempts == config.get("connect-attempts")
    assert HostPool(parallelism=2, attempts=1).attempts == 1


# ------------------------------------------------------------------ classify

WHERE = "alice@node1:2222"


@pytest.mark.parametrize(
    ("exc", "cls", "text"),
    [
        (asyncssh.HostKeyNotVerifiable("Host key is not trusted"), HostKeyError,
         "host key not trusted: Host key is not trusted"),
        (asyncssh.PermissionDenied("Permission denied"), AuthenticationError,
         "authentication refused: Permission denied"),
        (socket.gaierror(-2, "Name or service not known"), ConnectError,
         "host name does not resolve"),
        (asyncio.TimeoutError(), ConnectError, "cannot connect: timed out"),
        (TimeoutError("x"), ConnectError, "cannot connect: timed out"),
        (ConnectionRefusedError(111, "Connection refused"), ConnectError,
         "cannot connect: connection refused"),
        (asyncssh.ConnectionLost("Connection lost"), ConnectError,
         "cannot connect: ConnectionLost: Connection lost"),
        (OSError(113, "No route to host"), ConnectError,
         "no route to that address ([Errno 113] No route to host)"),
        (OSError(24, "Too many open files"), ConnectError,
         "this machine ran out of file descriptors ([Errno 24] Too many open files)"),
    ],
)
def test_classify(exc: BaseException, cls: type, text: str) -> None:
    err = classify(WHERE, exc)
    assert type(err) is cls
    assert err.host == WHERE
    msg = str(err)
    assert msg.startswith(f"[{WHERE}] ssh: ")
    assert text in msg
    assert err.remedy and err.remedy in msg


def test_classify_remedies_are_specific() -> None:
    assert "DNS" in str(classify(WHERE, socket.gaierror(-2, "x")))
    assert "sshd running" in str(classify(WHERE, ConnectionRefusedError()))
    assert "known_hosts" in str(classify(WHERE, asyncssh.HostKeyNotVerifiable("x")))
    assert "--ssh-private-key" in str(classify(WHERE, asyncssh.PermissionDenied("x")))
    # an exception without text still says what it was
    assert classify(WHERE, OSError()).cause == "OSError: OSError"


# ------------------------------------------------------------------ in-process servers


@dataclass
class SSHServer:
    """An asyncssh server on 127.0.0.1 and what it saw."""

    port: int
    host_key: asyncssh.SSHKey
    server: asyncssh.SSHAcceptor
    connections: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    def known_hosts(self, port: int | None = None) -> asyncssh.SSHKnownHosts:
        key = self.host_key.export_public_key().decode().strip()
        return asyncssh.import_known_hosts(f"[127.0.0.1]:{port or self.port} {key}\n")

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start_ssh_server(client_key: asyncssh.SSHKey) -> SSHServer:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    seen: list[str] = []
    lost: list[str] = []

    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            seen.append(str(conn.get_extra_info("peername")))

        def connection_lost(self, exc: Exception | None) -> None:
            lost.append(repr(exc))

    authorized = asyncssh.import_authorized_keys(
        client_key.export_public_key().decode()
    )
    server = await asyncssh.create_server(
        Server, "127.0.0.1", 0, server_host_keys=[host_key],
        authorized_client_keys=authorized,
    )
    port = server.sockets[0].getsockname()[1]
    return SSHServer(port=port, host_key=host_key, server=server, connections=seen, lost=lost)


@dataclass
class Proxy:
    """A TCP proxy that drops the first *drop* connections, then forwards."""

    target_port: int
    drop: int = 0
    port: int = 0
    accepted: int = 0
    server: asyncio.AbstractServer | None = None

    async def start(self) -> Proxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.accepted <= self.drop:
            writer.close()  # what sshd does past MaxStartups
            return
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def client_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def client_options(srv: SSHServer, key: asyncssh.SSHKey, **kw: Any) -> dict[str, Any]:
    """Options that use only this test's key and known_hosts, never ~/.ssh or an agent."""
    return {
        "known_hosts": srv.known_hosts(kw.pop("known_port", None)),
        "client_keys": [key],
        "agent_path": None,
        "config": [],
        "connect_timeout": 5,
        **kw,
    }


Flow = Callable[[SSHServer], Awaitable[None]]


def with_server(client_key: asyncssh.SSHKey, flow: Flow, timeout: float = 20) -> None:
    async def main() -> None:
        srv = await start_ssh_server(client_key)
        try:
            await flow(srv)
        finally:
            await srv.close()

    run(main(), timeout)


# ------------------------------------------------------------------ flow


def test_connect_and_share_one_connection_per_host(client_key: asyncssh.SSHKey) -> None:
    async def flow(srv: SSHServer) -> None:
        host = Host("127.0.0.1", user="tester", port=srv.port)
        async with HostPool(connect_options=client_options(srv, client_key)) as pool:
            # concurrent first uses: single flight
            c1, c2 = await asyncio.gather(pool.get(host), pool.get(host))
            c3 = await pool.get(host)
            assert c1 is c2 is c3
            assert isinstance(c1, Connection)
            assert c1.host == f"tester@127.0.0.1:{srv.port}"
            assert c1.address == "127.0.0.1"
            assert len(srv.connections) == 1
            # the same (user, host, port) given again shares it too
            assert await pool.get(Host("127.0.0.1", user="tester", port=srv.port)) is c1
            # a different user is another connection
            other = await pool.get(Host("127.0.0.1", user="other", port=srv.port))
            assert other is not c1
            assert len(srv.connections) == 2
        # close() closes every connection
        deadline = time.monotonic() + 5
        while len(srv.lost) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(srv.lost) == 2

    with_server(client_key, flow)


async def connect_each(pool: HostPool, hosts: list[Host]) -> dict[str, object]:
    """Connect to every host at once: ``user@host:port`` -> Connection or the error."""
    results = await asyncio.gather(*(pool.get(h) for h in hosts), return_exceptions=True)
    return {pool.as_connected(h): r for h, r in zip(hosts, results, strict=True)}


def test_one_connection_per_distinct_host(
    client_key: asyncssh.SSHKey,
) -> None:
    async def flow(srv: SSHServer) -> None:
        a = Host("127.0.0.1", user="a", port=srv.port)
        b = Host("127.0.0.1", user="b", port=srv.port)
        async with HostPool(connect_options=client_options(srv, client_key)) as pool:
            conns = await connect_each(pool, [a, b, a, Host("127.0.0.1", user="a", port=srv.port)])
            assert all(isinstance(c, Connection) for c in conns.values())
            assert set(conns) == {f"a@127.0.0.1:{srv.port}", f"b@127.0.0.1:{srv.port}"}
            assert len(srv.connections) == 2

    with_server(client_key, flow)


def test_dropped_connections_are_retried(client_key: asyncssh.SSHKey) -> None:
    async def flow(srv: SSHServer) -> None:
        proxy = await Proxy(srv.port, drop=2).start()
        try:
            host = Host("127.0.0.1", user="tester", port=proxy.port)
            opts = client_options(srv, client_key, known_port=proxy.port)
            async with HostPool(connect_options=opts, attempts=3) as pool:
                conn = await pool.get(host)
                assert conn.host == f"tester@127.0.0.1:{proxy.port}"
            assert proxy.accepted == 3
            assert len(srv.connections) == 1
        finally:
            await proxy.close()

    with_server(client_key, flow)


def test_drops_beyond_the_attempts_fail_with_connect_error(
    client_key: asyncssh.SSHKey,
) -> None:
    async def flow(srv: SSHServer) -> None:
        proxy = await Proxy(srv.port, drop=2).start()
        try:
            host = Host("127.0.0.1", port=proxy.port)
            opts = client_options(srv, client_key, known_port=proxy.port)
            async with HostPool(connect_options=opts, attempts=2) as pool:
                with pytest.raises(ConnectError) as info:
                    await pool.get(host)
                assert proxy.accepted == 2
                assert info.value.host == f"127.0.0.1:{proxy.port}"
                assert isinstance(info.value.__cause__, (asyncssh.Error, OSError))
                # a failed connection is not cached: the next get() tries again
                conn = await pool.get(host)
                assert proxy.accepted == 3 and conn.address == "127.0.0.1"
        finally:
            await proxy.close()

    with_server(client_key, flow)


def test_wrong_client_key_is_an_authentication_error(client_key: asyncssh.SSHKey) -> None:
    wrong = asyncssh.generate_private_key("ssh-ed25519")

    async def flow(srv: SSHServer) -> None:
        proxy = await Proxy(srv.port).start()  # counts attempts
        try:
            host = Host("127.0.0.1", user="tester", port=proxy.port)
            opts = client_options(srv, wrong, known_port=proxy.port, password=None)
            async with HostPool(connect_options=opts, attempts=3) as pool:
                with pytest.raises(AuthenticationError) as info:
                    await pool.get(host)
            assert proxy.accepted == 1  # not retried
            assert info.value.host == f"tester@127.0.0.1:{proxy.port}"
            assert isinstance(info.value.__cause__, asyncssh.PermissionDenied)
            assert str(info.value).startswith(f"[tester@127.0.0.1:{proxy.port}] ssh: ")
        finally:
            await proxy.close()

    with_server(client_key, flow)


def test_unknown_host_key_is_a_host_key_error(client_key: asyncssh.SSHKey) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()

    async def flow(srv: SSHServer) -> None:
        host = Host("127.0.0.1", port=srv.port)
        opts = client_options(srv, client_key)
        opts["known_hosts"] = asyncssh.import_known_hosts(f"[127.0.0.1]:{srv.port} {stranger}")
        async with HostPool(connect_options=opts, attempts=3) as pool:
            with pytest.raises(HostKeyError) as info:
                await pool.get(host)
        assert info.value.host == f"127.0.0.1:{srv.port}"
        assert "known_hosts" in str(info.value)
        assert len(srv.connections) == 1  # not retried

    with_server(client_key, flow)


def test_refused_port_is_a_connect_error_at_once() -> None:
    port = free_port()

    async def flow() -> None:
        async with HostPool(connect_options={"connect_timeout": 5}, attempts=4) as pool:
            t0 = time.monotonic()
            with pytest.raises(ConnectError) as info:
                await pool.get(Host("127.0.0.1", user="u", port=port))
            assert time.monotonic() - t0 < 2  # refusal is not retried
        assert info.value.cause == "connection refused"
        assert str(info.value).startswith(f"[u@127.0.0.1:{port}] ssh: cannot connect")
        assert isinstance(info.value.__cause__, ConnectionRefusedError)

    run(flow(), 10)


def test_silent_server_times_out() -> None:
    async def flow() -> None:
        async def hang(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await asyncio.sleep(30)

        server = await asyncio.start_server(hang, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with HostPool(connect_options={"connect_timeout": 0.5}, attempts=2) as pool:
                t0 = time.monotonic()
                with pytest.raises(ConnectError) as info:
                    await pool.get(Host("127.0.0.1", port=port))
                assert time.monotonic() - t0 < 3
            assert info.value.cause == "timed out"
        finally:
            server.close()

    run(flow(), 10)


def test_every_failed_host_gets_its_own_error(client_key: asyncssh.SSHKey) -> None:
    p1, p2 = free_port(), free_port()

    async def flow(srv: SSHServer) -> None:
        good = Host("127.0.0.1", user="tester", port=srv.port)
        bad1 = Host("127.0.0.1", user="x", port=p1)
        bad2 = Host("127.0.0.1", user="y", port=p2)
        async with HostPool(connect_options=client_options(srv, client_key)) as pool:
            got = await connect_each(pool, [good, bad1, bad2])
            failures = {k: v for k, v in got.items() if isinstance(v, BaseException)}
            assert set(failures) == {f"x@127.0.0.1:{p1}", f"y@127.0.0.1:{p2}"}
            assert all(isinstance(e, ConnectError) for e in failures.values())
            text = str(failures_by_host(failures, "connect"))
            assert text.splitlines()[0] == "2 host(s) failed to connect:"
            assert f"[x@127.0.0.1:{p1}] ssh: cannot connect: connection refused" in text
            assert f"[y@127.0.0.1:{p2}] ssh: cannot connect: connection refused" in text
            # the good host is connected all the same
            assert (await pool.get(good)).address == "127.0.0.1"

    with_server(client_key, flow)


def test_a_refused_host_fails_with_connect_error_naming_it(
    client_key: asyncssh.SSHKey,
) -> None:
    p1 = free_port()

    async def flow(srv: SSHServer) -> None:
        good = Host("127.0.0.1", port=srv.port)
        async with HostPool(connect_options=client_options(srv, client_key)) as pool:
            await pool.get(good)
            with pytest.raises(SSHDeployError) as info:
                await pool.get(Host("127.0.0.1", port=p1))
            assert type(info.value) is ConnectError
            assert info.value.host == f"127.0.0.1:{p1}"  # type: ignore[attr-defined]

    with_server(client_key, flow)


def test_parallelism_bounds_concurrent_attempts() -> None:
    """4 silent hosts, 2 attempts at a time, 0.3 s each: two waves, never 3 sockets."""

    async def flow() -> None:
        accepted = 0

        async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            try:  # hold the socket until the client gives up and closes it
                await asyncio.wait_for(r.read(), 5)
            except (asyncio.TimeoutError, ConnectionError):
                pass
            finally:
                w.close()

        servers = [await asyncio.start_server(silent, "127.0.0.1", 0) for _ in range(4)]
        try:
            hosts = [Host("127.0.0.1", port=s.sockets[0].getsockname()[1]) for s in servers]
            opts = {"connect_timeout": 0.3}
            async with HostPool(connect_options=opts, parallelism=2, attempts=1) as pool:
                t0 = time.monotonic()
                task = asyncio.ensure_future(connect_each(pool, hosts))
                await asyncio.sleep(0.15)  # inside the first wave
                assert accepted <= 2
                got = await task
                assert time.monotonic() - t0 >= 0.55
            assert accepted == 4
            assert len(got) == 4
            assert all(isinstance(e, ConnectError) and e.cause == "timed out"
                       for e in got.values())
        finally:
            for s in servers:
                s.close()

    run(flow(), 10)
