"""The environment and upload stage without a network: the remote script run here.

:mod:`sshdeploy.remote.envremote` is run as the hosts run it (a subprocess of a
Python, source and operation on stdin), with ``HOME`` pointing at a temporary
directory standing for the host's home.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sshdeploy.arguments import ClusterArgs
from sshdeploy.bootstrap import build_command, envremote_bundle, join_setup
from sshdeploy.env import gate as envgate
from sshdeploy.env.stageplan import plan_stage
from sshdeploy.env.sync import build_tar, local_pack, pythonpath_setup
from sshdeploy.env.uploads import blob_tar, collect
from sshdeploy.errors import ConfigError, EnvSyncError, UploadError
from sshdeploy.plan import plan_cluster
from sshdeploy.settings import Settings

pytestmark = pytest.mark.timeout(60)


def run_remote(home: Path, op: dict[str, Any], payload: bytes = b"") -> dict[str, Any]:
    """Run one operation of the remote script as a host would, with *home* as $HOME."""
    data = envremote_bundle() + (json.dumps(op) + "\n").encode() + payload
    from sshdeploy.bootstrap import SCRIPT_LAUNCHER

    out = subprocess.run([sys.executable, "-c", SCRIPT_LAUNCHER], input=data,
                         capture_output=True, timeout=30, env={**os.environ, "HOME": str(home)})
    assert out.returncode == 0, out.stderr.decode()
    result: dict[str, Any] = json.loads(out.stdout.decode().splitlines()[-1])
    return result


def small_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_the_probe_describes_the_interpreter_platform_and_packages(tmp_path: Path) -> None:
    out = run_remote(tmp_path, {"op": "probe", "packages": ["dask", "no-such-pkg"],
                                "env": "abc"})
    assert out["version"].split(".")[:2] == [str(v) for v in sys.version_info[:2]]
    assert out["implementation"] == sys.implementation.name and out["system"] == "Linux"
    assert out["packages"] == {"dask": envgate.local_description(["dask"])["packages"]["dask"]}
    assert out["env_present"] is False


def test_an_environment_is_unpacked_once_then_found_by_its_hash(tmp_path: Path) -> None:
    tar = small_tar({"mymod.py": b"X = 1\n", "pkg/__init__.py": b""})
    first = run_remote(tmp_path, {"op": "env", "env": "h1"}, tar)
    assert first["unpacked"] is True
    env = tmp_path / ".cache/sshdeploy/envs/h1"
    assert (env / "mymod.py").read_bytes() == b"X = 1\n"
    assert run_remote(tmp_path, {"op": "probe", "env": "h1"})["env_present"] is True
    assert run_remote(tmp_path, {"op": "env", "env": "h1"}, tar)["unpacked"] is False
    # nothing half-done is left beside it
    assert sorted(os.listdir(env.parent)) == ["h1"]


def test_concurrent_unpacks_of_one_hash_leave_one_complete_environment(tmp_path: Path) -> None:
    tar = small_tar({f"m{i}.py": b"x" * 10000 for i in range(200)})
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: run_remote(tmp_path, {"op": "env", "env": "h"}, tar),
                                range(3)))
    assert sum(r["unpacked"] for r in results) >= 1
    envs = tmp_path / ".cache/sshdeploy/envs"
    assert sorted(os.listdir(envs)) == ["h"]
    assert len(os.listdir(envs / "h")) == 201  # 200 files and the completion mark


def test_the_cache_keeps_to_its_size_least_recently_used_first(tmp_path: Path) -> None:
    for digest in ("old", "mid"):
        run_remote(tmp_path, {"op": "env", "env": digest}, small_tar({"a": b"x" * 4000}))
    os.utime(tmp_path / ".cache/sshdeploy/envs/old", (1, 1))
    out = run_remote(tmp_path, {"op": "env", "env": "new", "limit": 9000},
                     small_tar({"a": b"x" * 4000}))
    assert out["pruned"] == ["old"]
    assert sorted(os.listdir(tmp_path / ".cache/sshdeploy/envs")) == ["mid", "new"]


def test_an_archive_that_escapes_its_directory_is_refused(tmp_path: Path) -> None:
    data = envremote_bundle() + b'{"op": "env", "env": "bad"}\n' + small_tar(
        {"../../evil.py": b"boom"})
    from sshdeploy.bootstrap import SCRIPT_LAUNCHER

    out = subprocess.run([sys.executable, "-c", SCRIPT_LAUNCHER], input=data,
                         capture_output=True, timeout=30, env={**os.environ, "HOME": str(tmp_path)})
    assert "unsafe path" in json.loads(out.stdout)["error"]
    assert not (tmp_path / ".cache/evil.py").exists()
    assert os.listdir(tmp_path / ".cache/sshdeploy/envs") == []


def test_uploads_send_only_missing_contents_and_mirror_the_manifest(tmp_path: Path) -> None:
    src = tmp_path / "src" / "mypkg"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("VALUE = 1\n")
    (src / "util.py").write_text("def f():\n    return 2\n")
    home = tmp_path / "home"
    m = collect(["src/mypkg"], base=tmp_path)
    assert sorted(m.files) == ["mypkg/__init__.py", "mypkg/util.py"]
    probe = run_remote(home, {"op": "probe", "blobs": sorted(set(m.files.values()))})
    assert sorted(probe["blobs_missing"]) == sorted(set(m.files.values()))
    run_remote(home, {"op": "upload", "dir": "c1", "files": m.files, "payload": True},
               blob_tar(m, probe["blobs_missing"]))
    tree = home / ".cache/sshdeploy/uploads/c1"
    assert (tree / "mypkg/util.py").read_text() == "def f():\n    return 2\n"
    # one file changes, one goes away: one content missing, the removed file removed
    (src / "__init__.py").write_text("VALUE = 2\n")
    (src / "util.py").unlink()
    m2 = collect(["src/mypkg"], base=tmp_path)
    missing = run_remote(home, {"op": "probe", "blobs": list(m2.files.values())})["blobs_missing"]
    assert missing == [m2.files["mypkg/__init__.py"]]
    out = run_remote(home, {"op": "upload", "dir": "c1", "files": m2.files, "payload": True},
                     blob_tar(m2, missing))
    assert out == {"stored": 1, "removed": 1, "seconds": out["seconds"]}
    assert (tree / "mypkg/__init__.py").read_text() == "VALUE = 2\n"
    assert not (tree / "mypkg/util.py").exists()
    run_remote(home, {"op": "remove-uploads", "dir": "c1"})
    assert not tree.exists()


def test_uploads_honour_gitignore_in_a_work_tree(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "code.py").write_text("x = 1\n")
    (pkg / "big.dat").write_text("data\n")
    (tmp_path / ".gitignore").write_text("*.dat\n")
    assert list(collect(["pkg"], base=tmp_path).files) == ["pkg/code.py"]


def test_a_missing_upload_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UploadError, match="no such file"):
        collect(["nope.py"], base=tmp_path)


def test_the_gate_compares_python_platform_and_every_named_package() -> None:
    ours = envgate.local_description(["dask", "distributed"])
    theirs = {**ours, "libc": "glibc 2.17", "machine": "aarch64",
              "packages": {"dask": "0.1"}}
    rows = envgate.compare("u@h:22", ours, theirs, ["dask", "distributed"])
    assert [(r.package, r.theirs) for r in rows] == [
        ("machine", "aarch64"), ("libc", "glibc 2.17"), ("dask", "0.1"), ("distributed", "-")]
    assert envgate.format_table(rows).splitlines()[0].split() == ["host", "package", "theirs",
                                                                  "ours"]
    gated = envgate.gated_packages(["mypkg"])
    assert gated[:2] == ["dask", "distributed"] and gated[-1] == "mypkg"


def test_the_pack_is_the_closure_of_distributed_and_its_tar_is_built_once(
    tmp_path: Path,
) -> None:
    pack = local_pack()
    assert {"dask", "distributed", "cloudpickle", "tornado", "toolz"} <= set(pack.dists)
    assert "pytest" not in pack.dists and "mypy" not in pack.dists
    assert all("__pycache__" not in rel and not rel.startswith("..") for _, rel in pack.files)
    # The tar of a part of it (the whole is ~25 MB: seconds on a busy machine).
    part = dataclasses.replace(pack, files=[f for f in pack.files if f[1].startswith("toolz")])
    tar = build_tar(part, cache=tmp_path)
    assert tar.name == f"{pack.digest}.tar.gz"
    mtime = tar.stat().st_mtime_ns
    assert build_tar(part, cache=tmp_path).stat().st_mtime_ns == mtime
    with tarfile.open(tar) as t:
        assert "toolz/__init__.py" in t.getnames()


def test_setup_lists_login_shell_and_sync_are_in_the_dry_run() -> None:
    plan = plan_cluster(ClusterArgs(["a", "b"], setup=["module load python", "conda activate x"],
                                    login_shell=True, environment="sync", upload=[__file__]))
    (sched, worker) = plan.remote_plans()
    assert sched.command.startswith('exec "${SHELL:-/bin/sh}" -l -c ')
    assert "module load python &&" in worker.command and "conda activate x" in worker.command
    assert plan.stage is not None and plan.stage.env is not None
    assert plan.stage.env.digest in worker.command and plan.stage.upload_dir in worker.command
    assert worker.options["environment"].startswith(f"sync {plan.stage.env.digest}")
    assert worker.options["upload"] == [__file__]
    assert join_setup(["a", "b"]) == "a &&\nb"
    line = pythonpath_setup(["x"])
    assert line in build_command("py", join_setup(["a", line]))


def test_stage_arguments_are_checked_when_the_cluster_is_planned() -> None:
    with pytest.raises(ConfigError, match="environment"):
        plan_stage("conda", None, None, Settings.resolve())
    with pytest.raises(ConfigError, match="upload"):
        plan_stage(None, None, "helpers.py", Settings.resolve())  # type: ignore[arg-type]
    assert Settings.resolve(env_cache_size="1GiB").env_cache_size == 2**30
    with pytest.raises(ConfigError, match="env-cache-size"):
        Settings.resolve(env_cache_size="lots")


def test_login_shell_runs_the_users_login_scripts_first(tmp_path: Path) -> None:
    (tmp_path / ".bash_profile").write_text("export FROM_PROFILE=yes\n")
    from sshdeploy.bootstrap import in_login_shell

    env = {"HOME": str(tmp_path), "SHELL": "/bin/bash", "PATH": os.environ["PATH"]}
    for login, expected in ((False, ""), (True, "yes")):
        out = subprocess.run(["sh", "-c", in_login_shell('echo "$FROM_PROFILE:$$"', login)],
                             capture_output=True, text=True, timeout=30, env=env)
        assert out.stdout.split(":")[0] == expected, out.stderr


def test_an_upload_asks_for_what_it_misses_in_one_round_trip(tmp_path: Path) -> None:
    from sshdeploy.bootstrap import SCRIPT_LAUNCHER

    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "b.py").write_text("B = 2\n")
    m = collect(["a.py", "b.py"], base=tmp_path)
    home = tmp_path / "home"
    run_remote(home, {"op": "upload", "dir": "c", "files": {"a.py": m.files["a.py"]},
                      "payload": True}, blob_tar(m, [m.files["a.py"]]))
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT_LAUNCHER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env={**os.environ, "HOME": str(home)})
    assert proc.stdin is not None and proc.stdout is not None
    op = {"op": "upload", "dir": "c", "files": m.files, "ask": True}
    proc.stdin.write(envremote_bundle() + (json.dumps(op) + "\n").encode())
    proc.stdin.flush()
    asked = json.loads(proc.stdout.readline())
    assert asked == {"missing": [m.files["b.py"]]}
    proc.stdin.write(blob_tar(m, asked["missing"]))
    proc.stdin.close()
    answer = json.loads(proc.stdout.read().decode().splitlines()[-1])
    assert proc.wait(timeout=30) == 0
    assert answer["stored"] == 1
    assert (home / ".cache/sshdeploy/uploads/c/b.py").read_text() == "B = 2\n"


def test_hosts_sharing_a_home_report_one_cache_id(tmp_path: Path) -> None:
    ids = {run_remote(tmp_path, {"op": "probe", "env": "h"})["cache_id"] for _ in range(3)}
    other = run_remote(tmp_path / "other", {"op": "probe", "env": "h"})["cache_id"]
    assert len(ids) == 1 and other not in ids


def test_the_probe_says_when_the_cache_cannot_be_written(tmp_path: Path) -> None:
    """Issue 26 finding 14a: a file where ~/.cache/sshdeploy (or a part) should be is said by
    the probe (the start fails naming host and directory) instead of failing the probe,
    which skipped the host: it started without the code."""
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    (home / ".cache" / "sshdeploy").write_text("in the way\n")
    answer = run_remote(home, {"op": "probe", "blobs": ["ab"]})
    assert answer["cache_error"].startswith(f"{home}/.cache/sshdeploy: ")
    assert "cache_id" not in answer and "error" not in answer
    (home / ".cache" / "sshdeploy").unlink()
    (home / ".cache" / "sshdeploy").mkdir()
    (home / ".cache" / "sshdeploy" / "uploads").write_text("in the way\n")
    answer = run_remote(home, {"op": "probe", "blobs": ["ab"]})
    assert answer["cache_error"] == f"{home}/.cache/sshdeploy/uploads: not a directory"
    (home / ".cache" / "sshdeploy" / "uploads").unlink()
    assert "cache_error" not in run_remote(home, {"op": "probe", "blobs": ["ab"]})


def test_a_full_disk_on_a_host_is_answered_with_where_and_how_much_is_free(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 26 finding 14c: ENOSPC (or a quota) while placing uploads or unpacking an
    environment is answered as such, and said in words by the controller."""
    import errno
    import types

    from sshdeploy.env.script import no_space_error
    from sshdeploy.remote import envremote

    def full(op: dict[str, Any], stream: Any) -> dict[str, Any]:
        raise OSError(errno.ENOSPC, "No space left on device")

    for kind in ("upload", "env"):
        monkeypatch.setattr(envremote, "place_uploads" if kind == "upload" else "unpack_env",
                            full)
        line = json.dumps({"op": kind, "env": "h", "dir": "c", "files": {}}).encode() + b"\n"
        monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(line)))
        envremote.main()
        answer = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert answer["no_space"]["dir"] == envremote.ROOT
        assert isinstance(answer["no_space"]["free"], int)
    said = str(no_space_error("root@n2:22", answer["no_space"], 42_000_000))
    assert said.startswith(f"[root@n2:22] sync: no space left on root@n2:22 in "
                           f"{envremote.ROOT}: free ")
    assert "need 42.0 MB. Free space there (`dask-ssh clean --envs --uploads root@n2:22`" in said
    assert "sshdeploy.env-cache-size" in said


