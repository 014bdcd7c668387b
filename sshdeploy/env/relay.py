"""The environment relay: this machine sends the pack to one host per network, the rest fetch it.

Without it ``environment="sync"`` sends the whole pack (about 25 MB) from this
machine to every host that lacks it: 64 hosts are 1.6 GB out of a laptop's
uplink. With it (``sshdeploy.env-relay: true``, the default) the pack goes
from here to the first host of each network (``seeds``; a network is the /24
or /64 of the address this machine reached the host at), and every other host
fetches it from a host that already holds it, over the cluster's own network:
the holder serves its kept pack on a free port with a one-time token (a small
stdlib HTTP server run by its Python, :func:`sshdeploy.remote.envremote.serve_pack`,
ended when the stage ends), and the fetcher checks the pack's sha256 before
unpacking it (:func:`sshdeploy.remote.envremote.fetch_env`). Each holder
serves at most ``fanout`` hosts at once, so the holders multiply: 1, then
1 + fanout, ... A host that receives the pack from here serves it as soon as
it is whole there, while it unpacks it.

What goes wrong is taken care of here, by the plan (:class:`RelayPlanner`,
pure): a copy refused as corrupt or partial marks its holder as bad (it
serves no one else and drops its copy) and the host fetches again from
another holder, or from this machine; a host that cannot reach its holder
tries another or gets it from here, and a network where fetches fail and
none succeeded (hosts that cannot reach each other) gets it from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sshdeploy.bootstrap import build_kill_command, build_script_command
from sshdeploy.errors import EnvSyncError
from sshdeploy.hosts import Host
from sshdeploy.ssh.pool import HostPool

logger = logging.getLogger(__name__)

#: Unreachable fetches in one network, with none succeeded, after which it is sent directly.
NETWORK_GIVES_UP = 2
#: Holders one host tries before it gets the pack from this machine.
TRIES = 2

#: Why a fetch failed: the holder's copy is bad, the holder cannot be reached, or the holder
#: itself failed to get the pack while this host waited on it (nothing against it then).
FailKind = Literal["corrupt", "unreachable", "gone"]


def network_of(address: str | None) -> str:
    """The network a host is taken to be on: the /24 (IPv4) or /64 (IPv6) of its address.

    Hosts reached through a jump host or a proxy (no address seen here) or
    at a loopback address (a tunnel) are one network, ``"?"``: whether they
    reach each other is then learnt by trying.

    Examples
    --------
    >>> network_of("10.213.7.12"), network_of("fd00::5"), network_of(None)
    ('10.213.7.0/24', 'fd00::/64', '?')
    >>> network_of("127.0.0.1")
    '?'
    """
    if not address:
        return "?"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "?"
    if ip.is_loopback:
        return "?"
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass(frozen=True)
class Step:
    """One transfer: *host* gets the pack from *source* (a holder) or, if None, from here."""

    host: str
    source: str | None


@dataclass
class RelayPlanner:
    """Who sends the pack to whom (pure: no network, no clock).

    Parameters
    ----------
    networks : mapping
        Every host that needs the pack, in order, to its network.
    holders : mapping
        Hosts that hold a good pack already (an earlier start), to their network.
    fanout : int
        Fetches one holder serves at once.
    seeds : int
        Hosts of a network sent the pack from here before any of them holds it.

    Examples
    --------
    >>> p = RelayPlanner({h: "n1" for h in "abcdefg"}, {}, fanout=2)
    >>> [(s.host, s.source) for s in p.next_steps()]  # each serves once it is whole there
    [('a', None), ('b', 'a'), ('c', 'a'), ('d', 'b'), ('e', 'c'), ('f', 'b'), ('g', 'c')]
    """

    networks: Mapping[str, str]
    holders: Mapping[str, str] = field(default_factory=dict)
    fanout: int = 8
    seeds: int = 1
    waiting: list[str] = field(default_factory=list)
    net: dict[str, str] = field(default_factory=dict)
    good: list[str] = field(default_factory=list)
    bad: set[str] = field(default_factory=set)
    busy: dict[str, int] = field(default_factory=dict)
    #: Hosts getting the pack now, to how many hops they are from one that holds it.
    running: dict[str, int] = field(default_factory=dict)
    tried: dict[str, set[str]] = field(default_factory=dict)
    direct: set[str] = field(default_factory=set)
    seeded: dict[str, int] = field(default_factory=dict)
    fails: dict[str, int] = field(default_factory=dict)
    wins: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.waiting = list(self.networks)
        self.net = {**self.holders, **self.networks}
        self.good = [h for h in self.holders if h not in self.networks]

    @property
    def finished(self) -> bool:
        """Every host got the pack (or failed for good: a direct send raised)."""
        return not self.waiting and not self.running

    def _depth(self, host: str) -> int:
        return self.running.get(host, 0)

    def _holders_in(self, net: str) -> list[str]:
        """Sources in *net*: those that hold the pack, then those getting it now (they serve
        it as soon as it is whole and checked there, before they unpack it)."""
        return [h for h in [*self.good, *self.running]
                if self.net[h] == net and h not in self.bad]

    def _source_for(self, host: str) -> str | None:
        """The free source nearest to a holder (a shallow tree), the least busy of those."""
        tried = self.tried.get(host, set())
        free = [h for h in self._holders_in(self.net[host])
                if h != host and h not in tried and self.busy.get(h, 0) < self.fanout]
        return min(free, key=lambda h: (self._depth(h), self.busy.get(h, 0))) if free else None

    def _hope(self, host: str) -> bool:
        """Whether a source *host* has not tried yet is, or will be, in its network."""
        tried = self.tried.get(host, set())
        return any(h != host and h not in tried for h in self._holders_in(self.net[host]))

    def _from_here(self, host: str) -> bool:
        net = self.net[host]
        if host in self.direct or len(self.tried.get(host, ())) >= TRIES:
            return True
        if self.fails.get(net, 0) >= NETWORK_GIVES_UP and not self.wins.get(net, 0):
            return True  # hosts that cannot reach each other
        # a seed: nobody holds it in this network yet
        return not any(self.net[h] == net and h not in self.bad for h in self.good) \
            and self.seeded.get(net, 0) < self.seeds

    def next_steps(self) -> list[Step]:
        """The transfers that can start now (each host at most once until it ends)."""
        steps: list[Step] = []
        for host in list(self.waiting):
            source = None if self._from_here(host) else self._source_for(host)
            if source is not None:
                self.busy[source] = self.busy.get(source, 0) + 1
                self.running[host] = self._depth(source) + 1
            elif self._from_here(host) or not self._hope(host):
                net = self.net[host]
                self.seeded[net] = self.seeded.get(net, 0) + 1
                self.running[host] = 0
            else:
                continue
            self.waiting.remove(host)
            steps.append(Step(host, source))
        return steps

    def done(self, step: Step) -> None:
        """*step* ended with a good pack on its host: the host is a holder now."""
        self.running.pop(step.host, None)
        if step.source is not None:
            self.busy[step.source] -= 1
            net = self.net[step.host]
            self.wins[net] = self.wins.get(net, 0) + 1
        self.good.append(step.host)

    def failed(self, step: Step, kind: FailKind) -> None:
        """A fetch of *step* was refused: ``corrupt`` (the holder's copy is bad, or it
        never got one) or ``unreachable``; the host waits for another source or gets it
        from here. Who was fetching from it fails too (its server is ended)."""
        assert step.source is not None, "a send from here that fails ends the stage"
        self.running.pop(step.host, None)
        self.busy[step.source] -= 1
        self.waiting.insert(0, step.host)
        if kind == "gone":
            return
        self.tried.setdefault(step.host, set()).add(step.source)
        if kind == "corrupt":
            self.bad.add(step.source)
        else:
            net = self.net[step.host]
            self.fails[net] = self.fails.get(net, 0) + 1
        if not self._hope(step.host):
            self.direct.add(step.host)


@dataclass
class PackServer:
    """The pack served by one holder: a remote ``serve`` of :mod:`sshdeploy.remote.envremote`.

    Started by :meth:`start` over the holder's SSH connection; ends with
    :meth:`close` (stdin's end), or by itself after ``ttl`` seconds, or when
    the connection is lost; killed with its process group if it does not end.
    """

    host: str
    token: str
    port: int
    addresses: list[str]
    process: Any = field(repr=False)
    conn: Any = field(repr=False)
    pgid: int | None = None

    @classmethod
    async def start(
        cls, pool: HostPool, host: Host, python: str, setup: str | None, login_shell: bool,
        bundle: bytes, serves: Mapping[str, Any], ttl: float, timeout: float = 60.0,
        wait: float = 0.0, what: str = "the environment",
    ) -> PackServer:
        """Start serving what *host* holds: *serves* names it, ``{"env": digest, "sha256":
        sha}`` (a kept pack) or ``{"blobs": [sha256, ...]}`` (upload contents, the upload
        relay: :mod:`sshdeploy.env.uprelay`); *what* says it in errors. *bundle*: the
        stage's remote program, :func:`sshdeploy.bootstrap.envremote_bundle`; *wait*:
        seconds a fetch waits for it there, while it is still coming from this machine.

        Raises
        ------
        EnvSyncError
            The server did not start (no such pack, no Python, timeout).
        """
        where = pool.as_connected(host)
        conn = await pool.get(host)
        token = secrets.token_urlsafe(24)
        process = await conn.conn.create_process(
            build_script_command(python, setup, login_shell), encoding=None)
        server = cls(where, token, 0, [], process, conn)
        op = {"op": "serve", **serves, "token": token, "ttl": ttl, "wait": wait}
        try:
            async def first() -> dict[str, Any]:
                line = await process.stdout.readline()
                if line.strip().isdigit():
                    server.pgid = int(line)
                process.stdin.write(bundle + (json.dumps(op) + "\n").encode())
                said = await process.stdout.readline()
                answer: dict[str, Any] = json.loads(said) if said.strip() else {}
                if not said.strip():  # it ended: its last line says why
                    rest = await process.stdout.read()
                    answer = json.loads(rest.splitlines()[-1]) if rest.strip() else {}
                return answer

            answer = await asyncio.wait_for(first(), timeout)
        except (asyncio.TimeoutError, ValueError, OSError) as exc:
            await server.close()
            raise EnvSyncError(host=where, what=f"serving {what} to the other hosts",
                               cause=f"{type(exc).__name__}: {exc}") from None
        except BaseException:
            await server.close()
            raise
        if "port" not in answer:
            await server.close()
            raise EnvSyncError(host=where, what=f"serving {what} to the other hosts",
                               cause=str(answer.get("error", "no port said")))
        server.port, server.addresses = int(answer["port"]), list(answer.get("addresses") or ())
        return server

    def urls(self, reached_at: str | None) -> list[str]:
        """Where a fetcher tries the pack: the address this machine reached the holder at,
        then those the holder's name resolves to there."""
        out: list[str] = []
        for addr in ([reached_at] if reached_at else []) + self.addresses:
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                continue
            if ip.is_loopback:
                continue
            text = f"[{ip}]" if ip.version == 6 else str(ip)
            url = f"http://{text}:{self.port}/{self.token}"
            if url not in out:
                out.append(url)
        return out

    async def close(self, drop: bool = False) -> None:
        """End the server (*drop*: its copy was refused, remove it); kill it if it lingers."""
        try:
            if drop:
                self.process.stdin.write(b'{"drop": true}\n')
            self.process.stdin.write_eof()
            await asyncio.wait_for(self.process.wait_closed(), 15)
        except Exception:  # asyncssh, OS or timeout: it must not outlive the stage anyway
            if self.pgid:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        self.conn.conn.run(build_kill_command(self.pgid), check=False), 10)
        finally:
            self.process.close()


