"""Reach the scheduler through its host's SSH connection when only SSH is open.

When the controller cannot reach the scheduler's address directly (a
firewall, a private cluster network, NAT), the scheduler port and the
dashboard port are forwarded through the SSH connection the scheduler's host
already has (asyncssh local port forwarding: no second connection, no
``ssh -L``). The controller then talks to ``127.0.0.1:<local port>``; the
workers keep using the scheduler's real address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from distributed.comm.addressing import get_address_host_port, parse_address, unparse_address

from .sshlib import asyncssh

logger = logging.getLogger(__name__)

#: Seconds the controller tries a direct TCP connect before it calls an address unreachable.
PROBE_TIMEOUT = 2.0
LOCALHOST = "127.0.0.1"


async def reachable(address: str, timeout: float = PROBE_TIMEOUT, security: Any = None) -> bool:
    """Return whether a Dask *address* answers a client's connection within *timeout*.

    A real Dask connection (with the handshake, and TLS with the cluster's
    *security*), then closed: the scheduler sees an ordinary client that left
    (logged at debug), not a connection torn down mid-handshake ("TLS handshake
    failed" warnings on a TLS cluster), and an address whose connect succeeds
    but never answers (a firewall that swallows packets) is not taken for reachable.

    Examples
    --------
    >>> import asyncio
    >>> asyncio.run(reachable("tcp://127.0.0.1:1", 1))
    False
    """
    from distributed.comm.core import connect

    if security is None and address.startswith("tls://"):
        return await _tcp_connects(address, timeout)  # no credentials to say hello with
    args = security.get_connection_args("client") if security is not None else {}
    try:
        comm = await asyncio.wait_for(
            connect(address, timeout=timeout, **args),  # type: ignore[no-untyped-call]
            timeout + 1)
    except (OSError, asyncio.TimeoutError):
        return False
    with contextlib.suppress(Exception):
        await comm.close()
    return True


async def _tcp_connects(address: str, timeout: float) -> bool:
    """Whether a bare TCP connection to *address* opens within *timeout*."""
    host, port = get_address_host_port(address)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@dataclass
class Forwarding:
    """The local ports that lead to a remote scheduler and its dashboard.

    Attributes
    ----------
    address : str
        The scheduler's address as the controller uses it (``tls://127.0.0.1:PORT``).
    dashboard_port : int or None
        The local port of the dashboard, if it has one.
    reason : str
        Why the scheduler is reached this way (one line for the logs).
    """

    address: str
    dashboard_port: int | None
    _listeners: list[asyncssh.SSHListener]
    reason: str = ""

    def close(self) -> None:
        """Close the local ports."""
        for listener in self._listeners:
            listener.close()


async def forward(
    conn: asyncssh.SSHClientConnection,
    scheduler_address: str,
    dashboard_port: int | None,
) -> Forwarding:
    """Forward free local ports to the scheduler and its dashboard over *conn*.

    The remote ends are opened by the scheduler host's sshd, towards the
    address the scheduler listens on (the dashboard is on the same host).
    """
    scheme, _ = parse_address(scheduler_address)
    host, port = get_address_host_port(scheduler_address)
    listeners = [await conn.forward_local_port(LOCALHOST, 0, host, port)]
    local = unparse_address(scheme, f"{LOCALHOST}:{listeners[0].get_port()}")
    local_dashboard = None
    if dashboard_port:
        listeners.append(await conn.forward_local_port(LOCALHOST, 0, host, dashboard_port))
        local_dashboard = listeners[-1].get_port()
    return Forwarding(address=local, dashboard_port=local_dashboard, _listeners=listeners)
