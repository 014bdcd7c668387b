"""``dask-ssh logs NAME`` and ``dask-ssh attach NAME``: following a named cluster.

``logs`` reads what its processes wrote from each host's log files over SSH
(``--follow`` tails them); a worker that never ran is said with the names of
those that did. ``attach`` follows the logs and the worker count until
Ctrl-C, or until the cluster is stopped or replaced. Imports
nothing heavy at import time, as :mod:`sshdeploy.cli.named`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING, Any

import click

from sshdeploy.cli.named import NAME_ARG, handled, named_record, out_console
from sshdeploy.errors import ClusterNotFoundError

if TYPE_CHECKING:
    from sshdeploy.named.state import ClusterRecord


@click.command("logs")
@NAME_ARG
@click.option("--worker", "-w", "worker", default=None, help="Only this worker's lines.")
@click.option("--scheduler", "scheduler", is_flag=True, help="Only the scheduler's lines.")
@click.option("--lines", "-n", default=200, show_default=True, type=click.IntRange(min=0),
              help="Lines per log file (0: all that is kept).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@handled
def logs_command(name: str, worker: str | None, scheduler: bool, lines: int,
                 follow: bool) -> None:
    """Print what the processes of cluster NAME wrote, kept on its hosts.

    Each host keeps every line of its agents in a log file (8 MiB, then
    rotated once), so lines written while nobody was attached are not lost.
    """
    record = named_record(name)
    try:
        asyncio.run(_logs(record, worker, scheduler, lines, follow))
    except KeyboardInterrupt:
        pass


def _wanted(line: str, worker: str | None, scheduler: bool, sched_label: str) -> bool:
    if worker:
        return f"[{worker}]" in line
    if scheduler:
        return f"[{sched_label}]" in line
    return True


async def _logs(record: ClusterRecord, worker: str | None, scheduler: bool, lines: int,
                follow: bool) -> None:
    from sshdeploy.named import flow
    from sshdeploy.named.hostops import host_op

    every = flow.launches(record.spec)
    hosts = every
    sched_host = next(iter(hosts))
    if worker:
        stem = worker.rpartition("-")[0]
        hosts = {h: lch for h, lch in hosts.items() if h.hostname == stem} or hosts
    elif scheduler:
        hosts = {sched_host: hosts[sched_host]}
    sched_label = f"scheduler {sched_host.hostname}"
    async with flow.record_pool(record.spec) as pool:
        answers = await asyncio.gather(*(
            host_op(pool, h, lch, record.name, "logs", data={"lines": lines})
            for h, lch in hosts.items()), return_exceptions=True)
        out = sys.stdout
        printed = 0
        for h, answer in zip(hosts, answers, strict=True):
            if isinstance(answer, BaseException):
                out_console(sys.stderr).print(f"dask-ssh: {pool.as_connected(h)}: {answer}")
                continue
            for text in (answer.get("logs") or {}).values():
                for line in text:
                    if _wanted(line, worker, scheduler, sched_label):
                        out.write(line + "\n")
                        printed += 1
        out.flush()
        if worker and not printed:
            await _check_worker(pool, record, every, worker)
        if follow:
            await _follow(pool, hosts, answers, worker, scheduler, sched_label)


async def _check_worker(pool: Any, record: ClusterRecord, hosts: dict[Any, Any],
                        worker: str) -> None:
    """Raise a ConfigError naming the known workers if *worker* never ran in the cluster.

    Every line of every host's log files is looked at (a worker that ran long
    ago is known), and what the scheduler lists now.
    """
    from sshdeploy.errors import ConfigError
    from sshdeploy.named.hostops import host_op
    from sshdeploy.named.status import worker_names

    answers = await asyncio.gather(*(
        host_op(pool, h, lch, record.name, "logs", data={"lines": 1, "sources": True})
        for h, lch in hosts.items()), return_exceptions=True)
    sources: set[str] = set()
    for answer in answers:
        if isinstance(answer, BaseException):
            return  # a host that did not answer may know it: say nothing more
        sources.update(str(s) for s in answer.get("sources") or [])
        status = answer.get("status") or {}
        sources.update(str(w.get("name")) for w in status.get("workers") or [])
    known = worker_names(sources, (h.hostname for h in hosts))
    if worker in known:
        return
    raise ConfigError(
        "--worker", f"cluster {record.name!r} has no worker {worker!r} "
        + (f"(its workers: {', '.join(known)})" if known else "(no worker of it has run yet)"),
        remedy=f"Give one of them; `dask-ssh status {record.name}` shows those that run now.")


async def _follow(pool: Any, hosts: dict[Any, Any], answers: list[Any], worker: str | None,
                  scheduler: bool, sched_label: str) -> None:
    """``tail -F`` the hosts' log files over their SSH connections until cancelled.

    Each tail ends on its host with the channel (the shell's ``cat`` reads
    EOF, then stops it): nothing is left there however this one ends.
    """
    import shlex

    async def tail(host: Any, directory: str) -> None:
        conn = await pool.get(host)
        pattern = shlex.quote(directory) + "/logs/*.log"
        proc = await conn.conn.create_process(
            f"tail -q -n 0 -F {pattern} 2>/dev/null & t=$!; cat >/dev/null; kill $t",
            encoding="utf-8", errors="replace")
        try:
            async for line in proc.stdout:
                if _wanted(line, worker, scheduler, sched_label):
                    sys.stdout.write(line)
                    sys.stdout.flush()
        finally:
            proc.close()  # its stdin closes: the remote `cat` ends and stops the tail
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait_closed(), 5)

    await asyncio.gather(*(tail(h, a["host_dir"]) for h, a in zip(hosts, answers, strict=True)
                           if isinstance(a, dict) and a.get("host_dir")))



@click.command("attach")
@NAME_ARG
@handled
def attach_command(name: str) -> None:
    """Hold cluster NAME in the foreground: its address, logs and status; Ctrl-C detaches.

    The scheduler and dashboard are forwarded through SSH when this machine
    cannot reach them (the local addresses are printed, and stay open while
    attached); the remote lines of every host are printed as they come, and
    a line each time its workers change. Nothing stops when you detach. It
    ends by itself, with status 1 and the reason, when the cluster stops
    (``dask-ssh down``, a policy) or is replaced; an outage only pauses it.
    """
    asyncio.run(_attach(named_record(name)))


#: Seconds between two looks at the scheduler while attached.
ATTACH_TICK = 2.0


async def _attach(record: ClusterRecord) -> None:
    import signal

    from sshdeploy.cluster import SSHCluster
    from sshdeploy.named import flow
    from sshdeploy.named.status import wanted_workers

    name = record.name
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # from here on a signal only detaches
        loop.add_signal_handler(sig, stop.set)
    console = out_console()
    ended: tuple[str, str] | None = None
    cluster = await SSHCluster.from_name(name, asynchronous=True)
    try:
        assert cluster.scheduler_comm is not None
        identity = await cluster.scheduler_comm.identity()
        seen, wanted = _worker_names(identity), wanted_workers(record)
        console.print(f"attached to {name}: scheduler {cluster.scheduler_address}")
        console.print(f"  dashboard  {cluster.dashboard_link}")
        console.print(f"  workers    {len(seen)} of {wanted} wanted: {', '.join(seen)}")
        if len(seen) < wanted:
            console.print(f"  ({wanted - len(seen)} missing: a worker lost in an outage "
                          f"starts again by itself; `dask-ssh logs {name}` says why it went)")
        console.print("  Ctrl-C detaches; the cluster keeps running.")
        # Its scheduler host is asked what became of it when the scheduler stops answering.
        async with flow.record_pool(record.spec) as probes:
            follow = asyncio.ensure_future(_logs(record, None, False, 20, True))
            try:
                silent = False
                while not stop.is_set() and not follow.done():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), ATTACH_TICK)
                    if stop.is_set():
                        break
                    now, ended = await _look(cluster, probes, record, identity.get("id"))
                    if ended is not None:
                        break
                    if (now is None) != silent:
                        silent = now is None
                        console.print(f"dask-ssh: {name}: " + (
                            "its scheduler does not answer; waiting (Ctrl-C detaches)"
                            if silent else "its scheduler answers again"))
                    if now is not None and now != seen:
                        console.print(f"dask-ssh: {name}: workers changed: "
                                      f"{_changes(seen, now)}")
                        seen = now
            finally:  # the hosts' tails end with their channels
                follow.cancel()
                with contextlib.suppress(BaseException):
                    await follow
    finally:
        closing = cluster.close()
        if closing is not None:
            await closing
    if ended is not None:
        state, why = ended
        raise ClusterNotFoundError(name=name, state=state, cause=why,
                                   remedy="attach has ended (nothing of it is left on the "
                                   "hosts); `dask-ssh list` shows the named clusters.")
    console.print(f"detached from {name}; it keeps running (dask-ssh down {name} stops it)")


def _worker_names(identity: dict[str, Any]) -> list[str]:
    return sorted(str(w.get("name")) for w in (identity.get("workers") or {}).values())


def _changes(before: list[str], after: list[str]) -> str:
    """Say how the workers changed, e.g. ``2 -> 1 (gone: b-0)``.

    >>> _changes(["a-0", "b-0"], ["a-0", "c-0"])
    '2 -> 2 (new: c-0; gone: b-0)'
    """
    new = [w for w in after if w not in before]
    gone = [w for w in before if w not in after]
    parts = ([f"new: {', '.join(new)}"] if new else []) + (
        [f"gone: {', '.join(gone)}"] if gone else [])
    return f"{len(before)} -> {len(after)}" + (f" ({'; '.join(parts)})" if parts else "")


async def _look(cluster: Any, pool: Any, record: ClusterRecord, scheduler_id: Any
                ) -> tuple[list[str] | None, tuple[str, str] | None]:
    """The workers of the attached cluster now (None: its scheduler did not answer), and
    how it has ended if it has (stopped, replaced: asked of its scheduler host)."""
    from sshdeploy.named import flow
    from sshdeploy.named.hostops import host_op
    from sshdeploy.named.status import ending

    try:
        identity = await asyncio.wait_for(cluster.scheduler_comm.identity(), 10)
    except Exception:
        identity = None
    if isinstance(identity, dict) and identity.get("id") == scheduler_id:
        return _worker_names(identity), None
    host, launch = flow.scheduler_host(record)
    try:
        answer: dict[str, Any] | BaseException = await host_op(
            pool, host, launch, record.name, "probe", timeout=15)
    except Exception as exc:  # unreachable: it may run on through the outage
        answer = exc
    why = ending(record, answer)
    if why is None and identity is not None:  # another scheduler at that address
        why = "replaced", "another scheduler answers at its address"
    return None, why


#: The subcommands by name (``ls`` is ``list``).

#: The commands of this module, by name (see :func:`sshdeploy.cli.subcommands`).
LOG_COMMANDS: dict[str, click.Command] = {"logs": logs_command, "attach": attach_command}