def test_a_failed_host_op_raises_only_after_the_others_have_stopped() -> None:
    """CI finding: an upload refused on one host (full disk) was raised while another
    host's upload still ran, so the caller saw a remote process after the error."""
    import asyncio

    from sshdeploy.env.script import all_or_stop

    ended: list[str] = []

    async def refused() -> None:
        raise EnvSyncError(host="root@n2:22", what="no space left")

    async def still_sending() -> None:
        try:
            await asyncio.Event().wait()  # never set: only the cancel ends it
        finally:
            await asyncio.sleep(0)  # its clean-up awaits too (a kill over SSH)
            ended.append("n1")

    async def main() -> None:
        with pytest.raises(EnvSyncError, match="no space left"):
            await all_or_stop([still_sending(), refused()])
        assert ended == ["n1"]

    asyncio.run(main())
    assert asyncio.run(all_or_stop([])) == []


def test_hosts_that_lack_the_same_contents_are_sent_one_tar_not_one_each(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found measuring the upload relay: a direct send to 16 hosts built 16 tars of the same
    contents at once (the controller's peak RSS 657 MiB for 20 MiB). The hosts of a first
    start lack the same contents: one tar, shared, and not kept once the sends are done."""
    import asyncio

    from sshdeploy.env import prestart
    from sshdeploy.env.stageplan import plan_stage
    from sshdeploy.hostfile import parse_host

    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "b.py").write_text("B = 2\n")
    manifest = collect(["a.py", "b.py"], base=tmp_path)
    both = sorted(manifest.files.values())
    payloads: dict[str, bytes] = {}
    started = asyncio.Event()

    class Pool:
        def as_connected(self, host: Any) -> str:
            return f"root@{host.hostname}"

    async def run_script(pool: Any, host: Any, python: str, setup: Any, login: Any,
                         op: dict[str, Any], payload: Any = None, **kw: Any) -> dict[str, Any]:
        payloads[host.hostname] = payload({"missing": both if host.hostname != "n3"
                                           else both[:1]})
        if len(payloads) < 3:
            await started.wait()  # every send under way at once
        started.set()
        return {}

    monkeypatch.setattr(prestart, "run_script", run_script)
    plan = dataclasses.replace(plan_stage(None, ["a.py", "b.py"], None, Settings.resolve()),
                               base=tmp_path, upload_dir=".cache/sshdeploy/uploads/c")
    stage = prestart.PreStart(plan, Pool(), [])  # type: ignore[arg-type]
    stage.manifest = manifest

    async def go() -> None:
        await asyncio.gather(*(stage.push_uploads(parse_host(n), "python3", None)
                               for n in ("n1", "n2", "n3")))

    asyncio.run(go())
    assert payloads["n1"] is payloads["n2"]  # the same contents: the same tar
    assert payloads["n1"] == blob_tar(manifest, both)
    assert payloads["n3"] == blob_tar(manifest, both[:1])  # other contents: a tar of its own
    assert stage._contents is None  # not kept once the sends are done
