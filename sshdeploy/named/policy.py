"""Names and lifetimes of named clusters: pure checks, no I/O.

A name is a short identifier (it names a directory on every host and a file
here). Durations are dask's (``"10s"``, ``"30min"``, ``"2h"`` or seconds).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from sshdeploy.errors import ConfigError
from sshdeploy.settings import parse_duration

__all__ = ["DEFAULT_DEATH_TIMEOUT", "NAME_PATTERN", "KeepPolicy", "check_name", "parse_duration"]

#: What a cluster name may be: a letter, then up to 39 letters, digits, '-' or '_'.
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")
#: Seconds a kept worker waits for an unreachable scheduler before it stops (the
#: workers' ``death_timeout`` and the agents' scheduler watchdog).
DEFAULT_DEATH_TIMEOUT = 60.0


def check_name(name: Any, setting: str = "name") -> str:
    """Return *name* if it can name a cluster, else raise a ConfigError.

    Examples
    --------
    >>> check_name("analysis-2")
    'analysis-2'
    >>> check_name("../etc")
    Traceback (most recent call last):
    ...
    sshdeploy.errors.ConfigError: name: '../etc' is not a cluster name...
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            setting,
            f"{name!r} is not a cluster name (a letter, then up to 39 letters, digits, "
            "'-' or '_')",
            remedy="Give a short identifier, e.g. name='analysis' (dask-ssh up --name analysis).",
        )
    return name


@dataclass(frozen=True)
class KeepPolicy:
    """How the agents of a named cluster live without a controller.

    Attributes
    ----------
    name : str
        The cluster's name.
    idle_timeout : float or None
        Seconds with no task and no client after which the cluster stops.
    max_lifetime : float or None
        Seconds after its start at which the cluster stops.
    death_timeout : float
        Seconds a worker waits for an unreachable scheduler before it stops.
    armed : bool
        The cluster is recorded (here and on its scheduler host): its agents
        run on without their controller. Until then they stop with it, as a
        classic cluster's do (:func:`sshdeploy.named.arming.arm`).
    session : str
        This controller's session (random), in the mark every process of the
        cluster carries (``SSHDEPLOY_CLUSTER=NAME:SESSION``): who started it.
    """

    name: str
    idle_timeout: float | None = None
    max_lifetime: float | None = None
    death_timeout: float = DEFAULT_DEATH_TIMEOUT
    armed: bool = False
    session: str = field(default_factory=lambda: secrets.token_hex(4), compare=False)

    def spec(self) -> dict[str, Any]:
        """Return what the agents are sent (``keep`` in their spec)."""
        return {"name": self.name, "idle_timeout": self.idle_timeout,
                "max_lifetime": self.max_lifetime, "death_timeout": self.death_timeout,
                "armed": self.armed, "session": self.session}

    def describe(self) -> str:
        """Say how long the cluster lives, in one line.

        Examples
        --------
        >>> KeepPolicy("a").describe()
        'runs until `dask-ssh down a`'
        >>> KeepPolicy("a", idle_timeout=600).describe()
        'stops after 10min idle (no tasks, no clients), or at `dask-ssh down a`'
        """
        parts = []
        if self.idle_timeout:
            parts.append(f"after {format_time(self.idle_timeout)} idle (no tasks, no clients)")
        if self.max_lifetime:
            parts.append(f"{format_time(self.max_lifetime)} after its start")
        if not parts:
            return f"runs until `dask-ssh down {self.name}`"
        return f"stops {' or '.join(parts)}, or at `dask-ssh down {self.name}`"


def format_time(seconds: float) -> str:
    """Return *seconds* in the largest whole unit that fits.

    Examples
    --------
    >>> format_time(45), format_time(600), format_time(7200), format_time(90)
    ('45s', '10min', '2h', '90s')
    """
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
