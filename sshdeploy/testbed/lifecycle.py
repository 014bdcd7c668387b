"""Bring beds up and down: requirements, the machine lock, holders, up / down / release / status."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sshdeploy.testbed.model import (
    BRIDGE,
    DEFAULT_NAME,
    MAX_HOSTS,
    N_BLOCKS,
    NAME_RE,
    NS_PREFIX,
    SHARED_BLOCKS,
    Bed,
    BedHost,
    TestbedError,
    bed_from_state,
    bed_of_namespace,
    block_subnet,
    bridge_ip,
    bridge_name,
    check_name,
    host_address,
    host_prefix,
    is_shared_block,
    max_hosts,
    namespace_name,
    namespace_re,
    private_block_subnet,
    private_bridge,
    private_host_address,
    private_veth_name,
    read_state,
    root_dir,
    state_dir,
    veth_name,
    write_state,
)
from sshdeploy.testbed.net import (
    HOSTS_FILE,
    NETNS_ETC,
    beds_in_hosts_file,
    ensure_bridge,
    ensure_private_net,
    names_in_hosts_file,
    remove_bridge_if_unused,
    remove_hosts_block,
    remove_private_net,
    set_hosts_block,
    unreachable_route,
)
from sshdeploy.testbed.procs import kill_namespace, kill_referencing
from sshdeploy.testbed.sshd import SSHD, run_provision, sshd_healthy, start_host, write_client_files
from sshdeploy.testbed.system import cmdline, is_zombie, links, netns_list, run_command


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


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """Serialize beds: an flock on /etc/hosts, the one file every bed edits."""
    with open(HOSTS_FILE) as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _allocate_block(name: str, n: int) -> int:
    """The address block for bed *name* of *n* hosts (more than MAX_HOSTS: a /24 of its own)."""
    if name == DEFAULT_NAME:
        return 0
    used = {0}
    root = root_dir()
    if root.is_dir():
        for d in root.iterdir():
            if d.name != name and (d / "state.json").exists():
                st = read_state(d.name)
                if st is not None:
                    used.add(int(st["block"]))
    for other in beds_in_hosts_file() - {name}:
        st = read_state(other)
        if st is not None:
            used.add(int(st["block"]))
    first = 1 if n <= MAX_HOSTS else SHARED_BLOCKS
    for block in range(first, N_BLOCKS):
        if block not in used:
            return block
    raise TestbedError(
        f"no free address block for bed {name!r}",
        f"{N_BLOCKS - 1} other beds exist" if first == 1 else
        f"a bed of more than {MAX_HOSTS} hosts needs one of blocks {first}..{N_BLOCKS - 1}, "
        "and other beds hold them all",
        "Take one down: `python -m sshdeploy.testbed down --name NAME`.",
    )


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
        Number of hosts, 1 to 48 for the default bed, 1 to 200 for another.
    name : str
        Bed name. The default bed has hosts ``node1..nodeN`` at 10.213.7.11...;
        another bed ``NAME1..NAMEN`` in another block of the same /24, or, above
        48 hosts, in a /24 of its own.
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
    check_name(name)
    if not 1 <= n <= max_hosts(name):
        raise TestbedError(
            f"cannot make a bed of {n} hosts",
            remedy=f"Use 1 to {max_hosts(name)}"
            + (f" (up to {max_hosts('x')} in a bed with another --name)."
               if name == DEFAULT_NAME else "."),
        )
    check_requirements()
    options = {str(k): str(v) for k, v in (sshd_options or {}).items()}
    with _machine_lock():
        old = read_state(name)
        if (
            old is not None
            and len(old["hosts"]) == n
            and old.get("sshd_options", {}) == options
            and "private_subnet" in old
            and sshd_healthy(old)
            and _private_net_up(int(old["block"]))
        ):
            bed = bed_from_state(old)
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


def _private_net_up(block: int) -> bool:
    """The private bridge and the controller's unreachable route are in place."""
    return private_bridge(block) in links() and unreachable_route(block)


