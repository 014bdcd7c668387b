"""A named cluster's jobs over SSH: the agent's job operations, the upload, ``exec``.

Every job operation (:data:`sshdeploy.remote.agent.jobs.JOB_OPS`) is run by the
agent itself on the scheduler host, started the usual way (login shell,
setup, the host's Python) as :mod:`sshdeploy.named.hostops` does, over one
channel of the host's connection; unlike those operations it may stream
(``output`` events: a job's log as it grows) before its one ``answer``. No
port is opened; a controller that goes away only closes that channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sshdeploy.bootstrap import (
    AgentSpec,
    Launch,
    build_command,
    build_kill_command,
    in_login_shell,
    stdin_preamble,
)
from sshdeploy.env.prestart import PreStart
from sshdeploy.env.stageplan import StagePlan
from sshdeploy.env.uploads import REMOTE_UPLOADS, Manifest
from sshdeploy.errors import HostError
from sshdeploy.hosts import Host
from sshdeploy.named.jobs import exec_command, upload_prefix
from sshdeploy.remote.agent.jobs import DOWN_GRACE
from sshdeploy.ssh.channel import split_event
from sshdeploy.ssh.pool import HostPool
from sshdeploy.ssh.sshlib import asyncssh

logger = logging.getLogger(__name__)

#: Seconds an operation that does not follow a log may take (login, setup, Python, answer).
OP_TIMEOUT = 60.0


async def run_op(
    pool: HostPool,
    host: Host,
    launch: Launch,
    name: str,
    op: str,
    data: Mapping[str, Any],
    on_output: Callable[[bytes], None] | None = None,
    timeout: float | None = OP_TIMEOUT,
) -> dict[str, Any]:
    """Run the job operation *op* of cluster *name* on *host*; return the agent's answer.

    *on_output* is given each ``output`` event's bytes as they come (a job's
    log). Cancelled (Ctrl-C), the channel is closed: the operation ends on
    the host at its next write, and a job it follows runs on.

    Raises
    ------
    HostError
        The host could not be reached, or its Python gave no answer (with the
        remote output).
    """
    conn = await pool.get(host)
    where = pool.as_connected(host)
    spec = AgentSpec(role="workers", label=f"{op} {host.hostname}", keep={"name": name}, op=op,
                     data=dict(data))
    errors: list[bytes] = []

    async def talk() -> dict[str, Any] | None:
        proc = await conn.conn.create_process(
            build_command(launch.python, launch.setup, launch.login_shell), encoding=None)
        try:
            proc.stdin.write(stdin_preamble(spec))
            proc.stdin.write_eof()
            drain = asyncio.ensure_future(_drain(proc.stderr, errors))
            try:
                while True:
                    raw = await proc.stdout.readline()
                    if not raw:
                        return None
                    _text, ev = split_event(raw)
                    if ev is None:
                        continue
                    if ev.get("ev") == "output" and on_output is not None:
                        on_output(str(ev.get("data", "")).encode("utf-8", "surrogateescape"))
                    elif ev.get("ev") == "answer":
                        return ev
            finally:
                drain.cancel()
        finally:
            proc.close()

    try:
        answer = await asyncio.wait_for(talk(), timeout)
    except (asyncio.TimeoutError, asyncssh.Error, OSError) as exc:
        raise HostError(host=where, role="agent", what=f"{op} on cluster {name!r} failed",
                        cause=f"{type(exc).__name__}: {exc}",
                        remedy="Check that the host is reachable (ssh to it by hand).") from exc
    if answer is None:
        raise HostError(host=where, role="agent", what=f"{op} on cluster {name!r} failed",
                        cause=f"{launch.python!r} gave no answer",
                        remedy="Check the remote Python of that host (dask-ssh --check).",
                        stderr_tail=b"".join(errors).decode("utf-8", "replace")[-2000:])
    return answer


async def _drain(stream: Any, into: list[bytes], keep: int = 64) -> None:
    """Read *stream* to its end, keeping its last *keep* chunks (a remote error's tail)."""
    while True:
        data = await stream.read(65536)
        if not data:
            return
        into.append(data)
        del into[:-keep]


async def upload(pool: HostPool, host: Host, launch: Launch, manifest: Manifest,
                 directory: str, timeout: float = OP_TIMEOUT) -> int:
    """Send a job's files (*manifest*) to ``~/.cache/sshdeploy/uploads/<directory>`` on *host*.

    The existing uploads do it (:meth:`sshdeploy.env.prestart.PreStart.push_uploads`):
    the host keeps every content it ever received, so only what it lacks is
    sent. Returns the bytes sent.
    """
    plan = StagePlan(packages=(), policy="ignore", upload_dir=f"{REMOTE_UPLOADS}/{directory}")
    stage = PreStart(plan, pool, [(host, launch.python)], setup=launch.setup,
                     login_shell=launch.login_shell, timeout=timeout)
    stage.manifest = manifest
    return await stage.push_uploads(host, launch.python, None)


async def stop_jobs(pool: HostPool, host: Host, launch: Launch, name: str,
                    grace: float = DOWN_GRACE) -> list[str]:
    """Stop every running job of cluster *name* and remove its jobs from its scheduler *host*.

    For ``down`` (:func:`sshdeploy.named.flow.stop`): returns once nothing of
    them is left. Returns the jobs that ran, each as :func:`job_label` says
    it; a host that cannot be reached is logged, not raised (its jobs stop by
    themselves when their scheduler does).
    """
    data = {"grace": grace, "reason": "the cluster was stopped (down)",
            "uploads": f"{REMOTE_UPLOADS}/{upload_prefix(name)}"}
    try:
        answer = await run_op(pool, host, launch, name, "job-stop-all", data,
                              timeout=OP_TIMEOUT + 3 * grace + 10)
    except Exception as exc:  # a connect error too: the cluster's stop goes on
        logger.warning("cluster %r: its jobs were not stopped: %s", name, exc)
        return []
    described = answer.get("jobs")
    if isinstance(described, list):
        return [job_label(j) for j in described if isinstance(j, dict)]
    return [str(j) for j in answer.get("stopped") or ()]  # an agent of before the names


def job_label(job: Mapping[str, Any]) -> str:
    """A job as ``down`` names it: its id, its name, its command (the script and its args).

    Examples
    --------
    >>> job_label({"id": "2", "name": "long", "argv": ["/opt/py/bin/python", "train.py", "9"]})
    '2 (long: train.py 9)'
    >>> job_label({"id": "3", "name": "", "argv": ["/usr/bin/python3", "a.py"]})
    '3 (a.py)'
    """
    argv = [str(a) for a in job.get("argv") or ()]
    command = " ".join(argv[1:] if len(argv) > 1 else argv)
    name = str(job.get("name") or "")
    inside = f"{name}: {command}" if name and command else name or command
    return f"{job.get('id')} ({inside})" if inside else str(job.get("id"))


async def run_exec(
    pool: HostPool,
    host: Host,
    launch: Launch,
    command: Sequence[str],
    env: Mapping[str, str],
    on_line: Callable[[str, bool], Awaitable[None] | None],
    cluster: str | None = None,
) -> int:
    """Run ``dask-ssh exec``'s *command* on *host*; give each line to *on_line*; return the
    exit status. Cancelled (Ctrl-C, a timeout), its whole process group is killed.

    With *cluster* (its name), the command has the ``PATH`` and ``PYTHONPATH``
    of that cluster's agent on the host, as its workers (a synced environment).

    ``on_line(text, is_stderr)``.
    """
    conn = await pool.get(host)
    command_line = in_login_shell(exec_command(command, launch.setup, env, cluster,
                                               launch.python), launch.login_shell)
    pgid: list[int] = []
    proc = await conn.conn.create_process(command_line, encoding="utf-8", errors="replace")

    async def read(stream: Any, is_stderr: bool) -> None:
        async for line in stream:
            if not line:  # the end (a line, even an empty one, ends with its newline)
                break
            if not is_stderr and not pgid and line.strip().isdigit():
                pgid.append(int(line))
                continue
            result = on_line(line.rstrip("\n"), is_stderr)
            if result is not None:
                await result

    try:
        proc.stdin.write_eof()
        await asyncio.gather(read(proc.stdout, False), read(proc.stderr, True))
        await proc.wait()
        status = proc.exit_status
        return int(status) if status is not None and status >= 0 else 255
    except BaseException:
        if pgid:  # leave nothing behind on the host
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wait_for(
                    conn.conn.run(build_kill_command(pgid[0]), check=False), 10))
        raise
    finally:
        proc.close()
