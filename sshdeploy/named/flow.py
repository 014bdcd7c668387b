"""The life of a named cluster, seen from a controller: find it, record it, probe it, stop it.

Used by :class:`sshdeploy.SSHCluster` (``name=..., shutdown_on_close=False``,
``from_name``, ``shutdown``) and by ``dask-ssh up/list/down/clean``. Every
answer comes from the hosts (:mod:`sshdeploy.named.hostops`); the local state
file (:mod:`sshdeploy.named.state`) only says where to ask.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from typing import Any

from sshdeploy.errors import ClusterExistsError, ClusterNotFoundError, HostError
from sshdeploy.hosts import Host
from sshdeploy.named.hostops import host_op, on_hosts
from sshdeploy.named.jobops import stop_jobs
from sshdeploy.named.spec import differences, hosts_of
from sshdeploy.named.state import ClusterRecord, StateStore
from sshdeploy.named.status import ClusterStatus, classify
from sshdeploy.plan import Launch
from sshdeploy.settings import Settings
from sshdeploy.ssh.pool import HostPool

#: Seconds an operation on a host's files may take (login, setup, Python start, answer).
OP_TIMEOUT = 30.0


def launches(spec: Mapping[str, Any]) -> dict[Host, Launch]:
    """How to run Python on each distinct host of a stored spec (the scheduler's first)."""
    pythons = list(spec.get("remote_python") or [])
    out: dict[Host, Launch] = {}
    seen: set[Any] = set()
    for i, h in enumerate(hosts_of(spec)):
        if h.key in seen:
            continue
        seen.add(h.key)
        python = h.remote_python or (pythons[i] if i < len(pythons) else None) or sys.executable
        bare = Host(h.hostname, h.user, h.port)
        out[bare] = Launch(python=python, setup=spec.get("setup"))
    return out


def record_pool(spec: Mapping[str, Any], settings: Settings | None = None) -> HostPool:
    """A (not yet connected) pool with each host's stored connect options."""
    pool = HostPool(settings=settings or Settings.resolve())
    options = list(spec.get("connect_options") or [])
    for i, h in enumerate(hosts_of(spec)):
        opts = options[i] if i < len(options) else None
        pool.set_options(Host(h.hostname, h.user, h.port), opts or None)
    return pool


def scheduler_host(record: ClusterRecord) -> tuple[Host, Launch]:
    host, launch = next(iter(launches(record.spec).items()))
    return host, launch


async def probe(record: ClusterRecord, pool: HostPool) -> ClusterStatus:
    """Return the state of *record*'s cluster, asked of its scheduler host now."""
    host, launch = scheduler_host(record)
    try:
        answer: dict[str, Any] | BaseException = await host_op(
            pool, host, launch, record.name, "probe", timeout=OP_TIMEOUT)
    except HostError as exc:
        answer = exc
    except Exception as exc:  # a connect error of the pool: unreachable, named
        answer = exc
    return classify(record, answer)


async def probe_all(records: list[ClusterRecord]) -> list[ClusterStatus]:
    """Probe every cluster at once (one pool each: their hosts' options differ)."""
    async def one(record: ClusterRecord) -> ClusterStatus:
        async with record_pool(record.spec) as pool:
            return await probe(record, pool)

    return list(await asyncio.gather(*(one(r) for r in records)))


async def save(record: ClusterRecord, pool: HostPool, store: StateStore) -> None:
    """Record a cluster here and, the authoritative copy, on its scheduler host (0600)."""
    host, launch = scheduler_host(record)
    await host_op(pool, host, launch, record.name, "write", data=record.to_json(),
                  timeout=OP_TIMEOUT)
    store.save(record)


async def existing(name: str, spec: Mapping[str, Any], settings: Settings,
                   store: StateStore) -> ClusterRecord | None:
    """Return the record of the running cluster *name* if it runs *spec*; None if none runs.

    A cluster that is gone or stopped leaves its record and its scheduler
    host's files behind: both are removed here, so the name is free again.

    Raises
    ------
    ClusterExistsError
        It runs with another spec (the differences are listed).
    ClusterNotFoundError
        Its scheduler host cannot be reached: whether it runs is unknown.
    """
    record = store.load(name)
    if record is None:
        return None
    async with record_pool(record.spec, settings) as own:  # its hosts' own options
        status = await probe(record, own)
    if status.state in ("gone", "stopped"):  # what is left of it goes (a dying worker too)
        await stop(record, store)
        return None
    if status.state in ("running", "degraded"):
        diffs = differences(record.spec, spec)
        if diffs:
            raise ClusterExistsError(name=name, differences=diffs)
        return record
    if status.state == "unreachable":
        raise ClusterNotFoundError(
            name=name, state="unreachable", cause=status.reason,
            remedy=f"Its scheduler host ({record.scheduler_host}) did not answer, so it may "
            f"still run: retry when the host is back (`dask-ssh down {name}` then stops it), "
            "or use another name.")
    return None


async def stop(record: ClusterRecord, store: StateStore, grace: float = 5.0
               ) -> dict[str, str]:
    """Stop every process of the cluster on every host, remove its files there and here.

    Returns, per host, what was found (``"stopped 2 agent(s)"``,
    ``"nothing running"``) or why it could not be reached. The local record
    goes only when every host answered.
    """
    report: dict[str, str] = {}
    hosts = launches(record.spec)
    async with record_pool(record.spec) as pool:
        await stop_jobs(pool, *next(iter(hosts.items())), record.name)  # its jobs first, whole
        killed = await on_hosts(pool, hosts, record.name, "kill", timeout=OP_TIMEOUT + grace)
        await asyncio.gather(*(  # the scheduler's host (the first) owns the cluster's files
            host_op(pool, h, launch, record.name, "remove", data={"owner": i == 0},
                    timeout=OP_TIMEOUT) for i, (h, launch) in enumerate(hosts.items())),
            return_exceptions=True)
        for host, result in killed.items():
            where = pool.as_connected(host)
            if isinstance(result, BaseException):
                report[where] = f"unreachable: {str(result).splitlines()[0]}"
                continue
            alive = [a for a in result.get("agents") or [] if a.get("alive")]
            if alive:
                report[where] = f"{len(alive)} agent(s) still running"
            else:
                report[where] = "stopped"
    if all(v == "stopped" for v in report.values()):
        store.remove(record.name)
    return report


async def stop_on(name: str, host: Host, launch: Launch, pool: HostPool,
                  grace: float = 5.0) -> None:
    """Stop what cluster *name* runs on one host and remove its files there (a host removed).

    Raises
    ------
    HostError
        The host could not be reached.
    """
    await host_op(pool, host, launch, name, "kill", timeout=OP_TIMEOUT + grace)
    await host_op(pool, host, launch, name, "remove", data={"owner": False},
                  timeout=OP_TIMEOUT)


async def fetch(name: str, host: Host, connect_options: Mapping[str, Any] | None,
                python: str | None = None) -> ClusterRecord:
    """Read the authoritative record of *name* from its scheduler host *host*.

    Raises
    ------
    ClusterNotFoundError
        The host has no record of that name.
    """
    pool = HostPool(settings=Settings.resolve())
    pool.set_options(host, connect_options)
    async with pool:
        answer = await host_op(pool, host, Launch(python=python or sys.executable), name,
                               "probe", timeout=OP_TIMEOUT)
    data = answer.get("cluster")
    if not data:
        raise ClusterNotFoundError(name=name, state="unknown",
                                   cause=f"{pool.as_connected(host)} has no record of it")
    where = pool.as_connected(host)
    return ClusterRecord.from_json(data, f"{where}:{answer.get('dir')}/cluster.json")


def new_record(name: str, spec: Mapping[str, Any], scheduler_host: str, address: str,
               dashboard_port: int | None, policy: Mapping[str, Any],
               tls: Mapping[str, str]) -> ClusterRecord:
    return ClusterRecord(name=name, scheduler_host=scheduler_host, scheduler_address=address,
                         dashboard_port=dashboard_port, spec=dict(spec), created=time.time(),
                         policy=dict(policy), tls=dict(tls))
