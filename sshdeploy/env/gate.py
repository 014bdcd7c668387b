"""The version gate: what must match between this machine and every host, and the table.

A leaf: compares descriptions made by :func:`sshdeploy.remote.agent.facts.describe`
(the same code runs here and on each host: in the agent as it starts, or in the
environment stage's probe), imports neither asyncssh nor
distributed. What is compared is what breaks a cluster when it differs:

- the Python implementation and its major.minor (pickles, bytecode, C
  extensions);
- the platform: OS, machine, and the C library (a family change, or a host
  whose libc is older than this machine's);
- the packages distributed itself compares between client, scheduler and
  workers (:data:`GATED`) that are installed here, plus those the user names;
- the GPU stack (:data:`GPU_STACK`: cupy, cudf, rmm, dask-cuda) where it is
  installed here or on any host (:func:`compare_gpu_stack`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sshdeploy.remote.agent.facts import describe

#: The packages ``distributed.versions`` compares (required and optional), in that order.
GATED = ("dask", "distributed", "cloudpickle", "msgpack", "toolz", "tornado", "numpy",
         "pandas", "lz4")
#: The GPU stack, each package with the distributions that provide it (pip's CUDA-suffixed
#: wheels, conda's plain names): described everywhere, compared by :func:`compare_gpu_stack`.
GPU_STACK: dict[str, tuple[str, ...]] = {
    "cupy": ("cupy", "cupy-cuda11x", "cupy-cuda12x", "cupy-cuda13x"),
    "cudf": ("cudf", "cudf-cu11", "cudf-cu12", "cudf-cu13"),
    "rmm": ("rmm", "rmm-cu11", "rmm-cu12", "rmm-cu13"),
    "dask-cuda": ("dask-cuda",),
}
#: Every distribution of :data:`GPU_STACK`: what the hosts and this machine are asked for.
GPU_STACK_DISTRIBUTIONS = tuple(d for dists in GPU_STACK.values() for d in dists)
#: The rows that are about the interpreter and platform, not packages.
PLATFORM_ROWS = ("python", "os", "machine", "libc")


@dataclass(frozen=True)
class Difference:
    """One row of the gate's table: on *host*, *package* is *theirs* where we have *ours*."""

    host: str
    package: str
    theirs: str
    ours: str


def gated_packages(extra: Iterable[str] = ()) -> list[str]:
    """Return the packages to compare: :data:`GATED` installed here, then *extra*.

    Examples
    --------
    >>> gated_packages(["mypkg"])[:2], gated_packages(["mypkg"])[-1]
    (['dask', 'distributed'], 'mypkg')
    """
    here = describe(GATED)["packages"]
    names = [p for p in GATED if p in here]
    for p in extra:
        if p not in names:
            names.append(p)
    return names


def local_description(packages: Iterable[str]) -> dict[str, Any]:
    """Describe this machine's interpreter, platform and *packages* (as the hosts do)."""
    return describe(packages)


def _libc_older(theirs: str, ours: str) -> bool:
    """True if the libc *theirs* cannot be assumed to run what was built on *ours*.

    Examples
    --------
    >>> _libc_older("glibc 2.31", "glibc 2.36"), _libc_older("glibc 2.38", "glibc 2.36")
    (True, False)
    >>> _libc_older("", "glibc 2.36"), _libc_older("", "")
    (True, False)
    """
    if theirs == ours:
        return False
    t_name, _, t_ver = theirs.partition(" ")
    o_name, _, o_ver = ours.partition(" ")
    if t_name != o_name:
        return True

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split(".") if x.isdigit())

    return key(t_ver) < key(o_ver)


def _python(d: Mapping[str, Any]) -> str:
    version = str(d.get("version", "?"))
    return f"{d.get('implementation', '?')} {'.'.join(version.split('.')[:2])}"


