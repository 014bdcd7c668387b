"""What a host is, as the version gate compares it: interpreter, platform, package versions.

Read without importing anything heavy: the versions come from the packages'
metadata (the ``<name>-<version>.dist-info`` directories on ``sys.path``, else
:mod:`importlib.metadata`), never from importing the packages. The agent sends
it as it starts (the ``described`` event, before it imports distributed), the
environment stage's script (:mod:`sshdeploy.remote.envremote`, sent with this
part) in its probe, and the controller describes itself with the same code
(:mod:`sshdeploy.env.gate`), so both sides are read alike.
"""

# Keep this file Python 3.10 compatible: the standard library only.
from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from typing import Any


def dist_versions(names: Iterable[str]) -> dict[str, str]:
    """Versions from the ``<name>-<version>.dist-info`` directories on ``sys.path``.

    The first entry holding a distribution wins, as for importlib.metadata,
    at the cost of a few directory listings (importing importlib.metadata
    alone costs more); anything else falls back to importlib.metadata.
    """
    names = list(names)
    wanted = {re.sub(r"[-_.]+", "_", n).lower(): n for n in names}
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            listing = os.listdir(entry or ".")
        except OSError:
            continue
        for item in listing:
            if not item.endswith(".dist-info") or "-" not in item:
                continue
            stem, _, version = item[:-10].partition("-")
            name = wanted.get(stem.lower())
            if name is not None and name not in found and version[:1].isdigit():
                found[name] = version
    missing = [n for n in names if n not in found]
    if missing:
        from importlib import metadata

        for name in missing:
            try:
                found[name] = metadata.version(name)
            except Exception:
                pass
    return found


def libc() -> str:
    """The C library and its version (``glibc 2.36``), "" if unknown."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36", at no cost
    except (AttributeError, ValueError, OSError):
        text = ""
    if not text:
        import platform

        name, version = platform.libc_ver()  # reads the interpreter's binary: slower
        text = (name + " " + version).strip()
    return text


def describe(packages: Iterable[str]) -> dict[str, Any]:
    """Return this interpreter, its platform and the versions of *packages* found."""
    uname = os.uname()
    return {
        "python": sys.executable,
        "implementation": sys.implementation.name,
        "version": ".".join(str(v) for v in sys.version_info[:3]),
        "system": uname.sysname,
        "machine": uname.machine,
        "libc": libc(),
        "packages": dist_versions(list(packages)),
    }
