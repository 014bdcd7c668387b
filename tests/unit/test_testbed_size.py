"""How many hosts a bed may have: 48 for the default bed, 200 in a /24 of its own.

Sizes are checked before anything is created (no root needed); the addresses,
bridges and interface names of a 200-host bed are computed, not brought up.
"""

from __future__ import annotations

import ipaddress

import pytest

from sshdeploy import testbed
from sshdeploy.testbed import model

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(("n", "name", "limit"), [
    (49, testbed.DEFAULT_NAME, "Use 1 to 48 (up to 200 in a bed with another --name)."),
    (201, "big", "Use 1 to 200."),
    (0, "big", "Use 1 to 200."),
])
def test_a_size_beyond_the_limit_is_refused_before_anything_is_made(
    n: int, name: str, limit: str
) -> None:
    with pytest.raises(testbed.TestbedError) as info:
        testbed.up(n, name)
    assert str(info.value) == f"test bed: cannot make a bed of {n} hosts. {limit}"


def test_a_200_host_block_has_distinct_addresses_and_short_link_names() -> None:
    block = model.N_BLOCKS - 1
    assert not model.is_shared_block(block)
    subnet = ipaddress.ip_network(model.block_subnet(block))
    private = ipaddress.ip_network(model.private_block_subnet(block))
    hosts = range(1, model.MAX_HOSTS_OWN_BLOCK + 1)
    addresses = {model.host_address(block, i) for i in hosts}
    assert len(addresses) == model.MAX_HOSTS_OWN_BLOCK
    assert all(ipaddress.ip_address(a) in subnet for a in addresses)
    assert model.bridge_ip(block) not in addresses
    assert ipaddress.ip_address(model.private_host_address(block, 200)) in private
    # Linux interface names have at most 15 characters.
    assert max(len(model.veth_name(block, i)) for i in hosts) <= 15
    assert max(len(model.private_veth_name(block, i)) for i in hosts) <= 15
    assert model.max_hosts("big") == 200 and model.max_hosts(testbed.DEFAULT_NAME) == 48
