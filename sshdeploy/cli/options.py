"""The pure part of ``dask-ssh``: its options, parsed, to :class:`SSHCluster` arguments.

Each option of the command (:mod:`sshdeploy.cli`) is declared once, here
(:data:`OPTIONS`), with its :class:`click.ParamType` (:data:`MEMORY_LIMIT`,
:data:`PORT_SPEC`, :data:`ENV_ITEM`, :data:`HOST`, :data:`JUMP_HOST`), so a
bad value is a :class:`click.BadParameter` (exit status 2) naming the option. Click's dict
of parsed values becomes one frozen :class:`CliOptions`, and
:func:`build_cluster_args` turns that into a
:class:`~sshdeploy.arguments.ClusterArgs`, the keyword arguments of
:class:`~sshdeploy.cluster.SSHCluster` and of ``SSHCluster.remote_commands``
(their one declaration, which names the option that sets each). Which hosts
(:func:`resolve_hosts`) and which host runs what (:func:`place_hosts`) are
here too.

No network, no processes: reading the hostfile (and, with no hosts at all,
the batch job's node list) is the only I/O, so every option can be
unit-tested.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import click

from sshdeploy.arguments import ClusterArgs
from sshdeploy.defaults import (
    CLASSIC_WORKER_MODULES,
    DEFAULT_DASHBOARD,
    DEFAULT_SCHEDULER_PORT,
    DEFAULT_WORKER_CLASS,
)
from sshdeploy.errors import HostfileError
from sshdeploy.hostfile import load_hostfile, parse_host, parse_host_line
from sshdeploy.hosts import Host, check_gpus, check_memory_limit
from sshdeploy.nodelists import hosts_from_environment

__all__ = [
    "CLASSIC_REMOTE_DASK_WORKERS",
    "ENV_ITEM",
    "GPUS",
    "HOST",
    "JUMP_HOST",
    "LOG_LEVELS",
    "MEMORY_LIMIT",
    "OPTIONS",
    "PORT_SPEC",
    "CliOptions",
    "build_cluster_args",
    "dask_ssh_options",
    "place_hosts",
    "resolve_hosts",
]

#: Values of the classic ``--remote-dask-worker`` that mean "the default worker".
CLASSIC_REMOTE_DASK_WORKERS = frozenset(CLASSIC_WORKER_MODULES)

#: The values of ``--log-level``, lowest first.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PORT_SPEC = re.compile(r"[0-9]+(:[0-9]+)?")


# --------------------------------------------------------------------------- option types


class MemoryLimitType(click.ParamType):
    """``--memory-limit``: :func:`sshdeploy.hosts.check_memory_limit`, the one rule.

    Examples
    --------
    >>> [MEMORY_LIMIT.convert(v, None, None) for v in ("auto", "0", "0.5", "4GB")]
    ['auto', 0, 0.5, '4GB']
    """

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str | int | float | None:
        try:
            return check_memory_limit(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)


class GpusType(click.ParamType):
    """``--gpus``: :func:`sshdeploy.hosts.check_gpus`, the one rule.

    Examples
    --------
    >>> [GPUS.convert(v, None, None) for v in ("auto", "FREE", "2", "0,2")]
    ['auto', 'free', '2', '0,2']
    """

    name = "auto|free|N|0,2"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str | None:
        try:
            return check_gpus(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)


class PortSpecType(click.ParamType):
    """``--worker-port`` / ``--nanny-port``: ``N`` or ``START:END``; 0 means random.

    Examples
    --------
    >>> [PORT_SPEC.convert(v, None, None) for v in ("0", "4000", "4000:4010")]
    [0, 4000, '4000:4010']
    """

    name = "port"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        text = str(value).strip()
        if not _PORT_SPEC.fullmatch(text):
            self.fail(f"{value!r} is not a port (N) or a range (START:END)", param, ctx)
        if ":" in text:
            start, end = (int(p) for p in text.split(":"))
            if not 0 < start <= end <= 65535:
                self.fail(f"{value!r}: bad port range", param, ctx)
            return text
        port = int(text)
        if port > 65535:
            self.fail(f"{value!r}: ports go up to 65535", param, ctx)
        return port


class EnvItemType(click.ParamType):
    """``--env KEY=VALUE``: a ``(key, value)`` pair; the value may be empty or hold ``=``.

    Examples
    --------
    >>> ENV_ITEM.convert("OPTS=a=b", None, None)
    ('OPTS', 'a=b')
    """

    name = "KEY=VALUE"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        key, sep, rest = str(value).partition("=")
        if not sep or not _ENV_KEY.fullmatch(key):
            self.fail(
                f"{value!r} is not KEY=VALUE with KEY a variable name "
                "(letters, digits, '_'; not starting with a digit)",
                param,
                ctx,
            )
        return key, rest


class HostType(click.ParamType):
    """``[user@]host[:port]``, as a :class:`~sshdeploy.hosts.Host`.

    Parameters
    ----------
    settings : bool
        Whether ``key=value`` settings may follow (``--scheduler`` takes them;
        a jump host does not).

    Examples
    --------
    >>> HOST.convert("al@head:2222 nthreads=2", None, None).as_written()
    'al@head:2222'
    """

    name = "[user@]host[:port]"

    def __init__(self, settings: bool = True) -> None:
        self.settings = settings

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Host:
        if isinstance(value, Host):
            return value
        where = f"--{param.name.replace('_', '-')}" if param is not None and param.name else "host"
        try:
            host = parse_host(str(value), path=where)
        except HostfileError as err:
            self.fail(str(err), param, ctx)
        if not self.settings and any(
            v is not None for v in (host.slots, host.nthreads, host.memory_limit,
                                    host.remote_python, host.gpus)
        ):
            self.fail(f"{value!r}: give [user@]host[:port] without settings", param, ctx)
        return host


MEMORY_LIMIT = MemoryLimitType()
GPUS = GpusType()
PORT_SPEC = PortSpecType()
ENV_ITEM = EnvItemType()
HOST = HostType()
JUMP_HOST = HostType(settings=False)


# --------------------------------------------------------------------------- the options


def _deprecated_nprocs(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None:
        click.echo(
            "dask-ssh: --nprocs is deprecated and will be removed; use --nworkers.", err=True
        )
    return value


#: The options of ``dask-ssh`` (and ``dask-ssh up``), in ``--help`` order. Each is declared
#: once, here, beside its :class:`CliOptions` field and what :func:`build_cluster_args`
#: makes of it (``sshdeploy.arguments`` names the option that sets each SSHCluster keyword).
OPTIONS: tuple[Callable[[Any], Any], ...] = (
    click.option("--scheduler", default=None, type=HOST, metavar="[USER@]HOST[:PORT]",
                 help="Host that runs the scheduler; every listed host then runs workers. "
                      "[default: the first host]"),
    click.option("--scheduler-port", default=DEFAULT_SCHEDULER_PORT, show_default=True,
                 type=click.IntRange(0, 65535), help="Scheduler port (0: random)."),
    click.option("--nthreads", default=0, show_default=True, type=click.IntRange(min=0),
                 help="Threads per worker process; 0: the host's cores // its worker processes "
                      "(at least 1), counted on each host."),
    click.option("--nworkers", "nworkers", default=None, type=click.IntRange(min=1),
                 help="Worker processes per worker host (a hostfile's slots=N wins). [default: 1]"),
    click.option("--nprocs", "nprocs", default=None, type=click.IntRange(min=1),
                 callback=_deprecated_nprocs, help="Deprecated name of --nworkers."),
    click.option("--hostfile", default=None, type=click.Path(exists=True, dir_okay=False),
                 help="File with one host per line (format below)."),
    click.option("--ssh-username", default=None,
                 help="User for hosts that name none. [default: ~/.ssh/config, else your user]"),
    click.option("--ssh-port", default=None, type=click.IntRange(1, 65535),
                 help="Port for hosts that name none. [default: ~/.ssh/config, else 22]"),
    click.option("--ssh-private-key", default=None,
                 type=click.Path(exists=True, dir_okay=False),
                 help="Private key file to log in with (on this machine). "
                      "[default: ssh-agent and ~/.ssh/id_*]"),
    click.option("--nohost", is_flag=True,
                 help="Do not pass the host address to the workers: each picks its own "
                      "listening address."),
    click.option("--log-directory", default=None, type=click.Path(file_okay=False),
                 help="Directory ON THIS MACHINE (created if missing) where each scheduler, "
                      "worker and host agent also gets its own log file, e.g. node2-0.log "
                      "(classic dask-ssh wrote them on the remote hosts)."),
    click.option("--local-directory", default=None, metavar="PATH",
                 help="Directory on each worker host for worker files (checked there)."),
    click.option("--remote-python", default=None, metavar="PATH",
                 help="Python on the remote hosts (a hostfile's remote-python= wins). "
                      "[default: the same path as this machine's Python]"),
    click.option("--memory-limit", default="auto", show_default=True, type=MEMORY_LIMIT,
                 help="Memory per worker process: bytes, a size (4GB, 500MiB), a fraction of "
                      "the host's memory (0.5), 0 for no limit, or 'auto': the host's memory / its "
                      "worker processes."),
    click.option("--worker-port", default=None, type=PORT_SPEC, metavar="PORT|START:END",
                 help="Worker port or range. [default: random]"),
    click.option("--nanny-port", default=None, type=PORT_SPEC, metavar="PORT|START:END",
                 help="Nanny port or range. [default: random]"),
    click.option("--remote-dask-worker", default="distributed.cli.dask_worker", show_default=True,
                 help="Classic option. Its classic values (distributed.cli.dask_worker, "
                      "distributed.cli.dask_spec) mean the default worker class; another "
                      "value is taken as a worker class, like --worker-class."),
    click.option("--dashboard-address", default=DEFAULT_DASHBOARD, show_default=True,
                 help="Address of the scheduler's dashboard (':0': a random port)."),
    click.option("--worker-class", default=None, metavar="DOTTED.PATH",
                 help=f"Worker class to start. [default: {DEFAULT_WORKER_CLASS}]"),
    click.option("--connect-timeout", default=None, type=click.FloatRange(min=0, min_open=True),
                 metavar="SECONDS",
                 help="Seconds for TCP, SSH handshake and login per host. "
                      "[default: the sshdeploy.connect-timeout setting, 10]"),
    click.option("--known-hosts", default=None, type=click.Path(exists=True, dir_okay=False),
                 help="known_hosts file to check host keys against. [default: ~/.ssh/known_hosts]"),
    click.option("--insecure-skip-host-key-check", is_flag=True,
                 help="Accept any host key (open to man-in-the-middle attacks; prints a warning)."),
    click.option("--jump-host", default=None, type=JUMP_HOST, metavar="[USER@]HOST[:PORT]",
                 help="Reach every host through this SSH jump host (like ssh -J)."),
    click.option("--env", "env", multiple=True, type=ENV_ITEM, metavar="KEY=VALUE",
                 help="Environment variable for every remote process; repeatable."),
    click.option("--setup", multiple=True, metavar="COMMAND",
                 help="Shell command run on each host before the remote Python, e.g. "
                      "'conda activate x' or 'module load y'; repeatable (run in turn, "
                      "stopping at the first that fails)."),
    click.option("--login-shell", is_flag=True,
                 help="Run the remote commands in the user's login shell ($SHELL -l), for "
                      "hosts whose module or conda setup only happens there."),
    click.option("--sync-env", is_flag=True,
                 help="Send this machine's packages (distributed's closure, the compared ones "
                      "and --package ones) to every host over SSH, once per content hash, and "
                      "run them on the host's Python of the same major.minor."),
    click.option("--package", "package", multiple=True, metavar="NAME",
                 help="Also compare this package's version on every host (and carry it with "
                      "--sync-env); repeatable."),
    click.option("--upload", "upload", multiple=True, metavar="PATH",
                 help="File or directory put on the scheduler's and workers' sys.path on every "
                      "host before they start; repeatable."),
    click.option("--dry-run", is_flag=True,
                 help="Print, per host, the exact remote command, its Python and what it will "
                      "start (--env values masked: NAME=***); start nothing."),
    click.option("--check", is_flag=True,
                 help="Check every host (reachable, login, Python, dask/distributed versions "
                      "beside this machine's) and print a table; start nothing; exit 1 if any "
                      "host fails."),
    click.option("--no-progress", is_flag=True,
                 help="Show no start-up status (per host, live on a terminal, else one line "
                      "on stderr per change)."),
    click.option("--no-restart", is_flag=True,
                 help="Do not restart workers that die. By default each Nanny restarts its "
                      "worker process, and a worker whose Nanny or host agent is lost is "
                      "started again with backoff, up to sshdeploy.worker-restarts (5) times "
                      "within sshdeploy.worker-restart-window (60 s)."),
    click.option("--forward-ports/--no-forward-ports", "forward_ports", default=None,
                 help="Reach the scheduler and dashboard through the scheduler host's SSH "
                      "connection (the banner then shows 127.0.0.1 addresses), or never. "
                      "[default: only when this machine cannot reach the scheduler directly]"),
    click.option("--interface", default=None, metavar="IFACE",
                 help="Network interface the scheduler and workers listen on, on their hosts "
                      "(e.g. eth1 for a private cluster network), as dask scheduler/worker "
                      "--interface."),
    click.option("--tls", is_flag=True,
                 help="Encrypt all traffic with new temporary TLS credentials (tls://); the "
                      "client's files go to a private local directory, deleted on exit, and "
                      "the banner prints the Python line that connects with them."),
    click.option("--min-workers", default=None, type=click.IntRange(min=1), metavar="N",
                 help="Come up when at least N workers started; hosts that failed are listed "
                      "in the banner and left out. [default: every worker must start]"),
    click.option("--spare", "spare", multiple=True, metavar="HOST",
                 help="A spare host (repeatable; or the word spare on a hostfile line): no "
                      "worker at the start, not even connected to; the workers of a host that "
                      "is lost or quarantined move there, and scale/adapt use it last."),
    click.option("--initial-workers", default=None, type=click.IntRange(min=0), metavar="N",
                 help="Start only N workers, filling the hosts in order; the other hosts are "
                      "connected to when scale/adapt place a worker there. [default: every "
                      "slot of every host but the spares]"),
    click.option("--gpus", default=None, type=GPUS, metavar="auto|free|N|0,2",
                 help="One worker per GPU on each worker host, pinned to it by UUID "
                      "(CUDA_VISIBLE_DEVICES), with resources GPU=1 and 1 thread: auto (every "
                      "GPU found; a host without runs --nworkers workers), free (those no other "
                      "user's process runs on), N (the first N) or 0,2 (those, by index or "
                      "UUID); a hostfile's gpus= wins. With --check: lists each host's GPUs."),
    click.option("--cpu-workers", default=None, type=click.IntRange(min=0), metavar="N",
                 help="With --gpus: also N CPU-only workers on each GPU host, on the cores "
                      "the GPU workers leave (resources CPU=<threads>). [default: 0]"),
    click.option("--check-imports", is_flag=True,
                 help="With --check: also import dask and distributed on each host (slower; "
                      "by default their versions are read from package metadata)."),
    click.option("--ask-passphrase", is_flag=True,
                 help="Prompt for the passphrase of the private key(s) (hidden input)."),
    click.option("--log-level", default=None, metavar="LEVEL",
                 type=click.Choice(LOG_LEVELS, case_sensitive=False),
                 help="Show the remote lines at LEVEL and above (DEBUG, INFO, WARNING, ERROR, "
                      "CRITICAL); WARNING and ERROR lines and dask-ssh's own lines always show, "
                      "--log-directory files keep every line. [default: every line]"),
    click.option("-q", "--quiet", is_flag=True, help="Same as --log-level WARNING."),
)


def dask_ssh_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give *command* every option of :data:`OPTIONS`, in their order."""
    for option in reversed(OPTIONS):
        command = option(command)
    return command


