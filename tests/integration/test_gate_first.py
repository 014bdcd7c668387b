"""A version mismatch fails the start before any scheduler exists (issue 18).

The gate runs while the scheduler's agent starts and imports distributed; the
agent is asked to create the scheduler only once the gate has passed on every
host. The scheduler class here (importable on the scheduler's host only)
leaves a file on that host when it is created: on a mismatch there is none,
although the agent did start; with ``sshdeploy.version-check: warn`` there is.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import dask
import pytest

from sshdeploy import SSHCluster, testbed
from sshdeploy.cluster.processes import RemoteScheduler
from sshdeploy.errors import EnvironmentMismatchError

pytestmark = pytest.mark.timeout(300)

n1, n2 = testbed.host_names(2, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

MARKED = '''
import os
from distributed import Scheduler

class MarkedScheduler(Scheduler):
    def __init__(self, *args, **kwargs):
        open(os.path.join(os.path.dirname(__file__), f"created-{os.getpid()}"), "w").close()
        super().__init__(*args, **kwargs)
'''


@dataclass
class Hosts:
    setup: str
    scheduler_dir: testbed.BedHost
    path: str

    def created(self) -> list[str]:
        """The marker files the scheduler class left on the scheduler's host."""
        where = testbed.host_path(self.scheduler_dir, self.path)
        return sorted(p.name for p in where.iterdir() if p.name.startswith("created-"))


@pytest.fixture
def hosts(bed: testbed.Bed) -> Iterator[Hosts]:
    """n1 (the scheduler) can import the marking scheduler; n2 reports cloudpickle 0.0.1.

    Both in the hosts' own /tmp, under one path that the setup puts on PYTHONPATH.
    """
    path = f"/tmp/gatefirst-{uuid.uuid4().hex[:8]}"
    first, second = (next(h for h in bed.hosts if h.name == n) for n in (n1, n2))
    on_first = testbed.host_path(first, path)
    on_first.mkdir(parents=True)
    (on_first / "gate_marker.py").write_text(MARKED)
    info = testbed.host_path(second, path) / "cloudpickle-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cloudpickle\nVersion: 0.0.1\n")
    yield Hosts(setup=f"export PYTHONPATH={path}", scheduler_dir=first, path=path)
    for host in (first, second):
        shutil.rmtree(testbed.host_path(host, path), ignore_errors=True)


def _start(bed: testbed.Bed, hosts: Hosts) -> SSHCluster:
    return SSHCluster([n1, n2], connect_options=bed.connect_options(), setup=hosts.setup,
                      scheduler_class="gate_marker.MarkedScheduler", asynchronous=True)


def test_a_mismatch_fails_the_start_before_the_scheduler_is_created(
    bed: testbed.Bed, hosts: Hosts
) -> None:
    async def fail() -> tuple[SSHCluster, EnvironmentMismatchError]:
        cluster = _start(bed, hosts)
        with pytest.raises(EnvironmentMismatchError) as info:
            await cluster
        return cluster, info.value

    cluster, error = asyncio.run(fail())
    assert error.hosts == [f"root@{n2}"] and "cloudpickle" in error.table
    scheduler = cluster.scheduler
    assert isinstance(scheduler, RemoteScheduler)
    # Its agent did start and import distributed, beside the gate...
    assert scheduler.channel.hello.get("versions", {}).get("distributed")
    # ...but was never asked to create the scheduler.
    assert hosts.created() == []
    assert scheduler.address is None

    # The same start, told to go on: the scheduler class does leave its mark.
    async def warn() -> str | None:
        with dask.config.set({"sshdeploy.version-check": "warn"}):
            async with _start(bed, hosts) as cluster:
                return cluster.scheduler_address

    assert asyncio.run(warn())
    assert len(hosts.created()) == 1


def test_a_host_added_later_is_gated_on_its_agents_words_and_refused_whole(
    bed: testbed.Bed, hosts: Hosts
) -> None:
    """Issue 29's leftover: a host after the start gets no probe of its own; its agent's
    first words are compared, and on a mismatch it is named, its agent ended, and the
    cluster runs on with the hosts it had."""
    n3 = testbed.host_names(3, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))[2]
    with SSHCluster([n1, n3], connect_options=bed.connect_options(),
                    setup=hosts.setup) as cluster:
        with pytest.raises(EnvironmentMismatchError) as info:
            cluster.add_hosts([n2])  # n2 says cloudpickle 0.0.1
        assert info.value.hosts == [f"root@{n2}"] and "cloudpickle" in info.value.table
        assert testbed.python_processes(bed).get(n2, []) == []  # its agent is gone
        assert {hp.host.hostname for hp in cluster.placement.worker_hosts.values()} == {n3}
        assert [w["name"] for w in cluster.scheduler_info["workers"].values()] == [f"{n3}-0"]
