"""dask-cuda's ``initialize`` preload, faked: says in the worker's environment that it ran."""

from __future__ import annotations

import os
from typing import Any


def dask_setup(worker: Any) -> None:
    os.environ["FAKE_DASK_CUDA_INITIALIZED"] = "1"
