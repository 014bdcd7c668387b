"""What a user sees of a normal stop and a failed start: no traceback, no noise before our error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sshdeploy import testbed

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(180)


def dask_ssh(bed: testbed.Bed, *args: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "sshdeploy.cli", "--known-hosts", str(bed.known_hosts),
            "--ssh-private-key", str(bed.client_key), "--ssh-username", "root",
            "--scheduler-port", "0", *args]
    env = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=env)


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not printed within {timeout} s:\n{''.join(seen)}")


def test_ctrl_c_with_a_busy_client_prints_no_traceback(bed: testbed.Bed) -> None:
    proc = dask_ssh(bed, n1, n2, n3)
    try:
        head = wait_for_line(proc, "  dashboard  http", 90)  # the banner's last lines
        banner = next(line for line in head if line.startswith("  scheduler  "))
        address = banner.split()[1]
        # a client with work in flight when the cluster stops: the classic source of
        # CommClosedError tracebacks at Ctrl-C
        client = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import time
            from distributed import Client
            c = Client({address!r}, timeout=30)
            futs = c.map(time.sleep, [0.2] * 200)
            print("submitted", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "submitted"
        time.sleep(1.0)  # let tasks run on the workers (not a synchronisation)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        client.kill()
        client.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    whole = "".join(head) + out + err
    assert proc.returncode == 0, whole[-3000:]
    assert "Traceback" not in whole, whole[-5000:]
    assert "CommClosedError" not in whole


def test_a_failed_start_says_our_error_first_and_only(bed: testbed.Bed) -> None:
    proc = dask_ssh(bed, n1, f"{n2}:1")  # nothing listens on port 1: refused
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 1
    assert "Cluster closed without starting up" not in out + err
    assert "Traceback" not in out + err
    assert f"{n2}:1" in err and "refused" in err
