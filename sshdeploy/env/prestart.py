"""The stage before a cluster starts: check every host, sync the environment, upload code.

One short remote script per host and step (:mod:`sshdeploy.remote.envremote`), each
a channel of the host's shared SSH connection; the data goes on that
channel's stdin (no SFTP subsystem needed, no temporary file on the host):

1. **probe** every host at once: its Python, platform and package versions,
   whether it holds the environment's hash, which upload contents it lacks;
   with nothing to send (the version gate alone, the default start), no probe
   runs: every agent says what its host is as it starts, before it imports
   anything (:attr:`PreStart.describe`, :meth:`PreStart.gate_agents`), so
   the gate costs no interpreter of its own;
2. **gate**: every difference, from every host, in one table
   (:class:`~sshdeploy.errors.EnvironmentMismatchError`) before any scheduler
   starts, or one warning (``sshdeploy.version-check: warn``);
3. **env**: the pack (built once here) to each host that lacks it: to the
   first host of each network, which the others fetch it from
   (:mod:`sshdeploy.env.relay`), or to every host with ``sshdeploy.env-relay: false``;
4. **upload**: the missing contents and the manifest to every host; above
   ``sshdeploy.upload-relay-size`` relayed as the pack is (:mod:`sshdeploy.env.uprelay`).

A host this stage cannot reach or whose Python does not run is left to the
start itself, which reports it as before (and honours ``min_workers``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sshdeploy.bootstrap import (
    Describe,
    envremote_bundle,
)
from sshdeploy.errors import EnvironmentMismatchError, EnvSyncError, SSHDeployError, StartError
from sshdeploy.hosts import Host
from sshdeploy.ssh.pool import HostPool

from .gate import (
    GPU_STACK_DISTRIBUTIONS,
    Difference,
    compare,
    compare_gpu_stack,
    format_table,
    local_description,
)
from .relay import PackServer, relay
from .script import all_or_stop, run_script
from .stageplan import StagePlan
from .sync import build_tar, pack_sha256
from .uploads import Manifest, blob_tar, collect
from .uprelay import blob_sizes, fetch_op, lacking, relays, serving

logger = logging.getLogger(__name__)


@dataclass
class HostPreStart:
    """What the stage did on one host.

    Attributes
    ----------
    host : str
        ``user@host:port``.
    description : dict
        The host's Python, platform and package versions (empty if not probed).
    env_bytes, upload_bytes : int
        Bytes of the environment's pack this host received (from this machine,
        or from ``env_from``) and bytes of uploads sent from this machine.
    env_cached : bool or None
        The host already held the environment (None: no sync).
    upload_files : int
        Upload contents sent.
    seconds : float
        Wall time of this host's stage.
    skipped : str
        Why the host was not probed ("" if it was).
    shared_with : str
        The host whose transfer this one shares (same home, e.g. NFS), or "".
    env_from : str
        The host this one fetched the pack from (the relay), or "" (this machine).
    env_refused : list of str
        Copies this host refused on the way (``holder: why``: corrupt, partial,
        unreachable) before it got a good one.
    upload_from, upload_fetched, upload_refused
        The same for the uploads (the upload relay): the host this one fetched
        them from ("": this machine), the bytes fetched from it, what was refused.
    """

    host: str
    description: dict[str, Any] = field(default_factory=dict)
    env_bytes: int = 0
    env_cached: bool | None = None
    upload_bytes: int = 0
    upload_files: int = 0
    seconds: float = 0.0
    skipped: str = ""
    shared_with: str = ""
    env_from: str = ""
    env_refused: list[str] = field(default_factory=list)
    upload_from: str = ""
    upload_fetched: int = 0
    upload_refused: list[str] = field(default_factory=list)


def _by_cache(
    probed: list[tuple[Host, str, dict[str, Any]]],
) -> tuple[list[tuple[Host, str, dict[str, Any]]],
           list[tuple[tuple[Host, str, dict[str, Any]], Host]]]:
    """Split probed hosts into one per cache id, and the others with the host they share.

    Examples
    --------
    >>> a, b, c = Host("a"), Host("b"), Host("c")
    >>> first, shared = _by_cache([(a, "p", {"cache_id": "x"}), (b, "p", {"cache_id": "x"}),
    ...                           (c, "p", {})])
    >>> [h.hostname for h, _, _ in first], [(t[0].hostname, via.hostname) for t, via in shared]
    (['a', 'c'], [('b', 'a')])
    """
    first: list[tuple[Host, str, dict[str, Any]]] = []
    shared: list[tuple[tuple[Host, str, dict[str, Any]], Host]] = []
    seen: dict[str, Host] = {}
    for item in probed:
        cid = item[2].get("cache_id")
        if cid and cid in seen:
            shared.append((item, seen[cid]))
            continue
        if cid:
            seen[cid] = item[0]
        first.append(item)
    return first, shared


@dataclass
class PreStart:
    """Carry out a :class:`~sshdeploy.env.stageplan.StagePlan` on a cluster's hosts.

    Parameters
    ----------
    plan : StagePlan
    pool : HostPool
        The cluster's connections (the stage adds channels, not connections).
    hosts : sequence of (Host, python)
        Every distinct host and its remote interpreter.
    setup : str or None
        The user's setup commands (the stage's own PYTHONPATH line excluded).
    login_shell : bool
    timeout : float
        Seconds for one probe; transfers get one more second per MB.
    """

    plan: StagePlan
    pool: HostPool
    hosts: Sequence[tuple[Host, str]]
    setup: str | None = None
    login_shell: bool = False
    timeout: float = 60.0
    reports: dict[str, HostPreStart] = field(default_factory=dict)
    manifest: Manifest | None = None
    #: What each host is doing now (``user@host:port`` to a state for the live
    #: status: "checking versions", "sending environment"...); gone when done.
    phase: dict[str, str] = field(default_factory=dict)
    _tar: asyncio.Future[tuple[Path, str]] | None = field(default=None, repr=False)
    #: The last tar of upload contents built, by the contents in it (see :meth:`contents_tar`).
    _contents: tuple[tuple[str, ...], bytes] | None = field(default=None, repr=False)
    _pushing: int = field(default=0, repr=False)

    @property
    def sent_env_bytes(self) -> int:
        """Bytes of environment packs this machine sent (the relay's are not counted)."""
        return sum(r.env_bytes for r in self.reports.values()
                   if r.env_cached is False and not r.env_from)
    #: What the agents said of each host as they started (see :meth:`gate_agents`).
    _said: dict[Any, asyncio.Future[dict[str, Any] | None]] = field(default_factory=dict,
                                                                     repr=False)

    @property
    def agents_gate(self) -> bool:
        """Whether the gate is all this stage does: on what the agents say as they start."""
        return self.plan.active and self.plan.env is None and not self.plan.upload

    @property
    def describe(self) -> Describe | None:
        """What the agents are asked to say as they start, when :attr:`agents_gate` (else None)."""
        if not self.agents_gate:
            return None
        return Describe((*self.plan.packages, *GPU_STACK_DISTRIBUTIONS), self.told, self.admit)

    def told(self, host: Host, description: dict[str, Any] | None) -> None:
        """An agent said what *host* is (None: its start ended before it did)."""
        said = self._said_by(host)
        if not said.done():
            said.set_result(description)

    async def admit(self, host: Host, python: str, description: dict[str, Any] | None) -> None:
        """The gate of a host whose agent started after the start, on what it said.

        A spare, a host added or scaled onto later: compared as the start's hosts
        were (:meth:`gate`), with no probe of its own; it joins :attr:`hosts` once
        it passed. The start's own hosts are left to :meth:`gate_agents`.

        Raises
        ------
        EnvironmentMismatchError
            It differs from this machine (per ``sshdeploy.version-check``).
        """
        if any(h.key == host.key for h, _py in self.hosts):
            return
        where = self.pool.as_connected(host)
        report = self.reports[where] = HostPreStart(host=where)
        if description is None:  # an agent that says nothing of its host: as run() skips it
            report.skipped = "its agent did not say what its host is"
        else:
            report.description = description
            self.gate([(host, python, description)])
        self.hosts = [*self.hosts, (host, python)]

    def _said_by(self, host: Host) -> asyncio.Future[dict[str, Any] | None]:
        said = self._said.get(host.key)
        if said is None:
            said = self._said[host.key] = asyncio.get_running_loop().create_future()
        return said

    async def gate_agents(self) -> dict[str, HostPreStart]:
        """The version gate on what the agents say as they start (:attr:`describe`).

        Waits until every host of :attr:`hosts` is described by its first agent,
        or failed to connect, or its agent ended first (those are left to the
        start, which reports them, as :meth:`run` leaves a host it cannot probe);
        then compares. Nothing runs on the hosts for it.

        Raises
        ------
        EnvironmentMismatchError
            Hosts differ (per ``sshdeploy.version-check``).
        """
        if not self.agents_gate:
            return await self.run()
        said = await all_or_stop(self._description(h) for h, _py in self.hosts)
        for (host, _py), description in zip(self.hosts, said, strict=True):
            where = self.pool.as_connected(host)
            report = self.reports[where] = HostPreStart(host=where)
            if description is None:
                report.skipped = "its agent did not start"
            else:
                report.description = description
        self.gate([(h, py, d) for (h, py), d in zip(self.hosts, said, strict=True)
                   if d is not None])
        return self.reports

    async def _description(self, host: Host) -> dict[str, Any] | None:
        said = self._said_by(host)
        connected = asyncio.ensure_future(self.pool.get(host))
        connected.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            either: set[asyncio.Future[Any]] = {said, connected}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not said.done() and connected.exception() is not None:
                return None  # the start says why
            # An agent's start is bounded, and says None when it ends: this bound is a spare.
            return await asyncio.wait_for(asyncio.shield(said), self.timeout + 10)
        except asyncio.TimeoutError:
            return None
        finally:
            connected.cancel()  # the connection itself is shielded in the pool

    async def run(self) -> dict[str, HostPreStart]:
        """Probe, gate, sync, upload; return one report per host.

        Raises
        ------
        EnvironmentMismatchError
            Hosts differ (per ``sshdeploy.version-check``), or cannot take the
            synced environment (always).
        EnvSyncError
            A transfer failed.
        """
        return await self._run(self.hosts)

    async def run_on(self, hosts: Sequence[tuple[Host, str]]) -> dict[str, HostPreStart]:
        """Run the stage on hosts brought up after the start; they join :attr:`hosts`.

        The uploads' manifest of the start is reused (``sync_uploads`` sends
        later changes to every host).
        """
        reports = await self._run(hosts)
        self.hosts = [*self.hosts, *hosts]
        return reports

    async def _run(self, hosts: Sequence[tuple[Host, str]]) -> dict[str, HostPreStart]:
        if not self.plan.active:
            return {}
        if self.plan.upload and self.manifest is None:
            self.manifest = await asyncio.to_thread(collect, self.plan.upload, self.plan.base)
            self._warn_size(self.manifest)
        probes = await self._probe_all(hosts)
        self.gate([(h, py, d) for (h, py), d in zip(hosts, probes, strict=True) if d])
        todo = [(h, py, d) for (h, py), d in zip(hosts, probes, strict=True) if d]
        for host, _py, desc in todo:  # never a start without the environment or the code
            if desc.get("cache_error"):
                sent = "the environment" if self.plan.env is not None else "the uploads"
                raise EnvSyncError(
                    host=self.pool.as_connected(host),
                    what=f"cannot write its cache for {sent}", cause=str(desc["cache_error"]),
                    remedy="Make ~/.cache/sshdeploy on that host a directory this user can "
                    "write (remove what is in its way), then start again.")
        # Hosts that share a home (one cache id) are sent to once, through the first of them.
        first, shared = _by_cache(todo)
        await self._sync_env(first)
        await self._upload_all(first)
        for (host, _py, _d), via in shared:
            report = self.reports[self.pool.as_connected(host)]
            report.env_cached = True if self.plan.env is not None else None
            report.shared_with = self.pool.as_connected(via)
        return self.reports

    async def _probe_all(self, hosts: Sequence[tuple[Host, str]]) -> list[dict[str, Any] | None]:
        """Probe *hosts*; every probe ends (and cleans up) before any error is raised."""
        done = await asyncio.gather(*(self._probe(h, py) for h, py in hosts),
                                    return_exceptions=True)
        for res in done:
            if isinstance(res, BaseException):
                raise res
        return [r for r in done if not isinstance(r, BaseException)]

    async def _probe(self, host: Host, python: str) -> dict[str, Any] | None:
        where = self.pool.as_connected(host)
        report = self.reports[where] = HostPreStart(host=where)
        op: dict[str, Any] = {"op": "probe", "packages": [*self.plan.packages,
                                                           *GPU_STACK_DISTRIBUTIONS]}
        if self.plan.env is not None:
            op["env"] = self.plan.env.digest
        if self.manifest is not None:
            op["blobs"] = sorted(set(self.manifest.files.values()))
        started = time.monotonic()
        try:
            report.description = await self._script(host, python, "checking versions", op,
                                                    timeout=self.timeout)
        except EnvSyncError as exc:
            if exc.cause == "timeout":  # the start would stall there too: say where, now
                raise StartError(
                    host=where, role="sync",
                    what=f"start stalled in the setup command or the remote Python: nothing "
                    f"within {self.timeout:.0f} s",
                    remedy=f"The setup command {self.setup!r} did not finish, or {python!r} "
                    "did not start: run them by hand on that host.") from None
            report.skipped = str(exc).splitlines()[0]
            logger.debug("stage skips %s: %s", where, report.skipped)
            return None
        except SSHDeployError as exc:
            # Unreachable, no Python...: the start reports it, with min_workers in force.
            report.skipped = str(exc).splitlines()[0]
            logger.debug("stage skips %s: %s", where, report.skipped)
            return None
        report.seconds = time.monotonic() - started
        return report.description

    def differences(self, probed: Sequence[tuple[Host, str, dict[str, Any]]]) -> list[Difference]:
        """The gate's rows for the hosts *probed* (host, python, description)."""
        return described_rows(self.plan, [(self.pool.as_connected(h), d) for h, _py, d in probed])

    async def check(self) -> tuple[list[Difference], dict[str, str]]:
        """Probe every host and compare, changing nothing (``dask-ssh --check``).

        Returns
        -------
        (list of Difference, dict)
            The gate's rows, and the hosts that could not be probed, with why.
        """
        probes = await self._probe_all(self.hosts)
        probed = [(h, py, d) for (h, py), d in zip(self.hosts, probes, strict=True) if d]
        skipped = {r.host: r.skipped for r in self.reports.values() if r.skipped}
        return self.differences(probed), skipped

    def gate(self, probed: Sequence[tuple[Host, str, dict[str, Any]]]) -> None:
        """Compare the hosts *probed* (host, python, description); raise or warn per the plan."""
        sync = self.plan.env is not None
        rows = self.differences(probed)
        if not rows:
            return
        hosts = sorted({r.host for r in rows})
        table = format_table(rows)
        if sync:
            raise EnvironmentMismatchError(
                table=table, hosts=hosts,
                remedy="These hosts cannot take this environment: give them a Python of the "
                "same implementation and major.minor on the same platform "
                "(remote_python= / --remote-python, or a hostfile's remote-python=).")
        if self.plan.policy == "error":
            raise EnvironmentMismatchError(table=table, hosts=hosts)
        if self.plan.policy == "warn":
            logger.warning("%d host(s) differ from this machine "
                           "(sshdeploy.version-check: warn):\n%s", len(hosts), table)

    async def _script(self, host: Host, python: str, phase: str, op: dict[str, Any],
                      **kw: Any) -> dict[str, Any]:
        """Run *op* on *host* (:func:`run_script`), shown as *phase* in the live status."""
        where = self.pool.as_connected(host)
        self.phase[where] = phase
        try:
            return await run_script(self.pool, host, python, self.setup, self.login_shell,
                                    op, **kw)
        finally:
            self.phase.pop(where, None)

    async def _pack(self) -> tuple[Path, str]:
        """The pack and its sha256, built once for all the hosts that need it."""
        env = self.plan.env
        assert env is not None
        if self._tar is None:
            def build() -> tuple[Path, str]:
                tar = build_tar(env)
                return tar, pack_sha256(tar)

            self._tar = asyncio.ensure_future(asyncio.to_thread(build))
        return await asyncio.shield(self._tar)

    async def _sync_env(self, probed: Sequence[tuple[Host, str, dict[str, Any]]]) -> None:
        """The pack to every host of *probed* that lacks it: relayed, or each from here."""
        env = self.plan.env
        if env is None:
            return
        need = [(h, py) for h, py, d in probed if not d.get("env_present")]
        for h, _py, d in probed:
            if d.get("env_present"):
                self.reports[self.pool.as_connected(h)].env_cached = True
        if not need:
            return
        tar, sha = await self._pack()
        holding = [(h, py) for h, py, d in probed
                   if d.get("env_present") and sha in (d.get("packs") or {})]
        fanout = self.plan.relay_fanout
        if not fanout or len(need) + len(holding) < 2:
            await all_or_stop(self._send_env(h, py) for h, py in need)
            return
        wait = self.timeout + tar.stat().st_size / 1e6  # a send from here, at most

        async def serve(host: Host, python: str, receiving: bool) -> PackServer:
            return await PackServer.start(
                self.pool, host, python, self.setup, self.login_shell, envremote_bundle(),
                {"env": env.digest, "sha256": sha}, ttl=self.timeout * 4 + 600,
                timeout=self.timeout, wait=wait if receiving else 0.0)

        def refused(key: str, source: str, why: str) -> None:
            self.reports[key].env_refused.append(f"{source}: {why}")

        await relay(self.pool, need, holding, fanout, self._send_env, self._fetch_env, serve,
                    refused)

    async def _send_env(self, host: Host, python: str) -> None:
        """The pack from this machine to *host* (kept there for the relay, with its sha256)."""
        env = self.plan.env
        assert env is not None
        report = self.reports[self.pool.as_connected(host)]
        started = time.monotonic()
        where = self.pool.as_connected(host)
        self.phase[where] = "packing environment"
        tar, sha = await self._pack()
        size = tar.stat().st_size
        op: dict[str, Any] = {"op": "env", "env": env.digest, "limit": self.plan.env_limit}
        if self.plan.relay_fanout:
            op["sha256"] = sha
        await self._script(host, python, "sending environment", op, payload=tar,
                           timeout=self.timeout + size / 1e6, need=env.size)
        report.env_cached, report.env_bytes, report.env_from = False, size, ""
        report.seconds += time.monotonic() - started

    async def _fetch_env(self, host: Host, python: str, source: str,
                         urls: list[str]) -> dict[str, Any]:
        """*host* fetches the pack from the holder *source* (its *urls*); the answer says
        ``refused`` (and why) for a copy it would not take."""
        env = self.plan.env
        assert env is not None
        where = self.pool.as_connected(host)
        report = self.reports[where]
        tar, sha = await self._pack()
        size = tar.stat().st_size
        started = time.monotonic()
        # the holder may still be receiving it from here: as long as a send from here
        wait = self.timeout + size / 1e6
        op = {"op": "fetch", "env": env.digest, "sha256": sha, "urls": urls,
              "limit": self.plan.env_limit, "timeout": wait + 30, "connect_timeout": 5}
        # from another host: the relay
        answer = await self._script(host, python, "fetching environment", op,
                                    timeout=2 * wait + 60)
        report.seconds += time.monotonic() - started
        if not answer.get("refused"):
            report.env_cached, report.env_from = False, source
            report.env_bytes = int(answer.get("received") or 0)
        return answer

    async def _upload_all(self, probed: Sequence[tuple[Host, str, dict[str, Any]]]) -> None:
        """The uploads to every host of *probed*: relayed above the size, or each from here."""
        manifest, upload_dir = self.manifest, self.plan.upload_dir
        if manifest is None or upload_dir is None:
            return
        missing = [list(d.get("blobs_missing") or ()) for _h, _py, d in probed]
        if not relays(blob_sizes(manifest), missing, self.plan.relay_fanout,
                      self.plan.upload_relay):
            await all_or_stop(self.push_uploads(h, py, m)
                              for (h, py, _d), m in zip(probed, missing, strict=True))
            return
        lacked = lacking(missing)
        need = [(h, py) for (h, py, _d), m in zip(probed, missing, strict=True) if m]
        holding = [(h, py) for (h, py, _d), m in zip(probed, missing, strict=True) if not m]
        # The holders' trees first: a content dropped as damaged is never linked from under them.
        await all_or_stop(self.push_uploads(h, py, []) for h, py in holding)
        wait = self.timeout + sum(blob_sizes(manifest)[b] for b in lacked) / 1e6
        wanted = dict(zip((self.pool.as_connected(h) for h, _py in need),
                          (m for m in missing if m), strict=True))

        async def direct(host: Host, python: str) -> None:
            await self.push_uploads(host, python, None)  # what it still lacks

        async def serve(host: Host, python: str, receiving: bool) -> PackServer:
            return await PackServer.start(
                self.pool, host, python, self.setup, self.login_shell, envremote_bundle(),
                serving(lacked), ttl=self.timeout * 4 + 600, timeout=self.timeout,
                wait=wait if receiving else 0.0, what="the uploads")

        async def fetch(host: Host, python: str, source: str, urls: list[str]) -> dict[str, Any]:
            where = self.pool.as_connected(host)
            report = self.reports.setdefault(where, HostPreStart(host=where))
            started = time.monotonic()
            answer = await self._script(  # from another host: the relay
                host, python, "fetching uploads",
                fetch_op(manifest, upload_dir, wanted[where], urls, wait),
                timeout=2 * wait + 60, need=manifest.size)
            report.seconds += time.monotonic() - started
            report.upload_fetched += int(answer.get("received") or 0)
            if not answer.get("refused"):
                report.upload_from = source
                report.upload_files += int(answer.get("stored") or 0)
            return answer

        def refused(key: str, source: str, why: str) -> None:
            self.reports.setdefault(key, HostPreStart(host=key)).upload_refused.append(
                f"{source}: {why}")

        await relay(self.pool, need, holding, self.plan.relay_fanout, direct, fetch, serve,
                    refused)

    async def push_uploads(self, host: Host, python: str, missing: list[str] | None) -> int:
        """Send the contents *missing* on *host* and lay out the manifest there.

        With ``missing=None`` the host says what it misses, in the same round trip.
        Returns the bytes sent.
        """
        manifest = self.manifest
        assert manifest is not None and self.plan.upload_dir is not None
        report = self.reports.setdefault(self.pool.as_connected(host),
                                         HostPreStart(host=self.pool.as_connected(host)))
        started = time.monotonic()
        sent: list[bytes] = []
        counted: list[int] = []

        def reply(question: dict[str, Any]) -> bytes:
            wanted = list(question.get("missing") or ())
            counted.append(len(wanted))
            sent.append(self.contents_tar(manifest, wanted) if wanted else b"")
            return sent[-1]

        op: dict[str, Any] = {"op": "upload", "dir": self.plan.upload_dir.rsplit("/", 1)[-1],
                              "files": manifest.files, "links": manifest.links}
        payload: bytes | Callable[[dict[str, Any]], bytes]
        if missing is None:
            op["ask"], payload = True, reply
        else:
            op["payload"], payload = bool(missing), reply({"missing": missing})
        self._pushing += 1
        try:
            await self._script(host, python, "uploading files", op, payload=payload,
                               timeout=self.timeout + manifest.size / 1e6,
                               need=lambda: sum(len(b) for b in sent))
        finally:
            self._pushing -= 1
            if not self._pushing:  # the last send of these is done: not kept in memory
                self._contents = None
        nbytes = sum(len(b) for b in sent)
        report.upload_bytes += nbytes
        report.upload_files += sum(counted)
        report.seconds += time.monotonic() - started
        return nbytes

    def contents_tar(self, manifest: Manifest, wanted: list[str]) -> bytes:
        """The tar of the contents *wanted*; hosts that lack the same ones are sent one tar.

        The hosts of a first start all lack the same contents: sent from here at
        once, one copy of it is in memory instead of one per host. Only the last
        tar built is kept, and only while a send is under way.
        """
        key = tuple(sorted(set(wanted)))
        if self._contents is None or self._contents[0] != key:
            self._contents = (key, blob_tar(manifest, key))
        return self._contents[1]

    async def sync_uploads(self) -> dict[str, int]:
        """Send changed upload files to every host; return bytes sent per host from here.

        New contents above ``sshdeploy.upload-relay-size`` are relayed as at the
        start (each host asked first what it lacks); below it, each host says what
        it lacks and is sent it in one round trip.
        """
        if not self.plan.upload or self.plan.upload_dir is None:
            return {}
        before = self.manifest
        self.manifest = await asyncio.to_thread(collect, self.plan.upload, self.plan.base)
        self._warn_size(self.manifest)
        hosts = [(h, py) for h, py in self.hosts  # not twice to a shared home
                 if not getattr(self.reports.get(self.pool.as_connected(h)), "shared_with", "")]
        new = set(self.manifest.files.values()) - set(before.files.values() if before else ())
        if len(hosts) > 1 and relays(blob_sizes(self.manifest), [sorted(new)] * len(hosts),
                                     self.plan.relay_fanout, self.plan.upload_relay):
            sent = {k: r.upload_bytes for k, r in self.reports.items()}
            op = {"op": "probe", "blobs": sorted(set(self.manifest.files.values()))}
            said = await all_or_stop(run_script(self.pool, h, py, self.setup, self.login_shell,
                                                op, timeout=self.timeout) for h, py in hosts)
            await self._upload_all([(h, py, d) for (h, py), d in zip(hosts, said, strict=True)])
            return {k: self.reports[k].upload_bytes - sent.get(k, 0)
                    for k in (self.pool.as_connected(h) for h, _py in hosts)}
        sent_now = await all_or_stop(self.push_uploads(h, py, None) for h, py in hosts)
        return {self.pool.as_connected(h): n for (h, _), n in zip(hosts, sent_now, strict=True)}

    async def remove_uploads(self) -> None:
        """Remove this cluster's upload directory from every host (errors logged, not raised)."""
        if self.plan.upload_dir is None:
            return
        op = {"op": "remove-uploads", "dir": self.plan.upload_dir.rsplit("/", 1)[-1]}
        results = await asyncio.gather(
            *(run_script(self.pool, h, py, self.setup, self.login_shell, op, timeout=10)
              for h, py in self.hosts), return_exceptions=True)
        for (h, _), res in zip(self.hosts, results, strict=True):
            if isinstance(res, BaseException):
                logger.warning("%s: uploads not removed: %s", self.pool.as_connected(h), res)

    def _warn_size(self, manifest: Manifest) -> None:
        size = manifest.size
        if self.plan.upload_warn and size > self.plan.upload_warn:
            top = ", ".join(f"{n} ({b / 1e6:.1f} MB)" for n, b in manifest.largest())
            logger.warning("upload is %.1f MB (above sshdeploy.upload-warn-size, %.1f MB); "
                           "largest: %s", size / 1e6, self.plan.upload_warn / 1e6, top)


def described_rows(plan: StagePlan, described: Sequence[tuple[str, Mapping[str, Any]]],
                   ) -> list[Difference]:
    """The gate's rows for hosts already described: ``(user@host:port, description)``."""
    ours = local_description([*plan.packages, *GPU_STACK_DISTRIBUTIONS])
    rows: list[Difference] = []
    stacks: dict[str, Mapping[str, Any]] = {}  # the GPU stack: compared across the hosts
    for where, theirs in described:
        # No distributed at all: the start says so (RemoteImportError), but another
        # Python or platform is said here, before anything starts.
        bare = plan.env is None and "distributed" not in (theirs.get("packages") or {})
        rows += compare(where, ours, theirs, plan.packages,
                        platform_only=bare or plan.env is not None)
        if not bare and plan.env is None:
            stacks[where] = theirs
    return rows + compare_gpu_stack(ours, stacks)


def gate_plan(**stage: Any) -> StagePlan:
    """The stage plan ``--check`` compares with (``packages``, ``environment`` as for
    :class:`sshdeploy.SSHCluster`), whatever ``sshdeploy.version-check`` says."""
    from sshdeploy.settings import Settings

    from .stageplan import plan_stage

    return dataclasses.replace(
        plan_stage(stage.get("environment"), stage.get("packages"), None, Settings.resolve()),
        policy="error")


async def check_gate_async(
    hosts: Sequence[str | Host], connect_options: Any = None, remote_python: Any = None,
    **stage: Any,
) -> tuple[list[Difference], dict[str, str]]:
    """Run the version gate on *hosts* without starting or sending anything.

    Parameters
    ----------
    hosts, connect_options, remote_python
        As for :class:`sshdeploy.SSHCluster`.
    **stage
        ``setup``, ``login_shell``, ``packages``, ``environment`` as for it.

    Returns
    -------
    (list of Difference, dict)
        The rows of the table (host, package, theirs, ours), and the hosts not
        probed with why (unreachable, no Python: the preflight table says more).
    """
    # Not through plan_cluster: ``dask-ssh --check`` does not import distributed.
    from sshdeploy.bootstrap import join_setup
    from sshdeploy.placement import place
    from sshdeploy.settings import Settings

    settings = Settings.resolve()
    placement = place(hosts, None, remote_python, connect_options)
    st = gate_plan(**stage)  # compare even if the setting says ignore
    every = list(placement.all_hosts().values())
    async with HostPool(settings=settings) as pool:
        for hp in every:
            pool.set_options(hp.host, hp.connect_options)
        runner = PreStart(st, pool, [(hp.host, hp.python) for hp in every],
                       setup=join_setup(stage.get("setup")),
                       login_shell=bool(stage.get("login_shell")),
                       timeout=settings.start_timeout)
        return await runner.check()


def check_gate(hosts: Sequence[str | Host], connect_options: Any = None,
               remote_python: Any = None, *,
               described: Mapping[str, Mapping[str, Any] | str] | None = None,
               **stage: Any) -> tuple[list[Difference], dict[str, str]]:
    """Synchronous :func:`check_gate_async`; with *described*, no probe at all.

    *described* maps each host (``user@host:port``) to its description, made by
    the preflight's own probe (``dask-ssh --check``: one remote Python per host
    for both), or to why it has none: those are compared, the others skipped.

    Examples
    --------
    >>> rows, skipped = check_gate(["node1", "node2"])          # doctest: +SKIP
    >>> print(format_table(rows))                              # doctest: +SKIP
    host        package      theirs  ours
    root@node2  cloudpickle  3.0.0   3.1.3
    """
    if described is not None:
        plan = gate_plan(**stage)
        found = [(h, d) for h, d in described.items() if not isinstance(d, str)]
        return (described_rows(plan, found),
                {h: d for h, d in described.items() if isinstance(d, str)})
    return asyncio.run(check_gate_async(hosts, connect_options, remote_python, **stage))
