"""What a named cluster's state is: probed on its scheduler host, never read from a file alone.

:func:`classify` is pure (an answer of :func:`sshdeploy.named.hostops.host_op`
in, a :class:`ClusterStatus` out); :func:`probe_cluster` asks the host.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sshdeploy.named.state import ClusterRecord

State = Literal["running", "degraded", "unreachable", "gone", "stopped", "stopping"]
#: The columns of ``dask-ssh list`` (and the keys of ``--json``), in order.
COLUMNS = ("name", "state", "scheduler", "workers", "hosts", "age", "idle")


@dataclass(frozen=True)
class ClusterStatus:
    """One named cluster as probed now.

    Attributes
    ----------
    name : str
    state : {"running", "degraded", "unreachable", "gone", "stopped"}
        ``degraded``: its scheduler runs with fewer workers than wanted;
        ``unreachable``: its scheduler host did not answer, or processes of
        it run there that no file of it describes; ``gone``: nothing of it
        runs there (a reboot, a kill); ``stopped``: it ended by itself (idle
        timeout, lifetime), *reason* says why; ``stopping``: it ended so, and
        processes of it still run on some host (the workers' agents stop once
        they find the scheduler gone: up to their ``death_timeout``).
    scheduler : str
        The scheduler's address.
    running, wanted : int
        Workers registered with the scheduler, and wanted.
    hosts : int
        Hosts of the cluster.
    age : float or None
        Seconds since it started.
    idle : float or None
        Seconds with no task and no client (None: busy, or not known).
    reason : str
        Why it is in that state (a stop's reason, the connect error...).
    clients : int
        Clients connected to its scheduler.
    """

    name: str
    state: State
    scheduler: str
    running: int = 0
    wanted: int = 0
    hosts: int = 0
    age: float | None = None
    idle: float | None = None
    reason: str = ""
    clients: int = 0

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` form: the column names as keys, plus the details."""
        out = asdict(self)
        out["workers"] = f"{self.running}/{self.wanted}"
        return out


def wanted_workers(record: ClusterRecord) -> int:
    """How many workers the cluster should run (its spec, after ``scale``)."""
    return int(record.spec.get("wanted", 0) or 0)


def classify(record: ClusterRecord, answer: dict[str, Any] | BaseException,
             now: float | None = None) -> ClusterStatus:
    """Return the state of *record*'s cluster from its scheduler host's answer.

    Examples
    --------
    >>> rec = ClusterRecord("a", "root@n1:22", "tcp://n1:8786", spec={"wanted": 2,
    ...                     "hosts": ["n1", "n2"]}, created=100.0)
    >>> alive = {"agents": [{"role": "scheduler", "alive": True}],
    ...          "status": {"workers": [{"name": "n2-0"}], "clients": 0, "idle_since": 150.0}}
    >>> s = classify(rec, alive, now=160.0)
    >>> s.state, s.running, s.wanted, s.age, s.idle
    ('degraded', 1, 2, 60.0, 10.0)
    >>> classify(rec, {"agents": [], "end": {"reason": "idle timeout"}}, now=1).state
    'stopped'
    >>> classify(rec, {"agents": [{"role": "scheduler", "alive": False}]}, now=1).state
    'gone'
    >>> classify(rec, OSError("no route"), now=1).state
    'unreachable'
    >>> classify(rec, {"agents": [], "marked": [{"pid": 7}]}, now=1).state
    'unreachable'
    """
    now = time.time() if now is None else now
    base: dict[str, Any] = {"name": record.name, "scheduler": record.scheduler_address,
            "wanted": wanted_workers(record), "hosts": len(record.spec.get("hosts") or []),
            "age": max(0.0, now - record.created) if record.created else None}
    if isinstance(answer, BaseException):
        return ClusterStatus(state="unreachable", reason=str(answer).splitlines()[0], **base)
    alive = any(a.get("role") == "scheduler" and a.get("alive")
                for a in answer.get("agents") or [])
    if not alive:
        end = answer.get("end") or {}
        marked = answer.get("marked") or []
        left = (f"; {len(marked)} process(es) of it still run on its scheduler host "
                f"(`dask-ssh down {record.name}` stops them)" if marked else "")
        if end:
            return ClusterStatus(state="stopped", reason=str(end.get("reason", "")) + left,
                                 **base)
        if marked:  # its processes run, yet no record there says so: whether it works is unknown
            return ClusterStatus(state="unreachable", reason="its files on its scheduler host "
                                 "are gone or cannot be written" + left, **base)
        return ClusterStatus(state="gone", reason="its scheduler no longer runs", **base)
    status = answer.get("status") or {}
    running = len(status.get("workers") or [])
    clients = int(status.get("clients") or 0)
    since = status.get("idle_since")
    idle = max(0.0, now - float(since)) if since and not clients else None
    wanted = base["wanted"]
    state: State = "degraded" if running < wanted else "running"
    reason = f"{wanted - running} worker(s) missing" if state == "degraded" else ""
    return ClusterStatus(state=state, running=running, idle=idle, reason=reason,
                         clients=clients, **base)


#: How long after a cluster ended by itself its other hosts are asked whether processes
#: of it still run, beyond the workers' ``death_timeout`` (after that they have stopped).
STOPPING_MARGIN = 30.0


def ended_recently(record: ClusterRecord, answer: dict[str, Any] | BaseException,
                   now: float | None = None) -> bool:
    """Whether the cluster ended by itself so lately that its workers may still be stopping.

    Examples
    --------
    >>> rec = ClusterRecord("a", "root@n1:22", "tcp://n1:8786", policy={"death_timeout": 60})
    >>> ended_recently(rec, {"end": {"reason": "idle timeout", "time": 100.0}}, now=150.0)
    True
    >>> ended_recently(rec, {"end": {"reason": "idle timeout", "time": 100.0}}, now=200.0)
    False
    """
    if isinstance(answer, BaseException):
        return False
    end = answer.get("end") or {}
    when = end.get("time")
    if not isinstance(when, (int, float)):
        return False
    now = time.time() if now is None else now
    wait = float((record.policy or {}).get("death_timeout") or 60.0) + STOPPING_MARGIN
    return now - float(when) < wait


def stopping(status: ClusterStatus, end_reason: str,
             answers: dict[Any, dict[str, Any] | BaseException]) -> ClusterStatus:
    """*status* (``stopped``) as ``stopping`` while processes of it run on some host.

    *answers* are the hosts' own (``probe``): their marked processes and live agents.

    Examples
    --------
    >>> st = ClusterStatus("a", "stopped", "tcp://n1:8786", reason="idle timeout")
    >>> stopping(st, "idle timeout", {"n2": {"marked": [{"pid": 7}, {"pid": 8}]}}).reason
    'idle timeout; 2 process(es) of it still stopping on 1 host(s)'
    >>> stopping(st, "idle timeout", {"n2": {"marked": [], "agents": []}}).state
    'stopped'
    """
    from dataclasses import replace

    left = {}
    for host, answer in answers.items():
        if isinstance(answer, BaseException):
            continue
        alive = [a for a in answer.get("agents") or [] if a.get("alive")]
        count = max(len(answer.get("marked") or []), len(alive))
        if count:
            left[host] = count
    if not left:
        return status
    return replace(status, state="stopping", reason=(
        f"{end_reason}; {sum(left.values())} process(es) of it still stopping on "
        f"{len(left)} host(s)"))


def worker_names(sources: Iterable[str], hosts: Iterable[str]) -> list[str]:
    """The workers among the sources of a cluster's log lines: ``HOST-N`` of one of its hosts.

    Examples
    --------
    >>> worker_names(["n2", "n2-0", "scheduler n1", "n3-10", "x-0", "n2-a"], ["n1", "n2", "n3"])
    ['n2-0', 'n3-10']
    """
    names = set(hosts)
    return sorted(s for s in set(sources)
                  if re.fullmatch(r".+-[0-9]+", s) and s.rpartition("-")[0] in names)


def ending(record: ClusterRecord, answer: dict[str, Any] | BaseException
           ) -> tuple[str, str] | None:
    """How the cluster of *record* has ended, from its scheduler host's answer: its state
    and why; None while it may run.

    A host that does not answer says nothing (the cluster may run on
    through the outage); a record there that is not *record* is another
    cluster of the same name.

    Examples
    --------
    >>> rec = ClusterRecord("a", "root@n1:22", "tcp://n1:8786", created=100.0)
    >>> alive = {"exists": True, "cluster": rec.to_json(), "agents": [
    ...     {"role": "scheduler", "alive": True}]}
    >>> ending(rec, alive) is None, ending(rec, OSError("no route")) is None
    (True, True)
    >>> ending(rec, {"exists": False})
    ('stopped', '`dask-ssh down a` stopped it')
    >>> ending(rec, {**alive, "cluster": {**rec.to_json(), "created": 200.0}})[0]
    'replaced'
    >>> ending(rec, {"exists": True, "end": {"reason": "idle timeout"}})
    ('stopped', 'idle timeout')
    """
    if isinstance(answer, BaseException):
        return None
    theirs = answer.get("cluster") or {}
    if theirs and (theirs.get("created") != record.created
                   or theirs.get("scheduler_address") != record.scheduler_address):
        return "replaced", "another cluster of that name was started (`dask-ssh up --replace`)"
    if not answer.get("exists"):
        return "stopped", f"`dask-ssh down {record.name}` stopped it"
    if any(a.get("role") == "scheduler" and a.get("alive") for a in answer.get("agents") or []):
        return None
    if (answer.get("end") or {}).get("reason"):
        return "stopped", str(answer["end"]["reason"])
    return "gone", "its scheduler no longer runs (a reboot, a kill)"


def host_health(answer: dict[str, Any] | BaseException, *, runs_scheduler: bool,
                spare: bool, workers: int, cluster: State = "running") -> str:
    """One host's health as ``dask-ssh status`` sees it from the host's own answer.

    No controller keeps the host states of a named cluster while none is
    attached, so this is what the host says now: ``unreachable``; ``ok`` (its
    agent runs, and for a worker host, workers of it are registered);
    ``down`` (its agent was recorded there and runs no more: killed, crashed);
    ``spare`` or ``idle`` (a worker host where no agent was started). Of a
    *cluster* that is ``gone`` or ``stopped``, a host says that, or
    ``left running`` while an agent of it still runs there.

    Examples
    --------
    >>> host_health({"agents": [{"alive": True}]}, runs_scheduler=False, spare=False, workers=2)
    'ok'
    >>> host_health({"agents": []}, runs_scheduler=False, spare=True, workers=0)
    'spare'
    >>> host_health({"agents": [{"alive": False}]}, runs_scheduler=False, spare=False, workers=0)
    'down'
    >>> host_health({"agents": []}, runs_scheduler=False, spare=False, workers=1, cluster="gone")
    'gone'
    >>> host_health(OSError("timed out"), runs_scheduler=False, spare=False, workers=0)
    'unreachable'
    """
    if isinstance(answer, BaseException):
        return "unreachable"
    agents = answer.get("agents") or []
    alive = [a for a in agents if a.get("alive")]
    if cluster in ("gone", "stopped", "stopping"):
        if alive or answer.get("marked"):
            return "stopping" if cluster == "stopping" else "left running"
        return "stopped" if cluster == "stopping" else cluster
    if runs_scheduler:
        return "ok" if alive else "down"
    if alive:
        return "ok" if workers else "spare" if spare else "idle"
    if agents or workers:   # recorded (or reported by the scheduler), yet no agent runs
        return "down"
    return "spare" if spare else "idle"


def format_age(seconds: float | None) -> str:
    """Return *seconds* as a short age: ``45s``, ``12m``, ``3h05m``, ``2d4h``, or ``-``.

    Examples
    --------
    >>> [format_age(s) for s in (None, 45, 720, 11100, 187200)]
    ['-', '45s', '12m', '3h05m', '2d4h']
    """
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def table_row(status: ClusterStatus) -> tuple[str, ...]:
    """The cells of one ``dask-ssh list`` row, in :data:`COLUMNS` order."""
    state = status.state + (f" ({status.reason})" if status.reason and status.state in (
        "degraded", "stopped", "stopping", "unreachable") else "")
    return (status.name, state, status.scheduler, f"{status.running}/{status.wanted}",
            str(status.hosts), format_age(status.age), format_age(status.idle))
