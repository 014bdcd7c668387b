"""The life of a named cluster, seen from a controller: find it, record it, probe it, stop it.

Used by :class:`sshdeploy.SSHCluster` (``name=..., shutdown_on_close=False``,
``from_name``, ``shutdown``) and by ``dask-ssh up/list/down/clean``. Every
answer comes from the hosts (:mod:`sshdeploy.named.hostops`); the local state
file (:mod:`sshdeploy.named.state`) only says where to ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from sshdeploy.bootstrap import join_setup
from sshdeploy.errors import (
    ClusterExistsError,
    ClusterNotFoundError,
    HostError,
    SSHDeployError,
)
from sshdeploy.hosts import Host
from sshdeploy.named.hostops import host_op, on_hosts
from sshdeploy.named.jobops import stop_jobs
from sshdeploy.named.spec import differences, hosts_of
from sshdeploy.named.state import ClusterRecord, StateStore
from sshdeploy.named.status import ClusterStatus, classify, ended_recently, stopping
from sshdeploy.plan import Launch
from sshdeploy.settings import Settings
from sshdeploy.ssh.pool import HostPool

logger = logging.getLogger(__name__)

#: Seconds an operation on a host's files may take (login, setup, Python start, answer).
OP_TIMEOUT = 30.0
#: How :func:`stop` reports a host where nothing of the cluster is left (every other
#: report is what is left there, or why the host could not be asked).
STOPPED = "stopped"

#: Set while ``from_name`` builds its cluster: it reattaches, it never starts a new one.
_REATTACHING: ContextVar[bool] = ContextVar("sshdeploy_reattaching", default=False)


@contextlib.contextmanager
def reattaching(on: bool = True) -> Iterator[None]:
    """Within: a named cluster built here must run already (:meth:`SSHCluster.from_name`)."""
    token = _REATTACHING.set(on)
    try:
        yield
    finally:
        _REATTACHING.reset(token)


def reattaching_now() -> bool:
    """Whether a named cluster built now must run already (see :func:`reattaching`)."""
    return _REATTACHING.get()


def left(report: Mapping[str, str]) -> dict[str, str]:
    """The hosts of a :func:`stop` report where the cluster was not verified stopped.

    Examples
    --------
    >>> left({"a": "stopped", "b": "stopped (left out at the start)", "c": "unreachable: x"})
    {'c': 'unreachable: x'}
    """
    return {h: why for h, why in report.items() if not why.startswith(STOPPED)}


def launches(spec: Mapping[str, Any]) -> dict[Host, Launch]:
    """How to run Python on each distinct host of a stored spec (the scheduler's first).

    As the agents are started: the setup (a list of commands joined into one
    shell list), in the login shell when the cluster asked for one.

    Examples
    --------
    >>> spec = {"hosts": [{"hostname": "s"}, {"hostname": "a"}], "remote_python": ["/py"] * 2,
    ...         "setup": ["module load x", "export A=1"], "login_shell": True}
    >>> [(h.hostname, lch.setup.splitlines(), lch.login_shell)
    ...  for h, lch in launches(spec).items()][0]
    ('s', ['module load x &&', 'export A=1'], True)
    """
    pythons = list(spec.get("remote_python") or [])
    out: dict[Host, Launch] = {}
    seen: set[Any] = set()
    for i, h in enumerate(hosts_of(spec)):
        if h.key in seen:
            continue
        seen.add(h.key)
        python = h.remote_python or (pythons[i] if i < len(pythons) else None) or sys.executable
        bare = Host(h.hostname, h.user, h.port)
        out[bare] = Launch(python=python, setup=join_setup(spec.get("setup")),
                           login_shell=bool(spec.get("login_shell")))
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


async def probe(record: ClusterRecord, pool: HostPool, every_host: bool = False
                ) -> ClusterStatus:
    """Return the state of *record*'s cluster, asked of its scheduler host now.

    With *every_host*, a cluster that ended by itself lately
    (:func:`~sshdeploy.named.status.ended_recently`) is ``stopping`` while any
    of its hosts still runs a process of it (``list``: not ``stopped`` too early).
    """
    host, launch = scheduler_host(record)
    try:
        answer: dict[str, Any] | BaseException = await host_op(
            pool, host, launch, record.name, "probe", timeout=OP_TIMEOUT)
    except HostError as exc:
        answer = exc
    except Exception as exc:  # a connect error of the pool: unreachable, named
        answer = exc
    status = classify(record, answer)
    if every_host and status.state == "stopped" and ended_recently(record, answer):
        assert isinstance(answer, dict)
        answers = await on_hosts(pool, launches(record.spec), record.name, "probe",
                                 timeout=OP_TIMEOUT)
        status = stopping(status, str((answer.get("end") or {}).get("reason", "")), answers)
    return status


async def probe_all(records: list[ClusterRecord]) -> list[ClusterStatus]:
    """Probe every cluster at once (one pool each: their hosts' options differ)."""
    async def one(record: ClusterRecord) -> ClusterStatus:
        async with record_pool(record.spec) as pool:
            return await probe(record, pool, every_host=True)

    return list(await asyncio.gather(*(one(r) for r in records)))


async def save(record: ClusterRecord, pool: HostPool, store: StateStore) -> None:
    """Record a cluster here and, the authoritative copy, on its scheduler host (0600)."""
    host, launch = scheduler_host(record)
    await host_op(pool, host, launch, record.name, "write", data=record.to_json(),
                  timeout=OP_TIMEOUT)
    store.save(record)


async def existing(name: str, spec: Mapping[str, Any], settings: Settings,
                   store: StateStore, must_run: bool = False) -> ClusterRecord | None:
    """Return the record of the running cluster *name* if it runs *spec*; None if none runs.

    With no record here, the scheduler host of *spec* is asked: its record
    of *name* (this machine's was removed) is used and kept here again; what
    is left there of an earlier start that nothing records is stopped. A
    cluster that is gone or stopped leaves its record and its scheduler
    host's files behind: both are removed here, so the name is free again
    (unless *must_run*).

    Raises
    ------
    ClusterExistsError
        It runs with another spec (the differences are listed).
    ClusterNotFoundError
        Its scheduler host cannot be reached: whether it runs is unknown. With
        *must_run* (``from_name``), also when it is gone or stopped: nothing
        is started then.
    """
    record = store.load(name)
    if record is None:
        record = await _recorded_on_host(name, spec, settings, store)
        if record is None:
            return None
    async with record_pool(record.spec, settings) as own:  # its hosts' own options
        status = await probe(record, own)
    if status.state in ("gone", "stopped") and must_run:
        raise ClusterNotFoundError(
            name=name, state=status.state, cause=status.reason,
            remedy=f"Nothing was started: from_name reattaches to a cluster that runs. To "
            f"start it again (a new cluster, without the data of the old one): "
            f"SSHCluster.from_name({name!r}, start_if_gone=True), or `dask-ssh up --name "
            f"{name} ...`; `dask-ssh clean` forgets it.")
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


async def _recorded_on_host(name: str, spec: Mapping[str, Any], settings: Settings,
                            store: StateStore) -> ClusterRecord | None:
    """No record of *name* here: ask the scheduler host of *spec*.

    Its record of a cluster that still runs (or cannot be probed) is returned
    and kept here again. Otherwise what is left there of *name* (files, and
    processes that carry its mark: an earlier start that nothing records) is
    stopped and removed, so that the start that follows finds its port and
    directory free; None is returned.
    """
    host, launch = next(iter(launches(spec).items()))
    async with record_pool(spec, settings) as pool:
        try:
            answer = await host_op(pool, host, launch, name, "probe", timeout=OP_TIMEOUT)
        except Exception:  # the start that follows says why, naming the host
            return None
        where = pool.as_connected(host)
        data = answer.get("cluster")
        if data:
            try:
                record = ClusterRecord.from_json(data, f"{where}:{answer.get('dir')}/cluster.json")
            except SSHDeployError:
                record = None
            if record is not None and record.name == name:
                async with record_pool(record.spec, settings) as own:
                    status = await probe(record, own)
                if status.state not in ("gone", "stopped"):
                    store.save(record)
                    return record
                await stop(record, store)  # its own hosts: what is left of it goes
                return None
        if answer.get("marked") or answer.get("exists"):
            found = answer.get("marked") or []
            await host_op(pool, host, launch, name, "kill", timeout=OP_TIMEOUT + 10)
            await host_op(pool, host, launch, name, "remove", data={"owner": True},
                          timeout=OP_TIMEOUT)
            if found:
                logger.warning("%s: stopped %d process(es) of an earlier cluster %r that no "
                               "record knew of (pids %s)", where, len(found), name,
                               ", ".join(str(p.get("pid")) for p in found))
    return None


async def stop(record: ClusterRecord, store: StateStore, grace: float = 5.0,
               on_jobs: Callable[[list[str]], None] | None = None) -> dict[str, str]:
    """Stop every process of the cluster on every host, remove its files there and here.

    Each host is asked to stop what its agents' records name *and* every
    process that carries the cluster's mark (whatever its files say), then
    to say what is still running. Returns, per host (``user@host:port``),
    :data:`STOPPED` (perhaps with a note) when nothing of the cluster is left
    there, else what is left or why the host could not be asked
    (:func:`left`). A host left out at the start that cannot be reached
    counts as stopped when the scheduler never had a worker there. The local
    record goes only when every host is stopped. Its running jobs are stopped
    first: *on_jobs* is given them (each ``ID (NAME: COMMAND)``) when there
    were any (default: a warning logged).
    """
    report: dict[str, str] = {}
    hosts = launches(record.spec)
    async with record_pool(record.spec) as pool:
        stopped = await stop_jobs(pool, *next(iter(hosts.items())), record.name)  # jobs first
        if stopped and on_jobs is not None:
            on_jobs(stopped)
        elif stopped:
            logger.warning("cluster %r: stopped its running job(s) %s", record.name,
                           ", ".join(stopped))
        killed = await on_hosts(pool, hosts, record.name, "kill",
                                timeout=OP_TIMEOUT + 2 * grace)
        answered = [(i, h, launch) for i, (h, launch) in enumerate(hosts.items())
                    if not isinstance(killed[h], BaseException)]
        await asyncio.gather(*(  # the scheduler's host (the first) owns the cluster's files
            host_op(pool, h, launch, record.name, "remove", data={"owner": i == 0},
                    timeout=OP_TIMEOUT) for i, h, launch in answered),
            return_exceptions=True)
        ran_on = _worker_hosts(next(iter(killed.values())))
        for host, result in killed.items():
            where = pool.as_connected(host)
            if isinstance(result, BaseException):
                if where in record.left_out and host.hostname not in ran_on:
                    report[where] = (f"{STOPPED} (left out at the start, nothing of it ran "
                                     "there; unreachable now)")
                else:
                    report[where] = f"unreachable: {str(result).splitlines()[0]}"
                continue
            report[where] = _after_kill(result)
    if not left(report):
        store.remove(record.name)
    return report


def _worker_hosts(answer: dict[str, Any] | BaseException) -> set[str]:
    """The hostnames where the scheduler's last status has workers."""
    if isinstance(answer, BaseException):
        return set()
    workers = (answer.get("status") or {}).get("workers") or []
    return {str(w.get("name", "")).rpartition("-")[0] for w in workers}


def _after_kill(answer: Mapping[str, Any]) -> str:
    """One host's line of a :func:`stop` report, from its answer to ``kill``."""
    alive = [a for a in answer.get("agents") or [] if a.get("alive")]
    running = {int(p["pid"]): p for p in answer.get("marked") or []}
    for a in alive:
        running.setdefault(int(a["pid"]), {"pid": a["pid"], "cmd": a.get("label", "")})
    if running:
        shown = ", ".join(f"{pid} ({str(p.get('cmd', ''))[:60]})" for pid, p in
                          sorted(running.items())[:5])
        return f"{len(running)} process(es) still running after SIGKILL: {shown}"
    found = answer.get("found") or []
    if found and not answer.get("recorded"):
        return (f"{STOPPED} ({len(found)} process(es) found by their mark; no record of "
                "them was left on the host)")
    return STOPPED


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
               tls: Mapping[str, str], left_out: list[str] | None = None) -> ClusterRecord:
    return ClusterRecord(name=name, scheduler_host=scheduler_host, scheduler_address=address,
                         dashboard_port=dashboard_port, spec=dict(spec), created=time.time(),
                         policy={k: v for k, v in policy.items() if k != "armed"},
                         tls=dict(tls), left_out=list(left_out or []))
