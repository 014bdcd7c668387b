"""Unit tests for sshdeploy.compat: the private members of distributed we rely on exist."""

from __future__ import annotations

import logging

import pytest
from distributed.deploy.spec import SpecCluster

from sshdeploy import compat

pytestmark = pytest.mark.timeout(20)


def test_every_private_member_exists_on_the_installed_distributed() -> None:
    assert compat.missing_members() == []


def test_a_renamed_member_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(SpecCluster, "_correct_state_internal")
    assert compat.missing_members() == ["SpecCluster._correct_state_internal"]


def test_start_error_cause_unwraps_only_speccluster_failures() -> None:
    cause = ValueError("boom")
    wrapped = RuntimeError(f"{compat.START_FAILURE_PREFIX}: boom")
    wrapped.__cause__ = cause
    assert compat.start_error_cause(wrapped) is cause
    other = RuntimeError("something else")
    other.__cause__ = cause
    assert compat.start_error_cause(other) is None


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_quiet_failed_start_drops_only_that_warning() -> None:
    log = logging.getLogger(compat.SPEC_LOGGER)
    seen = _Records()
    log.addHandler(seen)
    try:
        with compat.quiet_failed_start():
            log.warning(compat.CLOSED_WITHOUT_STARTING)
            log.warning("another warning")
        log.warning(compat.CLOSED_WITHOUT_STARTING)
    finally:
        log.removeHandler(seen)
    assert [r.getMessage() for r in seen.records] == [
        "another warning", compat.CLOSED_WITHOUT_STARTING,
    ]
