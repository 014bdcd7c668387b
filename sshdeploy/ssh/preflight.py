"""Preflight: can every host run a cluster? Reach, log in, find Python, dask, distributed.

Starts nothing. ``dask-ssh --check`` shows the result as a table; the same
checks are what a partial start will build on. Hosts asked for GPUs are
probed for them too (:func:`probe_gpus`, which the start uses as well).

One login and one remote Python per host: asked to ``describe`` packages, the
probe is the environment stage's (:mod:`sshdeploy.remote.envremote`, sent with
the agent's ``facts`` part), which reports the interpreter, platform and every
package's version from metadata (nothing imported): the preflight's versions
and the version gate's description at once (``HostCheck.description``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sshdeploy.bootstrap import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    EXIT_SETUP_FAILED,
    build_gpu_probe_command,
    build_probe_command,
    build_script_command,
    envremote_bundle,
)
from sshdeploy.errors import AuthenticationError, GPUError, HostKeyError, SSHDeployError
from sshdeploy.gpus import GpuChoice, Inventory, choose
from sshdeploy.hosts import ConnectionKey, Host
from sshdeploy.placement import as_hosts, per_host
from sshdeploy.settings import Settings, VersionPolicy
from sshdeploy.versions import compare_versions, local_versions

from .pool import HostPool
from .sshlib import asyncssh


@dataclass
class HostCheck:
    """What preflight found on one host.

    Attributes
    ----------
    host : str
        ``user@host:port``.
    reachable, authenticated : bool
        TCP + SSH handshake worked; login worked (host key trusted, key accepted).
    python : str or None
        The remote interpreter's path.
    versions : dict
        Remote ``python``, ``dask``, ``distributed`` versions.
    local_versions : dict
        The controller's.
    error : str or None
        Why the host is not usable, with what to do.
    version_check : {"error", "warn", "ignore"}
        Whether a version mismatch makes the host unusable.
    gpus : GpuChoice or None
        Asked for GPUs: what was found there and which the request gets.
    description : dict
        The host as the version gate compares it (interpreter, platform, package
        versions: :func:`sshdeploy.remote.agent.facts.describe`), when asked.
    """

    host: str
    reachable: bool = False
    authenticated: bool = False
    python: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    local_versions: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    version_check: VersionPolicy = "error"
    gpus: GpuChoice | None = None
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def mismatches(self) -> list[str]:
        """Packages whose version differs from the controller's."""
        if not self.versions:
            return []
        return compare_versions(self.local_versions, self.versions)

    @property
    def ok(self) -> bool:
        """True if a cluster can start here."""
        return (
            self.error is None
            and self.authenticated
            and "distributed" in self.versions
            and (self.version_check != "error" or not self.mismatches)
        )


async def probe_gpus(pool: HostPool, host: Host, python: str, setup: str | None = None,
                     login_shell: bool = False, visible: str | None = None,
                     timeout: float = 60.0) -> Inventory:
    """Find *host*'s GPUs where its workers run (:mod:`sshdeploy.remote.gpus`).

    A probe that fails (no answer, not JSON) gives an :class:`Inventory` with
    its ``error``; a host that cannot be reached raises, as ``pool.get`` does.
    """
    where = pool.as_connected(host)
    conn = await pool.get(host)
    command, stdin = build_gpu_probe_command(python, setup, login_shell, visible)
    try:
        result = await asyncio.wait_for(
            conn.conn.run(command, input=stdin, encoding=None, check=False), timeout)
    except (asyncio.TimeoutError, asyncssh.Error, OSError) as exc:
        return Inventory(where, error=f"the GPU probe failed: {type(exc).__name__}: {exc}")
    out = _text(result.stdout).strip().splitlines()
    try:
        data = json.loads(out[-1])
    except (IndexError, ValueError):
        tail = _text(result.stderr).strip()[-300:]
        return Inventory(where, error=f"{python} did not run the GPU probe (exit "
                         f"{result.exit_status}){': ' + tail if tail else ''}")
    return Inventory.from_json(where, data)


def _text(data: bytes | str | None) -> str:
    """What a remote command wrote (bytes with ``encoding=None``), as text."""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return str(data or "")


async def _check_gpus(pool: HostPool, host: Host, python: str, setup: str | None,
                      ask: tuple[str, bool], timeout: float) -> GpuChoice | GPUError:
    inv = await probe_gpus(pool, host, python, setup, timeout=timeout)
    try:
        return choose(ask[0], inv, pool.settings.gpu_busy_memory, required=ask[1])
    except GPUError as err:
        return err


def _probe(python: str, setup: str | None, deep: bool, login_shell: bool,
           describe: Sequence[str] | None) -> tuple[str, bytes | None]:
    """The probe's command and stdin: the describing one when asked (and not *deep*)."""
    if describe is None or deep:
        return build_probe_command(python, setup, deep=deep, login_shell=login_shell), None
    op = {"op": "probe", "packages": list(describe)}
    return (build_script_command(python, setup, login_shell),
            envremote_bundle() + (json.dumps(op) + "\n").encode())


def _as_probed(answer: dict[str, Any]) -> dict[str, Any]:
    """A description (the describing probe's answer) as the preflight probe says it.

    Examples
    --------
    >>> _as_probed({"python": "/py", "version": "3.11.7", "packages": {"dask": "1"}})["error"]
    "ModuleNotFoundError: No module named 'distributed' (no metadata found)"
    """
    if answer.get("error"):
        return {"python": None, "versions": {}, "error": str(answer["error"])}
    found = answer.get("packages") or {}
    versions = {"python": str(answer.get("version", "?")),
                **{m: found[m] for m in ("dask", "distributed") if m in found}}
    missing = [m for m in ("dask", "distributed") if m not in found]
    error = (f"ModuleNotFoundError: No module named {missing[0]!r} (no metadata found)"
             if missing else None)
    return {"python": answer.get("python"), "versions": versions, "error": error}


