"""Pure builders of what runs remotely: the shell command, the spec, the stdin preamble.

Nothing here does I/O on the network; it is what ``--dry-run`` and
:meth:`sshdeploy.SSHCluster.remote_commands` show users. The agent program itself
(:mod:`sshdeploy.remote.agent`) travels as text on stdin, so the command line holds
no options, no config and no secrets.
"""

from __future__ import annotations

import base64
import functools
import json
import shlex
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle

from .hosts import Host

# The wire constants live in the agent (it cannot import them: it travels alone);
# importing its protocol part is cheap, it imports only the standard library at top level.
from .remote.agent import PARTS as AGENT_PARTS
from .remote.agent.protocol import EVENT as EVENT_MARK
from .remote.agent.protocol import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    EXIT_SETUP_FAILED,
    MARK_ENV,
)
from .roles import AgentRole

__all__ = [
    "DEEP_PROBE",
    "EVENT_MARK",
    "EXIT_NOT_EXECUTABLE",
    "EXIT_NOT_FOUND",
    "EXIT_SETUP_FAILED",
    "KEPT_PARTS",
    "LAUNCHER",
    "MARK_ENV",
    "PROBE",
    "AgentSpec",
    "Describe",
    "agent_bundle",
    "build_bundle",
    "build_command",
    "build_gpu_probe_command",
    "build_probe_command",
    "build_script_command",
    "cluster_mark",
    "encode_kwargs",
    "encode_message",
    "envremote_bundle",
    "in_login_shell",
    "join_setup",
    "program_text",
    "script_preamble",
    "stdin_preamble",
    "tagger_source",
]


def _shell_printf(stage: str) -> str:
    """A POSIX ``printf`` of the stage event, with the shell's pid (``$$``)."""
    mark = "".join(chr(b) if 32 <= b < 127 else f"\\{b:03o}" for b in EVENT_MARK)
    return f"printf '{mark}{{\"ev\": \"stage\", \"stage\": \"{stage}\", \"pid\": %s}}\\n' \"$$\""


