"""Unit tests for sshdeploy.views.hostrows: the per-host rows of the cluster's reprs."""

from __future__ import annotations

import pytest

from sshdeploy.views.hostrows import HostRow, rows_html, rows_text

pytestmark = pytest.mark.timeout(10)

ROWS = [
    HostRow("root@node1", "scheduler", 0, 0),
    HostRow("root@node2", "workers", 1, 2, restarts=3, error="node2-1: exited\nTraceback"),
    HostRow("root@node3:1", "workers", 0, 0, error="[root@node3:1] ssh: cannot connect"),
]


def test_text_has_a_row_per_host_with_counts_restarts_and_first_error_line() -> None:
    lines = rows_text(ROWS).splitlines()
    assert lines[0].split() == ["host", "role", "workers", "restarts", "last", "error"]
    assert lines[2].split()[:4] == ["root@node2", "workers", "1/2", "3"]
    assert lines[2].endswith("node2-1: exited") and "Traceback" not in rows_text(ROWS)
    assert lines[3].split()[2] == "-"


def test_html_escapes_every_value() -> None:
    out = rows_html([HostRow("<b>x</b>", "workers", 1, 1, error="a < b")])
    assert "&lt;b&gt;x&lt;/b&gt;" in out and "a &lt; b" in out and "<b>x" not in out
