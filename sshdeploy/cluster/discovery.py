"""dask-ctl's cluster discovery: ``dask cluster list`` shows sshdeploy's named clusters.

Registered as the ``dask_cluster_discovery`` entry point ``sshcluster``:
dask-ctl iterates :func:`discover` and represents each name with
:meth:`sshdeploy.SSHCluster.from_name`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any


async def discover() -> AsyncIterator[tuple[str, Any]]:
    """Yield ``(name, SSHCluster)`` for each named cluster recorded here that runs now.

    Each is probed on its scheduler host first (:func:`sshdeploy.named.flow.probe_all`):
    a cluster that is gone or stopped is not offered.
    """
    from sshdeploy.cluster import SSHCluster
    from sshdeploy.named import flow
    from sshdeploy.named.state import StateStore

    records, _unreadable = StateStore().scan()
    for status in await flow.probe_all(records) if records else []:
        if status.state in ("running", "degraded"):
            yield status.name, SSHCluster
