"""Worker-side output tagger: each line a worker process writes is tagged with its name.

This file travels to the hosts as *text* next to the agent (see
:func:`sshdeploy.bootstrap.stdin_preamble`); the agent writes it into its
private temporary directory as ``sshdeploy_tagger.py`` and gives that path to
every Nanny as a worker preload. Imported under that name in a worker process
(the name of the environment variable ``SSHDEPLOY_LABEL`` set), it re-points
the process's stdout and stderr at pipes drained by two threads which write
each line, prefixed with ``TAG + name + "\\x1f" + stream + "\\x1f"``, to the
agent's log pipe (the process's original stderr).

Imported as ``sshdeploy.remote.tagger`` (tests, the controller) it only defines
things. Like the agent, it uses the standard library only and stays Python
3.10 compatible.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Iterable

#: Starts every tagged line; the same value as :data:`sshdeploy.remote.agent.protocol.TAG`.
TAG = "\x1esshdeploy\x1f"
#: Environment variable naming the worker whose output this process writes.
LABEL_ENV = "SSHDEPLOY_LABEL"
#: The module name the agent gives this file on the hosts.
MODULE = "sshdeploy_tagger"
#: Writes of at most this many bytes to a pipe are atomic (POSIX PIPE_BUF).
PIPE_BUF = 4096
#: A line longer than this is sent in pieces as it arrives, never held whole.
MAX_PENDING = 65536
#: Bytes asked for per read.
READ_SIZE = 65536


class LineSplitter:
    """Split a byte stream into lines in linear time, holding at most *limit* bytes.

    Only each new chunk is split; the unfinished line is kept as a list of
    pieces, and handed out as a line of its own once it reaches *limit*.

    Examples
    --------
    >>> s = LineSplitter(limit=4)
    >>> s.feed(b"ab"), s.feed(b"c\\nd"), s.feed(b"efgh"), s.flush()
    ([], [b'abc'], [b'defgh'], [])
    """

    def __init__(self, limit: int = MAX_PENDING) -> None:
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


def line_prefix(name: str, stream: str) -> bytes:
    """Return the prefix of every line of *stream* of worker *name*.

    Examples
    --------
    >>> line_prefix("node2-0", "stderr")
    b'\\x1esshdeploy\\x1fnode2-0\\x1fstderr\\x1f'
    """
    return (TAG + name + "\x1f" + stream + "\x1f").encode()


def send(out: int, prefix: bytes, lines: Iterable[bytes]) -> None:
    """Write *lines* to *out*, each prefixed, in writes of at most PIPE_BUF bytes.

    Writes that small are atomic: lines of several processes and threads never
    interleave on the agent's pipe. A longer line goes in several pieces, each
    prefixed (the controller shows them as consecutive lines).
    """
    room = PIPE_BUF - len(prefix) - 1
    batch: list[bytes] = []
    size = 0
    for line in lines:
        for i in range(0, max(len(line), 1), room):
            item = prefix + line[i : i + room] + b"\n"
            if size + len(item) > PIPE_BUF:
                os.write(out, b"".join(batch))
                batch, size = [], 0
            batch.append(item)
            size += len(item)
    if batch:
        os.write(out, b"".join(batch))


def pump(fd: int, out: int, prefix: bytes) -> None:
    """Copy *fd* to *out* until EOF, line by line, each line tagged with *prefix*."""
    splitter = LineSplitter()
    while True:
        try:
            data = os.read(fd, READ_SIZE)
        except OSError:
            data = b""
        if not data:
            send(out, prefix, splitter.flush())
            return
        lines = splitter.feed(data)
        if lines:
            send(out, prefix, lines)


def install(name: str) -> list[threading.Thread]:
    """Tag this process's stdout and stderr with *name*; return the pump threads."""
    out = os.dup(2)
    threads = []
    for fd, stream in ((1, "stdout"), (2, "stderr")):
        r, w = os.pipe()
        os.dup2(w, fd)
        os.close(w)
        t = threading.Thread(target=pump, args=(r, out, line_prefix(name, stream)), daemon=True)
        t.start()
        threads.append(t)

    def flush_tagged() -> None:
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except Exception:  # a closed or replaced stream: nothing to flush
                pass
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        for t in threads:
            t.join(1.0)

    atexit.register(flush_tagged)
    try:  # multiprocessing children end with os._exit(): atexit would not run
        from multiprocessing.util import Finalize

        Finalize(None, flush_tagged, exitpriority=0)
    except Exception:  # only the last lines of a dying worker are at stake
        pass
    return threads


def install_once_from_env() -> None:
    """Install the tagger if ``SSHDEPLOY_LABEL`` names a worker (once per process).

    distributed imports a preload file, then reloads it: the second run is a no-op.
    """
    name = os.environ.get(LABEL_ENV)
    if name and not getattr(sys, "_sshdeploy_tagged", False):
        setattr(sys, "_sshdeploy_tagged", True)  # noqa: B010 (sys has no such attribute)
        install(name)


if __name__ == MODULE:
    install_once_from_env()
