"""Integration fixtures: after every test, no Python/Dask process is left on any bed host."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from sshdeploy import testbed

LEFTOVER_DEADLINE = 10.0
_WATCHED = ("python", "dask", "distributed")


def _leftovers(bed: testbed.Bed) -> list[tuple[testbed.BedHost, int, str]]:
    found = []
    for host in bed.hosts:
        for pid, cmd in testbed.processes(host):
            if any(word in cmd.lower() for word in _WATCHED):
                found.append((host, pid, cmd))
    return found


def _kill(found: list[tuple[testbed.BedHost, int, str]]) -> None:
    for _host, pid, _cmd in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(autouse=True)
def no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the test, poll (10 s deadline) until no bed host runs Python/Dask; else fail.

    Checks the session ``bed`` if the test used it, else the default bed if it
    is up. Whatever is left is named (host, pid, cmdline) and then killed so
    the next test starts clean.
    """
    yield
    if "bed" in request.fixturenames:
        bed: testbed.Bed | None = request.getfixturevalue("bed")
    else:
        bed = testbed.status()
    if bed is None:
        return
    deadline = time.monotonic() + LEFTOVER_DEADLINE
    found = _leftovers(bed)
    while found and time.monotonic() < deadline:
        time.sleep(0.05)
        found = _leftovers(bed)
    if found:
        _kill(found)
        lines = "\n".join(f"  {h.name} ({h.address}): pid {pid}: {cmd}" for h, pid, cmd in found)
        pytest.fail(
            f"process(es) left on bed hosts {LEFTOVER_DEADLINE:.0f} s after the test "
            f"(now killed):\n{lines}",
            pytrace=False,
        )
