"""A named cluster's jobs on its scheduler host: records, the supervisor, logs, stop.

A job (``dask-ssh submit NAME script.py``) runs beside the scheduler, on its
host, under a *supervisor*: a process of its own session, forked by the agent
that ran the ``job-submit`` operation (:func:`job_op`), so it belongs to the
cluster, not to the SSH connection that asked for it. The supervisor starts
the job in its own process group with the scheduler agent's environment (what
the login shell and the setup gave it: a synced environment's ``PYTHONPATH``
too), the cluster's ``env``, ``DASK_SCHEDULER_ADDRESS`` and, for a TLS
cluster, its client credentials, so that ``Client()`` connects. It drains the
job's output into a log file, waits for it, and writes how it ended. It
stops the job (SIGINT, SIGTERM, SIGKILL to the whole group and every
descendant, a grace period apart) when asked, at its timeout, or when the
cluster's scheduler agent is gone (idle timeout, maximum lifetime, ``down``).

Each job is a directory ``<cluster>/jobs/<id>/`` (ids 1, 2, 3...):

``job.json``
    its record (written atomically, 0600): id, name, argv, who, submitted,
    started, ended, state, exit code or signal, why it ended;
``output.log``
    stdout and stderr, as written (``output.log.1``: the older part, rotated
    past :data:`JOB_LOG_MAX`);
``stop.json``
    a stop request (who, grace) for the supervisor, which a SIGUSR1 announces;
``tls/``
    the client credentials of a TLS cluster, while the job runs.
"""

# Keep this file Python 3.10 compatible: the standard library and other parts only.
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from .group import proc_stat, process_start, process_tree
from .protocol import EVENT, Message

#: The operations on a cluster's jobs (run by :func:`sshdeploy.remote.agent.keep.keep_op`).
JOB_OPS = ("job-submit", "job-list", "job-follow", "job-stop", "job-stop-all")
#: The files of a job's directory.
JOB_RECORD, JOB_LOG, JOB_STOP = "job.json", "output.log", "stop.json"
#: A job's log is rotated (one older copy, ``.1``) past this size.
JOB_LOG_MAX = 8 * 2**20
#: States of a record whose supervisor runs; every other state is final.
ACTIVE = ("starting", "running", "stopping")
#: Seconds between two looks of the supervisor and of a follower.
POLL = 0.2
#: A follower with nothing to send says so this often (a controller that went away is noticed).
TICK = 2.0
#: Seconds the stop of every job may take per stage when the cluster goes down.
DOWN_GRACE = 2.0


def alive(pid: Any, start: Any) -> bool:
    """Whether the process *pid* that started at *start* (clock ticks) runs (not a zombie)."""
    fields = proc_stat(int(pid)) if pid else None
    if not fields or fields[0] == "Z":
        return False
    return start is None or (len(fields) > 19 and fields[19] == start)


#: When a process started (clock ticks since boot): the group part's reader.
started_at = process_start


def descendants(root: int) -> list[int]:
    """Live (not zombie) descendants of *root*, and members of its process group, but *root*."""
    return process_tree(root, root)


def write_json(path: str, data: Any) -> None:
    """Write *data* to *path* atomically (a temporary file, then rename), mode 0600."""
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


def private_dir(path: str) -> None:
    """Make *path* and its missing parents, each 0700 (only this user reads a cluster's files)."""
    old = os.umask(0o077)
    try:
        os.makedirs(path, exist_ok=True)
    finally:
        os.umask(old)


def _ids(root: str) -> list[str]:
    names = os.listdir(root) if os.path.isdir(root) else []
    return sorted((n for n in names if n.isdigit()), key=int)


def new_job_dir(root: str) -> tuple[str, str]:
    """Make the next job's directory under *root* (exclusive: concurrent submits differ)."""
    private_dir(root)
    n = int((_ids(root) or ["0"])[-1])
    while True:
        n += 1
        path = os.path.join(root, str(n))
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return str(n), path


def read_record(jobdir: str) -> Message | None:
    """A job's record, with ``alive``: whether its supervisor still runs."""
    rec = read_json(os.path.join(jobdir, JOB_RECORD))
    if not isinstance(rec, dict):
        return None
    rec["alive"] = alive(rec.get("pid"), rec.get("start")) if rec.get("pid") else \
        rec.get("state") == "starting"
    return rec


