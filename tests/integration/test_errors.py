"""Bad input on the real test bed: a clear error naming the host, in bounded time, nothing left."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sshdeploy.ssh.channel
from sshdeploy import testbed
from sshdeploy.cluster import SSHCluster
from sshdeploy.errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    HostKeyError,
    MultiHostError,
    RemoteImportError,
    RemotePythonError,
    StartError,
    VersionMismatchError,
)
from sshdeploy.ssh.preflight import check_hosts

n1, n2, n3, n4 = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))

pytestmark = pytest.mark.timeout(120)


def assert_fails(bed: testbed.Bed, exc_type: type[BaseException], *args: object, **kw: object
                 ) -> BaseException:
    """Start a cluster that must fail with *exc_type*; nothing may be left afterwards."""
    start = time.monotonic()
    with pytest.raises(exc_type) as info:
        SSHCluster(*args, **kw)  # type: ignore[arg-type]
    assert time.monotonic() - start < 60
    assert testbed.python_processes(bed) == {}, "a failed start left processes behind"
    return info.value


def test_connection_refused_names_host_and_port(bed: testbed.Bed) -> None:
    err = assert_fails(bed, ConnectError, [n1, f"{n2}:2222"],
                       connect_options=bed.connect_options())
    assert f"{n2}:2222" in str(err) and "refused" in str(err)


def test_unreachable_host_times_out_within_the_bound(bed: testbed.Bed) -> None:
    lost = bed.host(n4)
    testbed.set_link(lost, False)
    try:
        opts = {**bed.connect_options(), "connect_timeout": 2}
        start = time.monotonic()
        err = assert_fails(bed, ConnectError, [n1, n4], connect_options=opts)
        assert time.monotonic() - start < 20
        assert n4 in str(err) and "timed out" in str(err)
    finally:
        testbed.set_link(lost, True)


def test_wrong_key_is_refused(bed: testbed.Bed, tmp_path: Path) -> None:
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    opts = {**bed.connect_options(), "client_keys": [str(key)]}
    err = assert_fails(bed, AuthenticationError, [n1, n2], connect_options=opts)
    assert f"root@{n1}" in str(err) or f"root@{n2}" in str(err)
    assert "key" in err.remedy


def test_unknown_host_key(bed: testbed.Bed, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    opts = {**bed.connect_options(), "known_hosts": str(empty)}
    err = assert_fails(bed, (HostKeyError, MultiHostError), [n1, n2],
                       connect_options=opts)
    assert "host key" in str(err) and "known_hosts" in str(err)
    assert "CHANGED" not in str(err)


def test_changed_host_key(bed: testbed.Bed, tmp_path: Path) -> None:
    # node2's name with node3's key: what a changed (or spoofed) key looks like.
    lines = bed.known_hosts.read_text().splitlines()
    key3 = next(ln for ln in lines if ln.startswith(n3 + ",")).split(None, 1)[1]
    wrong = tmp_path / "known_hosts"
    wrong.write_text("\n".join([ln for ln in lines if not ln.startswith(n2 + ",")]
                               + [f"{n2},{bed.host(n2).address} {key3}"]) + "\n")
    opts = {**bed.connect_options(), "known_hosts": str(wrong)}
    err = assert_fails(bed, HostKeyError, [n1, n2], connect_options=opts)
    assert n2 in str(err)
    assert "host key CHANGED" in str(err) and "attack" in str(err)


def test_failing_jump_host_is_named(bed: testbed.Bed) -> None:
    opts = {**bed.connect_options(), "tunnel": f"root@{n4}:1"}
    err = assert_fails(bed, (ConnectError, MultiHostError), [n1, n2], connect_options=opts)
    text = str(err)
    assert f"through the jump host root@{n4}:1" in text and "refused" in text
    assert "Fix the jump host first" in text


def test_missing_known_hosts_file_is_a_config_error(bed: testbed.Bed, tmp_path: Path) -> None:
    opts = {**bed.connect_options(), "known_hosts": str(tmp_path / "nope")}
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        SSHCluster([n1, n2], connect_options=opts)
    assert time.monotonic() - start < 5
    assert str(tmp_path / "nope") in str(info.value) and "does not exist" in str(info.value)


def test_remote_python_not_found(bed: testbed.Bed) -> None:
    err = assert_fails(bed, RemotePythonError, [n1, n2],
                       connect_options=bed.connect_options(),
                       remote_python="/opt/nowhere/bin/python3")
    assert "/opt/nowhere/bin/python3" in str(err) and n1 in str(err)


def test_distributed_not_importable(bed: testbed.Bed, tmp_path: Path) -> None:
    # Not in /tmp: each bed host has its own. The bed's state dir is seen by all of them.
    venv = bed.state_dir / f"bare-{tmp_path.name[-8:]}"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    try:
        python = str(venv / "bin" / "python")
        err = assert_fails(bed, RemoteImportError, [n1, n2],
                           connect_options=bed.connect_options(), remote_python=python)
        assert "No module named" in str(err) and python in str(err)
        checks = check_hosts([n1], bed.connect_options(), remote_python=python)
        assert not checks[0].ok and "not importable" in str(checks[0].error)
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def test_version_mismatch(bed: testbed.Bed, monkeypatch: pytest.MonkeyPatch) -> None:
    real = sshdeploy.ssh.channel.local_versions()
    monkeypatch.setattr(sshdeploy.ssh.channel, "local_versions",
                        lambda: {**real, "distributed": "1999.1.0"})
    err = assert_fails(bed, VersionMismatchError, [n1, n2],
                       connect_options=bed.connect_options())
    assert "distributed" in str(err) and "1999.1.0" in str(err)


def test_worker_that_exits_during_startup(bed: testbed.Bed) -> None:
    # (a bad memory_limit no longer gets that far: it is refused up front)
    err = assert_fails(bed, (StartError, MultiHostError), [n1, n2, n3],
                       connect_options=bed.connect_options(),
                       worker_options={"local_directory": "/proc/sshdeploy-cannot-be-here"})
    text = str(err)
    assert f"{n2}-0" in text and f"{n3}-0" in text and "sshdeploy-cannot-be-here" in text


def test_bad_memory_limit_is_refused_before_connecting(bed: testbed.Bed) -> None:
    with pytest.raises(ConfigError) as info:
        SSHCluster([n1, n2], connect_options=bed.connect_options(),
                   worker_options={"memory_limit": "lots"})
    assert "'lots' is not a size" in str(info.value)


def test_scheduler_port_in_use(bed: testbed.Bed) -> None:
    # sshd already listens on port 22 of node1's address.
    err = assert_fails(bed, StartError, [n1, n2],
                       connect_options=bed.connect_options(), scheduler_options={"port": 22})
    assert "scheduler" in str(err) and n1 in str(err)
    assert "in use" in str(err).lower() or "address" in str(err).lower()


def test_preflight_reports_every_host(bed: testbed.Bed) -> None:
    checks = check_hosts([n1, n2, f"{n3}:2222"], bed.connect_options())
    assert [c.ok for c in checks] == [True, True, False]
    assert checks[0].versions["distributed"] == checks[0].local_versions["distributed"]
    assert "refused" in str(checks[2].error)
