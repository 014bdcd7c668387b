"""``dask-ssh`` on the real test bed: a real subprocess, real sshd per host, no mocks.

Each test runs ``python -m sshdeploy.cli`` with the bed's key, known_hosts and
user, reads its stdout and stderr in threads, and asserts on what a user sees:
the banner, prefixed remote lines, exit statuses, messages, and that nothing is
left on any bed host afterwards.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import pytest
from distributed import Client

from sshdeploy import testbed
from sshdeploy.errors import HostfileError

# Not 8786: SSHCluster's default scheduler port, used by tests that may run
# at the same time on the shared bed.
SCHEDULER_PORT = 8931
TAG_VARIABLE = "SSHDEPLOY_CLI_TEST"
BANNER = re.compile(r"^\s*scheduler\s+(tcp://\S+)")
#: A remote line as dask-ssh prints it: ``[scheduler node1] ...``, ``[node2-0] ...``.
REMOTE_LINE = re.compile(r"^\[(?!dask-ssh\])[^\]]+\] ")


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def python_processes(bed: testbed.Bed, tag: str) -> dict[str, list[tuple[int, str]]]:
    """Return each bed host's Python processes started by the ``dask-ssh`` tagged *tag*.

    Other sessions may use the shared bed at the same time, so a process is
    ours when its environment carries ``SSHDEPLOY_CLI_TEST=<tag>`` (exported
    by ``--setup`` before the remote Python starts, inherited by its children).
    """
    marker = f"{TAG_VARIABLE}={tag}".encode()
    out: dict[str, list[tuple[int, str]]] = {}
    for h in bed.hosts:
        procs = [(pid, cmd) for pid, cmd in testbed.processes(h)
                 if "python" in cmd.lower() and marker in _environ(pid).split(b"\0")]
        if procs:
            out[h.name] = procs
    return out


class DaskSSH:
    """A ``dask-ssh`` subprocess whose stdout and stderr are read line by line in threads."""

    def __init__(self, bed: testbed.Bed, args: Sequence[str], read_stdout: bool = True) -> None:
        self.bed = bed
        self.tag = uuid.uuid4().hex
        argv = [
            sys.executable, "-m", "sshdeploy.cli",
            "--known-hosts", str(bed.known_hosts),
            "--ssh-private-key", str(bed.client_key),
            "--ssh-username", "root",
            "--setup", f"export {TAG_VARIABLE}={self.tag}",
            *args,
        ]
        env = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("COLUMNS", None)
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, env=env,
        )
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr_lines),
                             daemon=True),
        ]
        if read_stdout:  # else the test reads (and closes) proc.stdout itself
            self._readers.append(threading.Thread(
                target=self._read, args=(self.proc.stdout, self.stdout_lines), daemon=True))
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream: IO[str], into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    @property
    def stdout(self) -> str:
        return "\n".join(self.stdout_lines)

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    @property
    def own_output(self) -> str:
        """What dask-ssh itself printed: everything but the remote lines.

        Remote processes may log tracebacks of their own (distributed logs
        "Batched Comm Closed" with one at INFO when a worker leaves mid-write);
        "no traceback" is about dask-ssh.
        """
        lines = self.stdout_lines + self.stderr_lines
        return "\n".join(ln for ln in lines if not REMOTE_LINE.match(ln))

    def describe(self) -> str:
        return (f"exit status {self.proc.poll()}\n--- stdout:\n{self.stdout}\n"
                f"--- stderr:\n{self.stderr}")

    def wait_for_scheduler(self, timeout: float = 90) -> str:
        """Wait for the banner line with the scheduler address; return the address."""
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.stdout_lines):
                m = BANNER.match(line)
                if m:
                    return m.group(1)
            if self.proc.poll() is not None:
                self.finish(5)
                raise AssertionError(f"dask-ssh exited before its banner:\n{self.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no banner within {timeout} s:\n{self.describe()}")
            time.sleep(0.05)

    def wait_for_output(self, pattern: str, timeout: float) -> None:
        """Wait until a stdout line matches *pattern*."""
        regex = re.compile(pattern)
        testbed.wait_until(lambda: any(regex.search(ln) for ln in list(self.stdout_lines)), timeout,
                   f"a line matching {pattern!r}")

    def finish(self, timeout: float) -> int:
        """Wait for the exit (bounded) and for the readers to drain; return the status."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            for t in self._readers:
                t.join(5)
            raise AssertionError(
                f"dask-ssh did not exit within {timeout} s:\n{self.describe()}"
            ) from None
        for t in self._readers:
            t.join(5)
        return code

    def remote(self) -> dict[str, list[tuple[int, str]]]:
        """Return the Python processes this ``dask-ssh`` runs on each bed host."""
        return python_processes(self.bed, self.tag)

    def assert_nothing_left(self, timeout: float) -> None:
        """Poll until none of this ``dask-ssh``'s processes runs on any bed host."""
        try:
            testbed.wait_until(lambda: not self.remote(), timeout,
                       "no Python process of this dask-ssh on any bed host")
        except AssertionError as err:
            raise AssertionError(f"{err}; left: {self.remote()}\n{self.describe()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for t in self._readers:
            t.join(5)


@pytest.fixture
def dask_ssh(bed: testbed.Bed) -> Iterator[Callable[..., DaskSSH]]:
    """Start ``dask-ssh`` with the bed's credentials; killed at teardown if still running."""
    started: list[DaskSSH] = []

    def start(*args: str, read_stdout: bool = True) -> DaskSSH:
        run = DaskSSH(bed, args, read_stdout=read_stdout)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill()


def hostfile(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "hosts.txt"
    path.write_text("# test hosts\n" + "\n".join(lines) + "\n")
    return str(path)


def names(bed: testbed.Bed) -> tuple[str, str, str]:
    """Return the names of the bed's first three hosts (``node1..node3`` on the default bed)."""
    first, second, third = (h.name for h in bed.hosts[:3])
    return first, second, third


def serving(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH], tmp_path: Path, port: int, *extra: str
) -> tuple[DaskSSH, str]:
    run = dask_ssh(
        "--hostfile", hostfile(tmp_path, *names(bed)),
        "--scheduler-port", str(port), "--dashboard-address", ":0", *extra,
    )
    return run, run.wait_for_scheduler()


@pytest.mark.timeout(180)
def test_hostfile_compute_then_ctrl_c(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH], tmp_path: Path
) -> None:
    run, address = serving(bed, dask_ssh, tmp_path, SCHEDULER_PORT)
    n1, n2, n3 = names(bed)
    assert address == f"tcp://{bed.host(n1).address}:{SCHEDULER_PORT}"
    with Client(f"tcp://{n1}:{SCHEDULER_PORT}", timeout=30) as client:
        client.wait_for_workers(2, timeout=60)
        assert client.submit(lambda x: x + 1, 41).result(timeout=30) == 42
        by_address = client.run(socket.gethostname)
        info = client.scheduler_info(n_workers=-1)["workers"]
        assert {info[a]["name"]: h for a, h in by_address.items()} == {
            f"{n2}-0": n2, f"{n3}-0": n3,
        }
        assert client.run_on_scheduler(socket.gethostname) == n1
    # The banner lists each worker host with its workers.
    for host in (n2, n3):
        assert re.search(rf"^\s+root@{host}\S*\s+{host}-0(  \(.* each\))?$", run.stdout, re.M), \
            run.describe()

    run.proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    code = run.finish(10)
    took = time.monotonic() - start
    assert code == 0, run.describe()
    run.assert_nothing_left(timeout=1)
    print(f"SIGINT to exit: {took:.2f} s")
    out = run.stdout
    assert f"[scheduler {n1}] " in out, run.describe()
    assert f"[{n2}-0] " in out and f"[{n3}-0] " in out, run.describe()
    assert "SIGINT received" in run.stderr, run.describe()
    assert re.search(r"stopped 2 workers on 2 hosts and the scheduler in [0-9.]+ s", out)
    assert "Traceback" not in run.own_output, run.describe()


