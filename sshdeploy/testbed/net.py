"""The bed's network: bridge, namespaces and veths, /etc/hosts blocks, cables (set_link)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sshdeploy.testbed.model import (
    _NAME_RE,
    BRIDGE,
    NS_PREFIX,
    PREFIX_LEN,
    PRIVATE_INTERFACE,
    BedHost,
    TestbedError,
    _bed_of_namespace,
    _bridge,
    _bridge_address,
    _bridge_mac,
    _private_bridge,
    _private_subnet,
    _read_state,
    _root_dir,
    _shared,
)
from sshdeploy.testbed.system import _run, links, netns_list

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


def _set_hosts_block(name: str, hosts: Sequence[BedHost]) -> None:
    text = _without_block(HOSTS_FILE.read_text(), name)
    if text and not text.endswith("\n"):
        text += "\n"
    block = [_begin(name)] + [f"{h.address} {h.name}" for h in hosts] + [_end(name)]
    _write_hosts_file(text + "\n".join(block) + "\n")


def _remove_hosts_block(name: str) -> None:
    text = HOSTS_FILE.read_text()
    new = _without_block(text, name)
    if new != text:
        _write_hosts_file(new)


def _names_in_hosts_file(exclude: str) -> set[str]:
    names: set[str] = set()
    for line in _without_block(HOSTS_FILE.read_text(), exclude).splitlines():
        fields = line.split("#", 1)[0].split()
        names.update(fields[1:])
    return names


def _beds_in_hosts_file() -> set[str]:
    names = set()
    for line in HOSTS_FILE.read_text().splitlines():
        if line.startswith("# BEGIN sshdeploy-testbed "):
            names.add(line.split()[-1])
    return names


def _ensure_bridge(block: int) -> None:
    bridge = _bridge(block)
    if bridge in links():
        return
    # A fixed MAC: a bridge otherwise takes the lowest MAC of its ports, which
    # changes as beds come and go and cuts other beds' hosts off for a while.
    _run(["ip", "link", "add", bridge, "address", _bridge_mac(block), "type", "bridge"])
    _run(["ip", "addr", "add", f"{_bridge_address(block)}/{PREFIX_LEN}", "dev", bridge])
    _run(["ip", "link", "set", bridge, "up"])


def _ensure_private_net(block: int) -> None:
    """The private bridge (no address of the controller, not even IPv6 link-local) and
    an ``unreachable`` route for its subnet, so the controller's connects fail at once."""
    bridge = _private_bridge(block)
    if bridge not in links():
        _run(["ip", "link", "add", bridge, "type", "bridge"])
        _run(["ip", "link", "set", bridge, "addrgenmode", "none"])
        _run(["ip", "link", "set", bridge, "up"])
    # Without it this sandbox "answers" connects to the subnet through its default route.
    _run(["ip", "route", "replace", "unreachable", _private_subnet(block)])


def _remove_private_net(block: int) -> None:
    if _private_bridge(block) in links():
        _run(["ip", "link", "del", _private_bridge(block)], check=False)
    if _unreachable_route(block):
        _run(["ip", "route", "del", "unreachable", _private_subnet(block)], check=False)
    if not _shared(block) and _bridge(block) in links():  # the bed's own bridge
        _run(["ip", "link", "del", _bridge(block)], check=False)


def _unreachable_route(block: int) -> bool:
    out = _run(["ip", "route", "show", "type", "unreachable"], check=False)
    return any(
        line.split()[:2] == ["unreachable", _private_subnet(block)] for line in out.splitlines()
    )


def _plug_host(host: Mapping[str, Any], all_hosts: Sequence[BedHost], block: int) -> None:
    """Create *host*: its namespace, its veths into the bridges, its addresses, its /etc/hosts."""
    ns, addr, veth = host["namespace"], host["address"], host["veth"]
    pveth, paddr = host["private_veth"], host["private_address"]
    bridge = _bridge(block)
    try:
        _run(["ip", "netns", "add", ns])
    except TestbedError as exc:
        raise TestbedError(
            f"cannot create network namespace {ns}",
            exc.cause,
            "Run as root on a machine that allows network namespaces.",
        ) from exc
    _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
    _run(["ip", "link", "set", veth, "master", bridge, "up"])
    # The controller may still cache the MAC of a host that had this address
    # before (a bed just taken down): forget it, or connects stall until it expires.
    _run(["ip", "neigh", "flush", "to", addr, "dev", bridge], check=False)
    _run(["ip", "-n", ns, "addr", "add", f"{addr}/{PREFIX_LEN}", "dev", "eth0"])
    _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    _run(
        ["ip", "link", "add", pveth, "type", "veth", "peer", "name", PRIVATE_INTERFACE, "netns", ns]
    )
    _run(["ip", "link", "set", pveth, "addrgenmode", "none"])  # no controller address there
    _run(["ip", "link", "set", pveth, "master", _private_bridge(block), "up"])
    _run(["ip", "-n", ns, "addr", "add", f"{paddr}/{PREFIX_LEN}", "dev", PRIVATE_INTERFACE])
    _run(["ip", "-n", ns, "link", "set", PRIVATE_INTERFACE, "up"])
    _run(["ip", "-n", ns, "link", "set", "lo", "up"])
    etc = NETNS_ETC / ns
    etc.mkdir(parents=True, exist_ok=True)
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    lines += [f"{h.address} {h.name}" for h in all_hosts]
    (etc / "hosts").write_text("\n".join(lines) + "\n")


def _remove_bridge_if_unused() -> None:
    if BRIDGE not in links():
        return
    ports = _run(["ip", "-o", "link", "show", "master", BRIDGE], check=False).strip()
    others = [ns for ns in netns_list() if ns.startswith(NS_PREFIX)]
    if not ports and not others:
        _run(["ip", "link", "del", BRIDGE], check=False)
        with contextlib.suppress(OSError):
            NETNS_ETC.rmdir()  # only if empty
        with contextlib.suppress(OSError):
            _root_dir().rmdir()  # only if empty


def set_link(host: BedHost, up: bool) -> None:
    """Unplug (``up=False``) or plug back a host's cable: its bridge port goes down/up.

    The host keeps its address and routes; packets to and from it are dropped,
    as with a host that was lost. Only the bed network (``eth0``) is unplugged;
    the private network stays as it is.
    """
    bed = _bed_of_namespace(host.namespace)
    state = _read_state(bed) if bed and _NAME_RE.match(bed) else None
    veth = None
    if state is not None:
        veth = next((h["veth"] for h in state["hosts"] if h["namespace"] == host.namespace), None)
    if veth is None:
        raise TestbedError(f"no such bed host {host.name} ({host.namespace})")
    _run(["ip", "link", "set", veth, "up" if up else "down"])
