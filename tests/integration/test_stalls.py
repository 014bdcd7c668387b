"""A start that stalls before the agent answers: bounded, diagnosed, nothing left behind."""

from __future__ import annotations

import asyncio
import os
import time

import dask
import pytest

from sshdeploy import testbed
from sshdeploy.cluster import SSHCluster
from sshdeploy.errors import MultiHostError, StartError

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(120)

START_TIMEOUT = 10.0


def leftovers(bed: testbed.Bed) -> dict[str, list[str]]:
    """Every process on the bed hosts but their sshd (the setup's shell and sleep included)."""
    found = {}
    for host in bed.hosts:
        cmds = [cmd for _pid, cmd in testbed.processes(host) if "sshd" not in cmd]
        if cmds:
            found[host.name] = cmds
    return found


def wait_clean(bed: testbed.Bed, within: float = 5.0) -> dict[str, list[str]]:
    deadline = time.monotonic() + within
    left = leftovers(bed)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = leftovers(bed)
    return left


def test_a_setup_that_hangs_is_named_and_killed_within_the_bound(bed: testbed.Bed) -> None:
    start = time.monotonic()
    with dask.config.set({"sshdeploy.start-timeout": START_TIMEOUT}):
        with pytest.raises((StartError, MultiHostError)) as info:
            SSHCluster([n1, n2, n3], connect_options=bed.connect_options(),
                       setup="sleep 300")
    took = time.monotonic() - start
    text = str(info.value)
    assert "stalled in the setup command" in text and "sleep 300" in text
    assert took < START_TIMEOUT + 15, f"took {took:.1f} s"  # a loose bound: no timing test
    assert wait_clean(bed) == {}, "the stalled setup (shell, sleep) was left running"


def test_cancelling_a_start_stops_it_at_once_and_leaves_nothing(bed: testbed.Bed) -> None:
    async def main() -> float:
        cluster = SSHCluster([n1, n2], connect_options=bed.connect_options(),
                             setup="sleep 300", asynchronous=True)
        task = asyncio.ensure_future(cluster._start())
        await asyncio.sleep(1.5)  # inside the stalled setup (as a Ctrl-C would come)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await cluster.close()
        return time.monotonic() - t0

    took = asyncio.run(main())
    assert took < 5, f"cancelled start took {took:.1f} s to stop"
    assert wait_clean(bed) == {}
