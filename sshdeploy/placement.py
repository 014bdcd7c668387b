"""Where each process goes: hosts and options in, scheduler and worker entries out.

Pure functions, no network: the same placement drives :class:`sshdeploy.SSHCluster`,
``scale``/``adapt`` and ``dask-ssh --dry-run`` (through :mod:`sshdeploy.plan`).
"""

from __future__ import annotations

import bisect
import getpass
import heapq
import os
import re
import sys
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import ConfigError
from .hostfile import parse_host
from .hosts import ConnectionKey, Host

#: worker_options keys that sshdeploy consumes (not passed to the worker class).
PLACEMENT_KEYS = ("n_workers", "nprocs")
#: dask-cuda's options of a GPU worker (its CUDAWorker's keywords), given in worker_options.
#: With GPU hosts they are kept out of the workers' keywords: each GPU worker gets them
#: under ``dask_cuda`` (:func:`sshdeploy.gpus.gpu_kwargs`), applied on its host through
#: dask-cuda's plugins and spilling (:mod:`sshdeploy.remote.agent.servers`).
DASK_CUDA_OPTIONS = ("rmm_pool_size", "rmm_maximum_pool_size", "rmm_managed_memory",
                     "rmm_async", "rmm_release_threshold", "rmm_log_directory",
                     "rmm_track_allocations", "rmm_allocator_external_lib_list",
                     "device_memory_limit", "enable_cudf_spill", "cudf_spill_stats",
                     "pre_import", "jit_unspill")


def as_hosts(hosts: Sequence[str | Host] | None) -> list[Host]:
    """Return *hosts* as :class:`Host` values; ``None``/empty is a ValueError.

    Examples
    --------
    >>> [h.as_written() for h in as_hosts(["node1", "alice@node2:2222"])]
    ['node1', 'alice@node2:2222']
    """
    if not hosts:
        raise ConfigError(
            "hosts",
            "at least one host is needed (the first runs the scheduler, the others workers)",
            remedy="Pass e.g. hosts=['node1', 'node2', 'node3'].",
        )
    if isinstance(hosts, str):
        split = [h for h in re.split(r"[\s,]+", hosts) if h]
        remedy = (f"Write hosts={split!r}." if len(split) > 1 else f"Write hosts=[{hosts!r}].")
        raise ConfigError("hosts", "expected a list of hosts, got a single string",
                          remedy=remedy)
    if isinstance(hosts, Host):
        return [hosts]
    if not isinstance(hosts, (list, tuple)):
        raise ConfigError("hosts", f"expected a list of hosts, got {type(hosts).__name__} "
                          f"{hosts!r}", remedy="Pass e.g. hosts=['node1', 'node2', 'node3'].")
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
class GpuSlot:
    """One GPU of a host and the worker pinned to it (:mod:`sshdeploy.gpus` makes them).

    Attributes
    ----------
    name : str
        The worker's name, ``<host>-gpu<index>``.
    kwargs : Mapping
        Its keywords (``env={"CUDA_VISIBLE_DEVICES": uuid}``, ``resources``...).
    uuid : str
        The GPU's UUID.
    about : str
        The GPU as a user reads it (``gpu1 GPU-5f1c... Tesla T4 15.0 GiB``).
    """

    name: str
    kwargs: Mapping[str, Any]
    uuid: str = ""
    about: str = ""


@dataclass(frozen=True)
class HostPlan:
    """Everything planned for one host.

    Attributes
    ----------
    host : Host
        The host, without ``slots`` (they are counted here).
    python : str
        The remote interpreter.
    connect_options : Mapping or None
        ``asyncssh.connect`` keywords given for this host (None: the defaults).
    slots : int
        Worker processes configured on this host (``scale`` fills them first).
    template : Mapping
        Keyword arguments of this host's workers (also those added by ``scale``);
        on a GPU host, of its CPU-only workers.
    gpus : str or None
        The GPU request (:func:`sshdeploy.hosts.check_gpus`); None: no GPU placement.
    cpu_workers : int
        CPU-only workers beside a GPU host's GPU workers.
    gpu_slots : tuple of GpuSlot
        Once the host was probed: one worker per GPU chosen, counted in ``slots``.
    """

    host: Host
    python: str
    connect_options: Mapping[str, Any] | None = None
    slots: int = 0
    template: Mapping[str, Any] = field(default_factory=dict)
    gpus: str | None = None
    cpu_workers: int = 0
    gpu_slots: tuple[GpuSlot, ...] = ()

    @property
    def key(self) -> ConnectionKey:
        """The connection identity of this host."""
        return self.host.key


