"""One SSH connection per host: bounded parallel connect, retries, keepalive, close.

Every process sshdeploy runs on a host (its scheduler agent, its workers
agent, preflight probes) is a channel of the *same* connection, so a cluster
opens exactly one TCP connection per distinct ``(user, host, port)`` and
never trips sshd's ``MaxStartups``. Connection attempts run in parallel under
a bound (``connect-parallelism``), and under a second one per jump host that
each target reaches with its own connection (``jump-host-parallelism``: the
jump host's sshd has a ``MaxStartups`` too). A host name is resolved before
a slot is taken, so names that do not resolve fail at once however many
there are; the lookups run in daemon threads of their own (:func:`lookup`),
so that a resolver slow to answer (one that drops queries under a burst is
answered only after its timeout, 5 s and again) neither holds the loop's
executor nor keeps the interpreter from exiting once the start has failed
(:meth:`HostPool.resolving` says which names are still being looked up).
Drops during the handshake are retried after a jittered, exponential pause
(outside the slot); every failure is an error class that names the host and
says what to do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import queue
import random
import resource
import socket
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sshdeploy.errors import ConnectError, HostError, HostfileError
from sshdeploy.hostfile import parse_host
from sshdeploy.hosts import ConnectionKey, Host
from sshdeploy.settings import Settings

from .diagnose import build_options, classify, dropped
from .sshlib import asyncssh

logger = logging.getLogger(__name__)

#: asyncssh.connect keywords sshdeploy itself sets (the caller's win).
_OWN_DEFAULTS = ("connect_timeout", "keepalive_interval", "keepalive_count_max")


def connect_kwargs(
    host: Host, options: Mapping[str, Any] | None, settings: Settings | None = None
) -> dict[str, Any]:
    """Return the ``asyncssh.connect`` keywords for *host*.

    The host's own ``user``/``port`` win over ``username``/``port`` in
    *options*; connect timeout and keepalive are on unless the caller set them.

    Examples
    --------
    >>> kw = connect_kwargs(Host("node1", user="alice", port=2222), {"username": "bob"})
    >>> kw["host"], kw["username"], kw["port"], kw["connect_timeout"] > 0
    ('node1', 'alice', 2222, True)
    """
    s = settings or Settings.resolve()
    kw: dict[str, Any] = dict(options or {})
    kw.setdefault("connect_timeout", s.connect_timeout)
    kw.setdefault("keepalive_interval", s.keepalive_interval)
    kw.setdefault("keepalive_count_max", s.keepalive_count_max)
    kw["host"] = host.hostname
    if host.user:
        kw["username"] = host.user
    if host.port:
        kw["port"] = host.port
    return kw


def _display(kw: Mapping[str, Any]) -> str:
    user = kw.get("username")
    port = kw.get("port")
    text = str(kw["host"])
    if ":" in text:
        text = f"[{text}]"
    if user:
        text = f"{user}@{text}"
    if port:
        text = f"{text}:{port}"
    return text


def _transient(exc: BaseException) -> bool:
    """True for drops worth retrying (sshd MaxStartups, resets), not for refusals."""
    if isinstance(exc, (asyncssh.PermissionDenied, asyncssh.HostKeyNotVerifiable)):
        return False
    if isinstance(exc, (asyncssh.ConnectionLost, ConnectionResetError, BrokenPipeError)):
        return True
    if isinstance(exc, asyncssh.DisconnectError):
        return exc.code in (
            asyncssh.DISC_CONNECTION_LOST,
            asyncssh.DISC_TOO_MANY_CONNECTIONS,
        )
    # What OpenSSH's client says (e.g. a ProxyCommand `ssh -W`) when sshd drops it.
    return "kex_exchange_identification" in str(exc)


#: Backoff after a dropped attempt: first pause (s) and the cap on one pause.
BACKOFF_BASE = 0.25
BACKOFF_CAP = 5.0


def backoff(attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number *attempt* (1-based).

    Exponential (0.25, 0.5, 1, 2, 4, then 5 s at most), times a random factor
    between 0.5 and 1.5, so that hosts dropped together by one sshd do not
    come back together.

    Examples
    --------
    >>> [backoff(a, rand=lambda: 0.5) for a in (1, 2, 3, 6, 9)]
    [0.25, 0.5, 1.0, 5.0, 5.0]
    >>> backoff(1, rand=lambda: 0.0), backoff(1, rand=lambda: 1.0)
    (0.125, 0.375)
    """
    return min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (attempt - 1)) * (0.5 + rand())


