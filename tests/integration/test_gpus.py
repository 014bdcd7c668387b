"""GPU hosts on the bed (issue 28), with fakes: there is no GPU here.

Host 2 has no GPU at all; host 3 the fake ``nvidia-smi`` of ``tests/fakes``
with 2 GPUs, GPU 1 running a process that is not visible on the host (another
user's, for ``gpus="free"``); host 4 the fake ``libnvidia-ml.so.1`` (built
here with gcc) with 4 GPUs. Each host's fakes and inventory are in its own
``/tmp/fakegpu``, put on its PATH and library path by the cluster's setup, so
the real probe runs on each host through its real code paths (NVML through
ctypes, nvidia-smi, neither) and the workers start as on GPU hosts.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from distributed import Client

from sshdeploy import GPUError, Host, ScaleError, SSHCluster, testbed
from sshdeploy.cli import main

pytestmark = pytest.mark.timeout(300)

BED = os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME)
n1, n2, n3, n4 = testbed.host_names(4, BED)
FAKES = Path(__file__).resolve().parents[1] / "fakes"
SETUP = "export PATH=/tmp/fakegpu:$PATH LD_LIBRARY_PATH=/tmp/fakegpu"
#: A pid no process has (above the kernel's default pid_max): a process of another container.
OTHERS = 4194999
N3 = [f"GPU-3{i}{'0' * 7}-0000-0000-0000-00000000000{i}" for i in range(2)]
N4 = [f"GPU-4{i}{'0' * 7}-0000-0000-0000-00000000000{i}" for i in range(4)]


@pytest.fixture(scope="module")
def fakes(bed: testbed.Bed) -> Iterator[dict[str, Path]]:
    """Each host's /tmp/fakegpu: nvidia-smi on host 3, libnvidia-ml.so.1 on host 4."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler here to build the fake libnvidia-ml.so.1")
    dirs = {h.name: testbed.host_path(h, "/tmp/fakegpu") for h in bed.hosts
            if h.name in (n3, n4)}
    for d in dirs.values():
        d.mkdir(exist_ok=True)
    shutil.copy(FAKES / "nvidia-smi", dirs[n3] / "nvidia-smi")
    (dirs[n3] / "gpus.txt").write_text(f"{N3[0]},Tesla T4,15360,3\n"
                                       f"{N3[1]},Tesla T4,15360,9000,{OTHERS}:8990\n")
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(dirs[n4] / "libnvidia-ml.so.1"),
                    str(FAKES / "fake_nvml.c")], check=True)
    (dirs[n4] / "gpus.txt").write_text("".join(f"{u},A100-SXM4-80GB,81920,0\n" for u in N4))
    yield dirs
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)


def _pinned(client: Client) -> dict[str, tuple[str | None, str]]:
    """Worker name -> (its CUDA_VISIBLE_DEVICES, its multiprocessing start method)."""
    names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
    seen = client.run(lambda: (os.environ.get("CUDA_VISIBLE_DEVICES"),
                               multiprocessing.get_start_method()))
    return {names[a]: v for a, v in seen.items()}