def _holders(name: str) -> list[int]:
    """Live processes other than this one that hold the bed (stale entries are removed)."""
    d = state_dir(name) / "holders"
    live = []
    if d.is_dir():
        for f in d.iterdir():
            if not f.name.isdigit() or int(f.name) == os.getpid():
                continue
            if is_zombie(int(f.name)):  # gone
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
    check_name(name)
    check_requirements()
    with _machine_lock():
        (state_dir(name) / "holders" / str(os.getpid())).unlink(missing_ok=True)
        if _holders(name):
            return False
        _down_locked(name)
        return True


def _up_locked(n: int, name: str, options: Mapping[str, str]) -> Bed:
    block = _allocate_block(name, n)
    sdir = state_dir(name)
    sdir.mkdir(parents=True, exist_ok=True)
    prefix = host_prefix(name)
    hosts: list[dict[str, Any]] = [
        {
            "name": f"{prefix}{i}",
            "address": host_address(block, i),
            "namespace": namespace_name(name, f"{prefix}{i}"),
            "veth": veth_name(block, i),
            "private_address": private_host_address(block, i),
            "private_veth": private_veth_name(block, i),
            "sshd_pid": None,
        }
        for i in range(1, n + 1)
    ]
    state: dict[str, Any] = {
        "name": name,
        "block": block,
        "subnet": block_subnet(block),
        "bridge_address": bridge_ip(block),
        "private_subnet": private_block_subnet(block),
        "state_dir": str(sdir),
        "hosts": hosts,
        "sshd_options": dict(options),
        "complete": False,
        "up_pid": os.getpid(),
    }
    taken = names_in_hosts_file(exclude=name)
    clash = sorted({h["name"] for h in hosts} & taken)
    if clash:
        raise TestbedError(
            f"host name(s) {', '.join(clash)} of bed {name!r} already in /etc/hosts",
            remedy="Choose another bed name (its hosts are NAME1..NAMEn).",
        )
    write_state(name, state)  # before anything exists, so `down` knows what to sweep
    bed_hosts = [
        BedHost(h["name"], h["address"], h["namespace"], h["private_address"]) for h in hosts
    ]
    set_hosts_block(name, bed_hosts)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    ensure_bridge(block)
    ensure_private_net(block)
    run_provision("client-key", str(sdir))
    run_provision("authorize", str(sdir / "client_key.pub"), str(sdir / "authorized_keys"))
    lines = [f"{k} {v}" for k, v in options.items()]

    def start(h: dict[str, Any]) -> int:
        return start_host(sdir, h, bed_hosts, lines, block)

    with ThreadPoolExecutor(max_workers=min(n, 16)) as pool:
        futures = [pool.submit(start, h) for h in hosts]
        errors = []
        for h, fut in zip(hosts, futures, strict=True):
            try:
                h["sshd_pid"] = fut.result()
            except Exception as exc:  # collect all, report one
                errors.append(f"{h['name']}: {exc}")
    write_state(name, state)
    if errors:
        raise TestbedError(f"{len(errors)} host(s) of bed {name!r} failed", "\n".join(errors))
    bed = bed_from_state(state)
    write_client_files(bed)
    state["complete"] = True
    write_state(name, state)
    return bed


def _down_locked(name: str) -> None:
    """Remove everything of bed *name*, repeating until nothing is left.

    A killed ``up`` may leave commands running (``ip``, ``provision.sh``, an
    sshd being started) that create things after a first pass removed them:
    each pass first kills every process that names the bed's state dir, and
    passes repeat (10 s at most) until nothing of the bed remains.
    """
    state = read_state(name)
    sdir = state_dir(name)
    pattern = namespace_re(name)
    veths: set[str] = set()
    if state is not None:
        veths = {h[k] for h in state["hosts"] for k in ("veth", "private_veth") if k in h}
    deadline = time.monotonic() + 10
    while True:
        kill_referencing(sdir)
        _down_pass(name, state, pattern, veths, deadline)
        left = _remains(name, sdir, pattern, veths, state)
        if not left:
            break
        if time.monotonic() > deadline:
            raise TestbedError(
                f"bed {name!r} could not be removed completely",
                ", ".join(left),
                "Run `python -m sshdeploy.testbed down --name NAME` again.",
            )
        time.sleep(0.05)
    remove_bridge_if_unused()


