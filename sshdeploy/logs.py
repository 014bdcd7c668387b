"""Every remote output line: tagged, logged, and kept in a bounded buffer.

Lines arrive from the agents (see :mod:`sshdeploy.remote.agent`) already split and
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


#: The last line of a traceback: ``pkg.mod.SomeError: text`` (not indented).
_EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b")
#: Exceptions that only say a connection closed: shutdown noise once the cluster closes.
SHUTDOWN_NOISE = ("CommClosedError", "StreamClosedError", "CancelledError")
#: A traceback longer than this is logged as it stands.
_MAX_TRACEBACK = 500


@dataclass
class _Traceback:
    """The lines of one traceback, held until its exception line says what it is."""

    level: int
    lines: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class LogBook:
    """Remote output of one cluster, by source.

    A traceback is logged at the level of the line that introduced it (its
    head, e.g. an INFO record with ``exc_info``), as one block, once its last
    line is known. After :meth:`closing`, a traceback of a closed connection
    (:data:`SHUTDOWN_NOISE`) is logged at DEBUG: expected shutdown noise must
    not reach users as errors. Every line is kept for ``get_logs`` whatever
    its level.

    Parameters
    ----------
    max_lines : int
        Lines kept per source; older ones are dropped (they were logged).
    """

    max_lines: int = 10000
    _lines: dict[str, deque[str]] = field(default_factory=dict)
    _loggers: dict[tuple[str, str], logging.Logger] = field(default_factory=dict)
    _levels: dict[str, int] = field(default_factory=dict)
    _tracebacks: dict[str, _Traceback] = field(default_factory=dict)
    _closing: bool = False

    def closing(self) -> None:
        """The cluster is closing: closed-connection tracebacks are now expected."""
        self._closing = True

    def record(self, label: str, host: str, role: str, stream: str, line: str) -> None:
        """Log one remote line and keep it under *label*."""
        buf = self._lines.get(label)
        if buf is None:
            buf = self._lines[label] = deque(maxlen=self.max_lines)
        buf.append(line)
        tb = self._tracebacks.get(label)
        if tb is None and line.startswith("Traceback (most recent call last)"):
            tb = self._tracebacks[label] = _Traceback(self._levels.get(label, logging.INFO))
        if tb is not None:
            tb.lines.append((host, role, line))
            if _EXCEPTION_LINE.match(line) or len(tb.lines) >= _MAX_TRACEBACK:
                del self._tracebacks[label]
                level = tb.level
                noise = self._closing and any(n in line for n in SHUTDOWN_NOISE)
                if noise:
                    level = logging.DEBUG
                for h, r, text in tb.lines:
                    self._emit(label, h, r, stream, text, level, noise)
            return
        level = line_level(line)
        if _LEVEL.search(line):
            self._levels[label] = level
        self._emit(label, host, role, stream, line, level)

    def flush(self) -> None:
        """Log the tracebacks still waiting for their last line (their process ended)."""
        for label, tb in list(self._tracebacks.items()):
            del self._tracebacks[label]
            for host, role, text in tb.lines:
                self._emit(label, host, role, "stderr", text, tb.level)

    def _emit(self, label: str, host: str, role: str, stream: str, line: str,
              level: int, noise: bool = False) -> None:
        log = self._loggers.get((role, host))
        if log is None:
            log = logging.getLogger(f"{ROOT_LOGGER}.{role}.{host.replace('.', '_')}")
            self._loggers[(role, host)] = log
        if log.isEnabledFor(level):
            # makeRecord + handle: Logger.log would also walk the stack for the
            # caller of every remote line (a third of the cost of a flood).
            record = log.makeRecord(
                log.name, level, "(remote)", 0, "%s", (line,), None,
                extra={
                    "sshdeploy_label": label,
                    "sshdeploy_host": host,
                    "sshdeploy_role": role,
                    "sshdeploy_stream": stream,
                    "sshdeploy_noise": noise,
                },
            )
            log.handle(record)

    def lines(self, label: str) -> list[str]:
        """Return the kept lines of *label* (oldest first)."""
        return list(self._lines.get(label, ()))

    def tail(self, label: str, n: int = 20) -> str:
        """Return the last *n* lines of *label* as one string."""
        return "\n".join(self.lines(label)[-n:])
