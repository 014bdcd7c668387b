"""The scheduler or Nannies an agent runs (:class:`Servers`), and the rules it shares.

:func:`worker_share` (a worker's share of its host) and :class:`RestartBudget`
(how often a worker may be restarted) are applied here and also used by the
controller (:mod:`sshdeploy.plan`, :mod:`sshdeploy.cluster.restarts`). Why a Nanny
closed is kept (:func:`note_close_reason`): a kept agent starts again a worker
that was lost with its scheduler (:data:`LOST_REASONS`), never one that was
meant to stop.
"""

# Keep this file Python 3.10 compatible: the standard library and other parts only.
from __future__ import annotations

import asyncio
import os
import signal
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .protocol import Message, decode_kwargs
from .wire import Wire


def worker_share(kw: Mapping[str, Any], slots: int, cores: int, memory: int) -> Message:
    """Return a worker's keywords with its share of the host filled in.

    The one rule, for ``dask-ssh`` and :class:`sshdeploy.SSHCluster` alike (as
    ``dask worker --nworkers`` and LocalCluster): a host planned to hold
    *slots* worker processes gives each ``nthreads = cores // slots`` (at
    least 1) and ``memory_limit = memory // slots``, *cores* and *memory*
    measured on the host itself. An explicit ``nthreads`` (not 0) or
    ``memory_limit`` (anything but ``"auto"``/None) wins.

    Examples
    --------
    >>> worker_share({}, 2, 8, 16 * 2**30) == {"nthreads": 4, "memory_limit": 8 * 2**30}
    True
    >>> worker_share({"nthreads": 3, "memory_limit": "4GiB"}, 2, 8, 2**34)
    {'nthreads': 3, 'memory_limit': '4GiB'}
    >>> worker_share({"memory_limit": "auto"}, 3, 2, 3000)   # more slots than cores
    {'memory_limit': 1000, 'nthreads': 1}
    """
    out = dict(kw)
    n = max(1, int(slots))
    if not out.get("nthreads"):
        out["nthreads"] = max(1, int(cores) // n)
    if out.get("memory_limit") in (None, "auto"):
        out["memory_limit"] = int(memory) // n
    return out


def describe_share(kw: Mapping[str, Any], slots: int) -> str:
    """Say what :func:`worker_share` will give each worker of a host (the dry run).

    Examples
    --------
    >>> describe_share({}, 2)
    "nthreads = the host's cores // 2 (at least 1), memory_limit = the host's memory / 2"
    >>> describe_share({"nthreads": 4, "memory_limit": "2GiB"}, 2)
    'nthreads = 4, memory_limit = 2GiB (given)'
    """
    n = max(1, int(slots))
    per = "" if n == 1 else f" // {n} (at least 1)"
    threads = (f"nthreads = {kw['nthreads']}" if kw.get("nthreads")
               else f"nthreads = the host's cores{per}")
    memory = ("memory_limit = the host's memory" + ("" if n == 1 else f" / {n}")
              if kw.get("memory_limit") in (None, "auto")
              else f"memory_limit = {kw['memory_limit']}")
    given = kw.get("nthreads") and kw.get("memory_limit") not in (None, "auto")
    return f"{threads}, {memory}" + (" (given)" if given else "")


def host_resources() -> tuple[int, int]:
    """This host's cores and memory as distributed counts them (cgroup limits included)."""
    from dask.system import CPU_COUNT
    from distributed.system import MEMORY_LIMIT

    return int(CPU_COUNT), int(MEMORY_LIMIT)


class RestartBudget:
    """At most *limit* restarts within any *window* seconds: a rate, not a lifetime count.

    A worker that ran fine for *window* seconds has its whole budget back;
    one dying in a loop (a memory limit it can never meet) spends it quickly.
    Used by the agent for a Nanny's worker process and by the controller
    (:mod:`sshdeploy.cluster.restarts`) for a lost Nanny or agent.

    Examples
    --------
    >>> budget = RestartBudget(2, window=60)
    >>> [budget.spend(t) for t in (0, 1, 2)], budget.spend(62), budget.used(62)
    ([True, True, False], True, 1)
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.deaths: list[float] = []

    def used(self, now: float) -> int:
        """Return how many restarts fall within the window ending at *now*."""
        self.deaths = [t for t in self.deaths if now - t < self.window]
        return len(self.deaths)

    def spend(self, now: float) -> bool:
        """Record a death at *now*; return whether a restart is still allowed."""
        allowed = self.used(now) < self.limit
        self.deaths.append(now)
        return allowed

    def describe(self) -> str:
        """The budget as a user reads it, e.g. ``3 restarts within 60 s``."""
        return f"{self.limit} restarts within {self.window:.0f} s"


def _size(value: Any) -> str:
    """A byte count as a user reads it (``2.0 GiB``); anything else as given.

    >>> _size(2 * 2**30), _size(10), _size("4GB")
    ('2.0 GiB', '10 bytes', '4GB')
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} bytes"


