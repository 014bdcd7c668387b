"""Where remote output goes: the terminal, with a coloured prefix per source, and log files.

* A remote line is printed as ``[label] line``: ``[scheduler node1]``,
  ``[node2-0]`` (a worker), ``[node2]`` (the host agent). Only the prefix is
  coloured: the scheduler in bold magenta, the agent dim, workers in one colour
  per host (all workers of a host share it). The line itself is printed as it
  came, never interpreted as markup; by the level its record carries
  (``record.levelno``, parsed once in :mod:`sshdeploy.logs`), ERROR and
  CRITICAL lines are red, WARNING lines yellow.
* Lines are never wrapped or cut (``soft_wrap``), so they can be grepped and
  copied.
* :class:`RemoteLogHandler` prints them (a flusher thread batches writes) and
  writes one file per source under ``--log-directory``;
  :class:`ControllerLogHandler` does the same for the controller's own records.

The module imports neither asyncssh nor distributed.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import zlib
from collections import deque
from pathlib import Path
from typing import IO

from rich.color import ColorSystem
from rich.console import Console
from rich.style import Style
from rich.text import Text

from sshdeploy.logs import ROOT_LOGGER

__all__ = [
    "HIDE_REMOTE",
    "REMOTE_LOGGER",
    "ControllerLogHandler",
    "RemoteLogHandler",
    "log_file_name",
    "remote_prefix",
]

#: The logger on which remote log lines arrive as records.
REMOTE_LOGGER = ROOT_LOGGER  # one name: where sshdeploy.logs sends remote lines

#: A ``show_level`` that prints no remote line at all (``dask-ssh up`` without
#: ``-v``/``--log-level``): the lines still reach the files, the per-role and
#: per-host tails (:meth:`RemoteLogHandler.host_tail`) and the hosts' own logs.
HIDE_REMOTE = logging.CRITICAL + 10

_WORKER_COLOURS = ("cyan", "green", "blue", "yellow", "bright_cyan", "bright_green", "bright_blue")
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._@-]+")


def remote_prefix(label: str, role: str = "worker", host: str = "") -> Text:
    """Return the coloured ``[label]`` prefix of a remote line.

    Parameters
    ----------
    label : str
        ``"scheduler node1"``, ``"node2-0"`` or ``"node2"`` (the host agent).
    role : {"scheduler", "worker", "agent"}
        Chooses the colour.
    host : str
        The host; all workers of one host share a colour.

    Returns
    -------
    rich.text.Text

    Examples
    --------
    >>> remote_prefix("scheduler node1", "scheduler").plain
    '[scheduler node1]'
    """
    if role == "scheduler":
        style = "bold magenta"
    elif role == "agent":
        style = "dim"
    else:
        key = host or label.rsplit("-", 1)[0]
        style = _WORKER_COLOURS[zlib.crc32(key.encode()) % len(_WORKER_COLOURS)]
    return Text(f"[{label}]", style=style)


def log_file_name(label: str) -> str:
    """Return the file name used for *label* under ``--log-directory``.

    Examples
    --------
    >>> log_file_name("scheduler node1")
    'scheduler-node1.log'
    >>> log_file_name("node2-0")
    'node2-0.log'
    """
    safe = _UNSAFE_FILE_CHARS.sub("-", label).strip("-.") or "remote"
    return safe + ".log"


def _record_fields(record: logging.LogRecord) -> tuple[str, str, str]:
    """Return (label, role, host) of a remote record, guessing from its name if needed."""
    label = getattr(record, "sshdeploy_label", None)
    role = getattr(record, "sshdeploy_role", None) or "worker"
    host = getattr(record, "sshdeploy_host", None) or ""
    if not label:
        name = record.name
        if name.startswith(REMOTE_LOGGER + "."):
            name = name[len(REMOTE_LOGGER) + 1 :]
        label = name.rsplit(".", 1)[-1] or "remote"
    return str(label), str(role), str(host)


_COLOR_SYSTEMS = {
    "standard": ColorSystem.STANDARD,
    "256": ColorSystem.EIGHT_BIT,
    "truecolor": ColorSystem.TRUECOLOR,
    "windows": ColorSystem.WINDOWS,
}


class RemoteLogHandler(logging.Handler):
    """Print remote log records as ``[label] line`` and optionally write them to files.

    Install it on the :data:`REMOTE_LOGGER` logger. Records carry the
    attributes ``sshdeploy_label``, ``sshdeploy_role``, ``sshdeploy_host`` and
    ``sshdeploy_stream``; ``record.getMessage()`` is the raw remote line and
    ``record.levelno`` its level.

    Chatty workers must not be slowed down by the printing, so a line is not
    rendered by rich: its coloured prefix is rendered once per label, the
    line is appended to a buffer as text, and the buffer is written in one
    piece when it holds 64 KiB, or after at most ``flush_interval`` seconds
    (a small thread), or on :meth:`flush`. With no colour (not a terminal,
    ``NO_COLOR``) the writes are plain text.

    Parameters
    ----------
    console : rich.console.Console
        Where lines are printed (see :func:`sshdeploy.cli.console.make_console`); its colour system
        decides the styling.
    log_directory : str or Path, optional
        A directory on the controller; each label gets its own file
        (:func:`log_file_name`), appended to, plain text without colour.
        Files get every line, whatever *show_level* hides.
    tail_lines : int
        How many of the last lines are kept per role, for :meth:`tail`.
    others : logging.Handler, optional
        Gets the records that carry no ``sshdeploy_label``: sshdeploy's own
        messages logged on the same logger (e.g. "worker closed by itself").
        Without it they are printed with a label taken from the logger name.
    show_level : int
        Remote lines below this level are not printed (``--log-level``);
        WARNING and above always are, unless it is :data:`HIDE_REMOTE`
        (then none is).
    flush_interval : float
        The longest a printed line waits in the buffer, in seconds.

    Examples
    --------
    >>> import io, logging
    >>> from sshdeploy.cli.console import make_console
    >>> buf = io.StringIO()
    >>> handler = RemoteLogHandler(make_console(buf))
    >>> record = logging.makeLogRecord({"name": "sshdeploy.remote.scheduler", "msg": "ready",
    ...     "levelno": logging.INFO,
    ...     "sshdeploy_label": "scheduler node1", "sshdeploy_role": "scheduler"})
    >>> handler.emit(record)
    >>> handler.flush()
    >>> buf.getvalue()
    '[scheduler node1] ready\\n'
    >>> handler.close()
    """

    buffer_bytes = 64 * 1024

    def __init__(
        self,
        console: Console,
        log_directory: str | os.PathLike[str] | None = None,
        *,
        tail_lines: int = 20,
        others: logging.Handler | None = None,
        show_level: int = logging.NOTSET,
        flush_interval: float = 0.1,
    ) -> None:
        super().__init__(logging.DEBUG)
        self.others = others
        self.console = console
        self.show_level = (show_level if show_level >= HIDE_REMOTE
                           else min(show_level, logging.WARNING))
        self.log_directory = Path(log_directory) if log_directory is not None else None
        self._files: dict[str, IO[str]] = {}
        self._tails: dict[str, deque[str]] = {}
        self._host_tails: dict[str, deque[str]] = {}
        self._tail_lines = tail_lines
        self._prefixes: dict[tuple[str, str, str], str] = {}
        self._pending: list[str] = []
        self._pending_size = 0
        self._flush_interval = flush_interval
        self._closing = threading.Event()
        self._flusher: threading.Thread | None = None
        #: Print through ``console.print`` instead of writing to its file, so a
        #: ``rich.live.Live`` display on that console keeps the lines above it.
        self.through_console = False

    def emit(self, record: logging.LogRecord) -> None:
        """Buffer one record for printing and write it to its label's file."""
        if self.others is not None and not getattr(record, "sshdeploy_label", None):
            if record.levelno >= self.others.level:
                self.flush()  # keep the order of what was already printed
                self.others.handle(record)
            return
        try:
            label, role, host = _record_fields(record)
            line = record.getMessage().rstrip("\r\n")
            # Shutdown noise (a closed connection's traceback while the cluster
            # closes) is printed only when DEBUG lines were asked for.
            noise = getattr(record, "sshdeploy_noise", False)
            if record.levelno >= self.show_level and (
                not noise or self.show_level == logging.DEBUG
            ):
                self._add(self._render(label, role, host, line, record.levelno))
            if line.strip():
                tail = self._tails.get(role)
                if tail is None:
                    tail = self._tails[role] = deque(maxlen=self._tail_lines)
                tail.append(f"[{label}] {line}")
                if host:
                    kept = self._host_tails.get(host)
                    if kept is None:
                        kept = self._host_tails[host] = deque(maxlen=self._tail_lines)
                    kept.append(f"[{label}] {line}")
            if self.log_directory is not None:
                self._write(label, line)
        except Exception:  # pragma: no cover - logging's own error path
            self.handleError(record)

    def _render(self, label: str, role: str, host: str, line: str, levelno: int) -> str:
        key = (label, role, host)
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = self._prefixes[key] = (
                self._styled(f"[{label}]", str(remote_prefix(label, role, host).style)) + " "
            )
        if levelno >= logging.ERROR:
            line = self._styled(line, "red")
        elif levelno >= logging.WARNING:
            line = self._styled(line, "yellow")
        return prefix + line + "\n"

    def _styled(self, text: str, style: str) -> str:
        """Return *text* with the ANSI codes of *style*, as the console would print it."""
        system = _COLOR_SYSTEMS.get(self.console.color_system or "")
        if system is None or not style:
            return text
        parsed = Style.parse(style)
        if self.console.no_color:
            parsed = parsed.without_color
        return parsed.render(text, color_system=system)

    def _add(self, text: str) -> None:
        self._pending.append(text)
        self._pending_size += len(text)
        if self._pending_size >= self.buffer_bytes:
            self._write_pending()
        elif self._flusher is None and self._flush_interval > 0:
            self._flusher = threading.Thread(
                target=self._flush_periodically, name="dask-ssh output", daemon=True
            )
            self._flusher.start()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        if self.through_console:
            self.console.print(Text.from_ansi(text.removesuffix("\n")))
            return
        self.console.file.write(text)
        self.console.file.flush()

    def _flush_periodically(self) -> None:
        while not self._closing.wait(self._flush_interval):
            self.flush()

    def flush(self) -> None:
        """Write the buffered lines to the console and the log files now."""
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
            for stream in self._files.values():
                stream.flush()

    def _write(self, label: str, line: str) -> None:
        assert self.log_directory is not None
        stream = self._files.get(label)
        if stream is None:
            self.log_directory.mkdir(parents=True, exist_ok=True)
            path = self.log_directory / log_file_name(label)
            stream = open(path, "a", encoding="utf-8")
            self._files[label] = stream
        stream.write(line + "\n")

    def tail(self, role: str) -> list[str]:
        """Return the last non-blank lines printed for *role* (``"scheduler"``, ...)."""
        return list(self._tails.get(role, ()))

    def host_tail(self, host: str) -> list[str]:
        """Return the last non-blank lines of every source on *host* (its hostname).

        Examples
        --------
        >>> import io, logging
        >>> from sshdeploy.cli.console import make_console
        >>> buf = io.StringIO()
        >>> handler = RemoteLogHandler(make_console(buf), show_level=HIDE_REMOTE)
        >>> handler.emit(logging.makeLogRecord({"msg": "boom", "levelno": logging.ERROR,
        ...     "sshdeploy_label": "node2-0", "sshdeploy_host": "node2"}))
        >>> handler.flush()
        >>> buf.getvalue(), handler.host_tail("node2")
        ('', ['[node2-0] boom'])
        >>> handler.close()
        """
        return list(self._host_tails.get(host, ()))

    def close(self) -> None:
        """Write what is buffered, stop the flushing thread, close every per-label file."""
        self._closing.set()
        flusher, self._flusher = self._flusher, None
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(5)
        self.flush()
        with self.lock:  # type: ignore[union-attr]
            for stream in self._files.values():
                stream.close()
            self._files.clear()
        super().close()


class ControllerLogHandler(logging.Handler):
    """Print sshdeploy's own warnings (worker lost, restart, ...) as ``[dask-ssh] message``.

    Parameters
    ----------
    console : rich.console.Console
        Usually a console on stderr.
    level : int
        The lowest level printed.
    """

    def __init__(self, console: Console, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        """Print one record."""
        try:
            style = "red" if record.levelno >= logging.ERROR else "yellow"
            text = Text("[dask-ssh] ", style="bold")
            text.append(record.getMessage(), style=style)
            self.console.print(text)
        except Exception:  # pragma: no cover - logging's own error path
            self.handleError(record)


