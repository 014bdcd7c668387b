"""Remote processes as distributed's ``ProcessInterface``: start, ready, stop.

:class:`RemoteScheduler` runs the scheduler in its own agent;
:class:`RemoteWorker` asks the host's workers agent (shared by every worker on
that host, see :class:`WorkerAgents`) to start or stop one worker. The agent
channels themselves are in :mod:`sshdeploy.ssh.channel`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from distributed.core import Status
from distributed.deploy.spec import ProcessInterface

from sshdeploy import compat
from sshdeploy.bootstrap import Describe
from sshdeploy.defaults import DEFAULT_WORKER_CLASS
from sshdeploy.errors import SSHDeployError, StartError
from sshdeploy.hosts import ConnectionKey, Host
from sshdeploy.logs import LogBook
from sshdeploy.plan import Launch, resolve_advertised
from sshdeploy.roles import Role
from sshdeploy.ssh.causes import explain
from sshdeploy.ssh.channel import AgentChannel
from sshdeploy.ssh.forwarding import PROBE_TIMEOUT, Forwarding, forward, reachable
from sshdeploy.ssh.pool import HostPool

logger = logging.getLogger(__name__)


def _start_error(
    ch: AgentChannel, role: Role, name: str, answer: Mapping[str, Any], kwargs: Mapping[str, Any]
) -> StartError:
    """The error for a process the agent could not start: its cause first, the option behind it.

    The remote traceback goes to the process's log (``get_logs()``); the
    message keeps it only when the cause is not one sshdeploy recognises.
    """
    label = name if role == "worker" else ch.label
    tb = str(answer.get("tb") or "")
    for line in tb.splitlines():
        ch.logbook.record(label, ch.host.hostname, role, "stderr", line)
    why = explain(role, kwargs, str(answer.get("error", "unknown")), tb)
    return StartError(
        host=ch.where, role=role, name=name, what=why.what, cause=why.cause,
        remedy=why.remedy, stderr_tail="" if why.known else (tb or ch.logbook.tail(label)),
    )


def _fixed_dashboard_port(address: Any) -> int | None:
    """The one port a ``dashboard_address`` asks for (None for any port, or several).

    >>> _fixed_dashboard_port(":8787"), _fixed_dashboard_port(":0"), _fixed_dashboard_port(None)
    (8787, None, None)
    """
    if address is None:
        return None
    from distributed.utils import clean_dashboard_address

    try:
        ports = [entry.get("port") for entry in clean_dashboard_address(address)]
    except (ValueError, TypeError):
        return None
    return ports[0] if len(ports) == 1 and isinstance(ports[0], int) and ports[0] else None


class RemoteScheduler(ProcessInterface):
    """A Dask scheduler on a remote host, in its own agent.

    Parameters
    ----------
    host : Host
        Where it runs.
    pool : HostPool
        The cluster's connections.
    launch : Launch
        Remote interpreter, setup, environment.
    logbook : LogBook
        Where its output goes.
    kwargs : dict
        Keyword arguments of :class:`distributed.Scheduler`.
    cls : str, optional
        Another scheduler class, as an import path.
    forward : bool or None
        Reach it through the SSH connection: always (True), never (False),
        or when the controller cannot reach its address directly (None).
    gate : callable, optional
        Awaited once the agent has imported distributed and before it is asked
        to create the scheduler (the version gate, run meanwhile): when it
        raises, the agent is ended and no scheduler ever existed.
    describe : Describe, optional
        Have the agent say what its host is as it starts (the gate's facts).
    """

    def __init__(
        self,
        host: Host,
        pool: HostPool,
        launch: Launch,
        logbook: LogBook,
        kwargs: Mapping[str, Any] | None = None,
        cls: str | None = None,
        on_exit: Callable[[str, str], None] | None = None,
        forward: bool | None = None,
        gate: Callable[[], Awaitable[None]] | None = None,
        describe: Describe | None = None,
    ) -> None:
        super().__init__()
        self.host = host
        self.gate = gate
        self.kwargs = dict(kwargs or {})
        self.cls = cls
        self._on_exit = on_exit
        self.launch = launch
        self.settings = pool.settings
        self.channel = AgentChannel(pool, host, "scheduler", launch, logbook, self._exited,
                                    describe=describe)
        self.dashboard_port: int | None = None
        self.pid: int | None = None
        self.exit_reason: str | None = None
        self.forward = forward
        #: The local ports leading to it, when it is reached through SSH.
        self.forwarding: Forwarding | None = None
        self._expect_exit = False

    @property
    def remote_python(self) -> str:
        """The interpreter the scheduler runs with (as in distributed's SSHCluster)."""
        return self.launch.python

    def expect_close(self) -> bool:
        """The cluster is closing: its exit is no failure. Returns whether it still runs."""
        self._expect_exit = True
        return self.channel.alive

    def _exited(self, name: str, reason: str) -> None:
        """The scheduler (or its agent, or the connection) went away on its own."""
        self.exit_reason = reason
        if self._expect_exit:
            return
        if self.status == Status.running:
            self.status = Status.failed
            compat.mark_finished(self)
        logger.warning("[%s] scheduler: %s", self.channel.where, reason)
        if self._on_exit is not None:
            self._on_exit(name, reason)

    async def start(self) -> None:
        """Start the agent, then the scheduler; return once it listens."""
        try:
            await self._start()
        except BaseException:
            self.status = Status.failed
            raise
        await super().start()

    async def _start(self) -> None:
        timeout = self.settings.start_timeout
        ch = self.channel
        await ch.start(timeout)
        if self.gate is not None:
            try:  # start_scheduler is the agent's "go": not sent unless the gate passed
                await self.gate()
            except BaseException:
                await ch.abort()
                raise
        assert ch.connection is not None
        kw = resolve_advertised(self.kwargs, ch.connection.address)
        answer = await ch.call("start_scheduler", "scheduler", kw, timeout, cls=self.cls)
        if answer.get("ev") != "ready":
            await ch.abort()
            raise _start_error(ch, "scheduler", "scheduler", answer, kw)
        self.address = str(answer["address"])
        self.external_address = self.address
        self.dashboard_port = answer.get("dashboard_port")
        wanted = _fixed_dashboard_port(kw.get("dashboard_address"))
        if wanted and self.dashboard_port and self.dashboard_port != wanted:
            logger.warning("[%s] scheduler: dashboard port %d was not free there; the "
                           "dashboard is on port %d instead", ch.where, wanted,
                           self.dashboard_port)
        self.pid = answer.get("pid")
        await self._reach(ch)

    async def _reach(self, ch: AgentChannel) -> None:
        """Make the scheduler reachable from the controller: directly or through SSH."""
        address = str(self.address)
        security = (self.kwargs or {}).get("security")
        if self.forward is not True and await reachable(address, PROBE_TIMEOUT, security):
            return
        if self.forward is False:
            raise StartError(
                host=ch.where, role="scheduler", what="the controller cannot reach the scheduler",
                cause=f"no TCP connection to {self.address} within {PROBE_TIMEOUT:.0f} s",
                remedy="Forward it through SSH (SSHCluster(..., forward_ports=True) or "
                "dask-ssh --forward-ports), or open that port to this machine.",
            )
        assert ch.connection is not None
        self.forwarding = await forward(ch.connection.conn, address, self.dashboard_port)
        self.external_address = self.forwarding.address
        self.forwarding.reason = (
            f"[{ch.where}] scheduler {self.address} is "
            f"{'forwarded as asked' if self.forward else 'not reachable from here'}; "
            f"reaching it through SSH at {self.external_address}"
        )

    async def detach(self) -> None:
        """Leave the scheduler running (a named cluster): close our forwards and channel."""
        self._expect_exit = True
        if self.forwarding is not None:
            self.forwarding.close()
        await self.channel.detach()
        self.status = Status.closed

    async def close(self) -> None:
        """Stop the scheduler and its agent; return when both are gone (idempotent)."""
        self._expect_exit = True
        if self.forwarding is not None:
            self.forwarding.close()
        if self.channel.alive:
            await self.channel.shutdown(self.settings.stop_timeout)
        await self.channel.ensure_gone()
        await super().close()

    def __repr__(self) -> str:
        return f"<RemoteScheduler {self.channel.where} {self.address or ''} {self.status.name}>"


class WorkerAgents:
    """The workers agent of every host, started once and shared by its workers."""

    def __init__(
        self,
        pool: HostPool,
        launches: Mapping[ConnectionKey, Launch],
        logbook: LogBook,
        on_worker_exit: Callable[[str, str], None] | None = None,
        prepare: Callable[[Host], Awaitable[None]] | None = None,
        describe: Describe | None = None,
    ) -> None:
        self.pool = pool
        #: Given to every agent: it says what its host is as it starts (the version gate).
        self.describe = describe
        #: Awaited with a host before its first agent starts (the stage of a host
        #: brought up after the start).
        self.prepare = prepare
        self.launches = dict(launches)
        self.logbook = logbook
        self.on_worker_exit = on_worker_exit
        self._agents: dict[ConnectionKey, asyncio.Future[AgentChannel]] = {}
        #: Every agent ever started, so close() can wait for all of them.
        self._channels: list[AgentChannel] = []
        self.workers: weakref.WeakValueDictionary[str, RemoteWorker] = (
            weakref.WeakValueDictionary()
        )

    def add_host(self, host: Host, launch: Launch) -> None:
        """Start the agent of *host* (added while the cluster runs) with *launch*."""
        self.launches[host.key] = launch

    def prestart(self, hosts: list[Host]) -> None:
        """Begin connecting and starting agents now (overlaps the scheduler's start)."""
        for h in hosts:
            self._future(h)

    def _future(self, host: Host) -> asyncio.Future[AgentChannel]:
        fut = self._agents.get(host.key)
        if fut is not None and (
            not fut.done()
            or (not fut.cancelled() and fut.exception() is None and fut.result().alive)
        ):
            return fut  # starting, or running: share it
        fut = asyncio.ensure_future(self._start(host))
        # Errors reach whoever awaits; a prestart nobody awaited must not warn.
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._agents[host.key] = fut
        return fut

    async def _start(self, host: Host) -> AgentChannel:
        if self.prepare is not None:
            await self.prepare(host)
        launch = self.launches[host.key]
        ch = AgentChannel(self.pool, host, "workers", launch, self.logbook, self._exited,
                          describe=self.describe)
        self._channels.append(ch)
        await ch.start(self.pool.settings.start_timeout)
        admit = self.describe.admit if self.describe is not None else None
        if admit is not None:  # a host after the start: the gate on its agent's words
            try:
                await admit(host, launch.python, ch.description)
            except BaseException:
                await ch.abort()
                raise
        return ch

    def channel_of(self, host: Host) -> AgentChannel | None:
        """The latest agent channel started for *host* (None before any)."""
        for ch in reversed(self._channels):
            if ch.host.key == host.key:
                return ch
        return None

    async def get(self, host: Host) -> AgentChannel:
        """Return the running workers agent of *host*, starting it if needed."""
        return await asyncio.shield(self._future(host))

    def _exited(self, name: str, reason: str) -> None:
        targets = list(self.workers.values()) if name == "*" else [self.workers.get(name)]
        for w in targets:
            if w is not None and (name != "*" or w.channel is None or not w.channel.alive):
                if w.exited(reason) and self.on_worker_exit is not None:
                    self.on_worker_exit(str(w.name), reason)

    async def stop_host(self, host: Host) -> None:
        """Stop the agent of *host* and everything it runs (a host taken out or removed)."""
        fut = self._agents.pop(host.key, None)
        await self._stop([fut] if fut is not None else [],
                         [c for c in self._channels if c.host.key == host.key])

    def closing(self) -> None:
        """The cluster closes: every worker start still under way ends now.

        Those waiting for their agent's answer fail; agents still starting are
        cancelled (they abort themselves, see :meth:`AgentChannel.start`).
        """
        for ch in self._channels:
            ch.fail_starts("the cluster is closing")
        for fut in self._agents.values():
            if not fut.done():
                fut.cancel()

    def arm(self, keep: Mapping[str, Any]) -> list[AgentChannel]:
        """A recorded named cluster: its agents run on without a controller, later ones too.

        *keep* is the armed policy's spec: every agent started from now on
        gets it; those started already are told (:meth:`AgentChannel.arm`).
        Returns the agents told.
        """
        for key, launch in self.launches.items():
            self.launches[key] = dataclasses.replace(launch, keep=dict(keep))
        for ch in self._channels:
            ch.arm()
        return list(self._channels)

    async def detach(self) -> None:
        """Leave every kept agent running on its own (a named cluster the controller leaves)."""
        futs = list(self._agents.values())
        self._agents.clear()
        for fut in futs:
            if not fut.done():
                fut.cancel()
        await asyncio.gather(*futs, return_exceptions=True)
        await asyncio.gather(*(c.detach() for c in self._channels), return_exceptions=True)

    async def close(self) -> None:
        """Shut every agent down in parallel; return when all have exited."""
        futs = list(self._agents.values())
        self._agents.clear()
        await self._stop(futs, self._channels)

    async def _stop(self, futs: list[asyncio.Future[AgentChannel]],
                    channels: list[AgentChannel]) -> None:
        """Shut the agents of *futs* down and wait until every one of *channels* is gone."""
        timeout = self.pool.settings.stop_timeout
        for fut in futs:
            if not fut.done():
                fut.cancel()  # a starting agent aborts itself (see AgentChannel.start)
        await asyncio.gather(*futs, return_exceptions=True)
        chans = [f.result() for f in futs if not f.cancelled() and f.exception() is None]
        await asyncio.gather(*(c.shutdown(timeout) for c in chans), return_exceptions=True)
        # Agents whose start failed or was cancelled mid-way: wait until they are gone too.
        await asyncio.gather(*(c.ensure_gone() for c in channels), return_exceptions=True)


class RemoteWorker(ProcessInterface):
    """One Dask worker (a Nanny and its worker process by default) on a remote host.

    Parameters
    ----------
    scheduler : str
        The scheduler's address (given by SpecCluster).
    name : str
        The worker's name, ``<host>-<i>``; used on the scheduler and in logs.
    host : Host
        Where it runs.
    agents : WorkerAgents
        The cluster's per-host agents.
    cls : str
        The worker class, as an import path (``distributed.Nanny``).
    kwargs : dict
        Keyword arguments of the worker class.
    restart : bool
        Whether the Nanny restarts a worker process that dies.
    share : int
        The worker processes its host is planned to hold: unless *kwargs* say
        otherwise, it gets that share of the host's cores and memory
        (:func:`sshdeploy.remote.agent.worker_share`, applied on the host).
    """

    def __init__(
        self,
        scheduler: str,
        name: str,
        host: Host,
        agents: WorkerAgents,
        cls: str = DEFAULT_WORKER_CLASS,
        kwargs: Mapping[str, Any] | None = None,
        restart: bool = True,
        share: int = 1,
    ) -> None:
        super().__init__(scheduler=scheduler, name=name)
        self.restart = restart
        self.share = share
        self.scheduler = scheduler
        self.name = name
        self.host = host
        self.agents = agents
        self.cls = cls
        self.kwargs = dict(kwargs or {})
        self.channel: AgentChannel | None = None
        self.pid: int | None = None
        self.exit_reason: str | None = None
        self.start_error: SSHDeployError | None = None
        #: Set by the cluster when it scales this worker away: its end is expected.
        self.retiring = False

    @property
    def remote_python(self) -> str:
        """The interpreter this worker runs with (as in distributed's SSHCluster)."""
        return self.agents.launches[self.host.key].python

    async def start(self) -> None:
        """Ask the host's agent to start this worker; return once it is registered."""
        try:
            await self._start()
        except BaseException as exc:
            if isinstance(exc, SSHDeployError):
                self.start_error = exc  # gathered per host by the cluster
            self.status = Status.failed
            raise
        await super().start()

    async def _start(self) -> None:
        ch = self.channel = await self.agents.get(self.host)
        self.agents.workers[str(self.name)] = self
        assert ch.connection is not None
        kw = resolve_advertised(self.kwargs, ch.connection.address)
        timeout = self.agents.pool.settings.start_timeout
        answer = await ch.call(
            "start_worker", str(self.name), kw, timeout, cls=self.cls, scheduler=self.scheduler,
            restart=self.restart, restart_limit=self.agents.pool.settings.worker_restarts,
            restart_window=self.agents.pool.settings.worker_restart_window, share=self.share,
        )
        if answer.get("ev") != "ready":
            raise _start_error(ch, "worker", str(self.name), answer, kw)
        self.address = str(answer["address"])
        self.pid = answer.get("pid")

    async def close(self) -> None:
        """Stop this worker (its agent stays for the host's other workers)."""
        ch = self.channel
        if ch is not None and ch.alive:
            await ch.call("stop", str(self.name), None, self.agents.pool.settings.stop_timeout)
        await super().close()

    def exited(self, reason: str) -> bool:
        """Record that the worker went away without being asked to.

        Returns False if it was not running (already reported, or stopping),
        or if the cluster is retiring it (the scheduler closes it first).
        """
        if self.status != Status.running or self.retiring:
            return False
        self.exit_reason = reason
        self.status = Status.failed
        compat.mark_finished(self)
        logger.warning("[%s] worker %s: %s", self.host.hostname, self.name, reason)
        return True

    def __repr__(self) -> str:
        return f"<RemoteWorker {self.name} on {self.host.hostname} {self.status.name}>"
