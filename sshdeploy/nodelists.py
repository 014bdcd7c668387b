"""The node lists of batch systems, as hosts.

Inside a PBS/Torque or Slurm job the hosts come from the job's environment:
:func:`load_pbs_nodefile` reads ``$PBS_NODEFILE``, :func:`parse_slurm_nodelist`
expands ``$SLURM_JOB_NODELIST`` and :func:`hosts_from_environment` picks
whichever the current job has.  Names are expanded and validated with the
rules of :mod:`sshdeploy.hosts`; every problem is raised as
:class:`~sshdeploy.errors.HostfileError`.

This module is a leaf: no network, no asyncssh, no distributed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from .errors import HostfileError
from .hostfile import expand_pattern, failer, read_text
from .hosts import Host, hostname_problem

__all__ = [
    "hosts_from_environment",
    "load_pbs_nodefile",
    "parse_slurm_nodelist",
]

_TASKS_RE = re.compile(r"([0-9]+)(?:\(x([0-9]+)\))?")


def _split_nodelist(text: str) -> list[str]:
    """Split at commas and spaces that are outside brackets."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch in ", \t\n" and depth <= 0:
            items.append("".join(current))
            current = []
            continue
        depth += {"[": 1, "]": -1}.get(ch, 0)
        current.append(ch)
    items.append("".join(current))
    return items


def parse_slurm_nodelist(text: str, *, path: str = "SLURM_JOB_NODELIST") -> list[str]:
    """Expand a Slurm node list such as ``$SLURM_JOB_NODELIST``.

    Commas separate entries except inside brackets, where they separate range
    items.  Each entry is expanded like :func:`~sshdeploy.hosts.expand_ranges` and validated as
    a host name.

    Parameters
    ----------
    text : str
        E.g. ``"node[01-03,07],gpu[1-2],login"``.
    path : str
        Shown in error messages.

    Returns
    -------
    list of str
        Host names in order; empty for an empty string.

    Raises
    ------
    HostfileError
        On a bad range, an empty entry or an invalid host name.

    Examples
    --------
    >>> parse_slurm_nodelist("node[01-03,07],gpu[1-2],login")
    ['node01', 'node02', 'node03', 'node07', 'gpu1', 'gpu2', 'login']
    """
    fail = failer(path, 0, text)
    if not text.strip():
        return []
    names: list[str] = []
    for item in _split_nodelist(text.strip()):
        if not item:
            raise fail("empty entry in node list (two commas in a row, or a trailing comma)")
        for name in expand_pattern(item, fail):
            problem = hostname_problem(name)
            if problem:
                raise fail(problem)
            names.append(name)
    return names


def load_pbs_nodefile(path: str | os.PathLike[str]) -> list[Host]:
    """Read a PBS/Torque ``$PBS_NODEFILE``.

    The file names one host per line, repeated once per slot.  Repeats collapse
    into one :class:`Host` with ``slots`` set to the count, in first-seen order.

    Parameters
    ----------
    path : str or path-like
        The node file.

    Returns
    -------
    list of Host
        One per distinct host, ``slots`` >= 1.

    Raises
    ------
    HostfileError
        If the file cannot be read, names no host, or a line is not a host name.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     nodefile = pathlib.Path(tmp, "nodes")
    ...     _ = nodefile.write_text("n1\\nn1\\nn2\\nn1\\n")
    ...     [(h.hostname, h.slots) for h in load_pbs_nodefile(nodefile)]
    [('n1', 3), ('n2', 1)]
    """
    name = os.fspath(path)
    counts: dict[str, int] = {}
    first_line: dict[str, int] = {}
    text = read_text(name, "PBS node file")
    for number, raw in enumerate(text.split("\n"), start=1):
        host = raw.strip()
        if not host or host.startswith("#"):
            continue
        problem = hostname_problem(host)
        if problem:
            raise HostfileError(name, number, problem, raw)
        counts[host] = counts.get(host, 0) + 1
        first_line.setdefault(host, number)
    if not counts:
        raise HostfileError(name, 0, "no hosts in the PBS node file")
    return [
        Host(host, slots=count, source=f"{name}:{first_line[host]}")
        for host, count in counts.items()
    ]


def _parse_tasks_per_node(text: str) -> list[int] | None:
    """``"2(x3),1"`` -> ``[2, 2, 2, 1]``; None if empty or malformed."""
    counts: list[int] = []
    for item in text.strip().split(","):
        match = _TASKS_RE.fullmatch(item.strip())
        if not match:
            return None
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def hosts_from_environment(env: Mapping[str, str] | None = None) -> list[Host] | None:
    """Return the hosts of the current batch job, or None outside one.

    ``PBS_NODEFILE`` wins (see :func:`load_pbs_nodefile`); otherwise
    ``SLURM_JOB_NODELIST`` (or the older ``SLURM_NODELIST``) is expanded, and
    ``SLURM_TASKS_PER_NODE`` gives each host's ``slots`` when it matches the
    node list.  Empty variables count as unset.

    Parameters
    ----------
    env : Mapping[str, str], optional
        The environment to read; default ``os.environ``.

    Returns
    -------
    list of Host or None

    Raises
    ------
    HostfileError
        If the node file or node list is invalid.

    Examples
    --------
    >>> env = {"SLURM_JOB_NODELIST": "n[1-3]", "SLURM_TASKS_PER_NODE": "2(x2),1"}
    >>> [(h.hostname, h.slots) for h in hosts_from_environment(env)]
    [('n1', 2), ('n2', 2), ('n3', 1)]
    >>> hosts_from_environment({}) is None
    True
    """
    env = os.environ if env is None else env
    nodefile = env.get("PBS_NODEFILE", "").strip()
    if nodefile:
        return load_pbs_nodefile(nodefile)
    variable = "SLURM_JOB_NODELIST" if env.get("SLURM_JOB_NODELIST") else "SLURM_NODELIST"
    names = parse_slurm_nodelist(env.get(variable, ""), path=variable)
    if not names:
        return None
    tasks = _parse_tasks_per_node(env.get("SLURM_TASKS_PER_NODE", ""))
    slots: list[int | None] = list(tasks) if tasks and len(tasks) == len(names) else []
    slots = slots or [None] * len(names)
    return [
        Host(name, slots=count if count else None, source=variable)
        for name, count in zip(names, slots, strict=True)
    ]
