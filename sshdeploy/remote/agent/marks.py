"""The processes of a named cluster on this host, found by the mark they carry.

The remote command of every agent of a named cluster exports
``SSHDEPLOY_CLUSTER=NAME:SESSION`` (:data:`~.protocol.MARK_ENV`,
:func:`sshdeploy.bootstrap.build_command`) before anything else runs, so the
login shell, the setup commands, the agent, its scheduler or Nannies and every
worker process inherit it. :func:`marked` finds them by reading
``/proc/PID/environ`` (the environment a process started with: a fork keeps
it, an exec passes it on): this does not depend on any file of the cluster,
so a host whose state directory was removed still shows what runs there.
:func:`end_marked` stops them.

Only processes of this user and of this host's network namespace count (on
a machine whose network namespaces are separate hosts, as the test bed's,
another host's processes are not ours to stop).
"""

# Keep this file Python 3.10 compatible: the standard library and other parts only.
from __future__ import annotations

import os
import signal
import time

from .group import running_since
from .protocol import MARK_ENV, Message


def _net_namespace(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _mark_of(environ: bytes) -> str | None:
    prefix = MARK_ENV.encode() + b"="
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix):].decode("utf-8", "replace")
    return None


def marked(name: str) -> list[Message]:
    """Return the live processes of this user and host that carry the mark of cluster *name*.

    Each is ``{"pid", "start", "mark", "cmd"}`` (``mark`` is ``NAME:SESSION``:
    which controller started it; ``cmd`` the start of its command line).
    The caller itself is never one of them.
    """
    if not os.path.isdir("/proc"):
        return []
    uid, me = os.getuid(), os.getpid()
    here = _net_namespace("self")
    found: list[Message] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        mark = _mark_of(environ)
        if mark is None or (mark != name and not mark.startswith(name + ":")):
            continue
        if here is not None and _net_namespace(entry) != here:
            continue
        start = running_since(int(entry))
        if start is None:  # a zombie: it runs no more
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            cmd = ""
        found.append({"pid": int(entry), "start": start, "mark": mark, "cmd": cmd[:200]})
    return found


def end_marked(name: str, grace: float, agents: list[Message] | None = None) -> list[Message]:
    """Stop every process of cluster *name* on this host; return those still running.

    SIGTERM first (an agent then stops what it started, its Nannies their
    workers), to the process groups of *agents* (their records) and to every
    marked process; what runs after *grace* seconds gets SIGKILL, and is
    waited for another *grace* seconds.
    """
    groups = [a for a in agents or [] if a.get("alive")]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for a in groups:
            try:
                os.killpg(int(a["pid"]), sig)
            except OSError:
                pass
        for p in marked(name):
            try:
                os.kill(int(p["pid"]), sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while True:
            groups = [a for a in groups if running_since(int(a["pid"])) == a.get("start")]
            left = marked(name)
            if (not groups and not left) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not groups and not left:
            return []
    return left
