"""SSHCluster: a drop-in for ``distributed.deploy.ssh.SSHCluster`` that is a real Cluster.

It turns hosts and options into specs (:mod:`sshdeploy.placement`) and lets
:class:`distributed.deploy.spec.SpecCluster` do the rest, so ``Client(cluster)``,
``scale``, ``adapt``, ``get_logs``, ``dashboard_link``, sync and async use and
context managers all work. What runs remotely is in :mod:`sshdeploy.remote`
and :mod:`sshdeploy.channel`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from time import time
from typing import Any, Literal

from dask.utils import parse_bytes
from distributed.core import Status
from distributed.deploy.spec import SpecCluster
from distributed.utils import Log, Logs

from . import config
from .bootstrap import build_command
from .channel import CONNECTION_LOST
from .errors import ConfigError, SSHDeployError, failures_by_host
from .hosts import Host
from .logs import LogBook
from .placement import Placement, next_worker, place
from .pool import HostPool
from .remote import Launch, RemoteScheduler, RemoteWorker, WorkerAgents

logger = logging.getLogger("sshdeploy.cluster")


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
    """

    host: str
    role: Literal["scheduler", "worker"]
    names: list[str]
    command: str
    python: str
    options: dict[str, Any] = field(default_factory=dict)


class SSHCluster(SpecCluster):
    """A Dask cluster on hosts reached over SSH.

    ``hosts[0]`` runs the scheduler; every later entry runs
    ``worker_options["n_workers"]`` worker processes (repeat a host, or give
    it ``slots=`` in a hostfile, for more). One SSH connection per host is
    shared by all its processes. Remote processes stop when the cluster
    closes, and also when the controller dies or loses the network.

    Parameters
    ----------
    hosts : list of str or Host
        ``"host"``, ``"user@host:port"`` or :class:`sshdeploy.hosts.Host`.
    connect_options : dict or list of dict, optional
        ``asyncssh.connect`` keywords (``known_hosts``, ``client_keys``,
        ``username``, ``port``, ``tunnel``...), for all hosts or one per host.
        Host keys are checked against ``~/.ssh/known_hosts`` by default.
    worker_options : dict, optional
        Keywords of the worker class (``nthreads``, ``memory_limit``,
        ``resources``, ``local_directory``...), plus ``n_workers``.
    scheduler_options : dict, optional
        Keywords of :class:`distributed.Scheduler` (``port``,
        ``dashboard_address``, ``idle_timeout``...).
    worker_class : str
        Import path of the worker class, ``"distributed.Nanny"`` by default.
    remote_python : str or list of str, optional
        The remote interpreter, for all hosts or one per host; defaults to
        the controller's ``sys.executable``.
    setup : str, optional
        Shell commands run before the remote Python (``conda activate x``).
    env : dict, optional
        Environment variables for every remote process.
    inherit_config : bool, optional
        Send the local dask config to the remote processes
        (``sshdeploy.inherit-config``, on by default).
    scheduler_class : str, optional
        Import path of another scheduler class.
    restart_workers : bool
        Let each Nanny restart its worker process when it dies (default).
    **kwargs
        Passed to :class:`~distributed.deploy.spec.SpecCluster`
        (``asynchronous``, ``name``, ``security``, ``shutdown_on_close``...).

    Examples
    --------
    >>> from dask.distributed import Client
    >>> with SSHCluster(["node1", "node2", "node3"],
    ...                 worker_options={"n_workers": 2}) as cluster:  # doctest: +SKIP
    ...     with Client(cluster) as client:
    ...         client.submit(sum, [1, 2]).result()
    3
    """

    def __init__(
        self,
        hosts: Sequence[str | Host] | None = None,
        connect_options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        worker_options: Mapping[str, Any] | None = None,
        scheduler_options: Mapping[str, Any] | None = None,
        worker_class: str = "distributed.Nanny",
        remote_python: str | Sequence[str] | None = None,
        *,
        setup: str | None = None,
        env: Mapping[str, str] | None = None,
        inherit_config: bool | None = None,
        scheduler_class: str | None = None,
        restart_workers: bool = True,
        **kwargs: Any,
    ) -> None:
        self._placement = placement = place(hosts, worker_options, remote_python, connect_options)
        self._worker_class = worker_class
        self._restart_workers = restart_workers
        self._logbook = LogBook(max_lines=int(config.get("log-buffer-lines")))
        inherit = bool(config.get("inherit-config", inherit_config))
        self._pool = _pool_for(placement)
        env = dict(env or {})
        launches = {
            key: Launch(python=py, setup=setup, env=env, inherit_config=inherit)
            for key, py in placement.python.items()
        }
        self._agents = WorkerAgents(self._pool, launches, self._logbook, self._worker_lost)
        self._restarts: dict[str, int] = {}
        scheduler = {
            "cls": RemoteScheduler,
            "options": {
                "host": placement.scheduler,
                "pool": self._pool,
                "launch": Launch(
                    python=placement.scheduler_python, setup=setup, env=env,
                    inherit_config=inherit,
                ),
                "logbook": self._logbook,
                "kwargs": dict(scheduler_options or {}),
                "cls": scheduler_class,
            },
        }
        workers = {w.name: self._worker_spec(w.host, w.kwargs) for w in placement.workers}
        template = self._worker_spec(placement.scheduler, {}) if placement.slots else None
        super().__init__(workers=workers, scheduler=scheduler, worker=template, **kwargs)

    def _worker_spec(self, host: Host, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "cls": RemoteWorker,
            "options": {
                "host": host,
                "agents": self._agents,
                "cls": self._worker_class,
                "kwargs": dict(kwargs),
                "restart": self._restart_workers,
            },
        }

    # -- dry run ---------------------------------------------------------------
    @staticmethod
    def remote_commands(
        hosts: Sequence[str | Host] | None,
        connect_options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        worker_options: Mapping[str, Any] | None = None,
        scheduler_options: Mapping[str, Any] | None = None,
        worker_class: str = "distributed.Nanny",
        remote_python: str | Sequence[str] | None = None,
        *,
        setup: str | None = None,
        env: Mapping[str, str] | None = None,
        restart_workers: bool = True,
    ) -> list[RemotePlan]:
        """Return what each host would run, without connecting anywhere.

        Examples
        --------
        >>> [(p.host, p.role, p.names) for p in SSHCluster.remote_commands(["a", "b"])]
        [('a', 'scheduler', ['scheduler']), ('b', 'worker', ['b-0'])]
        """
        p = place(hosts, worker_options, remote_python, connect_options)
        pool = _pool_for(p)
        out = [
            RemotePlan(
                host=pool.display(p.scheduler),
                role="scheduler",
                names=["scheduler"],
                command=build_command(p.scheduler_python, setup),
                python=p.scheduler_python,
                options=dict(scheduler_options or {}),
            )
        ]
        for key, host in p.hosts.items():
            names = [w.name for w in p.workers if w.host.key == key]
            if not names:
                continue  # a host kept only for `scale`
            out.append(
                RemotePlan(
                    host=pool.display(host),
                    role="worker",
                    names=names,
                    command=build_command(p.python[key], setup),
                    python=p.python[key],
                    options={"worker_class": worker_class, **p.templates[key],
                             **({"env": dict(env)} if env else {})},
                )
            )
        return out

    # -- life cycle -----------------------------------------------------------
    async def _start(self) -> None:
        # Connect to every worker host and start its agent (importing
        # distributed there) while the scheduler starts.
        self._agents.prestart(list(self._placement.hosts.values()))
        try:
            await super()._start()
        except RuntimeError as exc:
            if isinstance(exc.__cause__, SSHDeployError):
                raise exc.__cause__ from None
            raise

    async def _correct_state_internal(self) -> None:
        try:
            await super()._correct_state_internal()
        except SSHDeployError:
            failed: dict[str, BaseException] = {}
            for w in list(self._created):
                err = getattr(w, "start_error", None)
                if isinstance(w, RemoteWorker) and err is not None:
                    failed.setdefault(self._pool.display(w.host), err)
            if failed:
                raise failures_by_host(failed, "start workers") from None
            raise

    async def _close(self) -> None:
        if isinstance(self.scheduler, RemoteScheduler):
            if not self.scheduler.channel.alive:
                # The scheduler is gone: don't spend connect timeouts asking it to
                # retire workers or terminate; stop the workers' agents directly.
                self.shutdown_scheduler = False
            elif self.shutdown_scheduler:
                self.scheduler.expect_exit = True
        try:
            await super()._close()
        finally:
            await asyncio.gather(self._agents.close(), return_exceptions=True)
            if self.scheduler is not None and isinstance(self.scheduler, RemoteScheduler):
                if self.scheduler.channel.alive:
                    await self.scheduler.channel.shutdown(float(config.get("stop-timeout")))
                await self.scheduler.channel.ensure_gone()
            await self._pool.close()

    # -- lost workers ---------------------------------------------------------
    def _worker_lost(self, name: str, reason: str) -> None:
        """A worker's Nanny or host agent went away: start it again, a bounded number of times."""
        if self.status != Status.running or name not in self.worker_spec:
            return
        worker = self.workers.get(name)
        if worker is not None and worker.address:
            # Tell the scheduler now rather than after its own timeouts (~30 s
            # for a host cut off), so that the worker's tasks move on at once.
            asyncio.ensure_future(self._unregister(str(worker.address), reason))
        tries = self._restarts.get(name, 0)
        if not self._restart_workers or tries >= int(config.get("worker-restarts")):
            why = "restarts are off" if not self._restart_workers else f"after {tries} restarts"
            logger.warning("worker %s lost (%s); not restarted (%s)", name, reason, why)
            self.worker_spec.pop(name, None)
            self.workers.pop(name, None)
            return
        self._restarts[name] = tries + 1
        delay = 2.0**tries
        if reason == CONNECTION_LOST:
            # The old agent may still run there until its heartbeat timeout: a
            # new worker of the same name would be refused ("name taken") before.
            delay = max(delay, float(config.get("heartbeat-timeout")))
        logger.warning("worker %s lost (%s); restarting it in %.0f s (%d/%s)", name, reason,
                       delay, tries + 1, config.get("worker-restarts"))
        asyncio.get_running_loop().call_later(
            delay, lambda: asyncio.ensure_future(self._restart(name))
        )

    async def _unregister(self, address: str, reason: str) -> None:
        if self.scheduler_comm is None:
            return
        try:
            await asyncio.wait_for(
                self.scheduler_comm.unregister(
                    address=address, stimulus_id=f"sshdeploy-lost-{time()}", close=False
                ),
                10,
            )
        except Exception as exc:  # the scheduler will notice by itself, later
            logger.debug("could not unregister %s (%s): %s", address, reason, exc)

    async def _restart(self, name: str) -> None:
        if self.status != Status.running or name not in self.worker_spec:
            return
        old = self.workers.pop(name, None)
        if old is not None:
            self._created.discard(old)
        try:
            await self._correct_state()
        except Exception as exc:  # reported, and counted against the restart limit
            logger.warning("worker %s could not be restarted: %s", name, exc)
            self._worker_lost(name, "restart failed")

    # -- scaling ------------------------------------------------------------
    def new_worker_spec(self) -> dict[str, dict[str, Any]]:
        """Return the next worker for ``scale``/``adapt``, placed by free slots."""
        running = [
            (spec["options"]["host"], name)
            for name, spec in self.worker_spec.items()
            if "options" in spec
        ]
        chosen = next_worker(self._placement, running)
        if chosen is None:
            return {}
        host, name = chosen
        return {name: self._worker_spec(host, self._placement.templates[host.key])}

    def _template_value(self, keys: tuple[str, ...], what: str) -> Any:
        for kw in self._placement.templates.values():
            for key in keys:
                if kw.get(key) not in (None, "auto"):
                    return kw[key]
        for w in self.scheduler_info.get("workers", {}).values():  # what running workers have
            if w.get(keys[0]):
                return w[keys[0]]
        raise ConfigError(
            f"worker_options['{keys[0]}']",
            f"unknown, so the cluster cannot scale by {what}",
            remedy=f"Give worker_options={{'{keys[0]}': ...}} or scale by a number of workers.",
        )

    def _threads_per_worker(self) -> int:
        return int(self._template_value(("nthreads",), "cores"))

    def _memory_per_worker(self) -> int:
        return int(parse_bytes(self._template_value(("memory_limit",), "memory")))

    def scale(self, n: int = 0, memory: str | None = None, cores: int | None = None) -> Any:
        """Scale to *n* workers, added by free slots, removed from the fullest hosts.

        Parameters
        ----------
        n : int
            Target number of workers.
        memory, cores : optional
            Alternatively, the memory or cores wanted (as in SpecCluster).
        """
        if memory is not None:
            n = max(n, math.ceil(parse_bytes(memory) / self._memory_per_worker()))
        if cores is not None:
            n = max(n, math.ceil(cores / self._threads_per_worker()))
        if n < len(self.worker_spec):
            # SpecCluster removes the most recently added; we prefer the
            # host carrying the most workers relative to its slots.
            keep = dict(self.worker_spec)
            while len(keep) > max(n, 0):
                counts: dict[Any, list[str]] = {}
                for name, spec in keep.items():
                    counts.setdefault(spec["options"]["host"].key, []).append(name)
                key = max(
                    counts,
                    key=lambda k: len(counts[k]) / max(1, self._placement.slots.get(k, 1)),
                )
                keep.pop(sorted(counts[key], key=_name_order)[-1])
            self.worker_spec = keep
        return super().scale(n)

    # -- information --------------------------------------------------------
    @property
    def _cluster_class_name(self) -> str:
        return "SSHCluster"

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    @property
    def placement(self) -> Placement:
        """The plan this cluster was built from."""
        return self._placement

    @property
    def logbook(self) -> LogBook:
        """Every remote output line, by source."""
        return self._logbook

    async def _get_logs(
        self, cluster: bool = True, scheduler: bool = True, workers: Any = True
    ) -> Logs:
        """Return the captured remote output of the scheduler and every worker."""
        logs = Logs()
        if cluster:
            logs["Cluster"] = Log("\n".join(line[1] for line in self._cluster_manager_logs))
        if scheduler:
            label = f"scheduler {self._placement.scheduler.hostname}"
            logs["Scheduler"] = Log("\n".join(self._logbook.lines(label)))
        if workers:
            wanted = None if workers is True else set(workers)
            for name in self.worker_spec:
                if wanted is None or name in wanted:
                    logs[name] = Log("\n".join(self._logbook.lines(str(name))))
        return logs


def _pool_for(placement: Placement) -> HostPool:
    """Return a (not yet connected) pool with each host's connect options."""
    pool = HostPool()
    for key, opts in placement.connect_options.items():
        pool.set_options(placement.hosts.get(key) or placement.scheduler, opts)
    return pool


def _name_order(name: str) -> tuple[str, int]:
    base, _, idx = str(name).rpartition("-")
    return (base, int(idx)) if idx.isdigit() else (str(name), -1)
