"""The remote agent: the program that runs on every host, sent over SSH.

This file is read as *text* by the controller and executed by the remote
Python (``python -c`` reads it from stdin): sshdeploy need not be installed
on the hosts. It must therefore import nothing from sshdeploy and only the
standard library until the spec has been read; distributed is imported once,
after that.

Protocol (one JSON object per line):

controller -> agent, on stdin
    first a spec ``{"role", "label", "config", "env", "heartbeat", ...}``, then
    commands ``{"cmd": "start_scheduler" | "start_worker" | "stop" | "ping" |
    "shutdown", ...}``; keyword arguments travel pickled (base64) in ``"kw"``.
agent -> controller, on stdout
    events ``{"ev": "hello" | "ready" | "failed" | "stopped" | "exited" |
    "logs" | "log" | "fatal" | "bye", ...}``;
    remote output comes as ``logs`` events, one per read, each a list of
    ``(source, stream, line)``.

Everything the agent and its children write to their own stdout/stderr is
captured through a pipe the agent drains for its whole life and is forwarded
as ``log`` events, so no remote process can ever block on a full pipe.
Workers started through a Nanny tag each line with their name (see
``CHILD_TAGGER``) so lines reach the controller attributed to the right worker.

The agent is the leader of its process group. When stdin reaches EOF (the
controller closed, crashed or lost the connection) or no message arrives
within the heartbeat timeout, it terminates every process of its group, then
kills what is left, then itself: nothing outlives the controller.
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
from typing import Any

TAG = "\x1esshdeploy\x1f"
#: Starts every event line on stdout, so that whatever else reaches stdout (a
#: login script that prints, a setup command) is never taken for an event.
EVENT = b"\x1esshdeploy-event\x1f"

# Imported (as preload *text*) by every worker process a Nanny starts: it
# re-points the process's stdout/stderr at a pipe whose lines are written,
# tagged with the worker's name, to the agent's log pipe.
CHILD_TAGGER = '''
import os, sys, threading, atexit
_name = os.environ.get("SSHDEPLOY_LABEL")
if _name and not getattr(sys, "_sshdeploy_tagged", False):
    sys._sshdeploy_tagged = True
    _out = os.dup(2)
    _threads = []
    def _send(out, prefix, lines):
        # Writes of at most PIPE_BUF bytes to a pipe are atomic: lines of
        # several processes and threads never interleave on the agent's pipe.
        room = 4096 - len(prefix) - 1
        batch = b""
        for ln in lines:
            for i in range(0, max(len(ln), 1), room):
                item = prefix + ln[i:i + room] + b"\\n"
                if len(batch) + len(item) > 4096:
                    os.write(out, batch)
                    batch = b""
                batch += item
        if batch:
            os.write(out, batch)
    def _pump(fd, stream, name=_name, out=_out):
        prefix = ("\\x1esshdeploy\\x1f" + name + "\\x1f" + stream + "\\x1f").encode()
        buf = b""
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                if buf:
                    _send(out, prefix, [buf])
                return
            buf += data
            *lines, buf = buf.split(b"\\n")
            if lines:
                _send(out, prefix, lines)
    for _fd, _stream in ((1, "stdout"), (2, "stderr")):
        _r, _w = os.pipe()
        os.dup2(_w, _fd)
        os.close(_w)
        _t = threading.Thread(target=_pump, args=(_r, _stream), daemon=True)
        _t.start()
        _threads.append(_t)
    def _flush_tagged():
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except Exception:
                pass
        _null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(_null, 1)
        os.dup2(_null, 2)
        for t in _threads:
            t.join(1.0)
    atexit.register(_flush_tagged)
    try:  # multiprocessing children end with os._exit(): atexit would not run
        from multiprocessing.util import Finalize
        Finalize(None, _flush_tagged, exitpriority=0)
    except Exception:
        pass
'''


class Agent:
    """One agent per (host, role): runs a scheduler or that host's workers."""

    def __init__(self) -> None:
        self.proto = os.dup(1)
        self.lock = threading.Lock()
        self.spec: dict[str, Any] = {}
        self.label = "agent"
        self.servers: dict[str, Any] = {}
        self.stopping: set[str] = set()
        self.last_heard = time.monotonic()
        self.shutting_down = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queue: asyncio.Queue[dict[str, Any]] | None = None
        self.qlock = threading.Lock()
        self.early: list[dict[str, Any]] = []
        self.tmpdir: str | None = None
        self.prewarm_thread: threading.Thread | None = None

    # -- output -----------------------------------------------------------
    @staticmethod
    def encode(event: dict[str, Any]) -> bytes:
        return EVENT + (json.dumps(event) + "\n").encode()

    def emit(self, **event: Any) -> None:
        data = self.encode(event)
        with self.lock:
            self._write(data)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.proto, view)
            except BlockingIOError:
                return  # emergency mode: the controller is not reading; give up
            except BrokenPipeError:
                return
            view = view[n:]

    def emit_last_words(self, line: str) -> None:
        """Best effort, never blocking: the controller may be gone or not reading."""
        if not self.lock.acquire(timeout=0.2):
            return
        try:
            os.set_blocking(self.proto, False)
            self._write(self.encode(
                {"ev": "log", "src": self.label, "stream": "stderr", "line": line}))
        except OSError:
            pass
        finally:
            self.lock.release()

    def capture_output(self) -> None:
        """Route fd 1 and 2 (ours and our children's) through a drained pipe."""
        r, w = os.pipe()
        os.dup2(w, 1)
        os.dup2(w, 2)
        os.close(w)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        threading.Thread(target=self.pump_logs, args=(r,), daemon=True).start()

    def pump_logs(self, fd: int) -> None:
        buf = b""
        while True:
            data = os.read(fd, 65536)
            if not data:
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            batch = []
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                src, stream = self.label, "stderr"
                if line.startswith(TAG):
                    parts = line[len(TAG):].split("\x1f", 2)
                    if len(parts) == 3:
                        src, stream, line = parts
                batch.append((src, stream, line))
            if batch:  # one event per read: cheap for floods, immediate for single lines
                self.emit(ev="logs", lines=batch)

    # -- lifetime ----------------------------------------------------------
    def become_group_leader(self) -> None:
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

    def group_members(self) -> list[int]:
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

    def reap_group(self, grace: float) -> None:
        """TERM every other process of our group, then KILL what remains.

        A process that ignores TERM is killed at once rather than waited for.
        """
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.group_members():
                try:
                    if sig == signal.SIGTERM and self.ignores_term(pid):
                        os.kill(pid, signal.SIGKILL)
                    else:
                        os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 2.0)
            while self.group_members() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not self.group_members():
                return

    def emergency_exit(self, why: str) -> None:
        """The controller is gone: leave nothing behind, whatever state we are in."""
        if self.shutting_down:
            return
        self.shutting_down = True
        try:
            # A Nanny would restart the worker we are about to kill: stop that first.
            for server in list(self.servers.values()):
                self.no_restarts(server)
            # A forkserver being spawned right now would escape a reap that ran first.
            prewarm = self.prewarm_thread
            if prewarm is not None and prewarm.ident is not None:
                prewarm.join(5)
            # Kill first: writing to a controller that is gone may block.
            self.reap_group(grace=0.5)
            self.remove_tmpdir()
            self.emit_last_words(f"sshdeploy agent: {why}; stopped every process it started")
        finally:
            os._exit(3)  # whatever failed above, the agent itself never outlives this

    @staticmethod
    def no_restarts(server: Any) -> None:
        """Keep a Nanny from restarting its worker process (distributed's own switch)."""
        close_gracefully = getattr(server, "close_gracefully", None)
        if close_gracefully is not None and str(getattr(server, "status", "")).endswith("running"):
            try:
                close_gracefully(reason="sshdeploy: no restarts")
            except Exception:
                pass

    def read_stdin(self) -> None:
        stdin = sys.stdin.buffer
        while True:
            try:
                line = stdin.readline()
            except (OSError, ValueError):
                line = b""
            if not line:
                self.emergency_exit("connection to the controller closed")
                return
            self.last_heard = time.monotonic()
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("cmd") == "ping":
                continue
            with self.qlock:
                loop, queue = self.loop, self.queue
                if loop is None or queue is None:
                    self.early.append(msg)
                    continue
            loop.call_soon_threadsafe(queue.put_nowait, msg)

    def watchdog(self, timeout: float) -> None:
        while not self.shutting_down:
            time.sleep(min(1.0, timeout / 4))
            if time.monotonic() - self.last_heard > timeout:
                self.emergency_exit(f"no message from the controller for {timeout:.0f} s")

    # -- start-up -----------------------------------------------------------
    def run(self) -> None:
        self.become_group_leader()
        line = sys.stdin.buffer.readline()
        self.spec = spec = json.loads(line)
        self.label = spec.get("label", "agent")
        for key, value in (spec.get("env") or {}).items():
            os.environ[key] = str(value)
        if spec.get("config"):
            os.environ["DASK_INTERNAL_INHERIT_CONFIG"] = spec["config"]
        self.capture_output()
        heartbeat = float(spec.get("heartbeat", 30))
        threading.Thread(target=self.read_stdin, daemon=True).start()
        threading.Thread(target=self.watchdog, args=(heartbeat,), daemon=True).start()
        try:
            import dask
            import distributed
            if spec.get("mp_method"):
                dask.config.set({"distributed.worker.multiprocessing-method": spec["mp_method"]})
        except BaseException as exc:  # report *why* import failed, then exit
            self.emit(ev="fatal", kind="import", error=f"{type(exc).__name__}: {exc}",
                      tb=traceback.format_exc(), python=sys.executable)
            os._exit(4)
        import platform
        self.emit(ev="hello", pid=os.getpid(), python=sys.executable,
                  hostname=platform.node(),
                  versions={"python": platform.python_version(),
                            "dask": dask.__version__,
                            "distributed": distributed.__version__})
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(
            target=self.emergency_exit, args=("SIGTERM",), daemon=True).start())
        if spec.get("role") == "workers":
            # Start the preloaded forkserver now, while the scheduler starts
            # elsewhere: the first worker then forks at once.
            self.prewarm_thread = threading.Thread(target=self.prewarm, daemon=True)
            self.prewarm_thread.start()
        asyncio.run(self.serve())
        # Don't wait for the thread pools of distributed at interpreter exit.
        os._exit(0)

    def prewarm(self) -> None:
        if self.shutting_down:
            return
        try:
            from distributed.utils import get_mp_context

            ctx = get_mp_context()
            if ctx.get_start_method() == "forkserver":
                from multiprocessing import forkserver

                forkserver.ensure_running()
        except Exception as exc:  # only an optimisation: workers start without it
            self.emit(ev="log", src=self.label, stream="stderr",
                      line=f"sshdeploy agent: forkserver prewarm failed: {exc!r}")

    async def serve(self) -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        with self.qlock:
            for msg in self.early:
                queue.put_nowait(msg)
            self.queue = queue
            self.loop = asyncio.get_running_loop()
        tasks = set()
        while True:
            assert self.queue is not None
            msg = await self.queue.get()
            cmd = msg.get("cmd")
            if cmd == "shutdown":
                await self.shutdown(float(msg.get("timeout", 10)))
                return
            handler = getattr(self, "cmd_" + str(cmd), None)
            if handler is None:
                continue
            task = asyncio.ensure_future(handler(msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    @staticmethod
    def kwargs(msg: dict[str, Any]) -> dict[str, Any]:
        return pickle.loads(base64.b64decode(msg["kw"])) if msg.get("kw") else {}

    async def start_server(self, msg: dict[str, Any], make: Any) -> Any:
        """Build a server with *make*, start it within the deadline, track it.

        Returns the running server, or None after emitting a ``failed`` event
        with the exception and its traceback.
        """
        name = str(msg.get("name", "scheduler"))
        if name in self.servers:
            self.emit(ev="failed", name=name, error=f"{name} is already running here", tb="")
            return None
        self.stopping.discard(name)
        timeout = float(msg.get("timeout", 60))
        try:
            server = make(self.kwargs(msg))
            await asyncio.wait_for(server, timeout)
        except asyncio.TimeoutError:
            where = f" (is {msg['scheduler']} reachable from this host?)" if msg.get(
                "scheduler") else ""
            self.emit(ev="failed", name=name,
                      error=f"did not start within {timeout:.0f} s{where}",
                      tb=traceback.format_exc())
            return None
        except BaseException as exc:
            self.emit(ev="failed", name=name, error=f"{type(exc).__name__}: {exc}",
                      tb=traceback.format_exc())
            return None
        self.servers[name] = server
        asyncio.ensure_future(self.watch(name, server))
        return server

    async def cmd_start_scheduler(self, msg: dict[str, Any]) -> None:
        from distributed import Scheduler
        from distributed.utils import import_term

        cls = import_term(msg["cls"]) if msg.get("cls") else Scheduler
        server = await self.start_server(msg, lambda kw: cls(**kw))
        if server is None:
            return
        http = getattr(server, "http_server", None)
        self.emit(ev="ready", name=msg.get("name", "scheduler"), address=server.address,
                  pid=os.getpid(), dashboard_port=http.port if http is not None else None)

    async def cmd_start_worker(self, msg: dict[str, Any]) -> None:
        from distributed import Nanny
        from distributed.utils import import_term

        name = msg["name"]

        def make(kw: dict[str, Any]) -> Any:
            cls = import_term(msg.get("cls") or "distributed.Nanny")
            kw.setdefault("name", name)
            if isinstance(cls, type) and issubclass(cls, Nanny):
                import dask

                # The worker process tags its output with its name (CHILD_TAGGER).
                kw["env"] = {**(kw.get("env") or {}), "SSHDEPLOY_LABEL": name}
                preload = kw.get("preload")
                if preload is None:
                    preload = dask.config.get("distributed.worker.preload")
                if isinstance(preload, str):
                    preload = [preload]
                kw["preload"] = [self.tagger_path()] + list(preload or [])
            server = cls(msg["scheduler"], **kw)
            if msg.get("restart") is False and isinstance(server, Nanny):
                # When its worker process dies, the Nanny closes instead of
                # restarting it (and the controller hears "exited").
                on_exit = server._on_worker_exit

                async def no_restart(exitcode: Any) -> None:
                    self.no_restarts(server)
                    await on_exit(exitcode)

                server._on_worker_exit = no_restart  # type: ignore[method-assign]
            return server

        server = await self.start_server(msg, make)
        if server is None:
            return
        process = getattr(server, "process", None)
        pid = getattr(getattr(process, "process", None), "pid", None) or os.getpid()
        address = getattr(server, "worker_address", None) or server.address
        self.emit(ev="ready", name=name, address=address, pid=pid, contact=server.address)

    def tagger_path(self) -> str:
        """Write the worker-side tagger once, as a file (a preload's text would be logged)."""
        if self.tmpdir is None:
            import tempfile
            self.tmpdir = tempfile.mkdtemp(prefix="sshdeploy-agent-")
        path = os.path.join(self.tmpdir, "sshdeploy_tagger.py")
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(CHILD_TAGGER)
        return path

    def remove_tmpdir(self) -> None:
        if self.tmpdir is not None:
            import shutil
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    async def watch(self, name: str, server: Any) -> None:
        await server.finished()
        if name in self.servers and name not in self.stopping:
            del self.servers[name]
            self.emit(ev="exited", name=name, reason=f"closed by itself (status {server.status})")
            if self.spec.get("role") == "scheduler":
                await self.shutdown(5.0)
                os._exit(0)

    async def cmd_stop(self, msg: dict[str, Any]) -> None:
        name = msg["name"]
        server = self.servers.get(name)
        if server is not None:
            self.stopping.add(name)
            await self.close_server(server, float(msg.get("timeout", 10)))
            self.servers.pop(name, None)
            self.stopping.discard(name)
        self.emit(ev="stopped", name=name)

    async def close_server(self, server: Any, timeout: float) -> None:
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

    async def shutdown(self, timeout: float) -> None:
        self.stopping.update(self.servers)
        await asyncio.gather(*(self.close_server(s, timeout) for s in self.servers.values()),
                             return_exceptions=True)
        self.servers.clear()
        self.shutting_down = True
        prewarm = self.prewarm_thread
        if prewarm is not None and prewarm.ident is not None:
            await asyncio.get_running_loop().run_in_executor(None, prewarm.join, 5)
        await asyncio.get_running_loop().run_in_executor(None, self.reap_group, 2.0)
        self.remove_tmpdir()
        sys.stdout.flush()
        sys.stderr.flush()
        self.emit(ev="bye")


def main() -> None:
    Agent().run()


if __name__ == "__main__" or __name__ == "sshdeploy-agent":
    main()
