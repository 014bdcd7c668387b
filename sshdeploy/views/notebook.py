"""An SSHCluster's start-up progress in a Jupyter notebook.

While a cluster starts inside a Jupyter kernel, one output of the running cell
shows :class:`~sshdeploy.views.livestatus.StatusView`'s display of
``SSHCluster.host_rows()``: a row per host (the counts per state above the
threshold), workers ready and the elapsed time. It is updated in place while
the hosts change state and ends on the final state (every host ready, or the
hosts that failed and why), which stays in the saved notebook.

How it is shown: rich renders the display to HTML itself (its
:class:`rich.jupyter.JupyterMixin`, the way any rich table shows in a
notebook), and one IPython *display handle* (``display(obj, display_id=True)``,
then ``handle.update(obj)``) replaces the output in place. ``rich.live.Live``
is not used: in Jupyter it needs ipywidgets and a widget-enabled front end,
and a widget's output is not kept as HTML when a notebook is saved or run
headless (nbclient, nbconvert); a display handle needs only IPython, present
in every kernel, and its last update is an ordinary ``text/html`` output.

Where it runs: in the cluster's event loop (for a synchronous cluster, the
loop thread of distributed, while the cell's thread waits); ipykernel sends a
display from any thread to the cell that is running. A start has two parts in
distributed, ``_start`` (the scheduler) and the first ``_correct_state`` (the
workers): :class:`StartProgress` spans both.

Nothing is shown outside a kernel: a script or a terminal (``dask-ssh`` has
its own live status, :mod:`sshdeploy.cli.run`) never gets HTML.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, Literal, Protocol, TypeVar

from rich.console import Console, Group, RenderableType
from rich.jupyter import JupyterMixin
from rich.text import Text

from sshdeploy.errors import ConfigError, HostError, MultiHostError, SSHDeployError

from .hostrows import HostRow
from .livestatus import StatusView, first_line

__all__ = ["Frame", "StartProgress", "in_jupyter", "in_kernel", "start_progress", "wanted"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds between two polls of the hosts' states.
POLL_INTERVAL = 0.25
#: Seconds after which the display is rendered again with nothing changed (elapsed time).
REFRESH_INTERVAL = 1.0


class DisplayHandle(Protocol):
    """What ``IPython.display.display(obj, display_id=True)`` returns."""

    def update(self, obj: Any) -> None:
        """Replace the displayed output with *obj*."""


#: ``display(obj)`` -> a handle to update that output (IPython's, or a test's).
Display = Callable[[Any], DisplayHandle | None]


def in_jupyter() -> bool:
    """Whether this process is a Jupyter kernel, as rich decides it (``Console().is_jupyter``).

    Examples
    --------
    >>> in_jupyter()  # a doctest run is no notebook
    False
    """
    return Console().is_jupyter


def in_kernel() -> bool:
    """Whether this process is an IPython kernel (any ZMQ shell, also those rich does not name).

    IPython is only looked up when something already imported it: a plain
    script does not pay for importing it.

    Examples
    --------
    >>> in_kernel()
    False
    """
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return getattr(shell, "kernel", None) is not None


def wanted(progress: bool | None) -> bool:
    """Resolve ``SSHCluster(progress=...)``: whether to show the start in this notebook.

    Parameters
    ----------
    progress : bool or None
        ``None``: only inside Jupyter (rich's test). ``True``: inside any
        IPython kernel, also one that rich does not recognise. ``False``:
        never. Outside a kernel there is nowhere to show it, whatever the value.

    Raises
    ------
    ConfigError
        For anything but True, False or None.

    Examples
    --------
    >>> wanted(None), wanted(True), wanted(False)  # not in a notebook
    (False, False, False)
    """
    if progress is None:
        return in_jupyter()
    if progress is True:
        return in_jupyter() or in_kernel()
    if progress is False:
        return False
    raise ConfigError("progress", f"must be True, False or None, got {progress!r}",
                      remedy="Pass progress=False to turn the notebook display off.")


class Frame(JupyterMixin):
    """One picture of the progress, rendered by rich to HTML (and text) for Jupyter.

    Examples
    --------
    >>> bundle = Frame(Text("node1 ready"))._repr_mimebundle_([], [])
    >>> "node1 ready" in bundle["text/html"], bundle["text/plain"].strip()
    (True, 'node1 ready')
    """

    __slots__ = ("renderable",)

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable

    def __rich__(self) -> RenderableType:
        return self.renderable


def _ipython_display(obj: Any) -> DisplayHandle | None:
    from IPython import display as ipython

    show: Callable[..., DisplayHandle | None] = ipython.display  # untyped in IPython
    return show(obj, display_id=True)


class StartProgress:
    """Show a cluster's start in the notebook, from :meth:`starting` to :meth:`end`.

    A start has two parts in distributed: ``SpecCluster._start`` (the
    scheduler) and then the first ``_correct_state`` (the workers). The
    cluster wraps the first in :meth:`starting` and hands the second's task to
    :meth:`follow`, whose end ends the display.

    On :meth:`begin`, one output shows every host; a task then polls *rows*
    every ``poll_interval`` seconds and updates that output when a host's
    state changed, or every ``refresh_interval`` seconds for the elapsed time.
    :meth:`end` shows the final state with one more line: the start's time, or
    why it failed. After a failure the rows of the last poll are kept (a failed
    start has closed its hosts) and the hosts that the error names are marked
    failed with its first line. The display never breaks the start: a failing
    *rows* or display is logged at DEBUG and skipped.

    Parameters
    ----------
    rows : callable
        Returns the cluster's :class:`~sshdeploy.views.hostrows.HostRow` list
        (``SSHCluster.host_rows``), called in the event loop of the start.
    display : callable, optional
        ``display(obj)`` returning a handle with ``update(obj)``; IPython's
        ``display(obj, display_id=True)`` by default.
    view : StatusView
        How rows are rendered (summarised above its threshold).
    poll_interval, refresh_interval : float
        Seconds between polls; between two renders when nothing changed.
    clock : callable
        Monotonic seconds (a test's clock).

    Examples
    --------
    >>> shown = []
    >>> class Handle:
    ...     def update(self, obj): shown.append(obj)
    >>> def display(obj):
    ...     shown.append(obj)
    ...     return Handle()
    >>> progress = StartProgress(
    ...     lambda: [HostRow("root@n1:22", "scheduler", 0, 0, state="ready")], display)
    >>> async def start():
    ...     with progress.starting():
    ...         pass  # the scheduler starts
    ...     await progress.follow(asyncio.ensure_future(asyncio.sleep(0)))  # the workers
    >>> asyncio.run(start())
    >>> text = shown[-1]._repr_mimebundle_([], [])["text/plain"]
    >>> "root@n1:22" in text and "ready" in text and "started in" in text
    True
    """

    def __init__(
        self,
        rows: Callable[[], Sequence[HostRow]],
        display: Display | None = None,
        *,
        view: StatusView | None = None,
        poll_interval: float = POLL_INTERVAL,
        refresh_interval: float = REFRESH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rows = rows
        self._display = display or _ipython_display
        self._view = view or StatusView(label="SSHCluster")
        self._poll_interval = poll_interval
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._started = 0.0
        self._last: list[HostRow] = []
        self._last_render = 0.0
        self._handle: DisplayHandle | None = None
        self._broken = False
        self._task: asyncio.Task[None] | None = None
        self._state: Literal["new", "showing", "ended"] = "new"
        self._scheduler_started = False

    @property
    def showing(self) -> bool:
        """Whether the display is live (begun and not ended)."""
        return self._state == "showing"

    def begin(self) -> None:
        """Show the hosts now and start polling them (in the running event loop)."""
        if self._state != "new":
            return
        self._state = "showing"
        self._started = self._clock()
        self._last = self._poll() or []
        self._show(self._frame(self._last))
        self._task = asyncio.ensure_future(self._run())

    def end(self, exc: BaseException | None = None) -> None:
        """Stop polling; show the final state: started, or failed with *exc* (idempotent)."""
        if self._state != "showing":
            return
        self._state = "ended"
        if self._task is not None:
            self._task.cancel()
        if exc is None:
            rows = self._poll() or self._last
        else:
            rows = _mark_failed(self._last, exc)
        self._show(self._frame(rows, _outcome(rows, exc, self._clock() - self._started)))

    @contextlib.contextmanager
    def starting(self) -> Iterator[None]:
        """Begin the display while inside; end it if the inside fails (the error passes)."""
        self.begin()
        try:
            yield
        except BaseException as exc:
            self.end(exc)
            raise
        self._scheduler_started = True

    def follow(self, task: T) -> T:
        """End the display when *task* (the start's last part) is done; return *task*.

        Only once :meth:`starting` has been left without an error: a failed
        ``_start`` corrects the state too, when it closes what it started.
        """
        if self.showing and self._scheduler_started and isinstance(task, asyncio.Future):
            task.add_done_callback(self._ended_with)
        return task

    def _ended_with(self, task: asyncio.Future[Any]) -> None:
        self.end(asyncio.CancelledError() if task.cancelled() else task.exception())

    async def _run(self) -> None:
        while self.showing:
            await asyncio.sleep(self._poll_interval)
            rows = self._poll()
            if rows is None or not self.showing:
                continue
            if rows != self._last or self._clock() - self._last_render >= self._refresh_interval:
                self._last = rows
                self._show(self._frame(rows))

    def _poll(self) -> list[HostRow] | None:
        try:
            return list(self._rows())
        except Exception:  # a display must not break the start it shows
            logger.debug("cannot read the hosts' states", exc_info=True)
            return None

    def _frame(self, rows: Sequence[HostRow], outcome: Text | None = None) -> Frame:
        self._last_render = self._clock()
        shown = self._view.render(rows, self._last_render - self._started)
        return Frame(shown if outcome is None else Group(shown, outcome))

    def _show(self, frame: Frame) -> None:
        if self._broken:
            return
        try:
            if self._handle is None:
                self._handle = self._display(frame)
            else:
                self._handle.update(frame)
        except Exception:  # no display (e.g. the kernel went away): go on without it
            logger.debug("cannot show the start's progress", exc_info=True)
            self._broken = True


class _Off(StartProgress):
    """The progress of a start that is not shown: every method does nothing."""

    def __init__(self) -> None:
        super().__init__(list)
        self._state = "ended"


def start_progress(rows: Callable[[], Sequence[HostRow]], progress: bool | None) -> StartProgress:
    """Return the display of a cluster's start: a live one if :func:`wanted`, else a silent one.

    Parameters
    ----------
    rows : callable
        ``SSHCluster.host_rows``.
    progress : bool or None
        ``SSHCluster(progress=...)``, resolved here, once, when the cluster is built.

    Raises
    ------
    ConfigError
        For a *progress* that is not True, False or None.

    Examples
    --------
    >>> start_progress(list, None).showing  # not in a notebook: never shown
    False
    """
    return StartProgress(rows) if wanted(progress) else _Off()


def _outcome(rows: Sequence[HostRow], exc: BaseException | None, elapsed: float) -> Text:
    """The line under the final display: how long the start took, or why it did not end."""
    if exc is None:
        failed = sum(1 for r in rows if r.state == "failed")
        left = f"; {failed} host{'s' if failed != 1 else ''} failed, left out" if failed else ""
        return Text(f"started in {elapsed:.1f} s{left}", style="green" if not failed else "yellow")
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return Text(f"start cancelled after {elapsed:.1f} s", style="bold red")
    cause = _sshdeploy_error(exc) or exc
    why = first_line(str(cause)) or type(cause).__name__
    return Text(f"start failed after {elapsed:.1f} s: {why}", style="bold red")


def _sshdeploy_error(exc: BaseException) -> SSHDeployError | None:
    """The SSHDeployError that *exc* is or wraps (SpecCluster raises ``RuntimeError from``)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SSHDeployError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _failures(err: SSHDeployError | None) -> dict[str, str]:
    """Host -> error text, for the hosts that *err* names."""
    if isinstance(err, HostError):
        return {err.host: str(err)}
    if isinstance(err, MultiHostError):
        return {host: str(e) for host, e in err.failures.items()}
    return {}


def _mark_failed(rows: Sequence[HostRow], exc: BaseException) -> list[HostRow]:
    """Rows with the hosts that the error names shown as failed, with its text."""
    failures = _failures(_sshdeploy_error(exc))
    return [replace(r, state="failed", error=failures[r.host]) if r.host in failures else r
            for r in rows]
