"""What a bed is: TestbedError, Bed / BedHost, the naming scheme, the state file; runs nothing."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The shared subnet of blocks 0..3 (the default bed is block 0), on bridge ``sdtb0``.
SUBNET = "10.213.7.0/24"
BRIDGE = "sdtb0"
BRIDGE_ADDRESS = "10.213.7.1"
PREFIX_LEN = 24
DEFAULT_NAME = "sshdeploy"
#: Locally administered, fixed MAC address of the bed's bridge.
BRIDGE_MAC = "02:5d:de:b0:07:01"
#: Hosts per bed in the shared /24 (the default bed is always there): bed block
#: ``k`` < 4 uses host numbers ``11 + 50*k`` .. ``58 + 50*k`` of 10.213.7.0/24.
#: Block ``k`` >= 4 has a /24 and a bridge of its own: 10.213.(8+k).0/24 on
#: bridge ``sdtb<k>``, hosts ``.11`` .. ``.210``; a bed of more than
#: ``MAX_HOSTS`` hosts takes such a block (up to ``MAX_HOSTS_OWN_BLOCK``).
MAX_HOSTS = 48
MAX_HOSTS_OWN_BLOCK = 200
BLOCK_STRIDE = 50
FIRST_HOST = 11
SHARED_BLOCKS = 4
N_BLOCKS = 16
#: The private network: on every host an ``eth1`` in 10.213.(100+k).0/24 (same
#: last byte as its eth0 address), bridged between the bed's hosts on
#: ``sdtbp<k>``; the controller has no address there and an ``unreachable`` route.
PRIVATE_INTERFACE = "eth1"
NS_PREFIX = "sdtb-"
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")


class TestbedError(RuntimeError):
    """The test bed cannot be brought up, inspected or taken down here.

    Its own root: it does not derive from sshdeploy's errors, so ``except
    SSHDeployError`` never catches a test-bed failure.

    Parameters
    ----------
    what : str
        What failed, in a few words.
    cause : str
        The underlying reason (command output, exception text).
    remedy : str
        What to do about it.

    Examples
    --------
    >>> err = TestbedError("cannot create a network namespace", "Operation not permitted",
    ...                    "Run as root.")
    >>> str(err)
    'test bed: cannot create a network namespace: Operation not permitted. Run as root.'
    >>> err.cause
    'Operation not permitted'
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, what: str, cause: str = "", remedy: str = "") -> None:
        self.what = what
        self.cause = cause
        self.remedy = remedy
        text = f"test bed: {what}"
        if cause:
            text += f": {cause.strip()}"
        text = text.rstrip(".") + "."
        if remedy:
            text += f" {remedy}"
        super().__init__(text)

    def __reduce__(self) -> tuple[type[TestbedError], tuple[str, str, str]]:
        # Rebuild from the fields (args holds the formatted message): pickle and copy work.
        return type(self), (self.what, self.cause, self.remedy)


@dataclass(frozen=True)
class BedHost:
    """One host of a bed.

    Parameters
    ----------
    name : str
        Host name (``node1``); resolves to ``address`` on the controller and
        inside every host of the bed.
    address : str
        Its address on the bed network (``eth0``), which the controller reaches.
    namespace : str
        The network namespace (``ip netns``) that is the host.
    private_address : str
        Its address on the bed's private network (``eth1``), which only the
        bed's hosts reach.

    Examples
    --------
    >>> h = BedHost("node1", "10.213.7.11", "sdtb-sshdeploy-node1", "10.213.100.11")
    >>> h.address, h.private_address
    ('10.213.7.11', '10.213.100.11')
    """

    name: str
    address: str
    namespace: str
    private_address: str = ""


@dataclass(frozen=True)
class Bed:
    """A running bed: its hosts and the files to reach them.

    Parameters
    ----------
    name : str
        The bed name (``sshdeploy`` by default).
    hosts : tuple of BedHost
        The hosts, in order.
    state_dir : pathlib.Path
        Where the bed keeps its keys, configs, logs and ``state.json``.
    client_key : pathlib.Path
        Private ed25519 key that every host accepts for root.
    known_hosts : pathlib.Path
        Real host keys, lines ``node1,10.213.7.11 ssh-ed25519 AAAA...``.
    ssh_config : pathlib.Path
        For ``ssh -F ssh_config node1`` (StrictHostKeyChecking yes).
    hostfile : pathlib.Path
        One host per line, with comments.
    subnet : str
        The subnet of the hosts' ``address`` (``eth0``).
    controller_address : str
        This machine's address on that subnet (what the hosts see connections
        from the controller come from).
    private_subnet : str
        The subnet of the hosts' ``private_address``: no address of the
        controller on it, and connects to it from the controller fail at once
        (EHOSTUNREACH).
    private_interface : str
        The hosts' interface on the private subnet (``eth1``).
    bridge : str
        The controller's bridge on ``subnet`` (``sdtb0``, shared by up to four beds).

    Examples
    --------
    >>> bed = up(2)                                    # doctest: +SKIP
    >>> asyncssh.connect("node1", **bed.connect_options())  # doctest: +SKIP
    """

    name: str
    hosts: tuple[BedHost, ...]
    state_dir: Path
    client_key: Path
    known_hosts: Path
    ssh_config: Path
    hostfile: Path
    subnet: str = SUBNET
    controller_address: str = BRIDGE_ADDRESS
    private_subnet: str = ""
    private_interface: str = PRIVATE_INTERFACE
    bridge: str = BRIDGE

    def connect_options(self) -> dict[str, object]:
        """Return ``asyncssh.connect`` keyword arguments for any host of this bed.

        Returns
        -------
        dict
            ``known_hosts`` (the bed's file), ``client_keys`` (the bed's key)
            and ``username`` (``"root"``).
        """
        return {
            "known_hosts": str(self.known_hosts),
            "client_keys": [str(self.client_key)],
            "username": "root",
        }

    def host(self, name: str) -> BedHost:
        """Return the host called ``name`` (or with that address, on either network).

        Raises
        ------
        KeyError
            No such host in this bed.
        """
        for h in self.hosts:
            if name in (h.name, h.address) or (h.private_address and name == h.private_address):
                return h
        raise KeyError(f"no host {name!r} in bed {self.name!r}: {[h.name for h in self.hosts]}")


