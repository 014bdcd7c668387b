"""dask-cuda's worker plugins, faked: each keeps its arguments (``args``) and, once set up
in a worker, the worker's name and CUDA_VISIBLE_DEVICES (``ran``). WorkerPlugins, as the real
ones (a worker refuses any other plugin)."""

from __future__ import annotations

import os
from typing import Any

from distributed import WorkerPlugin


class _Recorded(WorkerPlugin):
    def __init__(self, **args: Any) -> None:
        self.args = args
        self.ran: tuple[str, str | None] | None = None

    def setup(self, worker: Any = None) -> None:
        self.ran = (str(getattr(worker, "name", None)), os.environ.get("CUDA_VISIBLE_DEVICES"))


class CPUAffinity(_Recorded):
    def __init__(self, cores: Any) -> None:
        super().__init__(cores=cores)


class CUDFSetup(_Recorded):
    def __init__(self, spill: Any, spill_stats: Any) -> None:
        super().__init__(spill=spill, spill_stats=spill_stats)


class RMMSetup(_Recorded):
    def __init__(self, initial_pool_size: Any, maximum_pool_size: Any, managed_memory: Any,
                 async_alloc: Any, release_threshold: Any, log_directory: Any,
                 track_allocations: Any, external_lib_list: Any) -> None:
        super().__init__(initial_pool_size=initial_pool_size,
                         maximum_pool_size=maximum_pool_size, managed_memory=managed_memory,
                         async_alloc=async_alloc, release_threshold=release_threshold,
                         log_directory=log_directory, track_allocations=track_allocations,
                         external_lib_list=external_lib_list)


class PreImport(_Recorded):
    def __init__(self, libraries: Any) -> None:
        super().__init__(libraries=libraries)
