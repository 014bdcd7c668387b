"""scale() on the bed: a worker that cannot start is reported, close() stays bounded."""

from __future__ import annotations

import logging
import os
import time

import dask
import pytest
from distributed import Client
from distributed.core import Status

from sshdeploy import compat, testbed
from sshdeploy.cluster import SSHCluster

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(180)


def test_a_worker_failing_to_start_during_scale_is_reported_not_raised(
    bed: testbed.Bed, caplog: pytest.LogCaptureFixture
) -> None:
    lost = bed.host(n3)
    with dask.config.set({"sshdeploy.start-timeout": 5}), SSHCluster(
        [n1, n2, n3], connect_options=bed.connect_options()
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        cluster.scale(0)
        testbed.wait_until(lambda: not cluster.workers, 30, "scale(0)")
        testbed.set_link(lost, False)
        try:
            with caplog.at_level(logging.WARNING):
                cluster.scale(2)
                testbed.wait_until(lambda: f"{n3}-0" not in cluster.worker_spec, 60,
                                   f"the start of {n3}-0 to fail")
        finally:
            testbed.set_link(lost, True)
        client.wait_for_workers(1, timeout=30)
        assert list(cluster.workers) == [f"{n2}-0"]
        row = next(r for r in cluster.host_rows() if n3 in r.host)
        assert f"{n3}-0: failed to start" in row.error, row
        assert f"worker {n3}-0 failed to start" in cluster.get_logs()["Cluster"]
        raised = [r for r in caplog.records if "Exception in callback" in r.getMessage()
                  or (r.name in ("tornado.application", "asyncio") and r.levelno >= logging.ERROR)]
        assert not raised, [r.getMessage() for r in raised]


def test_close_during_a_large_scale_stays_within_the_stop_timeout(bed: testbed.Bed) -> None:
    with dask.config.set({"sshdeploy.stop-timeout": 5}):
        cluster = SSHCluster([n1, n2, n3], connect_options=bed.connect_options(),
                             worker_options={"n_workers": 8, "nthreads": 1})
        try:
            cluster.scale(0)
            testbed.wait_until(lambda: not cluster.workers, 60, "scale(0)")
            cluster.scale(16)
            testbed.wait_until(
                lambda: any(w.status == Status.created for w in compat.created(cluster)), 30,
                "worker starts to be under way")
        finally:
            start = time.monotonic()
            cluster.close()
            took = time.monotonic() - start
    assert took < 5 + 5, f"close() took {took:.1f} s"
