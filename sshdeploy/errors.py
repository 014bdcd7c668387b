"""The error classes of sshdeploy.

Every error names *where* it happened (a host as ``user@host:port``, a role, a
worker name, or a hostfile and line), *what* failed, and *what to do next*.
They all derive from :class:`SSHDeployError`, so ``except SSHDeployError``
catches every failure that sshdeploy diagnosed itself; it derives from
:class:`RuntimeError`, as distributed's own SSHCluster errors do, so code
written for distributed keeps catching them.

Each class is a dataclass built with keywords. Its message is computed once
and passed to :class:`Exception` (so ``str(err)`` and ``err.args`` hold it),
and ``__reduce__`` rebuilds it from its fields, so errors pickle and copy
(asyncio copies exceptions; distributed and users pickle them). Each class
carries the exit status of ``dask-ssh`` for it, as click's exceptions do.

This module is a leaf: it imports neither asyncssh nor distributed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


def _rebuild(cls: type[SSHDeployError], fields: dict[str, Any]) -> SSHDeployError:
    """Unpickle an error from its fields."""
    return cls(**fields)


class SSHDeployError(RuntimeError):
    """Root of every error that sshdeploy raises on purpose.

    Subclasses are dataclasses whose fields say where and why; ``str(err)``
    is a one-paragraph message ending with what to do next.

    Examples
    --------
    >>> import pickle
    >>> err = ConfigError("hosts", "none given", remedy="Pass hosts=[...].")
    >>> str(pickle.loads(pickle.dumps(err))) == str(err), err.exit_code
    (True, 2)
    """

    #: Exit status of ``dask-ssh`` when this error ends it.
    exit_code: ClassVar[int] = 1

    def __post_init__(self) -> None:
        super().__init__(self.message())

    def message(self) -> str:
        """Return the full, user-facing message (built from the fields)."""
        return ""

    def __reduce__(self) -> str | tuple[Any, ...]:
        if not dataclasses.is_dataclass(self):
            return super().__reduce__()
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        return (_rebuild, (type(self), values), self.__dict__ or None)


@dataclass(eq=False)
class HostfileError(SSHDeployError, ValueError):
    """A hostfile (or a host string) could not be parsed.

    Parameters
    ----------
    path : str
        The file, or ``"<hosts>"`` for a host given on the command line.
    line : int
        1-based line number (0 when not known).
    reason : str
        What is wrong with the line.
    text : str
        The offending text.
    """

    path: str
    line: int
    reason: str
    text: str = ""
    remedy: str = (
        "Fix the line: one host per line, [user@]host[:port] followed by optional "
        "key=value settings (slots=, nthreads=, memory-limit=, remote-python=, gpus=); "
        "'#' starts a comment."
    )

    #: The remedy of a host given as an argument (no file, no line): no hostfile advice.
    HOST_REMEDY: ClassVar[str] = (
        "Give each host as [user@]host[:port] (node[1-4] for a range), optionally followed, "
        "in the same argument, by key=value settings (slots=, nthreads=, memory-limit=, "
        "remote-python=, gpus=)."
    )

    def message(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        shown = f" ({self.text.strip()!r})" if self.text.strip() else ""
        return f"{where}: {self.reason}{shown}. {self.advice()}"

    def advice(self) -> str:
        """The remedy: how to fix the line of a file, or how to write a host given as such."""
        default = type(self).__dataclass_fields__["remedy"].default
        return self.HOST_REMEDY if not self.line and self.remedy == default else self.remedy


@dataclass(eq=False)
class HostError(SSHDeployError):
    """A failure tied to one host (and possibly one role or worker).

    Parameters
    ----------
    host : str
        The host as ``user@host:port``.
    what : str
        What failed, in a few words.
    cause : str
        The underlying reason (the exception text, exit status, ...).
    role : str
        ``"ssh"``, ``"scheduler"``, ``"worker"``, ``"agent"`` or ``"preflight"``.
    name : str or None
        The worker name, when one worker is concerned.
    remedy : str
        What the user should do.
    stderr_tail : str
        The last lines the remote process wrote, if any.
    """

    host: str
    what: str
    cause: str = ""
    role: str = "agent"
    name: str | None = None
    remedy: str = ""
    stderr_tail: str = ""

    def message(self) -> str:
        who = self.name or self.role
        text = f"[{self.host}] {who}: {self.what}"
        if self.cause:
            text += f": {self.cause}"
        text = text.rstrip(".") + "."
        if self.remedy:
            text += f" {self.remedy}"
        if self.stderr_tail.strip():
            tail = "\n".join("    " + ln for ln in self.stderr_tail.strip().splitlines())
            text += f"\n  last remote output:\n{tail}"
        return text


@dataclass(eq=False)
class ConnectError(HostError):
    """The host could not be reached over TCP/SSH (refused, timed out, DNS)."""

    role: str = "ssh"
    what: str = "cannot connect"
    remedy: str = (
        "Check that the host name resolves and sshd listens on that port "
        "(try `ssh -p PORT user@host true`), or raise --connect-timeout."
    )


@dataclass(eq=False)
class AuthenticationError(HostError):
    """The SSH server refused every key or password offered."""

    role: str = "ssh"
    what: str = "authentication refused"
    remedy: str = (
        "Give the right key (connect_options={'client_keys': [...]} or "
        "--ssh-private-key), load it into ssh-agent, or check the user name."
    )


@dataclass(eq=False)
class HostKeyError(HostError):
    """The server's host key is unknown or differs from known_hosts."""

    role: str = "ssh"
    what: str = "host key not trusted"
    remedy: str = (
        "Add the host's key to known_hosts (`ssh-keyscan -p PORT host >> "
        "~/.ssh/known_hosts` after checking it), or pass known_hosts=PATH; "
        "if the key changed on purpose, remove the old line first."
    )