#: What the driver runs: a send from here, a fetch (host, source, its server), a server.
Direct = Callable[[str], Awaitable[None]]
Fetch = Callable[[str, str, PackServer], Awaitable[dict[str, Any]]]
Serve = Callable[[str], Awaitable[PackServer]]


async def run_relay(planner: RelayPlanner, direct: Direct, fetch: Fetch, serve: Serve,
                    on_refused: Callable[[str, str, str], None] | None = None) -> None:
    """Carry out *planner*'s steps until every host has the pack.

    Servers start when a holder is first asked for its pack and all end
    before this returns, whatever happens (those whose copy was refused drop
    it). A send from here that fails raises, as without the relay.
    """
    servers: dict[str, asyncio.Future[PackServer]] = {}
    running: dict[asyncio.Future[Any], Step] = {}
    # servers ended because their host failed to get the pack while others waited on them
    ended: set[int] = set()

    async def one(step: Step) -> dict[str, Any]:
        if step.source is None:
            await direct(step.host)
            return {}
        if step.source not in servers:
            servers[step.source] = asyncio.ensure_future(serve(step.source))
        starting = servers[step.source]
        try:
            server = await asyncio.shield(starting)
        except EnvSyncError as exc:
            return {"refused": str(exc).splitlines()[0], "kind": "corrupt"}
        except asyncio.CancelledError:
            if not starting.cancelled():
                raise
            return {"refused": "its holder failed to get the pack", "gone": True}
        answer = await fetch(step.host, step.source, server)
        if answer.get("refused") and id(starting) in ended:
            answer["gone"] = True  # nothing against the holder: it had nothing to serve
        return answer

    try:
        while True:
            for step in planner.next_steps():
                running[asyncio.ensure_future(one(step))] = step
            if not running:
                if planner.waiting:  # nothing can start and nothing runs: cannot happen
                    raise EnvSyncError(host=planner.waiting[0], what="the environment relay "
                                       "had no transfer left to start for this host",
                                       cause="a bug of the relay's plan",
                                       remedy="Set sshdeploy.env-relay: false, and report it.")
                return
            finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                step = running.pop(task)
                answer = task.result()
                if answer.get("refused"):
                    kind: FailKind = "corrupt" if answer.get("kind") == "corrupt" \
                        else "unreachable"
                    if answer.get("gone"):
                        kind = "gone"
                    logger.info("%s refused the pack from %s (%s): %s", step.host,
                                step.source, kind, answer["refused"])
                    if on_refused is not None and step.source is not None:
                        on_refused(step.host, step.source, str(answer["refused"]))
                    planner.failed(step, kind)
                    ending = servers.pop(step.host, None)
                    if ending is not None:  # who waits on it for a pack that will not come
                        ended.add(id(ending))
                        await _end(ending)
                else:
                    planner.done(step)
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        started = [f for f in servers.values() if f.done() and not f.cancelled()
                   and f.exception() is None]
        for fut in servers.values():
            if not fut.done():
                fut.cancel()
        await asyncio.gather(*(f.result().close(drop=f.result().host in planner.bad)
                               for f in started), return_exceptions=True)


