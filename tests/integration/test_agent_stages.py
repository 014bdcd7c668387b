"""A start that stalls before the agent runs can be ended from the controller's side.

Over real sshd: the remote command reports its stages (``login`` with the
shell's pid first), the login shell is its session's and group's leader, and
:func:`sshdeploy.bootstrap.build_kill_command` run over a second channel of
the same connection ends the shell and the setup's children.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import pytest

from sshdeploy import testbed
from sshdeploy.bootstrap import AgentSpec, build_command, build_kill_command, stdin_preamble
from sshdeploy.ssh.channel import split_event
from sshdeploy.ssh.sshlib import asyncssh

pytestmark = pytest.mark.timeout(60)


async def read_event(process: asyncssh.SSHClientProcess[bytes], timeout: float) -> dict:
    async def first() -> dict:
        while True:
            raw = await process.stdout.readline()
            assert raw, "the remote command ended before its next event"
            _text, ev = split_event(raw)
            if ev is not None:
                return ev

    return await asyncio.wait_for(first(), timeout)


def group_on(host: testbed.BedHost, pgid: int) -> list[str]:
    """Command lines of the live processes of group *pgid* on *host*."""
    out = []
    for pid, cmd in testbed.processes(host):
        with contextlib.suppress(OSError, IndexError):
            if int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                out.append(cmd)
    return out


def test_a_start_stalled_in_setup_is_killed_with_its_children(bed: testbed.Bed) -> None:
    host = bed.hosts[0]

    async def main() -> None:
        async with asyncssh.connect(host.address, **bed.connect_options()) as conn:
            command = build_command(sys.executable, "sleep 300 & sleep 300")
            process = await conn.create_process(command, encoding=None)
            process.stdin.write(stdin_preamble(AgentSpec(role="workers", label=host.name)))
            login = await read_event(process, 10)
            assert login["ev"] == "stage" and login["stage"] == "login"
            pid = int(login["pid"])
            # sshd made the login shell the leader of its session and group
            check = await conn.run(f"cut -d' ' -f5,6 /proc/{pid}/stat", check=True)
            assert str(check.stdout).split() == [str(pid), str(pid)]
            try:
                testbed.wait_until(
                    lambda: sum(c.split()[:1] == ["sleep"] for c in group_on(host, pid)) == 2,
                    10, "setup's two sleeps in the shell's group")
            finally:
                killed = await asyncio.wait_for(conn.run(build_kill_command(pid)), 10)
            assert killed.exit_status == 0
            await asyncio.wait_for(process.wait_closed(), 10)
            assert process.exit_signal is not None and process.exit_signal[0] == "KILL"
            testbed.wait_until(lambda: group_on(host, pid) == [], 10,
                               "the shell's group to be gone")

    asyncio.run(main())


def test_stages_come_in_order_with_one_pid(bed: testbed.Bed) -> None:
    host = bed.hosts[1]

    async def main() -> None:
        async with asyncssh.connect(host.address, **bed.connect_options()) as conn:
            process = await conn.create_process(build_command(sys.executable, "true"),
                                                encoding=None)
            process.stdin.write(stdin_preamble(AgentSpec(role="workers", label=host.name)))
            stages = [await read_event(process, 20) for _ in range(5)]
            assert [e.get("stage", e["ev"]) for e in stages] == [
                "login", "setup", "python", "import", "hello"]
            assert len({e["pid"] for e in stages}) == 1
            process.stdin.write_eof()  # the agent stops by itself
            await asyncio.wait_for(process.wait_closed(), 10)
            assert process.exit_status == 3

    asyncio.run(main())
