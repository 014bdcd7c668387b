"""Operations on a host's copy of a named cluster: probe, write, kill, remove.

Each is run by the agent itself (:func:`sshdeploy.remote.agent.keep.keep_op`), started
the usual way (login shell, setup, the host's Python) but stopping before it
imports distributed: it reads or changes the cluster's directory on that host
and answers with one ``answer`` event, then exits. No port is opened and
nothing stays running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from sshdeploy.bootstrap import AgentSpec, build_command, stdin_preamble
from sshdeploy.errors import HostError
from sshdeploy.hosts import Host
from sshdeploy.plan import Launch
from sshdeploy.ssh.channel import split_event
from sshdeploy.ssh.pool import HostPool
from sshdeploy.ssh.sshlib import asyncssh

#: The operations an agent runs on a named cluster's files.
OPS = ("probe", "write", "kill", "remove", "logs", "list")


async def host_op(
    pool: HostPool,
    host: Host,
    launch: Launch,
    name: str,
    op: str,
    data: Any = None,
    timeout: float = 30.0,
    grace: float = 5.0,
) -> dict[str, Any]:
    """Run *op* on the files of the named cluster *name* on *host*; return the agent's probe.

    Raises
    ------
    HostError
        The host could not be reached, or its Python did not answer (named,
        with the remote output).
    """
    assert op in OPS, op
    try:
        return await _host_op(pool, host, launch, name, op, data, timeout, grace)
    except HostError as first:  # every op is idempotent: one more try, then the error
        try:
            return await _host_op(pool, host, launch, name, op, data, timeout, grace)
        except HostError:
            raise first from None


async def _host_op(pool: HostPool, host: Host, launch: Launch, name: str, op: str, data: Any,
                   timeout: float, grace: float) -> dict[str, Any]:
    conn = await pool.get(host)
    spec = AgentSpec(role="workers", label=f"{op} {host.hostname}", keep={"name": name},
                     op=op, data=data)
    command = build_command(launch.python, launch.setup, launch.login_shell)
    payload = stdin_preamble(spec)
    try:
        result = await asyncio.wait_for(
            conn.conn.run(command, input=payload, encoding=None, check=False), timeout)
    except (asyncio.TimeoutError, asyncssh.Error, OSError) as exc:
        raise HostError(host=pool.as_connected(host), role="agent",
                        what=f"cannot {op} the state of cluster {name!r}",
                        cause=f"{type(exc).__name__}: {exc}",
                        remedy="Check that the host is reachable (ssh to it by hand).") from exc
    stdout = result.stdout if isinstance(result.stdout, bytes) else b""
    for raw in stdout.splitlines():
        _text, ev = split_event(raw)
        if ev is not None and ev.get("ev") == "answer":
            return ev
    stderr = result.stderr if isinstance(result.stderr, bytes) else b""
    raise HostError(host=pool.as_connected(host), role="agent",
                    what=f"cannot {op} the state of cluster {name!r}",
                    cause=f"{launch.python!r} gave no answer (exit {result.exit_status})",
                    remedy="Check the remote Python of that host (dask-ssh --check).",
                    stderr_tail=stderr.decode("utf-8", "replace")[-2000:])


async def on_hosts(
    pool: HostPool,
    hosts: Mapping[Host, Launch],
    name: str,
    op: str,
    timeout: float = 30.0,
) -> dict[Host, dict[str, Any] | BaseException]:
    """Run *op* on every host at once; each answer or the error raised for it."""
    results = await asyncio.gather(
        *(host_op(pool, h, launch, name, op, timeout=timeout) for h, launch in hosts.items()),
        return_exceptions=True)
    return dict(zip(hosts, results, strict=True))
