"""A named cluster's jobs as the controller sees them: records, states, exit statuses (pure).

A job runs on the cluster's scheduler host under a supervisor of its own
(:mod:`sshdeploy.remote.agent.jobs`), which keeps its record and log there;
this module reads those records (:class:`JobRecord`), says what state a job
is in and what exit status ``dask-ssh`` gives for it, and lays out what a
submit sends (:func:`job_files`, :func:`upload_dir`). No network, no
distributed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from signal import Signals
from typing import Any, Literal

from sshdeploy.errors import ConfigError
from sshdeploy.named.status import format_age
from sshdeploy.remote.agent.jobs import ACTIVE

JobState = Literal["running", "succeeded", "failed", "stopped", "lost"]
#: The columns of ``dask-ssh jobs NAME``, in order.
COLUMNS = ("id", "name", "state", "exit", "age", "runtime", "who", "command")
#: Exit status of ``dask-ssh submit`` / ``job wait`` for a job whose end is not known (lost).
EXIT_LOST = 1


@dataclass(frozen=True)
class JobRecord:
    """One job of a named cluster, as its scheduler host recorded it.

    Attributes
    ----------
    id : str
        ``"1"``, ``"2"``...: unique within the cluster.
    name : str
        ``--job-name`` ("" if none).
    argv : tuple of str
        What runs (the scheduler's Python, the script, its arguments).
    who : str
        ``user@machine`` that submitted it.
    state : str
        As recorded: ``starting``, ``running``, ``stopping``, ``succeeded``,
        ``failed``, ``stopped``.
    alive : bool
        Its supervisor runs on the scheduler host now.
    exit_code, signal : int or None
        How it ended: its exit code, or the signal that ended it.
    reason : str
        Why it was stopped (who stopped it, a timeout, the cluster stopping).
    submitted, started, ended : float or None
        ``time.time()`` on the scheduler host.
    timeout : float or None
        ``--timeout`` in seconds.
    cwd, log : str
        Its working directory and log file on the scheduler host.

    Examples
    --------
    >>> job = JobRecord.from_json({"id": "3", "state": "failed", "exit_code": 3, "x": 1})
    >>> job.status, job.exit_status(), job.describe()
    ('failed', 3, 'failed with exit code 3')
    >>> JobRecord("4", state="running", alive=False).status      # its supervisor is gone
    'lost'
    """

    id: str
    name: str = ""
    argv: tuple[str, ...] = ()
    who: str = ""
    state: str = "starting"
    alive: bool = False
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""
    submitted: float | None = None
    started: float | None = None
    ended: float | None = None
    timeout: float | None = None
    cwd: str = ""
    log: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobRecord:
        """Build a record from a host's answer (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        values["id"] = str(data.get("id", "?"))
        values["argv"] = tuple(str(a) for a in data.get("argv") or ())
        return cls(**values)

    @property
    def status(self) -> JobState:
        """``running``, ``succeeded``, ``failed``, ``stopped``, or ``lost`` (recorded as
        running, but its supervisor is gone: the host rebooted, or it was killed)."""
        if self.state in ACTIVE:
            return "running" if self.alive else "lost"
        if self.state in ("succeeded", "failed", "stopped"):
            return self.state  # type: ignore[return-value]  # one of the literals
        return "lost"

    @property
    def done(self) -> bool:
        """Whether the job has ended (or is lost): nothing more will change."""
        return self.status != "running"

    def exit_status(self) -> int:
        """The exit status ``dask-ssh submit`` and ``job wait`` give for it.

        The job's own exit code; 128 + N for a job ended by signal N (as a
        shell says it); :data:`EXIT_LOST` when its end is not known.

        Examples
        --------
        >>> JobRecord("1", state="succeeded", exit_code=0).exit_status()
        0
        >>> JobRecord("2", state="stopped", signal=2).exit_status()
        130
        >>> JobRecord("3", state="running", alive=False).exit_status()
        1
        """
        if self.signal:
            return 128 + int(self.signal)
        if self.exit_code is not None and self.status != "lost":
            return int(self.exit_code)
        return EXIT_LOST

    def describe(self) -> str:
        """How it stands, in words (``failed with exit code 3``, ``killed by SIGSEGV``...).

        Examples
        --------
        >>> JobRecord("1", state="stopped", signal=2, reason="stopped by ann@lap").describe()
        'stopped (stopped by ann@lap)'
        >>> JobRecord("1", state="failed", signal=11).describe()
        'failed: killed by SIGSEGV'
        """
        status = self.status
        if status == "succeeded":
            return "succeeded"
        if status == "running":
            return "running"
        if status == "lost":
            return ("lost: its supervisor on the scheduler host is gone (the host rebooted, "
                    "or it was killed); how the job ended is not known")
        if status == "stopped":
            return f"stopped ({self.reason})" if self.reason else "stopped"
        if self.signal:
            return f"failed: killed by {signal_name(self.signal)}"
        return f"failed with exit code {self.exit_code}" + (
            f" ({self.reason})" if self.reason else "")

    def exit_cell(self) -> str:
        """The ``exit`` column: the code, the signal's name, or ``-``."""
        if self.signal:
            return signal_name(self.signal)
        return "-" if self.exit_code is None else str(self.exit_code)

    def command(self) -> str:
        """What runs, as a shell would show it, the interpreter by its name only.

        >>> JobRecord("1", argv=("/opt/py/bin/python3", "train.py", "--lr", "0.1")).command()
        'python3 train.py --lr 0.1'
        """
        if not self.argv:
            return ""
        return shlex.join([os.path.basename(self.argv[0]), *self.argv[1:]])

    def runtime(self, now: float) -> float | None:
        """Seconds it ran (so far)."""
        if self.started is None:
            return None
        return max(0.0, (self.ended if self.ended is not None else now) - self.started)

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` form: the record, with ``status`` and ``exit_status``."""
        out = asdict(self)
        out["argv"] = list(self.argv)
        out["status"] = self.status
        out["exit_status"] = self.exit_status() if self.done else None
        return out

    def row(self, now: float) -> tuple[str, ...]:
        """The cells of one ``dask-ssh jobs`` row, in :data:`COLUMNS` order."""
        state = self.status if self.status != "stopped" or not self.reason else \
            f"stopped ({self.reason})"
        age = now - self.submitted if self.submitted else None
        return (self.id, self.name or "-", state, self.exit_cell(), format_age(age),
                format_age(self.runtime(now)), self.who or "-", self.command())


def signal_name(number: int) -> str:
    """``SIGTERM`` for 15; ``signal 99`` for a number no signal has.

    >>> signal_name(15), signal_name(99)
    ('SIGTERM', 'signal 99')
    """
    try:
        return Signals(int(number)).name
    except ValueError:
        return f"signal {number}"


def parse_env(items: Sequence[str], option: str = "--env") -> dict[str, str]:
    """Turn ``KEY=VALUE`` items into a mapping.

    Raises
    ------
    ConfigError
        An item without ``=`` or with a name a shell could not export.

    Examples
    --------
    >>> parse_env(["A=1", "B=x=y"])
    {'A': '1', 'B': 'x=y'}
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not (key[0].isalpha() or key[0] == "_") or not all(
                c.isalnum() or c == "_" for c in key):
            raise ConfigError(option, f"{item!r} is not KEY=VALUE",
                              remedy="Give a variable name, '=' and its value, e.g. "
                              f"{option} OMP_NUM_THREADS=1.")
        out[key] = value
    return out


@dataclass(frozen=True)
class JobFiles:
    """What a submit sends and where the job starts.

    Attributes
    ----------
    paths : tuple of str
        The local paths uploaded (:mod:`sshdeploy.env.uploads` names them on the host).
    cwd : str
        The job's working directory, relative to its upload directory.
    script : str
        The script, relative to *cwd*.
    """

    paths: tuple[str, ...]
    cwd: str
    script: str


def job_files(script: str | os.PathLike[str], upload: Sequence[str] = (),
              base: Path | None = None) -> JobFiles:
    """Lay out a job's files: by default the script's directory, which it runs in.

    With *upload*, the script alone and those paths: it runs in the upload
    directory, beside them (``import mypkg`` finds an uploaded ``mypkg/``).

    Examples
    --------
    >>> job_files("/work/proj/train.py")
    JobFiles(paths=('/work/proj',), cwd='proj', script='train.py')
    >>> job_files("/work/proj/train.py", ["src/mypkg"], base=Path("/work"))
    JobFiles(paths=('/work/proj/train.py', '/work/src/mypkg'), cwd='', script='train.py')
    """
    base = base or Path.cwd()
    path = (base / script).resolve()
    if upload:
        return JobFiles((str(path), *(str((base / p).resolve()) for p in upload)), "", path.name)
    return JobFiles((str(path.parent),), path.parent.name, path.name)


def upload_dir(cluster: str, files: Mapping[str, str]) -> str:
    """The directory a job's files go to on the scheduler host, named by their contents.

    Jobs that send the same files share it; ``down`` removes every one of the
    cluster (the ``.`` ends its name: no cluster name holds one).

    >>> upload_dir("lab", {"train.py": "ab" * 32})
    'job-lab.752c274f8ec6cd73'
    """
    digest = hashlib.sha256(json.dumps(dict(files), sort_keys=True).encode()).hexdigest()
    return f"{upload_prefix(cluster)}{digest[:16]}"


def upload_prefix(cluster: str) -> str:
    """What every job upload directory of *cluster* starts with."""
    return f"job-{cluster}."


#: Run by the host's Python before ``dask-ssh exec``'s command: print ``export`` lines of
#: the ``PATH`` and ``PYTHONPATH`` that the cluster's agent on this host runs with (its
#: setup, a synced environment, the uploads: what its workers have), when one runs.
AGENT_PATHS = """\
import json, os, platform, shlex, sys
d = os.path.join(os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"),
                 "sshdeploy", "clusters", sys.argv[1], "hosts", platform.node() or "localhost",
                 "agents")
for entry in sorted(os.listdir(d)) if os.path.isdir(d) else []:
    try:
        with open(os.path.join(d, entry)) as f:
            rec = json.load(f)
        with open("/proc/%d/stat" % int(rec["pid"]), "rb") as f:
            if f.read().rsplit(b")", 1)[-1].split()[19].decode() != rec.get("start"):
                continue
        with open("/proc/%d/environ" % int(rec["pid"]), "rb") as f:
            env = dict(i.split(b"=", 1) for i in f.read().split(b"\\0") if b"=" in i)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        continue
    for key in (b"PATH", b"PYTHONPATH"):
        if key in env:
            print("export %s=%s" % (key.decode(), shlex.quote(os.fsdecode(env[key]))))
    break
"""


def exec_command(command: Sequence[str], setup: str | None, env: Mapping[str, str],
                 cluster: str | None = None, python: str | None = None) -> str:
    """The remote shell command of ``dask-ssh exec``: its pid, the setup, then *command*.

    The words of *command* are joined with spaces and run by the remote shell,
    as ``ssh host CMD...`` does (pipes and ``$VARS`` work when quoted for the
    local shell). The first line it prints is the shell's pid: its process
    group, killed at a timeout or Ctrl-C. With *cluster* (and its *python*),
    the command runs with the ``PATH`` and ``PYTHONPATH`` of the cluster's
    agent on that host, as its workers do (a synced environment, the
    uploads: :data:`AGENT_PATHS`), and an absolute *python*'s directory
    first on ``PATH`` (``python`` is the workers' interpreter).

    Examples
    --------
    >>> print(exec_command(["hostname", "-f"], "module load x", {"A": "1 2"}))
    echo "$$"
    export A='1 2'
    { module load x
    } </dev/null >&2 || exit 121
    hostname -f
    >>> lines = exec_command(["nproc"], None, {}, "lab", "/opt/py/bin/python").splitlines()
    >>> lines[1].startswith('eval "$(/opt/py/bin/python -c '), lines[-3][-18:]
    (True, ' lab 2>/dev/null)"')
    >>> lines[-2:]
    ['export PATH=/opt/py/bin:"$PATH"', 'nproc']
    """
    from sshdeploy.bootstrap import EXIT_SETUP_FAILED

    lines = ['echo "$$"', *(f"export {k}={shlex.quote(v)}" for k, v in env.items())]
    if setup and setup.strip():
        lines.append(f"{{ {setup.strip()}\n}} </dev/null >&2 || exit {EXIT_SETUP_FAILED}")
    if cluster is not None and python:
        lines.append(f'eval "$({shlex.quote(python)} -c {shlex.quote(AGENT_PATHS)} '
                     f'{shlex.quote(cluster)} 2>/dev/null)"')
        if python.startswith("/"):
            lines.append(f'export PATH={shlex.quote(os.path.dirname(python))}:"$PATH"')
    return "\n".join([*lines, " ".join(command)])
