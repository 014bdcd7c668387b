"""Terminal output of ``dask-ssh``: banner, remote log lines, tables, summary.

Everything the command line prints goes through this module, so the colour
rules live in one place:

* Colour and other ANSI styling follow rich's own rules: only on a terminal,
  none with ``NO_COLOR`` (https://no-color.org), on a non-terminal too with
  ``FORCE_COLOR``; ``COLUMNS`` sets the width.
* A remote line is printed as ``[label] line``: ``[scheduler node1]``,
  ``[node2-0]`` (a worker), ``[node2]`` (the host agent). Only the prefix is
  coloured: the scheduler in bold magenta, the agent dim, workers in one colour
  per host (all workers of a host share it). The line itself is printed as it
  came, never interpreted as markup; by the level its record carries
  (``record.levelno``, parsed once in :mod:`sshdeploy.logs`), ERROR and
  CRITICAL lines are red, WARNING lines yellow.
* Lines are never wrapped or cut (``soft_wrap``), so they can be grepped and
  copied.

The module imports neither asyncssh nor distributed.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import select
import shlex
import sys
import threading
import zlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from rich.color import ColorSystem
from rich.console import Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

from sshdeploy.logs import ROOT_LOGGER

__all__ = [
    "REMOTE_LOGGER",
    "ControllerLogHandler",
    "GuardedStream",
    "RemoteLogHandler",
    "log_file_name",
    "make_console",
    "mask_env",
    "output_closed",
    "print_banner",
    "print_check_table",
    "print_plan",
    "remote_prefix",
]

#: The logger on which remote log lines arrive as records.
REMOTE_LOGGER = ROOT_LOGGER  # one name: where sshdeploy.logs sends remote lines

_WORKER_COLOURS = ("cyan", "green", "blue", "yellow", "bright_cyan", "bright_green", "bright_blue")
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._@-]+")


class GuardedStream:
    """A text stream whose reader may go away: a closed pipe or terminal is not a crash.

    ``dask-ssh ... | head -3`` closes stdout under the running cluster; a
    closed terminal (SIGHUP) makes writes fail with EIO. The first write or
    flush that fails with such an error sets :attr:`closed_by_reader` and
    points the file descriptor at ``/dev/null`` (so that nothing, not even
    Python's last flush at exit, fails again); every later write is dropped.
    The caller decides what a closed output means (``dask-ssh`` stops the
    cluster when stdout goes).

    Parameters
    ----------
    stream : file-like
        The stream to guard, e.g. ``sys.stdout``.

    Examples
    --------
    >>> class Pipe:
    ...     def write(self, text): raise BrokenPipeError(32, "Broken pipe")
    ...     def flush(self): pass
    >>> out = GuardedStream(Pipe())
    >>> out.write("lost")
    0
    >>> out.closed_by_reader.is_set()
    True
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.closed_by_reader = threading.Event()

    def write(self, text: str) -> int:
        """Write *text*, or drop it once the reader has gone."""
        if self.closed_by_reader.is_set():
            return 0
        try:
            return self.stream.write(text)
        except OSError as err:
            self._gone(err)
            return 0

    def flush(self) -> None:
        """Flush, unless the reader has gone."""
        if self.closed_by_reader.is_set():
            return
        try:
            self.stream.flush()
        except OSError as err:
            self._gone(err)

    def _gone(self, err: OSError) -> None:
        if err.errno not in _READER_GONE and not isinstance(err, BrokenPipeError):
            raise err
        self.closed_by_reader.set()
        try:
            fd = self.stream.fileno()
        except (OSError, ValueError, AttributeError):
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)  # Python's own flush at exit must not fail again
        finally:
            os.close(devnull)

    def reader_gone(self) -> bool:
        """Whether the reader has gone, asking the OS without writing anything.

        A pipe whose reading end is closed reports POLLERR and a hung-up
        terminal POLLHUP, so an idle ``dask-ssh ... | head -3`` notices too.
        """
        if not self.closed_by_reader.is_set():
            try:
                fd = self.stream.fileno()
                poller = select.poll()
                poller.register(fd, select.POLLOUT)
                events = poller.poll(0)
            except (OSError, ValueError, AttributeError):  # no file descriptor: a StringIO
                return False
            if any(flags & (select.POLLERR | select.POLLHUP) for _, flags in events):
                self._gone(BrokenPipeError(errno.EPIPE, "reader gone"))
        return self.closed_by_reader.is_set()

    def isatty(self) -> bool:
        """Whether the stream is a terminal (False once it has gone)."""
        if self.closed_by_reader.is_set():
            return False
        try:
            return bool(self.stream.isatty())
        except (OSError, ValueError, AttributeError):
            return False

    def fileno(self) -> int:
        """The file descriptor of the stream."""
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        """The encoding of the stream (utf-8 when it says none)."""
        return getattr(self.stream, "encoding", None) or "utf-8"


