"""GPU hosts (issue 28): dask-cuda when present, not required; a scale beyond the GPUs refused.

dask-cuda cannot be installed here (no CUDA), so the agent's wiring is tested against
``tests/fakes/dask_cuda``: a standard-library package with dask-cuda 26.08's names and
signatures that records what it is given (the bed test puts it on the hosts).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sshdeploy import SSHCluster
from sshdeploy.arguments import ClusterArgs
from sshdeploy.cluster import scaling
from sshdeploy.compat import adapting
from sshdeploy.errors import ConfigError, GPUError, ScaleError
from sshdeploy.gpus import Gpu, GpuChoice, Inventory, choose, place_gpus
from sshdeploy.placement import place
from sshdeploy.plan import plan_cluster
from sshdeploy.remote.agent.servers import with_dask_cuda

pytestmark = pytest.mark.timeout(60)

FAKES = Path(__file__).resolve().parents[1] / "fakes"
CUDA = {"rmm_pool_size": "10GB", "device_memory_limit": "20GB", "enable_cudf_spill": True}


def _placed(**wopts: Any) -> Any:
    p = place(["s", "a", "b"], {"n_workers": 2, **wopts}, gpus="auto", cpu_workers=1)
    a, b = p.worker_hosts
    invs = {a: Inventory("a", "nvml", (Gpu(0, "GPU-a0"), Gpu(1, "GPU-a1")), cores=8),
            b: Inventory("b", tried=("NVML: not found",))}
    return place_gpus(p, {k: choose("auto", inv, 0.1, False) for k, inv in invs.items()})


# --------------------------------------------------------------------------- the plan


def test_dask_cuda_options_go_to_each_gpu_worker_and_to_no_other_worker() -> None:
    q = _placed(**CUDA, nthreads=2)
    kw = {w.name: w.kwargs for w in q.workers}
    assert kw["a-gpu1"]["dask_cuda"] == {"device_index": 1, **CUDA}
    assert kw["a-gpu1"]["nthreads"] == 2
    for name in ("a-0", "b-0", "b-1"):  # CPU-only, and a host without GPU
        assert not set(kw[name]) & {"dask_cuda", *CUDA}, kw[name]
    assert all(not set(hp.template) & set(CUDA) for hp in q.worker_hosts.values())


def test_dask_cuda_options_without_gpus_are_refused_unless_the_class_is_dask_cudas() -> None:
    with pytest.raises(ConfigError) as info:
        plan_cluster(ClusterArgs(["s", "a"], worker_options={"rmm_pool_size": "1GB"}))
    assert str(info.value).startswith("worker_options['rmm_pool_size']: is an option of "
                                      "dask-cuda's GPU workers, and no host is asked for GPUs")


def test_worker_class_cuda_worker_keeps_working_with_a_note_that_gpus_is_simpler() -> None:
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        plan = plan_cluster(ClusterArgs(["s", "a"], worker_class="dask_cuda.CUDAWorker",
                                        worker_options={"rmm_pool_size": "1GB"}))
    assert plan.worker_class == "dask_cuda.CUDAWorker"
    hp = next(iter(plan.placement.worker_hosts.values()))
    assert plan.worker_options(hp)["rmm_pool_size"] == "1GB"  # CUDAWorker's own keyword
    assert any("gpus='auto' is the simpler way" in str(w.message) for w in said), said


def test_options_for_a_gpu_host_without_dask_cuda_fail_the_start_naming_it() -> None:
    inv = Inventory("root@a:22", "nvml", (Gpu(0, "GPU-a0"),))
    with pytest.raises(GPUError) as info:
        GpuChoice(inv, "auto", inv.gpus).check_dask_cuda({"rmm_pool_size": "1GB"})
    assert str(info.value).startswith(
        "[root@a:22] gpus: dask-cuda's options rmm_pool_size are given, but dask-cuda is not "
        "installed there"), info.value
    assert "Install dask-cuda in the workers' environment on that host" in str(info.value)
    with_it = Inventory("root@a:22", "nvml", (Gpu(0, "GPU-a0"),), dask_cuda="25.08.0")
    GpuChoice(with_it, "auto", with_it.gpus).check_dask_cuda({"rmm_pool_size": "1GB"})
    assert "dask-cuda 25.08.0 there: its plugins and spilling" in GpuChoice(
        with_it, "auto", with_it.gpus).say("a")


# --------------------------------------------------------------------------- the agent


def _forget_dask_cuda() -> None:
    for name in [m for m in sys.modules if m == "dask_cuda" or m.startswith("dask_cuda.")]:
        del sys.modules[name]


@pytest.fixture
def fake_dask_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _forget_dask_cuda()
    monkeypatch.syspath_prepend(str(FAKES))
    yield
    _forget_dask_cuda()


def test_the_agent_sets_a_gpu_worker_up_with_dask_cudas_plugins_and_spilling(
        fake_dask_cuda: None) -> None:
    kw = {"nthreads": 1, "memory_limit": 2**30, "preload": ["/tmp/tagger.py"],
          "env": {"CUDA_VISIBLE_DEVICES": "GPU-a1"}}
    out = with_dask_cuda(kw, {"device_index": 1, **CUDA, "pre_import": ["numpy"]})
    plugins = {type(p).__name__: p.args for p in out["plugins"]}
    assert plugins == {
        "CPUAffinity": {"cores": [1]},
        "RMMSetup": {"initial_pool_size": "10GB", "maximum_pool_size": None,
                     "managed_memory": False, "async_alloc": False, "release_threshold": None,
                     "log_directory": None, "track_allocations": False,
                     "external_lib_list": None},
        "PreImport": {"libraries": ["numpy"]},
        "CUDFSetup": {"spill": True, "spill_stats": 0}}
    cls, args = out["data"]
    assert cls.__name__ == "DeviceHostFile"
    assert args == {"device_memory_limit": "20GB@gpu1", "memory_limit": 2**30}
    assert out["preload"] == ["/tmp/tagger.py", "dask_cuda.initialize"]
    assert out["preload_argv"] == [[], ["--create-cuda-context"]]
    assert out["env"] == kw["env"] and "dask_cuda" not in out


def test_without_options_dask_cuda_still_sets_up_the_worker_as_its_cuda_worker_would(
        fake_dask_cuda: None) -> None:
    out = with_dask_cuda({"memory_limit": "4GiB", "nthreads": 1}, {"device_index": 0})
    assert {type(p).__name__ for p in out["plugins"]} == {
        "CPUAffinity", "RMMSetup", "PreImport", "CUDFSetup"}
    assert out["data"][1] == {"device_memory_limit": "default@gpu0", "memory_limit": 4 * 2**30}


def test_an_option_this_dask_cuda_no_longer_takes_is_an_error(fake_dask_cuda: None) -> None:
    with pytest.raises(RuntimeError, match="jit_unspill is not taken by the dask-cuda"):
        with_dask_cuda({}, {"device_index": 0, "jit_unspill": True})


def test_without_dask_cuda_a_gpu_worker_is_a_plain_nanny_and_options_are_an_error() -> None:
    assert "dask_cuda" not in sys.modules
    kw = {"nthreads": 1}
    assert with_dask_cuda(kw, {"device_index": 0}) is kw
    with pytest.raises(RuntimeError) as info:
        with_dask_cuda(kw, {"device_index": 0, "rmm_pool_size": "1GB"})
    assert str(info.value).startswith("dask-cuda's options rmm_pool_size are given, but "
                                      "dask-cuda is not installed here")


# --------------------------------------------------------------------------- scale


def test_a_scale_beyond_the_gpu_slots_is_refused_with_the_arithmetic_and_adapt_capped() -> None:
    q = _placed()
    assert scaling.slots(q) == 5  # a: 2 GPUs + 1 CPU-only, b: 2
    with pytest.raises(ScaleError) as info:
        scaling.check_gpu_room(6, None, None, 6, q, adapting=False)
    assert str(info.value) == (
        "scale(6): asks for 6 workers, more than the 5 slots of the hosts (a: 2 GPUs + 1 "
        "CPU-only, b: 2; one worker per GPU: 3 + 2 = 5). Scale to at most 5 (a GPU host takes "
        "no more workers than its GPUs and cpu_workers), or start the cluster with more GPU "
        "hosts; adapt() is capped at the slots.")
    assert (info.value.wanted, info.value.slots) == (6, 5)
    assert isinstance(info.value, ConfigError)
    scaling.check_gpu_room(5, None, None, 5, q, adapting=False)
    scaling.check_gpu_room(9, None, None, 9, q, adapting=True)  # capped by room_for
    cpu_only = place(["s", "a"])  # without GPU hosts: capped, as before
    scaling.check_gpu_room(9, None, None, 9, cpu_only, adapting=False)


def test_a_scale_is_adapts_only_while_its_adaptive_scales() -> None:
    assert not adapting(SimpleNamespace(_adaptive=None))  # type: ignore[arg-type]
    assert adapting(SimpleNamespace(_adaptive=SimpleNamespace(_adapting=True)))  # type: ignore[arg-type]
    assert not adapting(SimpleNamespace(_adaptive=SimpleNamespace(_adapting=False)))  # type: ignore[arg-type]


def test_the_dry_run_shows_the_dask_cuda_options_of_the_gpu_hosts() -> None:
    _, a = SSHCluster.remote_commands(["s", "a"], gpus="auto",
                                      worker_options={"rmm_pool_size": "1GB"})
    assert "dask-cuda options rmm_pool_size='1GB'" in a.gpus, a.gpus


# --------------------------------------------------------------------------- named clusters


def test_a_named_clusters_record_keeps_each_gpu_workers_pin_for_a_later_controller() -> None:
    import json

    from sshdeploy.gpus import record_slots, restore_slots
    from sshdeploy.placement import next_worker, slot_kwargs

    q = _placed(**CUDA)
    kept = json.loads(json.dumps(record_slots(q)))  # as the record's JSON keeps it
    assert list(kept) == ["a"]  # only the GPU hosts
    p = place(["s", "a", "b"], {"n_workers": 2, **CUDA}, gpus="auto", cpu_workers=1)
    again = restore_slots(p, kept)  # planned again from the record, as from_name does
    a, b = again.worker_hosts.values()
    assert a.slots == 3 and [s.name for s in a.gpu_slots] == ["a-gpu0", "a-gpu1"]
    assert slot_kwargs(a, "a-gpu1")["env"] == {"CUDA_VISIBLE_DEVICES": "GPU-a1"}
    assert slot_kwargs(a, "a-gpu1")["dask_cuda"] == {"device_index": 1, **CUDA}
    running = [(a.host, "a-gpu0"), (a.host, "a-0"), (b.host, "b-0"), (b.host, "b-1")]
    assert next_worker(again, running)[1] == "a-gpu1"  # a scale back takes the free GPU
    assert restore_slots(p, None) is p


def test_check_shows_each_gpu_hosts_dask_cuda() -> None:
    import io

    from sshdeploy.cli.console import make_console
    from sshdeploy.cli.report import print_gpus

    inv = Inventory("root@a:22", "nvml", (Gpu(0, "GPU-a0", "T4"),), dask_cuda="25.08.0")
    buf = io.StringIO()
    print_gpus(make_console(buf), [SimpleNamespace(host="root@a:22",
                                                   gpus=choose("auto", inv, 0.1))])
    assert "root@a:22  1 GPU (nvml) -> a-gpu0  (dask-cuda 25.08.0)" in buf.getvalue()


def test_a_dask_cuda_before_25_08_is_said_and_its_options_refused(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    from sshdeploy.remote.gpus import dask_cuda_version

    old = tmp_path / "dask_cuda"
    old.mkdir()
    (old / "__init__.py").write_text("")
    (tmp_path / "dask_cuda-24.12.0.dist-info").mkdir()
    (tmp_path / "dask_cuda-24.12.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: dask-cuda\nVersion: 24.12.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert dask_cuda_version() == "24.12.0 (old)"
    monkeypatch.syspath_prepend(str(FAKES))
    assert dask_cuda_version() == "99.0.0"
    inv = Inventory("root@a:22", "nvml", (Gpu(0, "GPU-a0"),), dask_cuda="24.12.0 (old)")
    choice = GpuChoice(inv, "auto", inv.gpus)
    assert "dask-cuda 24.12.0 (old) there: before 25.08, not used" in choice.say("a")
    with pytest.raises(GPUError, match=r"dask-cuda there is 24.12.0 \(old\), before 25.08"):
        choice.check_dask_cuda({"rmm_pool_size": "1GB"})
