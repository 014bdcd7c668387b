"""The controller's end of an agent (sshdeploy.ssh.channel): events in, state and answers out.

No connection is opened: the events an agent sends are dispatched by hand, as
``_read_events`` does with each line it reads.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sshdeploy.errors import RemoteImportError
from sshdeploy.hosts import Host
from sshdeploy.logs import LogBook
from sshdeploy.plan import Launch
from sshdeploy.remote.agent.protocol import EVENT
from sshdeploy.ssh.channel import AgentChannel, split_event
from sshdeploy.ssh.pool import HostPool

pytestmark = pytest.mark.timeout(30)


def channel(role: Any = "workers", **kw: Any) -> AgentChannel:
    return AgentChannel(HostPool(), Host("node2", user="u", port=22), role,
                        Launch(python="python3"), LogBook(), **kw)


def feed(ch: AgentChannel, *lines: bytes) -> None:
    for raw in lines:
        _other, ev = split_event(raw)
        assert ev is not None
        ch._dispatch(ev)


def test_stages_are_followed_and_the_login_shell_gives_the_process_group() -> None:
    ch = channel()
    assert ch.stage is None and ch.where == "u@node2:22" and ch.label == "node2"
    feed(ch, EVENT + b'{"ev": "stage", "stage": "login", "pid": 4242}\n')
    assert (ch.stage, ch.pgid) == ("login", 4242)
    feed(ch, EVENT + b'{"ev": "stage", "stage": "python", "pid": 4250}\n')
    assert (ch.stage, ch.pgid) == ("python", 4242)  # only the login shell leads the group


def test_hello_ends_the_stages_and_answers_the_start() -> None:
    async def main() -> None:
        ch = channel(role="scheduler")
        ch._hello = asyncio.get_running_loop().create_future()
        feed(ch, EVENT + b'{"ev": "hello", "pid": 7, "versions": {"python": "3.11"}}\n')
        assert ch.stage == "hello"
        assert (await ch._hello)["pid"] == 7
    asyncio.run(main())


def test_a_fatal_import_error_fails_the_start_with_where_and_why() -> None:
    async def main() -> None:
        ch = channel()
        ch._hello = asyncio.get_running_loop().create_future()
        feed(ch, EVENT + b'{"ev": "fatal", "error": "No module named distributed", '
                         b'"python": "/usr/bin/python3", "tb": "Traceback ..."}\n')
        with pytest.raises(RemoteImportError) as info:
            await ch._hello
        assert info.value.host == "u@node2:22" and info.value.role == "workers"
        assert "No module named distributed" in str(info.value)
    asyncio.run(main())


def test_remote_lines_are_recorded_under_their_source() -> None:
    ch = channel()
    feed(ch, EVENT + b'{"ev": "logs", "lines": [["node2-0", "stderr", "worker line"], '
                     b'["node2", "stderr", "agent line"]]}\n',
         EVENT + b'{"ev": "log", "line": "one more"}\n')
    assert ch.logbook.lines("node2-0") == ["worker line"]
    assert ch.logbook.lines("node2") == ["agent line", "one more"]
    assert (ch._log_role("node2"), ch._log_role("node2-0")) == ("agent", "worker")
    assert channel(role="scheduler")._log_role("anything") == "scheduler"


def test_answers_resolve_the_request_waiting_for_them_and_others_are_ignored() -> None:
    async def main() -> None:
        ch = channel()
        loop = asyncio.get_running_loop()
        started = ch._waiters[("started", "node2-0")] = loop.create_future()
        stopped = ch._waiters[("stopped", "node2-1")] = loop.create_future()
        feed(ch, EVENT + b'{"ev": "ready", "name": "node2-0", "address": "tcp://x:1"}\n',
             EVENT + b'{"ev": "no-such-event"}\n',
             EVENT + b'{"ev": "stopped", "name": "node2-1"}\n')
        assert (await started)["address"] == "tcp://x:1"
        assert (await stopped)["ev"] == "stopped"
        assert ch._waiters == {}
    asyncio.run(main())


def test_a_process_that_exits_fails_its_waiters_and_is_reported() -> None:
    async def main() -> None:
        exits: list[tuple[str, str]] = []
        ch = channel(on_exit=lambda name, why: exits.append((name, why)))
        started = ch._waiters[("started", "node2-0")] = asyncio.get_running_loop().create_future()
        feed(ch, EVENT + b'{"ev": "exited", "name": "node2-0", "reason": "exit status 1"}\n')
        assert (await started) == {"ev": "failed", "name": "node2-0",
                                   "error": "exited: exit status 1"}
        assert exits == [("node2-0", "exit status 1")]
    asyncio.run(main())
