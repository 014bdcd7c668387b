"""The notebook display of a cluster's start, without a kernel or a network.

A fake ``display`` (returning a fake handle) records every frame; Jupyter is
faked by a ``get_ipython`` whose shell is named like ipykernel's. The SSHCluster
cases start a real cluster against a loopback port that refuses connections.
"""

from __future__ import annotations

import asyncio
import builtins
import re
import socket
import sys
import time
import types
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import dask
import pytest
from rich.console import Console

from sshdeploy import SSHCluster
from sshdeploy.errors import ConfigError, ConnectError, MultiHostError, SSHDeployError
from sshdeploy.views import notebook
from sshdeploy.views.hostrows import HostRow
from sshdeploy.views.livestatus import StatusView

pytestmark = pytest.mark.timeout(30)


class Screen:
    """A fake IPython display: every frame shown, the first by display(), the rest by update()."""

    def __init__(self, fail: bool = False) -> None:
        self.frames: list[notebook.Frame] = []
        self.displays = 0
        self.fail = fail

    def display(self, obj: Any) -> Screen:
        if self.fail:
            raise RuntimeError("no kernel")
        self.displays += 1
        self.frames.append(obj)
        return self

    def update(self, obj: Any) -> None:
        self.frames.append(obj)

    def text(self, index: int = -1) -> str:
        console = Console(width=200, color_system=None, force_jupyter=False)
        with console.capture() as cap:
            console.print(self.frames[index])
        return cap.get()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Rows:
    """The cluster's rows as a test sets them; counts the polls."""

    def __init__(self, rows: list[HostRow]) -> None:
        self.rows = rows
        self.polls = 0

    def __call__(self) -> list[HostRow]:
        self.polls += 1
        return list(self.rows)


def _row(host: str, state: str, running: int = 0, wanted: int = 1, error: str = "") -> HostRow:
    return HostRow(host, "workers", running, wanted, error=error, state=state)


async def _until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
def fake_jupyter(monkeypatch: pytest.MonkeyPatch) -> Iterator[Screen]:
    """Make this process look like a Jupyter kernel; return the screen frames go to."""

    class ZMQInteractiveShell:
        kernel = object()

    monkeypatch.setattr(builtins, "get_ipython", ZMQInteractiveShell, raising=False)
    screen = Screen()
    monkeypatch.setattr(notebook, "_ipython_display", screen.display)
    yield screen


def test_progress_is_off_in_a_script_or_terminal_whatever_asked() -> None:
    assert not notebook.in_jupyter()
    assert [notebook.wanted(p) for p in (None, True, False)] == [False, False, False]


def test_progress_is_on_in_jupyter_unless_turned_off(fake_jupyter: Screen) -> None:
    assert notebook.in_jupyter()
    assert notebook.wanted(None) and notebook.wanted(True)
    assert not notebook.wanted(False)


def test_progress_true_shows_in_a_kernel_rich_does_not_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class SpyderShell:  # a ZMQInteractiveShell subclass: rich only knows the base's name
        kernel = object()

    fake = types.ModuleType("IPython")
    fake.get_ipython = SpyderShell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", fake)
    monkeypatch.setattr(builtins, "get_ipython", SpyderShell, raising=False)
    assert notebook.in_kernel() and not notebook.in_jupyter()
    assert notebook.wanted(True) and not notebook.wanted(None)


def test_a_progress_value_that_is_not_a_bool_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="progress: must be True, False or None"):
        notebook.wanted("yes")  # type: ignore[arg-type]


def test_a_frame_is_html_that_rich_renders_and_ipython_formats() -> None:
    formatters = pytest.importorskip("IPython.core.formatters")
    frame = notebook.Frame(StatusView().render(
        [_row("root@n1:22", "ready", 1), _row("root@n2:22", "failed", error="boom")], 1.0))
    data, _ = formatters.DisplayFormatter().format(frame)
    html = data["text/html"]
    assert html.startswith("<pre style=\"white-space:pre;")  # rich's own Jupyter HTML
    assert "root@n1:22" in html and "root@n2:22" in html and "boom" in html
    assert "ready" in html and re.search(r"<span style=[^>]*>failed\s*</span>", html)
    assert "root@n1:22" in data["text/plain"]