@pytest.mark.timeout(180)
def test_sigterm_exits_0_and_cleans_up(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH], tmp_path: Path
) -> None:
    run, _address = serving(bed, dask_ssh, tmp_path, SCHEDULER_PORT + 1)
    assert run.remote().keys() == set(names(bed))
    run.proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    code = run.finish(10)
    took = time.monotonic() - start
    assert code == 0, run.describe()
    run.assert_nothing_left(timeout=1)
    print(f"SIGTERM to exit: {took:.2f} s")
    assert "SIGTERM received" in run.stderr, run.describe()
    assert "Traceback" not in run.own_output, run.describe()


@pytest.mark.timeout(180)
def test_sigkill_leaves_nothing_within_5s(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH], tmp_path: Path
) -> None:
    run, _address = serving(bed, dask_ssh, tmp_path, SCHEDULER_PORT + 2, "--nworkers", "2")
    testbed.wait_until(lambda: len(run.remote()) == 3, 30, "processes on the three hosts")
    run.proc.kill()
    run.proc.wait()
    start = time.monotonic()
    run.assert_nothing_left(timeout=5)
    print(f"SIGKILL cleanup: {time.monotonic() - start:.2f} s")


@pytest.mark.timeout(60)
def test_dry_run_starts_nothing(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH], tmp_path: Path
) -> None:
    n1, n2, n3 = names(bed)
    run = dask_ssh(
        "--dry-run", "--hostfile", hostfile(tmp_path, n1, f"{n2} slots=2", n3),
        "--scheduler-port", str(SCHEDULER_PORT + 3),
    )
    assert run.finish(30) == 0, run.describe()
    assert run.remote() == {}
    out = run.stdout
    assert re.search(rf"^# root@{n1}\S*\s+scheduler\s+scheduler$", out, re.M), out
    assert re.search(rf"^# root@{n2}\S*\s+worker\s+{n2}-0, {n2}-1$", out, re.M), out
    assert re.search(rf"^# root@{n3}\S*\s+worker\s+{n3}-0$", out, re.M), out
    assert f"port={SCHEDULER_PORT + 3}" in out
    # Each host's block ends with its exact remote command: the setup, then the
    # remote Python running the agent launcher.
    blocks = [b.splitlines() for b in out.strip().split("\n\n")]
    settings, *blocks = blocks  # first the sshdeploy.* settings in force
    assert settings[0].startswith("# settings: connect-timeout="), out
    assert len(blocks) == 3, out
    for block in blocks:
        assert f"#   python:  {sys.executable}" in block, block
        command = "\n".join(ln for ln in block if not ln.startswith("#"))
        assert f"export {TAG_VARIABLE}=" in command, block
        assert f"exec {sys.executable} " in command and "sshdeploy-agent" in command, block


