"""docs/troubleshooting.md documents every error class sshdeploy defines (issue 10).

A class added to sshdeploy.errors without a section there fails here, and so
does a section about a class that no longer exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sshdeploy import errors
from sshdeploy.errors import SSHDeployError

pytestmark = pytest.mark.timeout(10)

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"
#: Sections about errors that are not classes of sshdeploy.errors.
OTHER_SECTIONS = {"TestbedError"}


def error_classes() -> list[type[SSHDeployError]]:
    """SSHDeployError and every subclass of it defined in sshdeploy.errors, recursively."""
    found: list[type[SSHDeployError]] = []
    todo: list[type[SSHDeployError]] = [SSHDeployError]
    while todo:
        cls = todo.pop()
        if cls in found:
            continue
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in found if c.__module__ == errors.__name__]


def headings() -> list[str]:
    return [line.lstrip("#").strip() for line in GUIDE.read_text().splitlines()
            if re.match(r"#{1,4} ", line)]


def test_every_error_class_has_a_section() -> None:
    titles = headings()
    classes = error_classes()
    assert len(classes) >= 12, [c.__name__ for c in classes]
    missing = [c.__name__ for c in classes
               if not any(re.search(rf"\b{c.__name__}\b", t) for t in titles)]
    assert not missing, f"add a section to {GUIDE.name} for: {', '.join(missing)}"


def test_every_error_section_is_about_an_existing_class() -> None:
    known = {c.__name__ for c in error_classes()} | OTHER_SECTIONS
    named = {word for t in headings() for word in re.findall(r"\b\w+Error\b", t)}
    assert named - known == set(), "sections about classes that do not exist"


def test_usage_errors_and_the_common_failures_are_shown() -> None:
    text = GUIDE.read_text()
    assert any("Usage errors" in t for t in headings())
    for shown in ("connection refused", "timed out", "authentication refused",
                  "host key not trusted", "host key CHANGED", "not found on the remote PATH",
                  "distributed is not importable", "version mismatch", "is in use",
                  "bad value for 'slots'"):
        assert shown in text, shown