def active(rec: Message) -> bool:
    """Whether the job of *rec* runs: an active state and a supervisor that runs."""
    return rec.get("state") in ACTIVE and bool(rec.get("alive"))


def list_jobs(directory: str) -> list[Message]:
    root = os.path.join(directory, "jobs")
    out = []
    for job_id in _ids(root):
        rec = read_record(os.path.join(root, job_id))
        if rec is not None:
            out.append(rec)
    return out


def jobs_running(directory: str) -> bool:
    """Whether a job of the cluster runs (it counts as activity for the idle timeout)."""
    return any(active(rec) for rec in list_jobs(directory))


def find_job(directory: str, ref: str) -> str | None:
    """The directory of job *ref*: its id, else the latest job of that name."""
    root = os.path.join(directory, "jobs")
    if ref.isdigit() and os.path.isfile(os.path.join(root, ref, JOB_RECORD)):
        return os.path.join(root, ref)
    for job_id in reversed(_ids(root)):
        rec = read_json(os.path.join(root, job_id, JOB_RECORD))
        if isinstance(rec, dict) and rec.get("name") == ref:
            return os.path.join(root, job_id)
    return None


def scheduler_agent(directory: str) -> Message | None:
    """The record of this host's scheduler agent of the cluster, if it runs."""
    import platform

    agents = os.path.join(directory, "hosts", platform.node() or "localhost", "agents")
    for entry in sorted(os.listdir(agents)) if os.path.isdir(agents) else []:
        rec = read_json(os.path.join(agents, entry))
        if isinstance(rec, dict) and rec.get("role") == "scheduler" and \
                alive(rec.get("pid"), rec.get("start")):
            return rec
    return None


def environ_of(pid: int) -> dict[str, str] | None:
    """The environment *pid* was started with (what its login shell and setup gave it)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return None
    out = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            out[os.fsdecode(key)] = os.fsdecode(value)
    return out


#: Where a TLS cluster's client credentials go in a job's directory, and the dask settings
#: (as environment variables) that make ``Client()`` use them.
TLS_FILES = {"ca": ("ca.pem", "DASK_DISTRIBUTED__COMM__TLS__CA_FILE"),
             "cert": ("client.pem", "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"),
             "key": ("client.key", "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY")}


def job_environment(directory: str, jobdir: str, sched: Message, cluster: Message,
                    data: Message) -> dict[str, str]:
    """The job's environment: the scheduler agent's, the cluster's, its address, the job's own."""
    env = environ_of(int(sched["pid"])) or dict(os.environ)
    spec = cluster.get("spec") or {}
    env.update({str(k): str(v) for k, v in (spec.get("env") or {}).items()})
    status = read_json(os.path.join(directory, "status.json")) or {}
    env["DASK_SCHEDULER_ADDRESS"] = str(status.get("address") or cluster.get("scheduler_address"))
    tls = cluster.get("tls") or {}
    if tls:
        private_dir(os.path.join(jobdir, "tls"))
        for key, (filename, variable) in TLS_FILES.items():
            if tls.get(key):
                path = os.path.join(jobdir, "tls", filename)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(tls[key])
                env[variable] = path
        env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] = "True"
    env.setdefault("PYTHONUNBUFFERED", "1")  # lines reach the log (and the terminal) as written
    env["SSHDEPLOY_CLUSTER"] = os.path.basename(directory)
    env["SSHDEPLOY_JOB_ID"] = os.path.basename(jobdir)
    env.update({str(k): str(v) for k, v in (data.get("env") or {}).items()})
    return env


def submit(directory: str, data: Message) -> Message:
    """Start a job under a supervisor of its own; answer its record once it runs (or failed)."""
    sched = scheduler_agent(directory)
    if sched is None:
        return {"error": "not-running", "end": read_json(os.path.join(directory, "end.json"))}
    cluster = read_json(os.path.join(directory, "cluster.json")) or {}
    job_id, jobdir = new_job_dir(os.path.join(directory, "jobs"))
    env = job_environment(directory, jobdir, sched, cluster, data)
    argv = [str(a) for a in data.get("argv") or ()]
    if data.get("python"):
        argv.insert(0, sys.executable)  # the scheduler's own interpreter
    rec: Message = {
        "id": job_id, "name": data.get("name") or "", "argv": argv,
        "who": data.get("who") or "", "cwd": os.path.join(os.path.expanduser("~"),
                                                          data.get("cwd") or ""),
        "uploads": data.get("uploads") or "", "submitted": time.time(), "started": None,
        "ended": None, "state": "starting", "exit_code": None, "signal": None, "reason": "",
        "timeout": data.get("timeout"), "pid": None, "start": None, "job_pid": None,
        "scheduler": {"pid": sched.get("pid"), "start": sched.get("start")},
        "log": os.path.join(jobdir, JOB_LOG),
    }
    write_json(os.path.join(jobdir, JOB_RECORD), rec)
    child = os.fork()
    if child == 0:  # the supervisor: never returns
        try:
            daemonize()
            Supervisor(directory, jobdir, rec, env).run()
        finally:
            os._exit(0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = read_record(jobdir) or rec
        if now.get("state") != "starting":
            return {"job": now}
        done, _status = os.waitpid(child, os.WNOHANG)
        if done:  # the supervisor died before starting the job
            break
        time.sleep(0.02)
    now = read_record(jobdir) or rec
    if now.get("state") == "starting":
        now.update(state="failed", reason="its supervisor did not start the job", alive=False,
                   ended=time.time())
        write_json(os.path.join(jobdir, JOB_RECORD), {k: v for k, v in now.items()
                                                     if k != "alive"})
    return {"job": now}


def daemonize() -> None:
    """Leave the SSH session: a session of our own, no inherited descriptor but /dev/null."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 65536)  # the channel's pipes: the connection may close, we stay
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


