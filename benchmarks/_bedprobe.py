"""Shared helpers of the benchmarks: what runs on the bed hosts, their memory, SSH connections.

One pass over ``/proc`` maps every process to its network namespace (what
``ip netns pids`` does, once for all hosts instead of one subprocess per
host), so close times can be polled every few milliseconds.
:func:`confirm_clean` cross-checks with :func:`sshdeploy.testbed.processes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil

from sshdeploy import testbed


@dataclass(frozen=True)
class Proc:
    """One process of a bed host."""

    host: str
    pid: int
    ppid: int
    cmd: str

    @property
    def is_sshd(self) -> bool:
        return self.cmd.startswith("sshd:") or self.cmd.startswith("/usr/sbin/sshd")

    @property
    def is_python(self) -> bool:
        return "python" in self.cmd


@dataclass
class Snapshot:
    """Every process of every bed host (listeners included, zombies not)."""

    procs: list[Proc] = field(default_factory=list)
    listeners: dict[str, int] = field(default_factory=dict)  # host -> listener pid

    def remote(self) -> list[Proc]:
        """What the deployment runs: everything but sshd (listener and sessions)."""
        return [p for p in self.procs if not p.is_sshd]

    def sessions(self) -> list[Proc]:
        """sshd's per-connection and per-session processes (not the listener)."""
        return [p for p in self.procs if p.is_sshd and p.pid != self.listeners.get(p.host)]

    def connections(self) -> dict[str, int]:
        """SSH connections per host: children of the host's sshd listener (one per connection)."""
        out: dict[str, int] = {h: 0 for h in self.listeners}
        for p in self.procs:
            if p.ppid == self.listeners.get(p.host):
                out[p.host] += 1
        return out


def _netns_inodes(bed: testbed.Bed) -> dict[int, str]:
    out = {}
    for h in bed.hosts:
        with contextlib.suppress(OSError):
            out[os.stat(f"/run/netns/{h.namespace}").st_ino] = h.name
    return out


