"""The version gate and the GPU stack (issue 28 must-hold 5): cupy, cudf, rmm, dask-cuda are
compared where installed, here or on any host, as the gate's other packages are."""

from __future__ import annotations

from typing import Any

import pytest

from sshdeploy.env.gate import (
    GPU_STACK,
    GPU_STACK_DISTRIBUTIONS,
    compare_gpu_stack,
    gpu_stack,
    local_description,
)
from sshdeploy.env.prestart import PreStart
from sshdeploy.env.stageplan import plan_stage
from sshdeploy.hostfile import parse_host
from sshdeploy.settings import Settings

pytestmark = pytest.mark.timeout(30)


class _Pool:
    def as_connected(self, host: Any) -> str:
        return f"root@{host.hostname}"


def _with(ours: dict[str, Any], **packages: str) -> dict[str, Any]:
    return dict(ours, packages={**ours["packages"], **{k.replace("_", "-"): v
                                                       for k, v in packages.items()}})


def test_the_gpu_stack_is_its_own_constant_with_the_cuda_suffixed_wheels() -> None:
    assert list(GPU_STACK) == ["cupy", "cudf", "rmm", "dask-cuda"]
    assert {"cupy-cuda12x", "cudf-cu12", "rmm-cu12", "dask-cuda"} <= set(GPU_STACK_DISTRIBUTIONS)
    assert gpu_stack({"cudf-cu12": "25.8.0", "rmm": "25.8.0"}) == {
        "cudf": "25.8.0 (cudf-cu12)", "rmm": "25.8.0"}


def test_installed_here_every_host_must_have_the_same_version() -> None:
    here = {"packages": {"dask-cuda": "25.08.0"}}
    rows = compare_gpu_stack(here, {"a": {"packages": {"dask-cuda": "25.08.0"}},
                                    "b": {"packages": {"dask-cuda": "25.06.0"}},
                                    "c": {"packages": {}}})
    assert [(r.host, r.package, r.theirs, r.ours) for r in rows] == [
        ("b", "dask-cuda", "25.06.0", "25.08.0"), ("c", "dask-cuda", "-", "25.08.0")]


def test_not_installed_here_the_hosts_that_have_it_must_agree_and_a_cpu_host_is_fine() -> None:
    hosts = {"gpu1": {"packages": {"cupy-cuda12x": "13.3.0"}},
             "gpu2": {"packages": {"cupy-cuda12x": "13.3.0"}},
             "gpu3": {"packages": {"cupy-cuda11x": "13.3.0"}},  # another CUDA build
             "cpu1": {"packages": {}}}
    rows = compare_gpu_stack({"packages": {}}, hosts)
    assert [(r.host, r.theirs, r.ours) for r in rows] == [
        ("gpu3", "13.3.0 (cupy-cuda11x)", "- (hosts: 13.3.0 (cupy-cuda12x))")]
    assert compare_gpu_stack({"packages": {}}, {"cpu1": {"packages": {}}}) == []


def test_the_stage_asks_every_host_for_the_gpu_stack_and_puts_its_rows_in_the_table() -> None:
    stage = PreStart(plan_stage(None, None, None, Settings.resolve()), _Pool(), [])  # type: ignore[arg-type]
    ours = local_description(stage.plan.packages)
    assert not gpu_stack(ours["packages"]), "this machine has a GPU stack: the test assumes none"
    rows = stage.differences([
        (parse_host("n3"), "python3", _with(ours, rmm_cu12="25.8.0", dask_cuda="25.08.0")),
        (parse_host("n4"), "python3", _with(ours, rmm_cu12="25.6.0", dask_cuda="25.08.0")),
        (parse_host("n5"), "python3", _with(ours, rmm_cu12="25.8.0")),
        (parse_host("n2"), "python3", ours)])
    assert [(r.host, r.package, r.theirs) for r in rows] == [
        ("root@n4", "rmm", "25.6.0 (rmm-cu12)")]
