"""Unit tests for sshdeploy.placement: where every scheduler and worker goes, and its name."""

from __future__ import annotations

import sys

import pytest

from sshdeploy.errors import ConfigError
from sshdeploy.hosts import Host
from sshdeploy.placement import as_hosts, next_worker, per_host, place

pytestmark = pytest.mark.timeout(10)


def names(plan) -> list[str]:  # type: ignore[no-untyped-def]
    return [w.name for w in plan.workers]


def slots(plan) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return {key: h.slots for key, h in plan.worker_hosts.items()}


# ------------------------------------------------------------------ as_hosts


def test_as_hosts_parses_strings_and_keeps_hosts() -> None:
    h = Host("node3", slots=2)
    out = as_hosts(["node1", "alice@node2:2222", h])
    assert out[0] == Host("node1")
    assert out[1] == Host("node2", user="alice", port=2222)
    assert out[2] is h


@pytest.mark.parametrize("hosts", [None, [], ()])
def test_as_hosts_empty(hosts: object) -> None:
    with pytest.raises(ConfigError) as info:
        as_hosts(hosts)  # type: ignore[arg-type]
    assert info.value.setting == "hosts"
    assert "at least one host" in str(info.value)
    assert "hosts=[" in str(info.value)


def test_as_hosts_single_string_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        as_hosts("node1 node2")  # type: ignore[arg-type]
    text = str(info.value)
    assert text.startswith("hosts: expected a list of hosts, got a single string")
    assert "hosts=['node1 node2']" not in text and text.endswith("Write hosts=['node1', 'node2'].")


def test_as_hosts_single_host_string_is_not_split_into_characters() -> None:
    with pytest.raises(ConfigError):
        as_hosts("node1")  # type: ignore[arg-type]


# ------------------------------------------------------------------ per_host


def test_per_host_broadcasts_and_checks_length() -> None:
    assert per_host("/py", 3, "remote_python") == ["/py"] * 3
    assert per_host(None, 2, "remote_python") == [None, None]
    assert per_host(("/a", "/b"), 2, "remote_python") == ["/a", "/b"]
    with pytest.raises(ConfigError) as info:
        per_host(["/a"], 2, "remote_python")
    assert info.value.setting == "remote_python"
    assert "got 1 for 2 hosts" in str(info.value) and "Give 2 entries" in str(info.value)


# ------------------------------------------------------------------ place


def test_place_default_one_worker_per_later_host() -> None:
    plan = place(["node1", "node2", "node3"])
    assert plan.scheduler.host == Host("node1")
    assert plan.scheduler.python == sys.executable
    assert names(plan) == ["node2-0", "node3-0"]
    assert [w.host for w in plan.workers] == [Host("node2"), Host("node3")]
    assert slots(plan) == {(None, "node2", None): 1, (None, "node3", None): 1}
    assert {k: h.python for k, h in plan.worker_hosts.items()} == {
        (None, "node2", None): sys.executable, (None, "node3", None): sys.executable}


def test_place_n_workers_and_options_pass_through() -> None:
    plan = place(["s", "a", "b"], {"n_workers": 2, "nthreads": 4, "memory_limit": "1GiB"})
    assert names(plan) == ["a-0", "a-1", "b-0", "b-1"]
    for w in plan.workers:
        assert dict(w.kwargs) == {"nthreads": 4, "memory_limit": "1GiB"}  # no n_workers
    assert plan.worker_hosts[(None, "a", None)].template == {"nthreads": 4, "memory_limit": "1GiB"}


def test_place_nprocs_is_an_alias_and_not_passed_on() -> None:
    plan = place(["s", "a"], {"nprocs": 3})
    assert names(plan) == ["a-0", "a-1", "a-2"]
    assert all("nprocs" not in w.kwargs for w in plan.workers)


def test_place_only_a_scheduler_host() -> None:
    # No workers start, but `scale`/`adapt` can place them beside the scheduler.
    plan = place(["solo"], {"n_workers": 5, "nthreads": 2})
    assert plan.scheduler.host.hostname == "solo"
    assert plan.workers == [] and slots(plan) == {(None, "solo", None): 0}
    assert plan.worker_hosts[(None, "solo", None)].template == {"nthreads": 2}


def test_place_n_workers_zero() -> None:
    plan = place(["s", "a", "b"], {"n_workers": 0})
    assert plan.workers == []
    assert slots(plan) == {(None, "a", None): 0, (None, "b", None): 0}


