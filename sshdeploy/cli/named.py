"""``dask-ssh`` subcommands for named clusters: list, status, scale, add, remove,
down, clean (``logs`` and ``attach`` are :mod:`sshdeploy.cli.logs`).

Each is a small click command over :mod:`sshdeploy.named` (``up`` is the
classic command with ``--name``, see :mod:`sshdeploy.cli`). Nothing here
imports distributed or asyncssh at import time (``dask-ssh --help`` stays
cheap): the commands import what they need when they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from sshdeploy.errors import ClusterNotFoundError, ClusterStateError, ConfigError, SSHDeployError
from sshdeploy.named.policy import check_name

if TYPE_CHECKING:
    from sshdeploy.named.state import ClusterRecord

#: The subcommands, and what ``dask-ssh HOST...`` (the classic form) is not.
COMMANDS = ("up", "list", "ls", "status", "logs", "scale", "add", "remove", "attach", "down",
            "clean")


def out_console(stream: Any = None) -> Console:
    from sshdeploy.cli.console import make_console

    return make_console(stream or sys.stdout)


def _name(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None:
        return value
    try:
        return check_name(value, "NAME")
    except ConfigError as err:   # click names the argument already: the reason and remedy
        raise click.BadParameter(f"{err.reason}. {err.remedy}") from None


def _count(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A count of workers: a whole number >= 0 (``-1`` too reaches here: not an option)."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = -1
    if n < 0:
        raise click.BadParameter(
            f"{value!r} is not a number of workers: give the count the cluster should have, "
            "0 or more (`dask-ssh scale NAME 0` stops every worker and keeps the scheduler).")
    return n


def _fail(err: SSHDeployError) -> None:
    out_console(sys.stderr).print(f"Error: {err}")
    sys.exit(getattr(err, "exit_code", 1))


def handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an SSHDeployError into one paragraph on stderr and its exit status."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SSHDeployError as err:
            _fail(err)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


#: Where a cluster with no record here is found.
ELSEWHERE = ("`dask-ssh list` shows the clusters recorded here. One started from another "
             "machine, or whose record here was removed, is recorded on its scheduler host: "
             "`dask-ssh list --host HEAD` shows it, `dask-ssh down NAME --host HEAD` stops it.")


def named_record(name: str) -> ClusterRecord:
    from sshdeploy.named.state import StateStore

    record = StateStore().load(name)
    if record is None:
        raise ClusterNotFoundError(name=name, cause="no record of it on this machine",
                                   remedy=ELSEWHERE.replace("NAME", name))
    return record


def _ssh_options(known_hosts: str | None, ssh_private_key: str | None) -> dict[str, Any] | None:
    """``asyncssh.connect`` keywords of ``--known-hosts`` / ``--ssh-private-key`` (``--host``)."""
    options: dict[str, Any] = {}
    if known_hosts:
        options["known_hosts"] = known_hosts
    if ssh_private_key:
        options["client_keys"] = [ssh_private_key]
    return options or None


NAME_ARG = click.argument("name", callback=_name)


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON list, one object per cluster.")
@click.option("--host", default=None, metavar="[USER@]HOST[:PORT]",
              help="Read the clusters recorded on this (scheduler) host instead of here.")
@click.option("--known-hosts", default=None, type=click.Path(dir_okay=False),
              help="known_hosts file for --host. [default: ~/.ssh/known_hosts]")
@click.option("--ssh-private-key", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Private key for --host. [default: ssh-agent and ~/.ssh/id_*]")
@handled
def list_command(as_json: bool, host: str | None, known_hosts: str | None,
                 ssh_private_key: str | None) -> None:
    """Show every named cluster, its state probed now (never read from a file alone).

    States: running; degraded (workers missing); unreachable (its scheduler
    host did not answer); gone (nothing of it runs: a reboot, a kill);
    stopped (it ended by itself: the reason is shown).
    """
    from sshdeploy.named import flow
    from sshdeploy.named.state import StateStore
    from sshdeploy.named.status import COLUMNS, table_row

    if host is not None:
        records = asyncio.run(_records_on(host, _ssh_options(known_hosts, ssh_private_key)))
        problems: list[ClusterStateError] = []
    else:
        records, problems = StateStore().scan()
    statuses = asyncio.run(flow.probe_all(records)) if records else []
    if as_json:
        rows = [s.as_json() for s in statuses]
        rows += [{"name": Path(p.path).stem, "state": "unreadable", "reason": p.reason,
                  "path": p.path} for p in problems]
        click.echo(json.dumps(rows, indent=1))
        return
    console = out_console()
    if not statuses and not problems:
        console.print("no named clusters (start one with `dask-ssh up --name NAME HOST...`)")
        return
    if statuses:
        table = Table(box=None, pad_edge=False, show_edge=False)
        for column in COLUMNS:
            table.add_column(column, no_wrap=column != "state")
        for s in statuses:
            table.add_row(*table_row(s))
        console.print(table)
    for p in problems:
        click.echo(f"{Path(p.path).stem}: unreadable state file {p.path}: {p.reason}. `dask-ssh "
                   "clean` removes it; a cluster that still runs is found with `dask-ssh list "
                   "--host HOST` on its scheduler host.", err=True)


async def _records_on(host: str, options: dict[str, Any] | None) -> list[ClusterRecord]:
    """The records kept on *host* (the authoritative copies), for ``--host``."""
    from sshdeploy.hostfile import parse_host
    from sshdeploy.named.hostops import host_op
    from sshdeploy.named.state import ClusterRecord
    from sshdeploy.plan import Launch
    from sshdeploy.settings import Settings
    from sshdeploy.ssh.pool import HostPool

    target = parse_host(host)
    pool = HostPool(settings=Settings.resolve())
    pool.set_options(target, options)
    async with pool:
        answer = await host_op(pool, target, Launch(python=sys.executable), "list", "list")
    out = []
    for name, probe in sorted((answer.get("clusters") or {}).items()):
        if probe.get("cluster"):
            out.append(ClusterRecord.from_json(probe["cluster"], f"{host}:{name}"))
    return out


@click.command("status")
@NAME_ARG
@handled
def status_command(name: str) -> None:
    """Show one row per host of cluster NAME: role, agents, workers running / wanted."""
    from sshdeploy.named import flow
    from sshdeploy.named.hostops import on_hosts
    from sshdeploy.named.spec import hosts_of
    from sshdeploy.named.status import classify, host_health, stopping

    record = named_record(name)

    async def probe_hosts() -> tuple[Any, dict[Any, Any], Any]:
        async with flow.record_pool(record.spec) as pool:
            hosts = flow.launches(record.spec)
            answers = await on_hosts(pool, hosts, name, "probe")
            first = next(iter(answers.values()))
            status = classify(record, first)
            if status.state == "stopped" and isinstance(first, dict):  # every host answered
                status = stopping(status, str((first.get("end") or {}).get("reason", "")),
                                  answers)
            return pool, answers, status

    pool, answers, status = asyncio.run(probe_hosts())
    console = out_console()
    console.print(f"{name}: {status.state}" + (f" ({status.reason})" if status.reason else "")
                  + f", scheduler {record.scheduler_address}, workers "
                  f"{status.running}/{status.wanted}")
    sched = next(iter(answers.values()))
    workers_by_host: dict[str, list[str]] = {}
    # A gone or stopped cluster's status file is its last word, not what runs now.
    if isinstance(sched, dict) and status.state in ("running", "degraded"):
        for w in (sched.get("status") or {}).get("workers") or []:
            workers_by_host.setdefault(str(w.get("name", "")).rpartition("-")[0], []).append(
                str(w.get("name")))
    spares = {h.hostname for h in hosts_of(record.spec) if h.spare}
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("host", "role", "health", "agents", "workers", "error"):
        table.add_column(column)
    for i, (host, answer) in enumerate(answers.items()):
        role = "scheduler" if i == 0 else "spare" if host.hostname in spares else "workers"
        names = workers_by_host.get(host.hostname, [])
        health = host_health(answer, runs_scheduler=i == 0, spare=host.hostname in spares,
                             workers=len(names), cluster=status.state)
        if isinstance(answer, BaseException):
            table.add_row(pool.as_connected(host), role, health, "-", "-",
                          str(answer).splitlines()[0])
            continue
        alive = [a for a in answer.get("agents") or [] if a.get("alive")]
        table.add_row(pool.as_connected(host), role, health, str(len(alive)),
                      ", ".join(names) if names else "-", "")
    console.print(table)


@click.command("scale", context_settings={"ignore_unknown_options": True})
@NAME_ARG
@click.argument("n", callback=_count)
@handled
def scale_command(name: str, n: int) -> None:
    """Scale cluster NAME to N workers (0 too); return when they run (it keeps running).

    N beyond the hosts' slots is said at once: the cluster scales to the slots.
    """
    from distributed import Client

    from sshdeploy.cluster import SSHCluster

    cluster = SSHCluster.from_name(name)
    console = out_console()
    try:
        cluster.scale(n)
        target = len(cluster.worker_spec)
        if target < n:
            slots = f"{target} slot{'s' if target != 1 else ''}"
            console.print(f"{name}: {n} workers asked, the hosts have {slots}: scaling to "
                          f"{target} (add hosts with `dask-ssh add {name} HOST...`, or give "
                          "them more slots)")
        with Client(cluster) as client:
            running = _wait_for_count(client, name, target,
                                      cluster.cluster_plan.settings.start_timeout)
    finally:
        cluster.close()
    console.print(f"{name}: {running} worker{'s' if running != 1 else ''}")


def _wait_for_count(client: Any, name: str, wanted: int, timeout: float) -> int:
    """Wait until the scheduler has exactly *wanted* workers (up or down); return the count."""
    from sshdeploy.errors import WorkersNotReadyError

    deadline = time.monotonic() + timeout
    while True:
        running = len(client.scheduler_info(n_workers=-1)["workers"])
        if running == wanted:
            return running
        if time.monotonic() > deadline:
            raise WorkersNotReadyError(name=name, wanted=wanted, running=running,
                                       waited=timeout)
        time.sleep(0.2)


@click.command("add")
@NAME_ARG
@click.argument("hostnames", nargs=-1, required=True)
@click.option("--spare", is_flag=True,
              help="Add them as spares: no worker now; used by scale and to replace lost hosts.")
@handled
def add_command(name: str, hostnames: tuple[str, ...], spare: bool) -> None:
    """Add HOSTNAMES (``[user@]host[:port] [slots=N]``, ranges too) to cluster NAME.

    Unless --spare, workers start in their slots; returns when they run. The
    cluster records them (``from_name``, ``list`` and ``status`` see them).
    """
    from sshdeploy.cli.options import resolve_hosts
    from sshdeploy.cluster import SSHCluster

    added = resolve_hosts(hostnames)
    cluster = SSHCluster.from_name(name)
    try:
        with cli_advice(name):
            started = cluster.add_hosts(added, spare=spare)
        total = len(cluster.worker_spec)
    finally:
        cluster.close()
    what = "as spares" if spare else (f"workers started: {', '.join(started)}" if started
                                      else "no worker started")
    out_console().print(f"{name}: {len(added)} host(s) added ({what}); {total} worker(s)")


#: What ``dask-ssh add/remove`` advise instead of the Python API's remedies, by the reason.
CLI_REMEDIES = (
    ("is already a host of the cluster", "`dask-ssh status {name}` lists its hosts; a host "
     "quarantined or lost takes workers again by itself once its window ends."),
    ("is not a worker host of the cluster", "`dask-ssh status {name}` lists its hosts."),
    ("runs the scheduler", "Remove worker hosts only; `dask-ssh scale {name} N` removes "
     "workers anywhere, `dask-ssh down {name}` stops the cluster."),
    ("is given twice", "Give each host once (`HOST slots=N` for more workers there)."),
)


@contextlib.contextmanager
def cli_advice(name: str) -> Iterator[None]:
    """Within: an error of ``add_hosts``/``remove_hosts`` advises ``dask-ssh`` commands for
    cluster *name* (not ``host_rows()`` or ``readmit()``), and names HOSTNAMES."""
    try:
        yield
    except ConfigError as exc:
        remedy = next((r.format(name=name) for why, r in CLI_REMEDIES if why in exc.reason),
                      exc.remedy)
        setting = "HOSTNAMES" if exc.setting in ("hosts", "add_hosts()") else exc.setting
        raise ConfigError(setting, exc.reason, remedy=remedy) from None


@click.command("remove")
@NAME_ARG
@click.argument("hostnames", nargs=-1, required=True)
@handled
def remove_command(name: str, hostnames: tuple[str, ...]) -> None:
    """Remove HOSTNAMES from cluster NAME: their workers are retired first (their results move
    to the other workers), then the hosts are left alone."""
    from sshdeploy.cli.options import resolve_hosts
    from sshdeploy.cluster import SSHCluster

    gone = resolve_hosts(hostnames)
    cluster = SSHCluster.from_name(name)
    try:
        with cli_advice(name):
            retired = cluster.remove_hosts(gone)
        total = len(cluster.worker_spec)
    finally:
        cluster.close()
    out_console().print(f"{name}: {len(gone)} host(s) removed (workers retired: "
                     f"{', '.join(retired) or 'none'}); {total} worker(s)")


@click.command("down")
@click.argument("names", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every named cluster recorded here.")
@click.option("--host", default=None, metavar="[USER@]HOST[:PORT]",
              help="Read the cluster's record on this, its scheduler host (it was started "
                   "from another machine, or its record here was removed).")
@click.option("--known-hosts", default=None, type=click.Path(dir_okay=False),
              help="known_hosts file for --host. [default: ~/.ssh/known_hosts]")
@click.option("--ssh-private-key", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Private key for --host. [default: ssh-agent and ~/.ssh/id_*]")
@handled
def down_command(names: tuple[str, ...], every: bool, host: str | None,
                 known_hosts: str | None, ssh_private_key: str | None) -> None:
    """Stop named clusters everywhere; return when nothing of them is left on any host.

    Each host stops what the cluster's records there name and every process
    that carries the cluster's mark (SSHDEPLOY_CLUSTER, inherited by all its
    processes), then says what still runs. Success (status 0, the record
    forgotten) only once every host said nothing of it is left; else what is
    left is named, the record is kept and the status is 1.
    """
    from sshdeploy.errors import ClusterStopError
    from sshdeploy.named import flow
    from sshdeploy.named.state import StateStore

    store = StateStore()
    if every:
        names = tuple(store.names())
    if not names:
        raise click.UsageError("give the NAME of a cluster, or --all")
    console = out_console()
    failed = False
    for name in names:
        check_name(name, "NAME")
        if host is not None:
            record = _fetch_record(name, host, _ssh_options(known_hosts, ssh_private_key))
        else:
            record = named_record(name)
        started = time.monotonic()

        def jobs_stopped(jobs: list[str], name: str = name) -> None:
            console.print(f"{name}: stopped {len(jobs)} running job(s) first: "
                          + ", ".join(jobs))

        report = asyncio.run(flow.stop(record, store, on_jobs=jobs_stopped))
        left = flow.left(report)
        for where, what in report.items():
            if what != flow.STOPPED:
                console.print(f"{name}: {where}: {what}")
        if left:
            failed = True
            out_console(sys.stderr).print("Error: " + str(ClusterStopError(
                name=name, left=left, scheduler_host=record.scheduler_host,
                hosts=len(report))))
            continue
        console.print(f"{name}: stopped on {len(report)} of {len(report)} hosts "
                      f"in {time.monotonic() - started:.1f} s")
    if failed:
        sys.exit(1)


def _fetch_record(name: str, host: str, options: dict[str, Any] | None) -> ClusterRecord:
    """The record of *name* kept on its scheduler *host*, kept here too (``--host``)."""
    from sshdeploy.hostfile import parse_host
    from sshdeploy.named import flow
    from sshdeploy.named.state import StateStore

    record = asyncio.run(flow.fetch(name, parse_host(host), options))
    StateStore().save(record)
    return record


def _clean_caches(hosts: tuple[str, ...], envs: bool, uploads: bool, known_hosts: str | None,
                  ssh_private_key: str | None) -> int:
    """Free the HOSTs' caches; one line per host. Return the exit status (1 if any failed)."""
    from sshdeploy.env.clean import clean

    options: dict[str, object] = {}
    if known_hosts:
        options["known_hosts"] = known_hosts
    if ssh_private_key:
        options["client_keys"] = [ssh_private_key]
    results = clean(list(hosts), options or None, envs=envs, blobs=uploads)
    console = out_console()
    failed = 0
    for host, res in results.items():
        if "error" in res:
            failed += 1
            click.echo(f"{host}: {res['error']}", err=True)
        else:
            freed = sum(v for k, v in res.items() if k in ("envs", "blobs"))
            console.print(f"{host}: removed {freed / 1e6:.1f} MB")
    return 1 if failed else 0


