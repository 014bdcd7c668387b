"""The user's code to ship (``upload=[...]``): which files, their hashes, what to send.

A leaf: reads local files only. A directory ``src/mypkg`` is shipped as
``mypkg/...`` (importable as ``mypkg`` on the hosts), a file ``helpers.py``
as ``helpers.py``. In a git work tree only the files git would track are
taken (``git ls-files --cached --others --exclude-standard``: ``.gitignore``
is honoured); elsewhere everything but ``__pycache__``, ``.git`` and
``*.pyc``.

Symbolic links follow git's and rsync's safe default: a link whose target
stays inside the uploaded directory is sent as a link (the same relative
link on every host, also when it dangles); one that leads outside it is
refused (:class:`~sshdeploy.errors.UploadError` naming the link and its
target), never copied (a link to a secret would send the secret) nor dropped.

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
from dataclasses import dataclass, field
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
    links : dict
        Name on the host of each symbolic link to its target, relative to the
        link's directory and inside the uploaded tree.
    """

    files: dict[str, str]
    sources: dict[str, Path]
    links: dict[str, str] = field(default_factory=dict)

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
        # A link to a directory is listed, not entered (git lists it so too).
        found += [Path(top) / d for d in dirs if os.path.islink(os.path.join(top, d))]
        found += [Path(top) / n for n in sorted(names) if not n.endswith((".pyc", ".pyo"))]
    return found


def _link_target(link: Path, root: Path, given: str) -> str:
    """The target of *link*, relative to its directory, when it stays inside *root*.

    Raises
    ------
    UploadError
        When the link (or a chain of links from it) leads outside *root*.
    """
    written = os.readlink(link)
    final = Path(os.path.realpath(link))   # the whole chain, as far as it exists
    if final != root and root not in final.parents:
        missing = "" if final.exists() else ", which does not exist"
        raise UploadError(
            given, f"the symbolic link {link} points outside it, to {written}"
                   f"{'' if str(final) == written else f' ({final})'}{missing}",
            remedy="A link is uploaded as a link only when its target is inside the uploaded "
                   "directory: copy the target into it, upload the target itself (one more "
                   "--upload / upload= path), or remove the link.")
    return os.path.relpath(final, os.path.realpath(link.parent))


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
        A path that does not exist, two paths that give the same name, or a
        symbolic link inside a directory that points outside it.

    Examples
    --------
    >>> m = collect([__file__])
    >>> list(m.files) == ["uploads.py"] and len(m.files["uploads.py"]) == 64
    True
    """
    base = base or Path.cwd()
    sources: dict[str, Path] = {}
    links: dict[str, str] = {}
    for given in paths:
        path = (base / given).resolve()   # a path given by name is followed: it was asked for
        if not path.exists():
            raise UploadError(str(given), "no such file or directory")
        if path.is_file():
            entries = [(path.name, path)]
        else:
            listed = _git_files(path)
            entries = []
            for p in (listed if listed is not None else _walk(path)):
                name = f"{path.name}/{p.relative_to(path).as_posix()}"
                if p.is_symlink():
                    links[name] = _link_target(p, path, str(given))
                elif p.is_file():
                    entries.append((name, p))
        for name, p in entries:
            if name in sources and sources[name] != p:
                raise UploadError(str(given), f"{name!r} is also given by {sources[name]}",
                                  remedy="Upload each name once.")
            sources[name] = p
    return Manifest(files={n: _sha256(p) for n, p in sorted(sources.items())},
                    sources=dict(sorted(sources.items())), links=dict(sorted(links.items())))


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
