"""Hosts that come and go: lost and quarantined hosts replaced, hosts added and removed.

:class:`Fleet` acts on one cluster's worker hosts while it runs:

- a host that stays unreachable (``sshdeploy.host-lost-after``) is *lost*, one
  whose workers die past their restart budget is *quarantined*: either way its
  workers move to hosts with free slots or to a spare, so the cluster gets
  back to its worker count, and the host gets no worker until
  :meth:`Fleet.readmit`;
- :meth:`Fleet.add_hosts` and :meth:`Fleet.remove_hosts` change the hosts
  (removal retires the workers through the scheduler first, so their data
  moves to other workers);
- :meth:`Fleet.bring_up` runs the stage before the start (version gate,
  environment, uploads) on a host the first time a worker is placed there, so
  hosts with no worker yet are never connected to.

What moved where is a WARNING on this logger and a line of
``get_logs()["Cluster"]``. The health of each host is kept in
:class:`~sshdeploy.cluster.health.HostHealth`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from distributed.core import Status

from sshdeploy.cluster.kept import KeptCluster
from sshdeploy.env.prestart import PreStart
from sshdeploy.errors import ConfigError, ConnectError, SSHDeployError, failures_by_host
from sshdeploy.hostfile import parse_host
from sshdeploy.hosts import ConnectionKey, Host
from sshdeploy.named import flow
from sshdeploy.placement import HostPlan, extend, without, worker_name
from sshdeploy.ssh.pool import HostPool

from .health import LOST, QUARANTINED, HostHealth
from .processes import RemoteWorker, WorkerAgents
from .roster import Roster

logger = logging.getLogger(__name__)


def _as_host(host: str | Host) -> Host:
    return host if isinstance(host, Host) else parse_host(str(host))


def _names(written: Host, host: Host) -> bool:
    """Whether *written* (as a user gave it) names the cluster's *host*: the same
    connection, or its host name alone (no user, no port).

    Examples
    --------
    >>> _names(Host("n2"), Host("n2", "root", 22)), _names(Host("n2", port=2), Host("n2"))
    (True, False)
    """
    return written.key == host.key or (
        written.hostname == host.hostname and written.user is None and written.port is None)


class Fleet:
    """The worker hosts of one running cluster.

    Parameters
    ----------
    roster : Roster
        The cluster's workers and the plan in force.
    pool : HostPool
        The cluster's connections.
    agents : WorkerAgents
        The hosts' workers agents.
    stage : PreStart
        The stage before the start (run by :meth:`bring_up`).
    staged : iterable of ConnectionKey
        The hosts the start's stage covers (the others are staged by
        :meth:`bring_up`).
    forget : callable
        Called with the name of each worker of a host taken out (its pending
        restart ends: it moves elsewhere).
    kept : KeptCluster, optional
        The named-cluster side of the cluster (its processes on a host removed
        are stopped; its record notes the hosts).
    """

    def __init__(self, roster: Roster, pool: HostPool, agents: WorkerAgents, stage: PreStart,
                 staged: Sequence[ConnectionKey], forget: Callable[[str], None],
                 kept: KeptCluster | None = None) -> None:
        self.roster = roster
        self.pool = pool
        self.agents = agents
        self.stage = stage
        self.forget = forget
        self.kept = kept
        self.health = HostHealth()
        self._staged: dict[ConnectionKey, asyncio.Future[Any]] = {}
        self._staged_at_start = set(staged)
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Workers placed by a move (their first start on their new host).
        self._moved: set[str] = set()

    # -- helpers --------------------------------------------------------------
    def _say(self, message: str) -> None:
        self.roster.say(message, log=logger)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _show(self, host: Host) -> str:
        return self.pool.as_connected(host)

    def _host_of(self, host: str | Host) -> Host:
        """The cluster's own spelling of *host* (it must be one of its worker hosts)."""
        h = _as_host(host)
        plans = self.roster.placement.worker_hosts
        for hp in plans.values():
            if _names(h, hp.host):
                return hp.host
        raise ConfigError("hosts", f"{h.as_written()} is not a worker host of the cluster",
                          remedy="host_rows() lists the cluster's hosts.")

    # -- lazy bring-up ----------------------------------------------------------
    async def bring_up(self, host: Host) -> None:
        """Run the stage before the start on *host* once (before its first agent starts)."""
        if host.key in self._staged_at_start:
            return
        fut = self._staged.get(host.key)
        if fut is None or (fut.done() and (fut.cancelled() or fut.exception() is not None)):
            hp = self.roster.placement.worker_hosts[host.key]
            fut = self._staged[host.key] = asyncio.ensure_future(
                self.stage.run_on([(hp.host, hp.python)]))
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        await asyncio.shield(fut)

    # -- lost and quarantined hosts -----------------------------------------------
    def host_lost(self, host: Host, why: str) -> None:
        """*host* stayed unreachable: take it out and move its workers."""
        self.take_out(host, LOST, why)

    def worker_given_up(self, name: str, host: Host | None, why: str) -> None:
        """A worker died past its restart budget: quarantine its host, move its workers."""
        if host is not None:
            self.take_out(host, QUARANTINED, f"worker {name}: {why}", also=[name])

    def take_out(self, host: Host, state: str, why: str, also: Sequence[str] = ()) -> bool:
        """Take *host* out of the cluster and place its workers elsewhere.

        Parameters
        ----------
        host : Host
        state : str
            ``quarantined`` or ``lost``.
        why : str
            What happened (for the warning and the host's row).
        also : list of str
            Workers of it already dropped (given up) that are replaced too.

        Returns
        -------
        bool
            False if it was taken out already (or the cluster does not run).
        """
        roster = self.roster
        if not roster.running() or not self.health.take_out(host.key, state, why):
            return False
        names = roster.names_on(host.key)
        for name in [*also, *names]:
            self.forget(name)
        for name in names:
            roster.drop(name)  # not retired through the scheduler: it is gone
        moved: list[tuple[str, str]] = []
        for old in [*also, *names]:
            spec = roster.next_spec(self.health.excluded())
            if not spec:
                moved.append((old, ""))
                continue
            new, new_spec = next(iter(spec.items()))
            roster.want(new, new_spec)
            moved.append((old, new))
            self._moved.add(new)
        self.health.note_moves(host.key, moved)
        self._say(self._moved_message(host, state, why, moved))
        self._spawn(self._after_take_out(host))
        return True

    def move_on(self, name: str, host: Host, error: BaseException) -> bool:
        """A worker just moved could not reach its new host: take that host out too, move on.

        Returns False (the failure is reported as any other) unless *name* was
        placed by a move and its host could not be connected to.
        """
        if name not in self._moved or not isinstance(error, ConnectError):
            return False
        self._moved.discard(name)
        first = str(error).strip().splitlines()[0]
        return self.take_out(host, LOST, f"unreachable when {name} was moved there: {first}")

    def settle(self) -> None:
        """Moved workers that now run are no longer on their way to a new host."""
        roster = self.roster
        self._moved = {n for n in self._moved if n in roster and (
            (w := roster.worker(n)) is None or w.status != Status.running)}

    def _moved_message(self, host: Host, state: str, why: str,
                       moved: list[tuple[str, str]]) -> str:
        spares = self.roster.placement.spares
        plans = self.roster.placement.worker_hosts
        went = []
        hosts = self.roster.hosts()
        for old, new in moved:
            if not new:
                continue
            key = hosts[new].key
            went.append(f"{old} -> {new}" + (" (spare)" if key in spares else ""))
        stuck = sum(1 for _, new in moved if not new)
        text = f"host {self._show(host)} {state} ({why})"
        if went:
            text += "; its workers moved: " + ", ".join(went)
        if stuck:
            out = self.health.excluded()
            free = sum(hp.slots for k, hp in plans.items() if k not in out)
            text += (f"; no free slot or spare for {stuck} of its workers (the hosts in use "
                     f"hold {free}): the cluster runs with fewer (add_hosts() or spares=[...])")
        if not moved:
            text += "; it ran no worker"
        return text + ". It gets no worker again unless readmitted (cluster.readmit)."

    async def _after_take_out(self, host: Host) -> None:
        """Start the moved workers; stop what is left of ours there (if it answers)."""
        async def stop() -> None:
            with contextlib.suppress(Exception):
                await self.agents.stop_host(host)

        await asyncio.gather(self.roster.correct(), stop())

    def readmit(self, host: str | Host) -> bool:
        """Let a quarantined or lost host take workers again (``scale``, ``adapt``, moves).

        Returns
        -------
        bool
            False if it was not taken out.
        """
        h = self._host_of(host)
        if not self.health.readmit(h.key):
            return False
        self._say(f"host {self._show(h)} readmitted: it may take workers again")
        return True

    # -- adding and removing hosts -----------------------------------------------
    async def add_hosts(self, hosts: Sequence[str | Host], spare: bool = False) -> list[str]:
        """Add worker hosts; unless *spare*, fill their slots with workers.

        Returns
        -------
        list of str
            The names of the workers started.

        Raises
        ------
        ConfigError
            A host is already in the cluster, or the cluster does not run.
        SSHDeployError
            The hosts that could not start their workers (named, with why);
            they are removed again.
        """
        try:
            return await self._add_hosts(hosts, spare)
        finally:
            await self._note_hosts()

    async def _add_hosts(self, hosts: Sequence[str | Host], spare: bool) -> list[str]:
        roster = self.roster
        if not roster.running():
            raise ConfigError("add_hosts()", f"the cluster is {roster.status.name}",
                              remedy="Add hosts to a running cluster.")
        if isinstance(hosts, str):
            hosts = [hosts]
        new = [_as_host(h) for h in hosts]
        placement = extend(roster.placement, new, spare=spare)
        keys = [k for k in placement.worker_hosts if k not in roster.placement.worker_hosts]
        for key in keys:
            hp = placement.worker_hosts[key]
            self.pool.set_options(hp.host, hp.connect_options)
            self.pool.prepare(hp.host)  # a bad key file fails here
            self.agents.add_host(hp.host, roster.plan.launch(hp))
        roster.replace_placement(placement)
        added = [hp.host for k, hp in placement.worker_hosts.items() if k in keys]
        self._say(f"hosts added{' as spares' if spare else ''}: "
                  + ", ".join(self._show(h) for h in added))
        if spare:
            return []
        started: list[tuple[str, ConnectionKey]] = []
        for key in keys:  # their own slots, whatever other hosts have free
            host = placement.worker_hosts[key].host
            i = 0
            for _ in range(placement.worker_hosts[key].slots):
                while worker_name(host, i) in roster:
                    i += 1
                roster.want(worker_name(host, i), roster.spec_for(host))
                started.append((worker_name(host, i), key))
        await roster.correct()
        failed: dict[ConnectionKey, SSHDeployError] = {}
        for name, key in started:
            err = roster.start_failure(name)
            if err is not None:
                failed.setdefault(key, err)
        if failed:
            await self._drop_hosts(list(failed))
            raise failures_by_host({self._show(placement.worker_hosts[k].host): e
                                    for k, e in failed.items()}, "add hosts")
        return [name for name, _ in started if roster.worker(name) is not None]

    async def remove_hosts(self, hosts: Sequence[str | Host]) -> list[str]:
        """Retire the workers of *hosts* (their data moves to others), then drop the hosts.

        Returns
        -------
        list of str
            The names of the workers retired.

        Raises
        ------
        ConfigError
            A host is not a worker host of the cluster, or runs its scheduler.
        """
        try:
            return await self._remove_hosts(hosts)
        finally:
            await self._note_hosts()

    async def _remove_hosts(self, hosts: Sequence[str | Host]) -> list[str]:
        roster = self.roster
        if isinstance(hosts, str):
            hosts = [hosts]
        sched = roster.placement.scheduler.host
        for h in map(_as_host, hosts):
            if _names(h, sched):
                raise ConfigError("hosts", f"{self._show(sched)} runs the scheduler",
                                  remedy="Remove worker hosts only; scale() removes workers "
                                  "anywhere.")
        targets = [self._host_of(h) for h in hosts]
        retired: list[str] = []
        for h in targets:
            for name in roster.names_on(h.key):
                roster.retire(name)
                worker = roster.worker(name)
                if isinstance(worker, RemoteWorker):
                    worker.retiring = True  # the scheduler retires it: not a lost worker
                retired.append(name)
        # SpecCluster retires the workers gone from the spec through the scheduler
        # (their results are copied to other workers), then closes them.
        await roster.correct()
        await self._drop_hosts([h.key for h in targets])
        self._say("hosts removed: " + ", ".join(self._show(h) for h in targets)
                  + (f" (workers retired: {', '.join(retired)})" if retired else ""))
        return retired

    async def _drop_hosts(self, keys: Sequence[ConnectionKey]) -> None:
        roster = self.roster
        placement = roster.placement
        for key in keys:
            for name in roster.names_on(key):
                roster.retire(name)
            hp = placement.worker_hosts.get(key)
            if hp is not None:
                with contextlib.suppress(Exception):
                    await self.agents.stop_host(hp.host)
                if self.kept is not None:  # agents of an earlier controller may run there too
                    await self._stop_kept(self.kept, hp)
            self.health.readmit(key)
            self._staged.pop(key, None)
        roster.replace_placement(without(placement, keys))

    async def _note_hosts(self) -> None:
        """A named cluster records its hosts (from_name and list find them)."""
        if self.kept is not None:
            await self.kept.note_hosts(self.roster.placement, len(self.roster))

    async def _stop_kept(self, kept: KeptCluster, hp: HostPlan) -> None:
        try:
            await flow.stop_on(kept.policy.name, hp.host, self.roster.plan.launch(hp), self.pool)
        except SSHDeployError as err:
            self._say(f"host {self._show(hp.host)}: could not stop the cluster's processes "
                      f"there ({str(err).splitlines()[0]}); its agents stop by themselves "
                      "once they run no worker")

    async def close(self) -> None:
        """Cancel what runs in the background (moves, stops)."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        staged = list(self._staged.values())
        for f in staged:
            f.cancel()
        await asyncio.gather(*staged, return_exceptions=True)

