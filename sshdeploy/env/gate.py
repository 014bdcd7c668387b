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
  workers (:data:`GATED`) that are installed here, plus those the user names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sshdeploy.remote.agent.facts import describe

#: The packages ``distributed.versions`` compares (required and optional), in that order.
GATED = ("dask", "distributed", "cloudpickle", "msgpack", "toolz", "tornado", "numpy",
         "pandas", "lz4")
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
