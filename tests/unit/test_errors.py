"""Unit tests for sshdeploy.errors: every message says what, where and what to do next."""

from __future__ import annotations

import pytest

from sshdeploy.errors import (
    AuthenticationError,
    ClusterExistsError,
    ClusterNotFoundError,
    ClusterStateError,
    ClusterStopError,
    ConfigError,
    ConnectError,
    EnvironmentMismatchError,
    EnvSyncError,
    GPUError,
    HostError,
    HostfileError,
    HostKeyError,
    JobError,
    MultiHostError,
    RemoteImportError,
    RemotePythonError,
    ScaleError,
    SSHDeployError,
    StartError,
    UploadError,
    VersionMismatchError,
    WorkersNotReadyError,
    failures_by_host,
)

pytestmark = pytest.mark.timeout(10)

HOST = "alice@node1:2222"

# (class, a word of its default "what", a word of its remedy, default role)
HOST_ERRORS = [
    (ConnectError, "cannot connect", "--connect-timeout", "ssh"),
    (AuthenticationError, "authentication refused", "ssh-agent", "ssh"),
    (HostKeyError, "host key not trusted", "known_hosts", "ssh"),
    (RemotePythonError, "remote Python not usable", "remote_python", "agent"),
    (RemoteImportError, "distributed is not importable", "pip install", "agent"),
    (VersionMismatchError, "version mismatch", "version-check", "agent"),
    (StartError, "failed to start", "Read the remote output", "agent"),
    (EnvSyncError, "environment sync failed", "dask-ssh clean --envs", "sync"),
    (GPUError, "the GPUs asked for are not there", "--check", "gpus"),
]


@pytest.mark.parametrize(("cls", "what", "remedy", "role"), HOST_ERRORS)
def test_host_error_message_names_host_what_and_remedy(
    cls: type[HostError], what: str, remedy: str, role: str
) -> None:
    err = cls(host=HOST, cause="boom")
    text = str(err)
    assert isinstance(err, SSHDeployError)
    assert err.role == role
    assert text.startswith(f"[{HOST}] {role}: {what}: boom.")
    assert remedy in text
    assert text == err.message()


@pytest.mark.parametrize("cls", [c for c, *_ in HOST_ERRORS])
def test_host_error_names_the_worker_over_the_role(cls: type[HostError]) -> None:
    text = str(cls(host=HOST, role="worker", name="node1-3", cause="x"))
    assert text.startswith(f"[{HOST}] node1-3: ")
    text = str(cls(host=HOST, role="scheduler", cause="x"))
    assert text.startswith(f"[{HOST}] scheduler: ")


def test_host_error_without_cause_or_remedy() -> None:
    err = HostError(host="node1", what="lost.")
    # one final period, no dangling ':' and no remedy text
    assert str(err) == "[node1] agent: lost."


def test_remedy_can_be_replaced() -> None:
    err = ConnectError(host="node1", cause="refused", remedy="Start sshd.")
    assert str(err) == "[node1] ssh: cannot connect: refused. Start sshd."


def test_stderr_tail_is_indented_under_the_message() -> None:
    err = StartError(
        host=HOST, role="worker", name="node1-0", cause="exit 1",
        stderr_tail="\nTraceback (most recent call last):\nValueError: bad\n\n",
    )
    first, *rest = str(err).splitlines()
    assert first.startswith(f"[{HOST}] node1-0: failed to start: exit 1.")
    assert rest == [
        "  last remote output:",
        "    Traceback (most recent call last):",
        "    ValueError: bad",
    ]


def test_blank_stderr_tail_is_not_shown() -> None:
    assert "last remote output" not in str(StartError(host=HOST, stderr_tail=" \n \n"))


def test_errors_can_be_raised_and_chained() -> None:
    with pytest.raises(SSHDeployError) as info:
        try:
            raise ConnectionRefusedError("nope")
        except ConnectionRefusedError as exc:
            raise ConnectError(host=HOST, cause="connection refused") from exc
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert HOST in str(info.value)


def test_hostfile_error_path_line_reason_text() -> None:
    err = HostfileError("hosts.txt", 7, "port out of range", "  node1:99999  ")
    text = str(err)
    assert text.startswith("hosts.txt:7: port out of range ('node1:99999'). ")
    assert "one host per line" in text
    assert isinstance(err, ValueError) and isinstance(err, SSHDeployError)


def test_hostfile_error_without_line_or_text() -> None:
    text = str(HostfileError("<hosts>", 0, "empty host"))
    assert text.startswith("<hosts>: empty host. ")
    assert ":0" not in text and "()" not in text


