"""``login_shell=True`` runs the setup commands and the workers in a login shell (issue 18).

Each bed host has its own ``/etc/profile.d`` (which ``bash -l`` sources through
``/etc/profile``): a script there on one host exports a marker, as a site's
``module`` or conda initialisation would. The setup commands and the workers
see it with ``login_shell=True`` and not without; the scheduler's host, which
has no such script, never does.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

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
