"""The GPU probe the hosts run (issue 28), without a GPU: its real code paths against fakes.

``sshdeploy/remote/gpus.py`` is run against a fake NVML library (a Python
object with the C functions' calling convention, and the small C library of
``tests/fakes/fake_nvml.c`` built with this machine's gcc), against a fake
``subprocess.run`` for ``nvidia-smi``, and, as the hosts run it (the command
and stdin of :func:`sshdeploy.bootstrap.build_gpu_probe_command`), with the
fake ``nvidia-smi`` of ``tests/fakes`` on the PATH.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sshdeploy.bootstrap import build_gpu_probe_command
from sshdeploy.remote import gpus as probe

pytestmark = pytest.mark.timeout(60)

FAKES = Path(__file__).resolve().parents[1] / "fakes"
#: A pid no process has (above the kernel's default pid_max of 4194304).
GONE_PID = 4194999
MIB = 2**20


class FakeNvml:
    """``libnvidia-ml.so.1`` as ctypes calls it: out-parameters come as ``byref`` or arrays."""

    def __init__(self, gpus: list[dict[str, Any]], symbols: tuple[str, ...] = ("_v3",)) -> None:
        self.gpus = gpus
        self.shut = False
        self.record: type | None = None
        for suffix in symbols:
            setattr(self, "nvmlDeviceGetComputeRunningProcesses" + suffix, self._processes)

    def nvmlInit_v2(self) -> int:
        return 0

    def nvmlShutdown(self) -> int:
        self.shut = True
        return 0

    def nvmlDeviceGetCount_v2(self, count: Any) -> int:
        count._obj.value = len(self.gpus)
        return 0

    def nvmlDeviceGetHandleByIndex_v2(self, index: Any, handle: Any) -> int:
        handle._obj.value = index.value + 1  # a handle is never NULL
        return 0

    def _gpu(self, handle: Any) -> dict[str, Any]:
        return self.gpus[handle.value - 1]

    def nvmlDeviceGetUUID(self, handle: Any, buf: Any, length: Any) -> int:
        buf.value = self._gpu(handle)["uuid"].encode()
        return 0

    def nvmlDeviceGetName(self, handle: Any, buf: Any, length: Any) -> int:
        buf.value = self._gpu(handle)["name"].encode()
        return 0

    def nvmlDeviceGetMemoryInfo(self, handle: Any, memory: Any) -> int:
        gpu = self._gpu(handle)
        memory._obj.total, memory._obj.used = gpu["total"], gpu["used"]
        return 0

    def _processes(self, handle: Any, count: Any, array: Any) -> int:
        procs = self._gpu(handle).get("procs", [])
        if array is None or count._obj.value < len(procs):
            count._obj.value = len(procs)
            return 7 if procs else 0
        self.record = type(array[0])
        for i, (pid, used) in enumerate(procs):
            array[i].pid, array[i].usedGpuMemory = pid, used
        count._obj.value = len(procs)
        return 0

    def nvmlErrorString(self, code: int) -> bytes:
        return b"Insufficient Permissions"


def test_nvml_is_read_through_ctypes_count_uuid_name_memory_processes() -> None:
    lib = FakeNvml([{"uuid": "GPU-a", "name": "Tesla T4", "total": 16 * 2**30, "used": MIB},
                    {"uuid": "GPU-b", "name": "Tesla T4", "total": 16 * 2**30, "used": 9 * 2**30,
                     "procs": [(4242, 9 * 2**30), (4243, probe.NOT_AVAILABLE)]}])
    gpus = probe.nvml_gpus(lib)
    assert [(g["index"], g["uuid"], g["name"], g["memory_used"]) for g in gpus] == [
        (0, "GPU-a", "Tesla T4", MIB), (1, "GPU-b", "Tesla T4", 9 * 2**30)]
    assert gpus[0]["processes"] == []
    assert gpus[1]["processes"] == [{"pid": 4242, "used_memory": 9 * 2**30},
                                    {"pid": 4243, "used_memory": None}]
    assert lib.shut and lib.record is probe.ProcessV2


@pytest.mark.parametrize(("symbols", "called", "record"), [
    (("_v3", "ConfComputeMemSizeInfo"), "_v3", "ProcessV3"),
    (("_v3", "ConfComputeMemSizeInfo", "RunningProcessDetailList"), "_v3", "ProcessV2"),
    (("_v3",), "_v3", "ProcessV2"),
    (("_v2",), "_v2", "ProcessV2"),
    ((), "", "ProcessV1"),
])
def test_the_process_records_stride_follows_what_the_driver_exports(
        symbols: tuple[str, ...], called: str, record: str) -> None:
    lib = SimpleNamespace(**{("nvmlDeviceGetComputeRunningProcesses" + s if s.startswith("_v")
                              else "nvmlDeviceGet" + s): 1 for s in symbols})
    name, struct = probe.processes_call(lib)
    assert name == "nvmlDeviceGetComputeRunningProcesses" + called
    assert struct is getattr(probe, record)
    assert ctypes.sizeof(probe.ProcessV1) < ctypes.sizeof(probe.ProcessV2) < ctypes.sizeof(
        probe.ProcessV3)


def test_processes_that_cannot_be_read_are_not_known_rather_than_none() -> None:
    lib = FakeNvml([{"uuid": "GPU-a", "name": "T4", "total": 1, "used": 0}])
    lib._processes = lambda handle, count, array: 4  # type: ignore[method-assign]
    lib.nvmlDeviceGetComputeRunningProcesses_v3 = lib._processes
    assert probe.nvml_gpus(lib)[0]["processes"] is None


def test_nvml_errors_say_which_call_and_why() -> None:
    lib = FakeNvml([])
    lib.nvmlInit_v2 = lambda: 4  # type: ignore[method-assign]
    with pytest.raises(probe.NvmlError, match=r"nvmlInit failed: Insufficient Permissions "
                                              r"\(NVML error 4\)"):
        probe.nvml_gpus(lib)


def test_nvidia_smi_lines_are_parsed_names_with_commas_and_unknown_sizes_included() -> None:
    gpus = probe.parse_smi_gpus("0, GPU-0b7c, Tesla T4, 15360 MiB, 3 MiB\n"
                                "1, GPU-91d2, NVIDIA A100, 80 GB, 81920 MiB, [N/A]\n"
                                "garbage line\n")
    assert [(g["index"], g["uuid"], g["name"]) for g in gpus] == [
        (0, "GPU-0b7c", "Tesla T4"), (1, "GPU-91d2", "NVIDIA A100, 80 GB")]
    assert gpus[0]["memory_total"] == 15360 * MIB and gpus[1]["memory_used"] is None
    apps = probe.parse_smi_apps("GPU-91d2, 77, 300 MiB\nGPU-91d2, 78, [N/A]\n"
                                "No running processes found\n")
    assert apps == {"GPU-91d2": [{"pid": 77, "used_memory": 300 * MIB},
                                 {"pid": 78, "used_memory": None}]}


def fake_run(answers: dict[str, Any]) -> Any:
    """A ``subprocess.run`` that answers nvidia-smi's two queries (or raises)."""
    def run(argv: list[str], **kw: Any) -> Any:
        answer = answers[argv[1].split("=")[0]]
        if isinstance(answer, BaseException):
            raise answer
        return SimpleNamespace(returncode=answer[0], stdout=answer[1], stderr=answer[2])
    return run


