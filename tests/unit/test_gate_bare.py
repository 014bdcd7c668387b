"""The gate and a host whose Python has no distributed: its Python and platform still count."""

from __future__ import annotations

from typing import Any

import pytest

from sshdeploy.env.gate import local_description
from sshdeploy.env.prestart import PreStart
from sshdeploy.env.stageplan import plan_stage
from sshdeploy.hostfile import parse_host
from sshdeploy.settings import Settings

pytestmark = pytest.mark.timeout(30)


class _Pool:
    """What the comparison asks of the pool: how a host was reached."""

    def as_connected(self, host: Any) -> str:
        return f"root@{host.hostname}"


def _stage() -> PreStart:
    plan = plan_stage(None, None, None, Settings.resolve())
    return PreStart(plan, _Pool(), [])  # type: ignore[arg-type]


def test_a_bare_host_of_another_minor_python_differs_before_anything_starts() -> None:
    stage = _stage()
    ours = local_description(stage.plan.packages)
    major, minor = ours["version"].split(".")[:2]
    other = f"{major}.{int(minor) - 1}.9"
    bare = dict(ours, version=other, packages={})   # another minor, no dask, no distributed
    rows = stage.differences([(parse_host("node2"), "python3", bare)])
    assert [(r.host, r.package) for r in rows] == [("root@node2", "python")]


def test_a_bare_host_of_the_same_python_is_left_to_the_start() -> None:
    stage = _stage()
    ours = local_description(stage.plan.packages)
    bare = dict(ours, packages={})
    # the start says "distributed is not importable" (RemoteImportError), naming the remedy
    assert stage.differences([(parse_host("node2"), "python3", bare)]) == []
