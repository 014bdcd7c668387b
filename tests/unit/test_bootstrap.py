"""Unit tests for sshdeploy.bootstrap: the commands, run for real by a local ``sh -c``."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

from sshdeploy.bootstrap import (
    EVENT_MARK,
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    EXIT_SETUP_FAILED,
    KEPT_PARTS,
    LAUNCHER,
    PROBE,
    REMOTE,
    AgentSpec,
    agent_bundle,
    build_command,
    build_kill_command,
    build_probe_command,
    encode_kwargs,
    encode_message,
    stdin_preamble,
    tagger_source,
)
from sshdeploy.remote import agent as agent_package
from sshdeploy.remote import tagger as tagger_module
from sshdeploy.remote.agent import protocol
from sshdeploy.versions import local_versions

pytestmark = pytest.mark.timeout(30)

#: A path no shell leaves alone unless it is quoted right.
NASTY = "py dir 'q' \"dq\" $HOME `id` ;&|*"


def run_sh(cmd: str, stdin: bytes = b"", timeout: float = 20) -> subprocess.CompletedProcess[bytes]:
    """Run *cmd* as the remote shell would, in its own session; kill it on timeout."""
    proc = subprocess.Popen(
        ["sh", "-c", cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def start_agent(cmd: str, spec: AgentSpec, timeout: float = 20) -> tuple[int | None, list[dict]]:
    """Start the agent with *cmd*, read events up to its hello, then close its stdin.

    Returns its exit status and every event it wrote.
    """
    proc = subprocess.Popen(
        ["sh", "-c", cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    evs: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        proc.stdin.write(stdin_preamble(spec))
        proc.stdin.flush()
        buf = b""
        while not any(e.get("ev") in ("hello", "fatal") for e in evs):
            left = deadline - time.monotonic()
            assert left > 0, f"no hello within {timeout} s: {evs}"
            if not select.select([proc.stdout], [], [], left)[0]:
                continue
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            evs += events(b"\n".join(lines))
        proc.stdin.close()  # EOF: the agent stops by itself
        rest = proc.stdout.read()  # bounded by the pytest timeout; the agent exits on EOF
        evs += events(buf + rest)
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), evs
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def events(stdout: bytes) -> list[dict[str, object]]:
    """The agent's events: every stdout line starts with the event mark."""
    out = []
    for line in stdout.splitlines():
        if line.strip():
            assert line.startswith(EVENT_MARK), line
            out.append(json.loads(line[len(EVENT_MARK):]))
    return out


@pytest.fixture
def nasty_python(tmp_path: Path) -> str:
    """The controller's interpreter, reachable through a path full of shell syntax."""
    return str(link_interpreter(tmp_path / NASTY, "python 3"))


def link_interpreter(where: Path, name: str) -> Path:
    """Return *where*/*name*: a link to this interpreter that keeps its virtual environment.

    A bare symlink to a venv's ``python`` outside the venv is the base interpreter
    without the venv's packages: Python finds ``pyvenv.cfg`` beside the path it was
    started as and takes that folder's parent as the venv. So *where* gets the venv's
    ``pyvenv.cfg`` and its parent the venv's ``lib``.
    """
    where.mkdir(parents=True, exist_ok=True)
    link = where / name
    link.symlink_to(sys.executable)
    if sys.prefix != sys.base_prefix:
        shutil.copy(Path(sys.prefix, "pyvenv.cfg"), where / "pyvenv.cfg")
        (where.parent / "lib").symlink_to(Path(sys.prefix, "lib"))
    return link


# ------------------------------------------------------------------ build_command


def stage(name: str, pid: int) -> dict[str, object]:
    return {"ev": "stage", "stage": name, "pid": pid}


def test_build_command_shape() -> None:
    login, launch = build_command("/opt/py/bin/python3").split("\n")
    assert login.startswith("printf '\\036sshdeploy-event\\037") and login.endswith(' "$$"')
    assert launch == f"exec /opt/py/bin/python3 -u -c {shlex.quote(LAUNCHER)}"
    # no options, config or secrets on the command line
    assert "heartbeat" not in build_command("python3")
    # blank setup is no setup
    assert build_command("python3", "  \n") == build_command("python3")


def test_build_command_quotes_the_interpreter(nasty_python: str) -> None:
    argv = shlex.split(build_command(nasty_python).split("\n")[-1])
    assert argv[:2] == ["exec", nasty_python]
    assert argv[2:4] == ["-u", "-c"]


