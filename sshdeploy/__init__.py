"""sshdeploy: deploy Dask clusters over SSH.

>>> from sshdeploy import SSHCluster            # doctest: +SKIP
>>> cluster = SSHCluster(["node1", "node2", "node3"])  # doctest: +SKIP
"""

from __future__ import annotations

import logging

from . import config  # noqa: F401  (loads sshdeploy.yaml into dask.config)
from .cluster import SSHCluster
from .errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    HostError,
    HostfileError,
    HostKeyError,
    MultiHostError,
    RemoteImportError,
    RemotePythonError,
    SSHDeployError,
    StartError,
    VersionMismatchError,
)
from .hosts import Host, load_hostfile, parse_host
from .plan import RemotePlan
from .settings import Settings

__version__ = "0.1.0"

# A library never prints on its own: remote lines reach users through the
# handlers they (or dask-ssh) install on the "sshdeploy" loggers.
logging.getLogger("sshdeploy").addHandler(logging.NullHandler())

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "ConnectError",
    "Host",
    "HostError",
    "HostKeyError",
    "HostfileError",
    "MultiHostError",
    "RemoteImportError",
    "RemotePythonError",
    "RemotePlan",
    "SSHCluster",
    "SSHDeployError",
    "Settings",
    "StartError",
    "VersionMismatchError",
    "__version__",
    "load_hostfile",
    "parse_host",
]
