"""Versions of Python, dask and distributed on the controller, and how they compare.

A leaf: reads package metadata, imports neither asyncssh nor distributed.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version

#: What must match between the controller and every host.
CHECKED = ("python", "dask", "distributed")


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """Return the installed version of each package found (from its metadata).

    Examples
    --------
    >>> "dask" in package_versions(["dask", "no-such-package-here"])
    True
    """
    found: dict[str, str] = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def local_versions() -> dict[str, str]:
    """Return the controller's python, dask and distributed versions.

    Examples
    --------
    >>> sorted(local_versions())
    ['dask', 'distributed', 'python']
    """
    return {"python": platform.python_version(), **package_versions(CHECKED[1:])}


def compare_versions(local: Mapping[str, str], remote: Mapping[str, str]) -> list[str]:
    """Return one text per package whose versions differ (Python by major.minor).

    Examples
    --------
    >>> compare_versions({"python": "3.11.7", "dask": "1"}, {"python": "3.11.2", "dask": "2"})
    ['dask 2 (controller: 1)']
    """
    out = []
    for pkg, mine in local.items():
        theirs = remote.get(pkg, "?")
        a, b = mine, theirs
        if pkg == "python":
            a, b = ".".join(mine.split(".")[:2]), ".".join(theirs.split(".")[:2])
        if a != b:
            out.append(f"{pkg} {theirs} (controller: {mine})")
    return out
