"""Unit tests for sshdeploy.ssh.causes: the cause of a remote failure and the option behind it."""

from __future__ import annotations

import pytest

from sshdeploy.ssh.causes import explain, root_exception

pytestmark = pytest.mark.timeout(10)

CHAINED = """Traceback (most recent call last):
  File "distributed/core.py", line 509, in start
    await self.listen(addr)
OSError: [Errno 98] error while attempting to bind on address ('10.0.0.2', 22): address \
already in use

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
RuntimeError: Nanny failed to start.
"""


def test_root_exception_is_the_first_of_the_chain() -> None:
    assert root_exception("RuntimeError: Nanny failed to start.", CHAINED).startswith(
        "OSError: [Errno 98]")
    assert root_exception("ValueError: x", "no traceback") == "ValueError: x"


def test_worker_port_in_use_names_the_option() -> None:
    e = explain("worker", {"worker_port": 22}, "RuntimeError: Nanny failed to start.",
                CHAINED.replace("address already in use", "Address already in use"))
    assert e.known and e.what == "its port is in use (worker_port=22)"
    assert "--worker-port" in e.remedy and e.cause.startswith("OSError")


def test_scheduler_port_in_use() -> None:
    e = explain("scheduler", {"port": 18786}, "RuntimeError: Scheduler failed to start",
                "OSError: [Errno 98] Address already in use")
    assert e.what == "port 18786 is in use" and "--scheduler-port" in e.remedy


def test_unknown_option_is_named_with_where_it_came_from() -> None:
    err = "TypeError: Server.__init__() got an unexpected keyword argument 'nthread'"
    e = explain("worker", {}, err, err)
    assert e.what == "the worker class does not take the option 'nthread'"
    assert "worker_options" in e.remedy
    assert "scheduler_options" in explain("scheduler", {}, err, err).remedy


def test_unparsable_dashboard_address() -> None:
    tb = ('  File "distributed/node.py", in start_http_server\n'
          "    http_addresses = clean_dashboard_address(dashboard_address)\n"
          "ValueError: invalid literal for int() with base 10: 'abc'")
    e = explain("scheduler", {"dashboard_address": "x:abc"}, "ValueError: ...", tb)
    assert e.what == "dashboard_address 'x:abc' cannot be used" and e.known


def test_anything_else_keeps_the_traceback_for_the_user() -> None:
    e = explain("worker", {}, "ZeroDivisionError: division by zero", "ZeroDivisionError: ...")
    assert not e.known and e.what == "failed to start"
