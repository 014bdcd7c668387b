"""The same environment and the same code on every host, offline (issue 18).

The hosts run Debian's bare ``/usr/bin/python3`` (the controller's minor, no
dask at all) and have no route out of the bed: ``environment="sync"`` brings
this machine's packages over SSH. The version gate refuses hosts that differ,
with one table, before anything starts; uploaded code is importable by the
scheduler and every worker, also those added later.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dask
import pytest
from distributed import Client

from sshdeploy import SSHCluster, testbed
from sshdeploy.env.clean import clean
from sshdeploy.env.gate import local_description
from sshdeploy.env.sync import local_pack
from sshdeploy.errors import EnvironmentMismatchError

pytestmark = pytest.mark.timeout(300)

BARE = "/usr/bin/python3"
OTHER_MINOR = "/root/.pyenv/versions/3.10.13/bin/python3"
n1, n2, n3 = testbed.host_names(3, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))


def _minor(python: str) -> str | None:
    if not Path(python).exists():
        return None
    import subprocess

    out = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


@pytest.fixture
def bare_hosts(bed: testbed.Bed) -> Iterator[list[testbed.BedHost]]:
    """n1..n3 with their environment caches emptied, before and after."""
    if _minor(BARE) != str(sys.version_info[:2]):
        pytest.skip(f"{BARE} is not Python {sys.version_info[0]}.{sys.version_info[1]}")
    hosts = [h for h in bed.hosts if h.name in (n1, n2, n3)]
    clean([h.name for h in hosts], bed.connect_options(), BARE)
    yield hosts
    clean([h.name for h in hosts], bed.connect_options(), BARE)


def test_a_bare_python_computes_with_the_synced_environment_and_the_second_start_sends_nothing(
    bed: testbed.Bed, bare_hosts: list[testbed.BedHost]
) -> None:
    for host in bare_hosts:  # no dask there, and no way out to a package index
        assert testbed.run_in(host, [BARE, "-c", "import dask"]).returncode != 0
        assert testbed.run_in(host, ["ip", "-4", "route", "show", "default"]).stdout == ""
    sent = []
    for _start in range(2):
        with SSHCluster([n1, n2, n3], connect_options=bed.connect_options(), remote_python=BARE,
                        environment="sync") as cluster, Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)
            total = client.submit(sum, range(100)).result(timeout=60)
            assert total == 4950
            where = client.run(lambda: (__import__("sys").executable,
                                        __import__("distributed").__version__))
            assert set(where.values()) == {(BARE, __import__("distributed").__version__)}
            reports = cluster.stage_reports
            assert sorted(reports) == [f"root@{n}" for n in (n1, n2, n3)]
            sent.append({h: (r.env_bytes, r.env_cached) for h, r in reports.items()})
    first, second = sent
    assert all(nbytes > 1_000_000 and cached is False for nbytes, cached in first.values())
    assert all(nbytes == 0 and cached is True for nbytes, cached in second.values())


def test_a_host_with_another_python_minor_is_refused_before_anything_starts(
    bed: testbed.Bed,
) -> None:
    if _minor(OTHER_MINOR) in (None, str(sys.version_info[:2])):
        pytest.skip(f"no Python of another minor at {OTHER_MINOR}")
    with pytest.raises(EnvironmentMismatchError) as info:
        SSHCluster([n1, n2], connect_options=bed.connect_options(),
                   remote_python=[sys.executable, OTHER_MINOR], environment="sync")
    text = str(info.value)
    assert info.value.hosts == [f"root@{n2}"]
    assert f"root@{n2}" in text and "python" in text and "cpython 3.10" in text
    assert f"root@{n1} " not in text
    assert "nothing was started" in text
    # nothing was sent to either host
    for host in bed.hosts[:2]:
        assert not testbed.host_path(host, f"/root/{local_pack().remote_dir}").exists()


@pytest.fixture
def fake_cloudpickle(bed: testbed.Bed) -> Iterator[str]:
    """A setup line that makes n2 report cloudpickle 0.0.1 (metadata only, in its own /tmp)."""
    directory = f"/tmp/fakecp-{uuid.uuid4().hex[:8]}"
    host = next(h for h in bed.hosts if h.name == n2)
    info = testbed.host_path(host, directory) / "cloudpickle-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cloudpickle\nVersion: 0.0.1\n")
    yield f'export PYTHONPATH={directory}'
    import shutil

    shutil.rmtree(testbed.host_path(host, directory), ignore_errors=True)


def test_the_gate_shows_every_difference_in_one_table_and_warn_goes_on(
    bed: testbed.Bed, fake_cloudpickle: str, caplog: pytest.LogCaptureFixture
) -> None:
    ours = local_description(["cloudpickle"])["packages"]["cloudpickle"]
    with pytest.raises(EnvironmentMismatchError) as info:
        SSHCluster([n1, n2], connect_options=bed.connect_options(), setup=fake_cloudpickle,
                   packages=["no-such-package-anywhere"])
    lines = str(info.value).splitlines()
    assert lines[1].split() == ["host", "package", "theirs", "ours"]
    rows = [ln.split() for ln in lines[2:-1]]
    assert [f"root@{n2}", "cloudpickle", "0.0.1", ours] in rows
    # n1 runs the same setup, but the directory exists only in n2's /tmp
    assert all(r[0] == f"root@{n2}" for r in rows), rows
    with dask.config.set({"sshdeploy.version-check": "warn"}), \
            caplog.at_level(logging.WARNING, logger="sshdeploy"), \
            SSHCluster([n1, n2], connect_options=bed.connect_options(),
                       setup=fake_cloudpickle) as cluster, Client(cluster) as client:
        assert client.submit(lambda: 2).result(timeout=60) == 2
    warned = [m for m in (r.getMessage() for r in caplog.records)
              if "differ from this machine" in m]
    assert len(warned) == 1 and "cloudpickle  0.0.1" in warned[0].replace("   ", "  ")


def test_uploaded_code_is_importable_by_every_worker_also_after_scale_up(
    bed: testbed.Bed, tmp_path: Path
) -> None:
    pkg = tmp_path / "src" / "shippedpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .core import answer\n")
    (pkg / "core.py").write_text("def answer():\n    return 42\n")
    (tmp_path / "helpers_mod.py").write_text("VALUE = 'v1'\n")
    uploads = [str(pkg), str(tmp_path / "helpers_mod.py")]
    with SSHCluster([n1, n2, n3], connect_options=bed.connect_options(), upload=uploads,
                    worker_options={"n_workers": 2}) as cluster, Client(cluster) as client:
        client.wait_for_workers(4, timeout=60)
        cluster.scale(2)  # then back up: the new workers must find the files too
        testbed.wait_until(lambda: len(client.scheduler_info()["workers"]) == 2, 60,
                           "the cluster to scale down to 2 workers")
        cluster.scale(4)
        client.wait_for_workers(4, timeout=60)

        def use() -> tuple[int, str]:
            import helpers_mod
            import shippedpkg

            return shippedpkg.answer(), helpers_mod.VALUE

        assert set(client.run(use).values()) == {(42, "v1")}
        assert len(client.run(use)) == 4
        assert client.run_on_scheduler(use) == (42, "v1")
        # one file changes: only it is sent, and a fresh import sees it
        # a content no earlier run can have left on the hosts (they keep blobs by hash)
        v2 = f"v2-{uuid.uuid4().hex[:8]}"
        (tmp_path / "helpers_mod.py").write_text(f"VALUE = {v2!r}\n")
        before = {h: r.upload_files for h, r in cluster.stage_reports.items()}
        sent = cluster.sync_uploads()
        after = {h: r.upload_files for h, r in cluster.stage_reports.items()}
        assert {h: after[h] - before[h] for h in after} == {h: 1 for h in after}
        assert all(0 < n < 20_000 for n in sent.values()), sent

        def fresh() -> str:
            import importlib

            import helpers_mod

            return str(importlib.reload(helpers_mod).VALUE)

        assert set(client.run(fresh).values()) == {v2}
        upload_dir = cluster.cluster_plan.stage.upload_dir  # type: ignore[union-attr]
    # removed with the cluster, on every host
    for host in bed.hosts:
        if host.name in (n1, n2, n3):
            assert not testbed.host_path(host, f"/root/{upload_dir}").exists()


def test_dask_ssh_check_shows_the_gate_table_and_fails(
    bed: testbed.Bed, fake_cloudpickle: str
) -> None:
    import subprocess

    argv = [sys.executable, "-m", "sshdeploy.cli", "--known-hosts", str(bed.known_hosts),
            "--ssh-username", "root", "--ssh-private-key", str(bed.client_key),
            "--check", "--setup", fake_cloudpickle, n1, n2]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "NO_COLOR": "1"})
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    at = lines.index(next(ln for ln in lines if ln.startswith("version gate:")))
    assert "1 host(s) differ" in lines[at]
    assert lines[at + 1].split() == ["host", "package", "theirs", "ours"]
    assert lines[at + 2].split()[:3] == [f"root@{n2}", "cloudpickle", "0.0.1"]


def test_the_clean_command_empties_the_hosts_caches(bed: testbed.Bed) -> None:
    import subprocess

    host = bed.hosts[1]
    envs = testbed.host_path(host, "/root/.cache/sshdeploy/envs")
    envs.mkdir(parents=True, exist_ok=True)
    (envs / "leftover").mkdir(exist_ok=True)
    (envs / "leftover" / "x.py").write_text("x = 1\n" * 1000)
    out = subprocess.run(
        [sys.executable, "-m", "sshdeploy.cli", "clean", "--envs", "--uploads", "--known-hosts",
         str(bed.known_hosts), "--ssh-private-key", str(bed.client_key), f"root@{host.name}"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"root@{host.name}: removed 0.0 MB"
    assert not envs.exists()


def test_a_host_added_to_a_named_cluster_later_gets_its_synced_environment(
    bed: testbed.Bed, bare_hosts: list[testbed.BedHost], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import subprocess

    from sshdeploy.named import flow
    from sshdeploy.named.state import StateStore

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}

    def dask_ssh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sshdeploy.cli", *args], env=env,
                              capture_output=True, text=True, timeout=240,
                              stdin=subprocess.DEVNULL)

    name = f"sync-{uuid.uuid4().hex[:6]}"
    try:
        up = dask_ssh("up", "--name", name, "--known-hosts", str(bed.known_hosts),
                      "--ssh-private-key", str(bed.client_key), "--ssh-username", "root",
                      "--scheduler-port", "0", "--dashboard-address", ":0",
                      "--remote-python", BARE, "--sync-env", n1, n2)
        assert up.returncode == 0, up.stdout + up.stderr
        # a later controller: n3's bare Python gets the environment, not a version table
        added = dask_ssh("add", name, n3)
        assert added.returncode == 0, added.stdout + added.stderr
        assert f"workers started: {n3}-0" in added.stdout, added.stdout
        with SSHCluster.from_name(name) as cluster, Client(cluster) as client:
            where = client.run(lambda: (__import__("sys").executable,
                                        __import__("distributed").__version__))
            ours = __import__("distributed").__version__
            assert len(where) == 2 and set(where.values()) == {(BARE, ours)}, where
        # dask-ssh exec: the synced environment's Python, as the workers have it (issue 27)
        ran = dask_ssh("exec", name, "--", "python3", "-c",
                       "'import distributed, sys; print(sys.executable, distributed.__version__)'")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert sorted(ran.stdout.splitlines()) == [f"{h}: {BARE} {ours}" for h in (n1, n2, n3)]
    finally:
        store = StateStore()
        for record in store.records():
            asyncio.run(flow.stop(record, store))


def test_an_inside_symlink_arrives_as_a_link_and_an_outside_one_is_refused(
    bed: testbed.Bed, tmp_path: Path
) -> None:
    from sshdeploy.errors import UploadError

    pkg = tmp_path / "src" / "linkedpkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core.py").write_text("ANSWER = 42\n")
    (pkg / "data" / "table.csv").write_text("a,b\n")
    (pkg / "alias.py").symlink_to("core.py")
    (pkg / "tables").symlink_to("data")
    with SSHCluster([n1, n2], connect_options=bed.connect_options(), upload=[str(pkg)]) \
            as cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=60)

        def seen() -> tuple[str, str, bool, int]:
            import linkedpkg.alias

            where = os.path.dirname(linkedpkg.__file__)
            return (os.readlink(os.path.join(where, "alias.py")),
                    os.readlink(os.path.join(where, "tables")),
                    os.path.isfile(os.path.join(where, "tables", "table.csv")),
                    linkedpkg.alias.ANSWER)

        assert set(client.run(seen).values()) == {("core.py", "data", True, 42)}
        assert client.run_on_scheduler(seen) == ("core.py", "data", True, 42)
    (tmp_path / "secret.txt").write_text("password\n")
    (pkg / "leak").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(UploadError, match="points outside"):
        SSHCluster([n1, n2], connect_options=bed.connect_options(), upload=[str(pkg)])
