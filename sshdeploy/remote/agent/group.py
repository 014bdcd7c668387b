"""What the agent must stop or remove before it exits: its process group, its temp directory.

The agent is the leader of its process group. When stdin reaches EOF (the
controller closed, crashed or lost the connection) or no message arrives
within the heartbeat timeout, it terminates every process of its group, then
kills what is left, then itself: nothing outlives the controller.

Its private temporary directory (:class:`TempDir`) goes on every way out too;
one left by an agent killed with SIGKILL is removed by the next one
(:func:`remove_stale_dirs`, also used by ``dask-ssh --tls`` for its own).
"""

# Keep this file Python 3.10 compatible: the standard library and other parts only.
from __future__ import annotations

import os
import signal
import time


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
        return process_tree(os.getpid(), os.getpgid(0))

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
        fields = proc_stat(pid)
        return fields is not None and bool(fields) and fields[0] != "Z"

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


#: In a private directory (an agent's, a ``dask-ssh --tls`` client's): who made it,
#: as ``hostname pid start-time``, so that a later run can remove it once its maker is gone.
OWNER_FILE = "owner"


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (the state first), or None
    where *pid* does not run (the one reader of it for every part of the agent)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and ")": split after the last ")".
    return stat[stat.rindex(b")") + 2:].decode().split()


def process_tree(root: int, pgid: int) -> list[int]:
    """Live (not zombie) processes of process group *pgid* and every descendant of *root*,
    but *root*: one scan of ``/proc``."""
    parent: dict[int, int] = {}
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == root:
            continue
        fields = proc_stat(int(entry))
        # fields[0] is state, fields[1] ppid, fields[2] pgrp
        if fields is None or len(fields) < 3 or fields[0] == "Z":
            continue
        pid = int(entry)
        parent[pid] = int(fields[1])
        if int(fields[2]) == pgid:
            pids.add(pid)
    for pid in parent:
        p, seen = pid, 0
        while p in parent and seen < 64:
            p, seen = parent[p], seen + 1
            if p == root:
                pids.add(pid)
                break
    return sorted(pids)


def process_start(pid: int) -> str | None:
    """Return when *pid* started (clock ticks since boot, from ``/proc``), None where unknown."""
    fields = proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def running_since(pid: int) -> str | None:
    """:func:`process_start` of *pid* if it runs, None if it is gone or a zombie.

    With the pid it names one process for good: a pid reused after a reboot
    or a crash has another start time.
    """
    fields = proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 and fields[0] != "Z" else None


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
    directories of agents that are gone (:func:`remove_stale_dirs`), and so
    does ``dask-ssh down`` / ``clean`` on each host of the cluster, once it has
    stopped every process of it there (:meth:`remove_stale`).
    """

    PREFIX = "sshdeploy-agent-"

    def __init__(self) -> None:
        self.path: str | None = None

    #: Longest usable AF_UNIX socket path (108 bytes with the NUL) minus what
    #: multiprocessing appends to TMPDIR (``/pymp-XXXXXXXX/listener-XXXXXXXX``).
    MAX_PATH = 107 - 32

    @classmethod
    def base(cls) -> str:
        """Where the agents' directories are made on this host."""
        import tempfile

        base = tempfile.gettempdir()
        if len(os.path.join(base, "sshdeploy-agent-XXXXXXXX")) > cls.MAX_PATH and os.access(
                "/tmp", os.W_OK | os.X_OK):
            # A long TMPDIR (deep scratch paths on clusters) would leave the
            # forkserver's socket unbindable ("AF_UNIX path too long").
            base = "/tmp"
        return base

    @classmethod
    def remove_stale(cls) -> list[str]:
        """Remove the directories of this host's agents that are gone (SIGKILL); return them."""
        return remove_stale_dirs(cls.base(), cls.PREFIX)

    def make(self) -> None:
        import tempfile

        base = self.base()
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