async def _end(server: asyncio.Future[PackServer]) -> None:
    if not server.done():
        server.cancel()
    with contextlib.suppress(BaseException):
        await (await server).close(drop=True)


def plan_relay(needing: Sequence[tuple[str, str | None]],
               holding: Sequence[tuple[str, str | None]], fanout: int,
               seeds: int = 1) -> RelayPlanner:
    """A :class:`RelayPlanner` from (host, address this machine reached it at) pairs.

    Examples
    --------
    >>> p = plan_relay([("a", "10.0.0.2"), ("b", "10.0.1.2")], [("c", "10.0.0.3")], 4)
    >>> p.next_steps()
    [Step(host='a', source='c'), Step(host='b', source=None)]
    """
    return RelayPlanner({h: network_of(a) for h, a in needing},
                        {h: network_of(a) for h, a in holding}, fanout=fanout, seeds=seeds)


#: What :func:`relay` runs, on (host, python) pairs: a send from here; a fetch by a host from
#: a holder (its ``user@host:port``) at the holder's URLs; a holder's server (whether the
#: holder is still getting it from here, so that its server waits for it).
HostDirect = Callable[[Host, str], Awaitable[None]]
HostFetch = Callable[[Host, str, str, list[str]], Awaitable[dict[str, Any]]]
HostServe = Callable[[Host, str, bool], Awaitable[PackServer]]


