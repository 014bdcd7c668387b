"""What runs on a host to describe it, unpack a synced environment and place uploads.

Sent on stdin by :mod:`sshdeploy.env.prestart`, with the agent's ``facts`` part
(what the probe reports: :func:`sshdeploy.bootstrap.envremote_bundle`), so it
imports only the standard library and that part. It reads one JSON line from stdin
(the operation), then, for ``env`` and ``upload``, a tar stream (the rest of
stdin), and prints one JSON line. Everything lives under the host's
``~/.cache/sshdeploy``:

- ``envs/<hash>/``: one unpacked environment per content hash. Unpacked
  into ``envs/.tmp-<hash>-<pid>`` and renamed into place, so concurrent
  starts sharing a host (or a home shared by several hosts) never see half an
  environment: the first rename wins, the loser's copy is removed. The least
  recently used are removed beyond the size limit.
- ``packs/<hash>.<sha256>.tar.gz``: the pack an environment was unpacked
  from, named by its own sha256 (checked on receipt), kept while the
  environment is, so that other hosts fetch it from this one (``serve`` /
  ``fetch``: the relay, :mod:`sshdeploy.env.relay`) instead of from the
  controller.
- ``blobs/<sha256>``: every uploaded file's content, once; served to the
  other hosts like a pack (``serve`` with ``blobs``, ``fetch-uploads``: the
  upload relay), each checked against its name before it enters the store.
- ``uploads/<cluster>/``: one cluster's uploaded tree, linked from the blobs,
  removed with the cluster.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

ROOT = os.path.join(os.path.expanduser("~"), ".cache", "sshdeploy")
ENVS = os.path.join(ROOT, "envs")
BLOBS = os.path.join(ROOT, "blobs")
UPLOADS = os.path.join(ROOT, "uploads")
PACKS = os.path.join(ROOT, "packs")
#: Python 3.12+ warns unless extraction filters are named (ours are checked anyway).
_FILTER: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
#: Written last into an unpacked environment: it is complete.
DONE = ".sshdeploy-complete"


def _census(path: str) -> dict[str, int]:
    """Count the files of an unpacked environment and their bytes (``__pycache__`` aside:
    the host compiles its own there)."""
    files = size = 0
    for top, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            if name == DONE or name.endswith(".pyc"):
                continue
            try:
                size += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                continue
            files += 1
    return {"files": files, "bytes": size}


def env_present(digest: str) -> bool:
    """Whether environment *digest* is unpacked here, whole (and mark it as just used).

    The completion mark records how many files and bytes were unpacked: an
    environment damaged since (files removed or truncated by hand, a cleaner, a
    failing disk) is not taken for present, so it is sent and unpacked anew.
    """
    path = os.path.join(ENVS, digest)
    try:
        with open(os.path.join(path, DONE)) as f:
            text = f.read()
    except OSError:
        return False
    try:
        recorded = json.loads(text) if text.strip() else None
    except ValueError:
        return False
    if isinstance(recorded, dict) and _census(path) != recorded:
        shutil.rmtree(path, ignore_errors=True)
        return False
    try:
        os.utime(path)
    except OSError:
        pass
    return True


def _unique() -> str:
    """A temporary name part no other process, here or on a host sharing this home, uses."""
    return f"{os.getpid()}-{os.urandom(6).hex()}"


def cache_id() -> str:
    """The identity of this cache: hosts that share their home report the same one.

    Created once (exclusive create, so the first of several hosts wins).
    """
    path = os.path.join(ROOT, ".id")
    try:
        with open(path) as f:
            text = f.read().strip()
        if text:
            return text
    except OSError:
        pass
    os.makedirs(ROOT, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        with open(path) as f:
            return f.read().strip()
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(12).hex())
    with open(path) as f:
        return f.read().strip()


def pack_path(digest: str, sha: str) -> str:
    """Where the pack of environment *digest* whose own sha256 is *sha* is kept."""
    if not re.fullmatch(r"[0-9a-f]{8,64}", digest) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ValueError(f"not a pack name: {digest!r} {sha!r}")
    return os.path.join(PACKS, f"{digest}.{sha}.tar.gz")


def held_packs(digest: str) -> dict[str, int]:
    """The packs of *digest* kept here: their sha256 (as named, unchecked) and size."""
    found: dict[str, int] = {}
    try:
        names = os.listdir(PACKS)
    except OSError:
        return found
    for name in names:
        parts = name.split(".")
        if len(parts) == 4 and parts[0] == digest and parts[2:] == ["tar", "gz"]:
            try:
                found[parts[1]] = os.stat(os.path.join(PACKS, name)).st_size
            except OSError:
                pass
    return found


def cache_problem() -> str | None:
    """Why this host's cache (``~/.cache/sshdeploy``) cannot be written, or None.

    A file where the directory should be, a directory of another user or
    read-only (a read-only mount: root too is refused): said at the probe,
    so that a start never goes on without the environment or the uploads.
    """
    try:
        os.makedirs(ROOT, exist_ok=True)
        for sub in (ENVS, BLOBS, UPLOADS, PACKS):
            if os.path.lexists(sub) and not os.path.isdir(sub):
                return f"{sub}: not a directory"
        test = os.path.join(ROOT, f".write-test-{_unique()}")
        with open(test, "w"):
            pass
        os.remove(test)
    except OSError as exc:
        return f"{exc.filename or ROOT}: {exc.strerror or exc}"
    return None


def free_space(path: str) -> int | None:
    """Bytes free for this user where *path* (or its nearest existing parent) lives."""
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path or "/")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def probe(op: dict[str, Any]) -> dict[str, Any]:
    try:
        from .agent.facts import describe
    except ImportError:  # on a host: the part sent before this program (envremote_bundle)
        from .facts import describe  # type: ignore[no-redef]

    out = describe(op.get("packages", ()))
    if op.get("env") or op.get("blobs"):
        problem = cache_problem()
        if problem is not None:
            out["cache_error"] = problem
            return out
        out["cache_id"] = cache_id()
    if op.get("env"):
        out["env_present"] = env_present(op["env"])
        out["packs"] = held_packs(op["env"]) if out["env_present"] else {}
    blobs = op.get("blobs") or ()
    out["blobs_missing"] = [b for b in blobs if not os.path.exists(os.path.join(BLOBS, b))]
    return out


def _safe_members(tar: tarfile.TarFile, into: str) -> Iterator[tarfile.TarInfo]:
    base = os.path.realpath(into)
    for member in tar:
        target = os.path.realpath(os.path.join(into, member.name))
        if not (target == base or target.startswith(base + os.sep)):
            raise ValueError(f"unsafe path in archive: {member.name!r}")
        if member.issym() or member.islnk() or member.isdev():
            raise ValueError(f"links and devices are not accepted: {member.name!r}")
        yield member


def _size(path: str) -> int:
    total = 0
    for top, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                pass
    return total


def prune(limit: int, keep: str) -> list[str]:
    """Remove the least recently used environments until they fit in *limit* bytes."""
    try:
        names = [n for n in os.listdir(ENVS) if not n.startswith(".")]
    except OSError:
        return []
    entries = []
    for name in names:
        path = os.path.join(ENVS, name)
        try:
            entries.append((os.stat(path).st_mtime, name, _size(path)))
        except OSError:
            pass
    total = sum(e[2] for e in entries)
    removed = []
    for _mtime, name, size in sorted(entries):
        if total <= limit:
            break
        if name == keep:
            continue
        shutil.rmtree(os.path.join(ENVS, name), ignore_errors=True)
        total -= size
        removed.append(name)
    _drop_orphan_packs()
    return removed


def _drop_orphan_packs() -> None:
    """Remove the packs whose environment is gone (they are kept only beside it)."""
    try:
        names = os.listdir(PACKS)
    except OSError:
        return
    for name in names:
        path = os.path.join(PACKS, name)
        if name.startswith(".tmp-"):  # another start's download: only if long abandoned
            try:
                stale = time.time() - os.stat(path).st_mtime > 3600
            except OSError:
                continue
        else:
            stale = not os.path.isdir(os.path.join(ENVS, name.split(".")[0]))
        if stale:
            try:
                os.remove(path)
            except OSError:
                pass


class _Tee:
    """A stream read through: what is read is hashed, counted and copied to *out*."""

    def __init__(self, source: Any, out: IO[bytes] | None) -> None:
        self.source, self.out = source, out
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.source.read(n)
        self.hash.update(data)
        self.count += len(data)
        if self.out is not None:
            self.out.write(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _keep_pack(tmp: str, final: str) -> None:
    """Keep a checked pack for the relay; best effort (a host sharing this home may have
    kept the same one, or pruned it, meanwhile): the environment is in place either way."""
    try:
        os.replace(tmp, final)
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass


class PackRefused(Exception):
    """A pack that does not hash to what the controller said: never unpacked into place."""


def _unpack_into_place(digest: str, source: Any) -> bool:
    """Unpack the tar stream *source* as environment *digest*; return whether this call put
    it in place (False: another start got there first)."""
    final = os.path.join(ENVS, digest)
    tmp = os.path.join(ENVS, f".tmp-{digest}-{_unique()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        with tarfile.open(fileobj=source, mode="r|*") as tar:
            for member in _safe_members(tar, tmp):
                tar.extract(member, tmp, **_FILTER)
        census = _census(tmp)
        with open(os.path.join(tmp, DONE), "w") as f:
            json.dump(census, f)
        try:
            os.rename(tmp, final)
            return True
        except OSError:
            # Another start (or another host on a shared home) got there first.
            if not os.path.exists(os.path.join(final, DONE)):
                raise
            return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _receive(source: Any, into: str, name: str, sha: str) -> int:
    """Write what is read from *source* to *into*/*name*, checked: what does not hash to
    *sha* raises :class:`PackRefused` and nothing of it stays (nor of a copy cut off, or
    a full disk). Returns its size."""
    os.makedirs(into, exist_ok=True)
    tmp = os.path.join(into, f".tmp-{name.split('.')[0]}-{_unique()}")
    try:
        with open(tmp, "wb") as out:
            tee = _Tee(source, out)
            tee.drain()
        if tee.hash.hexdigest() != sha:
            raise PackRefused(f"sha256 {tee.hash.hexdigest()[:16]}... of {tee.count} bytes, "
                              f"expected {sha[:16]}...")
        os.replace(tmp, os.path.join(into, name))
        return tee.count
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _receive_pack(digest: str, source: Any, sha: str) -> str:
    """Write the pack read from *source* to its place, checked (:func:`_receive`)."""
    final = pack_path(digest, sha)
    _receive(source, PACKS, os.path.basename(final), sha)
    return final


def unpack_env(op: dict[str, Any], stream: IO[bytes]) -> dict[str, Any]:
    """The pack from the controller on stdin, unpacked as it comes; or, with ``sha256``
    given (the relay), first kept and checked (so this host serves it to the others
    while it unpacks it), then unpacked from there."""
    digest = op["env"]
    os.makedirs(ENVS, exist_ok=True)
    unpacked = False
    if not env_present(digest):
        sha = op.get("sha256")
        if sha:
            try:
                path = _receive_pack(digest, stream, sha)
            except PackRefused as exc:
                raise ValueError(f"the pack from the controller was damaged in transit: "
                                 f"{exc}") from None
            with open(path, "rb") as f:
                unpacked = _unpack_into_place(digest, f)
        else:
            unpacked = _unpack_into_place(digest, stream)
    else:
        stream.read()
    pruned = prune(int(op.get("limit", 1 << 62)), digest)
    return {"unpacked": unpacked, "pruned": pruned}


def fetch_env(op: dict[str, Any]) -> dict[str, Any]:
    """Fetch the pack from a host that holds it (``urls``), check its sha256, unpack it.

    Each URL (one holder, by its addresses) is tried in turn. The download
    goes to a temporary file, hashed as it comes; only a pack of the expected
    sha256 is unpacked (a corrupt or partial copy is never opened). A refusal
    is an answer, not an error (``refused`` and ``kind``: ``unreachable``,
    ``corrupt``): the controller fetches again from another holder or sends
    the pack itself.
    """
    import urllib.request

    digest, sha = op["env"], op["sha256"]
    os.makedirs(ENVS, exist_ok=True)
    if env_present(digest) and sha in held_packs(digest):
        return {"unpacked": False, "received": 0}
    # No proxy: the holder is a host of this cluster (http_proxy would send it elsewhere).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    why = "no address to fetch from"
    for url in op["urls"]:
        where = url.split("/")[2]
        try:  # reachable at all? (a short connect, so that no route costs seconds, not minutes)
            _connect(url, op)
            response = opener.open(url, timeout=float(op.get("timeout", 120)))
        except Exception as exc:  # refused, no route, timed out: try the next address
            why = f"{where}: {type(exc).__name__}: {exc}"
            continue
        with response:
            try:
                path = _receive_pack(digest, response, sha)
            except PackRefused as exc:
                short = getattr(response, "length", None)  # what Content-Length still owed
                said = f"partial pack, {short} bytes missing" if short else str(exc)
                return {"refused": f"{where}: {said}", "kind": "corrupt", "received": 0}
            except Exception as exc:  # cut off half-way: a partial copy
                return {"refused": f"{where}: partial pack ({type(exc).__name__}: {exc})",
                        "kind": "corrupt", "received": 0}
        received = os.stat(path).st_size
        with open(path, "rb") as f:
            unpacked = _unpack_into_place(digest, f) if not env_present(digest) else False
        pruned = prune(int(op.get("limit", 1 << 62)), digest)
        return {"unpacked": unpacked, "received": received, "pruned": pruned}
    return {"refused": why, "kind": "unreachable", "received": 0}


def _connect(url: str, op: dict[str, Any]) -> None:
    """A short connect to *url*'s holder (``connect_timeout``): OSError if it cannot be."""
    import socket
    import urllib.parse

    parsed = urllib.parse.urlsplit(url)
    socket.create_connection((parsed.hostname, parsed.port),
                             timeout=float(op.get("connect_timeout", 5))).close()


def _addresses() -> list[str]:
    """This host's addresses as its own name resolves (loopback aside), best effort."""
    import socket

    found: list[str] = []
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, 0, socket.SOCK_STREAM)
    except OSError:
        return found
    for info in infos:
        addr = str(info[4][0])
        if addr not in found and not addr.startswith("127.") and addr != "::1":
            found.append(addr)
    return found


def serve_pack(op: dict[str, Any], stream: IO[bytes]) -> dict[str, Any]:
    """Serve the pack to the other hosts until stdin ends (or ``ttl`` seconds pass).

    A stdlib HTTP server on a free port of every address; only ``GET
    /<token>`` (the token comes on stdin, never on a command line) is
    answered. Says ``{"port": ..., "addresses": [...]}`` on its first line.
    A ``{"drop": true}`` line before the end removes the pack (a fetcher
    found it damaged). With ``blobs`` (the upload relay) it serves those
    upload contents instead, ``GET /<token>/<sha256>`` each, and a drop
    removes those of them that do not hash to their name.
    """
    import http.server
    import socket

    blobs = set(op.get("blobs") or ())
    path = "" if blobs else pack_path(op["env"], op["sha256"])
    token = str(op["token"])
    served = [0, 0]
    until = time.monotonic() + float(op.get("wait", 0))

    def asked(url: str) -> str | None:
        if not blobs:
            return path if url == "/" + token else None
        head, _, name = url.rpartition("/")
        return os.path.join(BLOBS, name) if head == "/" + token and name in blobs else None

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = asked(self.path)
            if path is None:
                self.send_error(403)
                return
            # A host still receiving the pack from the controller serves it once it is whole.
            while not os.path.exists(path) and time.monotonic() < until:
                time.sleep(0.05)
            try:
                f = open(path, "rb")
            except OSError:
                self.send_error(404)
                return
            with f:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
                self.end_headers()
                self.wfile.flush()
                sent = self.connection.sendfile(f)
            served[0] += 1
            served[1] += sent

        def log_message(self, *args: Any) -> None:
            return None

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if socket.has_dualstack_ipv6() else socket.AF_INET

        def server_bind(self) -> None:
            if self.address_family == socket.AF_INET6:
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    server = Server(("::" if Server.address_family == socket.AF_INET6 else "", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sys.stdout.write(json.dumps({"port": server.server_address[1],
                                 "addresses": _addresses()}) + "\n")
    sys.stdout.flush()
    told: list[bytes] = []
    ended = threading.Event()

    def listen() -> None:  # the controller's end (EOF), or a lost connection
        told.append(stream.read())
        ended.set()

    threading.Thread(target=listen, daemon=True).start()
    ended.wait(float(op.get("ttl", 3600)))
    server.shutdown()
    server.server_close()
    dropped = b'"drop"' in b"".join(told)
    for bad in ([path] if path else _bad_blobs(blobs)) if dropped else ():
        try:
            os.remove(bad)
        except OSError:
            pass
    return {"served": served[0], "bytes": served[1], "dropped": dropped}


def _link(blob: str, target: str) -> None:
    tmp = f"{target}.tmp-{_unique()}"
    try:
        os.link(blob, tmp)
    except OSError:
        shutil.copyfile(blob, tmp)
    os.replace(tmp, target)


def _symlink(base: str, rel: str, to: str) -> None:
    """Make *rel* under *base* a symbolic link to *to*, which must stay inside *base*."""
    path = os.path.join(base, rel)
    inside = os.path.realpath(base) + os.sep
    if not (os.path.realpath(os.path.dirname(path)) + os.sep).startswith(inside) or not (
            os.path.normpath(os.path.join(os.path.realpath(os.path.dirname(path)), to))
            + os.sep).startswith(inside):
        raise ValueError(f"unsafe upload link: {rel!r} -> {to!r}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)   # a directory in the last upload, a link in this one
    tmp = f"{path}.tmp-{_unique()}"
    os.symlink(to, tmp)
    os.replace(tmp, path)


def _receive_blob(digest: str, source: Any) -> int:
    """Store the content read from *source* as blob *digest*, checked (:func:`_receive`)."""
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"unexpected entry in the upload: {digest!r}")
    return _receive(source, BLOBS, digest, digest)


def _bad_blobs(names: Any) -> list[str]:
    """The blobs of *names* held here whose content does not hash to their name."""
    def sha(path: str) -> str | None:
        try:
            with open(path, "rb") as f:
                tee = _Tee(f, None)
                tee.drain()
                return tee.hash.hexdigest()
        except OSError:
            return None

    paths = {n: os.path.join(BLOBS, n) for n in names}
    return [p for n, p in paths.items() if sha(p) not in (n, None)]


def place_uploads(op: dict[str, Any], stream: IO[bytes]) -> dict[str, Any]:
    os.makedirs(BLOBS, exist_ok=True)
    stored = 0
    send = bool(op.get("payload"))
    if op.get("ask"):
        # One round trip: say which contents are missing, then read just those.
        missing = sorted({h for h in op["files"].values()
                          if not os.path.exists(os.path.join(BLOBS, h))})
        sys.stdout.write(json.dumps({"missing": missing}) + "\n")
        sys.stdout.flush()
        send = bool(missing)
    if send:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if not member.isfile() or "/" in member.name or member.name.startswith("."):
                    raise ValueError(f"unexpected entry in the upload: {member.name!r}")
                try:
                    _receive_blob(member.name, tar.extractfile(member))
                except PackRefused:
                    raise ValueError(f"upload damaged in transit: {member.name}") from None
                stored += 1
    return {"stored": stored, "removed": _lay_out(op)}


def fetch_uploads(op: dict[str, Any]) -> dict[str, Any]:
    """Fetch the contents this host lacks (``missing``) from a holder (``urls``: its
    addresses, the first that connects; ``/<sha256>`` added per content), each checked
    against its sha256 before it enters the blob store; then lay out the tree as ``upload``
    does. A refusal is an answer, as for :func:`fetch_env`; what was checked stays."""
    import urllib.request

    os.makedirs(BLOBS, exist_ok=True)
    missing = [b for b in op["missing"] if not os.path.exists(os.path.join(BLOBS, b))]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    base, why = None, "no address to fetch from"
    for url in op["urls"] if missing else ():
        try:
            _connect(url, op)
        except OSError as exc:
            why = f"{url.split('/')[2]}: {type(exc).__name__}: {exc}"
            continue
        base = url
        break
    if missing and base is None:
        return {"refused": why, "kind": "unreachable", "received": 0}
    received = 0
    for digest in missing:
        where = f"{str(base).split('/')[2]}: {digest[:12]}"
        got = None
        try:
            with opener.open(f"{base}/{digest}", timeout=float(op.get("timeout", 120))) as got:
                received += _receive_blob(digest, got)
        except PackRefused as exc:
            short = getattr(got, "length", None)  # what Content-Length still owed
            said = f"partial, {short} bytes missing" if short else str(exc)
            return {"refused": f"{where}: {said}", "kind": "corrupt", "received": received}
        except Exception as exc:  # not served (404), cut off half-way: a partial copy
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise  # this host's disk is full: said as such
            return {"refused": f"{where}: partial ({type(exc).__name__}: {exc})",
                    "kind": "corrupt", "received": received}
    return {"stored": len(missing), "received": received, "removed": _lay_out(op)}


def _lay_out(op: dict[str, Any]) -> int:
    """Lay out the cluster's upload tree (``dir``) from the blobs: its ``files`` and
    ``links``, and nothing else (what an earlier upload had is removed: the count)."""
    base = os.path.join(UPLOADS, op["dir"])
    os.makedirs(base, exist_ok=True)
    files = op["files"]
    for rel, digest in files.items():
        target = os.path.join(base, rel)
        if not os.path.realpath(target).startswith(os.path.realpath(base) + os.sep):
            raise ValueError(f"unsafe upload path: {rel!r}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        _link(os.path.join(BLOBS, digest), target)
    links = op.get("links") or {}
    for rel, to in links.items():
        _symlink(base, rel, to)
    removed = 0
    for top, dirs, names in os.walk(base):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            path = os.path.join(top, name)
            rel = os.path.relpath(path, base)
            if rel not in files and rel not in links and ".tmp-" not in name:
                os.remove(path)
                removed += 1
    return removed


def remove_uploads(op: dict[str, Any]) -> dict[str, Any]:
    shutil.rmtree(os.path.join(UPLOADS, op["dir"]), ignore_errors=True)
    return {"removed": True}


def clean(op: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, path in (("envs", ENVS), ("blobs", BLOBS)):
        if op.get(key):
            out[key] = _size(path) if os.path.isdir(path) else 0
            shutil.rmtree(path, ignore_errors=True)
    if op.get("envs"):  # the packs are kept only beside their environments
        out["envs"] += _size(PACKS) if os.path.isdir(PACKS) else 0
        shutil.rmtree(PACKS, ignore_errors=True)
    return out


def main() -> None:
    stream = sys.stdin.buffer
    op = json.loads(stream.readline())
    kind = op.get("op")
    started = time.monotonic()
    try:
        if kind == "probe":
            out = probe(op)
        elif kind == "env":
            out = unpack_env(op, stream)
        elif kind == "fetch":
            out = fetch_env(op)
        elif kind == "serve":
            out = serve_pack(op, stream)
        elif kind == "upload":
            out = place_uploads(op, stream)
        elif kind == "fetch-uploads":
            out = fetch_uploads(op)
        elif kind == "remove-uploads":
            out = remove_uploads(op)
        elif kind == "clean":
            out = clean(op)
        else:
            raise ValueError(f"unknown operation {kind!r}")
    except Exception as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"}
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            out["no_space"] = {"dir": ROOT, "free": free_space(ROOT)}
    out["seconds"] = round(time.monotonic() - started, 4)
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__" or __name__ == "sshdeploy-envremote":
    main()
