"""The ``dask-ssh`` command: parse, build the cluster, wait, report.

The command is thin on purpose. Each option is declared once, in
:mod:`sshdeploy.cli.options` (:func:`~sshdeploy.cli.options.dask_ssh_options`)
beside its field of :class:`~sshdeploy.cli.options.CliOptions`, which click's
parsed values become, and the pure function
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
from sshdeploy.cli.options import CliOptions, build_cluster_args, dask_ssh_options
from sshdeploy.errors import SSHDeployError
from sshdeploy.hostfile import HOSTFILE_GRAMMAR
from sshdeploy.hosts import Host
from sshdeploy.placement import as_hosts
from sshdeploy.versions import package_versions

__all__ = ["check_hosts", "main"]

log = logging.getLogger("sshdeploy.cli")


def check_hosts(
    hosts: Sequence[Host],
    connect_options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    remote_python: str | Sequence[str] | None = None,
    *,
    setup: str | Sequence[str] | None = None,
    deep: bool = False,
    gpus: Mapping[Any, tuple[str, bool]] | None = None,
    describe: Sequence[str] | None = None,
    login_shell: bool = False,
) -> list[Any]:
    """Run the ``--check`` preflight: :func:`sshdeploy.ssh.preflight.check_hosts`.

    Imported when called, so the rest of the command does not depend on it.

    Parameters
    ----------
    hosts : sequence of Host
    connect_options : Mapping or list of Mapping, optional
    remote_python : str or list of str, optional
    setup : str or list of str, optional
    deep : bool
        Also import dask and distributed on each host (``--check-imports``);
        by default their versions are read from the package metadata.
    gpus : dict, optional
        The hosts asked for GPUs (``--gpus``, a hostfile's ``gpus=``): probed too.
    describe : sequence of str, optional
        The version gate's packages: each host is described for it by the same
        probe (one remote Python per host; ``HostCheck.description``).
    login_shell : bool

    Returns
    -------
    list of HostCheck
    """
    from sshdeploy.bootstrap import join_setup
    from sshdeploy.ssh.preflight import check_hosts as run_checks

    extra: dict[str, Any] = {"gpus": gpus} if gpus else {}
    if describe is not None:
        extra.update(describe=describe, login_shell=login_shell)
    return list(run_checks(hosts, connect_options, remote_python, setup=join_setup(setup),
                           deep=deep, **extra))


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
Run work on one (beside its scheduler; it outlives this terminal):
  dask-ssh submit NAME [-d] SCRIPT [ARGS]...  run a script as a job, show its output
  dask-ssh jobs NAME                          its jobs and their states
  dask-ssh job logs|wait|stop NAME JOB        follow, wait for or stop one
  dask-ssh exec NAME -- COMMAND...            run a command on every host
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


def _version_message() -> str:
    found = package_versions(("sshdeploy", "distributed"))
    return (
        f"%(prog)s {found.get('sshdeploy', '?')} (distributed {found.get('distributed', '?')}, "
        f"Python {sys.version.split()[0]})"
    )


class DaskSSH(click.Command):
    """The classic command, whose first argument may instead name a subcommand.

    ``dask-ssh node1 node2`` runs a cluster in the foreground, as it always
    did; ``dask-ssh up|list|ls|status|logs|scale|add|remove|attach|down|clean ...`` (and
    ``submit|jobs|job|exec``) runs that subcommand. A host literally named like a
    subcommand is given with its user or port (``root@up``) or after ``--``.
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
@dask_ssh_options
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
         keep: dict[str, Any] | None = None, show_level: int | None = None) -> int:
    """Do what the options ask; return the exit status (*keep*: ``dask-ssh up``).

    *show_level* overrides the options' own (``dask-ssh up`` hides every remote line).
    """
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
        from sshdeploy.gpus import requests
        from sshdeploy.hosts import check_gpus

        unique = list({h.as_written(): h for h in as_hosts(args.hosts)}.values())
        asks = requests(as_hosts(args.hosts), check_gpus(args.gpus))
        # One remote Python per host: the probe describes it for the gate too (not with
        # --check-imports, whose probe imports dask and distributed instead).
        gated = None if opts.check_imports else _gate_packages(args)
        extra: dict[str, Any] = {"gpus": asks} if asks else {}
        if gated is not None:
            extra.update(describe=gated, login_shell=args.kwargs()["login_shell"])
        checks = check_hosts(
            unique,
            connect_options=args.connect_options,
            remote_python=args.remote_python,
            setup=args.setup,
            deep=opts.check_imports,
            **extra,
        )
        report.print_check_table(console, checks)
        gpus_ok = report.print_gpus(console, checks, args.cpu_workers or 0)
        described = None if gated is None else {
            c.host: getattr(c, "description", None) or (c.error or "not described")
            for c in checks}
        return _check_gate(console, args, unique, all(c.ok for c in checks) and gpus_ok,
                           described)
    if opts.log_directory is not None:
        _make_log_directory(opts.log_directory)
    from sshdeploy.cli.run import run_cluster

    return run_cluster(args, console=console, err_console=err_console,
                       log_directory=opts.log_directory,
                       show_level=opts.show_level if show_level is None else show_level,
                       progress=not opts.no_progress, keep=keep)


