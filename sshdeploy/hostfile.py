"""The hostfile grammar: host strings, hostfiles and bracket ranges become hosts.

Single host strings (:func:`parse_host`), hostfile lines and files
(:func:`parse_host_line`, :func:`load_hostfile`) and bracket ranges
(:func:`expand_ranges`) become :class:`~sshdeploy.hosts.Host` values. The node
lists of batch systems (PBS, Slurm) are read by :mod:`sshdeploy.nodelists`, on
top of this module's public helpers (:func:`failer`, :func:`expand_pattern`,
:func:`read_text`).

Every problem is raised as :class:`~sshdeploy.errors.HostfileError` with the
path, the 1-based line and a precise reason.  The accepted syntax is
:data:`HOSTFILE_GRAMMAR`. No network, no asyncssh, no distributed.
"""


from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable
from itertools import product
from typing import Any

from .errors import HostfileError
from .hosts import (
    DIGITS_RE,
    MEMORY_HELP,
    USER_RE,
    Host,
    check_gpus,
    check_memory_limit,
    check_positive_int,
    hostname_problem,
)

__all__ = [
    "HOSTFILE_GRAMMAR",
    "KNOWN_KEYS",
    "MAX_RANGE_HOSTS",
    "expand_pattern",
    "expand_ranges",
    "failer",
    "load_hostfile",
    "parse_host",
    "parse_host_line",
    "parse_hostfile_text",
    "read_text",
]

HOSTFILE_GRAMMAR: str = """\
Hostfile format: one host per line.

  [user@]host[:port]  [key=value ...]   # a comment

  host        a name (letters, digits, '-', '.', '_'), an IPv4 address, or an
              IPv6 address in brackets: [fe80::1]:2222
  user, port  optional; unset ones come from your SSH settings / defaults
  key=value   settings for this host, after the host:
                slots=N            worker processes on this host (N >= 1)
                nthreads=N         threads per worker (N >= 1)
                memory-limit=X     per worker: 4GiB, 500MB, 0.5 (of RAM), auto,
                                   0 (no limit)
                remote-python=PATH the Python to run on this host
                gpus=auto|free|N|0,2  one worker per GPU found there, pinned
                                   to it (see dask-ssh --gpus)
              (memory_limit= and remote_python= are accepted too)
  spare       the word `spare` after the host: no workers at the start;
              scale/adapt use it last, and the workers of a host that is lost
              or quarantined move there
  ranges      node[01-16] and node[1-3,7] expand to several hosts that share
              the line's settings; zero padding is kept
  '#' starts a comment anywhere on a line; blank lines are ignored.
  A host may appear on several lines: each line adds its own workers.
  The first host listed runs the scheduler.

Example:
  alice@head.lab:2222                               # the scheduler
  alice@gpu[01-04] slots=2 nthreads=8 memory-limit=16GiB
  10.0.0.7 remote-python=/opt/conda/bin/python
  alice@gpu05 spare slots=2
  alice@dgx1 gpus=free
"""


#: The setting keys a hostfile accepts, in their canonical spelling.
KNOWN_KEYS: tuple[str, ...] = ("slots", "nthreads", "memory-limit", "remote-python", "gpus")


#: The most hosts one range pattern may expand to (guards against typos like [1-1000000]).
MAX_RANGE_HOSTS = 65536


_KEY_FIELDS: dict[str, str] = {
    "slots": "slots",
    "nthreads": "nthreads",
    "memory-limit": "memory_limit",
    "memory_limit": "memory_limit",
    "remote-python": "remote_python",
    "remote_python": "remote_python",
    "gpus": "gpus",
}


_RANGE_ITEM_RE = re.compile(r"([0-9]+)(?:-([0-9]+))?")


_Fail = Callable[[str], HostfileError]


def failer(path: str, line: int, text: str) -> _Fail:
    """Return a function that builds the error for one place in one input."""

    def fail(reason: str) -> HostfileError:
        return HostfileError(path, line, reason, text)

    return fail