@dataclass(eq=False)
class RemotePythonError(HostError):
    """The remote Python interpreter is missing or cannot run the agent."""

    what: str = "remote Python not usable"
    remedy: str = (
        "Install Python 3.10+ on that host or point remote_python / "
        "--remote-python at the interpreter of the environment with dask installed."
    )


@dataclass(eq=False)
class RemoteImportError(HostError):
    """dask or distributed is not importable with the remote Python."""

    what: str = "distributed is not importable"
    remedy: str = (
        "Install the same dask/distributed versions on that host "
        "(pip install 'distributed==X'), or set remote_python to an environment "
        "that has them."
    )


@dataclass(eq=False)
class VersionMismatchError(HostError):
    """Python, dask or distributed differ between the controller and a host."""

    what: str = "version mismatch"
    remedy: str = (
        "Install matching versions on both sides, or set "
        "sshdeploy.version-check to 'warn' to go on anyway."
    )


@dataclass(eq=False)
class StartError(HostError):
    """A scheduler or worker did not start (exit during start-up, or deadline)."""

    what: str = "failed to start"
    remedy: str = "Read the remote output below; fix the option or the environment it names."


@dataclass(eq=False)
class GPUError(HostError):
    """A host asked for GPUs (``gpus=``) does not have the GPUs asked for, or they
    could not be read; *cause* says what was found there."""

    role: str = "gpus"
    what: str = "the GPUs asked for are not there"
    remedy: str = (
        "Check the host with `dask-ssh --gpus auto --check HOST` (and `nvidia-smi` there); "
        "ask for GPUs it has (gpus='auto', a smaller count, other indexes), or leave "
        "gpus= off that host."
    )


@dataclass(eq=False)
class MultiHostError(SSHDeployError):
    """Several hosts failed at once; one entry per host.

    Parameters
    ----------
    failures : Mapping[str, BaseException]
        Host (``user@host:port``) to the error raised for it.
    action : str
        What was being done on every host.
    """

    failures: Mapping[str, BaseException] = field(default_factory=dict)
    action: str = "start"

    def message(self) -> str:
        lines = [f"{len(self.failures)} host(s) failed to {self.action}:"]
        for _host, err in self.failures.items():
            lines.append("  - " + str(err).replace("\n", "\n    "))
        return "\n".join(lines)


@dataclass(eq=False)
class ConfigError(SSHDeployError, ValueError):
    """An argument or setting is invalid (e.g. a per-host list of the wrong length).

    Parameters
    ----------
    setting : str
        The argument or setting at fault (``"connect_options"``,
        ``"sshdeploy.start-timeout"``, ``"worker_options['nthreads']"``).
    reason : str
        What is wrong with it.
    remedy : str
        What to give instead.
    """

    exit_code: ClassVar[int] = 2

    setting: str
    reason: str
    remedy: str = ""

    def message(self) -> str:
        return f"{self.setting}: {self.reason}. {self.remedy}".rstrip(" .") + "."


