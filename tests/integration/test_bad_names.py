"""Names that do not resolve cost no more than the resolver's answer (issue 29, must-hold 2).

100 bad names beside two good bed hosts, in a hostfile or on the command line:
``dask-ssh`` fails, naming every bad one, and leaves nothing on the good hosts.
The resolver is a stub on loopback (no traffic leaves this machine): ``dask-ssh``
runs in its own mount namespace whose ``/etc/resolv.conf`` names it. It answers
NXDOMAIN at once for most names and never for the ``quiet`` ones, as a resolver
that drops queries does (glibc then waits 5 s, and asks again): the start must
not wait for those. The bed hosts resolve from ``/etc/hosts`` as usual. No
timing is asserted here (the timing is ``benchmarks/bench_preflight.py --bad-names``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sshdeploy import testbed
from sshdeploy.testbed.dns import StubResolver, with_resolver

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                       reason="needs root and unshare (a mount namespace for resolv.conf)"),
]

QUIET = 10
LOUD = 90


@pytest.fixture
def resolver(tmp_path: Path) -> Iterator[tuple[StubResolver, Path]]:
    with StubResolver() as stub:
        yield stub, stub.resolv_conf(tmp_path)


def _bad_names() -> list[str]:
    names = [f"nohost{i:03d}.invalid" for i in range(LOUD)]
    names += [f"quiet{i:03d}.invalid" for i in range(QUIET)]
    return names[::2] + names[1::2]  # the quiet ones spread among the others


@pytest.mark.parametrize("given", ["hostfile", "command line"])
def test_bad_names_fail_the_start_each_named_and_the_good_hosts_are_left_clean(
    bed: testbed.Bed, resolver: tuple[StubResolver, Path], tmp_path: Path, given: str
) -> None:
    stub, conf = resolver
    good = [f"root@{h.name}" for h in bed.hosts[:2]]
    bad = _bad_names()
    if given == "hostfile":
        path = tmp_path / "hosts"
        path.write_text("\n".join([*good, *bad]) + "\n")
        hosts = ["--hostfile", str(path)]
    else:
        hosts = [*good, *bad]
    argv = [sys.executable, "-m", "sshdeploy.cli", "--no-progress", "--known-hosts",
            str(bed.known_hosts), "--ssh-private-key", str(bed.client_key), *hosts]
    done = subprocess.run(with_resolver(conf, argv), capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out, out
    assert f"{len(bad)} host(s) failed to start workers" in out, out
    said = {line.split("]")[0].split("[", 1)[1]: line for line in out.splitlines()
            if line.startswith("  - [")}
    assert sorted(said) == sorted(bad), out
    for name in bad:
        if name.startswith("quiet"):  # never answered: not waited for
            assert "still being looked up" in said[name], said[name]
        else:
            assert ("does not resolve" in said[name]
                    or "still being looked up" in said[name]), said[name]
    assert any(n.startswith("quiet") for n in stub.asked)  # the stub was asked
    assert not any(g.split("@")[1] in said for g in good), out