def test_auto_gives_hosts_with_0_2_and_4_gpus_0_2_and_4_gpu_workers_pinned_by_uuid(
        bed: testbed.Bed, fakes: dict[str, Path]) -> None:
    with SSHCluster([n1, n2, n3, n4], connect_options=bed.connect_options(), setup=SETUP,
                    gpus="auto") as cluster, Client(cluster) as client:
        client.wait_for_workers(7, timeout=120)
        workers = {w["name"]: w for w in client.scheduler_info()["workers"].values()}
        gpu_workers = [f"{n3}-gpu0", f"{n3}-gpu1", *(f"{n4}-gpu{i}" for i in range(4))]
        assert sorted(workers) == sorted([f"{n2}-0", *gpu_workers])
        assert {n: workers[n]["resources"] for n in gpu_workers} == {
            n: {"GPU": 1} for n in gpu_workers}
        assert {workers[n]["nthreads"] for n in gpu_workers} == {1}
        assert workers[f"{n2}-0"]["resources"] == {}
        pinned = _pinned(client)
        assert {n: pinned[n][0] for n in gpu_workers} == dict(
            zip(gpu_workers, [*N3, *N4], strict=True))
        assert {pinned[n][1] for n in gpu_workers} == {"spawn"}
        assert pinned[f"{n2}-0"][0] is None
        # the host's memory is divided among its workers, as on any host
        limits = {workers[n]["memory_limit"] for n in gpu_workers if n.startswith(n4)}
        assert len(limits) == 1 and limits.pop() <= workers[f"{n2}-0"]["memory_limit"] // 4 + 1
        said = cluster.get_logs()["Cluster"]
        assert re.search(rf"{n3}(:22)?: gpus=auto: 2 GPUs \(nvidia-smi\) -> {n3}-gpu0, "
                         rf"{n3}-gpu1", said), said
        assert re.search(rf"{n4}(:22)?: gpus=auto: 4 GPUs \(nvml\) -> {n4}-gpu0", said), said
        assert re.search(rf"{n2}(:22)?: gpus=auto: no GPU \(NVML: libnvidia-ml.so.1 not found; "
                         r"nvidia-smi: not found on PATH\) -> its workers run without GPU", said)
        # scale places by GPU slots: beyond them it is refused with the arithmetic ...
        with pytest.raises(ScaleError) as refused:
            cluster.scale(10)
        assert str(refused.value).startswith(
            f"scale(10): asks for 10 workers, more than the 7 slots of the hosts ({n2}: 1, "
            f"{n3}: 2 GPUs, {n4}: 4 GPUs; one worker per GPU: 1 + 2 + 4 = 7)"), refused.value
        assert (refused.value.wanted, refused.value.slots) == (10, 7)
        assert len(cluster.worker_spec) == 7
        # ... and adapt is capped at them, saying the same arithmetic
        cluster.adapt(minimum=10, maximum=10)
        deadline = time.monotonic() + 60
        while "scale(10) asks for 10 workers" not in cluster.get_logs()["Cluster"]:
            assert time.monotonic() < deadline, cluster.get_logs()["Cluster"]
            time.sleep(0.5)
        assert re.search(rf"scale\(10\) asks for 10 workers, more than the 7 slots of the hosts "
                         rf"\({n2}: 1, {n3}: 2 GPUs, {n4}: 4 GPUs; one worker per GPU\): "
                         r"starting 7", cluster.get_logs()["Cluster"])
        assert len(cluster.worker_spec) == 7


@pytest.fixture
def login_visible(bed: testbed.Bed) -> Iterator[str]:
    """A login script on host 4 only that sets CUDA_VISIBLE_DEVICES (as a batch system would)."""
    host = next(h for h in bed.hosts if h.name == n4)
    if not testbed.host_path(host, "/etc/profile.d").is_dir():
        pytest.skip("this machine has no /etc/profile.d for the bed hosts to have their own")
    script = testbed.host_path(host, f"/etc/profile.d/sshdeploy-gpus-{uuid.uuid4().hex[:8]}.sh")
    visible = f"{N4[2][:12]},3"
    script.write_text(f"export CUDA_VISIBLE_DEVICES={visible}\n")
    yield visible
    script.unlink()


def test_free_skips_the_busy_gpu_and_a_preset_cuda_visible_devices_is_honoured(
        bed: testbed.Bed, fakes: dict[str, Path], login_visible: str) -> None:
    with SSHCluster([n1, n3, n4], connect_options=bed.connect_options(), setup=SETUP,
                    login_shell=True, gpus="free", cpu_workers=1) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(5, timeout=120)
        pinned = _pinned(client)
        assert {n: v[0] for n, v in pinned.items()} == {
            f"{n3}-gpu0": N3[0], f"{n3}-0": "", f"{n4}-gpu2": N4[2], f"{n4}-gpu3": N4[3],
            f"{n4}-0": ""}
        workers = {w["name"]: w for w in client.scheduler_info()["workers"].values()}
        assert workers[f"{n4}-0"]["resources"] == {"CPU": workers[f"{n4}-0"]["nthreads"]}
        said = cluster.get_logs()["Cluster"]
        assert re.search(rf"skipped gpu1 \({N3[1]}\): in use by pid {OTHERS} \(a user not "
                         r"visible on the host, 8.8 GiB\)", said), said
        assert f"CUDA_VISIBLE_DEVICES={login_visible!r} there shows 2 of its 4 GPUs" in said


def test_a_host_asked_for_gpus_it_has_not_fails_the_start_naming_it_and_what_it_has(
        bed: testbed.Bed, fakes: dict[str, Path]) -> None:
    with pytest.raises(GPUError) as info:
        SSHCluster([n1, Host(n2, gpus="2"), n3], connect_options=bed.connect_options(),
                   setup=SETUP, gpus="auto")
    text = str(info.value)
    assert re.match(rf"\[root@{n2}(:22)?\] gpus: asked for 2 GPUs, the host shows 0: found no "
                    r"GPU \(NVML: libnvidia-ml.so.1 not found; nvidia-smi: not found on PATH\)",
                    text), text


def _check(bed: testbed.Bed, *argv: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [
        "--check", "--known-hosts", str(bed.known_hosts), "--ssh-private-key",
        str(bed.client_key), "--ssh-username", "root", "--setup", SETUP, *argv])
    return result.exit_code, result.output


