"""Every ``sshdeploy.*`` setting, resolved once into a frozen, typed value.

A cluster reads ``dask.config`` once, when it is built (as dask-jobqueue
resolves its config in the constructor), and passes :class:`Settings` down
to the pool, the agent channels and the processes: nothing reads the config
while running, and related values (the heartbeat sent to the agents and the
ping interval) cannot diverge.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, cast

from . import config
from .errors import ConfigError

VersionPolicy = Literal["error", "warn", "ignore"]
MPMethod = Literal["forkserver", "spawn", "fork"]

_POLICIES = ("error", "warn", "ignore")
_MP_METHODS = ("forkserver", "spawn", "fork")


@dataclass(frozen=True)
class Settings:
    """The settings in force for one cluster (see ``sshdeploy.yaml`` for each).

    Examples
    --------
    >>> s = Settings.resolve(connect_timeout=3)
    >>> s.connect_timeout, s.ping_interval == s.heartbeat_timeout / 3
    (3.0, True)
    """

    connect_timeout: float
    connect_parallelism: int
    connect_attempts: int
    keepalive_interval: float
    keepalive_count_max: int
    start_timeout: float
    stop_timeout: float
    heartbeat_timeout: float
    multiprocessing_method: MPMethod
    inherit_config: bool
    version_check: VersionPolicy
    worker_restarts: int
    worker_restart_window: float
    log_buffer_lines: int
    idle_timeout: float | None = None
    max_lifetime: float | None = None

    @classmethod
    def resolve(cls, **overrides: Any) -> Settings:
        """Read every setting from ``dask.config`` (packaged defaults as fallback).

        Parameters
        ----------
        **overrides
            Values that win over the config (``None`` means "not given"),
            in the Python spelling (``start_timeout=30``).

        Raises
        ------
        ConfigError
            For an unknown name (also one set in dask.config under
            ``sshdeploy``: a misspelt key would otherwise be ignored without
            a word), or a value of the wrong type or range.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(
                unknown[0], "is not an sshdeploy setting",
                remedy="Known settings: " + ", ".join(sorted(names)) + ".",
            )
        known = sorted(n.replace("_", "-") for n in names)
        for key in config.configured():
            if key.replace("_", "-") not in known:
                near = difflib.get_close_matches(key.replace("_", "-"), known, n=1)
                raise ConfigError(
                    f"sshdeploy.{key}", "is not an sshdeploy setting (set in a dask config "
                    "file, a DASK_SSHDEPLOY__* variable or dask.config.set)",
                    remedy=(f"Did you mean sshdeploy.{near[0]}? " if near else "")
                    + "Known settings: " + ", ".join(known) + ".",
                )
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = config.get(f.name, overrides.get(f.name))
            values[f.name] = _coerce(f.name, raw)
        return cls(**values)

    @property
    def ping_interval(self) -> float:
        """Seconds between the controller's pings to each agent."""
        return self.heartbeat_timeout / 3

    def as_dict(self) -> dict[str, Any]:
        """Return the settings in their YAML spelling, for the dry run."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}


def _coerce(name: str, value: Any) -> Any:
    """Check one setting's type and range; return it in its Python type."""
    key = "sshdeploy." + name.replace("_", "-")
    if name in ("idle_timeout", "max_lifetime"):
        from sshdeploy.named.policy import parse_duration

        return parse_duration(value, key)
    if name == "version_check":
        if value not in _POLICIES:
            raise ConfigError(key, f"must be one of {', '.join(_POLICIES)}, got {value!r}")
        return cast(VersionPolicy, value)
    if name == "multiprocessing_method":
        if value not in _MP_METHODS:
            raise ConfigError(key, f"must be one of {', '.join(_MP_METHODS)}, got {value!r}")
        return cast(MPMethod, value)
    if name == "inherit_config":
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    integer = name in ("connect_parallelism", "connect_attempts", "keepalive_count_max",
                       "worker_restarts", "log_buffer_lines")
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            key, f"must be a {'whole ' if integer else ''}number, got {value!r}"
        ) from None
    if integer and isinstance(value, float) and value != number:
        raise ConfigError(key, f"must be a whole number, got {value!r}")
    low = 0 if name == "worker_restarts" else 1 if integer else 0
    if number < low or (not integer and number <= 0 and name != "keepalive_interval"):
        raise ConfigError(key, f"must be {'>= ' + str(low) if integer else '> 0'}, got {value!r}")
    return number
