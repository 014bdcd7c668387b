"""A named cluster's files on a host, and what a kept agent adds (:class:`Keep`).

A named cluster's agents outlive their controller. Its files (``cluster.json``,
the scheduler's status, the agents' records and logs) live under
:func:`state_home` (the controller keeps its own records there too:
:mod:`sshdeploy.named.state`); :func:`keep_op` runs the controller's
operations on them (:mod:`sshdeploy.named.hostops`).
"""

# Keep this file Python 3.10 compatible: the standard library and other parts only.
from __future__ import annotations

import os
import threading
import time
from typing import Any

from .group import running_since
from .jobs import JOB_OPS, job_op, jobs_running, private_dir, read_json, write_json
from .marks import end_marked, marked
from .protocol import Message
from .servers import WANTED_OP

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


def keep_agents(directory: str) -> list[Message]:
    """Return the agent records of a cluster directory, each with ``alive``."""
    out = []
    agents = os.path.join(directory, "agents")
    for entry in sorted(os.listdir(agents)) if os.path.isdir(agents) else []:
        rec = read_json(os.path.join(agents, entry))
        if not isinstance(rec, dict):
            continue
        rec["alive"] = running_since(int(rec.get("pid", 0))) == rec.get("start")
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


def keep_sources(directory: str) -> list[str]:
    """Return every source (``[name]`` of a line: a worker, an agent) of a cluster directory's
    log files, all their lines read: the workers that ran there, even long ago."""
    found: set[str] = set()
    logs = os.path.join(directory, "logs")
    for entry in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
        try:
            with open(os.path.join(logs, entry), errors="replace") as f:
                for line in f:  # "YYYY-mm-dd HH:MM:SS [source] text"
                    end = line.find("] ", 20)
                    if line[20:21] == "[" and end > 0:
                        found.add(line[21:end])
        except OSError:
            pass
    return sorted(found)


def _settle(name: str, directory: str, wait: float = 3 * KEEP_TICK) -> None:
    """Give a kept agent whose record was removed the time to write it again (a probe).

    Only when its processes run with no live record: within *wait* seconds the
    record is back (:meth:`Keep.restore`), or those processes are gone.
    """
    deadline = time.monotonic() + wait
    while not any(a["alive"] for a in keep_agents(directory)) and marked(name) and \
            time.monotonic() < deadline:
        time.sleep(0.1)


