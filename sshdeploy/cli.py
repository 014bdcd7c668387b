"""The ``dask-ssh`` command: parse, build the cluster, wait, report.

The command is thin on purpose. Turning options into :class:`SSHCluster`
arguments is the pure function :func:`build_cluster_args` (no network, no
processes), so every option can be unit-tested; :func:`serve` runs a cluster
until a signal or the scheduler's death; the printing lives in
:mod:`sshdeploy.display`.

Waiting: the cluster is used synchronously (its event loop runs in a thread of
its own); the main thread waits on a :class:`threading.Event` in steps of
``poll_interval`` seconds, checking after each step whether the scheduler (or
the cluster) has gone to ``closing``/``closed``/``failed``, or whether the
cluster's connection to the scheduler is lost. SIGINT and SIGTERM set the
event; a second one exits at once with status 130 (the remote agents clean up
when their connection drops). Closing is bounded (``close_timeout``).

Exit status: 0 after a signal, 1 for a failure sshdeploy diagnosed
(:class:`~sshdeploy.errors.SSHDeployError`, a failed ``--check``, the
scheduler dying), 2 for a usage error, 130 for a second Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.console import Console

from sshdeploy import display
from sshdeploy.cluster import SSHCluster
from sshdeploy.errors import HostfileError, SSHDeployError
from sshdeploy.hosts import (
    HOSTFILE_GRAMMAR,
    Host,
    hosts_from_environment,
    load_hostfile,
    parse_host,
    parse_host_line,
)

__all__ = [
    "CLASSIC_REMOTE_DASK_WORKERS",
    "DEFAULT_WORKER_CLASS",
    "ClusterArgs",
    "build_cluster_args",
    "main",
    "parse_env_items",
    "place_hosts",
    "resolve_hosts",
    "serve",
]

#: The worker class used unless ``--worker-class`` says otherwise.
DEFAULT_WORKER_CLASS = "distributed.Nanny"
#: Values of the classic ``--remote-dask-worker`` that mean "the default worker".
CLASSIC_REMOTE_DASK_WORKERS = frozenset(
    {"distributed.cli.dask_worker", "distributed.cli.dask_spec"}
)

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PORT_SPEC = re.compile(r"[0-9]+(:[0-9]+)?")
_STOPPED_STATES = frozenset({"closing", "closed", "failed"})

log = logging.getLogger("sshdeploy.cli")


# --------------------------------------------------------------------------- pure part


@dataclass(frozen=True)
class ClusterArgs:
    """Everything ``dask-ssh`` passes to :class:`~sshdeploy.cluster.SSHCluster`.

    Built by :func:`build_cluster_args`; :meth:`kwargs` gives the keyword
    arguments of both ``SSHCluster(...)`` and ``SSHCluster.remote_commands(...)``.

    Parameters
    ----------
    hosts : list of Host
        Placed: ``hosts[0]`` runs the scheduler, every later entry runs workers.
    connect_options : dict
        ``asyncssh.connect`` keywords for every host (``client_keys``,
        ``known_hosts``, ``connect_timeout``, ``tunnel``).
    worker_options : dict
        ``n_workers`` and the worker keywords that were given.
    scheduler_options : dict
        ``port`` and ``dashboard_address``.
    worker_class : str
        Dotted path of the worker class.
    remote_python : str or None
        The remote interpreter, unless a host says otherwise.
    setup : str or None
        Shell command run before the remote Python.
    env : dict
        Environment variables for every remote process.
    restart : bool
        Whether each Nanny restarts its worker process when it dies
        (``--no-restart`` turns it off); passed as ``restart_workers``.

    Examples
    --------
    >>> args = build_cluster_args(["node1", "node2"], nworkers=2)
    >>> [h.display() for h in args.hosts]
    ['node1', 'node2']
    >>> args.worker_options
    {'n_workers': 2}
    >>> sorted(args.kwargs())  # doctest: +NORMALIZE_WHITESPACE
    ['connect_options', 'env', 'hosts', 'remote_python', 'scheduler_options', 'setup',
     'worker_class', 'worker_options']
    """

    hosts: list[Host]
    connect_options: dict[str, Any] = field(default_factory=dict)
    worker_options: dict[str, Any] = field(default_factory=dict)
    scheduler_options: dict[str, Any] = field(default_factory=dict)
    worker_class: str = DEFAULT_WORKER_CLASS
    remote_python: str | None = None
    setup: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    restart: bool = True

    def kwargs(self) -> dict[str, Any]:
        """Return the keyword arguments for ``SSHCluster`` and ``SSHCluster.remote_commands``."""
        return {
            "hosts": list(self.hosts),
            "connect_options": dict(self.connect_options),
            "worker_options": dict(self.worker_options),
            "scheduler_options": dict(self.scheduler_options),
            "worker_class": self.worker_class,
            "remote_python": self.remote_python,
            "setup": self.setup,
            "env": dict(self.env) or None,
            "restart_workers": self.restart,
        }


def parse_env_items(items: Sequence[str]) -> dict[str, str]:
    """Parse repeated ``--env KEY=VALUE`` options.

    Parameters
    ----------
    items : sequence of str
        Each ``KEY=VALUE``; the value may be empty and may contain ``=``.

    Returns
    -------
    dict
        In the given order; a later ``KEY`` wins.

    Raises
    ------
    click.BadParameter
        If an item has no ``=`` or its key is not a shell variable name.

    Examples
    --------
    >>> parse_env_items(["OMP_NUM_THREADS=1", "OPTS=a=b", "EMPTY="])
    {'OMP_NUM_THREADS': '1', 'OPTS': 'a=b', 'EMPTY': ''}
    """
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _ENV_KEY.fullmatch(key):
            raise click.BadParameter(
                f"{item!r} is not KEY=VALUE with KEY a variable name "
                "(letters, digits, '_'; not starting with a digit)",
                param_hint="'--env'",
            )
        env[key] = value
    return env


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
    >>> [h.display() for h in resolve_hosts(["alice@n[1-2]:2222", "n3"], environ={})]
    ['alice@n1:2222', 'alice@n2:2222', 'n3']
    """
    hosts: list[Host] = []
    for text in hostnames:
        try:
            expanded = parse_host_line(text, path="<command line>")
        except HostfileError as err:
            raise click.BadParameter(str(err), param_hint="'HOSTNAMES'") from err
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
    >>> from sshdeploy.hosts import parse_host
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


