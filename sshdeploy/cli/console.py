"""The console ``dask-ssh`` prints to, and the stream under it.

* Colour and other ANSI styling follow rich's own rules: only on a terminal,
  none with ``NO_COLOR`` (https://no-color.org), on a non-terminal too with
  ``FORCE_COLOR``; ``COLUMNS`` sets the width.
* :class:`GuardedStream` turns a reader that went away (``dask-ssh ... | head``)
  or an output that cannot take more (``> /dev/full``, a full disk) into a flag
  (:func:`output_closed`) instead of an exception in every print.
* :func:`open_missing_streams` gives a command started with a standard stream
  closed (``dask-ssh up ... >&-``, some cron and service managers) ``/dev/null``
  there, before anything else can take that descriptor.

The module imports neither asyncssh nor distributed.
"""

from __future__ import annotations

import errno
import os
import select
import sys
import threading
from typing import IO

from rich.console import Console

__all__ = ["GuardedStream", "make_console", "open_missing_streams", "output_closed",
           "output_failed", "output_full"]


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
        #: Whether the output took no more (ENOSPC...), rather than its reader leaving.
        self.full = False

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
        if err.errno in _OUTPUT_FULL:
            self.full = True
            _note(f"dask-ssh: output dropped from here on: {err.strerror}\n")
        elif err.errno not in _READER_GONE and not isinstance(err, BrokenPipeError):
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
#: An output that takes no more (``/dev/full``, a full disk or quota): dropped, and said once.
_OUTPUT_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def output_failed(err: OSError) -> bool:
    """Whether *err* says stdout is gone or full (said on stderr, for one that is full).

    If so, stdout now writes to ``/dev/null``, so that Python's last flush at exit
    does not fail again.
    """
    if err.errno in _OUTPUT_FULL:
        _note(f"dask-ssh: cannot write the output: {err.strerror}\n")
    elif err.errno not in _READER_GONE and not isinstance(err, BrokenPipeError):
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
    finally:
        os.close(devnull)
    return True


def _note(text: str) -> None:
    """Say *text* on stderr if it can be said (stderr may be the full one)."""
    try:
        os.write(2, text.encode())
    except OSError:
        pass


def open_missing_streams() -> None:
    """Open ``/dev/null`` on each of descriptors 0, 1, 2 that is closed; fix ``sys.std*``.

    Without this, the first file or socket the command opens takes descriptor 1,
    and a print would write into it. Called first by ``dask-ssh``.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdin is None:
        sys.stdin = open(0, closefd=False)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)


def output_closed(console: Console) -> bool:
    """Whether the reader of *console*'s stream has gone (see :class:`GuardedStream`)."""
    stream = console.file
    return isinstance(stream, GuardedStream) and stream.reader_gone()


def output_full(console: Console) -> bool:
    """Whether *console*'s stream stopped because it took no more (``/dev/full``, a full disk)."""
    stream = console.file
    return isinstance(stream, GuardedStream) and stream.full


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


