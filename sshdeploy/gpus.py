"""GPU hosts: what a host has, which of its GPUs get a worker, and those workers. Pure.

A host's GPUs are found on the host itself (:mod:`sshdeploy.remote.gpus`: NVML
through ctypes, else ``nvidia-smi``) and read here as an :class:`Inventory`;
:func:`choose` picks the GPUs a request gets, and :func:`place_gpus` turns
the choices into workers. The start (:mod:`sshdeploy.cluster.gpustart`) and
``dask-ssh --check`` share these rules; no network here.

The request (``gpus=``, ``dask-ssh --gpus``, a hostfile's ``gpus=``; see
:func:`sshdeploy.hosts.check_gpus`):

``auto``
    every GPU the host shows (its ``CUDA_VISIBLE_DEVICES``, if set, decides
    which and in what order);
``free``
    those of them nobody else uses: a GPU that runs another user's compute
    process, or whose memory is used above ``sshdeploy.gpu-busy-memory``,
    is skipped, and the start says which and why;
a count ``N``
    the first N GPUs shown;
a list ``"0,2"``
    those GPUs, by nvidia-smi's index or by UUID.

Given to ``SSHCluster(gpus=...)``, ``auto`` and ``free`` let a host with no
GPU at all run its ordinary workers (a mixed cluster), and a host whose
GPUs are all taken run none; a host's own request (the hostfile), a count or
a list must be met, or the start fails with a :class:`~sshdeploy.errors.GPUError`
naming the host and what was found there. So does ``auto`` or ``free`` when
no host has a GPU to give.

Each GPU chosen gets one worker, named ``<host>-gpu<index>``, pinned by UUID
in ``CUDA_VISIBLE_DEVICES`` (nvidia-smi's and CUDA's indexes may disagree),
with ``resources={"GPU": 1}`` and one thread unless ``nthreads`` is given;
the host's memory is divided among all its workers as on any host. The
``cpu_workers`` CPU-only workers of a GPU host share the cores the GPU
workers leave, with ``resources={"CPU": <their threads>}`` and no GPU
visible (``CUDA_VISIBLE_DEVICES=""``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .arguments import jsonable
from .errors import GPUError, failures_by_host
from .hosts import ConnectionKey, Host
from .placement import (
    DASK_CUDA_OPTIONS,
    GpuSlot,
    HostPlan,
    Placement,
    WorkerEntry,
    worker_name,
)

__all__ = ["Gpu", "GpuChoice", "GpuProcess", "Inventory", "busy", "choose", "describe_request",
           "gpu_worker_name", "place_gpus", "record_slots", "requests", "restore_slots"]


def size(value: int | None) -> str:
    """A size in GiB as users read it (``?`` when not known).

    >>> size(16106127360), size(None)
    ('15.0 GiB', '?')
    """
    return "?" if value is None else f"{value / 2**30:.1f} GiB"


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on a GPU; ``uid`` None: not visible on the host (another
    container's, or hidden from this user)."""

    pid: int
    used_memory: int | None = None
    uid: int | None = None
    user: str | None = None

    def who(self) -> str:
        """``pid 4242 (bob, 9.0 GiB)``.

        >>> GpuProcess(4242, 2**30).who()
        'pid 4242 (a user not visible on the host, 1.0 GiB)'
        """
        owner = self.user or (f"uid {self.uid}" if self.uid is not None
                              else "a user not visible on the host")
        memory = "" if self.used_memory is None else f", {size(self.used_memory)}"
        return f"pid {self.pid} ({owner}{memory})"


@dataclass(frozen=True)
class Gpu:
    """One GPU as found on its host; ``index`` is nvidia-smi's (NVML's, PCI order).

    ``processes`` is None when they could not be read.
    """

    index: int
    uuid: str
    name: str = ""
    memory_total: int | None = None
    memory_used: int | None = None
    processes: tuple[GpuProcess, ...] | None = ()

    def about(self) -> str:
        """``gpu1 GPU-5f1c... Tesla T4 15.0 GiB (0.3 GiB used)``."""
        return (f"gpu{self.index} {self.uuid} {self.name} {size(self.memory_total)} "
                f"({size(self.memory_used)} used)")