@click.command("clean")
@click.argument("hosts", nargs=-1, metavar="[HOST]...")
@click.option("--envs", is_flag=True,
              help="Instead: remove the synced environments cached on HOSTs (--sync-env).")
@click.option("--uploads", is_flag=True,
              help="Instead: remove the uploaded contents cached on HOSTs (--upload).")
@click.option("--known-hosts", default=None, type=click.Path(dir_okay=False),
              help="known_hosts file for HOSTs. [default: ~/.ssh/known_hosts]")
@click.option("--ssh-private-key", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Private key for HOSTs. [default: ssh-agent and ~/.ssh/id_*]")
@handled
def clean_command(hosts: tuple[str, ...], envs: bool, uploads: bool, known_hosts: str | None,
                  ssh_private_key: str | None) -> None:
    """Forget the named clusters that are gone or stopped (their files here and on their hosts).

    With --envs / --uploads: free the caches of synced environments / uploaded
    code on the HOSTs named instead.
    """
    if envs or uploads:
        if not hosts:
            raise click.UsageError("--envs / --uploads clean the caches of the HOSTs named")
        sys.exit(_clean_caches(hosts, envs, uploads, known_hosts, ssh_private_key))
    if hosts:
        raise click.UsageError("HOSTs go with --envs or --uploads")
    from sshdeploy.errors import ClusterStopError
    from sshdeploy.named import flow
    from sshdeploy.named.state import StateStore

    store = StateStore()
    records, problems = store.scan()
    statuses = asyncio.run(flow.probe_all(records)) if records else []
    console = out_console()
    removed = []
    kept: list[ClusterStopError] = []
    for problem in problems:
        name = Path(problem.path).stem
        store.remove(name)
        removed.append(f"{name} (unreadable state file: {problem.reason})")
    for record, status in zip(records, statuses, strict=True):
        if status.state in ("gone", "stopped"):
            report = asyncio.run(flow.stop(record, store))
            left = flow.left(report)
            if left:  # what could not be verified stopped keeps its record: said below
                kept.append(ClusterStopError(name=record.name, left=left, hosts=len(report),
                                             scheduler_host=record.scheduler_host))
                continue
            removed.append(f"{record.name} ({status.state}"
                           + (f": {status.reason}" if status.reason else "") + ")")
    if removed or not kept:
        console.print("removed: " + ", ".join(removed) if removed else "nothing to remove")
    for err in kept:
        out_console(sys.stderr).print(f"Error: {err}")
    if kept:
        sys.exit(1)


SUBCOMMANDS: dict[str, click.Command] = {
    "list": list_command, "ls": list_command, "status": status_command,
    "scale": scale_command, "add": add_command,
    "remove": remove_command,
    "down": down_command, "clean": clean_command,
}
