"""The local state of named clusters: one private JSON file per name.

``${XDG_STATE_HOME:-~/.local/state}/sshdeploy/named/NAME.json`` (0600, in a
0700 directory), written atomically (a temporary file in the same directory,
then ``os.replace``), so a reader sees the old file or the new one, never
half of one. A file is a *cache*: what it says is probed before it is shown
(:mod:`sshdeploy.named.status`); the authoritative copy of a cluster's record
is ``cluster.json`` on its scheduler host, read with ``--host``. TLS client
credentials of a cluster live beside it, in ``NAME.tls/`` (0700, files 0600).

Permissions are kept, like OpenSSH keeps a key's: the directory and each
record found more open than 0700 / 0600 are made private again, with a
warning that says what was found; TLS credentials found readable by others
are refused (:class:`~sshdeploy.errors.ClusterStateError` naming the file,
its mode and the ``chmod`` that fixes it), never used. A state directory
owned by another user is refused.

One ``up`` of a name at a time: :func:`locked` holds an exclusive ``flock`` on
``NAME.lock`` while a cluster of that name starts or stops, and removes the
file when it lets go (a lock file is only there while someone holds it).

A file that cannot be read (truncated, not UTF-8, not JSON) is one problem of
that file, never of the others: :meth:`StateStore.scan` returns the readable
records and a :class:`~sshdeploy.errors.ClusterStateError` per unreadable one,
so ``dask-ssh list`` and ``clean`` go on working beside it.

No network, no distributed: cheap to unit-test.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sshdeploy.errors import ClusterStateError
from sshdeploy.named.policy import check_name
from sshdeploy.remote.agent.keep import state_home

#: Bumped when the record's fields change incompatibly.
FORMAT = 1

logger = logging.getLogger(__name__)


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def make_private(path: Path, mode: int) -> None:
    """Give *path* (a state file or directory) *mode* if it is more open; warn that it was.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); os.chmod(d, 0o755)
    >>> make_private(d, 0o700); oct(stat.S_IMODE(d.stat().st_mode))
    '0o700'
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_IMODE(st.st_mode) & 0o077 and not stat.S_ISLNK(st.st_mode):
        os.chmod(path, mode)
        logger.warning("%s was %s (others could read it); sshdeploy made it %04o, as its "
                       "state files must be private", path, _mode(st), mode)


def check_credential(path: Path) -> None:
    """Refuse a TLS credential file (or its directory) that others can read, as OpenSSH does.

    Raises
    ------
    ClusterStateError
        Naming the path, its mode and the ``chmod`` that fixes it.
    """
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077:
        want = "700" if stat.S_ISDIR(st.st_mode) else "600"
        raise ClusterStateError(
            str(path), f"holds TLS credentials and is {_mode(st)}: others can read them, so "
                       "sshdeploy will not use them (as OpenSSH refuses such a private key)",
            remedy=f"Run `chmod {want} {path}` (check who read it meanwhile), then try again.")


def state_root() -> Path:
    """Return the directory of the local state files (not created)."""
    return Path(state_home()) / "sshdeploy" / "named"


