"""``python -m sshdeploy.testbed up`` says how to use the bed, in lines that work when pasted."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import sshdeploy
from sshdeploy import cli as dask_ssh_cli
from sshdeploy.testbed import cli
from sshdeploy.testbed.model import Bed, BedHost


@pytest.fixture
def bed(tmp_path: Path) -> Bed:
    d = tmp_path / "my beds" / "ci"  # a space: the shell lines must quote
    d.mkdir(parents=True)
    hosts = tuple(
        BedHost(f"ci{i}", f"10.213.7.{60 + i}", f"sdtb-ci-ci{i}", f"10.213.101.{60 + i}")
        for i in (1, 2, 3)
    )
    the_bed = Bed(
        "ci", hosts, d, d / "client_key", d / "known_hosts", d / "ssh_config", d / "hostfile",
        private_subnet="10.213.101.0/24",
    )
    the_bed.hostfile.write_text("".join(f"root@{h.name}\n" for h in hosts))
    for f in (the_bed.client_key, the_bed.known_hosts, the_bed.ssh_config):
        f.write_text("")
    return the_bed


def _line(text: str, start: str) -> str:
    found = [ln for ln in text.splitlines() if ln.startswith(start)]
    assert len(found) == 1, text
    return found[0]


@pytest.mark.timeout(10)
def test_usage_names_hosts_networks_and_files(bed: Bed) -> None:
    text = cli.usage(bed)
    for h in bed.hosts:
        assert f"{h.name}" in text and h.address in text and h.private_address in text
    assert f"private net: {bed.private_subnet} on eth1" in text
    assert f"hostfile:    {bed.hostfile}" in text
    assert shlex.split(_line(text, "ssh -F ")) == ["ssh", "-F", str(bed.ssh_config), "ci1"]
    assert _line(text, "python -m sshdeploy.testbed down") == (
        "python -m sshdeploy.testbed down --name ci"
    )


@pytest.mark.timeout(30)
def test_usage_dask_ssh_line_runs(bed: Bed) -> None:
    argv = shlex.split(_line(cli.usage(bed), "dask-ssh "))
    assert argv[:2] == ["dask-ssh", "--hostfile"] and argv[2] == str(bed.hostfile)
    assert argv[argv.index("--known-hosts") + 1] == str(bed.known_hosts)
    assert argv[argv.index("--ssh-private-key") + 1] == str(bed.client_key)
    # the very line, as a dry run: it parses, and places the scheduler and the workers
    result = CliRunner().invoke(dask_ssh_cli.main, [*argv[1:], "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "# root@ci1  scheduler" in result.output
    assert "# root@ci2  worker  ci2-0" in result.output
    assert "# root@ci3  worker  ci3-0" in result.output


@pytest.mark.timeout(10)
def test_usage_python_line_builds_the_cluster(bed: Bed, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fake_cluster(*args: Any, **kwargs: Any) -> str:
        calls.append((args, kwargs))
        return "cluster"

    monkeypatch.setattr(sshdeploy, "SSHCluster", fake_cluster)
    namespace: dict[str, Any] = {}
    exec(_line(cli.usage(bed), "from sshdeploy import SSHCluster"), namespace)  # as pasted
    assert namespace["cluster"] == "cluster"
    assert calls == [
        (
            (["ci1", "ci2", "ci3"],),
            {
                "connect_options": {
                    "known_hosts": str(bed.known_hosts),
                    "client_keys": [str(bed.client_key)],
                    "username": "root",
                }
            },
        )
    ]


@pytest.mark.timeout(10)
def test_up_prints_the_usage(bed: Bed, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[int, str]] = []

    def fake_up(n: int, name: str, **kwargs: Any) -> Bed:
        asked.append((n, name))
        return bed

    monkeypatch.setattr(cli, "up", fake_up)
    result = CliRunner().invoke(cli._cli(), ["up", "3", "--name", "ci"])
    assert result.exit_code == 0, result.output
    assert asked == [(3, "ci")]
    assert result.output.startswith("bed 'ci': 3 host(s) up in ")
    assert cli.usage(bed) in result.output
