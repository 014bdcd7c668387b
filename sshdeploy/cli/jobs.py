"""``dask-ssh`` subcommands that run work on a named cluster: submit, jobs, job, exec.

Thin click commands over :class:`sshdeploy.named.jobclient.ClusterJobs`. A
job runs on the cluster's scheduler host, under a supervisor of its own:
Ctrl-C (or a closed terminal, or a lost connection) only detaches this
command from it. Nothing here imports distributed or asyncssh at import
time (``dask-ssh --help`` stays cheap).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from sshdeploy.cli.console import make_console
from sshdeploy.cli.named import NAME_ARG, handled

if TYPE_CHECKING:
    from sshdeploy.named.jobclient import ClusterJobs
    from sshdeploy.named.jobs import JobRecord

#: Exit status after Ctrl-C (the job keeps running), as a shell gives for SIGINT.
DETACHED = 130
#: Exit status when stdout's reader went away (``dask-ssh submit ... | head``).
OUTPUT_CLOSED = 141

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Passthrough(click.Command):
    """A command whose last argument takes the rest of the line as it is.

    Its options may come anywhere before that rest (``submit NAME -d
    script.py --lr 0.1``: ``--lr`` is the script's); a ``--`` before the rest is
    dropped (``exec NAME --hosts n2 -- df -h``).
    """

    #: How many arguments come before the rest (NAME, SCRIPT for submit).
    fixed = 1
    #: Whether options may also follow those arguments (before the rest or ``--``).
    options_after = True

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        valued = {o for p in self.params if isinstance(p, click.Option) and not p.is_flag
                  for o in p.opts + p.secondary_opts}
        options: list[str] = []
        positional: list[str] = []
        rest = list(args)
        while rest and (len(positional) < self.fixed or self.options_after):
            token = rest[0]
            if token == "--":
                rest.pop(0)
                break
            if token.startswith("-") and token != "-":
                options.append(rest.pop(0))
                if token in valued and rest:
                    options.append(rest.pop(0))
                continue
            if len(positional) >= self.fixed:
                break
            positional.append(rest.pop(0))
        return super().parse_args(ctx, [*options, "--", *positional, *rest])


class ScriptCommand(Passthrough):
    """``submit``: NAME and SCRIPT, then the script's own arguments, whatever they look like."""

    fixed = 2
    options_after = False


def _jobs(name: str) -> ClusterJobs:
    from sshdeploy.named.jobclient import ClusterJobs

    return ClusterJobs.of(name, warn=lambda text: click.echo(f"dask-ssh: warning: {text}",
                                                             err=True))


def _hint(name: str, job: str) -> str:
    return (f"follow it: dask-ssh job logs {name} {job} -f; stop it: dask-ssh job stop "
            f"{name} {job}")


def _ended(name: str, job: JobRecord) -> str:
    runtime = job.runtime(time.time())
    took = f" after {runtime:.1f} s" if runtime is not None else ""
    return f"dask-ssh: job {job.id} of {name} {job.describe()}{took}"


async def _until_signal(work: Coroutine[Any, Any, Any],
                        signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM,
                                                    signal.SIGHUP)) -> tuple[bool, Any]:
    """Run *work* until it ends or one of *signals* comes (then cancel it).

    Returns ``(interrupted, result)``. A signal handler only sets an event.
    """
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for sig in signals:
        loop.add_signal_handler(sig, interrupted.set)
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(interrupted.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        waiter.cancel()
    if task.done():
        return False, task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    return True, None


class OutputClosed(Exception):
    """stdout's reader went away (``dask-ssh submit ... | head``): stop following."""


def _writer() -> Callable[[bytes], None]:
    """Write a job's output to stdout as it comes."""
    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        try:
            out.write(data)
            out.flush()
        except OSError as exc:
            raise OutputClosed from exc
    return write


_SUBMIT_HELP = """\
Run SCRIPT with ARGS as a job of the named cluster NAME, beside its scheduler.

\b
The script and its directory (as git would track it; --upload to send other
paths instead) are sent through the uploads, and the script runs with the
scheduler's Python and environment (setup, a synced environment, --env of
the cluster) in its own process group, with DASK_SCHEDULER_ADDRESS (and a TLS
cluster's credentials) set: Client() with no arguments connects to the
cluster. Its stdout and stderr are shown as it writes them and dask-ssh exits
with its exit status (128+N for a job ended by signal N).

\b
The job belongs to the cluster, not to this terminal: Ctrl-C, a closed
terminal or a lost connection only detach (exit status 130), and its output
stays on the scheduler host (dask-ssh job logs NAME JOB -f). What follows
SCRIPT is the script's.
"""


@click.command("submit", cls=ScriptCommand, help=_SUBMIT_HELP, context_settings=_CONTEXT)
@NAME_ARG
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--upload", multiple=True, type=click.Path(exists=True), metavar="PATH",
              help="Send the script and these paths (repeatable) instead of its directory; it "
              "runs beside them.")