#: Open files the controller keeps per host (its SSH socket, a jump host's, a
#: log file with --log-directory, a forwarded port), and for itself.
FILES_PER_HOST = 4
FILES_BASE = 256


def raise_open_files(hosts: int) -> tuple[int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to what *hosts* hosts need, if it is lower.

    Never above the hard limit, never lowered. A limit still too low is
    logged once as a warning; connects that then run out of descriptors fail
    with an error that says so.

    Returns
    -------
    (soft, wanted)
        The soft limit now in force, and what the hosts need.
    """
    wanted = FILES_BASE + FILES_PER_HOST * hosts
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if new > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
                soft = new
            except (ValueError, OSError) as exc:  # pragma: no cover - hard limit race
                logger.debug("cannot raise RLIMIT_NOFILE to %d: %s", new, exc)
        if soft < wanted and wanted > _warned_files[0]:
            _warned_files[0] = wanted
            logger.warning(
                "the open-files limit is %d (hard limit %s) but %d hosts need about %d: "
                "raise it (`ulimit -n`) or connects will fail with 'Too many open files'",
                soft, hard, hosts, wanted,
            )
    return soft, wanted


_warned_files = [0]


#: Offset of ``tcpi_bytes_acked`` (u64) in Linux's ``struct tcp_info`` (since 4.1).
_BYTES_ACKED = 120


def tcp_bytes_acked(sock: Any) -> int | None:
    """The bytes a TCP socket sent and had acknowledged, or None where it cannot be read."""
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except (OSError, AttributeError):
        return None
    if len(info) < _BYTES_ACKED + 8:
        return None
    acked = int.from_bytes(info[_BYTES_ACKED:_BYTES_ACKED + 8], "little")
    return max(0, acked - 1)  # the SYN counts as one


def _ip_address(peer: Any) -> str | None:
    """The IP address of a peer name, or None (a proxy command, a name through a tunnel)."""
    if not peer:
        return None
    try:
        return str(ipaddress.ip_address(str(peer[0]).split("%")[0]))
    except ValueError:
        return None


#: Keywords of asyncssh.connect itself: given again with the built options,
#: since connect() would otherwise reset them to their defaults.
_CONNECT_ARGS = ("host", "port", "tunnel", "family", "flags", "local_addr", "sock", "config")


def _connect_args(kw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: kw[k] for k in _CONNECT_ARGS if k in kw}


def _direct(kw: Mapping[str, Any], options: asyncssh.SSHClientConnectionOptions) -> bool:
    """Whether this machine resolves and dials the host itself (no jump, proxy or socket)."""
    return not (
        kw.get("tunnel") or kw.get("sock") is not None or options.tunnel
        or options.proxy_command or getattr(options, "canonicalize_hostname", False)
    )


def _own_jump(
    kw: Mapping[str, Any], options: asyncssh.SSHClientConnectionOptions,
    extra: Mapping[str, Any],
) -> str | None:
    """The jump host this host's attempts open a connection of their own to, if any.

    A pooled jump connection (in *extra*) is shared: its sshd sees one
    connection however many hosts it leads to, so it needs no cap.
    """
    if "tunnel" in extra and not isinstance(extra["tunnel"], str):
        return None
    tunnel = kw.get("tunnel") or options.tunnel
    if isinstance(tunnel, str):
        return tunnel
    if options.proxy_command:
        return "ProxyCommand"  # usually one bastion behind every ProxyCommand: one cap
    return None


def _as_connect_sees(
    kw: Mapping[str, Any], options: asyncssh.SSHClientConnectionOptions
) -> asyncssh.SSHClientConnectionOptions:
    """The options with ``~/.ssh/config`` applied, as ``asyncssh.connect`` applies it.

    Options built without ``config`` do not read the default file (connect
    does): an alias (``Host alpha`` / ``HostName 10.0.0.7``), its port and its
    ProxyJump would be missed by the checks made before connecting.
    """
    default = os.path.expanduser("~/.ssh/config")
    if "config" in kw or not os.path.isfile(default):
        return options
    try:
        return asyncssh.SSHClientConnectionOptions(**{**kw, "config": [default]})
    except (OSError, ValueError, TypeError, asyncssh.Error):
        return options


#: Name lookups at once (the loop's default executor has min(32, cores + 4) threads).
LOOKUP_THREADS = 8
_lookups: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[Any, BaseException | None],
                                                              None]]] = queue.SimpleQueue()
_lookup_threads: list[threading.Thread] = []
_lookup_lock = threading.Lock()


def _lookup_worker() -> None:
    while True:
        call, done = _lookups.get()
        try:
            result = call()
        except BaseException as exc:  # handed to the waiting coroutine, raised there
            done(None, exc)
        else:
            done(result, None)


def lookup(host: str, port: int, **kwargs: Any) -> asyncio.Future[Any]:
    """``socket.getaddrinfo(host, port, **kwargs)`` in a daemon thread; its future here.

    Daemon threads (at most :data:`LOOKUP_THREADS`, started on first use): a
    lookup the resolver is slow to answer keeps neither the loop's executor
    busy nor the interpreter from exiting once nobody waits for it any more.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    def done(result: Any, exc: BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    with _lookup_lock:
        if len(_lookup_threads) < LOOKUP_THREADS:
            thread = threading.Thread(target=_lookup_worker, name="sshdeploy-lookup",
                                      daemon=True)
            thread.start()
            _lookup_threads.append(thread)
    _lookups.put((lambda: socket.getaddrinfo(host, port, **kwargs), done))
    return fut


async def _resolve(
    where: str, kw: Mapping[str, Any], options: asyncssh.SSHClientConnectionOptions
) -> None:
    """Look the host's name up (as asyncssh will); a name that does not resolve raises.

    Raises
    ------
    ConnectError
        The name does not resolve (what :func:`classify` says for it).
    """
    try:
        await lookup(options.host, options.port, family=options.family,
                     type=socket.SOCK_STREAM, flags=int(kw.get("flags", 0)))
    except socket.gaierror as exc:
        raise classify(where, exc, kw) from exc
    except (OSError, UnicodeError):
        pass  # let asyncssh.connect report it, in its own words


@dataclass
class FailureNotes:
    """Say early, on sshdeploy's logger, that hosts fail to connect, when there are many hosts.

    With many hosts the full list of failures comes when the start ends; this
    says the first one at once and then, at most every *every* seconds, how
    many have failed so far. Below *many* hosts it says nothing (the error
    itself follows at once).
    """

    many: int = 20
    every: float = 2.0
    failed: int = 0
    _last: float = 0.0
    _pending: asyncio.TimerHandle | None = None

    def note(self, err: HostError, hosts: int) -> None:
        self.failed += 1
        if hosts < self.many:
            return
        loop = asyncio.get_running_loop()
        if self.failed == 1:
            self._last = loop.time()
            logger.warning("%s (the first of %d hosts to fail to connect; the others go on)",
                           str(err).splitlines()[0], hosts)
        elif self._pending is None:
            due = max(0.0, self._last + self.every - loop.time())
            self._pending = loop.call_later(due, self._say, hosts)

    def _say(self, hosts: int) -> None:
        self._pending = None
        self._last = asyncio.get_running_loop().time()
        logger.warning("%d of %d hosts failed to connect so far", self.failed, hosts)

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


@dataclass
class Connection:
    """An open connection to one host and what the controller learnt about it.

    Attributes
    ----------
    host : str
        ``user@host:port`` as shown to users.
    conn : asyncssh.SSHClientConnection
        The connection; every remote process of this host is a channel of it.
    address : str or None
        The IP address the controller reached the host at (its advertised
        address unless the user says otherwise); None when there is none to
        see (a ProxyCommand): the remote processes then choose their own.
    """

    host: str
    conn: asyncssh.SSHClientConnection
    address: str | None


@dataclass
class HostPool:
    """Open and share one SSH connection per ``(user, host, port)``.

    Parameters
    ----------
    connect_options : Mapping, optional
        ``asyncssh.connect`` keywords for every host (per host: :meth:`set_options`).
    settings : Settings, optional
        Timeouts, keepalive, parallelism and attempts (default: resolved now).
    parallelism : int
        How many connection attempts run at once.
    jump_parallelism : int
        How many of them at once through one jump host that each target
        reaches with a connection of its own (``ProxyJump`` from an ssh
        config, a chain of jumps, a ``ProxyCommand``). A jump host given as
        ``tunnel="[user@]host[:port]"`` is one shared connection instead.
    attempts : int
        Attempts per host for transient failures.

    Examples
    --------
    >>> import asyncio
    >>> async def main():
    ...     async with HostPool() as pool:
    ...         c = await pool.get(Host("node1"))          # doctest: +SKIP
    ...         r = await c.conn.run("hostname")            # doctest: +SKIP
    """

    connect_options: Mapping[str, Any] | None = None
    settings: Settings = field(default_factory=Settings.resolve)
    parallelism: int = 0
    jump_parallelism: int = 0
    attempts: int = 0
    _per_host: dict[ConnectionKey, Mapping[str, Any]] = field(default_factory=dict)
    _built: dict[ConnectionKey, asyncssh.SSHClientConnectionOptions] = field(default_factory=dict)
    _conns: dict[ConnectionKey, asyncio.Future[Connection]] = field(default_factory=dict)
    _sem: asyncio.Semaphore | None = None
    _jump_sems: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    _failures: FailureNotes = field(default_factory=lambda: FailureNotes())
    _resolving: set[ConnectionKey] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.parallelism = self.parallelism or self.settings.connect_parallelism
        self.jump_parallelism = self.jump_parallelism or self.settings.jump_host_parallelism
        self.attempts = self.attempts or self.settings.connect_attempts

    def set_options(self, host: Host, options: Mapping[str, Any] | None) -> None:
        """Use *options* (instead of the pool-wide ones) for *host*."""
        if options is not None:
            self._per_host[host.key] = options
            self._built.pop(host.key, None)

    def kwargs(self, host: Host) -> dict[str, Any]:
        """Return the ``asyncssh.connect`` keywords this pool uses for *host*."""
        return connect_kwargs(
            host, self._per_host.get(host.key, self.connect_options), self.settings
        )

    def as_connected(self, host: Host) -> str:
        """Return ``user@host:port`` as this pool will connect to *host*.

        After ``~/.ssh/config`` and the pool's defaults; the host as the user
        wrote it is :meth:`sshdeploy.hosts.Host.as_written`.
        """
        return _display(self.kwargs(host))

    def prepare(self, host: Host) -> asyncssh.SSHClientConnectionOptions:
        """Build and check the connection options of *host* once (no network).

        Raises
        ------
        ConfigError
            For a keyword asyncssh does not know or a key file it cannot load.
        """
        built = self._built.get(host.key)
        if built is None:
            kw = self.kwargs(host)
            if "known_hosts" in kw and kw["known_hosts"] is None:
                logger.warning(
                    "%s: host-key checking is OFF (known_hosts=None): the connection is "
                    "open to man-in-the-middle attacks", _display(kw),
                )
            built = self._built[host.key] = build_options(_display(kw), kw)
        return built

    async def get(self, host: Host) -> Connection:
        """Return the connection to *host*, opening it on first use (single flight).

        A connection that was lost (keepalive, network) is opened anew.
        """
        fut = self._conns.get(host.key)
        if fut is None or (
            fut.done()
            and (fut.cancelled() or fut.exception() is not None or fut.result().conn.is_closed())
        ):
            fut = asyncio.ensure_future(self._open(host))
            self._conns[host.key] = fut
        return await asyncio.shield(fut)

    async def _open(self, host: Host) -> Connection:
        try:
            return await self._attempts(host)
        except HostError as err:
            self._failures.note(err, len(self._conns))
            raise

    async def _attempts(self, host: Host) -> Connection:
        kw = self.kwargs(host)
        where = _display(kw)
        options = _as_connect_sees(kw, self.prepare(host))
        raise_open_files(max(len(self._per_host), len(self._conns)))
        extra: dict[str, Any] = {}
        if isinstance(kw.get("tunnel"), str):
            extra["tunnel"] = await self._jump(host, kw, where)
        elif _direct(kw, options):
            self._resolving.add(host.key)
            try:
                await _resolve(where, kw, options)  # before a slot: a bad name fails at once
            finally:
                self._resolving.discard(host.key)
        jump = _own_jump(kw, options, extra)
        for attempt in range(1, self.attempts + 1):
            async with self._slot(jump):
                try:
                    conn = await asyncssh.connect(
                        options=options, **{**_connect_args(kw), **extra}
                    )
                except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
                    if not _transient(exc) or attempt == self.attempts:
                        raise self._error(where, exc, kw, extra, attempt, jump) from exc
                    logger.debug("%s: dropped during the handshake (%s), retrying", where, exc)
                else:
                    address = _ip_address(conn.get_extra_info("peername"))
                    logger.debug("%s: connected (%s)", where, address)
                    return Connection(host=where, conn=conn, address=address)
            await asyncio.sleep(backoff(attempt))  # outside the slot: others go meanwhile
        raise ConnectError(host=where, cause="gave up")  # pragma: no cover - loop returns

    @asynccontextmanager
    async def _slot(self, jump: str | None) -> AsyncIterator[None]:
        """Hold one connect slot, and one of *jump*'s slots when it is given."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.parallelism)
        async with AsyncExitStack() as stack:
            if jump is not None:
                sem = self._jump_sems.get(jump)
                if sem is None:
                    sem = self._jump_sems[jump] = asyncio.Semaphore(self.jump_parallelism)
                await stack.enter_async_context(sem)
            await stack.enter_async_context(self._sem)
            yield

    def _error(self, where: str, exc: BaseException, kw: Mapping[str, Any],
               extra: Mapping[str, Any], attempt: int, jump: str | None) -> HostError:
        if _transient(exc):
            return dropped(where, exc, attempt, jump)
        err = classify(where, exc, kw)
        if "tunnel" in extra:
            err = dataclasses.replace(
                err, cause=f"{err.cause} (seen from the jump host {kw['tunnel']}, which works)")
        return err

    def state(self, host: Host) -> str:
        """Where the connection to *host* stands: waiting, connecting, connected or failed."""
        fut = self._conns.get(host.key)
        if fut is None:
            return "waiting"
        if not fut.done():
            return "connecting"
        if fut.cancelled() or fut.exception() is not None:
            return "failed"
        return "connected"

    def resolving(self, host: Host) -> bool:
        """Whether *host*'s name is being looked up now (before any TCP connect)."""
        return host.key in self._resolving

    def error(self, host: Host) -> str:
        """Why the connection to *host* failed ("" if it did not)."""
        fut = self._conns.get(host.key)
        if fut is None or not fut.done() or fut.cancelled() or fut.exception() is None:
            return ""
        return str(fut.exception())

    async def _jump(self, host: Host, kw: Mapping[str, Any], where: str) -> Any:
        """Open (or share) the connection to *host*'s jump host, with the same credentials.

        asyncssh would open a jump host given as a string with ~/.ssh defaults
        only; as a pooled host it gets the keys and known_hosts given here,
        one connection however many hosts it leads to, and errors that name it.
        """
        tunnel = str(kw["tunnel"])
        try:
            hop = parse_host(tunnel, path="tunnel")
        except HostfileError:
            return tunnel  # a chain of jumps: asyncssh opens it itself
        if hop.key not in self._per_host:
            given = self._per_host.get(host.key, self.connect_options) or {}
            self.set_options(hop, {k: v for k, v in given.items()
                                   if k not in ("tunnel", "port", "username")})
        try:
            return (await self.get(hop)).conn
        except HostError as err:
            raise type(err)(
                host=where, what=f"cannot connect through the jump host {tunnel}",
                cause=f"the jump host itself failed: {err.what}: {err.cause}",
                role=err.role, remedy=f"Fix the jump host first: {err.remedy}",
            ) from err

    def bytes_sent(self) -> dict[str, int]:
        """Bytes this machine sent on each open connection so far (``user@host:port`` to bytes).

        The kernel's count of bytes acknowledged by the host (``TCP_INFO``,
        Linux): SSH's framing and encryption included, retransmissions not.
        Connections that are not a TCP socket of ours (a ProxyCommand) are left out.
        """
        out: dict[str, int] = {}
        for fut in self._conns.values():
            if not fut.done() or fut.cancelled() or fut.exception() is not None:
                continue
            sent = tcp_bytes_acked(fut.result().conn.get_extra_info("socket"))
            if sent is not None:
                out[fut.result().host] = sent
        return out

    async def close(self) -> None:
        """Close every connection (their remote processes see EOF and stop)."""
        self._failures.cancel()
        futs = list(self._conns.values())
        self._conns.clear()
        conns = []
        for fut in futs:
            if not fut.done():
                fut.cancel()
                continue
            if not fut.cancelled() and fut.exception() is None:
                conns.append(fut.result().conn)
        for c in conns:
            c.close()
        await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)

    async def __aenter__(self) -> HostPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
