"""``hosts`` given as something other than a list is named, with the list to write."""

from __future__ import annotations

import pytest

from sshdeploy.errors import ConfigError
from sshdeploy.placement import as_hosts

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(("hosts", "remedy"), [
    ("a,b", "Write hosts=['a', 'b']."),
    ("a b", "Write hosts=['a', 'b']."),
    ("node1", "Write hosts=['node1']."),
])
def test_a_single_string_is_refused_with_the_list_it_may_mean(hosts: str, remedy: str) -> None:
    with pytest.raises(ConfigError, match="got a single string") as info:
        as_hosts(hosts)
    assert str(info.value).endswith(remedy)


@pytest.mark.parametrize("hosts", [5, 2.5, {"a": 1}])
def test_a_value_that_is_no_list_is_a_config_error_not_a_type_error(hosts: object) -> None:
    with pytest.raises(ConfigError, match=f"expected a list of hosts, got {type(hosts).__name__}"):
        as_hosts(hosts)  # type: ignore[arg-type]


def test_a_tuple_and_one_host_value_are_hosts() -> None:
    assert [h.hostname for h in as_hosts(("a", "b"))] == ["a", "b"]
    (one,) = as_hosts(as_hosts(["u@c:2222"])[0])  # type: ignore[arg-type]
    assert (one.user, one.hostname, one.port) == ("u", "c", 2222)
