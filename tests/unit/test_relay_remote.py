"""The relay's remote half without a network: a host serves its pack, another fetches it.

:mod:`sshdeploy.remote.envremote` runs here as the hosts run it, one ``HOME``
per pretend host, over loopback. A copy that does not hash to what the
controller says is refused and never unpacked into place.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sshdeploy.bootstrap import SCRIPT_LAUNCHER, envremote_bundle
from tests.unit.test_envsync import run_remote

pytestmark = pytest.mark.timeout(60)

DIGEST = "0123456789abcdef01234567"


_remote = run_remote


@contextmanager
def half_holder(data: bytes) -> Iterator[str]:
    """A holder on loopback that dies half-way through *data*; yields its URL."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))

    def half() -> None:
        for _ in range(2):  # the fetcher's reachability connect, then its GET
            conn, _peer = server.accept()
            with conn:
                if conn.recv(4096):
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data)
                                 + data[: len(data) // 2])

    thread = threading.Thread(target=half, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/t"
    finally:
        thread.join(10)
        server.close()


def _pack() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in {"relayed.py": b"X = 1\n" * 5000, "pkg/__init__.py": b""}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@contextmanager
def _serving(home: Path, sha: str,
             token: str = "t0k3n") -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT_LAUNCHER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "HOME": str(home)})
    assert proc.stdin is not None and proc.stdout is not None
    op = {"op": "serve", "env": DIGEST, "sha256": sha, "token": token, "ttl": 50}
    proc.stdin.write(envremote_bundle() + (json.dumps(op) + "\n").encode())
    proc.stdin.flush()
    try:
        first = json.loads(proc.stdout.readline())
        yield first["port"], proc
    finally:
        if proc.poll() is None:
            proc.stdin.close()
        proc.wait(timeout=20)


def test_a_fetched_pack_is_checked_unpacked_and_kept_for_the_next_fetcher(tmp_path: Path) -> None:
    pack = _pack()
    sha = hashlib.sha256(pack).hexdigest()
    holder, fetcher = tmp_path / "holder", tmp_path / "fetcher"
    # the holder got it from the controller: unpacked, and its pack kept under its sha256
    assert _remote(holder, {"op": "env", "env": DIGEST, "sha256": sha}, pack)["unpacked"]
    assert _remote(holder, {"op": "probe", "env": DIGEST})["packs"] == {sha: len(pack)}
    with _serving(holder, sha) as (port, proc):
        wrong = _remote(fetcher, {"op": "fetch", "env": DIGEST, "sha256": sha,
                                  "urls": [f"http://127.0.0.1:{port}/guess"]})
        assert wrong["kind"] == "unreachable" and "403" in wrong["refused"]
        got = _remote(fetcher, {"op": "fetch", "env": DIGEST, "sha256": sha,
                                "urls": ["http://127.0.0.1:9/x",  # nothing there: next address
                                         f"http://127.0.0.1:{port}/t0k3n"]})
        assert got["unpacked"] is True and got["received"] == len(pack), got
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.stdout is not None
        end = json.loads(proc.stdout.read().decode().splitlines()[-1])
        assert end["served"] == 1 and end["bytes"] == len(pack) and not end["dropped"]
    env = fetcher / ".cache/sshdeploy/envs" / DIGEST
    assert (env / "relayed.py").read_bytes() == b"X = 1\n" * 5000
    assert _remote(fetcher, {"op": "probe", "env": DIGEST})["packs"] == {sha: len(pack)}
    # nothing half-done beside them
    assert sorted(os.listdir(env.parent)) == [DIGEST]
    assert sorted(os.listdir(fetcher / ".cache/sshdeploy/packs")) == [f"{DIGEST}.{sha}.tar.gz"]


def test_a_corrupt_copy_is_refused_and_never_unpacked(tmp_path: Path) -> None:
    pack = _pack()
    sha = hashlib.sha256(pack).hexdigest()
    holder, fetcher = tmp_path / "holder", tmp_path / "fetcher"
    _remote(holder, {"op": "env", "env": DIGEST, "sha256": sha}, pack)
    kept = holder / ".cache/sshdeploy/packs" / f"{DIGEST}.{sha}.tar.gz"
    damaged = bytearray(pack)
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte, same size, same name
    kept.write_bytes(bytes(damaged))
    with _serving(holder, sha) as (port, proc):
        out = _remote(fetcher, {"op": "fetch", "env": DIGEST, "sha256": sha,
                                "urls": [f"http://127.0.0.1:{port}/t0k3n"]})
        assert proc.stdin is not None
        proc.stdin.write(b'{"drop": true}\n')  # the controller tells the holder its copy is bad
        proc.stdin.close()
        proc.wait(timeout=20)
    assert out["kind"] == "corrupt" and "expected" in out["refused"], out
    assert not (fetcher / ".cache/sshdeploy/envs" / DIGEST).exists()
    assert os.listdir(fetcher / ".cache/sshdeploy/packs") == []  # the partial copy is gone
    assert _remote(fetcher, {"op": "probe", "env": DIGEST})["env_present"] is False
    assert not kept.exists()


def test_a_pack_damaged_on_the_way_from_the_controller_is_refused(tmp_path: Path) -> None:
    pack = _pack()
    out = _remote(tmp_path, {"op": "env", "env": DIGEST, "sha256": "0" * 64}, pack)
    assert "damaged in transit" in out["error"]
    assert os.listdir(tmp_path / ".cache/sshdeploy/envs") == []
    assert os.listdir(tmp_path / ".cache/sshdeploy/packs") == []


def test_no_reachable_holder_is_said_as_unreachable(tmp_path: Path) -> None:
    out = _remote(tmp_path, {"op": "fetch", "env": DIGEST, "sha256": "a" * 64,
                             "urls": ["http://127.0.0.1:9/x"], "timeout": 2})
    assert out["kind"] == "unreachable" and out["received"] == 0


def test_the_pack_goes_with_its_environment(tmp_path: Path) -> None:
    pack = _pack()
    sha = hashlib.sha256(pack).hexdigest()
    _remote(tmp_path, {"op": "env", "env": DIGEST, "sha256": sha}, pack)
    _remote(tmp_path, {"op": "env", "env": "f" * 24, "limit": 1}, _pack())  # prunes the first
    assert os.listdir(tmp_path / ".cache/sshdeploy/packs") == []
    _remote(tmp_path, {"op": "clean", "envs": True})
    assert not (tmp_path / ".cache/sshdeploy/packs").exists()


def test_a_partial_copy_cut_off_half_way_is_refused(tmp_path: Path) -> None:
    pack = _pack()
    sha = hashlib.sha256(pack).hexdigest()
    with half_holder(pack) as url:
        out = _remote(tmp_path, {"op": "fetch", "env": DIGEST, "sha256": sha,
                                 "urls": [url], "timeout": 10})
    assert out["kind"] == "corrupt" and "partial" in out["refused"], out
    assert not (tmp_path / ".cache/sshdeploy/envs" / DIGEST).exists()
    assert os.listdir(tmp_path / ".cache/sshdeploy/packs") == []
