"""Host values: one host to deploy to, and the rules for the values it holds.

A :class:`Host` is one line of a hostfile: where to connect (``user``,
``hostname``, ``port``) and what to run there (``slots``, ``nthreads``,
``memory_limit``, ``remote_python``). Its :attr:`Host.key` is the
:data:`ConnectionKey` of one SSH connection. Text becomes hosts in
:mod:`sshdeploy.hostfile` (the grammar) and :mod:`sshdeploy.nodelists`
(PBS and Slurm node lists).

The rules for values that the command line and the Python API share live
here too, one function per value: :func:`check_memory_limit` and
:func:`check_positive_int`.  They raise :class:`ValueError` with the reason;
each caller adds where the value came from (file and line, option name).

This module is a leaf: no network, no asyncssh, no distributed (only
:func:`dask.utils.parse_bytes`, imported when a size is checked).
"""


from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field, replace

from .errors import HostfileError

__all__ = [
    "DIGITS_RE",
    "MEMORY_HELP",
    "USER_RE",
    "ConnectionKey",
    "Host",
    "check_gpus",
    "check_memory_limit",
    "check_positive_int",
    "hostname_problem",
]

USER_RE = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*\$?")


_HOST_CHAR_RE = re.compile(r"[A-Za-z0-9._-]")


DIGITS_RE = re.compile(r"[0-9]+")


def hostname_problem(name: str) -> str | None:
    """Return why ``name`` is not a valid host name or IP address, or None."""
    if not name:
        return "empty host"
    if ":" in name:
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return f"invalid IPv6 address {name!r}"
        return None
    if re.fullmatch(r"[0-9.]+", name):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            return f"invalid IPv4 address {name!r}"
        return None
    bad = sorted({ch for ch in name if not _HOST_CHAR_RE.fullmatch(ch)})
    if bad:
        return (
            f"invalid characters {''.join(bad)!r} in host name {name!r} "
            "(allowed: letters, digits, '-', '.', '_')"
        )
    if len(name) > 253:
        return f"host name {name[:20]!r}... is longer than 253 characters"
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    for label in labels:
        if not label:
            return f"empty label in host name {name!r} (a leading '.' or '..')"
        if len(label) > 63:
            return f"label {label[:20]!r}... of host name is longer than 63 characters"
        if label.startswith("-") or label.endswith("-"):
            return f"label {label!r} of host name {name!r} starts or ends with '-'"
    return None


MEMORY_HELP = (
    "use bytes (4000000000), a size (4GiB, 500MB), a fraction of the host's memory "
    "(0.5), 'auto', or 0 for no limit"
)


#: Bare numbers of bytes below this are refused as memory limits: a worker
#: cannot run in them, so ``10`` or ``2.0`` surely meant gigabytes.
MIN_MEMORY_LIMIT = 16 * 2**20


