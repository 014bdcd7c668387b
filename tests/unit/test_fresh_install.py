"""What a newcomer sees first: no one else's warnings, at default verbosity.

The commands run as a user runs them (a new interpreter, the installed
dependencies, no warning options), so a new upstream release that starts
warning on import fails here rather than on a user's screen.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from sshdeploy.ssh import sshlib

ROOT = Path(__file__).parents[2]
#: The installed ``dask-ssh`` script beside this interpreter (as a user runs it), else the module.
_SCRIPT = Path(sys.executable).parent / "dask-ssh"
DASK_SSH = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "sshdeploy.cli"]

#: The entry points a newcomer runs first: (argv after the interpreter, what it must print).
ENTRIES = {
    "dry run": ([*DASK_SSH, "--dry-run", "node1"], "# node1  scheduler"),
    "help": ([*DASK_SSH, "--help"], "Usage:"),
    "demo": ([sys.executable, "-m", "sshdeploy.demo", "--help"], "Usage:"),
}


def _run(argv: list[str], *, warnoptions: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    if warnoptions is not None:
        env["PYTHONWARNINGS"] = warnoptions
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=env)


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_first_commands_print_no_warning(entry: str) -> None:
    argv, expected = ENTRIES[entry]
    done = _run(argv)
    assert done.returncode == 0, done
    assert expected in done.stdout
    noise = [line for line in done.stderr.splitlines() if "Warning" in line]
    assert noise == [], done.stderr


def _asyncssh_import_warns() -> bool:
    """Whether importing asyncssh warns at all with the installed cryptography."""
    done = _run([sys.executable, "-W", "default", "-c", "import asyncssh"])
    return "DSA is deprecated" in done.stderr


def test_the_users_warning_options_still_show_the_silenced_deprecation() -> None:
    if not _asyncssh_import_warns():
        pytest.skip("this cryptography does not deprecate DSA: nothing is silenced")
    done = _run([*DASK_SSH, "--dry-run", "node1"], warnoptions="default")
    assert "CryptographyDeprecationWarning: DSA is deprecated" in done.stderr


def _filtered(message: str, module: str, category: type[Warning]) -> bool:
    """Whether the door's filter drops a warning with this message, origin and category."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        saved, sys.warnoptions = sys.warnoptions, []
        try:
            assert sshlib.quiet_known_warnings()
        finally:
            sys.warnoptions = saved
        warnings.warn_explicit(message, category, f"{module}.py", 1, module=module)
    return not seen


def test_the_filter_drops_only_that_deprecation_from_asyncssh() -> None:
    from cryptography.utils import CryptographyDeprecationWarning as Deprecation

    dsa = "DSA is deprecated and support will be removed in a future release."
    assert _filtered(dsa, "asyncssh.crypto.misc", Deprecation)
    assert _filtered(dsa, "asyncssh", Deprecation)
    # another message, another module, another category: all still shown
    assert not _filtered("TripleDES has been moved", "asyncssh.crypto.cipher", Deprecation)
    assert not _filtered(dsa, "paramiko.dsskey", Deprecation)
    assert not _filtered(dsa, "asyncsshx", Deprecation)
    assert not _filtered(dsa, "asyncssh.crypto.misc", UserWarning)


def test_warning_options_leave_the_filters_alone() -> None:
    saved, sys.warnoptions = sys.warnoptions, ["default"]
    try:
        with warnings.catch_warnings():
            before = list(warnings.filters)
            assert not sshlib.quiet_known_warnings()
            assert warnings.filters == before
    finally:
        sys.warnoptions = saved
