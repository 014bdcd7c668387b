"""sshdeploy's defaults, kept under the ``sshdeploy`` key of ``dask.config``.

Every setting has one name in three spellings: ``connect-timeout`` in YAML and
``dask.config``, ``connect_timeout`` in Python, ``--connect-timeout`` on the
command line. Override with ``dask.config.set({"sshdeploy.connect-timeout": 5})``,
a YAML file in ``~/.config/dask/``, or ``DASK_SSHDEPLOY__CONNECT_TIMEOUT=5``.
"""

from __future__ import annotations

import os
from typing import Any

import dask.config
import yaml

_FILE = os.path.join(os.path.dirname(__file__), "sshdeploy.yaml")

with open(_FILE) as _f:
    _DEFAULTS: dict[str, Any] = yaml.safe_load(_f)

dask.config.update_defaults(_DEFAULTS)


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
        The value in force.

    Examples
    --------
    >>> get("connect-timeout") > 0
    True
    >>> get("connect_timeout", 3)
    3
    """
    if override is not None:
        return override
    return dask.config.get("sshdeploy." + key.replace("_", "-"))
