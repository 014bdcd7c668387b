"""One row per host: what it runs, workers running out of wanted, restarts, last error.

Pure rendering of :class:`HostRow` values, for the cluster's text repr and its
HTML repr in Jupyter. No I/O.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sshdeploy.stages import HELLO, stage_info


@dataclass(frozen=True)
class HostRow:
    """The state of one host of a cluster.

    Attributes
    ----------
    host : str
        ``user@host:port``.
    role : str
        ``"scheduler"``, ``"workers"`` or ``"scheduler, workers"``.
    running, wanted : int
        Worker processes running, and wanted by the cluster's spec.
    restarts : int
        Workers of this host started again after they were lost.
    error : str
        The last failure seen on this host ("" for none).
    state : str
        Where its start stands: one of :data:`sshdeploy.stages.HOST_STATES`
        (``waiting``, ``connecting``, a stage's state, ``ready``, ``failed``...).
    each : str
        What each of its running workers has, as the scheduler reports it
        (``"1 thread, 11.72 GiB"``; "" when none runs yet).
    health : str
        One of :data:`sshdeploy.cluster.health.HEALTH_STATES` (``ok``, ``degraded``,
        ``quarantined``, ``lost``, ``spare``, ``idle``); "" when unknown.
    """

    host: str
    role: str
    running: int
    wanted: int
    restarts: int = 0
    error: str = ""
    state: str = ""
    each: str = ""
    health: str = ""


def worker_resources(infos: Iterable[Mapping[str, Any]]) -> str:
    """Say what each worker has, from the scheduler's worker infos of one host.

    Examples
    --------
    >>> worker_resources([{"nthreads": 1, "memory_limit": 2**30}] * 2)
    '1 thread, 1.00 GiB'
    >>> worker_resources([{"nthreads": 2, "memory_limit": 0}, {"nthreads": 1, "memory_limit": 0}])
    '1-2 threads, no memory limit'
    >>> worker_resources([])
    ''
    """
    from dask.utils import format_bytes

    infos = list(infos)
    if not infos:
        return ""
    threads = sorted({int(i.get("nthreads") or 0) for i in infos})
    memory = sorted({int(i.get("memory_limit") or 0) for i in infos})
    t = str(threads[0]) if len(threads) == 1 else f"{threads[0]}-{threads[-1]}"
    t += " thread" if threads == [1] else " threads"
    if memory == [0]:
        return f"{t}, no memory limit"
    m = [format_bytes(x) if x else "no limit" for x in (memory[0], memory[-1])]
    return f"{t}, {m[0]}" if len(memory) == 1 else f"{t}, {m[0]}-{m[1]}"


def rows_text(rows: Sequence[HostRow]) -> str:
    """Return the rows as an aligned text table.

    The ``each worker`` column (threads and memory of each worker) is shown
    once some host reports it, the ``health`` column once some host has one.

    Examples
    --------
    >>> print(rows_text([HostRow("node1", "scheduler", 0, 0), HostRow("node2", "workers", 2, 2)]))
    host   role       workers  restarts  last error
    node1  scheduler  -        0
    node2  workers    2/2      0
    >>> print(rows_text([HostRow("node2", "workers", 2, 2, each="1 thread, 1.00 GiB")]))
    host   role     workers  each worker         restarts  last error
    node2  workers  2/2      1 thread, 1.00 GiB  0
    >>> print(rows_text([HostRow("node2", "workers", 0, 0, health="lost")]))
    host   role     health  workers  restarts  last error
    node2  workers  lost    -        0
    """
    each = any(r.each for r in rows)
    health = any(r.health for r in rows)
    table = [_cells(("host", "role", "health", "workers", "each worker", "restarts",
                     "last error"), each, health)]
    for r in rows:
        workers = f"{r.running}/{r.wanted}" if r.wanted or r.running else "-"
        table.append(_cells((r.host, r.role, r.health, workers, r.each, str(r.restarts),
                             _short(r.error)), each, health))
    n = len(table[0]) - 1
    widths = [max(len(row[i]) for row in table) for i in range(n)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:n], widths, strict=True)),
                   row[n]]).rstrip()
        for row in table
    )


def rows_html(rows: Sequence[HostRow]) -> str:
    """Return the rows as an HTML table (every value escaped)."""
    each = any(r.each for r in rows)
    health = any(r.health for r in rows)
    head = "".join(f"<th style='text-align: left'>{h}</th>" for h in _cells(
        ("Host", "Role", "Health", "Workers", "Each worker", "Restarts", "Last error"), each,
        health))
    body = []
    for r in rows:
        workers = f"{r.running}/{r.wanted}" if r.wanted or r.running else "-"
        cells = _cells((r.host, r.role, r.health, workers, r.each, str(r.restarts),
                        _short(r.error)), each, health)
        body.append("<tr>" + "".join(f"<td style='text-align: left'>{html.escape(c)}</td>"
                                     for c in cells) + "</tr>")
    return (f"<details><summary><strong>Hosts</strong> ({len(rows)})</summary>"
            f"<table><tr>{head}</tr>{''.join(body)}</table></details>")


def _cells(cells: tuple[str, ...], each: bool, health: bool) -> tuple[str, ...]:
    """Drop the health and each-worker cells (third, fifth) when no row has them."""
    return tuple(c for i, c in enumerate(cells) if (i != 2 or health) and (i != 4 or each))


def _short(error: str, limit: int = 100) -> str:
    first = error.strip().splitlines()[0] if error.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


def host_state(*, failed: bool, connection: str, stages: Sequence[str | None], running: int,
               wanted: int, runs_scheduler: bool, scheduler_running: bool) -> str:
    """Return where one host's start stands: one of :data:`sshdeploy.stages.HOST_STATES`.

    Parameters
    ----------
    failed : bool
        The host has an error and no worker running.
    connection : str
        Its SSH connection's state (``waiting``, ``connecting``, ``failed``, ...).
    stages : sequence of str or None
        The last ``stage`` of each of its agents' channels (``"hello"`` once one runs).
    running, wanted : int
        Its workers running, and wanted.
    runs_scheduler, scheduler_running : bool
        Whether the scheduler is placed on it, and runs.

    Examples
    --------
    >>> host_state(failed=False, connection="connected", stages=["import"], running=0,
    ...            wanted=2, runs_scheduler=False, scheduler_running=False)
    'importing distributed'
    >>> host_state(failed=False, connection="connected", stages=["hello"], running=2,
    ...            wanted=2, runs_scheduler=False, scheduler_running=False)
    'ready'
    """
    if failed:
        return "failed"
    if connection in ("waiting", "connecting", "failed"):
        return connection
    if any(stage != HELLO for stage in stages) or not stages:
        return stage_info(next((st for st in stages if st != HELLO), None)).state
    if wanted and running < wanted:
        return "starting workers"
    if runs_scheduler and not scheduler_running:
        return "starting scheduler"
    return "ready"
