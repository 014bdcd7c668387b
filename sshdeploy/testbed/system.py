"""Thin reads of the machine: run a command, namespaces and links, /proc, probe sshd."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from sshdeploy.testbed.model import TestbedError


def run_command(argv: Sequence[str], *, check: bool = True, timeout: float = 30) -> str:
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


def netns_list() -> list[str]:
    """Return the names of every network namespace on the machine (``ip netns list``)."""
    out = run_command(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(namespace: str) -> list[int]:
    out = run_command(["ip", "netns", "pids", namespace], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def is_zombie(pid: int) -> bool:
    """Return True if process *pid* is gone or a zombie (dead, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def cmdline(pid: int) -> str | None:
    """Return the command line of process *pid*, arguments joined by spaces (None if gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def links() -> list[str]:
    """Return the names of the network links in the controller's namespace (``ip link``)."""
    out = run_command(["ip", "-o", "link", "show"], check=False)
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def tcp_ok(address: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False
