"""Processes in the hosts: run a command in one, list or kill what runs there, wait."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from sshdeploy.testbed.model import (
    NAME_RE,
    Bed,
    BedHost,
    TestbedError,
    bed_of_namespace,
    read_state,
    state_dir,
)
from sshdeploy.testbed.system import cmdline, is_zombie, netns_pids


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


def _sshd_pid(host: BedHost) -> int | None:
    bed = bed_of_namespace(host.namespace)
    state = read_state(bed) if bed and NAME_RE.match(bed) else None
    if state is None:
        return None
    for h in state["hosts"]:
        if h["namespace"] == host.namespace and h.get("sshd_pid"):
            return int(h["sshd_pid"])
    return None


@contextlib.contextmanager
def mounted(host: BedHost, target: str, *mounts: Sequence[str]) -> Iterator[None]:
    """Run each of *mounts* (``mount`` arguments) over the directory *target* in *host*'s own
    mount namespace; unmount them all on exit. Nothing outside that host changes.

    For a host whose cache is full or read-only:
    ``mounted(h, "/root/.cache/sshdeploy", ["-t", "tmpfs", "-o", "size=64k", "tmpfs"])``, or
    ``["--bind", T], ["-o", "remount,bind,ro"]`` (root writes through permissions, not
    through a read-only mount). *target* is created if missing.

    Raises
    ------
    TestbedError
        The host is not a host of a bed that is up, or a mount failed.
    """
    pid = _sshd_pid(host)
    if pid is None:
        raise TestbedError(f"not a host of a bed that is up: {host.name}")
    enter = ["nsenter", "-t", str(pid), "-m"]
    subprocess.run([*enter, "mkdir", "-p", target], capture_output=True, timeout=30, check=False)
    done_count = 0
    try:
        for args in mounts:
            done = subprocess.run([*enter, "mount", *args, target], capture_output=True,
                                  text=True, timeout=30)
            if done.returncode != 0:
                raise TestbedError(f"cannot mount {' '.join(args)} on {target} of {host.name}",
                                   done.stderr, "Is the bed up (python -m sshdeploy.testbed "
                                   "status)?")
            done_count += 1
        yield
    finally:
        for _ in range(done_count):
            subprocess.run([*enter, "umount", "-l", target], capture_output=True, timeout=30,
                           check=False)


@contextlib.contextmanager
def shared_directory(hosts: Sequence[BedHost], target: str) -> Iterator[Path]:
    """Give *hosts* one directory at *target* (e.g. ``/root/.cache``), as NFS would.

    A new directory of the bed's state (which every host's mount namespace
    sees at the same path) is bind-mounted over *target* in each host's own
    mount namespace (``nsenter`` into its sshd's); on exit the mounts are
    removed, so each host has its own *target* again, and the directory is
    deleted. Nothing outside the hosts' namespaces changes.

    Yields
    ------
    Path
        The shared directory, as this machine sees it.

    Raises
    ------
    TestbedError
        A host is not a host of a bed that is up, or the mount failed.
    """
    pids = [_sshd_pid(h) for h in hosts]
    beds = {bed_of_namespace(h.namespace) for h in hosts}
    if None in pids or len(beds) != 1 or None in beds:
        raise TestbedError(f"not hosts of one bed that is up: {[h.name for h in hosts]}")
    bed = next(iter(beds))
    assert bed is not None
    shared = state_dir(bed) / "shared" / uuid.uuid4().hex[:12]
    shared.mkdir(parents=True)
    mounted: list[int] = []
    try:
        for host, pid in zip(hosts, pids, strict=True):
            assert pid is not None
            done = subprocess.run(["nsenter", "-t", str(pid), "-m", "mount", "--bind",
                                   str(shared), target], capture_output=True, text=True,
                                  timeout=30)
            if done.returncode != 0:
                raise TestbedError(f"cannot share {target} on {host.name}", done.stderr,
                                   "Is the bed up (python -m sshdeploy.testbed status)?")
            mounted.append(pid)
        yield shared
    finally:
        for pid in mounted:  # lazily: a process still inside must not keep the share
            subprocess.run(["nsenter", "-t", str(pid), "-m", "umount", "-l", target],
                           capture_output=True, timeout=30, check=False)
        shutil.rmtree(shared, ignore_errors=True)


@contextlib.contextmanager
def cut_off_from_each_other(hosts: Sequence[BedHost]) -> Iterator[None]:
    """*hosts* cannot reach each other while inside (this machine still reaches them all).

    Each gets an ``unreachable`` route to the others' addresses on both
    networks, so a connect between them fails at once (EHOSTUNREACH), as
    between hosts on networks that do not route to each other. The routes are
    removed on the way out.
    """
    added: list[tuple[BedHost, str]] = []
    try:
        for host in hosts:
            for other in hosts:
                if other is host:
                    continue
                for addr in (other.address, other.private_address):
                    out = run_in(host, ["ip", "route", "add", "unreachable", f"{addr}/32"])
                    if out.returncode != 0:
                        raise TestbedError(f"{host.name}: cannot cut the route to {addr}: "
                                           f"{out.stderr.strip()}")
                    added.append((host, addr))
        yield
    finally:
        for host, addr in added:
            run_in(host, ["ip", "route", "del", "unreachable", f"{addr}/32"])


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
    for pid in netns_pids(host.namespace):
        if pid == listener or is_zombie(pid):
            continue
        cmd = cmdline(pid)
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


def kill_namespace(namespace: str, deadline: float) -> None:
    while True:
        pids = [p for p in netns_pids(namespace) if not is_zombie(p)]
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


def kill_referencing(state_dir: Path) -> None:
    """SIGKILL every process (any namespace) whose command line names *state_dir*."""
    marker = str(state_dir)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and not is_zombie(int(entry)):
            if marker in (cmdline(int(entry)) or ""):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry), signal.SIGKILL)


def host_path(host: BedHost, path: str | Path) -> Path:
    """Return where this machine sees *path* as bed host *host* sees it (its own /tmp...).

    Through ``/proc/<sshd pid>/root``: the host's mount namespace. Read, list
    or write there to see or place a file on that host only.

    Raises
    ------
    TestbedError
        *host* is not a host of a bed that is up.
    """
    pid = _sshd_pid(host)
    if pid is None:
        raise TestbedError(f"no such bed host {host.name} ({host.namespace})")
    return Path(f"/proc/{pid}/root") / Path(path).relative_to("/")
