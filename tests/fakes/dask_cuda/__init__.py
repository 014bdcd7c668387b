"""A fake dask-cuda for sshdeploy's tests: the names and signatures of dask-cuda 26.08
(``worker_common``, ``plugins``, ``device_host_file``, ``initialize``, ``CUDAWorker``), each
recording what it was given instead of touching a GPU. Like the real one, its plugins are
distributed's WorkerPlugins; nothing else of it imports more than the standard library.

Put on a bed host's ``PYTHONPATH`` (with its ``dask_cuda-99.0.0.dist-info``), it is what the
workers' agent there finds as dask-cuda.
"""

from __future__ import annotations

import os
from typing import Any

__version__ = "99.0.0"


def __getattr__(name: str) -> Any:
    if name == "CUDAWorker":
        return _cuda_worker()
    raise AttributeError(name)


def _cuda_worker() -> Any:
    """dask-cuda's CUDAWorker as it starts its Nannies: one per entry of CUDA_VISIBLE_DEVICES
    (else one), each with its own rotated CUDA_VISIBLE_DEVICES and named NAME-i."""
    import asyncio

    from distributed import Nanny
    from distributed.core import Server

    class CUDAWorker(Server):
        def __init__(self, scheduler: Any = None, name: Any = None, nthreads: int = 1,
                     rmm_pool_size: Any = None, **kwargs: Any) -> None:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")
            n = len(visible)
            kwargs.pop("preload_argv", None)
            self.nannies = [
                Nanny(scheduler, nthreads=nthreads,
                      env={"CUDA_VISIBLE_DEVICES": ",".join(visible[i:] + visible[:i]),
                           "FAKE_RMM_POOL_SIZE": str(rmm_pool_size)},
                      name=name if n == 1 or name is None else f"{name}-{i}", **kwargs)
                for i in range(n)]

        def __await__(self) -> Any:
            return self._wait().__await__()

        async def _wait(self) -> Any:
            await asyncio.gather(*self.nannies)
            return self

        async def finished(self) -> None:
            await asyncio.gather(*[n.finished() for n in self.nannies])

        async def close(self, timeout: float = 5) -> None:  # type: ignore[override]
            await asyncio.gather(*[n.close(timeout=timeout) for n in self.nannies])

    return CUDAWorker
