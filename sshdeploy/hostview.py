"""One row per host: what it runs, workers running out of wanted, restarts, last error.

Pure rendering of :class:`HostRow` values, for the cluster's text repr and its
HTML repr in Jupyter. No I/O.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass


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
    """

    host: str
    role: str
    running: int
    wanted: int
    restarts: int = 0
    error: str = ""
    state: str = ""


def rows_text(rows: Sequence[HostRow]) -> str:
    """Return the rows as an aligned text table.

    Examples
    --------
    >>> print(rows_text([HostRow("node1", "scheduler", 0, 0), HostRow("node2", "workers", 2, 2)]))
    host   role       workers  restarts  last error
    node1  scheduler  -        0
    node2  workers    2/2      0
    """
    table = [("host", "role", "workers", "restarts", "last error")]
    for r in rows:
        workers = f"{r.running}/{r.wanted}" if r.wanted or r.running else "-"
        table.append((r.host, r.role, workers, str(r.restarts), _short(r.error)))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)),
                   row[4]]).rstrip()
        for row in table
    )


def rows_html(rows: Sequence[HostRow]) -> str:
    """Return the rows as an HTML table (every value escaped)."""
    head = "".join(f"<th style='text-align: left'>{h}</th>"
                   for h in ("Host", "Role", "Workers", "Restarts", "Last error"))
    body = []
    for r in rows:
        workers = f"{r.running}/{r.wanted}" if r.wanted or r.running else "-"
        cells = (r.host, r.role, workers, str(r.restarts), _short(r.error))
        body.append("<tr>" + "".join(f"<td style='text-align: left'>{html.escape(c)}</td>"
                                     for c in cells) + "</tr>")
    return (f"<details><summary><strong>Hosts</strong> ({len(rows)})</summary>"
            f"<table><tr>{head}</tr>{''.join(body)}</table></details>")


def _short(error: str, limit: int = 100) -> str:
    first = error.strip().splitlines()[0] if error.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"
