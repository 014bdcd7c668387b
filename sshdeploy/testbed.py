"""The local multi-host SSH test bed: network namespaces, one bridge, one sshd per host.

A *bed* is a set of hosts on this machine. Each host is a network namespace
with a veth into one Linux bridge (``sdtb0``, address 10.213.7.1 on the
controller), its own address in 10.213.7.0/24, ``lo`` up, no default route,
its own hostname (``unshare --uts``), its own ``/etc/hosts`` (through
``/etc/netns/<ns>/hosts``) and its own sshd that accepts one generated
ed25519 client key for root. Nothing leaves the subnet: no default route, no
forwarding, no NAT.

One command for users and for tests::

    python -m sshdeploy.testbed up 4        # node1..node4
    python -m sshdeploy.testbed status
    python -m sshdeploy.testbed down

Several beds may exist at once (``--name``); each gets its own block of
addresses, namespace names and host name prefix. State lives in
``/tmp/sshdeploy-testbed/<name>/`` (the root moves with
``SSHDEPLOY_TESTBED_DIR``) and is written as ``up`` goes, so ``down`` also
cleans up after an ``up`` that crashed or was killed.

The sshd configuration, host keys and authorized_keys come from
``provision.sh``, the same file the docker-compose bed uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sshdeploy.errors import SSHDeployError

__all__ = [
    "Bed",
    "BedHost",
    "TestbedError",
    "check_requirements",
    "down",
    "host_command",
    "list_beds",
    "processes",
    "release",
    "run_in",
    "set_link",
    "status",
    "up",
]

SUBNET = "10.213.7.0/24"
BRIDGE = "sdtb0"
BRIDGE_ADDRESS = "10.213.7.1"
PREFIX_LEN = 24
DEFAULT_NAME = "sshdeploy"
#: Locally administered, fixed MAC address of the bed's bridge.
BRIDGE_MAC = "02:5d:de:b0:07:01"
#: Hosts per bed; bed block ``k`` uses host numbers ``11 + 50*k`` .. ``58 + 50*k``.
MAX_HOSTS = 48
BLOCK_STRIDE = 50
FIRST_HOST = 11
N_BLOCKS = 4
NS_PREFIX = "sdtb-"
SSHD = "/usr/sbin/sshd"
PROVISION = Path(__file__).with_name("provision.sh")
HOSTS_FILE = Path("/etc/hosts")
NETNS_ETC = Path("/etc/netns")
READY_TIMEOUT = 20.0
_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")


@dataclass(eq=False)
class TestbedError(SSHDeployError):
    """The test bed cannot be brought up, inspected or taken down here.

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
    >>> str(TestbedError("cannot create a network namespace", "Operation not permitted",
    ...                  "Run as root."))
    'test bed: cannot create a network namespace: Operation not permitted. Run as root.'
    """

    __test__ = False  # not a pytest test class, despite the name

    what: str
    cause: str = ""
    remedy: str = ""

    def message(self) -> str:
        text = f"test bed: {self.what}"
        if self.cause:
            text += f": {self.cause.strip()}"
        text = text.rstrip(".") + "."
        if self.remedy:
            text += f" {self.remedy}"
        return text

    def __str__(self) -> str:
        return self.message()


@dataclass(frozen=True)
class BedHost:
    """One host of a bed.

    Parameters
    ----------
    name : str
        Host name (``node1``); resolves to ``address`` on the controller and
        inside every host of the bed.
    address : str
        Its address in 10.213.7.0/24.
    namespace : str
        The network namespace (``ip netns``) that is the host.

    Examples
    --------
    >>> BedHost("node1", "10.213.7.11", "sdtb-sshdeploy-node1").address
    '10.213.7.11'
    """

    name: str
    address: str
    namespace: str


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
        """Return the host called ``name`` (or with that address).

        Raises
        ------
        KeyError
            No such host in this bed.
        """
        for h in self.hosts:
            if name in (h.name, h.address):
                return h
        raise KeyError(f"no host {name!r} in bed {self.name!r}: {[h.name for h in self.hosts]}")


# --------------------------------------------------------------------------- naming


def _root_dir() -> Path:
    return Path(os.environ.get("SSHDEPLOY_TESTBED_DIR") or "/tmp/sshdeploy-testbed")


def _state_dir(name: str) -> Path:
    return _root_dir() / name


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
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
    return [f"{_host_prefix(name)}{i}" for i in range(1, n + 1)]


def _host_prefix(name: str) -> str:
    return "node" if name == DEFAULT_NAME else name


def _namespace(name: str, host_name: str) -> str:
    return f"{NS_PREFIX}{name}-{host_name}"


def _namespace_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(NS_PREFIX + name)}-{re.escape(_host_prefix(name))}\d+$")


def _veth(block: int, index: int) -> str:
    return f"sdtb{block}h{index}"


def _address(block: int, index: int) -> str:
    return f"10.213.7.{FIRST_HOST + BLOCK_STRIDE * block + index - 1}"


def _bed_of_namespace(namespace: str) -> str | None:
    if not namespace.startswith(NS_PREFIX):
        return None
    rest = namespace[len(NS_PREFIX) :]
    return rest.split("-", 1)[0] if "-" in rest else None


# --------------------------------------------------------------------------- helpers


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 30) -> str:
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TestbedError(f"`{' '.join(argv)}` failed", str(exc)) from exc
    if check and proc.returncode != 0:
        raise TestbedError(
            f"`{' '.join(argv)}` exited with status {proc.returncode}",
            (proc.stderr or proc.stdout).strip(),
        )
    return proc.stdout


def _provision(*args: str) -> None:
    _run(["sh", str(PROVISION), *args])


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """Serialize beds: an flock on /etc/hosts, the one file every bed edits."""
    with open(HOSTS_FILE) as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _netns_list() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_pids(namespace: str) -> list[int]:
    out = _run(["ip", "netns", "pids", namespace], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _links() -> list[str]:
    out = _run(["ip", "-o", "link", "show"], check=False)
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def _read_state(name: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((_state_dir(name) / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def _write_state(name: str, state: Mapping[str, Any]) -> None:
    path = _state_dir(name) / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def _bed_from_state(state: Mapping[str, Any]) -> Bed:
    d = Path(state["state_dir"])
    return Bed(
        name=state["name"],
        hosts=tuple(BedHost(h["name"], h["address"], h["namespace"]) for h in state["hosts"]),
        state_dir=d,
        client_key=d / "client_key",
        known_hosts=d / "known_hosts",
        ssh_config=d / "ssh_config",
        hostfile=d / "hostfile",
    )


# --------------------------------------------------------------------------- /etc/hosts


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


# --------------------------------------------------------------------------- checks


def check_requirements(*, probe: bool = False) -> None:
    """Raise :class:`TestbedError` if a bed cannot run on this machine.

    Parameters
    ----------
    probe : bool
        Also try ``ip netns add`` / ``ip netns del`` once (catches sandboxes
        that refuse namespaces even to root).

    Raises
    ------
    TestbedError
        Not root, sshd / ip / unshare / ssh-keygen missing, or namespaces refused.
    """
    if os.geteuid() != 0:
        raise TestbedError(
            "needs root (network namespaces, a bridge, /etc/hosts)",
            f"running as uid {os.geteuid()}",
            "Run as root, e.g. `sudo python -m sshdeploy.testbed up 4`.",
        )
    if not os.access(SSHD, os.X_OK):
        raise TestbedError(
            f"{SSHD} not found",
            remedy="Install it: `apt-get install openssh-server`.",
        )
    for tool, package in (
        ("ip", "iproute2"),
        ("unshare", "util-linux"),
        ("ssh-keygen", "openssh-client"),
    ):
        if shutil.which(tool) is None:
            raise TestbedError(
                f"`{tool}` not found", remedy=f"Install it: `apt-get install {package}`."
            )
    if probe:
        ns = f"{NS_PREFIX}probe-{os.getpid()}"
        proc = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
        if proc.returncode != 0:
            raise TestbedError(
                "`ip netns add` refused",
                proc.stderr,
                "Run as root on a kernel/sandbox that allows network namespaces "
                "(e.g. a VM or a privileged container).",
            )
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# --------------------------------------------------------------------------- up


def _allocate_block(name: str) -> int:
    if name == DEFAULT_NAME:
        return 0
    used = {0}
    root = _root_dir()
    if root.is_dir():
        for d in root.iterdir():
            if d.name != name and (d / "state.json").exists():
                st = _read_state(d.name)
                if st is not None:
                    used.add(int(st["block"]))
    for other in _beds_in_hosts_file() - {name}:
        st = _read_state(other)
        if st is not None:
            used.add(int(st["block"]))
    for block in range(1, N_BLOCKS):
        if block not in used:
            return block
    raise TestbedError(
        f"no free address block for bed {name!r}",
        f"{N_BLOCKS - 1} other beds exist",
        "Take one down: `python -m sshdeploy.testbed down --name NAME`.",
    )


def _ensure_bridge() -> None:
    if BRIDGE in _links():
        return
    # A fixed MAC: a bridge otherwise takes the lowest MAC of its ports, which
    # changes as beds come and go and cuts other beds' hosts off for a while.
    _run(["ip", "link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge"])
    _run(["ip", "addr", "add", f"{BRIDGE_ADDRESS}/{PREFIX_LEN}", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])


def _start_host(
    state_dir: Path, host: Mapping[str, Any], all_hosts: Sequence[BedHost], options: Sequence[str]
) -> int:
    ns, addr, hname, veth = host["namespace"], host["address"], host["name"], host["veth"]
    try:
        _run(["ip", "netns", "add", ns])
    except TestbedError as exc:
        raise TestbedError(
            f"cannot create network namespace {ns}",
            exc.cause,
            "Run as root on a machine that allows network namespaces.",
        ) from exc
    _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
    _run(["ip", "link", "set", veth, "master", BRIDGE, "up"])
    # The controller may still cache the MAC of a host that had this address
    # before (a bed just taken down): forget it, or connects stall until it expires.
    _run(["ip", "neigh", "flush", "to", addr, "dev", BRIDGE], check=False)
    _run(["ip", "-n", ns, "addr", "add", f"{addr}/{PREFIX_LEN}", "dev", "eth0"])
    _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    _run(["ip", "-n", ns, "link", "set", "lo", "up"])
    etc = NETNS_ETC / ns
    etc.mkdir(parents=True, exist_ok=True)
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    lines += [f"{h.address} {h.name}" for h in all_hosts]
    (etc / "hosts").write_text("\n".join(lines) + "\n")
    hdir = state_dir / "hosts" / hname
    _provision("host", str(hdir), addr, str(state_dir / "authorized_keys"), *options)
    log = hdir / "sshd.log"
    pid_file = hdir / "sshd.pid"
    pid_file.unlink(missing_ok=True)
    # sshd daemonizes (its parent becomes init), writes its pid file once listening.
    sshd = [SSHD, "-f", str(hdir / "sshd_config"), "-E", str(log)]
    _run(host_command(BedHost(hname, addr, ns), sshd))
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if pid_file.exists():
            text = pid_file.read_text().strip()
            if text.isdigit() and _tcp_ok(addr, 22, 0.5):
                return int(text)
        if time.monotonic() > deadline:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise TestbedError(
                f"sshd of {hname} ({addr}) not accepting connections within {READY_TIMEOUT:.0f} s",
                tail,
                f"Read {log}.",
            )
        time.sleep(0.02)


def _tcp_ok(address: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _write_client_files(bed: Bed) -> None:
    lines = []
    for h in bed.hosts:
        pub = bed.state_dir / "hosts" / h.name / "ssh_host_ed25519_key.pub"
        keytype, key = pub.read_text().split()[:2]
        lines.append(f"{h.name},{h.address} {keytype} {key}")
    bed.known_hosts.write_text("\n".join(lines) + "\n")
    cfg = [f"# ssh -F {bed.ssh_config} {bed.hosts[0].name} hostname"]
    for h in bed.hosts:
        cfg += [
            f"Host {h.name} {h.address}",
            f"    HostName {h.address}",
            "    User root",
            "    Port 22",
            f"    IdentityFile {bed.client_key}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {bed.known_hosts}",
            "    GlobalKnownHostsFile /dev/null",
            f"    HostKeyAlias {h.name}",
            "    StrictHostKeyChecking yes",
            "    CheckHostIP no",
            "    BatchMode yes",
            "    LogLevel ERROR",
        ]
    bed.ssh_config.write_text("\n".join(cfg) + "\n")
    hf = [
        f"# sshdeploy test bed {bed.name!r}: {len(bed.hosts)} host(s), root login with",
        f"#   client key {bed.client_key}",
        f"#   known_hosts {bed.known_hosts}",
        "# Written by `python -m sshdeploy.testbed up`; one host per line.",
    ]
    for h in bed.hosts:
        hf += [f"# {h.name}: {h.address}, namespace {h.namespace}", f"root@{h.name}"]
    bed.hostfile.write_text("\n".join(hf) + "\n")


def _healthy(state: Mapping[str, Any]) -> bool:
    if not state.get("complete"):
        return False
    namespaces = set(_netns_list())
    for h in state["hosts"]:
        pid = h.get("sshd_pid")
        if h["namespace"] not in namespaces or not pid or _is_zombie(int(pid)):
            return False
        if not _tcp_ok(h["address"], 22, 1.0):
            return False
    return True


def up(
    n: int,
    name: str = DEFAULT_NAME,
    *,
    sshd_options: Mapping[str, str] | None = None,
    hold: bool = False,
) -> Bed:
    """Bring up a bed of ``n`` hosts (idempotent) and return it.

    If a healthy bed with that name, size and ``sshd_options`` is already up,
    it is returned as is; otherwise what exists of it is taken down first.

    Parameters
    ----------
    n : int
        Number of hosts, 1 to 48.
    name : str
        Bed name. The default bed has hosts ``node1..nodeN`` at 10.213.7.11...;
        another bed ``NAME1..NAMEN`` in another block of the same /24.
    sshd_options : Mapping[str, str], optional
        Extra sshd_config lines for every host, e.g. ``{"MaxStartups": "10:30:100"}``;
        they take precedence over the template.
    hold : bool
        Register this process as a user of the bed (see :func:`release`), so
        that concurrent test sessions sharing a bed do not pull it from under
        each other. A bed held by another live process is never rebuilt.

    Returns
    -------
    Bed

    Raises
    ------
    TestbedError
        The machine cannot host a bed (not root, no sshd, namespaces refused)
        or a host did not come up; what was created is removed again.

    Examples
    --------
    >>> bed = up(4)                                        # doctest: +SKIP
    >>> run_in(bed.host("node2"), ["hostname"]).stdout      # doctest: +SKIP
    'node2\\n'
    """
    _check_name(name)
    if not 1 <= n <= MAX_HOSTS:
        raise TestbedError(f"cannot make a bed of {n} hosts", remedy=f"Use 1 to {MAX_HOSTS}.")
    check_requirements()
    options = {str(k): str(v) for k, v in (sshd_options or {}).items()}
    with _machine_lock():
        old = _read_state(name)
        if (
            old is not None
            and len(old["hosts"]) == n
            and old.get("sshd_options", {}) == options
            and _healthy(old)
        ):
            bed = _bed_from_state(old)
        else:
            others = _holders(name)
            if others:
                raise TestbedError(
                    f"bed {name!r} is in use by process(es) {', '.join(map(str, others))} "
                    f"and differs from the one asked for ({n} host(s), sshd options {options})",
                    remedy="Use another bed name, or wait until they release it.",
                )
            _down_locked(name)
            try:
                bed = _up_locked(n, name, options)
            except BaseException:
                _down_locked(name)
                raise
        if hold:
            holders = bed.state_dir / "holders"
            holders.mkdir(exist_ok=True)
            (holders / str(os.getpid())).touch()
        return bed


def _holders(name: str) -> list[int]:
    """Live processes other than this one that hold the bed (stale entries are removed)."""
    d = _state_dir(name) / "holders"
    live = []
    if d.is_dir():
        for f in d.iterdir():
            if not f.name.isdigit() or int(f.name) == os.getpid():
                continue
            if _is_zombie(int(f.name)):  # gone
                f.unlink(missing_ok=True)
            else:
                live.append(int(f.name))
    return sorted(live)


def release(name: str = DEFAULT_NAME) -> bool:
    """Drop this process's hold on a bed; take the bed down if nobody else holds it.

    Parameters
    ----------
    name : str
        Bed name.

    Returns
    -------
    bool
        True if the bed was taken down, False if other live processes still hold it.
    """
    _check_name(name)
    check_requirements()
    with _machine_lock():
        (_state_dir(name) / "holders" / str(os.getpid())).unlink(missing_ok=True)
        if _holders(name):
            return False
        _down_locked(name)
        return True


def _up_locked(n: int, name: str, options: Mapping[str, str]) -> Bed:
    block = _allocate_block(name)
    state_dir = _state_dir(name)
    state_dir.mkdir(parents=True, exist_ok=True)
    prefix = _host_prefix(name)
    hosts: list[dict[str, Any]] = [
        {
            "name": f"{prefix}{i}",
            "address": _address(block, i),
            "namespace": _namespace(name, f"{prefix}{i}"),
            "veth": _veth(block, i),
            "sshd_pid": None,
        }
        for i in range(1, n + 1)
    ]
    state: dict[str, Any] = {
        "name": name,
        "block": block,
        "state_dir": str(state_dir),
        "hosts": hosts,
        "sshd_options": dict(options),
        "complete": False,
        "up_pid": os.getpid(),
    }
    taken = _names_in_hosts_file(exclude=name)
    clash = sorted({h["name"] for h in hosts} & taken)
    if clash:
        raise TestbedError(
            f"host name(s) {', '.join(clash)} of bed {name!r} already in /etc/hosts",
            remedy="Choose another bed name (its hosts are NAME1..NAMEn).",
        )
    _write_state(name, state)  # before anything exists, so `down` knows what to sweep
    bed_hosts = [BedHost(h["name"], h["address"], h["namespace"]) for h in hosts]
    _set_hosts_block(name, bed_hosts)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    _ensure_bridge()
    _provision("client-key", str(state_dir))
    _provision("authorize", str(state_dir / "client_key.pub"), str(state_dir / "authorized_keys"))
    lines = [f"{k} {v}" for k, v in options.items()]

    def start(h: dict[str, Any]) -> int:
        return _start_host(state_dir, h, bed_hosts, lines)

    with ThreadPoolExecutor(max_workers=min(n, 16)) as pool:
        futures = [pool.submit(start, h) for h in hosts]
        errors = []
        for h, fut in zip(hosts, futures, strict=True):
            try:
                h["sshd_pid"] = fut.result()
            except Exception as exc:  # collect all, report one
                errors.append(f"{h['name']}: {exc}")
    _write_state(name, state)
    if errors:
        raise TestbedError(f"{len(errors)} host(s) of bed {name!r} failed", "\n".join(errors))
    bed = _bed_from_state(state)
    _write_client_files(bed)
    state["complete"] = True
    _write_state(name, state)
    return bed


# --------------------------------------------------------------------------- down


def _kill_namespace(namespace: str, deadline: float) -> None:
    while True:
        pids = [p for p in _netns_pids(namespace) if not _is_zombie(p)]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise TestbedError(
                f"processes in namespace {namespace} do not die",
                ", ".join(map(str, pids)),
                "Check them with `ip netns pids NAME`; then run down again.",
            )
        time.sleep(0.02)


def _down_locked(name: str) -> None:
    """Remove everything of bed *name*, repeating until nothing is left.

    A killed ``up`` may leave commands running (``ip``, ``provision.sh``, an
    sshd being started) that create things after a first pass removed them:
    each pass first kills every process that names the bed's state dir, and
    passes repeat (10 s at most) until nothing of the bed remains.
    """
    state = _read_state(name)
    state_dir = _state_dir(name)
    pattern = _namespace_re(name)
    veths = {h["veth"] for h in state["hosts"]} if state is not None else set()
    deadline = time.monotonic() + 10
    while True:
        _kill_referencing(state_dir)
        _down_pass(name, state, pattern, veths, deadline)
        left = _remains(name, state_dir, pattern, veths)
        if not left:
            break
        if time.monotonic() > deadline:
            raise TestbedError(
                f"bed {name!r} could not be removed completely",
                ", ".join(left),
                "Run `python -m sshdeploy.testbed down --name NAME` again.",
            )
        time.sleep(0.05)
    _remove_bridge_if_unused()


def _kill_referencing(state_dir: Path) -> None:
    """SIGKILL every process (any namespace) whose command line names *state_dir*."""
    marker = str(state_dir)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and not _is_zombie(int(entry)):
            if marker in (_cmdline(int(entry)) or ""):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry), signal.SIGKILL)


def _remains(
    name: str, state_dir: Path, pattern: re.Pattern[str], veths: set[str]
) -> list[str]:
    """What of bed *name* is still on the machine."""
    left = [f"netns {ns}" for ns in _netns_list() if pattern.match(ns)]
    left += [f"link {v}" for v in sorted(veths & set(_links()))]
    if NETNS_ETC.is_dir():
        left += [f"/etc/netns/{d.name}" for d in NETNS_ETC.iterdir() if pattern.match(d.name)]
    if state_dir.exists():
        left.append(f"state dir {state_dir}")
    return left


def _down_pass(
    name: str,
    state: Mapping[str, Any] | None,
    pattern: re.Pattern[str],
    veths: set[str],
    deadline: float,
) -> None:
    namespaces = {ns for ns in _netns_list() if pattern.match(ns)}
    if state is not None:
        namespaces |= {h["namespace"] for h in state["hosts"]} & set(_netns_list())
    for ns in sorted(namespaces):
        _kill_namespace(ns, deadline)
    for ns in sorted(namespaces):
        _run(["ip", "netns", "del", ns], check=False)
    if state is not None:
        for h in state["hosts"]:  # an sshd that escaped its namespace (should not happen)
            pid = h.get("sshd_pid")
            if (
                pid
                and not _is_zombie(int(pid))
                and (_cmdline(int(pid)) or "").find(str(state["state_dir"])) >= 0
            ):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    existing = set(_links())
    for veth in sorted(veths & existing):
        _run(["ip", "link", "del", veth], check=False)
    if state is not None and BRIDGE in existing:
        for h in state["hosts"]:  # no stale MAC for the next bed on these addresses
            _run(["ip", "neigh", "flush", "to", h["address"], "dev", BRIDGE], check=False)
    if NETNS_ETC.is_dir():
        for d in NETNS_ETC.iterdir():
            if pattern.match(d.name) or d.name in namespaces:
                shutil.rmtree(d, ignore_errors=True)
    _remove_hosts_block(name)
    shutil.rmtree(_state_dir(name), ignore_errors=True)


def _remove_bridge_if_unused() -> None:
    if BRIDGE not in _links():
        return
    ports = _run(["ip", "-o", "link", "show", "master", BRIDGE], check=False).strip()
    others = [ns for ns in _netns_list() if ns.startswith(NS_PREFIX)]
    if not ports and not others:
        _run(["ip", "link", "del", BRIDGE], check=False)
        with contextlib.suppress(OSError):
            NETNS_ETC.rmdir()  # only if empty
        with contextlib.suppress(OSError):
            _root_dir().rmdir()  # only if empty


def down(name: str = DEFAULT_NAME) -> None:
    """Take a bed down; leaves nothing behind. Idempotent.

    Kills every process inside the bed's namespaces (not only sshd), deletes
    the namespaces, veths, ``/etc/netns`` dirs, the ``/etc/hosts`` block and
    the state dir, and the bridge if no other bed uses it. Works after a
    crashed or killed ``up`` too.

    Parameters
    ----------
    name : str
        Bed name.

    Raises
    ------
    TestbedError
        Not root, or processes in a namespace refused to die.
    """
    _check_name(name)
    check_requirements()
    with _machine_lock():
        _down_locked(name)


def list_beds() -> list[str]:
    """Return the names of beds with anything left on this machine (state, namespaces, hosts)."""
    names = set(_beds_in_hosts_file())
    root = _root_dir()
    if root.is_dir():
        names |= {d.name for d in root.iterdir() if d.is_dir() and _NAME_RE.match(d.name)}
    for ns in _netns_list():
        bed = _bed_of_namespace(ns)
        if bed and _NAME_RE.match(bed) and bed != "probe":
            names.add(bed)
    return sorted(names)


def status(name: str = DEFAULT_NAME) -> Bed | None:
    """Return the bed if it was brought up completely, else None.

    Parameters
    ----------
    name : str
        Bed name.

    Returns
    -------
    Bed or None
        None when no complete ``up`` is recorded (use :func:`down` to clean
        a partial one). Liveness is not checked here; see ``python -m
        sshdeploy.testbed status``.
    """
    _check_name(name)
    state = _read_state(name)
    if state is None or not state.get("complete"):
        return None
    return _bed_from_state(state)


# --------------------------------------------------------------------------- per host


def _sshd_pid(host: BedHost) -> int | None:
    bed = _bed_of_namespace(host.namespace)
    state = _read_state(bed) if bed and _NAME_RE.match(bed) else None
    if state is None:
        return None
    for h in state["hosts"]:
        if h["namespace"] == host.namespace and h.get("sshd_pid"):
            return int(h["sshd_pid"])
    return None


def processes(host: BedHost) -> list[tuple[int, str]]:
    """Return ``(pid, cmdline)`` of every live process in the host but its sshd listener.

    Parameters
    ----------
    host : BedHost

    Returns
    -------
    list of (int, str)
        Includes sshd's per-connection children and anything they started.
    """
    listener = _sshd_pid(host)
    result = []
    for pid in _netns_pids(host.namespace):
        if pid == listener or _is_zombie(pid):
            continue
        cmd = _cmdline(pid)
        if cmd is not None:
            result.append((pid, cmd))
    return result


def python_processes(bed: Bed) -> dict[str, list[str]]:
    """Return, per host name, the command lines of the Python processes running there.

    Hosts running none are left out, so ``python_processes(bed) == {}`` says
    that nothing of a cluster is left anywhere on the bed.
    """
    out: dict[str, list[str]] = {}
    for h in bed.hosts:
        procs = [cmd for _pid, cmd in processes(h) if "python" in cmd]
        if procs:
            out[h.name] = procs
    return out


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll *predicate* (every 50 ms) until it is true; raise AssertionError after *timeout* s.

    Examples
    --------
    >>> wait_until(lambda: True, 1, "nothing")
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def host_command(host: BedHost, argv: Sequence[str]) -> list[str]:
    """Return an argv that runs ``argv`` inside ``host``: its network, hostname and /etc/hosts.

    For :class:`subprocess.Popen` when :func:`run_in` (which waits) does not fit.
    """
    # ip netns exec: network + /etc/netns/<ns>/hosts; unshare --uts: the host's hostname
    wrap = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host.name]
    return ["ip", "netns", "exec", host.namespace, *wrap, *argv]


def run_in(
    host: BedHost, argv: Sequence[str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run a command inside ``host`` and wait for it.

    Parameters
    ----------
    host : BedHost
    argv : sequence of str
    timeout : float
        Seconds; :class:`subprocess.TimeoutExpired` after that.

    Returns
    -------
    subprocess.CompletedProcess
        Text stdout/stderr captured; the exit status is not checked.
    """
    return subprocess.run(
        host_command(host, argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def set_link(host: BedHost, up: bool) -> None:
    """Unplug (``up=False``) or plug back a host's cable: its bridge port goes down/up.

    The host keeps its address and routes; packets to and from it are dropped,
    as with a host that was lost.
    """
    bed = _bed_of_namespace(host.namespace)
    state = _read_state(bed) if bed and _NAME_RE.match(bed) else None
    veth = None
    if state is not None:
        veth = next((h["veth"] for h in state["hosts"] if h["namespace"] == host.namespace), None)
    if veth is None:
        raise TestbedError(f"no such bed host {host.name} ({host.namespace})")
    _run(["ip", "link", "set", veth, "up" if up else "down"])


# --------------------------------------------------------------------------- CLI


def _cli() -> Any:
    import click

    def fail(exc: SSHDeployError) -> None:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)

    @click.group(help="The local multi-host SSH test bed (namespaces + sshd; needs root).")
    def main() -> None:
        pass

    @main.command("up", help="Bring up N hosts (idempotent).")
    @click.argument("n", type=click.IntRange(1, MAX_HOSTS))
    @click.option("--name", default=DEFAULT_NAME, show_default=True, help="Bed name.")
    @click.option(
        "--sshd-option",
        "sshd_option",
        multiple=True,
        metavar="KEY=VALUE",
        help="Extra sshd_config line for every host, e.g. MaxStartups=10:30:100.",
    )
    def up_cmd(n: int, name: str, sshd_option: tuple[str, ...]) -> None:
        opts = {}
        for item in sshd_option:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--sshd-option")
            opts[key] = value
        t0 = time.monotonic()
        try:
            bed = up(n, name, sshd_options=opts)
        except SSHDeployError as exc:
            fail(exc)
            return
        click.echo(
            f"bed {bed.name!r}: {len(bed.hosts)} host(s) up in {time.monotonic() - t0:.2f} s"
        )
        for h in bed.hosts:
            click.echo(f"  {h.name:<10} {h.address:<15} netns {h.namespace}")
        click.echo(f"hostfile:    {bed.hostfile}")
        click.echo(f"known_hosts: {bed.known_hosts}")
        click.echo(f"ssh_config:  {bed.ssh_config}")
        click.echo(f"client key:  {bed.client_key}")
        click.echo(f"try:         ssh -F {bed.ssh_config} {bed.hosts[0].name} hostname")
        click.echo(f"take down:   python -m sshdeploy.testbed down --name {bed.name}")

    @main.command("down", help="Take a bed down and remove everything it left.")
    @click.option("--name", default=DEFAULT_NAME, show_default=True, help="Bed name.")
    @click.option("--all", "all_", is_flag=True, help="Every bed found on this machine.")
    def down_cmd(name: str, all_: bool) -> None:
        try:
            names = list_beds() if all_ else [name]
            for nm in names:
                down(nm)
                click.echo(f"bed {nm!r} is down")
        except SSHDeployError as exc:
            fail(exc)

    @main.command("status", help="Show a bed and whether each sshd answers.")
    @click.option("--name", default=DEFAULT_NAME, show_default=True, help="Bed name.")
    def status_cmd(name: str) -> None:
        bed = status(name)
        if bed is None:
            left = name in list_beds()
            click.echo(
                f"bed {name!r} is not up"
                + (
                    f" (leftovers found: run `python -m sshdeploy.testbed down --name {name}`)"
                    if left
                    else ""
                )
            )
            sys.exit(3)
        click.echo(f"bed {bed.name!r}: {len(bed.hosts)} host(s), state in {bed.state_dir}")
        bad = 0
        for h in bed.hosts:
            ok = _tcp_ok(h.address, 22, 1.0)
            bad += not ok
            click.echo(f"  {h.name:<10} {h.address:<15} sshd {'up' if ok else 'NOT ANSWERING'}")
        click.echo(f"ssh_config:  {bed.ssh_config}")
        sys.exit(1 if bad else 0)

    return main


def main() -> None:
    """Run the ``python -m sshdeploy.testbed`` command."""
    _cli()(prog_name="python -m sshdeploy.testbed")


if __name__ == "__main__":
    main()
