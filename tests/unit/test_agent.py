"""The remote agent, run for real on this machine (``sh -c`` instead of SSH).

Remote output arrives as ``log`` events (the agent's own notices) or ``logs``
batches of ``(source, stream, line)``; the reader below turns each batch item
into one ``log`` event so that tests assert on lines, not on batching.

Each test starts ``sh -c build_command(sys.executable)`` in its own session,
writes the preamble and talks the agent's JSON-lines protocol. Every read has
a deadline (a reader thread feeds a queue), and teardown kills whatever of the
session is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import rpc
from distributed.comm import CommClosedError

from sshdeploy.bootstrap import (
    EVENT_MARK,
    AgentSpec,
    build_command,
    encode_message,
    stdin_preamble,
)
from sshdeploy.versions import local_versions

pytestmark = pytest.mark.timeout(60)

Event = dict[str, Any]


def live_members(pgid: int) -> list[int]:
    """Pids of the processes of group *pgid* that are not zombies."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s")
        time.sleep(0.05)


class LocalAgent:
    """One agent process and its event stream."""

    def __init__(self, spec: AgentSpec, python: str = sys.executable) -> None:
        self.proc = subprocess.Popen(
            ["sh", "-c", build_command(python)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.pgid = self.proc.pid  # start_new_session: the shell, then python, leads it
        self.events: queue.Queue[Event | None] = queue.Queue()
        self.seen: list[Event] = []
        self.stderr = b""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.send(stdin_preamble(spec))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                if not line.startswith(EVENT_MARK):
                    raise ValueError("no event mark")
                ev = json.loads(line[len(EVENT_MARK):])
            except ValueError:
                self.events.put({"ev": "<not json>", "line": line.decode("utf-8", "replace")})
                continue
            if ev.get("ev") != "logs":
                self.events.put(ev)
                continue
            # a batch of remote output lines: one log event per (source, stream, line)
            for item in ev.get("lines", ()):
                if not (isinstance(item, list) and len(item) == 3
                        and all(isinstance(x, str) for x in item)):
                    self.events.put({"ev": "<bad logs item>", "item": item})
                    continue
                src, stream, text = item
                self.events.put({"ev": "log", "src": src, "stream": stream, "line": text})
        self.events.put(None)  # EOF

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def next(self, timeout: float) -> Event | None:
        """The next event (None at EOF); fail after *timeout* seconds."""
        try:
            ev = self.events.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no event within {timeout} s; seen: {self.summary()}")
        if ev is not None:
            self.seen.append(ev)
        return ev

    def wait_for(self, pred: Callable[[Event], bool], timeout: float) -> Event:
        """Read events until one matches *pred*; fail at EOF or after *timeout* s."""
        deadline = time.monotonic() + timeout
        while True:
            ev = self.next(max(0.01, deadline - time.monotonic()))
            if ev is None:
                pytest.fail(f"agent output ended (status {self.proc.poll()}); "
                            f"seen: {self.summary()}")
            if pred(ev):
                return ev

    def saw(self, pred: Callable[[Event], bool], timeout: float) -> Event:
        """Like :meth:`wait_for`, but an event already read counts too."""
        for ev in self.seen:
            if pred(ev):
                return ev
        return self.wait_for(pred, timeout)

    def ev(self, kind: str, timeout: float = 30, **match: Any) -> Event:
        return self.wait_for(
            lambda e: e.get("ev") == kind and all(e.get(k) == v for k, v in match.items()),
            timeout,
        )

    def drain(self, timeout: float) -> list[Event]:
        """Read every event up to EOF (bounded)."""
        deadline = time.monotonic() + timeout
        out = []
        while (ev := self.next(max(0.01, deadline - time.monotonic()))) is not None:
            out.append(ev)
        return out

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"agent still running after {timeout} s; seen: {self.summary()}")

    def summary(self) -> str:
        events = "\n".join(json.dumps(e)[:300] for e in self.seen[-30:])
        return f"{events}\nstderr: {self.stderr!r}"

    def kill(self) -> None:
        for pid in live_members(self.pgid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        self.proc.wait(10)


@pytest.fixture
def agents() -> Iterator[Callable[..., LocalAgent]]:
    """Start agents; teardown kills every process of their sessions."""
    started: list[LocalAgent] = []

    def start(role: str = "scheduler", label: str = "scheduler test", heartbeat: float = 30,
              python: str = sys.executable, **kw: Any) -> LocalAgent:
        a = LocalAgent(AgentSpec(role=role, label=label, heartbeat=heartbeat, **kw),  # type: ignore[arg-type]
                       python)
        started.append(a)
        return a

    yield start
    for a in started:
        a.kill()
    for a in started:
        # SIGKILLed processes take a moment to die: poll, bounded
        wait_until(lambda a=a: not live_members(a.pgid), 5,  # type: ignore[misc]
                   f"processes of agent group {a.pgid} still alive after SIGKILL")


#: Seconds within which EOF on stdin must leave nothing of an agent running.
EOF_BOUND = 5.0

SCHEDULER_KW = {"host": "127.0.0.1", "port": 0, "dashboard_address": ":0"}


def start_scheduler(agent: LocalAgent) -> Event:
    agent.ev("hello")
    agent.send(encode_message("start_scheduler", SCHEDULER_KW, name="scheduler", timeout=30))
    return agent.wait_for(lambda e: e.get("ev") in ("ready", "failed"), 30)


def worker_message(name: str, scheduler: str, **kw: Any) -> bytes:
    kwargs = {"host": "127.0.0.1", "nthreads": 1, "dashboard_address": ":0", **kw}
    return encode_message("start_worker", kwargs, name=name, scheduler=scheduler, timeout=30)


def scheduler_address(agents: Callable[..., LocalAgent]) -> str:
    """Start a scheduler agent and its scheduler; return the scheduler's address."""
    s = agents()
    ready = start_scheduler(s)
    assert ready["ev"] == "ready", s.summary()
    return str(ready["address"])


def start_one_worker(w: LocalAgent, scheduler: str, timeout: float = 40) -> Event:
    """Have workers agent *w* start worker ``local-0``; return its ``ready`` event."""
    w.ev("hello")
    w.send(worker_message("local-0", scheduler))
    up = w.wait_for(lambda e: e.get("ev") in ("ready", "failed"), timeout)
    assert up["ev"] == "ready", w.summary()
    return up


def shut_down(agent: LocalAgent) -> None:
    """Ask *agent* to shut down: it says ``bye`` and exits 0."""
    agent.send(encode_message("shutdown", timeout=5))
    agent.ev("bye", timeout=20)
    assert agent.wait_exit(10) == 0


def fd_targets(pid: int, lowest: int = 0) -> set[str]:
    """What the file descriptors of *pid* (from *lowest* on) point at."""
    return {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")
            if int(fd) >= lowest}


def channel_ends(agent: LocalAgent) -> set[str]:
    """The agent's ends of its channel: stdin and the protocol fd."""
    return {os.readlink(f"/proc/{agent.proc.pid}/fd/{fd}") for fd in (0, 3)}


# ------------------------------------------------------------------ start-up


def test_hello_reports_pid_python_and_versions(agents: Callable[..., LocalAgent]) -> None:
    a = agents()
    hello = a.ev("hello", timeout=20)
    assert hello["pid"] == a.proc.pid  # `exec`: the shell became the agent
    assert hello["python"] == sys.executable
    assert hello["versions"] == local_versions()
    assert isinstance(hello["hostname"], str) and hello["hostname"]
    # before hello only the stages, each with the agent's pid (the shell exec'd it)
    assert a.seen[-1] is hello
    assert [(e["ev"], e["stage"], e["pid"]) for e in a.seen[:-1]] == [
        ("stage", s, a.proc.pid) for s in ("login", "python", "import")]
    # the agent leads its own process group
    assert os.getpgid(a.proc.pid) == a.pgid


def test_start_scheduler_ready_on_loopback(agents: Callable[..., LocalAgent]) -> None:
    a = agents()
    ready = start_scheduler(a)
    assert ready["ev"] == "ready", a.summary()
    assert ready["name"] == "scheduler"
    assert ready["pid"] == a.proc.pid
    assert ready["address"].startswith("tcp://127.0.0.1:")
    port = int(ready["address"].rsplit(":", 1)[1])
    assert port > 0 and isinstance(ready["dashboard_port"], int)
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # it really listens
    # the scheduler's own log lines come back as log events of this agent
    line = a.saw(lambda e: e.get("ev") == "log" and "Scheduler at:" in e["line"], 10)
    assert line["src"] == "scheduler test" and line["stream"] == "stderr"
    assert ready["address"] in line["line"]


def test_output_flood_is_drained_and_forwarded_in_order(
    agents: Callable[..., LocalAgent],
) -> None:
    """400 kB written during start-up (far beyond a pipe's 64 kB) all arrive, in order."""
    a = agents()
    a.ev("hello")
    flood = "import sys\nfor i in range(20000):\n    print('flood line %05d' % i)\n"
    a.send(encode_message("start_scheduler", {**SCHEDULER_KW, "preload": [flood]},
                          name="scheduler", timeout=30))
    ready = a.wait_for(lambda e: e.get("ev") in ("ready", "failed"), 40)
    assert ready["ev"] == "ready", a.summary()
    a.send(encode_message("shutdown", timeout=5))
    a.ev("bye", timeout=20)
    lines = [e["line"] for e in a.seen if e.get("ev") == "log" and e["line"].startswith("flood")]
    expected = [f"flood line {i:05d}" for i in range(20000)]
    # distributed may run a preload given as text more than once; each run is complete
    assert lines and len(lines) % len(expected) == 0
    assert lines == expected * (len(lines) // len(expected))
    assert {e["src"] for e in a.seen if e.get("ev") == "log"} == {"scheduler test"}
    assert a.wait_exit(10) == 0


def test_start_scheduler_failure_is_reported(agents: Callable[..., LocalAgent]) -> None:
    a = agents()
    a.ev("hello")
    a.send(encode_message("start_scheduler", {**SCHEDULER_KW, "no_such_option": 1},
                          name="scheduler", timeout=30))
    failed = a.wait_for(lambda e: e.get("ev") in ("ready", "failed"), 30)
    assert failed["ev"] == "failed" and failed["name"] == "scheduler"
    assert failed["error"].startswith("TypeError: ")
    assert "no_such_option" in failed["error"]
    assert "Traceback" in failed["tb"]
    # the agent keeps serving: shutdown still works
    shut_down(a)


def test_unknown_and_garbage_commands_are_ignored(agents: Callable[..., LocalAgent]) -> None:
    a = agents()
    a.ev("hello")
    a.send(b"not json at all\n" + encode_message("no_such_command") + encode_message("ping"))
    shut_down(a)


# ------------------------------------------------------------------ lifetime


def test_shutdown_says_bye_and_exits_0(agents: Callable[..., LocalAgent]) -> None:
    a = agents()
    assert start_scheduler(a)["ev"] == "ready", a.summary()
    a.send(encode_message("shutdown", timeout=5))
    bye = a.ev("bye", timeout=20)
    assert bye == {"ev": "bye"}
    rest = a.drain(10)
    assert rest == [], rest  # bye is the last word
    assert a.wait_exit(10) == 0
    wait_until(lambda: not live_members(a.pgid), 5, "the agent's group did not disappear")


def test_eof_stops_the_agent_and_its_whole_group(agents: Callable[..., LocalAgent]) -> None:
    a = agents()
    ready = start_scheduler(a)
    assert ready["ev"] == "ready", a.summary()
    b = agents(role="workers", label="127.0.0.1")
    b.ev("hello")
    b.send(worker_message("local-0", ready["address"]))
    w = b.ev("ready", timeout=40)
    assert w["pid"] != b.proc.pid  # the Nanny's worker process
    assert w["pid"] in live_members(b.pgid)

    t0 = time.monotonic()
    b.close_stdin()
    last = b.drain(EOF_BOUND)
    assert any("connection to the controller closed" in e.get("line", "") for e in last), last
    assert b.wait_exit(max(0.1, t0 + EOF_BOUND - time.monotonic())) == 3
    wait_until(lambda: not live_members(b.pgid), max(0.1, t0 + EOF_BOUND - time.monotonic()),
               "the worker agent's process group did not disappear after EOF")
    assert time.monotonic() - t0 < EOF_BOUND
    # killpg(pgid, 0) may still succeed here: killed orphans linger as zombies
    # until init reaps them, so the check above counts only live processes.

    a.close_stdin()
    assert a.wait_exit(5) == 3
    wait_until(lambda: not live_members(a.pgid), 5, "scheduler agent's group still alive")


def test_scheduler_closing_by_itself_ends_its_agent(agents: Callable[..., LocalAgent]) -> None:
    a = agents()
    ready = start_scheduler(a)
    assert ready["ev"] == "ready", a.summary()

    async def terminate() -> None:
        async with rpc(ready["address"]) as r:
            with contextlib.suppress(CommClosedError):  # it closes before answering
                await r.terminate()

    asyncio.run(asyncio.wait_for(terminate(), 10))
    exited = a.ev("exited", timeout=20, name="scheduler")
    assert "closed by itself" in exited["reason"]
    a.ev("bye", timeout=20)
    assert a.wait_exit(10) == 0


def test_silence_beyond_heartbeat_stops_the_agent(agents: Callable[..., LocalAgent]) -> None:
    a = agents(heartbeat=2)
    a.ev("hello")
    t0 = time.monotonic()
    # stdin stays open but silent
    line = a.wait_for(lambda e: e.get("ev") == "log" and "no message" in e["line"], 10)
    assert "no message from the controller for 2 s" in line["line"]
    assert a.wait_exit(5) == 3
    assert time.monotonic() - t0 < 8
    wait_until(lambda: not live_members(a.pgid), 5, "agent group still alive")


def test_pings_keep_the_agent_alive(agents: Callable[..., LocalAgent]) -> None:
    a = agents(heartbeat=2)
    a.ev("hello")
    deadline = time.monotonic() + 3  # longer than the heartbeat
    while time.monotonic() < deadline:
        a.send(encode_message("ping"))
        time.sleep(0.3)
        assert a.proc.poll() is None, a.summary()
    # pings are not answered
    assert a.events.empty() or all(e and e.get("ev") == "log" for e in list(a.events.queue))
    shut_down(a)


# ------------------------------------------------------------------ workers


def test_worker_agent_runs_a_nanny_with_tagged_output(agents: Callable[..., LocalAgent]) -> None:
    s = agents()  # its log is read below
    ready = start_scheduler(s)
    assert ready["ev"] == "ready", s.summary()
    w = agents(role="workers", label="127.0.0.1")
    up = start_one_worker(w, ready["address"])
    assert up["name"] == "local-0"
    assert up["address"].startswith("tcp://127.0.0.1:")
    assert up["contact"].startswith("tcp://127.0.0.1:")  # the Nanny
    assert up["address"] != up["contact"]
    # the worker process's own log lines are attributed to the worker's name
    tagged = w.saw(lambda e: e.get("ev") == "log" and e.get("src") == "local-0"
                        and "Start worker at:" in e["line"], 15)
    assert up["address"] in tagged["line"]
    assert tagged["stream"] == "stderr"
    assert "\x1e" not in tagged["line"] and "\x1f" not in tagged["line"]
    # the scheduler sees the worker under that name
    s.saw(lambda e: e.get("ev") == "log" and "Register worker" in e["line"]
               and "name: local-0" in e["line"], 15)

    # stop one worker: 'stopped', its process is gone, the agent stays
    wpid = up["pid"]
    w.send(encode_message("stop", name="local-0", timeout=10))
    w.ev("stopped", timeout=20, name="local-0")
    wait_until(lambda: wpid not in live_members(w.pgid), 10, "worker process still alive")
    assert w.proc.poll() is None
    shut_down(w)


def test_worker_start_failure_is_reported(agents: Callable[..., LocalAgent]) -> None:
    w = agents(role="workers", label="127.0.0.1")
    w.ev("hello")
    w.send(encode_message("start_worker", {"nthreads": 1}, name="bad-0",
                          scheduler="tcp://127.0.0.1:1", cls="no.such.Class", timeout=10))
    failed = w.ev("failed", timeout=20, name="bad-0")
    assert "no.such" in failed["error"] or "No module" in failed["error"], failed


def test_stop_of_an_unknown_worker_still_answers(agents: Callable[..., LocalAgent]) -> None:
    w = agents(role="workers", label="127.0.0.1")
    w.ev("hello")
    w.send(encode_message("stop", name="ghost-0", timeout=1))
    assert w.ev("stopped", timeout=10)["name"] == "ghost-0"


# ------------------------------------------------------------------ broken environments


def test_python_without_distributed_is_a_fatal_import_error(
    agents: Callable[..., LocalAgent], tmp_path: Path
) -> None:
    venv = tmp_path / "bare venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                   check=True, timeout=60, capture_output=True)
    python = str(venv / "bin" / "python")
    a = agents(python=python)
    first = a.wait_for(lambda e: e.get("ev") != "stage", 30)
    assert first["ev"] == "fatal", a.summary()
    assert first["kind"] == "import"
    assert first["error"].startswith("ModuleNotFoundError: ")
    assert "dask" in first["error"]
    assert first["python"] == python
    assert "Traceback" in first["tb"]
    assert a.wait_exit(10) == 4


# ------------------------------------------------------------------ private temp dir


def agent_dirs(tmp: Path) -> list[str]:
    return sorted(os.listdir(tmp))


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A TMPDIR short enough for multiprocessing's AF_UNIX socket paths (108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="sdt-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_private_temp_dir_is_used_and_removed_on_shutdown(
    agents: Callable[..., LocalAgent], short_tmp: Path
) -> None:
    tmp_path = short_tmp
    a = agents(env={"TMPDIR": str(tmp_path)})
    assert start_scheduler(a)["ev"] == "ready", a.summary()
    (mine,) = agent_dirs(tmp_path)
    assert mine.startswith("sshdeploy-agent-")
    assert (tmp_path / mine).stat().st_mode & 0o777 == 0o700
    # dask's scratch space went into it, not next to it
    assert os.path.isdir(tmp_path / mine / "dask-scratch-space")
    shut_down(a)
    assert agent_dirs(tmp_path) == []


def test_private_temp_dir_is_removed_on_eof_with_a_worker(
    agents: Callable[..., LocalAgent], short_tmp: Path
) -> None:
    tmp_path = short_tmp
    address = scheduler_address(agents)
    w = agents(role="workers", label="127.0.0.1", env={"TMPDIR": str(tmp_path)})
    assert start_one_worker(w, address)["name"] == "local-0"
    (mine,) = agent_dirs(tmp_path)
    # multiprocessing's pymp-* dirs are inside it
    assert any(e.startswith("pymp-") for e in os.listdir(tmp_path / mine)), os.listdir(
        tmp_path / mine)
    w.close_stdin()
    assert w.wait_exit(10) == 3
    assert agent_dirs(tmp_path) == []


def test_a_tmpdir_too_long_for_unix_sockets_falls_back_to_tmp(
    agents: Callable[..., LocalAgent], tmp_path: Path
) -> None:
    """multiprocessing's sockets live in TMPDIR: a deep one must not break the forkserver."""
    deep = tmp_path / ("d" * 60) / ("e" * 30)
    deep.mkdir(parents=True)
    assert len(str(deep)) > 90
    address = scheduler_address(agents)
    before = {d for d in os.listdir("/tmp") if d.startswith("sshdeploy-agent-")}
    w = agents(role="workers", label="127.0.0.1", env={"TMPDIR": str(deep)})
    start_one_worker(w, address, 60)
    assert os.listdir(deep) == []  # the private dir went to /tmp instead
    # Only this agent's (its owner file names its pid): other test runs use /tmp too.

    def owner_pid(d: str) -> str:
        try:
            return (Path("/tmp") / d / "owner").read_text().split()[1]
        except (OSError, IndexError):  # another run's, gone meanwhile
            return ""

    mine = {d for d in set(os.listdir("/tmp")) - before if d.startswith("sshdeploy-agent-")
            and owner_pid(d) == str(w.proc.pid)}
    assert len(mine) == 1, mine
    shut_down(w)
    assert not (Path("/tmp") / mine.pop()).exists()


def test_private_temp_dir_is_removed_on_sigterm(
    agents: Callable[..., LocalAgent], short_tmp: Path
) -> None:
    tmp_path = short_tmp
    a = agents(env={"TMPDIR": str(tmp_path)})
    a.ev("hello")
    assert len(agent_dirs(tmp_path)) == 1
    os.kill(a.proc.pid, signal.SIGTERM)
    assert a.wait_exit(10) == 3
    assert agent_dirs(tmp_path) == []


def test_private_temp_dir_is_removed_after_an_import_failure(
    agents: Callable[..., LocalAgent], tmp_path: Path
) -> None:
    # -S: no site-packages, so neither dask nor distributed can be imported
    wrapper = tmp_path / "bare-python"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    wrapper.chmod(0o755)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    a = agents(python=str(wrapper), env={"TMPDIR": str(tmp)})
    first = a.wait_for(lambda e: e.get("ev") != "stage", 30)
    assert first["ev"] == "fatal", a.summary()
    assert a.wait_exit(10) == 4
    assert agent_dirs(tmp) == []


# ------------------------------------------------------------------ one import per host


def caught(pid: int) -> int:
    """The mask of signals *pid* has a handler for."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no SigCgt for {pid}")


def ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_workers_fork_from_a_forkserver_forked_from_the_agent(
    agents: Callable[..., LocalAgent],
) -> None:
    """No second interpreter imports distributed: the forkserver is the agent's own fork."""
    address = scheduler_address(agents)
    w = agents(role="workers", label="127.0.0.1")
    up = start_one_worker(w, address)
    zygote = ppid(up["pid"])
    assert zygote != w.proc.pid and ppid(zygote) == w.proc.pid
    cmdline = Path(f"/proc/{zygote}/cmdline").read_bytes()
    assert cmdline == Path(f"/proc/{w.proc.pid}/cmdline").read_bytes()
    assert b"forkserver" not in cmdline
    # the agent's SIGTERM handler (reap the whole group) is not inherited
    assert not caught(zygote) & (1 << (signal.SIGTERM - 1))
    # it holds none of the channel's ends (stdin, the protocol fd): they close with the agent
    assert os.readlink(f"/proc/{zygote}/fd/0") == "/dev/null"
    channel = channel_ends(w)
    assert all(c.startswith("pipe:") for c in channel), channel
    zygote_fds = fd_targets(zygote)
    assert not channel & zygote_fds, (channel, zygote_fds)
    # the worker runs and is tagged as usual
    w.saw(lambda e: e.get("ev") == "log" and e.get("src") == "local-0"
          and "Start worker at:" in e["line"], 15)
    shut_down(w)
    wait_until(lambda: not live_members(w.pgid), 5, "the forkserver outlived its agent")


def test_spawn_start_method_starts_no_forkserver(agents: Callable[..., LocalAgent]) -> None:
    address = scheduler_address(agents)
    w = agents(role="workers", label="127.0.0.1", mp_method="spawn")
    up = start_one_worker(w, address, 60)
    assert ppid(up["pid"]) == w.proc.pid  # spawned by the Nanny, in the agent
    cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes() for p in live_members(w.pgid)]
    assert not any(b"forkserver" in c for c in cmdlines)
    shut_down(w)


def test_the_resource_tracker_is_forked_from_the_agent_too(
    agents: Callable[..., LocalAgent],
) -> None:
    """No interpreter is started for multiprocessing's resource tracker either."""
    address = scheduler_address(agents)
    w = agents(role="workers", label="127.0.0.1")
    up = start_one_worker(w, address)
    zygote = ppid(up["pid"])
    agent_cmdline = Path(f"/proc/{w.proc.pid}/cmdline").read_bytes()
    children = [p for p in live_members(w.pgid)
                if p not in (w.proc.pid, zygote, up["pid"]) and ppid(p) == w.proc.pid]
    assert len(children) == 1, children  # the tracker, a fork: same command line as the agent
    tracker = children[0]
    assert Path(f"/proc/{tracker}/cmdline").read_bytes() == agent_cmdline
    assert b"resource_tracker" not in agent_cmdline
    # it ignores TERM, as multiprocessing's own tracker does, and holds no channel end
    status = Path(f"/proc/{tracker}/status").read_text()
    ign = int(next(ln for ln in status.splitlines() if ln.startswith("SigIgn:")).split()[1], 16)
    assert ign & (1 << (signal.SIGTERM - 1))
    assert os.readlink(f"/proc/{tracker}/fd/0") == "/dev/null"
    channel = channel_ends(w)
    fds = fd_targets(tracker)
    assert not channel & fds, (channel, fds)
    # the worker process uses this tracker: the pipe the tracker reads (not its
    # stdout/stderr, which are the agent's log pipe) is among the worker's fds
    tracker_pipe = fd_targets(tracker, lowest=3)
    assert len(tracker_pipe) == 1 and next(iter(tracker_pipe)).startswith("pipe:"), tracker_pipe
    worker_fds = fd_targets(up["pid"])
    assert tracker_pipe & worker_fds, (tracker_pipe, worker_fds)
    shut_down(w)
    wait_until(lambda: not live_members(w.pgid), 5, "the tracker outlived its agent")


REAP_SCRIPT = r'''
import os, signal, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from sshdeploy.remote.agent.group import ProcessGroup
group = ProcessGroup()
group.lead()
kids = [
    subprocess.Popen([sys.executable, "-c", "import signal, time; "
                      "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); "
                      "time.sleep(60)"], stdout=subprocess.PIPE),          # ignores TERM
    subprocess.Popen(["sleep", "60"]),                                      # dies on TERM
    subprocess.Popen(["setsid", "sleep", "60"]),                            # left our group
]
kids[0].stdout.readline()
pids = [k.pid for k in kids]
t0 = time.monotonic()
group.reap(grace=5.0)
took = time.monotonic() - t0
print(took, *[int(ProcessGroup.alive(p)) for p in pids], len(group.members()))
'''


def test_reap_ends_every_member_and_descendant(
    tmp_path: Path,
) -> None:
    """TERM, then KILL for a process ignoring TERM; one that left the group is found too."""
    script = tmp_path / "reap.py"
    script.write_text(REAP_SCRIPT)
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, str(script), root], capture_output=True, text=True,
                         timeout=30, start_new_session=True)
    assert out.returncode == 0, out.stderr
    _took, *alive, members = out.stdout.split()
    assert alive == ["0", "0", "0"] and members == "0", out.stdout


