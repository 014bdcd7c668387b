"""Unit tests for sshdeploy.logs: the bounded per-source buffer and the logging records."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from sshdeploy.logs import ROOT_LOGGER, LogBook, line_level

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ("2026-01-01 10:00:00,000 - distributed.worker - DEBUG - x", logging.DEBUG),
        ("2026-01-01 10:00:00,000 - distributed.worker - INFO - x", logging.INFO),
        ("2026-01-01 10:00:00,000 - distributed.worker - WARNING - slow", logging.WARNING),
        ("2026-01-01 10:00:00,000 - distributed.nanny - ERROR - died", logging.ERROR),
        ("2026-01-01 10:00:00,000 - distributed.core - CRITICAL - x", logging.CRITICAL),
        ("hello", logging.INFO),
        ("", logging.INFO),
        ("Traceback (most recent call last):", logging.INFO),
        ("an ERROR without the separators", logging.INFO),
        ("x - error - lower case is not a level", logging.INFO),
        ("x - WARN - not a level name", logging.INFO),
    ],
)
def test_line_level(line: str, level: int) -> None:
    assert line_level(line) == level


def test_record_keeps_lines_per_label_in_order() -> None:
    book = LogBook()
    book.record("node2-0", "node2", "worker", "stderr", "a")
    book.record("scheduler node1", "node1", "scheduler", "stderr", "s")
    book.record("node2-0", "node2", "worker", "stdout", "b")
    assert book.lines("node2-0") == ["a", "b"]
    assert book.lines("scheduler node1") == ["s"]
    assert book.lines("unknown") == []


def test_lines_is_a_copy() -> None:
    book = LogBook()
    book.record("l", "h", "worker", "stderr", "a")
    book.lines("l").append("mutated")
    assert book.lines("l") == ["a"]


def test_tail() -> None:
    book = LogBook()
    for i in range(30):
        book.record("l", "h", "worker", "stderr", f"line {i}")
    assert book.tail("l", 3) == "line 27\nline 28\nline 29"
    assert book.tail("l").splitlines() == [f"line {i}" for i in range(10, 30)]
    assert book.tail("nothing") == ""


def test_buffer_is_bounded_per_label() -> None:
    book = LogBook(max_lines=5)
    for i in range(12):
        book.record("a", "h", "worker", "stderr", str(i))
    book.record("b", "h", "worker", "stderr", "only")
    assert book.lines("a") == ["7", "8", "9", "10", "11"]
    assert book.lines("b") == ["only"]


def test_records_reach_logging_with_extra_attributes(caplog: pytest.LogCaptureFixture) -> None:
    book = LogBook()
    line = "2026-01-01 10:00:00,000 - distributed.worker - WARNING - slow"
    with caplog.at_level(logging.DEBUG, logger=ROOT_LOGGER):
        book.record("node2-0", "node2.example.org", "worker", "stdout", line)
    (rec,) = caplog.records
    assert rec.name == "sshdeploy.remote.worker.node2_example_org"
    assert rec.levelno == logging.WARNING
    assert rec.getMessage() == line
    assert rec.sshdeploy_label == "node2-0"  # type: ignore[attr-defined]
    assert rec.sshdeploy_host == "node2.example.org"  # type: ignore[attr-defined]
    assert rec.sshdeploy_role == "worker"  # type: ignore[attr-defined]
    assert rec.sshdeploy_stream == "stdout"  # type: ignore[attr-defined]


def test_logger_names_per_role_and_host(caplog: pytest.LogCaptureFixture) -> None:
    book = LogBook()
    with caplog.at_level(logging.DEBUG, logger=ROOT_LOGGER):
        book.record("scheduler node1", "node1", "scheduler", "stderr", "s")
        book.record("node3", "10.0.0.3", "agent", "stderr", "a")
    assert [r.name for r in caplog.records] == [
        "sshdeploy.remote.scheduler.node1",
        "sshdeploy.remote.agent.10_0_0_3",
    ]


def test_percent_signs_are_not_formatted(caplog: pytest.LogCaptureFixture) -> None:
    book = LogBook()
    with caplog.at_level(logging.INFO, logger=ROOT_LOGGER):
        book.record("l", "h", "worker", "stderr", "100% done %s %(x)d")
    assert caplog.records[0].getMessage() == "100% done %s %(x)d"


def test_disabled_levels_are_buffered_but_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    book = LogBook()
    debug = "2026-01-01 10:00:00,000 - distributed.worker - DEBUG - chatty"
    with caplog.at_level(logging.INFO, logger=ROOT_LOGGER):
        book.record("l", "h", "worker", "stderr", debug)
        book.record("l", "h", "worker", "stderr", "info")
    assert [r.getMessage() for r in caplog.records] == ["info"]
    assert book.lines("l") == [debug, "info"]


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.levelno, record.getMessage()))


TB = [
    "2026-01-01 10:00:00,000 - distributed.batched - INFO - Batched Comm Closed <TCP>",
    "Traceback (most recent call last):",
    '  File "distributed/batched.py", line 115, in _background_send',
    "distributed.comm.core.CommClosedError: in <TCP>: Stream is closed",
]


@pytest.fixture
def capture() -> Iterator[_Capture]:
    handler = _Capture()
    root = logging.getLogger(ROOT_LOGGER)
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old)


def test_a_traceback_takes_the_level_of_its_head(capture: _Capture) -> None:
    book = LogBook()
    head = "2026-01-01 10:00:00,000 - distributed.core - ERROR - boom"
    for line in [head, "Traceback (most recent call last):", "  File x", "ValueError: bad"]:
        book.record("scheduler n1", "n1", "scheduler", "stderr", line)
    assert [lvl for lvl, _ in capture.seen] == [logging.ERROR] * 4


def test_closed_connection_tracebacks_are_debug_once_closing(capture: _Capture) -> None:
    book = LogBook()
    for line in TB:
        book.record("scheduler n1", "n1", "scheduler", "stderr", line)
    assert [lvl for lvl, _ in capture.seen] == [logging.INFO] * 4  # while running: shown
    capture.seen.clear()
    book.closing()
    for line in TB:
        book.record("scheduler n1", "n1", "scheduler", "stderr", line)
    assert [lvl for lvl, _ in capture.seen] == [logging.INFO] + [logging.DEBUG] * 3
    assert book.lines("scheduler n1") == TB + TB  # get_logs keeps every line


def test_an_unfinished_traceback_is_logged_on_flush(capture: _Capture) -> None:
    book = LogBook()
    book.record("n2-0", "n2", "worker", "stderr", "Traceback (most recent call last):")
    assert capture.seen == []
    book.flush()
    assert capture.seen == [(logging.INFO, "Traceback (most recent call last):")]


def test_shutdown_noise_is_marked_for_the_cli_to_hide() -> None:
    marks: list[bool] = []

    class Marks(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            marks.append(getattr(record, "sshdeploy_noise", None))

    root = logging.getLogger(ROOT_LOGGER)
    handler, old = Marks(logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        book = LogBook()
        book.closing()
        for line in TB:
            book.record("scheduler n1", "n1", "scheduler", "stderr", line)
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
    assert marks == [False, True, True, True]
