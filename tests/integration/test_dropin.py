"""Drop-in for distributed's SSHCluster on the real bed (issue 12).

Covers what distributed's own ``deploy/tests/test_ssh.py`` covers -- hosts
None or empty, a basic cluster, keywords seen remotely, config inherited,
unknown options rejected, per-host connect options and remote Python and
their wrong lengths, ``.remote_python`` -- written for sshdeploy's behaviour
(host keys checked, one entry per worker process in ``cluster.workers``,
scaling supported). Plus the ways downstream test suites use it: inside
distributed's ``loop`` and ``cleanup`` fixtures, and after a config reset.
"""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import pytest
from distributed import Client, utils_test
from distributed.utils_test import cleanup, loop, loop_in_thread  # noqa: F401

from sshdeploy import SSHCluster, testbed
from sshdeploy.errors import AuthenticationError, ConfigError, StartError

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(180)


def ssh_options(bed: testbed.Bed) -> dict[str, Any]:
    """Connect options as a user gives them: the bed's known_hosts and key."""
    return {"known_hosts": str(bed.known_hosts), "client_keys": [str(bed.client_key)],
            "username": "root"}


@pytest.fixture
def saved_dask_config() -> Iterator[None]:
    """Put dask.config back exactly as it was after the test."""
    saved = copy.deepcopy(dask.config.config)
    try:
        yield
    finally:
        dask.config.config.clear()
        dask.config.config.update(saved)


