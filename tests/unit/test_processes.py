"""What sshdeploy.cluster.processes does without a connection: the error of a process that failed.

Starting and stopping real processes is covered on the test bed
(tests/integration/test_cluster.py, test_errors.py); this is the part that
needs no host.
"""

from __future__ import annotations

import pytest

from sshdeploy.cluster.processes import _start_error
from sshdeploy.hosts import Host
from sshdeploy.logs import LogBook
from sshdeploy.plan import Launch
from sshdeploy.ssh.channel import AgentChannel
from sshdeploy.ssh.pool import HostPool

pytestmark = pytest.mark.timeout(30)


def channel() -> AgentChannel:
    return AgentChannel(HostPool(), Host("node2", user="u", port=22), "workers",
                        Launch(python="python3"), LogBook())


def test_a_known_cause_names_the_option_and_keeps_the_traceback_in_the_log() -> None:
    ch = channel()
    tb = "Traceback (most recent call last):\nOSError: [Errno 98] Address already in use"
    err = _start_error(ch, "worker", "node2-0", {"error": "OSError", "tb": tb}, {})
    assert (err.host, err.role, err.name) == ("u@node2:22", "worker", "node2-0")
    assert err.what == "its port is in use" and err.stderr_tail == ""
    assert ch.logbook.lines("node2-0") == tb.splitlines()


def test_an_unknown_cause_keeps_the_remote_traceback_in_the_message() -> None:
    ch = channel()
    tb = "Traceback (most recent call last):\nValueError: something odd"
    err = _start_error(ch, "worker", "node2-1", {"error": "ValueError: something odd",
                                                 "tb": tb}, {})
    assert err.what == "failed to start" and err.stderr_tail == tb
    assert "ValueError: something odd" in str(err)


def test_without_a_traceback_the_tail_of_the_process_log_is_shown() -> None:
    ch = channel()
    ch.logbook.record("node2-2", "node2", "worker", "stderr", "last words")
    err = _start_error(ch, "worker", "node2-2", {"error": "RuntimeError: boom"}, {})
    assert "last words" in err.stderr_tail
