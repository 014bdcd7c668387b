"""One sshd per host (configured by provision.sh) and the client files that reach them."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sshdeploy.testbed.model import (
    NAME_RE,
    Bed,
    BedHost,
    TestbedError,
    bed_of_namespace,
    read_state,
)
from sshdeploy.testbed.net import plug_host
from sshdeploy.testbed.procs import host_command
from sshdeploy.testbed.system import is_zombie, netns_list, run_command, tcp_ok

SSHD = "/usr/sbin/sshd"
#: The provisioning script shared with the docker bed (it sets up test beds only).
PROVISION = Path(__file__).with_name("provision.sh")
READY_TIMEOUT = 20.0


def run_provision(*args: str) -> None:
    run_command(["sh", str(PROVISION), *args])


def start_host(
    state_dir: Path,
    host: Mapping[str, Any],
    all_hosts: Sequence[BedHost],
    options: Sequence[str],
    block: int,
) -> int:
    ns, addr, hname = host["namespace"], host["address"], host["name"]
    plug_host(host, all_hosts, block)
    hdir = state_dir / "hosts" / hname
    run_provision("host", str(hdir), addr, str(state_dir / "authorized_keys"), *options)
    log = hdir / "sshd.log"
    pid_file = hdir / "sshd.pid"
    pid_file.unlink(missing_ok=True)
    # sshd daemonizes (its parent becomes init), writes its pid file once listening.
    sshd = [SSHD, "-f", str(hdir / "sshd_config"), "-E", str(log)]
    run_command(host_command(BedHost(hname, addr, ns), sshd))
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if pid_file.exists():
            text = pid_file.read_text().strip()
            if text.isdigit() and tcp_ok(addr, 22, 0.5):
                return int(text)
        if time.monotonic() > deadline:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise TestbedError(
                f"sshd of {hname} ({addr}) not accepting connections within {READY_TIMEOUT:.0f} s",
                tail,
                f"Read {log}.",
            )
        time.sleep(0.02)


def write_client_files(bed: Bed) -> None:
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


def sshd_healthy(state: Mapping[str, Any]) -> bool:
    if not state.get("complete"):
        return False
    namespaces = set(netns_list())
    for h in state["hosts"]:
        pid = h.get("sshd_pid")
        if h["namespace"] not in namespaces or not pid or is_zombie(int(pid)):
            return False
        if not tcp_ok(h["address"], 22, 1.0):
            return False
    return True


def sshd_log(host: BedHost) -> str:
    """Return what the sshd of *host* logged so far (its ``-E`` file, LogLevel INFO).

    One line per event, e.g. ``Accepted publickey for root from 10.213.7.1
    port 51526 ssh2: ED25519 SHA256:...``: the address a connection came from
    (the controller's, or a jump host's). Read it before and after an action
    and compare, to see only what the action caused.

    Raises
    ------
    TestbedError
        *host* is not a host of a bed that is up.
    """
    bed = bed_of_namespace(host.namespace)
    state = read_state(bed) if bed and NAME_RE.match(bed) else None
    if state is None or not any(h["namespace"] == host.namespace for h in state["hosts"]):
        raise TestbedError(f"no such bed host {host.name} ({host.namespace})")
    log = Path(state["state_dir"]) / "hosts" / host.name / "sshd.log"
    try:
        return log.read_text(errors="replace")
    except FileNotFoundError:
        return ""
