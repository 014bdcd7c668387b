"""The whole plan of a cluster, built once from SSHCluster's arguments: pure, no network.

:func:`plan_cluster` is the one place that turns the arguments of
:class:`sshdeploy.SSHCluster` into what will run where. The cluster builds
its specs from it, and the dry run (``SSHCluster.remote_commands``,
``dask-ssh --dry-run``) renders the very same plan, as dask-jobqueue's
``job_script()`` renders the job it submits.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from distributed.security import Security

from .arguments import ClusterArgs, check_min_workers, check_port
from .bootstrap import Launch, build_command, cluster_mark, join_setup
from .defaults import CLASSIC_WORKER_MODULES, DEFAULT_DASHBOARD
from .env.stageplan import StagePlan, plan_stage
from .errors import ConfigError
from .gpus import cuda_options, describe_request
from .hosts import check_gpus, check_memory_limit
from .named.policy import DEFAULT_DEATH_TIMEOUT, KeepPolicy, check_name, parse_duration
from .placement import HostPlan, Placement, place, with_spares
from .remote.agent.servers import describe_share
from .roles import Role

__all__ = ["ClusterPlan", "Launch", "RemotePlan", "plan_cluster", "resolve_advertised"]
from .settings import MIN_POLICY_DURATION, Settings


class Advertised:
    """Stands for "the address the controller reached this host at" until it is known.

    The plan (and so the dry run) shows it; a process replaces it by its
    connection's peer address when it starts (:func:`resolve_advertised`).
    """

    def __repr__(self) -> str:
        return "<address reached over SSH>"

    __str__ = __repr__


#: The one instance of :class:`Advertised`.
ADVERTISED = Advertised()


def advertise(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Plan the listening address: by default the one the controller reaches the host at.

    ``host=None`` (``dask-ssh --nohost``) lets the process choose its own;
    an explicit ``host`` or ``interface`` is kept.

    Examples
    --------
    >>> advertise({"nthreads": 2})
    {'nthreads': 2, 'host': <address reached over SSH>}
    >>> advertise({"host": None}), advertise({"interface": "eth1"})
    ({}, {'interface': 'eth1'})
    """
    out = dict(kwargs)
    if "host" in out and out["host"] is None:
        del out["host"]
    elif not out.get("host") and not out.get("interface"):
        out["host"] = ADVERTISED
    return out


def resolve_advertised(kwargs: Mapping[str, Any], address: str | None) -> dict[str, Any]:
    """Replace :data:`ADVERTISED` by the address the host was reached at.

    Without one (a ProxyCommand), the process chooses its own address:
    the name the controller used may not resolve on the hosts.

    Examples
    --------
    >>> resolve_advertised(advertise({}), "10.0.0.2")
    {'host': '10.0.0.2'}
    """
    out = dict(kwargs)
    if out.get("host") is ADVERTISED:
        if address:
            out["host"] = address
        else:
            del out["host"]
    return out


@dataclass(frozen=True)
class RemotePlan:
    """What one host will run (``dask-ssh --dry-run``, :meth:`SSHCluster.remote_commands`).

    Attributes
    ----------
    host : str
        ``user@host:port``.
    role : {"scheduler", "worker"}
    names : list of str
        ``["scheduler"]`` or the worker names.
    command : str
        The exact remote shell command (the agent itself comes on stdin).
    python : str
        The remote interpreter.
    options : dict
        The keywords the scheduler or each worker starts with.
    settings : dict
        The ``sshdeploy.*`` settings in force.
    share : str
        Workers only: what each worker gets of the host's cores and memory
        (:func:`sshdeploy.remote.agent.describe_share`).
    spare : bool
        Workers only: the host is a spare (no worker at the start).
    gpus : str
        Workers only, on a host with a GPU request: its GPU workers (once the
        host was probed), else the rule that will place them.
    """

    host: str
    role: Role
    names: list[str]
    command: str
    python: str
    options: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    share: str = ""
    spare: bool = False
    gpus: str = ""


