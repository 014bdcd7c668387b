"""The user's code to ship (``upload=[...]``): which files, their hashes, what to send.

A leaf: reads local files only. A directory ``src/mypkg`` is shipped as
``mypkg/...`` (importable as ``mypkg`` on the hosts), a file ``helpers.py``
as ``helpers.py``. In a git work tree only the files git would track are
taken (``git ls-files --cached --others --exclude-standard``: ``.gitignore``
is honoured); elsewhere everything but ``__pycache__``, ``.git`` and
``*.pyc``.

The manifest (relative name to sha256) is the unit of transfer: each host
keeps every content it received once (``~/.cache/sshdeploy/blobs``), so a
start or :meth:`SSHCluster.sync_uploads` sends only contents the host does
not have, i.e. the files that changed.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sshdeploy.errors import UploadError

#: Remote directory of the uploaded trees, one per cluster, relative to $HOME.
REMOTE_UPLOADS = ".cache/sshdeploy/uploads"
_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache"}


@dataclass(frozen=True)
class Manifest:
    """What to upload: relative name to content hash, and where each comes from.

    Attributes
    ----------
    files : dict
        Name on the host (``mypkg/core.py``) to sha256 hex.
    sources : dict
        The same names to local paths.
    """

    files: dict[str, str]
    sources: dict[str, Path]

    @property
    def size(self) -> int:
        """Total bytes of the files."""
        return sum(p.stat().st_size for p in self.sources.values())

    def largest(self, n: int = 5) -> list[tuple[str, int]]:
        """Return the *n* largest entries (name, bytes), largest first."""
        sizes = [(name, p.stat().st_size) for name, p in self.sources.items()]
        return sorted(sizes, key=lambda x: -x[1])[:n]

    def missing(self, present: Iterable[str]) -> list[str]:
        """Return the hashes to send to a host that lacks *present*'s complement."""
        have = set(present)
        return sorted({h for h in self.files.values() if h not in have})


def _git_files(directory: Path) -> list[Path] | None:
    """Files git would track under *directory*, or None outside a work tree (or no git)."""
    if shutil.which("git") is None:
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(directory), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard", "--", "."],
            capture_output=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return [directory / name for name in out.stdout.decode().split("\0") if name]


def _walk(directory: Path) -> list[Path]:
    found = []
    for top, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        found += [Path(top) / n for n in sorted(names) if not n.endswith((".pyc", ".pyo"))]
    return found


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def collect(paths: Sequence[str | os.PathLike[str]], base: Path | None = None) -> Manifest:
    """Return the manifest of *paths* (files or directories).

    Raises
    ------
    UploadError
        A path that does not exist, or two paths that give the same name.

    Examples
    --------
    >>> m = collect([__file__])
    >>> list(m.files) == ["uploads.py"] and len(m.files["uploads.py"]) == 64
    True
    """
    base = base or Path.cwd()
    sources: dict[str, Path] = {}
    for given in paths:
        path = (base / given).resolve()
        if not path.exists():
            raise UploadError(str(given), "no such file or directory")
        if path.is_file():
            entries = [(path.name, path)]
        else:
            listed = _git_files(path)
            files = [p for p in (listed if listed is not None else _walk(path)) if p.is_file()]
            entries = [(f"{path.name}/{p.relative_to(path).as_posix()}", p) for p in files]
        for name, p in entries:
            if name in sources and sources[name] != p:
                raise UploadError(str(given), f"{name!r} is also given by {sources[name]}",
                                  remedy="Upload each name once.")
            sources[name] = p
    return Manifest(files={n: _sha256(p) for n, p in sorted(sources.items())},
                    sources=dict(sorted(sources.items())))


def blob_tar(manifest: Manifest, digests: Iterable[str]) -> bytes:
    """Return a tar of the contents *digests*, each named by its hash."""
    by_hash: Mapping[str, Path] = {h: manifest.sources[n] for n, h in manifest.files.items()}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for digest in sorted(set(digests)):
            data = by_hash[digest].read_bytes()
            info = tarfile.TarInfo(digest)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
