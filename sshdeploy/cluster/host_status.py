"""One row per host of a running cluster: role, workers, restarts, health, start state, error.

:func:`host_rows` reads (never changes) what the cluster's parts know of
each host: the roster (workers wanted and running, start failures, hosts left
out), the restarts (pending, given up), the fleet's health (hosts taken out),
the connections, the stage before the start and the agents. The views
(:mod:`sshdeploy.views.hostrows`, the notebook and the live status of
``dask-ssh``) show the rows; ``SSHCluster.host_rows()`` returns them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distributed.core import Status

from sshdeploy.env.prestart import PreStart
from sshdeploy.hosts import ConnectionKey, Host
from sshdeploy.ssh.pool import HostPool
from sshdeploy.views.hostrows import HostRow, host_state, worker_resources

from .health import NOT_STARTING, HostHealth, health_of
from .processes import RemoteScheduler, RemoteWorker, WorkerAgents
from .restarts import WorkerRestarts
from .roster import Roster


def host_rows(roster: Roster, scheduler: RemoteScheduler | None, *, restarts: WorkerRestarts,
              health: HostHealth, pool: HostPool, stage: PreStart, agents: WorkerAgents,
              scheduler_info: Mapping[str, Any]) -> list[HostRow]:
    """One row per host: role, workers running / wanted, restarts, last error.

    Parameters
    ----------
    roster : Roster
        The cluster's workers and its placement in force.
    scheduler : RemoteScheduler or None
        Its scheduler (None before it exists).
    restarts : WorkerRestarts
        Restarts pending, made (each host's count) and workers given up.
    health : HostHealth
        The hosts taken out.
    pool : HostPool
        The connections (how each host is spelled, and its connection's state).
    stage : PreStart
        The stage before the start (its phase on each host).
    agents : WorkerAgents
        The hosts' workers agents (their start stage).
    scheduler_info : dict
        What the scheduler reports (each worker's resources).
    """
    plan = roster.placement
    show = pool.as_connected
    rows: dict[ConnectionKey, dict[str, Any]] = {}
    for key, hp in plan.all_hosts().items():
        rows[key] = {"host": show(hp.host), "roles": [], "running": 0, "wanted": 0,
                     "restarts": 0, "error": "", "restarting": False}
    rows[plan.scheduler.key]["roles"].append("scheduler")
    if scheduler is not None and scheduler.exit_reason:
        rows[plan.scheduler.key]["error"] = scheduler.exit_reason
    for name, host in roster.hosts().items():
        row = rows[host.key]
        row["wanted"] += 1
        worker = roster.worker(name)
        if worker is not None and worker.status == Status.running:
            row["running"] += 1
        elif name in restarts.steps:
            row["error"] = f"{name}: {restarts.steps[name]}"
        elif isinstance(worker, RemoteWorker) and worker.exit_reason:
            row["error"] = f"{name}: {worker.exit_reason}"
        row["restarting"] = row["restarting"] or name in restarts.steps
    for name, (key, why) in restarts.given_up.items():
        if key in rows and name not in roster:
            rows[key]["error"] = why
    for name, (key, err) in roster.start_failures.items():
        if key in rows and name not in roster and not rows[key]["error"]:
            rows[key]["error"] = f"{name}: failed to start: {str(err).splitlines()[0]}"
    for key, count in restarts.restarted.items():
        if key in rows:  # the host's workers, those given up or moved away too
            rows[key]["restarts"] = count
    for key, hp in plan.worker_hosts.items():
        if key in plan.spares and not rows[key]["wanted"]:
            rows[key]["roles"].append("spare")
        elif hp.slots or rows[key]["wanted"]:
            rows[key]["roles"].append("workers")
        failed = roster.failed_hosts.get(show(hp.host))
        if failed is not None:
            rows[key]["error"] = str(failed)
    for key, hp in plan.all_hosts().items():
        runs_scheduler = key == plan.scheduler.key
        rows[key]["health"] = _host_health(
            key, rows[key], runs_scheduler, scheduler, health, key in plan.spares)
        rows[key]["state"] = _host_state(
            hp.host, rows[key], runs_scheduler, scheduler, pool, stage, agents)
    infos: dict[ConnectionKey, list[Mapping[str, Any]]] = {}
    for info in dict(scheduler_info.get("workers") or {}).values():
        where = roster.host_of(str(info.get("name")))
        if where is not None:
            infos.setdefault(where.key, []).append(info)
    return [HostRow(host=r["host"], role=", ".join(r["roles"]) or "-",
                    running=r["running"], wanted=r["wanted"], restarts=r["restarts"],
                    error=r["error"], state=r["state"],
                    each=worker_resources(infos.get(key, ())), health=r["health"])
            for key, r in rows.items()]


def _host_health(key: ConnectionKey, row: dict[str, Any], runs_scheduler: bool,
                 scheduler: RemoteScheduler | None, health: HostHealth, spare: bool) -> str:
    """One host's health (see :mod:`sshdeploy.cluster.health`); a host taken out says why."""
    out = health.out.get(key)
    if out is not None and not row["error"]:
        row["error"] = out.reason
    trouble = row["restarting"] or (
        bool(row["error"]) and (row["running"] < row["wanted"] or not row["running"]))
    if runs_scheduler and not row["wanted"]:
        trouble = trouble or bool(scheduler is not None and scheduler.exit_reason)
        return health_of(out, spare=False, running=1, wanted=1, trouble=trouble)
    return health_of(out, spare=spare, running=row["running"], wanted=row["wanted"],
                     trouble=trouble)


def _host_state(host: Host, row: dict[str, Any], runs_scheduler: bool,
                scheduler: RemoteScheduler | None, pool: HostPool, stage: PreStart,
                agents: WorkerAgents) -> str:
    """Where one host's start stands (for live status displays): see :func:`host_state`."""
    if row["health"] in NOT_STARTING:
        return str(row["health"])  # not a start under way
    conn = pool.state(host)
    if conn == "failed" and not row["error"]:
        row["error"] = pool.error(host)
    phase = stage.phase.get(pool.as_connected(host))
    if phase is not None and conn not in ("waiting", "connecting", "failed"):
        return phase  # the version gate, the environment, the uploads
    channels = [agents.channel_of(host)]
    if runs_scheduler and scheduler is not None:
        channels.append(scheduler.channel)
    return host_state(
        failed=bool(row["error"]) and not row["running"], connection=conn,
        stages=[ch.stage for ch in channels if ch is not None],
        running=row["running"], wanted=row["wanted"], runs_scheduler=runs_scheduler,
        scheduler_running=scheduler is not None and scheduler.status == Status.running)