#: Why a Nanny closes when its worker lost the scheduler (an outage), in distributed's
#: words: distributed never reconnects a worker, it closes it and its Nanny once
#: the connection breaks (``distributed.comm.timeouts.tcp``, 30 s, into a cut).
#: A kept agent starts such a worker again (:meth:`~.main.Agent.revive`). Any other
#: reason was meant: retired or removed by the scheduler (``scheduler-...``), the
#: scheduler closed, a crash loop given up, stopped by us.
LOST_REASONS = (
    "worker-handle-scheduler-connection-broken",
    "worker-heartbeat-missing",
    "nanny-unregister-failed",
    "nanny-instantiate-failed",
    "nanny-instantiate-timeout",
)
#: The scheduler's handler that says how many workers its named cluster wants
#: (added by the scheduler's kept agent: :meth:`~.keep.Keep.scheduler_status`).
WANTED_OP = "sshdeploy_wanted"


def note_close_reason(server: Any) -> None:
    """Keep the first reason a Nanny is given to close, as ``server._sshdeploy_reason``.

    Its worker says why through ``close_gracefully`` (a lost scheduler, a
    retirement); the Nanny closes itself through ``close``. Both the methods
    and the handlers that call them are wrapped.
    """
    for attr, op, default in (("close_gracefully", "close_gracefully", "nanny-close-gracefully"),
                              ("close", "terminate", "nanny-close")):
        original = getattr(server, attr, None)
        if original is None:
            continue

        def wrapped(*args: Any, _original: Any = original, _default: str = default,
                    **kwargs: Any) -> Any:
            if getattr(server, "_sshdeploy_reason", None) is None:
                given = kwargs.get("reason")
                if given is None and args and isinstance(args[-1], str):
                    given = args[-1]
                server._sshdeploy_reason = str(given or _default)
            return _original(*args, **kwargs)

        setattr(server, attr, wrapped)
        handlers = getattr(server, "handlers", None)
        if isinstance(handlers, dict) and op in handlers:
            handlers[op] = wrapped


def no_restarts(server: Any) -> None:
    """Keep a Nanny from restarting its worker process (distributed's own switch)."""
    close_gracefully = getattr(server, "close_gracefully", None)
    if close_gracefully is not None and str(getattr(server, "status", "")).endswith("running"):
        try:
            close_gracefully(reason="sshdeploy: no restarts")
        except Exception:
            pass


#: What a GPU worker gets from dask-cuda (>= 25.08: ``dask_cuda.worker_common``), as its
#: CUDAWorker gives each of its Nannies, without CUDAWorker. Its options' defaults there.
DASK_CUDA_DEFAULTS: dict[str, Any] = {
    "device_memory_limit": "default", "enable_cudf_spill": False, "cudf_spill_stats": 0,
    "rmm_pool_size": None, "rmm_maximum_pool_size": None, "rmm_managed_memory": False,
    "rmm_async": False, "rmm_release_threshold": None, "rmm_log_directory": None,
    "rmm_track_allocations": False, "rmm_allocator_external_lib_list": None,
    "pre_import": None,
}