def check_memory_limit(value: str | int | float | None) -> str | int | float | None:
    """Check a memory limit per worker; return it in the form distributed takes.

    The one rule for ``--memory-limit``, the hostfile's ``memory-limit=`` and
    ``worker_options["memory_limit"]``, with the meaning distributed's
    ``parse_memory_limit`` gives each value:

    * ``"auto"`` (any case): left to the worker (its share of the host's memory);
    * ``None`` or ``0``: no limit;
    * a whole number: bytes (``1`` is all of the memory, as in distributed);
      below :data:`MIN_MEMORY_LIMIT` (16 MiB) it is refused, with the size
      probably meant (``10``: did you mean 10GB?), and so is ``2.0``;
    * a fraction in (0, 1]: that part of the host's memory;
    * a size string such as ``"4GiB"`` or ``"500MB"`` (``dask.utils.parse_bytes``).

    Parameters
    ----------
    value : str, int, float or None
        The limit as given; strings may hold any of the forms above.

    Returns
    -------
    str, int, float or None
        ``"auto"``, ``None``, an int (bytes, or 0), a float fraction, or the
        size string as given (stripped).

    Raises
    ------
    ValueError
        For a negative value, a number above 1 that is not whole (``1.5``
        would silently mean 1 byte), a non-finite number, a bool, or text
        that is not a size.

    Examples
    --------
    >>> [check_memory_limit(v) for v in ("AUTO", "0", "0.5", "4000000000", "1e9", "4GiB")]
    ['auto', 0, 0.5, 4000000000, 1000000000, '4GiB']
    >>> check_memory_limit(1.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: 1.5 means 1.5 bytes, too little for a worker (below 16 MiB): did you mean 1.5GB? ...
    >>> check_memory_limit("10")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: 10 means 10 bytes, too little for a worker (below 16 MiB): did you mean 10GB? ...
    >>> check_memory_limit("-1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: -1 is negative: use bytes (4000000000), a size (4GiB, 500MB), ...
    """
    if value is None:
        return None
    number: int | float
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "auto":
            return "auto"
        try:
            number = int(text) if DIGITS_RE.fullmatch(text) else float(text)
        except ValueError:
            return _check_size(text, value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = value
    else:
        raise ValueError(f"{value!r} is not a memory limit: {MEMORY_HELP}")
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number: {MEMORY_HELP}")
    if number < 0:
        raise ValueError(f"{value} is negative: {MEMORY_HELP}")
    if number == 0 or (isinstance(number, int) and number == 1):
        return int(number)
    if isinstance(number, float) and number <= 1:
        return number
    if number < MIN_MEMORY_LIMIT:
        # 2, 10, 2.0, 1.5: bytes nobody means (a worker needs far more); 1.5 and 2.0 alike.
        unit = "GB" if number <= 1024 else "MB"
        shown = str(value).strip()
        raise ValueError(
            f"{shown} means {shown} bytes, too little for a worker (below "
            f"{MIN_MEMORY_LIMIT // 2**20} MiB): did you mean {shown}{unit}? Give a size with "
            f"its unit ('{shown}{unit}'), a fraction of the host's memory (0 to 1), or 'auto'"
        )
    if isinstance(number, int) or number.is_integer():
        return int(number)
    raise ValueError(
        f"{value} is neither a fraction of the host's memory (0 to 1) nor a whole number of bytes"
    )


def _check_size(text: str, value: str) -> str:
    """Check a size string (``4GiB``) with dask's own parser."""
    from dask.utils import parse_bytes

    if not any(ch.isdigit() for ch in text):  # parse_bytes reads "MB" as 1 MB, "" as 1 byte
        raise ValueError(f"{value!r} is not a size: {MEMORY_HELP}")
    try:
        size = parse_bytes(text)
    except (ValueError, TypeError):
        raise ValueError(f"{value!r} is not a size: {MEMORY_HELP}") from None
    if size < 0:
        raise ValueError(f"{value!r} is negative: {MEMORY_HELP}")
    return text


def check_positive_int(name: str, value: object) -> int:
    """Check a count that must be a whole number of at least 1 (``slots``, ``nthreads``).

    Parameters
    ----------
    name : str
        The setting, for the message (``"slots"``, ``"nthreads"``).
    value : object
        An int, or a string of digits.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        For anything else, including 0, negatives, bools and floats.

    Examples
    --------
    >>> check_positive_int("slots", "4")
    4
    >>> check_positive_int("nthreads", 0)
    Traceback (most recent call last):
    ...
    ValueError: bad value for 'nthreads': expected a positive integer, got 0
    """
    if isinstance(value, str) and DIGITS_RE.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"bad value for {name!r}: expected a positive integer, got {value!r}")


def _positive_int_problem(name: str, value: object) -> str | None:
    if value is None:
        return None
    try:
        check_positive_int(name, None if isinstance(value, str) else value)  # a Host holds ints
    except ValueError:
        return f"bad value for {name!r}: expected a positive integer, got {value!r}"
    return None


#: The GPU requests that are words (the others are a count or a list of GPUs).
GPU_WORDS = ("auto", "free")

GPUS_HELP = (
    "give 'auto' (every GPU found), 'free' (those nobody else uses), a count (2), "
    "or a list of GPUs by index or UUID ('0,2', 'GPU-5f1c...'; one index: '3,')"
)

_GPU_ID_RE = re.compile(r"[0-9]+|(GPU|MIG)-[A-Za-z0-9-]+")


def check_gpus(value: object) -> str | None:
    """Check a GPU request (``gpus=``); return it as text: a word, a count or a list.

    The one rule for ``SSHCluster(gpus=...)``, ``dask-ssh --gpus`` and the
    hostfile's ``gpus=``: ``"auto"`` or ``"free"``, a count of at least 1
    (an int or digits), or GPUs by index or UUID, comma-separated (a list is
    always written with a comma: ``"0,2"``, ``"3,"``; a UUID alone is one GPU).
    None (no GPU placement) stays None.

    Raises
    ------
    ValueError
        For anything else (0, a bool, a negative count, an unknown word).

    Examples
    --------
    >>> [check_gpus(v) for v in ("AUTO", 2, "2", "0, 2", [1], "GPU-5f1c", None)]
    ['auto', '2', '2', '0,2', '1,', 'GPU-5f1c,', None]
    >>> check_gpus(0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: 0 is not a GPU request: give 'auto' ...
    """
    if value is None:
        return None
    entries: list[str] = []
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 1:
            return str(value)
    elif isinstance(value, (list, tuple)):
        entries = [str(v).strip() for v in value]
    elif isinstance(value, str):
        text = value.strip()
        if text.lower() in GPU_WORDS:
            return text.lower()
        if DIGITS_RE.fullmatch(text) and int(text) >= 1:
            return str(int(text))
        if "," in text or text.startswith(("GPU-", "MIG-")):
            entries = [e.strip() for e in text.split(",")]
            if len(entries) > 1 and entries[-1] == "":
                entries.pop()  # "3,": one GPU by index
    if not entries or not all(_GPU_ID_RE.fullmatch(e) for e in entries) \
            or len(set(entries)) != len(entries):
        raise ValueError(f"{value!r} is not a GPU request: {GPUS_HELP}")
    return ",".join(entries) + ("," if len(entries) == 1 else "")


