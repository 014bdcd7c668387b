"""Live start-up status (``dask-ssh``, Jupyter): a table on a terminal, plain lines elsewhere.

Pure rendering of :class:`~sshdeploy.views.hostrows.HostRow` lists (as returned by
``SSHCluster.host_rows()``) while a cluster starts. No I/O: :mod:`sshdeploy.cli.run`
polls the rows and prints what this module returns.

* :class:`StatusView` turns rows into a rich renderable: one row per host, or,
  with more than ``summarise_above`` hosts, the counts per state plus the
  failed hosts only.
* :func:`changed_lines` compares two row lists and returns one plain line per
  host whose state changed (no control codes), for output that is not a terminal.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from sshdeploy.stages import HOST_STATES
from sshdeploy.views.hostrows import HostRow

__all__ = ["STATE_ORDER", "StatusView", "changed_lines", "first_line", "summary_text"]

#: The states of a host's start, in the order a start goes through them.
STATE_ORDER = HOST_STATES
_STATE_STYLE = {"ready": "green", "failed": "bold red", "quarantined": "red", "lost": "red"}
_STATE_WIDTH = max(len(s) for s in STATE_ORDER)  # the column does not jump as states change
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def first_line(error: str, limit: int = 120) -> str:
    """Return the first non-blank line of *error*, cut to *limit* characters.

    Examples
    --------
    >>> first_line("\\nConnectionRefusedError: refused\\n  more")
    'ConnectionRefusedError: refused'
    """
    line = next((ln.strip() for ln in error.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _workers(row: HostRow) -> str:
    return f"{row.running}/{row.wanted}" if row.wanted or row.running else "-"


def _state(row: HostRow) -> str:
    return row.state or "starting"


def summary_text(rows: Sequence[HostRow]) -> str:
    """Return the counts per state, in start order, e.g. ``28 ready, 1 failed``.

    Examples
    --------
    >>> summary_text([HostRow("a", "workers", 1, 1, state="ready"),
    ...               HostRow("b", "workers", 0, 1, state="connecting"),
    ...               HostRow("c", "workers", 1, 1, state="ready")])
    '1 connecting, 2 ready'
    """
    counts = Counter(_state(r) for r in rows)
    known = [s for s in STATE_ORDER if s in counts]
    others = sorted(s for s in counts if s not in STATE_ORDER)
    return ", ".join(f"{counts[s]} {s}" for s in [*known, *others])


@dataclass(frozen=True)
class StatusView:
    """Render the start-up state of a cluster's hosts for a ``rich.live.Live`` display.

    Parameters
    ----------
    summarise_above : int
        With more hosts than this, show the counts per state and the failed
        hosts only, so the display stays readable on many hosts.
    label : str
        What starts, at the head of the title (``dask-ssh``, ``SSHCluster``).

    Examples
    --------
    >>> from rich.console import Console
    >>> console = Console(width=80, color_system=None)
    >>> with console.capture() as cap:
    ...     console.print(StatusView().render(
    ...         [HostRow("root@n1:22", "scheduler", 0, 0, state="ready")], 1.5))
    >>> "root@n1:22" in cap.get() and "ready" in cap.get()
    True
    """

    summarise_above: int = 20
    label: str = "dask-ssh"

    def render(self, rows: Sequence[HostRow], elapsed: float) -> RenderableType:
        """Return the display for *rows*, *elapsed* seconds after the start began."""
        running = sum(r.running for r in rows)
        wanted = sum(r.wanted for r in rows)
        title = (f"{self.label}: starting on {len(rows)} host{'s' if len(rows) != 1 else ''}, "
                 f"workers {running}/{wanted} ready, {elapsed:.1f} s")
        if len(rows) <= self.summarise_above:
            return self._table(title, rows)
        failed = [r for r in rows if _state(r) == "failed"]
        parts: list[RenderableType] = [Text(title, style="bold"), Text(summary_text(rows))]
        if failed:
            parts.append(self._table(None, failed))
        return Group(*parts)

    @staticmethod
    def _table(title: str | None, rows: Sequence[HostRow]) -> Table:
        table = Table(title=title, title_justify="left", box=None, pad_edge=False,
                      show_edge=False, title_style="bold")
        each = any(r.each for r in rows)
        columns = ("host", "role", "state", "workers", "each worker", "error")
        for column in columns if each else columns[:4] + columns[5:]:
            table.add_column(column, no_wrap=column != "error", overflow="ellipsis",
                             min_width=_STATE_WIDTH if column == "state" else None)
        for r in rows:
            state = _state(r)
            cells: list[Any] = [r.host, r.role, Text(state, style=_STATE_STYLE.get(state, "")),
                                _workers(r), r.each, _error(r) if state == "failed" else ""]
            table.add_row(*(cells if each else cells[:4] + cells[5:]))
        return table


def changed_lines(old: Sequence[HostRow], new: Sequence[HostRow], elapsed: float) -> list[str]:
    """Return one plain line per host of *new* whose state differs from *old*.

    A host absent from *old* counts as changed. A failed host's line ends with
    the first line of its error. The lines hold no control codes.

    Parameters
    ----------
    old, new : sequence of HostRow
        The rows of the previous poll (empty at first) and of this one.
    elapsed : float
        Seconds since the start began.

    Examples
    --------
    >>> a = [HostRow("root@n2:22", "workers", 0, 1, state="connecting")]
    >>> b = [HostRow("root@n2:22", "workers", 1, 1, state="ready")]
    >>> changed_lines([], a, 0.04)
    ['dask-ssh: root@n2:22: connecting (0.0 s)']
    >>> changed_lines(a, b, 2.25)
    ['dask-ssh: root@n2:22: ready, workers 1/1 (2.2 s)']
    >>> changed_lines(b, b, 3.0)
    []
    """
    before = {r.host: _state(r) for r in old}
    lines = []
    for r in new:
        state = _state(r)
        if before.get(r.host) == state:
            continue
        detail = state
        if state == "ready" and r.wanted:
            detail += f", workers {_workers(r)}"
        elif state == "failed" and r.error.strip():
            detail += f": {_error(r)}"
        lines.append(_plain(f"dask-ssh: {r.host}: {detail} ({elapsed:.1f} s)"))
    return lines


def _error(row: HostRow) -> str:
    """The first line of the row's error, without the host name the row shows already."""
    return first_line(row.error).removeprefix(f"{row.host}: ")


def _plain(line: str) -> str:
    """Drop ANSI sequences and other control characters (an error text may carry them)."""
    return "".join(c for c in _ANSI.sub("", line) if c.isprintable())
