"""The agent itself (:class:`Agent`): start-up, the command table, every way out.

Start-up order, and why
    1. lead a process group, read the tagger and the spec, make the private
       temporary directory (``TMPDIR`` of the agent and all its children: see
       :class:`TempDir`), removed on every way out; when the spec asks
       (``describe``), say what this host is (:func:`~.facts.describe`: the
       version gate's facts, read from metadata) before anything is imported;
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

Pieces of the other parts, wired together by :class:`Agent` (which holds the
command table): :class:`Wire` (events out, the write lock, last words, the log
pump), :class:`Inbox` (commands in, EOF and heartbeat), :class:`ProcessGroup`
(the group it leads and reaps), :class:`Servers` (the scheduler or Nannies it
runs: start, stop, watch), :class:`TempDir` (its private temporary directory)
and :class:`Keep` (a kept agent's files).

A kept agent (a named cluster's) outlives its controller: once detached, it
alone looks after its workers, starting again those lost in an outage
(:meth:`Agent.revive`) and stopping when its scheduler stays unreachable for
the death timeout (:meth:`Agent.keep_watch`).
"""

# Keep this file Python 3.10 compatible: the standard library and other parts only.
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .facts import describe
from .group import ProcessGroup, TempDir
from .protocol import (
    EXIT_EMERGENCY,
    EXIT_IMPORT,
    STAGE_IMPORT,
    TAGGER_MODULE,
    Message,
    read_block,
)
from .servers import RestartBudget, Servers
from .wire import Inbox, Wire
from .zygote import start_tracker, start_zygote

if TYPE_CHECKING:
    from .keep import Keep


def _kept() -> Any:
    """The ``keep`` part: sent only to a named cluster's agents and host operations
    (:func:`sshdeploy.bootstrap.agent_bundle`), imported only by them."""
    from . import keep

    return keep