def _memory_limit(value: str) -> str | int | float | None:
    """Validate ``--memory-limit``; None for ``auto`` (the remote side decides)."""
    text = value.strip()
    if text.lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        fraction = float(text)
    except ValueError:
        pass
    else:
        if not 0 <= fraction <= 1:
            raise click.BadParameter(
                f"{value!r}: a fraction of the host's memory is between 0 and 1",
                param_hint="'--memory-limit'",
            )
        return fraction
    from dask.utils import parse_bytes

    try:
        parse_bytes(text)
    except (ValueError, TypeError) as err:
        raise click.BadParameter(
            f"{value!r} is not a size: use bytes (4000000000), a size (4GB, 500MiB), "
            "a fraction of memory (0.5), 'auto' or 0 for no limit",
            param_hint="'--memory-limit'",
        ) from err
    return text


def _port_spec(value: str | None, name: str) -> int | str | None:
    """Validate ``--worker-port`` / ``--nanny-port``: ``N`` or ``START:END``; 0 means random."""
    if value is None:
        return None
    text = value.strip()
    if not _PORT_SPEC.fullmatch(text):
        raise click.BadParameter(
            f"{value!r} is not a port (N) or a range (START:END)", param_hint=f"'{name}'"
        )
    if ":" in text:
        start, end = (int(p) for p in text.split(":"))
        if not 0 < start <= end <= 65535:
            raise click.BadParameter(f"{value!r}: bad port range", param_hint=f"'{name}'")
        return text
    port = int(text)
    if port > 65535:
        raise click.BadParameter(f"{value!r}: ports go up to 65535", param_hint=f"'{name}'")
    return port or None


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


def _jump_host(text: str | None) -> str | None:
    """Validate ``--jump-host [user@]host[:port]``; return it for asyncssh's ``tunnel=``."""
    if text is None:
        return None
    try:
        host = parse_host(text, path="--jump-host")
    except HostfileError as err:
        raise click.BadParameter(str(err), param_hint="'--jump-host'") from err
    if any(v is not None for v in (host.slots, host.nthreads, host.memory_limit,
                                   host.remote_python)):
        raise click.BadParameter(
            f"{text!r}: a jump host is [user@]host[:port] without settings",
            param_hint="'--jump-host'",
        )
    return host.display()