def _gpu(data: Mapping[str, Any]) -> Gpu:
    procs = data.get("processes")
    return Gpu(index=int(data["index"]), uuid=str(data["uuid"]), name=str(data.get("name") or ""),
               memory_total=data.get("memory_total"), memory_used=data.get("memory_used"),
               processes=None if procs is None else tuple(
                   GpuProcess(int(p["pid"]), p.get("used_memory"), p.get("uid"), p.get("user"))
                   for p in procs))


@dataclass(frozen=True)
class Inventory:
    """What one host has, as :mod:`sshdeploy.remote.gpus` found it there.

    Attributes
    ----------
    host : str
        ``user@host:port``.
    source : {"nvml", "nvidia-smi"} or None
        What answered (None: neither).
    gpus : tuple of Gpu
        Every GPU found, by index (``CUDA_VISIBLE_DEVICES`` not applied yet).
    tried : tuple of str
        Why each way that did not answer failed.
    devices : int
        How many ``/dev/nvidia[0-9]*`` the host has.
    visible : str or None
        ``CUDA_VISIBLE_DEVICES`` in the workers' environment there.
    uid, user : optional
        Who the workers run as (processes of others make a GPU busy).
    cores : int or None
        The cores the workers may use there.
    dask_cuda : str or None
        dask-cuda's version where the workers can import it (None: not there;
        ``"<version> (old)"``: before 25.08, without the pieces sshdeploy uses).
    error : str or None
        The probe itself failed (no answer, not JSON): nothing is known.
    """

    host: str
    source: str | None = None
    gpus: tuple[Gpu, ...] = ()
    tried: tuple[str, ...] = ()
    devices: int = 0
    visible: str | None = None
    uid: int | None = None
    user: str | None = None
    cores: int | None = None
    dask_cuda: str | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, host: str, data: Mapping[str, Any]) -> Inventory:
        """Read the probe's JSON answer.

        >>> inv = Inventory.from_json("n3", {"source": "nvidia-smi", "gpus": [
        ...     {"index": 0, "uuid": "GPU-a", "name": "T4"}], "cores": 8})
        >>> inv.found(), inv.cores
        ('1 GPU (nvidia-smi)', 8)
        """
        return cls(host=host, source=data.get("source"),
                   gpus=tuple(_gpu(g) for g in data.get("gpus") or ()),
                   tried=tuple(str(t) for t in data.get("tried") or ()),
                   devices=int(data.get("devices") or 0), visible=data.get("visible"),
                   uid=data.get("uid"), user=data.get("user"), cores=data.get("cores"),
                   dask_cuda=data.get("dask_cuda"))

    def shown(self) -> tuple[list[Gpu], list[str]]:
        """The GPUs the workers may use, in ``CUDA_VISIBLE_DEVICES``'s order, and notes.

        As CUDA reads it: entries are indexes or UUIDs (or their prefixes); the
        first entry that names no GPU ends the list. Indexes are taken as
        nvidia-smi's (set ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` for CUDA to agree).

        >>> inv = Inventory("n", gpus=(Gpu(0, "GPU-a"), Gpu(1, "GPU-b"), Gpu(2, "GPU-c")),
        ...                 visible="2,GPU-a,7,1")
        >>> [g.index for g in inv.shown()[0]], inv.shown()[1]
        ([2, 0], ["CUDA_VISIBLE_DEVICES='2,GPU-a,7,1' there: '7' is not a GPU found there; CUDA \
ignores it and what follows"])
        """
        if self.visible is None:
            return list(self.gpus), []
        shown: list[Gpu] = []
        notes: list[str] = []
        for entry in (e.strip() for e in self.visible.split(",")):
            if entry.isdigit():
                found = [g for g in self.gpus if g.index == int(entry)]
            else:
                found = [g for g in self.gpus if entry and g.uuid.startswith(entry)]
            if len(found) != 1 or found[0] in shown:
                if entry:
                    why = "a MIG instance, which sshdeploy does not place yet" if \
                        entry.startswith("MIG-") else "not a GPU found there" if not found \
                        else "more than one GPU" if len(found) > 1 else "named twice"
                    notes.append(f"CUDA_VISIBLE_DEVICES={self.visible!r} there: {entry!r} is "
                                 f"{why}; CUDA ignores it and what follows")
                break
            shown.append(found[0])
        hidden = len(self.gpus) - len(shown)
        if hidden and not notes:
            notes.append(f"CUDA_VISIBLE_DEVICES={self.visible!r} there shows {len(shown)} of "
                         f"its {len(self.gpus)} GPUs")
        return shown, notes

    def warning(self) -> str | None:
        """GPU devices exist but neither NVML nor nvidia-smi answered (else None).

        >>> print(Inventory("n", devices=2, tried=("NVML: not found",)).warning())
        2 /dev/nvidia* device(s) exist there but no GPU could be read (NVML: not found)
        """
        if self.gpus or not self.devices:
            return None
        return (f"{self.devices} /dev/nvidia* device(s) exist there but no GPU could be read ("
                + "; ".join(self.tried) + ")")

    def found(self) -> str:
        """What was found, in a few words (``2 GPUs (nvml)``, ``no GPU (...)``)."""
        if self.error:
            return f"not known ({self.error})"
        if self.gpus:
            n = len(self.gpus)
            return f"{n} GPU{'s' if n != 1 else ''} ({self.source})"
        return "no GPU (" + ("; ".join(self.tried) or "nothing answered") + ")"