# --------------------------------------------------------------------------- parsed options


@dataclass(frozen=True)
class CliOptions:
    """The parsed ``dask-ssh`` options: click's dict of values, typed and frozen.

    The options themselves (names, defaults, types, help) are declared once,
    in :data:`OPTIONS`; build one with ``CliOptions(**ctx.params)`` (a
    missing or unknown name is a TypeError, so the two cannot drift apart).
    Combinations of options that contradict each other are refused here.

    Raises
    ------
    click.UsageError
        For options that contradict each other.

    Examples
    --------
    >>> from sshdeploy.cli import main
    >>> opts = CliOptions(**main.make_context("dask-ssh", ["a", "b", "--nthreads", "4"]).params)
    >>> opts.hostnames, opts.nthreads, opts.memory_limit
    (('a', 'b'), 4, 'auto')
    """

    hostnames: tuple[str, ...]
    scheduler: Host | None
    scheduler_port: int
    nthreads: int
    nworkers: int | None
    nprocs: int | None
    hostfile: str | None
    ssh_username: str | None
    ssh_port: int | None
    ssh_private_key: str | None
    nohost: bool
    log_directory: str | None
    local_directory: str | None
    remote_python: str | None
    memory_limit: str | int | float | None
    worker_port: int | str | None
    nanny_port: int | str | None
    remote_dask_worker: str | None
    dashboard_address: str
    worker_class: str | None
    connect_timeout: float | None
    known_hosts: str | None
    insecure_skip_host_key_check: bool
    jump_host: Host | None
    env: tuple[tuple[str, str], ...]
    setup: tuple[str, ...]
    login_shell: bool
    sync_env: bool
    package: tuple[str, ...]
    upload: tuple[str, ...]
    dry_run: bool
    check: bool
    no_restart: bool
    no_progress: bool
    log_level: str | None
    quiet: bool
    forward_ports: bool | None
    interface: str | None
    tls: bool
    min_workers: int | None
    spare: tuple[str, ...]
    initial_workers: int | None
    gpus: str | None
    cpu_workers: int | None
    check_imports: bool
    ask_passphrase: bool
    #: Not an option: what the ``--ask-passphrase`` prompt read (never shown).
    passphrase: str | None = field(default=None, repr=False, metadata={"option": False})

    def __post_init__(self) -> None:
        if self.dry_run and self.check:
            raise click.UsageError("--dry-run and --check are two separate actions; give one.")
        if self.nworkers is not None and self.nprocs is not None \
                and self.nworkers != self.nprocs:
            raise click.UsageError(
                "--nworkers and its old name --nprocs disagree; give --nworkers."
            )
        if self.known_hosts is not None and self.insecure_skip_host_key_check:
            raise click.UsageError(
                "--known-hosts and --insecure-skip-host-key-check contradict each other."
            )
        if self.quiet and self.log_level is not None and self.log_level.upper() != "WARNING":
            raise click.UsageError("-q means --log-level WARNING; give one of them.")
        if self.check_imports and not self.check:
            raise click.UsageError("--check-imports deepens --check; give it with --check.")
        if self.nohost and self.interface is not None:
            raise click.UsageError(
                "--nohost and --interface both choose the workers' listening address; "
                "give one of them."
            )

    @property
    def show_level(self) -> int:
        """The lowest level of the remote lines printed (``logging.NOTSET``: every line)."""
        if self.quiet:
            return logging.WARNING
        if self.log_level is None:
            return logging.NOTSET
        return int(logging.getLevelName(self.log_level.upper()))

    @classmethod
    def names(cls) -> list[str]:
        """Return the option names, as click names the parameters."""
        return [f.name for f in fields(cls) if f.metadata.get("option", True)]