@dataclass(eq=False)
class ScaleError(ConfigError):
    """``scale(n)`` asks for more workers than a cluster with GPU hosts has slots (one
    worker per GPU, plus ``cpu_workers``): refused, nothing started or stopped.

    Parameters
    ----------
    setting : str
        The call, e.g. ``"scale(10)"``.
    reason : str
        The arithmetic: the slots of each host and their sum.
    wanted, slots : int
        The workers asked for, and the slots there are.

    Examples
    --------
    >>> print(ScaleError("scale(3)", "asks for 3 workers, more than the 2 slots", wanted=3,
    ...                  slots=2, remedy="Scale to at most 2."))
    scale(3): asks for 3 workers, more than the 2 slots. Scale to at most 2.
    """

    wanted: int = 0
    slots: int = 0


@dataclass(eq=False)
class ClusterStateError(SSHDeployError):
    """The state file of a named cluster cannot be used (unreadable, corrupt, locked).

    Parameters
    ----------
    path : str
        The state file.
    reason : str
        What is wrong with it.
    remedy : str
        What to do.
    """

    path: str
    reason: str
    remedy: str = ("Run `dask-ssh clean` to remove the state of clusters that are gone, or "
                   "delete the file if the cluster it names no longer runs.")

    def message(self) -> str:
        return f"{self.path}: {self.reason}. {self.remedy}"


@dataclass(eq=False)
class ClusterNotFoundError(SSHDeployError):
    """No named cluster of that name runs (or none is known here).

    Parameters
    ----------
    name : str
        The cluster's name.
    state : str
        What is known of it: ``unknown``, ``gone``, ``stopped``, ``unreachable``.
    cause : str
        Why, in words (the scheduler host's answer, the reason it stopped).
    remedy : str
        What to do.
    """

    name: str
    state: str = "unknown"
    cause: str = ""
    remedy: str = ("`dask-ssh list` shows the named clusters; start one with "
                   "`dask-ssh up --name NAME HOST...`.")

    def message(self) -> str:
        cause = f": {self.cause}" if self.cause else ""
        return f"cluster {self.name!r} is {self.state}{cause}. {self.remedy}"


@dataclass(eq=False)
class ClusterStopError(SSHDeployError):
    """A named cluster could not be verified stopped on every host: its record is kept.

    Parameters
    ----------
    name : str
        The cluster's name.
    left : dict
        ``user@host:port`` -> what is left or why the host could not be
        asked (``unreachable: ...``, ``2 process(es) still running: ...``).
    scheduler_host : str
        Its scheduler's host: when that one is among *left*, the cluster may
        still run.
    hosts : int
        The cluster's hosts (0: not said).
    """

    name: str
    left: dict[str, str] = field(default_factory=dict)
    scheduler_host: str = ""
    hosts: int = 0

    def message(self) -> str:
        where = "; ".join(f"{h}: {why}" for h, why in self.left.items())
        of = f" of {self.hosts}" if self.hosts else ""
        if self.scheduler_host in self.left:
            then = ("Its scheduler host was not verified, so the cluster may still run: run "
                    f"`dask-ssh down {self.name}` again once the host answers.")
        else:
            then = ("Its scheduler is stopped, so its workers there stop by themselves within "
                    "their death_timeout (60 s by default) once they cannot reach it; run "
                    f"`dask-ssh down {self.name}` again once the host(s) answer, to verify "
                    "that and forget it.")
        return (f"cluster {self.name!r} was not verified stopped on {len(self.left)}{of} "
                f"host(s) ({where}); its record is kept. {then}")


