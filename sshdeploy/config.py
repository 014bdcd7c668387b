"""sshdeploy's defaults, kept under the ``sshdeploy`` key of ``dask.config``.

Every setting has one name in three spellings: ``connect-timeout`` in YAML and
``dask.config``, ``connect_timeout`` in Python, ``--connect-timeout`` on the
command line. Override with ``dask.config.set({"sshdeploy.connect-timeout": 5})``,
a YAML file in ``~/.config/dask/``, or ``DASK_SSHDEPLOY__CONNECT_TIMEOUT=5``.

The packaged defaults are also the fallback of :func:`get`: a reset of
``dask.config`` that loses them (``dask.config.refresh()``, the snapshot
restore of distributed's test fixtures, a ``dask.config.set`` of the whole
``sshdeploy`` tree) leaves every setting with its default.

Settings are read once, into :class:`sshdeploy.settings.Settings`, when a
cluster is built.
"""

from __future__ import annotations

import os
from typing import Any

import dask.config
import yaml

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