# ------------------------------------------------------- kept agents supervise themselves


KEEP = {"name": "demo", "death_timeout": 20, "armed": True}  # a recorded cluster's agents


def drop_connection(scheduler: str, name: str) -> None:
    """Break the scheduler's connection to worker *name*, as a network cut does."""
    from distributed import Client

    def abort(dask_scheduler: Any, name: str) -> int:
        found = [a for a, ws in dask_scheduler.workers.items() if ws.name == name]
        for address in found:
            dask_scheduler.stream_comms[address].comm.abort()
        return len(found)

    with Client(scheduler, timeout=20) as client:
        assert client.run_on_scheduler(abort, name=name) == 1


def registered(scheduler: str) -> dict[str, str]:
    """The workers the scheduler lists now: name -> their Nanny's address."""
    async def ask() -> dict[str, str]:
        async with rpc(scheduler) as r:
            identity = await r.identity()
        return {str(w["name"]): str(w["nanny"]) for w in identity["workers"].values()}

    return asyncio.run(asyncio.wait_for(ask(), 10))


def kept_log(state: Path, label: str) -> str:
    """Every line the kept agents labelled *label* wrote to their log files."""
    return "".join(p.read_text() for p in sorted(state.glob(f"sshdeploy/clusters/demo/hosts/*/"
                                                            f"logs/{label}.*.log")))