@dataclass(frozen=True)
class ClusterPlan:
    """Everything :class:`sshdeploy.SSHCluster` will start, resolved once.

    Attributes
    ----------
    placement : Placement
        Hosts, slots, worker names and their keywords.
    scheduler_options : dict
        The scheduler's keywords, with sshdeploy's defaults filled in.
    worker_class, scheduler_class : str, str or None
        Import paths.
    setup : str or None
        Shell commands run before the remote Python.
    env : dict
        Environment of every remote process.
    restart_workers : bool
        Whether lost workers are started again.
    settings : Settings
        The ``sshdeploy.*`` settings in force.
    security : Security or None
        TLS credentials of every process (and of the controller's client).
    forward_ports : bool or None
        Reach the scheduler and dashboard through SSH: always, never, or
        (None) when the controller cannot reach them directly.
    min_workers : int or None
        Come up with the workers that started if at least this many did.
    stage : StagePlan or None
        The version gate, synced environment and uploads done before the start.
    user_setup : str or None
        The user's setup alone (``setup`` adds the stage's PYTHONPATH line).
    login_shell : bool
        Run the remote commands in the user's login shell.
    keep : KeepPolicy or None
        A named cluster that outlives its controller: how its agents live on.
    """

    placement: Placement
    scheduler_options: dict[str, Any]
    worker_class: str
    scheduler_class: str | None
    setup: str | None
    env: dict[str, str]
    restart_workers: bool
    settings: Settings
    security: Security | None = None
    forward_ports: bool | None = None
    min_workers: int | None = None
    stage: StagePlan | None = None
    user_setup: str | None = None
    login_shell: bool = False
    keep: KeepPolicy | None = None

    def launch(self, host: HostPlan) -> Launch:
        """Return how agents start on *host*."""
        return Launch(python=host.python, setup=self.setup, env=self.env,
                      inherit_config=self.settings.inherit_config,
                      login_shell=self.login_shell,
                      keep=self.keep.spec() if self.keep is not None else None,
                      mp_method="spawn" if host.gpus is not None else None)

    def worker_options(
        self, host: HostPlan, kwargs: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Return the keywords a worker on *host* starts with (its template by default)."""
        return _secured(advertise(host.template if kwargs is None else kwargs), self.security)

    def remote_plans(self, as_connected: Any = None) -> list[RemotePlan]:
        """Return what each host will run (linear in hosts + workers).

        Parameters
        ----------
        as_connected : callable, optional
            ``Host -> "user@host:port"`` as the connection will be made
            (:meth:`~sshdeploy.ssh.pool.HostPool.as_connected`; default: the host
            as written).
        """
        show = as_connected or (lambda h: h.as_written())
        mark = cluster_mark(self.keep.spec() if self.keep is not None else None)
        p = self.placement
        settings = self.settings.as_dict()
        names: dict[Any, list[str]] = {}
        for w in p.workers:
            names.setdefault(w.host.key, []).append(w.name)
        env = {"env": dict(self.env)} if self.env else {}
        if self.stage is not None:
            env.update(self.stage.describe())
        out = [RemotePlan(
            host=show(p.scheduler.host), role="scheduler", names=["scheduler"],
            command=build_command(p.scheduler.python, self.setup, self.login_shell, mark),
            python=p.scheduler.python,
            options={**self.scheduler_options, **env}, settings=settings,
        )]
        for key, hp in p.worker_hosts.items():
            if key not in names and not hp.slots:
                continue  # the scheduler's host, kept only for `scale`
            later = [f"no worker at the start; {hp.slots} slot(s) for scale/adapt"
                     + (" and for the workers of a lost host" if key in p.spares else "")]
            shown, gpus = names.get(key, later), ""
            share = describe_share(hp.template, hp.slots)
            if hp.gpu_slots:
                gpus = "; ".join(f"{s.name}: {s.about}" for s in hp.gpu_slots)
            elif hp.gpus is not None:  # the workers are known once the host is probed
                shown = [f"{hp.host.hostname}-gpu<index> per GPU"]
                gpus = describe_request(hp, cuda_options(p.worker_options))
                memory = hp.template.get("memory_limit")
                share = "memory_limit = " + (f"{memory} (given)" if memory not in (
                    None, "auto") else "the host's memory / its workers (GPU and CPU-only)")
            out.append(RemotePlan(
                host=show(hp.host), role="worker", spare=key in p.spares,
                names=shown,
                command=build_command(hp.python, self.setup, self.login_shell, mark),
                python=hp.python,
                options={"worker_class": self.worker_class, **self.worker_options(hp), **env},
                settings=settings, share=share, gpus=gpus,
            ))
        return out


def plan_cluster(args: ClusterArgs, settings: Settings | None = None) -> ClusterPlan:
    """Turn :class:`sshdeploy.SSHCluster`'s arguments into its plan.

    ``spares`` are hosts kept for ``scale``/``adapt`` and for the workers of
    a lost host; ``initial_workers`` starts fewer workers than the slots (the
    other hosts are brought up when a worker is placed there).

    ``environment``, ``packages`` and ``upload`` plan the stage before the
    start (:mod:`sshdeploy.env.stageplan`); ``setup`` may be a list of commands.

    ``name`` with ``shutdown_on_close=False`` makes a named cluster that
    outlives its controller (:class:`~sshdeploy.named.policy.KeepPolicy`,
    with ``idle_timeout`` and ``max_lifetime``, else the
    ``sshdeploy.idle-timeout`` / ``max-lifetime`` settings).

    ``security=True`` makes new TLS credentials (a temporary CA and
    certificate, in memory): every process then listens on ``tls://`` and
    receives them pickled on its agent's stdin, never on a command line.

    Parameters
    ----------
    args : ClusterArgs
        SSHCluster's keywords (``progress`` aside, which plans nothing).
    settings : Settings, optional
        The ``sshdeploy.*`` settings (default: resolved from dask.config now).

    Raises
    ------
    ConfigError
        For arguments that cannot work (no hosts, per-host lists of the
        wrong length, an unknown ``worker_module``...).

    Examples
    --------
    >>> p = plan_cluster(ClusterArgs(["a", "b"], worker_options={"n_workers": 2}))
    >>> [w.name for w in p.placement.workers], p.scheduler_options["dashboard_address"]
    (['b-0', 'b-1'], ':8787')
    """
    args.check()
    worker_class = args.worker_class
    if args.worker_module is not None:
        worker_class = _from_worker_module(args.worker_module, worker_class)
    resolved = settings or Settings.resolve(inherit_config=args.inherit_config)
    placement = place(with_spares(args.hosts, args.spares, args.remote_python,
                                  args.connect_options),
                      args.worker_options, args.remote_python, args.connect_options,
                      args.initial_workers, check_gpus(args.gpus), args.cpu_workers)
    if placement.gpu_hosts():  # (min_workers: once they are probed, see gpus.place_gpus)
        _check_gpu_worker_class(worker_class)
    elif args.cpu_workers:
        raise ConfigError("cpu_workers", "adds CPU-only workers beside the GPU workers of a GPU "
                          "host, and no host is asked for GPUs", remedy="Give gpus= too "
                          "(dask-ssh --gpus, or a hostfile's gpus=), or n_workers for CPU hosts.")
    else:
        _without_gpus(worker_class, args.worker_options or {})
        check_min_workers(args.min_workers, len(placement.workers))
    security = args.security
    creds: Security | None
    if security is True:
        creds = Security.temporary()
    elif security is None or security is False:
        creds = None
    elif isinstance(security, Security):
        creds = security
    else:
        raise ConfigError("security", f"must be True or a distributed.Security, got {security!r}")
    sched = _secured(advertise(args.scheduler_options or {}), creds)
    sched.setdefault("dashboard_address", DEFAULT_DASHBOARD)
    check_options(placement, sched)
    user_setup = join_setup(args.setup)
    keep = _keep_policy(args.name, args.shutdown_on_close, args.idle_timeout, args.max_lifetime,
                        resolved, (args.worker_options or {}).get("death_timeout"))
    # A named cluster's uploads are found again by its name (attach, down, from_name).
    stage = plan_stage(args.environment, args.packages, args.upload, resolved,
                       owner=f"named-{keep.name}" if keep is not None else None)
    return ClusterPlan(
        placement=placement,
        scheduler_options=sched,
        worker_class=worker_class,
        scheduler_class=args.scheduler_class,
        setup=join_setup([user_setup or "", *stage.setup_lines()]),
        env={str(k): str(v) for k, v in (args.env or {}).items()},
        restart_workers=args.restart_workers,
        settings=resolved,
        security=creds,
        forward_ports=args.forward_ports,
        min_workers=args.min_workers,
        stage=stage,
        user_setup=user_setup,
        login_shell=bool(args.login_shell),
        keep=keep,
    )


def _keep_policy(name: str | None, shutdown_on_close: bool, idle_timeout: Any,
                 max_lifetime: Any, settings: Settings, death_timeout: Any = None
                 ) -> KeepPolicy | None:
    """The policy of a named cluster that outlives its controller, or None for any other.

    Its workers stop when the scheduler stays unreachable for their
    ``death_timeout`` (``worker_options``), :data:`DEFAULT_DEATH_TIMEOUT` by default.
    """
    if shutdown_on_close is not False:
        for key, value in (("idle_timeout", idle_timeout), ("max_lifetime", max_lifetime)):
            if value is not None:
                raise ConfigError(key, "applies to a named cluster that outlives its "
                                  "controller", remedy="Also give name='NAME' and "
                                  "shutdown_on_close=False (dask-ssh up --name NAME).")
        return None
    if name is None:
        raise ConfigError("name", "a cluster that outlives its controller "
                          "(shutdown_on_close=False) needs a name, to be found again",
                          remedy="Give name='NAME' (a short identifier).")
    return KeepPolicy(
        name=check_name(name),
        idle_timeout=parse_duration(idle_timeout, "idle_timeout", MIN_POLICY_DURATION)
        if idle_timeout is not None else settings.idle_timeout,
        max_lifetime=parse_duration(max_lifetime, "max_lifetime", MIN_POLICY_DURATION)
        if max_lifetime is not None else settings.max_lifetime,
        death_timeout=parse_duration(death_timeout, "worker_options['death_timeout']")
        or DEFAULT_DEATH_TIMEOUT,
    )


def check_options(placement: Placement, scheduler_options: Mapping[str, Any]) -> None:
    """Refuse up front the options that can only fail remotely.

    Raises
    ------
    ConfigError
        ``nthreads`` that is not a positive whole number, a fixed worker or
        nanny port shared by several workers of one host, an unparsable
        dashboard address.
    """
    for hp in placement.worker_hosts.values():
        kw = hp.template
        if "memory_limit" in kw:
            try:
                check_memory_limit(kw["memory_limit"])
            except ValueError as exc:
                raise ConfigError(f"worker_options['memory_limit'] for {hp.host.as_written()}",
                                  str(exc)) from None
        n = kw.get("nthreads")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ConfigError(f"worker_options['nthreads'] for {hp.host.as_written()}",
                              f"must be a whole number >= 1 (0: the host's cores), got {n!r}")
        for key in ("worker_port", "nanny_port"):
            port = kw.get(key)
            if hp.slots > 1 and _fixed_port(port):
                raise ConfigError(
                    f"worker_options[{key!r}]",
                    f"the single port {port} cannot serve the {hp.slots} workers of "
                    f"{hp.host.as_written()}",
                    remedy=f"Give a range with one port per worker, e.g. "
                    f"'{port}:{int(str(port)) + hp.slots - 1}', or 0 for free ports.",
                )
    dashboard = scheduler_options.get("dashboard_address")
    if dashboard is not None:
        from distributed.utils import clean_dashboard_address

        try:
            parsed = clean_dashboard_address(dashboard)
        except (ValueError, TypeError) as exc:
            raise ConfigError("dashboard_address", f"{dashboard!r} cannot be parsed ({exc})",
                              remedy="Give ':PORT' or 'HOST:PORT' (--dashboard-address).") from None
        for entry in parsed:
            check_port("dashboard_address", entry.get("port"))


def _fixed_port(port: Any) -> bool:
    """Whether *port* names one port (not 0, None, a range or a list)."""
    if isinstance(port, bool):
        return False
    if isinstance(port, int):
        return port != 0
    return isinstance(port, str) and port.isdigit() and int(port) != 0


def _secured(kwargs: dict[str, Any], security: Security | None) -> dict[str, Any]:
    """Give a process the cluster's credentials and, with encryption, ``tls://``."""
    if security is None:
        return kwargs
    kwargs.setdefault("security", security)
    if security.require_encryption:
        kwargs.setdefault("protocol", "tls://")
    return kwargs


def _check_gpu_worker_class(worker_class: str) -> None:
    """GPU workers are pinned through their Nanny's environment: refuse what has none."""
    if worker_class in ("distributed.Worker", "distributed.worker.Worker"):
        raise ConfigError("worker_class", f"{worker_class} runs in its host's agent process, "
                          "so gpus= cannot pin it to a GPU", remedy="Leave worker_class at "
                          "distributed.Nanny (or a Nanny subclass) with gpus=.")
    if worker_class.startswith("dask_cuda."):
        raise ConfigError("worker_class", f"{worker_class} starts its own worker per GPU; "
                          "with gpus= sshdeploy does that", remedy="Give gpus= with the default "
                          "worker class, or worker_class=dask_cuda.CUDAWorker without gpus=.")


def _without_gpus(worker_class: str, worker_options: Mapping[str, Any]) -> None:
    """No host asked for GPUs: dask-cuda's own worker class is noted, its options refused
    unless that class takes them."""
    if worker_class.startswith("dask_cuda."):
        warnings.warn(
            f"worker_class={worker_class!r} starts one worker per GPU on each host by itself, "
            "as distributed's SSHCluster does; gpus='auto' is the simpler way: one worker per "
            "GPU, pinned by UUID, named <host>-gpu<index>, placed by scale/adapt, shown by "
            "--check, with dask-cuda's options (rmm_pool_size...) where it is installed",
            UserWarning, stacklevel=4)
        return
    given = cuda_options(worker_options)
    if given:
        raise ConfigError(f"worker_options[{next(iter(given))!r}]",
                          "is an option of dask-cuda's GPU workers, and no host is asked for "
                          "GPUs", remedy="Give gpus='auto' (dask-ssh --gpus, or a hostfile's "
                          "gpus=) for one worker per GPU with dask-cuda's options, or "
                          "worker_class='dask_cuda.CUDAWorker'.")


def _from_worker_module(worker_module: str, worker_class: str) -> str:
    if worker_module not in CLASSIC_WORKER_MODULES:
        raise ConfigError(
            "worker_module",
            f"{worker_module!r} is not supported (it only existed in older releases of "
            "distributed's SSHCluster)",
            remedy="Give worker_class='distributed.Nanny' (default) or another worker "
            "class as an import path, e.g. worker_class='distributed.Worker'.",
        )
    warnings.warn(
        f"worker_module={worker_module!r} is deprecated: it means the default worker; "
        "use worker_class (default 'distributed.Nanny') instead",
        FutureWarning,
        stacklevel=4,
    )
    return worker_class
