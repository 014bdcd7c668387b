"""A named cluster seen from the :class:`sshdeploy.SSHCluster` that starts or takes it over.

:class:`KeptCluster` is what ``SSHCluster(..., name="NAME",
shutdown_on_close=False)`` adds to an ordinary cluster: before the start, is
a cluster of that name running (same spec: take it over; another: refuse)?
After it, record it (here and on the scheduler host). On ``close()``, the
cluster detaches; ``shutdown()`` stops it everywhere.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from distributed.security import Security

from sshdeploy.arguments import ClusterArgs
from sshdeploy.cluster.adopted import AdoptedScheduler, AdoptedWorker
from sshdeploy.cluster.processes import WorkerAgents
from sshdeploy.errors import ClusterNotFoundError, ClusterStopError, SSHDeployError
from sshdeploy.gpus import record_slots, restore_slots
from sshdeploy.hostfile import parse_host
from sshdeploy.hosts import Host
from sshdeploy.logs import LogBook
from sshdeploy.named import flow
from sshdeploy.named.policy import KeepPolicy, check_name
from sshdeploy.named.spec import with_hosts
from sshdeploy.named.state import ClusterRecord, StateStore
from sshdeploy.named.status import wanted_workers
from sshdeploy.placement import Placement
from sshdeploy.plan import ClusterPlan
from sshdeploy.settings import Settings
from sshdeploy.ssh.pool import HostPool

logger = logging.getLogger(__name__)

#: The attributes of a distributed.Security a TLS cluster's record keeps (as PEM text).
TLS_FIELDS = {"ca": "tls_ca_file", "cert": "tls_client_cert", "key": "tls_client_key"}


def tls_pems(security: Security | None) -> dict[str, str]:
    """Return the client credentials of *security* as PEM text (files are read)."""
    out: dict[str, str] = {}
    if security is None:
        return out
    for key, attr in TLS_FIELDS.items():
        value = getattr(security, attr, None)
        if not value:
            continue
        text = str(value)
        if "-----BEGIN" not in text and os.path.exists(text):
            with open(text) as f:
                text = f.read()
        out[key] = text
    return out


def security_from(pems: Mapping[str, str]) -> Security | None:
    """Return the Security of a TLS cluster from its record's credentials (None for plain)."""
    if not pems:
        return None
    ca, cert, key = pems.get("ca"), pems.get("cert"), pems.get("key")
    return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key,
                    tls_scheduler_cert=cert, tls_scheduler_key=key, tls_worker_cert=cert,
                    tls_worker_key=key, require_encryption=True)


async def reattach(name: str, host: str | Host | None = None,
                   connect_options: Mapping[str, Any] | None = None,
                   store: StateStore | None = None) -> ClusterArgs:
    """Return the arguments that plan the running named cluster *name* again (``from_name``).

    They come from its record: this machine's, or with *host* the authoritative
    copy on that (scheduler) host, then kept here too. Everything the record
    keeps is there (environment, uploads, login shell... so hosts added or
    restarted later are prepared as at the start), with its TLS credentials.

    Raises
    ------
    ClusterNotFoundError
        No record of that name here (nor on *host*).
    """
    store = store if store is not None else StateStore()
    check_name(name)
    if host is not None:
        target = host if isinstance(host, Host) else parse_host(str(host))
        store.save(await flow.fetch(name, target, connect_options))
    record = store.load(name)
    if record is None:
        raise ClusterNotFoundError(name=name, cause="no record of it on this machine",
                                   remedy="`dask-ssh list` shows the named clusters; give "
                                   "host='HEAD' to read its record on its scheduler host.")
    return dataclasses.replace(ClusterArgs.from_record(record.spec), name=name,
                               shutdown_on_close=False,
                               security=security_from(store.tls_pems(record)))


