"""Every ``sshdeploy.*`` setting, resolved once into a frozen, typed value.

A cluster reads ``dask.config`` once, when it is built (as dask-jobqueue
resolves its config in the constructor), and passes :class:`Settings` down
to the pool, the agent channels and the processes: nothing reads the config
while running, and related values (the heartbeat sent to the agents and the
ping interval) cannot diverge.

The defaults (``sshdeploy.yaml``) are kept under the ``sshdeploy`` key of
``dask.config``, loaded when this module is imported.

Every setting has one name in three spellings: ``connect-timeout`` in YAML and
``dask.config``, ``connect_timeout`` in Python, ``--connect-timeout`` on the
command line. Override with ``dask.config.set({"sshdeploy.connect-timeout": 5})``,
a YAML file in ``~/.config/dask/``, or ``DASK_SSHDEPLOY__CONNECT_TIMEOUT=5``.

The packaged defaults are also the fallback of :func:`get`: a reset of
``dask.config`` that loses them (``dask.config.refresh()``, the snapshot
restore of distributed's test fixtures, a ``dask.config.set`` of the whole
``sshdeploy`` tree) leaves every setting with its default.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, cast

import dask.config
import yaml

from .errors import ConfigError

VersionPolicy = Literal["error", "warn", "ignore"]
MPMethod = Literal["forkserver", "spawn", "fork"]

_POLICIES = ("error", "warn", "ignore")
#: Settings that are sizes: bytes, or text such as "2GiB".
_SIZES = ("env_cache_size", "upload_warn_size", "upload_relay_size")
_MP_METHODS = ("forkserver", "spawn", "fork")


_FILE = os.path.join(os.path.dirname(__file__), "sshdeploy.yaml")

with open(_FILE) as _f:
    _DEFAULTS: dict[str, Any] = yaml.safe_load(_f)

#: The packaged defaults, ``{"connect-timeout": 10, ...}``.
DEFAULTS: dict[str, Any] = dict(_DEFAULTS["sshdeploy"])

dask.config.update_defaults(_DEFAULTS)

_MISSING = object()


def get(key: str, override: Any = None) -> Any:
    """Return ``sshdeploy.<key>`` unless *override* is not None.

    Parameters
    ----------
    key : str
        The setting, in either spelling (``connect-timeout`` or ``connect_timeout``).
    override : Any
        An explicit value from the caller; wins when not None.

    Returns
    -------
    Any
        The value in force: the override, else dask.config's, else the
        packaged default.

    Raises
    ------
    KeyError
        For a setting that does not exist.

    Examples
    --------
    >>> get("connect-timeout") > 0
    True
    >>> get("connect_timeout", 3)
    3
    """
    if override is not None:
        return override
    name = key.replace("_", "-")
    if name not in DEFAULTS:
        raise KeyError(f"sshdeploy.{name}")
    value = dask.config.get("sshdeploy." + name, default=_MISSING)
    return DEFAULTS[name] if value is _MISSING else value


def configured() -> list[str]:
    """Return the keys set under ``sshdeploy`` in dask.config, as written.

    Examples
    --------
    >>> with dask.config.set({"sshdeploy.conect-timeout": 3}):
    ...     "conect-timeout" in configured()
    True
    """
    section = dask.config.get("sshdeploy", default={})
    return [str(k) for k in section] if isinstance(section, dict) else []


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
    jump_host_parallelism: int
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
    host_lost_after: float
    log_buffer_lines: int
    env_cache_size: int
    env_relay: bool
    env_relay_fanout: int
    upload_warn_size: int
    upload_relay_size: int
    gpu_busy_memory: float
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
        for key in configured():
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
            raw = get(f.name, overrides.get(f.name))
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

        return parse_duration(value, key, MIN_POLICY_DURATION)
    if name == "version_check":
        if value not in _POLICIES:
            raise ConfigError(key, f"must be one of {', '.join(_POLICIES)}, got {value!r}")
        return cast(VersionPolicy, value)
    if name == "multiprocessing_method":
        if value not in _MP_METHODS:
            raise ConfigError(key, f"must be one of {', '.join(_MP_METHODS)}, got {value!r}")
        return cast(MPMethod, value)
    if name in ("inherit_config", "env_relay"):
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if name in _SIZES:
        return _size(key, value)
    if name == "gpu_busy_memory":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ConfigError(key, f"must be a share of a GPU's memory, above 0 and at most 1 "
                              f"(0.1: a tenth), got {value!r}")
        return float(value)
    integer = name in ("connect_parallelism", "jump_host_parallelism", "connect_attempts",
                       "keepalive_count_max", "worker_restarts", "log_buffer_lines",
                       "env_relay_fanout")
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


def _size(key: str, value: Any) -> int:
    """A size setting: whole bytes >= 0, or text that dask's ``parse_bytes`` reads."""
    from dask.utils import parse_bytes

    try:
        number = parse_bytes(value) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a size (bytes or e.g. '2GiB'), got {value!r}") from None
    if isinstance(value, bool) or number < 0:
        raise ConfigError(key, f"must be a size >= 0, got {value!r}")
    return int(number)


#: The shortest ``idle-timeout`` / ``max-lifetime`` taken, in seconds: the
#: scheduler host's agent checks them about once a second, and a cluster that
#: stops a moment after ``up`` returns is a typo (``1ms``), not a wish.
MIN_POLICY_DURATION = 10.0


def parse_duration(value: Any, setting: str, minimum: float = 0.0) -> float | None:
    """Return *value* in seconds (None stays None); a dask duration string or a number.

    Below *minimum* seconds it is refused, the minimum named.

    Examples
    --------
    >>> parse_duration("30min", "idle_timeout"), parse_duration(90, "max_lifetime")
    (1800.0, 90.0)
    >>> parse_duration(None, "idle_timeout") is None
    True
    >>> parse_duration("1ms", "--idle-timeout", minimum=10)
    Traceback (most recent call last):
    ...
    sshdeploy.errors.ConfigError: --idle-timeout: must be at least 10 s, got '1ms'...
    """
    if value is None:
        return None
    from dask.utils import parse_timedelta

    text = value
    if isinstance(value, str):  # dask spells minutes "m"/"minutes"; "30min" is common too
        text = re.sub(r"(?<=[0-9. ])mins?$", "m", value.strip())
    try:
        seconds = float(parse_timedelta(text, default="seconds"))
    except (TypeError, ValueError, KeyError):
        seconds = -1.0
    if isinstance(value, bool) or seconds <= 0:
        raise ConfigError(setting, f"must be a duration > 0 such as '10s', '30min' or '2h', "
                          f"got {value!r}")
    if seconds < minimum:
        raise ConfigError(setting, f"must be at least {minimum:g} s, got {value!r}",
                          remedy=f"Give {minimum:g}s or more (e.g. '30min', '2h').")
    return seconds
