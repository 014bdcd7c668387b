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
- ``blobs/<sha256>``: every uploaded file's content, once.
- ``uploads/<cluster>/``: one cluster's uploaded tree, linked from the blobs,
  removed with the cluster.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tarfile

ROOT = os.path.join(os.path.expanduser("~"), ".cache", "sshdeploy")
ENVS = os.path.join(ROOT, "envs")
BLOBS = os.path.join(ROOT, "blobs")
UPLOADS = os.path.join(ROOT, "uploads")
#: tarfile and hashlib are imported where used: a probe (``dask-ssh --check``, the
#: stage's first step) needs neither, and is one remote interpreter start per host.
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


def cache_problem() -> str | None:
    """Why this host's cache (``~/.cache/sshdeploy``) cannot be written, or None.

    A file where the directory should be, a directory of another user or
    read-only (a read-only mount: root too is refused): said at the probe,
    so that a start never goes on without the environment or the uploads.
    """
    try:
        os.makedirs(ROOT, exist_ok=True)
        for sub in (ENVS, BLOBS, UPLOADS):
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
    return removed


def unpack_env(op: dict[str, Any], stream: IO[bytes]) -> dict[str, Any]:
    digest = op["env"]
    final = os.path.join(ENVS, digest)
    os.makedirs(ENVS, exist_ok=True)
    unpacked = False
    if not env_present(digest):
        tmp = os.path.join(ENVS, f".tmp-{digest}-{_unique()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            import tarfile

            # Python 3.12+ warns unless extraction filters are named (ours are checked anyway).
            named = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in _safe_members(tar, tmp):
                    tar.extract(member, tmp, **named)  # type: ignore[arg-type]
            census = _census(tmp)
            with open(os.path.join(tmp, DONE), "w") as f:
                json.dump(census, f)
            try:
                os.rename(tmp, final)
                unpacked = True
            except OSError:
                # Another start (or another host on a shared home) got there first.
                if not os.path.exists(os.path.join(final, DONE)):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        stream.read()
    pruned = prune(int(op.get("limit", 1 << 62)), digest)
    return {"unpacked": unpacked, "pruned": pruned}


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
        import hashlib
        import tarfile

        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if not member.isfile() or "/" in member.name or member.name.startswith("."):
                    raise ValueError(f"unexpected entry in the upload: {member.name!r}")
                source = tar.extractfile(member)
                data = source.read() if source is not None else b""
                if hashlib.sha256(data).hexdigest() != member.name:
                    raise ValueError(f"upload damaged in transit: {member.name}")
                tmp = os.path.join(BLOBS, f".tmp-{member.name}-{_unique()}")
                try:
                    with open(tmp, "wb") as f:
                        f.write(data)
                    os.replace(tmp, os.path.join(BLOBS, member.name))
                except OSError:  # a full disk: leave no part of it
                    if os.path.exists(tmp):
                        os.remove(tmp)
                    raise
                stored += 1
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
    return {"stored": stored, "removed": removed}


def remove_uploads(op: dict[str, Any]) -> dict[str, Any]:
    shutil.rmtree(os.path.join(UPLOADS, op["dir"]), ignore_errors=True)
    return {"removed": True}


def clean(op: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, path in (("envs", ENVS), ("blobs", BLOBS)):
        if op.get(key):
            out[key] = _size(path) if os.path.isdir(path) else 0
            shutil.rmtree(path, ignore_errors=True)
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
        elif kind == "upload":
            out = place_uploads(op, stream)
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