def resolve_hosts(
    hostnames: Sequence[str] = (),
    hostfile: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> list[Host]:
    """Return the hosts named on the command line, then those of the hostfile.

    With neither, the batch job's node list (``$PBS_NODEFILE``,
    ``$SLURM_JOB_NODELIST``) is used.

    Parameters
    ----------
    hostnames : sequence of str
        Command-line hosts: ``[user@]host[:port]``, ranges like ``node[1-4]``
        and ``key=value`` settings in the same argument are accepted.
    hostfile : path, optional
        A hostfile (see :data:`~sshdeploy.hosts.HOSTFILE_GRAMMAR`).
    environ : Mapping[str, str], optional
        The environment for the batch node list (default: ``os.environ``).

    Returns
    -------
    list of Host
        Possibly empty.

    Raises
    ------
    click.BadParameter
        If a command-line host is invalid.
    HostfileError
        If the hostfile or the batch node list has a bad line.

    Examples
    --------
    >>> [h.as_written() for h in resolve_hosts(["alice@n[1-2]:2222", "n3"], environ={})]
    ['alice@n1:2222', 'alice@n2:2222', 'n3']
    """
    hosts: list[Host] = []
    for text in hostnames:
        try:
            expanded = parse_host_line(text, path="<command line>")
        except HostfileError as err:
            raise click.BadParameter(f"{text!r}: {err.reason}. {err.advice()}",
                                     param_hint="'HOSTNAMES'") from err
        if not expanded:
            raise click.BadParameter(f"{text!r} names no host", param_hint="'HOSTNAMES'")
        hosts.extend(expanded)
    if hostfile is not None:
        hosts.extend(load_hostfile(hostfile))
    if not hosts and hostfile is None:
        hosts = list(hosts_from_environment(environ) or [])
    return hosts


def place_hosts(hosts: Sequence[Host], scheduler: Host | None = None) -> list[Host]:
    """Apply the placement rules; return the list whose first entry runs the scheduler.

    * Without *scheduler*: the first host runs the scheduler, the others run
      workers; a single host runs both.
    * With *scheduler*: it runs the scheduler and every host in *hosts* runs
      workers; with no other host it runs both.

    Parameters
    ----------
    hosts : sequence of Host
        The hosts in order.
    scheduler : Host, optional
        The ``--scheduler`` host.

    Returns
    -------
    list of Host
        ``[scheduler_host, worker_host, ...]``.

    Raises
    ------
    click.UsageError
        If there is no host at all.

    Examples
    --------
    >>> from sshdeploy.hostfile import parse_host
    >>> a, b = parse_host("a"), parse_host("b")
    >>> [h.hostname for h in place_hosts([a, b])]
    ['a', 'b']
    >>> [h.hostname for h in place_hosts([a])]
    ['a', 'a']
    >>> [h.hostname for h in place_hosts([a, b], scheduler=parse_host("s"))]
    ['s', 'a', 'b']
    """
    if scheduler is not None:
        return [scheduler, *(hosts or [scheduler])]
    if not hosts:
        raise click.UsageError(
            "no hosts: name them as arguments (dask-ssh node1 node2), give --hostfile, "
            "or run inside a PBS/Slurm job."
        )
    if len(hosts) == 1:
        return [hosts[0], hosts[0]]
    return list(hosts)


def _worker_class(worker_class: str | None, remote_dask_worker: str | None) -> str:
    """Merge ``--worker-class`` with the classic ``--remote-dask-worker``."""
    if remote_dask_worker is None or remote_dask_worker in CLASSIC_REMOTE_DASK_WORKERS:
        return worker_class or DEFAULT_WORKER_CLASS
    if worker_class is not None and worker_class != remote_dask_worker:
        raise click.UsageError(
            "--remote-dask-worker and --worker-class disagree; give only --worker-class."
        )
    last = remote_dask_worker.rsplit(".", 1)[-1]
    if "." not in remote_dask_worker or not last[:1].isupper():
        raise click.BadParameter(
            f"{remote_dask_worker!r}: dask-ssh starts workers from a class, not a module; "
            "give a class such as distributed.Nanny or distributed.Worker "
            "(preferably as --worker-class)",
            param_hint="'--remote-dask-worker'",
        )
    return remote_dask_worker


def _connect_options(opts: CliOptions) -> dict[str, Any]:
    connect: dict[str, Any] = {}
    if opts.ssh_private_key is not None:
        connect["client_keys"] = [str(opts.ssh_private_key)]
    if opts.known_hosts is not None:
        connect["known_hosts"] = str(opts.known_hosts)
    elif opts.insecure_skip_host_key_check:
        connect["known_hosts"] = None
    if opts.connect_timeout is not None:
        connect["connect_timeout"] = opts.connect_timeout
    if opts.jump_host is not None:
        connect["tunnel"] = opts.jump_host.as_written()
    if opts.passphrase is not None:  # --ask-passphrase: the key files' passphrase
        connect["passphrase"] = opts.passphrase
    return connect


def _worker_options(opts: CliOptions, worker_class: str) -> dict[str, Any]:
    workers: dict[str, Any] = {"n_workers": opts.nworkers or opts.nprocs or 1}
    if opts.nohost:
        workers["host"] = None  # the worker chooses its own listening address
    if opts.interface is not None:
        workers["interface"] = opts.interface
    if opts.nthreads:
        workers["nthreads"] = opts.nthreads
    if opts.memory_limit not in (None, "auto"):  # auto: the remote side decides
        workers["memory_limit"] = opts.memory_limit
    if opts.local_directory:
        workers["local_directory"] = opts.local_directory
    if opts.worker_port:  # 0: random
        workers["worker_port"] = opts.worker_port
    if opts.nanny_port:
        workers["nanny_port"] = opts.nanny_port
    if "nanny_port" in workers and worker_class != DEFAULT_WORKER_CLASS \
            and "Nanny" not in worker_class:
        raise click.UsageError(f"--nanny-port needs a Nanny worker class, not {worker_class}.")
    return workers


def build_cluster_args(
    opts: CliOptions, *, environ: Mapping[str, str] | None = None
) -> ClusterArgs:
    """Turn parsed ``dask-ssh`` options into :class:`ClusterArgs`. Pure: no network.

    Reading the hostfile (and, with no hosts at all, the batch job's node
    list) is the only I/O.

    Parameters
    ----------
    opts : CliOptions
        The parsed options (see the ``dask-ssh --help`` of each).
    environ : Mapping[str, str], optional
        Environment for the batch node list (default ``os.environ``).

    Returns
    -------
    ClusterArgs

    Raises
    ------
    click.UsageError
        For options that do not fit together or no hosts (exit status 2).
    HostfileError
        For a bad hostfile line.

    Examples
    --------
    >>> from sshdeploy.cli import main
    >>> argv = ["a", "b", "--ssh-username", "bob", "--nthreads", "4"]
    >>> args = build_cluster_args(CliOptions(**main.make_context("dask-ssh", argv).params))
    >>> [h.as_written() for h in args.hosts], args.worker_options
    (['bob@a', 'bob@b'], {'n_workers': 1, 'nthreads': 4})
    >>> args.scheduler_options
    {'port': 8786, 'dashboard_address': ':8787'}
    """
    from sshdeploy.bootstrap import join_setup

    hosts = resolve_hosts(opts.hostnames, opts.hostfile, environ=environ)
    placed = [
        h.with_defaults(user=opts.ssh_username, port=opts.ssh_port)
        for h in place_hosts(hosts, opts.scheduler)
    ]
    cls = _worker_class(opts.worker_class, opts.remote_dask_worker)
    scheduler: dict[str, Any] = {"port": opts.scheduler_port,
                                 "dashboard_address": opts.dashboard_address}
    if opts.interface is not None:
        scheduler["interface"] = opts.interface
    return ClusterArgs(  # (nothing given: None, SSHCluster's own "not given")
        hosts=placed,
        connect_options=_connect_options(opts) or None,
        worker_options=_worker_options(opts, cls),
        scheduler_options=scheduler,
        worker_class=cls,
        remote_python=opts.remote_python,
        setup=join_setup(opts.setup),
        env=dict(opts.env) or None,
        restart_workers=not opts.no_restart,
        forward_ports=opts.forward_ports,
        security=True if opts.tls else None,
        min_workers=opts.min_workers,
        login_shell=opts.login_shell,
        environment="sync" if opts.sync_env else None,
        packages=list(opts.package) or None,
        upload=list(opts.upload) or None,
        spares=[h.with_defaults(user=opts.ssh_username, port=opts.ssh_port)
                for text in opts.spare for h in parse_host_line(text, path="--spare")] or None,
        initial_workers=opts.initial_workers,
        gpus=opts.gpus,
        cpu_workers=opts.cpu_workers,
    )