@pytest.mark.timeout(60)
def test_unreachable_host_fails_fast_and_clean(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH]
) -> None:
    start = time.monotonic()
    n1, n2, n3 = names(bed)
    run = dask_ssh(n1, f"{n2}:2222", n3, "--scheduler-port", str(SCHEDULER_PORT + 4),
                   "--dashboard-address", ":0")
    code = run.finish(30)
    took = time.monotonic() - start
    print(f"unreachable host: exit after {took:.2f} s")
    assert code == 1, run.describe()
    assert f"{n2}:2222" in run.stderr, run.describe()
    assert "Traceback" not in run.own_output, run.describe()
    run.assert_nothing_left(timeout=5)


@pytest.mark.timeout(60)
def test_bad_hostfile_line(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH], tmp_path: Path
) -> None:
    n1, n2, n3 = names(bed)
    path = hostfile(tmp_path, n1, f"{n2} slots=many", n3)
    run = dask_ssh("--hostfile", path)
    assert run.finish(30) == getattr(HostfileError, "exit_code", 1), run.describe()
    # Line 1 is the comment written by hostfile(); the bad line is line 3.
    assert f"{path}:3:" in run.stderr, run.describe()
    assert "Traceback" not in run.own_output, run.describe()
    assert run.stdout == "", run.describe()
    assert run.remote() == {}


@pytest.mark.timeout(90)
def test_check_prints_a_table(bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH]) -> None:
    run = dask_ssh("--check", "--hostfile", str(bed.hostfile))
    assert run.finish(60) == 0, run.describe()
    out = run.stdout
    import dask
    import distributed

    for h in bed.hosts:
        row = next((ln for ln in out.splitlines() if f"root@{h.name}" in ln), None)
        assert row is not None, f"no row for {h.name}:\n{out}"
        assert dask.__version__ in row and distributed.__version__ in row, row
        assert "ok" in row, row
    assert f"all {len(bed.hosts)} host(s) ok" in out, out
    assert run.remote() == {}


