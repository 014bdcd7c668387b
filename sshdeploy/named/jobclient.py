"""Run work on a named cluster: submit a script as a job, follow, list, stop it; ``exec``.

:class:`ClusterJobs` is what ``dask-ssh submit``, ``jobs``, ``job`` and
``exec`` do, for Python too. A job runs on the cluster's scheduler host under
a supervisor of its own (:mod:`sshdeploy.remote.agent.jobs`): it survives the
controller, its connection and this machine; its record and log stay on that
host until the cluster goes down.

Examples
--------
>>> async def main():                                           # doctest: +SKIP
...     async with ClusterJobs.of("lab") as jobs:
...         job = await jobs.submit("train.py", ["--epochs", "3"])
...         done = await jobs.follow(job.id, sys.stdout.buffer.write)
...         return done.exit_status()
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sshdeploy.env.uploads import REMOTE_UPLOADS, Manifest, collect
from sshdeploy.errors import ClusterNotFoundError, ConfigError, JobError, UploadError
from sshdeploy.hosts import Host
from sshdeploy.named import flow, jobops
from sshdeploy.named.jobs import JobRecord, job_files, upload_dir
from sshdeploy.named.state import ClusterRecord, StateStore
from sshdeploy.plan import Launch
from sshdeploy.settings import Settings
from sshdeploy.ssh.pool import HostPool

logger = logging.getLogger(__name__)


def who() -> str:
    """``user@machine``: who submits or stops a job, as its record keeps it."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name (a container's uid)
        user = "?"
    return f"{user}@{socket.gethostname()}"