def compare(
    host: str,
    ours: Mapping[str, Any],
    theirs: Mapping[str, Any],
    packages: Sequence[str],
    *,
    platform_only: bool = False,
) -> list[Difference]:
    """Return the rows where *theirs* (a host's description) differs from *ours*.

    Parameters
    ----------
    host : str
        ``user@host:port``, for the table.
    ours, theirs : dict
        :func:`sshdeploy.remote.agent.facts.describe` of this machine and of the host.
    packages : sequence of str
        The packages to compare (:func:`gated_packages`).
    platform_only : bool
        Compare the interpreter and platform only (an environment synced from
        here brings the packages).

    Examples
    --------
    >>> ours = {"implementation": "cpython", "version": "3.11.7", "system": "Linux",
    ...         "machine": "x86_64", "libc": "glibc 2.36", "packages": {"dask": "1"}}
    >>> theirs = dict(ours, version="3.11.2", packages={"dask": "2"})
    >>> compare("node2", ours, theirs, ["dask"])
    [Difference(host='node2', package='dask', theirs='2', ours='1')]
    >>> compare("node2", ours, dict(theirs, version="3.12.1"), ["dask"], platform_only=True)
    [Difference(host='node2', package='python', theirs='cpython 3.12', ours='cpython 3.11')]
    """
    rows: list[Difference] = []
    if _python(theirs) != _python(ours):
        rows.append(Difference(host, "python", _python(theirs), _python(ours)))
    for row, key in (("os", "system"), ("machine", "machine")):
        if theirs.get(key) != ours.get(key):
            rows.append(Difference(host, row, str(theirs.get(key) or "-"),
                                   str(ours.get(key) or "-")))
    libc_t, libc_o = str(theirs.get("libc") or ""), str(ours.get("libc") or "")
    if _libc_older(libc_t, libc_o):
        rows.append(Difference(host, "libc", libc_t or "-", libc_o or "-"))
    if platform_only:
        return rows
    mine, yours = ours.get("packages") or {}, theirs.get("packages") or {}
    for name in packages:
        if mine.get(name) != yours.get(name):
            rows.append(Difference(host, name, yours.get(name) or "-", mine.get(name) or "-"))
    return rows


def format_table(rows: Sequence[Difference]) -> str:
    """Return the rows as one aligned text table: host, package, theirs, ours.

    Examples
    --------
    >>> print(format_table([Difference("node2", "dask", "2", "1")]))
    host   package  theirs  ours
    node2  dask     2       1
    """
    table = [("host", "package", "theirs", "ours")]
    table += [(r.host, r.package, r.theirs, r.ours) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)), row[3]])
        for row in table
    )


def gpu_stack(packages: Mapping[str, str]) -> dict[str, str]:
    """The GPU stack in a description's *packages*: package -> ``version`` (``version
    (distribution)`` for a CUDA-suffixed wheel).

    Examples
    --------
    >>> gpu_stack({"cupy-cuda12x": "13.3.0", "dask-cuda": "25.08.0", "dask": "2026.1"})
    {'cupy': '13.3.0 (cupy-cuda12x)', 'dask-cuda': '25.08.0'}
    """
    out: dict[str, str] = {}
    for package, dists in GPU_STACK.items():
        for dist in dists:
            if packages.get(dist):
                version = str(packages[dist])
                out[package] = version if dist == package else f"{version} ({dist})"
                break
    return out


def compare_gpu_stack(ours: Mapping[str, Any], hosts: Mapping[str, Mapping[str, Any]]
                      ) -> list[Difference]:
    """The gate's rows for the GPU stack (:data:`GPU_STACK`) of *hosts* (host -> description).

    A package installed here is compared as the others are: every host must have
    the same version (one without it is a row). One not installed here but on
    some hosts (a controller without GPU) must be the same on every host that
    has it: the version most of them have is the reference, the others are rows
    (a host without it, a CPU-only host, is none).

    Examples
    --------
    >>> here = {"packages": {"cupy-cuda12x": "13.3.0"}}
    >>> hosts = {"n2": {"packages": {}}, "n3": {"packages": {"cupy-cuda12x": "13.3.0",
    ...          "rmm-cu12": "25.8"}}, "n4": {"packages": {"cupy-cuda12x": "13.3.0",
    ...          "rmm-cu12": "25.6"}}, "n5": {"packages": {"rmm-cu12": "25.8"}}}
    >>> for row in compare_gpu_stack(here, hosts):
    ...     print(row)
    Difference(host='n2', package='cupy', theirs='-', ours='13.3.0 (cupy-cuda12x)')
    Difference(host='n5', package='cupy', theirs='-', ours='13.3.0 (cupy-cuda12x)')
    Difference(host='n4', package='rmm', theirs='25.6 (rmm-cu12)', ours='- (hosts: 25.8 \
(rmm-cu12))')
    """
    mine = gpu_stack(ours.get("packages") or {})
    theirs = {host: gpu_stack(d.get("packages") or {}) for host, d in hosts.items()}
    rows: list[Difference] = []
    for package in GPU_STACK:
        if package in mine:
            rows += [Difference(host, package, found.get(package) or "-", mine[package])
                     for host, found in theirs.items() if found.get(package) != mine[package]]
            continue
        versions = [found[package] for found in theirs.values() if package in found]
        if not versions:
            continue
        reference = max(versions, key=versions.count)  # the most common; ties: the first
        rows += [Difference(host, package, found[package], f"- (hosts: {reference})")
                 for host, found in theirs.items() if found.get(package, reference) != reference]
    return rows