class Agent:
    """One agent per (host, role): runs a scheduler or that host's workers."""

    def __init__(self) -> None:
        self.wire = Wire(os.dup(1))
        self.group = ProcessGroup()
        self.servers = Servers(self.wire, self.on_server_exit)
        # ``arm`` is handled as it is read, in order with EOF: never after it.
        self.inbox = Inbox(self.controller_gone, urgent={"arm": self.on_arm})
        self.tmp = TempDir()
        #: The thread that forwards the log pipe (started once output is captured).
        self.pump: threading.Thread | None = None
        #: Set for an agent of a named cluster kept without a controller (spec ``keep``).
        self.keep: Keep | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.spec: Message = {}
        self.tagger_source = b""
        self.shutting_down = False
        #: The agent is on its way out (:meth:`finish`): nothing starts any more.
        self.ending = False
        self.finishing: asyncio.Future[None] | None = None
        #: Pid of the forkserver forked from this interpreter (see start_zygote), if any.
        self.zygote: int | None = None
        #: Pid of the resource tracker forked from this interpreter (see start_tracker), if any.
        self.tracker: int | None = None
        #: Lost workers a kept agent is starting again (see :meth:`revive`), and their budgets.
        self.reviving: set[str] = set()
        self.revivals: dict[str, RestartBudget] = {}
        self.revivers: set[asyncio.Future[None]] = set()
        #: Commands by name: each handler takes the message (``ping`` never gets here).
        self.handlers: dict[str, Callable[[Message], Awaitable[Any]]] = {
            "start_scheduler": self.servers.start_scheduler,
            "start_worker": self.servers.start_worker,
            "stop": self.servers.stop,
            "detach": self.on_detach,
        }

    # -- a controller that goes ----------------------------------------------------
    def controller_gone(self, why: str) -> None:
        """No controller any more: an armed kept agent runs on, any other leaves nothing behind."""
        if self.keep is None or not self.keep.armed or self.shutting_down:
            self.emergency_exit(why)
        else:
            self.detach(why)

    def on_arm(self, msg: Message) -> None:
        """The cluster is recorded: from now on this agent runs on without its controller."""
        keep = self.keep
        if keep is None:
            return
        if keep.arm():
            keep.log([(self.wire.label, "stderr",
                       "sshdeploy agent: the cluster is recorded; this agent runs on if its "
                       "controller goes")])
        self.wire.emit(ev="armed")

    def detach(self, why: str) -> None:
        keep = self.keep
        if keep is None or keep.detached or not keep.armed:
            return  # not armed: it stops with its controller, as a classic agent
        keep.detached = self.inbox.closed = self.wire.detached = True
        self.note(f"{why}; running on without a controller")
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.supervise)

    def note(self, line: str) -> None:
        """Say *line* in a kept agent's log file (no controller reads the wire any more)."""
        if self.keep is not None:
            self.keep.log([(self.wire.label, "stderr", f"sshdeploy agent: {line}")])

    def supervise(self) -> None:
        """From now on this agent alone looks after its workers: those lost meanwhile too."""
        for name in list(self.servers.ended):
            self.revive_if_lost(name)
        self.end_if_idle()

    def revive_if_lost(self, name: str) -> bool:
        """Start lost worker *name* again if this is a detached kept workers agent."""
        keep = self.keep
        why = self.servers.lost(name)
        if keep is None or not keep.detached or self.ending or why is None or \
                self.spec.get("role") != "workers" or name in self.servers.running or \
                name in self.reviving:
            return False
        self.reviving.add(name)
        task = asyncio.ensure_future(self.revive(name, why))
        self.revivers.add(task)  # kept: tasks are weakly held
        task.add_done_callback(self.revivers.discard)
        return True

    async def revive(self, name: str, why: str) -> None:
        """Start lost worker *name* again, with no controller, within its restart budget.

        A worker lost with its scheduler (an outage: see
        :data:`~.servers.LOST_REASONS`) is started again, as it was, once the
        scheduler answers and has dropped the lost one; meanwhile the scheduler
        watchdog (:meth:`keep_watch`) ends the agent if the scheduler stays
        unreachable for the death timeout. A worker of that name running
        elsewhere, a cluster that has the workers it wants, or a spent budget
        (``sshdeploy.worker-restarts`` within ``worker-restart-window``: a
        loop is bounded) ends it instead, said in the log.
        """
        keep = self.keep
        assert keep is not None
        try:
            msg = self.servers.messages.get(name)
            limit = (msg or {}).get("restart_limit")
            budget = self.revivals.setdefault(name, RestartBudget(
                limit if isinstance(limit, int) else 5,
                float((msg or {}).get("restart_window") or 60)))
            while msg is not None and not self.ending:
                if not budget.spend(time.monotonic()):
                    self.note(f"worker {name} not started again: lost {len(budget.deaths)} "
                              f"times within {budget.window:.0f} s (sshdeploy.worker-restarts: "
                              f"{budget.describe()})")
                    return
                self.note(f"worker {name} lost ({why}); it starts again once its scheduler "
                          f"{self.servers.scheduler_address} answers")
                deadline = time.monotonic() + keep.death_timeout
                while (wait := await self.servers.revival(name)) is not None:
                    if wait == "taken" or time.monotonic() > deadline:
                        self.note(f"worker {name} not started again: " + (
                            "a worker of that name runs already" if wait == "taken" else
                            "the cluster has the workers it wants" if wait == "enough" else
                            f"{wait} after {keep.death_timeout:g} s"))
                        return
                    await asyncio.sleep(_kept().KEEP_TICK)
                if self.ending:
                    return
                if await self.servers.start_worker(msg) is not None:
                    self.note(f"worker {name} started again")
                    return
                why = f"its start failed: {self.servers.errors.get(name, 'unknown error')}"
        finally:
            self.reviving.discard(name)
            self.end_if_idle()

    async def on_detach(self, msg: Message) -> None:
        self.detach("detached by the controller")

    def end_if_idle(self) -> None:
        """A detached workers agent with no worker left has nothing to keep."""
        keep = self.keep
        if keep is not None and keep.detached and self.spec.get("role") == "workers" and \
                not self.servers.running and not self.reviving and not self.ending:
            keep.end_reason = keep.end_reason or "no worker left"
            self.finishing = asyncio.ensure_future(self.finish())  # kept: tasks are weakly held

    async def finish(self) -> None:
        self.ending = True  # from now on no worker starts again
        await self.shutdown(5.0)
        os._exit(0)

    async def keep_watch(self) -> None:
        """A kept agent's duties: the status file and policies, or the scheduler watchdog."""
        keep = self.keep
        assert keep is not None
        idle: Message = {"since": time.time()}
        last_ok = time.monotonic()
        tick = _kept().KEEP_TICK
        while not self.shutting_down:
            await asyncio.sleep(tick)
            reason = None
            if keep.armed:
                for path in keep.restore():
                    keep.log([(self.wire.label, "stderr",
                               f"sshdeploy agent: {path} was removed; written again")])
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
        self.shutting_down = self.ending = self.inbox.closed = True
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
        self.ending = True
        await self.servers.close_all(timeout)
        self.shutting_down = self.inbox.closed = True
        await asyncio.get_running_loop().run_in_executor(None, self.group.reap, 2.0)
        self.tmp.remove()
        if self.keep is not None:
            self.keep.end()
        sys.stdout.flush()
        sys.stderr.flush()
        self.drain_logs(2.0)
        self.wire.emit(ev="bye")

    def drain_logs(self, timeout: float) -> None:
        """Forward every line written so far before a last word (``bye`` is the last).

        Our own ends of the log pipe are closed (the group is gone: nobody else
        holds one), so the pump reads what is left, meets EOF and ends.
        """
        pump = self.pump
        if pump is None:
            return
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 1)
            os.dup2(null, 2)
        finally:
            os.close(null)
        pump.join(timeout)

    async def on_server_exit(self, name: str) -> None:
        """A scheduler that closed by itself ends its agent (so does a kept agent's last worker)."""
        if self.spec.get("role") == "scheduler":
            if self.keep is not None:
                self.keep.end_reason = self.keep.end_reason or "the scheduler closed"
            await self.finish()
        if not self.revive_if_lost(name):
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
            answer = _kept().keep_op(str(spec["op"]), str(keep.get("name")), spec.get("data"),
                                     float(spec.get("grace", 5)))
            if spec["op"] in ("kill", "remove"):  # down, clean: what a SIGKILLed agent left
                answer["stale_tmp"] = TempDir.remove_stale()
            self.wire.emit(ev="answer", **answer)
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
        if spec.get("describe") is not None:  # the version gate's facts: no import needed
            self.wire.emit(ev="described", description=describe(spec["describe"]))
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
            self.keep = _kept().Keep(spec["keep"], str(spec.get("role")), self.wire.label)
            self.keep.begin(self.wire.label)
            self.wire.tee = self.keep.log
            self.servers.worker_defaults["death_timeout"] = self.keep.death_timeout
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closing session must not end us
        if spec.get("role") == "workers":
            # A file: a preload given as text would be logged by distributed.
            self.servers.tagger_path = self.tmp.write(TAGGER_MODULE + ".py", self.tagger_source)
            self.start_forkserver(close_fds=[self.wire.fd, log_pipe])
        self.pump = threading.Thread(target=self.wire.pump_logs, args=(log_pipe,), daemon=True)
        self.pump.start()
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
