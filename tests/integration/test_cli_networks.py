"""``dask-ssh`` on real networks: private interfaces, forwarding, TLS, partial starts, Ctrl-C.

Real ``dask-ssh`` subprocesses against the namespace bed (see ``test_cli.py``
for :class:`DaskSSH`): each test asserts on what a user sees (the banner, the
printed connect line, exit statuses) and that nothing is left on any host.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from distributed import Client

from sshdeploy import testbed
from sshdeploy.ssh.sshlib import asyncssh


def _sibling(name: str) -> ModuleType:
    """Import a sibling test module (``--import-mode=importlib`` puts none on sys.path)."""
    spec = importlib.util.spec_from_file_location(f"_sshdeploy_{name}",
                                                  Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module


_test_cli = _sibling("test_cli")
DaskSSH = _test_cli.DaskSSH
dask_ssh = _test_cli.dask_ssh  # the fixture

PORT = 8951
SCHEDULER = re.compile(r"^\s*scheduler\s+((?:tcp|tls)://\S+)")
THROUGH_SSH = re.compile(r"^\s*scheduler reached through SSH \(((?:tcp|tls)://\S+) on (\S+)\)")
CONNECT = re.compile(r"^from distributed import Client, Security; client = Client\(.*\)$")
COMPUTE = "\nprint(client.submit(lambda x: x + 1, 41).result(timeout=30)); client.close()\n"


def first_three(bed: testbed.Bed) -> list[str]:
    return [h.name for h in bed.hosts[:3]]


def scheduler_of(run: DaskSSH, timeout: float = 90) -> str:
    """Wait for the banner; return the scheduler address it prints."""
    deadline = time.monotonic() + timeout
    while True:
        for line in list(run.stdout_lines):
            m = SCHEDULER.match(line)
            if m:
                return m.group(1)
        if run.proc.poll() is not None:
            run.finish(5)
            raise AssertionError(f"dask-ssh exited before its banner:\n{run.describe()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no banner within {timeout} s:\n{run.describe()}")
        time.sleep(0.05)


def banner_line(run: DaskSSH, pattern: re.Pattern[str], timeout: float = 10) -> re.Match[str]:
    found: list[re.Match[str]] = []

    def seen() -> bool:
        found.extend(m for m in map(pattern.match, list(run.stdout_lines)) if m)
        return bool(found)

    testbed.wait_until(seen, timeout, f"a banner line matching {pattern.pattern!r}")
    return found[0]


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run *code* in another local Python process (a user's client)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout)


def ctrl_c(run: DaskSSH) -> None:
    run.proc.send_signal(signal.SIGINT)
    assert run.finish(30) == 0, run.describe()
    run.assert_nothing_left(timeout=5)
    assert "Traceback" not in run.own_output, run.describe()


@pytest.mark.timeout(180)
def test_interface_on_the_private_network_is_reached_through_ssh(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH]
) -> None:
    n1, n2, n3 = first_three(bed)
    run = dask_ssh("--interface", bed.private_interface, "--scheduler-port", str(PORT),
                   "--dashboard-address", ":0", n1, n2, n3)
    address = scheduler_of(run)
    assert address.startswith("tcp://127.0.0.1:"), run.describe()
    real, where = banner_line(run, THROUGH_SSH).groups()
    assert real == f"tcp://{bed.host(n1).private_address}:{PORT}", run.describe()
    assert n1 in where
    done = run_python(
        f"from distributed import Client; client = Client({address!r}, timeout=30)\n"
        f"client.wait_for_workers(2, timeout=60)\n"
        "print(sorted(w['host'] for w in client.scheduler_info(n_workers=-1)['workers'].values()))"
        + COMPUTE
    )
    assert done.returncode == 0, done.stderr
    hosts, result = done.stdout.split("\n")[:2]
    assert result == "42"
    # The workers listen on the private network too.
    assert hosts == str(sorted([bed.host(n2).private_address, bed.host(n3).private_address]))
    ctrl_c(run)


@pytest.mark.timeout(180)
def test_no_forward_ports_to_a_private_scheduler_fails_naming_the_address(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH]
) -> None:
    n1, n2, _ = first_three(bed)
    run = dask_ssh("--interface", bed.private_interface, "--no-forward-ports",
                   "--scheduler-port", str(PORT + 1), "--dashboard-address", ":0", n1, n2)
    assert run.finish(60) == 1, run.describe()
    assert f"{bed.host(n1).private_address}:{PORT + 1}" in run.stderr, run.describe()
    assert "--forward-ports" in run.stderr, run.describe()
    assert "Traceback" not in run.own_output, run.describe()
    run.assert_nothing_left(timeout=5)


def _tls_run(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH], port: int, *extra: str
) -> tuple[DaskSSH, str, str, Path]:
    run = dask_ssh("--tls", "--scheduler-port", str(port), "--dashboard-address", ":0",
                   *extra, *first_three(bed))
    address = scheduler_of(run)
    assert address.startswith("tls://"), run.describe()
    line = banner_line(run, CONNECT).group(0)
    assert f'Client("{address}"' in line
    ca = Path(re.search(r'tls_ca_file="([^"]+)"', line).group(1))  # type: ignore[union-attr]
    creds = ca.parent
    assert creds.stat().st_mode & 0o777 == 0o700
    # owner: who made it, so that a later run removes it if this one is killed
    assert sorted(p.name for p in creds.iterdir()) == ["ca.pem", "client.key", "client.pem",
                                                       "owner"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in creds.iterdir())
    return run, address, line, creds


@pytest.mark.timeout(180)
def test_tls_prints_a_line_that_connects_and_plain_tcp_is_refused(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH]
) -> None:
    run, address, line, creds = _tls_run(bed, dask_ssh, PORT + 2)
    done = run_python(line + "\nclient.wait_for_workers(2, timeout=60)" + COMPUTE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"
    plain = address.replace("tls://", "tcp://")
    with pytest.raises((OSError, TimeoutError)):
        Client(plain, timeout=3)
    ctrl_c(run)
    assert not creds.exists()


@pytest.mark.timeout(180)
def test_tls_with_forward_ports(bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH]) -> None:
    run, address, line, creds = _tls_run(bed, dask_ssh, PORT + 3, "--forward-ports")
    assert address.startswith("tls://127.0.0.1:"), run.describe()
    banner_line(run, THROUGH_SSH)
    done = run_python(line + COMPUTE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish(30) == 0, run.describe()
    run.assert_nothing_left(timeout=5)
    assert not creds.exists()


@pytest.mark.timeout(180)
def test_min_workers_comes_up_without_a_refusing_host_and_names_it(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH]
) -> None:
    n1, n2, _n3 = first_three(bed)
    bad = f"root@{bed.hosts[3].address}:1"
    run = dask_ssh("--min-workers", "1", "--scheduler-port", str(PORT + 4),
                   "--dashboard-address", ":0", n1, n2, bad)
    address = scheduler_of(run)
    left_out = banner_line(run, re.compile(r"^\s*left out\s+(.*)$")).group(1)
    assert bad in left_out and "refused" in left_out, run.describe()
    with Client(address, timeout=30) as client:
        assert client.submit(lambda x: x + 1, 41).result(timeout=30) == 42
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 1
    ctrl_c(run)


@pytest.mark.timeout(180)
def test_without_min_workers_a_refusing_host_fails_the_run(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH]
) -> None:
    n1, n2, _ = first_three(bed)
    bad = f"root@{bed.hosts[3].address}:1"
    run = dask_ssh("--scheduler-port", str(PORT + 5), "--dashboard-address", ":0", n1, n2, bad)
    assert run.finish(90) == 1, run.describe()
    assert bad in run.stderr and "refused" in run.stderr, run.describe()
    assert "Traceback" not in run.own_output, run.describe()
    run.assert_nothing_left(timeout=5)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("who", ["every host", "the worker hosts",
                                 "the worker hosts, the gate waiting"])
def test_ctrl_c_during_a_stalled_start_stops_at_once_and_leaves_nothing(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH], who: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n1, n2, n3 = first_three(bed)
    stalled = [bed.host(n) for n in ((n1, n2, n3) if who == "every host" else (n2, n3))]
    # The setup runs on every host; on the scheduler's host it may skip the sleep.
    setup = "sleep 300" if who == "every host" else f'[ "$(hostname)" = {n1} ] || sleep 300'
    if who == "the worker hosts":
        # Without the version gate (whose probes run the setup too, and stall with it,
        # so the scheduler waits for them) the scheduler comes up while the workers stall.
        monkeypatch.setenv("DASK_SSHDEPLOY__VERSION_CHECK", "ignore")
    run = dask_ssh("--setup", setup, "--scheduler-port", str(PORT + 6), n1, n2, n3)
    testbed.wait_until(
        lambda: all(any("sleep 300" in cmd for _, cmd in testbed.processes(h)) for h in stalled),
        30, f"the setup's sleep running on {who}")
    if who == "the worker hosts":  # the scheduler is up while the workers stall
        run.wait_for_output(r"Scheduler at:", 60)
    elif who != "every host":  # the scheduler's agent (python -u) waits for the gate
        testbed.wait_until(
            lambda: any(" -u -c " in cmd for _, cmd in testbed.processes(bed.host(n1))),
            30, "the scheduler's agent running")
        assert "Scheduler at:" not in run.stdout + run.stderr, run.describe()
    run.proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    code = run.finish(15)
    took = time.monotonic() - start
    print(f"SIGINT during start-up ({who} stalled) to exit: {took:.2f} s")
    assert code == 130, run.describe()
    assert took < 10, run.describe()
    assert "SIGINT received during start-up" in run.stderr, run.describe()
    assert "Traceback" not in run.own_output, run.describe()
    testbed.wait_until(lambda: not any(testbed.processes(h) for h in bed.hosts), 10,
                       "no process but sshd on any bed host")


def _dask_ssh_cli(bed: testbed.Bed, *args: str, stdin: str = "",
                  timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run ``dask-ssh ARGS`` to its end with the bed's known_hosts and user."""
    argv = [sys.executable, "-m", "sshdeploy.cli", "--known-hosts", str(bed.known_hosts),
            "--ssh-username", "root", *args]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NO_COLOR": "1"})