def program_text(name: str, one_line: bool = False) -> str:
    """Return the remote program ``sshdeploy/remote/<name>.py`` as sent on a command line.

    Comment-only and blank lines are dropped (they would only lengthen the
    command users see in ``--dry-run``); the code is sent as written.

    Parameters
    ----------
    name : str
        The module's name in :mod:`sshdeploy.remote`.
    one_line : bool
        Join the statements with ``;`` (the program must be flat: one simple
        statement per line, none indented).

    Examples
    --------
    >>> program_text("launcher", one_line=True).startswith("import os;import sys;")
    True
    """
    source = (REMOTE / f"{name}.py").read_text()
    lines = [ln for ln in source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not one_line:
        return "".join(line + "\n" for line in lines)
    if any(ln[0].isspace() or ln.rstrip().endswith((":", "(", ",", "\\")) for ln in lines):
        raise ValueError(f"remote/{name}.py is not flat: it cannot be sent as one line")
    return ";".join(lines)


#: Where the programs that run on the hosts live (:mod:`sshdeploy.remote`).
REMOTE = Path(__file__).with_name("remote")

#: Say "python started" (stage event with our pid), read the agent's loader
#: from stdin (length-prefixed) and run it (:mod:`sshdeploy.remote.launcher`).
LAUNCHER = program_text("launcher", one_line=True)


def build_bundle(parts: Sequence[tuple[str, bytes]]) -> bytes:
    """Return what the launcher reads: the loader, then the *parts* it runs as one package.

    The loader (:mod:`sshdeploy.remote.loader`) comes length-prefixed, as the
    launcher reads it; then one line of the parts' names, in the order given
    (each before the parts that import it), then each part's source,
    length-prefixed.

    Examples
    --------
    >>> data = build_bundle([("a", b"A = 1\\n"), ("main", b"def main(): pass\\n")])
    >>> data.split(b"\\n", 1)[0] == b"%d" % len((REMOTE / "loader.py").read_bytes())
    True
    >>> data.endswith(b"a main\\n6\\nA = 1\\n17\\ndef main(): pass\\n")
    True
    """
    out = _block((REMOTE / "loader.py").read_bytes())
    out += " ".join(name for name, _ in parts).encode() + b"\n"
    for _, source in parts:
        out += _block(source)
    return out


#: The agent's parts that only a named cluster's agents (and its host operations and
#: jobs) run: an ordinary cluster's agents are sent the others (~40 % less to send
#: and compile on every agent start).
KEPT_PARTS = ("jobs", "marks", "keep")


@functools.lru_cache(maxsize=2)
def agent_bundle(kept: bool = True) -> bytes:
    """Return the remote agent as sent to a host: the loader and the agent's parts.

    The parts (:mod:`sshdeploy.remote.agent`) go in the order of its ``PARTS``:
    each after the parts it imports; without *kept* (an ordinary cluster's
    agent), not the :data:`KEPT_PARTS`.
    """
    return build_bundle([(name, (REMOTE / "agent" / f"{name}.py").read_bytes())
                         for name in AGENT_PARTS if kept or name not in KEPT_PARTS])


@functools.lru_cache(maxsize=1)
def envremote_bundle() -> bytes:
    """Return what the environment stage's script reads first on stdin.

    For :func:`build_script_command`: the loader (which :data:`SCRIPT_LAUNCHER`
    runs), then two parts: the agent's ``facts`` (what a probe reports, read as
    the agent reads it) and :mod:`sshdeploy.remote.envremote` as ``main``,
    which then reads the operation from the rest of stdin.
    """
    return build_bundle([("facts", (REMOTE / "agent" / "facts.py").read_bytes()),
                         ("main", (REMOTE / "envremote.py").read_bytes())])


@functools.lru_cache(maxsize=1)
def tagger_source() -> bytes:
    """Return the source of the worker-side output tagger (:mod:`sshdeploy.remote.tagger`)."""
    return (REMOTE / "tagger.py").read_bytes()


def join_setup(setup: str | Sequence[str] | None) -> str | None:
    """Return the setup commands as one shell list that stops at the first failure.

    Examples
    --------
    >>> print(join_setup(["module load python", "conda activate x"]))
    module load python &&
    conda activate x
    >>> join_setup("source env.sh"), join_setup([]), join_setup(None)
    ('source env.sh', None, None)
    """
    if setup is None or isinstance(setup, str):
        return setup.strip() or None if setup is not None else None
    lines = [str(cmd).strip() for cmd in setup if str(cmd).strip()]
    return " &&\n".join(lines) or None


def in_login_shell(command: str, login_shell: bool) -> str:
    """Run *command* in the user's login shell (``$SHELL -l``) when *login_shell*.

    For hosts whose ``module`` command or conda initialisation is only set up by
    login scripts (``/etc/profile``, ``~/.bash_profile``). The login shell
    replaces the first one (``exec``), so its pid stays the process group's.

    Examples
    --------
    >>> in_login_shell("true", False)
    'true'
    >>> print(in_login_shell("echo $$", True))
    exec "${SHELL:-/bin/sh}" -l -c 'echo $$'
    """
    if not login_shell:
        return command
    return f'exec "${{SHELL:-/bin/sh}}" -l -c {shlex.quote(command)}'


def cluster_mark(keep: Mapping[str, Any] | None) -> str | None:
    """Return the mark of a named cluster's processes (``NAME:SESSION``), None for another.

    *keep* is what its agents are sent (:meth:`sshdeploy.named.policy.KeepPolicy.spec`):
    the name, and the session of the controller that starts them.

    Examples
    --------
    >>> cluster_mark({"name": "lab", "session": "1f2e3d4c"}), cluster_mark(None)
    ('lab:1f2e3d4c', None)
    """
    if not keep or not keep.get("name"):
        return None
    session = keep.get("session")
    return f"{keep['name']}:{session}" if session else str(keep["name"])


def build_command(python: str, setup: str | None = None, login_shell: bool = False,
                  mark: str | None = None) -> str:
    """Return the remote shell command that starts the agent.

    It reports its progress as ``stage`` events on stdout (see
    :mod:`sshdeploy.remote.agent`): ``login`` with the shell's pid first (the
    process group to kill with :func:`build_kill_command` if the start
    stalls), ``setup`` once the setup commands are done, then ``python``
    from the interpreter before it reads the agent.

    Parameters
    ----------
    python : str
        The remote interpreter (a path or a name found on the remote PATH).
    setup : str, optional
        Shell commands run first in the same shell (``conda activate x``,
        ``module load y``), as one shell list: the agent starts only if it
        succeeds, i.e. if its last command does (join lines with ``&&`` to
        stop at the first failure; :func:`join_setup` does it for a list).
    login_shell : bool
        Run everything in the user's login shell (:func:`in_login_shell`).
    mark : str, optional
        A named cluster's mark (:func:`cluster_mark`), exported as
        ``SSHDEPLOY_CLUSTER`` before anything runs, so that every process of
        the cluster on the host (shell, setup, agent, scheduler, Nannies,
        workers) carries it: ``dask-ssh down`` finds them by it
        (:mod:`sshdeploy.remote.agent.marks`).

    Returns
    -------
    str
        One shell command line.

    Examples
    --------
    >>> cmd = build_command("/opt/py/bin/python3")
    >>> cmd.startswith("printf ")
    True
    >>> cmd.splitlines()[-1].startswith("exec /opt/py/bin/python3 -u -c ")
    True
    >>> build_command("python3", mark="lab:1f2e3d4c").splitlines()[0]
    'export SSHDEPLOY_CLUSTER=lab:1f2e3d4c'
    """
    launch = f"exec {shlex.quote(python)} -u -c {shlex.quote(LAUNCHER)}"
    if setup and setup.strip():
        launch = f"{_shell_printf('setup')}\n{launch}"
    command = in_login_shell(f"{_shell_printf('login')}\n{_after_setup(setup, launch)}",
                             login_shell)
    if mark:
        command = f"export {MARK_ENV}={shlex.quote(mark)}\n{command}"
    return command


def _after_setup(setup: str | None, command: str) -> str:
    """Prefix *command* with the setup commands, if any.

    The setup may neither read the agent's stdin nor write to stdout (the
    protocol): its output goes to stderr, where it is logged.
    """
    if setup and setup.strip():
        return f"{{ {setup.strip()}\n}} </dev/null >&2 || exit {EXIT_SETUP_FAILED}\n{command}"
    return command


@dataclass(frozen=True)
class AgentSpec:
    """What one agent is told on start (the first line of its stdin).

    Parameters
    ----------
    role : {"scheduler", "workers"}
        What this agent runs.
    label : str
        Prefix for its own output (``"scheduler node1"`` or ``"node2"``).
    config : str
        ``dask.config.serialize`` of the controller's config, or "" for none.
    env : Mapping[str, str]
        Environment variables for every remote process.
    heartbeat : float
        Seconds of silence from the controller after which the agent kills
        everything it started.
    mp_method : str
        ``distributed.worker.multiprocessing-method`` for the workers.
    keep : Mapping, optional
        A named cluster's agent that outlives its controller:
        ``{"name", "idle_timeout", "max_lifetime", "death_timeout"}``.
    op : str, optional
        Instead of running anything, one operation on the files of the named
        cluster ``keep["name"]`` (``probe``, ``write``, ``kill``, ``remove``:
        :func:`sshdeploy.remote.agent.keep.keep_op`), answered by one ``answer`` event.
    data : object, optional
        What ``op="write"`` stores.
    describe : sequence of str, optional
        Say what the host is as the agent starts, before it imports anything
        (a ``described`` event: :func:`sshdeploy.remote.agent.facts.describe`
        with these packages), for the version gate.
    """

    role: AgentRole
    label: str
    config: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    heartbeat: float = 30.0
    mp_method: str = "forkserver"
    keep: Mapping[str, Any] | None = None
    op: str | None = None
    data: Any = None
    describe: Sequence[str] | None = None

    def to_json(self) -> str:
        """Return the spec as one JSON line (without the newline)."""
        spec: dict[str, Any] = {
            "role": self.role,
            "label": self.label,
            "config": self.config,
            "env": dict(self.env),
            "heartbeat": self.heartbeat,
            "mp_method": self.mp_method,
        }
        if self.keep is not None:
            spec["keep"] = dict(self.keep)
        if self.op is not None:
            spec.update(op=self.op, data=self.data)
        if self.describe is not None:
            spec["describe"] = list(self.describe)
        return json.dumps(spec)


def stdin_preamble(spec: AgentSpec) -> bytes:
    """Return the bytes written first to the agent's stdin: its code, the tagger's, its spec.

    Each code block is length-prefixed (``b"<n>\\n"`` then n bytes): the
    launcher reads the loader, the loader the agent's parts (:func:`agent_bundle`),
    the agent the tagger's code, then one JSON line.
    """
    kept = spec.keep is not None or spec.op is not None
    return agent_bundle(kept) + _block(tagger_source()) + spec.to_json().encode() + b"\n"


def _block(data: bytes) -> bytes:
    """Return *data* length-prefixed: ``b"<n>\\n"`` then its n bytes."""
    return b"%d\n" % len(data) + data


def encode_kwargs(kwargs: Mapping[str, Any]) -> str:
    """Pickle keyword arguments for the wire (they may hold Security objects etc.)."""
    return base64.b64encode(cloudpickle.dumps(dict(kwargs))).decode()


def encode_message(cmd: str, kwargs: Mapping[str, Any] | None = None, **fields: Any) -> bytes:
    """Return one command line for the agent's stdin.

    Examples
    --------
    >>> encode_message("ping")
    b'{"cmd": "ping"}\\n'
    """
    msg: dict[str, Any] = {"cmd": cmd, **fields}
    if kwargs:
        msg["kw"] = encode_kwargs(kwargs)
    return (json.dumps(msg) + "\n").encode()


#: Printed by the preflight probe: interpreter and versions, as one JSON line, read
#: from the packages' metadata (:mod:`sshdeploy.remote.probe`, ~0.01 CPU-s).
PROBE = program_text("probe")

#: The importing probe: imports dask and distributed for their versions (~0.5 CPU-s;
#: :mod:`sshdeploy.remote.deep_probe`).
DEEP_PROBE = program_text("deep_probe")


def build_probe_command(python: str, setup: str | None = None, deep: bool = False,
                        login_shell: bool = False) -> str:
    """Return the remote command of the preflight probe (starts nothing).

    Parameters
    ----------
    python : str
        The remote interpreter.
    setup : str, optional
        Shell commands run first (as in :func:`build_command`).
    deep : bool
        Import dask and distributed (slow, but proves they import) instead of
        reading their versions from the packages' metadata.

    Returns
    -------
    str
        One shell command line; it prints one JSON line ``{"python",
        "versions": {"python", "dask", "distributed"}, "error"}``.

    Examples
    --------
    >>> "import dask,distributed" in build_probe_command("python3")
    False
    >>> "import dask,distributed" in build_probe_command("python3", deep=True)
    True
    """
    probe = DEEP_PROBE if deep else PROBE
    return in_login_shell(
        _after_setup(setup, f"exec {shlex.quote(python)} -c {shlex.quote(probe)}"), login_shell)


def build_gpu_probe_command(python: str, setup: str | None = None, login_shell: bool = False,
                            visible: str | None = None) -> tuple[str, bytes]:
    """Return the remote command that finds the host's GPUs, and its stdin (starts nothing).

    The probe (:mod:`sshdeploy.remote.gpus`) comes on stdin, as the environment
    stage's script does (:func:`build_script_command`), and runs where the
    workers will: after the setup commands, in the login shell if asked, with
    the cluster's own ``CUDA_VISIBLE_DEVICES`` (*visible*, from ``env=``) if
    it sets one. Its last line of output is one JSON line.

    Examples
    --------
    >>> cmd, stdin = build_gpu_probe_command("python3", visible="0,1")
    >>> cmd.splitlines()[1], stdin.startswith(b"%d\\n" % len(gpu_probe_source()))
    ('export CUDA_VISIBLE_DEVICES=0,1', True)
    """
    launch = f"exec {shlex.quote(python)} -c {shlex.quote(SCRIPT_LAUNCHER)}"
    if visible is not None:  # after the setup: the cluster's env wins, as in the agent
        launch = f"export CUDA_VISIBLE_DEVICES={shlex.quote(visible)}\n{launch}"
    command = in_login_shell(f'echo "$$"\n{_after_setup(setup, launch)}', login_shell)
    return command, script_preamble(gpu_probe_source())


@functools.lru_cache(maxsize=1)
def gpu_probe_source() -> bytes:
    """Return the GPU probe's source (:mod:`sshdeploy.remote.gpus`), run as ``__main__``."""
    return (REMOTE / "gpus.py").read_bytes()


#: Read a length-prefixed script from stdin and run it (the rest of stdin is the script's).
SCRIPT_LAUNCHER = (
    "import sys;exec(compile(sys.stdin.buffer.read(int(sys.stdin.buffer.readline())),"
    '"sshdeploy-envremote","exec"))'
)


def build_script_command(python: str, setup: str | None = None,
                         login_shell: bool = False) -> str:
    """Return the remote command that runs a standard-library script sent on stdin.

    As :func:`build_probe_command`, for the environment and upload stage
    (:mod:`sshdeploy.remote.envremote`): stdin starts with ``b"<n>\\n"`` and the
    script's n bytes (see :func:`script_preamble`), then is the script's.

    Examples
    --------
    >>> build_script_command("python3").splitlines()[1].startswith("exec python3 -c ")
    True
    """
    launch = f"exec {shlex.quote(python)} -c {shlex.quote(SCRIPT_LAUNCHER)}"
    # The shell's pid first: the process group to kill if the setup hangs.
    return in_login_shell(f'echo "$$"\n{_after_setup(setup, launch)}', login_shell)


def script_preamble(source: bytes) -> bytes:
    """Return what precedes a script's own input on stdin: its length and source.

    Examples
    --------
    >>> script_preamble(b"print(1)")
    b'8\\nprint(1)'
    """
    return b"%d\n" % len(source) + source


def build_kill_command(pgid: int) -> str:
    """Return a shell command that kills the remote process group *pgid* (and its session).

    The controller runs it over a second channel of the same connection to
    end a start that stalls before the agent answers (a ``setup`` that hangs,
    a slow import): sshd makes the login shell a session and group leader,
    whose pid the first ``stage`` event gives, and the setup's children are
    in its group. ``pkill -s`` catches what changed group but not session.

    Examples
    --------
    >>> build_kill_command(4242)
    'kill -KILL -- -4242 2>/dev/null; pkill -KILL -s 4242 2>/dev/null; true'
    """
    pgid = int(pgid)
    if pgid <= 1:
        raise ValueError(f"refusing to kill process group {pgid}")
    return f"kill -KILL -- -{pgid} 2>/dev/null; pkill -KILL -s {pgid} 2>/dev/null; true"


@dataclass(frozen=True)
class Launch:
    """How to start agents on a host: interpreter, setup commands, environment."""

    python: str
    setup: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    inherit_config: bool = True
    login_shell: bool = False
    #: For a named cluster kept without its controller: :meth:`KeepPolicy.spec`.
    keep: Mapping[str, Any] | None = None
    #: The workers' multiprocessing start method here (None: the setting); ``spawn``
    #: on GPU hosts (a worker must not inherit a parent's CUDA state).
    mp_method: str | None = None


@dataclass(frozen=True)
class Describe:
    """Ask an agent to say what its host is as it starts: the version gate's facts.

    Attributes
    ----------
    packages : tuple of str
        The packages whose versions it reports (read from their metadata, before
        the agent imports anything: :func:`sshdeploy.remote.agent.facts.describe`).
    told : callable
        Called once per agent with ``(host, description)``, or ``(host, None)``
        when the agent ended (or its start failed) before it said it.
    admit : callable, optional
        Awaited with ``(host, python, description)`` once an agent said hello:
        the gate of a host brought up after the start (a spare, an added host),
        on its agent's words; it raises to refuse the host (its agent is ended).
    """

    packages: tuple[str, ...]
    told: Callable[[Host, dict[str, Any] | None], None]
    admit: Callable[[Host, str, dict[str, Any] | None], Awaitable[None]] | None = None