@dataclass(frozen=True)
class Placement:
    """Where everything goes: the scheduler's host, every worker host and every worker.

    Attributes
    ----------
    scheduler : HostPlan
        Where the scheduler runs (its slots and template are unused).
    worker_hosts : dict of ConnectionKey to HostPlan
        Every host that runs (or may run, through ``scale``) workers, in order
        (the scheduler's host only if it runs workers too; see :meth:`all_hosts`).
    workers : list of WorkerEntry
        The workers to start, in order.
    spares : frozenset of ConnectionKey
        The worker hosts that are spares: no workers at the start, used by
        ``scale``/``adapt`` after every other host's slots, and where a lost
        host's workers go.
    """

    scheduler: HostPlan
    worker_hosts: dict[ConnectionKey, HostPlan] = field(default_factory=dict)
    workers: list[WorkerEntry] = field(default_factory=list)
    spares: frozenset[ConnectionKey] = frozenset()
    worker_options: Mapping[str, Any] = field(default_factory=dict)
    #: With GPU hosts: the workers to start, applied once the hosts were probed.
    initial_workers: int | None = None
    #: The cluster's own GPU request (``SSHCluster(gpus=...)``); a host's may differ.
    gpus: str | None = None

    def gpu_hosts(self) -> dict[ConnectionKey, HostPlan]:
        """The worker hosts with a GPU request (spares have none): the start probes them."""
        return {k: hp for k, hp in self.worker_hosts.items() if hp.gpus is not None}

    def all_hosts(self) -> dict[ConnectionKey, HostPlan]:
        """Every distinct host of the cluster, the scheduler's first."""
        return {self.scheduler.key: self.scheduler, **self.worker_hosts}

    def first_worker_hosts(self) -> dict[ConnectionKey, HostPlan]:
        """The worker hosts given a worker at the start (not spares, not left for later)."""
        keys = {w.host.key for w in self.workers}
        return {k: hp for k, hp in self.worker_hosts.items() if k in keys}

    def initial_hosts(self) -> dict[ConnectionKey, HostPlan]:
        """The hosts the start connects to: the scheduler's and those with a first worker."""
        return {self.scheduler.key: self.scheduler, **self.first_worker_hosts()}


def worker_kwargs(host: Host, worker_options: Mapping[str, Any], gpu: bool = False
                  ) -> dict[str, Any]:
    """Return the worker class keywords for *host*: its overrides win (with GPU hosts,
    *gpu*, dask-cuda's options are not keywords of the worker class).

    >>> worker_kwargs(Host("a", nthreads=2), {"n_workers": 2, "rmm_pool_size": "1GB"}, True)
    {'nthreads': 2}
    """
    skip = PLACEMENT_KEYS + DASK_CUDA_OPTIONS if gpu else PLACEMENT_KEYS
    kw = {k: v for k, v in worker_options.items() if k not in skip}
    if host.nthreads is not None:
        kw["nthreads"] = host.nthreads
    if host.memory_limit is not None:
        kw["memory_limit"] = host.memory_limit
    return kw


def slot_kwargs(hp: HostPlan, name: str) -> Mapping[str, Any]:
    """The keywords of worker *name* on *hp*: its GPU slot's, else the host's template."""
    for slot in hp.gpu_slots:
        if slot.name == name:
            return slot.kwargs
    return hp.template


def workers_per_entry(host: Host, worker_options: Mapping[str, Any]) -> int:
    """Return how many worker processes one host entry runs."""
    if host.slots is not None:
        return host.slots
    n = worker_options.get("n_workers", worker_options.get("nprocs", 1))
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ConfigError("worker_options['n_workers']", f"must be an integer >= 0, got {n!r}")
    return n


