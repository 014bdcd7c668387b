"""The local state files under faults: a damaged file, a file where the directory goes, locks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from sshdeploy.errors import ClusterStateError
from sshdeploy.named.state import ClusterRecord, StateStore

pytestmark = pytest.mark.timeout(30)


def record(name: str) -> ClusterRecord:
    return ClusterRecord(name, "root@n1:22", "tcp://10.0.0.1:8786")


@pytest.mark.parametrize(("content", "why"), [
    (b"", "is empty"),
    (b'{"name": "demo", "scheduler_h', "is not valid JSON"),
    (b"\xff\xfe\x00garbage", "is not UTF-8"),
])
def test_a_damaged_file_is_named_not_a_traceback(tmp_path: Path, content: bytes,
                                                 why: str) -> None:
    store = StateStore(tmp_path)
    store.path("demo").write_bytes(content)
    with pytest.raises(ClusterStateError, match=why) as info:
        store.load("demo")
    assert str(store.path("demo")) in str(info.value)


def test_one_damaged_file_does_not_hide_the_others(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(record("good"))
    store.path("bad").write_bytes(b'{"name": "ba')
    (tmp_path / "not a name!.json").write_text("{}")   # a stray file is no cluster
    records, problems = store.scan()
    assert [r.name for r in records] == ["good"]
    assert [Path(p.path).name for p in problems] == ["bad.json"]


def test_a_file_where_the_state_directory_goes_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "named"
    root.write_text("a file, not a directory")
    with pytest.raises(ClusterStateError, match="is not a directory") as info:
        StateStore(root).save(record("demo"))
    assert str(root) in str(info.value) and "XDG_STATE_HOME" in str(info.value)


def test_a_lock_file_is_there_only_while_held(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    lock = tmp_path / "demo.lock"
    with store.locked("demo"):
        assert lock.exists()
        with pytest.raises(ClusterStateError, match="another dask-ssh is starting"):
            with StateStore(tmp_path).locked("demo"):
                pass
    assert not lock.exists()
    for _ in range(3):
        with store.locked("demo"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_lock_taken_on_a_file_its_holder_removed_is_retaken_on_the_new_one(
        tmp_path: Path) -> None:
    """One who opened the lock file just before its holder removed it does not hold a lock."""
    store = StateStore(tmp_path)
    lock = tmp_path / "demo.lock"
    with store.locked("demo"):
        stale = os.open(lock, os.O_RDWR)      # a second process opened the file here...
    try:
        with store.locked("demo"):            # ... and a third one takes the lock anew
            import fcntl
            # the stale descriptor can be flocked (its inode is gone), but locked() checks
            # that the path still names it, so both can never believe they hold the lock
            fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert os.fstat(stale).st_ino != os.stat(lock).st_ino
            with pytest.raises(ClusterStateError, match="another dask-ssh"):
                with StateStore(tmp_path).locked("demo"):
                    pass
    finally:
        os.close(stale)


def test_list_and_clean_go_on_beside_a_damaged_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from sshdeploy.cli.named import clean_command, list_command

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    store = StateStore()
    store.root.mkdir(parents=True)
    store.path("broken").write_bytes(b"\x00\x01 truncated")
    runner = CliRunner()
    out = runner.invoke(list_command, [])
    assert out.exit_code == 0, out.output
    assert "broken: unreadable state file" in out.stderr and "dask-ssh clean" in out.stderr
    out = runner.invoke(clean_command, [])
    assert out.exit_code == 0, out.output
    assert "removed: broken (unreadable state file" in out.stdout
    assert store.names() == []
