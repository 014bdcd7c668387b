"""Symbolic links in uploads: kept as links inside the tree, refused outside it (issue 30).

git's and rsync's safe default: a link is never silently copied (a link to a
secret would send the secret to every host) nor silently dropped.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sshdeploy.env.uploads import blob_tar, collect
from sshdeploy.errors import UploadError
from tests.unit.test_envsync import run_remote

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["walk", "git"])
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """``work/pkg`` with a file and a subdirectory, in a git work tree or not."""
    work = tmp_path / "work"
    (work / "pkg" / "data").mkdir(parents=True)
    (work / "pkg" / "core.py").write_text("X = 1\n")
    (work / "pkg" / "data" / "table.csv").write_text("a,b\n")
    if request.param == "git":
        subprocess.run(["git", "init", "-q", str(work)], check=True, timeout=30)
    return work


def test_an_inside_link_to_a_file_is_kept_as_a_link(tree: Path) -> None:
    (tree / "pkg" / "alias.py").symlink_to("core.py")
    m = collect(["pkg"], base=tree)
    assert m.links == {"pkg/alias.py": "core.py"}
    assert "pkg/alias.py" not in m.files and "pkg/core.py" in m.files


def test_an_inside_link_to_a_directory_is_kept_as_a_link(tree: Path) -> None:
    (tree / "pkg" / "sub").mkdir()
    (tree / "pkg" / "sub" / "tables").symlink_to(tree / "pkg" / "data")   # absolute, inside
    m = collect(["pkg"], base=tree)
    assert m.links == {"pkg/sub/tables": "../data"}
    assert not any(name.startswith("pkg/sub/tables/") for name in m.files)


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_an_outside_link_is_refused_naming_the_link_and_its_target(
        tree: Path, tmp_path: Path, kind: str) -> None:
    secret = tmp_path / ("secret.txt" if kind == "file" else "secrets")
    if kind == "file":
        secret.write_text("password\n")
    else:
        secret.mkdir()
        (secret / "key").write_text("k\n")
    link = tree / "pkg" / "leak"
    link.symlink_to(secret)
    with pytest.raises(UploadError) as info:
        collect(["pkg"], base=tree)
    text = str(info.value)
    assert str(link) in text and str(secret) in text and "points outside" in text
    assert "remove the link" in text and "--upload" in text


def test_a_chain_that_leaves_the_tree_is_refused(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("password\n")
    (tree / "pkg" / "out").symlink_to(tmp_path / "secret.txt")
    (tree / "pkg" / "hop").symlink_to("out")
    with pytest.raises(UploadError, match="points outside"):
        collect(["pkg"], base=tree)


def test_a_dangling_link_is_kept_inside_and_refused_outside(tree: Path, tmp_path: Path) -> None:
    (tree / "pkg" / "latest").symlink_to("runs/not-yet")
    assert collect(["pkg"], base=tree).links == {"pkg/latest": "runs/not-yet"}
    (tree / "pkg" / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UploadError, match="which does not exist"):
        collect(["pkg"], base=tree)


def test_a_file_given_by_name_through_a_link_is_sent_as_its_content(tmp_path: Path) -> None:
    (tmp_path / "real.py").write_text("Y = 2\n")
    (tmp_path / "named.py").symlink_to("real.py")
    m = collect(["named.py"], base=tmp_path)   # asked for by name: followed, as cp does
    assert list(m.files) == ["real.py"] and m.links == {}


def test_the_host_lays_out_links_as_links_and_removes_stale_ones(tree: Path,
                                                                 tmp_path: Path) -> None:
    (tree / "pkg" / "alias.py").symlink_to("core.py")
    (tree / "pkg" / "tables").symlink_to("data")
    home = tmp_path / "home"
    m = collect(["pkg"], base=tree)
    run_remote(home, {"op": "upload", "dir": "c1", "files": m.files, "links": m.links,
                      "payload": True}, blob_tar(m, sorted(set(m.files.values()))))
    up = home / ".cache/sshdeploy/uploads/c1/pkg"
    assert os.readlink(up / "alias.py") == "core.py" and (up / "alias.py").read_text() == "X = 1\n"
    assert os.readlink(up / "tables") == "data" and (up / "tables" / "table.csv").exists()
    (tree / "pkg" / "tables").unlink()
    m2 = collect(["pkg"], base=tree)
    out = run_remote(home, {"op": "upload", "dir": "c1", "files": m2.files, "links": m2.links,
                            "payload": False})
    assert out["removed"] == 1 and not os.path.lexists(up / "tables")
    assert (up / "data" / "table.csv").exists()


@pytest.mark.parametrize("to", ["../../../etc", "/etc/passwd"])
def test_the_host_refuses_a_link_that_would_leave_the_upload(tmp_path: Path, to: str) -> None:
    from sshdeploy.bootstrap import SCRIPT_LAUNCHER, envremote_bundle

    op = {"op": "upload", "dir": "c1", "files": {}, "links": {"pkg/evil": to}}
    import json
    import sys

    data = envremote_bundle() + (json.dumps(op) + "\n").encode()
    out = subprocess.run([sys.executable, "-c", SCRIPT_LAUNCHER], input=data,
                         capture_output=True, timeout=30,
                         env={**os.environ, "HOME": str(tmp_path)})
    assert "unsafe upload link" in out.stdout.decode()
    assert not os.path.lexists(tmp_path / ".cache/sshdeploy/uploads/c1/pkg/evil")
