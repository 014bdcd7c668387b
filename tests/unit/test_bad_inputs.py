"""Bad inputs a new user gives: each is a ConfigError naming the argument or file, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from sshdeploy import SSHCluster
from sshdeploy.cli import main
from sshdeploy.errors import ConfigError
from sshdeploy.ssh.sshlib import asyncssh

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"env": ["A=1"]}, "env: must be a dict"),
    ({"env": {"BAD-NAME": "1"}}, "env: 'BAD-NAME' is not a variable name"),
    ({"env": {1: 2}}, "env: 1 is not a variable name"),
    ({"env": {"A": None}}, "env['A']: must be a string, got None"),
    ({"env": {"A": "x\0y"}}, "env['A']: holds a NUL byte"),
    ({"connect_options": "x"}, "connect_options: must be a dict of asyncssh.connect keywords"),
    ({"connect_options": [{}, "x"]}, "connect_options[1]: must be a dict"),
    ({"remote_python": 123}, "remote_python: must be the path or name of an interpreter, got 123"),
    ({"remote_python": ["python3", 3]}, "remote_python[1]:"),
    ({"forward_ports": "maybe"}, "forward_ports: must be True or False or None, got 'maybe'"),
    ({"restart_workers": "no"}, "restart_workers: must be True or False"),
    ({"scheduler_options": {"port": "abc"}}, "scheduler_options['port']: must be a port number"),
    ({"scheduler_options": {"port": 70000}}, "scheduler_options['port']: must be a port number"),
    ({"worker_options": ["nthreads", 2]}, "worker_options: must be a dict"),
    ({"setup": 123}, "setup: must be shell commands"),
    ({"min_workers": 3}, "min_workers: 3 is more than the 2 workers the hosts hold"),
    ({"worker_class": 3}, "worker_class: must be an import path"),
])
def test_wrong_arguments_are_config_errors_naming_them(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        SSHCluster(["s", "a", "b"], asynchronous=True, **kwargs)
    assert named in str(info.value)


def test_a_host_that_is_none_is_refused_before_connecting() -> None:
    with pytest.raises(ConfigError, match=r"hosts\[1\]: must be a host name or Host, got None"):
        SSHCluster(["adv1", None], asynchronous=True)  # type: ignore[list-item]


def known_hosts(tmp_path: Path, extra: bytes) -> Path:
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key()
    path = tmp_path / "known_hosts"
    path.write_bytes(b"# mine\nnode1 " + key + extra)
    return path


@pytest.mark.parametrize(("extra", "problem"), [
    (b"\xff\xfe\x00junk\n", "line 3 is not text (binary data?)"),
    (b"@cert-authority\n", "line 3 is not a known_hosts entry"),
])
def test_a_broken_known_hosts_file_is_named_with_its_line(
    tmp_path: Path, extra: bytes, problem: str
) -> None:
    path = known_hosts(tmp_path, extra)
    with pytest.raises(ConfigError) as info:
        SSHCluster(["s", "a"], connect_options={"known_hosts": str(path)}, asynchronous=True)
    assert f"{path}: {problem}" in str(info.value)


def test_a_broken_known_hosts_file_under_check_names_it_per_host(tmp_path: Path) -> None:
    path = known_hosts(tmp_path, b"\xff\xfe\x00junk\n")
    result = CliRunner().invoke(main, ["--check", "--known-hosts", str(path), "s", "a"])
    assert result.exit_code == 1, result.output
    assert f"FAILED s: known_hosts for s: {path}: line 3 is not text" in result.output
    assert ("Traceback" not in result.output and result.exception is None) or isinstance(
        result.exception, SystemExit)


def test_dask_ssh_started_with_stdout_closed_runs_as_with_dev_null() -> None:
    """``dask-ssh ... >&-`` (cron, service managers): nobody reads, nothing is lost: status 0.

    (A reader that goes away while it runs, ``| head``, is status 141: test_cli.)
    """
    proc = subprocess.run(
        ["sh", "-c", f"exec '{sys.executable}' -m sshdeploy.cli --dry-run a b >&-"],
        stderr=subprocess.PIPE, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0
    assert proc.stderr == ""


def test_a_dashboard_port_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"dashboard_address: must be a port number 0..65535"):
        SSHCluster(["s", "a"], scheduler_options={"dashboard_address": ":70000"},
                   asynchronous=True)


def test_a_host_added_twice_in_one_call_is_said_to_be_given_twice() -> None:
    """Issue 26 finding 15: not "h is already a host of the cluster"."""
    from sshdeploy.placement import extend, place

    placement = place(["s", "a"], {})
    with pytest.raises(ConfigError, match="hosts: h is given twice") as info:
        extend(placement, ["h", "h"])
    assert "already" not in str(info.value)
    with pytest.raises(ConfigError, match="a is already a host of the cluster"):
        extend(placement, ["a"])
    assert len(extend(placement, ["h", "i"]).worker_hosts) == 3


def test_dask_ssh_add_and_remove_give_command_line_advice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 26 finding 15: the errors of ``add``/``remove`` advise dask-ssh commands, not
    ``host_rows()`` or ``readmit()`` (the real errors of the Python API, translated)."""
    from types import SimpleNamespace

    from sshdeploy.cluster.fleet import Fleet
    from sshdeploy.placement import extend, place

    placement = place(["s", "a"], {})
    fleet = SimpleNamespace(roster=SimpleNamespace(placement=placement))
    closed: list[str] = []

    class Named:
        worker_spec: ClassVar[dict[str, Any]] = {}

        def add_hosts(self, hosts: list[Any], spare: bool = False) -> list[str]:
            extend(placement, hosts, spare=spare)
            return []

        def remove_hosts(self, hosts: list[Any]) -> list[str]:
            return [Fleet._host_of(fleet, h).hostname for h in hosts]  # type: ignore[arg-type]

        def close(self) -> None:
            closed.append("closed")

    monkeypatch.setattr(SSHCluster, "from_name", classmethod(lambda cls, name: Named()))
    for args, said, advice in (
            (["add", "lab", "a"], "a is already a host of the cluster", "dask-ssh status lab"),
            (["add", "lab", "h", "h"], "h is given twice", "HOST slots=N"),
            (["remove", "lab", "zz"], "zz is not a worker host of the cluster",
             "dask-ssh status lab")):
        result = CliRunner().invoke(main, args)
        text = " ".join(result.output.split())
        assert result.exit_code == 2, result.output
        assert f"HOSTNAMES: {said}" in text and advice in text, text
        assert "host_rows()" not in text and "readmit()" not in text and "Traceback" not in text
    assert closed == ["closed"] * 3