def root_dir() -> Path:
    return Path(os.environ.get("SSHDEPLOY_TESTBED_DIR") or "/tmp/sshdeploy-testbed")


def state_dir(name: str) -> Path:
    """Return where bed *name* keeps its keys, configs, logs and ``state.json``.

    Examples
    --------
    >>> state_dir("ci").name
    'ci'
    """
    return root_dir() / name


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise TestbedError(
            f"invalid bed name {name!r}",
            remedy="Use 1-10 lower-case letters and digits, starting with a letter.",
        )


def host_names(n: int, name: str = DEFAULT_NAME) -> list[str]:
    """Return the host names bed *name* of *n* hosts has (``node1..`` for the default bed).

    Examples
    --------
    >>> host_names(2), host_names(2, "ci")
    (['node1', 'node2'], ['ci1', 'ci2'])
    """
    return [f"{host_prefix(name)}{i}" for i in range(1, n + 1)]


def host_prefix(name: str) -> str:
    return "node" if name == DEFAULT_NAME else name


def namespace_name(name: str, host_name: str) -> str:
    return f"{NS_PREFIX}{name}-{host_name}"


def namespace_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(NS_PREFIX + name)}-{re.escape(host_prefix(name))}\d+$")


def veth_name(block: int, index: int) -> str:
    return f"sdtb{block}h{index}"


def is_shared_block(block: int) -> bool:
    return block < SHARED_BLOCKS


def max_hosts(name: str) -> int:
    """Return how many hosts bed *name* may have.

    Examples
    --------
    >>> max_hosts(DEFAULT_NAME), max_hosts("big")
    (48, 200)
    """
    return MAX_HOSTS if name == DEFAULT_NAME else MAX_HOSTS_OWN_BLOCK


def host_address(block: int, index: int) -> str:
    if is_shared_block(block):
        return f"10.213.7.{FIRST_HOST + BLOCK_STRIDE * block + index - 1}"
    return f"10.213.{8 + block}.{FIRST_HOST + index - 1}"


def block_subnet(block: int) -> str:
    return SUBNET if is_shared_block(block) else f"10.213.{8 + block}.0/{PREFIX_LEN}"


def bridge_name(block: int) -> str:
    return BRIDGE if is_shared_block(block) else f"sdtb{block}"


def bridge_ip(block: int) -> str:
    return BRIDGE_ADDRESS if is_shared_block(block) else f"10.213.{8 + block}.1"


def bridge_mac(block: int) -> str:
    return BRIDGE_MAC if is_shared_block(block) else f"02:5d:de:b0:{block:02x}:01"


def private_block_subnet(block: int) -> str:
    """Return the private /24 of block *block*.

    Examples
    --------
    >>> private_block_subnet(0), private_host_address(0, 1), private_host_address(2, 3)
    ('10.213.100.0/24', '10.213.100.11', '10.213.102.113')
    >>> host_address(5, 2), private_host_address(5, 2), block_subnet(5), bridge_name(5)
    ('10.213.13.12', '10.213.105.12', '10.213.13.0/24', 'sdtb5')
    """
    return f"10.213.{100 + block}.0/{PREFIX_LEN}"


def private_host_address(block: int, index: int) -> str:
    return f"10.213.{100 + block}.{host_address(block, index).rsplit('.', 1)[1]}"


def private_bridge(block: int) -> str:
    return f"sdtbp{block}"


def private_veth_name(block: int, index: int) -> str:
    return f"sdtb{block}p{index}"


def bed_of_namespace(namespace: str) -> str | None:
    if not namespace.startswith(NS_PREFIX):
        return None
    rest = namespace[len(NS_PREFIX) :]
    return rest.split("-", 1)[0] if "-" in rest else None


def read_state(name: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((state_dir(name) / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def write_state(name: str, state: Mapping[str, Any]) -> None:
    path = state_dir(name) / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def bed_from_state(state: Mapping[str, Any]) -> Bed:
    d = Path(state["state_dir"])
    block = int(state["block"])
    return Bed(
        name=state["name"],
        hosts=tuple(
            BedHost(h["name"], h["address"], h["namespace"], h.get("private_address", ""))
            for h in state["hosts"]
        ),
        state_dir=d,
        client_key=d / "client_key",
        known_hosts=d / "known_hosts",
        ssh_config=d / "ssh_config",
        hostfile=d / "hostfile",
        subnet=state.get("subnet", block_subnet(block)),
        controller_address=state.get("bridge_address", bridge_ip(block)),
        private_subnet=state.get("private_subnet", ""),
        bridge=bridge_name(block),
    )
