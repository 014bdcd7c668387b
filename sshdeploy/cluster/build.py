"""What an SSHCluster builds from its plan: its pool, its stage, its workers' specs.

Pure functions of the plan and of what they are given (no cluster object):
:class:`~sshdeploy.cluster.core.SSHCluster` calls them while it wires itself.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from distributed.deploy.spec import SpecCluster
from distributed.utils import Log, Logs

from sshdeploy import compat
from sshdeploy.cluster.kept import KeptCluster
from sshdeploy.cluster.processes import RemoteScheduler, RemoteWorker, WorkerAgents
from sshdeploy.env.prestart import PreStart
from sshdeploy.errors import ConfigError, ConnectError, SSHDeployError
from sshdeploy.hosts import Host
from sshdeploy.logs import LogBook
from sshdeploy.placement import HostPlan, Placement
from sshdeploy.plan import ClusterPlan
from sshdeploy.ssh.pool import HostPool

_SPEC_CLUSTER_KEYWORDS = frozenset(
    name for name in inspect.signature(SpecCluster.__init__).parameters
    if name not in ("self", "workers", "scheduler", "worker", "security")
)



def check_spec_cluster_keywords(kwargs: Mapping[str, Any]) -> None:
    """Refuse a keyword that is neither SSHCluster's nor SpecCluster's, naming it."""
    unknown = sorted(set(kwargs) - _SPEC_CLUSTER_KEYWORDS)
    if unknown:
        raise ConfigError(
            unknown[0], "is not an argument of SSHCluster",
            remedy="Options of the workers go in worker_options={...}, of the scheduler "
            "in scheduler_options={...}, of SSH in connect_options={...}.",
        )


def scheduler_spec(plan: ClusterPlan, stage: PreStart, logbook: LogBook,
                   gate: Any) -> dict[str, Any]:
    """The spec of the scheduler (a :class:`RemoteScheduler`); *gate* is awaited before it
    is created (the version gate, on what the agents say as they start: *stage*'s)."""
    placement = plan.placement
    return {
        "cls": RemoteScheduler,
        "options": {
            "host": placement.scheduler.host,
            "pool": stage.pool,
            "describe": stage.describe,
            "launch": plan.launch(placement.scheduler),
            "logbook": logbook,
            "kwargs": plan.scheduler_options,
            "cls": plan.scheduler_class,
            "forward": plan.forward_ports,
            "gate": gate,
        },
    }


#: Seconds a start that cannot succeed any more (a host failed to connect, no
#: ``min_workers``) still waits for the names being looked up, so that their own
#: answers are reported: a resolver that drops queries under a burst of lookups
#: answers only after its timeout (5 s, then again), and the start must not wait for it.
LOOKUP_GRACE = 1.0


async def connect_failures(plan: ClusterPlan, pool: HostPool, scheduler: asyncio.Future[Any],
                           named: bool) -> dict[str, SSHDeployError]:
    """The worker hosts that failed to connect, once every connect has ended.

    Empty with ``min_workers`` (the start goes on without them), for a named
    cluster (its own failure path decides what to keep), and when the
    scheduler's host failed too (its own error is the one to raise). Once a
    host has failed, names still being looked up :data:`LOOKUP_GRACE` seconds
    later are not waited for: each is reported as such (the connects already
    past their lookup are waited for, bounded by the connect timeout).
    """
    if plan.min_workers is not None or named:
        return {}
    hosts = [hp.host for hp in plan.placement.first_worker_hosts().values()]
    connects = {h: asyncio.ensure_future(pool.get(h)) for h in hosts}  # pool.get shields
    try:
        late = await _wait_doomed(pool, (plan.placement.scheduler.host, scheduler), connects)
    finally:
        for fut in connects.values():
            fut.cancel()
    if scheduler.done() and (scheduler.cancelled() or scheduler.exception() is not None):
        return {}
    failed: dict[str, SSHDeployError] = {}
    for h, fut in connects.items():
        where = pool.as_connected(h)
        if h in late:
            failed[where] = ConnectError(
                host=where, cause=f"its name was still being looked up {late[h]:.1f} s into "
                "the start, which another host had already failed (the resolver did not "
                "answer in time)",
                remedy="Check the spelling, /etc/hosts or DNS, or give an IP address; "
                "a resolver that drops queries answers only after its timeout.")
        elif fut.done() and not fut.cancelled() and \
                isinstance(fut.exception(), SSHDeployError):
            failed[where] = fut.exception()  # type: ignore[assignment]
    return failed


async def _wait_doomed(pool: HostPool, first: tuple[Host, asyncio.Future[Any]],
                       connects: Mapping[Host, asyncio.Future[Any]]) -> dict[Host, float]:
    """Wait for every connect, or (once one failed) for all but the names still looked up
    :data:`LOOKUP_GRACE` s later; return those, with the seconds they had taken.

    *first* is the scheduler's host and its connect, waited for alike.
    """
    scheduler_host, scheduler = first
    loop = asyncio.get_running_loop()
    began = loop.time()
    pending: set[asyncio.Future[Any]] = {scheduler, *connects.values()}
    doomed_at: float | None = None
    while pending:
        timeout = None if doomed_at is None else max(0.0, doomed_at + LOOKUP_GRACE - loop.time())
        done, pending = await asyncio.wait(pending, timeout=timeout,
                                           return_when=asyncio.FIRST_COMPLETED)
        if doomed_at is None and any(not f.cancelled() and f.exception() is not None
                                     for f in done):
            doomed_at = loop.time()
        if not done:  # the grace is over: the names still looked up are not waited for
            late = {h: loop.time() - began for h, f in connects.items()
                    if f in pending and pool.resolving(h)}
            rest = pending - {connects[h] for h in late}
            if scheduler in rest and pool.resolving(scheduler_host):
                rest.discard(scheduler)
            if rest:
                await asyncio.wait(rest)
            return {h: t for h, t in late.items() if not connects[h].done()}
    return {}



def worker_spec(hp: HostPlan, kwargs: Mapping[str, Any], *, plan: ClusterPlan,
                 agents: WorkerAgents) -> dict[str, Any]:
    """The spec of one worker on *hp* with the keywords *kwargs* (a :class:`RemoteWorker`)."""
    return {
        "cls": RemoteWorker,
        "options": {
            "host": hp.host,
            "agents": agents,
            "cls": plan.worker_class,
            "kwargs": dict(kwargs),
            "restart": plan.restart_workers,
            "share": hp.slots or 1,
        },
    }


async def unwrapped(start: Awaitable[None]) -> None:
    """Await SpecCluster's start; raise our own error where it wrapped one in its
    ``RuntimeError("Cluster failed to start")`` (it names the host and the cause)."""
    try:
        await start
    except RuntimeError as exc:
        cause = compat.start_error_cause(exc)
        if isinstance(cause, SSHDeployError):
            raise cause from None
        raise


def template_value(placement: Placement, scheduler_info: Mapping[str, Any], key: str,
                    what: str) -> Any:
    """A worker's *key* (``nthreads``, ``memory_limit``) as planned, else as a running
    worker has it, for ``scale(cores=...)`` / ``scale(memory=...)`` (*what*)."""
    for hp in placement.worker_hosts.values():
        if hp.template.get(key) not in (None, "auto"):
            return hp.template[key]
    for w in scheduler_info.get("workers", {}).values():  # what running workers have
        if w.get(key):
            return w[key]
    raise ConfigError(
        f"worker_options['{key}']",
        f"unknown, so the cluster cannot scale by {what}",
        remedy=f"Give worker_options={{'{key}': ...}} or scale by a number of workers.",
    )


def stage_for(plan: ClusterPlan, pool: HostPool) -> PreStart:
    """Return the stage that runs before the start, on the hosts the start connects to."""
    assert plan.stage is not None
    hosts = [(hp.host, hp.python) for hp in plan.placement.initial_hosts().values()]
    return PreStart(plan.stage, pool, hosts, setup=plan.user_setup, login_shell=plan.login_shell,
                 timeout=plan.settings.start_timeout)


async def stop_everywhere(kept: KeptCluster | None, timeout: float) -> None:
    """Stop a named cluster on every host (nothing for an ordinary one)."""
    if kept is not None:
        await kept.stop_everywhere(timeout)


def run_sync(coro: Any) -> Any:
    """Run *coro* to its end in a thread of its own (callable with or without a running loop)."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


def pool_for(plan: ClusterPlan) -> HostPool:
    """Return a (not yet connected) pool with each host's connect options."""
    pool = HostPool(settings=plan.settings)
    for hp in plan.placement.all_hosts().values():
        pool.set_options(hp.host, hp.connect_options)
    return pool


def logs(logbook: LogBook, cluster: Sequence[str] | None, scheduler_host: str | None,
         workers: Sequence[str]) -> Logs:
    """``get_logs()``: the cluster's own lines (unless None), the scheduler's on
    *scheduler_host* (unless None) and each of *workers*', from the log book."""
    out = Logs()
    if cluster is not None:
        out["Cluster"] = Log("\n".join(cluster))
    if scheduler_host is not None:
        out["Scheduler"] = Log("\n".join(logbook.lines(f"scheduler {scheduler_host}")))
    for name in workers:
        out[name] = Log("\n".join(logbook.lines(name)))
    return out
