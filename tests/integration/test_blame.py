"""On the bed: a failed or stalled start names the stage it reached (login shell, setup, python)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import dask
import pytest

from sshdeploy import testbed
from sshdeploy.cluster import SSHCluster
from sshdeploy.errors import StartError

n1, n2 = testbed.host_names(2, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(("setup", "blamed"), [
    ("exit 0", "the setup command ended the shell before Python started"),
    ("if then", "the setup command is not valid shell: "),
])
def test_a_setup_that_ends_or_breaks_the_shell_is_blamed(
    bed: testbed.Bed, setup: str, blamed: str
) -> None:
    with pytest.raises(StartError) as info:
        SSHCluster([n1, n2], connect_options=bed.connect_options(), setup=setup)
    assert blamed in str(info.value)
    assert "Install Python" not in str(info.value)


def test_a_python_that_hangs_after_printing_is_blamed_as_python_not_setup(
    bed: testbed.Bed, tmp_path: Path
) -> None:
    import shutil
    import tempfile

    # Not under /tmp: each bed host has a /tmp of its own; the home is shared.
    home = Path(tempfile.mkdtemp(prefix=".sshdeploy-test-", dir=Path.home()))
    try:
        fake = home / "python3"
        fake.write_text("#!/bin/sh\necho 'I am not Python'\nexec sleep 60\n")
        fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
        with dask.config.set({"sshdeploy.start-timeout": 5}), \
                pytest.raises(StartError) as info:
            SSHCluster([n1, n2], connect_options=bed.connect_options(),
                       remote_python=str(fake))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert "start stalled while starting Python" in str(info.value)
    assert "setup command" not in str(info.value)


def test_a_dashboard_port_in_use_on_the_scheduler_host_is_said(
    bed: testbed.Bed, caplog: pytest.LogCaptureFixture
) -> None:
    import subprocess
    import sys

    host = bed.host(n1)
    holder = subprocess.Popen(
        ["ip", "netns", "exec", host.namespace, sys.executable, "-c",
         "import socket, sys, time; s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(); "
         "print(s.getsockname()[1], flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        with caplog.at_level("WARNING", logger="sshdeploy.cluster.processes"), SSHCluster(
            [n1, n2], connect_options=bed.connect_options(),
            scheduler_options={"dashboard_address": f":{port}"},
        ) as cluster:
            assert isinstance(cluster.scheduler.dashboard_port, int)
            assert cluster.scheduler.dashboard_port != port
    finally:
        holder.kill()
        holder.wait()
    assert any(f"dashboard port {port} was not free there" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
