"""A cache directory that several hosts share (an NFS home) gets the environment once (issue 18).

Two bed hosts are given one ``~/.cache`` (one directory bind-mounted over it
in both hosts' mount namespaces, undone afterwards); the third keeps its own.
A start with ``environment="sync"`` sends and unpacks the environment once for
the two, and starts sharing that cache at the same moment leave one complete
environment and nothing half-done.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from sshdeploy import SSHCluster, testbed
from sshdeploy.env.clean import clean
from sshdeploy.remote.envremote import DONE

pytestmark = pytest.mark.timeout(300)

BARE = "/usr/bin/python3"
n1, n2, n3 = testbed.host_names(3, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))


def _bare_minor() -> str | None:
    if not Path(BARE).exists():
        return None
    import subprocess

    out = subprocess.run([BARE, "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


@pytest.fixture
def shared(bed: testbed.Bed) -> Iterator[Path]:
    """n2 and n3 share one ~/.cache (fresh and empty); n1's own cache is emptied."""
    if _bare_minor() != str(sys.version_info[:2]):
        pytest.skip(f"{BARE} is not Python {sys.version_info[0]}.{sys.version_info[1]}")
    clean([n1], bed.connect_options(), BARE)
    pair = [h for h in bed.hosts if h.name in (n2, n3)]
    with testbed.shared_directory(pair, "/root/.cache") as directory:
        yield directory
    clean([n1], bed.connect_options(), BARE)


def _envs(directory: Path) -> list[str]:
    return sorted(p.name for p in (directory / "sshdeploy" / "envs").iterdir())


def test_hosts_sharing_a_cache_are_sent_and_unpack_the_environment_once(
    bed: testbed.Bed, shared: Path
) -> None:
    with SSHCluster([n1, n2, n3], connect_options=bed.connect_options(), remote_python=BARE,
                    environment="sync") as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        assert client.submit(sum, range(100)).result(timeout=60) == 4950
        reports = {h.split("@")[1]: r for h, r in cluster.stage_reports.items()}
        digest = cluster.cluster_plan.stage.env.digest  # type: ignore[union-attr]
    assert reports[n1].env_bytes > 1_000_000 and not reports[n1].shared_with  # its own cache
    sent, other = sorted((reports[n2], reports[n3]), key=lambda r: -r.env_bytes)
    assert sent.env_bytes == reports[n1].env_bytes and sent.env_cached is False
    assert other.env_bytes == 0 and other.env_cached is True and other.shared_with == sent.host
    # one environment, complete, in the one directory both hosts use
    assert _envs(shared) == [digest]
    assert (shared / "sshdeploy" / "envs" / digest / DONE).exists()


def test_starts_sharing_a_cache_at_once_leave_one_complete_environment(
    bed: testbed.Bed, shared: Path
) -> None:
    opts = bed.connect_options()

    async def both() -> list[tuple[int, list[str]]]:
        # Both probe an empty cache at once, so both send and unpack (seen on this
        # bed: 25 MB each); the second rename loses and its copy is removed.
        clusters = [SSHCluster(hosts, connect_options=opts, remote_python=BARE,
                               environment="sync", asynchronous=True)
                    for hosts in ([n2, n3], [n3, n2])]
        try:
            await asyncio.gather(*clusters)
            out = []
            for cluster in clusters:
                async with Client(cluster, asynchronous=True) as client:
                    await client.wait_for_workers(1, timeout=60)
                    shares = [r.shared_with for r in cluster.stage_reports.values()]
                    out.append((await client.submit(sum, range(10)), sorted(shares)))
            return out
        finally:
            await asyncio.gather(*(c.close() for c in clusters), return_exceptions=True)

    results = asyncio.run(both())
    assert [total for total, _ in results] == [45, 45]
    # each start sent to one host of the two, never to both
    assert all(shares[0] == "" and shares[1] for _, shares in results), results
    envs = _envs(shared)
    assert len(envs) == 1 and not envs[0].startswith("."), envs  # no half-unpacked leftover
    assert (shared / "sshdeploy" / "envs" / envs[0] / DONE).exists()
