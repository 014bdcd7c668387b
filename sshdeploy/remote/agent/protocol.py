"""The agent's protocol: what the controller and the agent say to each other.

The controller imports the wire constants from here (:mod:`sshdeploy.bootstrap`,
:mod:`sshdeploy.ssh.channel`); the agent's other parts too.

Protocol (one JSON object per line):

controller -> agent, on stdin
    after the agent's code (the loader and the parts:
    :func:`sshdeploy.bootstrap.agent_bundle`), the worker-side tagger's code
    (:mod:`sshdeploy.remote.tagger`, length-prefixed the same way), then a
    spec ``{"role", "label", "config",
    "env", "heartbeat", "mp_method"}`` (and ``"describe"``: the packages whose
    versions the version gate compares), then commands ``{"cmd": "start_scheduler"
    | "start_worker" | "stop" | "ping" | "shutdown" | "arm" | "detach", ...}``;
    ``arm`` (a named cluster, once recorded) makes the agent run on without
    its controller, ``detach`` says the controller leaves it; keyword arguments
    travel pickled (base64) in ``"kw"``.
agent -> controller, on stdout, each line starting with :data:`EVENT`
    events ``{"ev": "hello" | "ready" | "failed" | "stopped" | "exited" |
    "logs" | "log" | "fatal" | "bye" | "stage" | "armed" | "described", ...}``;
    ``described`` (asked by the spec's ``describe``) comes before the
    ``import`` stage: the host's interpreter, platform and package versions;
    remote output comes as ``logs`` events, one per read, each a list of
    ``(source, stream, line)``.

Stages of a start, before ``hello`` (``{"ev": "stage", "stage": S, "pid": P}``)
    ``login``
        printed by the remote shell (:func:`sshdeploy.bootstrap.build_command`)
        before the setup commands; P is the shell's pid, which is the pid of
        its process group and session (sshd makes the login shell a session
        leader), so ``kill -KILL -- -P`` (:func:`sshdeploy.bootstrap.build_kill_command`,
        run over a second channel) ends a start stalled in setup, with its
        children; the agent later runs with that pid too (``exec``).
    ``setup``
        printed by the shell once the setup commands succeeded (only if any).
    ``python``
        printed by the launcher, before it reads the agent's code.
    ``import``
        by the agent, before it imports dask and distributed.
    ``hello`` ends the stages: distributed imported, commands are read from
    now on. Before it the agent reads neither commands nor EOF, so a start
    aborted before ``hello`` must kill the group instead of closing stdin.
"""

# Keep this file Python 3.10 compatible: the standard library and other parts only.
from __future__ import annotations

import base64
import pickle
from typing import Any

#: The ``stage`` events of a start, in order: ``login`` and ``setup`` come from the
#: login shell (:func:`sshdeploy.bootstrap.build_command`), ``python`` from the
#: launcher (``remote/launcher.py``), ``import`` from here. Each has a row in
#: :data:`sshdeploy.stages.STAGES` (a unit test checks both ways).
STAGES = ("login", "setup", "python", "import")
STAGE_IMPORT = STAGES[3]

#: Starts every line a worker's tagger writes (see :mod:`sshdeploy.remote.tagger`).
TAG = "\x1esshdeploy\x1f"
#: Starts every event line on stdout, so that whatever else reaches stdout (a
#: login script that prints, a setup command) is never taken for an event.
EVENT = b"\x1esshdeploy-event\x1f"

#: Exit status of the agent after an emergency exit (EOF, heartbeat, SIGTERM).
EXIT_EMERGENCY = 3
#: Exit status of the agent when dask or distributed cannot be imported.
EXIT_IMPORT = 4
#: Exit status of the remote shell when the ``setup`` command failed (a value
#: the shell itself never uses).
EXIT_SETUP_FAILED = 121
#: Exit status the remote shell gives when the interpreter exists but cannot run.
EXIT_NOT_EXECUTABLE = 126
#: Exit status the remote shell gives when the interpreter is not found.
EXIT_NOT_FOUND = 127

#: The environment variable that marks every process of a named cluster on its hosts
#: (``NAME:SESSION``), exported first by its remote command so every child inherits it:
#: what ``dask-ssh down`` finds them by when no file says they run (:mod:`.marks`).
MARK_ENV = "SSHDEPLOY_CLUSTER"

#: The module name the worker-side tagger gets on the hosts.
TAGGER_MODULE = "sshdeploy_tagger"
#: A line of the agent's log pipe longer than this is forwarded in pieces.
MAX_LINE = 65536

Message = dict[str, Any]


def decode_kwargs(msg: Message) -> dict[str, Any]:
    """Return the keyword arguments a command carries (pickled, base64) in ``"kw"``."""
    return pickle.loads(base64.b64decode(msg["kw"])) if msg.get("kw") else {}


def read_block(stream: Any) -> bytes:
    """Read one length-prefixed block (``b"<n>\\n"`` then n bytes) from *stream*."""
    return bytes(stream.read(int(stream.readline())))


class LineSplitter:
    """Split a byte stream into lines in linear time, holding at most *limit* bytes.

    Only each new chunk is split; the unfinished line is kept as a list of
    pieces and handed out as a line of its own once it reaches *limit*.
    (The same as :class:`sshdeploy.remote.tagger.LineSplitter`: the tagger travels alone,
    a worker loads it by file.)
    """

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self.pending: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Return the lines that *data* completes (without their newline)."""
        parts = data.split(b"\n")
        if len(parts) == 1:
            self.pending.append(data)
            self.size += len(data)
            if self.size >= self.limit:
                return self.flush()
            return []
        first = b"".join([*self.pending, parts[0]])
        last = parts[-1]
        self.pending = [last] if last else []
        self.size = len(last)
        return [first, *parts[1:-1]]

    def flush(self) -> list[bytes]:
        """Return what is pending as one line, or nothing."""
        line = b"".join(self.pending)
        self.pending, self.size = [], 0
        return [line] if line else []
