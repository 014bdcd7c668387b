"""``dask-ssh``'s live start-up status on the real test bed.

Not a terminal (pipes): one plain line per change of a host's state on stderr,
ending in ``ready`` for every host, with no control codes. On a terminal (a
pty): the live table shows while the cluster starts, and the banner follows.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO

import pytest

from sshdeploy import testbed

BANNER = re.compile(r"^\s*scheduler\s+(tcp://\S+)", re.M)
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _argv(bed: testbed.Bed, port: int) -> list[str]:
    hosts = [h.name for h in bed.hosts[:3]]
    return [
        sys.executable, "-m", "sshdeploy.cli",
        "--known-hosts", str(bed.known_hosts),
        "--ssh-private-key", str(bed.client_key),
        "--ssh-username", "root",
        "--scheduler-port", str(port), "--dashboard-address", ":0",
        *hosts,
    ]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    env.pop("COLUMNS", None)
    return env


class _Reader:
    """Collect a stream's text in a thread."""

    def __init__(self, stream: IO[str]) -> None:
        self.parts: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.parts.append(line)

    @property
    def text(self) -> str:
        return "".join(self.parts)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.mark.timeout(150)
def test_plain_state_lines_on_stderr_when_not_a_terminal(
    bed: testbed.Bed, procs: list[subprocess.Popen[str]]
) -> None:
    proc = subprocess.Popen(_argv(bed, 8961), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=_env(NO_COLOR="1"))
    procs.append(proc)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Reader(proc.stdout), _Reader(proc.stderr)
    testbed.wait_until(lambda: bool(BANNER.search(out.text)) or proc.poll() is not None, 90,
                       "the banner")
    assert BANNER.search(out.text), f"no banner:\n{out.text}\n--- stderr:\n{err.text}"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, err.text
    out.thread.join(5)
    err.thread.join(5)
    stderr = err.text
    assert "\x1b" not in stderr and "\x1b" not in out.text, repr(stderr)
    for host in bed.hosts[:3]:
        states = re.findall(rf"^dask-ssh: root@{host.name}(?::\d+)?: (.+) \(\d+\.\d s\)$",
                            stderr, re.M)
        assert len(states) >= 2, f"{host.name}: {states}\n{stderr}"
        assert states[-1].startswith("ready"), f"{host.name}: {states}\n{stderr}"
        assert not any(s.startswith("failed") for s in states), stderr
    # The state lines come before the banner's stop message, none on stdout.
    assert "dask-ssh: root@" not in out.text
    assert stderr.index("ready") < stderr.index("SIGINT received")


@pytest.mark.timeout(150)
def test_live_table_on_a_terminal_then_the_banner(
    bed: testbed.Bed, procs: list[subprocess.Popen[str]]
) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(_argv(bed, 8962), stdout=slave, stderr=slave,
                            stdin=subprocess.DEVNULL, text=True,
                            env=_env(TERM="xterm", COLUMNS="120"))
    procs.append(proc)
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child side has closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def raw() -> str:
        return b"".join(chunks).decode(errors="replace")

    def text() -> str:
        return ANSI.sub("", raw())

    try:
        testbed.wait_until(lambda: bool(BANNER.search(text())) or proc.poll() is not None,
                           90, "the banner")
        seen, seen_raw = text(), raw()
        assert BANNER.search(seen), seen_raw
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, raw()
        reader.join(5)
    finally:
        os.close(master)
    live = seen.find("dask-ssh: starting on 3 hosts")
    assert live >= 0, seen_raw
    banner = BANNER.search(seen)
    assert banner is not None and live < banner.start(), seen_raw
    assert "\x1b[2K" in seen_raw, "the live display erases its lines to redraw"
    # a host state shows in the table before the banner
    assert re.search(r"ready|importing distributed|starting", seen[live:banner.start()])
    assert "dask-ssh: root@" not in seen  # no plain lines on a terminal