class ClusterJobs:
    """The jobs of one running named cluster (an async context manager: its connections).

    Parameters
    ----------
    record : ClusterRecord
        The cluster's record (:meth:`of` reads this machine's).
    warn : callable, optional
        Given what a user should know (a large upload); default: a warning logged.
    """

    def __init__(self, record: ClusterRecord, warn: Callable[[str], None] | None = None) -> None:
        self.record = record
        self.name = record.name
        host, launch = flow.scheduler_host(record)
        #: The scheduler's host: where the jobs run, their records and logs are.
        self.host: Host = host
        self.launch: Launch = launch  # its setup, in the login shell if the cluster has one
        self.pool: HostPool = flow.record_pool(record.spec)
        self.warn = warn or logger.warning

    @classmethod
    def of(cls, name: str, store: StateStore | None = None,
           warn: Callable[[str], None] | None = None) -> ClusterJobs:
        """The jobs of the named cluster *name* recorded on this machine.

        Raises
        ------
        ClusterNotFoundError
            No record of it here.
        """
        record = (store or StateStore()).load(name)
        if record is None:
            raise ClusterNotFoundError(name=name, cause="no record of it on this machine")
        return cls(record, warn)

    async def __aenter__(self) -> ClusterJobs:
        await self.pool.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.__aexit__(*exc)

    @property
    def where(self) -> str:
        """The scheduler's host as connected (``user@host:port``)."""
        return self.pool.as_connected(self.host)

    async def _op(self, op: str, data: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
        answer = await jobops.run_op(self.pool, self.host, self.launch, self.name, op, data, **kw)
        if answer.get("error") == "unknown-job":
            known = ", ".join(str(k) for k in answer.get("known") or ()) or "none"
            raise JobError(cluster=self.name, job=str(data.get("job")),
                           what=f"no such job on {self.where} (known: {known})")
        if answer.get("error") == "not-running":
            end = answer.get("end") or {}
            raise ClusterNotFoundError(
                name=self.name, state="stopped" if end else "gone",
                cause=str(end.get("reason") or "its scheduler no longer runs"),
                remedy=f"`dask-ssh list` shows its state; start it again with `dask-ssh up "
                f"--name {self.name} ...` (`dask-ssh clean` forgets it).")
        if answer.get("error"):
            raise JobError(cluster=self.name, job=str(data.get("job", "")),
                           what=str(answer["error"]))
        return answer

    async def submit(self, script: str | Path, args: Sequence[str] = (), *,
                     upload: Sequence[str] = (), env: Mapping[str, str] | None = None,
                     name: str | None = None, timeout: float | None = None,
                     base: Path | None = None) -> JobRecord:
        """Send *script* and its directory (or it and *upload*), then run it as a job.

        It runs with the scheduler's Python and environment, beside the
        scheduler, in its own process group; ``Client()`` connects to the
        cluster. Returns its record once it runs (or failed to start).

        Raises
        ------
        UploadError
            No such script; an upload path that does not exist.
        ClusterNotFoundError
            The cluster does not run.
        """
        base = base or Path.cwd()
        path = (base / script).resolve()
        if not path.is_file():
            raise UploadError(str(script), "no such script",
                              remedy="Give the path of a Python script on this machine.")
        files = job_files(path, upload, base)
        manifest = await asyncio.to_thread(collect, files.paths, base)
        manifest = with_script(manifest, f"{files.cwd}/{files.script}" if files.cwd
                               else files.script, path)
        limit = Settings.resolve().upload_warn_size
        if limit and manifest.size > limit:
            top = ", ".join(f"{n} ({b / 1e6:.1f} MB)" for n, b in manifest.largest(3))
            self.warn(f"the job's files are {manifest.size / 1e6:.1f} MB (above "
                      f"sshdeploy.upload-warn-size); largest: {top}. Give --upload PATH... to "
                      "send less than the script's directory.")
        directory = upload_dir(self.name, {**manifest.files,
                                           **{n: f"-> {t}" for n, t in manifest.links.items()}})
        await jobops.upload(self.pool, self.host, self.launch, manifest, directory)
        cwd = f"{REMOTE_UPLOADS}/{directory}" + (f"/{files.cwd}" if files.cwd else "")
        answer = await self._op("job-submit", {
            "argv": [files.script, *map(str, args)], "python": True, "cwd": cwd,
            "env": dict(env or {}), "name": name or "", "who": who(), "timeout": timeout,
            "uploads": directory})
        return JobRecord.from_json(answer["job"])

    async def follow(self, job: str, on_output: Callable[[bytes], Any] | None = None, *,
                     follow: bool = True) -> JobRecord:
        """Give *on_output* the log of *job* (its id or name) from its start; with *follow*,
        what it writes until it ends. Returns its record then.

        Raises
        ------
        JobError
            No such job.
        """
        answer = await self._op("job-follow", {"job": str(job), "follow": follow,
                                               "quiet": on_output is None},
                                on_output=on_output, timeout=None)
        return JobRecord.from_json(answer["job"])

    async def wait(self, job: str) -> JobRecord:
        """Wait until *job* ends; return its record."""
        return await self.follow(job, None)

    async def jobs(self) -> list[JobRecord]:
        """Every job of the cluster, oldest first (states probed on the host now)."""
        answer = await self._op("job-list", {})
        return [JobRecord.from_json(j) for j in answer.get("jobs") or ()]

    async def stop(self, job: str, grace: float = 5.0) -> tuple[JobRecord, bool]:
        """Stop *job*: SIGINT, SIGTERM, then SIGKILL to its whole process group and every
        descendant, *grace* seconds apart; return once nothing of it is left.

        Returns its record and whether it was running (False: it had ended).
        """
        answer = await self._op("job-stop", {"job": str(job), "grace": grace, "by": who()},
                                timeout=jobops.OP_TIMEOUT + 3 * grace + 10)
        return JobRecord.from_json(answer["job"]), "was" not in answer

    def hosts(self, only: Sequence[str] = ()) -> dict[Host, Launch]:
        """The cluster's distinct hosts (the scheduler's first), or those of *only*.

        Raises
        ------
        JobError
            A name in *only* that is no host of the cluster.
        """
        every = flow.launches(self.record.spec)
        if not only:
            return every
        out = {}
        for wanted in only:
            found = [h for h in every if wanted in (h.hostname, h.as_written(),
                                                    self.pool.as_connected(h))]
            if not found:
                raise JobError(cluster=self.name, job="", what=f"{wanted!r} is not one of its "
                               f"hosts ({', '.join(h.hostname for h in every)})",
                               remedy=f"`dask-ssh status {self.name}` shows its hosts.")
            out.update({h: every[h] for h in found})
        return out

    async def exec(self, command: Sequence[str], hosts: Sequence[str] = (),
                   on_line: Callable[[str, str, bool], Awaitable[None] | None] | None = None,
                   timeout: float | None = None) -> dict[str, int | str]:
        """Run *command* on every host of the cluster (or *hosts*) at once.

        Each host runs it in the cluster's setup with its ``env`` and
        ``DASK_SCHEDULER_ADDRESS``. *on_line* gets ``(hostname, line, is_stderr)``.
        Returns per host (``user@host:port``) its exit status, or why there is
        none (``timeout``, the connect error). At *timeout* or cancellation,
        each host's process group is killed.
        """
        targets = self.hosts(hosts)
        env = {**{str(k): str(v) for k, v in (self.record.spec.get("env") or {}).items()},
               "DASK_SCHEDULER_ADDRESS": self.record.scheduler_address}

        async def one(host: Host, launch: Launch) -> int | str:
            def line(text: str, is_stderr: bool) -> Awaitable[None] | None:
                return on_line(host.hostname, text, is_stderr) if on_line is not None else None

            try:
                return await asyncio.wait_for(
                    jobops.run_exec(self.pool, host, launch, command, env, line, self.name),
                    timeout)
            except asyncio.TimeoutError:
                return "timeout"
            except Exception as exc:  # one host's failure is its row, not everyone's
                return str(exc).splitlines()[0] if str(exc) else type(exc).__name__

        results = await asyncio.gather(*(one(h, lch) for h, lch in targets.items()))
        return {self.pool.as_connected(h): r for h, r in zip(targets, results, strict=True)}


def with_script(manifest: Manifest, name: str, path: Path) -> Manifest:
    """*manifest* with the script in it, also when git ignores it (its directory is sent as
    git would track it)."""
    if name in manifest.files:
        return manifest
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Manifest(files={**manifest.files, name: digest},
                    sources={**manifest.sources, name: path}, links=manifest.links)


def _run(work: Callable[[ClusterJobs], Awaitable[Any]], name: str) -> Any:
    """Run *work* on the jobs of cluster *name* to its end, from any thread (in Jupyter too:
    a thread of its own runs the event loop)."""
    from concurrent.futures import ThreadPoolExecutor

    async def main() -> Any:
        async with ClusterJobs.of(name) as jobs:
            return await work(jobs)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def cluster_name(cluster: Any) -> str:
    """The name of *cluster*: a named cluster's name, or an SSHCluster that is one.

    Raises
    ------
    ConfigError
        An SSHCluster that is not named (jobs live beside a named cluster's scheduler).
    """
    if isinstance(cluster, str):
        return cluster
    kept = getattr(cluster, "kept", None)
    if kept is None:
        raise ConfigError("cluster", "jobs need a named cluster (they run beside its scheduler "
                          "and outlive this process)",
                          remedy="Start it with SSHCluster(..., name='NAME', "
                          "shutdown_on_close=False) or `dask-ssh up --name NAME`.")
    return str(kept.policy.name)


class Job:
    """A job of a named cluster, seen from Python (synchronous; see :func:`submit_script`).

    Attributes
    ----------
    cluster : str
        The cluster's name.
    id : str
        The job's id.
    record : JobRecord
        Its record as last read (:meth:`refresh` reads it again).
    """

    def __init__(self, cluster: str, record: JobRecord) -> None:
        self.cluster = cluster
        self.id = record.id
        self.record = record

    def __repr__(self) -> str:
        return f"<Job {self.id} of {self.cluster}: {self.record.describe()}>"

    def refresh(self) -> JobRecord:
        """Read its record on the scheduler host now."""
        found = _run(lambda jobs: jobs.jobs(), self.cluster)
        self.record = next((j for j in found if j.id == self.id), self.record)
        return self.record

    @property
    def status(self) -> str:
        """``running``, ``succeeded``, ``failed``, ``stopped`` or ``lost``, probed now."""
        return self.refresh().status

    @property
    def exit_code(self) -> int | None:
        """Its exit status (128+N for signal N) once it ended, else None."""
        record = self.record if self.record.done else self.refresh()
        return record.exit_status() if record.done else None

    def logs(self) -> str:
        """What it wrote so far (stdout and stderr, kept on the scheduler host)."""
        chunks: list[bytes] = []
        _run(lambda jobs: jobs.follow(self.id, chunks.append, follow=False), self.cluster)
        return b"".join(chunks).decode("utf-8", "replace")

    def wait(self, timeout: float | None = None) -> int:
        """Wait until it ends (at most *timeout* seconds: ``TimeoutError``); its exit status."""
        async def wait(jobs: ClusterJobs) -> JobRecord:
            return await asyncio.wait_for(jobs.wait(self.id), timeout)

        self.record = _run(wait, self.cluster)
        return self.record.exit_status()

    def stop(self, grace: float = 5.0) -> JobRecord:
        """Stop it (SIGINT, SIGTERM, SIGKILL to all of it, *grace* s apart); its record."""
        self.record, _ = _run(lambda jobs: jobs.stop(self.id, grace), self.cluster)
        return self.record


def submit_script(cluster: Any, path: str | Path, args: Sequence[str] = (),
                  upload: Sequence[str] = (), env: Mapping[str, str] | None = None,
                  name: str | None = None, timeout: float | None = None) -> Job:
    """Run the script *path* as a job of the named *cluster* (its name, or its SSHCluster).

    As ``dask-ssh submit --detach``: returns once it runs; :meth:`Job.wait`,
    :meth:`Job.logs` and :meth:`Job.stop` follow it (also from another
    process: :func:`jobs`).

    Examples
    --------
    >>> job = submit_script("lab", "train.py", ["--epochs", "3"])    # doctest: +SKIP
    >>> job.wait(), job.logs()                                       # doctest: +SKIP
    (0, 'epoch 0: ...')
    """
    target = cluster_name(cluster)
    record = _run(lambda jobs: jobs.submit(path, args, upload=upload, env=env, name=name,
                                           timeout=timeout), target)
    return Job(target, record)


def jobs(cluster: Any) -> list[Job]:
    """Every job of the named *cluster* (its name, or its SSHCluster), oldest first."""
    target = cluster_name(cluster)
    return [Job(target, r) for r in _run(lambda c: c.jobs(), target)]
