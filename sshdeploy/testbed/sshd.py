"""One sshd per host (configured by provision.sh) and the client files that reach them.

Each host's sshd starts in a mount namespace of its own where ``/tmp`` and
``/var/tmp`` are fresh tmpfs, and the login user's ``~/.cache`` and
``/etc/profile.d`` (what a login shell reads) are per-host directories of the
bed (:func:`private_disk_argv`): what one host writes there is seen by no
other host and not by this machine, as on real machines.
:func:`host_path` reads a host's own view of a path.
"""

from __future__ import annotations

import pwd
import shlex
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
#: Where a host's mount namespace keeps the bed's state directory while it hides /tmp.
KEEP_ROOT = Path("/run/sshdeploy-testbed")
#: The host's own directories: tmpfs (gone with the host).
PRIVATE_TMP = ("/tmp", "/var/tmp")
#: The host's own login scripts (``bash -l`` sources them through /etc/profile),
#: a per-host directory seeded with this machine's (kept across sshd restarts).
PROFILE_D = Path("/etc/profile.d")
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
    own_disk = private_disk_argv(state_dir.parent, hdir, ns, sshd)
    run_command(host_command(BedHost(hname, addr, ns), own_disk))
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


def private_disk_argv(root: Path, host_dir: Path, namespace: str, argv: list[str]) -> list[str]:
    """Return *argv* wrapped so that it runs with the host's own /tmp, /var/tmp, ~/.cache
    and /etc/profile.d.

    In a new private mount namespace: the beds' state directory *root* is
    bind-mounted aside (under :data:`KEEP_ROOT`), fresh tmpfs go over /tmp and
    /var/tmp, *root* is bound back (sshd's config, keys and logs live there),
    ``<host_dir>/cache`` goes over root's ``~/.cache`` and ``<host_dir>/profile.d``
    (first a copy of this machine's) over ``/etc/profile.d``; both are kept
    across sshd restarts. Every login under that sshd inherits the namespace.

    Examples
    --------
    >>> argv = private_disk_argv(Path("/tmp/b"), Path("/tmp/b/x/hosts/n1"), "ns1", ["sshd"])
    >>> argv[:4], argv[-1]
    (['unshare', '-m', '--propagation', 'private'], 'sshd')
    """
    home = Path(pwd.getpwnam("root").pw_dir)
    keep = KEEP_ROOT / namespace
    cache = host_dir / "cache"
    profile = host_dir / "profile.d"
    seed = f"cp -a {_q(PROFILE_D)}/. {_q(profile)}/" if PROFILE_D.is_dir() else "true"
    script = " && ".join([
        f"mkdir -p {_q(keep)} {_q(cache)} {_q(home / '.cache')}",
        f"{{ test -d {_q(profile)} || {{ mkdir -p {_q(profile)} && {seed}; }}; }}",
        f"mount --bind {_q(root)} {_q(keep)}",
        *(f"mount -t tmpfs -o mode=1777,size=2g tmpfs {d}" for d in PRIVATE_TMP),
        f"mkdir -p {_q(root)}",
        f"mount --bind {_q(keep)} {_q(root)}",
        f"mount --bind {_q(cache)} {_q(home / '.cache')}",
        f"{{ test ! -d {_q(PROFILE_D)} || mount --bind {_q(profile)} {_q(PROFILE_D)}; }}",
        'exec "$@"',
    ])
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *argv]


def _q(path: Path) -> str:
    return shlex.quote(str(path))


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
