"""This machine's environment as one content-addressed pack, for ``environment="sync"``.

What is packed: the installed files of the distributions a cluster needs,
read from their ``RECORD`` files (what pip installed, nothing else): the
closure of ``distributed``, the gated packages installed here
(:data:`sshdeploy.env.gate.GATED`) and those the user names, through their
requirements. Not the whole environment: test tools and editors would
multiply the size (a development environment is easily ten times larger).

The hash is a content address computed *without reading the files*: each
``RECORD`` already lists the sha256 of every file it installed, so hashing
the records (with the interpreter's implementation, major.minor and
platform) identifies the content. An unchanged environment gives the same
hash at every start, in milliseconds; hosts that already hold it are sent
nothing. The tar is built once per hash and kept in
``~/.cache/sshdeploy/packs/`` here.

On the host the pack is unpacked into ``~/.cache/sshdeploy/envs/<hash>/``
(:mod:`sshdeploy.remote.envremote`) and put first on ``PYTHONPATH`` of the host's own
Python of the same major.minor, by a setup line (:func:`pythonpath_setup`).
Not packed: console scripts outside site-packages, ``__pycache__`` (the host
compiles its own), editable installs (their code is not in the RECORD) and
``.pth`` hooks (PYTHONPATH entries do not run them).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from .gate import gated_packages

#: Remote directory of the environments, relative to the remote home ($HOME).
REMOTE_ENVS = ".cache/sshdeploy/envs"
#: Local cache of the packs.
LOCAL_PACKS = Path(os.path.expanduser("~")) / ".cache" / "sshdeploy" / "packs"


@dataclass(frozen=True)
class EnvPack:
    """The environment to sync: which distributions, their files, and its hash.

    Attributes
    ----------
    digest : str
        The content hash (sha256 hex, 24 characters shown in paths).
    dists : dict
        Distribution name to version.
    files : list of (Path, str)
        Each installed file and its name in the pack (relative to site-packages).
    size : int
        Bytes of the files (before compression).
    skipped : list of str
        Distributions wanted but not packable (editable installs).
    """

    digest: str
    dists: dict[str, str]
    files: list[tuple[Path, str]] = field(repr=False)
    size: int
    skipped: list[str] = field(default_factory=list)

    @property
    def remote_dir(self) -> str:
        """Where the environment lives on a host, relative to its home."""
        return f"{REMOTE_ENVS}/{self.digest}"


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _closure(roots: Iterable[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions *roots* need, through their (marker-free) requirements."""
    from packaging.requirements import InvalidRequirement, Requirement

    installed: dict[str, metadata.Distribution] = {}
    for d in metadata.distributions():
        installed.setdefault(_norm(d.metadata["Name"] or ""), d)
    seen: dict[str, metadata.Distribution] = {}
    todo = [_norm(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen or name not in installed:
            continue
        dist = seen[name] = installed[name]
        for text in dist.requires or ():
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            todo.append(_norm(req.name))
    return seen


def _packable(path: str) -> bool:
    parts = path.split("/")
    return ".." not in parts and "__pycache__" not in parts and not path.endswith(".pth")


@functools.lru_cache(maxsize=8)
def local_pack(packages: tuple[str, ...] = ()) -> EnvPack:
    """Describe (without reading the files) what ``environment="sync"`` sends.

    Parameters
    ----------
    packages : tuple of str
        Distributions the user names, on top of distributed and the gated ones.

    Examples
    --------
    >>> pack = local_pack()
    >>> "distributed" in pack.dists and len(pack.digest) == 24
    True
    """
    roots = ["distributed", *gated_packages(packages)]
    dists = _closure(roots)
    h = hashlib.sha256()
    h.update(f"{sys.implementation.name} {sys.version_info[0]}.{sys.version_info[1]} "
             f"{platform.system()} {platform.machine()}\n".encode())
    files: list[tuple[Path, str]] = []
    skipped: list[str] = []
    size = 0
    for name in sorted(dists):
        dist = dists[name]
        record = dist.read_text("RECORD")
        entries = dist.files or []
        if record is None or not any(str(f).endswith(".py") for f in entries):
            skipped.append(name)  # editable or metadata-only: nothing to carry
            continue
        h.update(f"{name} {dist.version}\n".encode() + record.encode())
        for f in entries:
            rel = str(f).replace(os.sep, "/")
            if not _packable(rel):
                continue
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                files.append((path, rel))
                size += f.size or path.stat().st_size
    return EnvPack(
        digest=h.hexdigest()[:24],
        dists={n: dists[n].version for n in sorted(dists) if n not in skipped},
        files=files, size=size, skipped=skipped,
    )


def build_tar(pack: EnvPack, cache: Path | None = None) -> Path:
    """Return the gzipped tar of *pack*, built once per hash (temp file + rename).

    The files are added in a fixed order with fixed owners, so the content
    only depends on the files.
    """
    cache = cache or LOCAL_PACKS
    out = cache / f"{pack.digest}.tar.gz"
    if out.exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{pack.digest}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, \
                tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1) as tar:
            for path, rel in sorted(pack.files, key=lambda x: x[1]):
                info = tar.gettarinfo(str(path), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(path, "rb") as f:
                    tar.addfile(info, f)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def pack_sha256(tar: Path) -> str:
    """The sha256 of a built pack: what a host checks a relayed copy against.

    Kept beside the pack (``<hash>.tar.gz.sha256``), so it is read once per build.
    """
    side = tar.with_name(tar.name + ".sha256")
    stat = tar.stat()
    stamp = f"{stat.st_size} {stat.st_mtime_ns}"
    try:
        said, sha = side.read_text().split("\n")[:2]
        if said == stamp and len(sha) == 64:
            return sha
    except (OSError, ValueError):
        pass
    h = hashlib.sha256()
    with open(tar, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    fd, tmp = tempfile.mkstemp(dir=tar.parent, prefix=".sha-", suffix=".tmp")
    with os.fdopen(fd, "w") as out:
        out.write(f"{stamp}\n{h.hexdigest()}\n")
    os.replace(tmp, side)
    return h.hexdigest()


def pythonpath_setup(dirs: Sequence[str]) -> str:
    """Return the setup line that puts remote *dirs* (relative to $HOME) first on PYTHONPATH.

    Examples
    --------
    >>> pythonpath_setup([".cache/sshdeploy/envs/abc"])
    'export PYTHONPATH="$HOME/.cache/sshdeploy/envs/abc${PYTHONPATH:+:$PYTHONPATH}"'
    """
    joined = ":".join(f"$HOME/{d}" for d in dirs)
    return f'export PYTHONPATH="{joined}${{PYTHONPATH:+:$PYTHONPATH}}"'
