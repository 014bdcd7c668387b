"""The local test bed itself: hosts, names, keys, isolation, and nothing left after down."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sshdeploy import testbed
from sshdeploy.ssh.sshlib import asyncssh

# Beds of their own, so the session bed is not disturbed; named after the session
# bed (SSHDEPLOY_TEST_BED), so that test sessions of different beds do not collide.
_BASE = os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME)[:7]
OTHER = f"{_BASE}c"
KILLED = f"{_BASE}k"


def _leftovers_of(name: str, state_dir: Path) -> list[str]:
    """Everything a bed called ``name`` could leave on the machine."""
    left = []
    prefix = f"{testbed.NS_PREFIX}{name}-"
    left += [f"netns {ns}" for ns in testbed.netns_list() if ns.startswith(prefix)]
    if testbed.NETNS_ETC.is_dir():
        left += [
            f"/etc/netns/{d.name}" for d in testbed.NETNS_ETC.iterdir() if d.name.startswith(prefix)
        ]
    hosts = Path("/etc/hosts").read_text()
    if f"sshdeploy-testbed {name}" in hosts:
        left.append("/etc/hosts block")
    if state_dir.exists():
        left.append(f"state dir {state_dir}")
    for pid_dir in Path("/proc").iterdir():
        if pid_dir.name.isdigit() and not testbed.is_zombie(int(pid_dir.name)):
            cmd = testbed.cmdline(int(pid_dir.name)) or ""
            if str(state_dir) in cmd:
                left.append(f"process {pid_dir.name}: {cmd}")
    return left


def _block_links(block: int) -> list[str]:
    """Links of bed block ``block``: its veths (both networks) and its own bridges."""
    own = {f"sdtbp{block}"} | ({f"sdtb{block}"} if block >= 4 else set())
    return [
        ln
        for ln in testbed.links()
        if ln.startswith((f"sdtb{block}h", f"sdtb{block}p")) or ln in own
    ]


def _unreachable_routes() -> list[str]:
    out = subprocess.run(
        ["ip", "route", "show", "type", "unreachable"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[1] for line in out.splitlines() if line.strip()]


@pytest.mark.timeout(60)
def test_second_bed_up_down_leaves_nothing(bed: testbed.Bed) -> None:
    other = testbed.up(2, OTHER, sshd_options={"MaxSessions": "3"})
    try:
        assert [h.name for h in other.hosts] == [f"{OTHER}1", f"{OTHER}2"]
        mine = {h.address for h in bed.hosts}
        assert not mine & {h.address for h in other.hosts}
        subnet = ipaddress.ip_network(other.subnet)
        assert all(ipaddress.ip_address(h.address) in subnet for h in other.hosts)
        assert other.private_subnet in _unreachable_routes()
        assert other.bridge in testbed.links() and bed.bridge in testbed.links()
        assert testbed.up(2, OTHER, sshd_options={"MaxSessions": "3"}) == other  # idempotent
        config = other.state_dir / "hosts" / f"{OTHER}1" / "sshd_config"
        effective = subprocess.run(
            ["/usr/sbin/sshd", "-T", "-f", str(config)], capture_output=True, text=True, check=True
        ).stdout
        assert "maxsessions 3" in effective
        assert "maxstartups 10:30:100" in effective  # OpenSSH's default, untouched
        assert "permitrootlogin without-password" in effective
        assert socket.gethostbyname(f"{OTHER}2") == other.hosts[1].address
        state = json.loads((other.state_dir / "state.json").read_text())
        block = state["block"]
        assert _block_links(block)
    finally:
        testbed.down(OTHER)
    assert _leftovers_of(OTHER, other.state_dir) == []
    assert _block_links(block) == []
    assert other.private_subnet not in _unreachable_routes()
    if other.bridge != bed.bridge:  # a bridge of its own goes with the bed
        assert other.bridge not in testbed.links()
    testbed.down(OTHER)  # idempotent
    # the session bed still works
    assert bed.private_subnet in _unreachable_routes()
    assert testbed.run_in(bed.hosts[0], ["hostname"]).stdout.strip() == bed.hosts[0].name


@pytest.mark.timeout(60)
def test_ssh_with_config_reaches_every_host(bed: testbed.Bed) -> None:
    before = {h.name: len(testbed.sshd_log(h)) for h in bed.hosts}
    for host in bed.hosts:
        proc = subprocess.run(
            [
                "ssh",
                "-F",
                str(bed.ssh_config),
                "-o",
                "StrictHostKeyChecking=yes",
                host.name,
                "hostname",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == host.name
    for host in bed.hosts:  # sshd logs who came from where (LogLevel INFO)
        new = testbed.sshd_log(host)[before[host.name] :]
        assert f"Accepted publickey for root from {bed.controller_address} port" in new, new
    lines = bed.known_hosts.read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == [f"{h.name},{h.address}" for h in bed.hosts]
    assert all(ln.split()[1] == "ssh-ed25519" for ln in lines)
    assert bed.client_key.exists()
    assert [ln for ln in bed.hostfile.read_text().splitlines() if not ln.startswith("#")] == [
        f"root@{h.name}" for h in bed.hosts
    ]


@pytest.mark.timeout(30)
def test_names_resolve_to_bed_addresses(bed: testbed.Bed) -> None:
    code = "import socket; print(socket.gethostname(), socket.gethostbyname(socket.gethostname()))"
    for host in bed.hosts:
        proc = testbed.run_in(host, [sys.executable, "-c", code])
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [host.name, host.address]
        assert socket.gethostbyname(host.name) == host.address  # on the controller too
    peer = bed.hosts[-1]
    proc = testbed.run_in(bed.hosts[0], ["getent", "hosts", peer.name])
    assert proc.stdout.split() == [peer.address, peer.name]


@pytest.mark.timeout(30)
def test_host_to_host_tcp(bed: testbed.Bed) -> None:
    server, client = bed.hosts[0], bed.hosts[1]
    listener_code = (
        "import socket, sys\n"
        "s = socket.create_server(('0.0.0.0', 0))\n"
        "print(s.getsockname()[1], flush=True)\n"
        "c, addr = s.accept()\n"
        "c.sendall((socket.gethostname() + ' ' + addr[0]).encode())\n"
        "c.close()\n"
    )
    proc = subprocess.Popen(
        testbed.host_command(server, [sys.executable, "-c", listener_code]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        assert any(pid == proc.pid for pid, _ in testbed.processes(server))
        client_code = (
            "import socket\n"
            f"with socket.create_connection(({server.name!r}, {port}), timeout=10) as c:\n"
            "    print(c.recv(100).decode())\n"
        )
        out = testbed.run_in(client, [sys.executable, "-c", client_code])
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [server.name, client.address]
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(30)
def test_no_route_beyond_the_subnet(bed: testbed.Bed) -> None:
    host = bed.hosts[0]
    routes = testbed.run_in(host, ["ip", "-4", "route", "show"]).stdout.splitlines()
    # only the two connected subnets: no default route, no route anywhere else
    assert sorted(r.split()[:3] for r in routes) == sorted(
        [[bed.subnet, "dev", "eth0"], [bed.private_subnet, "dev", "eth1"]]
    ), routes
    assert testbed.run_in(host, ["ip", "-6", "route", "show", "default"]).stdout.strip() == ""
    code = (
        "import errno, socket\n"
        "for target in ('1.1.1.1', '10.213.250.1', '192.168.1.1'):\n"
        "    try:\n"
        "        socket.create_connection((target, 80), timeout=5)\n"
        "    except OSError as exc:\n"
        "        assert exc.errno == errno.ENETUNREACH, (target, exc)\n"
        "    else:\n"
        "        raise SystemExit('reached ' + target)\n"
        "print('isolated')\n"
    )
    proc = testbed.run_in(host, [sys.executable, "-c", code])
    assert proc.stdout.strip() == "isolated", proc.stderr


@pytest.mark.timeout(60)
def test_asyncssh_connect_options(bed: testbed.Bed) -> None:
    async def main() -> None:
        host = bed.hosts[1]
        async with asyncssh.connect(host.name, **bed.connect_options()) as conn:  # type: ignore[arg-type]
            result = await conn.run("hostname", check=True)
            assert str(result.stdout).strip() == host.name
        wrong = asyncssh.generate_private_key("ssh-ed25519")
        opts = dict(bed.connect_options(), client_keys=[wrong])
        with pytest.raises(asyncssh.PermissionDenied):
            await asyncssh.connect(host.name, **opts)  # type: ignore[arg-type]
        opts = dict(bed.connect_options(), known_hosts=asyncssh.import_known_hosts(""))
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            await asyncssh.connect(host.name, **opts)  # type: ignore[arg-type]

    asyncio.run(main())


@pytest.mark.timeout(60)
def test_set_link_loses_and_restores_a_host(bed: testbed.Bed) -> None:
    host = bed.hosts[-1]
    testbed.set_link(host, False)
    try:
        with pytest.raises(OSError):
            socket.create_connection((host.address, 22), timeout=1).close()
    finally:
        testbed.set_link(host, True)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection((host.address, 22), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "host did not come back after set_link(True)"
            time.sleep(0.05)  # poll interval


@pytest.mark.timeout(90)
def test_down_after_killed_up(bed: testbed.Bed) -> None:
    state_dir = testbed.state_dir(KILLED)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sshdeploy.testbed", "up", "8", "--name", KILLED],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # kill it as soon as some hosts exist (and, if it finished first, anyway)
        deadline = time.monotonic() + 30
        prefix = f"{testbed.NS_PREFIX}{KILLED}-"
        while not any(ns.startswith(prefix) for ns in testbed.netns_list()):
            assert proc.poll() in (None, 0), "up failed on its own"
            assert time.monotonic() < deadline, "up created no namespace"
            time.sleep(0.005)  # poll interval
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert state_dir.exists()
        state = json.loads((state_dir / "state.json").read_text())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        testbed.down(KILLED)
    assert _leftovers_of(KILLED, state_dir) == []
    assert _block_links(state["block"]) == []
    assert state["private_subnet"] not in _unreachable_routes()
    assert testbed.status(KILLED) is None
    assert os.path.exists("/etc/hosts")
    assert testbed.run_in(bed.hosts[0], ["hostname"]).stdout.strip() == bed.hosts[0].name


@pytest.mark.timeout(30)
def test_processes_excludes_the_listener(bed: testbed.Bed) -> None:
    host = bed.hosts[0]
    assert all("[listener]" not in cmd for _pid, cmd in testbed.processes(host))
    proc = subprocess.Popen(
        testbed.host_command(host, [sys.executable, "-c", "import sys; sys.stdin.read()"]),
        stdin=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not any(pid == proc.pid for pid, _ in testbed.processes(host)):
            assert time.monotonic() < deadline
            time.sleep(0.02)  # poll interval
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