def _gate_packages(args: Any) -> list[str]:
    """The packages the version gate compares for these arguments."""
    from sshdeploy.env.prestart import gate_plan

    kw = args.kwargs()
    return list(gate_plan(packages=kw["packages"], environment=kw["environment"]).packages)


def _check_gate(console: Console, args: Any, hosts: Sequence[Host], ok: bool,
                described: Mapping[str, Any] | None = None) -> int:
    """Print the version gate's table after the ``--check`` table; return the exit status.

    *described*: what the check's own probe said of each host (no second probe).
    """
    from sshdeploy.env.gate import format_table
    from sshdeploy.env.prestart import check_gate

    kw = args.kwargs()
    extra = {} if described is None else {"described": described}
    rows, skipped = check_gate(
        hosts, args.connect_options, args.remote_python, setup=kw["setup"],
        login_shell=kw["login_shell"], packages=kw["packages"], environment=kw["environment"],
        **extra)
    if rows:
        console.print(f"version gate: {len({r.host for r in rows})} host(s) differ from this "
                      "machine:", markup=False, highlight=False)
        console.print(format_table(rows), markup=False, highlight=False)
    if skipped:
        console.print(f"version gate: {len(skipped)} host(s) not compared (the table above says "
                      "why): " + ", ".join(sorted(skipped)), markup=False, highlight=False)
    if not rows and not skipped:
        what = "every host matches" if ok else "the hosts that passed match"
        console.print(f"version gate: {what} this machine", markup=False, highlight=False)
    return exit_codes.OK if ok and not rows and not skipped else exit_codes.FAILED


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
running on this machine. While it starts it shows each host's state (a live
table on a terminal, else one line per change on stderr), not the remote log
lines: those go to the cluster's logs (dask-ssh logs NAME, dask-ssh attach
NAME); -v (or --log-level LEVEL) prints them here too. A failed start prints
the failing host's last remote lines with its error. The hosts supervise it: a worker that dies is
restarted there, and the whole cluster stops when --idle-timeout or
--max-lifetime says so (else at `dask-ssh down NAME`).

\b
Same name, same spec: it says the cluster already runs, and exits 0.
Same name, another spec: refused (what differs is listed), unless --replace.
"""


def _up(ctx: click.Context, /, name: str, replace: bool, idle_timeout: str | None,
        max_lifetime: str | None, verbose: bool, **options: Any) -> None:
    """``dask-ssh up``: the classic run, kept (see :data:`_UP_HELP`)."""
    from sshdeploy.cli.remote_output import HIDE_REMOTE
    from sshdeploy.named.policy import check_name, parse_duration
    from sshdeploy.named.state import StateStore
    from sshdeploy.settings import MIN_POLICY_DURATION

    if verbose and (options.get("log_level") is not None or options.get("quiet")):
        raise click.UsageError("-v prints every remote line; --log-level / -q choose a level: "
                               "give one of them.")
    # The remote lines stay in the cluster's logs unless asked for (-v, --log-level, -q).
    streamed = verbose or options.get("log_level") is not None or options.get("quiet")

    console = make_console(sys.stdout)
    err_console = make_console(sys.stderr)
    try:
        check_name(name, "--name")
        keep = {"name": name,
                "idle_timeout": parse_duration(idle_timeout, "--idle-timeout",
                                               MIN_POLICY_DURATION),
                "max_lifetime": parse_duration(max_lifetime, "--max-lifetime",
                                               MIN_POLICY_DURATION)}
        store = StateStore()
        with store.locked(name):
            if replace:
                _replace(store, name, err_console)
            code = _run(options, console, err_console, keep=keep,
                        show_level=None if streamed else HIDE_REMOTE)
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
        click.Option(["-v", "--verbose"], is_flag=True,
                     help="Print the remote log lines while the cluster starts, as the "
                          "foreground dask-ssh does. [default: only each host's state; the "
                          "lines are in dask-ssh logs NAME]"),
        *[p for p in main.params if p.name not in ("version",)],
    ],
)


def subcommands() -> dict[str, click.Command]:
    """``dask-ssh``'s subcommands by name (``up``, those of :mod:`sshdeploy.cli.named`,
    :mod:`sshdeploy.cli.logs` and :mod:`sshdeploy.cli.jobs`)."""
    from sshdeploy.cli.jobs import JOB_COMMANDS
    from sshdeploy.cli.logs import LOG_COMMANDS
    from sshdeploy.cli.named import SUBCOMMANDS

    return {"up": up, **SUBCOMMANDS, **LOG_COMMANDS, **JOB_COMMANDS}


if __name__ == "__main__":  # pragma: no cover
    main()
