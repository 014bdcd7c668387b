"""Each host's cores and memory divided among its workers (issue 21): the one rule."""

from __future__ import annotations

import asyncio

import pytest

from sshdeploy.arguments import ClusterArgs
from sshdeploy.hostfile import parse_host_line
from sshdeploy.plan import plan_cluster
from sshdeploy.remote.agent.servers import describe_share, worker_share

GiB = 2**30


def test_by_default_each_worker_gets_its_share_of_cores_and_memory() -> None:
    assert worker_share({}, 2, 8, 16 * GiB) == {"nthreads": 4, "memory_limit": 8 * GiB}
    assert worker_share({"memory_limit": "auto", "nthreads": 0}, 4, 8, 16 * GiB) == {
        "nthreads": 2, "memory_limit": 4 * GiB}


def test_one_worker_gets_the_whole_host() -> None:
    assert worker_share({}, 1, 2, 24 * GiB) == {"nthreads": 2, "memory_limit": 24 * GiB}


def test_explicit_values_win() -> None:
    kw = {"nthreads": 3, "memory_limit": "4GiB", "resources": {"GPU": 1}}
    assert worker_share(kw, 2, 8, 16 * GiB) == kw
    assert worker_share({"nthreads": 3}, 2, 8, 16 * GiB) == {"nthreads": 3,
                                                              "memory_limit": 8 * GiB}
    assert worker_share({"memory_limit": 0}, 2, 8, 16 * GiB) == {"memory_limit": 0,
                                                                 "nthreads": 4}


def test_more_slots_than_cores_gives_one_thread_each_and_memory_still_adds_up() -> None:
    kw = worker_share({}, 3, 2, 24 * GiB)
    assert kw == {"nthreads": 1, "memory_limit": 8 * GiB}
    assert 3 * kw["memory_limit"] <= 24 * GiB


def test_uneven_hosts_each_get_their_own_share() -> None:
    small = worker_share({}, 2, 2, 4 * GiB)
    big = worker_share({}, 2, 64, 256 * GiB)
    assert (small["nthreads"], small["memory_limit"]) == (1, 2 * GiB)
    assert (big["nthreads"], big["memory_limit"]) == (32, 128 * GiB)


def test_hostfile_keys_override_and_slots_set_the_share() -> None:
    hosts = [*parse_host_line("head"), *parse_host_line("n[1-2] slots=3"),
             *parse_host_line("n3 slots=2 nthreads=5 memory-limit=1GiB")]
    plan = plan_cluster(ClusterArgs(hosts, worker_options={"n_workers": 4}))
    slots = {hp.host.hostname: hp.slots for hp in plan.placement.worker_hosts.values()}
    assert slots == {"n1": 3, "n2": 3, "n3": 2}
    n1 = next(hp for hp in plan.placement.worker_hosts.values() if hp.host.hostname == "n1")
    n3 = next(hp for hp in plan.placement.worker_hosts.values() if hp.host.hostname == "n3")
    assert worker_share(n1.template, n1.slots, 6, 12 * GiB) == {"nthreads": 2,
                                                                 "memory_limit": 4 * GiB}
    assert worker_share(n3.template, n3.slots, 6, 12 * GiB)["nthreads"] == 5
    assert worker_share(n3.template, n3.slots, 6, 12 * GiB)["memory_limit"] == "1GiB"


def test_the_dry_run_says_how_the_share_is_computed() -> None:
    plans = plan_cluster(ClusterArgs(["a", "b", "c"],
                                     worker_options={"n_workers": 2})).remote_plans()
    workers = [p for p in plans if p.role == "worker"]
    assert [p.share for p in workers] == [
        "nthreads = the host's cores // 2 (at least 1), memory_limit = the host's memory / 2"
    ] * 2
    assert [p.share for p in plans if p.role == "scheduler"] == [""]
    assert describe_share({"nthreads": 2}, 3) == (
        "nthreads = 2, memory_limit = the host's memory / 3")


@pytest.mark.parametrize("n_workers", [1, 2, 3])
def test_cluster_specs_carry_the_hosts_slots(n_workers: int) -> None:
    from sshdeploy import SSHCluster

    async def main() -> list[int]:
        # Built, never started: nothing connects.
        cluster = SSHCluster(["s", "a", "b"], worker_options={"n_workers": n_workers},
                             asynchronous=True)
        try:
            return [spec["options"]["share"] for spec in cluster.worker_spec.values()]
        finally:
            await cluster.close()  # type: ignore[misc]

    assert asyncio.run(main()) == [n_workers] * 2 * n_workers
