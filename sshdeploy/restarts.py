"""A lost worker: tell the scheduler at once, then restart it, a bounded number of times.

:class:`WorkerRestarts` owns every task and timer it starts and cancels them
on :meth:`WorkerRestarts.close`, so nothing it scheduled runs after the
cluster has closed.
"""

from __future__ import annotations

import asyncio
import logging
from time import time
from typing import Any

from distributed.core import Status
from distributed.deploy.spec import SpecCluster

from . import compat
from .channel import CONNECTION_LOST

logger = logging.getLogger(__name__)

#: In the reason the agent gives for a Nanny whose worker process died too often.
GAVE_UP = "not restarted again"


class WorkerRestarts:
    """The restart policy of one cluster.

    Parameters
    ----------
    cluster : SpecCluster
        The cluster whose ``worker_spec`` names the workers wanted.
    limit : int
        Restarts per worker (``sshdeploy.worker-restarts``).
    enabled : bool
        False: a lost worker is only reported and dropped (``--no-restart``).
    heartbeat_timeout : float
        Seconds an agent cut off from the controller keeps running: a worker
        lost with its connection is restarted only after that.
    """

    def __init__(
        self, cluster: SpecCluster, limit: int, enabled: bool, heartbeat_timeout: float
    ) -> None:
        self.cluster = cluster
        self.limit = limit
        self.enabled = enabled
        self.heartbeat_timeout = heartbeat_timeout
        #: Restarts so far, by worker name.
        self.counts: dict[str, int] = {}
        #: Workers given up on: name -> (host key, why), for the per-host view.
        self.given_up: dict[str, tuple[Any, str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._closed = False

    def _wanted(self, name: str) -> bool:
        return (
            not self._closed
            and self.cluster.status == Status.running
            and name in self.cluster.worker_spec
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def lost(self, name: str, reason: str) -> None:
        """A worker's Nanny or host agent went away: report it, and restart it if allowed."""
        if not self._wanted(name):
            return
        worker = self.cluster.workers.get(name)
        if worker is not None and worker.address:
            # Tell the scheduler now rather than after its own timeouts (~30 s
            # for a host cut off), so that the worker's tasks move on at once.
            self._spawn(self._unregister(str(worker.address), reason))
        tries = self.counts.get(name, 0)
        # The agent already restarted its worker process `limit` times and gave up.
        looping = GAVE_UP in reason
        if not self.enabled or tries >= self.limit or looping:
            why = ("restarts are off" if not self.enabled else
                   "it died in a loop" if looping else f"after {tries} restarts")
            logger.warning("worker %s lost (%s); not restarted (%s)", name, reason, why)
            spec = self.cluster.worker_spec.get(name, {})
            host = spec.get("options", {}).get("host")
            self.given_up[name] = (getattr(host, "key", None), f"{name}: {reason}")
            self.cluster.worker_spec.pop(name, None)
            self.cluster.workers.pop(name, None)
            return
        self.counts[name] = tries + 1
        delay = 2.0**tries
        if reason == CONNECTION_LOST:
            # The old agent may still run there until its heartbeat timeout: a
            # new worker of the same name would be refused ("name taken") before.
            delay = max(delay, self.heartbeat_timeout)
        logger.warning("worker %s lost (%s); restarting it in %.0f s (%d/%d)", name, reason,
                       delay, tries + 1, self.limit)
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            self._spawn(self._restart(name))

        timer = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(timer)

    async def _unregister(self, address: str, reason: str) -> None:
        comm = self.cluster.scheduler_comm
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

    async def _restart(self, name: str) -> None:
        if not self._wanted(name):
            return
        old = self.cluster.workers.pop(name, None)
        if old is not None:
            compat.forget_created(self.cluster, old)
        try:
            await compat.correct_state(self.cluster)
        except Exception as exc:  # reported, and counted against the restart limit
            logger.warning("worker %s could not be restarted: %s", name, exc)
            self.lost(name, "restart failed")

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