def _per_preload(argv: Any, n: int) -> list[list[str]]:
    """A Nanny's ``preload_argv`` as one list per preload (as distributed reads it)."""
    if not argv:
        return [[] for _ in range(n)]
    if isinstance(argv[0], str):
        return [list(argv) for _ in range(n)]
    return [list(a) for a in argv]


def with_dask_cuda(kw: dict[str, Any], cuda: Mapping[str, Any]) -> dict[str, Any]:
    """A GPU worker's Nanny keywords, set up by dask-cuda where it is installed here.

    *cuda* is the GPU's NVML index (``device_index``) and dask-cuda's options,
    by the names of its CUDAWorker (``rmm_pool_size``, ``device_memory_limit``,
    ``enable_cudf_spill``, ``jit_unspill``...). With dask-cuda (25.08 or later),
    the worker gets what CUDAWorker gives each of its Nannies: the plugins of
    ``dask_cuda.worker_common.worker_plugins`` (CPUAffinity, RMMSetup, PreImport,
    CUDFSetup), the spilling ``data`` of ``worker_data_function`` (its
    device-host file), and the ``dask_cuda.initialize`` preload that creates the
    CUDA context. Without dask-cuda: the keywords unchanged (a plain Nanny), or
    an error naming the options given.

    Raises
    ------
    RuntimeError
        Options given and no dask-cuda here, a dask-cuda too old, or an option
        this dask-cuda does not take.
    """
    options = {k: v for k, v in cuda.items() if k != "device_index"}
    named = ", ".join(sorted(options))
    os.environ.setdefault("RAPIDS_NO_INITIALIZE", "True")  # no CUDA context in the agent
    try:
        from dask_cuda import worker_common
    except ImportError as exc:
        import importlib.util

        if not options:
            return kw  # no dask-cuda (or one without worker_common): a plain Nanny
        found = importlib.util.find_spec("dask_cuda") is not None
        raise RuntimeError(
            f"dask-cuda's options {named} are given, but "
            + ("this dask-cuda has no worker_common (25.08 or later is needed)" if found
               else "dask-cuda is not installed here")
            + f" ({exc}): install dask-cuda (25.08 or later) in the workers' environment on "
            "this host, or leave those options out") from None
    import inspect

    given = {**DASK_CUDA_DEFAULTS, **options}
    index = int(cuda["device_index"])
    data_args = inspect.signature(worker_common.worker_data_function).parameters
    unknown = [k for k in ("jit_unspill",) if k in options and k not in data_args]
    if unknown:
        raise RuntimeError(f"dask-cuda's option {', '.join(unknown)} is not taken by the "
                           "dask-cuda installed here (JIT-unspill was removed in 26.06): "
                           "leave it out, or install an older dask-cuda")
    import logging

    import dask
    from dask.system import CPU_COUNT
    from distributed.worker_memory import parse_memory_limit

    memory = parse_memory_limit(kw.get("memory_limit"), int(kw.get("nthreads") or 1), CPU_COUNT,
                                logger=logging.getLogger("distributed.nanny"))
    data = worker_common.worker_data_function(
        device_memory_limit=given["device_memory_limit"], memory_limit=memory,
        enable_cudf_spill=given["enable_cudf_spill"],
        **({"jit_unspill": options["jit_unspill"]} if "jit_unspill" in options else {}))
    plugins = worker_common.worker_plugins(
        device_index=index, rmm_initial_pool_size=given["rmm_pool_size"],
        rmm_maximum_pool_size=given["rmm_maximum_pool_size"],
        rmm_managed_memory=given["rmm_managed_memory"], rmm_async_alloc=given["rmm_async"],
        rmm_release_threshold=given["rmm_release_threshold"],
        rmm_log_directory=given["rmm_log_directory"],
        rmm_track_allocations=given["rmm_track_allocations"],
        rmm_allocator_external_lib_list=given["rmm_allocator_external_lib_list"],
        pre_import=given["pre_import"], enable_cudf_spill=given["enable_cudf_spill"],
        cudf_spill_stats=given["cudf_spill_stats"])
    out = dict(kw)
    out["plugins"] = {*(kw.get("plugins") or ()), *plugins}
    stored = data(index)
    if stored is not None:  # None: dask's own spilling (a device without its own memory)
        out["data"] = stored
    preload = kw.get("preload")
    preload = dask.config.get("distributed.worker.preload") if preload is None else preload
    preload = [preload] if isinstance(preload, str) else list(preload or [])
    argv = _per_preload(kw.get("preload_argv") or dask.config.get(
        "distributed.worker.preload-argv"), len(preload))
    out["preload"] = [*preload, "dask_cuda.initialize"]
    out["preload_argv"] = [*argv, ["--create-cuda-context"]]
    return out


