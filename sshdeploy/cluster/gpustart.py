"""The GPU step of a start: probe the GPU hosts, place one worker per GPU, say what was found.

A host asked for GPUs (``gpus=``) keeps its ordinary placement until it has
been probed: :class:`GpuStart` probes every such host beside the scheduler's
start (:func:`sshdeploy.ssh.preflight.probe_gpus`, in the workers'
environment), and before the scheduler is created (the cluster awaits
:meth:`GpuStart.placed` where it awaits the version gate) turns what was found
into the workers wanted (:func:`sshdeploy.gpus.place_gpus`). A request that
cannot be met fails the start there, naming each host and what it has, so no
scheduler and no worker ever started.
"""

from __future__ import annotations

import asyncio
import logging

from sshdeploy.arguments import check_min_workers
from sshdeploy.errors import GPUError, SSHDeployError, failures_by_host
from sshdeploy.gpus import GpuChoice, Inventory, choose, cuda_options, place_gpus
from sshdeploy.hosts import ConnectionKey
from sshdeploy.ssh.pool import HostPool
from sshdeploy.ssh.preflight import probe_gpus

from .roster import Roster

logger = logging.getLogger(__name__)


class GpuStart:
    """The GPU hosts of one start: their probes, then their workers.

    Parameters
    ----------
    roster : Roster
        The cluster's workers and plan: :meth:`placed` replaces both.
    pool : HostPool
        The cluster's connections.
    """

    def __init__(self, roster: Roster, pool: HostPool) -> None:
        self.roster = roster
        self.pool = pool
        self._probes: dict[ConnectionKey, asyncio.Future[Inventory]] = {}
        self._placed = False
        #: What each GPU host was found to have, and got (``user@host:port`` -> choice).
        self.choices: dict[str, GpuChoice] = {}

    def begin(self) -> None:
        """Probe every GPU host now (nothing if none was asked for GPUs, or begun already)."""
        if self._probes or self._placed:
            return
        plan = self.roster.plan
        visible = plan.env.get("CUDA_VISIBLE_DEVICES")
        for key, hp in plan.placement.gpu_hosts().items():
            probe = asyncio.ensure_future(probe_gpus(
                self.pool, hp.host, hp.python, plan.user_setup, plan.login_shell, visible,
                plan.settings.start_timeout))
            probe.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._probes[key] = probe

    async def placed(self) -> None:
        """Place the GPU workers once every probe has answered (once, before any starts).

        A host that could not be reached keeps its placement: its workers
        fail to start as any unreachable host's do (``min_workers`` may go on
        without it).

        Raises
        ------
        GPUError, MultiHostError
            Hosts whose request cannot be met, each with what was found there.
        ConfigError
            ``min_workers`` above the workers the GPU hosts give.
        """
        if self._placed:
            return
        self.begin()
        self._placed = True
        if not self._probes:
            return
        found = await asyncio.gather(*self._probes.values(), return_exceptions=True)
        plan = self.roster.plan
        placement = plan.placement
        choices: dict[ConnectionKey, GpuChoice] = {}
        failed: dict[str, SSHDeployError] = {}
        for key, inv in zip(self._probes, found, strict=True):
            if isinstance(inv, SSHDeployError):
                continue  # unreachable: said where its workers fail to start
            if isinstance(inv, BaseException):
                raise inv
            ask = placement.worker_hosts[key].gpus
            assert ask is not None
            try:
                choices[key] = choose(ask, inv, plan.settings.gpu_busy_memory,
                                      required=ask != placement.gpus)
                choices[key].check_dask_cuda(cuda_options(placement.worker_options))
            except GPUError as err:
                failed[inv.host] = err
        if failed:
            raise failures_by_host(failed, "find the GPUs asked for")
        new = place_gpus(placement, choices)
        check_min_workers(plan.min_workers, len(new.workers))
        for key, choice in choices.items():
            hp = new.worker_hosts[key]
            self.choices[choice.host] = choice
            troubled = choice.skipped or choice.notes or not (choice.chosen or choice.no_gpu)
            self.roster.say(choice.say(hp.host.hostname, hp.cpu_workers), log=logger,
                            level=logging.WARNING if troubled else logging.INFO)
        self.roster.replace_placement(new)
        self.roster.clear()
        for w in new.workers:
            self.roster.want(w.name, self.roster.spec_for(w.host, w.kwargs))
