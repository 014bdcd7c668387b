"""sshdeploy: deploy Dask clusters over SSH."""

from __future__ import annotations

__version__ = "0.1.0"
