"""Free the hosts' caches of synced environments and uploaded contents.

``dask-ssh clean --envs/--uploads HOST...`` calls :func:`clean`; the hosts'
side is the stdlib-only script that the environment stage runs
(:func:`sshdeploy.env.script.run_script`, op ``clean``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sshdeploy.hosts import Host
from sshdeploy.ssh.pool import HostPool

from .script import run_script


async def clean_async(
    hosts: Sequence[str | Host],
    connect_options: Any = None,
    remote_python: str = "python3",
    *,
    envs: bool = True,
    blobs: bool = True,
) -> dict[str, dict[str, Any]]:
    """Remove the synced environments (and uploaded contents) cached on *hosts*.

    Parameters
    ----------
    hosts : list of str or Host
    connect_options : dict or list of dict, optional
        ``asyncssh.connect`` keywords, for all hosts or one per host.
    remote_python : str
        Any Python 3 on the hosts (the cleaner uses the standard library only).
    envs, blobs : bool
        What to remove: ``~/.cache/sshdeploy/envs`` and ``.../blobs``.

    Returns
    -------
    dict
        Per host (``user@host:port``): the bytes removed from each, or ``error``.
    """
    from sshdeploy.placement import as_hosts, per_host
    from sshdeploy.settings import Settings

    settings = Settings.resolve()
    hs = as_hosts(hosts)
    opts = per_host(connect_options, len(hs), "connect_options")
    async with HostPool(settings=settings) as pool:
        unique: dict[Any, Host] = {}
        for h, o in zip(hs, opts, strict=False):
            pool.set_options(h, o)
            unique.setdefault(h.key, h)
        results = await asyncio.gather(
            *(run_script(pool, h, remote_python, None, False,
                         {"op": "clean", "envs": envs, "blobs": blobs},
                         timeout=settings.start_timeout) for h in unique.values()),
            return_exceptions=True)
        return {pool.as_connected(h): (r if isinstance(r, dict) else {"error": str(r)})
                for h, r in zip(unique.values(), results, strict=True)}


def clean(hosts: Sequence[str | Host], connect_options: Any = None,
          remote_python: str = "python3", *, envs: bool = True,
          blobs: bool = True) -> dict[str, dict[str, Any]]:
    """Synchronous :func:`clean_async`.

    Examples
    --------
    >>> clean(["node1", "node2"])                      # doctest: +SKIP
    {'node1': {'envs': 76774598, 'blobs': 1024, 'seconds': 0.2}, ...}
    """
    return asyncio.run(clean_async(hosts, connect_options, remote_python, envs=envs,
                                   blobs=blobs))
