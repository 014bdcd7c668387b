"""sshdeploy: deploy Dask clusters over SSH.

>>> from sshdeploy import SSHCluster            # doctest: +SKIP
>>> cluster = SSHCluster(["node1", "node2", "node3"])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import settings  # noqa: F401  (loads sshdeploy.yaml into dask.config)
from .errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    GPUError,
    HostError,
    HostfileError,
    HostKeyError,
    MultiHostError,
    RemoteImportError,
    RemotePythonError,
    ScaleError,
    SSHDeployError,
    StartError,
    VersionMismatchError,
)
from .hostfile import load_hostfile, parse_host
from .hosts import Host
from .settings import Settings

if TYPE_CHECKING:
    from .cluster import SSHCluster
    from .plan import RemotePlan

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import ``SSHCluster`` and ``RemotePlan`` when first asked for.

    Both import distributed (~1 s); ``dask-ssh --help`` and ``--check`` need
    neither, so ``import sshdeploy`` alone does not import it.
    """
    if name == "SSHCluster":
        from .cluster import SSHCluster

        globals()[name] = SSHCluster
        return SSHCluster
    if name == "RemotePlan":
        from .plan import RemotePlan

        globals()[name] = RemotePlan
        return RemotePlan
    raise AttributeError(f"module 'sshdeploy' has no attribute {name!r}")

# A library never prints on its own: remote lines reach users through the
# handlers they (or dask-ssh) install on the "sshdeploy" loggers.
logging.getLogger("sshdeploy").addHandler(logging.NullHandler())

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "ConnectError",
    "GPUError",
    "Host",
    "HostError",
    "HostKeyError",
    "HostfileError",
    "MultiHostError",
    "RemoteImportError",
    "RemotePlan",
    "RemotePythonError",
    "SSHCluster",
    "SSHDeployError",
    "ScaleError",
    "Settings",
    "StartError",
    "VersionMismatchError",
    "__version__",
    "load_hostfile",
    "parse_host",
]