async def relay(pool: HostPool, need: Sequence[tuple[Host, str]],
                holding: Sequence[tuple[Host, str]], fanout: int, direct: HostDirect,
                fetch: HostFetch, serve: HostServe,
                on_refused: Callable[[str, str, str], None] | None = None) -> None:
    """Relay among a cluster's hosts: every host of *need* (host, python) gets it, from
    here or from a holder (those of *holding* to begin with) on its network.

    The plan (:func:`plan_relay`, on the addresses this machine reached the hosts at)
    carried out by :func:`run_relay`: the environment's pack and the uploads alike.
    """
    by_key = {pool.as_connected(h): (h, py) for h, py in [*need, *holding]}
    reached = {key: (await pool.get(h)).address for key, (h, _py) in by_key.items()}
    planner = plan_relay([(k, reached[k]) for k in (pool.as_connected(h) for h, _ in need)],
                         [(k, reached[k]) for k in (pool.as_connected(h) for h, _ in holding)],
                         fanout)

    async def one(key: str) -> None:
        await direct(*by_key[key])

    async def fetched(key: str, source: str, server: PackServer) -> dict[str, Any]:
        return await fetch(*by_key[key], source, server.urls(reached[source]))

    async def served(key: str) -> PackServer:
        return await serve(*by_key[key], key in planner.running)

    await run_relay(planner, one, fetched, served, on_refused)