def test_agent_starts_through_sh_and_says_hello(nasty_python: str) -> None:
    """The launcher + preamble start the real agent; EOF right after makes it exit."""
    spec = AgentSpec(role="scheduler", label="scheduler local", heartbeat=30)
    status, evs = start_agent(build_command(nasty_python), spec)
    # the stages, all with the one pid (the shell becomes the agent), then hello
    pid = evs[0]["pid"]
    assert isinstance(pid, int)
    assert evs[:3] == [stage("login", pid), stage("python", pid), stage("import", pid)], evs
    hello = evs[3]
    assert hello["ev"] == "hello" and hello["pid"] == pid, evs
    assert hello["python"] == nasty_python
    assert hello["versions"] == local_versions()
    # stdin closed after the hello: the agent says why it stops, and exits 3
    assert evs[-1]["ev"] == "log" and evs[-1]["src"] == "scheduler local"
    assert "connection to the controller closed" in str(evs[-1]["line"])
    assert status == 3


def test_setup_runs_in_the_same_shell_before_the_agent(tmp_path: Path) -> None:
    bindir = tmp_path / "bin dir"
    link_interpreter(bindir, "mypython")
    setup = f"export PATH={shlex.quote(str(bindir))}:\"$PATH\"  # a trailing comment"
    spec = AgentSpec(role="workers", label="local")
    status, evs = start_agent(build_command("mypython", setup), spec)
    assert [e.get("stage") for e in evs[:4]] == ["login", "setup", "python", "import"], evs
    assert evs[4]["ev"] == "hello", evs
    assert str(evs[4]["python"]).endswith("mypython")
    assert status == 3


def test_setup_failure_exits_121_and_starts_nothing() -> None:
    result = run_sh(build_command(sys.executable, "echo setting up >&2; false"),
                    stdin_preamble(AgentSpec(role="workers", label="x")))
    assert result.returncode == EXIT_SETUP_FAILED == 121
    # logged in, never got past the setup
    assert [e.get("stage") for e in events(result.stdout)] == ["login"]
    assert result.stderr == b"setting up\n"


def test_setup_is_one_shell_list_judged_by_its_exit_status() -> None:
    # As documented: the list's status is its last command's; && stops at the first failure.
    assert run_sh(build_probe_command(sys.executable, "false && true")).returncode == (
        EXIT_SETUP_FAILED
    )
    assert run_sh(build_probe_command(sys.executable, "false\ntrue")).returncode == 0


@pytest.mark.parametrize("python", ["/nonexistent/bin/python3", "no-such-python-xyz"])
def test_missing_interpreter_exits_127(python: str) -> None:
    result = run_sh(build_command(python), b"")
    assert result.returncode == EXIT_NOT_FOUND == 127
    assert b"not found" in result.stderr


def test_missing_interpreter_after_setup_exits_127() -> None:
    assert run_sh(build_command("/nonexistent/python", "true")).returncode == EXIT_NOT_FOUND


def test_non_executable_interpreter_is_not_a_setup_failure(tmp_path: Path) -> None:
    result = run_sh(build_command(str(tmp_path)), b"")  # a directory, not a python
    assert result.returncode == EXIT_NOT_EXECUTABLE != EXIT_SETUP_FAILED


# ------------------------------------------------------------------ spec and preamble


def test_spec_to_json() -> None:
    spec = AgentSpec(role="workers", label="node2", config="abc", env={"A": "1"},
                     heartbeat=2.5, mp_method="spawn")
    assert json.loads(spec.to_json()) == {
        "role": "workers", "label": "node2", "config": "abc", "env": {"A": "1"},
        "heartbeat": 2.5, "mp_method": "spawn",
    }
    assert "\n" not in AgentSpec(role="scheduler", label="a\nb").to_json()


def test_stdin_preamble_is_length_prefixed_agent_and_tagger_then_spec() -> None:
    spec = AgentSpec(role="scheduler", label="scheduler node1")
    data = stdin_preamble(spec)
    assert data.startswith(agent_bundle(kept=False))
    first, rest = data.split(b"\n", 1)  # the loader, which the launcher reads
    n = int(first)
    assert rest[:n] == (REMOTE / "loader.py").read_bytes()
    names, rest = rest[n:].split(b"\n", 1)  # the agent's parts, which the loader reads
    # an ordinary cluster's agent is not sent what only a named cluster's agents run
    sent = [p for p in agent_package.PARTS if p not in KEPT_PARTS]
    assert names.decode().split() == sent
    for name in sent:
        first, rest = rest.split(b"\n", 1)
        n = int(first)
        assert rest[:n] == (REMOTE / "agent" / f"{name}.py").read_bytes()
        rest = rest[n:]
    second, rest = rest.split(b"\n", 1)
    m = int(second)
    assert rest[:m] == tagger_source() == Path(tagger_module.__file__).read_bytes()
    assert rest[m:] == spec.to_json().encode() + b"\n"