@dataclass
class Adoption:
    """A running named cluster being taken over: its scheduler, then its workers.

    Attributes
    ----------
    record : ClusterRecord
        The cluster's record.
    scheduler : AdoptedScheduler
        Its scheduler, to be reached (``await``) instead of started.
    placement : Placement
        Where the cluster's workers may run (the hosts of its spec), with the GPU workers
        its record keeps (each pinned to its GPU, :func:`sshdeploy.gpus.restore_slots`).
    """

    record: ClusterRecord
    scheduler: AdoptedScheduler
    placement: Placement

    def workers(self, identity: Mapping[str, Any], retire: Callable[[str], Awaitable[None]],
                agents: WorkerAgents) -> list[AdoptedWorker]:
        """The workers of the scheduler's *identity* that run on the cluster's hosts.

        Parameters
        ----------
        identity : dict
            What the scheduler says of itself (``scheduler_comm.identity()``).
        retire : callable
            Awaited with a worker's name to retire and close it through the scheduler.
        agents : WorkerAgents
            The cluster's agents (workers added later start in them).
        """
        by_name = {h.host.hostname: h for h in self.placement.worker_hosts.values()}
        found = []
        for address, info in dict(identity.get("workers") or {}).items():
            name = str(info.get("name"))
            hp = by_name.get(name.rpartition("-")[0])
            if hp is None:
                continue  # not one of ours (a worker started by hand)
            found.append(AdoptedWorker(
                retire=retire, address=address, scheduler=self.record.scheduler_address,
                name=name, host=hp.host, agents=agents))
        return found