@pytest.mark.parametrize("bad", [-1, 1.5, "2", None])
def test_place_bad_n_workers(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        place(["s", "a"], {"n_workers": bad})
    assert info.value.setting == "worker_options['n_workers']"
    assert repr(bad) in str(info.value)


def test_place_host_overrides_win() -> None:
    a = Host("a", slots=3, nthreads=2, memory_limit="2GiB", remote_python="/opt/py/bin/python")
    plan = place(["s", a, "b"], {"n_workers": 1, "nthreads": 8, "memory_limit": "8GiB"},
                 remote_python="/usr/bin/python3")
    assert names(plan) == ["a-0", "a-1", "a-2", "b-0"]
    assert dict(plan.workers[0].kwargs) == {"nthreads": 2, "memory_limit": "2GiB"}
    assert dict(plan.workers[3].kwargs) == {"nthreads": 8, "memory_limit": "8GiB"}
    assert plan.worker_hosts[a.key].python == "/opt/py/bin/python"
    assert plan.worker_hosts[(None, "b", None)].python == "/usr/bin/python3"
    assert plan.scheduler.python == "/usr/bin/python3"
    assert plan.worker_hosts[a.key].slots == 3
    # the planned host carries no slots: scale() counts them in plan.worker_hosts[...].slots
    assert plan.workers[0].host.slots is None
    assert plan.workers[0].host.remote_python == "/opt/py/bin/python"


def test_place_scheduler_python_from_the_scheduler_host() -> None:
    plan = place([Host("s", remote_python="/s/python"), "a"], remote_python=["/x", "/y"])
    assert plan.scheduler.python == "/s/python"
    assert plan.worker_hosts[(None, "a", None)].python == "/y"


def test_place_repeated_host_adds_workers_with_unique_names() -> None:
    plan = place(["s", "a", Host("a", slots=2), "b", "a"], {"n_workers": 1})
    assert names(plan) == ["a-0", "a-1", "a-2", "b-0", "a-3"]
    assert slots(plan) == {(None, "a", None): 4, (None, "b", None): 1}
    assert len(set(names(plan))) == len(plan.workers)


def test_place_scheduler_host_may_also_run_workers() -> None:
    plan = place(["a", "a"], {"n_workers": 2})
    assert plan.scheduler.host == Host("a")
    assert names(plan) == ["a-0", "a-1"]


def test_place_same_hostname_different_users_are_different_hosts() -> None:
    plan = place(["s", "alice@a", "bob@a"])
    assert set(plan.worker_hosts) == {("alice", "a", None), ("bob", "a", None)}
    # names are per host name, so they stay unique across users
    assert names(plan) == ["a-0", "a-1"]


def test_place_connect_options_broadcast_and_per_host() -> None:
    plan = place(["s", "a"], connect_options={"known_hosts": None})
    assert {k: h.connect_options for k, h in plan.all_hosts().items()} == {
        (None, "s", None): {"known_hosts": None}, (None, "a", None): {"known_hosts": None}}
    plan = place(["s", "a"], connect_options=[{"port": 1}, {"port": 2}])
    assert plan.worker_hosts[(None, "a", None)].connect_options == {"port": 2}


def test_place_later_connect_options_fill_an_earlier_none() -> None:
    plan = place(["s", "a", "a"], connect_options=[None, None, {"username": "alice"}])
    assert plan.worker_hosts[(None, "a", None)].connect_options == {"username": "alice"}


@pytest.mark.parametrize("setting", ["remote_python", "connect_options"])
def test_place_per_host_list_of_wrong_length_names_the_setting(setting: str) -> None:
    value = ["/py"] * 2 if setting == "remote_python" else [{}, {}]
    with pytest.raises(ConfigError) as info:
        place(["s", "a", "b"], **{setting: value})
    assert info.value.setting == setting
    assert str(info.value).startswith(f"{setting}: a per-host list")
    assert "got 2 for 3 hosts" in str(info.value)


# ------------------------------------------------------------------ next_worker


def test_next_worker_fills_free_slots_first() -> None:
    plan = place(["s", Host("a", slots=1), Host("b", slots=3)])
    running = [(w.host, w.name) for w in plan.workers if w.name in ("a-0", "b-0")]
    host, name = next_worker(plan, running)  # type: ignore[misc]
    assert (host.hostname, name) == ("b", "b-1")  # b has 2 free, a has 0


def test_next_worker_most_free_wins_ties_first_configured() -> None:
    plan = place(["s", "a", "b"], {"n_workers": 2})
    assert next_worker(plan, []) == (Host("a"), "a-0")
    a, b = Host("a"), Host("b")
    assert next_worker(plan, [(a, "a-0")]) == (b, "b-0")
    assert next_worker(plan, [(a, "a-0"), (b, "b-0")]) == (a, "a-1")


def test_next_worker_when_full_picks_least_loaded() -> None:
    plan = place(["s", Host("a", slots=1), Host("b", slots=2)])
    a, b = Host("a"), Host("b")
    full = [(a, "a-0"), (b, "b-0"), (b, "b-1")]
    assert next_worker(plan, full) == (a, "a-1")  # a: 1/1, b: 2/2 -> tie, a first
    assert next_worker(plan, [*full, (a, "a-1")]) == (b, "b-2")  # a: 2/1 > b: 2/2


def test_next_worker_names_are_unique_and_fill_gaps() -> None:
    plan = place(["s", "a"], {"n_workers": 3})
    a = Host("a")
    # a-1 was retired: the next worker reuses the free name
    assert next_worker(plan, [(a, "a-0"), (a, "a-2")]) == (a, "a-1")
    running: list[tuple[Host, str]] = []
    for _ in range(7):
        got = next_worker(plan, running)
        assert got is not None
        running.append(got)
    assert len({n for _, n in running}) == 7


def test_next_worker_without_worker_hosts_uses_the_scheduler_host() -> None:
    host, name = next_worker(place(["solo"]), []) or (None, None)
    assert host is not None and host.hostname == "solo" and name == "solo-0"


def test_next_worker_with_zero_slots_still_places() -> None:
    plan = place(["s", "a"], {"n_workers": 0})
    assert next_worker(plan, []) == (Host("a"), "a-0")


def test_one_host_written_two_ways_is_one_host() -> None:
    import getpass

    me = getpass.getuser()
    opts = {"config": []}  # no ssh config that could give port 22 another meaning
    plan = place(["s", "node2", f"{me}@node2:22"], connect_options=opts)
    assert list(plan.worker_hosts) == [(None, "node2", None)]
    assert names(plan) == ["node2-0", "node2-1"]
    assert plan.worker_hosts[(None, "node2", None)].slots == 2


def test_another_user_or_port_stays_another_host() -> None:
    plan = place(["s", "node2", "other@node2", "node2:2222"], connect_options={"config": []})
    assert list(plan.worker_hosts) == [(None, "node2", None), ("other", "node2", None),
                                (None, "node2", 2222)]