@dataclass(eq=False)
class WorkersNotReadyError(SSHDeployError):
    """A named cluster did not reach the number of workers asked for in time.

    Parameters
    ----------
    name : str
        The cluster's name.
    wanted : int
        The workers it was scaled to.
    running : int
        The workers running when the wait ended.
    waited : float
        Seconds waited (``sshdeploy.start-timeout``).
    remedy : str
        What to do.
    """

    name: str
    wanted: int
    running: int
    waited: float
    remedy: str = ("The cluster keeps trying; `dask-ssh status NAME` shows each host and its "
                   "error, `dask-ssh logs NAME` what the workers wrote.")

    def message(self) -> str:
        return (f"cluster {self.name!r}: {self.running} of {self.wanted} worker(s) running "
                f"after {self.waited:.0f} s. {self.remedy.replace('NAME', self.name)}")


@dataclass(eq=False)
class ClusterExistsError(SSHDeployError):
    """A named cluster of that name runs with another spec.

    Parameters
    ----------
    name : str
        The cluster's name.
    differences : list of str
        What differs, one entry per argument (``"hosts: a, b -> a, c"``).
    """

    exit_code: ClassVar[int] = 1

    name: str
    differences: list[str] = field(default_factory=list)
    remedy: str = ("Use another name, stop it first (`dask-ssh down NAME`), or replace it "
                   "(`dask-ssh up --replace`).")

    def message(self) -> str:
        shown = "; ".join(self.differences) or "its spec"
        return (f"cluster {self.name!r} already runs with another spec ({shown}). "
                f"{self.remedy.replace('NAME', self.name)}")


def failures_by_host(errors: Mapping[str, BaseException], action: str) -> SSHDeployError:
    """Return the single error if one host failed, else a :class:`MultiHostError`."""
    if len(errors) == 1:
        (err,) = errors.values()
        if isinstance(err, SSHDeployError):
            return err
    return MultiHostError(failures=dict(errors), action=action)


@dataclass(eq=False)
class EnvironmentMismatchError(SSHDeployError):
    """Hosts differ from this machine in Python, platform or packages (the version gate).

    Parameters
    ----------
    table : str
        One row per difference: host, package, theirs, ours
        (:func:`sshdeploy.env.gate.format_table`).
    hosts : list of str
        The hosts that differ, ``user@host:port``.
    remedy : str
        What to do.
    """

    table: str
    hosts: list[str] = field(default_factory=list)
    remedy: str = (
        "Make those hosts match (pip install the versions in the 'ours' column), bring "
        "this environment to them with environment='sync' (dask-ssh --sync-env), or set "
        "sshdeploy.version-check to 'warn' to go on anyway."
    )

    def message(self) -> str:
        return (f"{len(self.hosts)} host(s) differ from this machine, nothing was started:\n"
                f"{self.table}\n{self.remedy}")


@dataclass(eq=False)
class EnvSyncError(HostError):
    """Sending this environment or the uploaded files to a host failed."""

    role: str = "sync"
    what: str = "environment sync failed"
    remedy: str = (
        "Check the free space and permissions of ~/.cache/sshdeploy on that host "
        "(dask-ssh clean --envs --uploads HOST frees it), then start again."
    )


@dataclass(eq=False)
class UploadError(SSHDeployError, ValueError):
    """A path given to ``upload=`` / ``--upload`` cannot be uploaded.

    Parameters
    ----------
    path : str
        The path as given.
    reason : str
        What is wrong with it.
    """

    exit_code: ClassVar[int] = 2

    path: str
    reason: str
    remedy: str = "Give existing files or directories (relative to the working directory)."

    def message(self) -> str:
        return f"upload {self.path!r}: {self.reason}. {self.remedy}"


@dataclass(eq=False)
class JobError(SSHDeployError):
    """A job of a named cluster cannot be found, started or stopped (``dask-ssh submit``,
    ``jobs``, ``job``).

    Parameters
    ----------
    cluster : str
        The named cluster.
    job : str
        The job's id or name as given ("" before it has one).
    what : str
        What went wrong.
    remedy : str
        What to do.

    Examples
    --------
    >>> print(JobError("lab", "7", "no such job (known: 1, 2)"))
    cluster 'lab': job 7: no such job (known: 1, 2). `dask-ssh jobs lab` lists its jobs.
    """

    cluster: str
    job: str
    what: str
    remedy: str = ""

    def message(self) -> str:
        job = f"job {self.job}: " if self.job else ""
        remedy = self.remedy or f"`dask-ssh jobs {self.cluster}` lists its jobs."
        return f"cluster {self.cluster!r}: {job}{self.what}. {remedy}"