@dataclass
class KeptCluster:
    """The named-cluster side of one SSHCluster.

    Attributes
    ----------
    policy : KeepPolicy
    spec : dict
        The JSON form of its arguments (:meth:`~sshdeploy.arguments.ClusterArgs.to_record`).
    store : StateStore
    stopping : bool
        ``shutdown()`` was called: close for real.
    record : ClusterRecord or None
        Its record once it runs.
    adopted : bool
        It was running already (same spec): taken over, not started.
    pool : HostPool or None
        The connections its record is saved through (on its scheduler host).
    missing : int
        Workers its record wants that did not run when it was taken over
        (their kept agents start them again after an outage): still wanted,
        until the user scales it. Taking a cluster over never changes the
        worker count it wants.
    must_run : bool
        Made by ``from_name``: a cluster of that name that is gone is an
        error, not a reason to start a new one.
    """

    policy: KeepPolicy
    spec: dict[str, Any]
    store: StateStore
    stopping: bool = False
    record: ClusterRecord | None = None
    adopted: bool = False
    pool: HostPool | None = None
    missing: int = 0
    must_run: bool = dataclasses.field(default_factory=flow.reattaching_now)
    _lock: asyncio.Lock | None = None

    @classmethod
    def of(cls, plan: ClusterPlan, args: ClusterArgs) -> KeptCluster | None:
        """Return the named-cluster side of a cluster planned by *plan* (None if not kept)."""
        keep = plan.keep
        if keep is None:
            return None
        # The record keeps the policy's durations as resolved (the settings' defaults too).
        kept = dataclasses.replace(args, idle_timeout=keep.idle_timeout,
                                   max_lifetime=keep.max_lifetime)
        spec = {**kept.to_record(), "wanted": len(plan.placement.workers)}
        return cls(keep, spec, StateStore())

    async def running(self, settings: Settings) -> ClusterRecord | None:
        """Its record if a cluster of this name runs this spec (:func:`flow.existing`)."""
        return await flow.existing(self.policy.name, self.spec, settings, self.store,
                                   must_run=self.must_run)

    async def save(self, address: str, dashboard_port: int | None, plan: ClusterPlan,
                   pool: HostPool, left_out: Sequence[str] = ()) -> None:
        """Record the cluster that just started (here and on its scheduler host).

        Parameters
        ----------
        address : str
            Its scheduler's address.
        dashboard_port : int or None
            Its dashboard's port.
        plan : ClusterPlan
            Its plan (the scheduler's host, the TLS credentials).
        pool : HostPool
            Its connections (its record is also saved on the scheduler host).
        left_out : list of str
            Hosts left out at the start (``min_workers``): never ran anything of it.
        """
        host = plan.placement.scheduler.host
        gpus = record_slots(plan.placement)  # each GPU worker's pin, for a later controller
        record = flow.new_record(
            self.policy.name, {**self.spec, **({"gpu_slots": gpus} if gpus else {})},
            scheduler_host=pool.as_connected(host),
            address=address, dashboard_port=dashboard_port,
            policy=self.policy.spec(), tls=tls_pems(plan.security),
            left_out=sorted(left_out))
        await flow.save(record, pool, self.store)
        self.record, self.pool = record, pool

    def adoption(self, record: ClusterRecord, plan: ClusterPlan, pool: HostPool,
                 logbook: LogBook) -> Adoption:
        """How to take over the running cluster of *record*: its scheduler (reached through
        *pool*, its output kept in *logbook*), then its workers.

        Once they are installed, :meth:`adopted_from` records that it was taken over.
        """
        placement = restore_slots(plan.placement, record.spec.get("gpu_slots"))
        sched = AdoptedScheduler(
            address=record.scheduler_address, dashboard_port=record.dashboard_port,
            host=placement.scheduler.host, pool=pool,
            launch=plan.launch(placement.scheduler), logbook=logbook,
            forward=plan.forward_ports,
            kwargs={"security": plan.security} if plan.security is not None else None)
        return Adoption(record, sched, placement)

    def adopted_from(self, adoption: Adoption, pool: HostPool, running: int) -> None:
        """The running cluster of *adoption* was taken over (*running* of its workers run):
        its record is this one's, and the workers it wants but did not find stay wanted."""
        self.record, self.pool = adoption.record, pool
        self.adopted = True
        self.missing = max(0, wanted_workers(adoption.record) - running)

    async def note_hosts(self, placement: Placement, wanted: int) -> None:
        """After hosts were added or removed: record them (``from_name`` finds them).

        A failure is logged, not raised.
        """
        hosts = [(hp.host, hp.slots, hp.python, key in placement.spares)
                 for key, hp in placement.worker_hosts.items()]
        try:
            await self._update(lambda spec: {**with_hosts(spec, hosts),
                                             "wanted": wanted + self.missing})
        except SSHDeployError as err:
            logger.warning("cluster %r: could not record its hosts: %s", self.policy.name, err)

    async def note_wanted(self, wanted: int) -> None:
        """After a scale: record how many workers the cluster now wants (``list`` compares).

        A failure is logged, not raised.
        """
        try:
            await self._update(lambda spec: {**spec, "wanted": wanted + self.missing})
        except SSHDeployError as err:
            logger.warning("cluster %r: could not record its worker count: %s",
                           self.policy.name, err)

    async def stop_everywhere(self, timeout: float) -> None:
        """Stop it on every host (every process) and forget it.

        Raises
        ------
        ClusterStopError
            What could not be verified stopped (the record is kept).
        """
        record = self.record
        if record is None:
            return
        self.stopping = True
        report = await flow.stop(record, self.store, timeout)
        left = flow.left(report)
        if left:
            raise ClusterStopError(name=record.name, left=left,
                                   scheduler_host=record.scheduler_host)

    async def _update(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Save the record with its spec changed by *change* (here and on the scheduler host).

        One save at a time; nothing is saved when the spec stays the same; the
        record in memory (and the keys of :attr:`spec` that changed) change only
        once it is saved.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            record = self.record
            if record is None:
                return
            spec = change(record.spec)
            if spec == record.spec:
                return
            assert self.pool is not None  # set with the record
            updated = dataclasses.replace(record, spec=spec)
            await flow.save(updated, self.pool, self.store)
            self.record = updated
            self.spec.update({k: v for k, v in spec.items() if record.spec.get(k) != v})