def build_cluster_args(
    hostnames: Sequence[str] = (),
    *,
    hostfile: str | os.PathLike[str] | None = None,
    scheduler: str | None = None,
    scheduler_port: int = 8786,
    nthreads: int = 0,
    nworkers: int = 1,
    ssh_username: str | None = None,
    ssh_port: int | None = None,
    ssh_private_key: str | None = None,
    nohost: bool = False,
    local_directory: str | None = None,
    remote_python: str | None = None,
    memory_limit: str = "auto",
    worker_port: str | None = None,
    nanny_port: str | None = None,
    remote_dask_worker: str | None = None,
    dashboard_address: str = ":8787",
    worker_class: str | None = None,
    connect_timeout: float | None = None,
    known_hosts: str | None = None,
    insecure_skip_host_key_check: bool = False,
    jump_host: str | None = None,
    env: Sequence[str] | Mapping[str, str] = (),
    setup: str | None = None,
    restart: bool = True,
    environ: Mapping[str, str] | None = None,
) -> ClusterArgs:
    """Turn ``dask-ssh`` options into :class:`ClusterArgs`. Pure: no network, no processes.

    Parameters mirror the command-line options (``--ssh-port`` is
    ``ssh_port``); None means "not given". Reading the hostfile (and, with no
    hosts at all, ``$PBS_NODEFILE``) is the only I/O.

    Parameters
    ----------
    hostnames : sequence of str
        The ``HOSTNAMES`` arguments.
    hostfile : path, optional
    scheduler : str, optional
        ``--scheduler``: that host runs the scheduler and every listed host
        runs workers (see :func:`place_hosts`).
    scheduler_port : int
        0 picks a random port.
    nthreads : int
        Threads per worker; 0 lets each host decide (cores / workers).
    nworkers : int
        Worker processes per host, unless a host's ``slots=`` says otherwise.
    ssh_username, ssh_port : optional
        Defaults for hosts that name no user / port (else ``~/.ssh/config``).
    ssh_private_key : str, optional
        Becomes ``client_keys=[path]``.
    nohost : bool
        Do not tell workers which address to listen on (classic meaning):
        they pick their own instead of the address the controller reached
        their host by.
    local_directory : str, optional
        Directory on each worker host for worker files (checked there, not here).
    remote_python : str, optional
    memory_limit : str
        ``auto`` (left to the remote side), bytes, a size, a fraction, or 0.
    worker_port, nanny_port : str, optional
        ``N`` or ``START:END``; 0 means random.
    remote_dask_worker : str, optional
        Classic option; its classic values mean the default worker class,
        otherwise a worker class path.
    dashboard_address : str
        The scheduler's dashboard address.
    worker_class : str, optional
        Dotted path; default ``distributed.Nanny``.
    connect_timeout : float, optional
    known_hosts : str, optional
        A known_hosts file to check host keys against.
    insecure_skip_host_key_check : bool
        ``known_hosts=None``: accept any host key.
    jump_host : str, optional
        ``[user@]host[:port]`` to tunnel through (asyncssh ``tunnel=``).
    env : sequence of ``KEY=VALUE`` or mapping
    setup : str, optional
    restart : bool
    environ : Mapping[str, str], optional
        Environment for the batch node list (default ``os.environ``).

    Returns
    -------
    ClusterArgs

    Raises
    ------
    click.UsageError
        For a bad option or no hosts (exit status 2).
    HostfileError
        For a bad hostfile line (exit status 1).

    Examples
    --------
    >>> args = build_cluster_args(["a", "b"], ssh_username="bob", nthreads=4)
    >>> [h.display() for h in args.hosts], args.worker_options
    (['bob@a', 'bob@b'], {'n_workers': 1, 'nthreads': 4})
    >>> args.scheduler_options
    {'port': 8786, 'dashboard_address': ':8787'}
    """
    if known_hosts is not None and insecure_skip_host_key_check:
        raise click.UsageError(
            "--known-hosts and --insecure-skip-host-key-check contradict each other."
        )

    hosts = resolve_hosts(hostnames, hostfile, environ=environ)
    scheduler_host: Host | None = None
    if scheduler is not None:
        try:
            scheduler_host = parse_host(scheduler, path="--scheduler")
        except HostfileError as err:
            raise click.BadParameter(str(err), param_hint="'--scheduler'") from err
    placed = [
        h.with_defaults(user=ssh_username, port=ssh_port)
        for h in place_hosts(hosts, scheduler_host)
    ]

    connect: dict[str, Any] = {}
    if ssh_private_key is not None:
        connect["client_keys"] = [str(ssh_private_key)]
    if known_hosts is not None:
        connect["known_hosts"] = str(known_hosts)
    elif insecure_skip_host_key_check:
        connect["known_hosts"] = None
    if connect_timeout is not None:
        connect["connect_timeout"] = connect_timeout
    tunnel = _jump_host(jump_host)
    if tunnel is not None:
        connect["tunnel"] = tunnel

    workers: dict[str, Any] = {"n_workers": nworkers}
    if nohost:
        workers["host"] = None  # the worker chooses its own listening address
    if nthreads:
        workers["nthreads"] = nthreads
    limit = _memory_limit(memory_limit)
    if limit is not None:
        workers["memory_limit"] = limit
    if local_directory:
        workers["local_directory"] = local_directory
    for key, value, name in (
        ("worker_port", worker_port, "--worker-port"),
        ("nanny_port", nanny_port, "--nanny-port"),
    ):
        port = _port_spec(value, name)
        if port is not None:
            workers[key] = port

    cls = _worker_class(worker_class, remote_dask_worker)
    if "nanny_port" in workers and cls != DEFAULT_WORKER_CLASS and "Nanny" not in cls:
        raise click.UsageError(f"--nanny-port needs a Nanny worker class, not {cls}.")

    return ClusterArgs(
        hosts=placed,
        connect_options=connect,
        worker_options=workers,
        scheduler_options={"port": scheduler_port, "dashboard_address": dashboard_address},
        worker_class=cls,
        remote_python=remote_python,
        setup=setup or None,
        env=dict(env) if isinstance(env, Mapping) else parse_env_items(env),
        restart=restart,
    )