def name_order(name: str) -> tuple[str, int, str]:
    """Sort key of worker names: ``node2-10`` after ``node2-9``.

    Examples
    --------
    >>> sorted(["a-10", "a-9", "b"], key=name_order)
    ['a-9', 'a-10', 'b']
    """
    stem, _, index = str(name).rpartition("-")
    return (stem, int(index), "") if index.isdigit() else (str(name), -1, str(name))


def worker_name(host: Host, index: int) -> str:
    """Return the worker name ``<host>-<index>`` used everywhere."""
    return f"{host.hostname}-{index}"


def identity(host: Host, options: Mapping[str, Any] | None = None) -> ConnectionKey:
    """Return who and where a host entry connects to, however it is written.

    A missing user is the default one (``username`` in *options*, else this
    machine's user) and a missing port is 22, unless an SSH config file may
    give the host another port.

    Examples
    --------
    >>> import getpass
    >>> me = getpass.getuser()
    >>> identity(Host("node2"), {"config": []}) == identity(Host("node2", me, 22), {"config": []})
    True
    >>> identity(Host("node2", user="someone-else"))[0]
    'someone-else'
    """
    opts = options or {}
    user = host.user or opts.get("username") or getpass.getuser()
    config = opts.get("config", os.path.expanduser("~/.ssh/config"))
    has_config = bool(config) and (not isinstance(config, str) or os.path.exists(config))
    port = host.port or opts.get("port") or (None if has_config else 22)
    return (user, host.hostname, port)


def same_spelling(hosts: Sequence[Host], options: Sequence[Mapping[str, Any] | None]) -> list[Host]:
    """Write every entry of one host as its first entry does (one connection, one agent).

    Examples
    --------
    >>> import getpass
    >>> hs = same_spelling([Host("a"), Host("a", getpass.getuser(), 22)], [{"config": []}] * 2)
    >>> [h.key for h in hs]
    [(None, 'a', None), (None, 'a', None)]
    """
    first: dict[ConnectionKey, Host] = {}
    out = []
    # identity() reads the disk: once per host
    known: dict[tuple[ConnectionKey, int], ConnectionKey] = {}
    for h, opts in zip(hosts, options, strict=True):
        memo = (h.key, id(opts))
        ident = known.get(memo)
        if ident is None:
            ident = known[memo] = identity(h, opts)
        seen = first.setdefault(ident, h)
        out.append(h if seen is h else replace(h, user=seen.user, port=seen.port))
    return out


def with_spares(
    hosts: Sequence[str | Host] | None,
    spares: Sequence[str | Host] | None,
    remote_python: str | Sequence[str] | None = None,
    connect_options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
) -> list[Host] | None:
    """Return *hosts* followed by *spares*, each marked ``spare``.

    Raises
    ------
    ConfigError
        When a per-host list (``remote_python``, ``connect_options``) is given:
        it has no entries for the spares.

    Examples
    --------
    >>> [(h.hostname, h.spare) for h in with_spares(["s", "a"], ["b"])]
    [('s', False), ('a', False), ('b', True)]
    """
    if not spares:
        return None if hosts is None else as_hosts(hosts)
    if isinstance(spares, str):
        raise ConfigError("spares", "expected a list of hosts, got a single string",
                          remedy=f"Write spares=[{spares!r}].")
    for setting, value in (("remote_python", remote_python),
                           ("connect_options", connect_options)):
        if isinstance(value, (list, tuple)):
            raise ConfigError(
                setting, "is a per-host list, with no entries for the spares",
                remedy="Give the spares in hosts as Host(..., spare=True) (or hostfile "
                "lines with the word spare), with their own entries.")
    return [*as_hosts(hosts), *(replace(h, spare=True) for h in as_hosts(spares))]


