"""The controller's end of one remote agent: an SSH channel speaking the agent's protocol.

:class:`AgentChannel` opens a channel on the host's shared connection, sends
the agent (:mod:`sshdeploy.remote.agent`) and its spec on stdin, reads its events and
output for the agent's whole life, sends commands and pings, and ends it.
Readiness is an explicit handshake, never a scraped log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import dask
from distributed.utils import Deadline

from sshdeploy.bootstrap import (
    EVENT_MARK,
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    EXIT_SETUP_FAILED,
    AgentSpec,
    Describe,
    Launch,
    build_command,
    build_kill_command,
    cluster_mark,
    encode_message,
    stdin_preamble,
)
from sshdeploy.errors import (
    HostError,
    RemoteImportError,
    RemotePythonError,
    StartError,
    VersionMismatchError,
)
from sshdeploy.hosts import Host
from sshdeploy.logs import LogBook
from sshdeploy.roles import AgentRole
from sshdeploy.stages import HELLO, stage_info
from sshdeploy.versions import compare_versions, local_versions

from .pool import Connection, HostPool
from .sshlib import asyncssh

logger = logging.getLogger(__name__)

#: Why an agent is gone when its SSH connection dropped (the agent itself may
#: still run on the host until its heartbeat timeout).
CONNECTION_LOST = "the SSH connection was lost"


def split_event(raw: bytes) -> tuple[str, dict[str, Any] | None]:
    """Split one stdout line of an agent into foreign text and the agent's event.

    Only what follows the event mark is parsed; text before it (a login
    script that printed without a newline) or a line without it is returned
    as text to log, never taken for an event.

    Examples
    --------
    >>> split_event(EVENT_MARK + b'{"ev": "hello"}\\n')
    ('', {'ev': 'hello'})
    >>> split_event(b'Welcome' + EVENT_MARK + b'{"ev": "bye"}\\n')
    ('Welcome', {'ev': 'bye'})
    >>> split_event(b'3\\n')
    ('3', None)
    """
    start = raw.find(EVENT_MARK)
    ev: Any = None
    if start >= 0:
        with contextlib.suppress(ValueError):
            ev = json.loads(raw[start + len(EVENT_MARK):])
        raw = raw[:start]
    text = raw.decode("utf-8", "replace").rstrip("\r\n")
    return (text if text.strip() else ""), (ev if isinstance(ev, dict) else None)


class AgentChannel:
    """The controller's end of one remote agent.

    Parameters
    ----------
    pool : HostPool
        Where the host's connection comes from.
    host : Host
        The host.
    role : {"scheduler", "workers"}
        What the agent runs.
    launch : Launch
        Interpreter, setup and environment.
    logbook : LogBook
        Where remote output goes.
    on_exit : callable, optional
        Called with ``(name, reason)`` when a process of this agent exits
        by itself (or the agent is lost).
    describe : Describe, optional
        Have the agent say what its host is as it starts (for the version gate).
    """

    def __init__(
        self,
        pool: HostPool,
        host: Host,
        role: AgentRole,
        launch: Launch,
        logbook: LogBook,
        on_exit: Callable[[str, str], None] | None = None,
        describe: Describe | None = None,
    ) -> None:
        self.pool = pool
        self.host = host
        self.role = role
        self.launch = launch
        self.logbook = logbook
        self.on_exit = on_exit
        self.describe = describe
        #: What the agent said its host is (``described``), once it has.
        self.description: dict[str, Any] | None = None
        self._told = describe is None
        self.where = pool.as_connected(host)
        self.label = f"scheduler {host.hostname}" if role == "scheduler" else host.hostname
        self.connection: Connection | None = None
        self.process: asyncssh.SSHClientProcess[bytes] | None = None
        self.hello: dict[str, Any] = {}
        self._waiters: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self._hello: asyncio.Future[dict[str, Any]] | None = None
        self._stderr: list[str] = []
        #: Lines on stdout that are not events (a login script, nologin's notice).
        self._stdout: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        #: A named cluster's agent told to run on without its controller (see arm()),
        #: and whether it said it does.
        self._armed = False
        self._armed_said: asyncio.Event | None = None
        self._create: asyncio.Future[Any] | None = None
        self.exit_status: int | None = None
        #: The signal that ended the remote process (``KILL``), if one did.
        self.exit_signal: str | None = None
        #: The agent's output ended: it exited, or the connection was lost.
        self.gone = False
        #: How far the remote start got (a ``stage`` event), and the remote
        #: process group to kill when it stalls there.
        self.stage: str | None = None
        self.pgid: int | None = None
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "logs": self._on_logs,
            "log": self._on_log,
            "stage": self._on_stage,
            "hello": self._on_hello,
            "fatal": self._on_fatal,
            "ready": self._on_answer,
            "failed": self._on_answer,
            "stopped": self._on_answer,
            "exited": self._on_exited,
            "armed": self._on_armed,
            "described": self._on_described,
        }

    # -- start -------------------------------------------------------------
    async def start(self, timeout: float) -> dict[str, Any]:
        """Open the channel, send the agent and wait for its hello (versions).

        The whole of it (connection, session, hello) is bounded by *timeout*;
        when it fails or is cancelled, the agent is ended before this returns.
        """
        try:
            return await self._start(timeout)
        finally:  # said, or never will be: whoever waits for it goes on
            self._tell(None)

    async def _start(self, timeout: float) -> dict[str, Any]:
        deadline = Deadline.after(timeout)
        self.connection = await self.pool.get(self.host)
        command = build_command(self.launch.python, self.launch.setup, self.launch.login_shell,
                                mark=cluster_mark(self.launch.keep))
        spec = AgentSpec(
            role=self.role,
            label=self.label,
            config=dask.config.serialize(dask.config.global_config)
            if self.launch.inherit_config
            else "",
            env=dict(self.launch.env),
            heartbeat=self.pool.settings.heartbeat_timeout,
            mp_method=self.launch.mp_method or self.pool.settings.multiprocessing_method,
            keep=self.launch.keep,
            describe=self.describe.packages if self.describe is not None else None,
        )
        loop = asyncio.get_running_loop()
        self._hello = loop.create_future()
        # Its outcome is read by start(); if start() was cancelled, nobody will.
        self._hello.add_done_callback(lambda f: f.cancelled() or f.exception())
        create = self._create = asyncio.ensure_future(
            self.connection.conn.create_process(command, encoding=None)
        )
        try:
            self.process = await asyncio.wait_for(
                asyncio.shield(create), max(1.0, deadline.remaining or 0.0)
            )
        except asyncio.TimeoutError:
            create.cancel()
            raise StartError(
                host=self.where,
                role=self.role,
                what=f"the SSH session did not open within {timeout:.0f} s",
                remedy="Check the host's sshd and login scripts (ssh to it by hand).",
            ) from None
        except asyncio.CancelledError:
            # Cancelled (the cluster is closing) while the session opened: end it.
            with contextlib.suppress(Exception):
                self.process = await asyncio.wait_for(create, 10)
                await self.abort()
            raise
        except (asyncssh.Error, OSError) as exc:
            raise StartError(
                host=self.where,
                role=self.role,
                what="cannot open an SSH session",
                cause=str(exc),
                remedy="The server may limit sessions (MaxSessions) or be shutting down.",
            ) from exc
        assert self.process is not None
        self.process.stdin.write(stdin_preamble(spec))
        if self._armed:  # armed while its session opened: right after its spec
            self.process.stdin.write(encode_message("arm"))
        self._tasks = [
            asyncio.ensure_future(self._read_events()),
            asyncio.ensure_future(self._read_stderr()),
            asyncio.ensure_future(self._heartbeat()),
        ]
        try:
            hello = await asyncio.wait_for(
                asyncio.shield(self._hello), max(1.0, deadline.remaining or 0.0)
            )
            self._check_versions(hello.get("versions", {}))
        except asyncio.TimeoutError:
            stage = self.stage
            if stage == "login" and not (self.launch.setup or "").strip():
                stage = "setup"  # no setup: the shell went on to start Python
            await self.abort()
            stalled = stage_info(stage)
            what, remedy = stalled.stalled, stalled.remedy
            raise StartError(
                host=self.where,
                role=self.role,
                what=f"start stalled {what}: nothing more within {timeout:.0f} s",
                remedy=remedy.format(setup=self.launch.setup, python=self.launch.python),
                stderr_tail=self._tail(),
            ) from None
        except BaseException:
            # Failed or cancelled (the cluster is closing): leave nothing running.
            await self.abort()
            raise
        self.hello = hello
        return hello

    def _check_versions(self, remote: Mapping[str, str]) -> None:
        policy = self.pool.settings.version_check
        diffs = compare_versions(local_versions(), remote)
        if not diffs or policy == "ignore":
            return
        err = VersionMismatchError(
            host=self.where, role=self.role, cause="; ".join(diffs)
        )
        if policy == "warn":
            # Not the error's advice to set version-check to warn: it is set so.
            warned = dataclasses.replace(
                err, remedy="Going on (sshdeploy.version-check is 'warn'); install matching "
                "versions on both sides to silence this.")
            logger.warning("%s", warned)
            return
        raise err

    def _tail(self) -> str:
        return "\n".join((self._stderr + self.logbook.lines(self.label))[-20:])

    # -- reading -----------------------------------------------------------
    async def _read_events(self) -> None:
        assert self.process is not None
        try:
            async for raw in self.process.stdout:
                if not raw:
                    continue  # the end of the stream, not a line
                other, ev = split_event(raw)
                if other:
                    # Not the agent's: a login script or setup printing to stdout.
                    self._stdout.append(other)
                    del self._stdout[:-50]
                    self.logbook.record(self.label, self.host.hostname, self._log_role(self.label),
                                        "stdout", other)
                if ev is not None:
                    self._dispatch(ev)
        except (asyncssh.Error, OSError):
            pass
        await self._finished()

    async def _read_stderr(self) -> None:
        assert self.process is not None
        try:
            async for raw in self.process.stderr:
                if not raw:
                    continue
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self._stderr.append(line)
                del self._stderr[:-50]
                self.logbook.record(self.label, self.host.hostname, self._log_role(self.label),
                                    "stderr", line)
        except (asyncssh.Error, OSError):
            pass

    def _log_role(self, label: str) -> str:
        if self.role == "scheduler":
            return "scheduler"
        return "agent" if label == self.label else "worker"

    def _dispatch(self, ev: dict[str, Any]) -> None:
        handler = self._handlers.get(str(ev.get("ev")))
        if handler is not None:
            handler(ev)

    def _on_logs(self, ev: dict[str, Any]) -> None:
        for src, stream, line in ev.get("lines", ()):
            self.logbook.record(src, self.host.hostname, self._log_role(src), stream, line)

    def _on_log(self, ev: dict[str, Any]) -> None:
        src = str(ev.get("src", self.label))
        self.logbook.record(src, self.host.hostname, self._log_role(src),
                            str(ev.get("stream", "stderr")), str(ev.get("line", "")))

    def _on_stage(self, ev: dict[str, Any]) -> None:
        self.stage = str(ev.get("stage"))
        if self.stage == "login" and isinstance(ev.get("pid"), int):
            self.pgid = int(ev["pid"])

    def _on_described(self, ev: dict[str, Any]) -> None:
        description = ev.get("description")
        if isinstance(description, dict):
            self.description = description
            self._tell(description)

    def _tell(self, description: dict[str, Any] | None) -> None:
        """Tell :attr:`describe` what the host is (None: it will not be said), once."""
        if not self._told and self.describe is not None:
            self._told = True
            self.describe.told(self.host, description)

    def _on_hello(self, ev: dict[str, Any]) -> None:
        self.stage = HELLO
        if self._hello is not None and not self._hello.done():
            self._hello.set_result(ev)

    def _on_fatal(self, ev: dict[str, Any]) -> None:
        err = RemoteImportError(
            host=self.where,
            role=self.role,
            cause=f"{ev.get('error')} (python: {ev.get('python')})",
            stderr_tail=str(ev.get("tb", "")),
        )
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(err)

    def _on_answer(self, ev: dict[str, Any]) -> None:
        name = str(ev.get("name"))
        key = ("stopped" if ev.get("ev") == "stopped" else "started", name)
        fut = self._waiters.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(ev)

    def _on_exited(self, ev: dict[str, Any]) -> None:
        name = str(ev.get("name"))
        self._fail_waiters(name, f"exited: {ev.get('reason')}")
        if self.on_exit is not None:
            self.on_exit(name, str(ev.get("reason")))

    def fail_starts(self, reason: str) -> None:
        """Answer every start still waiting with a failure (the cluster is closing)."""
        for key, fut in list(self._waiters.items()):
            if key[0] == "started" and not fut.done():
                fut.set_result({"ev": "failed", "name": key[1], "error": reason})
                self._waiters.pop(key, None)

    def _fail_waiters(self, name: str | None, reason: str) -> None:
        for key, fut in list(self._waiters.items()):
            if (name is None or key[1] == name) and not fut.done():
                fut.set_result({"ev": "failed", "name": key[1], "error": reason})
                self._waiters.pop(key, None)

    async def _finished(self) -> None:
        """The agent's stdout closed: it exited, or the connection was lost."""
        assert self.process is not None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.process.wait_closed(), 5)
        self.exit_status = self.process.exit_status
        signal = self.process.exit_signal
        self.exit_signal = str(signal[0]) if signal else None
        self.gone = True
        reason = self._exit_reason()
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(self._start_failure())
        self._fail_waiters(None, reason)
        if not self._closing and self.on_exit is not None:
            self.on_exit("*", reason)

    def _exit_reason(self) -> str:
        if self.exit_status is None:
            return CONNECTION_LOST
        return f"the remote agent {self._how_it_ended()}"

    def _how_it_ended(self) -> str:
        """``exited with status N``, or ``was killed by SIGKILL`` (not ``status -1``)."""
        if self.exit_signal:
            name = self.exit_signal.removeprefix("SIG")
            return f"was killed by SIG{name}"
        return f"exited with status {self.exit_status}"

    def _start_failure(self) -> HostError:
        """Why the agent ended before its hello: blame the stage it had reached.

        The remote output that explains it (nologin's notice, the shell's
        syntax error) comes first in the cause.
        """
        status = self.exit_status
        tail = "\n".join((self._stdout + self._stderr)[-20:])
        said = next((line.strip() for line in self._stdout + self._stderr if line.strip()), "")
        setup = (self.launch.setup or "").strip()
        how = self._how_it_ended()
        if setup and self.stage in (None, "login") and "syntax error" in tail.lower():
            return StartError(
                host=self.where, role=self.role,
                what="the setup command is not valid shell",
                cause=f"{next(ln for ln in tail.splitlines() if 'syntax' in ln.lower())} "
                      f"(setup: {setup!r})",
                remedy="Fix the setup command's syntax (try it by hand: ssh host 'SETUP').",
                stderr_tail=tail,
            )
        if self.stage is None:
            return StartError(
                host=self.where, role=self.role,
                what="the login shell ended before running any command",
                cause=(f"{said!r}; " if said else "") + f"it {how}",
                remedy="The account may not allow logins (a nologin shell), or a login "
                "script exits: `ssh user@host true` must succeed for that account.",
                stderr_tail=tail,
            )
        if self.stage == "login" and setup and status != EXIT_SETUP_FAILED:
            return StartError(
                host=self.where, role=self.role,
                what="the setup command ended the shell before Python started",
                cause=f"the shell {how} (setup: {setup!r})" + (f"; it said {said!r}"
                                                                if said else ""),
                remedy="Do not `exit` in the setup command; it runs in the same shell as "
                "Python (join commands with &&).",
                stderr_tail=tail,
            )
        if status == EXIT_NOT_FOUND or ("not found" in tail and "exec" in tail):
            return RemotePythonError(
                host=self.where,
                role=self.role,
                cause=f"{self.launch.python!r} not found on the remote PATH (exit {status})",
                stderr_tail=tail,
            )
        if status == EXIT_NOT_EXECUTABLE:
            return RemotePythonError(
                host=self.where,
                role=self.role,
                cause=f"{self.launch.python!r} is not an executable file (exit {status})",
                stderr_tail=tail,
            )
        if status == EXIT_SETUP_FAILED:
            return StartError(
                host=self.where,
                role=self.role,
                what="the setup command failed",
                cause=repr(self.launch.setup),
                remedy="Run the setup command by hand on that host over ssh and fix it.",
                stderr_tail=tail,
            )
        when = {"python": "while reading the agent",
                "import": "while importing dask and distributed"}.get(
                    str(self.stage), "before the agent started")
        return RemotePythonError(
            host=self.where,
            role=self.role,
            cause=(f"{said!r}; " if said else "") + f"{self.launch.python!r} {how} {when}",
            stderr_tail=tail,
        )

    async def _heartbeat(self) -> None:
        interval = self.pool.settings.ping_interval
        while True:
            await asyncio.sleep(interval)
            self.send(encode_message("ping"))

    # -- commands ----------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Write one message to the agent (ignored once the channel is gone)."""
        if self.process is not None and not self.process.stdin.is_closing():
            with contextlib.suppress(asyncssh.Error, OSError):
                self.process.stdin.write(data)

    async def call(
        self, cmd: str, name: str, kwargs: Mapping[str, Any] | None, timeout: float, **fields: Any
    ) -> dict[str, Any]:
        """Send *cmd* for process *name* and wait for its answer (bounded)."""
        kind = "stopped" if cmd == "stop" else "started"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[(kind, name)] = fut
        if self.process is None or self.gone or self.process.stdout.at_eof():
            self._waiters.pop((kind, name), None)
            return {"ev": "failed", "name": name, "error": self._exit_reason()}
        self.send(encode_message(cmd, kwargs, name=name, timeout=timeout, **fields))
        try:
            return await asyncio.wait_for(fut, timeout + 5)
        except asyncio.TimeoutError:
            self._waiters.pop((kind, name), None)
            return {"ev": "failed", "name": name, "error": f"no answer within {timeout:.0f} s"}

    async def shutdown(self, timeout: float) -> None:
        """Stop everything the agent runs and wait until the agent has exited."""
        self._closing = True
        if self.process is None:
            return
        self.send(encode_message("shutdown", timeout=timeout))
        try:
            await asyncio.wait_for(self.process.wait_closed(), timeout + 8)
        except (asyncio.TimeoutError, asyncssh.Error, OSError):
            logger.warning("%s: agent did not stop in time; closing its channel", self.where)
            await self.abort()
        for t in self._tasks:
            t.cancel()

    async def abort(self) -> None:
        """End the agent: EOF on its stdin makes it kill all it started, then exit.

        Before its hello the agent reads no EOF (the shell may still run the
        setup, or Python import distributed): then the remote process group is
        killed over a second channel instead. Waits (bounded) for the agent to
        exit, so that when this returns nothing of it is left on the host;
        closes the channel after that.
        """
        self._closing = True
        if self.process is not None and self.stage != HELLO:
            if self.pgid:
                await self._kill_group()
            else:
                # The login shell has not said a word yet: it still runs the
                # login scripts (killing them could leave their locks behind).
                # It dies on its first write to the closed channel, before setup.
                self.process.close()
        if self.process is not None:
            with contextlib.suppress(Exception):
                self.process.stdin.write_eof()
            try:
                await asyncio.wait_for(asyncio.shield(self.process.wait_closed()), 10)
            except asyncio.TimeoutError:
                logger.warning(
                    "[%s] %s agent still running 10 s after EOF; closing its channel "
                    "(it stops itself once it notices)", self.where, self.role,
                )
                self.process.close()
            except BaseException:
                self.process.close()
                raise
        for t in self._tasks:
            t.cancel()

    async def _kill_group(self) -> None:
        """Kill the remote process group of a start that has not said hello (bounded)."""
        assert self.connection is not None and self.pgid is not None
        try:
            await asyncio.wait_for(
                self.connection.conn.run(build_kill_command(self.pgid), check=False), 5
            )
        except (asyncio.TimeoutError, asyncssh.Error, OSError) as exc:
            logger.warning("[%s] could not kill the stalled start (process group %d): %r",
                           self.where, self.pgid, exc)

    def arm(self) -> None:
        """Tell a named cluster's agent that it runs on without its controller from now on.

        Sent once the cluster is recorded; until then its agent stops with its
        controller. An agent whose session is still opening gets it right
        after its spec. :meth:`armed` waits for its answer.
        """
        if self._armed_said is None:
            self._armed_said = asyncio.Event()
        if not self._armed:
            self._armed = True
            self.send(encode_message("arm"))

    async def armed(self, timeout: float) -> bool:
        """Wait (at most *timeout* s) until the agent said it runs on; return whether it did."""
        said = self._armed_said
        if said is None:
            return False
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(said.wait(), timeout)
        return said.is_set()

    def _on_armed(self, ev: dict[str, Any]) -> None:
        if self._armed_said is not None:
            self._armed_said.set()

    async def detach(self) -> None:
        """Leave a kept agent running on its own: tell it, then close our end.

        The agent of a named cluster (spec ``keep``) runs on without a
        controller; it would also on EOF alone, but is told first so that its
        log says why.
        """
        if self.process is not None and not self.gone:
            self.send(encode_message("detach"))
            self._closing = True
            with contextlib.suppress(Exception):
                self.process.stdin.write_eof()
            self.process.close()
        self._closing = True
        for t in self._tasks:
            t.cancel()

    async def ensure_gone(self) -> None:
        """Return once this agent's remote process has exited (ending it if needed).

        Safe to call in any state, also after a cancelled or failed start.
        """
        if self.process is None and self._create is not None:
            with contextlib.suppress(BaseException):
                self.process = await asyncio.wait_for(asyncio.shield(self._create), 10)
        if self.process is not None and self.process.exit_status is None:
            await self.abort()

    @property
    def alive(self) -> bool:
        """Whether the agent is still running."""
        return self.process is not None and not self.gone and not self._closing