def busy(gpu: Gpu, uid: int | None, max_share: float) -> str | None:
    """Why *gpu* counts as used by others (``gpus="free"``), or None.

    Another user's compute process (one not visible on the host counts as
    another user's), or more than *max_share* of its memory used.

    >>> busy(Gpu(1, "GPU-b", processes=(GpuProcess(4242, 2**30, 1001, "bob"),)), 0, 0.1)
    'in use by pid 4242 (bob, 1.0 GiB)'
    >>> busy(Gpu(0, "GPU-a", memory_total=100, memory_used=50), 0, 0.1)
    '50% of its memory is used (above sshdeploy.gpu-busy-memory, 10%)'
    """
    others = [p for p in gpu.processes or () if p.uid is None or p.uid != uid]
    if others:
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        return "in use by " + ", ".join(p.who() for p in others[:3]) + more
    total, used = gpu.memory_total, gpu.memory_used
    if total and used is not None and used / total > max_share:
        return (f"{used / total:.0%} of its memory is used (above sshdeploy.gpu-busy-memory, "
                f"{max_share:.0%})")
    return None


def gpu_worker_name(hostname: str, gpu: Gpu) -> str:
    """The name of the worker of *gpu*: ``<host>-gpu<index>``.

    >>> gpu_worker_name("node3", Gpu(1, "GPU-b"))
    'node3-gpu1'
    """
    return f"{hostname}-gpu{gpu.index}"


@dataclass(frozen=True)
class GpuChoice:
    """The GPUs one host's request gets, those skipped and why, and notes to tell.

    ``chosen`` empty: with ``no_gpu`` the host has none to show (it runs its
    ordinary workers), else every GPU was taken (it runs none).
    """

    inventory: Inventory
    ask: str
    chosen: tuple[Gpu, ...] = ()
    skipped: tuple[tuple[Gpu, str], ...] = ()
    notes: tuple[str, ...] = ()
    no_gpu: bool = False

    @property
    def host(self) -> str:
        return self.inventory.host

    def names(self, hostname: str, cpu_workers: int) -> list[str]:
        """The workers this choice gives the host (GPU workers, then CPU-only ones)."""
        if not self.chosen:
            return []
        return [gpu_worker_name(hostname, g) for g in self.chosen] + [
            worker_name_of(hostname, i) for i in range(cpu_workers)]

    def say(self, hostname: str, cpu_workers: int = 0) -> str:
        """One line for the user: what was found, who gets what, what was skipped and why."""
        text = f"{self.host}: gpus={self.ask}: {self.inventory.found()}"
        if self.chosen:
            text += " -> " + ", ".join(self.names(hostname, cpu_workers))
        elif self.no_gpu:
            text += " -> its workers run without GPU"
        else:
            text += " -> no worker there"
        for gpu, why in self.skipped:
            text += f"; skipped gpu{gpu.index} ({gpu.uuid}): {why}"
        cuda = self.inventory.dask_cuda
        if self.chosen and cuda:
            text += (f"; dask-cuda {cuda} there: " + (
                "before 25.08, not used (plain Nannies)" if cuda.endswith(" (old)")
                else "its plugins and spilling set up each GPU worker"))
        return "; ".join([text, *self.notes])

    def check_dask_cuda(self, cuda: Mapping[str, Any]) -> None:
        """Refuse dask-cuda's options (*cuda*) for a host with GPU workers and no dask-cuda.

        >>> inv = Inventory("n3", "nvml", (Gpu(0, "GPU-a"),))
        >>> GpuChoice(inv, "auto", inv.gpus).check_dask_cuda({})
        >>> GpuChoice(inv, "auto", inv.gpus).check_dask_cuda({"rmm_pool_size": "1GB"})
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sshdeploy.errors.GPUError: [n3] gpus: dask-cuda's options rmm_pool_size are given, but \
dask-cuda is not installed there...
        """
        found = self.inventory.dask_cuda
        if cuda and self.chosen and (not found or found.endswith(" (old)")):
            there = (f"dask-cuda there is {found}, before 25.08" if found else
                     "dask-cuda is not installed there")
            raise GPUError(
                host=self.host, what=f"dask-cuda's options {', '.join(sorted(cuda))} are "
                f"given, but {there} (its GPU workers would be plain Nannies)",
                remedy="Install dask-cuda in the workers' environment on that host (pip "
                "install dask-cuda, or conda; 25.08 or later), or leave those options out of "
                "worker_options.")


