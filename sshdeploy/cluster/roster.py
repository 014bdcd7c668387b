"""The one writer of a running cluster's workers: wanted, running, failed, and what is said.

:class:`~distributed.deploy.spec.SpecCluster` keeps its workers in three
places: ``worker_spec`` (the workers wanted, by name), ``workers`` (the
process of each) and ``_created`` (every process it made, checked on close).
:class:`Roster` is the only code of sshdeploy that changes them (SpecCluster's
own constructor and methods aside), so forgetting a worker is written once
(:meth:`Roster.drop`). It also holds the plan in force (hosts added and
removed while the cluster runs change its placement), the workers and hosts
that failed to start, and is the one voice that tells the user what happened
(:meth:`Roster.say`: a log line and a line of ``get_logs()["Cluster"]``).

It is typed against distributed's SpecCluster, not against
:class:`sshdeploy.SSHCluster`: the collaborators it is handed to
(:mod:`sshdeploy.cluster.fleet`, :mod:`sshdeploy.cluster.restarts`,
:mod:`sshdeploy.cluster.host_status`) never see the cluster itself.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from distributed.core import Status
from distributed.deploy.spec import ProcessInterface, SpecCluster

from sshdeploy import compat
from sshdeploy.errors import SSHDeployError
from sshdeploy.hosts import ConnectionKey, Host
from sshdeploy.placement import (
    HostPlan,
    Placement,
    kept_on_scale_down,
    next_worker,
    slot_kwargs,
)
from sshdeploy.plan import ClusterPlan

from .processes import RemoteWorker

logger = logging.getLogger(__name__)

#: Builds the spec of one worker on a host from its keywords (``plan.worker_options``).
SpecOf = Callable[[HostPlan, Mapping[str, Any]], dict[str, Any]]


def first_line(err: BaseException) -> str:
    """The first line of an error's message ("" when it has none)."""
    text = str(err)
    return text.splitlines()[0] if text else ""


