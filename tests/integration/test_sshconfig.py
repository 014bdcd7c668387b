"""An OpenSSH client config, for real: Host aliases, ProxyJump and --jump-host on the bed.

The config is written into a temp dir: passed to asyncssh as
``connect_options={"config": [path]}`` in Python, and found as
``$HOME/.ssh/config`` by ``dask-ssh`` (which reads ~/.ssh like ssh does and has
no option naming a config file). Aliases (``alpha``...) resolve nowhere, not
on the controller and not on the hosts: they must never reach the remote
side as an address. Whether a jump was really taken is read from the hosts'
sshd logs (``testbed.sshd_log``): the target sees the connection come from
the jump host's bed address, not from the controller's.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from distributed import Client

from sshdeploy import SSHCluster, testbed

BANNER = re.compile(r"^\s*scheduler\s+(tcp://\S+)")
ALIASES = ("alpha", "gamma", "delta", "jump")


@dataclass
class SSHHome:
    """A temp HOME whose .ssh/config names the bed's hosts by aliases."""

    home: Path
    config: Path
    jump: testbed.BedHost  # ``jump``: reached directly
    alpha: testbed.BedHost  # ``alpha``: HostName, User, Port, IdentityFile; direct
    gamma: testbed.BedHost  # ``gamma``: ProxyJump jump
    delta: testbed.BedHost  # ``delta``: ProxyCommand ssh -W through jump


def _entry(alias: str, host: testbed.BedHost, bed: testbed.Bed, *extra: str) -> list[str]:
    return [
        f"Host {alias}",
        f"    HostName {host.address}",
        "    User root",
        "    Port 22",
        f"    IdentityFile {bed.client_key}",
        "    IdentitiesOnly yes",
        # asyncssh opens a ProxyJump hop with the config only (not with the
        # connect() keywords): the hop's host key must be found through it.
        f"    UserKnownHostsFile {bed.known_hosts}",
        *(f"    {line}" for line in extra),
    ]


@pytest.fixture
def ssh_home(bed: testbed.Bed, tmp_path: Path) -> SSHHome:
    jump, alpha, gamma, delta = bed.hosts[:4]
    proxy = (
        f"ssh -F /dev/null -i {bed.client_key} -o UserKnownHostsFile={bed.known_hosts} "
        f"-o StrictHostKeyChecking=yes -o BatchMode=yes -W %h:%p root@{jump.address}"
    )
    lines = [
        *_entry("jump", jump, bed),
        *_entry("alpha", alpha, bed),
        *_entry("gamma", gamma, bed, "ProxyJump jump"),
        *_entry("delta", delta, bed, f"ProxyCommand {proxy}"),
    ]
    ssh = tmp_path / "home" / ".ssh"
    ssh.mkdir(parents=True)
    config = ssh / "config"
    config.write_text("\n".join(lines) + "\n")
    (ssh / "known_hosts").write_text(bed.known_hosts.read_text())
    for alias in ALIASES:  # the premise: aliases resolve nowhere
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo(alias, 22)
        assert testbed.run_in(bed.hosts[0], ["getent", "hosts", alias]).returncode != 0
    return SSHHome(tmp_path / "home", config, jump, alpha, gamma, delta)


class SSHDLog:
    """What a host's sshd logs from now on."""

    def __init__(self, host: testbed.BedHost) -> None:
        self.host = host
        self.start = len(testbed.sshd_log(host))

    def accepted_from(self) -> list[str]:
        """Addresses of the connections accepted since this object was made."""
        new = testbed.sshd_log(self.host)[self.start :]
        return re.findall(r"Accepted publickey for root from (\S+) port", new)


def _advertised_hosts(client: Client) -> list[str]:
    """Every address the scheduler knows: its own and its workers' (host parts)."""
    info = client.scheduler_info(n_workers=-1)
    addresses = [info["address"], *info["workers"]]
    hosts = [a.split("://", 1)[1].rsplit(":", 1)[0] for a in addresses]
    hosts += [w["host"] for w in info["workers"].values()]
    return hosts


def _assert_bed_addresses(bed: testbed.Bed, hosts: Sequence[str]) -> None:
    subnet = ipaddress.ip_network(bed.subnet)
    for h in hosts:
        assert h not in ALIASES, f"alias {h!r} advertised to the remote side"
        assert ipaddress.ip_address(h) in subnet, h


def _connect_options(home: SSHHome, bed: testbed.Bed) -> dict[str, Any]:
    # No client_keys, no username: the config's IdentityFile and User are what works.
    return {"config": [str(home.config)], "known_hosts": str(bed.known_hosts)}


@pytest.mark.timeout(120)
def test_python_alias_and_proxyjump_from_the_config(bed: testbed.Bed, ssh_home: SSHHome) -> None:
    """``alpha`` (HostName, User, Port, IdentityFile) runs the scheduler; ``gamma``,
    reached through ``ProxyJump jump``, runs a worker."""
    logs = {h.name: SSHDLog(h) for h in (ssh_home.jump, ssh_home.alpha, ssh_home.gamma)}
    with SSHCluster(
        ["alpha", "gamma"],
        connect_options=_connect_options(ssh_home, bed),
        worker_options={"nthreads": 1},
        scheduler_options={"port": 0, "dashboard_address": ":0"},
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=30)
        assert client.submit(lambda x: x * 2, 21).result(timeout=30) == 42
        assert list(client.run(socket.gethostname).values()) == [ssh_home.gamma.name]
        assert client.run_on_scheduler(socket.gethostname) == ssh_home.alpha.name
        assert cluster.scheduler_address.startswith(f"tcp://{ssh_home.alpha.address}:")
        _assert_bed_addresses(bed, _advertised_hosts(client))
    # alpha was reached directly, gamma only through jump, and jump from here
    assert logs[ssh_home.alpha.name].accepted_from() == [bed.controller_address]
    assert logs[ssh_home.gamma.name].accepted_from() == [ssh_home.jump.address]
    assert logs[ssh_home.jump.name].accepted_from() == [bed.controller_address]