def test_config_error_names_the_setting() -> None:
    err = ConfigError("remote_python", "a per-host list must have one entry per host",
                      remedy="Give 3 entries.")
    assert str(err) == (
        "remote_python: a per-host list must have one entry per host. Give 3 entries."
    )
    assert isinstance(err, ValueError)
    assert str(ConfigError("hosts", "empty")) == "hosts: empty."


def test_failures_by_host_single_is_the_error_itself() -> None:
    err = AuthenticationError(host=HOST, cause="denied")
    assert failures_by_host({HOST: err}, "connect") is err


def test_failures_by_host_single_foreign_exception_is_wrapped() -> None:
    exc = RuntimeError("odd")
    out = failures_by_host({HOST: exc}, "connect")
    assert isinstance(out, MultiHostError)
    assert str(out) == "1 host(s) failed to connect:\n  - odd"


def test_failures_by_host_many_lists_every_host() -> None:
    errors = {
        "node1": ConnectError(host="node1", cause="connection refused"),
        "bob@node2:22": HostKeyError(host="bob@node2:22", cause="unknown key"),
        "node3": StartError(host="node3", cause="exit 1", stderr_tail="line a\nline b"),
    }
    out = failures_by_host(errors, "start")
    assert isinstance(out, MultiHostError)
    assert out.action == "start" and dict(out.failures) == errors
    lines = str(out).splitlines()
    assert lines[0] == "3 host(s) failed to start:"
    assert lines[1].startswith("  - [node1] ssh: cannot connect: connection refused.")
    assert lines[2].startswith("  - [bob@node2:22] ssh: host key not trusted: unknown key.")
    assert lines[3].startswith("  - [node3] agent: failed to start: exit 1.")
    # a multi-line error stays indented under its own bullet
    assert lines[4:] == ["      last remote output:", "        line a", "        line b"]


def test_multihost_error_is_empty_safe() -> None:
    assert str(MultiHostError()) == "0 host(s) failed to start:"


# ------------------------------------------------------------------ errors travel

def _every_error() -> list[SSHDeployError]:
    inner = StartError(host=HOST, role="worker", name="node1-0", cause="exit 1",
                       stderr_tail="Traceback\nValueError: bad")
    return [
        HostfileError(path="hosts.txt", line=3, reason="bad port", text="a:x"),
        ConfigError("connect_options", "wrong length", remedy="Give 3."),
        ScaleError("scale(8)", "asks for 8 workers, more than the 6 slots", wanted=8, slots=6),
        MultiHostError(failures={HOST: inner}, action="start"),
        EnvironmentMismatchError(table="host  package  theirs  ours", hosts=[HOST]),
        UploadError(path="src/mypkg", reason="no such file or directory"),
        inner,
        *(cls(host=HOST, cause="boom") for cls, *_ in HOST_ERRORS),
        ClusterStateError(path="/s/a.json", reason="is not valid JSON"),
        ClusterNotFoundError(name="a", state="gone", cause="its scheduler no longer runs"),
        ClusterExistsError(name="a", differences=["hosts: a -> b"]),
        ClusterStopError(name="a", left={HOST: "unreachable: timed out"}, hosts=3,
                         scheduler_host=HOST),
        WorkersNotReadyError(name="a", wanted=4, running=2, waited=60.0),
        JobError(cluster="a", job="7", what="no such job (known: 1, 2)"),
    ]


@pytest.mark.parametrize("err", _every_error(), ids=lambda e: type(e).__name__)
def test_every_error_pickles_and_copies_with_its_fields(err: SSHDeployError) -> None:
    import copy
    import pickle

    for clone in (pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)):
        assert type(clone) is type(err)
        assert str(clone) == str(err)
        assert clone.args == err.args == (str(err),)
        assert vars(clone) == vars(err) or type(err) is MultiHostError


def test_every_error_class_is_covered_by_the_pickle_test() -> None:
    def subclasses(cls: type) -> set[type]:
        out = set(cls.__subclasses__())
        for sub in list(out):
            out |= subclasses(sub)
        return out

    ours = {c for c in subclasses(SSHDeployError) if c.__module__ == "sshdeploy.errors"}
    assert ours - {HostError} <= {type(e) for e in _every_error()}


def test_errors_are_runtime_errors_with_an_exit_code() -> None:
    # distributed's SSHCluster raises RuntimeError; code written for it catches ours too.
    assert issubclass(SSHDeployError, RuntimeError)
    assert ConfigError.exit_code == 2 and HostfileError.exit_code == 1
    assert StartError.exit_code == ConnectError.exit_code == MultiHostError.exit_code == 1
    assert isinstance(ConfigError("x", "y"), ValueError)