@pytest.fixture
def snapshot_without_sshdeploy(
    saved_dask_config: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make distributed's fixtures restore a config snapshot that lacks sshdeploy's keys.

    distributed.utils_test takes its snapshot when it is first imported; in a
    downstream suite that is often before sshdeploy is imported.
    """
    snapshot = copy.deepcopy(dask.config.config)
    snapshot.pop("sshdeploy", None)
    monkeypatch.setattr(utils_test, "original_config", snapshot)


def test_hosts_none_or_empty_is_a_value_error() -> None:
    no_hosts: list[list[str] | None] = [None, []]
    for hosts in no_hosts:
        with pytest.raises(ValueError, match="at least one host"):
            SSHCluster(hosts=hosts)


def test_basic_cluster_computes(bed: testbed.Bed) -> None:
    async def main() -> None:
        async with SSHCluster(
            [n1, n2, n3],
            connect_options=ssh_options(bed),
            asynchronous=True,
            scheduler_options={"port": 0, "idle_timeout": "60s"},
            worker_options={"death_timeout": "5s"},
        ) as cluster:
            assert sorted(cluster.workers) == [f"{n2}-0", f"{n3}-0"]
            async with Client(cluster, asynchronous=True) as client:
                assert await client.submit(lambda x: x + 1, 10) == 11
            assert cluster._supports_scaling is True
            assert "SSH" in repr(cluster)
            assert cluster.scheduler.remote_python == sys.executable
            assert {w.remote_python for w in cluster.workers.values()} == {sys.executable}

    asyncio.run(main())


def test_scheduler_and_worker_keywords_reach_the_remote_processes(bed: testbed.Bed) -> None:
    with SSHCluster(
        [n1, n2, n3],
        connect_options=ssh_options(bed),
        worker_options={"nprocs": 2, "nthreads": 2, "memory_limit": "2 GiB",
                        "death_timeout": "5s"},
        scheduler_options={"idle_timeout": "10s", "port": 8801, "dashboard_address": ":8802"},
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(4, timeout=60)
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.idle_timeout) == 10
        info = client.scheduler_info(n_workers=-1)
        assert info["address"] == cluster.scheduler_address
        assert cluster.scheduler_address.endswith(":8801")
        assert info["services"]["dashboard"] == 8802
        workers = info["workers"].values()
        # nprocs: worker processes per host (2 hosts x 2).
        assert sorted(w["name"] for w in workers) == [
            f"{n2}-0", f"{n2}-1", f"{n3}-0", f"{n3}-1",
        ]
        assert {w["nthreads"] for w in workers} == {2}
        assert {w["memory_limit"] for w in workers} == {2 * 2**30}
        deaths = client.run(lambda dask_worker: dask_worker.death_timeout)
        assert set(deaths.values()) == {5}


def test_local_config_is_inherited_by_workers(bed: testbed.Bed) -> None:
    def f(x: int) -> int:
        import dask

        return int(dask.config.get("foo")) + x

    async def main() -> None:
        with dask.config.set(foo=100):
            async with SSHCluster(
                [n1, n2], connect_options=ssh_options(bed), asynchronous=True
            ) as cluster, Client(cluster, asynchronous=True) as client:
                assert await client.submit(f, 1) == 101

    asyncio.run(main())


def test_unknown_cluster_keywords_are_an_error_naming_them() -> None:
    # distributed's old keyword names (connect_kwargs, worker_kwargs) never existed here.
    with pytest.raises(ConfigError, match="connect_kwargs"):
        SSHCluster([n1, n2], connect_kwargs={})


def test_unknown_worker_option_is_a_start_error_naming_it(bed: testbed.Bed) -> None:
    with pytest.raises(RuntimeError) as info:
        SSHCluster([n1, n2], connect_options=ssh_options(bed),
                   worker_options={"nthreads": 2, "unimplemented_option": 2})
    err = info.value
    assert isinstance(err, StartError)
    assert err.name == f"{n2}-0" and n2 in err.host
    assert "unimplemented_option" in str(err)
    assert testbed.python_processes(bed) == {}


def test_unknown_scheduler_option_is_a_start_error_naming_it(bed: testbed.Bed) -> None:
    with pytest.raises(RuntimeError) as info:
        SSHCluster([n1, n2], connect_options=ssh_options(bed),
                   scheduler_options={"unimplemented_option": 2})
    err = info.value
    assert isinstance(err, StartError)
    assert err.role == "scheduler" and n1 in err.host
    assert "unimplemented_option" in str(err)


def test_per_host_connect_options_go_to_their_own_host(bed: testbed.Bed, tmp_path: Path) -> None:
    good = ssh_options(bed)
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    wrong = {**good, "client_keys": [str(key)]}
    with pytest.raises(RuntimeError) as info:
        SSHCluster([n1, n2, n3], connect_options=[good, good, wrong])
    err = info.value
    assert isinstance(err, AuthenticationError)
    assert n3 in err.host
    assert n2 not in str(err) and n1 not in err.host


def test_per_host_remote_python(bed: testbed.Bed, tmp_path: Path) -> None:
    # One interpreter path per host: links to this Python, each in its own host's /tmp.
    paths = []
    hosts = {h.name: h for h in bed.hosts}
    tag = uuid.uuid4().hex[:8]
    for name in (n1, n2, n3):
        path = f"/tmp/python-{name}-{tag}"
        testbed.host_path(hosts[name], path).symlink_to(sys.executable)
        paths.append(path)

    async def main() -> None:
        async with SSHCluster(
            [n1, n2, n3],
            connect_options=[ssh_options(bed)] * 3,
            remote_python=paths,
            asynchronous=True,
        ) as cluster, Client(cluster, asynchronous=True) as client:
            assert cluster.scheduler.remote_python == paths[0]
            assert cluster.workers[f"{n2}-0"].remote_python == paths[1]
            assert cluster.workers[f"{n3}-0"].remote_python == paths[2]
            ran = await client.run(
                lambda dask_worker: (dask_worker.name, __import__("sys").executable)
            )
            assert dict(ran.values()) == {f"{n2}-0": paths[1], f"{n3}-0": paths[2]}
            assert await client.run_on_scheduler(lambda: __import__("sys").executable) == paths[0]

    asyncio.run(main())


@pytest.mark.parametrize("setting", ["connect_options", "remote_python"])
def test_wrong_length_per_host_list_is_a_runtime_error(bed: testbed.Bed, setting: str) -> None:
    values = {"connect_options": [ssh_options(bed)] * 4, "remote_python": [sys.executable] * 4}
    kwargs: dict[str, Any] = {"connect_options": ssh_options(bed), setting: values[setting]}

    async def main() -> None:
        async with SSHCluster([n1, n2, n3], asynchronous=True, **kwargs):
            pass

    with pytest.raises(RuntimeError) as info:
        asyncio.run(main())
    assert isinstance(info.value, ConfigError)
    assert info.value.setting == setting
    assert "got 4 for 3 hosts" in str(info.value)
    assert testbed.python_processes(bed) == {}


def test_cluster_inside_distributed_loop_and_cleanup_fixtures(
    bed: testbed.Bed, snapshot_without_sshdeploy: None, cleanup: None, loop: Any  # noqa: F811
) -> None:
    # The loop fixture has reset dask.config to a snapshot without sshdeploy's defaults.
    assert "sshdeploy" not in dask.config.config
    with SSHCluster([n1, n2], connect_options=ssh_options(bed), loop=loop) as cluster:
        with Client(cluster, loop=loop) as client:
            assert client.submit(lambda x: x * 2, 21).result(timeout=30) == 42


def test_cluster_after_config_refresh(bed: testbed.Bed, saved_dask_config: None) -> None:
    dask.config.refresh()
    with SSHCluster([n1, n2], connect_options=ssh_options(bed)) as cluster, \
            Client(cluster) as client:
        assert client.submit(lambda: 3).result(timeout=30) == 3


def test_classic_worker_module_starts_nannies_with_a_warning(bed: testbed.Bed) -> None:
    with pytest.warns(FutureWarning, match="worker_class"):
        cluster = SSHCluster([n1, n2], connect_options=ssh_options(bed),
                             worker_module="distributed.cli.dask_worker")
    with cluster, Client(cluster) as client:
        workers = client.scheduler_info()["workers"].values()
        assert [w["name"] for w in workers] == [f"{n2}-0"]
        assert all(w["nanny"] for w in workers), "the classic worker module means a Nanny"