def test_a_named_clusters_agent_and_its_host_operations_get_every_part() -> None:
    for spec in (AgentSpec(role="workers", label="n1", keep={"name": "lab"}),
                 AgentSpec(role="workers", label="probe n1", keep={"name": "lab"}, op="probe")):
        names = stdin_preamble(spec).split(b"\n", 1)[1]
        names = names[int(stdin_preamble(spec).split(b"\n", 1)[0]):].split(b"\n", 1)[0]
        assert names.decode().split() == list(agent_package.PARTS)
    assert set(KEPT_PARTS) < set(agent_package.PARTS)


def test_wire_constants_have_one_home() -> None:
    assert EVENT_MARK is protocol.EVENT
    assert tagger_module.TAG == protocol.TAG
    assert tagger_module.MODULE == protocol.TAGGER_MODULE
    assert (EXIT_SETUP_FAILED, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND) == (
        protocol.EXIT_SETUP_FAILED, protocol.EXIT_NOT_EXECUTABLE,
        protocol.EXIT_NOT_FOUND)


# ------------------------------------------------------------------ messages


def test_encode_message_without_kwargs() -> None:
    assert encode_message("ping") == b'{"cmd": "ping"}\n'
    assert json.loads(encode_message("stop", name="node2-0", timeout=5)) == {
        "cmd": "stop", "name": "node2-0", "timeout": 5,
    }
    assert "kw" not in json.loads(encode_message("stop", {}, name="x"))


def test_encode_message_round_trips_pickled_kwargs() -> None:
    class Opaque:
        def __init__(self, v: int) -> None:
            self.v = v

    kwargs = {"host": "127.0.0.1", "port": 0, "nested": {"a": [1, 2]}, "obj": Opaque(7),
              "fn": lambda x: x + 1}
    raw = encode_message("start_worker", kwargs, name="node2-0", scheduler="tcp://h:1")
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    msg = json.loads(raw)
    assert (msg["cmd"], msg["name"], msg["scheduler"]) == ("start_worker", "node2-0", "tcp://h:1")
    # what the agent does with "kw" (it has only the standard library's pickle)
    back = protocol.decode_kwargs(msg)
    assert back["nested"] == {"a": [1, 2]} and back["host"] == "127.0.0.1"
    assert back["obj"].v == 7 and back["fn"](1) == 2
    assert cloudpickle.loads(base64.b64decode(encode_kwargs({"x": 1}))) == {"x": 1}


# ------------------------------------------------------------------ probe


def test_probe_prints_versions_as_json(nasty_python: str) -> None:
    result = run_sh(build_probe_command(nasty_python))
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.decode().splitlines()
    data = json.loads(line)
    assert data == {"python": nasty_python, "versions": local_versions(), "error": None}


def test_probe_reports_missing_distributed(tmp_path: Path) -> None:
    # -S: no site-packages, so neither dask nor distributed can be imported
    wrapper = tmp_path / "bare-python"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -S \"$@\"\n")
    wrapper.chmod(0o755)
    result = run_sh(build_probe_command(str(wrapper)))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["error"].startswith("ModuleNotFoundError: ")
    assert set(data["versions"]) == {"python"}


