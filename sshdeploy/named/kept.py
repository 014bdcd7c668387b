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
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distributed.security import Security

from sshdeploy.hosts import Host
from sshdeploy.named import flow
from sshdeploy.named.adopted import AdoptedScheduler, AdoptedWorker
from sshdeploy.named.policy import KeepPolicy
from sshdeploy.named.spec import cluster_spec, with_hosts
from sshdeploy.named.state import ClusterRecord, StateStore
from sshdeploy.plan import ClusterPlan
from sshdeploy.settings import Settings

if TYPE_CHECKING:
    from sshdeploy.cluster import SSHCluster

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


@dataclass
class KeptCluster:
    """The named-cluster side of one SSHCluster.

    Attributes
    ----------
    policy : KeepPolicy
    spec : dict
        The JSON form of its arguments (:func:`sshdeploy.named.spec.cluster_spec`).
    store : StateStore
    stopping : bool
        ``shutdown()`` was called: close for real.
    record : ClusterRecord or None
        Its record once it runs.
    adopted : bool
        It was running already (same spec): taken over, not started.
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
    must_run: bool = dataclasses.field(default_factory=flow.reattaching_now)
    _lock: asyncio.Lock | None = None

    @classmethod
    def of(cls, plan: ClusterPlan, *, hosts: Sequence[str | Host] | None, **args: Any
           ) -> KeptCluster | None:
        """Return the named-cluster side of a cluster planned by *plan* (None if not kept)."""
        keep = plan.keep
        if keep is None:
            return None
        args["security"] = plan.security is not None
        spec = cluster_spec(hosts, idle_timeout=keep.idle_timeout,
                            max_lifetime=keep.max_lifetime,
                            wanted=len(plan.placement.workers), forward_ports=plan.forward_ports,
                            **args)
        return cls(keep, spec, StateStore())

    async def running(self, settings: Settings) -> ClusterRecord | None:
        """Its record if a cluster of this name runs this spec (:func:`flow.existing`)."""
        return await flow.existing(self.policy.name, self.spec, settings, self.store,
                                   must_run=self.must_run)

    async def save(self, cluster: SSHCluster) -> None:
        """Record the cluster that just started (here and on its scheduler host)."""
        sched = cluster.scheduler
        plan = cluster.cluster_plan
        host = plan.placement.scheduler.host
        record = flow.new_record(
            self.policy.name, self.spec, scheduler_host=cluster.pool.as_connected(host),
            address=str(getattr(sched, "address", "")),
            dashboard_port=getattr(sched, "dashboard_port", None),
            policy=self.policy.spec(), tls=tls_pems(plan.security),
            left_out=sorted(cluster.failed_hosts))
        await flow.save(record, cluster.pool, self.store)
        self.record = record

    async def adopt(self, cluster: SSHCluster, record: ClusterRecord) -> None:
        """Take over the running cluster of *record*: its scheduler and its workers."""
        plan = cluster.cluster_plan
        placement = plan.placement
        sched = AdoptedScheduler(
            address=record.scheduler_address, dashboard_port=record.dashboard_port,
            host=placement.scheduler.host, pool=cluster.pool,
            launch=plan.launch(placement.scheduler), logbook=cluster.logbook,
            forward=plan.forward_ports)
        cluster.scheduler = await sched
        cluster.worker_spec = {}
        await cluster.start_adopted()
        assert cluster.scheduler_comm is not None
        identity = await cluster.scheduler_comm.identity()
        by_name = {h.host.hostname: h for h in placement.worker_hosts.values()}
        for address, info in dict(identity.get("workers") or {}).items():
            name = str(info.get("name"))
            hp = by_name.get(name.rpartition("-")[0])
            if hp is None:
                continue  # not one of ours (a worker started by hand)
            cluster.worker_spec[name] = cluster.worker_spec_for(hp.host)
            cluster.workers[name] = AdoptedWorker(
                retire=cluster.retire_by_name, address=address, scheduler=record.scheduler_address,
                name=name, host=hp.host, agents=cluster.agents)
        self.record = record
        self.adopted = True

    async def note_hosts(self, cluster: SSHCluster) -> None:
        """After hosts were added or removed: record them (``from_name`` finds them)."""
        placement = cluster.cluster_plan.placement
        hosts = [(hp.host, hp.slots, hp.python, key in placement.spares)
                 for key, hp in placement.worker_hosts.items()]
        await self._update(cluster, lambda spec: {
            **with_hosts(spec, hosts), "wanted": len(cluster.worker_spec)})

    async def note_wanted(self, cluster: SSHCluster) -> None:
        """After a scale: record how many workers the cluster now wants (``list`` compares)."""
        await self._update(cluster, lambda spec: {**spec, "wanted": len(cluster.worker_spec)})

    async def _update(self, cluster: SSHCluster,
                      change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
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
            updated = dataclasses.replace(record, spec=spec)
            await flow.save(updated, cluster.pool, self.store)
            self.record = updated
            self.spec.update({k: v for k, v in spec.items() if record.spec.get(k) != v})
