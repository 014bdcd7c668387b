"""The agent's two directions: events out (:class:`Wire`), commands in (:class:`Inbox`).

Everything the agent and its children write to their own stdout/stderr is
captured through a pipe the agent drains for its whole life and is forwarded
as ``logs`` events, so no remote process can ever block on a full pipe.
Workers started through a Nanny tag each line with their name (the preload
:mod:`sshdeploy.remote.tagger`) so lines reach the controller attributed to the
right worker.

Commands come from stdin, read by a thread (:class:`Inbox`), which also notices
EOF and a heartbeat that stops: the controller is gone.
"""

# Keep this file Python 3.10 compatible: the standard library and other parts only.
from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .protocol import EVENT, TAG, LineSplitter, Message


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


class Inbox:
    """Commands in: a thread reads stdin, hands commands to the event loop, and
    calls *on_gone* at EOF or when nothing came within the heartbeat timeout.

    The commands of *urgent* (name -> function of the message) are run by the
    reading thread itself, in order with EOF.
    """

    def __init__(self, on_gone: Callable[[str], None],
                 urgent: dict[str, Callable[[Message], None]] | None = None) -> None:
        self.on_gone = on_gone
        self.urgent = dict(urgent or {})
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
            now = self.urgent.get(str(msg.get("cmd")))
            if now is not None:
                now(msg)
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