def snapshot(bed: testbed.Bed, inodes: dict[int, str] | None = None) -> Snapshot:
    """Return the processes of every host of *bed* (one /proc pass)."""
    inodes = inodes if inodes is not None else _netns_inodes(bed)
    snap = Snapshot()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            host = inodes.get(os.stat(f"/proc/{pid}/ns/net").st_ino)
            if host is None:
                continue
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            fields = stat.rpartition(")")[2].split()
            if fields[0] in ("Z", "X"):
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        snap.procs.append(Proc(host, pid, int(fields[1]), cmd))
    in_bed = {p.pid for p in snap.procs}
    for p in snap.procs:
        # The listener is the sshd whose parent is outside the namespace (init).
        if p.cmd.startswith("sshd:") and "[listener]" in p.cmd and p.ppid not in in_bed:
            snap.listeners[p.host] = p.pid
    for h in bed.hosts:
        snap.listeners.setdefault(h.name, -1)
    return snap


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> tuple[float, float] | None:
    """Return (own, reaped children's) CPU seconds of *pid* from ``/proc/PID/stat``.

    Own is utime + stime; children is cutime + cstime, the CPU of the children
    this process has waited for (short-lived shells, a setup command...), so a
    sum over every live process of a host also counts what already ended.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    # fields[0] is the state (field 3): utime..cstime are fields 14..17.
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def cpu_table(snap: Snapshot) -> dict[int, tuple[str, str, float, float]]:
    """Return ``{pid: (host, cmd, own_cpu_s, children_cpu_s)}`` for every process of *snap*."""
    out = {}
    for p in snap.procs:
        t = cpu_ticks(p.pid)
        if t is not None:
            out[p.pid] = (p.host, p.cmd, t[0], t[1])
    return out


def cpu_since(
    before: dict[int, tuple[str, str, float, float]],
    after: dict[int, tuple[str, str, float, float]],
) -> dict[int, tuple[str, str, float]]:
    """CPU seconds each live process (and the children it reaped) used since *before*."""
    out = {}
    for pid, (host, cmd, own, kids) in after.items():
        b = before.get(pid)
        if b is not None and b[1] == cmd:
            own, kids = own - b[2], kids - b[3]
        out[pid] = (host, cmd, own + kids)
    return out


def memory(pids: Iterable[int]) -> dict[str, float]:
    """Return the summed RSS and PSS (MiB) and CPU seconds of *pids* (gone ones are skipped)."""
    rss = pss = 0
    cpu = 0.0
    n = 0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            info = proc.memory_full_info()
            t = proc.cpu_times()
            cpu += t.user + t.system
        except (psutil.Error, OSError):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
        n += 1
    return {"rss_mib": rss / 2**20, "pss_mib": pss / 2**20, "cpu_s": cpu, "processes": n}


def wait_gone(
    bed: testbed.Bed, deadline_s: float, *, interval: float = 0.005
) -> tuple[float | None, float | None, Snapshot]:
    """Poll until the bed runs nothing but sshd, then until only the listeners are left.

    Returns
    -------
    (remote_gone_s, sessions_gone_s, last_snapshot)
        Seconds from the call until no non-sshd process is left on any host,
        and until no sshd session process either; None when not reached
        within *deadline_s*.
    """
    inodes = _netns_inodes(bed)
    t0 = time.perf_counter()
    remote_gone = sessions_gone = None
    while True:
        snap = snapshot(bed, inodes)
        now = time.perf_counter() - t0
        if remote_gone is None and not snap.remote():
            remote_gone = now
        if remote_gone is not None and not snap.sessions():
            sessions_gone = now
            return remote_gone, sessions_gone, snap
        if now > deadline_s:
            return remote_gone, sessions_gone, snap
        time.sleep(interval)


def kill_leftovers(bed: testbed.Bed, deadline_s: float = 10.0) -> list[Proc]:
    """SIGKILL whatever is left on the bed but the sshd listeners; return what was killed."""
    killed: list[Proc] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        snap = snapshot(bed)
        left = [p for p in snap.procs if p.pid != snap.listeners.get(p.host)]
        if not left:
            break
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            if p.pid not in {k.pid for k in killed}:
                killed.append(p)
        time.sleep(0.02)
    return killed


def confirm_clean(bed: testbed.Bed) -> list[tuple[str, int, str]]:
    """Cross-check with :func:`sshdeploy.testbed.processes`: what is left (but sshd sessions)."""
    left = []
    for h in bed.hosts:
        for pid, cmd in testbed.processes(h):
            if not cmd.startswith("sshd:"):
                left.append((h.name, pid, cmd))
    return left


def bring_up(n: int, name: str, wait_s: float = 900.0) -> testbed.Bed:
    """:func:`sshdeploy.testbed.up`, waiting while other beds hold every address block.

    Other engineers' beds may use all blocks (each bed needs one); the bed is
    also retried (up to 3 times) when a host's sshd does not answer in time (the
    controller's neighbour cache may still point at a just-deleted host).
    """
    deadline = time.monotonic() + wait_s
    retries = 3
    said = False
    while True:
        try:
            return testbed.up(n, name=name)
        except testbed.TestbedError as exc:
            text = str(exc)
            if "no free address block" in text and time.monotonic() < deadline:
                if not said:
                    print(f"  waiting for a free test-bed address block ({text})", flush=True)
                    said = True
                time.sleep(5)
                continue
            if "not accepting connections" in text and retries > 0:
                retries -= 1
                print(f"  bed did not come up, retrying: {text[:160]}", flush=True)
                # Failed neighbour entries of the bridge are useless to everyone.
                subprocess.run(["ip", "neigh", "flush", "dev", testbed.BRIDGE, "nud", "failed"],
                               capture_output=True, check=False)
                time.sleep(3)
                continue
            raise


def source_state() -> dict[str, str]:
    """Which sshdeploy was measured: HEAD, and a digest of sshdeploy/*.py (the working tree,
    which other engineers may be editing while a benchmark runs)."""
    import hashlib
    from pathlib import Path

    import sshdeploy

    pkg = Path(sshdeploy.__file__).parent
    digest = hashlib.sha256()
    for f in sorted(pkg.glob("*.py")):
        digest.update(f.name.encode() + f.read_bytes())
    head = subprocess.run(["git", "-C", str(pkg), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(pkg), "status", "--short", "--", "."],
                           capture_output=True, text=True).stdout.split()
    if not head:  # an exported tree (git archive) names its commit in its directory name
        head = f"(no git: {pkg.parent.name})"
    return {"head": head, "sshdeploy_py_sha256": digest.hexdigest()[:16],
            "modified": " ".join(x for x in dirty if x.endswith(".py"))}


#: SSH handshakes at once when logging in everywhere: sshdeploy's
#: connect-parallelism (sshd's MaxStartups drops the 11th unauthenticated one).
HANDSHAKES = 8


async def run_everywhere(hosts: Iterable[str], connect_options: dict[str, Any], command: str,
                         conns: list[Any] | None = None) -> None:
    """Log in on every host at once (``HANDSHAKES`` at a time) and run *command* there.

    Raises if a login or the command fails. The connections are closed when
    done, unless *conns* is given: they are appended to it for the caller to
    close (to measure before they go).
    """
    from sshdeploy.ssh.sshlib import asyncssh

    handshakes = asyncio.Semaphore(HANDSHAKES)

    async def one(host: str) -> None:
        async with handshakes:
            conn = await asyncssh.connect(host, **connect_options)
        if conns is not None:
            conns.append(conn)
            await conn.run(command, check=True)
            return
        async with conn:
            await conn.run(command, check=True)

    await asyncio.gather(*(one(h) for h in hosts))


def wait_workers(cluster: Any, n: int, deadline_s: float) -> bool:
    """Poll (every 5 ms) until *cluster*'s scheduler knows *n* workers; False at the deadline."""
    end = time.perf_counter() + deadline_s
    while time.perf_counter() < end:
        if len(cluster.scheduler_info.get("workers", {})) >= n:
            return True
        time.sleep(0.005)
    return False
