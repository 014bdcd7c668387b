"""A lost worker: tell the scheduler at once, then restart it, at a bounded rate.

The budget is a rate (:class:`sshdeploy.remote.agent.RestartBudget`:
``sshdeploy.worker-restarts`` within ``sshdeploy.worker-restart-window``
seconds), so a worker that ran fine for a while has its budget back. A worker
lost with its host (agent or link) waits for the host to be reachable again,
with backoff, without spending its budget meanwhile; each step is in
:attr:`WorkerRestarts.steps` for the host rows. A worker given up is a
WARNING on this logger and a line of ``get_logs()["Cluster"]``.

The restarts each host's row counts (:attr:`WorkerRestarts.restarted`) come
from the deaths told: one per restart made here, and those a worker's Nanny
made on its host before it gave up, read from the agent's own count
(:data:`NANNY_DEATHS`, "its worker process died 6 times": 5 restarts), so a
row's restarts agree with the deaths its error reports.

:class:`WorkerRestarts` owns every task and timer it starts and cancels them
on :meth:`WorkerRestarts.close`, so nothing it scheduled runs after the
cluster has closed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable
from time import monotonic, time
from typing import Any

from sshdeploy.errors import ConnectError, SSHDeployError
from sshdeploy.remote.agent.servers import RestartBudget
from sshdeploy.ssh.channel import CONNECTION_LOST

from .roster import Roster

logger = logging.getLogger(__name__)

#: In the reason the agent gives for a Nanny whose worker process died too often.
GAVE_UP = "not restarted again"
#: Longest wait between two tries to reach a host again, in seconds.
MAX_BACKOFF = 30.0
#: How the agent counts the deaths of a worker process whose Nanny gave up
#: (:meth:`sshdeploy.remote.agent.servers.Servers.limit_restarts`): each but the last
#: was a restart by the Nanny.
NANNY_DEATHS = re.compile(r"worker process died (\d+) times")


def nanny_restarts(reason: str) -> int:
    """The restarts a Nanny made before it gave up, by the agent's *reason* (0: none told).

    Examples
    --------
    >>> nanny_restarts("its worker process died 6 times within 60 s (last exit code 1); "
    ...                "not restarted again (sshdeploy.worker-restarts: 5 restarts within 60 s)")
    5
    >>> nanny_restarts("the remote agent exited")
    0
    """
    found = NANNY_DEATHS.search(reason)
    return max(int(found.group(1)) - 1, 0) if found else 0


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its class name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class WorkerRestarts:
    """The restart policy of one cluster.

    Parameters
    ----------
    roster : Roster
        The cluster's workers: those wanted, and their processes.
    limit : int
        Restarts per worker within *window* (``sshdeploy.worker-restarts``).
    enabled : bool
        False: a lost worker is only reported and dropped (``--no-restart``).
    heartbeat_timeout : float
        Seconds an agent cut off from the controller keeps running: a worker
        lost with its connection is restarted only after that.
    window : float
        Seconds of ``sshdeploy.worker-restart-window``.
    reach : callable, optional
        Awaited with a worker's host before a restart; raises an
        :class:`~sshdeploy.errors.SSHDeployError` while the host cannot be
        reached (the restart then waits, with backoff, spending no budget).
    lost_after : float
        Seconds a host may stay unreachable before *on_host_lost* is called
        (``sshdeploy.host-lost-after``).
    on_host_lost : callable, optional
        Called with ``(host, why)`` when a host stayed unreachable for
        *lost_after* seconds; its workers' restarts then end.
    on_give_up : callable, optional
        Called with ``(name, host, why)`` after a worker was given up past
        its budget (not when restarts are off).
    """

    def __init__(
        self, roster: Roster, limit: int, enabled: bool, heartbeat_timeout: float,
        window: float = 60.0, reach: Callable[[Any], Awaitable[Any]] | None = None,
        lost_after: float = math.inf,
        on_host_lost: Callable[[Any, str], None] | None = None,
        on_give_up: Callable[[str, Any, str], None] | None = None,
    ) -> None:
        self.roster = roster
        self.limit = limit
        self.window = window
        self.enabled = enabled
        self.heartbeat_timeout = heartbeat_timeout
        self.reach = reach
        self.lost_after = lost_after
        self.on_host_lost = on_host_lost
        self.on_give_up = on_give_up
        #: When each host was first found unreachable (monotonic), by host key.
        self.unreachable_since: dict[Any, float] = {}
        #: Restarts so far of the workers of each host, by host key (for the host rows):
        #: those made here and those their Nannies made (:func:`nanny_restarts`).
        self.restarted: dict[Any, int] = {}
        self.budgets: dict[str, RestartBudget] = {}
        #: Where each pending restart stands, by worker name (for the host rows).
        self.steps: dict[str, str] = {}
        #: Workers given up on: name -> (host key, why), for the per-host view.
        self.given_up: dict[str, tuple[Any, str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._closed = False

    def _wanted(self, name: str) -> bool:
        return not self._closed and self.roster.running() and name in self.roster

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget(self, name: str) -> None:
        """Drop what is pending for *name* and what was given up on it (its host was taken
        out, it moved elsewhere; or its host was readmitted, its death is history)."""
        self.steps.pop(name, None)
        self.budgets.pop(name, None)
        self.given_up.pop(name, None)

    def _count(self, name: str, restarts: int) -> None:
        host = self.roster.host_of(name)
        if restarts and host is not None:
            self.restarted[host.key] = self.restarted.get(host.key, 0) + restarts

    def restarting(self, name: str) -> bool:
        """Whether a restart of *name* is pending or running."""
        return name in self.steps

    def lost(self, name: str, reason: str) -> None:
        """A worker's Nanny or host agent went away: report it, and restart it if allowed."""
        if not self._wanted(name):
            return
        worker = self.roster.worker(name)
        if worker is not None and worker.address:
            # Tell the scheduler now rather than after its own timeouts (~30 s
            # for a host cut off), so that the worker's tasks move on at once.
            self._spawn(self._unregister(str(worker.address), reason))
        budget = self.budgets.setdefault(name, RestartBudget(self.limit, self.window))
        # The agent already restarted its worker process too often and gave up.
        looping = GAVE_UP in reason
        self._count(name, nanny_restarts(reason))
        if not self.enabled or looping or not budget.spend(monotonic()):
            why = ("restarts are off" if not self.enabled else
                   "it died in a loop" if looping else
                   f"it was lost {len(budget.deaths)} times within {self.window:.0f} s; "
                   f"sshdeploy.worker-restarts allows {budget.describe()}")
            moves = self.enabled and self.on_give_up is not None
            host = self.give_up(name, reason, why, warn_empty=not moves)
            if moves and self.on_give_up is not None:
                # its host is quarantined: its workers (this one too) move elsewhere; how
                # they died (the agent's words) tells the same workload on every host
                self.on_give_up(name, host, f"{why}: {reason.split('; ' + GAVE_UP)[0]}"
                                if looping else why)
            return
        tries = budget.used(monotonic())
        self._count(name, 1)
        delay = min(2.0 ** (tries - 1), MAX_BACKOFF)
        if reason == CONNECTION_LOST:
            # The old agent may still run there until its heartbeat timeout: a
            # new worker of the same name would be refused ("name taken") before.
            delay = max(delay, self.heartbeat_timeout)
        step = f"lost ({reason}); restarting it in {delay:.0f} s ({tries}/{self.limit})"
        self.steps[name] = step
        self.roster.say(f"worker {name} {step}", log=logger)
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            self._spawn(self._restart(name, reason))

        timer = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(timer)

    def give_up(self, name: str, reason: str, why: str, warn_empty: bool = True) -> Any:
        """Drop *name* for good: a WARNING, a line in ``get_logs()["Cluster"]``, its row.

        Returns its host (None if it was not in the spec any more).
        """
        self.roster.say(f"worker {name} lost ({reason}); not restarted ({why})", log=logger)
        host = self.roster.host_of(name)
        self.given_up[name] = (getattr(host, "key", None), f"{name}: {reason}; not restarted")
        self.steps.pop(name, None)
        self.roster.drop(name)
        if warn_empty and not len(self.roster):
            self.roster.say(f"the cluster has no workers left: {len(self.given_up)} given up "
                            f"(the last: {name}, {why}); scale() or restart the cluster",
                            log=logger)
        return host

    async def _unregister(self, address: str, reason: str) -> None:
        comm = self.roster.scheduler_comm
        if comm is None:
            return
        try:
            await asyncio.wait_for(
                comm.unregister(address=address, stimulus_id=f"sshdeploy-lost-{time()}",
                                close=False),
                10,
            )
        except Exception as exc:  # the scheduler will notice by itself, later
            logger.debug("could not unregister %s (%s): %s", address, reason, exc)

    async def _wait_reachable(self, name: str, reason: str) -> bool:
        """Wait (backoff, no budget spent) until the worker's host answers again.

        Returns False if the worker is no longer wanted meanwhile.
        """
        delay = 1.0
        while self._wanted(name):
            host = self.roster.host_of(name)
            if self.reach is None or host is None:
                return True
            try:
                await self.reach(host)
                self.unreachable_since.pop(host.key, None)
                return True
            except SSHDeployError as exc:
                since = self.unreachable_since.setdefault(host.key, monotonic())
                if monotonic() - since >= self.lost_after and self.on_host_lost is not None:
                    self.unreachable_since.pop(host.key, None)
                    self.on_host_lost(host, f"unreachable for {monotonic() - since:.0f} s "
                                      f"({first_line(exc)})")
                    return False
                step = (f"lost ({reason}); its host is not reachable ({first_line(exc)}); "
                        f"trying again in {delay:.0f} s")
                if self.steps.get(name, "").split("trying again")[0] != step.split(
                        "trying again")[0]:
                    self.roster.say(f"worker {name} {step}", log=logger)
                self.steps[name] = step
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
        return False

    async def _restart(self, name: str, reason: str, pause: float = 0.0) -> None:
        await asyncio.sleep(pause)
        if not await self._wait_reachable(name, reason):
            return
        self.steps[name] = f"lost ({reason}); restarting it now"
        self.roster.release(name)
        try:
            # Shielded: close() cancels this task, not SpecCluster's own (its workers'
            # failures would then go unretrieved); close() ends the starts instead.
            await asyncio.shield(self.roster.correct())
            worker: Any = self.roster.worker(name)
            error = getattr(worker, "start_error", None)
            if error is not None:  # the cluster left it to us (see Fleet.report_failed)
                assert worker is not None
                worker.start_error = None
                raise error
        except ConnectError:  # the host went away again: wait for it, no budget spent
            self._spawn(self._restart(name, reason, pause=1.0))
        except Exception as exc:  # reported, and counted against the restart budget
            logger.warning("worker %s could not be restarted: %s", name, first_line(exc))
            self.lost(name, f"restart failed: {first_line(exc)}")
        else:
            self.steps.pop(name, None)

    async def close(self) -> None:
        """Cancel every pending restart and wait for running ones to end."""
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
