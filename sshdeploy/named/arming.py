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
from typing import TYPE_CHECKING

from sshdeploy.processes import RemoteScheduler

if TYPE_CHECKING:
    from sshdeploy.cluster import SSHCluster

logger = logging.getLogger(__name__)

#: Seconds each running agent has to say it runs on without a controller.
ARM_TIMEOUT = 10.0


async def arm(cluster: SSHCluster, timeout: float = ARM_TIMEOUT) -> None:
    """The cluster is recorded: its agents, running or to come, run on without a controller.

    Returns once every running agent said so (bounded by *timeout*: one that
    did not is named in a warning; it stops with this controller). Once
    armed, nothing; nothing for a cluster that is not a named one.
    """
    plan = cluster.cluster_plan
    if plan.keep is None or plan.keep.armed:
        return
    keep = dataclasses.replace(plan.keep, armed=True)
    cluster.replace_plan(dataclasses.replace(plan, keep=keep))  # hosts added later
    told = cluster.agents.arm(keep.spec())
    scheduler = cluster.scheduler
    if isinstance(scheduler, RemoteScheduler):  # an adopted one is armed already
        scheduler.channel.arm()
        told.append(scheduler.channel)
    running = [ch for ch in told if ch.alive and ch.hello]
    said = await asyncio.gather(*(ch.armed(timeout) for ch in running))
    for ch, ok in zip(running, said, strict=True):
        if not ok and ch.alive:
            logger.warning("[%s] %s agent did not say within %.0f s that it runs on without "
                           "a controller: it may stop when this controller goes", ch.where,
                           ch.role, timeout)
