"""The ``dask-ssh`` command: parse, build the cluster, wait, report.

The command is thin on purpose. Each option is declared once, below, with
its type from :mod:`sshdeploy.cli.options`; click's parsed values become one
:class:`~sshdeploy.cli.options.CliOptions`, and the pure function
:func:`~sshdeploy.cli.options.build_cluster_args` (no network, no processes) turns
them into :class:`SSHCluster` arguments, so every option can be unit-tested;
:func:`~sshdeploy.cli.run.run_cluster` runs a cluster until a signal or the
scheduler's death; the printing lives in :mod:`sshdeploy.cli.report`.

Exit status: 0 after a signal (SIGINT, SIGTERM, SIGHUP) once the cluster
runs, 1 for a failure sshdeploy diagnosed (:class:`~sshdeploy.errors.SSHDeployError`,
a failed ``--check``, the scheduler dying, an unusable ``--log-directory``),
2 for a usage error, 130 for a signal during start-up (the start is
cancelled and what started is stopped) or a second Ctrl-C, 141 (128 +
SIGPIPE, what a tool killed by SIGPIPE returns, so that ``set -o pipefail``
sees the cut) when stdout's reader went away
(``dask-ssh ... | head -3``): the cluster is then stopped cleanly and nothing
more is printed; also, at once and quietly, when stdout is closed from the start
(``dask-ssh ... >&-``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from sshdeploy.cli import exit_codes, report
from sshdeploy.cli.console import (
    make_console,
    open_missing_streams,
    output_closed,
    output_failed,
    output_full,
)
from sshdeploy.cli.options import (
    ENV_ITEM,
    HOST,
    JUMP_HOST,
    LOG_LEVELS,
    MEMORY_LIMIT,
    PORT_SPEC,
    CliOptions,
    build_cluster_args,
)
from sshdeploy.defaults import DEFAULT_DASHBOARD, DEFAULT_SCHEDULER_PORT, DEFAULT_WORKER_CLASS
from sshdeploy.errors import SSHDeployError
from sshdeploy.hostfile import HOSTFILE_GRAMMAR
from sshdeploy.hosts import Host
from sshdeploy.versions import package_versions

__all__ = ["check_hosts", "main"]

log = logging.getLogger("sshdeploy.cli")


def check_hosts(
    hosts: Sequence[Host],
    connect_options: Mapping[str, Any] | None = None,
    remote_python: str | None = None,
    *,
    setup: str | None = None,
    deep: bool = False,
) -> list[Any]:
    """Run the ``--check`` preflight: :func:`sshdeploy.preflight.check_hosts`.

    Imported when called, so the rest of the command does not depend on it.

    Parameters
    ----------
    hosts : sequence of Host
    connect_options : Mapping, optional
    remote_python : str, optional
    setup : str, optional
    deep : bool
        Also import dask and distributed on each host (``--check-imports``);
        by default their versions are read from the package metadata.

    Returns
    -------
    list of HostCheck
    """
    from sshdeploy.preflight import check_hosts as run_checks

    return list(run_checks(hosts, connect_options, remote_python, setup=setup, deep=deep))


# --------------------------------------------------------------------------- command


_HELP = """\
Start a Dask cluster over SSH: a scheduler and worker processes on the hosts
named as arguments, in a --hostfile, or (with neither) in the PBS/Slurm job's
node list.