async def _check_one(
    pool: HostPool, host: Host, python: str, setup: str | None, timeout: float, deep: bool,
    gpus: tuple[str, bool] | None = None, describe: Sequence[str] | None = None,
    login_shell: bool = False,
) -> HostCheck:
    check = HostCheck(host=pool.as_connected(host), local_versions=local_versions(),
                      version_check=pool.settings.version_check)
    try:
        conn = await pool.get(host)
    except (AuthenticationError, HostKeyError) as exc:
        check.reachable = True
        check.error = str(exc)
        return check
    except SSHDeployError as exc:
        check.error = str(exc)
        return check
    check.reachable = check.authenticated = True
    try:
        command, stdin = _probe(python, setup, deep, login_shell, describe)
        result = await asyncio.wait_for(
            conn.conn.run(command, input=stdin, encoding=None, check=False), timeout)
    except (asyncio.TimeoutError, asyncssh.Error, OSError) as exc:
        check.error = f"[{check.host}] probe: {type(exc).__name__}: {exc}"
        return check
    out = _text(result.stdout).strip().splitlines()
    if result.exit_status in (EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE):
        what = "not found" if result.exit_status == EXIT_NOT_FOUND else "not executable"
        check.error = (
            f"[{check.host}] remote Python {python!r} {what}. Install it or give "
            "--remote-python / remote_python the interpreter of the environment with dask."
        )
        return check
    if result.exit_status == EXIT_SETUP_FAILED:
        check.error = f"[{check.host}] the setup command failed: {_text(result.stderr).strip()}"
        return check
    try:
        data: dict[str, Any] = json.loads(out[-1])
    except (IndexError, ValueError):
        check.error = (
            f"[{check.host}] {python!r} did not run the probe (exit {result.exit_status}): "
            f"{_text(result.stderr).strip()[-500:]}"
        )
        return check
    if stdin is not None:  # the describing probe: the gate's description too
        if not data.get("error"):
            check.description = data
        data = _as_probed(data)
    check.python = data.get("python")
    check.versions = dict(data.get("versions") or {})
    if data.get("error"):
        check.error = (
            f"[{check.host}] dask/distributed not importable with {check.python}: "
            f"{data['error']}. Install them there or pick another remote_python."
        )
    elif check.mismatches and check.version_check == "error":
        check.error = f"[{check.host}] version mismatch: {'; '.join(check.mismatches)}"
    if gpus is not None:
        found = await _check_gpus(pool, host, python, setup, gpus, timeout)
        if isinstance(found, GPUError):
            check.error = "; ".join(e for e in (check.error, str(found)) if e)
        else:
            check.gpus = found
    return check


async def check_hosts_async(
    hosts: Sequence[str | Host],
    connect_options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    remote_python: str | Sequence[str] | None = None,
    *,
    setup: str | None = None,
    settings: Settings | None = None,
    deep: bool = False,
    gpus: Mapping[ConnectionKey, tuple[str, bool]] | None = None,
    describe: Sequence[str] | None = None,
    login_shell: bool = False,
) -> list[HostCheck]:
    """Check every distinct host in parallel; one :class:`HostCheck` each, in order.

    Parameters
    ----------
    hosts : list of str or Host
    connect_options : dict or list of dict, optional
        ``asyncssh.connect`` keywords, for all or per host.
    remote_python : str or list of str, optional
        Defaults to the controller's ``sys.executable``.
    setup : str, optional
        Shell commands run before the interpreter.
    settings : Settings, optional
        Timeouts and the version policy (default: resolved now).
    deep : bool
        Import dask and distributed on each host (slower) instead of reading
        their versions from package metadata.
    gpus : dict, optional
        Host key to ``(request, required)`` (:func:`sshdeploy.gpus.requests`):
        those hosts are probed for GPUs too (``HostCheck.gpus``).
    describe : sequence of str, optional
        Also describe each host for the version gate, with these packages, in
        the same remote Python (``HostCheck.description``; not with *deep*).
    login_shell : bool
        Run the probe in the user's login shell, as the start would.
    """
    settings = settings or Settings.resolve()
    hs = as_hosts(hosts)
    pythons = per_host(remote_python, len(hs), "remote_python")
    copts = per_host(connect_options, len(hs), "connect_options")
    timeout = settings.start_timeout
    async with HostPool(settings=settings) as pool:
        seen: dict[Any, tuple[Host, str]] = {}
        for h, py, opts in zip(hs, pythons, copts, strict=False):
            pool.set_options(h, opts)
            seen.setdefault(h.key, (h, h.remote_python or py or sys.executable))
        asks = gpus or {}
        return list(
            await asyncio.gather(
                *(_check_one(pool, h, py, setup, timeout, deep, asks.get(h.key), describe,
                             login_shell)
                  for h, py in seen.values())
            )
        )


def check_hosts(
    hosts: Sequence[str | Host],
    connect_options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    remote_python: str | Sequence[str] | None = None,
    *,
    setup: str | None = None,
    deep: bool = False,
    gpus: Mapping[ConnectionKey, tuple[str, bool]] | None = None,
    describe: Sequence[str] | None = None,
    login_shell: bool = False,
) -> list[HostCheck]:
    """Synchronous :func:`check_hosts_async`.

    Examples
    --------
    >>> checks = check_hosts(["node1", "node2"])          # doctest: +SKIP
    >>> all(c.ok for c in checks)                        # doctest: +SKIP
    True
    """
    return asyncio.run(
        check_hosts_async(hosts, connect_options, remote_python, setup=setup, deep=deep,
                          gpus=gpus, describe=describe, login_shell=login_shell)
    )