def _range_items(inner: str, fail: _Fail) -> list[str]:
    """Expand the inside of one ``[...]``: ``"01-03,7"`` -> ``["01", "02", "03", "7"]``."""
    if not inner:
        raise fail("empty range '[]'")
    out: list[str] = []
    for item in inner.split(","):
        match = _RANGE_ITEM_RE.fullmatch(item)
        if not match:
            raise fail(f"bad range item {item!r} in '[{inner}]': expected N or N-M (digits only)")
        lo_text, hi_text = match.groups()
        if hi_text is None:
            out.append(lo_text)
            continue
        lo, hi = int(lo_text), int(hi_text)
        if lo > hi:
            raise fail(f"reversed range '[{item}]': {lo} is greater than {hi}")
        if hi - lo + 1 > MAX_RANGE_HOSTS:
            raise fail(f"range '[{item}]' expands to more than {MAX_RANGE_HOSTS} hosts")
        out.extend(str(n).zfill(len(lo_text)) for n in range(lo, hi + 1))
    return out


def expand_pattern(pattern: str, fail: _Fail) -> list[str]:
    """Expand every ``[...]`` of ``pattern`` (cartesian product, left to right)."""
    parts: list[list[str]] = []
    pos = 0
    while True:
        start = pattern.find("[", pos)
        end = len(pattern) if start < 0 else start
        if "]" in pattern[pos:end]:
            raise fail(f"unmatched ']' in {pattern!r}")
        parts.append([pattern[pos:end]])
        if start < 0:
            break
        close = pattern.find("]", start + 1)
        if close < 0:
            raise fail(f"unterminated '[' in {pattern!r}: a range needs a closing ']'")
        inner = pattern[start + 1 : close]
        if "[" in inner:
            raise fail(f"nested '[' in {pattern!r}")
        parts.append(_range_items(inner, fail))
        pos = close + 1
    total = math.prod(len(p) for p in parts)
    if total > MAX_RANGE_HOSTS:
        raise fail(f"{pattern!r} expands to {total} hosts, more than {MAX_RANGE_HOSTS}")
    return ["".join(combo) for combo in product(*parts)]


def expand_ranges(pattern: str, *, path: str = "<hosts>", line: int = 0) -> list[str]:
    """Expand the bracket ranges of a host name pattern.

    ``[a-b]`` is an inclusive range, ``[a,b,c]`` a list, and both mix
    (``[1-3,7]``).  The width of the start number is kept, so ``[01-16]``
    gives ``01`` ... ``16``.  Several brackets give the cartesian product,
    leftmost varying slowest.  The result is not validated as host names.

    Parameters
    ----------
    pattern : str
        A host name pattern such as ``"node[01-16]"``.
    path, line : str, int
        Where the pattern came from, for error messages.

    Returns
    -------
    list of str
        The expanded names; ``[pattern]`` if it has no brackets.

    Raises
    ------
    HostfileError
        On a reversed range, a non-numeric item, an empty, nested, unmatched or
        unterminated bracket, or more than :data:`MAX_RANGE_HOSTS` names.

    Examples
    --------
    >>> expand_ranges("node[01-03]")
    ['node01', 'node02', 'node03']
    >>> expand_ranges("node[1-3,7]")
    ['node1', 'node2', 'node3', 'node7']
    >>> expand_ranges("r[1-2]n[1,5]")
    ['r1n1', 'r1n5', 'r2n1', 'r2n5']
    """
    return expand_pattern(pattern, failer(path, line, pattern))


