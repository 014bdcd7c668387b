"""dask-cuda's DeviceHostFile, faked: a dict that keeps what it was built with (``args``)."""

from __future__ import annotations

from typing import Any


class DeviceHostFile(dict):  # type: ignore[type-arg]
    def __init__(self, device_memory_limit: Any = None, memory_limit: Any = None,
                 worker_local_directory: Any = None) -> None:
        super().__init__()
        self.args = {"device_memory_limit": device_memory_limit, "memory_limit": memory_limit}