async def _run(progress: notebook.StartProgress, scheduler: Callable[[], Awaitable[None]],
               workers: Callable[[], Awaitable[None]]) -> None:
    """A start as SSHCluster runs one: the scheduler in ``starting()``, then the workers' task."""
    with progress.starting():
        await scheduler()
    await progress.follow(asyncio.ensure_future(workers()))


async def _nothing() -> None:
    pass


def test_the_display_follows_state_changes_and_elapsed_time_only() -> None:
    screen, clock = Screen(), Clock()
    rows = Rows([_row("root@n1:22", "waiting"), _row("root@n2:22", "waiting")])
    progress = notebook.StartProgress(rows, screen.display, poll_interval=0.001, clock=clock)

    async def scheduler() -> None:
        assert screen.displays == 1 and "waiting" in screen.text()
        await _until(lambda: rows.polls >= 20, "20 polls")
        assert len(screen.frames) == 1  # nothing changed, no time passed: no render
        rows.rows = [_row("root@n1:22", "connecting"), _row("root@n2:22", "waiting")]
        await _until(lambda: len(screen.frames) == 2, "an update on a change")
        assert "connecting" in screen.text()

    async def workers() -> None:
        polls = rows.polls
        await _until(lambda: rows.polls >= polls + 20, "20 more polls")
        assert len(screen.frames) == 2
        clock.now += 1.0
        await _until(lambda: len(screen.frames) == 3, "an update a second later")
        assert "1.0 s" in screen.text()
        rows.rows = [_row("root@n1:22", "ready", 1), _row("root@n2:22", "ready", 1)]
        clock.now += 1.5

    asyncio.run(_run(progress, scheduler, workers))
    final = screen.text()
    assert screen.displays == 1  # one output, updated in place
    assert final.count("ready") >= 2 and "workers 2/2 ready" in final
    assert "started in 2.5 s" in final
    assert not progress.showing
    frames = len(screen.frames)
    progress.end()  # idempotent; and later corrections of the cluster's state show nothing
    assert progress.follow("not a task") == "not a task" and len(screen.frames) == frames


def test_many_hosts_are_summarised() -> None:
    screen = Screen()
    rows = Rows([_row(f"root@n{i}:22", "ready", 1) for i in range(30)])
    asyncio.run(_run(notebook.StartProgress(rows, screen.display), _nothing, _nothing))
    assert "30 ready" in screen.text() and "root@n7:22" not in screen.text()


def test_a_failed_scheduler_start_keeps_the_last_rows_and_names_the_failed_host() -> None:
    screen, clock = Screen(), Clock()
    rows = Rows([_row("root@n1:22", "ready", 1), _row("root@n2:22", "connecting")])
    err = ConnectError(host="root@n2:22", what="cannot connect", cause="connection refused")

    progress = notebook.StartProgress(rows, screen.display, clock=clock)

    async def scheduler() -> None:
        rows.rows = []  # a failed start has closed its hosts: their rows say nothing
        clock.now += 3.0
        await progress.follow(asyncio.ensure_future(_nothing()))  # SpecCluster closing them
        assert progress.showing  # that was no start of the workers
        raise RuntimeError("Cluster failed to start") from err

    with pytest.raises(RuntimeError) as info:
        asyncio.run(_run(progress, scheduler, _nothing))
    assert info.value.__cause__ is err  # the display lets the error through unchanged
    final = screen.text()
    n1 = next(line for line in final.splitlines() if "root@n1:22" in line)
    n2 = next(line for line in final.splitlines() if "root@n2:22" in line)
    assert "ready" in n1 and "failed" in n2 and "connection refused" in n2
    assert "start failed after 3.0 s: [root@n2:22] ssh: cannot connect" in final


