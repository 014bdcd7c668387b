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
from sshdeploy.errors import ConfigError, SSHDeployError
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


async def connect_failures(plan: ClusterPlan, pool: HostPool, scheduler: asyncio.Future[Any],
                           named: bool) -> dict[str, SSHDeployError]:
    """The worker hosts that failed to connect, once every connect has ended.

    Empty with ``min_workers`` (the start goes on without them), for a named
    cluster (its own failure path decides what to keep), and when the
    scheduler's host failed too (its own error is the one to raise).
    """
    if plan.min_workers is not None or named:
        return {}
    hosts = [hp.host for hp in plan.placement.first_worker_hosts().values()]
    got = await asyncio.gather(scheduler, *(pool.get(h) for h in hosts),
                               return_exceptions=True)
    if isinstance(got[0], BaseException):
        return {}
    return {pool.as_connected(h): e for h, e in zip(hosts, got[1:], strict=True)
            if isinstance(e, SSHDeployError)}


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