@pytest.mark.timeout(120)
def test_scheduler_death_exits_1_with_its_last_lines(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH], tmp_path: Path
) -> None:
    run, _address = serving(bed, dask_ssh, tmp_path, SCHEDULER_PORT + 5)
    n1 = names(bed)[0]
    run.wait_for_output(rf"^\[scheduler {n1}\] ", 30)
    agents = [pid for pid, cmd in run.remote().get(n1, []) if "sshdeploy-agent" in cmd]
    assert len(agents) == 1, run.remote()
    os.kill(agents[0], signal.SIGKILL)
    start = time.monotonic()
    code = run.finish(30)
    took = time.monotonic() - start
    print(f"scheduler death to exit: {took:.2f} s")
    assert code == 1, run.describe()
    err = run.stderr
    assert f"the scheduler on root@{n1}" in err and "stopped" in err, run.describe()
    assert "last scheduler output:" in err, run.describe()
    assert re.search(rf"^\s+\[scheduler {n1}\] ", err, re.M), run.describe()
    assert "Traceback" not in run.own_output, run.describe()
    assert took < 15, f"exit took {took:.1f} s:\n{run.describe()}"
    run.assert_nothing_left(timeout=5)


@pytest.mark.timeout(120)
def test_closed_stdout_stops_the_cluster_quietly(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH], tmp_path: Path
) -> None:
    """``dask-ssh ... | head -3``: read three lines, close the pipe; no traceback, nothing left."""
    run = dask_ssh(
        "--hostfile", hostfile(tmp_path, *names(bed)), "--scheduler-port",
        str(SCHEDULER_PORT + 6), "--dashboard-address", ":0", read_stdout=False,
    )
    assert run.proc.stdout is not None
    first = [run.proc.stdout.readline() for _ in range(3)]
    assert all(first), first
    testbed.wait_until(lambda: bool(run.remote()), 60, "dask-ssh's processes on the hosts")
    run.proc.stdout.close()
    start = time.monotonic()
    code = run.finish(40)
    print(f"closed stdout to exit: {time.monotonic() - start:.2f} s, status {code}")
    assert code == 141, run.describe()
    assert "Traceback" not in run.stderr and "Error" not in run.stderr, run.describe()
    run.assert_nothing_left(timeout=5)


@pytest.mark.timeout(180)
def test_sighup_stops_the_cluster(
    bed: testbed.Bed, dask_ssh: Callable[..., DaskSSH], tmp_path: Path
) -> None:
    run, _address = serving(bed, dask_ssh, tmp_path, SCHEDULER_PORT + 7)
    assert run.remote().keys() == set(names(bed))
    run.proc.send_signal(signal.SIGHUP)
    code = run.finish(30)
    assert code == 0, run.describe()
    run.assert_nothing_left(timeout=5)
    assert "SIGHUP received" in run.stderr, run.describe()
    assert re.search(r"stopped 2 workers on 2 hosts and the scheduler", run.stdout), run.describe()
    assert "Traceback" not in run.own_output, run.describe()


@pytest.mark.timeout(90)
def test_check_through_a_pipe_keeps_each_reason_on_one_line(
    bed: testbed.Bed, tmp_path: Path
) -> None:
    """``dask-ssh --check ... | grep`` finds the full path of a missing remote Python."""
    n1, n2, _n3 = names(bed)
    path = hostfile(tmp_path, n1, f"{n2} remote-python=/nonexistent/python3")
    argv = [sys.executable, "-m", "sshdeploy.cli", "--check", "--hostfile", path,
            "--known-hosts", str(bed.known_hosts), "--ssh-private-key", str(bed.client_key),
            "--ssh-username", "root"]
    env = {**os.environ, "COLUMNS": "40"}  # a narrow window must not cut a message either
    done = subprocess.run(argv, capture_output=True, text=True,
                          env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(f"FAILED root@{n2}")]
    assert len(lines) == 1, done.stdout
    assert "'/nonexistent/python3' not found" in lines[0], done.stdout
    assert "Traceback" not in done.stderr, done.stderr


