"""The remote agent: the program that runs on every host, sent over SSH.

This file is read as *text* by the controller and executed by the remote
Python (the loader, :mod:`sshdeploy.remote.loader`, reads it from stdin as the
part ``main`` and calls :func:`main`): sshdeploy need not be installed
on the hosts. It must therefore import nothing from sshdeploy and only the
standard library until the spec has been read; distributed is imported once,
after that. Importing it as :mod:`sshdeploy.remote.agent` is cheap (standard
library only), so the controller takes the wire constants from here.

Protocol (one JSON object per line):

controller -> agent, on stdin
    after the agent's code, the worker-side tagger's code (:mod:`sshdeploy.remote.tagger`,
    length-prefixed the same way), then a spec ``{"role", "label", "config",
    "env", "heartbeat", "mp_method"}``, then commands ``{"cmd": "start_scheduler"
    | "start_worker" | "stop" | "ping" | "shutdown", ...}``; keyword arguments
    travel pickled (base64) in ``"kw"``.
agent -> controller, on stdout, each line starting with :data:`EVENT`
    events ``{"ev": "hello" | "ready" | "failed" | "stopped" | "exited" |
    "logs" | "log" | "fatal" | "bye" | "stage", ...}``;
    remote output comes as ``logs`` events, one per read, each a list of
    ``(source, stream, line)``.

Stages of a start, before ``hello`` (``{"ev": "stage", "stage": S, "pid": P}``)
    ``login``
        printed by the remote shell (:func:`sshdeploy.bootstrap.build_command`)
        before the setup commands; P is the shell's pid, which is the pid of
        its process group and session (sshd makes the login shell a session
        leader), so ``kill -KILL -- -P`` (:func:`sshdeploy.bootstrap.build_kill_command`,
        run over a second channel) ends a start stalled in setup, with its
        children; the agent later runs with that pid too (``exec``).
    ``setup``
        printed by the shell once the setup commands succeeded (only if any).
    ``python``
        printed by the launcher, before it reads the agent's code.
    ``import``
        by the agent, before it imports dask and distributed.
    ``hello`` ends the stages: distributed imported, commands are read from
    now on. Before it the agent reads neither commands nor EOF, so a start
    aborted before ``hello`` must kill the group instead of closing stdin.

Everything the agent and its children write to their own stdout/stderr is
captured through a pipe the agent drains for its whole life and is forwarded
as ``logs`` events, so no remote process can ever block on a full pipe.
Workers started through a Nanny tag each line with their name (the preload
:mod:`sshdeploy.remote.tagger`) so lines reach the controller attributed to the
right worker.

The agent is the leader of its process group. When stdin reaches EOF (the
controller closed, crashed or lost the connection) or no message arrives
within the heartbeat timeout, it terminates every process of its group, then
kills what is left, then itself: nothing outlives the controller.

Start-up order, and why
    1. lead a process group, read the tagger and the spec, make the private
       temporary directory (``TMPDIR`` of the agent and all its children: see
       :class:`TempDir`), removed on every way out;
    2. import distributed, single-threaded (stdout goes to the channel's
       stderr meanwhile); a stalled import is ended by the controller killing
       the remote process group (see the ``stage`` events);
    3. workers only, with the ``forkserver`` method: fork multiprocessing's
       resource tracker (:func:`start_tracker`) and then the forkserver from
       this interpreter (:func:`start_zygote`): no new interpreter at all.
       One ``import distributed`` per host instead of two (the standard
       forkserver is a second interpreter importing it again, the standard
       tracker a third interpreter); forked workers inherit it. The fork must happen
       before any thread exists (a copied thread may hold a lock), hence this
       place. ``spawn`` (needed for CUDA) and ``fork`` start no forkserver;
    4. start the log pump, stdin reader and heartbeat watchdog; say hello.

Parts, wired together by :class:`Agent` (which holds the command table):
:class:`Wire` (events out, the write lock, last words, the log pump),
:class:`Inbox` (commands in, EOF and heartbeat), :class:`ProcessGroup` (the
group it leads and reaps), :class:`Servers` (the scheduler or Nannies it runs:
start, stop, watch) and :class:`TempDir` (its private temporary directory).
"""

# Keep this file Python 3.10 compatible and free of sshdeploy imports.
from __future__ import annotations

import asyncio
import base64
import json
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

#: The ``stage`` events of a start, in order: ``login`` and ``setup`` come from the
#: login shell (:func:`sshdeploy.bootstrap.build_command`), ``python`` from the
#: launcher (``remote/launcher.py``), ``import`` from here. Each has a row in
#: :data:`sshdeploy.stages.STAGES` (a unit test checks both ways).
STAGES = ("login", "setup", "python", "import")
STAGE_IMPORT = STAGES[3]

#: Starts every line a worker's tagger writes (see :mod:`sshdeploy.remote.tagger`).
TAG = "\x1esshdeploy\x1f"
#: Starts every event line on stdout, so that whatever else reaches stdout (a
#: login script that prints, a setup command) is never taken for an event.
EVENT = b"\x1esshdeploy-event\x1f"

#: Exit status of the agent after an emergency exit (EOF, heartbeat, SIGTERM).
EXIT_EMERGENCY = 3
#: Exit status of the agent when dask or distributed cannot be imported.
EXIT_IMPORT = 4
#: Exit status of the remote shell when the ``setup`` command failed (a value
#: the shell itself never uses).
EXIT_SETUP_FAILED = 121
#: Exit status the remote shell gives when the interpreter exists but cannot run.
EXIT_NOT_EXECUTABLE = 126
#: Exit status the remote shell gives when the interpreter is not found.
EXIT_NOT_FOUND = 127

#: The module name the worker-side tagger gets on the hosts.
TAGGER_MODULE = "sshdeploy_tagger"
#: A line of the agent's log pipe longer than this is forwarded in pieces.
MAX_LINE = 65536

