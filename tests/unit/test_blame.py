"""A start that ends early blames the stage it reached, with the remote output that says why."""

from __future__ import annotations

import pytest

from sshdeploy.bootstrap import EXIT_SETUP_FAILED
from sshdeploy.errors import RemotePythonError, StartError
from sshdeploy.hostfile import parse_host
from sshdeploy.logs import LogBook
from sshdeploy.plan import Launch
from sshdeploy.ssh.channel import AgentChannel
from sshdeploy.ssh.pool import HostPool

pytestmark = pytest.mark.timeout(10)


def ended(stage: str | None, status: int | None, *, setup: str | None = None,
          stdout: tuple[str, ...] = (), stderr: tuple[str, ...] = (),
          signal: str | None = None) -> Exception:
    """The error of an agent that ended at *stage* with *status* (or *signal*)."""
    ch = AgentChannel(HostPool(), parse_host("node1"), "workers",
                      Launch(python="/opt/py/bin/python3", setup=setup), LogBook())
    ch.stage, ch.exit_status, ch.exit_signal = stage, status, signal
    ch._stdout, ch._stderr = list(stdout), list(stderr)
    return ch._start_failure()


def test_a_nologin_account_blames_the_login_shell_with_its_notice() -> None:
    err = ended(None, 1, stdout=("This account is currently not available.",))
    assert isinstance(err, StartError) and not isinstance(err, RemotePythonError)
    assert "the login shell ended before running any command" in str(err)
    assert "'This account is currently not available.'; it exited with status 1" in str(err)
    assert "Install Python" not in str(err)


def test_setup_that_exits_blames_the_setup_not_python() -> None:
    err = ended("login", 0, setup="exit 0")
    assert "the setup command ended the shell before Python started" in str(err)
    assert "exited with status 0 (setup: 'exit 0')" in str(err)


def test_a_shell_syntax_error_in_setup_blames_the_setup_with_the_shells_line() -> None:
    line = "bash: -c: line 3: syntax error near unexpected token `then'"
    for stage in (None, "login"):
        err = ended(stage, 2, setup="if then", stderr=(line,))
        assert "the setup command is not valid shell" in str(err)
        assert str(err).split(": the setup command is not valid shell: ")[1].startswith(line)


def test_a_failing_setup_still_blames_the_setup() -> None:
    err = ended("login", EXIT_SETUP_FAILED, setup="false")
    assert "the setup command failed" in str(err)


def test_python_killed_by_a_signal_names_it_not_status_minus_one() -> None:
    err = ended("python", -1, signal="SEGV")
    assert isinstance(err, RemotePythonError)
    assert "'/opt/py/bin/python3' was killed by SIGSEGV while reading the agent" in str(err)
    assert "status -1" not in str(err)


def test_python_not_found_is_still_python() -> None:
    err = ended("login", 127, stderr=("bash: /opt/py/bin/python3: No such file or directory",))
    assert isinstance(err, RemotePythonError) and "not found on the remote PATH" in str(err)


def test_a_version_mismatch_under_warn_does_not_advise_setting_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sshdeploy.settings import Settings
    from sshdeploy.versions import local_versions

    pool = HostPool(settings=Settings.resolve(version_check="warn"))
    ch = AgentChannel(pool, parse_host("node1"), "workers", Launch(python="python3"), LogBook())
    with caplog.at_level("WARNING", logger="sshdeploy.ssh.channel"):
        ch._check_versions({**local_versions(), "dask": "1999.1.0"})
    (message,) = [r.getMessage() for r in caplog.records]
    assert "version mismatch: dask 1999.1.0" in message
    assert "set sshdeploy.version-check to 'warn'" not in message
    assert "Going on (sshdeploy.version-check is 'warn')" in message
