"""Find this host's NVIDIA GPUs and print them as one JSON line (``SSHCluster(gpus=...)``,
``dask-ssh --gpus ... --check``).

Run by ``python -c`` (:func:`sshdeploy.bootstrap.build_gpu_probe_command`) in the
environment the workers get (the setup commands, the login shell, the
cluster's ``CUDA_VISIBLE_DEVICES``); standard library only, Python 3.10
compatible. Imported (the controller's tests) it only defines things.

Where the GPUs are found, first that answers:

1. NVML through :mod:`ctypes` on ``libnvidia-ml.so.1`` (the driver's own
   library, no pynvml needed): count, UUID, name, memory, compute processes;
2. ``nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used
   --format=csv,noheader`` (and ``--query-compute-apps`` for the processes);
3. neither: no GPU, and why each failed (``tried``); ``devices`` counts
   ``/dev/nvidia[0-9]*`` so the controller can warn when GPUs seem present
   but could not be read (a broken driver, a missing library).

What it prints: ``{"source": "nvml" | "nvidia-smi" | null, "gpus": [{"index",
"uuid", "name", "memory_total", "memory_used", "processes": [{"pid",
"used_memory", "uid", "user"}] or null}], "tried": [...], "devices": N,
"visible": CUDA_VISIBLE_DEVICES or null, "uid", "user", "cores", "dask_cuda"}``; memory
in bytes (null where not known). A process's ``uid`` is null when it is not
visible here (another container's, or hidden by ``hidepid``). ``dask_cuda``
is dask-cuda's version where it can be imported (``"?"`` without metadata), else
null: found, not imported.
"""

# Keep this file Python 3.10 compatible and standard library only.
from __future__ import annotations

import ctypes
import glob
import json
import os
import subprocess
import threading
from collections.abc import Callable
from typing import Any

NVML_LIBRARY = "libnvidia-ml.so.1"
SMI = "nvidia-smi"
QUERY_GPUS = "--query-gpu=index,uuid,name,memory.total,memory.used"
QUERY_APPS = "--query-compute-apps=gpu_uuid,pid,used_memory"
#: Seconds each way of asking may take (a wedged driver makes NVML and nvidia-smi hang).
TIMEOUT = 10.0

NVML_SUCCESS = 0
NVML_ERROR_INSUFFICIENT_SIZE = 7
#: ``usedGpuMemory`` when it is not known (NVML_VALUE_NOT_AVAILABLE).
NOT_AVAILABLE = 2**64 - 1
_MIB = 2**20
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


class NvmlError(Exception):
    """NVML answered an error (or lacks a function sshdeploy needs)."""


class SmiError(Exception):
    """nvidia-smi is missing, failed or did not answer in time."""


class Memory(ctypes.Structure):
    """``nvmlMemory_t``: what ``nvmlDeviceGetMemoryInfo`` fills in."""

    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                ("used", ctypes.c_ulonglong)]


class ProcessV1(ctypes.Structure):
    """``nvmlProcessInfo_v1_t`` (``nvmlDeviceGetComputeRunningProcesses``)."""

    _fields_ = [("pid", ctypes.c_uint), ("usedGpuMemory", ctypes.c_ulonglong)]


class ProcessV2(ctypes.Structure):
    """``nvmlProcessInfo_v2_t`` (``..._v2``, and ``..._v3`` of most drivers)."""

    _fields_ = [*ProcessV1._fields_, ("gpuInstanceId", ctypes.c_uint),
                ("computeInstanceId", ctypes.c_uint)]


class ProcessV3(ctypes.Structure):
    """``nvmlProcessInfo_v3_t`` (``..._v3`` of drivers with confidential computing)."""

    _fields_ = [*ProcessV2._fields_, ("usedGpuCcProtectedMemory", ctypes.c_ulonglong)]


def _symbol(lib: Any, *names: str) -> Any:
    """The first of *names* that *lib* exports (None if none does)."""
    for name in names:
        try:
            return getattr(lib, name)
        except AttributeError:
            continue
    return None


def processes_call(lib: Any) -> tuple[str, type[ctypes.Structure]]:
    """The process-listing function *lib* exports and the record layout it fills.

    The array's stride depends on the driver, not on the name alone: ``_v3``
    fills v3 records only where the driver has confidential computing
    (``nvmlDeviceGetConfComputeMemSizeInfo``) and not yet the detail list
    that replaced it (``nvmlDeviceGetRunningProcessDetailList``).
    """
    base = "nvmlDeviceGetComputeRunningProcesses"
    if _symbol(lib, base + "_v3") is not None:
        cc = _symbol(lib, "nvmlDeviceGetConfComputeMemSizeInfo") is not None
        detail = _symbol(lib, "nvmlDeviceGetRunningProcessDetailList") is not None
        return base + "_v3", ProcessV3 if cc and not detail else ProcessV2
    if _symbol(lib, base + "_v2") is not None:
        return base + "_v2", ProcessV2
    return base, ProcessV1


