"""When a named cluster's agents may outlive their controller: once it is recorded.

Until the cluster is recorded (here and on its scheduler host:
:func:`sshdeploy.named.flow.save`), its agents behave as a classic cluster's:
they stop when their controller goes (EOF, a silent heartbeat), and one that
was never armed removes every file it made on its way out. So a start that
fails, or whose controller is killed at any stage, leaves nothing on any host.

Once it is recorded, :func:`arm` tells every agent of the cluster to run on
without a controller, and makes every agent started from then on (``scale``,
``add``, restarts, a later ``from_name``) start armed. Every command can then
find the cluster (its record) and stop it (``dask-ssh down``: by the agents'
records and by the mark every process of it carries).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from sshdeploy.cluster.kept import KeptCluster
from sshdeploy.cluster.processes import RemoteScheduler, WorkerAgents
from sshdeploy.cluster.roster import Roster
from sshdeploy.ssh.pool import HostPool

logger = logging.getLogger(__name__)

#: Seconds each running agent has to say it runs on without a controller.
ARM_TIMEOUT = 10.0


async def arm(roster: Roster, agents: WorkerAgents, scheduler: Any,
              timeout: float = ARM_TIMEOUT) -> None:
    """The cluster is recorded: its agents, running or to come, run on without a controller.

    Parameters
    ----------
    roster : Roster
        Holds the plan in force: it is armed, so agents started later start armed.
    agents : WorkerAgents
        The workers' agents, told now.
    scheduler : RemoteScheduler or other
        The scheduler's process (an adopted one is armed already).
    timeout : float
        Seconds each running agent has to answer; one that did not is named in
        a warning (it stops with this controller).

    Once armed, nothing; nothing for a cluster that is not a named one.
    """
    plan = roster.plan
    if plan.keep is None or plan.keep.armed:
        return
    keep = dataclasses.replace(plan.keep, armed=True)
    roster.replace_plan(dataclasses.replace(plan, keep=keep))  # hosts added later
    told = agents.arm(keep.spec())
    if isinstance(scheduler, RemoteScheduler):
        scheduler.channel.arm()
        told.append(scheduler.channel)
    running = [ch for ch in told if ch.alive and ch.hello]
    said = await asyncio.gather(*(ch.armed(timeout) for ch in running))
    for ch, ok in zip(running, said, strict=True):
        if not ok and ch.alive:
            logger.warning("[%s] %s agent did not say within %.0f s that it runs on without "
                           "a controller: it may stop when this controller goes", ch.where,
                           ch.role, timeout)


async def record(kept: KeptCluster, scheduler: Any, roster: Roster, pool: HostPool,
                 agents: WorkerAgents, left_out: Sequence[str] = ()) -> None:
    """A new named cluster runs (its scheduler and first workers): record it, then arm it.

    Until then its agents stop with their controller, and a failed start closes
    it as a classic cluster's: nothing of it is left, nothing recorded. Nothing
    for a cluster taken over (recorded already). *left_out*: hosts left out at
    the start (``min_workers``), which never ran anything of it.
    """
    if kept.record is not None:
        return
    await kept.save(str(getattr(scheduler, "address", "")),
                    getattr(scheduler, "dashboard_port", None), roster.plan, pool,
                    left_out=left_out)
    await arm(roster, agents, scheduler)  # from now on they run on without us
    logger.info("cluster %r %s", kept.policy.name, kept.policy.describe())