_READER_GONE = frozenset({errno.EPIPE, errno.EIO, errno.ECONNRESET, errno.ENXIO})


def output_closed(console: Console) -> bool:
    """Whether the reader of *console*'s stream has gone (see :class:`GuardedStream`)."""
    stream = console.file
    return isinstance(stream, GuardedStream) and stream.reader_gone()


def make_console(stream: IO[str] | None = None, *, width: int | None = None) -> Console:
    """Return a rich console for *stream*: no markup, no highlighting, no wrapping.

    Parameters
    ----------
    stream : file-like, optional
        Where to write (default: ``sys.stdout`` at call time).
    width : int, optional
        Fixed width; by default the terminal's (or ``COLUMNS``, as rich decides).

    Returns
    -------
    rich.console.Console
        Printed strings are never read as markup, emoji codes or highlighted;
        long lines are not wrapped (``soft_wrap``). Colour follows rich's rules
        (a terminal, ``NO_COLOR``, ``FORCE_COLOR``). The stream is wrapped in a
        :class:`GuardedStream`, so a reader that goes away is noted, not raised.

    Examples
    --------
    >>> import io
    >>> buf = io.StringIO()
    >>> make_console(buf).print("[b]plain[/b]")
    >>> buf.getvalue()
    '[b]plain[/b]\\n'
    """
    out = sys.stdout if stream is None else stream
    return Console(
        file=out if isinstance(out, GuardedStream) else GuardedStream(out),  # type: ignore[arg-type]
        markup=False,
        emoji=False,
        highlight=False,
        soft_wrap=True,
        width=width,
    )


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
        Where lines are printed (see :func:`make_console`); its colour system
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
        WARNING and above always are.
    flush_interval : float
        The longest a printed line waits in the buffer, in seconds.

    Examples
    --------
    >>> import io, logging
    >>> buf = io.StringIO()
    >>> handler = RemoteLogHandler(make_console(buf))
    >>> record = logging.makeLogRecord({"name": "sshdeploy.remote.scheduler", "msg": "ready",
    ...     "levelno": logging.INFO,
    ...     "sshdeploy_label": "scheduler node1", "sshdeploy_role": "scheduler"})
    >>> handler.handle(record)
    True
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
        self.show_level = min(show_level, logging.WARNING)
        self.log_directory = Path(log_directory) if log_directory is not None else None
        self._files: dict[str, IO[str]] = {}
        self._tails: dict[str, deque[str]] = {}
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
            stream = open(path, "a", encoding="utf-8")  # noqa: SIM115
            self._files[label] = stream
        stream.write(line + "\n")

    def tail(self, role: str) -> list[str]:
        """Return the last non-blank lines printed for *role* (``"scheduler"``, ...)."""
        return list(self._tails.get(role, ()))

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


