"""The dask-ssh command through click's CliRunner: no network, no processes.

``SSHCluster`` (looked up in ``sshdeploy.cli`` for the dry run and in
``sshdeploy.cli.run`` to run) is replaced by :class:`FakeCluster`, which records
its keyword arguments; ``sshdeploy.cli.check_hosts`` by a function returning
canned results. The pure part is tested on options parsed by the real click
command (:func:`opts`).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import click
import pytest
from click.testing import CliRunner, Result

from sshdeploy import cli, cluster
from sshdeploy.arguments import KEYWORDS, ClusterArgs, Keyword
from sshdeploy.cli import options as cliargs
from sshdeploy.cli import run as serve
from sshdeploy.cli.options import CliOptions
from sshdeploy.errors import ConnectError, HostfileError
from sshdeploy.hostfile import HOSTFILE_GRAMMAR, parse_host
from sshdeploy.hosts import Host

REAL_SSHCLUSTER = cluster.SSHCluster

# --------------------------------------------------------------------------- fakes


@dataclass
class FakeRemote:
    host: Host
    status: Any = None


@dataclass
class FakePlan:
    host: str
    role: str
    names: list[str]
    command: str
    python: str
    options: dict[str, Any] = field(default_factory=dict)


class FakeCluster:
    """Records its arguments; "runs" until a signal or until told the scheduler died."""

    instances: ClassVar[list[FakeCluster]] = []
    on_start: Any = None
    close_error: Exception | None = None
    plans_called: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("asynchronous", None)  # serve runs it in its own event loop
        self.kwargs = kwargs
        self.closed = 0
        hosts: list[Host] = kwargs["hosts"]
        n = kwargs["worker_options"].get("n_workers", 1)
        self.scheduler_address = f"tcp://{hosts[0].hostname}:8786"
        self.dashboard_link = f"http://{hosts[0].hostname}:8787/status"
        self.scheduler = FakeRemote(hosts[0], status=types.SimpleNamespace(name="running"))
        self.status = types.SimpleNamespace(name="running")
        self.workers = {
            f"{h.hostname}-{i}": FakeRemote(h) for h in hosts[1:] for i in range(h.slots or n)
        }
        FakeCluster.instances.append(self)

    def __await__(self) -> Any:
        return self._start().__await__()

    async def _start(self) -> FakeCluster:
        if FakeCluster.on_start is not None:
            FakeCluster.on_start(self)
        return self

    def close(self, timeout: float | None = None) -> None:
        self.closed += 1
        self.close_timeout = timeout
        if FakeCluster.close_error is not None:
            raise FakeCluster.close_error

    @staticmethod
    def remote_commands(**kwargs: Any) -> list[FakePlan]:
        FakeCluster.plans_called.append(kwargs)
        hosts: list[Host] = kwargs["hosts"]
        n = kwargs["worker_options"]["n_workers"]
        out = [
            FakePlan(
                hosts[0].as_written(),
                "scheduler",
                ["scheduler"],
                "python3 -c 'scheduler'",
                "/usr/bin/python3",
                dict(kwargs["scheduler_options"]),
            )
        ]
        for h in hosts[1:]:
            out.append(
                FakePlan(
                    h.as_written(),
                    "worker",
                    [f"{h.hostname}-{i}" for i in range(h.slots or n)],
                    f"python3 -c 'worker {h.hostname}'",
                    "/usr/bin/python3",
                )
            )
        return out


@pytest.fixture(autouse=True)
def fake_cluster(monkeypatch: pytest.MonkeyPatch) -> type[FakeCluster]:
    FakeCluster.instances = []
    FakeCluster.plans_called = []
    FakeCluster.on_start = None
    FakeCluster.close_error = None
    monkeypatch.setattr(cluster, "SSHCluster", FakeCluster)  # cli imports it when needed
    monkeypatch.setattr(serve, "SSHCluster", FakeCluster)
    monkeypatch.delenv("PBS_NODEFILE", raising=False)
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    monkeypatch.delenv("SLURM_NODELIST", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return FakeCluster


def _signal_self(signum: int) -> Any:
    def start(cluster: FakeCluster) -> None:
        os.kill(os.getpid(), signum)

    return start


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli.main, list(args), input=input, catch_exceptions=False)


def opts(*argv: str) -> CliOptions:
    """Parse *argv* with the real command, as ``dask-ssh`` does."""
    return CliOptions(**cli.main.make_context("dask-ssh", list(argv)).params)


def args_of(*argv: str, environ: dict[str, str] | None = None) -> ClusterArgs:
    """Return what ``dask-ssh ARGV`` passes to SSHCluster (pure; no batch environment)."""
    return cliargs.build_cluster_args(opts(*argv), environ={} if environ is None else environ)


def build(*args: str) -> ClusterArgs:
    """Run the command up to SSHCluster(...) and return what it received."""
    FakeCluster.on_start = _signal_self(signal.SIGINT)
    result = run(*args)
    assert result.exit_code == 0, result.output
    (cluster,) = FakeCluster.instances
    return ClusterArgs.of(cluster.kwargs)


def names(hosts: list[Host]) -> list[str]:
    return [h.hostname for h in hosts]


# --------------------------------------------------------------------------- pure function


def test_defaults() -> None:
    args = args_of("a", "b")
    assert names(args.hosts) == ["a", "b"]
    assert args.worker_options == {"n_workers": 1}
    assert args.scheduler_options == {"port": 8786, "dashboard_address": ":8787"}
    assert args.worker_class == "distributed.Nanny"
    assert args.restart_workers is True
    # nothing given: None, SSHCluster's own default
    assert args.connect_options is None and args.env is None and args.spares is None
    assert args.remote_python is None and args.setup is None


def test_every_click_option_is_a_field_of_cli_options() -> None:
    declared = {p.name for p in cli.main.params if not getattr(p, "is_eager", False)}
    assert declared == set(CliOptions.names())


def test_kwargs_match_sshcluster_signature() -> None:
    import inspect

    kwargs = args_of("a", "b").kwargs()
    inspect.signature(REAL_SSHCLUSTER).bind(**kwargs)
    inspect.signature(REAL_SSHCLUSTER.remote_commands).bind(**kwargs)


@pytest.mark.parametrize("kw", [kw for kw in KEYWORDS if kw.cli is not None],
                         ids=lambda kw: kw.name)
def test_the_option_the_declaration_names_sets_its_keyword(kw: Keyword) -> None:
    """``sshdeploy.arguments`` names, per keyword, the ``dask-ssh`` option that sets it."""
    assert kw.cli is not None
    given = args_of("a", "b", *shlex.split(kw.cli))
    assert getattr(given, kw.name) != getattr(args_of("a", "b"), kw.name)
    assert getattr(given, kw.name) != kw.default


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["a", "b", "c"], ["a", "b", "c"]),
        (["a"], ["a", "a"]),
        (["--scheduler", "s", "a", "b"], ["s", "a", "b"]),
        (["--scheduler", "s", "a"], ["s", "a"]),
        (["--scheduler", "s"], ["s", "s"]),
        (["a", "a"], ["a", "a"]),
    ],
)
def test_placement(argv: list[str], expected: list[str]) -> None:
    assert names(args_of(*argv).hosts) == expected


def test_no_hosts_is_usage_error() -> None:
    with pytest.raises(click.UsageError, match="no hosts"):
        args_of()


def test_ssh_username_and_port_are_defaults_only() -> None:
    args = args_of("a", "al@b:23", "--scheduler", "s:2", "--ssh-username", "bob",
                   "--ssh-port", "2222")
    assert [(h.hostname, h.user, h.port) for h in args.hosts] == [
        ("s", "bob", 2),
        ("a", "bob", 2222),
        ("b", "al", 23),
    ]
    assert args.connect_options is None  # neither username nor port


def test_command_line_hosts_take_ranges_and_settings() -> None:
    args = args_of("head", "n[1-2] slots=3")
    assert names(args.hosts) == ["head", "n1", "n2"]
    assert [h.slots for h in args.hosts[1:]] == [3, 3]


def test_bad_command_line_host_is_usage_error() -> None:
    with pytest.raises(click.BadParameter):
        args_of("a", "bad host:99999")


@pytest.mark.parametrize(
    ("argv", "connect"),
    [
        (["--ssh-private-key", __file__], {"client_keys": [__file__]}),
        (["--known-hosts", __file__], {"known_hosts": __file__}),
        (["--insecure-skip-host-key-check"], {"known_hosts": None}),
        (["--connect-timeout", "2.5"], {"connect_timeout": 2.5}),
        (["--jump-host", "al@bastion:2200"], {"tunnel": "al@bastion:2200"}),
        (["--jump-host", "bastion"], {"tunnel": "bastion"}),
    ],
)
def test_connect_options(argv: list[str], connect: dict[str, Any]) -> None:
    assert args_of("a", *argv).connect_options == connect


@pytest.mark.parametrize(
    ("argv", "workers"),
    [
        (["--nworkers", "3"], {"n_workers": 3}),
        (["--nthreads", "0"], {"n_workers": 1}),
        (["--nthreads", "4"], {"n_workers": 1, "nthreads": 4}),
        (["--memory-limit", "auto"], {"n_workers": 1}),
        (["--memory-limit", "AUTO"], {"n_workers": 1}),
        (["--memory-limit", "4GB"], {"n_workers": 1, "memory_limit": "4GB"}),
        (["--memory-limit", "0"], {"n_workers": 1, "memory_limit": 0}),
        (["--memory-limit", "0.5"], {"n_workers": 1, "memory_limit": 0.5}),
        (["--memory-limit", "1e9"], {"n_workers": 1, "memory_limit": 1000000000}),
        (["--memory-limit", "4000000000"], {"n_workers": 1, "memory_limit": 4000000000}),
        (["--local-directory", "/scratch/x"], {"n_workers": 1, "local_directory": "/scratch/x"}),
        (["--worker-port", "0"], {"n_workers": 1}),
        (["--worker-port", "4000"], {"n_workers": 1, "worker_port": 4000}),
        (["--worker-port", "4000:4010"], {"n_workers": 1, "worker_port": "4000:4010"}),
        (["--nanny-port", "5000"], {"n_workers": 1, "nanny_port": 5000}),
    ],
)
def test_worker_options(argv: list[str], workers: dict[str, Any]) -> None:
    assert args_of("a", *argv).worker_options == workers


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--memory-limit", "lots"], "'lots' is not a size"),
        (["--memory-limit", "1.5"], "did you mean 1.5GB?"),
        (["--memory-limit", "-1"], "-1 is negative"),
        (["--memory-limit", "-0.5"], "is negative"),
        (["--memory-limit", "-4GB"], "is negative"),
        (["--memory-limit", "nan"], "not a finite number"),
        (["--worker-port", "http"], "not a port"),
        (["--worker-port", "70000"], "ports go up to 65535"),
        (["--nanny-port", "10:5"], "bad port range"),
        (["--jump-host", "bad host name"], "--jump-host"),
        (["--jump-host", "bastion slots=2"], "without settings"),
        (["--scheduler", "user@"], "--scheduler"),
        (["--env", "NOPE"], "KEY=VALUE"),
        (["--nthreads", "-1"], "--nthreads"),
        (["--nworkers", "0"], "--nworkers"),
        (["--known-hosts", __file__, "--insecure-skip-host-key-check"], "contradict"),
        (["--remote-dask-worker", "mypkg.cli.worker"], "not a module"),
        (["--remote-dask-worker", "mypkg.MyWorker", "--worker-class", "distributed.Worker"],
         "disagree"),
        (["--nanny-port", "5000", "--worker-class", "distributed.Worker"], "needs a Nanny"),
        (["--nprocs", "4", "--nworkers", "2"], "disagree"),
        (["--dry-run", "--check"], "two separate actions"),
    ],
)
def test_bad_options_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(click.UsageError) as info:
        args_of("a", *argv)
    assert message in info.value.format_message()


@pytest.mark.parametrize(
    ("argv", "cls"),
    [
        ([], "distributed.Nanny"),
        (["--remote-dask-worker", "distributed.cli.dask_worker"], "distributed.Nanny"),
        (["--remote-dask-worker", "distributed.cli.dask_spec"], "distributed.Nanny"),
        (["--remote-dask-worker", "distributed.Worker"], "distributed.Worker"),
        (["--worker-class", "distributed.Worker"], "distributed.Worker"),
        (
            ["--worker-class", "distributed.Worker",
             "--remote-dask-worker", "distributed.cli.dask_worker"],
            "distributed.Worker",
        ),
    ],
)
def test_worker_class(argv: list[str], cls: str) -> None:
    assert args_of("a", *argv).worker_class == cls


def test_remaining_options() -> None:
    args = args_of(
        "a", "--scheduler-port", "0", "--dashboard-address", ":0", "--remote-python", "/opt/py",
        "--setup", "module load dask", "--env", "A=1", "--no-restart",
    )
    assert args.scheduler_options == {"port": 0, "dashboard_address": ":0"}
    assert args.remote_python == "/opt/py"
    assert args.setup == "module load dask"
    assert args.env == {"A": "1"}
    assert args.restart_workers is False


def test_env_items() -> None:
    args = args_of("a", "--env", "A=1", "--env", "B=x=y", "--env", "C=", "--env", "A=2")
    assert args.env == {"A": "2", "B": "x=y", "C": ""}


@pytest.mark.parametrize("item", ["NOEQUALS", "=v", "1A=v", "A-B=v", "A B=v"])
def test_env_item_type_rejects(item: str) -> None:
    with pytest.raises(click.BadParameter, match="KEY=VALUE"):
        cliargs.ENV_ITEM.convert(item, None, None)


def test_hosts_from_batch_environment(tmp_path: Path) -> None:
    args = args_of(environ={"SLURM_JOB_NODELIST": "n[1-3]"})
    assert names(args.hosts) == ["n1", "n2", "n3"]
    # command-line hosts win over the batch environment
    args = args_of("x", environ={"SLURM_JOB_NODELIST": "n[1-3]"})
    assert names(args.hosts) == ["x", "x"]


# --------------------------------------------------------------------------- the command


def test_every_option_reaches_sshcluster(tmp_path: Path) -> None:
    key = tmp_path / "id_test"
    key.write_text("not really a key")
    known = tmp_path / "known_hosts"
    known.write_text("")
    args = build(
        "--scheduler",
        "head",
        "--scheduler-port",
        "9000",
        "--nthreads",
        "2",
        "--nworkers",
        "3",
        "--ssh-username",
        "bob",
        "--ssh-port",
        "2222",
        "--ssh-private-key",
        str(key),
        "--nohost",
        "--local-directory",
        "/scratch",
        "--remote-python",
        "/opt/py/bin/python",
        "--memory-limit",
        "2GiB",
        "--worker-port",
        "4000:4100",
        "--nanny-port",
        "5000:5100",
        "--remote-dask-worker",
        "distributed.cli.dask_worker",
        "--dashboard-address",
        ":9999",
        "--worker-class",
        "distributed.Nanny",
        "--connect-timeout",
        "3",
        "--known-hosts",
        str(known),
        "--jump-host",
        "gw",
        "--env",
        "A=1",
        "--env",
        "B=2",
        "--setup",
        "conda activate dask",
        "--no-restart",
        "w1",
        "al@w2:23",
    )
    assert [(h.hostname, h.user, h.port) for h in args.hosts] == [
        ("head", "bob", 2222),
        ("w1", "bob", 2222),
        ("w2", "al", 23),
    ]
    assert args.scheduler_options == {"port": 9000, "dashboard_address": ":9999"}
    assert args.worker_options == {
        "host": None,  # --nohost: workers pick their own address
        "n_workers": 3,
        "nthreads": 2,
        "memory_limit": "2GiB",
        "local_directory": "/scratch",
        "worker_port": "4000:4100",
        "nanny_port": "5000:5100",
    }
    assert args.connect_options == {
        "client_keys": [str(key)],
        "known_hosts": str(known),
        "connect_timeout": 3.0,
        "tunnel": "gw",
    }
    assert args.worker_class == "distributed.Nanny"
    assert args.remote_python == "/opt/py/bin/python"
    assert args.setup == "conda activate dask"
    assert args.env == {"A": "1", "B": "2"}


def test_nprocs_is_deprecated_alias() -> None:
    FakeCluster.on_start = _signal_self(signal.SIGINT)
    result = run("--nprocs", "4", "a", "b")
    assert result.exit_code == 0, result.output
    assert "--nprocs is deprecated" in result.output
    assert FakeCluster.instances[0].kwargs["worker_options"]["n_workers"] == 4


def test_nprocs_and_nworkers_disagree() -> None:
    result = run("--nprocs", "4", "--nworkers", "2", "a")
    assert result.exit_code == 2
    assert not FakeCluster.instances


def test_insecure_prints_warning() -> None:
    FakeCluster.on_start = _signal_self(signal.SIGINT)
    result = run("--insecure-skip-host-key-check", "a")
    assert result.exit_code == 0
    assert "WARNING" in result.output and "not checked" in result.output
    assert FakeCluster.instances[0].kwargs["connect_options"] == {"known_hosts": None}


def test_ssh_port_default_is_left_to_ssh_config() -> None:
    args = build("a", "b")
    assert args.hosts[0].port in (None, 22)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--env", "NOPE", "a"],
        ["--nworkers", "0", "a"],
        ["--nthreads", "-1", "a"],
        ["--scheduler-port", "70000", "a"],
        ["--ssh-port", "0", "a"],
        ["--memory-limit", "plenty", "a"],
        ["--memory-limit", "1.5", "a"],
        ["--memory-limit", "-1", "a"],
        ["--connect-timeout", "0", "a"],
        ["--hostfile", "/nonexistent/hosts.txt"],
        ["--ssh-private-key", "/nonexistent/id"],
        ["--dry-run", "--check", "a"],
        ["--known-hosts", __file__, "--insecure-skip-host-key-check", "a"],
        ["--no-such-option", "a"],
        ["bad host"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    result = CliRunner().invoke(cli.main, argv)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not FakeCluster.instances


def test_no_hosts_message() -> None:
    result = CliRunner().invoke(cli.main, [])
    assert "no hosts" in result.output and "--hostfile" in result.output


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.startswith("dask-ssh 0.1.0 (distributed ")


def test_help_has_grammar_and_placement() -> None:
    result = run("--help")
    assert result.exit_code == 0
    out = result.output
    assert "the first host runs the scheduler" in out
    assert "with --scheduler HOST, HOST runs the scheduler and every listed host" in out
    assert "a single host runs both" in out
    for line in HOSTFILE_GRAMMAR.strip().splitlines():
        assert line.strip() in out
    for option in [
        "--scheduler",
        "--scheduler-port",
        "--nthreads",
        "--nworkers",
        "--nprocs",
        "--hostfile",
        "--ssh-username",
        "--ssh-port",
        "--ssh-private-key",
        "--nohost",
        "--log-directory",
        "--local-directory",
        "--remote-python",
        "--memory-limit",
        "--worker-port",
        "--nanny-port",
        "--remote-dask-worker",
        "--version",
        "--dashboard-address",
        "--worker-class",
        "--connect-timeout",
        "--known-hosts",
        "--insecure-skip-host-key-check",
        "--jump-host",
        "--env",
        "--setup",
        "--dry-run",
        "--check",
        "--no-restart",
    ]:
        assert option in out
    assert "ON THIS MACHINE" in out  # --log-directory semantics


# --------------------------------------------------------------------------- hostfiles


def test_hostfile(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text(
        "# cluster\n"
        "alice@head:2222      # scheduler\n"
        "\n"
        "gpu[01-02] slots=2 nthreads=8\n"
        "10.0.0.7 remote-python=/opt/py\n"
    )
    args = build("--hostfile", str(hostfile), "--ssh-username", "bob")
    assert [(h.hostname, h.user, h.port) for h in args.hosts] == [
        ("head", "alice", 2222),
        ("gpu01", "bob", None),
        ("gpu02", "bob", None),
        ("10.0.0.7", "bob", None),
    ]
    assert [h.slots for h in args.hosts] == [None, 2, 2, None]
    (cluster,) = FakeCluster.instances
    assert sorted(cluster.workers) == ["10.0.0.7-0", "gpu01-0", "gpu01-1", "gpu02-0", "gpu02-1"]


def test_command_line_hosts_come_before_hostfile(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("n1\nn2\n")
    args = build("--hostfile", str(hostfile), "head")
    assert names(args.hosts) == ["head", "n1", "n2"]


def test_bad_hostfile_line_exits_1_with_path_and_line(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("node1\nnode2 slots=many\nnode3\n")
    result = CliRunner().invoke(cli.main, ["--hostfile", str(hostfile)])
    assert result.exit_code == getattr(HostfileError, "exit_code", 1)
    assert f"{hostfile}:2:" in result.output
    assert "Traceback" not in result.output
    assert not FakeCluster.instances


@pytest.mark.parametrize(
    ("setting", "phrase"),
    [
        ("memory-limit=1.5", "1.5 means 1.5 bytes, too little for a worker"),
        ("memory-limit=-1", "-1 is negative"),
        ("nthreads=0", "expected a positive integer"),
        ("slots=-2", "expected a positive integer"),
    ],
)
def test_hostfile_values_follow_the_cli_rules(tmp_path: Path, setting: str, phrase: str) -> None:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text(f"node1\nnode2 {setting}\n")
    result = CliRunner().invoke(cli.main, ["--hostfile", str(hostfile)])
    assert result.exit_code == getattr(HostfileError, "exit_code", 1), result.output
    assert f"{hostfile}:2:" in result.output and phrase in result.output
    assert not FakeCluster.instances


def test_empty_hostfile_is_usage_error(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("# nothing\n")
    result = CliRunner().invoke(cli.main, ["--hostfile", str(hostfile)])
    assert result.exit_code in (1, 2)  # hosts.py may call an empty hostfile an error
    assert "Traceback" not in result.output


def test_batch_environment_used_without_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_NODELIST", "c[1-3]")
    args = build()
    assert names(args.hosts) == ["c1", "c2", "c3"]


# --------------------------------------------------------------------------- dry run, check


def test_dry_run_lists_hosts_roles_commands_and_starts_nothing(tmp_path: Path) -> None:
    result = run("--dry-run", "--nworkers", "2", "head", "w1", "w2")
    assert result.exit_code == 0, result.output
    assert not FakeCluster.instances
    out = result.output
    assert "# head  scheduler  scheduler" in out
    assert "# w1  worker  w1-0, w1-1" in out
    assert "# w2  worker  w2-0, w2-1" in out
    assert "python3 -c 'worker w2'" in out
    assert "python:  /usr/bin/python3" in out
    (kwargs,) = FakeCluster.plans_called
    assert kwargs["worker_options"] == {"n_workers": 2}


def test_dry_run_with_real_plan() -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cluster, "SSHCluster", REAL_SSHCLUSTER)
        result = run("--dry-run", "--setup", "true", "--remote-python", "/opt/py", "head", "w1")
    assert result.exit_code == 0, result.output
    assert "scheduler" in result.output and "w1-0" in result.output
    assert "/opt/py" in result.output


def test_dry_run_shows_setup_lines_login_shell_sync_and_uploads() -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cluster, "SSHCluster", REAL_SSHCLUSTER)
        result = run("--dry-run", "--setup", "module load py", "--setup", "conda activate x",
                     "--login-shell", "--sync-env", "--package", "toolz",
                     "--upload", __file__, "head", "w1")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "module load py &&" in out and "conda activate x" in out
    assert "-l -c" in out and "environment=" in out and "sync " in out
    assert ".cache/sshdeploy/envs/" in out and ".cache/sshdeploy/uploads/" in out
    assert Path(__file__).name in out


@dataclass
class FakeCheck:
    host: str
    reachable: bool = True
    authenticated: bool = True
    python: str | None = "/usr/bin/python3"
    versions: dict[str, str] = field(
        default_factory=lambda: {"python": "3.11.7", "dask": "2026.8.0", "distributed": "2026.8.0"}
    )
    local_versions: dict[str, str] = field(
        default_factory=lambda: {"python": "3.11.7", "dask": "2026.8.0", "distributed": "2026.8.0"}
    )
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.reachable and self.authenticated and self.error is None


def _fake_check(monkeypatch: pytest.MonkeyPatch, bad: set[str]) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def check_hosts(
        hosts: list[Host],
        connect_options: Any = None,
        remote_python: Any = None,
        *,
        setup: Any = None,
        deep: bool = False,
        describe: Any = None,
        login_shell: bool = False,
    ) -> list[FakeCheck]:
        calls.append(
            {
                "hosts": hosts,
                "connect_options": connect_options,
                "remote_python": remote_python,
                "setup": setup,
                "deep": deep,
                "describe": describe,
            }
        )
        return [
            FakeCheck(
                h.as_written(),
                reachable=False,
                authenticated=False,
                python=None,
                versions={},
                error="cannot connect: refused",
            )
            if h.hostname in bad
            else FakeCheck(h.as_written())
            for h in hosts
        ]

    monkeypatch.setattr(cli, "check_hosts", check_hosts)
    # the version gate that follows the table: every host that passed compared, no row
    from sshdeploy.env import prestart

    monkeypatch.setattr(prestart, "check_gate", lambda *a, **kw: ([], {}))
    return calls


def test_check_all_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_check(monkeypatch, bad=set())
    result = run("--check", "--setup", "module load x", "--connect-timeout", "1", "a")
    assert result.exit_code == 0, result.output
    assert not FakeCluster.instances
    (call,) = calls
    assert names(call["hosts"]) == ["a"]  # a single host is checked once
    assert call["setup"] == "module load x"
    assert call["connect_options"] == {"connect_timeout": 1.0}
    assert "all 1 host(s) ok" in result.output


def test_check_failure_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_check(monkeypatch, bad={"b"})
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli.main, ["--check", "a", "b", "c"])
    assert result.exit_code == 1
    assert "cannot connect: refused" in result.output
    assert "1 of 3 host(s) failed" in result.output
    for host in ("a", "b", "c"):
        assert host in result.output


def test_check_reasons_stay_whole_with_narrow_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_check(monkeypatch, bad={"b"})
    result = CliRunner(env={"COLUMNS": "20"}).invoke(cli.main, ["--check", "a", "b"])
    assert result.exit_code == 1
    assert "FAILED b: cannot connect: refused" in result.output.splitlines()


# --------------------------------------------------------------------------- running


def test_sigint_stops_cluster_and_prints_summary() -> None:
    FakeCluster.on_start = _signal_self(signal.SIGINT)
    before = signal.getsignal(signal.SIGINT)
    result = run("--nworkers", "2", "head", "w1", "w2")
    assert result.exit_code == 0, result.output
    (cluster,) = FakeCluster.instances
    assert cluster.closed >= 1
    out = result.output
    assert "tcp://head:8786" in out
    assert "http://head:8787/status" in out
    assert "w1  w1-0, w1-1" in out and "w2  w2-0, w2-1" in out
    assert "SIGINT received" in out
    assert "stopped 4 workers on 2 hosts and the scheduler in" in out
    assert "Traceback" not in out
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_sigterm_stops_cluster() -> None:
    FakeCluster.on_start = _signal_self(signal.SIGTERM)
    result = run("a")
    assert result.exit_code == 0, result.output
    assert "SIGTERM received" in result.output
    assert "stopped 1 worker on 1 host and the scheduler" in result.output


def test_signal_handler_only_records_and_a_second_signal_exits_130() -> None:
    import subprocess

    code = (
        "import os, signal, sys\n"
        "from sshdeploy.cli.run import _Stop\n"
        "stop = _Stop()\n"
        "signal.signal(signal.SIGINT, stop)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "assert stop.event.is_set() and stop.signum == signal.SIGINT\n"
        "sys.stdout.write('first recorded\\n'); sys.stdout.flush()\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.stdout.write('not reached\\n')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parents[2])
    assert done.returncode == 130, done
    assert done.stdout == "first recorded\n"
    assert done.stderr == "dask-ssh: second interrupt, exiting now\n"


def test_scheduler_death_exits_1_with_its_last_lines() -> None:
    def start(cluster: FakeCluster) -> None:
        log = logging.getLogger("sshdeploy.remote.scheduler.head")
        for line in ("scheduler at tcp://head:8786", "x - CRITICAL - out of memory"):
            log.info(
                line,
                extra={
                    "sshdeploy_label": "scheduler head",
                    "sshdeploy_host": "head",
                    "sshdeploy_role": "scheduler",
                    "sshdeploy_stream": "stderr",
                },
            )
        cluster.scheduler.status = types.SimpleNamespace(name="closed")

    FakeCluster.on_start = start
    result = run("head", "w1")
    assert result.exit_code == 1
    assert "the scheduler on head stopped" in result.output
    assert "last scheduler output:" in result.output
    assert "  [scheduler head] x - CRITICAL - out of memory" in result.output
    assert FakeCluster.instances[0].closed >= 1


def test_remote_lines_are_printed_and_written(tmp_path: Path) -> None:
    def start(cluster: FakeCluster) -> None:
        log = logging.getLogger("sshdeploy.remote.worker.w1")
        log.info(
            "Start worker",
            extra={
                "sshdeploy_label": "w1-0",
                "sshdeploy_host": "w1",
                "sshdeploy_role": "worker",
                "sshdeploy_stream": "stderr",
            },
        )
        logging.getLogger("sshdeploy.cluster").warning("worker w1-0 lost, restarting")
        os.kill(os.getpid(), signal.SIGINT)

    FakeCluster.on_start = start
    logs = tmp_path / "logs"
    remote = logging.getLogger("sshdeploy.remote")
    saved = (remote.level, remote.propagate, list(remote.handlers))
    result = run("--log-directory", str(logs), "head", "w1")
    assert result.exit_code == 0, result.output
    assert "[w1-0] Start worker" in result.output
    assert "[dask-ssh] worker w1-0 lost, restarting" in result.output
    assert "\x1b[" not in result.output
    assert (logs / "w1-0.log").read_text() == "Start worker\n"
    assert (remote.level, remote.propagate, list(remote.handlers)) == saved


def test_start_failure_exits_1_with_message() -> None:
    def start(cluster: FakeCluster) -> None:
        raise ConnectError(host="bob@w1:22", cause="connection refused")

    FakeCluster.on_start = start
    result = CliRunner().invoke(cli.main, ["head", "w1"])
    assert result.exit_code == 1
    assert "Error: [bob@w1:22] ssh: cannot connect: connection refused." in result.output
    assert "Traceback" not in result.output


def test_hostfile_error_from_anywhere_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise HostfileError("PBS_NODEFILE", 3, "bad host")

    monkeypatch.setattr(cliargs, "hosts_from_environment", broken)
    result = CliRunner().invoke(cli.main, [])
    assert result.exit_code == 1
    assert "PBS_NODEFILE:3: bad host" in result.output


def test_standalone_mode_false_returns_exit_code() -> None:
    FakeCluster.on_start = _signal_self(signal.SIGINT)
    devnull = open(os.devnull, "w")
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = devnull
    try:
        code = cli.main(["a"], standalone_mode=False)
    finally:
        sys.stdout, sys.stderr = saved
        devnull.close()
    assert code == 0


def test_parse_host_contract() -> None:
    """The part of sshdeploy.hosts the CLI relies on."""
    host = parse_host("al@b:23").with_defaults(user="bob", port=22)
    assert (host.user, host.port, host.as_written()) == ("al", 23, "al@b:23")


def test_lost_scheduler_connection_counts_as_scheduler_death() -> None:
    def start(cluster: FakeCluster) -> None:
        cluster._watch_worker_status_task = types.SimpleNamespace(done=lambda: True)

    FakeCluster.on_start = start
    result = run("head", "w1")
    assert result.exit_code == 1
    assert "the scheduler on head stopped" in result.output


def test_close_failure_exits_1_without_traceback() -> None:
    FakeCluster.on_start = _signal_self(signal.SIGINT)
    FakeCluster.close_error = OSError("Timed out trying to connect")
    result = run("head", "w1")
    assert result.exit_code == 1
    assert "did not stop cleanly within 30 s (OSError: Timed out trying to connect)" in (
        result.output
    )
    assert "Traceback" not in result.output
    assert FakeCluster.instances[0].close_timeout == 30.0


def test_close_is_called_when_the_wait_fails() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("bug while printing the banner")

    def start(cluster: FakeCluster) -> None:
        cluster.scheduler_address = Unprintable()  # type: ignore[assignment]

    FakeCluster.on_start = start
    result = CliRunner().invoke(cli.main, ["head", "w1"])
    assert FakeCluster.instances[0].closed == 1
    assert isinstance(result.exception, RuntimeError)  # a bug shows its traceback


def test_sshdeploy_messages_on_remote_logger_go_to_stderr() -> None:
    def start(cluster: FakeCluster) -> None:
        logging.getLogger("sshdeploy.remote").warning(
            "[w1] worker w1-0: closed by itself")
        os.kill(os.getpid(), signal.SIGINT)

    FakeCluster.on_start = start
    result = CliRunner().invoke(cli.main, ["head", "w1"])
    assert result.exit_code == 0
    assert "[dask-ssh] [w1] worker w1-0: closed by itself" in result.stderr
    assert "closed by itself" not in result.stdout


def test_banner_sorts_worker_names() -> None:
    FakeCluster.on_start = _signal_self(signal.SIGINT)
    result = run("--nworkers", "11", "head", "w1")
    assert "w1-0, w1-1, w1-2, w1-3, w1-4, w1-5, w1-6, w1-7, w1-8, w1-9, w1-10" in result.output


def test_check_hosts_calls_preflight(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, ...]] = []

    def check_hosts(hosts: Any, connect_options: Any = None, remote_python: Any = None, *,
                    setup: Any = None, deep: bool = False) -> list[FakeCheck]:
        seen.append((hosts, connect_options, remote_python, setup, deep))
        return [FakeCheck("a")]

    monkeypatch.setitem(sys.modules, "sshdeploy.ssh.preflight",
                        types.SimpleNamespace(check_hosts=check_hosts))
    host = parse_host("a")
    result = cli.check_hosts([host], {"connect_timeout": 1}, "/py", setup="true")
    assert [c.host for c in result] == ["a"]
    assert seen == [([host], {"connect_timeout": 1}, "/py", "true", False)]


# --------------------------------------------------------------------------- closed output


class ClosingPipe:
    """A stdout whose reader goes away after *lines* writes, as ``| head -N`` does."""

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self.written: list[str] = []

    def write(self, text: str) -> int:
        if len(self.written) >= self.lines:
            raise BrokenPipeError(32, "Broken pipe")
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _main_with(stdout: Any, argv: list[str]) -> tuple[int, str]:
    import io

    err = io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = stdout, err
    try:
        code = cli.main(argv, standalone_mode=False)
    finally:
        sys.stdout, sys.stderr = saved
    return code, err.getvalue()


def test_closed_stdout_stops_the_cluster_quietly_with_141() -> None:
    def start(cluster: FakeCluster) -> None:
        log = logging.getLogger("sshdeploy.remote.worker.w1")
        for i in range(10):
            log.info(f"line {i}", extra={"sshdeploy_label": "w1-0", "sshdeploy_host": "w1",
                                          "sshdeploy_role": "worker", "sshdeploy_stream": "stdout"})

    FakeCluster.on_start = start
    pipe = ClosingPipe(lines=3)
    code, err = _main_with(pipe, ["head", "w1"])
    assert code == 141
    assert FakeCluster.instances[0].closed == 1
    assert err == ""  # quiet: no traceback, no message
    assert len(pipe.written) == 3


def test_closed_stdout_in_dry_run_exits_141_quietly() -> None:
    code, err = _main_with(ClosingPipe(lines=0), ["--dry-run", "head", "w1", "w2"])
    assert (code, err) == (141, "")


def test_stdout_whose_reader_has_gone_is_noticed_without_a_write() -> None:
    """An idle dask-ssh | head notices the closed pipe through poll(), not only on EPIPE."""
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, "w")
    try:
        guarded = cli.console.GuardedStream(stream)
        assert not guarded.reader_gone()
        os.close(read_fd)
        assert guarded.reader_gone()
        stream.write("dropped\n")
        stream.flush()  # fd now points at /dev/null: no EPIPE at exit either
    finally:
        stream.close()


def test_sighup_stops_the_cluster_and_prints_the_summary() -> None:
    FakeCluster.on_start = _signal_self(signal.SIGHUP)
    before = signal.getsignal(signal.SIGHUP)
    result = run("head", "w1")
    assert result.exit_code == 0, result.output
    assert "SIGHUP received" in result.output
    assert "stopped 1 worker on 1 host and the scheduler" in result.output
    assert FakeCluster.instances[0].closed == 1
    assert signal.getsignal(signal.SIGHUP) is before


# --------------------------------------------------------------------------- secrets


def test_dry_run_masks_env_values_and_shows_names() -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cluster, "SSHCluster", REAL_SSHCLUSTER)
        result = run("--dry-run", "--env", "TOKEN=s3cret-value", "--env", "OTHER=a b c",
                     "head", "w1")
    assert result.exit_code == 0, result.output
    assert "s3cret-value" not in result.output and "a b c" not in result.output
    assert "TOKEN" in result.output and "OTHER" in result.output
    assert "***" in result.output


def test_dry_run_masks_env_in_the_command_too(monkeypatch: pytest.MonkeyPatch) -> None:
    def remote_commands(**kwargs: Any) -> list[FakePlan]:
        return [FakePlan("head", "scheduler", ["scheduler"], "export TOKEN='x y'; exec py",
                         "/py", {"env": dict(kwargs["env"])})]

    monkeypatch.setattr(FakeCluster, "remote_commands", staticmethod(remote_commands))
    result = run("--dry-run", "--env", "TOKEN=x y", "head")
    assert "x y" not in result.output, result.output
    assert "export TOKEN=***; exec py" in result.output
    assert "env={'TOKEN': '***'}" in result.output


@pytest.mark.parametrize(
    "argv",
    [
        ["--dry-run", "--insecure-skip-host-key-check", "a"],
        ["--insecure-skip-host-key-check", "--memory-limit", "-1", "a"],
        ["--insecure-skip-host-key-check", "bad host"],
        ["--insecure-skip-host-key-check"],  # no hosts
    ],
)
def test_insecure_warning_only_when_the_run_goes_ahead(argv: list[str]) -> None:
    result = CliRunner().invoke(cli.main, argv)
    assert "not checked" not in result.output, result.output
    assert not FakeCluster.instances


# --------------------------------------------------------------------------- --log-level


def _log_every_level(cluster: FakeCluster) -> None:
    log = logging.getLogger("sshdeploy.remote.worker.w1")
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
        name = logging.getLevelName(level)
        log.log(level, f"remote {name} line", extra={
            "sshdeploy_label": "w1-0", "sshdeploy_host": "w1", "sshdeploy_role": "worker",
            "sshdeploy_stream": "stderr"})
    logging.getLogger("sshdeploy.cluster").warning("worker w1-0 lost, restarting")
    os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        ([], ["DEBUG", "INFO", "WARNING", "ERROR"]),
        (["--log-level", "info"], ["INFO", "WARNING", "ERROR"]),
        (["--log-level", "WARNING"], ["WARNING", "ERROR"]),
        (["-q"], ["WARNING", "ERROR"]),
        (["--quiet", "--log-level", "warning"], ["WARNING", "ERROR"]),
        (["--log-level", "ERROR"], ["WARNING", "ERROR"]),  # WARNING/ERROR always show
        (["--log-level", "CRITICAL"], ["WARNING", "ERROR"]),
    ],
)
def test_log_level_filters_remote_lines_by_their_level(
    tmp_path: Path, argv: list[str], shown: list[str]
) -> None:
    FakeCluster.on_start = _log_every_level
    result = run(*argv, "--log-directory", str(tmp_path), "head", "w1")
    assert result.exit_code == 0, result.output
    printed = [ln.split()[2] for ln in result.output.splitlines() if ln.startswith("[w1-0] ")]
    assert printed == shown
    # dask-ssh's own lines always show: banner, warnings, signal, summary.
    assert "scheduler  tcp://head:8786" in result.output
    assert "[dask-ssh] worker w1-0 lost, restarting" in result.output
    assert "stopped 1 worker on 1 host" in result.output
    # The log file keeps every line.
    assert (tmp_path / "w1-0.log").read_text().count("remote ") == 4


def test_log_level_rejects_unknown_levels_and_contradictions() -> None:
    assert run("--log-level", "LOUD", "a").exit_code == 2
    assert run("-q", "--log-level", "DEBUG", "a").exit_code == 2
    assert not FakeCluster.instances


def test_show_level() -> None:
    assert opts("a").show_level == logging.NOTSET
    assert opts("a", "-q").show_level == logging.WARNING
    assert opts("a", "--log-level", "error").show_level == logging.ERROR


# --------------------------------------------------------------------------- start-up cost


def test_help_and_check_do_not_import_distributed() -> None:
    """``import distributed`` costs ~1 s: ``--help`` and ``--check`` need none of it."""
    code = (
        "import sys\n"
        "from sshdeploy.cli import main\n"
        "for argv in (['--help'], ['--check', '--connect-timeout', '2', '127.0.0.1:1']):\n"
        "    try:\n"
        "        main(argv, standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('distributed' in sys.modules, 'sshdeploy.cluster' in sys.modules)\n"
        "import sshdeploy\n"
        "print(sshdeploy.SSHCluster.__module__, sshdeploy.RemotePlan.__module__)\n"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=str(Path(__file__).resolve().parents[2]))
    lines = out.stdout.strip().splitlines()
    assert lines[-2:] == ["False False", "sshdeploy.cluster.core sshdeploy.plan"], (
        out.stdout, out.stderr)


def test_check_never_says_every_host_matches_when_the_gate_could_not_compare_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_check(monkeypatch, bad=set())
    from sshdeploy.env import prestart

    monkeypatch.setattr(prestart, "check_gate", lambda *a, **kw: ([], {"b": "connection lost"}))
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli.main, ["--check", "a", "b"])
    assert result.exit_code == 1, result.output
    assert "version gate: 1 host(s) not compared" in result.output
    assert "matches" not in result.output