def _remains(
    name: str,
    sdir: Path,
    pattern: re.Pattern[str],
    veths: set[str],
    state: Mapping[str, Any] | None,
) -> list[str]:
    """What of bed *name* is still on the machine."""
    left = [f"netns {ns}" for ns in netns_list() if pattern.match(ns)]
    left += [f"link {v}" for v in sorted(veths & set(links()))]
    if state is not None:
        block = int(state["block"])
        own = {private_bridge(block)} | (set() if is_shared_block(block) else {bridge_name(block)})
        left += [f"bridge {b}" for b in sorted(own & set(links()))]
        if unreachable_route(block):
            left.append(f"route unreachable {private_block_subnet(block)}")
    if NETNS_ETC.is_dir():
        left += [f"/etc/netns/{d.name}" for d in NETNS_ETC.iterdir() if pattern.match(d.name)]
    if sdir.exists():
        left.append(f"state dir {sdir}")
    return left


def _down_pass(
    name: str,
    state: Mapping[str, Any] | None,
    pattern: re.Pattern[str],
    veths: set[str],
    deadline: float,
) -> None:
    namespaces = {ns for ns in netns_list() if pattern.match(ns)}
    if state is not None:
        namespaces |= {h["namespace"] for h in state["hosts"]} & set(netns_list())
    for ns in sorted(namespaces):
        kill_namespace(ns, deadline)
    for ns in sorted(namespaces):
        run_command(["ip", "netns", "del", ns], check=False)
    if state is not None:
        for h in state["hosts"]:  # an sshd that escaped its namespace (should not happen)
            pid = h.get("sshd_pid")
            if (
                pid
                and not is_zombie(int(pid))
                and (cmdline(int(pid)) or "").find(str(state["state_dir"])) >= 0
            ):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    existing = set(links())
    for veth in sorted(veths & existing):
        run_command(["ip", "link", "del", veth], check=False)
    if state is not None:
        block = int(state["block"])
        if is_shared_block(block) and BRIDGE in existing:
            for h in state["hosts"]:  # no stale MAC for the next bed on these addresses
                run_command(["ip", "neigh", "flush", "to", h["address"], "dev", BRIDGE],
                            check=False)
        remove_private_net(block)
    if NETNS_ETC.is_dir():
        for d in NETNS_ETC.iterdir():
            if pattern.match(d.name) or d.name in namespaces:
                shutil.rmtree(d, ignore_errors=True)
    remove_hosts_block(name)
    shutil.rmtree(state_dir(name), ignore_errors=True)


def down(name: str = DEFAULT_NAME) -> None:
    """Take a bed down; leaves nothing behind. Idempotent.

    Kills every process inside the bed's namespaces (not only sshd), deletes
    the namespaces, veths, ``/etc/netns`` dirs, the ``/etc/hosts`` block, the
    state dir, the private network's bridge and ``unreachable`` route, the
    bed's own bridge (beds in blocks 4 and up) and the shared bridge if no
    other bed uses it. Works after a crashed or killed ``up`` too.

    Parameters
    ----------
    name : str
        Bed name.

    Raises
    ------
    TestbedError
        Not root, or processes in a namespace refused to die.
    """
    check_name(name)
    check_requirements()
    with _machine_lock():
        _down_locked(name)


def list_beds() -> list[str]:
    """Return the names of beds with anything left on this machine (state, namespaces, hosts)."""
    names = set(beds_in_hosts_file())
    root = root_dir()
    if root.is_dir():
        names |= {d.name for d in root.iterdir() if d.is_dir() and NAME_RE.match(d.name)}
    for ns in netns_list():
        bed = bed_of_namespace(ns)
        if bed and NAME_RE.match(bed) and bed != "probe":
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
    check_name(name)
    state = read_state(name)
    if state is None or not state.get("complete"):
        return None
    return bed_from_state(state)