# --------------------------------------------------------------------------- running


def check_hosts(
    hosts: Sequence[Host],
    connect_options: Mapping[str, Any] | None = None,
    remote_python: str | None = None,
    *,
    setup: str | None = None,
) -> list[Any]:
    """Run the ``--check`` preflight: :func:`sshdeploy.preflight.check_hosts`.

    Imported when called, so the rest of the command does not depend on it.

    Parameters
    ----------
    hosts : sequence of Host
    connect_options : Mapping, optional
    remote_python : str, optional
    setup : str, optional

    Returns
    -------
    list of HostCheck
    """
    from sshdeploy.preflight import check_hosts as run_checks

    return list(run_checks(hosts, connect_options, remote_python, setup=setup))


class _Stop:
    """What SIGINT / SIGTERM do: the first sets :attr:`event`, the second exits at once."""

    def __init__(self, console: Console, exit_now: Callable[[int], Any] = os._exit) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._console = console
        self._exit_now = exit_now

    def __call__(self, signum: int, frame: FrameType | None = None) -> None:
        if self.event.is_set():
            self._console.print("dask-ssh: second interrupt, exiting now")
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # pragma: no cover - closed stream
                    pass
            self._exit_now(130)
            return
        self.signum = signum
        self.event.set()
        self._console.print(
            f"dask-ssh: {signal.Signals(signum).name} received, stopping the cluster "
            "(again to exit at once)"
        )