def test_without_nvml_nvidia_smi_answers_and_a_missing_one_is_said(tmp_path: Path) -> None:
    run = fake_run({"--query-gpu": (0, "0, GPU-0b7c, Tesla T4, 15360 MiB, 3 MiB\n", ""),
                    "--query-compute-apps": (0, f"GPU-0b7c, {GONE_PID}, 300 MiB\n", "")})
    found = probe.inventory(library=str(tmp_path / "nope.so"), dev=str(tmp_path), run=run)
    assert found["source"] == "nvidia-smi"
    assert found["tried"] == [f"NVML: {tmp_path / 'nope.so'} not found"]
    assert found["gpus"][0]["processes"] == [{"pid": GONE_PID, "used_memory": 300 * MIB,
                                              "uid": None, "user": None}]
    none = probe.inventory(library=str(tmp_path / "nope.so"), dev=str(tmp_path),
                           run=fake_run({"--query-gpu": FileNotFoundError()}))
    assert (none["source"], none["gpus"], none["tried"][1]) == (
        None, [], "nvidia-smi: not found on PATH")
    failing = probe.inventory(library=str(tmp_path / "nope.so"), dev=str(tmp_path), run=fake_run(
        {"--query-gpu": (9, "", "NVIDIA-SMI has failed because it couldn't communicate with "
                         "the NVIDIA driver.\n")}))
    assert failing["tried"][1] == ("nvidia-smi: exit status 9: NVIDIA-SMI has failed because it "
                                   "couldn't communicate with the NVIDIA driver.")


