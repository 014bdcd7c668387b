"""Unit tests for sshdeploy.hosts (host values, the hostfile grammar) and sshdeploy.nodelists."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from sshdeploy.errors import HostfileError, SSHDeployError
from sshdeploy.hostfile import (
    HOSTFILE_GRAMMAR,
    KNOWN_KEYS,
    MAX_RANGE_HOSTS,
    expand_ranges,
    load_hostfile,
    parse_host,
    parse_host_line,
    parse_hostfile_text,
)
from sshdeploy.hosts import Host, check_memory_limit, check_positive_int
from sshdeploy.nodelists import hosts_from_environment, load_pbs_nodefile, parse_slurm_nodelist

try:
    from hypothesis import given
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is optional
    HAVE_HYPOTHESIS = False
else:
    HAVE_HYPOTHESIS = True

pytestmark = pytest.mark.timeout(30)

HOSTFILES = Path(__file__).resolve().parents[2] / "hostfiles"


# ------------------------------------------------------------------- Host value


def test_host_key_and_defaults() -> None:
    host = Host("node1")
    assert host.key == (None, "node1", None)
    assert (host.user, host.port, host.slots, host.nthreads) == (None, None, None, None)
    assert (host.memory_limit, host.remote_python, host.source) == (None, None, None)


def test_host_is_frozen_and_hashable() -> None:
    host = Host("node1", user="alice")
    with pytest.raises(dataclasses.FrozenInstanceError):
        host.user = "bob"  # type: ignore[misc]
    assert len({host, Host("node1", user="alice")}) == 1


def test_source_is_not_part_of_equality() -> None:
    assert Host("node1", source="a:1") == Host("node1", source="b:7")
    assert hash(Host("node1", source="a:1")) == hash(Host("node1"))
    assert parse_host("node1") == Host("node1")


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        (Host("node1"), "node1"),
        (Host("node1", user="alice"), "alice@node1"),
        (Host("node1", port=2222), "node1:2222"),
        (Host("node1", user="alice", port=2222), "alice@node1:2222"),
        (Host("10.0.0.1", user="bob", port=22), "bob@10.0.0.1:22"),
        (Host("::1", port=22), "[::1]:22"),
        (Host("fe80::1", user="u", port=2200), "u@[fe80::1]:2200"),
        (Host("::1"), "::1"),
    ],
)
def test_display(host: Host, shown: str) -> None:
    assert host.as_written() == shown
    assert parse_host(shown) == host  # display() round-trips through parse_host


@pytest.mark.parametrize(
    ("host", "user", "port", "expected_key"),
    [
        (Host("n"), "alice", 22, ("alice", "n", 22)),
        (Host("n", user="bob"), "alice", 22, ("bob", "n", 22)),
        (Host("n", port=2222), "alice", 22, ("alice", "n", 2222)),
        (Host("n", user="bob", port=2222), "alice", 22, ("bob", "n", 2222)),
        (Host("n"), None, None, (None, "n", None)),
    ],
)
def test_with_defaults(
    host: Host, user: str | None, port: int | None, expected_key: tuple[object, ...]
) -> None:
    filled = host.with_defaults(user=user, port=port)
    assert filled.key == expected_key
    assert dataclasses.replace(filled, user=host.user, port=host.port) == host


def test_with_defaults_keeps_settings_and_source() -> None:
    host = Host("n", slots=2, nthreads=3, memory_limit="1GiB", remote_python="/py", source="f:3")
    filled = host.with_defaults(user="u", port=2)
    assert (filled.slots, filled.nthreads, filled.memory_limit) == (2, 3, "1GiB")
    assert (filled.remote_python, filled.source) == ("/py", "f:3")


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"hostname": ""}, "empty host"),
        ({"hostname": "bad host"}, "invalid characters"),
        ({"hostname": "n", "user": ""}, "empty user"),
        ({"hostname": "n", "user": "a b"}, "invalid characters in user name"),
        ({"hostname": "n", "port": 0}, "bad port"),
        ({"hostname": "n", "port": 65536}, "bad port"),
        ({"hostname": "n", "port": True}, "bad port"),
        ({"hostname": "n", "port": "22"}, "bad port"),
        ({"hostname": "n", "slots": 0}, "'slots'"),
        ({"hostname": "n", "nthreads": -1}, "'nthreads'"),
        ({"hostname": "n", "memory_limit": "lots"}, "'memory-limit'"),
        ({"hostname": "n", "memory_limit": "1.5"}, "did you mean 1.5GB?"),
        ({"hostname": "n", "memory_limit": "-1"}, "is negative"),
        ({"hostname": "n", "slots": 1.0}, "'slots'"),
        ({"hostname": "n", "slots": True}, "'slots'"),
        ({"hostname": "n", "nthreads": "2"}, "'nthreads'"),
        ({"hostname": "n", "remote_python": ""}, "'remote-python'"),
    ],
)
def test_host_rejects_invalid_fields(kwargs: dict[str, object], phrase: str) -> None:
    with pytest.raises(HostfileError, match=re.escape(phrase)):
        Host(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------ parse_host


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("node1", (None, "node1", None)),
        ("alice@node1", ("alice", "node1", None)),
        ("node1:2222", (None, "node1", 2222)),
        ("alice@node1:2222", ("alice", "node1", 2222)),
        ("alice@node-1.lab.example.org:22", ("alice", "node-1.lab.example.org", 22)),
        ("under_score", (None, "under_score", None)),
        ("fqdn.example.org.", (None, "fqdn.example.org.", None)),
        ("svc-acct$@n1", ("svc-acct$", "n1", None)),
        ("first.last@n1", ("first.last", "n1", None)),
        ("10.0.0.7", (None, "10.0.0.7", None)),
        ("root@192.168.1.20:65535", ("root", "192.168.1.20", 65535)),
        ("[::1]:22", (None, "::1", 22)),
        ("[::1]", (None, "::1", None)),
        ("alice@[fe80::1]:2200", ("alice", "fe80::1", 2200)),
        ("[2001:DB8:0:0::1]", (None, "2001:db8::1", None)),  # normalised
        ("::1", (None, "::1", None)),  # a bare IPv6 address has no port
        ("fe80::1:22", (None, "fe80::1:22", None)),
        ("  node1  ", (None, "node1", None)),
        ("node1   # a comment", (None, "node1", None)),
        ("node1#comment", (None, "node1", None)),
    ],
)
def test_parse_host_address(text: str, key: tuple[object, ...]) -> None:
    assert parse_host(text).key == key


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("n slots=4", "slots", 4),
        ("n slots=16", "slots", 16),
        ("n nthreads=8", "nthreads", 8),
        ("n memory-limit=4GiB", "memory_limit", "4GiB"),
        ("n memory_limit=500MB", "memory_limit", "500MB"),
        ("n memory-limit=auto", "memory_limit", "auto"),
        ("n memory-limit=0.5", "memory_limit", "0.5"),
        ("n memory-limit=0", "memory_limit", "0"),
        ("n memory-limit=1e9", "memory_limit", "1e9"),
        ("n memory-limit=2gb", "memory_limit", "2gb"),
        ("n memory-limit=1.5TiB", "memory_limit", "1.5TiB"),
        ("n remote-python=/opt/conda/bin/python", "remote_python", "/opt/conda/bin/python"),
        ("n remote_python=~/venv/bin/python3", "remote_python", "~/venv/bin/python3"),
        ("n remote-python=python3", "remote_python", "python3"),
    ],
)
def test_parse_host_settings(text: str, field: str, value: object) -> None:
    assert getattr(parse_host(text), field) == value


def test_parse_host_all_settings_together() -> None:
    host = parse_host(
        "alice@n1:2222  slots=2\tnthreads=4 memory-limit=8GiB remote-python=/py  # c",
        path="cli",
        line=3,
    )
    assert host == Host("n1", "alice", 2222, 2, 4, "8GiB", "/py")
    assert host.source == "cli:3"


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("", "empty host"),
        ("   # only a comment", "empty host"),
        ("node[1-2]", "expected one host, but the range gives 2"),
        ("node1:0", "bad port 0"),
    ],
)
def test_parse_host_errors(text: str, phrase: str) -> None:
    with pytest.raises(HostfileError) as info:
        parse_host(text, path="<cli>", line=0)
    assert phrase in info.value.reason
    assert info.value.path == "<cli>"
    assert info.value.text == text


# ------------------------------------------------------------ grammar errors

# Every error of the grammar: (line, phrase expected in the reason).
ERROR_LINES = [
    # a key=value with no host
    ("slots=4", "has no host before it"),
    ("memory-limit=1GiB node1", "has no host before it"),
    # unknown, duplicate keys
    ("n slot=2",
     "unknown key 'slot' (known keys: slots, nthreads, memory-limit, remote-python, gpus)"),
    ("n port=22", "unknown key 'port'"),
    ("n =3", "unknown key ''"),
    ("n slots=1 slots=2", "duplicate key 'slots'"),
    ("n memory-limit=1GB memory_limit=2GB", "duplicate key 'memory_limit'"),
    ("n memory-limit=1GB memory_limit=2GB", "already given as 'memory-limit'"),
    ("n remote-python=/a remote_python=/b", "duplicate key"),
    # bad values
    ("n slots=0", "bad value for 'slots'"),
    ("n slots=x", "bad value for 'slots'"),
    ("n slots=", "bad value for 'slots'"),
    ("n slots=-1", "bad value for 'slots'"),
    ("n slots=1.5", "bad value for 'slots'"),
    ("n slots=²", "bad value for 'slots'"),
    ("n nthreads=0", "bad value for 'nthreads'"),
    ("n nthreads=four", "bad value for 'nthreads'"),
    ("n memory-limit=lots", "bad value for 'memory-limit'"),
    ("n memory-limit=", "bad value for 'memory-limit'"),
    ("n memory-limit=-1GB", "bad value for 'memory-limit'"),
    ("n memory-limit=4XB", "bad value for 'memory-limit'"),
    ("n memory-limit=1.5", "1.5 means 1.5 bytes, too little for a worker"),
    ("n memory-limit=-1", "bad value for 'memory-limit': -1 is negative"),
    ("n memory-limit=-0.5", "bad value for 'memory-limit': -0.5 is negative"),
    ("n memory-limit=nan", "bad value for 'memory-limit': 'nan' is not a finite number"),
    ("n memory-limit=1e400", "bad value for 'memory-limit': '1e400' is not a finite number"),
    ("n nthreads=-2", "bad value for 'nthreads'"),
    ("n nthreads=+2", "bad value for 'nthreads'"),
    ("n remote-python=", "bad value for 'remote-python': empty path"),
    # a second word that is not a setting
    ("node1 node2", "unexpected 'node2' after the host"),
    # ports
    ("n:0", "bad port 0"),
    ("n:65536", "bad port 65536"),
    ("n:99999999999", "bad port"),
    ("n:ssh", "bad port 'ssh': not a number"),
    ("n:-1", "bad port '-1'"),
    ("n:", "bad port: empty"),
    ("[::1]:0", "bad port 0"),
    ("[::1]:x", "bad port 'x'"),
    # users
    ("@node1", "empty user"),
    ("a b@node1", "unexpected"),  # split at the space: 'a' is the host
    ("al:ice@node1", "invalid characters in user name"),
    ("-alice@node1", "invalid characters in user name"),
    # hosts
    ("alice@", "empty host"),
    (":22", "empty host"),
    ("alice@:22", "empty host"),
    ("nöde1", "invalid characters 'ö' in host name"),
    ("node/1", "invalid characters '/' in host name"),
    ("a@b@node", "invalid characters '@' in host name"),
    ("node*", "invalid characters '*' in host name"),
    ("a..b", "empty label"),
    (".node", "empty label"),
    ("-node", "starts or ends with '-'"),
    ("node-.lab", "starts or ends with '-'"),
    ("x" * 64, "longer than 63 characters"),
    (".".join(["x" * 60] * 5), "longer than 253 characters"),
    ("10.0.0.256", "invalid IPv4 address"),
    ("1.2.3", "invalid IPv4 address"),
    ("n:1:2", "more than one ':'"),
    ("[::1", "unterminated '['"),
    ("[::zz]:22", "invalid IPv6 address"),
    ("[::1]22", "unexpected '22' after IPv6 address"),
    # ranges
    ("node[5-1]", "reversed range '[5-1]'"),
    ("node[1-3", "unterminated '['"),
    ("node1-3]", "unmatched ']'"),
    ("node[1-2]]", "unmatched ']'"),
    ("node[]", "empty range"),
    ("node[a-c]", "bad range item 'a-c'"),
    ("node[1,,3]", "bad range item ''"),
    ("node[1-]", "bad range item '1-'"),
    ("node[1[2]]", "nested '['"),
    ("node[1-3]x[-]", "bad range item '-'"),
    ("node[1-3]-[a]", "bad range item 'a'"),
    ("node[0-99999]", f"more than {MAX_RANGE_HOSTS} hosts"),
    ("n[0-999]x[0-999]", f"more than {MAX_RANGE_HOSTS}"),
    ("node[0-1]-", "starts or ends with '-'"),
]


@pytest.mark.parametrize(("line", "phrase"), ERROR_LINES)
def test_hostfile_errors_name_the_line_and_the_reason(line: str, phrase: str) -> None:
    text = f"# header comment\n\ngood1\n{line}\ngood2\n"
    with pytest.raises(HostfileError) as info:
        parse_hostfile_text(text, path="lab.txt")
    err = info.value
    assert (err.path, err.line) == ("lab.txt", 4)
    assert phrase in err.reason
    assert err.text == line
    message = str(err)
    assert message.startswith(f"lab.txt:4: {err.reason}")
    assert "Fix the line" in message


def test_hostfile_error_is_a_value_error_and_an_sshdeploy_error() -> None:
    with pytest.raises(HostfileError) as info:
        parse_host("n:0")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, SSHDeployError)


def test_first_error_wins() -> None:
    with pytest.raises(HostfileError) as info:
        parse_hostfile_text("n1\nn2 slots=0\nn3:0\n")
    assert info.value.line == 2


# ---------------------------------------------------------------- hostfiles


def test_parse_hostfile_text_full_example() -> None:
    text = (
        "# scheduler first\n"
        "alice@head:2222   # the scheduler\n"
        "\n"
        "   \t  \n"
        "alice@compute[01-03] slots=4 nthreads=2 memory-limit=4GiB\n"
        "bob@10.0.0.9 remote-python=/opt/py/bin/python\n"
        "alice@head:2222 slots=1\n"  # the same host again: kept
        "[::1]:2200\n"
    )
    hosts = parse_hostfile_text(text, path="lab.txt")
    assert [h.as_written() for h in hosts] == [
        "alice@head:2222",
        "alice@compute01",
        "alice@compute02",
        "alice@compute03",
        "bob@10.0.0.9",
        "alice@head:2222",
        "[::1]:2200",
    ]
    assert [h.source for h in hosts] == [
        "lab.txt:2",
        "lab.txt:5",
        "lab.txt:5",
        "lab.txt:5",
        "lab.txt:6",
        "lab.txt:7",
        "lab.txt:8",
    ]
    assert {(h.slots, h.nthreads, h.memory_limit) for h in hosts[1:4]} == {(4, 2, "4GiB")}
    assert hosts[4].remote_python == "/opt/py/bin/python"
    assert hosts[0].key == hosts[5].key and hosts[5].slots == 1


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("", 0),
        ("\n\n", 0),
        ("# only\n   # comments\n", 0),
        ("n1", 1),  # no final newline
        ("n1\r\nn2\r\n", 2),  # Windows line ends
        ("\ufeffn1\nn2\n", 2),  # UTF-8 byte-order mark
        ("n1\nn1\nn1\n", 3),  # repeated hosts are kept
        ("n[1-4]\n", 4),
    ],
)
def test_parse_hostfile_text_counts(text: str, count: int) -> None:
    assert len(parse_hostfile_text(text)) == count


def test_line_numbers_count_crlf_and_blank_lines() -> None:
    with pytest.raises(HostfileError) as info:
        parse_hostfile_text("n1\r\n\r\n# c\r\nn:0\r\n", path="w.txt")
    assert info.value.line == 4


def test_load_hostfile(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("node1  # scheduler\nnode[2-3] slots=2\n", encoding="utf-8")
    hosts = load_hostfile(hostfile)
    assert [h.hostname for h in hosts] == ["node1", "node2", "node3"]
    assert hosts[1].source == f"{hostfile}:2"
    assert load_hostfile(str(hostfile)) == hosts


def test_load_hostfile_reports_path_and_line(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("node1\nnode2 slotz=2\n", encoding="utf-8")
    with pytest.raises(HostfileError) as info:
        load_hostfile(hostfile)
    assert (info.value.path, info.value.line) == (str(hostfile), 2)
    assert "unknown key 'slotz'" in str(info.value)


@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        (lambda d: d / "missing.txt", "cannot read hostfile: No such file"),
        (lambda d: d, "cannot read hostfile"),  # a directory
        (lambda d: _write(d / "latin1.txt", "n\xe9ud\n".encode("latin-1")), "not UTF-8"),
        (lambda d: _write(d / "empty.txt", b""), "no hosts in the file"),
        (lambda d: _write(d / "comments.txt", b"# nothing\n\n"), "no hosts in the file"),
    ],
)
def test_load_hostfile_file_errors(tmp_path: Path, make: object, phrase: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(HostfileError) as info:
        load_hostfile(path)
    assert info.value.path == str(path)
    assert info.value.line == 0
    assert phrase in info.value.reason
    assert "Fix the line" not in str(info.value)  # a file problem has its own remedy


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_load_hostfile_unreadable(tmp_path: Path) -> None:
    hostfile = _write(tmp_path / "secret.txt", b"n1\n")
    hostfile.chmod(0)
    with pytest.raises(HostfileError, match="cannot read hostfile: Permission denied"):
        load_hostfile(hostfile)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -------------------------------------------------------- example hostfiles

EXAMPLES = sorted(HOSTFILES.glob("*.txt"))


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"testbed.txt", "lab-cluster.txt"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_hostfile_parses(path: Path) -> None:
    hosts = load_hostfile(path)
    assert hosts
    assert all(h.source and h.source.startswith(str(path)) for h in hosts)


def test_testbed_example() -> None:
    hosts = load_hostfile(HOSTFILES / "testbed.txt")
    assert [h.hostname for h in hosts] == ["node1", "node2", "node3", "node4"]
    lines = (HOSTFILES / "testbed.txt").read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    assert "scheduler" in "\n".join(lines[:first])  # a comment says the first host runs it


def test_lab_cluster_example_uses_every_feature() -> None:
    hosts = load_hostfile(HOSTFILES / "lab-cluster.txt")
    text = (HOSTFILES / "lab-cluster.txt").read_text()
    assert "[" in text  # a range
    assert any(h.user for h in hosts)
    assert any(h.port for h in hosts)
    assert any(h.slots for h in hosts)
    assert any(h.nthreads for h in hosts)
    assert any(h.memory_limit for h in hosts)
    assert len({h.remote_python for h in hosts}) > 1  # one host has its own Python
    assert [h.hostname for h in hosts if h.spare] == [
        "compute09.lab.example.org", "compute10.lab.example.org"]


def test_readme_shows_the_grammar() -> None:
    readme = (HOSTFILES / "README.md").read_text()
    assert HOSTFILE_GRAMMAR.rstrip() in readme


# ------------------------------------------------------------------ grammar


def test_grammar_mentions_every_key_and_feature() -> None:
    for word in (*KNOWN_KEYS, "memory_limit", "remote_python", "#", "[01-16]", "[1-3,7]"):
        assert word in HOSTFILE_GRAMMAR
    assert max(len(line) for line in HOSTFILE_GRAMMAR.splitlines()) <= 79


def test_grammar_example_parses() -> None:
    example = HOSTFILE_GRAMMAR.split("Example:", 1)[1]
    hosts = parse_hostfile_text(example)
    assert [h.as_written() for h in hosts][:2] == ["alice@head.lab:2222", "alice@gpu01"]
    assert len(hosts) == 8
    assert [h.hostname for h in hosts if h.spare] == ["gpu05"]
    assert [h.hostname for h in hosts if h.gpus] == ["dgx1"]


def test_spare_word_marks_spares_and_is_checked() -> None:
    hosts = parse_hostfile_text("head\nn[1-2] slots=2\nn3 spare\n")
    assert [(h.hostname, h.spare, h.slots) for h in hosts] == [
        ("head", False, None), ("n1", False, 2), ("n2", False, 2), ("n3", True, None)]
    with pytest.raises(HostfileError, match="duplicate word 'spare'"):
        parse_hostfile_text("head\nn3 spare spare\n")
    with pytest.raises(HostfileError, match="or the word spare"):
        parse_hostfile_text("head\nn3 sparse\n")


# ------------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    ("pattern", "names"),
    [
        ("node1", ["node1"]),
        ("node[1-3]", ["node1", "node2", "node3"]),
        ("node[01-03]", ["node01", "node02", "node03"]),
        ("node[08-11]", ["node08", "node09", "node10", "node11"]),
        ("node[8-11]", ["node8", "node9", "node10", "node11"]),
        ("node[001-002]", ["node001", "node002"]),
        ("node[098-101]", ["node098", "node099", "node100", "node101"]),
        ("node[1-3,7]", ["node1", "node2", "node3", "node7"]),
        ("node[7,1-2]", ["node7", "node1", "node2"]),
        ("node[5]", ["node5"]),
        ("node[5-5]", ["node5"]),
        ("node[1,1]", ["node1", "node1"]),
        ("[1-2]node", ["1node", "2node"]),
        ("rack[1-2]-node[01-02]", ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]),
        ("a[1-2]b[3,5]c", ["a1b3c", "a1b5c", "a2b3c", "a2b5c"]),
        ("node[01-16]", [f"node{i:02d}" for i in range(1, 17)]),
    ],
)
def test_expand_ranges(pattern: str, names: list[str]) -> None:
    assert expand_ranges(pattern) == names


@pytest.mark.parametrize(
    ("pattern", "phrase"),
    [
        ("node[5-1]", "reversed range"),
        ("node[1-3", "unterminated '['"),
        ("node]", "unmatched ']'"),
        ("node[]", "empty range"),
        ("node[x]", "bad range item"),
        ("node[1-2-3]", "bad range item"),
        ("node[ 1]", "bad range item"),
    ],
)
def test_expand_ranges_errors(pattern: str, phrase: str) -> None:
    with pytest.raises(HostfileError) as info:
        expand_ranges(pattern, path="p", line=9)
    assert (info.value.path, info.value.line, info.value.text) == ("p", 9, pattern)
    assert phrase in info.value.reason


def test_range_lines_share_the_settings() -> None:
    hosts = parse_host_line(
        "u@n[1-2]:2200 slots=3 nthreads=2 memory-limit=1GiB remote-python=/p", path="f", line=5
    )
    assert [h.as_written() for h in hosts] == ["u@n1:2200", "u@n2:2200"]
    assert {(h.slots, h.nthreads, h.memory_limit, h.remote_python, h.source) for h in hosts} == {
        (3, 2, "1GiB", "/p", "f:5")
    }


def test_range_with_invalid_expanded_name() -> None:
    with pytest.raises(HostfileError, match="invalid IPv4 address '1'"):
        parse_host_line("[1-2]")  # expands to the bare numbers 1, 2


def test_parse_host_line_blank_and_comment() -> None:
    assert parse_host_line("") == []
    assert parse_host_line("  \t ") == []
    assert parse_host_line("# node1 slots=2") == []


# ------------------------------------------------------------------- Slurm


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("", []),
        ("   ", []),
        ("login", ["login"]),
        ("a,b,c", ["a", "b", "c"]),
        (
            "node[01-03,07],gpu[1-2],login",
            ["node01", "node02", "node03", "node07", "gpu1", "gpu2", "login"],
        ),
        ("node[1-2],node[1-2]", ["node1", "node2", "node1", "node2"]),
        ("rack[1-2]-n[1,3]", ["rack1-n1", "rack1-n3", "rack2-n1", "rack2-n3"]),
        ("cn[009-011]", ["cn009", "cn010", "cn011"]),
        ("n1.cluster,n2.cluster", ["n1.cluster", "n2.cluster"]),
        ("  n[1-2]\n", ["n1", "n2"]),
        ("a b", ["a", "b"]),
    ],
)
def test_parse_slurm_nodelist(text: str, names: list[str]) -> None:
    assert parse_slurm_nodelist(text) == names


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("a,,b", "empty entry"),
        ("a,", "empty entry"),
        ("node[3-1]", "reversed range"),
        ("node[1-3", "unterminated '['"),
        ("node1],b", "unmatched ']'"),
        ("nöde", "invalid characters"),
        ("node[a]", "bad range item"),
    ],
)
def test_parse_slurm_nodelist_errors(text: str, phrase: str) -> None:
    with pytest.raises(HostfileError) as info:
        parse_slurm_nodelist(text)
    assert info.value.path == "SLURM_JOB_NODELIST"
    assert phrase in info.value.reason


# --------------------------------------------------------------------- PBS


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("n1\n", [("n1", 1)]),
        ("n1\nn1\nn1\n", [("n1", 3)]),
        ("n2\nn1\nn2\nn3\nn1\nn2\n", [("n2", 3), ("n1", 2), ("n3", 1)]),
        ("n1.cluster\n\n  n2.cluster  \nn1.cluster", [("n1.cluster", 2), ("n2.cluster", 1)]),
        ("10.0.0.1\r\n10.0.0.1\r\n", [("10.0.0.1", 2)]),
    ],
)
def test_load_pbs_nodefile(tmp_path: Path, content: str, expected: list[tuple[str, int]]) -> None:
    nodefile = tmp_path / "nodes"
    nodefile.write_text(content, encoding="utf-8")
    hosts = load_pbs_nodefile(nodefile)
    assert [(h.hostname, h.slots) for h in hosts] == expected
    assert hosts[0].source == f"{nodefile}:1"
    assert all(h.user is None and h.port is None for h in hosts)


@pytest.mark.parametrize(
    ("content", "line", "phrase"),
    [
        ("n1\nbad host\n", 2, "invalid characters"),
        ("n1\n\nn1\n-n\n", 4, "starts or ends with '-'"),
        ("", 0, "no hosts"),
        ("\n\n", 0, "no hosts"),
    ],
)
def test_load_pbs_nodefile_errors(tmp_path: Path, content: str, line: int, phrase: str) -> None:
    nodefile = tmp_path / "nodes"
    nodefile.write_text(content, encoding="utf-8")
    with pytest.raises(HostfileError) as info:
        load_pbs_nodefile(nodefile)
    assert (info.value.path, info.value.line) == (str(nodefile), line)
    assert phrase in info.value.reason


def test_load_pbs_nodefile_missing(tmp_path: Path) -> None:
    with pytest.raises(HostfileError, match="cannot read PBS node file"):
        load_pbs_nodefile(tmp_path / "gone")


# ------------------------------------------------------------- environment


def test_environment_outside_a_batch_job() -> None:
    assert hosts_from_environment({}) is None
    assert hosts_from_environment({"PBS_NODEFILE": "", "SLURM_JOB_NODELIST": " "}) is None
    assert hosts_from_environment({"HOME": "/root", "PATH": "/bin"}) is None


def test_environment_pbs(tmp_path: Path) -> None:
    nodefile = tmp_path / "nodes"
    nodefile.write_text("n1\nn1\nn2\n", encoding="utf-8")
    env = {"PBS_NODEFILE": str(nodefile), "SLURM_JOB_NODELIST": "other[1-9]"}
    hosts = hosts_from_environment(env)  # PBS wins over Slurm
    assert hosts is not None
    assert [(h.hostname, h.slots) for h in hosts] == [("n1", 2), ("n2", 1)]


def test_environment_pbs_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HostfileError, match="cannot read PBS node file"):
        hosts_from_environment({"PBS_NODEFILE": str(tmp_path / "gone")})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SLURM_JOB_NODELIST": "n[1-2],login"}, [("n1", None), ("n2", None), ("login", None)]),
        ({"SLURM_NODELIST": "n[1-2]"}, [("n1", None), ("n2", None)]),
        (
            {"SLURM_JOB_NODELIST": "n[1-3]", "SLURM_TASKS_PER_NODE": "2(x2),1"},
            [("n1", 2), ("n2", 2), ("n3", 1)],
        ),
        (
            {"SLURM_JOB_NODELIST": "n[1-2]", "SLURM_TASKS_PER_NODE": "4(x2)"},
            [("n1", 4), ("n2", 4)],
        ),
        # tasks that do not match the node list, or are malformed, are ignored
        (
            {"SLURM_JOB_NODELIST": "n[1-2]", "SLURM_TASKS_PER_NODE": "4"},
            [("n1", None), ("n2", None)],
        ),
        (
            {"SLURM_JOB_NODELIST": "n[1-2]", "SLURM_TASKS_PER_NODE": "x"},
            [("n1", None), ("n2", None)],
        ),
        (
            {"SLURM_JOB_NODELIST": "n[1-2]", "SLURM_TASKS_PER_NODE": "0(x2)"},
            [("n1", None), ("n2", None)],
        ),
    ],
)
def test_environment_slurm(env: dict[str, str], expected: list[tuple[str, int | None]]) -> None:
    hosts = hosts_from_environment(env)
    assert hosts is not None
    assert [(h.hostname, h.slots) for h in hosts] == expected
    assert all(h.source and h.source.startswith("SLURM") for h in hosts)


def test_environment_slurm_bad_nodelist() -> None:
    with pytest.raises(HostfileError) as info:
        hosts_from_environment({"SLURM_JOB_NODELIST": "n[2-1]"})
    assert info.value.path == "SLURM_JOB_NODELIST"
    assert "reversed range" in info.value.reason


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PBS_NODEFILE", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_TASKS_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    assert hosts_from_environment() is None
    monkeypatch.setenv("SLURM_JOB_NODELIST", "cn[1-2]")
    hosts = hosts_from_environment()
    assert hosts is not None and [h.hostname for h in hosts] == ["cn1", "cn2"]


# ---------------------------------------------------------------- properties

if HAVE_HYPOTHESIS:
    _label = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
    _hostname = st.lists(_label, min_size=1, max_size=3).map(".".join)
    _user = st.none() | st.from_regex(r"[a-z_][a-z0-9_.-]{0,8}", fullmatch=True)
    _port = st.none() | st.integers(1, 65535)
    _ipv6 = st.ip_addresses(v=6).map(str)

    @given(hostname=_hostname | _ipv6, user=_user, port=_port)
    def test_display_round_trips(hostname: str, user: str | None, port: int | None) -> None:
        host = Host(hostname, user=user, port=port)
        assert parse_host(host.as_written()) == host

    @given(lo=st.integers(0, 500), size=st.integers(0, 50), width=st.integers(1, 4))
    def test_range_expansion_counts_and_padding(lo: int, size: int, width: int) -> None:
        hi = lo + size
        lo_text = str(lo).zfill(width)
        names = expand_ranges(f"n[{lo_text}-{hi}]")
        assert len(names) == size + 1
        assert [int(n[1:]) for n in names] == list(range(lo, hi + 1))
        assert all(len(n) - 1 >= len(lo_text) for n in names)

    @given(st.lists(st.tuples(_label, st.integers(0, 20), st.integers(0, 5)), max_size=5))
    def test_slurm_list_is_the_concatenation(items: list[tuple[str, int, int]]) -> None:
        patterns = [f"{name}x[{lo}-{lo + n}]" for name, lo, n in items]
        expected = [name for pattern in patterns for name in expand_ranges(pattern)]
        assert parse_slurm_nodelist(",".join(patterns)) == expected


# ------------------------------------------------------------- shared value rules


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("auto", "auto"),
        (" Auto ", "auto"),
        (0, 0),
        ("0", 0),
        (0.0, 0),
        (0.5, 0.5),
        ("0.25", 0.25),
        (1, 1),
        (1.0, 1.0),
        (4_000_000_000, 4_000_000_000),
        ("4000000000", 4_000_000_000),
        ("1e9", 1_000_000_000),
        (2e9, 2_000_000_000),
        ("4GiB", "4GiB"),
        ("500 MB", "500 MB"),
        ("1.5TiB", "1.5TiB"),
        (2**24, 2**24),  # the smallest bare number taken as bytes
        ("30MB", "30MB"),  # a unit says what is meant, however small
    ],
)
def test_check_memory_limit_accepts(value: object, expected: object) -> None:
    result = check_memory_limit(value)  # type: ignore[arg-type]
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        (1.5, "1.5 means 1.5 bytes, too little for a worker"),
        ("1.5", "did you mean 1.5GB?"),
        ("2.25", "did you mean 2.25GB?"),
        (2.0, "2.0 means 2.0 bytes, too little for a worker (below 16 MiB): did you mean 2.0GB?"),
        (10, "10 means 10 bytes, too little for a worker (below 16 MiB): did you mean 10GB?"),
        ("10", "did you mean 10GB?"),
        (4096, "did you mean 4096MB?"),
        (2**24 - 1, "below 16 MiB"),
        (-1, "-1 is negative"),
        ("-1", "-1 is negative"),
        (-0.5, "is negative"),
        ("-4GB", "is negative"),
        ("lots", "'lots' is not a size"),
        ("", "'' is not a size"),
        (float("inf"), "not a finite number"),
        ("nan", "not a finite number"),
        (True, "is not a memory limit"),
        ([1], "is not a memory limit"),
    ],
)
def test_check_memory_limit_rejects(value: object, phrase: str) -> None:
    with pytest.raises(ValueError, match=re.escape(phrase)):
        check_memory_limit(value)  # type: ignore[arg-type]


def test_check_memory_limit_agrees_with_distributed() -> None:
    """Every accepted value means to distributed what the docstring says."""
    import logging

    from distributed.system import MEMORY_LIMIT
    from distributed.worker_memory import parse_memory_limit

    log = logging.getLogger(__name__)

    def limit(value: object) -> int | None:
        return parse_memory_limit(check_memory_limit(value), 1, 1, logger=log)  # type: ignore[arg-type]

    assert limit(None) is None and limit(0) is None and limit("0") is None
    assert limit(0.5) == int(0.5 * MEMORY_LIMIT)
    assert limit("1") == MEMORY_LIMIT
    assert limit("1e8") == 100_000_000
    assert limit("100MB") == 100_000_000


@pytest.mark.parametrize(("value", "expected"), [(1, 1), (8, 8), ("4", 4), (" 2 ", 2)])
def test_check_positive_int_accepts(value: object, expected: int) -> None:
    assert check_positive_int("slots", value) == expected


@pytest.mark.parametrize("value", [0, -1, 1.0, 2.5, True, "0", "x", "", None, "-3"])
def test_check_positive_int_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="bad value for 'slots': expected a positive integer"):
        check_positive_int("slots", value)
