"""Hosts that come and go: lost and quarantined hosts replaced, hosts added and removed.

:class:`Fleet` acts on one cluster's worker hosts while it runs:

- a host that stays unreachable (``sshdeploy.host-lost-after``) is *lost*, one
  whose workers die past their restart budget is *quarantined*: either way its
  workers move to hosts with free slots or to a spare, so the cluster gets
  back to its worker count. A quarantine ends by itself after
  ``sshdeploy.worker-restart-window`` seconds (longer for a host quarantined
  again right after: :meth:`HostHealth.quarantine_length`); a lost host gets no
  worker until :meth:`Fleet.readmit` (which also ends a quarantine at once). A
  host readmitted gets the workers the cluster wants but had no slot for
  (:attr:`Fleet.missing`), never more than its ``scale``/``adapt`` count;
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
import functools
import logging
import math
import time
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

from .health import LOST, MAX_QUARANTINE_WINDOWS, QUARANTINED, HostHealth, death_kind
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
    clock : callable
        Seconds, for when quarantines begin and end (``time.monotonic``).
    call_later : callable, optional
        ``(delay, callback) -> handle with cancel()``: runs the end of a
        quarantine (the running loop's ``call_later`` by default).
    """

    def __init__(self, roster: Roster, pool: HostPool, agents: WorkerAgents, stage: PreStart,
                 staged: Sequence[ConnectionKey], forget: Callable[[str], None],
                 kept: KeptCluster | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 call_later: Callable[[float, Callable[[], None]], Any] | None = None) -> None:
        self.roster = roster
        self.pool = pool
        self.agents = agents
        self.stage = stage
        self.forget = forget
        self.kept = kept
        self.health = HostHealth(window=roster.plan.settings.worker_restart_window)
        self._clock = clock
        self._call_later = call_later
        #: The timer that ends each quarantine in force, by host key.
        self._ends: dict[ConnectionKey, Any] = {}
        #: Workers the cluster wants (its scale/adapt count) that no slot was free for
        #: while hosts were out: placed again when a host is readmitted.
        self.missing = 0
        self._scale_said: tuple[int, int, int] | None = None
        self._staged: dict[ConnectionKey, asyncio.Future[Any]] = {}
        self._staged_at_start = set(staged)
        self._tasks: set[asyncio.Task[Any]] = set()
        #: The loop the cluster runs in (known from the first task started in it).
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Workers placed by a move (their first start on their new host).
        self._moved: set[str] = set()

    # -- helpers --------------------------------------------------------------
    def _say(self, message: str) -> None:
        self.roster.say(message, log=logger)

    def _spawn(self, coro: Any) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # the user's thread (a sync cluster's readmit): the loop runs it
            if self._loop is None:
                coro.close()
                return
            self._loop.call_soon_threadsafe(self._spawn, coro)
            return
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
        """Run the stage before the start on *host* once (before its first agent starts).

        Not when the version gate is all the stage does: that gate is on what the
        host's agent says as it starts (:meth:`sshdeploy.env.prestart.PreStart.admit`).
        """
        if host.key in self._staged_at_start or self.stage.agents_gate:
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
            self.take_out(host, QUARANTINED, f"worker {name}: {why}", also=[name],
                          kind=death_kind(why))

    def take_out(self, host: Host, state: str, why: str, also: Sequence[str] = (),
                 kind: str = "") -> bool:
        """Take *host* out of the cluster and place its workers elsewhere.

        A quarantine ends by itself (a timer readmits the host).

        Parameters
        ----------
        host : Host
        state : str
            ``quarantined`` or ``lost``.
        why : str
            What happened (for the warning and the host's row).
        also : list of str
            Workers of it already dropped (given up) that are replaced too
            (what was given up on them is shown on its row until it is
            readmitted).
        kind : str
            How its workers died (:func:`~sshdeploy.cluster.health.death_kind`).

        Returns
        -------
        bool
            False if it was taken out already (or the cluster does not run).
        """
        roster = self.roster
        now = self._clock()
        if not roster.running() or not self.health.take_out(host.key, state, why, now=now,
                                                            kind=kind):
            return False
        names = roster.names_on(host.key)
        for name in names:
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
        self.missing += sum(1 for _, new in moved if not new)
        self.health.note_moves(host.key, moved)
        self._say(self._moved_message(host, state, why, moved))
        until = self.health.out[host.key].until
        if until is not None:
            self._ends[host.key] = self._timer(
                until - now, functools.partial(self._quarantine_ends, host))
            self._say_if_the_workload_kills(now)
        self._spawn(self._after_take_out(host))
        return True

    def _timer(self, delay: float, callback: Callable[[], None]) -> Any:
        if self._call_later is not None:
            return self._call_later(delay, callback)
        return asyncio.get_running_loop().call_later(delay, callback)

    def _say_if_the_workload_kills(self, now: float) -> None:
        """Every worker host quarantined, their workers dead the same way: the tasks, not the
        hosts, are likely at fault (a task calling ``os._exit``, a segfault in a library).
        One host alone tells nothing of the workload."""
        hosts = self.roster.placement.worker_hosts
        latest = self.health.alike(hosts) if len(hosts) > 1 else None
        if latest is None:
            return
        how = latest.reason.partition(": ")[2] or latest.reason
        self._say(f"every host's workers died past their restart budget the same way ({how}): "
                  "the tasks may be killing their workers (os._exit, segfaults); the hosts are "
                  f"readmitted in {max(self.health.ends() - now, 0):.0f} s")

    def move_on(self, name: str, host: Host, error: BaseException) -> bool:
        """A worker just moved could not reach its new host: take that host out too, move on.
        A worker whose host was taken out while it started: forget it, nothing to report.

        Returns False (the failure is reported as any other) unless *name* was
        placed by a move and its host could not be connected to, or was
        dropped with its host.
        """
        if name not in self.roster and host.key in self.health.out:
            # its start was cancelled by the take-out ("failed to start: CancelledError"),
            # and SpecCluster tracked it again when its start ended
            self._moved.discard(name)
            self.roster.drop(name)
            return True
        if name not in self._moved or not isinstance(error, ConnectError):
            return False
        self._moved.discard(name)
        first = str(error).strip().splitlines()[0]
        return self.take_out(host, LOST, f"unreachable when {name} was moved there: {first}")

    def report_failed(self, failed: Sequence[RemoteWorker],
                      restarting: Callable[[str], bool]) -> None:
        """Workers that failed to start after start-up: a warning, a log line, the row.

        A worker being restarted (*restarting* says so) is left to
        :mod:`sshdeploy.cluster.restarts` (its budget); a moved worker whose new
        host is down too moves on (:meth:`move_on`).
        """
        for w in failed:
            name, err = str(w.name), w.start_error
            assert err is not None
            if restarting(name):
                continue
            if self.move_on(name, w.host, err):  # a spare that is down too: the next
                w.start_error = None
                continue
            self.roster.say(f"worker {name} failed to start: {str(err).splitlines()[0]}",
                            log=logger)
            self.roster.note_start_failure(w)

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
                     f"hold {free}): the cluster runs with fewer until a host is readmitted "
                     "(or add_hosts(), spares=[...])")
        if not moved:
            text += "; it ran no worker"
        taken = self.health.out[host.key]
        if taken.until is None:
            return text + ". It gets no worker again unless readmitted (cluster.readmit)."
        length = taken.until - taken.since
        again = (" (quarantined again right after its readmission: longer each time, up to "
                 f"{MAX_QUARANTINE_WINDOWS * self.health.window:.0f} s)"
                 if length > self.health.window else "")
        return text + (f". It is readmitted in {length:.0f} s{again}; cluster.readmit() "
                       "readmits it now.")

    async def _after_take_out(self, host: Host) -> None:
        """Start the moved workers; stop what is left of ours there (if it answers)."""
        async def stop() -> None:
            with contextlib.suppress(Exception):
                await self.agents.stop_host(host)

        await asyncio.gather(self.roster.correct(), stop())

    def readmit(self, host: str | Host) -> bool:
        """Let a quarantined or lost host take workers again now (``scale``, ``adapt``, moves);
        the workers missing for want of a slot are placed again.

        Returns
        -------
        bool
            False if it was not taken out.
        """
        return self._readmit(self._host_of(host), by_hand=True)

    def _quarantine_ends(self, host: Host) -> None:
        self._ends.pop(host.key, None)
        if self.roster.running() and host.key in self.roster.placement.worker_hosts:
            self._readmit(host, by_hand=False)

    def _readmit(self, host: Host, by_hand: bool) -> bool:
        now = self._clock()
        was = self.health.readmit(host.key, now)
        if was is None:
            return False
        end = self._ends.pop(host.key, None)
        if end is not None:
            end.cancel()
        for old, _ in was.moved:
            self.forget(old)  # what was given up on its workers is history now
        placed = self._place_missing() if self.roster.running() else []
        how = "of quarantine" if was.state == QUARANTINED else "out (lost)"
        self._say(f"host {self._show(host)} readmitted{' (cluster.readmit)' if by_hand else ''} "
                  f"after {now - was.since:.0f} s {how}: {len(placed)} worker(s) placed again"
                  + (f" ({', '.join(placed)})" if placed else ""))
        if placed:
            self._spawn(self.roster.correct())
        return True

    def _place_missing(self) -> list[str]:
        """Place the workers missing for want of a slot in the free slots of the hosts not out
        (the rest wait for the next host readmitted)."""
        out = self.health.excluded()
        used = sum(1 for h in self.roster.hosts().values() if h.key not in out)
        free = self._capacity(out) - used
        placed: list[str] = []
        while self.missing > 0 and len(placed) < free:
            spec = self.roster.next_spec(out)
            if not spec:
                break
            name, new_spec = next(iter(spec.items()))
            self.roster.want(name, new_spec)
            self._moved.add(name)  # a host that cannot be reached is taken out, it moves on
            placed.append(name)
            self.missing -= 1
        return placed

    def _capacity(self, out: set[ConnectionKey]) -> float:
        """How many workers the hosts not in *out* take: their slots; any number when no host
        has slots (``n_workers=0``, a one-host cluster), if one is not out."""
        plans = self.roster.placement.worker_hosts
        if not any(hp.slots for hp in plans.values()):
            return math.inf if any(k not in out for k in plans) else 0
        return sum(hp.slots for k, hp in plans.items() if k not in out)

    def room_for(self, wanted: int, over_slots: Callable[[int], str]) -> int:
        """How many of the *wanted* workers a scale places now: at most the slots of the hosts
        not taken out.

        Those the hosts taken out have slots for are :attr:`missing`, placed when
        a host is readmitted; those beyond every host's slots are not (said
        through *over_slots*, given the slots). Said once per request (adapt
        asks every interval).
        """
        every = self._capacity(set())
        n = int(min(wanted, self._capacity(self.health.excluded())))
        self.missing = int(min(wanted, every)) - n
        if self._scale_said != (wanted, n, self.missing):
            self._scale_said = (wanted, n, self.missing)
            if wanted > every:
                self._say(over_slots(int(every)))
            if self.missing:
                self._say(f"{n} worker(s) start now, {self.missing} more once a quarantined "
                          "or lost host is readmitted (it holds their slots)")
        return n

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
            self.health.forget(key)
            end = self._ends.pop(key, None)
            if end is not None:
                end.cancel()
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
        """Cancel what runs in the background (moves, stops, the ends of quarantines)."""
        for end in self._ends.values():
            end.cancel()
        self._ends.clear()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        staged = list(self._staged.values())
        for f in staged:
            f.cancel()
        await asyncio.gather(*staged, return_exceptions=True)

