"""dask-ssh's network options through click's CliRunner: no network, no processes.

``--forward-ports``, ``--interface``, ``--tls``, ``--min-workers``,
``--check-imports``, ``--ask-passphrase``, ``--log-directory`` errors and a
signal during start-up, with the :class:`FakeCluster` of ``test_cli.py``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import re
import signal
import stat
import sys
import types
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import pytest
from distributed import Security

from sshdeploy import cli
from sshdeploy.cli import console, report
from sshdeploy.cli import run as serve
from sshdeploy.cli.run import ClientCredentials
from sshdeploy.ssh.sshlib import asyncssh


def _sibling(name: str) -> ModuleType:
    """Import a sibling test module (``--import-mode=importlib`` puts none on sys.path)."""
    spec = importlib.util.spec_from_file_location(f"_sshdeploy_unit_{name}",
                                                  Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module


_test_cli = _sibling("test_cli")
FakeCluster = _test_cli.FakeCluster
fake_cluster = _test_cli.fake_cluster  # the autouse fixture
run, args_of, opts = _test_cli.run, _test_cli.args_of, _test_cli.opts
_signal_self = _test_cli._signal_self


# --------------------------------------------------------------------------- parsing


def test_forward_ports_defaults_to_auto_and_takes_both_flags() -> None:
    assert args_of("a", "b").kwargs()["forward_ports"] is None
    assert args_of("--forward-ports", "a", "b").kwargs()["forward_ports"] is True
    assert args_of("--no-forward-ports", "a", "b").kwargs()["forward_ports"] is False


def test_interface_goes_to_the_scheduler_and_the_workers() -> None:
    args = args_of("--interface", "eth1", "a", "b")
    assert args.scheduler_options["interface"] == "eth1"
    assert args.worker_options["interface"] == "eth1"
    assert "interface" not in args_of("a", "b").worker_options


def test_interface_and_nohost_contradict_each_other() -> None:
    result = run("--interface", "eth1", "--nohost", "a", "b")
    assert result.exit_code == 2
    assert "--nohost and --interface" in result.output


def test_tls_asks_for_new_credentials_and_min_workers_is_passed() -> None:
    assert args_of("a", "b").kwargs()["security"] is None
    assert args_of("--tls", "a", "b").kwargs()["security"] is True
    assert args_of("--min-workers", "2", "a", "b").kwargs()["min_workers"] == 2
    assert run("--min-workers", "0", "a", "b").exit_code == 2


def test_dry_run_passes_the_new_options_to_remote_commands() -> None:
    result = run("--dry-run", "--tls", "--interface", "eth1", "--min-workers", "1", "a", "b")
    assert result.exit_code == 0, result.output
    (kwargs,) = FakeCluster.plans_called
    assert kwargs["security"] is True and kwargs["min_workers"] == 1
    assert kwargs["scheduler_options"]["interface"] == "eth1"


def test_check_imports_needs_check() -> None:
    result = run("--check-imports", "a")
    assert result.exit_code == 2
    assert "--check-imports" in result.output and "--check" in result.output


@pytest.mark.parametrize(("extra", "deep"), [((), False), (("--check-imports",), True)])
def test_check_is_cheap_unless_check_imports(
    monkeypatch: pytest.MonkeyPatch, extra: tuple[str, ...], deep: bool
) -> None:
    calls = _test_cli._fake_check(monkeypatch, set())
    result = run("--check", *extra, "a", "b")
    assert result.exit_code == 0, result.output
    assert [c["deep"] for c in calls] == [deep]


# --------------------------------------------------------------------------- passphrase


def test_ask_passphrase_reaches_connect_options_and_is_never_printed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = tmp_path / "id_ed25519"
    key.write_bytes(asyncssh.generate_private_key("ssh-ed25519")
                    .export_private_key(passphrase="s3cret-Pass"))
    key.chmod(0o600)
    seen: list[dict[str, Any]] = []
    real = cli.build_cluster_args

    def spy(options: Any, **kw: Any) -> Any:
        args = real(options, **kw)
        seen.append(args.connect_options)
        return args

    monkeypatch.setattr(cli, "build_cluster_args", spy)
    FakeCluster.on_start = _signal_self(signal.SIGINT)
    result = run("--ask-passphrase", "--ssh-private-key", str(key), "a", "b",
                 input="s3cret-Pass\n")
    assert result.exit_code == 0, result.output
    assert seen[0]["passphrase"] == "s3cret-Pass"
    assert seen[0]["client_keys"] == [str(key)]
    assert FakeCluster.instances[0].kwargs["connect_options"]["passphrase"] == "s3cret-Pass"
    assert f"Passphrase for {key}" in result.output
    assert "s3cret-Pass" not in result.output
    # The passphrase is not in the options' repr either (tracebacks, logs).
    assert "s3cret-Pass" not in repr(opts("a"))


def test_dry_run_does_not_ask_for_the_passphrase() -> None:
    result = run("--dry-run", "--ask-passphrase", "a", "b", input="")
    assert result.exit_code == 0, result.output
    assert "Passphrase" not in result.output


# --------------------------------------------------------------------------- log directory


def test_log_directory_under_a_file_is_one_paragraph_exit_1(tmp_path: Path) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("")
    target = blocker / "logs"
    result = run("--log-directory", str(target), "a", "b")
    assert result.exit_code == 1, result.output
    assert f"--log-directory {target}: cannot create it" in result.output
    assert "Traceback" not in result.output
    assert len([ln for ln in result.output.splitlines() if ln.strip()]) == 1
    assert not FakeCluster.instances


def test_log_directory_not_writable_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Root may write anywhere: make the check of the command (only) say no.
    no_access = types.SimpleNamespace(access=lambda path, mode: False, W_OK=os.W_OK,
                                      X_OK=os.X_OK)
    monkeypatch.setattr(cli, "os", no_access)
    result = run("--log-directory", str(tmp_path), "a", "b")
    assert result.exit_code == 1, result.output
    assert f"--log-directory {tmp_path}: not writable" in result.output


# --------------------------------------------------------------------------- banner


def test_banner_says_when_the_scheduler_is_reached_through_ssh() -> None:
    def start(cluster: Any) -> None:
        cluster.scheduler_address = "tcp://127.0.0.1:40001"
        cluster.scheduler.forwarding = object()
        cluster.scheduler.address = "tcp://10.9.0.1:8786"
        os.kill(os.getpid(), signal.SIGINT)

    FakeCluster.on_start = start
    result = run("head", "w1")
    assert result.exit_code == 0, result.output
    assert re.search(r"^\s+scheduler\s+tcp://127\.0\.0\.1:40001\s+on head$", result.output, re.M)
    assert "scheduler reached through SSH (tcp://10.9.0.1:8786 on head)" in result.output


def test_banner_has_no_ssh_line_when_direct() -> None:
    FakeCluster.on_start = _signal_self(signal.SIGINT)
    assert "through SSH" not in run("head", "w1").output


def test_banner_lists_each_left_out_host_with_its_reason() -> None:
    def start(cluster: Any) -> None:
        cluster.failed_hosts = {
            "root@w2:1": RuntimeError("root@w2:1: connection refused\n(more detail)"),
            "w3": RuntimeError("w3: host key changed"),
        }
        os.kill(os.getpid(), signal.SIGINT)

    FakeCluster.on_start = start
    result = run("--min-workers", "1", "head", "w1", "root@w2:1", "w3")
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if "left out" in ln]
    assert lines == ["  left out  root@w2:1: connection refused",
                     "  left out  w3: host key changed"]


def test_tls_banner_prints_one_connect_line_and_removes_the_files_on_exit() -> None:
    security = Security.temporary()
    seen: dict[str, Any] = {}

    def start(cluster: Any) -> None:
        cluster.security = security
        cluster.scheduler_address = "tls://head:8786"
        os.kill(os.getpid(), signal.SIGINT)

    FakeCluster.on_start = start
    result = run("--tls", "head", "w1")
    assert result.exit_code == 0, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("from distributed")]
    assert line.startswith('from distributed import Client, Security; client = Client('
                           '"tls://head:8786", security=Security(tls_ca_file="')
    assert line.endswith(", require_encryption=True))")
    paths = re.findall(r'="(/[^"]+)"', line)
    assert [Path(p).name for p in paths] == ["ca.pem", "client.pem", "client.key"]
    seen["dir"] = Path(paths[0]).parent
    assert not seen["dir"].exists()
    assert compile(line, "<connect line>", "exec")


def test_client_credentials_are_private_and_removed_on_error() -> None:
    security = Security.temporary()
    with pytest.raises(RuntimeError), ClientCredentials() as creds:
        creds.write(security, "tls://127.0.0.1:1")
        assert creds.directory is not None
        assert stat.S_IMODE(creds.directory.stat().st_mode) == 0o700
        for name, attr in (("ca.pem", "tls_ca_file"), ("client.pem", "tls_client_cert"),
                           ("client.key", "tls_client_key")):
            path = creds.directory / name
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert path.read_text() == getattr(security, attr)
        raise RuntimeError("something failed while serving")
    assert creds.directory is not None and not creds.directory.exists()


def test_tls_files_are_removed_when_stdout_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    security = Security.temporary()
    made: list[Path] = []

    def start(cluster: Any) -> None:
        cluster.security = security
        cluster.scheduler_address = "tls://head:8786"

    real_write = ClientCredentials.write

    def write(self: ClientCredentials, sec: Any, address: str) -> str:
        line = real_write(self, sec, address)
        assert self.directory is not None
        made.append(self.directory)
        return line

    FakeCluster.on_start = start
    monkeypatch.setattr(ClientCredentials, "write", write)
    code, err = _test_cli._main_with(_test_cli.ClosingPipe(lines=2), ["--tls", "head", "w1"])
    assert (code, err) == (141, "")
    assert made and not made[0].exists()


# --------------------------------------------------------------------------- start-up


class HangingCluster(FakeCluster):  # type: ignore[misc,valid-type]
    """A cluster whose start never ends (a stalled remote start), until cancelled."""

    cancelled = False

    async def _start(self) -> Any:
        os.kill(os.getpid(), signal.SIGINT)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            HangingCluster.cancelled = True
            raise
        return self


def test_ctrl_c_during_start_up_cancels_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    HangingCluster.cancelled = False
    monkeypatch.setattr(serve, "SSHCluster", HangingCluster)
    result = run("head", "w1")
    assert result.exit_code == 130, result.output
    assert HangingCluster.cancelled
    (cluster,) = FakeCluster.instances
    assert cluster.closed == 1
    assert "SIGINT received during start-up; cancelling the start" in result.output
    assert "dask-ssh\n" not in result.output  # no banner
    assert "Traceback" not in result.output


def test_a_start_that_fails_closes_the_cluster_and_reports(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    class Failing(FakeCluster):  # type: ignore[misc,valid-type]
        async def _start(self) -> Any:
            raise click.ClickException("the start failed here")

    monkeypatch.setattr(serve, "SSHCluster", Failing)
    result = _test_cli.CliRunner().invoke(cli.main, ["head", "w1"])
    assert result.exit_code == 1
    assert "the start failed here" in result.output
    assert FakeCluster.instances[0].closed == 1


def test_print_banner_is_unchanged_without_the_new_parts() -> None:
    buf = io.StringIO()
    report.print_banner(console.make_console(buf), scheduler_address="tcp://n1:8786",
                         dashboard_link=None, scheduler_host="n1",
                         workers_by_host={"n2": ["n2-0"]}, failed_hosts={},
                         forwarded_from=None, connect_line=None)
    assert buf.getvalue().splitlines() == [
        "dask-ssh", "  scheduler  tcp://n1:8786  on n1", "  workers    1 on 1 host",
        "    n2  n2-0"]