@pytest.mark.timeout(120)
def test_ask_passphrase_unlocks_a_protected_key(bed: testbed.Bed, tmp_path: Path) -> None:
    key = tmp_path / "protected_key"
    key.write_bytes(asyncssh.read_private_key(str(bed.client_key))
                    .export_private_key(passphrase="pw-4711"))
    key.chmod(0o600)
    n1 = bed.hosts[0].name
    ok = _dask_ssh_cli(bed, "--check", "--ask-passphrase", "--ssh-private-key", str(key), n1,
                       stdin="pw-4711\n")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "pw-4711" not in ok.stdout + ok.stderr
    wrong = _dask_ssh_cli(bed, "--check", "--ask-passphrase", "--ssh-private-key", str(key),
                          n1, stdin="not-it\n")
    assert wrong.returncode == 1
    assert str(key) in wrong.stdout and "passphrase" in wrong.stdout.lower()


@pytest.mark.timeout(120)
def test_check_imports_imports_what_the_cheap_check_only_reads(
    bed: testbed.Bed, tmp_path: Path
) -> None:
    # A "distributed" that shadows the installed one and cannot be imported: its
    # metadata still reads fine, so only the deep probe sees the breakage.
    # (In the host's own /tmp: that is where the remote Python looks.)
    shadow_dir = f"/tmp/shadow-{uuid.uuid4().hex[:8]}"
    shadow = testbed.host_path(bed.hosts[0], shadow_dir) / "distributed"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('shadowed distributed is broken')\n")
    n1 = bed.hosts[0].name
    common = ("--ssh-private-key", str(bed.client_key),
              "--setup", f"export PYTHONPATH={shadow_dir}", n1)
    cheap = _dask_ssh_cli(bed, "--check", *common)
    assert cheap.returncode == 0, cheap.stdout + cheap.stderr
    deep = _dask_ssh_cli(bed, "--check", "--check-imports", *common)
    assert deep.returncode == 1, deep.stdout + deep.stderr
    assert "distributed" in deep.stdout and "Traceback" not in deep.stderr, deep.stdout