def worker_name_of(hostname: str, index: int) -> str:
    """``<host>-<i>`` for a bare host name (the name of a CPU-only worker)."""
    return f"{hostname}-{index}"


def _failed(inv: Inventory, what: str, extra: Sequence[str] = ()) -> GPUError:
    shown, notes = inv.shown()
    warning = inv.warning()
    if warning:
        notes.append(warning)
    listed = ", ".join(g.about() for g in shown) if shown else ""
    cause = "found " + inv.found() + (f": {listed}" if listed else "")
    return GPUError(host=inv.host, what=what, cause="; ".join([cause, *notes, *extra]))


def choose(ask: str, inv: Inventory, max_share: float, required: bool = True) -> GpuChoice:
    """The GPUs of *inv* that the request *ask* gets (see the module docstring).

    Parameters
    ----------
    ask : str
        As :func:`sshdeploy.hosts.check_gpus` writes it.
    inv : Inventory
    max_share : float
        ``sshdeploy.gpu-busy-memory``.
    required : bool
        The host itself asked (a hostfile's ``gpus=``): ``auto`` and ``free``
        must find a GPU there too.

    Raises
    ------
    GPUError
        The request cannot be met there, naming the host and what was found.

    Examples
    --------
    >>> inv = Inventory("n3", "nvml", (Gpu(0, "GPU-a"), Gpu(1, "GPU-b", processes=(
    ...     GpuProcess(7, None, None),))), uid=0)
    >>> [g.index for g in choose("free", inv, 0.1).chosen], choose("1,", inv, 0.1).chosen[0].uuid
    ([0], 'GPU-b')
    >>> choose("3", inv, 0.1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sshdeploy.errors.GPUError: [n3] gpus: asked for 3 GPUs, the host shows 2: found 2 GPUs (nvml)...
    """
    if inv.error:
        raise GPUError(host=inv.host, what="could not look for GPUs", cause=inv.error)
    shown, notes = inv.shown()
    warning = inv.warning()
    if warning:
        notes.append(warning)
    if ask in ("auto", "free"):
        chosen, skipped = list(shown), []
        if ask == "free":
            chosen = []
            for gpu in shown:
                why = busy(gpu, inv.uid, max_share)
                if why:
                    skipped.append((gpu, why))
                else:
                    chosen.append(gpu)
        if not chosen and required:
            raise _failed(inv, f"gpus={ask} found no {'free ' if ask == 'free' else ''}GPU",
                          [f"gpu{g.index}: {why}" for g, why in skipped])
        return GpuChoice(inv, ask, tuple(chosen), tuple(skipped), tuple(notes),
                         no_gpu=not shown)
    if ask.isdigit():
        if len(shown) < int(ask):
            n = int(ask)
            raise _failed(inv, f"asked for {n} GPU{'s' if n != 1 else ''}, the host shows "
                          f"{len(shown)}")
        return GpuChoice(inv, ask, tuple(shown[:int(ask)]), (), tuple(notes))
    chosen = []
    for entry in (e for e in ask.split(",") if e):
        found = [g for g in shown if (g.index == int(entry) if entry.isdigit()
                                      else g.uuid.startswith(entry))]
        if len(found) != 1:
            hidden = any(g.index == int(entry) if entry.isdigit() else g.uuid.startswith(entry)
                         for g in inv.gpus)
            raise _failed(inv, f"GPU {entry} is " + (
                "hidden by CUDA_VISIBLE_DEVICES there" if hidden and not found
                else "not on the host" if not found else "more than one GPU"))
        chosen.append(found[0])
    return GpuChoice(inv, ask, tuple(chosen), (), tuple(notes))