def _error(lib: Any, code: int, call: str) -> NvmlError:
    text = ""
    fn = _symbol(lib, "nvmlErrorString")
    if fn is not None:
        try:
            fn.restype = ctypes.c_char_p  # (a C function; it returns a C string)
        except AttributeError:
            pass
        try:
            text = (fn(code) or b"").decode(errors="replace")
        except Exception:
            text = ""
    return NvmlError(f"{call} failed: {text or 'error'} (NVML error {code})")


def _check(lib: Any, code: int, call: str) -> None:
    if code != NVML_SUCCESS:
        raise _error(lib, code, call)


def nvml_processes(lib: Any, handle: Any) -> list[dict[str, Any]]:
    """The compute processes on one device (pid and GPU memory, in bytes)."""
    name, record = processes_call(lib)
    fn = getattr(lib, name)
    count = ctypes.c_uint(0)
    code = fn(handle, ctypes.byref(count), None)
    if code == NVML_SUCCESS:
        return []  # none: it needed no room
    if code != NVML_ERROR_INSUFFICIENT_SIZE:
        raise _error(lib, code, name)
    count.value = count.value * 2 + 5  # room for processes started meanwhile
    array = (record * count.value)()
    _check(lib, fn(handle, ctypes.byref(count), array), name)
    return [{"pid": int(p.pid),
             "used_memory": None if p.usedGpuMemory >= NOT_AVAILABLE else int(p.usedGpuMemory)}
            for p in array[:count.value]]


def nvml_gpus(lib: Any) -> list[dict[str, Any]]:
    """Every device NVML sees, in its order (PCI bus order: nvidia-smi's indexes).

    *lib* is the loaded ``libnvidia-ml.so.1`` (or anything with its functions).
    """
    init = _symbol(lib, "nvmlInit_v2", "nvmlInit")
    count_fn = _symbol(lib, "nvmlDeviceGetCount_v2", "nvmlDeviceGetCount")
    handle_fn = _symbol(lib, "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex")
    if init is None or count_fn is None or handle_fn is None:
        raise NvmlError("the library lacks nvmlInit / nvmlDeviceGetCount / "
                        "nvmlDeviceGetHandleByIndex")
    _check(lib, init(), "nvmlInit")
    try:
        count = ctypes.c_uint(0)
        _check(lib, count_fn(ctypes.byref(count)), "nvmlDeviceGetCount")
        out = []
        for index in range(count.value):
            handle = ctypes.c_void_p()
            _check(lib, handle_fn(ctypes.c_uint(index), ctypes.byref(handle)),
                   "nvmlDeviceGetHandleByIndex")
            uuid = ctypes.create_string_buffer(96)
            _check(lib, lib.nvmlDeviceGetUUID(handle, uuid, ctypes.c_uint(96)),
                   "nvmlDeviceGetUUID")
            name = ctypes.create_string_buffer(96)
            _check(lib, lib.nvmlDeviceGetName(handle, name, ctypes.c_uint(96)),
                   "nvmlDeviceGetName")
            memory = Memory()
            _check(lib, lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)),
                   "nvmlDeviceGetMemoryInfo")
            try:
                processes: list[dict[str, Any]] | None = nvml_processes(lib, handle)
            except NvmlError:
                processes = None  # e.g. no permission: say "not known", not "none"
            out.append({"index": index, "uuid": uuid.value.decode(errors="replace"),
                        "name": name.value.decode(errors="replace"),
                        "memory_total": int(memory.total), "memory_used": int(memory.used),
                        "processes": processes})
        return out
    finally:
        shutdown = _symbol(lib, "nvmlShutdown")
        if shutdown is not None:
            shutdown()


def parse_size(text: str) -> int | None:
    """A size as nvidia-smi writes it (``15360 MiB``; a bare number is MiB), in bytes.

    >>> parse_size("15360 MiB"), parse_size("300"), parse_size("[N/A]")
    (16106127360, 314572800, None)
    """
    parts = text.strip().split()
    try:
        number = float(parts[0])
    except (IndexError, ValueError):
        return None
    unit = parts[1] if len(parts) > 1 else "MiB"
    return int(number * _UNITS[unit]) if unit in _UNITS else None


def parse_smi_gpus(text: str) -> list[dict[str, Any]]:
    """The lines of ``nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used``.

    A name may hold commas: the fields around it are fixed.

    >>> parse_smi_gpus("0, GPU-1a2b, Tesla T4, 15360 MiB, 3 MiB\\n")[0]["memory_total"]
    16106127360
    """
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 5 or not fields[0].isdigit():
            continue
        gpus.append({"index": int(fields[0]), "uuid": fields[1],
                     "name": ", ".join(fields[2:-2]), "memory_total": parse_size(fields[-2]),
                     "memory_used": parse_size(fields[-1]), "processes": []})
    return gpus


