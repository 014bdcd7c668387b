"""Each worker host's health: ok, degraded, quarantined, lost (or spare, idle).

Pure bookkeeping, no I/O: :class:`HostHealth` remembers the hosts taken out
of a cluster and why; :func:`health_of` tells the state of any other host
from what its row shows. :mod:`sshdeploy.cluster.fleet` acts on it (moves workers),
the views show it.

- ``ok``: every worker wanted there runs (or none is wanted and it has run some).
- ``degraded``: a worker of it is lost, restarting, or failed to start; or
  its connection is being tried again.
- ``quarantined``: its workers died past their restart budget; they were
  moved elsewhere and it gets no worker until :meth:`HostHealth.readmit`.
- ``lost``: it stayed unreachable past ``sshdeploy.host-lost-after``; same
  consequences as quarantined.
- ``spare``: a spare no worker was placed on yet; ``idle``: any other host
  with no worker wanted (not connected to until one is placed there).
"""

from __future__ import annotations

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
    """

    state: str
    reason: str
    moved: tuple[tuple[str, str], ...] = ()


@dataclass
class HostHealth:
    """The hosts taken out of one cluster.

    Examples
    --------
    >>> h = HostHealth()
    >>> h.take_out(("root", "node2", 22), LOST, "unreachable for 120 s")
    True
    >>> h.take_out(("root", "node2", 22), QUARANTINED, "again")  # once is enough
    False
    >>> sorted(k[1] for k in h.excluded()), h.readmit(("root", "node2", 22)), h.excluded()
    (['node2'], True, set())
    """

    out: dict[ConnectionKey, TakenOut] = field(default_factory=dict)

    def take_out(self, key: ConnectionKey, state: str, reason: str) -> bool:
        """Mark *key* quarantined or lost; False if it already was."""
        if state not in TAKEN_OUT:
            raise ValueError(f"a host is taken out as {TAKEN_OUT}, not {state!r}")
        if key in self.out:
            return False
        self.out[key] = TakenOut(state, reason)
        return True

    def note_moves(self, key: ConnectionKey, moved: list[tuple[str, str]]) -> None:
        """Record where the workers of a host taken out went."""
        was = self.out[key]
        self.out[key] = TakenOut(was.state, was.reason, was.moved + tuple(moved))

    def readmit(self, key: ConnectionKey) -> bool:
        """Let *key* take workers again; False if it was not taken out."""
        return self.out.pop(key, None) is not None

    def excluded(self) -> set[ConnectionKey]:
        """The hosts no worker may be placed on."""
        return set(self.out)


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
