"""The upload relay (issue 29) without a network: when uploads go host to host, and the
remote half (a holder serves its blob store, another host fetches what it lacks, each
content checked against its sha256 before it enters the store).

:mod:`sshdeploy.remote.envremote` runs here as the hosts run it, one ``HOME`` per
pretend host, over loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sshdeploy.bootstrap import SCRIPT_LAUNCHER, envremote_bundle
from sshdeploy.env.relay import PackServer, relay
from sshdeploy.env.stageplan import plan_stage
from sshdeploy.env.uploads import blob_tar, collect
from sshdeploy.env.uprelay import blob_sizes, fetch_op, lacking, relays, serving
from sshdeploy.hosts import Host
from sshdeploy.settings import Settings
from tests.unit.test_envsync import run_remote
from tests.unit.test_relay_remote import half_holder

pytestmark = pytest.mark.timeout(60)

MB = 1_000_000


# -- when -----------------------------------------------------------------------------

def test_above_the_size_and_with_someone_to_relay_to_the_uploads_are_relayed() -> None:
    sizes = {"a": 3 * MB, "b": 2 * MB, "c": 10}
    assert relays(sizes, [["a", "b"], ["a", "b"], ["a"]], fanout=8, threshold=4 * MB)
    # what counts is the contents lacked, once, not once per host
    assert not relays(sizes, [["a"], ["a"], ["a"], ["a"]], 8, 4 * MB)
    assert lacking([["b", "a"], ["a", "c"], []]) == ["a", "b", "c"]


def test_below_the_size_one_host_nothing_lacked_or_the_relay_off_each_host_from_here() -> None:
    sizes = {"a": 5 * MB}
    assert not relays(sizes, [["a"], ["a"]], 8, 6 * MB)       # below the size
    assert not relays(sizes, [["a"]], 8, 1)                   # one host
    assert not relays(sizes, [[], []], 8, 0)                  # nothing lacked
    assert not relays(sizes, [["a"], ["a"]], 0, 1)            # sshdeploy.env-relay: false
    assert not relays(sizes, [["a"], ["a"]], 8, None)         # a plan without the setting
    assert relays(sizes, [["a"], []], 8, 1)                   # a host that holds them serves


def test_the_setting_and_the_plan() -> None:
    s = Settings.resolve()
    assert s.upload_relay_size == 4 * 1024 * 1024
    assert Settings.resolve(upload_relay_size="10MB").upload_relay_size == 10 * MB
    plan = plan_stage(None, None, [__file__], s)
    assert plan.upload_relay == s.upload_relay_size and plan.relay_fanout == 8
    off = plan_stage(None, None, [__file__], Settings.resolve(env_relay=False))
    assert off.relay_fanout == 0


def test_what_a_fetching_host_is_told(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("A = 1\n")
    (tmp_path / "pkg" / "b.py").write_text("B = 2\n" * 10)
    m = collect([tmp_path / "pkg"])
    sizes = blob_sizes(m)
    assert sorted(sizes.values()) == [6, 60]
    op = fetch_op(m, ".cache/sshdeploy/uploads/abc", list(sizes)[:1], ["http://h:1/t"], 10)
    assert op["op"] == "fetch-uploads" and op["dir"] == "abc" and op["files"] == m.files
    assert op["missing"] == list(sizes)[:1] and op["timeout"] == 40
    assert serving(["b", "a"]) == {"blobs": ["a", "b"]}


# -- the shared glue: relay() on (host, python) pairs ---------------------------------

@dataclass
class _Conn:
    address: str


class _Pool:
    def as_connected(self, host: Host) -> str:
        return f"root@{host.hostname}:22"

    async def get(self, host: Host) -> _Conn:
        return _Conn(f"10.0.0.{int(host.hostname[1:]) + 2}")


class _Server:
    def __init__(self, host: str, closed: list[tuple[str, bool]]) -> None:
        self.host, self.closed = host, closed

    def urls(self, reached_at: str | None) -> list[str]:
        return [f"http://{reached_at}:1/t"]

    async def close(self, drop: bool = False) -> None:
        self.closed.append((self.host, drop))


def _run(n: int, corrupt: str = "") -> tuple[list[str], list[tuple[str, str, list[str]]],
                                             list[tuple[str, bool]], list[tuple[str, str]]]:
    sent: list[str] = []
    fetched: list[tuple[str, str, list[str]]] = []
    closed: list[tuple[str, bool]] = []
    refused: list[tuple[str, str]] = []
    hosts = [(Host(f"h{i}"), "python3") for i in range(n)]

    async def direct(host: Host, python: str) -> None:
        sent.append(host.hostname)

    async def fetch(host: Host, python: str, source: str, urls: list[str]) -> dict[str, Any]:
        fetched.append((host.hostname, source, urls))
        if source.startswith(f"root@{corrupt}:"):
            return {"refused": "sha256 mismatch", "kind": "corrupt"}
        return {"received": 1}

    async def serve(host: Host, python: str, receiving: bool) -> PackServer:
        return _Server(f"root@{host.hostname}:22", closed)  # type: ignore[return-value]

    need = hosts[1:] if corrupt else hosts
    holding = hosts[:1] if corrupt else []
    asyncio.run(relay(_Pool(), need, holding, 8, direct, fetch, serve,  # type: ignore[arg-type]
                      lambda h, s, why: refused.append((h, s))))
    return sent, fetched, closed, refused


def test_four_hosts_one_send_from_here_three_fetches_from_the_holder() -> None:
    sent, fetched, closed, refused = _run(4)
    assert sent == ["h0"]
    assert sorted((h, s) for h, s, _u in fetched) == [("h1", "root@h0:22"),
                                                     ("h2", "root@h0:22"),
                                                     ("h3", "root@h0:22")]
    assert all(u == ["http://10.0.0.2:1/t"] for _h, _s, u in fetched)  # where it was reached
    assert closed == [("root@h0:22", False)] and refused == []


def test_a_holder_whose_copy_is_refused_drops_it_and_the_host_is_sent_from_here() -> None:
    sent, fetched, closed, refused = _run(2, corrupt="h0")
    assert fetched[0][:2] == ("h1", "root@h0:22") and sent == ["h1"]
    assert refused == [("root@h1:22", "root@h0:22")]
    assert closed == [("root@h0:22", True)]


# -- the remote half ------------------------------------------------------------------

_remote = run_remote


@contextmanager
def _serving(home: Path, blobs: list[str],
             token: str = "t0k3n") -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT_LAUNCHER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "HOME": str(home)})
    assert proc.stdin is not None and proc.stdout is not None
    op = {"op": "serve", **serving(blobs), "token": token, "ttl": 50}
    proc.stdin.write(envremote_bundle() + (json.dumps(op) + "\n").encode())
    proc.stdin.flush()
    try:
        first = json.loads(proc.stdout.readline())
        yield f"http://127.0.0.1:{first['port']}/{token}", proc
    finally:
        if proc.poll() is None:
            proc.stdin.close()
        proc.wait(timeout=20)


@pytest.fixture
def upload(tmp_path: Path) -> Any:
    pkg = tmp_path / "src" / "relayedpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("VALUE = 42\n")
    (pkg / "big.py").write_text("# " + "x" * 200_000 + "\n")
    return collect([pkg])


def _place(home: Path, m: Any, blobs: list[str]) -> dict[str, Any]:
    op = {"op": "upload", "dir": "c1", "files": m.files, "links": m.links, "payload": True}
    return _remote(home, op, blob_tar(m, blobs))


def test_a_host_fetches_what_it_lacks_from_a_holder_checked_and_lays_out_the_tree(
    tmp_path: Path, upload: Any
) -> None:
    blobs = sorted(set(upload.files.values()))
    holder, fetcher = tmp_path / "holder", tmp_path / "fetcher"
    assert _place(holder, upload, blobs)["stored"] == 2
    with _serving(holder, blobs) as (url, proc):
        wrong = _remote(fetcher, {**fetch_op(upload, "x/c1", blobs, [url + "x"], 5)})
        assert wrong["kind"] == "corrupt" and "403" in wrong["refused"], wrong
        got = _remote(fetcher, fetch_op(upload, "x/c1", blobs,
                                        ["http://127.0.0.1:9/t", url], 5))  # nothing at :9
        assert got["stored"] == 2 and got["received"] == upload.size, got
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        end = json.loads(proc.stdout.read().decode().splitlines()[-1])
        assert end["served"] == 2 and not end["dropped"]
    tree = fetcher / ".cache/sshdeploy/uploads/c1/relayedpkg"
    assert (tree / "__init__.py").read_text() == "VALUE = 42\n"
    assert (tree / "big.py").read_bytes() == upload.sources["relayedpkg/big.py"].read_bytes()
    store = fetcher / ".cache/sshdeploy/blobs"
    assert sorted(os.listdir(store)) == blobs  # nothing half-done beside them
    again = _remote(fetcher, fetch_op(upload, "x/c1", blobs, ["http://127.0.0.1:9/t"], 5))
    assert again["stored"] == 0 and "refused" not in again  # it holds them: nothing fetched


def test_a_corrupt_content_is_refused_never_stored_and_the_holder_drops_it(
    tmp_path: Path, upload: Any
) -> None:
    blobs = sorted(set(upload.files.values()))
    big = upload.files["relayedpkg/big.py"]
    holder, fetcher = tmp_path / "holder", tmp_path / "fetcher"
    _place(holder, upload, blobs)
    kept = holder / ".cache/sshdeploy/blobs" / big
    data = bytearray(kept.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size, same name
    kept.write_bytes(bytes(data))
    with _serving(holder, blobs) as (url, proc):
        out = _remote(fetcher, fetch_op(upload, "x/c1", blobs, [url], 5))
        assert proc.stdin is not None
        proc.stdin.write(b'{"drop": true}\n')  # the controller: the holder's copy is bad
        proc.stdin.close()
        proc.wait(timeout=20)
    assert out["kind"] == "corrupt" and "expected" in out["refused"], out
    store = fetcher / ".cache/sshdeploy/blobs"
    assert big not in os.listdir(store)
    assert not [n for n in os.listdir(store) if n.startswith(".tmp-")]
    assert not (fetcher / ".cache/sshdeploy/uploads/c1/relayedpkg/big.py").exists()
    assert not kept.exists()  # dropped: the holder is sent it anew next time
    good = holder / ".cache/sshdeploy/blobs" / upload.files["relayedpkg/__init__.py"]
    assert good.exists()  # a content that hashes right stays
    # then from this machine: the host asks for what it still lacks
    asked = _remote(fetcher, {"op": "upload", "dir": "c1", "files": upload.files,
                              "links": upload.links, "payload": True}, blob_tar(upload, [big]))
    assert asked["stored"] == 1
    tree = fetcher / ".cache/sshdeploy/uploads/c1/relayedpkg/big.py"
    assert hashlib.sha256(tree.read_bytes()).hexdigest() == big


def test_a_content_not_offered_is_not_served(tmp_path: Path, upload: Any) -> None:
    blobs = sorted(set(upload.files.values()))
    holder, fetcher = tmp_path / "holder", tmp_path / "fetcher"
    _place(holder, upload, blobs)
    with _serving(holder, blobs[:1]) as (url, _proc):
        out = _remote(fetcher, fetch_op(upload, "x/c1", blobs[1:], [url], 5))
    assert out["kind"] == "corrupt" and "403" in out["refused"], out
    assert os.listdir(fetcher / ".cache/sshdeploy/blobs") == []


def test_no_reachable_holder_is_said_as_unreachable(tmp_path: Path, upload: Any) -> None:
    blobs = sorted(set(upload.files.values()))
    out = _remote(tmp_path, fetch_op(upload, "x/c1", blobs, ["http://127.0.0.1:9/x"], 2))
    assert out["kind"] == "unreachable" and out["received"] == 0, out


def test_an_upload_damaged_on_the_way_from_here_is_still_refused(
    tmp_path: Path, upload: Any
) -> None:
    big = upload.files["relayedpkg/big.py"]
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(big)
        info.size = 5
        tar.addfile(info, io.BytesIO(b"wrong"))
    out = _remote(tmp_path, {"op": "upload", "dir": "c1", "files": upload.files,
                             "links": {}, "payload": True}, buf.getvalue())
    assert "damaged in transit" in out["error"]
    assert os.listdir(tmp_path / ".cache/sshdeploy/blobs") == []


def test_a_fetching_host_is_shown_as_such_in_the_live_status() -> None:
    from sshdeploy.stages import HOST_STATES

    text = Path(__file__).parents[2].joinpath("sshdeploy/env/prestart.py").read_text()
    assert '"fetching uploads"' in text and "fetching uploads" in HOST_STATES


def test_a_content_cut_off_half_way_is_refused_and_nothing_of_it_stays(
    tmp_path: Path, upload: Any
) -> None:
    big = upload.files["relayedpkg/big.py"]
    data = upload.sources["relayedpkg/big.py"].read_bytes()
    with half_holder(data) as url:
        out = _remote(tmp_path, fetch_op(upload, "x/c1", [big], [url], 5))
    assert out["kind"] == "corrupt" and "partial" in out["refused"], out
    assert os.listdir(tmp_path / ".cache/sshdeploy/blobs") == []