class Supervisor:
    """Runs one job: start it, drain its output, stop it when asked, record how it ended."""

    def __init__(self, directory: str, jobdir: str, rec: Message, env: dict[str, str]) -> None:
        self.directory = directory
        self.jobdir = jobdir
        self.rec = rec
        self.env = env
        self.log_path = os.path.join(jobdir, JOB_LOG)
        #: Set by a signal handler (which only sets it): why to stop, and the grace per stage.
        self.asked: tuple[str, float] | None = None
        self.code: int | None = None
        self.pid = 0
        self.lock = threading.Lock()

    def save(self, **fields: Any) -> None:
        self.rec.update(fields)
        write_json(os.path.join(self.jobdir, JOB_RECORD), self.rec)

    def on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGUSR1:
            self.asked = ("stop", 0.0)  # the request file says who and the grace
        elif self.asked is None:
            self.asked = (f"its supervisor got {signal.Signals(signum).name}", DOWN_GRACE)

    def run(self) -> None:
        for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.on_signal)
        try:  # orphans of the job are re-parented to us: we find and stop them too
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        except Exception:
            pass
        self.save(pid=os.getpid(), start=started_at(os.getpid()))
        import subprocess

        try:
            proc = subprocess.Popen(
                self.rec["argv"], cwd=self.rec["cwd"], env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            self.write_log(f"sshdeploy: cannot start the job: {exc}\n".encode())
            self.save(state="failed", ended=time.time(), exit_code=126 if isinstance(
                exc, PermissionError) else 127, reason=f"cannot start: {exc}")
            return
        self.pid = proc.pid
        self.save(state="running", job_pid=proc.pid, started=time.time())
        assert proc.stdout is not None
        pump = threading.Thread(target=self.pump, args=(proc.stdout.fileno(),), daemon=True)
        pump.start()
        reason = ""
        checked = 0.0
        while self.code is None:
            self.reap()
            if self.code is not None:
                break
            why, grace = self.why_stop(time.monotonic() - checked > 1.0)
            if time.monotonic() - checked > 1.0:
                checked = time.monotonic()
            if why:
                reason = why
                self.save(state="stopping", reason=why)
                self.terminate(grace)
                break
            time.sleep(POLL)
        self.terminate(2.0, (signal.SIGTERM, signal.SIGKILL))  # what the job left behind
        proc.returncode = self.code
        pump.join(10)
        code = self.code if self.code is not None else -signal.SIGKILL
        state = "stopped" if reason else "succeeded" if code == 0 else "failed"
        self.save(state=state, ended=time.time(), exit_code=code if code >= 0 else None,
                  signal=-code if code < 0 else None, reason=reason)
        import shutil

        shutil.rmtree(os.path.join(self.jobdir, "tls"), ignore_errors=True)

    def why_stop(self, look_at_cluster: bool) -> tuple[str, float]:
        """Why the job must stop now ("" if it need not), and the grace of each stage."""
        if self.asked is not None:
            why, grace = self.asked
            if why == "stop":
                ask = read_json(os.path.join(self.jobdir, JOB_STOP)) or {}
                who = ask.get("by")
                why = str(ask.get("reason") or (f"stopped by {who}" if who else "stopped"))
                grace = float(ask.get("grace", 5.0))
            return why, grace
        timeout = self.rec.get("timeout")
        if timeout and time.time() - float(self.rec.get("started") or 0) > float(timeout):
            return f"timed out after {float(timeout):g} s", 5.0
        sched = self.rec.get("scheduler") or {}
        if look_at_cluster and not alive(sched.get("pid"), sched.get("start")):
            end = read_json(os.path.join(self.directory, "end.json")) or {}
            return "the cluster stopped" + (f" ({end['reason']})" if end.get("reason") else ""), \
                DOWN_GRACE
        return "", 0.0

    def reap(self) -> None:
        """Collect every child that ended: the job (its status) and orphans re-parented to us."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                self.code = os.waitstatus_to_exitcode(status)

    def terminate(self, grace: float,
                  signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM,
                                                         signal.SIGKILL)) -> None:
        """Send each of *signals* to the whole job (its group and every descendant), *grace*
        seconds apart, until nothing of it is left."""
        for sig in signals:
            targets = descendants(os.getpid())
            if not targets:
                break
            for pid in targets:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + (grace if sig != signal.SIGKILL else 5.0)
            while time.monotonic() < deadline:
                self.reap()
                if not any(alive(p, None) for p in targets):
                    break
                time.sleep(0.02)
        self.reap()

    def write_log(self, data: bytes) -> None:
        with self.lock:
            try:
                if os.path.getsize(self.log_path) > JOB_LOG_MAX:
                    os.replace(self.log_path, self.log_path + ".1")
            except OSError:
                pass
            fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def pump(self, fd: int) -> None:
        """Drain the job's output into its log until every writer is gone."""
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            try:
                self.write_log(data)
            except OSError:
                pass  # a full disk must not block the job: what cannot be kept is dropped


class LogReader:
    """Read a job's log from its start (the rotated part first), following a rotation."""

    def __init__(self, jobdir: str) -> None:
        self.path = os.path.join(jobdir, JOB_LOG)
        self.file: Any = None

    def read(self, size: int = 65536) -> bytes:
        if self.file is None:
            for path in (self.path + ".1", self.path):
                try:
                    self.file = open(path, "rb")  # held while following
                    break
                except OSError:
                    continue
            else:
                return b""
        data = bytes(self.file.read(size))
        if data:
            return data
        try:  # at the end of the file we hold: the log may be another file now (rotated)
            now = os.stat(self.path).st_ino
        except OSError:
            return b""
        if now == os.fstat(self.file.fileno()).st_ino:
            return b""
        self.file.close()
        self.file = open(self.path, "rb")
        return bytes(self.file.read(size))


def emit(**event: Any) -> None:
    """Write one event to the controller now (fd 1); a controller gone ends us quietly."""
    data = EVENT + (json.dumps(event) + "\n").encode()
    try:
        while data:
            data = data[os.write(1, data):]
    except OSError:
        os._exit(0)


def follow(directory: str, data: Message) -> Message:
    """Send job ``data["job"]``'s log as ``output`` events; with ``follow``, until it ends.

    ``quiet`` sends no output (``dask-ssh job wait``). Answers its record.
    """
    jobdir = find_job(directory, str(data.get("job")))
    if jobdir is None:
        return unknown(directory, data)
    reader = LogReader(jobdir)
    quiet = bool(data.get("quiet"))
    last = time.monotonic()
    while True:
        rec = read_record(jobdir) or {}
        done = not active(rec)
        while True:
            chunk = reader.read()
            if not chunk:
                break
            if not quiet:
                emit(ev="output", data=chunk.decode("utf-8", "surrogateescape"))
                last = time.monotonic()
        if done or not data.get("follow"):
            return {"job": read_record(jobdir) or rec}
        if time.monotonic() - last > TICK:
            emit(ev="tick")
            last = time.monotonic()
        time.sleep(POLL)


def unknown(directory: str, data: Message) -> Message:
    return {"error": "unknown-job", "job": data.get("job"),
            "known": [r.get("id") for r in list_jobs(directory)][-20:]}


def stop(directory: str, data: Message) -> Message:
    """Stop job ``data["job"]`` (see :meth:`Supervisor.terminate`); answer once nothing of it
    is left, with its record (``was``: the state it was already in, if it had ended)."""
    jobdir = find_job(directory, str(data.get("job")))
    if jobdir is None:
        return unknown(directory, data)
    rec = read_record(jobdir) or {}
    if not active(rec):
        return {"job": rec, "was": rec.get("state")}
    stop_all_of([jobdir], data)
    return {"job": read_record(jobdir) or rec}


def stop_all_of(jobdirs: list[str], data: Message) -> list[Message]:
    """Ask the supervisors of *jobdirs* to stop their jobs, all at once; wait until they are
    gone (or kill them and what they ran); return the records of those that ran."""
    grace = float(data.get("grace", 5.0))
    asked = []
    for jobdir in jobdirs:
        rec = read_record(jobdir) or {}
        if not active(rec):
            continue
        write_json(os.path.join(jobdir, JOB_STOP), {"by": data.get("by"), "grace": grace,
                                                    "reason": data.get("reason"),
                                                    "time": time.time()})
        try:
            os.kill(int(rec["pid"]), signal.SIGUSR1)
        except (OSError, TypeError, ValueError):
            pass
        asked.append((jobdir, rec))
    deadline = time.monotonic() + 3 * grace + 10
    while time.monotonic() < deadline and any(alive(r["pid"], r["start"]) for _, r in asked):
        time.sleep(0.05)
    for jobdir, rec in asked:  # a supervisor that did not finish: kill it and its job
        if alive(rec["pid"], rec["start"]):
            for pid in [*descendants(int(rec["pid"])), int(rec["pid"])]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            now = read_record(jobdir) or rec
            now.pop("alive", None)
            now.update(state="stopped", ended=time.time(), signal=int(signal.SIGKILL),
                       reason=str(data.get("reason") or "stopped") + " (killed)")
            write_json(os.path.join(jobdir, JOB_RECORD), now)
    return [rec for _, rec in asked]


def stop_everything(directory: str, data: Message) -> Message:
    """Stop every running job of the cluster, then remove its jobs and their uploads here."""
    import shutil

    root = os.path.join(directory, "jobs")
    stopped = stop_all_of([os.path.join(root, i) for i in _ids(root)], data)
    shutil.rmtree(root, ignore_errors=True)
    prefix = str(data.get("uploads") or "")
    base = os.path.join(os.path.expanduser("~"), os.path.dirname(prefix))
    stem = os.path.basename(prefix)
    if stem.startswith("job-") and stem.endswith(".") and os.path.isdir(base):
        for entry in os.listdir(base):
            if entry.startswith(stem):
                shutil.rmtree(os.path.join(base, entry), ignore_errors=True)
    return {"stopped": [str(r.get("id")) for r in stopped],
            "jobs": [{"id": str(r.get("id")), "name": r.get("name") or "",
                      "argv": [str(a) for a in r.get("argv") or ()]} for r in stopped]}


def job_op(op: str, directory: str, data: Any = None) -> Message:
    """Run one operation on the jobs of the cluster whose files are *directory*.

    ``job-submit`` starts a job; ``job-list`` answers every record;
    ``job-follow`` sends a job's log (and, with ``follow``, what it writes
    until it ends); ``job-stop`` stops one; ``job-stop-all`` stops every job
    and removes them (``dask-ssh down``). Each answers with a message.
    """
    data = data if isinstance(data, dict) else {}
    if op == "job-submit":
        return submit(directory, data)
    if op == "job-follow":
        return follow(directory, data)
    if op == "job-stop":
        return stop(directory, data)
    if op == "job-stop-all":
        return stop_everything(directory, data)
    return {"jobs": list_jobs(directory), "running": scheduler_agent(directory) is not None}