def start_kept_worker(agents: Callable[..., LocalAgent], scheduler: str, names: list[str],
                      death_timeout: float = 20, **fields: Any) -> LocalAgent:
    """A kept workers agent running *names*, detached (no controller from now on)."""
    w = agents(role="workers", label="local", keep={**KEEP, "death_timeout": death_timeout})
    w.ev("hello")
    for name in names:
        w.send(encode_message("start_worker", {"host": "127.0.0.1", "nthreads": 1,
                                               "dashboard_address": ":0"},
                              name=name, scheduler=scheduler, timeout=30, **fields))
        assert w.wait_for(lambda e: e.get("ev") in ("ready", "failed"), 40)["ev"] == "ready", \
            w.summary()
    w.send(encode_message("detach"))
    return w


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The kept agents' files (``XDG_STATE_HOME``) in the test's own directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


def test_a_kept_worker_lost_with_its_connection_starts_again_within_its_budget(
        agents: Callable[..., LocalAgent], state: Path) -> None:
    scheduler = scheduler_address(agents)
    w = start_kept_worker(agents, scheduler, ["local-0"], restart_limit=1, restart_window=60)
    first = registered(scheduler)["local-0"]
    drop_connection(scheduler, "local-0")
    wait_until(lambda: registered(scheduler).get("local-0") not in (None, first), 30,
               "the lost worker to register again, started by its agent")
    assert w.proc.poll() is None
    # A second loss within the window is past the budget (1): a loop ends there.
    drop_connection(scheduler, "local-0")
    assert w.wait_exit(30) == 0
    assert "local-0" not in registered(scheduler)
    log = kept_log(state, "local")  # kept after the agent ended (until `down`)
    assert "worker local-0 lost (worker-handle-scheduler-connection-broken)" in log
    assert "worker local-0 started again" in log
    assert "worker local-0 not started again: lost 2 times within 60 s" in log
    assert "ended: no worker left" in log