def print_banner(
    console: Console,
    *,
    scheduler_address: str,
    dashboard_link: str | None,
    scheduler_host: str,
    workers_by_host: Mapping[str, Sequence[str]],
    versions: Mapping[str, str] | None = None,
    forwarded_from: str | None = None,
    failed_hosts: Mapping[str, str] | None = None,
    connect_line: str | None = None,
    each_by_host: Mapping[str, str] | None = None,
) -> None:
    """Print the banner shown once the cluster runs.

    Parameters
    ----------
    console : rich.console.Console
    scheduler_address : str
        E.g. ``tcp://10.0.0.1:8786``.
    dashboard_link : str or None
    scheduler_host : str
        The scheduler's host as ``user@host:port``.
    workers_by_host : Mapping[str, Sequence[str]]
        Host (``user@host:port``) to the names of the workers it runs.
    versions : Mapping[str, str], optional
        Shown in the title line, e.g. ``{"sshdeploy": "0.1.0", "distributed": "2026.8.0"}``.
    forwarded_from : str, optional
        The scheduler's own address when *scheduler_address* is a local port
        forwarded to it through SSH; said in one line.
    failed_hosts : Mapping[str, str], optional
        Hosts left out (``--min-workers``) and why: one line each.
    connect_line : str, optional
        The Python line that connects a client (``--tls``), printed whole.
    each_by_host : Mapping[str, str], optional
        Host to what each of its workers has (``1 thread, 11.72 GiB``).

    Examples
    --------
    >>> import io
    >>> buf = io.StringIO()
    >>> print_banner(make_console(buf), scheduler_address="tcp://n1:8786",
    ...     dashboard_link=None, scheduler_host="n1:22", workers_by_host={"n2:22": ["n2-0"]})
    >>> print(buf.getvalue().strip())
    dask-ssh
      scheduler  tcp://n1:8786  on n1:22
      workers    1 on 1 host
        n2:22  n2-0
    """
    title = Text("dask-ssh", style="bold")
    if versions:
        title.append("  " + " · ".join(f"{k} {v}" for k, v in versions.items()), style="dim")
    console.print(title)
    line = Text("  scheduler  ")
    line.append(scheduler_address, style="bold magenta")
    line.append(f"  on {scheduler_host}")
    console.print(line)
    if forwarded_from:
        console.print(Text(f"  scheduler reached through SSH ({forwarded_from} on "
                           f"{scheduler_host})"))
    if dashboard_link:
        line = Text("  dashboard  ")
        line.append(dashboard_link, style="underline")
        console.print(line)
    n_workers = sum(len(names) for names in workers_by_host.values())
    n_hosts = len(workers_by_host)
    console.print(Text(f"  workers    {n_workers} on {n_hosts} host{'s' if n_hosts != 1 else ''}"))
    width = max((len(h) for h in workers_by_host), default=0)
    for host, names in workers_by_host.items():
        line = Text(f"    {host.ljust(width)}  ")
        line.append(", ".join(names), style=remote_prefix(names[0] if names else host).style)
        each = (each_by_host or {}).get(host)
        if each:
            line.append(f"  ({each} each)", style="dim")
        console.print(line)
    for host, reason in (failed_hosts or {}).items():
        line = Text("  left out  ", style="bold yellow")
        line.append(f"{host}: {_one_line(reason)}")
        console.print(line, soft_wrap=True)
    if connect_line:
        console.print(Text("  connect with:"))
        console.print(Text(connect_line), soft_wrap=True, highlight=False)


#: What ``--dry-run`` shows instead of an ``--env`` value.
MASK = "***"


def mask_env(text: str, env: Mapping[str, str]) -> str:
    """Replace the value of every ``KEY=value`` of *env* in *text* by :data:`MASK`.

    Plain and shell-quoted spellings are both masked; the names stay.

    Examples
    --------
    >>> mask_env("export TOKEN='s3 cret' A=1; run", {"TOKEN": "s3 cret", "A": "1"})
    'export TOKEN=*** A=***; run'
    """
    for key, value in env.items():
        for spelled in {value, shlex.quote(value), repr(value)}:
            text = text.replace(f"{key}={spelled}", f"{key}={MASK}")
    return text


def _shown_options(options: Mapping[str, Any], env: Mapping[str, str]) -> str:
    parts = []
    for key, value in options.items():
        if isinstance(value, Mapping) and (key == "env" or (env and set(value) <= set(env))):
            value = {k: MASK for k in value}
        text = f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"
        parts.append(mask_env(text, env))
    return " ".join(parts)


def print_plan(
    console: Console, plans: Iterable[Any], env: Mapping[str, str] | None = None
) -> None:
    """Print what ``--dry-run`` would start: per host, role, names, Python, command.

    Parameters
    ----------
    console : rich.console.Console
    plans : iterable of RemotePlan
        Objects with ``host``, ``role``, ``names``, ``python``, ``command``
        and ``options`` attributes (see ``SSHCluster.remote_commands``).
    env : Mapping[str, str], optional
        The ``--env`` variables: their names are shown, their values masked
        (``TOKEN=***``) wherever they appear as ``KEY=value``.

    Examples
    --------
    >>> import io, types
    >>> buf = io.StringIO()
    >>> plan = types.SimpleNamespace(host="u@n1:22", role="scheduler", names=["scheduler"],
    ...     python="/usr/bin/python3", command="TOKEN=abc python3 -m x",
    ...     options={"port": 8786, "env": {"TOKEN": "abc"}})
    >>> print_plan(make_console(buf), [plan], env={"TOKEN": "abc"})
    >>> print(buf.getvalue().strip())
    # u@n1:22  scheduler  scheduler
    #   python:  /usr/bin/python3
    #   options: port=8786 env={'TOKEN': '***'}
    TOKEN=*** python3 -m x
    """
    env = dict(env or {})
    plain = not console.is_terminal  # off a terminal: plain writes, linear and fast
    out: list[str] = []
    first = True
    for plan in plans:
        if first:
            settings = getattr(plan, "settings", None) or {}
            if settings:
                shown = " ".join(f"{k}={v}" for k, v in settings.items())
                _emit(console, out, plain, Text(f"# settings: {shown}", style="dim"))
                _emit(console, out, plain, Text(""))
        else:
            _emit(console, out, plain, Text(""))
        first = False
        head = Text("# ")
        head.append(str(plan.host), style="bold")
        head.append(f"  {plan.role}  ", style="magenta" if plan.role == "scheduler" else "cyan")
        head.append(", ".join(plan.names))
        _emit(console, out, plain, head)
        _emit(console, out, plain, Text(f"#   python:  {plan.python}", style="dim"))
        options = getattr(plan, "options", None) or {}
        if options:
            _emit(console, out, plain,
                  Text(f"#   options: {_shown_options(options, env)}", style="dim"))
        share = getattr(plan, "share", "")
        if share:
            _emit(console, out, plain, Text(f"#   each worker: {share}", style="dim"))
        _emit(console, out, plain, Text(mask_env(str(plan.command), env)))
        if len(out) > 4096:
            console.file.write("".join(out))
            out.clear()
    if out:
        console.file.write("".join(out))
        console.file.flush()


