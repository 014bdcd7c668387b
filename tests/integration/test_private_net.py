"""The bed's private network: hosts reach each other on it, the controller cannot reach it.

Every host has an ``eth1`` on the bed's private subnet, bridged between the
bed's hosts only. The controller has no address there and an ``unreachable``
route for it, so a connect from the controller fails at once (it would
otherwise hang in this sandbox: see TESTBED-NOTES.md).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from sshdeploy import testbed

# A bed of its own, to check down removes the private network (named after the session bed).
OTHER = os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME)[:7] + "p"

LISTENER = (
    "import socket\n"
    "s = socket.create_server(('{address}', 0))\n"
    "print(s.getsockname()[1], flush=True)\n"
    "c, peer = s.accept()\n"
    "c.sendall((socket.gethostname() + ' ' + peer[0]).encode())\n"
    "c.close()\n"
)


def _controller_addresses() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out = subprocess.run(
        ["ip", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    return [ipaddress.ip_interface(line.split()[3]).ip for line in out.splitlines()]


@pytest.mark.timeout(30)
def test_every_host_has_eth1_on_the_private_subnet(bed: testbed.Bed) -> None:
    subnet = ipaddress.ip_network(bed.private_subnet)
    assert bed.private_interface == "eth1"
    assert not subnet.overlaps(ipaddress.ip_network(bed.subnet))
    assert len({h.private_address for h in bed.hosts}) == len(bed.hosts)
    for host in bed.hosts:
        assert ipaddress.ip_address(host.private_address) in subnet
        out = testbed.run_in(host, ["ip", "-o", "-4", "addr", "show", "dev", "eth1"]).stdout
        assert f"inet {host.private_address}/{subnet.prefixlen}" in out, out
        routes = testbed.run_in(host, ["ip", "-4", "route", "show"]).stdout.splitlines()
        assert sorted(r.split()[0] for r in routes) == sorted([bed.subnet, bed.private_subnet])
        assert bed.host(host.private_address) == host


@pytest.mark.timeout(30)
def test_no_address_of_the_controller_on_the_private_subnet(bed: testbed.Bed) -> None:
    subnet = ipaddress.ip_network(bed.private_subnet)
    assert not [a for a in _controller_addresses() if a in subnet]
    routes = subprocess.run(
        ["ip", "route", "show", "type", "unreachable"], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert f"unreachable {bed.private_subnet}" in [r.strip() for r in routes]


@pytest.mark.timeout(30)
def test_host_to_host_tcp_on_the_private_address(bed: testbed.Bed) -> None:
    server, client = bed.hosts[0], bed.hosts[2]
    proc = subprocess.Popen(
        testbed.host_command(
            server, [sys.executable, "-c", LISTENER.format(address=server.private_address)]
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        target = (server.private_address, port)
        client_code = (
            "import socket\n"
            f"with socket.create_connection({target!r}, timeout=10) as c:\n"
            "    print(c.recv(100).decode())\n"
        )
        out = testbed.run_in(client, [sys.executable, "-c", client_code])
        assert out.returncode == 0, out.stderr
        # the connection came over eth1: the server saw the client's private address
        assert out.stdout.split() == [server.name, client.private_address]
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


@pytest.mark.timeout(30)
def test_controller_cannot_reach_the_private_address(bed: testbed.Bed) -> None:
    server = bed.hosts[1]
    # A real listener on the private address: only the network stands in the way.
    proc = subprocess.Popen(
        testbed.host_command(
            server, [sys.executable, "-c", LISTENER.format(address=server.private_address)]
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        t0 = time.monotonic()
        with pytest.raises(OSError) as info:
            socket.create_connection((server.private_address, port), timeout=10).close()
        assert info.value.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH), info.value
        assert time.monotonic() - t0 < 1.0  # at once, not after a timeout
        # the same host is reachable from the controller on its bed address
        socket.create_connection((server.address, 22), timeout=5).close()
    finally:
        proc.kill()
        proc.communicate(timeout=10)


@pytest.mark.timeout(60)
def test_down_removes_the_private_network(bed: testbed.Bed) -> None:
    other = testbed.up(2, OTHER)
    try:
        state = json.loads((other.state_dir / "state.json").read_text())
        block = state["block"]
        assert other.private_subnet not in (bed.private_subnet, "")
        assert f"sdtbp{block}" in testbed.links()
        assert testbed.up(2, OTHER) == other  # idempotent, private network included
        # a bed whose private route went missing is rebuilt by up, not returned as is
        subprocess.run(["ip", "route", "del", "unreachable", other.private_subnet], check=True)
        other = testbed.up(2, OTHER)  # (its block may differ if a lower one came free)
        block = json.loads((other.state_dir / "state.json").read_text())["block"]
        routes = subprocess.run(
            ["ip", "route", "show", "type", "unreachable"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"unreachable {other.private_subnet}" in routes
    finally:
        testbed.down(OTHER)
    assert f"sdtbp{block}" not in testbed.links()
    assert not [ln for ln in testbed.links() if ln.startswith(f"sdtb{block}p")]
    routes = subprocess.run(
        ["ip", "route", "show"], capture_output=True, text=True, check=True
    ).stdout
    assert other.private_subnet not in routes
    assert other.subnet not in routes or other.subnet == bed.subnet
    # the session bed's private network is untouched
    assert f"unreachable {bed.private_subnet}" in routes
