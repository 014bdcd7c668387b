"""The docker-compose bed and the provisioning file it shares with the namespace bed.

No Docker engine is needed: docker-compose.yml is parsed with PyYAML, and
provision.sh is run directly (it only needs ``sh`` and ``ssh-keygen``).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sshdeploy import testbed
from sshdeploy.testbed import model

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
PROVISION = ROOT / "sshdeploy" / "testbed" / "provision.sh"
PROVISION_IN_IMAGE = "/opt/sshdeploy/provision.sh"
HOSTS = ["node1", "node2", "node3", "node4"]
SUBNET = ipaddress.ip_network("10.213.7.0/24")
PRIVATE = ipaddress.ip_network("10.213.100.0/24")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@pytest.mark.timeout(10)
def test_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(HOSTS) | {"keygen", "controller"} <= set(services)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", HOSTS)
def test_host_runs_sshd_through_the_shared_provisioning_file(
    compose: dict[str, Any], name: str
) -> None:
    svc = compose["services"][name]
    assert svc["hostname"] == name
    assert svc["command"] == ["sh", PROVISION_IN_IMAGE, "container"]
    assert svc["build"] == {"context": ".", "dockerfile": "docker/Dockerfile"}
    assert "keys:/keys" in svc["volumes"]
    assert svc["depends_on"]["keygen"]["condition"] == "service_completed_successfully"
    address = ipaddress.ip_address(svc["networks"]["bed"]["ipv4_address"])
    assert address in SUBNET


@pytest.mark.timeout(10)
def test_hosts_have_distinct_addresses_on_the_bed_subnet(compose: dict[str, Any]) -> None:
    services = compose["services"]
    addresses = [services[n]["networks"]["bed"]["ipv4_address"] for n in [*HOSTS, "controller"]]
    assert len(set(addresses)) == len(addresses)
    assert [services[n]["networks"]["bed"]["ipv4_address"] for n in HOSTS] == [
        f"10.213.7.{11 + i}" for i in range(len(HOSTS))
    ]  # the same addresses as the namespace bed's node1..node4


@pytest.mark.timeout(10)
def test_networks_are_internal_bed_and_private(compose: dict[str, Any]) -> None:
    networks = compose["networks"]
    assert list(networks) == ["bed", "private"]
    for net, subnet in (("bed", SUBNET), ("private", PRIVATE)):
        assert networks[net]["internal"] is True  # no route out, like the namespace bed
        assert [c["subnet"] for c in networks[net]["ipam"]["config"]] == [str(subnet)]
    for name, svc in compose["services"].items():
        assert set(svc.get("networks", {})) <= {"bed", "private"}, name
        assert "ports" not in svc, name
    assert compose["services"]["keygen"]["network_mode"] == "none"


@pytest.mark.timeout(10)
def test_private_network_joins_the_hosts_but_not_the_controller(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services["controller"]["networks"]) == {"bed"}
    private = [services[n]["networks"]["private"]["ipv4_address"] for n in HOSTS]
    # the namespace bed's default bed has the same private addresses (block 0)
    assert private == [model.private_host_address(0, i + 1) for i in range(len(HOSTS))]
    assert str(PRIVATE) == model.private_block_subnet(0)
    assert not PRIVATE.overlaps(SUBNET)


@pytest.mark.timeout(10)
def test_hosts_publish_their_bed_address_not_the_private_one(compose: dict[str, Any]) -> None:
    for name in HOSTS:
        env = compose["services"][name]["environment"]
        assert env["SSHDEPLOY_BED_NET"] == "10.213.7."
        assert compose["services"][name]["networks"]["bed"]["ipv4_address"].startswith(
            env["SSHDEPLOY_BED_NET"]
        )
    text = PROVISION.read_text()
    assert 'address=$(bed_address "${SSHDEPLOY_BED_NET:-10.213.7.}")' in text


@pytest.mark.timeout(10)
@pytest.mark.skipif(shutil.which("ip") is None, reason="no ip (iproute2)")
def test_provision_bed_address_picks_the_address_with_the_prefix() -> None:
    def run(prefix: str) -> str:
        return subprocess.run(
            ["sh", str(PROVISION), "bed-address", prefix],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout

    assert run("127.") == "127.0.0.1\n"
    assert run("203.0.113.") == ""  # TEST-NET-3: no address of this machine


@pytest.mark.timeout(10)
def test_client_key_is_generated_once_and_shared(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["keygen"]["command"] == ["sh", PROVISION_IN_IMAGE, "client-key", "/keys"]
    assert "keys" in compose["volumes"]
    assert "keys:/keys:ro" in services["controller"]["volumes"]


@pytest.mark.timeout(10)
def test_controller_waits_for_hosts(compose: dict[str, Any]) -> None:
    ctl = compose["services"]["controller"]
    assert {n: d["condition"] for n, d in ctl["depends_on"].items()} == {
        n: "service_healthy" for n in HOSTS
    }
    assert ctl["environment"]["SSHDEPLOY_HOSTS"].split() == HOSTS
    assert (ROOT / ctl["entrypoint"][-1].removeprefix("/project/")).exists()


@pytest.mark.timeout(10)
def test_dockerfile_installs_project_and_provisioning_file() -> None:
    text = DOCKERFILE.read_text()
    assert text.startswith("# ") and "FROM python:3.11" in text
    assert "openssh-server" in text
    assert "COPY . /project" in text
    assert 'pip install --no-cache-dir "/project[test]"' in text
    assert f"COPY sshdeploy/testbed/provision.sh {PROVISION_IN_IMAGE}" in text


@pytest.mark.timeout(10)
def test_namespace_bed_uses_the_same_provisioning_file() -> None:
    assert testbed.PROVISION.resolve() == PROVISION.resolve()


needs_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")


def _provision(*args: str) -> None:
    subprocess.run(["sh", str(PROVISION), *args], check=True, capture_output=True, timeout=30)


@needs_keygen
@pytest.mark.timeout(30)
def test_provision_host_writes_the_template(tmp_path: Path) -> None:
    _provision("client-key", str(tmp_path))
    _provision("authorize", str(tmp_path / "client_key.pub"), str(tmp_path / "authorized_keys"))
    hdir = tmp_path / "node1"
    _provision("host", str(hdir), "10.213.7.11", str(tmp_path / "authorized_keys"), "MaxSessions 3")
    config = (hdir / "sshd_config").read_text().splitlines()
    assert config.index("MaxSessions 3") < config.index("ListenAddress 10.213.7.11")
    for line in [
        "Port 22",
        f"HostKey {hdir}/ssh_host_ed25519_key",
        f"PidFile {hdir}/sshd.pid",
        f"AuthorizedKeysFile {tmp_path}/authorized_keys",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "LogLevel INFO",  # testbed.sshd_log shows where each connection came from
    ]:
        assert line in config
    assert not any(ln.startswith(("MaxStartups", "#MaxStartups")) for ln in config)
    assert (tmp_path / "authorized_keys").read_text() == (tmp_path / "client_key.pub").read_text()
    assert (hdir / "ssh_host_ed25519_key.pub").read_text().startswith("ssh-ed25519 ")
    line = subprocess.run(
        [
            "sh",
            str(PROVISION),
            "known-host",
            "node1,10.213.7.11",
            str(hdir / "ssh_host_ed25519_key.pub"),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert line[:2] == ["node1,10.213.7.11", "ssh-ed25519"] and len(line) == 3
    if Path("/usr/sbin/sshd").exists():  # sshd accepts the config as written
        if os.geteuid() == 0:  # `sshd -t` wants its privilege separation dir, as at boot
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        check = subprocess.run(
            ["/usr/sbin/sshd", "-t", "-f", str(hdir / "sshd_config")],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stderr


@needs_keygen
@pytest.mark.timeout(30)
def test_provision_keeps_existing_keys(tmp_path: Path) -> None:
    _provision("client-key", str(tmp_path))
    first = (tmp_path / "client_key.pub").read_text()
    _provision("client-key", str(tmp_path))
    assert (tmp_path / "client_key.pub").read_text() == first


@pytest.mark.timeout(10)
def test_provision_rejects_unknown_subcommand() -> None:
    proc = subprocess.run(["sh", str(PROVISION), "bogus"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown subcommand 'bogus'" in proc.stderr