@contextmanager
def _signal_handlers(stop: _Stop) -> Iterator[None]:
    """Route SIGINT and SIGTERM to *stop* while inside; restore the old handlers after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def _remote_logging(
    console: Console, err_console: Console, log_directory: str | None
) -> Iterator[display.RemoteLogHandler]:
    """Print remote lines (logger ``sshdeploy.remote``) and sshdeploy's warnings while inside."""
    remote = logging.getLogger(display.REMOTE_LOGGER)
    own = logging.getLogger("sshdeploy")
    warnings = display.ControllerLogHandler(err_console)
    handler = display.RemoteLogHandler(console, log_directory, others=warnings)
    saved = (remote.level, remote.propagate, own.level, own.propagate)
    remote.addHandler(handler)
    remote.setLevel(logging.DEBUG)
    remote.propagate = False
    own.addHandler(warnings)
    if own.getEffectiveLevel() > logging.WARNING:
        own.setLevel(logging.WARNING)
    own.propagate = False
    try:
        yield handler
    finally:
        remote.removeHandler(handler)
        own.removeHandler(warnings)
        remote.level, remote.propagate, own.level, own.propagate = saved
        handler.close()


def _status_name(obj: Any) -> str | None:
    status = getattr(obj, "status", None)
    return getattr(status, "name", None) or (status if isinstance(status, str) else None)


def _scheduler_gone(cluster: Any) -> bool:
    """Whether the scheduler (or the whole cluster) has closed or failed on its own.

    Looks at ``cluster.scheduler.status`` and ``cluster.status``, then at the
    task in which distributed's ``Cluster`` listens to the scheduler for worker
    updates: that task ends when the connection to the scheduler is lost.
    """
    if (
        _status_name(getattr(cluster, "scheduler", None)) in _STOPPED_STATES
        or _status_name(cluster) in _STOPPED_STATES
    ):
        return True
    watch = getattr(cluster, "_watch_worker_status_task", None)
    done = getattr(watch, "done", None)
    return bool(done()) if callable(done) else False


def _workers_by_host(cluster: Any) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, worker in dict(getattr(cluster, "workers", {}) or {}).items():
        host: Any = getattr(worker, "host", None)
        host_text = host.display() if isinstance(host, Host) else str(host or "?")
        grouped.setdefault(host_text, []).append(str(name))
    return {host: sorted(names, key=_name_order) for host, names in grouped.items()}


def _name_order(name: str) -> tuple[str, int, str]:
    """Sort ``node2-10`` after ``node2-9``."""
    stem, _, index = name.rpartition("-")
    return (stem, int(index), "") if index.isdigit() else (name, -1, name)