def _parse_port(text: str, fail: _Fail) -> int:
    if not text:
        raise fail("bad port: empty after ':'")
    if not DIGITS_RE.fullmatch(text):
        raise fail(f"bad port {text!r}: not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise fail(f"bad port {port}: must be from 1 to 65535")
    return port


def _parse_address(token: str, fail: _Fail) -> tuple[str | None, list[str], int | None]:
    """Split ``[user@]host[:port]`` into user, expanded host names and port."""
    user: str | None = None
    rest = token
    if "@" in token:
        user, _, rest = token.partition("@")
        if not user:
            raise fail("empty user before '@'")
        if not USER_RE.fullmatch(user):
            raise fail(f"invalid characters in user name {user!r}")
    if not rest:
        raise fail("empty host after '@'" if user else "empty host")

    if rest.startswith("[") and ":" in rest.split("]", 1)[0]:  # [ipv6] or [ipv6]:port
        close = rest.find("]")
        if close < 0:
            raise fail(f"unterminated '[' in IPv6 address {rest!r}")
        address, tail = rest[1:close], rest[close + 1 :]
        try:
            host = ipaddress.IPv6Address(address).compressed
        except ValueError:
            raise fail(f"invalid IPv6 address {address!r}") from None
        if tail and not tail.startswith(":"):
            raise fail(f"unexpected {tail!r} after IPv6 address; write [address]:port")
        return user, [host], _parse_port(tail[1:], fail) if tail else None

    depth, colons = 0, []
    for i, ch in enumerate(rest):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == ":" and depth == 0:
            colons.append(i)
    port: int | None = None
    if len(colons) > 1:  # a bare IPv6 address cannot carry a port
        try:
            return user, [ipaddress.IPv6Address(rest).compressed], None
        except ValueError:
            raise fail(
                f"bad host {rest!r}: more than one ':' (write IPv6 as [address]:port)"
            ) from None
    if colons:
        rest, port_text = rest[: colons[0]], rest[colons[0] + 1 :]
        port = _parse_port(port_text, fail)
        if not rest:
            raise fail("empty host before ':'")
    names = expand_pattern(rest, fail)
    for name in names:
        problem = hostname_problem(name)
        if problem:
            raise fail(problem)
    return user, names, port


def _parse_value(key: str, field_name: str, value: str, fail: _Fail) -> Any:
    if field_name in ("slots", "nthreads"):
        if not DIGITS_RE.fullmatch(value):  # no signs, spaces or "+4"
            raise fail(f"bad value for {key!r}: expected a positive integer, got {value!r}")
        try:
            return check_positive_int(key, value)
        except ValueError as err:
            raise fail(str(err)) from None
    if field_name == "memory_limit":
        if not value:
            raise fail(f"bad value for {key!r}: empty; {MEMORY_HELP}")
        try:
            check_memory_limit(value)
        except ValueError as err:
            raise fail(f"bad value for {key!r}: {err}") from None
        return value
    if field_name == "gpus":
        try:
            return check_gpus(value)
        except ValueError as err:
            raise fail(f"bad value for {key!r}: {err}") from None
    if not value:  # remote_python
        raise fail(f"bad value for {key!r}: empty path")
    return value


def _parse_settings(tokens: list[str], fail: _Fail) -> dict[str, Any]:
    """Parse the ``key=value`` tokens that follow a host."""
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for token in tokens:
        if token == "spare":
            if "spare" in values:
                raise fail("duplicate word 'spare'")
            values["spare"] = True
            continue
        key, eq, value = token.partition("=")
        if not eq:
            raise fail(
                f"unexpected {token!r} after the host: one host per line, "
                "then settings as key=value (or the word spare)"
            )
        field_name = _KEY_FIELDS.get(key)
        if field_name is None:
            raise fail(f"unknown key {key!r} (known keys: {', '.join(KNOWN_KEYS)})")
        if field_name in spelled:
            first = spelled[field_name]
            also = f" (already given as {first!r})" if first != key else ""
            raise fail(f"duplicate key {key!r}{also}")
        spelled[field_name] = key
        values[field_name] = _parse_value(key, field_name, value, fail)
    return values


def parse_host_line(text: str, *, path: str = "<hosts>", line: int = 0) -> list[Host]:
    """Parse one hostfile line into the hosts it names.

    Parameters
    ----------
    text : str
        The line: ``[user@]host[:port]`` then optional ``key=value`` tokens;
        ``#`` starts a comment.
    path, line : str, int
        Where the line came from, for error messages and :attr:`Host.source`.

    Returns
    -------
    list of Host
        Empty for a blank or comment-only line; several for a range.

    Raises
    ------
    HostfileError
        With ``path``, ``line`` and the reason the line is invalid.

    Examples
    --------
    >>> [h.as_written() for h in parse_host_line("bob@n[1-2]:2222 slots=2  # GPUs")]
    ['bob@n1:2222', 'bob@n2:2222']
    >>> parse_host_line("   # only a comment")
    []
    """
    fail = failer(path, line, text)
    tokens = text.split("#", 1)[0].split()
    if not tokens:
        return []
    first, settings = tokens[0], tokens[1:]
    if "=" in first:
        raise fail(f"setting {first!r} has no host before it; a line starts with the host")
    user, names, port = _parse_address(first, fail)
    values = _parse_settings(settings, fail)
    source = f"{path}:{line}" if line else path
    return [Host(name, user=user, port=port, source=source, **values) for name in names]


def parse_host(text: str, *, path: str = "<hosts>", line: int = 0) -> Host:
    """Parse one host: ``[user@]host[:port]`` plus optional ``key=value`` tokens.

    Parameters
    ----------
    text : str
        E.g. ``"alice@node1:2222 slots=2"`` or ``"[fe80::1]:22"``.
    path, line : str, int
        Where the text came from, for error messages.

    Returns
    -------
    Host

    Raises
    ------
    HostfileError
        If the text is invalid, empty, or a range naming several hosts.

    Examples
    --------
    >>> parse_host("alice@node1:2222 nthreads=4")
    Host(hostname='node1', user='alice', port=2222, slots=None, nthreads=4, \
memory_limit=None, remote_python=None, spare=False, gpus=None, source='<hosts>')
    >>> parse_host("[::1]:2200").as_written()
    '[::1]:2200'
    """
    hosts = parse_host_line(text, path=path, line=line)
    if not hosts:
        raise HostfileError(path, line, "empty host", text)
    if len(hosts) > 1:
        raise HostfileError(
            path, line, f"expected one host, but the range gives {len(hosts)}", text
        )
    return hosts[0]


def parse_hostfile_text(text: str, path: str = "<hostfile>") -> list[Host]:
    """Parse the text of a hostfile (see :data:`HOSTFILE_GRAMMAR`).

    Parameters
    ----------
    text : str
        The whole file.
    path : str
        Its name, for error messages and :attr:`Host.source`.

    Returns
    -------
    list of Host
        In file order; a host on several lines appears several times.  Empty
        if the text has no host.

    Raises
    ------
    HostfileError
        For the first invalid line, with its 1-based number.

    Examples
    --------
    >>> text = "# cluster\\nhead:2222\\nnode[1-2] slots=4\\n"
    >>> [(h.as_written(), h.slots) for h in parse_hostfile_text(text)]
    [('head:2222', None), ('node1', 4), ('node2', 4)]
    """
    text = text.removeprefix("\ufeff")
    hosts: list[Host] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        hosts.extend(parse_host_line(raw.rstrip("\r"), path=path, line=number))
    return hosts


def read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read()
    except UnicodeDecodeError as exc:
        reason = f"cannot read {what}: not UTF-8 text (byte {exc.start})"
        raise HostfileError(path, 0, reason, remedy="Save the file as UTF-8 text.") from exc
    except OSError as exc:
        reason = f"cannot read {what}: {exc.strerror or exc}"
        remedy = "Check the path and that you may read the file."
        raise HostfileError(path, 0, reason, remedy=remedy) from exc


def load_hostfile(path: str | os.PathLike[str]) -> list[Host]:
    """Read and parse a hostfile.

    Parameters
    ----------
    path : str or path-like
        The hostfile (UTF-8 text, see :data:`HOSTFILE_GRAMMAR`).

    Returns
    -------
    list of Host
        At least one host, in file order.

    Raises
    ------
    HostfileError
        If the file cannot be read (line 0, reason ``"cannot read hostfile: ..."``),
        a line is invalid, or the file lists no host.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     hostfile = pathlib.Path(tmp, "hosts.txt")
    ...     _ = hostfile.write_text("node1  # scheduler\\nnode2 slots=2\\n")
    ...     [h.as_written() for h in load_hostfile(hostfile)]
    ['node1', 'node2']
    """
    name = os.fspath(path)
    hosts = parse_hostfile_text(read_text(name, "hostfile"), name)
    if not hosts:
        raise HostfileError(
            name,
            0,
            "no hosts in the file (only blank lines and comments)",
            remedy="Add one line per host: [user@]host[:port] [key=value ...].",
        )
    return hosts