def test_device_nodes_without_an_answer_give_a_warning_not_gpus(tmp_path: Path) -> None:
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    found = probe.inventory(library=str(tmp_path / "nope.so"), dev=str(tmp_path),
                            run=fake_run({"--query-gpu": FileNotFoundError()}))
    assert (found["devices"], found["gpus"], found["source"]) == (2, [], None)


def test_a_process_is_owned_by_its_user_and_one_not_visible_by_nobody_known() -> None:
    assert probe.owner(os.getpid())[0] == os.getuid()
    assert probe.owner(GONE_PID) == (None, None)


def test_cores_are_counted_as_dask_counts_them() -> None:
    from dask.system import CPU_COUNT

    assert probe.cores() == CPU_COUNT


def build_fake_nvml(directory: Path, inventory: str) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler here to build the fake libnvidia-ml.so.1")
    lib = directory / "libnvidia-ml.so.1"
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(lib), str(FAKES / "fake_nvml.c")],
                   check=True)
    (directory / "gpus.txt").write_text(inventory)
    return lib


def test_the_probe_loads_a_real_shared_library_through_ctypes(tmp_path: Path) -> None:
    lib = build_fake_nvml(tmp_path, f"GPU-a,A100-SXM4-80GB,81920,0\n"
                                    f"GPU-b,A100-SXM4-80GB,81920,40960,{GONE_PID}:40000\n")
    found = probe.inventory(library=str(lib), dev=str(tmp_path),
                            run=fake_run({"--query-gpu": AssertionError("not asked")}))
    assert found["source"] == "nvml" and found["tried"] == []
    assert [(g["uuid"], g["memory_total"], g["memory_used"]) for g in found["gpus"]] == [
        ("GPU-a", 81920 * MIB, 0), ("GPU-b", 81920 * MIB, 40960 * MIB)]
    assert found["gpus"][1]["processes"] == [
        {"pid": GONE_PID, "used_memory": 40000 * MIB, "uid": None, "user": None}]


def test_nvml_that_fails_falls_back_to_nvidia_smi(tmp_path: Path) -> None:
    lib = build_fake_nvml(tmp_path, "")
    (tmp_path / "gpus.txt").unlink()  # no inventory: nvmlInit fails as without a driver
    found = probe.inventory(library=str(lib), dev=str(tmp_path), run=fake_run(
        {"--query-gpu": (0, "0, GPU-a, T4, 15360 MiB, 3 MiB\n", ""),
         "--query-compute-apps": (0, "", "")}))
    assert found["source"] == "nvidia-smi"
    assert found["tried"] == ["NVML: nvmlInit failed: Driver Not Loaded (NVML error 9)"]


def test_the_command_runs_the_probe_after_the_setup_and_prints_one_json_line(
        tmp_path: Path) -> None:
    """The command and stdin the hosts get, run here with the fake nvidia-smi on the PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(FAKES / "nvidia-smi", bin_dir / "nvidia-smi")
    (bin_dir / "gpus.txt").write_text(f"GPU-a,Tesla T4,15360,3\nGPU-b,Tesla T4,15360,9000,"
                                      f"{GONE_PID}:8990\n")
    command, stdin = build_gpu_probe_command(
        sys.executable, setup=f"export PATH={bin_dir}:$PATH", visible="GPU-b")
    done = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, timeout=30,
                          env={**os.environ, "LD_LIBRARY_PATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.decode().splitlines()[-1])
    assert (found["source"], found["visible"], [g["uuid"] for g in found["gpus"]]) == (
        "nvidia-smi", "GPU-b", ["GPU-a", "GPU-b"])
    assert found["gpus"][1]["processes"] == [
        {"pid": GONE_PID, "used_memory": 8990 * MIB, "uid": None, "user": None}]
    assert (found["uid"], found["cores"]) == (os.getuid(), probe.cores())
