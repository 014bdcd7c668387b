"""Every remote output line: tagged, logged, and kept in a bounded buffer.

Lines arrive from the agents (see :mod:`sshdeploy.agent`) already split and
attributed to a source (``"scheduler node1"``, ``"node2-0"``, ``"node2"``).
:class:`LogBook` sends each to Python logging, on the logger
``sshdeploy.remote.<role>.<host>`` with the extra record attributes
``sshdeploy_label``, ``sshdeploy_host``, ``sshdeploy_role`` and
``sshdeploy_stream``, and keeps the last lines of every source for
:meth:`sshdeploy.SSHCluster.get_logs` and for error messages.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from dataclasses import dataclass, field

ROOT_LOGGER = "sshdeploy.remote"

_LEVEL = re.compile(r" - (DEBUG|INFO|WARNING|ERROR|CRITICAL) - ")


def line_level(line: str) -> int:
    """Return the logging level a remote line was written at (INFO if unknown).

    Examples
    --------
    >>> line_level("2026-01-01 10:00:00,000 - distributed.worker - WARNING - slow")
    30
    >>> line_level("hello")
    20
    """
    m = _LEVEL.search(line)
    return int(logging.getLevelName(m.group(1))) if m else logging.INFO


@dataclass
class LogBook:
    """Remote output of one cluster, by source.

    Parameters
    ----------
    max_lines : int
        Lines kept per source; older ones are dropped (they were logged).
    """

    max_lines: int = 10000
    _lines: dict[str, deque[str]] = field(default_factory=dict)
    _loggers: dict[tuple[str, str], logging.Logger] = field(default_factory=dict)

    def record(self, label: str, host: str, role: str, stream: str, line: str) -> None:
        """Log one remote line and keep it under *label*."""
        buf = self._lines.get(label)
        if buf is None:
            buf = self._lines[label] = deque(maxlen=self.max_lines)
        buf.append(line)
        log = self._loggers.get((role, host))
        if log is None:
            log = logging.getLogger(f"{ROOT_LOGGER}.{role}.{host.replace('.', '_')}")
            self._loggers[(role, host)] = log
        level = line_level(line)
        if log.isEnabledFor(level):
            log.log(
                level,
                "%s",
                line,
                extra={
                    "sshdeploy_label": label,
                    "sshdeploy_host": host,
                    "sshdeploy_role": role,
                    "sshdeploy_stream": stream,
                },
            )

    def lines(self, label: str) -> list[str]:
        """Return the kept lines of *label* (oldest first)."""
        return list(self._lines.get(label, ()))

    def tail(self, label: str, n: int = 20) -> str:
        """Return the last *n* lines of *label* as one string."""
        return "\n".join(self.lines(label)[-n:])
