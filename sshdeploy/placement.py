"""Where each process goes: hosts and options in, scheduler and worker entries out.

Pure functions, no network: the same plan drives :class:`sshdeploy.SSHCluster`,
``dask-ssh --dry-run`` and :meth:`sshdeploy.SSHCluster.plan`.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from .errors import ConfigError
from .hosts import Host, parse_host

T = TypeVar("T")

#: worker_options keys that sshdeploy consumes (not passed to the worker class).
PLACEMENT_KEYS = ("n_workers", "nprocs")


def as_hosts(hosts: Sequence[str | Host] | None) -> list[Host]:
    """Return *hosts* as :class:`Host` values; ``None``/empty is a ValueError.

    Examples
    --------
    >>> [h.display() for h in as_hosts(["node1", "alice@node2:2222"])]
    ['node1', 'alice@node2:2222']
    """
    if not hosts:
        raise ConfigError(
            "hosts",
            "at least one host is needed (the first runs the scheduler, the others workers)",
            remedy="Pass e.g. hosts=['node1', 'node2', 'node3'].",
        )
    if isinstance(hosts, str):
        raise ConfigError("hosts", "expected a list of hosts, got a single string",
                          remedy=f"Write hosts=[{hosts!r}] or hosts={hosts.split()!r}.")
    return [h if isinstance(h, Host) else parse_host(str(h)) for h in hosts]


def per_host(value: Any, n: int, setting: str) -> list[Any]:
    """Broadcast a one-for-all value to *n* hosts, or check a per-host list's length.

    Examples
    --------
    >>> per_host({"a": 1}, 2, "connect_options")
    [{'a': 1}, {'a': 1}]
    >>> per_host(["/py1", "/py2"], 2, "remote_python")
    ['/py1', '/py2']
    """
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ConfigError(
                setting,
                f"a per-host list must have one entry per host: got {len(value)} for {n} hosts",
                remedy=f"Give {n} entries (in the order of hosts) or a single value for all.",
            )
        return list(value)
    return [value] * n


@dataclass(frozen=True)
class WorkerEntry:
    """One worker to start: its name, host and keyword arguments."""

    name: str
    host: Host
    kwargs: Mapping[str, Any]


@dataclass(frozen=True)
class Placement:
    """The whole plan: the scheduler's host and every worker entry.

    Attributes
    ----------
    scheduler : Host
    workers : list of WorkerEntry
    slots : dict
        Worker processes configured per host key (used by ``scale``).
    templates : dict
        Worker keyword arguments per host key (for workers added by ``scale``).
    python : dict
        Remote interpreter per host key (workers) and for the scheduler.
    connect_options : dict
        ``asyncssh.connect`` options per host key.
    """

    scheduler: Host
    scheduler_python: str
    workers: list[WorkerEntry] = field(default_factory=list)
    slots: dict[tuple[str | None, str, int | None], int] = field(default_factory=dict)
    templates: dict[tuple[str | None, str, int | None], Mapping[str, Any]] = field(
        default_factory=dict
    )
    hosts: dict[tuple[str | None, str, int | None], Host] = field(default_factory=dict)
    python: dict[tuple[str | None, str, int | None], str] = field(default_factory=dict)
    connect_options: dict[tuple[str | None, str, int | None], Mapping[str, Any] | None] = field(
        default_factory=dict
    )


def worker_kwargs(host: Host, worker_options: Mapping[str, Any]) -> dict[str, Any]:
    """Return the worker class keywords for *host*: its overrides win."""
    kw = {k: v for k, v in worker_options.items() if k not in PLACEMENT_KEYS}
    if host.nthreads is not None:
        kw["nthreads"] = host.nthreads
    if host.memory_limit is not None:
        kw["memory_limit"] = host.memory_limit
    return kw


def workers_per_entry(host: Host, worker_options: Mapping[str, Any]) -> int:
    """Return how many worker processes one host entry runs."""
    if host.slots is not None:
        return host.slots
    n = worker_options.get("n_workers", worker_options.get("nprocs", 1))
    if not isinstance(n, int) or n < 0:
        raise ConfigError("worker_options['n_workers']", f"must be an integer >= 0, got {n!r}")
    return n


def worker_name(host: Host, index: int) -> str:
    """Return the worker name ``<host>-<index>`` used everywhere."""
    return f"{host.hostname}-{index}"


def place(
    hosts: Sequence[str | Host] | None,
    worker_options: Mapping[str, Any] | None = None,
    remote_python: str | Sequence[str] | None = None,
    connect_options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
) -> Placement:
    """Plan a cluster: ``hosts[0]`` runs the scheduler, every later entry workers.

    Parameters
    ----------
    hosts : list of str or Host
        Repeat a host to put more workers there; a Host's ``slots`` says how
        many worker processes its entry runs (else ``n_workers``).
    worker_options : dict
        Keywords of the worker class, plus ``n_workers``.
    remote_python : str or list of str
        One interpreter for all, or one per host entry.
    connect_options : dict or list of dict
        ``asyncssh.connect`` keywords for all, or one per host entry.

    Returns
    -------
    Placement

    Examples
    --------
    >>> p = place(["node1", "node2", "node3"], {"n_workers": 2})
    >>> p.scheduler.hostname, [w.name for w in p.workers]
    ('node1', ['node2-0', 'node2-1', 'node3-0', 'node3-1'])
    """
    hs = as_hosts(hosts)
    wopts = dict(worker_options or {})
    pythons = per_host(remote_python, len(hs), "remote_python")
    copts = per_host(connect_options, len(hs), "connect_options")
    default_python = sys.executable
    counter: Counter[str] = Counter()
    scheduler = hs[0]
    plan = Placement(
        scheduler=scheduler,
        scheduler_python=scheduler.remote_python or pythons[0] or default_python,
    )
    for i, h in enumerate(hs):
        key = h.key
        if copts[i] is not None or key not in plan.connect_options:
            plan.connect_options[key] = copts[i]
        if i == 0:
            continue
        plan.hosts.setdefault(key, replace(h, slots=None))
        plan.python.setdefault(key, h.remote_python or pythons[i] or default_python)
        kw = worker_kwargs(h, wopts)
        plan.templates.setdefault(key, kw)
        n = workers_per_entry(h, wopts)
        plan.slots[key] = plan.slots.get(key, 0) + n
        for _ in range(n):
            name = worker_name(h, counter[h.hostname])
            counter[h.hostname] += 1
            plan.workers.append(WorkerEntry(name=name, host=plan.hosts[key], kwargs=kw))
    if not plan.slots:
        # Only a scheduler host: `scale` and `adapt` put workers beside the scheduler.
        key = scheduler.key
        plan.hosts[key] = replace(scheduler, slots=None)
        plan.python[key] = plan.scheduler_python
        plan.templates[key] = worker_kwargs(scheduler, wopts)
        plan.slots[key] = 0
    return plan


def next_worker(
    placement: Placement, running: Sequence[tuple[Host, str]]
) -> tuple[Host, str] | None:
    """Choose where a worker added by ``scale`` goes, and its name.

    The host with the most free slots wins (ties: first configured); when
    every slot is taken, the host with the fewest workers relative to its
    slots. *running* lists ``(host, name)`` of the workers already planned.

    Examples
    --------
    >>> p = place(["s", "a", "b"], {"n_workers": 1})
    >>> next_worker(p, [(p.workers[0].host, "a-0")])[1]
    'b-0'
    >>> next_worker(p, [(w.host, w.name) for w in p.workers])[1]
    'a-1'
    """
    if not placement.slots:
        return None
    used: Counter[tuple[str | None, str, int | None]] = Counter(h.key for h, _ in running)
    names = {n for _, n in running}

    def score(key: tuple[str | None, str, int | None]) -> tuple[int, float]:
        free = placement.slots[key] - used[key]
        if free > 0:
            return (0, -free)
        return (1, used[key] / max(1, placement.slots[key]))

    key = min(placement.slots, key=score)
    host = placement.hosts[key]
    i = 0
    while worker_name(host, i) in names:
        i += 1
    return host, worker_name(host, i)
