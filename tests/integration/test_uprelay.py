"""Uploads above ``sshdeploy.upload-relay-size`` go out of this machine once and the hosts
pass them on (issue 29), each content checked by its sha256 before a host stores it.

The same plan, driver and holder's server as the environment relay's
(``test_relay.py``): a content that does not hash right is refused, never used, and
the host ends with the right file from this machine.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
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
from sshdeploy.hosts import Host
from sshdeploy.settings import Settings
from sshdeploy.ssh.pool import HostPool

pytestmark = pytest.mark.timeout(300)

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))
#: What the relay's remote script is called in a process list.
SCRIPT_MARK = "sshdeploy-envremote"
#: Above the default sshdeploy.upload-relay-size (4 MiB), small beside a synced environment.
SIZE = 8 << 20


@pytest.fixture
def empty(bed: testbed.Bed) -> Iterator[dict[str, testbed.BedHost]]:
    """n1..n4 with their upload contents emptied, before and after."""
    hosts = {h.name: h for h in bed.hosts if h.name in (n1, n2, n3, n4)}
    clean(list(hosts), bed.connect_options(), envs=False)
    yield hosts
    clean(list(hosts), bed.connect_options(), envs=False)


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    """A package with a large data file of random bytes (contents no earlier run left)."""
    pkg = tmp_path / "src" / "relayedpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "import hashlib, pathlib\n"
        "def digest():\n"
        "    return hashlib.sha256((pathlib.Path(__file__).parent / 'data.bin')"
        ".read_bytes()).hexdigest()\n")
    (pkg / "data.bin").write_bytes(os.urandom(SIZE))
    return pkg


def _digest(pkg: Path) -> str:
    return hashlib.sha256((pkg / "data.bin").read_bytes()).hexdigest()


def _no_relay_script_left(bed: testbed.Bed) -> None:
    def gone() -> bool:
        return not any(SCRIPT_MARK in cmd for h in bed.hosts for _pid, cmd in testbed.processes(h))

    testbed.wait_until(gone, 15, "the relay's servers to end on every host")


def test_a_four_host_start_sends_the_uploads_once_from_here_and_the_hosts_relay_them(
    bed: testbed.Bed, empty: dict[str, testbed.BedHost], pkg: Path
) -> None:
    with SSHCluster([n1, n2, n3, n4], connect_options=bed.connect_options(),
                    upload=[str(pkg)]) as cluster, Client(cluster) as client:
        def _use() -> str:  # here, not at the top: sent by value (no tests package there)
            import relayedpkg

            return str(relayedpkg.digest())

        # the SSH connections' own byte counts: the whole start, agents and all
        sent = sum(cluster.pool.bytes_sent().values())
        _no_relay_script_left(bed)  # the servers ended with the stage
        client.wait_for_workers(3, timeout=60)
        assert set(client.run(_use).values()) == {_digest(pkg)}
        assert len(client.run(_use)) == 3
        assert client.run_on_scheduler(_use) == _digest(pkg)
        reports = {h.split("@")[1]: copy.deepcopy(r) for h, r in cluster.stage_reports.items()}
        # a large change later (cluster.sync_uploads) goes the same way
        before = sum(cluster.pool.bytes_sent().values())
        (pkg / "data.bin").write_bytes(os.urandom(SIZE))
        by_host = cluster.sync_uploads()
        again = sum(cluster.pool.bytes_sent().values()) - before
        _no_relay_script_left(bed)
        assert SIZE < again < 1.5 * SIZE, (again, by_host)
        assert sorted(by_host.values())[:3] == [0, 0, 0] and len(by_host) == 4, by_host

        def fresh() -> str:
            import importlib

            import relayedpkg

            return str(importlib.reload(relayedpkg).digest())

        assert set(client.run(fresh).values()) == {_digest(pkg)}
    size = SIZE + len((pkg / "__init__.py").read_bytes())
    assert size < sent < 1.5 * size, (sent, size)  # once, not four times
    direct = [n for n, r in reports.items() if not r.upload_from]
    assert len(direct) == 1, reports
    for name, r in reports.items():
        assert not r.upload_refused, r
        if name in direct:
            assert size <= r.upload_bytes < size + 20_000 and r.upload_fetched == 0
        else:
            assert r.upload_from.split("@")[1] in reports  # a host of the cluster
            assert r.upload_bytes == 0 and r.upload_fetched == size and r.upload_files == 2


def _stage(bed: testbed.Bed, names: list[str], pkg: Path) -> dict[str, HostPreStart]:
    """The stage alone (no cluster) on *names*, uploading *pkg*; its upload tree removed."""
    async def go() -> dict[str, HostPreStart]:
        plan = plan_stage(None, None, [str(pkg)], Settings.resolve())
        async with HostPool(connect_options=bed.connect_options()) as pool:
            runner = PreStart(plan, pool, [(Host(n), sys.executable) for n in names])
            try:
                return await runner.run()
            finally:
                await runner.remove_uploads()

    return {k.split("@")[1]: v for k, v in asyncio.run(go()).items()}


def test_a_corrupted_relayed_content_is_refused_and_the_host_ends_with_the_right_file(
    bed: testbed.Bed, empty: dict[str, testbed.BedHost], pkg: Path
) -> None:
    digest = _digest(pkg)
    assert _stage(bed, [n1], pkg)[n1].upload_bytes > SIZE  # n1 holds the contents now
    kept = testbed.host_path(empty[n1], f"/root/.cache/sshdeploy/blobs/{digest}")
    data = bytearray(kept.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damaged on n1's disk: same size, same name
    kept.write_bytes(bytes(data))
    with SSHCluster([n1, n2], connect_options=bed.connect_options(),
                    upload=[str(pkg)]) as cluster, Client(cluster) as client:
        def _use() -> str:
            import relayedpkg

            return str(relayedpkg.digest())

        reports = {h.split("@")[1]: r for h, r in cluster.stage_reports.items()}
        _no_relay_script_left(bed)
        client.wait_for_workers(1, timeout=60)
        assert list(client.run(_use).values()) == [digest]  # n2's worker: the right file
    assert reports[n1].upload_bytes < 20_000  # it held them: the manifest alone
    # n2 fetched n1's copy, refused it, and got it from here
    assert len(reports[n2].upload_refused) == 1, reports[n2]
    assert reports[n2].upload_refused[0].startswith(f"root@{n1}") \
        and "expected" in reports[n2].upload_refused[0]
    assert reports[n2].upload_from == "" and reports[n2].upload_bytes > SIZE
    assert not kept.exists()  # the holder dropped its bad copy
    good = testbed.host_path(empty[n2], f"/root/.cache/sshdeploy/blobs/{digest}")
    assert hashlib.sha256(good.read_bytes()).hexdigest() == digest


@pytest.fixture
def cut_off(bed: testbed.Bed, empty: dict[str, testbed.BedHost]) -> Iterator[None]:
    """n1..n3 cannot reach each other; the controller still reaches them all."""
    with testbed.cut_off_from_each_other([empty[n] for n in (n1, n2, n3)]):
        yield


def test_hosts_that_cannot_reach_each_other_get_the_uploads_from_here(
    bed: testbed.Bed, cut_off: None, pkg: Path
) -> None:
    reports = _stage(bed, [n1, n2, n3], pkg)
    _no_relay_script_left(bed)
    assert all(r.upload_from == "" and r.upload_bytes > SIZE for r in reports.values()), reports
    refused = [r for r in reports.values() if r.upload_refused]
    assert refused and all("unreachable" in r.upload_refused[0] or "Errno" in r.upload_refused[0]
                           for r in refused), reports
