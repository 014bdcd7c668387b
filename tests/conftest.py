"""Shared fixtures: the integration marker, the skip/fail rule and the session test bed.

Everything under ``tests/integration`` is marked ``integration``. Those tests
are skipped, with the reason, when this machine cannot run the local test bed
(not root, no sshd, namespaces refused) -- except when ``CI`` is set: then they
fail, because CI must never skip them silently.

``bed`` is the 4-host default bed (``node1..node4``), brought up once per
session and taken down at the end unless ``SSHDEPLOY_KEEP_BED=1`` or another
live pytest session still holds it (``testbed.up(..., hold=True)`` /
``testbed.release``). A bed that fails to come up on a capable machine is an
error, not a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sshdeploy import testbed

INTEGRATION_DIR = Path(__file__).parent / "integration"
BED_SIZE = 4
#: Which bed the session uses: the default one (node1..node4) unless
#: SSHDEPLOY_TEST_BED names another (its hosts are NAME1..NAME4), so that
#: several test sessions on one machine need not share hosts.
BED_NAME = os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME)
HOSTS = testbed.host_names(BED_SIZE, BED_NAME)

_unavailable: list[str | None] = []


def _bed_unavailable_reason() -> str | None:
    """Return why the test bed cannot run here (cached), or None."""
    if not _unavailable:
        try:
            testbed.check_requirements(probe=True)
        except testbed.TestbedError as exc:
            _unavailable.append(str(exc))
        else:
            _unavailable.append(None)
    return _unavailable[0]


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason``, or fail when ``CI`` is set (CI never skips silently)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so this integration test may not be skipped: {reason}")
    pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("integration") is not None:
        reason = _bed_unavailable_reason()
        if reason is not None:
            skip_or_fail(reason)


@pytest.fixture(scope="session")
def bed() -> Iterator[testbed.Bed]:
    """The session's bed: ``node1..node4`` (``testbed.up(4)``), or SSHDEPLOY_TEST_BED's."""
    reason = _bed_unavailable_reason()
    if reason is not None:
        skip_or_fail(reason)
    # hold=True: another pytest session on this machine may share the bed;
    # the last one to release it takes it down.
    the_bed = testbed.up(BED_SIZE, BED_NAME, hold=True)
    yield the_bed
    if os.environ.get("SSHDEPLOY_KEEP_BED") == "1":
        return
    testbed.release(the_bed.name)
