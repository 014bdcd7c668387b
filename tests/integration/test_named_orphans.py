"""No orphan, no lie (issue 26, must-hold 1), on the real bed.

Each test injects one fault into a named cluster and checks the invariant:
after it, **either** the cluster runs and ``list``, ``list --host``,
``status``, ``down`` and ``clean`` see it and stop it, **or** nothing of it is
left on any host (no process, no ``clusters/NAME`` directory) within the
bound that applies (the agents' heartbeat, the workers' ``death_timeout``).
Faults: the controller SIGKILLed at each stage of ``up`` (a hook kills it
from inside, right after that stage), a failed ``up``, the state removed on
the scheduler host or here, a link cut, the scheduler host lost, a host left
out at the start. Commands are real ``python -m sshdeploy.cli`` processes; the
local state lives in the test's own ``XDG_STATE_HOME``.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import dask
import pytest

from sshdeploy import testbed
from sshdeploy.cluster import SSHCluster
from sshdeploy.errors import ClusterNotFoundError, ClusterStopError
from sshdeploy.named import flow
from sshdeploy.named.state import StateStore
from sshdeploy.remote.agent.protocol import MARK_ENV

BED = os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME)
n1, n2, n3, n4 = testbed.host_names(4, BED)

pytestmark = pytest.mark.timeout(300)

#: Where the hosts keep the named clusters' files (the bed's hosts log in as root).
HOST_STATE = Path(pwd.getpwnam("root").pw_dir) / ".local" / "state" / "sshdeploy" / "clusters"
#: A bound on "nothing left": an agent sees its controller go once it reads commands
#: (after importing distributed), at once on EOF, within the heartbeat on a cut link.
GONE_WITHIN = 30.0


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yield {**os.environ, "NO_COLOR": "1", "COLUMNS": "250"}
    store = StateStore()
    for record in store.records():
        asyncio.run(flow.stop(record, store))


def credentials(bed: testbed.Bed) -> list[str]:
    return ["--known-hosts", str(bed.known_hosts), "--ssh-private-key", str(bed.client_key),
            "--ssh-username", "root"]


def dask_ssh(env: dict[str, str], *args: str, timeout: float = 180
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sshdeploy.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def up_args(bed: testbed.Bed, name: str, *hosts: str, port: str = "0") -> list[str]:
    return ["up", "--name", name, *credentials(bed), "--scheduler-port", port,
            "--dashboard-address", ":0", "--nworkers", "1", "--connect-timeout", "3", *hosts]


def listing(env: dict[str, str], *extra: str) -> list[dict[str, object]]:
    out = dask_ssh(env, "list", "--json", *extra)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


def state_of(env: dict[str, str], name: str, *extra: str) -> str | None:
    return next((str(c["state"]) for c in listing(env, *extra) if c["name"] == name), None)


def marks(bed: testbed.Bed) -> dict[str, set[str]]:
    """Host -> the marks (``NAME:SESSION``) of the processes that run there."""
    found: dict[str, set[str]] = {}
    for host in bed.hosts:
        for pid, _cmd in testbed.processes(host):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            for entry in environ.split(b"\0"):
                if entry.startswith(MARK_ENV.encode() + b"="):
                    found.setdefault(host.name, set()).add(entry.split(b"=", 1)[1].decode())
    return found


def nothing_left(bed: testbed.Bed, name: str, within: float = GONE_WITHIN) -> None:
    """No process and no file of cluster *name* on any host, within *within* seconds."""
    testbed.wait_until(lambda: testbed.python_processes(bed) == {}, within,
                       "every process of the cluster to be gone")
    testbed.wait_until(lambda: not (HOST_STATE / name).exists(), 10,
                       f"{HOST_STATE / name} to be removed")


KILL_AT = textwrap.dedent("""
    # dask-ssh, SIGKILLed from inside at one stage of `up` (argv[1]).
    import asyncio, os, signal, sys

    def die():
        host = os.environ.get("CUT_HOST")  # first, cut this host of the bed off
        if host:
            from sshdeploy import testbed
            testbed.set_link(testbed.status(os.environ["BED"]).host(host), False)
        os.kill(os.getpid(), signal.SIGKILL)

    def hook(owner, attr, after=True):
        original = getattr(owner, attr)
        if asyncio.iscoroutinefunction(original):
            async def hooked(*args, **kwargs):
                if not after:
                    die()
                await original(*args, **kwargs)
                die()
        else:
            def hooked(*args, **kwargs):
                original(*args, **kwargs)
                die()
        setattr(owner, attr, hooked)

    stage = sys.argv[1]
    if stage == "scheduler":  # the scheduler runs; the workers are starting
        from sshdeploy.cluster.processes import RemoteScheduler
        hook(RemoteScheduler, "start")
    elif stage == "workers":  # every worker runs; nothing is recorded yet
        from sshdeploy.named import flow
        hook(flow, "save", after=False)
    elif stage == "recorded":  # recorded here and on the scheduler host, not armed yet
        from sshdeploy.named import flow
        hook(flow, "save")
    elif stage == "armed":  # its agents were told to run on; up has not returned
        from sshdeploy.cluster import arming
        hook(arming, "arm")
    from sshdeploy.cli import main
    main(sys.argv[2:])
    """)


def up_killed_at(stage: str, env: dict[str, str], tmp_path: Path, args: list[str]
                 ) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "kill_at.py"
    script.write_text(KILL_AT)
    done = subprocess.run([sys.executable, str(script), stage, *args], env=env,
                          capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    return done


@pytest.mark.parametrize("stage", ["scheduler", "workers", "recorded", "armed"])
def test_a_controller_killed_at_any_stage_of_up_leaves_a_cluster_that_runs_or_nothing(
        bed: testbed.Bed, env: dict[str, str], tmp_path: Path, stage: str) -> None:
    """Until recorded, its agents stop with their controller and leave no file (finding 2;
    finding 11: no `clusters/NAME` left on the hosts); once armed, it runs on and every
    command sees it and stops it."""
    name = f"kill-{stage[:3]}-{uuid.uuid4().hex[:6]}"
    up_killed_at(stage, env, tmp_path, up_args(bed, name, n1, n2, n3))
    if stage in ("scheduler", "workers"):  # nothing recorded: nothing left, nothing listed
        nothing_left(bed, name)
        assert listing(env) == []
        # (the bed's hosts share this machine's home: other beds' clusters are there too)
        assert state_of(env, name, "--host", f"root@{n1}", *credentials(bed)[:4]) is None
        clean = dask_ssh(env, "clean")
        assert clean.returncode == 0 and "nothing to remove" in clean.stdout, clean.stdout
    elif stage == "recorded":  # recorded, never armed: its agents went, its record says so
        testbed.wait_until(lambda: testbed.python_processes(bed) == {}, GONE_WITHIN,
                           "the agents to stop with their controller")
        assert state_of(env, name) == "gone"
        clean = dask_ssh(env, "clean")
        assert clean.returncode == 0 and f"removed: {name} (gone" in clean.stdout, clean.stdout
        nothing_left(bed, name)
    else:  # armed: it runs on, seen and stopped by every command
        testbed.wait_until(lambda: state_of(env, name) == "running", 30, "it to run on")
        assert state_of(env, name, "--host", f"root@{n1}", *credentials(bed)[:4]) == "running"
        status = dask_ssh(env, "status", name)
        assert status.returncode == 0 and f"{n3}-0" in status.stdout, status.stdout
        down = dask_ssh(env, "down", name)
        assert down.returncode == 0, down.stdout + down.stderr
        assert f"{name}: stopped on 3 of 3 hosts" in down.stdout
        nothing_left(bed, name, within=1)
    assert listing(env) == []


def test_up_again_right_after_a_killed_up_starts_one_cluster_on_the_same_port(
        bed: testbed.Bed, env: dict[str, str], tmp_path: Path) -> None:
    """Finding 2: the second `up` found "port 9102 is in use" (our own orphan) and left a
    second orphan scheduler."""
    name = f"again-{uuid.uuid4().hex[:6]}"
    args = up_args(bed, name, n1, n2, n3, port="9102")
    up_killed_at("scheduler", env, tmp_path, args)
    again = dask_ssh(env, *args)  # at once: the first one's agents may still be leaving
    assert again.returncode == 0, again.stdout + again.stderr
    assert "in use" not in again.stderr and "Traceback" not in again.stderr
    assert ":9102" in again.stdout
    sessions = {m for host_marks in marks(bed).values() for m in host_marks}
    assert len(sessions) == 1, sessions  # only the second up's processes run
    (entry,) = listing(env)
    assert (entry["name"], entry["workers"]) == (name, "2/2"), entry
    down = dask_ssh(env, "down", name)
    assert down.returncode == 0, down.stdout + down.stderr
    nothing_left(bed, name, within=1)


def test_a_failed_up_stops_what_it_started_and_says_nothing_is_left(
        bed: testbed.Bed, env: dict[str, str], tmp_path: Path) -> None:
    """Finding 3: a failed `up --name` left its scheduler running for good, silently."""
    name = f"fail-{uuid.uuid4().hex[:6]}"
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text(f"{n1}\n{n2} remote-python=/usr/bin/python3\n")  # no dask there
    failed = dask_ssh(env, *up_args(bed, name), "--hostfile", str(hostfile))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert 'File "/' not in failed.stderr  # no traceback of ours (the host's import error is)
    assert f"cluster {name!r} did not start" in failed.stderr
    assert "nothing of it is left on its hosts" in failed.stderr
    assert "/usr/bin/python3" in failed.stderr and n2 in failed.stderr, failed.stderr
    nothing_left(bed, name, within=5)
    assert listing(env) == []


def test_state_removed_on_the_scheduler_host_is_written_again_and_down_finds_every_process(
        bed: testbed.Bed, env: dict[str, str]) -> None:
    """Finding 1: with `clusters/NAME` removed on the scheduler host, `list` said `gone`
    and `down` said "stopped" and stopped nothing."""
    name = f"rm-{uuid.uuid4().hex[:6]}"
    started = dask_ssh(env, *up_args(bed, name, n1, n2, n3))
    assert started.returncode == 0, started.stdout + started.stderr
    where = str(HOST_STATE / name)
    testbed.run_in(bed.host(n1), ["rm", "-rf", where])  # a tmp cleaner, a re-imaged home
    assert state_of(env, name) == "running"  # the agents write their records again
    testbed.wait_until(lambda: (HOST_STATE / name / "cluster.json").exists(), 10,
                       "the scheduler's agent to write cluster.json again")
    assert state_of(env, name, "--host", f"root@{n1}", *credentials(bed)[:4]) == "running"
    # Now a file where its directory was: nothing can be written again, and list says so.
    # (The bed's hosts share this machine's home; the agents write it again within a
    # second, so the file takes its place in one rename, retried until it does.)
    blocker = HOST_STATE / f".{name}.blocker"

    def block() -> bool:
        shutil.rmtree(where, ignore_errors=True)
        blocker.touch()
        try:
            os.rename(blocker, where)
        except OSError:  # written again meanwhile
            return False
        return True

    testbed.wait_until(block, 10, "a file to take the place of the cluster's directory")
    try:
        (entry,) = listing(env)
        assert entry["state"] == "unreachable" and "cannot be written" in str(entry["reason"])
        down = dask_ssh(env, "down", name)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "found by their mark; no record of them was left on the host" in down.stdout
        assert f"{name}: stopped on 3 of 3 hosts" in down.stdout
        assert testbed.python_processes(bed) == {}
        assert listing(env) == []
    finally:
        blocker.unlink(missing_ok=True)
        Path(where).unlink(missing_ok=True)


def test_state_removed_here_the_cluster_is_found_on_its_scheduler_host_and_stopped(
        bed: testbed.Bed, env: dict[str, str]) -> None:
    name = f"here-{uuid.uuid4().hex[:6]}"
    args = up_args(bed, name, n1, n2)
    started = dask_ssh(env, *args)
    assert started.returncode == 0, started.stdout + started.stderr
    StateStore().path(name).unlink()
    assert listing(env) == []
    assert state_of(env, name, "--host", f"root@{n1}", *credentials(bed)[:4]) == "running"
    again = dask_ssh(env, *args)  # the same up: its scheduler host has the record
    assert again.returncode == 0 and "already runs" in again.stdout, again.stdout + again.stderr
    assert state_of(env, name) == "running"  # and this machine has it again
    StateStore().path(name).unlink()
    down = dask_ssh(env, "down", name)
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert f"`dask-ssh down {name} --host HEAD` stops it" in " ".join(down.stderr.split())
    down = dask_ssh(env, "down", name, "--host", f"root@{n1}", *credentials(bed)[:4])
    assert down.returncode == 0, down.stdout + down.stderr
    nothing_left(bed, name, within=1)
    assert listing(env) == []


def test_a_host_left_out_at_the_start_does_not_stop_down_or_clean(
        bed: testbed.Bed, env: dict[str, str]) -> None:
    """Finding 9: with --min-workers and a host left out, `down` failed every time."""
    name = f"min-{uuid.uuid4().hex[:6]}"
    fast = {**env, "DASK_SSHDEPLOY__CONNECT_ATTEMPTS": "1"}
    testbed.set_link(bed.host(n3), False)
    try:
        started = dask_ssh(fast, *up_args(bed, name, n1, n2, n3), "--min-workers", "1")
        assert started.returncode == 0, started.stdout + started.stderr
        assert state_of(env, name) == "running"
        down = dask_ssh(fast, "down", name)
        assert down.returncode == 0, down.stdout + down.stderr
        assert f"root@{n3}: stopped (left out at the start" in down.stdout
        assert f"{name}: stopped on 3 of 3 hosts" in down.stdout
        assert listing(env) == []
    finally:
        testbed.set_link(bed.host(n3), True)
    nothing_left(bed, name, within=1)


def test_a_link_cut_while_up_starts_leaves_nothing_there_within_the_heartbeat(
        bed: testbed.Bed, env: dict[str, str], tmp_path: Path) -> None:
    """The controller killed once the scheduler runs, and n3 cut off just before: n3's
    agent never sees EOF; its heartbeat (5 s here) ends it, with the link still down."""
    name = f"cut-{uuid.uuid4().hex[:6]}"
    cut_env = {**env, "CUT_HOST": n3, "BED": bed.name,
               "DASK_SSHDEPLOY__HEARTBEAT_TIMEOUT": "5"}
    try:
        up_killed_at("scheduler", cut_env, tmp_path, up_args(bed, name, n1, n2, n3))
        nothing_left(bed, name)
    finally:
        testbed.set_link(bed.host(n3), True)
    assert listing(env) == []


def test_down_with_a_worker_host_cut_off_keeps_the_record_and_stops_it_once_back(
        bed: testbed.Bed, env: dict[str, str]) -> None:
    """`down` reports success only once every host said nothing of it is left."""
    name = f"down-{uuid.uuid4().hex[:6]}"
    started = dask_ssh(env, *up_args(bed, name, n1, n2, n3))
    assert started.returncode == 0, started.stdout + started.stderr
    testbed.set_link(bed.host(n3), False)
    try:
        down = dask_ssh({**env, "DASK_SSHDEPLOY__CONNECT_ATTEMPTS": "1"}, "down", name)
        assert down.returncode == 1, down.stdout + down.stderr
        assert f"{name}: root@{n3}: unreachable" in down.stdout
        said = " ".join(down.stderr.split())
        assert f"cluster {name!r} was not verified stopped on 1 of 3 host(s)" in said
        assert "its record is kept" in said and "Traceback" not in said
        assert [c["name"] for c in listing(env)] == [name]  # still listed: not forgotten
    finally:
        testbed.set_link(bed.host(n3), True)
    down = dask_ssh(env, "down", name)
    assert down.returncode == 0, down.stdout + down.stderr
    nothing_left(bed, name, within=1)
    assert listing(env) == []


def test_the_scheduler_host_lost_its_workers_stop_and_down_waits_for_it(
        bed: testbed.Bed, env: dict[str, str], tmp_path: Path) -> None:
    name = f"lost-{uuid.uuid4().hex[:6]}"
    fast = {**env, "DASK_SSHDEPLOY__CONNECT_ATTEMPTS": "1"}
    cluster = SSHCluster([n1, n2, n3], connect_options={**bed.connect_options(),
                                                        "connect_timeout": 3},
                         name=name, shutdown_on_close=False,
                         worker_options={"death_timeout": "5s"})
    cluster.close()
    testbed.set_link(bed.host(n1), False)
    try:
        # the workers cannot reach the scheduler: they stop within their death_timeout
        testbed.wait_until(lambda: set(testbed.python_processes(bed)) == {n1}, 40,
                           "the workers to stop by themselves")
        assert state_of(fast, name) == "unreachable"
        down = dask_ssh(fast, "down", name)
        assert down.returncode == 1 and "the cluster may still run" in " ".join(
            down.stderr.split()), down.stdout + down.stderr
        with dask.config.set({"sshdeploy.connect-attempts": 1}), \
                pytest.raises(ClusterStopError, match="the cluster may still run"):
            cluster.shutdown()  # the Python API says the same
    finally:
        testbed.set_link(bed.host(n1), True)
    # back: its scheduler ran on, alone (it may not have dropped the lost workers yet)
    assert state_of(env, name) in ("running", "degraded")
    down = dask_ssh(env, "down", name)
    assert down.returncode == 0, down.stdout + down.stderr
    nothing_left(bed, name, within=1)


def test_from_name_of_a_cluster_that_is_gone_raises_and_starts_nothing(
        bed: testbed.Bed, env: dict[str, str]) -> None:
    """Finding 12: from_name silently started a new, empty cluster at a new address."""
    name = f"gone-{uuid.uuid4().hex[:6]}"
    cluster = SSHCluster([n1, n2], connect_options=bed.connect_options(), name=name,
                         shutdown_on_close=False)
    address = cluster.scheduler_address
    cluster.close()
    for host in bed.hosts:  # the hosts rebooted, say
        for pid, _cmd in testbed.processes(host):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    testbed.wait_until(lambda: testbed.python_processes(bed) == {}, 15, "all to be killed")
    with pytest.raises(ClusterNotFoundError, match=r"is gone.*start_if_gone=True"):
        SSHCluster.from_name(name)
    assert testbed.python_processes(bed) == {}  # nothing was started
    assert state_of(env, name) == "gone"  # still listed: `clean` forgets it
    with SSHCluster.from_name(name, start_if_gone=True) as again:  # asked: a new one
        assert list(again.workers) == [f"{n2}-0"]
        assert state_of(env, name) == "running" and again.kept is not None
        assert again.kept.record is not None and again.kept.record.scheduler_address != address
        again.shutdown()
    nothing_left(bed, name, within=1)


def _kill_all(bed: testbed.Bed, name: str) -> None:
    host = next(h for h in bed.hosts if h.name == name)
    for pid, _cmd in testbed.processes(host):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    testbed.wait_until(lambda: not testbed.python_processes(bed).get(name), 15,
                       f"every process on {name} to be killed")


def _agent_dirs(bed: testbed.Bed, name: str) -> list[str]:
    host = next(h for h in bed.hosts if h.name == name)
    return sorted(p.name for p in testbed.host_path(host, "/tmp").glob("sshdeploy-agent-*"))


def test_status_never_shows_a_killed_host_ok_and_down_removes_a_killed_agents_tmp(
        bed: testbed.Bed, env: dict[str, str]) -> None:
    """Issue 30: a killed worker agent showed `idle`, a gone cluster's hosts `ok`, and a
    SIGKILLed scheduler agent's temporary directory stayed until a later agent came."""
    name = f"killed-{uuid.uuid4().hex[:6]}"
    done = dask_ssh(env, *up_args(bed, name, n1, n2))
    assert done.returncode == 0, done.stdout + done.stderr
    _kill_all(bed, n2)   # the worker host's agent (and its worker), SIGKILLed
    status = dask_ssh(env, "status", name)
    row = next((line + " " for line in status.stdout.splitlines()
                if line.split()[:1] in ([n2], [f"root@{n2}"])), "")
    assert " down " in row and " idle " not in row and " ok " not in row, status.stdout + \
        status.stderr
    _kill_all(bed, n1)   # now the scheduler's agent too: the cluster is gone
    assert _agent_dirs(bed, n1), "a SIGKILLed agent leaves its temporary directory"
    status = dask_ssh(env, "status", name)
    assert f"{name}: gone" in status.stdout, status.stdout
    assert " ok " not in status.stdout and f"{n2}-0" not in status.stdout, status.stdout
    down = dask_ssh(env, "down", name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _agent_dirs(bed, n1) == [] and _agent_dirs(bed, n2) == []
    nothing_left(bed, name, within=1)


def test_list_never_says_stopped_while_a_process_of_the_cluster_runs(
        bed: testbed.Bed, env: dict[str, str]) -> None:
    """Issue 30: after --max-lifetime fired, `list` said `stopped` while workers ran ~25 s."""
    name = f"life-{uuid.uuid4().hex[:6]}"
    done = dask_ssh(env, *up_args(bed, name, n1, n2, n3), "--max-lifetime", "10s")
    assert done.returncode == 0, done.stdout + done.stderr
    seen: list[str] = []

    def stopped() -> bool:
        state = state_of(env, name)
        seen.append(str(state))
        if state == "stopped":   # said only once nothing of it runs on any host
            assert testbed.python_processes(bed) == {}, seen
        return state == "stopped"

    testbed.wait_until(stopped, 150, "the cluster to stop at its maximum lifetime")
    assert set(seen) <= {"running", "stopping", "stopped"}, seen
    down = dask_ssh(env, "down", name)   # forgets it: its files on the hosts go
    assert down.returncode == 0, down.stdout + down.stderr
    nothing_left(bed, name, within=1)
