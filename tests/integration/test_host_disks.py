"""Each bed host has its own /tmp, /var/tmp, ~/.cache and /etc/profile.d, as machines do.

What a login on one host writes there is seen by no other host and not by
this machine; the bed reads a host's own view through ``testbed.host_path``.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from sshdeploy import testbed

pytestmark = pytest.mark.timeout(60)


def ssh(bed: testbed.Bed, host: testbed.BedHost, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-F", str(bed.ssh_config), host.name, command],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("directory", ["/tmp", "/var/tmp", "~/.cache", "/etc/profile.d"])
def test_a_file_written_on_one_host_is_seen_by_no_other_host_nor_here(
    bed: testbed.Bed, directory: str
) -> None:
    name = f"sshdeploy-isolation-{uuid.uuid4().hex[:8]}"
    first, *others = bed.hosts
    wrote = ssh(bed, first, f"echo {first.name} > {directory}/{name} && cat {directory}/{name}")
    assert wrote.returncode == 0 and wrote.stdout.strip() == first.name, wrote.stderr
    for other in others:
        seen = ssh(bed, other, f"test -e {directory}/{name} && echo yes || echo no")
        assert seen.stdout.strip() == "no", f"{other.name} sees {directory}/{name}"
    here = Path(os.path.expanduser(directory)) / name
    assert not here.exists(), f"this machine sees {here}"
    # ...and the bed sees the file where that host keeps it
    remote = ssh(bed, first, f"cd {directory} && pwd").stdout.strip()
    on_host = testbed.host_path(first, f"{remote}/{name}")
    assert on_host.read_text().strip() == first.name
    on_host.unlink()


def test_the_home_cache_survives_logins_and_the_tmp_dirs_are_writable_by_all(
    bed: testbed.Bed,
) -> None:
    host = bed.hosts[1]
    name = f"keep-{uuid.uuid4().hex[:8]}"
    assert ssh(bed, host, f"mkdir -p ~/.cache && echo 1 > ~/.cache/{name}").returncode == 0
    assert ssh(bed, host, f"cat ~/.cache/{name} && rm ~/.cache/{name}").stdout.strip() == "1"
    modes = ssh(bed, host, "stat -c %a /tmp /var/tmp").stdout.split()
    assert modes == ["1777", "1777"]


def test_a_shared_directory_joins_two_hosts_until_it_is_undone(bed: testbed.Bed) -> None:
    first, second, third = bed.hosts[:3]
    name = f"shared-{uuid.uuid4().hex[:8]}"
    mine = ssh(bed, first, f"mkdir -p ~/.cache && echo own > ~/.cache/{name}")
    assert mine.returncode == 0, mine.stderr
    with testbed.shared_directory([first, second], "/root/.cache") as shared:
        assert ssh(bed, first, f"echo both > ~/.cache/{name}").returncode == 0
        assert ssh(bed, second, f"cat ~/.cache/{name}").stdout.strip() == "both"
        assert (shared / name).read_text().strip() == "both"
        assert ssh(bed, third, f"test -e ~/.cache/{name} || echo no").stdout.strip() == "no"
    assert not shared.exists()
    # each host has its own ~/.cache again, as it was
    assert ssh(bed, first, f"cat ~/.cache/{name} && rm ~/.cache/{name}").stdout.strip() == "own"
    assert ssh(bed, second, f"test -e ~/.cache/{name} || echo no").stdout.strip() == "no"
