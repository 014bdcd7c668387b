"""The bed's network: bridge, namespaces and veths, /etc/hosts blocks, cables (set_link)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sshdeploy.testbed.model import (
    BRIDGE,
    NAME_RE,
    NS_PREFIX,
    PREFIX_LEN,
    PRIVATE_INTERFACE,
    BedHost,
    TestbedError,
    bed_of_namespace,
    bridge_ip,
    bridge_mac,
    bridge_name,
    is_shared_block,
    private_block_subnet,
    private_bridge,
    read_state,
    root_dir,
)
from sshdeploy.testbed.system import links, netns_list, run_command

HOSTS_FILE = Path("/etc/hosts")
NETNS_ETC = Path("/etc/netns")


def _begin(name: str) -> str:
    return f"# BEGIN sshdeploy-testbed {name}"


def _end(name: str) -> str:
    return f"# END sshdeploy-testbed {name}"


def _without_block(text: str, name: str) -> str:
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.rstrip("\n") == _begin(name):
            skipping = True
            continue
        if skipping:
            if line.rstrip("\n") == _end(name):
                skipping = False
            continue
        out.append(line)
    return "".join(out)


def _write_hosts_file(text: str) -> None:
    # In place (not rename): /etc/hosts may be a bind mount, and it carries our flock.
    with open(HOSTS_FILE, "r+") as fh:
        fh.seek(0)
        fh.write(text)
        fh.truncate()


def set_hosts_block(name: str, hosts: Sequence[BedHost]) -> None:
    text = _without_block(HOSTS_FILE.read_text(), name)
    if text and not text.endswith("\n"):
        text += "\n"
    block = [_begin(name)] + [f"{h.address} {h.name}" for h in hosts] + [_end(name)]
    _write_hosts_file(text + "\n".join(block) + "\n")


def remove_hosts_block(name: str) -> None:
    text = HOSTS_FILE.read_text()
    new = _without_block(text, name)
    if new != text:
        _write_hosts_file(new)


def names_in_hosts_file(exclude: str) -> set[str]:
    names: set[str] = set()
    for line in _without_block(HOSTS_FILE.read_text(), exclude).splitlines():
        fields = line.split("#", 1)[0].split()
        names.update(fields[1:])
    return names


def beds_in_hosts_file() -> set[str]:
    names = set()
    for line in HOSTS_FILE.read_text().splitlines():
        if line.startswith("# BEGIN sshdeploy-testbed "):
            names.add(line.split()[-1])
    return names


def ensure_bridge(block: int) -> None:
    bridge = bridge_name(block)
    if bridge in links():
        return
    # A fixed MAC: a bridge otherwise takes the lowest MAC of its ports, which
    # changes as beds come and go and cuts other beds' hosts off for a while.
    run_command(["ip", "link", "add", bridge, "address", bridge_mac(block), "type", "bridge"])
    run_command(["ip", "addr", "add", f"{bridge_ip(block)}/{PREFIX_LEN}", "dev", bridge])
    run_command(["ip", "link", "set", bridge, "up"])


def ensure_private_net(block: int) -> None:
    """The private bridge (no address of the controller, not even IPv6 link-local) and
    an ``unreachable`` route for its subnet, so the controller's connects fail at once."""
    bridge = private_bridge(block)
    if bridge not in links():
        run_command(["ip", "link", "add", bridge, "type", "bridge"])
        run_command(["ip", "link", "set", bridge, "addrgenmode", "none"])
        run_command(["ip", "link", "set", bridge, "up"])
    # Without it this sandbox "answers" connects to the subnet through its default route.
    run_command(["ip", "route", "replace", "unreachable", private_block_subnet(block)])


def remove_private_net(block: int) -> None:
    if private_bridge(block) in links():
        run_command(["ip", "link", "del", private_bridge(block)], check=False)
    if unreachable_route(block):
        run_command(["ip", "route", "del", "unreachable", private_block_subnet(block)], check=False)
    if not is_shared_block(block) and bridge_name(block) in links():  # the bed's own bridge
        run_command(["ip", "link", "del", bridge_name(block)], check=False)


def unreachable_route(block: int) -> bool:
    out = run_command(["ip", "route", "show", "type", "unreachable"], check=False)
    return any(
        line.split()[:2] == ["unreachable", private_block_subnet(block)]
        for line in out.splitlines()
    )


def plug_host(host: Mapping[str, Any], all_hosts: Sequence[BedHost], block: int) -> None:
    """Create *host*: its namespace, its veths into the bridges, its addresses, its /etc/hosts."""
    ns, addr, veth = host["namespace"], host["address"], host["veth"]
    pveth, paddr = host["private_veth"], host["private_address"]
    bridge = bridge_name(block)
    try:
        run_command(["ip", "netns", "add", ns])
    except TestbedError as exc:
        raise TestbedError(
            f"cannot create network namespace {ns}",
            exc.cause,
            "Run as root on a machine that allows network namespaces.",
        ) from exc
    run_command(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run_command(["ip", "link", "set", veth, "master", bridge, "up"])
    # The controller may still cache the MAC of a host that had this address
    # before (a bed just taken down): forget it, or connects stall until it expires.
    run_command(["ip", "neigh", "flush", "to", addr, "dev", bridge], check=False)
    run_command(["ip", "-n", ns, "addr", "add", f"{addr}/{PREFIX_LEN}", "dev", "eth0"])
    run_command(["ip", "-n", ns, "link", "set", "eth0", "up"])
    run_command(
        ["ip", "link", "add", pveth, "type", "veth", "peer", "name", PRIVATE_INTERFACE, "netns", ns]
    )
    run_command(["ip", "link", "set", pveth, "addrgenmode", "none"])  # no controller address there
    run_command(["ip", "link", "set", pveth, "master", private_bridge(block), "up"])
    run_command(["ip", "-n", ns, "addr", "add", f"{paddr}/{PREFIX_LEN}", "dev", PRIVATE_INTERFACE])
    run_command(["ip", "-n", ns, "link", "set", PRIVATE_INTERFACE, "up"])
    run_command(["ip", "-n", ns, "link", "set", "lo", "up"])
    etc = NETNS_ETC / ns
    etc.mkdir(parents=True, exist_ok=True)
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    lines += [f"{h.address} {h.name}" for h in all_hosts]
    (etc / "hosts").write_text("\n".join(lines) + "\n")


def remove_bridge_if_unused() -> None:
    if BRIDGE not in links():
        return
    ports = run_command(["ip", "-o", "link", "show", "master", BRIDGE], check=False).strip()
    others = [ns for ns in netns_list() if ns.startswith(NS_PREFIX)]
    if not ports and not others:
        run_command(["ip", "link", "del", BRIDGE], check=False)
        with contextlib.suppress(OSError):
            NETNS_ETC.rmdir()  # only if empty
        with contextlib.suppress(OSError):
            root_dir().rmdir()  # only if empty


def set_link(host: BedHost, up: bool) -> None:
    """Unplug (``up=False``) or plug back a host's cable: its bridge port goes down/up.

    The host keeps its address and routes; packets to and from it are dropped,
    as with a host that was lost. Only the bed network (``eth0``) is unplugged;
    the private network stays as it is.
    """
    bed = bed_of_namespace(host.namespace)
    state = read_state(bed) if bed and NAME_RE.match(bed) else None
    veth = None
    if state is not None:
        veth = next((h["veth"] for h in state["hosts"] if h["namespace"] == host.namespace), None)
    if veth is None:
        raise TestbedError(f"no such bed host {host.name} ({host.namespace})")
    run_command(["ip", "link", "set", veth, "up" if up else "down"])
