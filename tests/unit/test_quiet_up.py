"""``dask-ssh up`` is quiet: host states and the banner, not the remote log lines (issue 30)."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from sshdeploy.cli.console import make_console
from sshdeploy.cli.remote_output import HIDE_REMOTE, RemoteLogHandler
from sshdeploy.cli.run import _failing_hosts, _Run
from sshdeploy.errors import MultiHostError, StartError

pytestmark = pytest.mark.timeout(30)


def _record(msg: str, level: int, host: str = "node2", label: str = "node2-0") -> Any:
    return logging.makeLogRecord({"msg": msg, "levelno": level, "sshdeploy_label": label,
                                  "sshdeploy_host": host, "sshdeploy_role": "worker"})


@pytest.mark.parametrize(("argv", "level"), [
    ([], HIDE_REMOTE),                            # up: no remote line
    (["-v"], logging.NOTSET),                     # -v: every line, as the classic command
    (["--log-level", "INFO"], logging.INFO),      # a level asked for: the stream at that level
    (["-q"], logging.WARNING),
])
def test_up_shows_no_remote_line_unless_asked(argv: list[str], level: int, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from sshdeploy.cli import main
    from sshdeploy.cli import run as run_module

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    seen: dict[str, Any] = {}

    def fake_run_cluster(args: Any, **kw: Any) -> int:
        seen.update(kw)
        return 0

    monkeypatch.setattr(run_module, "run_cluster", fake_run_cluster)
    out = CliRunner().invoke(main, ["up", "--name", "quiet", *argv, "node1", "node2"])
    assert out.exit_code == 0, out.output
    assert seen["show_level"] == level
    assert seen["progress"] is True and seen["keep"]["name"] == "quiet"


def test_up_refuses_v_with_a_log_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sshdeploy.cli import main

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    out = CliRunner().invoke(main, ["up", "--name", "quiet", "-v", "--log-level", "INFO", "n1"])
    assert out.exit_code == 2 and "give one of them" in out.output


def test_hidden_lines_print_nothing_but_are_kept_per_host() -> None:
    buf = io.StringIO()
    handler = RemoteLogHandler(make_console(buf), show_level=HIDE_REMOTE)
    handler.emit(_record("distributed.worker - INFO - Start worker", logging.INFO))
    handler.emit(_record("distributed.worker - ERROR - boom", logging.ERROR))
    handler.emit(_record("other host", logging.ERROR, host="node3", label="node3-0"))
    handler.flush()
    assert buf.getvalue() == ""
    assert handler.host_tail("node2") == ["[node2-0] distributed.worker - INFO - Start worker",
                                          "[node2-0] distributed.worker - ERROR - boom"]
    handler.close()


def test_a_failed_quiet_up_prints_the_failing_hosts_last_lines() -> None:
    buf, err = io.StringIO(), io.StringIO()
    handler = RemoteLogHandler(make_console(buf), show_level=HIDE_REMOTE)
    handler.emit(_record("OSError: [Errno 98] Address already in use", logging.ERROR,
                         host="node1", label="scheduler node1"))
    handler.emit(_record("unrelated", logging.INFO, host="node3", label="node3-0"))
    run = SimpleNamespace(remote_log=handler, err_console=make_console(err))
    _Run._say_held_back(run, StartError(host="root@node1:22", role="scheduler",  # type: ignore[arg-type]
                                        what="port 8786 is in use"))
    text = err.getvalue()
    assert "last remote lines of node1:" in text
    assert "[scheduler node1] OSError: [Errno 98] Address already in use" in text
    assert "unrelated" not in text
    handler.close()


def test_a_streamed_up_does_not_print_the_lines_twice() -> None:
    err = io.StringIO()
    handler = RemoteLogHandler(make_console(io.StringIO()), show_level=logging.NOTSET)
    handler.emit(_record("boom", logging.ERROR, host="node1"))
    run = SimpleNamespace(remote_log=handler, err_console=make_console(err))
    _Run._say_held_back(run, StartError(host="node1", what="x"))  # type: ignore[arg-type]
    assert err.getvalue() == ""
    handler.close()


def test_the_failing_hosts_are_read_from_the_error() -> None:
    assert _failing_hosts(StartError(host="alice@node7:2222", what="x")) == ["node7"]
    assert _failing_hosts(StartError(host="node7", what="x", stderr_tail="kept")) == []
    assert _failing_hosts(MultiHostError(failures={
        "a": StartError(host="root@a:22", what="x"),
        "b": StartError(host="b", what="y")})) == ["a", "b"]
    assert _failing_hosts(RuntimeError("no host")) == []