def test_a_kept_worker_retired_by_its_scheduler_is_not_started_again(
        agents: Callable[..., LocalAgent], state: Path) -> None:
    from distributed import Client

    scheduler = scheduler_address(agents)
    w = start_kept_worker(agents, scheduler, ["local-0"])
    with Client(scheduler, timeout=20) as client:
        client.retire_workers(names=["local-0"], close_workers=True)
    assert w.wait_exit(30) == 0
    assert registered(scheduler) == {}
    log = kept_log(state, "local")
    assert "ended: no worker left" in log and "lost" not in log


def test_a_lost_worker_does_not_start_again_past_the_count_the_cluster_wants(
        agents: Callable[..., LocalAgent], state: Path) -> None:
    from sshdeploy.remote.agent.keep import keep_op

    keep_op("write", "demo", {"name": "demo", "spec": {"wanted": 1}})  # after a scale to 1
    s = agents(keep=KEEP)  # its scheduler says how many workers the record wants
    ready = start_scheduler(s)
    assert ready["ev"] == "ready", s.summary()
    scheduler = str(ready["address"])
    w = start_kept_worker(agents, scheduler, ["local-0", "local-1"], death_timeout=3)
    drop_connection(scheduler, "local-0")
    wait_until(lambda: "the cluster has the workers it wants" in kept_log(state, "local"), 30,
               "the agent to leave the lost worker out")
    assert list(registered(scheduler)) == ["local-1"] and w.proc.poll() is None