def test_failed_workers_mark_each_of_their_hosts() -> None:
    screen = Screen()
    rows = Rows([_row(h, "starting") for h in ("a:22", "b:22", "c:22")])
    errs: dict[str, BaseException] = {
        h: ConnectError(host=h, what="cannot connect", cause="refused") for h in ("a:22", "c:22")
    }

    async def workers() -> None:
        raise MultiHostError(failures=errs, action="start workers")

    with pytest.raises(SSHDeployError):
        asyncio.run(_run(notebook.StartProgress(rows, screen.display), _nothing, workers))
    states = {line.split()[0]: line for line in screen.text().splitlines()
              if line.split() and line.split()[0] in ("a:22", "b:22", "c:22")}
    assert "failed" in states["a:22"] and "failed" in states["c:22"]
    assert "failed" not in states["b:22"]
    assert "start failed after" in screen.text() and "2 host(s) failed" in screen.text()


def test_a_cancelled_start_says_so() -> None:
    screen = Screen()

    async def workers() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(_run(notebook.StartProgress(Rows([_row("a", "waiting")]), screen.display),
                         _nothing, workers))
    assert "start cancelled after" in screen.text()


def test_hosts_left_out_by_min_workers_show_in_the_final_state() -> None:
    screen = Screen()
    rows = Rows([_row("a", "ready", 1), _row("b", "failed", error="b: refused")])
    asyncio.run(_run(notebook.StartProgress(rows, screen.display), _nothing, _nothing))
    assert "started in" in screen.text() and "1 host failed, left out" in screen.text()


def test_a_broken_display_or_rows_never_break_the_start() -> None:
    def rows() -> list[HostRow]:
        raise KeyError("not built yet")

    async def scheduler() -> None:
        await asyncio.sleep(0.01)

    async def start(screen: Screen, rows: Callable[[], list[HostRow]]) -> str:
        progress = notebook.StartProgress(rows, screen.display, poll_interval=0.001)
        await _run(progress, scheduler, _nothing)
        return "started"

    assert asyncio.run(start(Screen(fail=True), Rows([_row("a", "ready", 1)]))) == "started"
    screen = Screen()
    assert asyncio.run(start(screen, rows)) == "started"
    assert "started in" in screen.text()


def test_a_start_progress_turned_off_shows_nothing(fake_jupyter: Screen) -> None:
    progress = notebook.start_progress(Rows([_row("a", "ready", 1)]), False)
    asyncio.run(_run(progress, _nothing, _nothing))
    assert fake_jupyter.frames == [] and not progress.showing
    assert notebook.start_progress(Rows([]), None).showing is False  # not begun yet


@pytest.fixture
def refused() -> Iterator[str]:
    """A loopback ``host:port`` that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def _start(hosts: list[str], **kwargs: Any) -> None:
    async def start() -> None:
        with dask.config.set({"sshdeploy.connect-attempts": 1}):
            async with SSHCluster(hosts, asynchronous=True, **kwargs):
                pass

    with pytest.raises(ConnectError):
        asyncio.run(start())


def test_sshcluster_shows_its_failed_start_in_jupyter(fake_jupyter: Screen, refused: str) -> None:
    _start([refused, refused])
    final = fake_jupyter.text()
    assert fake_jupyter.displays == 1
    assert refused in final and "failed" in final and "connection refused" in final
    assert "start failed after" in final


def test_sshcluster_progress_false_shows_nothing_in_jupyter(
    fake_jupyter: Screen, refused: str,
) -> None:
    _start([refused, refused], progress=False)
    assert fake_jupyter.frames == []


def test_sshcluster_shows_nothing_outside_jupyter(
    monkeypatch: pytest.MonkeyPatch, refused: str,
) -> None:
    screen = Screen()
    monkeypatch.setattr(notebook, "_ipython_display", screen.display)
    _start([refused, refused], progress=True)
    assert screen.frames == []
