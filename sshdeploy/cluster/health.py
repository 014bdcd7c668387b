"""Each worker host's health: ok, degraded, quarantined, lost (or spare, idle).

Pure bookkeeping, no I/O: :class:`HostHealth` remembers the hosts taken out
of a cluster and why; :func:`health_of` tells the state of any other host
from what its row shows. :mod:`sshdeploy.cluster.fleet` acts on it (moves workers),
the views show it.

- ``ok``: every worker wanted there runs (or none is wanted and it has run some).
- ``degraded``: a worker of it is lost, restarting, or failed to start; or
  its connection is being tried again.
- ``quarantined``: its workers died past their restart budget; they were
  moved elsewhere and it gets no worker until it is readmitted, after
  ``sshdeploy.worker-restart-window`` seconds (:meth:`HostHealth.take_out`
  says when: twice as long as the time before for a host quarantined again
  right after its readmission, :data:`MAX_QUARANTINE_WINDOWS` windows at
  most), or at once by :meth:`HostHealth.readmit`.
- ``lost``: it stayed unreachable past ``sshdeploy.host-lost-after``; its
  workers were moved as for a quarantine, and it gets none until
  :meth:`HostHealth.readmit` (no end of its own: it may still be down).
- ``spare``: a spare no worker was placed on yet; ``idle``: any other host
  with no worker wanted (not connected to until one is placed there).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field

from sshdeploy.hosts import ConnectionKey

OK = "ok"
DEGRADED = "degraded"
QUARANTINED = "quarantined"
LOST = "lost"
SPARE = "spare"
IDLE = "idle"

#: Every health state, healthiest first.
HEALTH_STATES: tuple[str, ...] = (OK, SPARE, IDLE, DEGRADED, QUARANTINED, LOST)

#: The states of a host taken out of the cluster (no worker is placed there).
TAKEN_OUT: tuple[str, ...] = (QUARANTINED, LOST)

#: The states of a host with no start under way (the live status shows them as they are).
NOT_STARTING: tuple[str, ...] = (*TAKEN_OUT, SPARE, IDLE)

#: The longest quarantine, in restart windows (16 minutes with the default 60 s): a
#: workload that kills every worker it touches churns the hosts at that pace at most.
MAX_QUARANTINE_WINDOWS = 16

_COUNTS = re.compile(r"(exit code -?\d+)|\d+(?:\.\d+)?")
#: The memory limit the agent names: hosts of other sizes have other limits.
_MEMORY = re.compile(r"; memory limit [^);]*")


def death_kind(why: str) -> str:
    """How workers died, their counts, times and memory limits aside (exit codes kept).

    The same workload kills the workers of every host the same way: the
    kinds of their quarantines are equal.

    Examples
    --------
    >>> death_kind("it died in a loop: its worker process died 6 times within 60 s "
    ...            "(last exit code -11; memory limit 23.5 GiB)")
    'it died in a loop: its worker process died N times within N s (last exit code -11)'
    """
    return _COUNTS.sub(lambda m: m.group(1) or "N", _MEMORY.sub("", why))


@dataclass(frozen=True)
class TakenOut:
    """Why a host was taken out of the cluster.

    Attributes
    ----------
    state : str
        ``quarantined`` or ``lost``.
    reason : str
        What happened, in a few words.
    moved : tuple of (str, str)
        ``(old worker name, new worker name)`` for each worker moved off it
        (the new name is ``""`` when no slot was free anywhere).
    since : float
        When it was taken out (the clock of :class:`HostHealth`'s caller).
    until : float or None
        When its quarantine ends (None: lost, out until readmitted).
    kind : str
        How its workers died (:func:`death_kind`; "" when lost).
    """

    state: str
    reason: str
    moved: tuple[tuple[str, str], ...] = ()
    since: float = 0.0
    until: float | None = None
    kind: str = ""


@dataclass
class HostHealth:
    """The hosts taken out of one cluster, and when each quarantine ends.

    Pure: the caller passes the time (any clock, one for all calls) and
    readmits a host when its quarantine ends.

    Parameters
    ----------
    window : float
        The first quarantine of a host, in seconds (``sshdeploy.worker-restart-window``:
        its workers' restart budget is whole again by then).

    Examples
    --------
    >>> h = HostHealth(window=60)
    >>> h.take_out(("root", "node2", 22), LOST, "unreachable for 120 s")
    True
    >>> h.take_out(("root", "node2", 22), QUARANTINED, "again")  # once is enough
    False
    >>> sorted(k[1] for k in h.excluded()), bool(h.readmit(("root", "node2", 22))), h.excluded()
    (['node2'], True, set())
    >>> h.take_out(("root", "node3", 22), QUARANTINED, "died", now=10)
    True
    >>> h.out[("root", "node3", 22)].until  # readmitted one window later
    70.0
    >>> h.readmit(("root", "node3", 22), now=70) is not None
    True
    >>> h.take_out(("root", "node3", 22), QUARANTINED, "died again", now=75)  # right after
    True
    >>> h.out[("root", "node3", 22)].until - 75  # twice as long
    120.0
    """

    window: float = 60.0
    out: dict[ConnectionKey, TakenOut] = field(default_factory=dict)
    #: Each host readmitted from a quarantine: (when, how long that quarantine was).
    last: dict[ConnectionKey, tuple[float, float]] = field(default_factory=dict)

    def take_out(self, key: ConnectionKey, state: str, reason: str, *, now: float = 0.0,
                 kind: str = "") -> bool:
        """Mark *key* quarantined (until :meth:`quarantine_length` from *now*) or lost.

        Returns False if it already was taken out.
        """
        if state not in TAKEN_OUT:
            raise ValueError(f"a host is taken out as {TAKEN_OUT}, not {state!r}")
        if key in self.out:
            return False
        until = now + self.quarantine_length(key, now) if state == QUARANTINED else None
        self.out[key] = TakenOut(state, reason, since=now, until=until, kind=kind)
        return True

    def quarantine_length(self, key: ConnectionKey, now: float) -> float:
        """Seconds a quarantine of *key* beginning *now* lasts.

        One window; for a host quarantined again before it has run for as long
        as its last quarantine lasted, twice that (at most
        :data:`MAX_QUARANTINE_WINDOWS` windows), so a workload that kills
        its workers cannot churn the hosts at the window's pace for ever.
        """
        last = self.last.get(key)
        if last is None or now - last[0] >= last[1]:
            return float(self.window)
        return float(min(2 * last[1], MAX_QUARANTINE_WINDOWS * self.window))

    def note_moves(self, key: ConnectionKey, moved: list[tuple[str, str]]) -> None:
        """Record where the workers of a host taken out went."""
        was = self.out[key]
        self.out[key] = TakenOut(was.state, was.reason, was.moved + tuple(moved), was.since,
                                 was.until, was.kind)

    def readmit(self, key: ConnectionKey, now: float = 0.0) -> TakenOut | None:
        """Let *key* take workers again; return why it was out (None: it was not)."""
        was = self.out.pop(key, None)
        if was is not None and was.until is not None:
            self.last[key] = (now, was.until - was.since)
        return was

    def forget(self, key: ConnectionKey) -> None:
        """Forget *key* (a host removed from the cluster)."""
        self.out.pop(key, None)
        self.last.pop(key, None)

    def excluded(self) -> set[ConnectionKey]:
        """The hosts no worker may be placed on."""
        return set(self.out)

    def ends(self) -> float:
        """When the first quarantine in force ends (``inf``: none is in force)."""
        return min((o.until for o in self.out.values() if o.until is not None),
                   default=math.inf)

    def alike(self, keys: Collection[ConnectionKey]) -> TakenOut | None:
        """If every one of *keys* is quarantined with its workers dead the same way
        (the same :attr:`TakenOut.kind`), the latest of them; else None."""
        outs = [self.out.get(k) for k in keys]
        if not outs or any(o is None or o.state != QUARANTINED for o in outs):
            return None
        if len({o.kind for o in outs if o is not None}) != 1:
            return None
        return max((o for o in outs if o is not None), key=lambda o: o.since)


def health_of(taken_out: TakenOut | None, *, spare: bool, running: int, wanted: int,
              trouble: bool) -> str:
    """Return one host's health state.

    Parameters
    ----------
    taken_out : TakenOut or None
        Its record if it was quarantined or lost.
    spare : bool
        Whether it is one of the cluster's spares.
    running, wanted : int
        Its workers running, and wanted.
    trouble : bool
        A worker of it is lost, restarting or failed, or its connection is
        being tried again.

    Examples
    --------
    >>> health_of(None, spare=False, running=2, wanted=2, trouble=False)
    'ok'
    >>> health_of(None, spare=False, running=1, wanted=2, trouble=True)
    'degraded'
    >>> health_of(None, spare=True, running=0, wanted=0, trouble=False)
    'spare'
    >>> health_of(TakenOut(LOST, "unreachable"), spare=False, running=0, wanted=0, trouble=True)
    'lost'
    """
    if taken_out is not None:
        return taken_out.state
    if trouble:
        return DEGRADED
    if not wanted and not running:
        return SPARE if spare else IDLE
    return OK