class Roster:
    """The workers of one SpecCluster, and the plan they are placed by.

    Parameters
    ----------
    cluster : SpecCluster
        The cluster whose ``worker_spec``, ``workers`` and ``_created`` this
        roster keeps (it must not change them itself).
    plan : ClusterPlan
        The plan the cluster starts from.
    spec_of : callable
        ``(host plan, worker keywords) -> spec`` of one worker
        (``{"cls": ..., "options": {"host": ..., ...}}``).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from sshdeploy.arguments import ClusterArgs
    >>> from sshdeploy.plan import plan_cluster
    >>> cluster = SimpleNamespace(worker_spec={}, workers={}, _created=set())
    >>> r = Roster(cluster, plan_cluster(ClusterArgs(["s", "a"])),
    ...            lambda hp, kw: {"options": {"host": hp.host, "kwargs": kw}})
    >>> r.want(*next(iter(r.next_spec(excluded=()).items())))
    >>> list(r), r.names_on(r.host_of("a-0").key)
    (['a-0'], ['a-0'])
    >>> r.drop("a-0"); len(r)
    0
    """

    def __init__(self, cluster: SpecCluster, plan: ClusterPlan, spec_of: SpecOf) -> None:
        self._cluster = cluster
        self._plan = plan
        self._spec_of = spec_of
        #: Hosts that failed to start workers while the cluster came up anyway (min_workers).
        self.failed_hosts: dict[str, SSHDeployError] = {}
        self._start_failures: dict[str, tuple[ConnectionKey, SSHDeployError]] = {}

    # -- the plan in force ---------------------------------------------------------
    @property
    def plan(self) -> ClusterPlan:
        """The plan in force: the one the cluster started from, with its hosts of now."""
        return self._plan

    @property
    def placement(self) -> Placement:
        """Where every worker goes (the plan's placement)."""
        return self._plan.placement

    def replace_plan(self, plan: ClusterPlan) -> None:
        """Use *plan* from now on (a named cluster armed once recorded)."""
        self._plan = plan

    def replace_placement(self, placement: Placement) -> None:
        """Use *placement* from now on (hosts added or removed while it runs)."""
        self._plan = dataclasses.replace(self._plan, placement=placement)

    # -- what the cluster wants and runs (read) -------------------------------------
    @property
    def status(self) -> Status:
        """The cluster's status."""
        return Status(self._cluster.status)

    def running(self) -> bool:
        """Whether the cluster runs (not starting, closing or closed)."""
        return bool(self._cluster.status == Status.running)

    def __contains__(self, name: object) -> bool:
        """Whether worker *name* is wanted."""
        return name in self._cluster.worker_spec

    def __len__(self) -> int:
        """How many workers are wanted."""
        return len(self._cluster.worker_spec)

    def __iter__(self) -> Iterator[str]:
        """The names of the workers wanted (a copy: the roster may change meanwhile)."""
        return iter([str(name) for name in self._cluster.worker_spec])

    def hosts(self) -> dict[str, Host]:
        """Where each worker wanted goes, by name."""
        return {str(name): spec["options"]["host"]
                for name, spec in self._cluster.worker_spec.items() if "options" in spec}

    def host_of(self, name: str) -> Host | None:
        """The host of worker *name* (None if it is not wanted)."""
        host: Host | None = self._cluster.worker_spec.get(name, {}).get(
            "options", {}).get("host")
        return host

    def names_on(self, key: ConnectionKey) -> list[str]:
        """The workers wanted on the host of *key*."""
        return [name for name, host in self.hosts().items() if host.key == key]

    def worker(self, name: str) -> ProcessInterface | None:
        """The process of worker *name* (None if there is none)."""
        process: ProcessInterface | None = self._cluster.workers.get(name)
        return process

    def running_count(self, besides: Collection[ProcessInterface] = ()) -> int:
        """How many worker processes run, *besides* excepted."""
        return sum(1 for w in self._cluster.workers.values()
                   if w not in besides and w.status == Status.running)

    def failed_starts(self) -> list[RemoteWorker]:
        """The workers whose start failed with an error of ours (not handled yet)."""
        return [w for w in compat.created(self._cluster)
                if isinstance(w, RemoteWorker) and w.start_error is not None]

    @property
    def scheduler_comm(self) -> Any:
        """The cluster's rpc to its scheduler (None before the start)."""
        return self._cluster.scheduler_comm

    # -- specs ------------------------------------------------------------------
    def spec_for(self, host: Host, kwargs: Mapping[str, Any] | None = None,
                 name: str | None = None) -> dict[str, Any]:
        """The spec of one more worker on *host*: *kwargs*, else worker *name*'s own
        (its GPU's on a GPU host), else the host's template."""
        hp = self.placement.worker_hosts[host.key]
        if kwargs is None and name is not None:
            kwargs = slot_kwargs(hp, name)
        return self._spec_of(hp, self._plan.worker_options(hp, kwargs))

    def next_spec(self, excluded: Collection[ConnectionKey]) -> dict[str, dict[str, Any]]:
        """``{name: spec}`` of the next worker by free slots (``{}``: nowhere to put it).

        No host of *excluded* (quarantined, lost) gets it.
        """
        running = [(host, name) for name, host in self.hosts().items()]
        chosen = next_worker(self.placement, running, exclude=excluded)
        if chosen is None:
            return {}
        host, name = chosen
        return {name: self.spec_for(host, name=name)}

    # -- changing them -------------------------------------------------------------
    def want(self, name: str, spec: dict[str, Any]) -> None:
        """Want worker *name* (started by the next :meth:`correct`)."""
        self._cluster.worker_spec[name] = spec

    def retire(self, name: str) -> None:
        """Want *name* no more: the next :meth:`correct` retires and closes its process."""
        self._cluster.worker_spec.pop(name, None)

    def shrink(self, n: int) -> None:
        """Want only *n* workers: the spares' go first, then those of the fullest hosts."""
        self._cluster.worker_spec = kept_on_scale_down(
            self._cluster.worker_spec, self.placement.worker_hosts, n, self.placement.spares)

    def clear(self) -> None:
        """Want no worker (before the workers of a running cluster are installed)."""
        self._cluster.worker_spec = {}

    def take_over(self, placement: Placement) -> None:
        """Want no worker, placed by *placement* from now on: a running named cluster's
        (its GPU workers' pins restored), before its workers are installed."""
        self.replace_placement(placement)
        self.clear()

    def drop(self, name: str, process: ProcessInterface | None = None) -> None:
        """Forget worker *name* now: not wanted, its process (gone or failed) not tracked.

        Parameters
        ----------
        name : str
        process : ProcessInterface, optional
            Its process as the caller knows it: the one tracked under *name* is
            dropped only if it is that one (a new one of the same name stays).
        """
        self._cluster.worker_spec.pop(name, None)
        current = self._cluster.workers.get(name)
        if current is not None and (process is None or current is process):
            del self._cluster.workers[name]
        process = process if process is not None else current
        if process is not None:
            compat.forget_created(self._cluster, process)

    def release(self, name: str) -> ProcessInterface | None:
        """Forget the process of *name*, still wanted: the next :meth:`correct` starts a new
        one (a restart). Returns the old process (None if there was none)."""
        old: ProcessInterface | None = self._cluster.workers.pop(name, None)
        if old is not None:
            compat.forget_created(self._cluster, old)
        return old

    def install(self, worker: RemoteWorker) -> None:
        """Take over *worker*, a process that already runs (it is wanted, with its spec)."""
        name = str(worker.name)
        self._cluster.worker_spec[name] = self.spec_for(worker.host, name=name)
        self._cluster.workers[name] = worker

    def forget_unstarted(self) -> None:
        """Forget the processes made but never started (SpecCluster's close asserts on them)."""
        compat.forget_unstarted(self._cluster)

    def correct(self) -> Awaitable[None]:
        """Start and stop processes until they match the workers wanted."""
        return compat.correct_state(self._cluster)

    # -- start failures ------------------------------------------------------------
    def note_start_failure(self, worker: RemoteWorker) -> None:
        """Keep why *worker* failed to start after start-up (for :meth:`start_failure`, the
        rows), forget it and clear its error (it is handled)."""
        err = worker.start_error
        assert err is not None
        self._start_failures[str(worker.name)] = (worker.host.key, err)
        self.drop(str(worker.name), worker)
        worker.start_error = None

    def start_failure(self, name: str) -> SSHDeployError | None:
        """Why worker *name* is not running after its last start failed (None: it runs,
        or its start did not fail)."""
        if name in self._cluster.workers:
            return None
        failure = self._start_failures.get(name)
        return None if failure is None else failure[1]

    @property
    def start_failures(self) -> Mapping[str, tuple[ConnectionKey, SSHDeployError]]:
        """Workers that failed to start after start-up: name -> (host key, error)."""
        return self._start_failures

    def leave_out(self, failed: Sequence[RemoteWorker], by_host: Mapping[str, SSHDeployError],
                  log: logging.Logger | None = None) -> None:
        """Drop workers that failed to start (never retried); report each host once.

        The cluster comes up without them (``min_workers``): each host is kept
        in :attr:`failed_hosts` and said once (on *log*).
        """
        for w in failed:
            self.drop(str(w.name), w)
            w.start_error = None
        for host, err in by_host.items():
            if host not in self.failed_hosts:
                self.failed_hosts[host] = err
                first = first_line(err)
                self.say(f"host {host} failed and is left out: {first}", log=log,
                         logged=f"{host}: no workers started there; going on without it "
                         f"({first})")

    # -- telling the user --------------------------------------------------------
    def say(self, message: str, *, log: logging.Logger | None = None,
            level: int = logging.WARNING, logged: str | None = None) -> None:
        """Tell the user *message*: a log line, and a line of ``get_logs()["Cluster"]``.

        Parameters
        ----------
        message : str
        log : Logger, optional
            The logger of the module that speaks (this module's by default).
        level : int
            The log line's level (WARNING by default).
        logged : str, optional
            The log line, when it says more than the cluster's log line.
        """
        (log or logger).log(level, "%s", message if logged is None else logged)
        compat.record_cluster_log(self._cluster, message)