Message = dict[str, Any]


def decode_kwargs(msg: Message) -> dict[str, Any]:
    """Return the keyword arguments a command carries (pickled, base64) in ``"kw"``."""
    return pickle.loads(base64.b64decode(msg["kw"])) if msg.get("kw") else {}


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


def read_block(stream: Any) -> bytes:
    """Read one length-prefixed block (``b"<n>\\n"`` then n bytes) from *stream*."""
    return bytes(stream.read(int(stream.readline())))


class LineSplitter:
    """Split a byte stream into lines in linear time, holding at most *limit* bytes.

    Only each new chunk is split; the unfinished line is kept as a list of
    pieces and handed out as a line of its own once it reaches *limit*.
    (The same as :class:`sshdeploy.remote.tagger.LineSplitter`: each file travels alone.)
    """

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self.pending: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Return the lines that *data* completes (without their newline)."""
        parts = data.split(b"\n")
        if len(parts) == 1:
            self.pending.append(data)
            self.size += len(data)
            if self.size >= self.limit:
                return self.flush()
            return []
        first = b"".join([*self.pending, parts[0]])
        last = parts[-1]
        self.pending = [last] if last else []
        self.size = len(last)
        return [first, *parts[1:-1]]

    def flush(self) -> list[bytes]:
        """Return what is pending as one line, or nothing."""
        line = b"".join(self.pending)
        self.pending, self.size = [], 0
        return [line] if line else []


class Wire:
    """Events out: the protocol fd (a dup of the original stdout) and its lock."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.label = "agent"
        #: Also given every forwarded line (a kept agent's log file), if set.
        self.tee: Callable[[list[tuple[str, str, str]]], None] | None = None
        #: No controller reads us any more: events are dropped.
        self.detached = False

    @staticmethod
    def encode(event: Message) -> bytes:
        return EVENT + (json.dumps(event) + "\n").encode()

    def emit(self, **event: Any) -> None:
        data = self.encode(event)
        with self.lock:
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self.detached:
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except (BlockingIOError, BrokenPipeError):
                return  # emergency mode (not reading) or gone: give up
            view = view[n:]

    def last_words(self, line: str) -> None:
        """Best effort, never blocking: the controller may be gone or not reading."""
        if not self.lock.acquire(timeout=0.2):
            return
        try:
            os.set_blocking(self.fd, False)
            self._write(self.encode(
                {"ev": "log", "src": self.label, "stream": "stderr", "line": line}))
        except OSError:
            pass
        finally:
            self.lock.release()

    def capture_output(self) -> int:
        """Route fd 1 and 2 (ours and our children's) into a pipe; return its read end."""
        r, w = os.pipe()
        os.dup2(w, 1)
        os.dup2(w, 2)
        os.close(w)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        return r

    def pump_logs(self, fd: int) -> None:
        """Forward the log pipe as ``logs`` events until EOF: one event per read."""
        splitter = LineSplitter()
        while True:
            data = os.read(fd, 65536)
            lines = splitter.feed(data) if data else splitter.flush()
            if lines:  # one event per read: cheap for floods, immediate for single lines
                parsed = [self.parse(raw) for raw in lines]
                if self.tee is not None:
                    self.tee(parsed)
                self.emit(ev="logs", lines=parsed)
            if not data:
                return

    def parse(self, raw: bytes) -> tuple[str, str, str]:
        """Return ``(source, stream, line)`` of one line of the log pipe."""
        line = raw.decode("utf-8", "replace")
        if line.startswith(TAG):
            parts = line[len(TAG):].split("\x1f", 2)
            if len(parts) == 3:
                return parts[0], parts[1], parts[2]
        return self.label, "stderr", line


class ProcessGroup:
    """The agent's process group and descendants: what it must stop before it exits."""

    @staticmethod
    def lead() -> None:
        """Lead our own process group and adopt orphaned descendants."""
        try:
            os.setpgid(0, 0)
        except OSError:
            pass  # already a session leader (sshd called setsid): we lead the group
        # Become a child subreaper: descendants that leave our process group
        # (setsid, double fork) are re-parented to us instead of to init, so
        # we still find and stop them (Linux >= 3.4; elsewhere the group only).
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        except Exception:
            pass

    @staticmethod
    def members() -> list[int]:
        """Live processes of our process group and every descendant, but us."""
        pgid = os.getpgid(0)
        me = os.getpid()
        parent: dict[int, int] = {}
        pids = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[-1].split()
            # fields[0] is state, fields[1] ppid, fields[2] pgrp
            if len(fields) < 3 or fields[0] == "Z":
                continue
            pid = int(entry)
            parent[pid] = int(fields[1])
            if int(fields[2]) == pgid:
                pids.add(pid)
        for pid in parent:
            p, seen = pid, 0
            while p in parent and seen < 64:
                p, seen = parent[p], seen + 1
                if p == me:
                    pids.add(pid)
                    break
        return sorted(pids)

    @staticmethod
    def ignores_term(pid: int) -> bool:
        """Whether *pid* ignores SIGTERM (multiprocessing's resource tracker does)."""
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("SigIgn:"):
                        return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
        except (OSError, ValueError):
            pass
        return False

    @staticmethod
    def alive(pid: int) -> bool:
        """Whether *pid* still runs (a zombie has ended: only its exit status is left)."""
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    def reap(self, grace: float) -> None:
        """TERM every other process of our group, then KILL what remains.

        A process that ignores TERM is killed at once rather than waited for.
        The whole of ``/proc`` is scanned once per round (:meth:`members`);
        the wait in between polls only the processes signalled: every agent
        of a host stops at the same time, and a scan per poll by each of them
        is what made a large cluster's close slow.
        """
        for sig in (signal.SIGTERM, signal.SIGKILL):
            targets = self.members()  # a new scan: also what was forked meanwhile
            if not targets:
                return
            for pid in targets:
                try:
                    if sig == signal.SIGTERM and self.ignores_term(pid):
                        os.kill(pid, signal.SIGKILL)
                    else:
                        os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 2.0)
            while any(self.alive(p) for p in targets) and time.monotonic() < deadline:
                time.sleep(0.01)
        # After KILL, every member found has ended (or is a zombie, or unkillable).


