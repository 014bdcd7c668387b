"""The scheduler and workers of a running named cluster, taken over by a new controller.

:meth:`sshdeploy.SSHCluster.from_name` builds a cluster whose scheduler and
existing workers already run on their hosts, each under its kept agent. They
are distributed's process objects like any other, so ``scale``, ``adapt``
and ``Client(cluster)`` work unchanged: the scheduler is reached (directly or
through a fresh SSH forward) instead of started; an existing worker is
retired through the scheduler when scaled away, instead of stopped by an
agent of ours. Workers added by ``scale`` start as usual, in kept agents.
"""

from __future__ import annotations

from typing import Any

from distributed.core import Status

from sshdeploy.cluster.processes import RemoteScheduler, RemoteWorker


class AdoptedScheduler(RemoteScheduler):
    """A scheduler that already runs: reached, never started or stopped by us.

    Parameters
    ----------
    address : str
        Its address on its own network.
    dashboard_port : int or None
        Its dashboard's port.
    **kwargs
        As :class:`RemoteScheduler` (host, pool, launch, logbook, forward).
    """

    def __init__(self, address: str, dashboard_port: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.address = address
        self.external_address = address
        self.dashboard_port = dashboard_port

    async def _start(self) -> None:
        ch = self.channel
        ch.connection = await ch.pool.get(self.host)
        await self._reach(ch)

    async def close(self) -> None:
        """Leave it running: only our forwards close."""
        await self.detach()


class AdoptedWorker(RemoteWorker):
    """A worker that already runs under a kept agent of an earlier controller.

    Parameters
    ----------
    retire : callable
        Awaited with the worker's name to retire and close it through the scheduler.
    **kwargs
        As :class:`RemoteWorker`.
    """

    def __init__(self, retire: Any, address: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._retire = retire
        self.address = address
        self.status = Status.running

    async def _start(self) -> None:
        """Nothing to start: it runs."""

    async def close(self) -> None:
        """Retire it through the scheduler (its Nanny closes; its agent then exits)."""
        if self.status == Status.running:
            await self._retire(str(self.name))
        self.status = Status.closed

    def __repr__(self) -> str:
        return f"<AdoptedWorker {self.name} on {self.host.hostname} {self.status.name}>"