#: The identity of one SSH connection: ``(user, hostname, port)`` (see :attr:`Host.key`).
#: Not an SSH host key (:class:`~sshdeploy.errors.HostKeyError` is about those).
ConnectionKey = tuple[str | None, str, int | None]


@dataclass(frozen=True)
class Host:
    """One host to deploy to, with optional per-host settings.

    Parameters
    ----------
    hostname : str
        A host name, an IPv4 address or an IPv6 address (without brackets).
    user : str, optional
        The SSH user; None uses the default (SSH config, current user).
    port : int, optional
        The SSH port (1-65535); None uses the default (SSH config, 22).
    slots : int, optional
        Worker processes on this host (MPI-hostfile style).
    nthreads : int, optional
        Threads per worker on this host.
    memory_limit : str, optional
        Memory limit per worker, kept as text (``"4GiB"``, ``"auto"``, ``"0.5"``).
    remote_python : str, optional
        The Python interpreter to run on this host.
    gpus : str, optional
        One worker per GPU of this host (:func:`check_gpus`: ``auto``,
        ``free``, a count or a list); wins over ``SSHCluster(gpus=...)``.
    spare : bool
        A spare: no workers at the start; ``scale``/``adapt`` use it after
        every other host's slots, and a lost or quarantined host's workers
        move there.
    source : str, optional
        ``"path:line"`` the host came from, for error messages.  Not part of
        equality or hashing.

    Raises
    ------
    HostfileError
        If a field is invalid (bad host name, port out of range, slots < 1, ...).

    Examples
    --------
    >>> h = Host("node1", user="alice", port=2222, slots=2)
    >>> h.as_written()
    'alice@node1:2222'
    >>> h.key
    ('alice', 'node1', 2222)
    >>> Host("::1", port=22).as_written()
    '[::1]:22'
    >>> Host("node1").with_defaults(user="bob", port=22).as_written()
    'bob@node1:22'
    """

    hostname: str
    user: str | None = None
    port: int | None = None
    slots: int | None = None
    nthreads: int | None = None
    memory_limit: str | None = None
    remote_python: str | None = None
    spare: bool = False
    gpus: str | None = None
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        problem = _host_problem(self)
        if problem:
            raise HostfileError(self.source or "<hosts>", 0, problem, str(self.hostname))

    @property
    def key(self) -> ConnectionKey:
        """``(user, hostname, port)``: the identity of one SSH connection."""
        return (self.user, self.hostname, self.port)

    def as_written(self) -> str:
        """Return ``user@host:port`` with the parts that are set, as the user wrote them.

        An IPv6 address is bracketed when a port follows: ``[::1]:22``. The host
        as it will be connected to (after ``~/.ssh/config`` and the defaults) is
        :meth:`sshdeploy.ssh.pool.HostPool.as_connected`.
        """
        host = self.hostname
        if ":" in host and self.port is not None:
            host = f"[{host}]"
        text = f"{self.user}@{host}" if self.user else host
        return text if self.port is None else f"{text}:{self.port}"

    def with_defaults(self, user: str | None = None, port: int | None = None) -> Host:
        """Return a copy whose unset ``user`` and ``port`` are filled in.

        Values already set on the host win over the defaults given here.
        """
        return replace(
            self,
            user=self.user if self.user is not None else user,
            port=self.port if self.port is not None else port,
        )


def _host_problem(host: Host) -> str | None:
    """Return why the fields of ``host`` are invalid, or None."""
    if not isinstance(host.hostname, str):
        return f"host name must be a string, got {host.hostname!r}"
    problem = hostname_problem(host.hostname)
    if problem:
        return problem
    if host.user is not None and not USER_RE.fullmatch(host.user):
        return "empty user" if not host.user else f"invalid characters in user name {host.user!r}"
    port = host.port
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
    ):
        return f"bad port {port!r}: expected an integer from 1 to 65535"
    for name in ("slots", "nthreads"):
        problem = _positive_int_problem(name, getattr(host, name))
        if problem:
            return problem
    if host.memory_limit is not None:
        if not isinstance(host.memory_limit, str):
            return f"bad value for 'memory-limit': {host.memory_limit!r} (expected text)"
        try:
            check_memory_limit(host.memory_limit)
        except ValueError as err:
            return f"bad value for 'memory-limit': {err}"
    if host.remote_python is not None and not (
        isinstance(host.remote_python, str) and host.remote_python.strip()
    ):
        return f"bad value for 'remote-python': {host.remote_python!r}"
    if host.gpus is not None:
        try:
            object.__setattr__(host, "gpus", check_gpus(host.gpus))  # Host("a", gpus=2)
        except ValueError as err:
            return f"bad value for 'gpus': {err}"
    return None