def place(
    hosts: Sequence[str | Host] | None,
    worker_options: Mapping[str, Any] | None = None,
    remote_python: str | Sequence[str] | None = None,
    connect_options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    initial_workers: int | None = None,
    gpus: str | None = None,
    cpu_workers: int | None = None,
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
    initial_workers : int, optional
        Start only this many workers, filling the hosts in order (the other
        hosts are connected to only when ``scale``/``adapt`` place a worker
        there). Default: every slot of every host that is not a spare.
    gpus : str, optional
        The GPU request of every worker host whose entries give none
        (``Host.gpus``); spares get none. Such a host keeps its ordinary slots
        until it is probed (:func:`sshdeploy.gpus.place_gpus`), which also
        applies *initial_workers* then.
    cpu_workers : int, optional
        CPU-only workers beside the GPU workers of each GPU host.

    Returns
    -------
    Placement

    Raises
    ------
    ConfigError
        The scheduler's host is a spare, a host is listed both as a host
        and as a spare, or *initial_workers* is not a count the hosts hold.

    Examples
    --------
    >>> p = place(["node1", "node2", "node3"], {"n_workers": 2})
    >>> p.scheduler.host.hostname, [w.name for w in p.workers]
    ('node1', ['node2-0', 'node2-1', 'node3-0', 'node3-1'])
    """
    hs = as_hosts(hosts)
    wopts = dict(worker_options or {})
    pythons = per_host(remote_python, len(hs), "remote_python")
    copts = per_host(connect_options, len(hs), "connect_options")
    default_python = sys.executable
    hs = same_spelling(hs, copts)
    # A host's connect options: the last entry of that host that gives some.
    options: dict[ConnectionKey, Mapping[str, Any] | None] = {}
    for h, opts in zip(hs, copts, strict=True):
        if opts is not None or h.key not in options:
            options[h.key] = opts
    first = hs[0]
    if first.spare:
        raise ConfigError("hosts[0]", f"{first.as_written()} runs the scheduler; it cannot "
                          "be a spare", remedy="List the scheduler's host first, without spare.")
    spare_keys = {h.key for h in hs[1:] if h.spare}
    both = spare_keys & {h.key for h in hs[1:] if not h.spare}
    if both:
        host = next(h for h in hs if h.key in both)
        raise ConfigError("spares", f"{host.as_written()} is listed both as a host and as a "
                          "spare", remedy="List it once: as a host, or as a spare.")
    scheduler = HostPlan(
        host=first if first.slots is None else replace(first, slots=None),
        python=first.remote_python or pythons[0] or default_python,
        connect_options=options[first.key],
    )
    plans: dict[ConnectionKey, HostPlan] = {}
    workers: list[WorkerEntry] = []
    counter: Counter[str] = Counter()
    gpu = gpus is not None or any(h.gpus for h in hs[1:])
    for i, h in enumerate(hs[1:], start=1):
        plan = plans.get(h.key)
        if plan is None:
            plan = plans[h.key] = HostPlan(
                host=replace(h, slots=None, spare=False, gpus=None),
                python=h.remote_python or pythons[i] or default_python,
                connect_options=options[h.key],
                template=worker_kwargs(h, wopts, gpu),
                gpus=None if h.key in spare_keys else (h.gpus or gpus),
                cpu_workers=cpu_workers or 0,
            )
        elif h.gpus and plan.gpus != h.gpus and h.key not in spare_keys:
            plan = replace(plan, gpus=h.gpus)  # a later line of the host that names its GPUs
        n = workers_per_entry(h, wopts)
        plans[h.key] = replace(plan, slots=plan.slots + n)
        if h.spare:
            continue  # slots, no workers at the start
        kw = worker_kwargs(h, wopts, gpu)
        for _ in range(n):
            workers.append(WorkerEntry(worker_name(h, counter[h.hostname]), plan.host, kw))
            counter[h.hostname] += 1
    if not plans:
        # Only a scheduler host: `scale` and `adapt` put workers beside the scheduler.
        plans[first.key] = replace(scheduler, template=worker_kwargs(first, wopts, gpu))
    if any(hp.gpus is not None for hp in plans.values()):
        # How many workers the hosts hold is known once they are probed: applied then.
        return Placement(scheduler=scheduler, worker_hosts=plans, workers=workers,
                         spares=frozenset(spare_keys), worker_options=wopts,
                         initial_workers=initial_workers, gpus=gpus)
    if initial_workers is not None:
        if (isinstance(initial_workers, bool) or not isinstance(initial_workers, int)
                or not 0 <= initial_workers <= len(workers)):
            raise ConfigError(
                "initial_workers", f"must be a whole number from 0 to {len(workers)} (the "
                f"slots of the hosts that are not spares), got {initial_workers!r}",
                remedy="Give fewer initial workers, or more hosts or slots.")
        workers = workers[:initial_workers]
    return Placement(scheduler=scheduler, worker_hosts=plans, workers=workers,
                     spares=frozenset(spare_keys), worker_options=wopts)


def extend(placement: Placement, hosts: Sequence[str | Host], spare: bool = False) -> Placement:
    """Return *placement* with more worker hosts (``cluster.add_hosts``).

    A new host takes its slots from its own ``slots`` or ``n_workers``, and
    the user, port, remote Python and connect options of the first worker
    host unless it gives its own.

    Raises
    ------
    ConfigError
        A host is already one of the cluster's worker hosts.

    Examples
    --------
    >>> p = extend(place(["s", "a"], {"n_workers": 2}), ["b slots=3"], spare=True)
    >>> [(hp.host.hostname, hp.slots) for hp in p.worker_hosts.values()], len(p.spares)
    ([('a', 2), ('b', 3)], 1)
    """
    model = next(iter(placement.worker_hosts.values()), placement.scheduler)
    plans = dict(placement.worker_hosts)
    spares = set(placement.spares)
    wopts = placement.worker_options
    given = [h.with_defaults(user=model.host.user, port=model.host.port)
             for h in as_hosts(hosts)]
    seen: set[ConnectionKey] = set()
    for h in same_spelling(given, [model.connect_options] * len(given)):
        if h.key in seen:
            raise ConfigError("hosts", f"{h.as_written()} is given twice",
                              remedy="Give each host once (slots=N after it, as in a hostfile, "
                              "for more workers there).")
        seen.add(h.key)
        if h.gpus is not None:
            raise ConfigError("hosts", f"{h.as_written()}: gpus={h.gpus} cannot be given to a "
                              "host added to a running cluster (it is not probed for GPUs)",
                              remedy="Add it without gpus= (its workers run without GPU "
                              "placement), or list it when the cluster is built.")
        if h.key in plans:
            raise ConfigError("hosts", f"{h.as_written()} is already a host of the cluster",
                              remedy="Add hosts that are not in it (cluster.readmit() lets a "
                              "quarantined or lost host take workers again).")
        plans[h.key] = HostPlan(
            host=replace(h, slots=None, spare=False),
            python=h.remote_python or model.python,
            connect_options=model.connect_options,
            slots=workers_per_entry(h, wopts),
            template=worker_kwargs(h, wopts, bool(placement.gpu_hosts())),
        )
        if spare or h.spare:
            spares.add(h.key)
    return replace(placement, worker_hosts=plans, spares=frozenset(spares))


def without(placement: Placement, keys: Collection[ConnectionKey]) -> Placement:
    """Return *placement* without the worker hosts *keys* (``cluster.remove_hosts``)."""
    plans = {k: hp for k, hp in placement.worker_hosts.items() if k not in keys}
    workers = [w for w in placement.workers if w.host.key not in keys]
    return replace(placement, worker_hosts=plans, workers=workers,
                   spares=placement.spares - set(keys))


def next_worker(
    placement: Placement, running: Sequence[tuple[Host, str]],
    exclude: Collection[ConnectionKey] = (), taken: Collection[str] = (),
) -> tuple[Host, str] | None:
    """Choose where a worker added by ``scale`` goes, and its name.

    The host with the most free slots wins (ties: first configured), spares
    only when no other host has a free slot; when every slot is taken, the
    host with the fewest workers relative to its slots. *running* lists
    ``(host, name)`` of the workers already planned; hosts in *exclude*
    (quarantined, lost) get none; names in *taken* (workers still retiring)
    are not given again.

    Examples
    --------
    >>> p = place(["s", "a", "b"], {"n_workers": 1})
    >>> next_worker(p, [(p.workers[0].host, "a-0")])[1]
    'b-0'
    >>> next_worker(p, [(w.host, w.name) for w in p.workers])[1]
    'a-1'
    >>> next_worker(p, [], exclude=[p.workers[0].host.key])[1]
    'b-0'
    >>> next_worker(p, [(p.workers[0].host, "a-0")], taken=["b-0"])[1]
    'b-1'
    """
    keys = [k for k in placement.worker_hosts if k not in exclude]
    if not keys:
        return None
    used: Counter[ConnectionKey] = Counter(h.key for h, _ in running)
    names = {n for _, n in running} | set(taken)

    def score(key: ConnectionKey) -> tuple[int, bool, float]:
        slots = placement.worker_hosts[key].slots
        free = slots - used[key]
        if free > 0:
            return (0, key in placement.spares, -free)
        return (1, key in placement.spares, used[key] / max(1, slots))

    key = min(keys, key=score)
    host = placement.worker_hosts[key].host
    for slot in placement.worker_hosts[key].gpu_slots:  # a GPU host: its GPUs first
        if slot.name not in names:
            return host, slot.name
    i = 0
    while worker_name(host, i) in names:
        i += 1
    return host, worker_name(host, i)


def kept_on_scale_down(worker_spec: Mapping[str, Any], worker_hosts: Mapping[ConnectionKey, Any],
                       n: int, spares: Collection[ConnectionKey] = ()) -> dict[str, Any]:
    """Return the worker specs kept when ``scale`` goes down to *n* workers.

    SpecCluster removes the most recently added; this removes the spares'
    workers first (a spare is the reserve: the regular hosts are kept), then
    from the host carrying the most workers relative to its slots (among
    equals, the host met first in the specs), its highest name first.

    Parameters
    ----------
    worker_spec : dict
        Worker name to spec (``spec["options"]["host"]`` is its Host).
    worker_hosts : dict
        Host key to something with ``slots`` (a :class:`HostPlan`).
    n : int

    Examples
    --------
    >>> spec = {w: {"options": {"host": Host(w[0])}} for w in ["a-0", "a-1", "b-0"]}
    >>> plans = {Host("a").key: HostPlan(Host("a"), "py", slots=2),
    ...          Host("b").key: HostPlan(Host("b"), "py", slots=2)}
    >>> list(kept_on_scale_down(spec, plans, 2))
    ['a-0', 'b-0']
    >>> list(kept_on_scale_down(spec, plans, 2, spares={Host("b").key}))
    ['a-0', 'a-1']
    """
    if n <= 0:
        return {}
    keep = dict(worker_spec)
    by_host: dict[ConnectionKey, list[str]] = {}
    for name, spec in keep.items():
        by_host.setdefault(spec["options"]["host"].key, []).append(name)
    for names in by_host.values():
        names.sort(key=name_order)

    position = {name: i for i, name in enumerate(keep)}
    firsts = {k: sorted(position[name] for name in names) for k, names in by_host.items()}

    def entry(k: ConnectionKey) -> tuple[bool, float, int, ConnectionKey]:
        # Spares first; then most workers per slot; among equals, the host met first.
        slots = worker_hosts[k].slots if k in worker_hosts else 0
        return k not in spares, -len(by_host[k]) / max(1, slots), firsts[k][0], k

    # One heap entry per host, renewed when it loses a worker: O(n log n), where a
    # max over every host per removal took 20 s to close a 3000-host cluster.
    heap = [entry(k) for k in by_host]
    heapq.heapify(heap)
    while len(keep) > n:
        key = heapq.heappop(heap)[3]
        name = by_host[key].pop()
        keep.pop(name)
        firsts[key].pop(bisect.bisect_left(firsts[key], position[name]))
        if by_host[key]:
            heapq.heappush(heap, entry(key))
    return keep