def _emit(console: Console, out: list[str], plain: bool, text: Text) -> None:
    """Print *text* with rich on a terminal; else queue it as a plain line."""
    if plain:
        out.append(text.plain + "\n")
    else:
        console.print(text)


_VERSION_KEYS = ("python", "dask", "distributed")


def print_check_table(console: Console, checks: Sequence[Any]) -> None:
    """Print the ``--check`` table (one row per host), then the reason of each failure.

    The table's cells stay short; the full reason of each failed host follows
    it, one line per host (``FAILED host: reason``) that is never wrapped, so
    ``dask-ssh --check ... | grep`` finds every message whole. Off a terminal
    the table is not wrapped either: it takes the width it needs.

    Parameters
    ----------
    console : rich.console.Console
    checks : sequence of HostCheck
        Objects with ``host``, ``reachable``, ``authenticated``, ``python``,
        ``versions``, ``local_versions``, ``error`` and ``ok``.

    Notes
    -----
    A version that differs from the controller's is shown as
    ``remote (local here)`` in red.
    """
    console.print(Text("dask-ssh --check", style="italic"))
    table = Table(show_lines=False)
    table.add_column("host", no_wrap=True)
    table.add_column("reachable")
    table.add_column("auth")
    table.add_column("remote python", overflow="fold")  # the full path is also below
    for key in _VERSION_KEYS:
        table.add_column(key)
    table.add_column("result", overflow="fold")
    local: Mapping[str, str] = {}
    for check in checks:
        local = check.local_versions or local
        cells: list[Text | str] = [
            Text(str(check.host), style="bold"),
            _yes_no(check.reachable),
            _yes_no(check.authenticated) if check.reachable else Text("-", style="dim"),
            check.python or Text("-", style="dim"),
        ]
        for key in _VERSION_KEYS:
            remote = (check.versions or {}).get(key)
            here = (check.local_versions or {}).get(key)
            if remote is None:
                cells.append(Text("-", style="dim"))
            elif here is not None and here != remote:
                cells.append(Text(f"{remote} (local {here})", style="red"))
            else:
                cells.append(Text(remote, style="green"))
        if check.ok:
            cells.append(Text("ok", style="green"))
        else:
            cells.append(Text("FAILED (below)", style="red"))
        table.add_row(*cells)
    if console.is_terminal:
        console.print(table)
    else:  # nobody resizes a pipe or a file: the table takes the width it needs
        Console(file=console.file, width=_UNWRAPPED, color_system=None, markup=False,
                emoji=False, highlight=False).print(table)
    for check in checks:
        if not check.ok:
            line = Text("FAILED ", style="bold red")
            line.append(f"{check.host}: ", style="bold")
            line.append(_one_line(check.error or "failed"))
            console.print(line, soft_wrap=True)
    if local:
        console.print(
            Text(
                "controller: " + ", ".join(f"{k} {local[k]}" for k in _VERSION_KEYS if k in local),
                style="dim",
            )
        )
    failed = sum(1 for c in checks if not c.ok)
    if failed:
        console.print(Text(f"{failed} of {len(checks)} host(s) failed the check", style="bold red"))
    else:
        console.print(Text(f"all {len(checks)} host(s) ok", style="bold green"))


_UNWRAPPED = 100_000


def _one_line(text: str) -> str:
    """Join the lines of a multi-line reason with `` | ``."""
    return " | ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _yes_no(value: bool) -> Text:
    return Text("yes", style="green") if value else Text("no", style="red")
