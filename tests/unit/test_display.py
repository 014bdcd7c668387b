"""Terminal output of dask-ssh: prefixes, colour rules, log files, tables."""

from __future__ import annotations

import io
import logging
import re
import time
import types
from pathlib import Path

import pytest

from sshdeploy.cli import console, remote_output, report

ANSI = "\x1b["


class TTY(io.StringIO):
    """A StringIO that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def record(
    line: str, label: str, role: str, host: str = "node2", level: int = logging.INFO
) -> logging.LogRecord:
    return logging.makeLogRecord(
        {
            "name": f"sshdeploy.remote.{role}.{host}",
            "msg": "%s",
            "args": (line,),
            "levelno": level,
            "levelname": logging.getLevelName(level),
            "sshdeploy_label": label,
            "sshdeploy_host": host,
            "sshdeploy_role": role,
            "sshdeploy_stream": "stderr",
        }
    )


# ------------------------------------------------------------------ colour rules


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "TERM"):
        monkeypatch.delenv(name, raising=False)


def colour_codes(out: str) -> list[str]:
    """Return the SGR parameters of *out* that set a colour (30-38, 40-48, 90-107)."""
    found = []
    for params in re.findall(r"\x1b\[([0-9;]*)m", out):
        for p in params.split(";"):
            if p.isdigit() and (30 <= int(p) <= 48 or 90 <= int(p) <= 107):
                found.append(p)
    return found


def _print_records(stream: io.StringIO, *records: logging.LogRecord) -> str:
    handler = remote_output.RemoteLogHandler(console.make_console(stream), flush_interval=0)
    for rec in records:
        handler.handle(rec)
    handler.close()
    return stream.getvalue()


def _print_lines(stream: io.StringIO) -> str:
    return _print_records(
        stream,
        record("ready", "scheduler node1", "scheduler", "node1"),
        record("x - ERROR - boom", "node2-0", "worker", level=logging.ERROR),
        record("agent up", "node2", "agent"),
    )


def test_terminal_gets_colour() -> None:
    out = _print_lines(TTY())
    assert colour_codes(out)
    assert "[scheduler node1]" in out


def test_no_color_means_no_colour_even_on_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    out = _print_lines(TTY())
    assert colour_codes(out) == []
    assert re.sub(r"\x1b\[[0-9;]*m", "", out).splitlines() == [
        "[scheduler node1] ready",
        "[node2-0] x - ERROR - boom",
        "[node2] agent up",
    ]


def test_force_color_gives_colour_on_a_non_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert colour_codes(_print_lines(io.StringIO()))


def test_non_terminal_means_no_ansi() -> None:
    out = _print_lines(io.StringIO())
    assert ANSI not in out
    assert "[node2-0] x - ERROR - boom" in out


def test_long_lines_are_not_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    long_line = "x" * 500
    out = _print_records(io.StringIO(), record(long_line, "node2-0", "worker"))
    assert out == f"[node2-0] {long_line}\n"


def test_remote_text_is_not_markup() -> None:
    out = _print_records(TTY(), record("[bold]not markup[/bold] :smile:", "node2-0", "worker"))
    assert re.sub(r"\x1b\[[0-9;]*m", "", out) == "[node2-0] [bold]not markup[/bold] :smile:\n"


# ------------------------------------------------------------------ prefixes


@pytest.mark.parametrize(
    ("label", "role", "expected"),
    [
        ("scheduler node1", "scheduler", "[scheduler node1]"),
        ("node2-0", "worker", "[node2-0]"),
        ("node2", "agent", "[node2]"),
    ],
)
def test_prefix_text(label: str, role: str, expected: str) -> None:
    assert remote_output.remote_prefix(label, role).plain == expected


def test_prefix_styles() -> None:
    assert remote_output.remote_prefix("scheduler n1", "scheduler").style == "bold magenta"
    assert remote_output.remote_prefix("n1", "agent").style == "dim"
    # every worker of one host shares a colour
    a = remote_output.remote_prefix("node2-0", "worker", "node2").style
    b = remote_output.remote_prefix("node2-7", "worker", "node2").style
    assert a == b


def _sgr(out: str) -> list[str]:
    return re.findall(r"\x1b\[([0-9;]*)m", out)


def test_lines_drop_newline_and_are_coloured_by_record_level() -> None:
    out = _print_records(TTY(), record("careful\n", "node2-0", "worker", level=logging.WARNING))
    assert re.sub(r"\x1b\[[0-9;]*m", "", out) == "[node2-0] careful\n"
    assert "33" in _sgr(out)  # yellow
    assert "31" in _sgr(_print_records(TTY(), record("boom", "n-0", "worker",
                                                     level=logging.CRITICAL)))  # red
    # The level comes from the record, not from words in the text.
    out = _print_records(TTY(), record("x - ERROR - not parsed here", "n-0", "worker"))
    assert "31" not in _sgr(out) and "33" not in _sgr(out)


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("scheduler node1", "scheduler-node1.log"),
        ("node2-0", "node2-0.log"),
        ("a/../b", "a-..-b.log"),
        ("", "remote.log"),
    ],
)
def test_log_file_name(label: str, name: str) -> None:
    assert remote_output.log_file_name(label) == name
    assert "/" not in remote_output.log_file_name(label)


# ------------------------------------------------------------------ handler


def test_handler_prints_prefix_and_keeps_tail(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = remote_output.RemoteLogHandler(
        console.make_console(stream), tmp_path / "logs", tail_lines=2
    )
    try:
        handler.handle(record("starting", "scheduler node1", "scheduler", "node1"))
        for i in range(3):
            handler.handle(record(f"line {i}", "scheduler node1", "scheduler", "node1"))
        handler.handle(record("worker up", "node2-0", "worker"))
        handler.handle(record("", "scheduler node1", "scheduler", "node1"))  # not in the tail
    finally:
        handler.close()
    assert stream.getvalue().splitlines() == [
        "[scheduler node1] starting",
        "[scheduler node1] line 0",
        "[scheduler node1] line 1",
        "[scheduler node1] line 2",
        "[node2-0] worker up",
        "[scheduler node1] ",
    ]
    assert handler.tail("scheduler") == ["[scheduler node1] line 1", "[scheduler node1] line 2"]
    assert handler.tail("agent") == []
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["node2-0.log", "scheduler-node1.log"]
    assert (tmp_path / "logs" / "node2-0.log").read_text() == "worker up\n"
    assert ANSI not in (tmp_path / "logs" / "scheduler-node1.log").read_text()


def test_handler_without_attributes_uses_logger_name() -> None:
    stream = io.StringIO()
    handler = remote_output.RemoteLogHandler(console.make_console(stream))
    handler.handle(logging.makeLogRecord({"name": "sshdeploy.remote.worker.node3", "msg": "hi",
                                         "levelno": logging.INFO}))
    handler.flush()
    assert stream.getvalue() == "[node3] hi\n"


def test_controller_handler() -> None:
    stream = io.StringIO()
    handler = remote_output.ControllerLogHandler(console.make_console(stream))
    handler.handle(logging.makeLogRecord({"msg": "worker node2-0 died", "levelno": 30}))
    assert stream.getvalue() == "[dask-ssh] worker node2-0 died\n"


# ------------------------------------------------------------------ banner, plan, table


def test_banner_lists_every_host_and_worker() -> None:
    stream = io.StringIO()
    report.print_banner(
        console.make_console(stream),
        scheduler_address="tcp://10.0.0.1:8786",
        dashboard_link="http://10.0.0.1:8787/status",
        scheduler_host="root@node1:22",
        workers_by_host={"root@node2:22": ["node2-0", "node2-1"], "root@node3:22": ["node3-0"]},
        versions={"sshdeploy": "0.1.0"},
    )
    out = stream.getvalue()
    assert "tcp://10.0.0.1:8786" in out
    assert "http://10.0.0.1:8787/status" in out
    assert "3 on 2 hosts" in out
    assert "root@node2:22  node2-0, node2-1" in out
    assert "root@node3:22  node3-0" in out
    assert ANSI not in out


def test_plan_shows_host_role_python_and_command() -> None:
    stream = io.StringIO()
    plans = [
        types.SimpleNamespace(
            host="root@n1:22",
            role="scheduler",
            names=["scheduler"],
            python="/usr/bin/python3",
            command="cd /tmp && python3 -c 'x'",
            options={"port": 8786},
        ),
        types.SimpleNamespace(
            host="root@n2:22",
            role="worker",
            names=["n2-0", "n2-1"],
            python="/opt/py",
            command="/opt/py -c 'y'",
            options={},
        ),
    ]
    report.print_plan(console.make_console(stream), plans)
    out = stream.getvalue()
    assert "# root@n1:22  scheduler  scheduler" in out
    assert "# root@n2:22  worker  n2-0, n2-1" in out
    assert "\ncd /tmp && python3 -c 'x'\n" in out
    assert "python:  /opt/py" in out
    assert "options: port=8786" in out


def _check(host: str, ok: bool, **kw: object) -> types.SimpleNamespace:
    base: dict[str, object] = dict(
        host=host,
        reachable=True,
        authenticated=True,
        python="/usr/bin/python3",
        versions={"python": "3.11.7", "dask": "2026.8.0", "distributed": "2026.8.0"},
        local_versions={"python": "3.11.7", "dask": "2026.8.0", "distributed": "2026.8.0"},
        error=None,
        ok=ok,
    )
    base.update(kw)
    return types.SimpleNamespace(**base)


def test_check_table() -> None:
    stream = io.StringIO()
    report.print_check_table(
        console.make_console(stream, width=200),
        [
            _check("root@n1:22", True),
            _check(
                "root@n2:22",
                False,
                reachable=False,
                authenticated=False,
                python=None,
                versions={},
                error="cannot connect: refused",
            ),
            _check(
                "root@n3:22",
                False,
                versions={"python": "3.10.1", "dask": "2026.8.0", "distributed": "2026.8.0"},
                error="version mismatch",
            ),
        ],
    )
    out = stream.getvalue()
    assert "root@n1:22" in out and "root@n2:22" in out
    assert "cannot connect: refused" in out
    assert "3.10.1 (local 3.11.7)" in out
    assert "2 of 3 host(s) failed" in out
    assert ANSI not in out


def test_handler_routes_unlabelled_records_to_others() -> None:
    out, err = io.StringIO(), io.StringIO()
    others = remote_output.ControllerLogHandler(console.make_console(err))
    handler = remote_output.RemoteLogHandler(console.make_console(out), others=others)
    handler.handle(logging.makeLogRecord(
        {"name": "sshdeploy.remote", "msg": "worker closed", "levelno": logging.WARNING}))
    handler.handle(logging.makeLogRecord(
        {"name": "sshdeploy.remote", "msg": "chatter", "levelno": logging.INFO}))
    handler.handle(record("a line", "node2-0", "worker"))
    handler.flush()
    assert out.getvalue() == "[node2-0] a line\n"
    assert err.getvalue() == "[dask-ssh] worker closed\n"


def _checks() -> list[types.SimpleNamespace]:
    versions = {"python": "3.11.7", "dask": "2026.8.0", "distributed": "2026.8.0"}
    return [
        types.SimpleNamespace(
            host="root@node1", reachable=True, authenticated=True, python="/usr/bin/python3",
            versions=versions, local_versions=versions, error=None, ok=True),
        types.SimpleNamespace(
            host="root@node2", reachable=True, authenticated=True, python=None, versions={},
            local_versions=versions, ok=False,
            error="[root@node2] remote Python '/nonexistent/python3' not found on the host:\n"
                  "install it there or pick another remote_python."),
    ]


REASON = ("FAILED root@node2: [root@node2] remote Python '/nonexistent/python3' not found on "
          "the host: | install it there or pick another remote_python.")


def test_check_reasons_are_whole_lines_off_a_terminal_even_with_narrow_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "30")
    stream = io.StringIO()
    report.print_check_table(console.make_console(stream), _checks())
    lines = stream.getvalue().splitlines()
    assert REASON in lines
    # Off a terminal the table is not wrapped either: one row per host.
    assert len([ln for ln in lines if "root@node" in ln and ln.startswith("│")]) == 2
    assert "'/nonexistent/python3'" in stream.getvalue()


def test_check_reasons_are_whole_lines_on_a_narrow_terminal() -> None:
    stream = TTY()
    report.print_check_table(console.make_console(stream, width=40), _checks())
    plain = re.sub(r"\x1b\[[0-9;]*m", "", stream.getvalue())
    assert REASON in plain.splitlines()


def test_handler_buffers_lines_and_writes_them_together() -> None:
    class Counting(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            Counting.writes += 1
            return super().write(text)

    stream = Counting()
    handler = remote_output.RemoteLogHandler(console.make_console(stream), flush_interval=0)
    for i in range(1000):
        handler.handle(record(f"line {i}", "node2-0", "worker"))
    handler.flush()
    assert stream.getvalue().splitlines() == [f"[node2-0] line {i}" for i in range(1000)]
    assert Counting.writes <= 2  # one write per buffer, not one per line
    handler.close()


def test_handler_flushes_by_itself_within_the_interval() -> None:
    stream = io.StringIO()
    handler = remote_output.RemoteLogHandler(console.make_console(stream), flush_interval=0.05)
    handler.handle(record("soon", "node2-0", "worker"))
    deadline = time.monotonic() + 5
    while "soon" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.getvalue() == "[node2-0] soon\n"
    handler.close()


def test_handler_colours_on_a_terminal_like_rich_would(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = TTY()
    handler = remote_output.RemoteLogHandler(console.make_console(stream), flush_interval=0)
    handler.handle(record("boom", "node2-0", "worker", level=logging.ERROR))
    handler.flush()
    out = stream.getvalue()
    assert colour_codes(out) and "31" in colour_codes(out)  # red body
    assert re.sub(r"\x1b\[[0-9;]*m", "", out) == "[node2-0] boom\n"
    monkeypatch.setenv("NO_COLOR", "1")
    stream = TTY()
    handler = remote_output.RemoteLogHandler(console.make_console(stream), flush_interval=0)
    handler.handle(record("boom", "node2-0", "worker", level=logging.ERROR))
    handler.flush()
    assert colour_codes(stream.getvalue()) == []


@pytest.mark.parametrize(
    ("show_level", "shown"),
    [
        (logging.NOTSET, ["debug", "info", "warning", "error"]),
        (logging.INFO, ["info", "warning", "error"]),
        (logging.WARNING, ["warning", "error"]),
        (logging.CRITICAL, ["warning", "error"]),  # WARNING and ERROR always show
    ],
)
def test_handler_show_level_filters_by_record_level(
    tmp_path: Path, show_level: int, shown: list[str]
) -> None:
    stream = io.StringIO()
    handler = remote_output.RemoteLogHandler(console.make_console(stream), tmp_path,
                                       show_level=show_level, flush_interval=0)
    for name in ("debug", "info", "warning", "error"):
        handler.handle(record(name, "node2-0", "worker", level=getattr(logging, name.upper())))
    handler.close()
    assert [ln.split()[-1] for ln in stream.getvalue().splitlines()] == shown
    # The log files keep every line.
    assert (tmp_path / "node2-0.log").read_text().split() == ["debug", "info", "warning", "error"]