def test_check_lists_each_hosts_gpus_and_the_nvidia_smi_fallback_gives_the_same_plan(
        bed: testbed.Bed, fakes: dict[str, Path]) -> None:
    code, out = _check(bed, "--gpus", "free", n1, n2, n3, n4)
    assert code == 0, out
    gpus = out.split("GPUs (gpus=free):\n", 1)[1]
    assert re.search(rf"root@{n3}\S*  2 GPUs \(nvidia-smi\) -> {n3}-gpu0\n", gpus), gpus
    assert re.search(rf"gpu1  {N3[1]}  Tesla T4  15.0 GiB, 8.8 GiB used  skipped: in use by "
                     rf"pid {OTHERS}", gpus), gpus
    by_nvml = re.search(rf"root@{n4}\S*  4 GPUs \(nvml\) -> (.*)\n", gpus)
    assert by_nvml is not None and by_nvml.group(1) == ", ".join(
        f"{n4}-gpu{i}" for i in range(4))
    # the same host without NVML: nvidia-smi answers, with the same GPUs and workers
    (fakes[n4] / "libnvidia-ml.so.1").rename(fakes[n4] / "libnvidia-ml.off")
    shutil.copy(FAKES / "nvidia-smi", fakes[n4] / "nvidia-smi")
    try:
        code, again = _check(bed, "--gpus", "free", n1, n4)
    finally:
        (fakes[n4] / "nvidia-smi").unlink()
        (fakes[n4] / "libnvidia-ml.off").rename(fakes[n4] / "libnvidia-ml.so.1")
    assert code == 0, again
    by_smi = re.search(rf"root@{n4}\S*  4 GPUs \(nvidia-smi\) -> (.*)\n", again)
    assert by_smi is not None and by_smi.group(1) == by_nvml.group(1)
    assert again.split(f"4 GPUs (nvidia-smi) -> {by_smi.group(1)}\n")[1].splitlines()[:4] == \
        gpus.split(f"4 GPUs (nvml) -> {by_nvml.group(1)}\n")[1].splitlines()[:4]
    # no GPU anywhere: the check says the start would fail
    code, none = _check(bed, "--gpus", "auto", n1, n2)
    assert code == 1 and "FAILED gpus=auto found no GPU on any host" in none


# ------------------------------------------------------------- dask-cuda, named clusters

#: The fake dask-cuda (tests/fakes/dask_cuda: dask-cuda 26.08's names, recording what it is
#: given) on a host's Python path, where the fixture below puts it.
CUDA_SETUP = SETUP + " PYTHONPATH=/tmp/fakegpu/py"
CUDA_OPTIONS = {"rmm_pool_size": "1GB", "device_memory_limit": "10GB",
                "enable_cudf_spill": True}


def _put_dask_cuda(directory: Path) -> None:
    py = directory / "py"
    py.mkdir(exist_ok=True)
    for item in ("dask_cuda", "dask_cuda-99.0.0.dist-info"):
        shutil.copytree(FAKES / item, py / item, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))


@pytest.fixture
def dask_cuda_on_n3(fakes: dict[str, Path]) -> Iterator[dict[str, Path]]:
    """The fake dask-cuda on host 3 only (a test adds it to host 4); removed afterwards."""
    _put_dask_cuda(fakes[n3])
    yield fakes
    for d in fakes.values():
        shutil.rmtree(d / "py", ignore_errors=True)