@click.option("--env", "env_items", multiple=True, metavar="KEY=VALUE",
              help="An environment variable of the job (repeatable).")
@click.option("--job-name", default=None, help="A name to find the job by, besides its id.")
@click.option("--timeout", default=None, metavar="DURATION",
              help="Stop the job after this long (10s, 30min, 2h). [default: never]")
@click.option("--detach", "-d", is_flag=True,
              help="Print the job's id and return once it runs.")
@handled
def submit_command(name: str, script: str, args: tuple[str, ...], upload: tuple[str, ...],
                   env_items: tuple[str, ...], job_name: str | None, timeout: str | None,
                   detach: bool) -> None:
    from sshdeploy.named.jobs import parse_env
    from sshdeploy.named.policy import parse_duration

    env = parse_env(env_items)
    seconds = parse_duration(timeout, "--timeout")
    jobs = _jobs(name)
    try:
        code = asyncio.run(_submit(jobs, script, args, upload, env, job_name, seconds, detach))
    except KeyboardInterrupt:
        click.echo("dask-ssh: interrupted before the job started", err=True)
        code = DETACHED
    sys.exit(code)


async def _submit(jobs: ClusterJobs, script: str, args: tuple[str, ...],
                  upload: tuple[str, ...], env: dict[str, str], job_name: str | None,
                  timeout: float | None, detach: bool) -> int:
    name = jobs.name
    async with jobs:
        job = await jobs.submit(script, args, upload=upload, env=env, name=job_name,
                                timeout=timeout)
        if detach:
            click.echo(job.id)
            click.echo(f"dask-ssh: job {job.id} of {name} runs on {jobs.where}; "
                       f"{_hint(name, job.id)}", err=True)
            return 0
        click.echo(f"dask-ssh: job {job.id} of {name} on {jobs.where}: {job.command()} "
                   "(Ctrl-C detaches)", err=True)
        try:
            interrupted, final = await _until_signal(jobs.follow(job.id, _writer()))
        except OutputClosed:
            return OUTPUT_CLOSED
    if interrupted:
        click.echo(f"\ndask-ssh: detached: job {job.id} of {name} keeps running; "
                   f"{_hint(name, job.id)}", err=True)
        return DETACHED
    click.echo(_ended(name, final), err=True)
    return int(final.exit_status())


@click.command("jobs", context_settings=_CONTEXT)
@NAME_ARG
@click.option("--json", "as_json", is_flag=True, help="One JSON list, one object per job.")
@handled
def jobs_command(name: str, as_json: bool) -> None:
    """List the jobs of the named cluster NAME, oldest first, as its scheduler host has them.

    States: running; succeeded; failed (its exit code, or the signal that
    killed it); stopped (why: who stopped it, its --timeout, the cluster
    stopping); lost (its supervisor is gone: the host rebooted).
    """
    jobs = _jobs(name)

    async def listing() -> list[JobRecord]:
        async with jobs:
            return await jobs.jobs()

    found = asyncio.run(listing())
    if as_json:
        click.echo(json.dumps([j.as_json() for j in found], indent=1))
        return
    if not found:
        click.echo(f"no jobs on {name} (run one with `dask-ssh submit {name} SCRIPT`)")
        return
    from sshdeploy.named.jobs import COLUMNS

    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in COLUMNS:
        table.add_column(column, no_wrap=column not in ("state", "command"))
    now = time.time()
    for job in found:
        table.add_row(*job.row(now))
    make_console(sys.stdout).print(table, markup=False, highlight=False)


@click.group("job", context_settings=_CONTEXT)
def job_group() -> None:
    """One job of the named cluster NAME (its id, or its --job-name): logs, wait, stop."""


JOB_ARG = click.argument("job")


@job_group.command("logs", context_settings=_CONTEXT)
@NAME_ARG
@JOB_ARG
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing what it writes until it ends (Ctrl-C stops following: "
                   "exit status 130, the job runs on).")
