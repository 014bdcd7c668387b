"""SSHCluster: a drop-in for ``distributed.deploy.ssh.SSHCluster`` that is a real Cluster.

It turns hosts and options into a plan (:mod:`sshdeploy.plan`), the plan into
specs, and lets :class:`distributed.deploy.spec.SpecCluster` do the rest, so
``Client(cluster)``, ``scale``, ``adapt``, ``get_logs``, ``dashboard_link``,
sync and async use and context managers all work. Each process starts and
stops itself (:mod:`sshdeploy.cluster.processes`); lost workers are handled by
:mod:`sshdeploy.cluster.restarts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dask.utils import parse_bytes
from distributed.core import Status
from distributed.deploy.spec import SpecCluster
from distributed.utils import Logs, format_dashboard_link

from sshdeploy import compat
from sshdeploy.arguments import ClusterArgs
from sshdeploy.cluster.fleet import Fleet
from sshdeploy.cluster.kept import KeptCluster, reattach
from sshdeploy.cluster.processes import RemoteScheduler, RemoteWorker, WorkerAgents
from sshdeploy.cluster.restarts import WorkerRestarts
from sshdeploy.cluster.roster import Roster
from sshdeploy.defaults import DEFAULT_WORKER_CLASS
from sshdeploy.env.prestart import HostPreStart
from sshdeploy.errors import ConfigError, SSHDeployError, failures_by_host
from sshdeploy.hosts import Host
from sshdeploy.logs import LogBook
from sshdeploy.named import flow, jobclient
from sshdeploy.named.jobclient import Job
from sshdeploy.placement import Placement
from sshdeploy.plan import ClusterPlan, RemotePlan, plan_cluster
from sshdeploy.ssh.forwarding import LOCALHOST
from sshdeploy.ssh.pool import HostPool
from sshdeploy.views import notebook
from sshdeploy.views.hostrows import HostRow, rows_html, rows_text

from . import arming, build, gpustart, host_status, scaling

logger = logging.getLogger(__name__)


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
    progress : bool, optional
        Show the start host by host in a notebook (None, default: when in
        Jupyter; False: never).
    name : str, optional
        The cluster's name. With ``shutdown_on_close=False`` it is a named
        cluster that outlives this controller (:meth:`from_name` finds it).
    shutdown_on_close : bool
        False (with a ``name``): ``close()`` leaves the cluster running on
        its hosts; :meth:`shutdown` stops it.
    idle_timeout, max_lifetime : str or float, optional
        A named cluster stops after this long with no task and no client, or
        this long after its start (``"30min"``, seconds). Default: the
        ``sshdeploy.idle-timeout`` / ``max-lifetime`` settings.
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
    gpus, cpu_workers : str or int, optional
        ``"auto"``, ``"free"``, N or ``"0,2"``: one worker per GPU found on each worker host,
        pinned by UUID (README "GPU hosts"); plus *cpu_workers* CPU-only workers there.
    **kwargs
        Passed to :class:`~distributed.deploy.spec.SpecCluster`
        (``asynchronous``...).

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
        gpus: str | int | None = None, cpu_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        args = ClusterArgs.of(locals())  # first: the keywords, and nothing else yet
        build.check_spec_cluster_keywords(kwargs)
        plan = plan_cluster(args)
        #: The named cluster this one keeps running after close() (None: an ordinary one).
        self._kept = KeptCluster.of(plan, args)
        self._start_progress = notebook.start_progress(self.host_rows, progress)
        self._started_workers = False
        placement = plan.placement
        settings = plan.settings
        self._logbook = LogBook(max_lines=settings.log_buffer_lines)
        self._pool = build.pool_for(plan)
        for hp in placement.all_hosts().values():
            self._pool.prepare(hp.host)  # a bad keyword or key file fails here, not mid-start
        self._stage = build.stage_for(plan, self._pool)
        #: The version gate while it runs beside the scheduler's start.
        self._gate: asyncio.Future[Any] | None = None
        launches = {key: plan.launch(hp) for key, hp in placement.worker_hosts.items()}
        # The agents report lost workers to the restarts and have the fleet stage a host
        # before its first agent there; the fleet ends the restarts of the workers it moves;
        # the restarts report lost hosts to the fleet. Lambdas reach what is built below.
        self._agents = WorkerAgents(
            self._pool, launches, self._logbook,
            lambda name, why: self._restarts.lost(name, why),
            prepare=lambda host: self._fleet.bring_up(host), describe=self._stage.describe)
        #: The only writer of the workers wanted and running, and of the placement in force.
        self._roster = Roster(self, plan, functools.partial(
            build.worker_spec, plan=plan, agents=self._agents))
        #: Hosts that failed to start workers while the cluster came up anyway (min_workers):
        #: ``user@host:port`` -> the error (the roster's, which alone writes it).
        self.failed_hosts = self._roster.failed_hosts
        self._fleet = Fleet(self._roster, self._pool, self._agents, self._stage,
                            staged=list(placement.initial_hosts()),
                            forget=lambda name: self._restarts.forget(name), kept=self._kept)
        self._restarts = WorkerRestarts(
            self._roster, settings.worker_restarts, plan.restart_workers,
            settings.heartbeat_timeout, window=settings.worker_restart_window,
            reach=self._pool.get, lost_after=settings.host_lost_after,
            on_host_lost=self._fleet.host_lost, on_give_up=self._fleet.worker_given_up,
        )
        self._gpus = gpustart.GpuStart(self._roster, self._pool)  # GPU hosts: probed at start
        scheduler = build.scheduler_spec(plan, self._stage, self._logbook, self._gate_passed)
        workers = {w.name: self._roster.spec_for(w.host, w.kwargs) for w in placement.workers}
        first = next(iter(placement.worker_hosts.values()))
        template = self._roster.spec_for(first.host)
        super().__init__(workers=workers, scheduler=scheduler, worker=template,
                         security=plan.security, name=name,
                         shutdown_on_close=shutdown_on_close, **kwargs)

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
        plan = plan_cluster(ClusterArgs(*args, **kwargs))
        return plan.remote_plans(as_connected=build.pool_for(plan).as_connected)

    # -- life cycle -----------------------------------------------------------
    async def _start(self) -> None:
        kept, roster = self._kept, self._roster
        if kept is not None:
            record = await kept.running(roster.plan.settings)
            if record is not None:  # it runs with this very spec: take it over
                adoption = kept.adoption(record, roster.plan, self._pool, self._logbook)
                self.scheduler = await adoption.scheduler
                roster.take_over(adoption.placement)  # its GPU workers pinned as recorded
                await super()._start()  # SpecCluster's start, around a scheduler that runs
                assert self.scheduler_comm is not None
                identity = await self.scheduler_comm.identity()
                for worker in adoption.workers(identity, lambda name: self._retire([name]),
                                               self._agents):
                    roster.install(worker)
                kept.adopted_from(adoption, self._pool, len(roster))
                await arming.arm(roster, self._agents, self.scheduler)  # they run on
                return
        await self._start_new()  # a named one is recorded once its first workers run too

    async def _start_new(self) -> None:
        # The scheduler is on the critical path: its host's connection takes
        # the first of the connect-parallelism slots. (Its errors are raised
        # where the scheduler awaits the same connection.)
        first = asyncio.ensure_future(self._pool.get(self._roster.placement.scheduler.host))
        first.add_done_callback(lambda f: f.cancelled() or f.exception())
        plan = self._stage.plan
        gate: asyncio.Future[Any] | None = None
        if plan.env is None and not plan.upload:
            # Only the version gate, on what every agent says of its host as it starts
            # (no probe of its own); the scheduler is created only once it has passed
            # (_gate_passed), so a mismatch starts no scheduler.
            gate = self._gate = asyncio.ensure_future(self._stage.gate_agents())
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
        first_hosts = self._roster.placement.first_worker_hosts().values()
        self._gpus.begin()
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
            self._roster.say(fwd.reason, log=logger, level=logging.INFO)

    async def _gate_passed(self) -> None:
        """Return once the version gate (if one runs beside the start) has passed; else raise."""
        if self._gate is not None:
            await asyncio.shield(self._gate)  # cancelled and awaited by _end_gate, not here
        await self._gpus.placed()  # the GPU hosts' workers, before the scheduler exists

    async def _end_gate(self) -> None:
        """Cancel a version gate still running, and wait until its remote probes are gone."""
        gate, self._gate = self._gate, None
        if gate is not None and not gate.done():
            gate.cancel()
            with contextlib.suppress(BaseException):
                await gate

    async def _start_or_fail_fast(self, first: asyncio.Future[Any]) -> None:
        start = asyncio.ensure_future(build.unwrapped(super()._start()))
        doomed = asyncio.ensure_future(build.connect_failures(
            self._roster.plan, self._pool, first, self._kept is not None))
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
                old = self._roster.release(name) if name in self._roster else None
                if old is not None:
                    with contextlib.suppress(Exception):
                        await old.close()
        initial, self._started_workers = not self._started_workers, True
        try:
            await super()._correct_state_internal()
            self._fleet.settle()
            if self._kept is not None and self.status == Status.running:
                await self._kept.note_wanted(len(self._roster))
        except SSHDeployError:
            if not initial and self.status in (Status.closing, Status.closed):
                return  # a scale's worker ended by close(): nothing to report
            failed = self._roster.failed_starts()
            if not failed:
                raise
            by_host: dict[str, SSHDeployError] = {}
            for w in failed:
                assert w.start_error is not None
                by_host.setdefault(self._pool.as_connected(w.host), w.start_error)
            if not initial:
                # scale/adapt/a restart runs in a callback: report, never raise into the loop.
                self._fleet.report_failed(failed, self._restarts.restarting)
                return
            wanted = self._roster.plan.min_workers
            if wanted is None or self._roster.running_count(besides=failed) < wanted:
                raise failures_by_host(by_host, "start workers") from None
            self._roster.leave_out(failed, by_host, log=logger)
        if initial and self._kept is not None:  # a new named one runs: record it, arm it
            await arming.record(self._kept, self.scheduler, self._roster, self._pool,
                                self._agents, left_out=list(self.failed_hosts))

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
                self._roster.plan.settings.start_timeout)
        except (OSError, asyncio.TimeoutError) as exc:  # closed below all the same
            logger.info("could not retire %s through the scheduler: %s", names, exc)

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
            When nothing of it runs any more, start it again from its record (a
            new cluster: no data, a new address). By default that is an error.
        **kwargs
            Other keywords of SSHCluster (``progress``...) or SpecCluster;
            they win over the record's.

        Raises
        ------
        ClusterNotFoundError
            No cluster of that name is known, or it no longer runs (and
            *start_if_gone* is False): nothing is started.
        """
        args = build.run_sync(reattach(name, host, connect_options))
        with flow.reattaching(not start_if_gone):  # a cluster that is gone is an error
            return cls(**{**args.kwargs(), **kwargs}, asynchronous=asynchronous)

    def shutdown(self) -> Any:
        """Stop a named cluster everywhere (every process, every host) and forget it.

        Returns when nothing of it is left on any host, as ``close()`` of an
        ordinary cluster does. On an ordinary cluster, the same as ``close()``.
        Also after ``close()`` (which detached it).
        """
        if self.status == Status.closed:  # detached already: no loop of ours runs
            stop = build.stop_everywhere(self._kept, self._roster.plan.settings.stop_timeout)
            return stop if self.asynchronous else build.run_sync(stop)
        return self.sync(self._shutdown)

    async def _shutdown(self) -> None:
        await self._close()  # a named cluster detaches: our side goes, it stays...
        # ... then it is stopped on every host
        await build.stop_everywhere(self._kept, self._roster.plan.settings.stop_timeout)

    async def _detach(self) -> None:
        """Leave a named cluster running: close our side (channels, forwards, connections)."""
        assert self._kept is not None
        # Its last scale is recorded before the connections go.
        await self._kept.note_wanted(len(self._roster))
        self.status = Status.closing
        if self._adaptive is not None:
            self._adaptive.stop()
        await self._fleet.close()
        await self._restarts.close()
        self._roster.forget_unstarted()
        await self._agents.detach()
        if isinstance(self.scheduler, RemoteScheduler):
            await self.scheduler.detach()
        for w in self.workers.values():
            w.status = Status.closed
        await self._pool.close()
        self._logbook.flush()
        await compat.close_base(self)

    @property
    def kept(self) -> KeptCluster | None:
        """The named-cluster side (None for an ordinary one), for ``dask-ssh up``."""
        return self._kept

    def submit_script(self, path: str | Path, args: Sequence[str] = (),
                      upload: Sequence[str] = (), env: Mapping[str, str] | None = None,
                      name: str | None = None, timeout: float | None = None) -> Job:
        """Run the script *path* as a job beside the scheduler of this named cluster; a
        :class:`~sshdeploy.named.jobclient.Job` once it runs (ConfigError: not named)."""
        return jobclient.submit_script(self, path, args, upload, env, name, timeout)

    def jobs(self) -> list[Job]:
        """Every job of this named cluster, oldest first (ConfigError: not named)."""
        return jobclient.jobs(self)

    @property
    def pool(self) -> HostPool:
        """The cluster's SSH connections (``pool.as_connected(host)``: how a host is reached)."""
        return self._pool

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
        self._roster.forget_unstarted()  # a restart cancelled before its worker started
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
        return self.sync(self._fleet.add_hosts, hosts, spare)

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
        return self.sync(self._fleet.remove_hosts, hosts)

    def readmit(self, host: str | Host) -> bool:
        """Let a quarantined or lost host take workers again (scale, adapt, moves).

        Returns False if the host was not taken out.
        """
        return self._fleet.readmit(host)

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
    def stage_reports(self) -> dict[str, HostPreStart]:
        """What the stage before the start did on each host (bytes sent, cached, seconds)."""
        return dict(self._stage.reports)

    # -- scaling ------------------------------------------------------------
    def new_worker_spec(self) -> dict[str, dict[str, Any]]:
        """Return the next worker for ``scale``/``adapt``, placed by free slots."""
        return self._roster.next_spec(self._fleet.health.excluded())

    def _threads_per_worker(self) -> int:
        return int(build.template_value(self._roster.placement, self.scheduler_info, "nthreads",
                                   "cores"))

    def _memory_per_worker(self) -> int:
        return int(parse_bytes(build.template_value(self._roster.placement, self.scheduler_info,
                                               "memory_limit", "memory")))

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
            A count that is not a whole number >= 0; ScaleError (a ConfigError) beyond
            the slots of GPU hosts, with the arithmetic. Nothing is changed.
        """
        scaling.check_count(n)
        scaling.check_open(self.status.name, n)
        wanted = scaling.wanted(n, memory, cores, self._memory_per_worker,
                                self._threads_per_worker)
        placement = self._roster.placement  # GPU hosts: refused beyond their slots (not adapt)
        scaling.check_gpu_room(n, memory, cores, wanted, placement, compat.adapting(self))
        # At most the slots (each host's cores and memory are divided among them): Fleet.room_for
        n = self._fleet.room_for(wanted, functools.partial(
            scaling.over_slots, n, memory, cores, wanted, placement=placement))
        if self._kept is not None:
            self._kept.missing = 0  # the user says how many: those missing are not added
        if n < len(self._roster):
            self._roster.shrink(n)
        return super().scale(n)

    def adapt(  # type: ignore[override]  # same parameters, checked
        self, Adaptive: Any = None, minimum: Any = 0,
        maximum: Any = math.inf, **kwargs: Any,
    ) -> Any:
        """Adapt between *minimum* and *maximum* workers (as in SpecCluster), bounds checked.

        Raises
        ------
        ConfigError
            A bound not a whole number >= 0, *minimum* above *maximum*, a closed cluster.
        """
        scaling.check_bounds(minimum, maximum)
        if self.status in (Status.closing, Status.closed):
            raise ConfigError("adapt()", f"the cluster is {self.status.name}",
                              remedy="Build a new SSHCluster to adapt again.")
        if Adaptive is not None:
            kwargs["Adaptive"] = Adaptive
        return super().adapt(minimum=minimum, maximum=maximum, **kwargs)

    _update_worker_status = compat.update_worker_status  # distributed#5407: no KeyError

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
        return host_status.host_rows(
            self._roster, self.scheduler if isinstance(self.scheduler, RemoteScheduler) else None,
            restarts=self._restarts, health=self._fleet.health, pool=self._pool,
            stage=self._stage, agents=self._agents, scheduler_info=self.scheduler_info)

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
        return self._roster.plan

    @property
    def placement(self) -> Placement:
        """Where every worker goes (``cluster_plan.placement``)."""
        return self._roster.placement

    async def _get_logs(
        self, cluster: bool = True, scheduler: bool = True, workers: Any = True
    ) -> Logs:
        """Return the captured remote output of the scheduler and every worker."""
        return build.logs(
            self._logbook, compat.cluster_log_lines(self) if cluster else None,
            self._roster.placement.scheduler.host.hostname if scheduler else None,
            [str(n) for n in self.worker_spec if workers is True or (workers and n in workers)])
