"""Live start-up status: the table, the summary on many hosts, the plain-line diff."""

from __future__ import annotations

from rich.console import Console

from sshdeploy.views.hostrows import HostRow
from sshdeploy.views.livestatus import StatusView, changed_lines, summary_text


def _text(renderable: object, width: int = 120) -> str:
    console = Console(width=width, color_system=None, force_terminal=False)
    with console.capture() as cap:
        console.print(renderable)
    return cap.get()


def _rows() -> list[HostRow]:
    return [
        HostRow("root@n1:22", "scheduler", 0, 0, state="ready"),
        HostRow("root@n2:22", "workers", 1, 2, state="starting workers"),
        HostRow("root@n3:22", "workers", 0, 1, state="failed",
                error="root@n3:22: ConnectionRefusedError: refused\n  Traceback line"),
    ]


def test_table_has_a_row_per_host_with_state_workers_and_first_error_line() -> None:
    out = _text(StatusView().render(_rows(), 3.25))
    lines = out.splitlines()
    assert "starting on 3 hosts" in lines[0] and "workers 1/3 ready" in lines[0]
    assert "3.2 s" in lines[0] or "3.3 s" in lines[0]
    assert lines[1].split() == ["host", "role", "state", "workers", "error"]
    n1 = next(ln for ln in lines if "root@n1:22" in ln)
    assert n1.split() == ["root@n1:22", "scheduler", "ready", "-"]
    n2 = next(ln for ln in lines if "root@n2:22" in ln)
    assert "starting workers" in n2 and "1/2" in n2
    n3 = next(ln for ln in lines if "root@n3:22" in ln)
    assert "failed" in n3 and "ConnectionRefusedError: refused" in n3
    assert "Traceback line" not in out
    assert "root@n3:22: Connection" not in out  # the row names the host already


def test_thirty_hosts_are_summarised_with_failed_rows_only() -> None:
    rows = [HostRow(f"root@node{i}:22", "workers", 1, 1, state="ready") for i in range(28)]
    rows += [
        HostRow("root@node28:22", "workers", 0, 1, state="importing distributed"),
        HostRow("root@node29:22", "workers", 0, 1, state="failed", error="boom: no python3"),
        HostRow("root@node30:22", "workers", 0, 1, state="importing distributed"),
    ]
    out = _text(StatusView().render(rows, 12.0))
    assert "starting on 31 hosts" in out
    assert "2 importing distributed, 28 ready, 1 failed" in out
    assert "root@node29:22" in out and "boom: no python3" in out
    assert "root@node0:22" not in out and "root@node28:22" not in out
    assert len(out.splitlines()) <= 5


def test_twenty_hosts_still_get_one_row_each() -> None:
    rows = [HostRow(f"root@h{i}:22", "workers", 0, 1, state="connecting") for i in range(20)]
    out = _text(StatusView().render(rows, 0.5))
    assert all(f"root@h{i}:22" in out for i in range(20))


def test_summary_orders_states_as_a_start_goes() -> None:
    rows = [HostRow("a", "w", 0, 1, state="failed"), HostRow("b", "w", 1, 1, state="ready"),
            HostRow("c", "w", 0, 1, state="waiting"), HostRow("d", "w", 0, 1, state="odd")]
    assert summary_text(rows) == "1 waiting, 1 ready, 1 failed, 1 odd"


def test_changed_lines_name_only_hosts_whose_state_changed() -> None:
    first = [HostRow("root@n1:22", "scheduler", 0, 0, state="connecting"),
             HostRow("root@n2:22", "workers", 0, 1, state="connecting")]
    assert changed_lines([], first, 0.01) == [
        "dask-ssh: root@n1:22: connecting (0.0 s)",
        "dask-ssh: root@n2:22: connecting (0.0 s)",
    ]
    second = [HostRow("root@n1:22", "scheduler", 0, 0, state="connecting"),
              HostRow("root@n2:22", "workers", 0, 1, state="importing distributed")]
    assert changed_lines(first, second, 1.24) == [
        "dask-ssh: root@n2:22: importing distributed (1.2 s)"]
    third = [HostRow("root@n1:22", "scheduler", 0, 0, state="ready"),
             HostRow("root@n2:22", "workers", 2, 2, state="ready")]
    assert changed_lines(second, third, 4.0) == [
        "dask-ssh: root@n1:22: ready (4.0 s)",
        "dask-ssh: root@n2:22: ready, workers 2/2 (4.0 s)",
    ]
    assert changed_lines(third, third, 5.0) == []


def test_plain_lines_hold_no_control_codes_even_from_error_text() -> None:
    rows = [HostRow("root@n3:22", "workers", 0, 1, state="failed",
                    error="\x1b[31mPermission denied\x1b[0m (publickey)\nmore")]
    (line,) = changed_lines([], rows, 2.0)
    assert "\x1b" not in line and all(c.isprintable() for c in line)
    assert line.startswith("dask-ssh: root@n3:22: failed: ")
    assert line == "dask-ssh: root@n3:22: failed: Permission denied (publickey) (2.0 s)"


def test_remote_lines_print_above_a_live_table_on_the_same_console() -> None:
    """With ``through_console`` a remote line goes through rich, which keeps it above the table."""
    import io
    import logging

    from rich.live import Live

    from sshdeploy.cli.remote_output import RemoteLogHandler

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100, color_system=None)
    handler = RemoteLogHandler(console, flush_interval=0)
    handler.through_console = True
    rows = [HostRow("root@n1:22", "scheduler", 0, 0, state="starting scheduler")]
    try:
        with Live(console=console, transient=True, auto_refresh=False) as live:
            live.update(StatusView().render(rows, 1.0), refresh=True)
            record = logging.LogRecord("sshdeploy.remote", logging.INFO, __file__, 1,
                                       "State start", None, None)
            record.sshdeploy_label = "scheduler n1"
            record.sshdeploy_role = "scheduler"
            handler.handle(record)
            handler.flush()
            live.update(StatusView().render(rows, 1.2), refresh=True)
    finally:
        handler.close()
    out = buf.getvalue()
    line = out.index("[scheduler n1] State start")
    # the table was drawn, erased, the line printed, then the table drawn again below it
    assert out.index("starting scheduler") < line < out.rindex("starting scheduler")
    assert out[:line].endswith("\x1b[2K"), repr(out)  # the table was erased first
