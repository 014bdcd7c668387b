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
:class:`~sshdeploy.health.HostHealth`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from distributed.core import Status

from . import compat
from .errors import ConfigError, ConnectError, SSHDeployError, failures_by_host
from .health import LOST, QUARANTINED, HostHealth
from .hostfile import parse_host
from .hosts import ConnectionKey, Host
from .named import flow
from .placement import HostPlan, extend, without, worker_name
from .processes import RemoteWorker

if TYPE_CHECKING:
    from .cluster import SSHCluster

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
    cluster : SSHCluster
        The cluster (its plan, specs, pool, agents and stage).
    staged : iterable of ConnectionKey
        The hosts the start's stage covers (the others are staged by
        :meth:`bring_up`).
    """

    def __init__(self, cluster: SSHCluster, staged: Sequence[ConnectionKey]) -> None:
        self.cluster = cluster
        self.health = HostHealth()
        self._staged: dict[ConnectionKey, asyncio.Future[Any]] = {}
        self._staged_at_start = set(staged)
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Workers placed by a move (their first start on their new host).
        self._moved: set[str] = set()

    # -- helpers --------------------------------------------------------------
    def _say(self, message: str) -> None:
        logger.warning("%s", message)
        compat.record_cluster_log(self.cluster, message)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _names_on(self, key: ConnectionKey) -> list[str]:
        return [str(name) for name, spec in self.cluster.worker_spec.items()
                if "options" in spec and spec["options"]["host"].key == key]

    def _show(self, host: Host) -> str:
        return self.cluster.pool.as_connected(host)

    def _host_of(self, host: str | Host) -> Host:
        """The cluster's own spelling of *host* (it must be one of its worker hosts)."""
        h = _as_host(host)
        plans = self.cluster.cluster_plan.placement.worker_hosts
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
            hp = self.cluster.cluster_plan.placement.worker_hosts[host.key]
            fut = self._staged[host.key] = asyncio.ensure_future(
                self.cluster.stage.run_on([(hp.host, hp.python)]))
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
        c = self.cluster
        if c.status != Status.running or not self.health.take_out(host.key, state, why):
            return False
        names = self._names_on(host.key)
        for name in [*also, *names]:
            c.restarts.forget(name)
        for name in names:
            c.worker_spec.pop(name, None)
            worker = c.workers.pop(name, None)
            if worker is not None:  # not retired through the scheduler: it is gone
                compat.forget_created(c, worker)
        moved: list[tuple[str, str]] = []
        for old in [*also, *names]:
            spec = c.new_worker_spec()
            if not spec:
                moved.append((old, ""))
                continue
            c.worker_spec.update(spec)
            moved.append((old, next(iter(spec))))
            self._moved.add(next(iter(spec)))
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
        workers = self.cluster.workers
        self._moved = {n for n in self._moved
                       if n in self.cluster.worker_spec and (
                           n not in workers or workers[n].status != Status.running)}

    def _moved_message(self, host: Host, state: str, why: str,
                       moved: list[tuple[str, str]]) -> str:
        spares = self.cluster.cluster_plan.placement.spares
        plans = self.cluster.cluster_plan.placement.worker_hosts
        went = []
        for old, new in moved:
            if not new:
                continue
            key = self.cluster.worker_spec[new]["options"]["host"].key
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
                await self.cluster.agents.stop_host(host)

        await asyncio.gather(compat.correct_state(self.cluster), stop())

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
        c = self.cluster
        if c.status != Status.running:
            raise ConfigError("add_hosts()", f"the cluster is {c.status.name}",
                              remedy="Add hosts to a running cluster.")
        if isinstance(hosts, str):
            hosts = [hosts]
        new = [_as_host(h) for h in hosts]
        placement = extend(c.cluster_plan.placement, new, spare=spare)
        keys = [k for k in placement.worker_hosts if k not in c.cluster_plan.placement.worker_hosts]
        for key in keys:
            hp = placement.worker_hosts[key]
            c.pool.set_options(hp.host, hp.connect_options)
            c.pool.prepare(hp.host)  # a bad key file fails here
            c.agents.launches[key] = c.cluster_plan.launch(hp)
        c.replace_placement(placement)
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
                while worker_name(host, i) in c.worker_spec:
                    i += 1
                c.worker_spec[worker_name(host, i)] = c.worker_spec_for(host)
                started.append((worker_name(host, i), key))
        await compat.correct_state(c)
        failed: dict[ConnectionKey, SSHDeployError] = {}
        for name, key in started:
            err = c.start_failure(name)
            if err is not None:
                failed.setdefault(key, err)
        if failed:
            await self._drop_hosts(list(failed))
            raise failures_by_host({self._show(placement.worker_hosts[k].host): e
                                    for k, e in failed.items()}, "add hosts")
        return [name for name, _ in started if name in c.workers]

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
        c = self.cluster
        if isinstance(hosts, str):
            hosts = [hosts]
        sched = c.cluster_plan.placement.scheduler.host
        for h in map(_as_host, hosts):
            if _names(h, sched):
                raise ConfigError("hosts", f"{self._show(sched)} runs the scheduler",
                                  remedy="Remove worker hosts only; scale() removes workers "
                                  "anywhere.")
        targets = [self._host_of(h) for h in hosts]
        retired: list[str] = []
        for h in targets:
            for name in self._names_on(h.key):
                c.worker_spec.pop(name, None)
                worker = c.workers.get(name)
                if isinstance(worker, RemoteWorker):
                    worker.retiring = True  # the scheduler retires it: not a lost worker
                retired.append(name)
        # SpecCluster retires the workers gone from the spec through the scheduler
        # (their results are copied to other workers), then closes them.
        await compat.correct_state(c)
        await self._drop_hosts([h.key for h in targets])
        self._say("hosts removed: " + ", ".join(self._show(h) for h in targets)
                  + (f" (workers retired: {', '.join(retired)})" if retired else ""))
        return retired

    async def _drop_hosts(self, keys: Sequence[ConnectionKey]) -> None:
        c = self.cluster
        placement = c.cluster_plan.placement
        for key in keys:
            for name in self._names_on(key):
                c.worker_spec.pop(name, None)
            hp = placement.worker_hosts.get(key)
            if hp is not None:
                with contextlib.suppress(Exception):
                    await c.agents.stop_host(hp.host)
                if c.kept is not None:  # agents of an earlier controller may run there too
                    await self._stop_kept(hp)
            self.health.readmit(key)
            self._staged.pop(key, None)
        c.replace_placement(without(placement, keys))

    async def _stop_kept(self, hp: HostPlan) -> None:
        c = self.cluster
        assert c.kept is not None
        try:
            await flow.stop_on(c.kept.policy.name, hp.host, c.cluster_plan.launch(hp), c.pool)
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