class Servers:
    """The scheduler or Nannies this agent runs: start, stop, watch.

    Parameters
    ----------
    wire : Wire
        Where ``ready``, ``failed``, ``stopped`` and ``exited`` go.
    on_exit : callable
        Awaited with the server's name when a server closes by itself.
    """

    def __init__(self, wire: Wire, on_exit: Callable[[str], Awaitable[None]]) -> None:
        self.wire = wire
        self.on_exit = on_exit
        self.running: dict[str, Any] = {}
        self.stopping: set[str] = set()
        #: One task per running server, awaiting its end (kept: tasks are weakly held).
        self.watchers: dict[str, asyncio.Task[None]] = {}
        #: Path of the worker-side tagger, given to every Nanny as a preload.
        self.tagger_path: str | None = None
        #: Keywords every worker gets unless its own say otherwise (a kept agent's death timeout).
        self.worker_defaults: dict[str, Any] = {}
        #: The scheduler the workers of this agent report to, and their credentials.
        self.scheduler_address: str | None = None
        self.security: Any = None
        #: The ``start_worker`` message of each worker (what starts it again), until stopped.
        self.messages: dict[str, Message] = {}
        #: Why each server that closed by itself closed (its Nanny's first reason).
        self.ended: dict[str, str] = {}
        #: Each worker's Nanny address (the scheduler lists it beside the worker).
        self.nannies: dict[str, str] = {}
        #: The last start error of each server that failed to start.
        self.errors: dict[str, str] = {}

    async def start(self, msg: Message, make: Callable[[dict[str, Any]], Any]) -> Any:
        """Build a server with *make*, start it within the deadline, watch it.

        Returns the running server, or None after emitting a ``failed`` event
        with the exception and its traceback.
        """
        name = str(msg.get("name", "scheduler"))
        if name in self.running:
            self.wire.emit(ev="failed", name=name, error=f"{name} is already running here", tb="")
            return None
        self.stopping.discard(name)
        timeout = float(msg.get("timeout", 60))
        try:
            server = make(decode_kwargs(msg))
            await asyncio.wait_for(server, timeout)
        except asyncio.TimeoutError:
            where = f" (is {msg['scheduler']} reachable from this host?)" if msg.get(
                "scheduler") else ""
            self.failed(name, f"did not start within {timeout:.0f} s{where}")
            return None
        except BaseException as exc:
            self.failed(name, f"{type(exc).__name__}: {exc}")
            return None
        self.running[name] = server
        watcher = asyncio.ensure_future(self.watch(name, server))
        self.watchers[name] = watcher
        watcher.add_done_callback(lambda task: self.forget_watcher(name, task))
        return server

    def failed(self, name: str, error: str) -> None:
        """Report a server that did not start (and keep why, for a kept agent's log)."""
        self.errors[name] = error
        self.wire.emit(ev="failed", name=name, error=error, tb=traceback.format_exc())

    async def ask_scheduler(self, op: str, timeout: float = 5.0) -> Any:
        """Call *op* on the workers' scheduler (a full handshake); None if it does not answer."""
        from distributed.core import rpc

        assert self.scheduler_address is not None
        args = self.security.get_connection_args("worker") if self.security else {}
        try:
            async with rpc(self.scheduler_address, timeout=timeout,
                           connection_args=args) as r:
                return await asyncio.wait_for(getattr(r, op)(), timeout)
        except Exception:
            return None

    async def scheduler_answers(self, timeout: float = 5.0) -> bool:
        """Whether the workers' scheduler answers an ``identity`` call (a full handshake)."""
        return await self.ask_scheduler("identity", timeout) is not None

    async def revival(self, name: str) -> str | None:
        """Whether lost worker *name* may start again now: None to start it, else why not yet.

        Asks its scheduler (one that does not answer: the caller waits). Not while
        the scheduler still lists the lost worker (it drops it once it notices
        the broken connection); never when a worker of that name runs elsewhere
        ("taken") or the cluster already has the workers it wants ("enough").
        """
        identity = await self.ask_scheduler("identity")
        if not isinstance(identity, dict):
            return "the scheduler does not answer"
        workers = dict(identity.get("workers") or {})
        mine = [w for w in workers.values() if str(w.get("name")) == name]
        if mine:
            if any(w.get("nanny") == self.nannies.get(name) for w in mine):
                return "the scheduler still lists the lost worker"
            return "taken"
        wanted = await self.ask_scheduler(WANTED_OP)
        if isinstance(wanted, int) and not isinstance(wanted, bool) and len(workers) >= wanted:
            return "enough"
        return None

    def forget_watcher(self, name: str, task: asyncio.Task[None]) -> None:
        if self.watchers.get(name) is task:
            del self.watchers[name]

    async def watch(self, name: str, server: Any) -> None:
        """Report a server that closes by itself (not through stop or shutdown)."""
        await server.finished()
        if name in self.running and name not in self.stopping:
            del self.running[name]
            reason = getattr(server, "_sshdeploy_gave_up", None)
            self.ended[name] = reason or str(getattr(server, "_sshdeploy_reason", None)
                                             or f"status {server.status}")
            self.wire.emit(ev="exited", name=name,
                           reason=reason or f"closed by itself (status {server.status})")
            await self.on_exit(name)

    def lost(self, name: str) -> str | None:
        """Why worker *name* closed if it was lost with its scheduler (None: meant, or unknown)."""
        why = self.ended.get(name)
        restart = self.messages.get(name, {}).get("restart") is not False
        return why if why in LOST_REASONS and restart else None

    async def start_scheduler(self, msg: Message) -> None:
        from distributed import Scheduler
        from distributed.utils import import_term

        cls = import_term(msg["cls"]) if msg.get("cls") else Scheduler
        server = await self.start(msg, lambda kw: cls(**kw))
        if server is None:
            return
        http = getattr(server, "http_server", None)
        self.wire.emit(ev="ready", name=msg.get("name", "scheduler"), address=server.address,
                       pid=os.getpid(), dashboard_port=http.port if http is not None else None)

    async def start_worker(self, msg: Message) -> Any:
        """Start the worker of *msg* (a Nanny by default); return it, or None if it failed."""
        from distributed import Nanny, Worker
        from distributed.utils import import_term

        name = msg["name"]
        self.scheduler_address = msg.get("scheduler") or self.scheduler_address
        self.messages[name] = msg
        self.ended.pop(name, None)

        def make(kw: dict[str, Any]) -> Any:
            cls = import_term(msg.get("cls") or "distributed.Nanny")
            self.security = kw.get("security") or self.security  # for scheduler_answers
            kw.setdefault("name", name)
            for key, value in self.worker_defaults.items():
                kw.setdefault(key, value)
            if msg.get("share") and isinstance(cls, type) and issubclass(cls, (Nanny, Worker)):
                kw = worker_share(kw, int(msg["share"]), *host_resources())
            cuda = kw.pop("dask_cuda", None)
            if isinstance(cls, type) and issubclass(cls, Nanny):
                self.add_tagger(name, kw)
            if cuda is not None:
                kw = with_dask_cuda(kw, cuda)
            server = cls(msg["scheduler"], **kw)
            if isinstance(server, Nanny):
                self.limit_restarts(server, msg.get("restart") is not False,
                                    msg.get("restart_limit"), msg.get("restart_window"),
                                    kw.get("memory_limit"))
                note_close_reason(server)
            return server

        server = await self.start(msg, make)
        if server is None:
            return None
        # dask-cuda's CUDAWorker (worker_class=...) has no address: its first Nanny's stands
        # for it (as distributed's SSHCluster, which waits for a worker of it to register).
        nannies = getattr(server, "nannies", None)
        first = nannies[0] if isinstance(nannies, list) and nannies else server
        process = getattr(first, "process", None)
        pid = getattr(getattr(process, "process", None), "pid", None) or os.getpid()
        address = getattr(first, "worker_address", None) or first.address
        self.nannies[name] = str(first.address)
        self.wire.emit(ev="ready", name=name, address=address, pid=pid, contact=first.address)
        return server

    @staticmethod
    def limit_restarts(
        server: Any, restart: bool, limit: Any, window: Any = None, memory_limit: Any = None
    ) -> None:
        """Let the Nanny restart its worker process at most *limit* times within *window* s.

        Past that it closes instead (a worker dying in a loop, e.g. a memory
        limit it can never meet), and the controller hears why in "exited",
        with the memory limit named. Never restarted if not *restart*.
        """
        on_exit = server._on_worker_exit
        budget = RestartBudget(limit if isinstance(limit, int) else 0,
                               float(window) if window else 60.0)

        async def watched(exitcode: Any) -> None:
            if not restart:
                no_restarts(server)
            elif isinstance(limit, int) and not budget.spend(time.monotonic()):
                memory = getattr(getattr(server, "memory_manager", None), "memory_limit",
                                 None) or memory_limit
                server._sshdeploy_gave_up = (
                    f"its worker process died {len(budget.deaths)} times within "
                    f"{budget.window:.0f} s (last exit code {exitcode}"
                    + (f"; memory limit {_size(memory)}" if memory else "")
                    + f"); not restarted again (sshdeploy.worker-restarts: {budget.describe()})"
                )
                no_restarts(server)
            await on_exit(exitcode)

        server._on_worker_exit = watched

    def add_tagger(self, name: str, kw: dict[str, Any]) -> None:
        """Make the Nanny's worker process tag its output with *name* (a preload)."""
        import dask

        kw["env"] = {**(kw.get("env") or {}), "SSHDEPLOY_LABEL": name}
        preload = kw.get("preload")
        if preload is None:
            preload = dask.config.get("distributed.worker.preload")
        if isinstance(preload, str):
            preload = [preload]
        if self.tagger_path is not None:
            kw["preload"] = [self.tagger_path, *list(preload or [])]

    async def stop(self, msg: Message) -> None:
        name = msg["name"]
        self.messages.pop(name, None)  # stopped on purpose: never started again
        server = self.running.get(name)
        if server is not None:
            self.stopping.add(name)
            await self.close(server, float(msg.get("timeout", 10)))
            self.running.pop(name, None)
            self.stopping.discard(name)
        self.wire.emit(ev="stopped", name=name)

    @staticmethod
    async def close(server: Any, timeout: float) -> None:
        """Close *server* within *timeout*, then kill its worker process if any is left."""
        try:
            await asyncio.wait_for(server.close(), timeout)
        except BaseException:
            pass
        process = getattr(getattr(server, "process", None), "process", None)
        pid = getattr(process, "pid", None)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    async def close_all(self, timeout: float) -> None:
        self.stopping.update(self.running)
        await asyncio.gather(*(self.close(s, timeout) for s in self.running.values()),
                             return_exceptions=True)
        self.running.clear()
        me = asyncio.current_task()  # a watcher may be the one shutting down
        for watcher in list(self.watchers.values()):
            if watcher is not me:
                watcher.cancel()

    def no_restarts(self) -> None:
        """Keep every Nanny from restarting the worker we are about to kill."""
        for server in list(self.running.values()):
            no_restarts(server)