def _versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for package in ("sshdeploy", "distributed"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:  # pragma: no cover - not installed
            pass
    return found


def serve(
    args: ClusterArgs,
    *,
    console: Console,
    err_console: Console,
    log_directory: str | None = None,
    cluster_class: Callable[..., Any] | None = None,
    stop: _Stop | None = None,
    poll_interval: float = 0.2,
    close_timeout: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run the cluster until SIGINT/SIGTERM or the scheduler's end; return the exit status.

    Parameters
    ----------
    args : ClusterArgs
    console, err_console : rich.console.Console
        Where the banner and remote lines / messages and warnings go.
    log_directory : str, optional
        Controller directory for one log file per label.
    cluster_class : callable, optional
        Default :class:`~sshdeploy.cluster.SSHCluster`; tests pass a fake.
    stop : _Stop, optional
        The signal handler; tests pass one and set its event.
    poll_interval : float
        Seconds between checks of the scheduler's status.
    close_timeout : float
        Seconds the cluster is given to close; after that ``dask-ssh`` gives
        up and exits 1 (the remote agents stop when their connection drops).
    clock : callable
        For the summary's duration.

    Returns
    -------
    int
        0 when stopped by a signal, 1 when the scheduler ended on its own or
        the cluster did not close in time.

    Raises
    ------
    SSHDeployError
        If the cluster cannot start.
    """
    factory = SSHCluster if cluster_class is None else cluster_class
    stop = stop or _Stop(err_console)
    where = args.hosts[0].display()
    with _remote_logging(console, err_console, log_directory) as remote_log, \
            _signal_handlers(stop):
        cluster = factory(**args.kwargs())
        try:
            by_host = _workers_by_host(cluster)
            display.print_banner(
                console,
                scheduler_address=str(getattr(cluster, "scheduler_address", "?")),
                dashboard_link=getattr(cluster, "dashboard_link", None),
                scheduler_host=where,
                workers_by_host=by_host,
                versions=_versions(),
            )
            scheduler_died = False
            while not stop.event.wait(poll_interval):
                if _scheduler_gone(cluster):
                    scheduler_died = True
                    break
            by_host = _workers_by_host(cluster) or by_host
        except BaseException:
            _close(cluster, close_timeout)
            raise
        if scheduler_died:
            err_console.print(f"dask-ssh: the scheduler on {where} stopped; closing the workers.")
            tail = remote_log.tail("scheduler")
            if tail:
                err_console.print("last scheduler output:")
                for line in tail:
                    err_console.print("  " + line)
        started = clock()
        error = _close(cluster, close_timeout)
        elapsed = clock() - started
    if error is not None:
        err_console.print(
            f"dask-ssh: the cluster did not stop cleanly within {close_timeout:.0f} s "
            f"({error}); its remote processes stop by themselves once their SSH "
            "connection is gone."
        )
        return 1
    if scheduler_died:
        return 1
    n_workers = sum(len(v) for v in by_host.values())
    console.print(
        f"dask-ssh: stopped {n_workers} worker{'s' if n_workers != 1 else ''} on "
        f"{len(by_host)} host{'s' if len(by_host) != 1 else ''} and the scheduler "
        f"in {elapsed:.1f} s"
    )
    return 0


def _close(cluster: Any, timeout: float) -> str | None:
    """Close *cluster* within *timeout* seconds; return what went wrong, or None."""
    try:
        cluster.close(timeout=timeout)
    except Exception as err:  # a dead scheduler, a lost host, the deadline
        return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return None


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
  Each worker host runs --nworkers worker processes (a hostfile's slots=N wins).

\b
SSH settings come from ~/.ssh like ssh does: ~/.ssh/config, known_hosts, the
agent and ~/.ssh/id_* keys; the options below override them.
Connect a client to tcp://<scheduler host>:<--scheduler-port>. Ctrl-C (or
SIGTERM) stops everything on every host; a second Ctrl-C exits at once.
"""


def _epilog() -> str:
    grammar = HOSTFILE_GRAMMAR.strip("\n")
    return "\b\n" + grammar.replace("\n\n", "\n\n\b\n") + (
        "\n\n\b\nExamples:\n"
        "  dask-ssh node1 node2 node3\n"
        "  dask-ssh --hostfile hosts.txt --nworkers 4 --nthreads 2\n"
        "  dask-ssh --check --hostfile hosts.txt\n"
        "  dask-ssh --dry-run alice@head:2222 'gpu[01-04] slots=2'\n"
    )


def _deprecated_nprocs(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None:
        click.echo(
            "dask-ssh: --nprocs is deprecated and will be removed; use --nworkers.", err=True
        )
    return value


def _version_message() -> str:
    found = _versions()
    return (
        f"%(prog)s {found.get('sshdeploy', '?')} (distributed {found.get('distributed', '?')}, "
        f"Python {sys.version.split()[0]})"
    )


@click.command(
    name="dask-ssh",
    help=_HELP,
    epilog=_epilog(),
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("hostnames", nargs=-1, type=str)
@click.option("--scheduler", default=None, metavar="[USER@]HOST[:PORT]",
              help="Host that runs the scheduler; every listed host then runs workers. "
                   "[default: the first host]")
@click.option("--scheduler-port", default=8786, show_default=True,
              type=click.IntRange(0, 65535), help="Scheduler port (0: random).")
@click.option("--nthreads", default=0, show_default=True, type=click.IntRange(min=0),
              help="Threads per worker process; 0: the host's cores / its worker processes.")
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
@click.option("--memory-limit", default="auto", show_default=True,
              help="Memory per worker process: bytes, a size (4GB, 500MiB), a fraction of "
                   "the host's memory (0.5), 'auto', or 0 for no limit.")
@click.option("--worker-port", default=None, metavar="PORT|START:END",
              help="Worker port or range. [default: random]")
@click.option("--nanny-port", default=None, metavar="PORT|START:END",
              help="Nanny port or range. [default: random]")
@click.option("--remote-dask-worker", default="distributed.cli.dask_worker", show_default=True,
              help="Classic option. Its classic values (distributed.cli.dask_worker, "
                   "distributed.cli.dask_spec) mean the default worker class; another "
                   "value is taken as a worker class, like --worker-class.")
@click.option("--dashboard-address", default=":8787", show_default=True,
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
@click.option("--jump-host", default=None, metavar="[USER@]HOST[:PORT]",
              help="Reach every host through this SSH jump host (like ssh -J).")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE",
              help="Environment variable for every remote process; repeatable.")
@click.option("--setup", default=None, metavar="COMMAND",
              help="Shell command run on each host before the remote Python, e.g. "
                   "'conda activate x' or 'module load y'.")
@click.option("--dry-run", is_flag=True,
              help="Print, per host, the exact remote command, its Python and what it will "
                   "start; start nothing.")
@click.option("--check", is_flag=True,
              help="Check every host (reachable, login, Python, dask/distributed versions "
                   "beside this machine's) and print a table; start nothing; exit 1 if any "
                   "host fails.")
@click.option("--no-restart", is_flag=True,
              help="Do not restart workers that die. By default each Nanny restarts its "
                   "worker process, and a worker whose Nanny or host agent is lost is "
                   "started again up to sshdeploy.worker-restarts (3) times, with backoff.")
@click.version_option(message=_version_message(), package_name="sshdeploy")
@click.pass_context
def main(ctx: click.Context, **options: Any) -> None:
    """Entry point of ``dask-ssh`` (see the module docstring for exit statuses).

    Call ``main(argv, standalone_mode=False)`` to get the exit status back
    instead of :func:`sys.exit`.
    """
    console = display.make_console(sys.stdout)
    err_console = display.make_console(sys.stderr)
    try:
        code = _run(options, console, err_console)
    except SSHDeployError as err:
        err_console.print(f"Error: {err}")
        code = 1
    except KeyboardInterrupt:
        err_console.print("dask-ssh: interrupted")
        code = 130
    ctx.exit(code)


def _run(options: dict[str, Any], console: Console, err_console: Console) -> int:
    """Do what the options ask; return the exit status."""
    if options["dry_run"] and options["check"]:
        raise click.UsageError("--dry-run and --check are two separate actions; give one.")
    nworkers, nprocs = options["nworkers"], options["nprocs"]
    if nworkers is not None and nprocs is not None and nworkers != nprocs:
        raise click.UsageError("--nworkers and its old name --nprocs disagree; give --nworkers.")
    if options["insecure_skip_host_key_check"]:
        err_console.print(
            "WARNING: --insecure-skip-host-key-check: host keys are not checked; a "
            "man-in-the-middle could impersonate the hosts and see everything sent."
        )
    args = build_cluster_args(
        options["hostnames"],
        hostfile=options["hostfile"],
        scheduler=options["scheduler"],
        scheduler_port=options["scheduler_port"],
        nthreads=options["nthreads"],
        nworkers=nworkers or nprocs or 1,
        ssh_username=options["ssh_username"],
        ssh_port=options["ssh_port"],
        ssh_private_key=options["ssh_private_key"],
        nohost=options["nohost"],
        local_directory=options["local_directory"],
        remote_python=options["remote_python"],
        memory_limit=options["memory_limit"],
        worker_port=options["worker_port"],
        nanny_port=options["nanny_port"],
        remote_dask_worker=options["remote_dask_worker"],
        dashboard_address=options["dashboard_address"],
        worker_class=options["worker_class"],
        connect_timeout=options["connect_timeout"],
        known_hosts=options["known_hosts"],
        insecure_skip_host_key_check=options["insecure_skip_host_key_check"],
        jump_host=options["jump_host"],
        env=options["env"],
        setup=options["setup"],
        restart=not options["no_restart"],
    )
    if options["dry_run"]:
        plans = SSHCluster.remote_commands(**args.kwargs())
        display.print_plan(console, plans)
        return 0
    if options["check"]:
        unique = list({h.display(): h for h in args.hosts}.values())
        checks = check_hosts(
            unique,
            connect_options=args.connect_options,
            remote_python=args.remote_python,
            setup=args.setup,
        )
        display.print_check_table(console, checks)
        return 0 if all(c.ok for c in checks) else 1
    log_directory = options["log_directory"]
    if log_directory is not None:
        Path(log_directory).mkdir(parents=True, exist_ok=True)
    return serve(args, console=console, err_console=err_console, log_directory=log_directory)


if __name__ == "__main__":  # pragma: no cover
    main()
