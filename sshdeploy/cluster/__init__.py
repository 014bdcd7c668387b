"""The running cluster: :class:`SSHCluster` and what it builds.

``from sshdeploy.cluster import SSHCluster`` is the way in; ``core`` holds the
class, ``build`` the pure pieces it builds from its plan, ``scaling`` the
checks and arithmetic of ``scale``/``adapt``.
"""

from __future__ import annotations

from .core import SSHCluster

__all__ = ["SSHCluster"]
