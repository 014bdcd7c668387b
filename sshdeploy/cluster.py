"""SSHCluster: a drop-in for ``distributed.deploy.ssh.SSHCluster`` that is a real Cluster.

It turns hosts and options into a plan (:mod:`sshdeploy.plan`), the plan into
specs, and lets :class:`distributed.deploy.spec.SpecCluster` do the rest, so
``Client(cluster)``, ``scale``, ``adapt``, ``get_logs``, ``dashboard_link``,
sync and async use and context managers all work. Each process starts and
stops itself (:mod:`sshdeploy.processes`); lost workers are handled by
:mod:`sshdeploy.restarts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from dask.utils import parse_bytes
from distributed.core import Status
from distributed.deploy.spec import SpecCluster
from distributed.utils import Log, Logs, format_dashboard_link

from . import compat
from .defaults import DEFAULT_WORKER_CLASS
from .env.stage import HostStage, Stage
from .errors import (
    ClusterNotFoundError,
    ClusterStopError,
    ConfigError,
    SSHDeployError,
    failures_by_host,
)
from .fleet import Fleet
from .forwarding import LOCALHOST
from .health import NOT_STARTING, health_of
from .hostfile import parse_host
from .hosts import ConnectionKey, Host
from .logs import LogBook
from .named import arming, flow
from .named.kept import KeptCluster
from .named.policy import check_name
from .placement import Placement, kept_on_scale_down, next_worker, with_spares
from .plan import ClusterPlan, RemotePlan, plan_cluster
from .pool import HostPool
from .processes import RemoteScheduler, RemoteWorker, WorkerAgents
from .restarts import WorkerRestarts
from .views import notebook
from .views.hostrows import HostRow, host_state, rows_html, rows_text, worker_resources

logger = logging.getLogger(__name__)

_SPEC_CLUSTER_KEYWORDS = frozenset(
    name for name in inspect.signature(SpecCluster.__init__).parameters
    if name not in ("self", "workers", "scheduler", "worker", "security")
)


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
    setup : str or list of str, optional
        Shell commands run before the remote Python (``conda activate x``);
        a list runs each in turn and stops at the first that fails.
    env : dict, optional
        Environment variables for every remote process.
    inherit_config : bool, optional
        Send the local dask config to the remote processes
        (``sshdeploy.inherit-config``, on by default).
    scheduler_class : str, optional
        Import path of another scheduler class.
    restart_workers : bool
        Start lost workers again, a bounded number of times (default).
    worker_module : str, optional
        Deprecated (older releases of distributed): its classic values mean
        the default worker class; use ``worker_class``.
    security : Security or bool, optional
        ``True``: new TLS credentials for every process and the controller,
        all traffic ``tls://``. A :class:`distributed.Security` is used as is.
    forward_ports : bool, optional
        Reach the scheduler and dashboard through the scheduler host's SSH
        connection (``cluster.scheduler_address`` and ``dashboard_link`` are
        then local). None (default): only when the controller cannot reach
        the scheduler directly. False: never.
    min_workers : int, optional
        Come up with the workers that started when at least this many did;
        each host that failed is reported (``failed_hosts``, a warning,
        ``get_logs()``) and not retried. Default: any failure fails the start.
    environment : {"sync"}, optional
        ``"sync"``: send this machine's packages (distributed's closure, the
        gated packages and ``packages``) to every host once, content-addressed,
        and run them on the host's own Python of the same major.minor.
    packages : list of str, optional
        More packages the version gate compares (and a sync carries).
    upload : list of str, optional
        Local files and directories put on the scheduler's and workers'
        ``sys.path`` on every host before they start (see :meth:`sync_uploads`).
    login_shell : bool
        Run the remote commands in the user's login shell (``$SHELL -l``),
        for hosts whose ``module`` or conda setup only happens there.
    spares : list of str or Host, optional
        Hosts kept in reserve: no worker at the start (not even connected
        to); ``scale``/``adapt`` use them after every other host's slots,
        and the workers of a host that is lost or quarantined move there.
    initial_workers : int, optional
        Start only this many workers, filling the hosts in order; the other
        hosts are connected to only when ``scale``/``adapt`` place a worker
        there. Default: a worker in every slot of every host but the spares.
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
        worker_class: str = DEFAULT_WORKER_CLASS,
        remote_python: str | Sequence[str] | None = None,
        *,
        setup: str | Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        inherit_config: bool | None = None,
        scheduler_class: str | None = None,
        restart_workers: bool = True,
        worker_module: str | None = None,
        security: Any = None,
        forward_ports: bool | None = None,
        min_workers: int | None = None,
        progress: bool | None = None,
        name: str | None = None,
        shutdown_on_close: bool = True,
        idle_timeout: str | float | None = None,
        max_lifetime: str | float | None = None,
        environment: str | None = None,
        packages: Sequence[str] | None = None,
        upload: Sequence[str] | None = None,
        login_shell: bool = False,
        spares: Sequence[str | Host] | None = None,
        initial_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(kwargs) - _SPEC_CLUSTER_KEYWORDS)
        if unknown:
            raise ConfigError(
                unknown[0], "is not an argument of SSHCluster",
                remedy="Options of the workers go in worker_options={...}, of the scheduler "
                "in scheduler_options={...}, of SSH in connect_options={...}.",
            )
        plan = self._cluster_plan = plan_cluster(
            hosts, connect_options, worker_options, scheduler_options, worker_class,
            remote_python, setup=setup, env=env, inherit_config=inherit_config,
            scheduler_class=scheduler_class, restart_workers=restart_workers,
            worker_module=worker_module, security=security, forward_ports=forward_ports,
            min_workers=min_workers, environment=environment,
            packages=packages, upload=upload, login_shell=login_shell,
            spares=spares, initial_workers=initial_workers, name=name,
            shutdown_on_close=shutdown_on_close, idle_timeout=idle_timeout,
            max_lifetime=max_lifetime,
        )
        #: The named cluster this one keeps running after close() (None: an ordinary one).
        self._kept = KeptCluster.of(
            plan, hosts=with_spares(hosts, spares, remote_python, connect_options),
            connect_options=connect_options, worker_options=worker_options,
            scheduler_options=scheduler_options, worker_class=worker_class,
            remote_python=remote_python, setup=setup, env=env,
            scheduler_class=scheduler_class, restart_workers=restart_workers,
            security=security)
        self._start_progress = notebook.start_progress(self.host_rows, progress)
        #: Hosts that failed to start workers while the cluster came up anyway (min_workers).
        self.failed_hosts: dict[str, SSHDeployError] = {}
        #: Workers that failed to start after start-up (scale, adapt): name -> (host key, error).
        self._start_failures: dict[str, tuple[ConnectionKey, SSHDeployError]] = {}
        self._started_workers = False
        self._scale_warned: tuple[int, int] | None = None
        placement = plan.placement
        settings = plan.settings
        self._logbook = LogBook(max_lines=settings.log_buffer_lines)
        self._pool = _pool_for(plan)
        for hp in placement.all_hosts().values():
            self._pool.prepare(hp.host)  # a bad keyword or key file fails here, not mid-start
        self._stage = _stage_for(plan, self._pool)
        self._fleet = Fleet(self, staged=list(placement.initial_hosts()))
        #: The version gate while it runs beside the scheduler's start.
        self._gate: asyncio.Future[Any] | None = None
        launches = {key: plan.launch(hp) for key, hp in placement.worker_hosts.items()}
        self._restarts = WorkerRestarts(
            self, settings.worker_restarts, plan.restart_workers, settings.heartbeat_timeout,
            window=settings.worker_restart_window, reach=self._pool.get,
            lost_after=settings.host_lost_after, on_host_lost=self._fleet.host_lost,
            on_give_up=self._fleet.worker_given_up,
        )
        self._agents = WorkerAgents(self._pool, launches, self._logbook, self._restarts.lost,
                                    prepare=self._fleet.bring_up)
        scheduler = {
            "cls": RemoteScheduler,
            "options": {
                "host": placement.scheduler.host,
                "pool": self._pool,
                "launch": plan.launch(placement.scheduler),
                "logbook": self._logbook,
                "kwargs": plan.scheduler_options,
                "cls": plan.scheduler_class,
                "forward": plan.forward_ports,
                "gate": self._gate_passed,
            },
        }
        workers = {
            w.name: self._worker_spec(
                w.host, plan.worker_options(placement.worker_hosts[w.host.key], w.kwargs))
            for w in placement.workers
        }
        first = next(iter(placement.worker_hosts.values()))
        template = self._worker_spec(first.host, plan.worker_options(first))
        super().__init__(workers=workers, scheduler=scheduler, worker=template,
                         security=plan.security, name=name,
                         shutdown_on_close=shutdown_on_close, **kwargs)

    def _worker_spec(self, host: Host, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "cls": RemoteWorker,
            "options": {
                "host": host,
                "agents": self._agents,
                "cls": self._cluster_plan.worker_class,
                "kwargs": dict(kwargs),
                "restart": self._cluster_plan.restart_workers,
                "share": self._cluster_plan.placement.worker_hosts[host.key].slots or 1,
            },
        }

    # -- dry run ---------------------------------------------------------------
    @staticmethod
    def remote_commands(*args: Any, **kwargs: Any) -> list[RemotePlan]:
        """Return what each host would run, without connecting anywhere.

        Takes the arguments of :class:`SSHCluster` (not those of SpecCluster)
        and renders the very plan the cluster would start from.

        Examples
        --------
        >>> [(p.host, p.role, p.names) for p in SSHCluster.remote_commands(["a", "b"])]
        [('a', 'scheduler', ['scheduler']), ('b', 'worker', ['b-0'])]
        """
        kwargs.pop("progress", None)  # the notebook display: nothing that runs
        plan = plan_cluster(*args, **kwargs)
        return plan.remote_plans(as_connected=_pool_for(plan).as_connected)

    # -- life cycle -----------------------------------------------------------
    async def _start(self) -> None:
        if self._kept is not None:
            record = await self._kept.running(self._cluster_plan.settings)
            if record is not None:  # it runs with this very spec: take it over
                await self._kept.adopt(self, record)
                await arming.arm(self)  # the agents it starts run on without us
                return
        await self._start_new()  # a named one is recorded once its first workers run too

    async def _start_new(self) -> None:
        # The scheduler is on the critical path: its host's connection takes
        # the first of the connect-parallelism slots. (Its errors are raised
        # where the scheduler awaits the same connection.)
        first = asyncio.ensure_future(self._pool.get(self._cluster_plan.placement.scheduler.host))
        first.add_done_callback(lambda f: f.cancelled() or f.exception())
        plan = self._stage.plan
        gate: asyncio.Future[Any] | None = None
        if plan.env is None and not plan.upload:
            # Only the version gate: it runs while the scheduler's agent starts and
            # imports distributed (no latency added); the scheduler is created only
            # once it has passed (_gate_passed), so a mismatch starts no scheduler.
            gate = self._gate = asyncio.ensure_future(self._stage.run())
        else:
            try:  # the environment and the uploads (and the gate) before anything starts
                await self._stage.run()
            except BaseException:
                # Nothing started yet (not even SpecCluster's own state): close the connections.
                first.cancel()
                await self._pool.close()
                self.status = Status.closed
                raise
        # Connect to every worker host and start its agent (importing
        # distributed there) while the scheduler starts.
        # Hosts with no worker yet (spares, initial_workers) are brought up when one is placed.
        first_hosts = self._cluster_plan.placement.first_worker_hosts().values()
        self._agents.prestart([hp.host for hp in first_hosts])
        try:
            with self._start_progress.starting():  # ends on the failure, whichever path raised it
                await self._start_or_fail_fast(first)
                if gate is not None:
                    try:
                        await gate
                    except BaseException:
                        self.status = Status.failed
                        await self._close()
                        raise
        finally:
            await self._end_gate()
        fwd = self.scheduler.forwarding if isinstance(self.scheduler, RemoteScheduler) else None
        if fwd is not None:
            logger.info("%s", fwd.reason)
            compat.record_cluster_log(self, fwd.reason)

    async def _gate_passed(self) -> None:
        """Return once the version gate (if one runs beside the start) has passed; else raise."""
        if self._gate is not None:
            await asyncio.shield(self._gate)  # cancelled and awaited by _end_gate, not here

    async def _end_gate(self) -> None:
        """Cancel a version gate still running, and wait until its remote probes are gone."""
        gate, self._gate = self._gate, None
        if gate is not None and not gate.done():
            gate.cancel()
            with contextlib.suppress(BaseException):
                await gate

    async def _start_or_fail_fast(self, first: asyncio.Future[Any]) -> None:
        start = asyncio.ensure_future(self._start_scheduler())
        doomed = asyncio.ensure_future(self._connect_failures(first))
        try:
            await asyncio.wait({start, doomed}, return_when=asyncio.FIRST_COMPLETED)
            failed = doomed.result() if doomed.done() and not start.done() else {}
            if failed:
                # Without min_workers the start cannot succeed: say so now, not after
                # the scheduler and the good hosts' workers have started.
                start.cancel()
                self.status = Status.failed
                await self._close()  # also ends a scheduler start that is slow to cancel
                with contextlib.suppress(BaseException):
                    await start
                raise failures_by_host(failed, "start workers")
            await start
        finally:
            doomed.cancel()

    async def _start_scheduler(self) -> None:
        try:
            await super()._start()
        except RuntimeError as exc:
            cause = compat.start_error_cause(exc)
            if isinstance(cause, SSHDeployError):
                raise cause from None
            raise

    async def _connect_failures(self, scheduler: asyncio.Future[Any]) -> dict[str, SSHDeployError]:
        """The worker hosts that failed to connect, once every connect has ended.

        Empty with ``min_workers`` (the start goes on without them), for a named
        cluster (its own failure path decides what to keep), and when the
        scheduler's host failed too (its own error is the one to raise).
        """
        if self._cluster_plan.min_workers is not None or self._kept is not None:
            return {}
        hosts = [hp.host for hp in self._cluster_plan.placement.first_worker_hosts().values()]
        got = await asyncio.gather(scheduler, *(self._pool.get(h) for h in hosts),
                                   return_exceptions=True)
        if isinstance(got[0], BaseException):
            return {}
        return {self._pool.as_connected(h): e for h, e in zip(hosts, got[1:], strict=True)
                if isinstance(e, SSHDeployError)}

    def _correct_state(self) -> Any:
        # The workers start here, after _start: the notebook display of the start ends with them.
        return self._start_progress.follow(super()._correct_state())

    async def _correct_state_internal(self) -> None:
        leaving = []
        for name, w in self.workers.items():
            if name not in self.worker_spec and isinstance(w, RemoteWorker):
                w.retiring = True  # the scheduler retires it first: not a lost worker
                leaving.append(str(name))
        if leaving and self.status == Status.running:
            await self._retire(leaving)
            # A scale up while they retired may have given a new worker the name of
            # one of them: the retired process is gone, so that name starts afresh
            # (else it would be taken for the old one and never start).
            for name in leaving:
                old = self.workers.get(name)
                if name in self.worker_spec and old is not None:
                    del self.workers[name]
                    compat.forget_created(self, old)
                    with contextlib.suppress(Exception):
                        await old.close()
        initial, self._started_workers = not self._started_workers, True
        try:
            await super()._correct_state_internal()
            self._fleet.settle()
            if self._kept is not None and self.status == Status.running:
                await self._note_wanted()
        except SSHDeployError:
            if not initial and self.status in (Status.closing, Status.closed):
                return  # a scale's worker ended by close(): nothing to report
            failed = [w for w in compat.created(self)
                      if isinstance(w, RemoteWorker) and w.start_error is not None]
            if not failed:
                raise
            by_host: dict[str, SSHDeployError] = {}
            for w in failed:
                assert w.start_error is not None
                by_host.setdefault(self._pool.as_connected(w.host), w.start_error)
            if not initial:
                # scale/adapt/a restart runs in a callback: report, never raise into the loop.
                self._report_failed(failed)
                return
            if not self._enough_without(failed):
                raise failures_by_host(by_host, "start workers") from None
            self._give_up(failed, by_host)
        if initial:
            await self._record_kept()

    async def _record_kept(self) -> None:
        """A new named cluster runs (its scheduler and first workers): record it, then arm it.

        Until then its agents stop with this controller, and a failed start
        closes it as a classic cluster's: nothing of it is left, nothing recorded.
        """
        kept = self._kept
        if kept is None or kept.record is not None:  # not a named one, or taken over
            return
        await kept.save(self)
        await arming.arm(self)  # recorded: from now on its agents run on without us
        logger.info("cluster %r %s", kept.policy.name, kept.policy.describe())

    async def _retire(self, names: list[str]) -> None:
        """Retire workers scaled or moved away through the scheduler, by name: the results
        they hold are copied to the other workers first (within
        ``sshdeploy.start-timeout``; then they are closed all the same).

        (SpecCluster asks the scheduler to retire them by *address* given their
        names, which retires none: their data would be lost, then recomputed.)
        They are closed by the scheduler too, as distributed's Adaptive does: a
        worker only removed would register again with its next heartbeat.
        Not while the cluster closes: there is nowhere to move it to.
        """
        comm = self.scheduler_comm
        if comm is None:
            return
        try:
            # Bounded: a worker cut off from the network would hold the scale (and
            # every later one) until the scheduler drops it, minutes later.
            await asyncio.wait_for(
                comm.retire_workers(names=names, close_workers=True, remove=True,
                                    stimulus_id=f"sshdeploy-retire-{time.time()}"),
                self._cluster_plan.settings.start_timeout)
        except (OSError, asyncio.TimeoutError) as exc:  # closed below all the same
            logger.info("could not retire %s through the scheduler: %s", names, exc)

    def _report_failed(self, failed: list[RemoteWorker]) -> None:
        """Workers that failed to start after start-up: a warning, a log line, the row.

        A worker being restarted is left to :mod:`sshdeploy.restarts` (its budget).
        """
        for w in failed:
            name, err = str(w.name), w.start_error
            assert err is not None
            if self._restarts.restarting(name):
                continue
            if self._fleet.move_on(name, w.host, err):  # a spare that is down too: the next
                w.start_error = None
                continue
            first = str(err).splitlines()[0]
            logger.warning("worker %s failed to start: %s", name, first)
            compat.record_cluster_log(self, f"worker {name} failed to start: {first}")
            self._start_failures[name] = (w.host.key, err)
            self.worker_spec.pop(name, None)
            if self.workers.get(name) is w:
                del self.workers[name]
            compat.forget_created(self, w)
            w.start_error = None

    def _enough_without(self, failed: list[RemoteWorker]) -> bool:
        """Whether the workers that did start satisfy ``min_workers``."""
        wanted = self._cluster_plan.min_workers
        if wanted is None:
            return False
        started = sum(1 for name, w in self.workers.items()
                      if w not in failed and w.status == Status.running)
        return started >= wanted

    def _give_up(self, failed: list[RemoteWorker], by_host: dict[str, SSHDeployError]) -> None:
        """Drop workers that failed to start (never retried); report each host once."""
        for w in failed:
            self.worker_spec.pop(str(w.name), None)
            if self.workers.get(str(w.name)) is w:
                del self.workers[str(w.name)]
            compat.forget_created(self, w)
            w.start_error = None
        for host, err in by_host.items():
            if host not in self.failed_hosts:
                self.failed_hosts[host] = err
                first = str(err).splitlines()[0]
                logger.warning("%s: no workers started there; going on without it (%s)",
                               host, first)
                compat.record_cluster_log(self, f"host {host} failed and is left out: {first}")

    # -- named clusters -----------------------------------------------------
    @classmethod
    def from_name(  # type: ignore[override]  # Cluster.from_name(name) -> ProcessInterface
        cls,
        name: str,
        host: str | Host | None = None,
        connect_options: Mapping[str, Any] | None = None,
        asynchronous: bool = False,
        start_if_gone: bool = False,
        **kwargs: Any,
    ) -> SSHCluster:
        """Return a live cluster for the running named cluster *name*.

        Its scheduler is reached (through a fresh SSH forward if need be), its
        workers are taken over; ``scale``, ``adapt``, ``get_logs`` and
        ``Client(cluster)`` work. ``close()`` detaches (it keeps running);
        :meth:`shutdown` stops it.

        Parameters
        ----------
        name : str
            The cluster's name (``dask-ssh list`` shows them).
        host : str or Host, optional
            Its scheduler host, to read the cluster's record there (from a
            machine that did not start it). Default: this machine's record.
        connect_options : dict, optional
            ``asyncssh.connect`` keywords for *host*.
        asynchronous : bool
            As for SSHCluster.
        start_if_gone : bool
            When nothing of it runs any more (``gone``, ``stopped``), start it
            again from its record: a new cluster, with no data, at a new
            address. By default that is an error.
        **kwargs
            Other SpecCluster keywords.

        Raises
        ------
        ClusterNotFoundError
            No cluster of that name is known, or it no longer runs (and
            *start_if_gone* is False): nothing is started.
        """
        from .named.kept import security_from
        from .named.spec import arguments
        from .named.state import StateStore

        store = StateStore()
        check_name(name)
        if host is not None:
            target = host if isinstance(host, Host) else parse_host(str(host))
            record = _run_sync(flow.fetch(name, target, connect_options))
            store.save(record)
        record = store.load(name)
        if record is None:
            raise ClusterNotFoundError(name=name, cause="no record of it on this machine",
                                       remedy="`dask-ssh list` shows the named clusters; give "
                                       "host='HEAD' to read its record on its scheduler host.")
        args = arguments(record.spec)
        security = security_from(store.tls_pems(record))
        with flow.reattaching(not start_if_gone):
            return cls(**args, security=security, name=name, shutdown_on_close=False,
                       asynchronous=asynchronous, **kwargs)

    def shutdown(self) -> Any:
        """Stop a named cluster everywhere (every process, every host) and forget it.

        Returns when nothing of it is left on any host, as ``close()`` of an
        ordinary cluster does. On an ordinary cluster, the same as ``close()``.
        Also after ``close()`` (which detached it).
        """
        if self.status == Status.closed:  # detached already: no loop of ours runs
            if self.asynchronous:
                return self._stop_everywhere()
            return _run_sync(self._stop_everywhere())
        return self.sync(self._shutdown)

    async def _shutdown(self) -> None:
        await self._close()  # a named cluster detaches: our side goes, it stays...
        await self._stop_everywhere()  # ... then it is stopped on every host

    async def _stop_everywhere(self) -> None:
        kept = self._kept
        if kept is None or kept.record is None:
            return
        kept.stopping = True
        record = kept.record
        report = await flow.stop(record, kept.store, self._cluster_plan.settings.stop_timeout)
        left = flow.left(report)
        if left:
            raise ClusterStopError(name=record.name, left=left,
                                   scheduler_host=record.scheduler_host)

    async def _note_wanted(self) -> None:
        """Record the wanted worker count of a named cluster; a failure is logged, not raised."""
        assert self._kept is not None
        try:
            await self._kept.note_wanted(self)
        except SSHDeployError as err:
            logger.warning("cluster %r: could not record its worker count: %s",
                           self._kept.policy.name, err)

    async def _detach(self) -> None:
        """Leave a named cluster running: close our side (channels, forwards, connections)."""
        await self._note_wanted()  # its last scale is recorded before the connections go
        self.status = Status.closing
        if self._adaptive is not None:
            self._adaptive.stop()
        await self._fleet.close()
        await self._restarts.close()
        compat.forget_unstarted(self)
        await self._agents.detach()
        if isinstance(self.scheduler, RemoteScheduler):
            await self.scheduler.detach()
        for w in self.workers.values():
            w.status = Status.closed
        await self._pool.close()
        self._logbook.flush()
        await compat.close_base(self)

    async def start_adopted(self) -> None:
        """SpecCluster's start around a scheduler that already runs (``from_name``)."""
        await super()._start()

    def worker_spec_for(self, host: Host) -> dict[str, Any]:
        """The spec of one more worker on *host* (its template options)."""
        hp = self._cluster_plan.placement.worker_hosts[host.key]
        return self._worker_spec(hp.host, self._cluster_plan.worker_options(hp))

    async def retire_by_name(self, name: str) -> None:
        """Retire and close one worker through the scheduler (an adopted worker scaled away)."""
        await self._retire([name])

    @property
    def kept(self) -> KeptCluster | None:
        """The named-cluster side of this cluster (None for an ordinary one)."""
        return self._kept

    @property
    def pool(self) -> HostPool:
        """The cluster's SSH connections."""
        return self._pool

    @property
    def agents(self) -> WorkerAgents:
        """The workers agents of the hosts."""
        return self._agents

    @property
    def stage(self) -> Stage:
        """The stage before the start (version gate, environment, uploads)."""
        return self._stage

    @property
    def restarts(self) -> WorkerRestarts:
        """The restart policy of lost workers."""
        return self._restarts

    @property
    def fleet(self) -> Fleet:
        """The worker hosts' health, and the moves, additions and removals."""
        return self._fleet

    async def _close(self) -> None:
        await self._end_gate()  # before the connections go: its probes are killed through them
        # A named cluster detaches once recorded; one that never was stops as a classic one.
        if self._kept is not None and not self._kept.stopping and \
                self._kept.record is not None and self.status != Status.closed:
            await self._detach()
            return
        self._logbook.closing()
        await self._fleet.close()
        await self._restarts.close()
        # Workers still starting (a large scale) end now, not after start-timeout.
        self._agents.closing()
        compat.forget_unstarted(self)  # a restart cancelled before its worker started
        if isinstance(self.scheduler, RemoteScheduler) and not self.scheduler.expect_close():
            # The scheduler is gone: don't spend connect timeouts asking it to
            # retire workers or terminate; the workers' agents are stopped directly.
            self.shutdown_scheduler = False
        try:
            # A failed start (whichever path closes it) raises our own error, which names
            # the host and the cause: SpecCluster's warning would come first and say less.
            with compat.quiet_failed_start():
                await super()._close()
        finally:
            await asyncio.gather(self._agents.close(), return_exceptions=True)
            if isinstance(self.scheduler, RemoteScheduler):
                await self.scheduler.close()
            await self._stage.remove_uploads()
            await self._pool.close()
            self._logbook.flush()

    # -- hosts that come and go ---------------------------------------------------
    def add_hosts(self, hosts: Sequence[str | Host], spare: bool = False) -> Any:
        """Add worker hosts to the running cluster and start workers in their slots.

        Parameters
        ----------
        hosts : list of str or Host
            ``"host"``, ``"user@host:port slots=2"``...; they take the remote
            Python and connect options of the first worker host.
        spare : bool
            Add them as spares (no workers now; used by scale, adapt and to
            replace a lost host).

        Returns
        -------
        list of str
            The workers started (awaitable when the cluster is asynchronous).

        Raises
        ------
        ConfigError
            A host already in the cluster; a cluster that does not run.
        SSHDeployError
            Hosts whose workers could not start (named, with why); they are
            left out again.
        """
        return self.sync(self._add_hosts, hosts, spare)

    async def _add_hosts(self, hosts: Sequence[str | Host], spare: bool) -> list[str]:
        try:
            return await self._fleet.add_hosts(hosts, spare)
        finally:
            await self._note_hosts()

    def remove_hosts(self, hosts: Sequence[str | Host]) -> Any:
        """Retire the workers of *hosts* through the scheduler, then drop the hosts.

        Retiring first moves the results those workers hold to other workers,
        so no data is lost. The cluster then has fewer workers (scale up to
        place them elsewhere).

        Returns
        -------
        list of str
            The workers retired (awaitable when the cluster is asynchronous).
        """
        return self.sync(self._remove_hosts, hosts)

    async def _remove_hosts(self, hosts: Sequence[str | Host]) -> list[str]:
        try:
            return await self._fleet.remove_hosts(hosts)
        finally:
            await self._note_hosts()

    async def _note_hosts(self) -> None:
        """A named cluster records its hosts (from_name and list find them); logged if not."""
        if self._kept is None:
            return
        try:
            await self._kept.note_hosts(self)
        except SSHDeployError as err:
            logger.warning("cluster %r: could not record its hosts: %s",
                           self._kept.policy.name, err)

    def readmit(self, host: str | Host) -> bool:
        """Let a quarantined or lost host take workers again (scale, adapt, moves).

        Returns False if the host was not taken out.
        """
        return self._fleet.readmit(host)

    def replace_plan(self, plan: ClusterPlan) -> None:
        """Use *plan* from now on (a named cluster armed once recorded)."""
        self._cluster_plan = plan

    def replace_placement(self, placement: Placement) -> None:
        """Use *placement* from now on (hosts added or removed while it runs)."""
        self._cluster_plan = dataclasses.replace(self._cluster_plan, placement=placement)

    def start_failure(self, name: str) -> SSHDeployError | None:
        """Why worker *name* is not running after its last start failed (None: it runs,
        or its start did not fail)."""
        if name in self.workers:
            return None
        failure = self._start_failures.get(name)
        return None if failure is None else failure[1]

    # -- environment and uploads ------------------------------------------------
    def sync_uploads(self) -> Any:
        """Send the files of ``upload=`` that changed since the start to every host.

        Only contents a host does not hold yet are sent; files removed locally
        are removed there. Running workers see the new files on their next
        import (a module already imported stays as it is: restart the workers,
        ``client.restart()``, to reload it).

        Returns
        -------
        dict
            Bytes sent per host (``user@host:port``); awaitable when the
            cluster is asynchronous.
        """
        return self.sync(self._stage.sync_uploads)

    @property
    def stage_reports(self) -> dict[str, HostStage]:
        """What the stage before the start did on each host (bytes sent, cached, seconds)."""
        return dict(self._stage.reports)

    # -- scaling ------------------------------------------------------------
    def new_worker_spec(self) -> dict[str, dict[str, Any]]:
        """Return the next worker for ``scale``/``adapt``, placed by free slots."""
        running = [
            (spec["options"]["host"], name)
            for name, spec in self.worker_spec.items()
            if "options" in spec
        ]
        placement = self._cluster_plan.placement
        chosen = next_worker(placement, running, exclude=self._fleet.health.excluded())
        if chosen is None:
            return {}
        host, name = chosen
        options = self._cluster_plan.worker_options(placement.worker_hosts[host.key])
        return {name: self._worker_spec(host, options)}

    def _template_value(self, keys: tuple[str, ...], what: str) -> Any:
        for hp in self._cluster_plan.placement.worker_hosts.values():
            for key in keys:
                if hp.template.get(key) not in (None, "auto"):
                    return hp.template[key]
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
            Target number of workers (>= 0).
        memory, cores : optional
            Alternatively, the memory or cores wanted (as in SpecCluster).

        Raises
        ------
        ConfigError
            For a negative or non-integer count (nothing is changed).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError("scale(n)", f"must be a whole number >= 0, got {n!r}",
                              remedy="Give the number of workers wanted, e.g. scale(4).")
        if self.status == Status.closed or (self.status == Status.closing and n):
            raise ConfigError(f"scale({n})", f"the cluster is {self.status.name}",
                              remedy="Build a new SSHCluster to start workers again.")
        out = self._fleet.health.excluded()
        slots = sum(hp.slots for k, hp in self._cluster_plan.placement.worker_hosts.items()
                    if k not in out)
        wanted = n
        if memory is not None:
            wanted = max(wanted, math.ceil(parse_bytes(memory) / self._memory_per_worker()))
        if cores is not None:
            wanted = max(wanted, math.ceil(cores / self._threads_per_worker()))
        if slots and wanted > slots:
            # Each host's cores and memory are divided among its slots: more workers
            # than slots would overload the hosts (adapt asks again every interval:
            # say it once per request).
            if self._scale_warned != (wanted, slots):
                self._scale_warned = (wanted, slots)
                asked = f"scale({n}" + (f", memory={memory!r}" if memory is not None else "") \
                    + (f", cores={cores}" if cores is not None else "") + ")"
                message = (f"{asked} asks for {wanted} workers, more than the {slots} slots "
                           f"of the hosts: starting {slots} (give hosts more slots: n_workers, "
                           "a hostfile's slots=, or repeat a host)")
                logger.warning("%s", message)
                compat.record_cluster_log(self, message)
            wanted = slots
        n = wanted
        if n < len(self.worker_spec):
            self.worker_spec = kept_on_scale_down(
                self.worker_spec, self._cluster_plan.placement.worker_hosts, n)
        return super().scale(n)

    def adapt(  # type: ignore[override]  # same parameters, checked
        self, Adaptive: Any = None, minimum: Any = 0,
        maximum: Any = math.inf, **kwargs: Any,
    ) -> Any:
        """Adapt between *minimum* and *maximum* workers (as in SpecCluster), bounds checked.

        Raises
        ------
        ConfigError
            For a bound that is not a whole number >= 0, *minimum* above
            *maximum*, or a closed cluster.
        """
        for arg, value in (("minimum", minimum), ("maximum", maximum)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                    isinstance(value, float) and value != math.inf and not value.is_integer()):
                raise ConfigError(f"adapt({arg}=...)",
                                  f"must be a whole number >= 0, got {value!r}",
                                  remedy="E.g. adapt(minimum=0, maximum=8).")
        if minimum > maximum:
            raise ConfigError("adapt(minimum=..., maximum=...)",
                              f"minimum {minimum} is above maximum {maximum}",
                              remedy="Give minimum <= maximum.")
        if self.status in (Status.closing, Status.closed):
            raise ConfigError("adapt()", f"the cluster is {self.status.name}",
                              remedy="Build a new SSHCluster to adapt again.")
        if Adaptive is not None:
            kwargs["Adaptive"] = Adaptive
        return super().adapt(minimum=minimum, maximum=maximum, **kwargs)

    # -- information --------------------------------------------------------
    @property
    def _cluster_class_name(self) -> str:
        return "SSHCluster"

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    @property
    def dashboard_link(self) -> str:
        """The dashboard's URL, a local one when it is reached through SSH."""
        fwd = self.scheduler.forwarding if isinstance(self.scheduler, RemoteScheduler) else None
        if fwd is not None and fwd.dashboard_port:
            return str(format_dashboard_link(LOCALHOST, fwd.dashboard_port))
        return str(super().dashboard_link)

    def host_rows(self) -> list[HostRow]:
        """One row per host: role, workers running / wanted, restarts, last error."""
        plan = self._cluster_plan.placement
        show = self._pool.as_connected
        rows: dict[ConnectionKey, dict[str, Any]] = {}
        for key, hp in plan.all_hosts().items():
            rows[key] = {"host": show(hp.host), "roles": [], "running": 0, "wanted": 0,
                         "restarts": 0, "error": "", "restarting": False}
        rows[plan.scheduler.key]["roles"].append("scheduler")
        sched = self.scheduler if isinstance(self.scheduler, RemoteScheduler) else None
        if sched is not None and sched.exit_reason:
            rows[plan.scheduler.key]["error"] = sched.exit_reason
        for name, spec in self.worker_spec.items():
            row = rows[spec["options"]["host"].key]
            row["wanted"] += 1
            worker = self.workers.get(name)
            if worker is not None and worker.status == Status.running:
                row["running"] += 1
            elif name in self._restarts.steps:
                row["error"] = f"{name}: {self._restarts.steps[name]}"
            elif isinstance(worker, RemoteWorker) and worker.exit_reason:
                row["error"] = f"{name}: {worker.exit_reason}"
            row["restarts"] += self._restarts.counts.get(str(name), 0)
            row["restarting"] = row["restarting"] or name in self._restarts.steps
        for name, (key, why) in self._restarts.given_up.items():
            if key in rows and name not in self.worker_spec:
                rows[key]["error"] = why
                rows[key]["restarts"] += self._restarts.counts.get(name, 0)
        for name, (key, err) in self._start_failures.items():
            if key in rows and name not in self.worker_spec and not rows[key]["error"]:
                rows[key]["error"] = f"{name}: failed to start: {str(err).splitlines()[0]}"
        for key, hp in plan.worker_hosts.items():
            if key in plan.spares and not rows[key]["wanted"]:
                rows[key]["roles"].append("spare")
            elif hp.slots or rows[key]["wanted"]:
                rows[key]["roles"].append("workers")
            failed = self.failed_hosts.get(show(hp.host))
            if failed is not None:
                rows[key]["error"] = str(failed)
        for key, hp in plan.all_hosts().items():
            rows[key]["health"] = self._host_health(key, rows[key], key == plan.scheduler.key)
            rows[key]["state"] = self._host_state(hp.host, rows[key], key == plan.scheduler.key)
        infos: dict[ConnectionKey, list[Mapping[str, Any]]] = {}
        for info in dict(self.scheduler_info.get("workers") or {}).values():
            spec = self.worker_spec.get(info.get("name"))
            if spec is not None and "options" in spec:
                infos.setdefault(spec["options"]["host"].key, []).append(info)
        return [HostRow(host=r["host"], role=", ".join(r["roles"]) or "-",
                        running=r["running"], wanted=r["wanted"], restarts=r["restarts"],
                        error=r["error"], state=r["state"],
                        each=worker_resources(infos.get(key, ())), health=r["health"])
                for key, r in rows.items()]

    def _host_health(self, key: ConnectionKey, row: dict[str, Any], runs_scheduler: bool) -> str:
        """One host's health (see :mod:`sshdeploy.health`); a host taken out says why."""
        out = self._fleet.health.out.get(key)
        if out is not None and not row["error"]:
            row["error"] = out.reason
        trouble = row["restarting"] or (
            bool(row["error"]) and (row["running"] < row["wanted"] or not row["running"]))
        if runs_scheduler and not row["wanted"]:
            sched = self.scheduler if isinstance(self.scheduler, RemoteScheduler) else None
            trouble = trouble or bool(sched is not None and sched.exit_reason)
            return health_of(out, spare=False, running=1, wanted=1, trouble=trouble)
        return health_of(out, spare=key in self._cluster_plan.placement.spares,
                         running=row["running"], wanted=row["wanted"], trouble=trouble)

    def _host_state(self, host: Host, row: dict[str, Any], runs_scheduler: bool) -> str:
        """Where one host's start stands (for live status displays): see :func:`host_state`."""
        if row["health"] in NOT_STARTING:
            return str(row["health"])  # not a start under way
        conn = self._pool.state(host)
        if conn == "failed" and not row["error"]:
            row["error"] = self._pool.error(host)
        phase = self._stage.phase.get(self._pool.as_connected(host))
        if phase is not None and conn not in ("waiting", "connecting", "failed"):
            return phase  # the version gate, the environment, the uploads
        sched = self.scheduler if isinstance(self.scheduler, RemoteScheduler) else None
        channels = [self._agents.channel_of(host)]
        if runs_scheduler and sched is not None:
            channels.append(sched.channel)
        return host_state(
            failed=bool(row["error"]) and not row["running"], connection=conn,
            stages=[ch.stage for ch in channels if ch is not None],
            running=row["running"], wanted=row["wanted"], runs_scheduler=runs_scheduler,
            scheduler_running=sched is not None and sched.status == Status.running)

    def __repr__(self) -> str:
        gone = self._restarts.given_up
        none_left = (f"\nno workers left: {len(gone)} given up (see get_logs()['Cluster'])"
                     if gone and not self.worker_spec else "")
        return f"{super().__repr__()}\n{rows_text(self.host_rows())}{none_left}"

    def _repr_html_(self, cluster_status: str | None = None) -> str:
        return str(super()._repr_html_(cluster_status=(cluster_status or "")
                                       + rows_html(self.host_rows())))

    @property
    def cluster_plan(self) -> ClusterPlan:
        """The plan this cluster was built from (hosts, options, settings)."""
        return self._cluster_plan

    @property
    def placement(self) -> Placement:
        """Where every worker goes (``cluster_plan.placement``)."""
        return self._cluster_plan.placement

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
            logs["Cluster"] = Log("\n".join(compat.cluster_log_lines(self)))
        if scheduler:
            label = f"scheduler {self._cluster_plan.placement.scheduler.host.hostname}"
            logs["Scheduler"] = Log("\n".join(self._logbook.lines(label)))
        if workers:
            wanted = None if workers is True else set(workers)
            for name in self.worker_spec:
                if wanted is None or name in wanted:
                    logs[name] = Log("\n".join(self._logbook.lines(str(name))))
        return logs


def _stage_for(plan: ClusterPlan, pool: HostPool) -> Stage:
    """Return the stage that runs before the start, on the hosts the start connects to."""
    assert plan.stage is not None
    hosts = [(hp.host, hp.python) for hp in plan.placement.initial_hosts().values()]
    return Stage(plan.stage, pool, hosts, setup=plan.user_setup, login_shell=plan.login_shell,
                 timeout=plan.settings.start_timeout)


def _run_sync(coro: Any) -> Any:
    """Run *coro* to its end in a thread of its own (callable with or without a running loop)."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


def _pool_for(plan: ClusterPlan) -> HostPool:
    """Return a (not yet connected) pool with each host's connect options."""
    pool = HostPool(settings=plan.settings)
    for hp in plan.placement.all_hosts().values():
        pool.set_options(hp.host, hp.connect_options)
    return pool