def cuda_options(worker_options: Mapping[str, Any]) -> dict[str, Any]:
    """dask-cuda's options among *worker_options* (:data:`~sshdeploy.placement.DASK_CUDA_OPTIONS`).

    >>> cuda_options({"nthreads": 2, "rmm_pool_size": "10GB", "enable_cudf_spill": True})
    {'rmm_pool_size': '10GB', 'enable_cudf_spill': True}
    """
    return {k: v for k, v in worker_options.items() if k in DASK_CUDA_OPTIONS}


def gpu_kwargs(template: Mapping[str, Any], gpu: Gpu,
               cuda: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The keywords of the worker of *gpu*: pinned by UUID, one GPU resource, 1 thread.

    ``dask_cuda`` holds the GPU's NVML index and dask-cuda's options (*cuda*): the
    host's agent applies them through dask-cuda's plugins and spilling where
    dask-cuda is installed; without it the worker is a plain Nanny (and options
    given are an error).

    >>> kw = gpu_kwargs({"resources": {"MEM": 1}, "nthreads": 0}, Gpu(1, "GPU-b"),
    ...                 {"rmm_pool_size": "1GB"})
    >>> kw["env"], kw["resources"], kw["nthreads"], kw["dask_cuda"]
    ({'CUDA_VISIBLE_DEVICES': 'GPU-b'}, {'MEM': 1, 'GPU': 1}, 1, {'device_index': 1, \
'rmm_pool_size': '1GB'})
    """
    kw = dict(template)
    kw["nthreads"] = kw.get("nthreads") or 1
    kw["env"] = {**(template.get("env") or {}), "CUDA_VISIBLE_DEVICES": gpu.uuid}
    kw["resources"] = {**(template.get("resources") or {}), "GPU": 1}
    kw["dask_cuda"] = {"device_index": gpu.index, **(cuda or {})}
    return kw


def cpu_kwargs(template: Mapping[str, Any], cores: int | None, gpu_threads: int,
               n: int) -> dict[str, Any]:
    """The keywords of one of *n* CPU-only workers of a GPU host: the cores left over.

    >>> kw = cpu_kwargs({}, 16, 4, 2)
    >>> kw["nthreads"], kw["resources"], kw["env"]
    (6, {'CPU': 6}, {'CUDA_VISIBLE_DEVICES': ''})
    """
    kw = dict(template)
    if not kw.get("nthreads"):
        kw["nthreads"] = max(1, ((cores or 1) - gpu_threads) // max(1, n))
    kw["env"] = {**(template.get("env") or {}), "CUDA_VISIBLE_DEVICES": ""}
    kw["resources"] = {**(template.get("resources") or {}), "CPU": kw["nthreads"]}
    return kw


def _host_plan(hp: HostPlan, choice: GpuChoice, cuda: Mapping[str, Any]
               ) -> tuple[HostPlan, list[WorkerEntry]]:
    """*hp* with its GPU slots and CPU-only workers, and its workers at the start."""
    host = hp.host
    slots = tuple(GpuSlot(gpu_worker_name(host.hostname, g), gpu_kwargs(hp.template, g, cuda),
                          g.uuid, g.about()) for g in choice.chosen)
    if not slots:
        return replace(hp, slots=0), []
    threads = sum(int(s.kwargs["nthreads"]) for s in slots)
    cpu = cpu_kwargs(hp.template, choice.inventory.cores, threads, hp.cpu_workers)
    entries = [WorkerEntry(s.name, host, s.kwargs) for s in slots]
    entries += [WorkerEntry(worker_name(host, i), host, cpu) for i in range(hp.cpu_workers)]
    return replace(hp, slots=len(entries), template=cpu, gpu_slots=slots), entries


def place_gpus(placement: Placement, choices: Mapping[Any, GpuChoice]) -> Placement:
    """Return *placement* with the GPU hosts of *choices* (by host key) given their workers.

    A host with no GPU to show keeps its ordinary workers; every other one gets
    one worker per GPU chosen, then its ``cpu_workers`` (its place among the
    workers is its first entry's). The ``initial_workers`` put off until now
    are applied.

    Raises
    ------
    GPUError, MultiHostError
        ``auto`` / ``free`` found no GPU on any host (each host is named, with
        what it has); *initial_workers* more than the workers placed.

    Examples
    --------
    >>> from sshdeploy.placement import place
    >>> p = place(["s", "a", "b"], gpus="auto")
    >>> inv = Inventory("a", "nvml", (Gpu(0, "GPU-a"), Gpu(1, "GPU-b")))
    >>> q = place_gpus(p, {p.workers[0].host.key: choose("auto", inv, 0.1, False)})
    >>> [w.name for w in q.workers], [hp.slots for hp in q.worker_hosts.values()]
    (['a-gpu0', 'a-gpu1', 'b-0'], [2, 1])
    """
    if choices and not any(c.chosen for c in choices.values()):
        raise failures_by_host({c.host: _failed(
            c.inventory, f"gpus={c.ask} found no {'free ' if c.ask == 'free' else ''}GPU on any "
            "host", [f"gpu{g.index}: {why}" for g, why in c.skipped])
            for c in choices.values()}, "find GPUs")
    plans = dict(placement.worker_hosts)
    placed: dict[Any, list[WorkerEntry]] = {}
    for key, choice in choices.items():
        if choice.no_gpu and not choice.chosen:
            continue  # a host without GPU: its ordinary workers
        plans[key], placed[key] = _host_plan(plans[key], choice,
                                             cuda_options(placement.worker_options))
    workers: list[WorkerEntry] = []
    done: set[Any] = set()
    for w in placement.workers:
        key = w.host.key
        if key not in placed:
            workers.append(w)
        elif key not in done:  # a GPU host's workers, where its first entry was
            workers.extend(placed[key])
            done.add(key)
    for key, entries in placed.items():  # hosts planned with no worker (n_workers=0)
        if key not in done:
            workers.extend(entries)
    initial = placement.initial_workers
    if initial is not None:
        if isinstance(initial, bool) or not isinstance(initial, int) or \
                not 0 <= initial <= len(workers):
            raise GPUError(host=", ".join(c.host for c in choices.values()), role="gpus",
                           what=f"initial_workers={initial!r} is more than the {len(workers)} "
                           "workers the hosts hold", remedy="Give fewer initial workers.")
        workers = workers[:initial]
    return replace(placement, worker_hosts=plans, workers=workers, initial_workers=None)


def describe_request(hp: HostPlan, cuda: Mapping[str, Any] | None = None) -> str:
    """What the dry run says of a host's GPU request (before the host is probed).

    >>> print(describe_request(HostPlan(Host("n3"), "py", slots=1, gpus="auto", cpu_workers=2)))
    gpus=auto: one worker per GPU found there (n3-gpu<index>), CUDA_VISIBLE_DEVICES=its UUID, \
resources GPU=1, nthreads 1, started with spawn; plus 2 CPU-only workers on the cores left \
(resources CPU=<threads>); a host with no GPU runs its 1 worker(s) without; dask-ssh --check \
--gpus auto lists them
    """
    kind = {"auto": "one worker per GPU found there", "free": "one worker per GPU found there "
            "that nobody else uses"}.get(str(hp.gpus))
    if kind is None:
        kind = (f"one worker on each of the first {hp.gpus} GPUs found there" if
                str(hp.gpus).isdigit() else f"one worker on each of GPUs {hp.gpus}")
    nthreads = hp.template.get("nthreads") or 1
    text = (f"gpus={hp.gpus}: {kind} ({hp.host.hostname}-gpu<index>), CUDA_VISIBLE_DEVICES=its "
            f"UUID, resources GPU=1, nthreads {nthreads}, started with spawn")
    if hp.cpu_workers:
        n = hp.cpu_workers
        text += (f"; plus {n} CPU-only worker{'s' if n != 1 else ''} on the cores left "
                 "(resources CPU=<threads>)")
    if hp.gpus in ("auto", "free"):
        text += f"; a host with no GPU runs its {hp.slots} worker(s) without"
    if cuda:
        text += ("; dask-cuda options " + ", ".join(f"{k}={v!r}" for k, v in cuda.items())
                 + " on each GPU worker (dask-cuda must be installed there)")
    return text + f"; dask-ssh --check --gpus {hp.gpus} lists them"



def requests(hosts: Sequence[Host], gpus: str | None = None
             ) -> dict[ConnectionKey, tuple[str, bool]]:
    """Each worker host's GPU request and whether the host itself made it (``--check``).

    ``hosts[0]`` runs the scheduler (it is a worker host only when listed
    again); spares are not probed.

    >>> requests([Host("s"), Host("a"), Host("b", gpus="2"), Host("c", spare=True)], "auto")
    {(None, 'a', None): ('auto', False), (None, 'b', None): ('2', True)}
    """
    out: dict[ConnectionKey, tuple[str, bool]] = {}
    for h in hosts[1:]:
        ask = h.gpus or gpus
        if ask is not None and not h.spare:
            out.setdefault(h.key, (ask, h.gpus is not None and h.gpus != gpus))
    return out


def record_slots(placement: Placement) -> dict[str, Any]:
    """The GPU hosts' workers as a named cluster's record keeps them (JSON), by host as written:
    its slots, its CPU-only workers' keywords and each GPU worker (name, UUID, what the GPU
    is, keywords: its pin). :func:`restore_slots` gives them back to a later controller.

    >>> from sshdeploy.placement import place
    >>> p = place(["s", "a"], gpus="auto")
    >>> key = next(iter(p.worker_hosts))
    >>> q = place_gpus(p, {key: choose("auto", Inventory("a", "nvml", (Gpu(1, "GPU-b"),)), 0.1)})
    >>> record_slots(q)["a"]["gpu_slots"][0][:2], record_slots(p)
    (['a-gpu1', 'GPU-b'], {})
    """
    dropped: list[str] = []
    return {hp.host.as_written(): {
        "slots": hp.slots, "template": jsonable(dict(hp.template), dropped, "template"),
        "gpu_slots": [[s.name, s.uuid, s.about, jsonable(dict(s.kwargs), dropped, s.name)]
                      for s in hp.gpu_slots]}
        for hp in placement.worker_hosts.values() if hp.gpu_slots}


def restore_slots(placement: Placement, recorded: Mapping[str, Any] | None) -> Placement:
    """*placement* (planned again from a named cluster's record) with the GPU workers that
    :func:`record_slots` recorded: a worker restarted or added by a later controller
    (``from_name``) is pinned to its GPU as at the start.

    >>> from sshdeploy.placement import place, slot_kwargs
    >>> p = place(["s", "a"], gpus="auto")
    >>> key = next(iter(p.worker_hosts))
    >>> q = place_gpus(p, {key: choose("auto", Inventory("a", "nvml", (Gpu(1, "GPU-b"),)), 0.1)})
    >>> again = restore_slots(p, record_slots(q))
    >>> slot_kwargs(again.worker_hosts[key], "a-gpu1")["env"], again.worker_hosts[key].slots
    ({'CUDA_VISIBLE_DEVICES': 'GPU-b'}, 1)
    """
    if not recorded:
        return placement
    plans = dict(placement.worker_hosts)
    for key, hp in plans.items():
        entry = recorded.get(hp.host.as_written())
        if not entry or hp.gpus is None:
            continue
        plans[key] = replace(hp, slots=int(entry["slots"]), template=dict(entry["template"]),
                             gpu_slots=tuple(GpuSlot(name, dict(kwargs), uuid, about)
                                             for name, uuid, about, kwargs in entry["gpu_slots"]))
    return replace(placement, worker_hosts=plans)