class DaskSSHToFile:
    """A ``dask-ssh`` whose stdout and stderr go to files, as ``dask-ssh ... > out.txt``."""

    def __init__(self, bed: testbed.Bed, tmp_path: Path, args: Sequence[str]) -> None:
        self.bed = bed
        self.tag = uuid.uuid4().hex
        self.out_path, self.err_path = tmp_path / "out.txt", tmp_path / "err.txt"
        argv = [
            sys.executable, "-m", "sshdeploy.cli",
            "--known-hosts", str(bed.known_hosts), "--ssh-private-key", str(bed.client_key),
            "--ssh-username", "root", "--setup", f"export {TAG_VARIABLE}={self.tag}",
            "--dashboard-address", ":0", *args,
        ]
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env={**os.environ, "NO_COLOR": "1"})

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def describe(self) -> str:
        return (f"exit status {self.proc.poll()}\n--- stdout (tail):\n{self.stdout()[-3000:]}\n"
                f"--- stderr:\n{self.err_path.read_text()}")

    def wait_for_scheduler(self, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(r"^\s*scheduler\s+(tcp://\S+)", self.stdout(), re.M)
            if m:
                return m.group(1)
            assert self.proc.poll() is None, self.describe()
            assert time.monotonic() < deadline, f"no banner within {timeout} s\n{self.describe()}"
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"dask-ssh did not stop within 30 s\n{self.describe()}") from None


@pytest.mark.timeout(240)
def test_chatty_worker_output_arrives_complete_in_a_file(bed: testbed.Bed, tmp_path: Path) -> None:
    """A task printing 20 MiB through dask-ssh with stdout to a file: every line arrives."""

    def chatty(n: int) -> int:  # nested: sent by value, the workers cannot import tests
        line = "x" * 1000
        for i in range(n):
            print(f"CHATTY {i:08d} {line}")  # ~1 KiB per line
        sys.stdout.flush()
        return n

    n1, n2, _n3 = names(bed)
    port = SCHEDULER_PORT + 8
    run = DaskSSHToFile(bed, tmp_path, ["--scheduler-port", str(port), n1, n2])
    try:
        run.wait_for_scheduler()
        n = 20 * 1024
        with Client(f"tcp://{n1}:{port}", timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
            start = time.monotonic()
            assert client.submit(chatty, n).result(timeout=180) == n

            def arrived() -> int:
                with open(run.out_path, "rb") as f:
                    return sum(1 for ln in f if ln.startswith(f"[{n2}-0] CHATTY ".encode()))

            testbed.wait_until(lambda: arrived() >= n, 180, f"{n} lines in the file")
            took = time.monotonic() - start
        print(f"20 MiB of worker output into a file through dask-ssh: {took:.2f} s, "
              f"{20 / took:.1f} MiB/s")
        assert arrived() == n
        mark = f"[{n2}-0] CHATTY ".encode()
        with open(run.out_path, "rb") as f:
            numbers = [int(ln.split()[2]) for ln in f if ln.startswith(mark)]
        assert numbers == list(range(n))  # complete and in order
    finally:
        code = run.stop()
    assert code == 0, run.describe()
    assert "stopped 1 worker on 1 host" in run.stdout(), run.describe()


@pytest.mark.timeout(180)
def test_quiet_shows_only_warnings_and_own_lines(bed: testbed.Bed, tmp_path: Path) -> None:
    def log_on_worker() -> None:  # nested: sent by value, the workers cannot import tests
        import logging

        logging.getLogger("distributed.worker").warning("QUIETCHECK a warning shows")
        logging.getLogger("distributed.worker").info("QUIETCHECK an info line is hidden")
        print("QUIETCHECK a print is INFO, hidden", flush=True)

    n1, n2, _n3 = names(bed)
    port = SCHEDULER_PORT + 9
    run = DaskSSHToFile(bed, tmp_path, ["-q", "--scheduler-port", str(port), n1, n2])
    try:
        run.wait_for_scheduler()
        with Client(f"tcp://{n1}:{port}", timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
            client.run(log_on_worker)
        testbed.wait_until(lambda: "QUIETCHECK a warning shows" in run.stdout(), 30,
                           "the worker's warning")
    finally:
        code = run.stop()
    assert code == 0, run.describe()
    out = run.stdout()
    assert f"[{n2}-0] " in out and "QUIETCHECK a warning shows" in out
    assert "QUIETCHECK an info line" not in out and "QUIETCHECK a print" not in out
    assert " - INFO - " not in out, out  # distributed's INFO start-up lines are hidden
    assert "stopped 1 worker on 1 host and the scheduler" in out  # sshdeploy's own lines show
