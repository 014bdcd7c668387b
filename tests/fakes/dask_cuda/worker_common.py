"""dask-cuda 26.08's ``worker_common``, faked with its signatures: what CUDAWorker gives each
Nanny. The device index reaches the fake DeviceHostFile as ``device_memory_limit``'s
``@gpu<index>`` (the real one parses the limit for that device)."""

from __future__ import annotations

from typing import Any

from .device_host_file import DeviceHostFile
from .plugins import CPUAffinity, CUDFSetup, PreImport, RMMSetup


def worker_data_function(device_memory_limit: Any = None, memory_limit: Any = None,
                         enable_cudf_spill: bool = False) -> Any:
    def data(device_index: int) -> Any:
        if device_memory_limit is None and memory_limit is None:
            return {}
        return (DeviceHostFile, {"device_memory_limit": f"{device_memory_limit}@gpu"
                                 f"{device_index}", "memory_limit": memory_limit})

    return data


def worker_plugins(*, device_index: int, rmm_initial_pool_size: Any, rmm_maximum_pool_size: Any,
                   rmm_managed_memory: Any, rmm_async_alloc: Any, rmm_release_threshold: Any,
                   rmm_log_directory: Any, rmm_track_allocations: Any,
                   rmm_allocator_external_lib_list: Any, pre_import: Any,
                   enable_cudf_spill: Any, cudf_spill_stats: Any) -> set[Any]:
    return {
        CPUAffinity([device_index]),
        RMMSetup(initial_pool_size=rmm_initial_pool_size, maximum_pool_size=rmm_maximum_pool_size,
                 managed_memory=rmm_managed_memory, async_alloc=rmm_async_alloc,
                 release_threshold=rmm_release_threshold, log_directory=rmm_log_directory,
                 track_allocations=rmm_track_allocations,
                 external_lib_list=rmm_allocator_external_lib_list),
        PreImport(pre_import),
        CUDFSetup(spill=enable_cudf_spill, spill_stats=cudf_spill_stats),
    }