def keep_op(op: str, name: str, data: Any = None, grace: float = 5.0) -> Message:
    """Run one operation on the files and agents of the named cluster *name* on this host.

    ``probe``: its files, which of its agents run, and its processes found
    by their mark (``marked``); ``write``: store *data* as its
    ``cluster.json``; ``kill``: TERM the process group of every agent that
    runs and every process that carries the cluster's mark, KILL what is left
    after *grace* seconds (``found``: what was found to stop); ``remove``:
    delete its directory once nothing of it runs; ``logs``: also the last
    ``data["lines"]`` lines of each log file, and with ``data["sources"]``
    every source of their lines (:func:`keep_sources`). Each answers with a probe.
    """
    directory = keep_dir(name)
    if op in JOB_OPS:  # the cluster's jobs (dask-ssh submit, jobs, job)
        return job_op(op, directory, data)
    mine = keep_host_dir(name)
    found: list[Message] = []
    recorded: list[Message] = []
    if op == "write":
        private_dir(directory)
        write_json(os.path.join(directory, KEEP_CLUSTER), data)
    elif op == "kill":  # by the agents' records and, whatever the files say, by the mark
        recorded = [a for a in keep_agents(mine) if a["alive"]]
        found = marked(name)
        end_marked(name, grace, recorded)
    elif op == "probe":
        _settle(name, mine)
    elif op == "remove" and not any(a["alive"] for a in keep_agents(mine)) \
            and not marked(name):
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
    sources: list[str] = []
    if op == "logs":
        logs = keep_logs(mine, int((data or {}).get("lines", 1000)))
        if (data or {}).get("sources"):
            sources = keep_sources(mine)
    if op == "list":  # every named cluster of this host, each probed
        root = os.path.dirname(directory)
        names = sorted(os.listdir(root)) if os.path.isdir(root) else []
        return {"clusters": {n: keep_op("probe", n) for n in names}}
    return {
        "logs": logs,
        "sources": sources,
        "marked": marked(name),
        "found": found,
        "recorded": len(recorded),
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
    log file keeps every line it forwards, and stays when it ends (``down``
    removes it with the cluster's files: the cause of an ending can be read
    after it); the scheduler's agent writes the status file, enforces the
    lifetime policies (idle timeout, maximum lifetime) and tells the workers'
    agents how many workers the cluster wants (:meth:`wanted`); the workers'
    agent starts again the workers lost in an outage and stops everything when
    the scheduler stays unreachable for the death timeout. On every way out it
    removes its record.

    It runs on without its controller only once *armed*: the controller arms
    its agents once the cluster is recorded (here and on the scheduler host),
    and agents started later for a recorded cluster start armed
    (``spec["armed"]``). Until then it is a classic agent: it stops with its
    controller, and on its way out removes every file it made, so an
    interrupted start leaves nothing on the host. An armed agent writes its
    record (and the scheduler's agent the cluster's ``cluster.json``) again
    when they are removed: the files say where the cluster is, the processes
    are the truth.
    """

    def __init__(self, spec: Message, role: str, label: str) -> None:
        self.name = str(spec["name"])
        self.label = label
        self.armed = bool(spec.get("armed"))
        #: The last ``cluster.json`` seen (scheduler's agent, armed), to write it again.
        self.cluster: Any = None
        self._cluster_stamp: tuple[int, int] | None = None
        self.dir = keep_dir(self.name)
        self.host_dir = keep_host_dir(self.name)
        self.role = role
        self.label = label
        self.idle_timeout = spec.get("idle_timeout")
        self.max_lifetime = spec.get("max_lifetime")
        self.death_timeout = float(spec.get("death_timeout") or 60)
        self.started = time.time()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
        self.log_path = os.path.join(self.host_dir, "logs", f"{safe}.{os.getpid()}.log")
        self.record = os.path.join(self.host_dir, "agents", f"{os.getpid()}.json")
        self.log_lock = threading.Lock()
        #: Its files are removed (never armed): lines that still come are not written.
        self.removed = False
        self.detached = False
        self.end_reason: str | None = None

    def begin(self, label: str) -> None:
        for sub in ("agents", "logs"):
            private_dir(os.path.join(self.host_dir, sub))
        write_json(self.record, {"pid": os.getpid(), "start": running_since(os.getpid()),
                                 "role": self.role, "label": label, "started": self.started,
                                 "log": self.log_path})

    def arm(self) -> bool:
        """Run on without a controller from now on (the cluster is recorded); False if it did."""
        if self.armed:
            return False
        self.armed = True
        self.guard_record()
        return True

    def restore(self) -> list[str]:
        """Write again what of this agent's files was removed (armed); return what was.

        Its record and directories; for the scheduler's agent, the cluster's
        ``cluster.json`` as last seen (a later controller may rewrite it:
        the newest copy is kept).
        """
        restored = []
        if not os.path.exists(self.record):
            try:
                self.begin(self.label)
                restored.append(self.record)
            except OSError:
                pass
        if self.role == "scheduler" and not self.guard_record() and self.cluster is not None:
            try:
                private_dir(self.dir)
                write_json(os.path.join(self.dir, KEEP_CLUSTER), self.cluster)
                restored.append(os.path.join(self.dir, KEEP_CLUSTER))
            except OSError:
                pass
        return restored

    def guard_record(self) -> bool:
        """Remember the cluster's ``cluster.json`` if it changed; return whether it exists."""
        path = os.path.join(self.dir, KEEP_CLUSTER)
        try:
            st = os.stat(path)
        except OSError:
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._cluster_stamp:
            data = read_json(path)
            if isinstance(data, dict):
                self.cluster, self._cluster_stamp = data, stamp
        return True

    def log(self, lines: list[tuple[str, str, str]]) -> None:
        """Append forwarded lines to the log file (rotated past :data:`KEEP_LOG_MAX`)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        data = "".join(f"{stamp} [{src}] {line}\n" for src, _stream, line in lines)
        with self.log_lock:
            if self.removed:
                return
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
        """Leave: say why (the log; the scheduler's agent in ``end.json`` too); the record goes.

        The log file stays: ``dask-ssh logs`` reads it until ``down``. An agent
        never armed leaves no file: its cluster was never recorded.
        """
        if not self.armed:
            self.remove_files()
            return
        why = self.end_reason or "stopped"
        self.log([(self.label, "stderr", f"sshdeploy agent: ended: {why}")])
        if self.role == "scheduler":
            try:
                write_json(os.path.join(self.dir, KEEP_END),
                           {"reason": self.end_reason or "stopped", "time": time.time()})
            except OSError:
                pass
        try:
            os.unlink(self.record)
        except OSError:
            pass

    def wanted(self, **_: Any) -> int | None:
        """How many workers the cluster wants, as its record here says (None: not known).

        A handler of the scheduler (:data:`~.servers.WANTED_OP`): a workers
        agent asks it before it starts a lost worker again.
        """
        record = read_json(os.path.join(self.dir, KEEP_CLUSTER))
        spec = record.get("spec") if isinstance(record, dict) else None
        wanted = spec.get("wanted") if isinstance(spec, dict) else None
        return wanted if isinstance(wanted, int) and not isinstance(wanted, bool) else None

    def remove_files(self) -> None:
        """Remove this agent's files, and each directory of the cluster left empty.

        Another agent of the cluster on this host (or on another host sharing
        this home) keeps its own; ``cluster.json`` stays (it is the record).
        """
        paths = [self.record, self.log_path, self.log_path + ".1"]
        if self.role == "scheduler":
            paths.append(os.path.join(self.dir, KEEP_STATUS))
        with self.log_lock:  # a line of a process still dying must not make its file again
            self.removed = True
            for path in paths:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        for path in (os.path.join(self.host_dir, "agents"), os.path.join(self.host_dir, "logs"),
                     self.host_dir, os.path.dirname(self.host_dir), self.dir):
            try:
                os.rmdir(path)
            except OSError:
                pass

    def scheduler_status(self, server: Any, idle: Message) -> str | None:
        """Write the status file; return why the scheduler must stop now (a policy), or None."""
        handlers = getattr(server, "handlers", None)
        if isinstance(handlers, dict):
            handlers.setdefault(WANTED_OP, self.wanted)
        now = time.time()
        busy = bool(getattr(server, "queued", None) or getattr(server, "unrunnable", None)
                    or any(ws.processing for ws in server.workers.values())
                    or jobs_running(self.dir))  # a running job is activity, with or without tasks
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
