"""Why a connection cannot be made, said so that a user can act on it. No network I/O.

- :func:`build_options` checks what can be checked before connecting (keywords,
  key files and their permissions, the known_hosts file).
- :func:`classify` turns an exception of ``asyncssh.connect`` into an error
  naming the host, the cause and the remedy; a host key that *changed* is
  told apart from an unknown one.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
from collections.abc import Mapping
from typing import Any

from sshdeploy.errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    HostError,
    HostKeyError,
)

from .sshlib import asyncssh

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


def _paths(value: Any) -> list[str]:
    """The file names in a ``client_keys``/``known_hosts`` value (other forms are skipped)."""
    if isinstance(value, (str, os.PathLike)):
        return [os.path.expanduser(os.fspath(value))]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _paths(v)]
    return []


_checked_known_hosts: dict[tuple[str, float, int], str | None] = {}


def known_hosts_problem(path: str) -> str | None:
    """Return what is wrong with a known_hosts file (naming the line), or None.

    asyncssh reads the file only when it connects, and then fails without
    naming the file (``'utf-8' codec can't decode ...``). Cached by path,
    modification time and size: a cluster checks it once per host.
    """
    try:
        st = os.stat(path)
        key = (path, st.st_mtime, st.st_size)
        if key in _checked_known_hosts:
            return _checked_known_hosts[key]
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return f"cannot read it: {exc.strerror}"
    problem = None
    try:
        asyncssh.import_known_hosts(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, asyncssh.Error):
        for number, raw in enumerate(data.splitlines(), 1):
            try:
                asyncssh.import_known_hosts(raw.decode("utf-8"))
            except UnicodeDecodeError:
                problem = f"line {number} is not text (binary data?)"
            except (ValueError, asyncssh.Error) as exc:
                problem = f"line {number} is not a known_hosts entry: {exc}"
            if problem:
                break
        else:
            problem = "it is not a known_hosts file"
    _checked_known_hosts[key] = problem
    return problem


def check_files(where: str, kw: Mapping[str, Any]) -> None:
    """Check the key files and the known_hosts file named in *kw* (as OpenSSH would).

    Raises
    ------
    ConfigError
        A file is missing, or a private key is readable by others.
    """
    for path in _paths(kw.get("known_hosts")):
        if not os.path.exists(path):
            raise ConfigError(
                f"known_hosts for {where}", f"the file {path} does not exist",
                remedy="Give an existing known_hosts file (known_hosts= / --known-hosts), "
                "or create it with the hosts' keys (`ssh-keyscan host >> FILE`, after "
                "checking them).",
            )
    default = os.path.expanduser(DEFAULT_KNOWN_HOSTS)
    in_use = (_paths(kw["known_hosts"]) if "known_hosts" in kw
              else [default] if os.path.exists(default) else [])
    for path in in_use:
        problem = known_hosts_problem(path)
        if problem is not None:
            raise ConfigError(
                f"known_hosts for {where}", f"{path}: {problem}",
                remedy="Fix or remove that line (each line: host names, key type, key; "
                "`@cert-authority` and `@revoked` need both), or give another file "
                "(known_hosts= / --known-hosts).",
            )
    for path in _paths(kw.get("client_keys")):
        try:
            st = os.stat(path)
        except OSError as exc:
            raise ConfigError(
                f"client key for {where}", f"cannot read {path}: {exc.strerror}",
                remedy="Give the path of an existing private key (--ssh-private-key / "
                "client_keys).",
            ) from None
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            raise ConfigError(
                f"client key for {where}",
                f"permissions {stat.S_IMODE(st.st_mode):04o} for {path} are too open: "
                "a private key must not be accessible by others (OpenSSH refuses it too)",
                remedy=f"Run `chmod 600 {path}`.",
            )


def build_options(where: str, kw: Mapping[str, Any]) -> asyncssh.SSHClientConnectionOptions:
    """Build (and so check) the asyncssh options of one host, before any connection.

    A misspelt keyword, a missing file, or a key file that is not a usable
    key fails here, naming the host and the keyword or file, instead of
    halfway through a start.

    Raises
    ------
    ConfigError
    """
    check_files(where, kw)
    try:
        return asyncssh.SSHClientConnectionOptions(**kw)
    except TypeError as exc:
        raise ConfigError(
            f"connect_options for {where}", str(exc).replace("SSHClientConnectionOptions.", ""),
            remedy="Use the keywords of asyncssh.connect (known_hosts, client_keys, "
            "username, port, tunnel, config, passphrase, ...).",
        ) from exc
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, OSError, ValueError) as exc:
        keys = kw.get("client_keys")
        shown = ", ".join(map(str, keys)) if isinstance(keys, (list, tuple)) else str(keys)
        encrypted = "passphrase" in str(exc).lower()
        raise ConfigError(
            f"connect_options for {where}",
            f"cannot load the client key(s) {shown}: {exc}",
            remedy=(
                "The key is passphrase-protected: load it into ssh-agent (`ssh-add KEY`), "
                "or give passphrase= in connect_options (dask-ssh asks for it with "
                "--ask-passphrase)." if encrypted else
                "Give an OpenSSH private key file (--ssh-private-key / client_keys)."
            ),
        ) from exc


def key_changed(kw: Mapping[str, Any], address: str | None = None) -> bool:
    """Whether the known_hosts in use holds a key for this host (so the server's is a new one)."""
    files = _paths(kw.get("known_hosts", DEFAULT_KNOWN_HOSTS))
    host = str(kw.get("host", ""))
    port = int(kw.get("port") or 22)
    for path in files:
        try:
            known = asyncssh.read_known_hosts(path)
        except (OSError, ValueError, asyncssh.Error):
            continue
        trusted = known.match(host, address or "", port)
        if trusted[0] or trusted[1]:
            return True
    return False


def classify(
    where: str, exc: BaseException, kw: Mapping[str, Any] | None = None
) -> HostError:
    """Turn an exception of ``asyncssh.connect`` into an sshdeploy error for *where*."""
    cause = str(exc) or type(exc).__name__
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        if kw is not None and key_changed(kw):
            return HostKeyError(
                host=where, what="host key CHANGED", cause=cause,
                remedy="The server sent a different key than known_hosts holds for it: "
                "this may be an attack (someone impersonating the host), or the host was "
                "reinstalled. Check with the host's administrator; only then remove the old "
                "line (`ssh-keygen -R host`) and add the new key.",
            )
        return HostKeyError(host=where, cause=cause)
    if isinstance(exc, asyncssh.PermissionDenied):
        return AuthenticationError(host=where, cause=cause)
    if isinstance(exc, socket.gaierror):
        return ConnectError(
            host=where,
            cause=f"host name does not resolve ({cause})",
            remedy="Check the spelling, /etc/hosts or DNS, or give an IP address.",
        )
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return ConnectError(host=where, cause="timed out")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError(
            host=where,
            cause="connection refused",
            remedy="Is sshd running on that host and port? Check --ssh-port / user@host:port.",
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return ConnectError(
            host=where,
            cause=f"no route to that address ({cause})",
            remedy="This machine cannot reach that network: check the address, a VPN or "
            "firewall, or reach the host through a jump host (--jump-host / ProxyJump).",
        )
    if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
        return ConnectError(
            host=where,
            cause=f"this machine ran out of file descriptors ({cause})",
            remedy="Raise the open-files limit (`ulimit -n`, up to `ulimit -Hn`; sshdeploy "
            "raises the soft limit to the hard one by itself) or use fewer hosts at once.",
        )
    return ConnectError(host=where, cause=f"{type(exc).__name__}: {cause}")


def dropped(where: str, exc: BaseException, attempts: int, jump: str | None = None) -> HostError:
    """The error for a host whose server closed every attempt during the SSH handshake.

    That is what sshd does past its ``MaxStartups`` (OpenSSH's client says
    ``kex_exchange_identification: Connection closed by remote host``), or a
    firewall that limits new connections. *jump* names the jump host the
    attempts went through, whose sshd is then the likely one dropping them.

    Examples
    --------
    >>> err = dropped("root@node7", ConnectionResetError(104, "reset"), 4)
    >>> err.cause.startswith("the server closed the connection during the SSH handshake, 4 times")
    True
    >>> "connect-parallelism" in err.remedy
    True
    """
    via = f" (through the jump host {jump})" if jump else ""
    server = f"the jump host {jump}" if jump else "the host"
    setting = "sshdeploy.jump-host-parallelism" if jump else "sshdeploy.connect-parallelism"
    return ConnectError(
        host=where,
        cause=f"the server closed the connection during the SSH handshake{via}, "
        f"{attempts} time{'s' if attempts != 1 else ''} ({type(exc).__name__}: {exc})",
        remedy=f"sshd's MaxStartups (10:30:100 by default) drops new connections when too "
        f"many are being opened at once: lower {setting}, raise "
        f"sshdeploy.connect-attempts, or raise MaxStartups in the sshd_config of {server}.",
    )
