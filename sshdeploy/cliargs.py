"""The pure part of ``dask-ssh``: command-line options to :class:`SSHCluster` arguments.

:func:`build_cluster_args` turns the options into :class:`ClusterArgs`, the
keyword arguments of :class:`~sshdeploy.cluster.SSHCluster` and of
``SSHCluster.remote_commands``.  Its pieces are here too: which hosts
(:func:`resolve_hosts`), which host runs what (:func:`place_hosts`),
``--env`` (:func:`parse_env_items`) and the validators of the other options.
A bad option is a :class:`click.UsageError` or :class:`click.BadParameter`
(exit status 2).

No network, no processes: reading the hostfile (and, with no hosts at all,
the batch job's node list) is the only I/O, so every option can be
unit-tested.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from sshdeploy.errors import HostfileError
from sshdeploy.hosts import Host, load_hostfile, parse_host, parse_host_line
from sshdeploy.nodelists import hosts_from_environment

__all__ = [
    "CLASSIC_REMOTE_DASK_WORKERS",
    "DEFAULT_WORKER_CLASS",
    "ClusterArgs",
    "build_cluster_args",
    "parse_env_items",
    "place_hosts",
    "resolve_hosts",
]

#: The worker class used unless ``--worker-class`` says otherwise.
DEFAULT_WORKER_CLASS = "distributed.Nanny"
#: Values of the classic ``--remote-dask-worker`` that mean "the default worker".
CLASSIC_REMOTE_DASK_WORKERS = frozenset(
    {"distributed.cli.dask_worker", "distributed.cli.dask_spec"}
)

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PORT_SPEC = re.compile(r"[0-9]+(:[0-9]+)?")


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
    ['connect_options', 'env', 'hosts', 'remote_python', 'restart_workers',
     'scheduler_options', 'setup', 'worker_class', 'worker_options']
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
