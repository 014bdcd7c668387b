"""One operation of the stage's remote program on a host: run it, read its answer.

:func:`run_script` opens a channel of the host's shared SSH connection, sends
:mod:`sshdeploy.remote.envremote` (with its ``facts`` part) and the operation on
stdin, streams a payload after it, and turns every way it can fail (a
timeout, a lost connection, no answer, a full disk) into an
:class:`~sshdeploy.errors.EnvSyncError` naming the host. Whatever it started
on the host is stopped when it is cancelled or times out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from sshdeploy.bootstrap import build_kill_command, build_script_command, envremote_bundle
from sshdeploy.errors import EnvSyncError
from sshdeploy.hosts import Host
from sshdeploy.ssh.pool import HostPool
from sshdeploy.ssh.sshlib import asyncssh

_CHUNK = 1 << 20
_T = TypeVar("_T")


async def all_or_stop(aws: Iterable[Awaitable[_T]]) -> list[_T]:
    """Await *aws* together; at the first error stop the others, wait for them, raise it.

    Unlike :func:`asyncio.gather`, an error is raised only once every other
    operation has ended: each cancelled :func:`run_script` has stopped what it
    started on its host by then, so a failed stage leaves nothing running
    anywhere (and nothing still writing to a host's cache).

    Examples
    --------
    >>> async def ok(x):
    ...     return x
    >>> asyncio.run(all_or_stop([ok(1), ok(2)]))
    [1, 2]
    """
    tasks = [asyncio.ensure_future(a) for a in aws]
    if not tasks:
        return []
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:  # an error, or this wait cancelled: the rest stop, and are waited for
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks)
    for t in tasks:  # the first error, in the order given, of those that ended by themselves
        if t in done and not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    return [t.result() for t in tasks]


async def run_script(
    pool: HostPool, host: Host, python: str, setup: str | None, login_shell: bool,
    op: dict[str, Any], payload: bytes | Path | Callable[[dict[str, Any]], bytes] | None = None,
    timeout: float = 60.0, need: int | Callable[[], int] = 0,
) -> dict[str, Any]:
    """Run one operation of :mod:`sshdeploy.remote.envremote` on *host*; return its answer.

    A callable *payload* is called with the script's first line (what it asks
    for) and its result sent: one round trip where two would otherwise be needed.

    Raises
    ------
    EnvSyncError
        The script did not answer (Python missing, setup failed, timeout,
        connection lost) or answered an error; a full disk (or quota) is said
        in words, with the space free there and the *need* (bytes) of the operation.
    """
    where = pool.as_connected(host)
    conn = await pool.get(host)
    command = build_script_command(python, setup, login_shell)

    pgid: list[int] = []
    creating: list[asyncio.Future[Any]] = []

    async def go() -> tuple[str, str, int | None]:
        creating.append(asyncio.ensure_future(conn.conn.create_process(command, encoding=None)))
        proc = await asyncio.shield(creating[0])
        try:
            first = await proc.stdout.readline()  # the login shell's pid: its process group
            if first.strip().isdigit():
                pgid.append(int(first))
            proc.stdin.write(envremote_bundle() + (json.dumps(op) + "\n").encode())
            asked = b""
            if callable(payload):
                asked = await proc.stdout.readline()
                try:
                    question = json.loads(asked)
                except ValueError:  # it failed before asking: its answer says why
                    question = None
                if isinstance(question, dict) and "missing" in question:
                    proc.stdin.write(payload(question))
            elif isinstance(payload, Path):
                f = await asyncio.to_thread(payload.open, "rb")
                try:
                    while chunk := await asyncio.to_thread(f.read, _CHUNK):
                        proc.stdin.write(chunk)
                        await proc.stdin.drain()
                finally:
                    f.close()
            elif payload:
                proc.stdin.write(payload)
            proc.stdin.write_eof()
            out, err = await asyncio.gather(proc.stdout.read(), proc.stderr.read())
            await proc.wait()
            return ((asked + out).decode(errors="replace"), err.decode(errors="replace"),
                    proc.exit_status)
        finally:
            proc.close()

    async def kill() -> None:
        if pgid:  # a setup that hangs, a cancelled start: leave nothing behind on the host
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wait_for(
                    conn.conn.run(build_kill_command(pgid[0]), check=False), 10))
        elif creating:  # before its shell said its pid (or even opened): it ends at EOF
            async def end() -> None:
                proc = await asyncio.wait_for(creating[0], 10)
                proc.stdin.write_eof()
                await asyncio.wait_for(proc.wait_closed(), 10)

            with contextlib.suppress(BaseException):
                await asyncio.shield(end())

    try:
        out, err, status = await asyncio.wait_for(go(), timeout)
    except asyncio.TimeoutError:
        await kill()
        raise EnvSyncError(host=where, cause="timeout",
                           what=f"{op['op']} did not finish within {timeout:.0f} s",
                           remedy="Check the setup command and the host's load and disk; "
                           "raise sshdeploy.start-timeout for a slow link.") from None
    except (asyncssh.Error, OSError) as exc:
        raise EnvSyncError(host=where, what=f"{op['op']} failed", cause=str(exc)) from exc
    except BaseException:
        await kill()
        raise
    try:
        answer: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise EnvSyncError(host=where, what=f"{op['op']}: no answer from {python!r}",
                           cause=f"exit status {status}", stderr_tail=err[-2000:]) from None
    if isinstance(answer.get("no_space"), dict):
        raise no_space_error(where, answer["no_space"], need() if callable(need) else need)
    if answer.get("error"):
        raise EnvSyncError(host=where, what=f"{op['op']} failed", cause=str(answer["error"]),
                           stderr_tail=err[-2000:])
    return answer


def no_space_error(where: str, found: Mapping[str, Any], need: int) -> EnvSyncError:
    """The error of a full disk (or quota) on *where*, in words: where, how much, what to do.

    Examples
    --------
    >>> print(no_space_error("root@n2:22", {"dir": "/root/.cache/sshdeploy", "free": 1.5e6},
    ...                      42_000_000))  # doctest: +NORMALIZE_WHITESPACE
    [root@n2:22] sync: no space left on root@n2:22 in /root/.cache/sshdeploy: free 1.5 MB,
    need 42.0 MB. Free space there (`dask-ssh clean --envs --uploads root@n2:22` removes
    sshdeploy's caches), or set sshdeploy.env-cache-size lower (older environments are
    removed to keep within it).
    """
    free = found.get("free")
    room = f"free {free / 1e6:.1f} MB" if isinstance(free, (int, float)) else "free space unknown"
    return EnvSyncError(
        host=where, what=f"no space left on {where} in {found.get('dir') or '~/.cache/sshdeploy'}",
        cause=f"{room}, need {need / 1e6:.1f} MB" if need else room,
        remedy=f"Free space there (`dask-ssh clean --envs --uploads {where}` removes "
        "sshdeploy's caches), or set sshdeploy.env-cache-size lower (older environments are "
        "removed to keep within it).")
