"""Local state keeps its permissions, as OpenSSH keeps a key's (issue 30).

Records and their directory found more open than 0600 / 0700 are made
private again with a warning that says so; TLS credentials readable by
others are refused, never used.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from sshdeploy.errors import ClusterStateError
from sshdeploy.named.state import ClusterRecord, StateStore

pytestmark = pytest.mark.timeout(30)

TLS = {"ca": "CA", "cert": "CERT", "key": "KEY"}


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def saved(tmp_path: Path, **kw: object) -> StateStore:
    store = StateStore(tmp_path / "named")
    store.save(ClusterRecord("demo", "root@n1:22", "tcp://10.0.0.1:8786", **kw))  # type: ignore[arg-type]
    return store


def test_state_is_created_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = saved(tmp_path, tls=dict(TLS))
        with store.locked("demo"):
            assert mode(store.root / "demo.lock") == 0o600
    finally:
        os.umask(old)
    assert mode(store.root) == 0o700 and mode(store.path("demo")) == 0o600
    assert mode(store.tls_dir("demo")) == 0o700
    assert {mode(p) for p in store.tls_dir("demo").iterdir()} == {0o600}


def test_an_open_record_and_directory_are_repaired_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = saved(tmp_path)
    os.chmod(store.root, 0o777)
    os.chmod(store.path("demo"), 0o644)
    with caplog.at_level(logging.WARNING, logger="sshdeploy.named.state"):
        assert store.load("demo") is not None
    assert mode(store.root) == 0o700 and mode(store.path("demo")) == 0o600
    said = [r.getMessage() for r in caplog.records]
    assert any(f"{store.root} was 0777" in m and "made it 0700" in m for m in said), said
    assert any(f"{store.path('demo')} was 0644" in m and "made it 0600" in m for m in said)


def test_a_private_state_says_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = saved(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sshdeploy.named.state"):
        store.load("demo")
        store.save(ClusterRecord("demo", "root@n1:22", "tcp://10.0.0.1:8786"))
    assert caplog.records == []


@pytest.mark.parametrize("which", ["key", "ca", "dir"])
def test_readable_tls_credentials_are_refused_naming_the_fix(tmp_path: Path, which: str) -> None:
    store = saved(tmp_path, tls=dict(TLS))
    record = store.load("demo")
    assert record is not None
    target = store.tls_dir("demo") if which == "dir" else Path(record.tls[which])
    os.chmod(target, 0o755 if which == "dir" else 0o644)
    with pytest.raises(ClusterStateError) as info:
        store.tls_pems(record)
    text = str(info.value)
    assert str(target) in text and "others can read them" in text
    assert f"chmod {'700' if which == 'dir' else '600'} {target}" in text


def test_saving_again_makes_old_open_credentials_private(tmp_path: Path) -> None:
    store = saved(tmp_path, tls=dict(TLS))
    for p in store.tls_dir("demo").iterdir():
        os.chmod(p, 0o644)
    os.chmod(store.tls_dir("demo"), 0o755)
    store.save(ClusterRecord("demo", "root@n1:22", "tcp://10.0.0.1:8786", tls=dict(TLS)))
    record = store.load("demo")
    assert record is not None and store.tls_pems(record) == TLS


def test_a_state_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to give the directory away")
    store = StateStore(tmp_path / "named")
    store.root.mkdir(mode=0o700)
    os.chown(store.root, 12345, 12345)
    with pytest.raises(ClusterStateError, match="belongs to another user"):
        store.save(ClusterRecord("demo", "root@n1:22", "tcp://10.0.0.1:8786"))
