"""scale() and adapt() on an unstarted cluster: caps, bounds, closed clusters (no network)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sshdeploy import SSHCluster
from sshdeploy.errors import ConfigError

pytestmark = pytest.mark.timeout(30)


async def unstarted(**kwargs: Any) -> SSHCluster:
    cluster = SSHCluster(["s", "a", "b"], asynchronous=True, **kwargs)

    async def nothing() -> None:
        return None

    cluster._correct_state = nothing  # type: ignore[method-assign]
    return cluster


def test_scale_never_asks_for_more_than_the_slots_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> tuple[int, int]:
        cluster = await unstarted(worker_options={"n_workers": 2})
        try:
            cluster.scale(1000)
            cluster.scale(1000)  # adapt asks again and again: one warning
            capped = len(cluster.worker_spec)
            cluster.scale(3)
            return capped, len(cluster.worker_spec)
        finally:
            await cluster.close()  # type: ignore[misc]

    with caplog.at_level(logging.WARNING, logger="sshdeploy.cluster"):
        capped, three = asyncio.run(main())
    assert (capped, three) == (4, 3)
    warnings = [r.getMessage() for r in caplog.records if "slots" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "scale(1000) asks for 1000 workers, more than the 4 slots" in warnings[0]


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"minimum": 5, "maximum": 2}, "minimum 5 is above maximum 2"),
    ({"minimum": -1}, "adapt(minimum=...): must be a whole number >= 0, got -1"),
    ({"maximum": "many"}, "adapt(maximum=...)"),
])
def test_adapt_bounds_are_checked(kwargs: dict[str, Any], named: str) -> None:
    async def main() -> None:
        cluster = await unstarted()
        try:
            with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
                cluster.adapt(**kwargs)
        finally:
            await cluster.close()  # type: ignore[misc]

    asyncio.run(main())


def test_scale_and_adapt_on_a_closed_cluster_raise_a_clear_error() -> None:
    async def main() -> None:
        cluster = await unstarted()
        await cluster.close()  # type: ignore[misc]
        with pytest.raises(ConfigError, match=r"scale\(3\): the cluster is closed"):
            cluster.scale(3)
        with pytest.raises(ConfigError, match="the cluster is closed"):
            cluster.adapt(minimum=1, maximum=2)

    asyncio.run(main())
