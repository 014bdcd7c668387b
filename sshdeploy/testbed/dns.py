"""A stub resolver on loopback, for runs that must look names up without leaving the machine.

:class:`StubResolver` answers every DNS query on a ``127.0.29.x`` address at
once with NXDOMAIN, except those for names starting with ``quiet``, which it
never answers, as a resolver that drops queries does (glibc then waits its
timeout, 5 s, and asks again). :func:`with_resolver` wraps a command so that it
runs in a mount namespace of its own whose ``/etc/resolv.conf`` names the stub
(root and ``unshare`` needed); bed host names still resolve from ``/etc/hosts``.
Used by the bed test of unresolvable names and ``benchmarks/bench_preflight.py``.
"""

from __future__ import annotations

import shlex
import socket
import struct
import threading
from collections.abc import Sequence
from pathlib import Path


class StubResolver:
    """A DNS server on a loopback address: NXDOMAIN at once, or no answer (``quiet*``).

    Examples
    --------
    >>> StubResolver.question(b"\\0" * 12 + b"\\x03abc\\x07invalid\\x00\\x00\\x01\\x00\\x01")
    ('abc.invalid', 29)
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for last in range(53, 250):  # a loopback address no other run uses now
            try:
                self.sock.bind((f"127.0.29.{last}", 53))
                break
            except OSError:
                continue
        else:
            self.sock.close()
            raise OSError("no free 127.0.29.x address for the stub resolver")
        self.address: str = self.sock.getsockname()[0]
        #: Every name asked, in order.
        self.asked: list[str] = []
        self.sock.settimeout(0.2)
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="stub-resolver", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            try:
                query, peer = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            name, end = self.question(query)
            self.asked.append(name)
            if name.startswith("quiet"):
                continue  # dropped: the client waits for its timeout
            ident = struct.unpack(">H", query[:2])[0]
            header = struct.pack(">HHHHHH", ident, 0x8183, 1, 0, 0, 0)  # NXDOMAIN
            self.sock.sendto(header + query[12:end], peer)

    @staticmethod
    def question(query: bytes) -> tuple[str, int]:
        """The name a query asks for, and where its question section ends."""
        labels, i = [], 12
        while i < len(query) and query[i]:
            labels.append(query[i + 1:i + 1 + query[i]].decode(errors="replace"))
            i += 1 + query[i]
        return ".".join(labels), i + 5  # the zero byte, QTYPE and QCLASS

    def resolv_conf(self, directory: Path) -> Path:
        """Write a ``resolv.conf`` naming this stub into *directory*; return its path."""
        path = directory / "resolv.conf"
        path.write_text(f"nameserver {self.address}\n")
        return path

    def close(self) -> None:
        self._running = False
        self.sock.close()
        self._thread.join(5)

    def __enter__(self) -> StubResolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def with_resolver(resolv_conf: Path, argv: Sequence[str]) -> list[str]:
    """*argv* run in a mount namespace of its own whose ``/etc/resolv.conf`` is *resolv_conf*.

    Examples
    --------
    >>> with_resolver(Path("/tmp/r.conf"), ["echo", "a b"])[-1]
    "mount --bind /tmp/r.conf /etc/resolv.conf && exec echo 'a b'"
    """
    inner = " ".join(shlex.quote(str(a)) for a in argv)
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f"mount --bind {shlex.quote(str(resolv_conf))} /etc/resolv.conf && exec {inner}"]