def test_dask_cuda_options_apply_to_each_gpu_worker_through_its_plugins_where_installed(
        bed: testbed.Bed, dask_cuda_on_n3: dict[str, Path]) -> None:
    def dask_cuda_seen(dask_worker: object) -> dict[str, object]:
        """What the fake dask-cuda recorded in a worker (nested: sent by value)."""
        plugins = {type(p).__name__: (getattr(p, "args", None), getattr(p, "ran", None))
                   for p in dask_worker.plugins.values()  # type: ignore[attr-defined]
                   if type(p).__module__.startswith("dask_cuda")}
        data = dask_worker.data  # type: ignore[attr-defined]
        return {"plugins": plugins, "data": [type(data).__name__, getattr(data, "args", None)],
                "initialized": os.environ.get("FAKE_DASK_CUDA_INITIALIZED")}

    hosts = [n1, n2, n3, n4]
    # host 4 has GPUs but no dask-cuda: the options are refused there before anything starts
    with pytest.raises(GPUError) as info:
        SSHCluster(hosts, connect_options=bed.connect_options(), setup=CUDA_SETUP,
                   gpus="auto", worker_options=CUDA_OPTIONS)
    assert re.match(rf"\[root@{n4}(:22)?\] gpus: dask-cuda's options device_memory_limit, "
                    r"enable_cudf_spill, rmm_pool_size are given, but dask-cuda is not "
                    r"installed there", str(info.value)), info.value
    assert n3 not in str(info.value) and n2 not in str(info.value)
    _put_dask_cuda(dask_cuda_on_n3[n4])
    with SSHCluster(hosts, connect_options=bed.connect_options(), setup=CUDA_SETUP,
                    gpus="auto", worker_options=CUDA_OPTIONS) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(7, timeout=120)
        names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
        seen = {names[a]: v for a, v in client.run(dask_cuda_seen).items()}
        pins = dict(zip([f"{n3}-gpu0", f"{n3}-gpu1", *(f"{n4}-gpu{i}" for i in range(4))],
                        [*N3, *N4], strict=True))
        for name, uuid_ in pins.items():
            index = int(name.rsplit("gpu", 1)[1])
            got = seen[name]
            plugins = got["plugins"]
            assert isinstance(plugins, dict)
            assert set(plugins) == {"CPUAffinity", "RMMSetup", "PreImport", "CUDFSetup"}, got
            assert plugins["RMMSetup"][0]["initial_pool_size"] == "1GB"
            assert plugins["CUDFSetup"][0] == {"spill": True, "spill_stats": 0}
            assert plugins["CPUAffinity"][0] == {"cores": [index]}  # its NVML index
            assert plugins["RMMSetup"][1] == (name, uuid_)  # set up in the pinned worker
            kind, args = got["data"]
            assert kind == "DeviceHostFile" and isinstance(args, dict)
            assert args["device_memory_limit"] == f"10GB@gpu{index}" and args["memory_limit"]
            assert got["initialized"] == "1"  # the dask_cuda.initialize preload ran
        assert seen[f"{n2}-0"] == {"plugins": {}, "data": ["SpillBuffer", None],
                                   "initialized": None}
        said = cluster.get_logs()["Cluster"]
        assert "dask-cuda 99.0.0 there: its plugins and spilling set up each GPU worker" in said


def test_worker_class_cuda_worker_keeps_working_with_a_note_that_gpus_is_simpler(
        bed: testbed.Bed, dask_cuda_on_n3: dict[str, Path]) -> None:
    with pytest.warns(UserWarning, match="gpus='auto' is the simpler way"):
        cluster = SSHCluster([n1, n3], connect_options=bed.connect_options(),
                             setup=CUDA_SETUP + f" CUDA_VISIBLE_DEVICES={N3[0]},{N3[1]}",
                             worker_class="dask_cuda.CUDAWorker",
                             worker_options={"rmm_pool_size": "1GB"})
    with cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)
        seen = client.run(lambda: (os.environ.get("CUDA_VISIBLE_DEVICES"),
                                   os.environ.get("FAKE_RMM_POOL_SIZE")))
        assert sorted(seen.values()) == [(f"{N3[0]},{N3[1]}", "1GB"),
                                         (f"{N3[1]},{N3[0]}", "1GB")]


def test_a_named_clusters_gpu_workers_keep_their_pins_under_a_later_controller(
        bed: testbed.Bed, fakes: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    name = f"gpus-{uuid.uuid4().hex[:8]}"
    first = SSHCluster([n1, n3], connect_options=bed.connect_options(), setup=SETUP,
                       gpus="auto", name=name, shutdown_on_close=False)
    try:
        with Client(first) as client:
            client.wait_for_workers(2, timeout=120)
        first.close()  # detached: it runs on
        with SSHCluster.from_name(name) as cluster, Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)
            pins = {n: spec["options"]["kwargs"]["env"].get("CUDA_VISIBLE_DEVICES")
                    for n, spec in cluster.worker_spec.items()}
            assert pins == {f"{n3}-gpu0": N3[0], f"{n3}-gpu1": N3[1]}  # what a restart uses
            # a GPU worker scaled away and back (a new process) is pinned to its GPU again
            cluster.scale(1)
            deadline = time.monotonic() + 60
            while len(client.scheduler_info()["workers"]) != 1:
                assert time.monotonic() < deadline
                time.sleep(0.5)
            cluster.scale(2)
            client.wait_for_workers(2, timeout=60)
            assert {n: v[0] for n, v in _pinned(client).items()} == {
                f"{n3}-gpu0": N3[0], f"{n3}-gpu1": N3[1]}
            with pytest.raises(ScaleError):
                cluster.scale(3)  # the slots came back with the record too
            cluster.shutdown()
    finally:
        if first.status.name != "closed":
            first.close()
        from sshdeploy.named.state import StateStore

        if StateStore().load(name) is not None:
            SSHCluster.from_name(name).shutdown()