class RestartBudget:
    """At most *limit* restarts within any *window* seconds: a rate, not a lifetime count.

    A worker that ran fine for *window* seconds has its whole budget back;
    one dying in a loop (a memory limit it can never meet) spends it quickly.
    Used by the agent for a Nanny's worker process and by the controller
    (:mod:`sshdeploy.restarts`) for a lost Nanny or agent.

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


def no_restarts(server: Any) -> None:
    """Keep a Nanny from restarting its worker process (distributed's own switch)."""
    close_gracefully = getattr(server, "close_gracefully", None)
    if close_gracefully is not None and str(getattr(server, "status", "")).endswith("running"):
        try:
            close_gracefully(reason="sshdeploy: no restarts")
        except Exception:
            pass


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
            self.wire.emit(ev="failed", name=name,
                           error=f"did not start within {timeout:.0f} s{where}",
                           tb=traceback.format_exc())
            return None
        except BaseException as exc:
            self.wire.emit(ev="failed", name=name, error=f"{type(exc).__name__}: {exc}",
                           tb=traceback.format_exc())
            return None
        self.running[name] = server
        watcher = asyncio.ensure_future(self.watch(name, server))
        self.watchers[name] = watcher
        watcher.add_done_callback(lambda task: self.forget_watcher(name, task))
        return server

    async def scheduler_answers(self, timeout: float = 5.0) -> bool:
        """Whether the workers' scheduler answers an ``identity`` call (a full handshake)."""
        from distributed.core import rpc

        assert self.scheduler_address is not None
        args = self.security.get_connection_args("worker") if self.security else {}
        try:
            async with rpc(self.scheduler_address, timeout=timeout,
                           connection_args=args) as r:
                await asyncio.wait_for(r.identity(), timeout)
        except Exception:
            return False
        return True

    def forget_watcher(self, name: str, task: asyncio.Task[None]) -> None:
        if self.watchers.get(name) is task:
            del self.watchers[name]

    async def watch(self, name: str, server: Any) -> None:
        """Report a server that closes by itself (not through stop or shutdown)."""
        await server.finished()
        if name in self.running and name not in self.stopping:
            del self.running[name]
            reason = getattr(server, "_sshdeploy_gave_up", None)
            self.wire.emit(ev="exited", name=name,
                           reason=reason or f"closed by itself (status {server.status})")
            await self.on_exit(name)

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

    async def start_worker(self, msg: Message) -> None:
        from distributed import Nanny, Worker
        from distributed.utils import import_term

        name = msg["name"]
        self.scheduler_address = msg.get("scheduler") or self.scheduler_address

        def make(kw: dict[str, Any]) -> Any:
            cls = import_term(msg.get("cls") or "distributed.Nanny")
            self.security = kw.get("security") or self.security  # for scheduler_answers
            kw.setdefault("name", name)
            for key, value in self.worker_defaults.items():
                kw.setdefault(key, value)
            if msg.get("share") and isinstance(cls, type) and issubclass(cls, (Nanny, Worker)):
                kw = worker_share(kw, int(msg["share"]), *host_resources())
            if isinstance(cls, type) and issubclass(cls, Nanny):
                self.add_tagger(name, kw)
            server = cls(msg["scheduler"], **kw)
            if isinstance(server, Nanny):
                self.limit_restarts(server, msg.get("restart") is not False,
                                    msg.get("restart_limit"), msg.get("restart_window"),
                                    kw.get("memory_limit"))
            return server

        server = await self.start(msg, make)
        if server is None:
            return
        process = getattr(server, "process", None)
        pid = getattr(getattr(process, "process", None), "pid", None) or os.getpid()
        address = getattr(server, "worker_address", None) or server.address
        self.wire.emit(ev="ready", name=name, address=address, pid=pid, contact=server.address)

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


#: Python versions whose multiprocessing internals :func:`start_zygote` and
#: :func:`start_tracker` rely on (outside them, multiprocessing's own start).
FORKABLE_PYTHONS = ((3, 10), (3, 13))


def _fork_with_pipe() -> tuple[int, int, int]:
    """``os.pipe()``, then ``os.fork()``; return ``(pid, read_end, write_end)``.

    The pipe is closed again if the fork fails.
    """
    r, w = os.pipe()
    try:
        return os.fork(), r, w
    except BaseException:
        os.close(r)
        os.close(w)
        raise


def _detach_child(close_fds: list[int]) -> None:
    """In a child forked from the agent: let go of the agent's channel.

    Closes *close_fds* (the protocol fd, the log pipe's read end) and points
    stdin at /dev/null (``sys.stdin.close()`` would keep fd 0), so the SSH
    channel closes when the agent exits.
    """
    for fd in close_fds:
        os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def start_zygote(close_fds: list[int]) -> int | None:
    """Fork multiprocessing's forkserver from this interpreter; return its pid.

    The standard forkserver is a new interpreter that imports distributed a
    second time (~0.4 CPU-s per host). Forking it from the agent, which has
    just imported distributed, gives the same server (``forkserver.main``,
    the same socket protocol, the same preload list, all already imported)
    at no import cost; workers forked from it inherit distributed too. It is
    installed in the ``forkserver._forkserver`` singleton exactly as
    ``ForkServer.ensure_running`` would (its address, alive fd and pid), so
    multiprocessing uses it and restarts a normal one if it dies.

    Call it single-threaded (no lock held by another thread is copied). The
    child closes *close_fds* (the protocol fd, the log pipe's read end) and
    stdin, so the SSH channel closes when the agent exits; it stays in our
    process group, so :meth:`ProcessGroup.reap` stops it, and it exits by
    itself when the agent does (its alive pipe closes).

    Returns None, having done nothing, where the private names it relies on
    differ (Python outside 3.10-3.13 or a changed ForkServer): the caller
    then starts the normal forkserver.
    """
    import socket
    from multiprocessing import connection, forkserver, util

    server = getattr(forkserver, "_forkserver", None)
    names = ("_forkserver_address", "_forkserver_alive_fd", "_forkserver_pid",
             "_preload_modules")
    low, high = FORKABLE_PYTHONS
    if not (low <= sys.version_info[:2] <= high) or server is None or not all(
            hasattr(server, n) for n in names) or hasattr(server, "_forkserver_authkey"):
        return None
    if server._forkserver_pid is not None:
        return None  # already running
    # Not under server._lock: the child would inherit it locked.
    preload = list(server._preload_modules)
    with socket.socket(socket.AF_UNIX) as listener:
        # In our private TMPDIR, like multiprocessing's own (pymp-*/listener-*).
        address = connection.arbitrary_address("AF_UNIX")  # type: ignore[attr-defined]
        listener.bind(address)
        os.chmod(address, 0o600)
        listener.listen()
        pid, alive_r, alive_w = _fork_with_pipe()
        if pid == 0:  # the forkserver
            try:
                # Not the agent's handler: it would reap the agent's whole group.
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.close(alive_w)
                _detach_child(close_fds)
                # Imported already: the preload loop only checks.
                forkserver.main(listener.fileno(), alive_r, preload)
            finally:
                os._exit(0)
        os.close(alive_r)
    server._forkserver_address = address
    server._forkserver_alive_fd = alive_w
    server._forkserver_pid = pid
    util.debug("sshdeploy: forkserver forked from the agent, pid %d", pid)
    return pid


def start_tracker(close_fds: list[int]) -> int | None:
    """Fork multiprocessing's resource tracker from this interpreter; return its pid.

    The first worker would otherwise start the standard tracker: a new
    interpreter (``python -c 'from multiprocessing.resource_tracker import
    main; main(fd)'``, ~0.1 CPU-s per host). Forked, it is the same program
    (``resource_tracker.main`` reading the same pipe) at the cost of a fork.
    It is installed in the ``resource_tracker._resource_tracker`` singleton
    exactly as ``ResourceTracker.ensure_running`` would (the pipe's write end
    and the pid), so multiprocessing uses it, passes it to the forkserver's
    children, and restarts a normal one if it dies.

    Call it single-threaded, before :func:`start_zygote` (the forkserver then
    holds the tracker's pipe, as the standard one does). The child closes
    *close_fds* and stdin (the SSH channel closes when the agent exits); its
    stderr stays the agent's log pipe, so what it reports about leaked
    resources reaches the controller. It ignores SIGTERM, like the standard
    tracker (:meth:`ProcessGroup.reap` kills it), and exits by itself when
    every holder of the pipe has exited.

    Returns None, having done nothing, where the private names it relies on
    differ (Python outside 3.10-3.13 or a changed ResourceTracker): the first
    worker then starts the normal tracker.
    """
    from multiprocessing import resource_tracker

    tracker = getattr(resource_tracker, "_resource_tracker", None)
    low, high = FORKABLE_PYTHONS
    if not (low <= sys.version_info[:2] <= high) or tracker is None or not all(
            hasattr(tracker, n) for n in ("_fd", "_pid", "_lock", "_check_alive")) or not callable(
            getattr(resource_tracker, "main", None)):
        return None
    if tracker._fd is not None:
        return None  # already running
    pid, r, w = _fork_with_pipe()
    if pid == 0:  # the tracker
        try:
            os.close(w)
            _detach_child(close_fds)
            resource_tracker.main(r)  # ignores SIGINT/SIGTERM, reads until every writer is gone
        finally:
            os._exit(0)
    os.close(r)
    tracker._fd = w
    tracker._pid = pid
    return pid


#: Where a named cluster keeps its files on a host, under ``$XDG_STATE_HOME``
#: (default ``~/.local/state``): ``sshdeploy/clusters/<name>/``.
KEEP_ROOT = ("sshdeploy", "clusters")
#: Files of a named cluster's directory on a host.
KEEP_CLUSTER, KEEP_STATUS, KEEP_END = "cluster.json", "status.json", "end.json"
#: A log file of a kept agent is rotated (one older copy, ``.1``) past this size.
KEEP_LOG_MAX = 8 * 2**20
#: Seconds between two writes of the scheduler's status file / scheduler probes.
KEEP_TICK = 1.0


def state_home() -> str:
    """Return ``$XDG_STATE_HOME``, else ``~/.local/state`` (here and on the controller)."""
    return os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state")


def keep_dir(name: str) -> str:
    """Return the directory of the named cluster *name* (its scheduler's files)."""
    return os.path.join(state_home(), *KEEP_ROOT, name)


def keep_host_dir(name: str) -> str:
    """Return this host's own part of it: ``hosts/<hostname>/`` (agent records, logs).

    Home directories are often shared by several hosts (NFS): pids and log
    files of one host must never be taken for another's.
    """
    import platform

    return os.path.join(keep_dir(name), "hosts", platform.node() or "localhost")


def private_dirs(path: str) -> None:
    """Make *path* and its missing parents, each 0700 (only this user reads a cluster's files)."""
    old = os.umask(0o077)
    try:
        os.makedirs(path, exist_ok=True)
    finally:
        os.umask(old)


def start_time(pid: int) -> str | None:
    """Return when *pid* started (clock ticks since boot), or None if it does not run.

    With the pid it names one process for good: a pid reused after a reboot
    or a crash has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def write_json(path: str, data: Any) -> None:
    """Write *data* as JSON to *path* atomically (a temporary file, then rename), mode 0600."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def keep_agents(directory: str) -> list[Message]:
    """Return the agent records of a cluster directory, each with ``alive``."""
    out = []
    agents = os.path.join(directory, "agents")
    for entry in sorted(os.listdir(agents)) if os.path.isdir(agents) else []:
        rec = read_json(os.path.join(agents, entry))
        if not isinstance(rec, dict):
            continue
        rec["alive"] = start_time(int(rec.get("pid", 0))) == rec.get("start")
        rec["file"] = entry
        out.append(rec)
    return out


def keep_logs(directory: str, lines: int) -> dict[str, list[str]]:
    """Return the last *lines* lines of each log file of a cluster directory."""
    out: dict[str, list[str]] = {}
    logs = os.path.join(directory, "logs")
    for entry in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
        if not entry.endswith(".log"):
            continue
        text: list[str] = []
        for path in (os.path.join(logs, entry + ".1"), os.path.join(logs, entry)):
            try:
                with open(path, errors="replace") as f:
                    text.extend(f.read().splitlines())
            except OSError:
                pass
        out[entry[:-4]] = text[-lines:] if lines > 0 else text
    return out


def keep_op(op: str, name: str, data: Any = None, grace: float = 5.0) -> Message:
    """Run one operation on the files and agents of the named cluster *name* on this host.

    ``probe``: its files and which of its agents run; ``write``: store *data*
    as its ``cluster.json``; ``kill``: TERM the process group of every agent
    that runs, KILL what is left after *grace* seconds; ``remove``: delete its
    directory once no agent of it runs; ``logs``: also the last
    ``data["lines"]`` lines of each log file. Each answers with a probe.
    """
    directory = keep_dir(name)
    mine = keep_host_dir(name)
    if op == "write":
        private_dirs(directory)
        write_json(os.path.join(directory, KEEP_CLUSTER), data)
    elif op == "kill":
        live = [a for a in keep_agents(mine) if a["alive"]]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for a in live:
                try:
                    os.killpg(int(a["pid"]), sig)
                except OSError:
                    pass
            deadline = time.monotonic() + grace
            while live and time.monotonic() < deadline:
                time.sleep(0.05)
                live = [a for a in live if start_time(int(a["pid"])) == a["start"]]
    elif op == "remove" and not any(a["alive"] for a in keep_agents(mine)):
        import shutil

        shutil.rmtree(mine, ignore_errors=True)
        if (data or {}).get("owner"):  # the scheduler's host owns the cluster's own files
            for name_ in (KEEP_CLUSTER, KEEP_STATUS, KEEP_END):
                try:
                    os.unlink(os.path.join(directory, name_))
                except OSError:
                    pass
        # Whoever is last (hosts may share this directory over NFS) removes what is left.
        for path in (os.path.join(directory, "hosts"), directory):
            try:
                os.rmdir(path)
            except OSError:
                pass
    logs: dict[str, list[str]] = {}
    if op == "logs":
        logs = keep_logs(mine, int((data or {}).get("lines", 1000)))
    if op == "list":  # every named cluster of this host, each probed
        root = os.path.dirname(directory)
        names = sorted(os.listdir(root)) if os.path.isdir(root) else []
        return {"clusters": {n: keep_op("probe", n) for n in names}}
    return {
        "logs": logs,
        "exists": os.path.isdir(directory),
        "dir": directory,
        "host_dir": mine,
        "now": time.time(),
        "agents": keep_agents(mine),
        "cluster": read_json(os.path.join(directory, KEEP_CLUSTER)),
        "status": read_json(os.path.join(directory, KEEP_STATUS)),
        "end": read_json(os.path.join(directory, KEEP_END)),
    }


class Keep:
    """What a kept agent (a named cluster that outlives its controller) adds.

    Its record (``agents/<pid>.json``: pid and start time) says it runs; its
    log file keeps every line it forwards; the scheduler's agent writes the
    status file and enforces the lifetime policies (idle timeout, maximum
    lifetime); the workers' agent stops everything when the scheduler stays
    unreachable for the death timeout. On every way out it removes its record.
    """

    def __init__(self, spec: Message, role: str, label: str) -> None:
        self.name = str(spec["name"])
        self.dir = keep_dir(self.name)
        self.host_dir = keep_host_dir(self.name)
        self.role = role
        self.idle_timeout = spec.get("idle_timeout")
        self.max_lifetime = spec.get("max_lifetime")
        self.death_timeout = float(spec.get("death_timeout") or 60)
        self.started = time.time()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
        self.log_path = os.path.join(self.host_dir, "logs", f"{safe}.{os.getpid()}.log")
        self.record = os.path.join(self.host_dir, "agents", f"{os.getpid()}.json")
        self.log_lock = threading.Lock()
        self.detached = False
        self.end_reason: str | None = None

    def begin(self, label: str) -> None:
        for sub in ("agents", "logs"):
            private_dirs(os.path.join(self.host_dir, sub))
        write_json(self.record, {"pid": os.getpid(), "start": start_time(os.getpid()),
                                 "role": self.role, "label": label, "started": self.started,
                                 "log": self.log_path})

    def log(self, lines: list[tuple[str, str, str]]) -> None:
        """Append forwarded lines to the log file (rotated past :data:`KEEP_LOG_MAX`)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        data = "".join(f"{stamp} [{src}] {line}\n" for src, _stream, line in lines)
        with self.log_lock:
            try:
                if os.path.getsize(self.log_path) > KEEP_LOG_MAX:
                    os.replace(self.log_path, self.log_path + ".1")
            except OSError:
                pass
            try:
                with open(self.log_path, "a") as f:
                    f.write(data)
            except OSError:
                pass

    def end(self) -> None:
        """Leave: the scheduler's agent says why in ``end.json``; the record goes."""
        if self.role == "scheduler":
            try:
                write_json(os.path.join(self.dir, KEEP_END),
                           {"reason": self.end_reason or "stopped", "time": time.time()})
            except OSError:
                pass
        else:
            for path in (self.log_path, self.log_path + ".1"):
                try:
                    os.unlink(path)
                except OSError:
                    pass
        try:
            os.unlink(self.record)
        except OSError:
            pass

    def scheduler_status(self, server: Any, idle: Message) -> str | None:
        """Write the status file; return why the scheduler must stop now (a policy), or None."""
        now = time.time()
        busy = bool(getattr(server, "queued", None) or getattr(server, "unrunnable", None)
                    or any(ws.processing for ws in server.workers.values()))
        clients = [c for c in server.clients if c != "fire-and-forget"]
        counter = getattr(server, "transition_counter", 0)
        if busy or clients or counter != idle.get("counter"):
            idle["since"] = now
            idle["counter"] = counter
        workers = [{"name": str(ws.name), "host": ws.host, "nthreads": ws.nthreads,
                    "memory_limit": ws.memory_limit} for ws in server.workers.values()]
        try:
            write_json(os.path.join(self.dir, KEEP_STATUS), {
                "time": now, "pid": os.getpid(), "address": server.address,
                "workers": workers, "clients": len(clients),
                "idle_since": idle["since"], "started": self.started,
                "idle_timeout": self.idle_timeout, "max_lifetime": self.max_lifetime})
        except OSError:
            pass
        if self.idle_timeout and now - idle["since"] > float(self.idle_timeout):
            return f"idle timeout: no tasks and no clients for {self.idle_timeout:g} s"
        if self.max_lifetime and now - self.started > float(self.max_lifetime):
            return f"maximum lifetime of {self.max_lifetime:g} s reached"
        return None


class Inbox:
    """Commands in: a thread reads stdin, hands commands to the event loop, and
    calls *on_gone* at EOF or when nothing came within the heartbeat timeout.
    """

    def __init__(self, on_gone: Callable[[str], None]) -> None:
        self.on_gone = on_gone
        self.last_heard = time.monotonic()
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queue: asyncio.Queue[Message] | None = None
        self.early: list[Message] = []  # read before the event loop ran
        self.closed = False

    def start(self, heartbeat: float) -> None:
        self.last_heard = time.monotonic()
        threading.Thread(target=self.read, daemon=True).start()
        threading.Thread(target=self.watch_heartbeat, args=(heartbeat,), daemon=True).start()

    def read(self) -> None:
        stdin = sys.stdin.buffer
        while True:
            try:
                line = stdin.readline()
            except (OSError, ValueError):
                line = b""
            if self.closed:
                return  # detached: what still comes is not for us
            if not line:
                self.on_gone("connection to the controller closed")
                return
            self.last_heard = time.monotonic()
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if not isinstance(msg, dict) or msg.get("cmd") == "ping":
                continue
            with self.lock:
                loop, queue = self.loop, self.queue
                if loop is None or queue is None:
                    self.early.append(msg)
                    continue
            loop.call_soon_threadsafe(queue.put_nowait, msg)

    def watch_heartbeat(self, timeout: float) -> None:
        while not self.closed:
            time.sleep(min(1.0, timeout / 4))
            if time.monotonic() - self.last_heard > timeout:
                self.on_gone(f"no message from the controller for {timeout:.0f} s")

    def attach(self) -> asyncio.Queue[Message]:
        """Return the queue of commands for the running event loop (with those read so far)."""
        queue: asyncio.Queue[Message] = asyncio.Queue()
        with self.lock:
            for msg in self.early:
                queue.put_nowait(msg)
            self.queue = queue
            self.loop = asyncio.get_running_loop()
        return queue


#: In a private directory (an agent's, a ``dask-ssh --tls`` client's): who made it,
#: as ``hostname pid start-time``, so that a later run can remove it once its maker is gone.
OWNER_FILE = "owner"


def process_start(pid: int) -> str | None:
    """Return when *pid* started (clock ticks since boot, from ``/proc``), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and ")": split after the last ")".
    fields = stat[stat.rindex(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 else None


def write_owner(directory: str) -> None:
    """Write :data:`OWNER_FILE` into *directory*: this host, this process, its start time."""
    import socket

    pid = os.getpid()
    fd = os.open(os.path.join(directory, OWNER_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{socket.gethostname()} {pid} {process_start(pid) or '-'}\n")


def owner_gone(host: str, pid: int, start: str) -> bool:
    """Whether the process an owner line names is gone (a reused pid counts as gone).

    A directory made on another host (a shared file system) is never judged here.
    """
    import socket

    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # running, as someone else
    now = process_start(pid)
    return start != "-" and now is not None and now != start


def remove_stale_dirs(base: str, prefix: str) -> list[str]:
    """Remove our directories ``base/prefix*`` whose owner process is gone; return them.

    Only directories of this user with a readable :data:`OWNER_FILE` are
    considered; anything else is left alone.
    """
    import shutil

    removed: list[str] = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(base, name)
        if not name.startswith(prefix) or os.path.islink(path) or not os.path.isdir(path):
            continue
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            with open(os.path.join(path, OWNER_FILE)) as f:
                host, pid, start = f.read().split()
            gone = owner_gone(host, int(pid), start)
        except (OSError, ValueError):
            continue
        if gone:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class TempDir:
    """Our private temporary directory: ``TMPDIR`` of the agent and all its children.

    Everything temporary (multiprocessing's ``pymp-*``, the forkserver's
    socket, dask's scratch space, the tagger) goes there; the agent removes
    it on every way out, so nothing of ours stays on the host's disk. An
    agent killed with SIGKILL cannot: the next agent on that host removes the
    directories of agents that are gone (:func:`remove_stale_dirs`).
    """

    PREFIX = "sshdeploy-agent-"

    def __init__(self) -> None:
        self.path: str | None = None

    #: Longest usable AF_UNIX socket path (108 bytes with the NUL) minus what
    #: multiprocessing appends to TMPDIR (``/pymp-XXXXXXXX/listener-XXXXXXXX``).
    MAX_PATH = 107 - 32

    def make(self) -> None:
        import tempfile

        base = tempfile.gettempdir()
        if len(os.path.join(base, "sshdeploy-agent-XXXXXXXX")) > self.MAX_PATH and os.access(
                "/tmp", os.W_OK | os.X_OK):
            # A long TMPDIR (deep scratch paths on clusters) would leave the
            # forkserver's socket unbindable ("AF_UNIX path too long").
            base = "/tmp"
        remove_stale_dirs(base, self.PREFIX)
        self.path = tempfile.mkdtemp(prefix=self.PREFIX, dir=base)  # mode 0700
        write_owner(self.path)
        os.environ["TMPDIR"] = self.path
        tempfile.tempdir = self.path

    def write(self, name: str, data: bytes) -> str:
        """Write a file into it; return its path."""
        assert self.path is not None
        path = os.path.join(self.path, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def remove(self) -> None:
        if self.path is not None:
            import shutil

            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


class Agent:
    """One agent per (host, role): runs a scheduler or that host's workers."""

    def __init__(self) -> None:
        self.wire = Wire(os.dup(1))
        self.group = ProcessGroup()
        self.servers = Servers(self.wire, self.on_server_exit)
        self.inbox = Inbox(self.controller_gone)
        self.tmp = TempDir()
        #: Set for an agent of a named cluster kept without a controller (spec ``keep``).
        self.keep: Keep | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.spec: Message = {}
        self.tagger_source = b""
        self.shutting_down = False
        #: Pid of the forkserver forked from this interpreter (see start_zygote), if any.
        self.zygote: int | None = None
        #: Pid of the resource tracker forked from this interpreter (see start_tracker), if any.
        self.tracker: int | None = None
        #: Commands by name: each handler takes the message (``ping`` never gets here).
        self.handlers: dict[str, Callable[[Message], Awaitable[None]]] = {
            "start_scheduler": self.servers.start_scheduler,
            "start_worker": self.servers.start_worker,
            "stop": self.servers.stop,
            "detach": self.on_detach,
        }

    # -- a controller that goes ----------------------------------------------------
    def controller_gone(self, why: str) -> None:
        """No controller any more: a kept agent runs on, any other leaves nothing behind."""
        if self.keep is None or self.shutting_down:
            self.emergency_exit(why)
        else:
            self.detach(why)

    def detach(self, why: str) -> None:
        keep = self.keep
        if keep is None or keep.detached:
            return
        keep.detached = self.inbox.closed = self.wire.detached = True
        keep.log([(self.wire.label, "stderr",
                   f"sshdeploy agent: {why}; running on without a controller")])
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.end_if_idle)

    async def on_detach(self, msg: Message) -> None:
        self.detach("detached by the controller")

    def end_if_idle(self) -> None:
        """A detached workers agent with no worker left has nothing to keep."""
        keep = self.keep
        if keep is not None and keep.detached and self.spec.get("role") == "workers" and \
                not self.servers.running:
            keep.end_reason = keep.end_reason or "no worker left"
            self.finishing = asyncio.ensure_future(self.finish())  # kept: tasks are weakly held

    async def finish(self) -> None:
        await self.shutdown(5.0)
        os._exit(0)

    async def keep_watch(self) -> None:
        """A kept agent's duties: the status file and policies, or the scheduler watchdog."""
        keep = self.keep
        assert keep is not None
        idle: Message = {"since": time.time()}
        last_ok = time.monotonic()
        while not self.shutting_down:
            await asyncio.sleep(KEEP_TICK)
            reason = None
            if self.spec.get("role") == "scheduler":
                server = self.servers.running.get("scheduler")
                if server is not None:
                    reason = keep.scheduler_status(server, idle)
            elif keep.detached and self.servers.scheduler_address:
                if await self.servers.scheduler_answers():
                    last_ok = time.monotonic()
                elif time.monotonic() - last_ok > keep.death_timeout:
                    reason = (f"the scheduler {self.servers.scheduler_address} was unreachable "
                              f"for {keep.death_timeout:g} s")
            if reason:
                keep.end_reason = reason
                keep.log([(self.wire.label, "stderr", f"sshdeploy agent: stopping: {reason}")])
                await self.finish()

    # -- the end -------------------------------------------------------------
    def emergency_exit(self, why: str) -> None:
        """The controller is gone: leave nothing behind, whatever state we are in."""
        if self.shutting_down:
            return
        self.shutting_down = self.inbox.closed = True
        try:
            # A Nanny would restart the worker we are about to kill: stop that first.
            self.servers.no_restarts()
            # Kill first: writing to a controller that is gone may block.
            self.group.reap(grace=0.5)
            self.tmp.remove()
            if self.keep is not None:
                self.keep.end_reason = self.keep.end_reason or why
                self.keep.end()
            self.wire.last_words(f"sshdeploy agent: {why}; stopped every process it started")
        finally:
            os._exit(EXIT_EMERGENCY)  # whatever failed above, the agent never outlives this

    async def shutdown(self, timeout: float) -> None:
        """Stop every server, then every process of the group; say ``bye``."""
        await self.servers.close_all(timeout)
        self.shutting_down = self.inbox.closed = True
        await asyncio.get_running_loop().run_in_executor(None, self.group.reap, 2.0)
        self.tmp.remove()
        if self.keep is not None:
            self.keep.end()
        sys.stdout.flush()
        sys.stderr.flush()
        self.wire.emit(ev="bye")

    async def on_server_exit(self, name: str) -> None:
        """A scheduler that closed by itself ends its agent (so does a kept agent's last worker)."""
        if self.spec.get("role") == "scheduler":
            if self.keep is not None:
                self.keep.end_reason = self.keep.end_reason or "the scheduler closed"
            await self.finish()
        self.end_if_idle()

    # -- commands ------------------------------------------------------------
    async def serve(self) -> None:
        """Run commands from stdin until ``shutdown``: each as its own task."""
        queue = self.inbox.attach()
        self.loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        if self.keep is not None:
            watch = asyncio.ensure_future(self.keep_watch())
            tasks.add(watch)
        while True:
            msg = await queue.get()
            cmd = msg.get("cmd")
            if cmd == "shutdown":
                await self.shutdown(float(msg.get("timeout", 10)))
                return
            handler = self.handlers.get(str(cmd))
            if handler is None:
                continue
            task = asyncio.ensure_future(handler(msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    # -- start-up --------------------------------------------------------------
    def run(self) -> None:
        self.group.lead()
        stdin = sys.stdin.buffer
        self.tagger_source = read_block(stdin)
        self.spec = spec = json.loads(stdin.readline())
        self.wire.label = spec.get("label", "agent")
        if spec.get("op"):  # an operation on a named cluster's files: no distributed needed
            keep = spec.get("keep") or {}
            self.wire.emit(ev="answer", **keep_op(str(spec["op"]), str(keep.get("name")),
                                                  spec.get("data"), float(spec.get("grace", 5))))
            os._exit(0)
        for key, value in (spec.get("env") or {}).items():
            os.environ[key] = str(value)
        if spec.get("config"):
            os.environ["DASK_INTERNAL_INHERIT_CONFIG"] = spec["config"]
        self.tmp.make()
        try:
            self.start(spec)
        finally:  # every way out (os._exit aside, which cleans up first) removes it
            self.tmp.remove()

    def start(self, spec: Message) -> None:
        # Single-threaded until the forkserver is forked (see start_zygote): a
        # fork must not copy a thread holding a lock. Until then, our stdout
        # goes to the channel's stderr, which the controller drains for life.
        os.dup2(2, 1)
        # From now on SIGTERM too cleans up (a forkserver forked meanwhile
        # exits by itself with us: its alive pipe closes).
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(
            target=self.emergency_exit, args=("SIGTERM",), daemon=True).start())
        self.wire.emit(ev="stage", stage=STAGE_IMPORT, pid=os.getpid())
        try:
            import dask
            import distributed
            if spec.get("mp_method"):
                dask.config.set({"distributed.worker.multiprocessing-method": spec["mp_method"]})
        except BaseException as exc:  # report *why* import failed, then exit
            self.tmp.remove()
            self.wire.emit(ev="fatal", kind="import", error=f"{type(exc).__name__}: {exc}",
                           tb=traceback.format_exc(), python=sys.executable)
            os._exit(EXIT_IMPORT)
        log_pipe = self.wire.capture_output()
        if spec.get("keep"):
            self.keep = Keep(spec["keep"], str(spec.get("role")), self.wire.label)
            self.keep.begin(self.wire.label)
            self.wire.tee = self.keep.log
            self.servers.worker_defaults["death_timeout"] = self.keep.death_timeout
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closing session must not end us
        if spec.get("role") == "workers":
            # A file: a preload given as text would be logged by distributed.
            self.servers.tagger_path = self.tmp.write(TAGGER_MODULE + ".py", self.tagger_source)
            self.start_forkserver(close_fds=[self.wire.fd, log_pipe])
        threading.Thread(target=self.wire.pump_logs, args=(log_pipe,), daemon=True).start()
        self.inbox.start(float(spec.get("heartbeat", 30)))
        import platform
        self.wire.emit(ev="hello", pid=os.getpid(), python=sys.executable,
                       hostname=platform.node(),
                       versions={"python": platform.python_version(),
                                 "dask": dask.__version__,
                                 "distributed": distributed.__version__})
        asyncio.run(self.serve())
        self.tmp.remove()
        # Don't wait for the thread pools of distributed at interpreter exit.
        os._exit(0)

    def start_forkserver(self, close_fds: list[int]) -> None:
        """Start the workers' resource tracker and forkserver now, both forked.

        Only with the ``forkserver`` method (``spawn`` and ``fork`` children
        start or share a tracker as multiprocessing does). Sets
        :attr:`tracker` and :attr:`zygote` to the pids of the forks; None
        where multiprocessing starts its own (its forkserver imports
        distributed again: the fallback), so the first worker forks at once.
        """
        from distributed.utils import get_mp_context

        # What distributed's forkserver would preload (distributed, numpy, ...)
        # is imported here, once, and inherited by the forks.
        if get_mp_context().get_start_method() != "forkserver":
            return
        self.tracker = self._fork("resource tracker", start_tracker, close_fds)
        self.zygote = self._fork("forkserver", start_zygote, close_fds)
        if self.zygote is None:
            from multiprocessing import forkserver

            try:
                forkserver.ensure_running()
            except Exception as exc:  # workers start it themselves, if they can
                self.wire.emit(ev="log", src=self.wire.label, stream="stderr",
                               line=f"sshdeploy agent: forkserver prewarm failed: {exc!r}")

    def _fork(self, what: str, fork: Callable[[list[int]], int | None],
              close_fds: list[int]) -> int | None:
        """Run one of the fork functions; a failed fork is reported, and None returned."""
        try:
            return fork(close_fds)
        except OSError as exc:
            self.wire.emit(ev="log", src=self.wire.label, stream="stderr",
                           line=f"sshdeploy agent: cannot fork the {what}: {exc!r}")
            return None


def main() -> None:
    Agent().run()

