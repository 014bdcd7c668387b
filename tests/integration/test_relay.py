"""The environment's pack goes out of this machine once and the hosts pass it on (issue 29).

The hosts run Debian's bare ``/usr/bin/python3``. With ``environment="sync"``
the controller sends the pack to one host, the others fetch it from a host
that holds it over the bed's network; a copy that does not hash right is
refused and never used; hosts that cannot reach each other get it from here.
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
from sshdeploy.env.prestart import HostPreStart, PreStart
from sshdeploy.env.stageplan import plan_stage
from sshdeploy.env.sync import build_tar, local_pack, pack_sha256
from sshdeploy.hosts import Host
from sshdeploy.settings import Settings
from sshdeploy.ssh.pool import HostPool

pytestmark = pytest.mark.timeout(300)

BARE = "/usr/bin/python3"
n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))
#: What the relay's remote script is called in a process list.
SCRIPT_MARK = "sshdeploy-envremote"


def _bare_minor() -> str | None:
    if not Path(BARE).exists():
        return None
    import subprocess

    out = subprocess.run([BARE, "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


@pytest.fixture
def empty(bed: testbed.Bed) -> Iterator[dict[str, testbed.BedHost]]:
    """n1..n4 with their environment caches emptied, before and after."""
    if _bare_minor() != str(sys.version_info[:2]):
        pytest.skip(f"{BARE} is not Python {sys.version_info[0]}.{sys.version_info[1]}")
    hosts = {h.name: h for h in bed.hosts if h.name in (n1, n2, n3, n4)}
    clean(list(hosts), bed.connect_options(), BARE)
    yield hosts
    clean(list(hosts), bed.connect_options(), BARE)


def _pack() -> tuple[int, str]:
    tar = build_tar(local_pack())
    return tar.stat().st_size, pack_sha256(tar)


def _no_relay_script_left(bed: testbed.Bed) -> None:
    def gone() -> bool:
        return not any(SCRIPT_MARK in cmd for h in bed.hosts for _pid, cmd in testbed.processes(h))

    testbed.wait_until(gone, 15, "the relay's servers to end on every host")


def _stage(bed: testbed.Bed, names: list[str]) -> dict[str, HostPreStart]:
    """The stage alone (no cluster) on *names*, with environment='sync'."""
    async def go() -> dict[str, HostPreStart]:
        plan = plan_stage("sync", None, None, Settings.resolve())
        async with HostPool(connect_options=bed.connect_options()) as pool:
            return await PreStart(plan, pool, [(Host(n), BARE) for n in names]).run()

    return {k.split("@")[1]: v for k, v in asyncio.run(go()).items()}


def test_a_four_host_sync_sends_one_pack_from_here_and_the_hosts_relay_it(
    bed: testbed.Bed, empty: dict[str, testbed.BedHost]
) -> None:
    size, _sha = _pack()
    with SSHCluster([n1, n2, n3, n4], connect_options=bed.connect_options(),
                    remote_python=BARE, environment="sync") as cluster, \
            Client(cluster) as client:
        # the SSH connections' own byte counts: the whole start, agents and all
        sent = sum(cluster.pool.bytes_sent().values())
        _no_relay_script_left(bed)  # the servers ended with the stage
        client.wait_for_workers(3, timeout=60)
        assert client.submit(sum, range(100)).result(timeout=60) == 4950
        ours = __import__("distributed").__version__
        where = client.run(lambda: (__import__("sys").executable,
                                    __import__("distributed").__version__))
        assert len(where) == 3 and set(where.values()) == {(BARE, ours)}
        reports = {h.split("@")[1]: r for h, r in cluster.stage_reports.items()}
    assert size < sent < 1.5 * size, (sent, size)  # one pack, not four
    direct = [n for n, r in reports.items() if not r.env_from]
    assert len(direct) == 1, reports
    for name, r in reports.items():
        assert r.env_cached is False and r.env_bytes == size and not r.env_refused
        if name not in direct:
            assert r.env_from.split("@")[1] in reports  # a host of the cluster


def test_a_corrupted_relay_copy_is_refused_and_the_host_ends_with_a_good_environment(
    bed: testbed.Bed, empty: dict[str, testbed.BedHost]
) -> None:
    size, sha = _pack()
    digest = local_pack().digest
    assert _stage(bed, [n1])[n1].env_bytes == size  # n1 holds the pack now
    kept = testbed.host_path(empty[n1], f"/root/.cache/sshdeploy/packs/{digest}.{sha}.tar.gz")
    data = bytearray(kept.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damaged on n1's disk: same size, same name
    kept.write_bytes(bytes(data))
    with SSHCluster([n1, n2], connect_options=bed.connect_options(), remote_python=BARE,
                    environment="sync") as cluster, Client(cluster) as client:
        reports = {h.split("@")[1]: r for h, r in cluster.stage_reports.items()}
        _no_relay_script_left(bed)
        client.wait_for_workers(1, timeout=60)
        ours = __import__("distributed").__version__
        assert client.submit(lambda: __import__("distributed").__version__).result(60) == ours
    assert reports[n1].env_cached is True
    # n2 fetched n1's copy, refused it, and got the pack from here
    assert len(reports[n2].env_refused) == 1, reports[n2]
    assert reports[n2].env_refused[0].startswith(f"root@{n1}") \
        and "expected" in reports[n2].env_refused[0]
    assert reports[n2].env_from == "" and reports[n2].env_bytes == size
    assert not kept.exists()  # the holder dropped its bad copy
    good = testbed.host_path(empty[n2], f"/root/.cache/sshdeploy/packs/{digest}.{sha}.tar.gz")
    import hashlib

    assert hashlib.sha256(good.read_bytes()).hexdigest() == sha


@pytest.fixture
def cut_off(bed: testbed.Bed, empty: dict[str, testbed.BedHost]) -> Iterator[None]:
    """n1..n3 cannot reach each other; the controller still reaches them all."""
    with testbed.cut_off_from_each_other([empty[n] for n in (n1, n2, n3)]):
        yield


def test_hosts_that_cannot_reach_each_other_get_the_pack_from_here(
    bed: testbed.Bed, cut_off: None
) -> None:
    size, _sha = _pack()
    reports = _stage(bed, [n1, n2, n3])
    _no_relay_script_left(bed)
    assert all(r.env_cached is False and r.env_from == "" and r.env_bytes == size
               for r in reports.values()), reports
    refused = [r for r in reports.values() if r.env_refused]
    assert refused and all("unreachable" in r.env_refused[0] or "Errno" in r.env_refused[0]
                           for r in refused), reports
