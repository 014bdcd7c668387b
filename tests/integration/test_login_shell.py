"""``login_shell=True`` runs the setup commands and the workers in a login shell (issue 18).

Each bed host has its own ``/etc/profile.d`` (which ``bash -l`` sources through
``/etc/profile``): a script there on one host exports a marker, as a site's
``module`` or conda initialisation would. The setup commands and the workers
see it with ``login_shell=True`` and not without; the scheduler's host, which
has no such script, never does.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from distributed import Client

from sshdeploy import SSHCluster, testbed

pytestmark = pytest.mark.timeout(300)

n1, n2 = testbed.host_names(2, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))
VAR = "SSHDEPLOY_LOGIN_MARK"


@dataclass
class Profile:
    mark: str
    worker_host: testbed.BedHost
    seen_by_setup: str  # a file in the worker host's own /tmp

    def setup_saw(self) -> str:
        return testbed.host_path(self.worker_host, self.seen_by_setup).read_text().strip()


@pytest.fixture
def profile(bed: testbed.Bed) -> Iterator[Profile]:
    """A login script on n2 only that exports a marker; removed afterwards."""
    host = next(h for h in bed.hosts if h.name == n2)
    if not testbed.host_path(host, "/etc/profile.d").is_dir():
        pytest.skip("this machine has no /etc/profile.d for the bed hosts to have their own")
    mark = uuid.uuid4().hex[:12]
    script = testbed.host_path(host, f"/etc/profile.d/sshdeploy-test-{mark}.sh")
    script.write_text(f"export {VAR}={mark}\n")
    yield Profile(mark=mark, worker_host=host, seen_by_setup=f"/tmp/setup-saw-{mark}")
    script.unlink()
    testbed.host_path(host, f"/tmp/setup-saw-{mark}").unlink(missing_ok=True)


def _marks(bed: testbed.Bed, profile: Profile, login_shell: bool) -> tuple[set[str], str, str]:
    """(what the workers see, what the scheduler sees, what the setup saw on n2)."""
    setup = [f'echo "${{{VAR}:-none}}" > {profile.seen_by_setup}']
    with SSHCluster([n1, n2], connect_options=bed.connect_options(), setup=setup,
                    worker_options={"n_workers": 2}, login_shell=login_shell) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        workers = set(client.run(lambda: os.environ.get(VAR, "none")).values())
        scheduler = client.run_on_scheduler(lambda: os.environ.get(VAR, "none"))
    return workers, scheduler, profile.setup_saw()


def test_workers_and_setup_see_the_login_scripts_only_in_a_login_shell(
    bed: testbed.Bed, profile: Profile
) -> None:
    assert _marks(bed, profile, login_shell=True) == ({profile.mark}, "none", profile.mark)
    assert _marks(bed, profile, login_shell=False) == ({"none"}, "none", "none")


def test_a_named_cluster_with_a_setup_list_in_a_login_shell_is_recorded_and_stopped(
    bed: testbed.Bed, profile: Profile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operations on a named cluster's files (record, probe, kill) run the setup as the
    agents do: a list of commands, in the login shell. Here the setup fails outside the
    login shell (the marker comes from n2's login scripts), so any step that forgot the
    login shell, or took the list for one command, fails the record or the stop."""
    from sshdeploy.named import flow
    from sshdeploy.named.state import StateStore

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    name = f"lsh-{uuid.uuid4().hex[:6]}"
    setup = [f'test "${{{VAR}:-none}}" = {profile.mark}', "export SETUP_RAN=yes"]
    cluster = SSHCluster([n2, n2], connect_options=bed.connect_options(), setup=setup,
                         login_shell=True, name=name, shutdown_on_close=False)
    try:
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=60)
            assert set(client.run(lambda: os.environ.get("SETUP_RAN")).values()) == {"yes"}
        record = StateStore().load(name)
        assert record is not None and record.spec["setup"] == setup
        # The scheduler host's status is written by its agent every few seconds: the
        # first probe may still count the worker as missing.
        deadline = time.monotonic() + 30
        statuses = asyncio.run(flow.probe_all([record]))
        while [s.state for s in statuses] != ["running"] and time.monotonic() < deadline:
            time.sleep(0.5)
            statuses = asyncio.run(flow.probe_all([record]))
        assert [s.state for s in statuses] == ["running"], statuses
    finally:
        cluster.shutdown()  # verified stopped everywhere (ClusterStopError otherwise)
    assert StateStore().load(name) is None