@dataclass
class ClusterRecord:
    """What is needed to find, reattach to and operate a named cluster.

    Attributes
    ----------
    name : str
    scheduler_host : str
        The scheduler's host as written (``user@host:port``).
    scheduler_address : str
        The scheduler's own address (on its network; reached through SSH if need be).
    dashboard_port : int or None
    spec : dict
        The JSON form of the cluster's arguments (hosts, options...), for
        ``from_name``, ``scale`` and the idempotent ``up``.
    created : float
        When it was started (``time.time()``).
    policy : dict
        ``idle_timeout``, ``max_lifetime``, ``death_timeout`` (seconds or None).
    tls : dict
        The client's credentials as PEM text (``ca``, ``cert``, ``key``) for a
        TLS cluster; kept only in ``NAME.tls/`` locally and in the scheduler
        host's private copy.
    left_out : list of str
        Hosts (``user@host:port``) left out at the start (``min_workers``):
        nothing of the cluster was started there.
    """

    name: str
    scheduler_host: str
    scheduler_address: str
    dashboard_port: int | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    policy: dict[str, Any] = field(default_factory=dict)
    tls: dict[str, str] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, path: str) -> ClusterRecord:
        """Build a record from parsed JSON; anything else is a ClusterStateError naming *path*."""
        if not isinstance(data, dict):
            raise ClusterStateError(path, "is not a JSON object")
        missing = [k for k in ("name", "scheduler_host", "scheduler_address") if k not in data]
        if missing:
            raise ClusterStateError(path, f"has no {', '.join(missing)}")
        if data.get("format", FORMAT) != FORMAT:
            raise ClusterStateError(path, f"was written in format {data.get('format')!r}, this "
                                    f"sshdeploy reads format {FORMAT}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError as exc:
            raise ClusterStateError(path, f"cannot be read ({exc})") from None


class StateStore:
    """The local state files: save, load, list, remove (atomic, private).

    Parameters
    ----------
    root : Path, optional
        The directory (default :func:`state_root`).

    Examples
    --------
    >>> import tempfile
    >>> store = StateStore(Path(tempfile.mkdtemp()))
    >>> store.save(ClusterRecord("demo", "root@node1:22", "tcp://10.0.0.1:8786"))
    >>> [r.name for r in store.records()], store.load("demo").scheduler_address
    (['demo'], 'tcp://10.0.0.1:8786')
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else state_root()

    def path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}.json"

    def tls_dir(self, name: str) -> Path:
        return self.root / f"{check_name(name)}.tls"

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.root.stat().st_uid != os.getuid():
                raise ClusterStateError(
                    str(self.root), "belongs to another user (sshdeploy keeps its named "
                    "clusters, and their TLS credentials, there)",
                    remedy="Set XDG_STATE_HOME to a directory of your own.")
            make_private(self.root, 0o700)
        except FileExistsError:
            raise ClusterStateError(
                str(self.root), "is not a directory (sshdeploy keeps its named clusters there)",
                remedy="Move that file away, or set XDG_STATE_HOME to another directory."
            ) from None
        except OSError as exc:
            raise ClusterStateError(
                str(self.root), f"cannot be made a private directory ({exc.strerror})",
                remedy="Fix its permissions, or set XDG_STATE_HOME to a directory you own."
            ) from None

    def save(self, record: ClusterRecord) -> None:
        """Write *record* atomically; its TLS credentials go to files of their own."""
        self._ensure_root()
        data = record.to_json()
        tls = data.pop("tls", {}) or {}
        if tls:
            data["tls"] = self._save_tls(record.name, tls)
        write_private_json(self.path(record.name), data)

    def _save_tls(self, name: str, tls: Mapping[str, str]) -> dict[str, str]:
        directory = self.tls_dir(name)
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)   # rewritten whole below: made private without a word
        paths = {}
        for key, pem in tls.items():
            path = directory / f"{key}.pem"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)     # an old file keeps its mode through O_CREAT
            with os.fdopen(fd, "w") as f:
                f.write(pem)
            paths[key] = str(path)
        return paths

    def load(self, name: str) -> ClusterRecord | None:
        """Return the record of *name*, None if there is none.

        Raises
        ------
        ClusterStateError
            For a file that exists but cannot be read or parsed.
        """
        path = self.path(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ClusterStateError(str(path), f"cannot be read ({exc.strerror})") from None
        try:
            make_private(self.root, 0o700)
            make_private(path, 0o600)
        except OSError as exc:
            raise ClusterStateError(str(path), f"is not private and cannot be made so "
                                    f"({exc.strerror})",
                                    remedy="Fix its permissions (chmod 600, its directory "
                                    "chmod 700), or set XDG_STATE_HOME to a directory you "
                                    "own.") from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ClusterStateError(str(path), "is not UTF-8 text (damaged)") from None
        except ValueError as exc:
            reason = "is empty" if not raw.strip() else f"is not valid JSON ({exc})"
            raise ClusterStateError(str(path), reason) from None
        record = ClusterRecord.from_json(data, str(path))
        if record.name != name:
            raise ClusterStateError(str(path), f"names another cluster ({record.name!r})")
        return record

    def tls_pems(self, record: ClusterRecord) -> dict[str, str]:
        """Return a record's TLS credentials as PEM text (read from their files)."""
        out = {}
        for key, where in (record.tls or {}).items():
            try:
                if os.path.isabs(where):
                    check_credential(Path(where).parent)
                    check_credential(Path(where))
                out[key] = Path(where).read_text() if os.path.isabs(where) else where
            except OSError as exc:
                raise ClusterStateError(where, f"cannot be read ({exc.strerror})",
                                        remedy="Reattach with SSHCluster.from_name(name, "
                                        "host=HEAD), which reads them from the scheduler "
                                        "host.") from None
        return out

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        names = []
        for p in self.root.glob("*.json"):
            with contextlib.suppress(ValueError):   # a stray file whose stem is no valid name
                names.append(check_name(p.stem))
        return sorted(names)

    def records(self) -> list[ClusterRecord]:
        """Every readable record (an unreadable one raises: it is named)."""
        return [r for r in (self.load(n) for n in self.names()) if r is not None]

    def scan(self) -> tuple[list[ClusterRecord], list[ClusterStateError]]:
        """Every readable record, and the problem of each file that cannot be read.

        One damaged file never hides the others (``list``, ``clean``).

        Examples
        --------
        >>> import tempfile
        >>> store = StateStore(Path(tempfile.mkdtemp()))
        >>> store.save(ClusterRecord("good", "root@node1:22", "tcp://10.0.0.1:8786"))
        >>> _ = store.path("bad").write_text('{"name": "ba')
        >>> records, problems = store.scan()
        >>> [r.name for r in records], [p.reason.split(" (")[0] for p in problems]
        (['good'], ['is not valid JSON'])
        """
        records: list[ClusterRecord] = []
        problems: list[ClusterStateError] = []
        for name in self.names():
            try:
                record = self.load(name)
            except ClusterStateError as exc:
                problems.append(exc)
            else:
                if record is not None:
                    records.append(record)
        return records, problems

    def remove(self, name: str) -> bool:
        """Remove the record of *name* and its credentials; return whether it existed."""
        existed = False
        with contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()
            existed = True
        tls = self.tls_dir(name)
        if tls.is_dir():
            for f in tls.iterdir():
                f.unlink()
            tls.rmdir()
        return existed

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Hold the lock of *name* (one ``up``/``down`` of a name at a time on this machine).

        Raises
        ------
        ClusterStateError
            When another process holds it (it is starting or stopping that cluster).
        """
        self._ensure_root()
        path = self.root / f"{check_name(name)}.lock"
        fd = _lock_file(path, name)
        try:
            yield
        finally:
            # Unlink while still holding it: whoever opened the old file finds, once it
            # holds the lock, that the path names no file or another one, and tries again.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(fd)


def _lock_file(path: Path, name: str) -> int:
    """Open and exclusively ``flock`` *path*; return the descriptor of the file it still names."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ClusterStateError(
                str(path), f"another dask-ssh is starting or stopping cluster {name!r}",
                remedy="Wait for it to finish, then try again.") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)   # its holder removed it as we opened it: take the new one


def write_private_json(path: Path, data: Any) -> None:
    """Write *data* as JSON to *path* atomically, mode 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