@pytest.mark.timeout(120)
def test_python_proxycommand_alias_is_not_advertised(
    bed: testbed.Bed, ssh_home: SSHHome
) -> None:
    log = SSHDLog(ssh_home.delta)
    with SSHCluster(
        ["delta", "alpha"],
        connect_options=_connect_options(ssh_home, bed),
        worker_options={"nthreads": 1},
        scheduler_options={"port": 0, "dashboard_address": ":0"},
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=30)
        assert client.submit(lambda x: x * 2, 21).result(timeout=30) == 42
        assert cluster.scheduler_address.startswith(f"tcp://{ssh_home.delta.address}:")
        _assert_bed_addresses(bed, _advertised_hosts(client))
    assert log.accepted_from() == [ssh_home.jump.address]


class DaskSSH:
    """``python -m sshdeploy.cli`` as a subprocess; stdout/stderr read in threads."""

    def __init__(self, args: Sequence[str], home: Path) -> None:
        env = {**os.environ, "HOME": str(home), "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("COLUMNS", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sshdeploy.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.readers = [
            threading.Thread(target=self._read, args=(s, into), daemon=True)
            for s, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for t in self.readers:
            t.start()

    @staticmethod
    def _read(stream: IO[str], into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def describe(self) -> str:
        return (
            f"exit status {self.proc.poll()}\n--- stdout:\n" + "\n".join(self.out)
            + "\n--- stderr:\n" + "\n".join(self.err)
        )

    def scheduler_address(self, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.out):
                m = BANNER.match(line)
                if m:
                    return m.group(1)
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"no banner:\n{self.describe()}")
            time.sleep(0.05)

    def interrupt(self, timeout: float = 15) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.stop(timeout)

    def stop(self, timeout: float = 15) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for t in self.readers:
            t.join(5)
        return code


@pytest.fixture
def dask_ssh(ssh_home: SSHHome) -> Iterator[Any]:
    runs: list[DaskSSH] = []

    def start(*args: str) -> DaskSSH:
        run = DaskSSH(["--dashboard-address", ":0", *args], ssh_home.home)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
        run.stop(10)


def _compute_then_stop(bed: testbed.Bed, run: DaskSSH, worker_host: testbed.BedHost) -> None:
    address = run.scheduler_address()
    try:
        with Client(address, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
            assert client.submit(lambda x: x + 1, 41).result(timeout=30) == 42
            assert list(client.run(socket.gethostname).values()) == [worker_host.name]
            _assert_bed_addresses(bed, _advertised_hosts(client))
    finally:
        code = run.interrupt()
    assert code == 0, run.describe()


@pytest.mark.timeout(150)
def test_cli_alias_and_proxyjump_from_home_ssh_config(
    bed: testbed.Bed, ssh_home: SSHHome, dask_ssh: Any
) -> None:
    """``dask-ssh alpha gamma`` with nothing but $HOME/.ssh (config, known_hosts)."""
    logs = {h.name: SSHDLog(h) for h in (ssh_home.jump, ssh_home.alpha, ssh_home.gamma)}
    run = dask_ssh("--scheduler-port", "8951", "alpha", "gamma")
    assert run.scheduler_address() == f"tcp://{ssh_home.alpha.address}:8951"
    _compute_then_stop(bed, run, ssh_home.gamma)
    assert logs[ssh_home.alpha.name].accepted_from() == [bed.controller_address]
    assert logs[ssh_home.gamma.name].accepted_from() == [ssh_home.jump.address]
    assert logs[ssh_home.jump.name].accepted_from() == [bed.controller_address]


@pytest.mark.timeout(150)
def test_cli_jump_host_with_keys_from_home(
    bed: testbed.Bed, ssh_home: SSHHome, dask_ssh: Any
) -> None:
    """``--jump-host jump`` (an alias of the config): both hosts are reached through it."""
    target_logs = [SSHDLog(h) for h in (ssh_home.alpha, ssh_home.gamma)]
    jump_log = SSHDLog(ssh_home.jump)
    run = dask_ssh(
        "--scheduler-port", "8952",
        "--known-hosts", str(bed.known_hosts),
        "--ssh-private-key", str(bed.client_key),
        "--ssh-username", "root",
        "--jump-host", "jump",
        ssh_home.alpha.name, ssh_home.gamma.name,
    )
    assert run.scheduler_address() == f"tcp://{ssh_home.alpha.address}:8952"
    _compute_then_stop(bed, run, ssh_home.gamma)
    for log in target_logs:
        assert log.accepted_from() == [ssh_home.jump.address], log.host.name
    # one hop per target host (asyncssh opens the jump connection per host)
    assert set(jump_log.accepted_from()) == {bed.controller_address}


@pytest.mark.timeout(150)
def test_cli_jump_host_with_only_command_line_credentials(
    bed: testbed.Bed, tmp_path: Path
) -> None:
    empty_home = tmp_path / "empty-home"
    empty_home.mkdir()
    jump, alpha, gamma = bed.hosts[:3]
    run = DaskSSH(
        [
            "--dashboard-address", ":0",
            "--scheduler-port", "8953",
            "--known-hosts", str(bed.known_hosts),
            "--ssh-private-key", str(bed.client_key),
            "--ssh-username", "root",
            "--jump-host", f"root@{jump.address}",
            alpha.name, gamma.name,
        ],
        empty_home,
    )
    try:
        run.scheduler_address(timeout=60)
        _compute_then_stop(bed, run, gamma)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
        run.stop(10)