def parse_smi_apps(text: str) -> dict[str, list[dict[str, Any]]]:
    """The lines of ``--query-compute-apps=gpu_uuid,pid,used_memory``, by GPU UUID.

    >>> parse_smi_apps("GPU-1a2b, 4242, 300 MiB\\nNo running processes found\\n")
    {'GPU-1a2b': [{'pid': 4242, 'used_memory': 314572800}]}
    """
    apps: dict[str, list[dict[str, Any]]] = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3 or not fields[1].isdigit():
            continue
        apps.setdefault(fields[0], []).append(
            {"pid": int(fields[1]), "used_memory": parse_size(fields[2])})
    return apps


def run_smi(query: str, run: Callable[..., Any] = subprocess.run) -> str:
    """Run ``nvidia-smi QUERY --format=csv,noheader``; return its output."""
    try:
        done = run([SMI, query, "--format=csv,noheader"], capture_output=True, text=True,
                   timeout=TIMEOUT, check=False)
    except FileNotFoundError:
        raise SmiError("not found on PATH") from None
    except subprocess.TimeoutExpired:
        raise SmiError(f"did not answer within {TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise SmiError(f"cannot run: {exc}") from None
    if done.returncode != 0:
        said = (done.stdout + done.stderr).strip().splitlines()
        raise SmiError(f"exit status {done.returncode}" + (f": {said[-1]}" if said else ""))
    return str(done.stdout)


def smi_gpus(run: Callable[..., Any] = subprocess.run) -> list[dict[str, Any]]:
    """Every GPU nvidia-smi lists, with its compute processes (None: not known)."""
    gpus = parse_smi_gpus(run_smi(QUERY_GPUS, run))
    try:
        apps: dict[str, list[dict[str, Any]]] | None = parse_smi_apps(run_smi(QUERY_APPS, run))
    except SmiError:
        apps = None
    for gpu in gpus:
        gpu["processes"] = None if apps is None else apps.get(gpu["uuid"], [])
    return gpus


def owner(pid: int) -> tuple[int | None, str | None]:
    """The uid and user name of process *pid* (None, None when it is not visible here)."""
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None, None
    try:
        import pwd

        return uid, pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return uid, None


def cores() -> int:
    """The cores this process may use, as dask counts them (affinity, cgroup quota)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    v1 = "/sys/fs/cgroup/cpu/cpu.cfs_"
    for path, split in (("/sys/fs/cgroup/cpu.max", None), (v1 + "quota_us", v1 + "period_us")):
        try:
            with open(path) as f:
                first = f.read().split()
            if split is None:
                quota, period = first[0], first[1]
            else:
                with open(split) as f:
                    quota, period = first[0], f.read().split()[0]
            if quota not in ("max", "-1") and int(period) > 0:
                n = min(n, -(-int(quota) // int(period)))
            break
        except (OSError, IndexError, ValueError):
            continue
    return max(1, n)


def dask_cuda_version() -> str | None:
    """dask-cuda's version if the workers can import it here (not imported), else None;
    ``"<version> (old)"`` for one without ``worker_common`` (before 25.08: not used)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("dask_cuda")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    try:
        from importlib import metadata

        version = metadata.version("dask-cuda")
    except Exception:
        version = "?"
    places = list(spec.submodule_search_locations or [])
    if places and not any(os.path.exists(os.path.join(d, "worker_common.py")) for d in places):
        return f"{version} (old)"
    return version


def bounded(fn: Callable[[], Any], timeout: float) -> Any:
    """Run *fn* in a thread; its result, or TimeoutError once *timeout* has passed."""
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"did not answer within {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def inventory(library: str = NVML_LIBRARY, dev: str = "/dev",
              run: Callable[..., Any] = subprocess.run) -> dict[str, Any]:
    """What this host has: NVML first, then nvidia-smi; see the module docstring."""
    tried: list[str] = []
    gpus: list[dict[str, Any]] | None = None
    source = None
    try:
        lib = ctypes.CDLL(library)
    except OSError as exc:
        missing = "No such file" in str(exc) or "cannot open shared object" in str(exc)
        tried.append(f"NVML: {library} {'not found' if missing else f'not loadable ({exc})'}")
    else:
        try:
            gpus, source = bounded(lambda: nvml_gpus(lib), TIMEOUT), "nvml"
        except Exception as exc:
            tried.append(f"NVML: {exc}")
    if gpus is None:
        try:
            gpus, source = smi_gpus(run), "nvidia-smi"
        except SmiError as exc:
            tried.append(f"nvidia-smi: {exc}")
    for gpu in gpus or []:
        for p in gpu.get("processes") or []:
            p["uid"], p["user"] = owner(p["pid"])
    uid, user = owner(os.getpid())
    return {"source": source, "gpus": sorted(gpus or [], key=lambda g: g["index"]),
            "tried": tried, "devices": len(glob.glob(os.path.join(dev, "nvidia[0-9]*"))),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "uid": uid, "user": user,
            "cores": cores(), "dask_cuda": dask_cuda_version()}


if __name__ == "__main__":
    print(json.dumps(inventory()), flush=True)
    os._exit(0)  # a hung NVML thread must not keep us
