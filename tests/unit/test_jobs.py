"""Jobs of a named cluster (issue 27) without a network: records, states, exit statuses,
what a submit sends, the command line (the scheduler host's side: test_job_host.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click
import pytest

from sshdeploy.cli.jobs import exec_command, submit_command
from sshdeploy.errors import ConfigError
from sshdeploy.named.jobs import JobRecord, job_files, parse_env, upload_dir, upload_prefix
from sshdeploy.named.jobs import exec_command as build_exec

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------ records and states

@pytest.mark.parametrize(("fields", "status", "code", "said"), [
    ({"state": "running", "alive": True}, "running", None, "running"),
    ({"state": "starting", "alive": True}, "running", None, "running"),
    ({"state": "running", "alive": False}, "lost", 1, "lost: its supervisor"),
    ({"state": "succeeded", "exit_code": 0}, "succeeded", 0, "succeeded"),
    ({"state": "failed", "exit_code": 3}, "failed", 3, "failed with exit code 3"),
    ({"state": "failed", "signal": 11}, "failed", 139, "failed: killed by SIGSEGV"),
    ({"state": "stopped", "signal": 2, "reason": "stopped by ann@lap"}, "stopped", 130,
     "stopped (stopped by ann@lap)"),
    ({"state": "stopped", "exit_code": 0, "reason": "timed out after 5 s"}, "stopped", 0,
     "stopped (timed out after 5 s)"),
    ({"state": "what"}, "lost", 1, "lost"),
])
def test_a_record_says_its_state_and_the_exit_status_dask_ssh_gives(
        fields: dict[str, Any], status: str, code: int | None, said: str) -> None:
    job = JobRecord.from_json({"id": 4, **fields})
    assert job.id == "4" and job.status == status
    assert job.done == (status != "running")
    if code is not None:
        assert job.exit_status() == code
    assert job.describe().startswith(said)


def test_a_record_reads_any_answer_and_shows_one_row() -> None:
    job = JobRecord.from_json({"id": "2", "name": "train", "argv": ["/opt/py/bin/python3",
                               "train.py", "--lr", "0.1 0.2"], "who": "ann@lap",
                               "state": "failed", "signal": 9, "submitted": 100.0,
                               "started": 101.0, "ended": 131.0, "unknown": "kept out",
                               "exit_code": None})
    assert job.row(now=200.0) == ("2", "train", "failed", "SIGKILL", "1m", "30s", "ann@lap",
                                  "python3 train.py --lr '0.1 0.2'")
    out = job.as_json()
    assert out["status"] == "failed" and out["exit_status"] == 137 and out["argv"][1] == \
        "train.py"
    assert JobRecord("1", state="running", alive=True).as_json()["exit_status"] is None


def test_env_items_are_key_value_pairs() -> None:
    assert parse_env(["A=1", "B_2=x=y", "C="]) == {"A": "1", "B_2": "x=y", "C": ""}
    for bad in ("A", "=1", "1A=2", "A-B=3"):
        with pytest.raises(ConfigError, match="is not KEY=VALUE"):
            parse_env([bad])


def test_a_job_sends_its_scripts_directory_or_the_paths_given(tmp_path: Path) -> None:
    files = job_files("proj/run.py", base=tmp_path)
    assert files.paths == (str(tmp_path / "proj"),) and (files.cwd, files.script) == \
        ("proj", "run.py")
    files = job_files("proj/run.py", ["lib", "data.csv"], base=tmp_path)
    assert files.paths == (str(tmp_path / "proj" / "run.py"), str(tmp_path / "lib"),
                           str(tmp_path / "data.csv"))
    assert (files.cwd, files.script) == ("", "run.py")


def test_upload_directories_are_named_by_content_and_never_match_another_clusters() -> None:
    a = upload_dir("ab", {"run.py": "1" * 64})
    assert a == upload_dir("ab", {"run.py": "1" * 64}) != upload_dir("ab", {"run.py": "2" * 64})
    assert a.startswith(upload_prefix("ab"))
    assert not upload_dir("ab-c", {"run.py": "1" * 64}).startswith(upload_prefix("ab"))


def test_exec_says_its_pid_exports_the_env_and_runs_the_setup_first() -> None:
    text = build_exec(["df", "-h", "|", "tail", "-1"], None, {"X": "a b"})
    assert text.splitlines() == ['echo "$$"', "export X='a b'", "df -h | tail -1"]
    assert "|| exit 121" in build_exec(["true"], "module load x", {})


# ------------------------------------------------------------------ the command line

def parsed(command: click.Command, argv: list[str]) -> dict[str, Any]:
    ctx = command.make_context(command.name, argv)
    return dict(ctx.params)


def test_submit_options_come_anywhere_before_the_script_and_its_arguments_are_its_own(
        tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text("print(1)\n")
    p = parsed(submit_command, ["lab", "-d", "--job-name", "j", str(script), "--lr", "0.1",
                                "-d", "--", "x"])
    assert (p["name"], p["detach"], p["job_name"]) == ("lab", True, "j")
    assert p["args"] == ("--lr", "0.1", "-d", "--", "x")
    p = parsed(submit_command, ["--env", "A=1", "lab", str(script)])
    assert p["env_items"] == ("A=1",) and p["args"] == () and not p["detach"]


def test_exec_takes_its_options_then_the_command(tmp_path: Path) -> None:
    p = parsed(exec_command, ["lab", "--hosts", "n2", "-H", "n3,n4", "--", "df", "-h"])
    assert (p["hosts"], p["command"]) == (("n2", "n3,n4"), ("df", "-h"))
    p = parsed(exec_command, ["lab", "hostname", "-f"])
    assert p["command"] == ("hostname", "-f")


def test_bad_submits_are_usage_errors_that_start_nothing(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    runner = CliRunner()
    out = runner.invoke(submit_command, ["lab", str(tmp_path / "missing.py")])
    assert out.exit_code == 2 and "does not exist" in out.output
    script = tmp_path / "run.py"
    script.write_text("print(1)\n")
    out = runner.invoke(submit_command, ["lab", "--env", "NOEQUALS", str(script)])
    assert out.exit_code == 2 and "is not KEY=VALUE" in out.output
    out = runner.invoke(submit_command, ["lab", "--timeout", "soon", str(script)])
    assert out.exit_code == 2 and "--timeout" in out.output
    out = runner.invoke(submit_command, ["lab", str(script)])
    assert out.exit_code == 1 and "cluster 'lab' is unknown" in out.output


# ------------------------------------------------------------------ what the host answers

def cluster_jobs(monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any]) -> Any:
    """A ClusterJobs of a recorded cluster whose scheduler host answers *answer*."""
    import dataclasses

    from sshdeploy.named import jobops
    from sshdeploy.named.jobclient import ClusterJobs
    from sshdeploy.named.state import ClusterRecord

    async def run_op(*args: Any, **kw: Any) -> dict[str, Any]:
        return answer

    monkeypatch.setattr(jobops, "run_op", run_op)
    record = ClusterRecord("lab", "root@n1:22", "tcp://10.0.0.1:8786",
                           spec={"hosts": [{"hostname": h} for h in ("n1", "n2", "n3")],
                                 "login_shell": True})
    jobs = ClusterJobs(record)
    assert dataclasses.replace(jobs.launch).login_shell  # the record's login shell is kept
    return jobs


def test_what_the_scheduler_host_answers_becomes_records_or_clear_errors(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from sshdeploy.errors import ClusterNotFoundError, JobError

    jobs = cluster_jobs(monkeypatch, {"jobs": [{"id": "1", "state": "running", "alive": True}]})
    assert [j.status for j in asyncio.run(jobs.jobs())] == ["running"]
    jobs = cluster_jobs(monkeypatch, {"error": "unknown-job", "known": ["1", "2"]})
    with pytest.raises(JobError, match=r"job 9: no such job on .*\(known: 1, 2\)"):
        asyncio.run(jobs.stop("9"))
    jobs = cluster_jobs(monkeypatch, {"error": "not-running",
                                      "end": {"reason": "maximum lifetime of 60 s reached"}})
    with pytest.raises(ClusterNotFoundError, match="is stopped: maximum lifetime"):
        asyncio.run(jobs.wait("1"))
    jobs = cluster_jobs(monkeypatch, {"job": {"id": "1", "state": "stopped"}, "was": "stopped"})
    job, was_running = asyncio.run(jobs.stop("1"))
    assert (job.status, was_running) == ("stopped", False)


def test_exec_names_the_hosts_it_runs_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from sshdeploy.errors import JobError

    jobs = cluster_jobs(monkeypatch, {})
    assert [h.hostname for h in jobs.hosts()] == ["n1", "n2", "n3"]
    assert [h.hostname for h in jobs.hosts(["n3", "n1"])] == ["n3", "n1"]
    with pytest.raises(JobError, match=r"'n9' is not one of its hosts \(n1, n2, n3\)"):
        jobs.hosts(["n9"])


def test_jobs_from_python_need_a_named_cluster() -> None:
    from types import SimpleNamespace

    from sshdeploy.named.jobclient import cluster_name

    assert cluster_name("lab") == "lab"
    named = SimpleNamespace(kept=SimpleNamespace(policy=SimpleNamespace(name="lab")))
    assert cluster_name(named) == "lab"
    with pytest.raises(ConfigError, match="jobs need a named cluster"):
        cluster_name(SimpleNamespace(kept=None))  # an SSHCluster that is not named


def test_a_classic_cluster_has_no_jobs_and_says_jobs_need_a_named_cluster() -> None:
    """``cluster.submit_script`` and ``cluster.jobs()`` on an SSHCluster that is not named:
    one clear error before anything is sent (the cluster is never started here)."""
    from sshdeploy import SSHCluster

    async def main() -> None:
        cluster = SSHCluster(["s", "a"], asynchronous=True)
        with pytest.raises(ConfigError, match="jobs need a named cluster") as info:
            cluster.submit_script("train.py", ["3"])
        assert "name='NAME'" in str(info.value) and "dask-ssh up --name" in str(info.value)
        with pytest.raises(ConfigError, match="jobs need a named cluster"):
            cluster.jobs()

    asyncio.run(main())


def test_ctrl_c_while_following_a_jobs_log_says_it_runs_on_and_exits_130(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As for submit: Ctrl-C stops the following, not the job, and says so."""
    import os
    import signal

    from click.testing import CliRunner

    from sshdeploy.cli import jobs as cli_jobs

    class Following:
        async def __aenter__(self) -> Following:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        async def follow(self, job: str, on_output: Any, follow: bool = True) -> None:
            on_output(b"epoch 0\n")
            asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGINT)
            await asyncio.sleep(30)

    monkeypatch.setattr(cli_jobs, "_jobs", lambda name: Following())
    result = CliRunner().invoke(cli_jobs.job_group, ["logs", "lab", "long", "--follow"])
    assert result.exit_code == 130, result.output
    assert result.stdout == "epoch 0\n"
    assert ("dask-ssh: stopped following; job long of lab keeps running (dask-ssh job stop "
            "lab long stops it)") in result.stderr
