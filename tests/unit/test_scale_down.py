"""Which workers ``SSHCluster.scale(n)`` removes, and that it stays fast with thousands.

``kept_on_scale_down`` reads only the placement's slots and the worker specs, so it
runs here on plain objects: against the simple rule it implements (remove from the
host with the most workers per slot, the first such host in order, its
highest name first), and on 3000 one-worker hosts (scaling them all down was
quadratic: 20 s when a 3000-host start failed and was closed).
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from sshdeploy.hosts import Host
from sshdeploy.placement import kept_on_scale_down, name_order

pytestmark = pytest.mark.timeout(30)


def fake_cluster(slots: dict[str, int], workers: dict[str, int]) -> Any:
    hosts = {Host(h).key: SimpleNamespace(slots=s) for h, s in slots.items()}
    spec = {f"{h}-{i}": {"options": {"host": Host(h)}}
            for h, count in workers.items() for i in range(count)}
    names = list(spec)
    random.Random(len(names)).shuffle(names)  # spec order is not name order
    plan = SimpleNamespace(placement=SimpleNamespace(worker_hosts=hosts))
    return SimpleNamespace(_cluster_plan=plan, worker_spec={n: spec[n] for n in names})


def keep(cluster: Any, n: int) -> dict[str, Any]:
    return kept_on_scale_down(cluster.worker_spec, cluster._cluster_plan.placement.worker_hosts,
                              n)


def keep_by_the_rule(cluster: Any, n: int) -> dict[str, Any]:
    hosts = cluster._cluster_plan.placement.worker_hosts
    keep = dict(cluster.worker_spec)
    while len(keep) > n:
        by_host: dict[Any, list[str]] = {}
        for name, spec in keep.items():
            by_host.setdefault(spec["options"]["host"].key, []).append(name)
        key = max(by_host, key=lambda k: len(by_host[k]) / max(1, hosts[k].slots))
        keep.pop(max(by_host[key], key=name_order))
    return keep


@pytest.mark.parametrize("seed", range(20))
def test_scale_down_removes_what_the_rule_says(seed: int) -> None:
    rng = random.Random(seed)
    names = [f"h{i}" for i in range(rng.randint(1, 8))]
    slots = {h: rng.randint(0, 4) for h in names}
    workers = {h: rng.randint(0, 12) for h in names}
    cluster = fake_cluster(slots, workers)
    for n in range(len(cluster.worker_spec) + 1):
        got = keep(cluster, n)
        assert list(got) == list(keep_by_the_rule(cluster, n)), (slots, workers, n)


@pytest.mark.timeout(10)  # the quadratic version took ~20 s here
def test_scaling_3000_hosts_down_is_fast() -> None:
    cluster = fake_cluster({f"n{i}": 1 for i in range(3000)}, {f"n{i}": 1 for i in range(3000)})
    assert keep(cluster, 0) == {}
    assert len(keep(cluster, 10)) == 10
