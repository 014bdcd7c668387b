"""The stages of a remote start: one table that every other module derives from.

Before the agent says ``hello``, the remote side reports how far its start got
with ``stage`` events (see :mod:`sshdeploy.remote.agent`, which sends them by
these names; it travels alone, so it cannot import this table, and a unit test
checks that every stage it, the launcher or the login shell can send has a
row here). For each stage the table says what users see as the host's state
while it lasts, and, if the start stalls after it, where and what to do.

A leaf module: it imports nothing of sshdeploy (the CLI and the views use it).

To add a stage: emit it on the remote side, add a :class:`Stage` row here (in
start order), and add its name to :data:`sshdeploy.remote.agent.protocol.STAGES`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BEFORE_ANY", "HELLO", "HOST_STATES", "STAGES", "Stage", "stage_info"]


@dataclass(frozen=True)
class Stage:
    """One stage of a remote start.

    Attributes
    ----------
    name : str or None
        The ``stage`` event's name; None before any event arrived.
    state : str
        The host's state users see (live status, host rows) after this event.
    stalled : str
        Where a start stalled when this was the last event ("stalled ...").
    remedy : str
        What to do then; ``{setup!r}`` and ``{python!r}`` are filled in.
    """

    name: str | None
    state: str
    stalled: str
    remedy: str


#: Every stage, in the order a start goes through them.
STAGES: tuple[Stage, ...] = (
    Stage(None, "starting", "in the login shell (no output from it)",
          "Check the host's login scripts and sshd (`ssh host true` should return at once)."),
    Stage("login", "running setup", "in the setup command",
          "The setup command {setup!r} did not finish: run it by hand on that host."),
    Stage("setup", "starting Python", "while starting Python",
          "Check that {python!r} starts quickly on that host."),
    Stage("python", "starting Python", "while Python read the agent",
          "Check the host's load and network."),
    Stage("import", "importing distributed", "while importing dask and distributed",
          "The host may be overloaded or its Python environment slow (network "
          "file system?); raise sshdeploy.start-timeout."),
)

#: The stage before any event (also what an unknown stage name counts as).
BEFORE_ANY = STAGES[0]

#: What a channel's stage becomes once the agent said ``hello`` (the stages are over).
HELLO = "hello"

_BY_NAME = {s.name: s for s in STAGES}

#: The states of a host's start, in the order a start goes through them (live status).
HOST_STATES: tuple[str, ...] = (
    "waiting", "connecting", "checking versions", "packing environment",
    "sending environment", "fetching environment", "uploading files", "fetching uploads",
    "running setup",
    "starting", "starting Python",
    "importing distributed", "starting workers", "starting scheduler", "ready", "failed",
    # after the start (sshdeploy.cluster.health): hosts with no worker yet, and hosts taken out
    "spare", "idle", "quarantined", "lost",
)


def stage_info(name: str | None) -> Stage:
    """Return the row of stage *name* (:data:`BEFORE_ANY` for None or an unknown name).

    Examples
    --------
    >>> stage_info("import").state
    'importing distributed'
    >>> stage_info("no such stage") is BEFORE_ANY
    True
    """
    return _BY_NAME.get(name, BEFORE_ANY)