\b
Placement:
  - without --scheduler, the first host runs the scheduler and the other hosts
    run workers; a single host runs both;
  - with --scheduler HOST, HOST runs the scheduler and every listed host runs
    workers (with no other host, HOST runs both).
  Each worker host runs --nworkers worker processes (a hostfile's slots=N wins),
  which share the host: unless --nthreads / --memory-limit say otherwise, each
  gets the host's cores // its worker processes and its memory / its worker
  processes, both counted on the host itself.

\b
SSH settings come from ~/.ssh like ssh does: ~/.ssh/config, known_hosts, the
agent and ~/.ssh/id_* keys; the options below override them.
Connect a client to the scheduler address the banner prints (a local
127.0.0.1 one when it is reached through SSH; with --tls, the banner prints the
whole Python line). Ctrl-C (or SIGTERM, or SIGHUP when the terminal closes)
stops everything on every host, also during start-up (exit status 130 then); a
second Ctrl-C exits at once. If stdout's reader goes away (dask-ssh ... | head)
the cluster is stopped too and dask-ssh exits with status 141, quietly.

\b
Named clusters that outlive the terminal (dask-ssh SUBCOMMAND --help):
  dask-ssh up --name NAME [OPTIONS] HOST...   start one; return once it runs
  dask-ssh list|ls [--json]                   every named cluster, probed now
  dask-ssh status|logs|scale|attach NAME      operate one
  dask-ssh add|remove NAME HOST...            add hosts (--spare), retire and remove
  dask-ssh down NAME|--all, dask-ssh clean    stop them, forget the gone ones
A host literally named like a subcommand is given with its user or port
(dask-ssh root@up node2) or after -- (dask-ssh -- up node2).
"""


def _epilog() -> str:
    grammar = HOSTFILE_GRAMMAR.strip("\n")
    return "\b\n" + grammar.replace("\n\n", "\n\n\b\n") + (
        "\n\n\b\nExamples:\n"
        "  dask-ssh node1 node2 node3\n"
        "  dask-ssh --hostfile hosts.txt --nworkers 4 --nthreads 2\n"
        "  dask-ssh --check --hostfile hosts.txt\n"
        "  dask-ssh --interface eth1 --tls head node[1-8]\n"
        "  dask-ssh --min-workers 6 node[1-8]\n"
        "  dask-ssh --spare 'node[9-10]' head node[1-8]\n"
        "  dask-ssh --dry-run alice@head:2222 'gpu[01-04] slots=2'\n"
    )


def _deprecated_nprocs(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None:
        click.echo(
            "dask-ssh: --nprocs is deprecated and will be removed; use --nworkers.", err=True
        )
    return value


def _version_message() -> str:
    found = package_versions(("sshdeploy", "distributed"))
    return (
        f"%(prog)s {found.get('sshdeploy', '?')} (distributed {found.get('distributed', '?')}, "
        f"Python {sys.version.split()[0]})"
    )


class DaskSSH(click.Command):
    """The classic command, whose first argument may instead name a subcommand.

    ``dask-ssh node1 node2`` runs a cluster in the foreground, as it always
    did; ``dask-ssh up|list|ls|status|logs|scale|add|remove|attach|down|clean ...`` runs
    that subcommand. A host literally named like a subcommand is given with
    its user or port (``root@up``) or after ``--``.
    """

    def main(  # type: ignore[override]  # click's overloads: one signature serves all
        self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any
    ) -> Any:
        open_missing_streams()
        argv = list(sys.argv[1:] if args is None else args)
        command = subcommands().get(argv[0]) if argv else None
        try:
            if command is not None:
                return command.main(argv[1:], prog_name=f"{prog_name or 'dask-ssh'} {argv[0]}",
                                    **extra)
            return super().main(argv, prog_name=prog_name, **extra)
        except OSError as err:   # click's own output (--help, usage errors) that cannot be written
            if not output_failed(err):
                raise
            sys.exit(exit_codes.FAILED)


@click.command(
    cls=DaskSSH,
    name="dask-ssh",
    help=_HELP,
    epilog=_epilog(),
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("hostnames", nargs=-1, type=str)
@click.option("--scheduler", default=None, type=HOST, metavar="[USER@]HOST[:PORT]",
              help="Host that runs the scheduler; every listed host then runs workers. "
                   "[default: the first host]")
@click.option("--scheduler-port", default=DEFAULT_SCHEDULER_PORT, show_default=True,
              type=click.IntRange(0, 65535), help="Scheduler port (0: random).")
@click.option("--nthreads", default=0, show_default=True, type=click.IntRange(min=0),
              help="Threads per worker process; 0: the host's cores // its worker processes "
                   "(at least 1), counted on each host.")
@click.option("--nworkers", "nworkers", default=None, type=click.IntRange(min=1),
              help="Worker processes per worker host (a hostfile's slots=N wins). [default: 1]")
@click.option("--nprocs", "nprocs", default=None, type=click.IntRange(min=1),
              callback=_deprecated_nprocs, help="Deprecated name of --nworkers.")
@click.option("--hostfile", default=None, type=click.Path(exists=True, dir_okay=False),
              help="File with one host per line (format below).")
@click.option("--ssh-username", default=None,
              help="User for hosts that name none. [default: ~/.ssh/config, else your user]")
@click.option("--ssh-port", default=None, type=click.IntRange(1, 65535),
              help="Port for hosts that name none. [default: ~/.ssh/config, else 22]")
@click.option("--ssh-private-key", default=None,
              type=click.Path(exists=True, dir_okay=False),
              help="Private key file to log in with (on this machine). "
                   "[default: ssh-agent and ~/.ssh/id_*]")
@click.option("--nohost", is_flag=True,
              help="Do not pass the host address to the workers: each picks its own "
                   "listening address.")
@click.option("--log-directory", default=None, type=click.Path(file_okay=False),
              help="Directory ON THIS MACHINE (created if missing) where each scheduler, "
                   "worker and host agent also gets its own log file, e.g. node2-0.log "
                   "(classic dask-ssh wrote them on the remote hosts).")
@click.option("--local-directory", default=None, metavar="PATH",
              help="Directory on each worker host for worker files (checked there).")
@click.option("--remote-python", default=None, metavar="PATH",
              help="Python on the remote hosts (a hostfile's remote-python= wins). "
                   "[default: the same path as this machine's Python]")
@click.option("--memory-limit", default="auto", show_default=True, type=MEMORY_LIMIT,
              help="Memory per worker process: bytes, a size (4GB, 500MiB), a fraction of "
                   "the host's memory (0.5), 0 for no limit, or 'auto': the host's memory / its "
                   "worker processes.")
@click.option("--worker-port", default=None, type=PORT_SPEC, metavar="PORT|START:END",
              help="Worker port or range. [default: random]")
@click.option("--nanny-port", default=None, type=PORT_SPEC, metavar="PORT|START:END",
              help="Nanny port or range. [default: random]")
@click.option("--remote-dask-worker", default="distributed.cli.dask_worker", show_default=True,
              help="Classic option. Its classic values (distributed.cli.dask_worker, "
                   "distributed.cli.dask_spec) mean the default worker class; another "
                   "value is taken as a worker class, like --worker-class.")
@click.option("--dashboard-address", default=DEFAULT_DASHBOARD, show_default=True,
              help="Address of the scheduler's dashboard (':0': a random port).")
@click.option("--worker-class", default=None, metavar="DOTTED.PATH",
              help=f"Worker class to start. [default: {DEFAULT_WORKER_CLASS}]")
@click.option("--connect-timeout", default=None, type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS",
              help="Seconds for TCP, SSH handshake and login per host. "
                   "[default: the sshdeploy.connect-timeout setting, 10]")
@click.option("--known-hosts", default=None, type=click.Path(exists=True, dir_okay=False),
              help="known_hosts file to check host keys against. [default: ~/.ssh/known_hosts]")
@click.option("--insecure-skip-host-key-check", is_flag=True,
              help="Accept any host key (open to man-in-the-middle attacks; prints a warning).")
@click.option("--jump-host", default=None, type=JUMP_HOST, metavar="[USER@]HOST[:PORT]",
              help="Reach every host through this SSH jump host (like ssh -J).")
@click.option("--env", "env", multiple=True, type=ENV_ITEM, metavar="KEY=VALUE",
              help="Environment variable for every remote process; repeatable.")
@click.option("--setup", multiple=True, metavar="COMMAND",
              help="Shell command run on each host before the remote Python, e.g. "
                   "'conda activate x' or 'module load y'; repeatable (run in turn, "
                   "stopping at the first that fails).")
@click.option("--login-shell", is_flag=True,
              help="Run the remote commands in the user's login shell ($SHELL -l), for "
                   "hosts whose module or conda setup only happens there.")
@click.option("--sync-env", is_flag=True,
              help="Send this machine's packages (distributed's closure, the compared ones "
                   "and --package ones) to every host over SSH, once per content hash, and "
                   "run them on the host's Python of the same major.minor.")
@click.option("--package", "package", multiple=True, metavar="NAME",
              help="Also compare this package's version on every host (and carry it with "
                   "--sync-env); repeatable.")
@click.option("--upload", "upload", multiple=True, metavar="PATH",
              help="File or directory put on the scheduler's and workers' sys.path on every "
                   "host before they start; repeatable.")
@click.option("--dry-run", is_flag=True,
              help="Print, per host, the exact remote command, its Python and what it will "
                   "start (--env values masked: NAME=***); start nothing.")
@click.option("--check", is_flag=True,
              help="Check every host (reachable, login, Python, dask/distributed versions "
                   "beside this machine's) and print a table; start nothing; exit 1 if any "
                   "host fails.")
@click.option("--no-progress", is_flag=True,
              help="Show no start-up status (per host, live on a terminal, else one line "
                   "on stderr per change).")
@click.option("--no-restart", is_flag=True,
              help="Do not restart workers that die. By default each Nanny restarts its "
                   "worker process, and a worker whose Nanny or host agent is lost is "
                   "started again with backoff, up to sshdeploy.worker-restarts (5) times "
                   "within sshdeploy.worker-restart-window (60 s).")
@click.option("--forward-ports/--no-forward-ports", "forward_ports", default=None,
              help="Reach the scheduler and dashboard through the scheduler host's SSH "
                   "connection (the banner then shows 127.0.0.1 addresses), or never. "
                   "[default: only when this machine cannot reach the scheduler directly]")
@click.option("--interface", default=None, metavar="IFACE",
              help="Network interface the scheduler and workers listen on, on their hosts "
                   "(e.g. eth1 for a private cluster network), as dask scheduler/worker "
                   "--interface.")
@click.option("--tls", is_flag=True,
              help="Encrypt all traffic with new temporary TLS credentials (tls://); the "
                   "client's files go to a private local directory, deleted on exit, and "
                   "the banner prints the Python line that connects with them.")
@click.option("--min-workers", default=None, type=click.IntRange(min=1), metavar="N",
              help="Come up when at least N workers started; hosts that failed are listed "
                   "in the banner and left out. [default: every worker must start]")
@click.option("--spare", "spare", multiple=True, metavar="HOST",
              help="A spare host (repeatable; or the word spare on a hostfile line): no "
                   "worker at the start, not even connected to; the workers of a host that "
                   "is lost or quarantined move there, and scale/adapt use it last.")
@click.option("--initial-workers", default=None, type=click.IntRange(min=0), metavar="N",
              help="Start only N workers, filling the hosts in order; the other hosts are "
                   "connected to when scale/adapt place a worker there. [default: every "
                   "slot of every host but the spares]")
@click.option("--check-imports", is_flag=True,
              help="With --check: also import dask and distributed on each host (slower; "
                   "by default their versions are read from package metadata).")
@click.option("--ask-passphrase", is_flag=True,
              help="Prompt for the passphrase of the private key(s) (hidden input).")
@click.option("--log-level", default=None, metavar="LEVEL",
              type=click.Choice(LOG_LEVELS, case_sensitive=False),
              help="Show the remote lines at LEVEL and above (DEBUG, INFO, WARNING, ERROR, "
                   "CRITICAL); WARNING and ERROR lines and dask-ssh's own lines always show, "
                   "--log-directory files keep every line. [default: every line]")
@click.option("-q", "--quiet", is_flag=True, help="Same as --log-level WARNING.")
@click.version_option(message=_version_message(), package_name="sshdeploy")
@click.pass_context
def main(ctx: click.Context, /, **options: Any) -> None:
    """Entry point of ``dask-ssh`` (see the module docstring for exit statuses).

    Call ``main(argv, standalone_mode=False)`` to get the exit status back
    instead of :func:`sys.exit`.
    """
    if sys.stdout is None:
        # Started with stdout closed (dask-ssh ... >&-): its reader is gone from
        # the start, so stop as when it goes (| head), before anything starts.
        ctx.exit(exit_codes.OUTPUT_CLOSED)
    console = make_console(sys.stdout)
    err_console = make_console(sys.stderr if sys.stderr is not None
                               else open(os.devnull, "w"))
    try:
        code = _run(options, console, err_console)
    except SSHDeployError as err:
        err_console.print(f"Error: {err}")
        code = getattr(err, "exit_code", exit_codes.FAILED)
    except KeyboardInterrupt:
        err_console.print("dask-ssh: interrupted")
        code = exit_codes.INTERRUPTED
    if code == exit_codes.OK and output_closed(console):
        # a reader that left is SIGPIPE's status; an output that took no more is a failure
        code = exit_codes.FAILED if output_full(console) else exit_codes.OUTPUT_CLOSED
    ctx.exit(code)


def _run(options: dict[str, Any], console: Console, err_console: Console,
         keep: dict[str, Any] | None = None) -> int:
    """Do what the options ask; return the exit status (*keep*: ``dask-ssh up``)."""
    opts = CliOptions(**options)
    if opts.ask_passphrase and not opts.dry_run:  # a dry run connects nowhere
        key = opts.ssh_private_key or "your SSH private key"
        opts = replace(opts, passphrase=click.prompt(
            f"Passphrase for {key}", hide_input=True, err=True))
    args = build_cluster_args(opts)
    if opts.dry_run:
        from sshdeploy import cluster  # imports distributed: only for what needs it

        plans = cluster.SSHCluster.remote_commands(**args.kwargs())
        report.print_plan(console, plans, env=args.env)
        return exit_codes.OK
    if opts.insecure_skip_host_key_check:  # only once the run goes ahead and connects
        err_console.print(
            "WARNING: --insecure-skip-host-key-check: host keys are not checked; a "
            "man-in-the-middle could impersonate the hosts and see everything sent."
        )
    if opts.check:
        unique = list({h.as_written(): h for h in args.hosts}.values())
        checks = check_hosts(
            unique,
            connect_options=args.connect_options,
            remote_python=args.remote_python,
            setup=args.setup,
            deep=opts.check_imports,
        )
        report.print_check_table(console, checks)
        return _check_gate(console, args, unique, all(c.ok for c in checks))
    if opts.log_directory is not None:
        _make_log_directory(opts.log_directory)
    from sshdeploy.cli.run import run_cluster

    return run_cluster(args, console=console, err_console=err_console,
                       log_directory=opts.log_directory, show_level=opts.show_level,
                       progress=not opts.no_progress, keep=keep)


def _check_gate(console: Console, args: Any, hosts: Sequence[Host], ok: bool) -> int:
    """Print the version gate's table after the ``--check`` table; return the exit status."""
    from sshdeploy.env.gate import format_table
    from sshdeploy.env.stage import check_gate

    kw = args.kwargs()
    rows, _skipped = check_gate(
        hosts, args.connect_options, args.remote_python, setup=kw["setup"],
        login_shell=kw["login_shell"], packages=kw["packages"], environment=kw["environment"])
    if rows:
        console.print(f"version gate: {len({r.host for r in rows})} host(s) differ from this "
                      "machine:", markup=False, highlight=False)
        console.print(format_table(rows), markup=False, highlight=False)
    else:
        console.print("version gate: every host probed matches this machine", markup=False,
                      highlight=False)
    return exit_codes.OK if ok and not rows else exit_codes.FAILED


class LogDirectoryError(click.ClickException):
    """``--log-directory`` cannot be created or written (exit status 1)."""

    exit_code = exit_codes.FAILED

    def __init__(self, path: str, cause: str) -> None:
        super().__init__(
            f"--log-directory {path}: {cause}. Give a directory this user can create and "
            "write, or leave --log-directory out."
        )
        self.path = path


def _make_log_directory(path: str) -> None:
    """Create *path* if missing and check it is writable, before anything starts."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LogDirectoryError(path, f"cannot create it ({err.strerror or err})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise LogDirectoryError(path, "not writable by this user")


# --------------------------------------------------------------------------- up

_UP_HELP = """\
Start a named cluster that outlives this command: the options and hosts of
the classic dask-ssh, plus --name. It returns once every worker is ready,
printing the banner and how to reach the cluster again; nothing of ours keeps
running on this machine. The hosts supervise it: a worker that dies is
restarted there, and the whole cluster stops when --idle-timeout or
--max-lifetime says so (else at `dask-ssh down NAME`).

\b
Same name, same spec: it says the cluster already runs, and exits 0.
Same name, another spec: refused (what differs is listed), unless --replace.
"""


def _up(ctx: click.Context, /, name: str, replace: bool, idle_timeout: str | None,
        max_lifetime: str | None, **options: Any) -> None:
    """``dask-ssh up``: the classic run, kept (see :data:`_UP_HELP`)."""
    from sshdeploy.named.policy import check_name, parse_duration
    from sshdeploy.named.state import StateStore

    console = make_console(sys.stdout)
    err_console = make_console(sys.stderr)
    try:
        check_name(name, "--name")
        keep = {"name": name,
                "idle_timeout": parse_duration(idle_timeout, "--idle-timeout"),
                "max_lifetime": parse_duration(max_lifetime, "--max-lifetime")}
        store = StateStore()
        with store.locked(name):
            if replace:
                _replace(store, name, err_console)
            code = _run(options, console, err_console, keep=keep)
    except SSHDeployError as err:
        err_console.print(f"Error: {err}")
        code = getattr(err, "exit_code", exit_codes.FAILED)
    except KeyboardInterrupt:
        err_console.print("dask-ssh: interrupted")
        code = exit_codes.INTERRUPTED
    ctx.exit(code)


def _replace(store: Any, name: str, err_console: Console) -> None:
    """``--replace``: stop the cluster of that name, if any, before the start."""
    import asyncio

    from sshdeploy.errors import ClusterStopError
    from sshdeploy.named import flow

    record = store.load(name)
    if record is not None:
        stopped = asyncio.run(flow.stop(record, store))
        left = flow.left(stopped)
        if left:  # the old one may still hold the name's hosts and ports: no start
            raise ClusterStopError(name=name, left=left, scheduler_host=record.scheduler_host,
                                   hosts=len(stopped))
        err_console.print(f"dask-ssh: replaced {name!r} (stopped on {len(stopped)} hosts)")


up = click.Command(
    "up",
    help=_UP_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    callback=click.pass_context(_up),
    params=[
        click.Option(["--name"], required=True,
                     help="The cluster's name: a letter, then up to 39 letters, digits, - or _."),
        click.Option(["--replace"], is_flag=True,
                     help="Stop a cluster of that name that runs another spec, then start."),
        click.Option(["--idle-timeout"], default=None, metavar="DURATION",
                     help="Stop after this long with no task and no client (10s, 30min, 2h). "
                          "[default: sshdeploy.idle-timeout, else never]"),
        click.Option(["--max-lifetime"], default=None, metavar="DURATION",
                     help="Stop this long after the start. [default: sshdeploy.max-lifetime, "
                          "else never]"),
        *[p for p in main.params if p.name not in ("version",)],
    ],
)


def subcommands() -> dict[str, click.Command]:
    """``dask-ssh``'s subcommands by name (``up`` and those of :mod:`sshdeploy.cli.named`)."""
    from sshdeploy.cli.named import SUBCOMMANDS

    return {"up": up, **SUBCOMMANDS}


if __name__ == "__main__":  # pragma: no cover
    main()