@handled
def job_logs_command(name: str, job: str, follow: bool) -> None:
    """Print what JOB wrote (stdout and stderr, kept on the scheduler host, 8 MiB and one
    rotated part), also after the command that submitted it is gone."""
    jobs = _jobs(name)

    async def logs() -> tuple[bool, Any]:
        async with jobs:
            return await _until_signal(jobs.follow(job, _writer(), follow=follow))

    try:
        interrupted, final = asyncio.run(logs())
    except OutputClosed:
        sys.exit(OUTPUT_CLOSED)
    if interrupted:  # Ctrl-C: only the following stops, as for submit
        click.echo(f"\ndask-ssh: stopped following; job {job} of {name} keeps running "
                   f"(dask-ssh job stop {name} {job} stops it)", err=True)
        sys.exit(DETACHED)
    if follow:
        click.echo(_ended(name, final), err=True)


@job_group.command("wait", context_settings=_CONTEXT)
@NAME_ARG
@JOB_ARG
@handled
def job_wait_command(name: str, job: str) -> None:
    """Wait until JOB ends; exit with its exit status (128+N for signal N)."""
    jobs = _jobs(name)

    async def wait() -> tuple[bool, Any]:
        async with jobs:
            return await _until_signal(jobs.wait(job))

    interrupted, final = asyncio.run(wait())
    if interrupted:
        click.echo(f"dask-ssh: stopped waiting; job {job} of {name} keeps running", err=True)
        sys.exit(DETACHED)
    click.echo(_ended(name, final), err=True)
    sys.exit(final.exit_status())


@job_group.command("stop", context_settings=_CONTEXT)
@NAME_ARG
@JOB_ARG
@click.option("--grace", default=5.0, show_default=True, type=click.FloatRange(min=0),
              metavar="SECONDS", help="Seconds between SIGINT, SIGTERM and SIGKILL.")
@handled
def job_stop_command(name: str, job: str, grace: float) -> None:
    """Stop JOB: SIGINT, then SIGTERM, then SIGKILL to its whole process group and every
    process it started, GRACE seconds apart; return once nothing of it is left."""
    jobs = _jobs(name)

    async def stop() -> tuple[JobRecord, bool]:
        async with jobs:
            return await jobs.stop(job, grace)

    final, was_running = asyncio.run(stop())
    if was_running:
        click.echo(f"dask-ssh: job {final.id} of {name} stopped; nothing of it is left")
    else:
        click.echo(f"dask-ssh: job {final.id} of {name} was not running: {final.describe()}")


_EXEC_HELP = """\
Run COMMAND on every host of the named cluster NAME (or those of --hosts) at
once, in the cluster's setup and environment (DASK_SCHEDULER_ADDRESS set).

\b
Its words are joined by spaces and run by each host's shell, as ssh does
(quote pipes and $VARS for the local shell). Each line is printed prefixed
by its host; then a table of each host's exit status (on stderr). Exits 1 if
any host failed, 130 after Ctrl-C, which stops it on every host.

\b
  dask-ssh exec lab -- nproc
  dask-ssh exec lab --hosts node2 -- 'df -h $HOME | tail -1'
"""


@click.command("exec", cls=Passthrough, help=_EXEC_HELP, context_settings=_CONTEXT)
@NAME_ARG
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--hosts", "-H", "hosts", multiple=True, metavar="HOST",
              help="Only this host (repeatable, or comma-separated).")
@click.option("--timeout", default=None, metavar="DURATION",
              help="Stop it on the hosts that have not finished after this long. "
              "[default: never]")
@handled
def exec_command(name: str, command: tuple[str, ...], hosts: tuple[str, ...],
                 timeout: str | None) -> None:
    from sshdeploy.named.policy import parse_duration

    seconds = parse_duration(timeout, "--timeout")
    only = [h for item in hosts for h in item.split(",") if h]
    jobs = _jobs(name)
    jobs.hosts(only)  # an unknown host is said before anything runs

    def line(host: str, text: str, is_stderr: bool) -> None:
        click.echo(f"{host}: {text}", err=is_stderr)

    async def run() -> tuple[bool, Any]:
        async with jobs:
            return await _until_signal(jobs.exec(command, only, line, seconds),
                                       (signal.SIGINT, signal.SIGTERM))

    interrupted, results = asyncio.run(run())
    if interrupted:
        click.echo("dask-ssh: interrupted: stopped on every host", err=True)
        sys.exit(DETACHED)
    table = Table(box=None, pad_edge=False, show_edge=False)
    table.add_column("host", no_wrap=True)
    table.add_column("exit")
    for where, result in results.items():
        table.add_row(where, str(result))
    make_console(sys.stderr).print(table, markup=False, highlight=False)
    sys.exit(0 if all(r == 0 for r in results.values()) else 1)


#: The subcommands of this module by name (registered by :func:`sshdeploy.cli.subcommands`).
JOB_COMMANDS: dict[str, click.Command] = {
    "submit": submit_command, "jobs": jobs_command, "job": job_group, "exec": exec_command,
}
