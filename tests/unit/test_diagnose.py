"""Unit tests for sshdeploy.ssh.diagnose: what can be told before and after a failed connect."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sshdeploy.errors import ConfigError, HostKeyError
from sshdeploy.ssh.diagnose import build_options, check_files, classify, key_changed
from sshdeploy.ssh.sshlib import asyncssh

pytestmark = pytest.mark.timeout(20)

WHERE = "root@node9"


def write_key(path: Path, passphrase: str | None = None, mode: int = 0o600) -> Path:
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.write_bytes(key.export_private_key(passphrase=passphrase))
    os.chmod(path, mode)
    return path


def test_missing_known_hosts_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        check_files(WHERE, {"known_hosts": str(tmp_path / "kh")})
    assert str(tmp_path / "kh") in str(info.value) and WHERE in info.value.setting


def test_key_readable_by_others_is_refused_with_the_chmod_fix(tmp_path: Path) -> None:
    key = write_key(tmp_path / "id", mode=0o644)
    with pytest.raises(ConfigError) as info:
        check_files(WHERE, {"client_keys": [str(key)]})
    assert "0644" in str(info.value) and f"chmod 600 {key}" in str(info.value)
    os.chmod(key, 0o600)
    check_files(WHERE, {"client_keys": [str(key)]})


def test_missing_key_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        check_files(WHERE, {"client_keys": [str(tmp_path / "none")]})
    assert str(tmp_path / "none") in str(info.value)


def test_passphrase_protected_key_says_how_to_use_it(tmp_path: Path) -> None:
    key = write_key(tmp_path / "id", passphrase="secret")
    with pytest.raises(ConfigError) as info:
        build_options(WHERE, {"host": "node9", "client_keys": [str(key)]})
    assert "ssh-agent" in str(info.value) and "passphrase=" in str(info.value)
    # with its passphrase it loads
    build_options(WHERE, {"host": "node9", "client_keys": [str(key)], "passphrase": "secret"})


def test_file_that_is_not_a_key_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "id"
    bad.write_text("hello\n")
    os.chmod(bad, 0o600)
    with pytest.raises(ConfigError) as info:
        build_options(WHERE, {"host": "node9", "client_keys": [str(bad)]})
    assert str(bad) in str(info.value)


def test_misspelt_keyword_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build_options(WHERE, {"host": "node9", "known_host": None})
    assert "known_host" in str(info.value) and "asyncssh.connect" in str(info.value)


def test_changed_key_is_told_apart_from_an_unknown_one(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    kh = tmp_path / "known_hosts"
    kh.write_text("node9 " + key.export_public_key().decode())
    exc = asyncssh.HostKeyNotVerifiable("Host key is not trusted for host node9")
    assert key_changed({"host": "node9", "known_hosts": str(kh)})
    changed = classify(WHERE, exc, {"host": "node9", "known_hosts": str(kh)})
    assert isinstance(changed, HostKeyError) and "CHANGED" in str(changed)
    assert "attack" in str(changed)
    unknown = classify(WHERE, exc, {"host": "node8", "known_hosts": str(kh)})
    assert "CHANGED" not in str(unknown) and "not trusted" in str(unknown)
