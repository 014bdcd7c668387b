"""Every private member of distributed that sshdeploy relies on, in one place.

:class:`sshdeploy.SSHCluster` is a :class:`~distributed.deploy.spec.SpecCluster`
and its processes are :class:`~distributed.deploy.spec.ProcessInterface`\\ s;
a few of the hooks it needs are private there. They are named here, and
reached only through the helpers below, so that a release of distributed
that renames one fails ``tests/unit/test_compat.py`` (a fast unit test)
instead of breaking restarts or close in production.

The agent (:mod:`sshdeploy.remote.agent`, which runs remotely and imports nothing of
sshdeploy) uses the members in :data:`NANNY_MEMBERS`; they are listed here
for the same test.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distributed.deploy.spec import ProcessInterface, SpecCluster

#: Methods of SpecCluster (or Cluster) that SSHCluster overrides or calls.
SPEC_CLUSTER_METHODS = (
    "_start",                   # overridden: prestart agents; unwrap the start error
    "_correct_state",           # called: start a restarted worker; overridden: notebook progress
    "_correct_state_internal",  # overridden: gather start errors per host
    "_close",                   # overridden: close agents, connections after SpecCluster's
    "_get_logs",                # overridden: remote output kept by the log book
    "_threads_per_worker",      # overridden: scale(cores=...)
    "_memory_per_worker",       # overridden: scale(memory=...)
    "_cluster_class_name",      # overridden: the repr's name
    "_supports_scaling",        # read: True for SSHCluster
    "_update_worker_status",    # overridden: a worker removed before its add arrived
)

#: Attributes SpecCluster sets on its instances and SSHCluster reads or changes.
SPEC_CLUSTER_ATTRIBUTES = (
    "_created",                 # the processes started: a restarted one is forgotten
    "_cluster_manager_logs",    # get_logs()["Cluster"]
    "worker_spec",
    "scheduler_comm",
    "shutdown_scheduler",
    "_adaptive",                # read: a scale called by adapt is capped, not refused
)

#: Attribute of distributed's Adaptive (AdaptiveCore): True while it scales.
ADAPTIVE_ATTRIBUTES = ("_adapting",)

#: Attribute of ProcessInterface instances: set when the process is finished.
PROCESS_ATTRIBUTES = ("_event_finished",)

#: What the remote agent uses of distributed.Nanny.
NANNY_MEMBERS = (
    "_on_worker_exit", "close_gracefully", "worker_address", "process", "memory_manager",
)

#: The message SpecCluster starts its start-up failures with.
START_FAILURE_PREFIX = "Cluster failed to start"

#: SpecCluster's logger, and what it logs when a failed start is closed.
SPEC_LOGGER = "distributed.deploy.spec"
CLOSED_WITHOUT_STARTING = "Cluster closed without starting up"


def start_error_cause(exc: BaseException) -> BaseException | None:
    """Return what SpecCluster wrapped in its ``RuntimeError("Cluster failed to start")``."""
    if isinstance(exc, RuntimeError) and str(exc).startswith(START_FAILURE_PREFIX):
        return exc.__cause__
    return None


def mark_finished(process: ProcessInterface) -> None:
    """Wake whoever awaits ``process.finished()`` (ProcessInterface's private event)."""
    process._event_finished.set()


def forget_created(cluster: SpecCluster, process: ProcessInterface) -> None:
    """Drop a finished process from the set SpecCluster checks on close."""
    cluster._created.discard(process)


async def correct_state(cluster: SpecCluster) -> None:
    """Start (or stop) processes until they match ``cluster.worker_spec``."""
    await cluster._correct_state()


def forget_unstarted(cluster: SpecCluster) -> None:
    """Drop processes that were created but never started (SpecCluster's close asserts on them)."""
    from distributed.core import Status

    for process in list(cluster._created):
        if process.status == Status.created:
            cluster._created.discard(process)


def created(cluster: SpecCluster) -> list[ProcessInterface]:
    """Return every process SpecCluster has started and not forgotten."""
    return list(cluster._created)


def record_cluster_log(cluster: SpecCluster, line: str) -> None:
    """Keep *line* for ``get_logs()["Cluster"]`` (``Cluster._log`` would also print it)."""
    cluster._cluster_manager_logs.append((datetime.datetime.now(), line))


def cluster_log_lines(cluster: SpecCluster) -> list[str]:
    """Return the cluster manager's own log lines (``get_logs()["Cluster"]``)."""
    return [line[1] for line in cluster._cluster_manager_logs]


class _DropClosedWithoutStarting(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != CLOSED_WITHOUT_STARTING


@contextmanager
def quiet_failed_start() -> Iterator[None]:
    """Hide SpecCluster's "closed without starting up" warning while a failed start closes.

    Our own error names the host and the cause; that line would only come
    first and say less.
    """
    log = logging.getLogger(SPEC_LOGGER)
    drop = _DropClosedWithoutStarting()
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


async def close_base(cluster: SpecCluster) -> None:
    """Close *cluster* as a plain ``Cluster`` (its comms and watchers), skipping SpecCluster's
    ``_close`` (which scales to 0 and terminates the scheduler): a named cluster detaching."""
    from distributed.deploy.cluster import Cluster

    await Cluster._close(cluster)


def adapting(cluster: SpecCluster) -> bool:
    """Whether *cluster*'s Adaptive is scaling it now (a ``scale`` called by ``adapt``)."""
    return bool(getattr(getattr(cluster, "_adaptive", None), "_adapting", False))


def update_worker_status(cluster: SpecCluster, op: str, msg: Any) -> None:
    """SpecCluster's ``_update_worker_status``, less its KeyError on a worker it never saw.

    A worker that dies and is removed before the cluster's watch received its
    ``add`` (tasks that kill their workers, a Nanny restarting them) arrives
    as a ``remove`` of an unknown address: SpecCluster raises ``KeyError``
    there, which ends the watch and comes out of ``close()``
    (dask/distributed#5407). Nothing is known of it, so nothing is forgotten.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> c = SimpleNamespace(scheduler_info={"workers": {}}, workers={})
    >>> update_worker_status(c, "remove", "tcp://10.0.0.3:4000")  # type: ignore[arg-type]
    >>> c.scheduler_info
    {'workers': {}}
    """
    if op == "remove" and msg not in cluster.scheduler_info.get("workers", {}):
        return
    SpecCluster._update_worker_status(cluster, op, msg)


def missing_members() -> list[str]:
    """Return every member named above that the installed distributed lacks.

    Instance attributes are looked for on the ``__init__`` source, since no
    instance can be built without an event loop.
    """
    import inspect

    from distributed import Nanny
    from distributed.deploy.cluster import Cluster

    missing = [f"SpecCluster.{m}" for m in SPEC_CLUSTER_METHODS if not hasattr(SpecCluster, m)]
    sources = inspect.getsource(SpecCluster.__init__) + inspect.getsource(Cluster.__init__)
    missing += [
        f"SpecCluster().{a}" for a in SPEC_CLUSTER_ATTRIBUTES if f"self.{a} =" not in sources
    ]
    pi_source = inspect.getsource(ProcessInterface.__init__)
    missing += [f"ProcessInterface().{a}" for a in PROCESS_ATTRIBUTES
                if f"self.{a} =" not in pi_source]
    from distributed.deploy.adaptive_core import AdaptiveCore

    core_source = inspect.getsource(AdaptiveCore.__init__)
    missing += [f"AdaptiveCore().{a}" for a in ADAPTIVE_ATTRIBUTES
                if f"self.{a} =" not in core_source]
    nanny_source = inspect.getsource(Nanny)
    missing += [f"Nanny.{m}" for m in NANNY_MEMBERS
                if not hasattr(Nanny, m) and f"self.{m} =" not in nanny_source]
    return missing