def test_probe_reads_versions_without_importing_the_packages(tmp_path: Path) -> None:
    """The default probe finds the packages and reads their metadata; the deep one imports."""
    shadow = tmp_path / "shadow"
    (shadow / "distributed").mkdir(parents=True)
    marker = tmp_path / "imported"
    (shadow / "distributed" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n__version__ = 'shadow'\n")
    setup = f"export PYTHONPATH={shlex.quote(str(shadow))}"
    cheap = run_sh(build_probe_command(sys.executable, setup))
    assert json.loads(cheap.stdout) == {"python": sys.executable, "versions": local_versions(),
                                        "error": None}
    assert not marker.exists()
    deep = run_sh(build_probe_command(sys.executable, setup, deep=True))
    assert json.loads(deep.stdout)["versions"]["distributed"] == "shadow"
    assert marker.exists()


def test_probe_without_metadata_imports_the_package_for_its_version(tmp_path: Path) -> None:
    # a source checkout on the path: code but no dist-info
    shadow = tmp_path / "shadow"
    (shadow / "nometa").mkdir(parents=True)
    (shadow / "nometa" / "__init__.py").write_text("__version__ = '9.9'\n")
    probe = PROBE.replace("('dask','distributed')", "('dask','nometa')")
    assert probe != PROBE
    result = run_sh(f"PYTHONPATH={shlex.quote(str(shadow))} exec {shlex.quote(sys.executable)} "
                    f"-c {shlex.quote(probe)}")
    data = json.loads(result.stdout)
    assert data["error"] is None and data["versions"]["nometa"] == "9.9"


@pytest.mark.parametrize("deep", [False, True])
def test_both_probes_print_the_same_shape(deep: bool) -> None:
    result = run_sh(build_probe_command(sys.executable, deep=deep))
    assert json.loads(result.stdout) == {"python": sys.executable, "versions": local_versions(),
                                         "error": None}


def test_probe_with_setup() -> None:
    assert run_sh(build_probe_command(sys.executable, "false")).returncode == EXIT_SETUP_FAILED
    result = run_sh(build_probe_command(sys.executable, "cd /"))
    assert json.loads(result.stdout)["error"] is None


def test_foreign_stdout_is_never_taken_for_an_event() -> None:
    from sshdeploy.ssh.channel import split_event

    assert split_event(EVENT_MARK + b'{"ev": "hello"}\n') == ("", {"ev": "hello"})
    assert split_event(b"Welcome" + EVENT_MARK + b'{"ev": "bye"}\n') == ("Welcome", {"ev": "bye"})
    assert split_event(b'{"ev": "hello"}\n') == ('{"ev": "hello"}', None)  # unmarked: text
    assert split_event(EVENT_MARK + b"3\n") == ("", None)  # marked but not an object
    assert split_event(b"\n") == ("", None)


# ------------------------------------------------------------------ stalled starts


def test_kill_command_ends_a_start_stalled_in_setup() -> None:
    """The login stage's pid is the group to kill: the shell and the setup's children go."""
    proc = subprocess.Popen(
        ["sh", "-c", build_command(sys.executable, "sleep 300 & sleep 300")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True,  # as sshd does: the shell leads its session and group
    )
    try:
        assert proc.stdout is not None
        (login,) = events(proc.stdout.readline())
        assert login == stage("login", proc.pid)
        deadline = time.monotonic() + 10
        while len(group(proc.pid)) < 3:  # the shell and both sleeps
            assert time.monotonic() < deadline, group(proc.pid)
            time.sleep(0.02)
        killer = run_sh(build_kill_command(int(login["pid"])))  # its own session, like a channel
        assert killer.returncode == 0
        assert proc.wait(timeout=10) == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while group(proc.pid):
            assert time.monotonic() < deadline, group(proc.pid)
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def group(pgid: int) -> list[int]:
    """Live (not zombie) processes of group *pgid*."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                f = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(f[2]) == pgid and f[0] != "Z":
                    out.append(int(entry))
    return out


def test_kill_command_refuses_nonsense_groups() -> None:
    for bad in (0, 1, -5):
        with pytest.raises(ValueError):
            build_kill_command(bad)


def test_probe_reads_the_version_from_the_dist_info_name_beside_the_code(tmp_path: Path) -> None:
    """The cheap path: no METADATA read, and a look-alike (``pkgx-ml``) is not taken."""
    site = tmp_path / "site"
    (site / "pkgx").mkdir(parents=True)
    (site / "pkgx" / "__init__.py").write_text("raise SystemExit('imported')\n")
    (site / "pkgx-1.2.3.dist-info").mkdir()  # no METADATA: only its name is read
    (site / "pkgx-ml-7.0.dist-info").mkdir()
    probe = PROBE.replace("('dask','distributed')", "('dask','pkgx')")
    assert probe != PROBE
    result = run_sh(f"PYTHONPATH={shlex.quote(str(site))} exec {shlex.quote(sys.executable)} "
                    f"-c {shlex.quote(probe)}")
    data = json.loads(result.stdout)
    assert data["error"] is None and data["versions"]["pkgx"] == "1.2.3", data
