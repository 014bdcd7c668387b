"""Spares, initial workers, host health and the hooks that move a lost host's workers.

No network: placement and health are pure; the restart hooks run against the
fake cluster of test_restarts.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sshdeploy.arguments import ClusterArgs
from sshdeploy.cluster.health import LOST, QUARANTINED, HostHealth, TakenOut, health_of
from sshdeploy.cluster.restarts import WorkerRestarts
from sshdeploy.errors import ConfigError, SSHDeployError
from sshdeploy.hosts import Host
from sshdeploy.placement import extend, next_worker, place, with_spares, without
from sshdeploy.plan import plan_cluster
from sshdeploy.views.hostrows import HostRow, rows_html, rows_text

from .test_restarts import FakeCluster, died, roster_of

pytestmark = pytest.mark.timeout(30)


def names(p: Any) -> list[str]:
    return [w.name for w in p.workers]


# -- placement -----------------------------------------------------------------


def test_spares_get_slots_but_no_worker_at_the_start() -> None:
    p = place(with_spares(["s", "a", "b"], ["c", "d slots=2"]), {"n_workers": 1})
    assert names(p) == ["a-0", "b-0"]
    assert [hp.slots for hp in p.worker_hosts.values()] == [1, 1, 1, 2]
    assert {k[1] for k in p.spares} == {"c", "d"}
    assert set(p.initial_hosts()) == {k for k in p.all_hosts() if k[1] in ("s", "a", "b")}


def test_scale_uses_every_other_hosts_free_slots_before_a_spare() -> None:
    p = place(["s", "a", Host("c", spare=True), "b"], {"n_workers": 2})
    running = [(w.host, w.name) for w in p.workers]
    assert names(p) == ["a-0", "a-1", "b-0", "b-1"]
    chosen = next_worker(p, running[:3])
    assert chosen is not None and chosen[1] == "b-1"  # b's free slot, not the spare
    chosen = next_worker(p, running)
    assert chosen is not None and chosen[1] == "c-0"  # every other slot taken: the spare


def test_excluded_hosts_get_no_worker() -> None:
    p = place(["s", "a", "b"], {"n_workers": 1})
    a, b = (hp.host.key for hp in p.worker_hosts.values())
    chosen = next_worker(p, [], exclude={a})
    assert chosen is not None and chosen[1] == "b-0"
    assert next_worker(p, [], exclude={a, b}) is None


def test_initial_workers_fill_the_hosts_in_order() -> None:
    p = place(["s", "a", "b", "c"], {"n_workers": 2}, initial_workers=3)
    assert names(p) == ["a-0", "a-1", "b-0"]
    assert [k[1] for k in p.initial_hosts()] == ["s", "a", "b"]
    assert names(place(["s", "a"], {"n_workers": 2}, initial_workers=0)) == []


@pytest.mark.parametrize(("hosts", "spares", "kwargs", "match"), [
    ([Host("s", spare=True), "a"], None, {}, "runs the scheduler; it cannot be a spare"),
    (["s", "a"], ["a"], {}, "listed both as a host and as a spare"),
    (["s", "a"], "b", {}, "expected a list of hosts"),
    (["s", "a"], ["b"], {"remote_python": ["/p1", "/p2"]}, "per-host list"),
    (["s", "a"], None, {"initial_workers": 2}, "from 0 to 1"),
    (["s", "a"], None, {"initial_workers": -1}, "from 0 to 1"),
])
def test_bad_spares_and_initial_workers_say_what_to_do(
        hosts: Any, spares: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        plan_cluster(ClusterArgs(hosts, spares=spares, **kwargs))
    assert info.value.remedy


def test_min_workers_counts_the_initial_workers() -> None:
    with pytest.raises(ConfigError, match="min_workers: 2 is more than the 1 workers"):
        plan_cluster(ClusterArgs(["s", "a", "b"], min_workers=2, initial_workers=1))


def test_the_scheduler_host_may_also_be_a_spare() -> None:
    p = place(["s", "a", Host("s", spare=True)])
    assert names(p) == ["a-0"] and {k[1] for k in p.spares} == {"s"}


def test_extend_and_without_change_the_hosts_only() -> None:
    p = place(["s", "a"], {"n_workers": 2, "nthreads": 3}, remote_python="/opt/py")
    q = extend(p, ["b", "c slots=1"])
    assert [(hp.host.hostname, hp.slots, hp.python) for hp in q.worker_hosts.values()] == [
        ("a", 2, "/opt/py"), ("b", 2, "/opt/py"), ("c", 1, "/opt/py")]
    assert q.worker_hosts[Host("b").key].template["nthreads"] == 3
    assert names(q) == names(p)  # no worker placed by extending
    with pytest.raises(ConfigError, match="already a host of the cluster"):
        extend(q, ["b"])
    r = without(q, [Host("a").key])
    assert [hp.host.hostname for hp in r.worker_hosts.values()] == ["b", "c"]
    assert names(r) == []
    assert len(extend(r, ["d"], spare=True).spares) == 1


# -- health and its display -------------------------------------------------------


def test_a_host_is_taken_out_once_and_readmitted() -> None:
    h = HostHealth()
    key = ("u", "n2", 22)
    assert h.take_out(key, LOST, "unreachable") and not h.take_out(key, QUARANTINED, "again")
    h.note_moves(key, [("n2-0", "n5-0")])
    assert h.out[key] == TakenOut(LOST, "unreachable", (("n2-0", "n5-0"),))
    assert h.excluded() == {key}
    assert h.readmit(key) and not h.readmit(key) and h.excluded() == set()
    with pytest.raises(ValueError):
        h.take_out(key, "ok", "no")


@pytest.mark.parametrize(("taken", "spare", "running", "wanted", "trouble", "state"), [
    (None, False, 2, 2, False, "ok"),
    (None, False, 1, 2, False, "ok"),  # starting: no trouble seen
    (None, False, 1, 2, True, "degraded"),
    (None, True, 0, 0, False, "spare"),
    (None, False, 0, 0, False, "idle"),
    (None, True, 1, 1, False, "ok"),  # a spare in use
    (TakenOut(QUARANTINED, "x"), False, 0, 0, True, "quarantined"),
])
def test_health_of_each_kind_of_host(taken: TakenOut | None, spare: bool, running: int,
                                     wanted: int, trouble: bool, state: str) -> None:
    assert health_of(taken, spare=spare, running=running, wanted=wanted,
                     trouble=trouble) == state


def test_rows_show_health_only_when_known() -> None:
    rows = [HostRow("n1", "scheduler", 0, 0, health="ok"),
            HostRow("n3", "spare", 0, 0, health="spare")]
    text = rows_text(rows)
    assert text.splitlines()[0].split()[:3] == ["host", "role", "health"]
    assert "spare" in text.splitlines()[2]
    assert "<th style='text-align: left'>Health</th>" in rows_html(rows)
    assert "health" not in rows_text([HostRow("n1", "scheduler", 0, 0)])


# -- the restart hooks ------------------------------------------------------------


def test_a_worker_past_its_budget_reports_its_host_to_be_quarantined() -> None:
    calls: list[tuple[str, Any, str]] = []

    async def main() -> None:
        c = FakeCluster(["a"])
        r = WorkerRestarts(roster_of(c), limit=1, enabled=True, heartbeat_timeout=30,
                           on_give_up=lambda *args: calls.append(args))
        died(r, "a", 1)
        r.lost("a", "killed")
        await r.close()
    asyncio.run(main())
    assert [(n, h.hostname) for n, h, _ in calls] == [("a", "node2")]
    assert "lost 2 times" in calls[0][2]


def test_restarts_off_never_quarantine() -> None:
    calls: list[Any] = []

    async def main() -> None:
        c = FakeCluster(["a"])
        r = WorkerRestarts(roster_of(c), limit=1, enabled=False, heartbeat_timeout=30,
                           on_give_up=lambda *args: calls.append(args))
        r.lost("a", "killed")
        await r.close()
    asyncio.run(main())
    assert calls == []


class Unreachable(SSHDeployError):
    def __init__(self) -> None:
        super().__init__("ssh: cannot connect: timed out")


def test_a_host_unreachable_past_host_lost_after_is_reported_lost() -> None:
    lost: list[tuple[Any, str]] = []

    async def reach(host: Any) -> None:
        raise Unreachable()

    async def main() -> bool:
        c = FakeCluster(["a"])
        r = WorkerRestarts(roster_of(c), limit=3, enabled=True, heartbeat_timeout=30, reach=reach,
                           lost_after=5.0, on_host_lost=lambda h, why: lost.append((h, why)))
        host = c.worker_spec["a"]["options"]["host"]
        r.unreachable_since[host.key] = time.monotonic() - 6.0  # unreachable for 6 s already
        found = await r._wait_reachable("a", "the SSH connection was lost")
        await r.close()
        return found

    assert asyncio.run(main()) is False
    assert [(h.hostname, why.split(" (")[0]) for h, why in lost] == [
        ("node2", "unreachable for 6 s")]


# -- the command line ----------------------------------------------------------------


def test_dry_run_shows_spares_and_hosts_left_for_later(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from sshdeploy import cli

    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("head\nw[1-2] slots=2\nw3 spare\n")
    result = CliRunner().invoke(cli.main, ["--dry-run", "--hostfile", str(hostfile),
                                           "--spare", "w[4-5]", "--initial-workers", "3"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    heads = [line for line in result.output.splitlines() if line.startswith("# ")
             and not line.startswith(("# settings", "#  "))]
    assert heads[0].split()[1:3] == ["head", "scheduler"]
    assert heads[1].split()[1:] == ["w1", "worker", "w1-0,", "w1-1"]
    assert heads[2].split()[1:4] == ["w2", "worker", "w2-0"]
    assert [h.split()[1:3] for h in heads[3:]] == [
        ["w3", "spare"], ["w4", "spare"], ["w5", "spare"]]
    assert "for the workers of a lost host" in heads[3]


def test_bad_initial_workers_on_the_command_line_is_a_usage_error() -> None:
    from click.testing import CliRunner

    from sshdeploy import cli

    result = CliRunner().invoke(cli.main, ["--dry-run", "--initial-workers", "5", "a", "b"])
    assert result.exit_code != 0
    assert "initial_workers" in result.output and "from 0 to 1" in result.output


def test_the_banner_lists_hosts_with_no_worker_yet() -> None:
    import io

    from sshdeploy.cli.console import make_console
    from sshdeploy.cli.report import print_banner

    buf = io.StringIO()
    print_banner(make_console(buf), scheduler_address="tcp://n1:8786", dashboard_link=None,
                 scheduler_host="n1", workers_by_host={"n2": ["n2-0"]},
                 later_hosts={"n3": "later", "n4": "spare"})
    lines = buf.getvalue().splitlines()
    assert lines[-2:] == ["  later      n3  (no worker yet; not connected to)",
                          "  spare      n4  (no worker yet; not connected to)"]


@pytest.mark.parametrize("hosts", [["s", "a", "b", "c"], ["s", "ann@a:2222", "b", "c"]])
def test_the_banner_never_lists_a_host_with_workers_as_one_without(hosts: list[str]) -> None:
    """The hosts with workers are keyed as written; the later ones must be compared (and
    shown) the same way, also when the pool adds a user and port (``--ssh-username``)."""
    import asyncio
    from types import SimpleNamespace

    from sshdeploy import SSHCluster
    from sshdeploy.cli.run import _later_hosts, _workers_by_host

    async def main() -> tuple[dict[str, list[str]], dict[str, str]]:
        cluster = SSHCluster(hosts, asynchronous=True, initial_workers=1, spares=["d"],
                             connect_options={"username": "root", "port": 22})
        first = next(iter(cluster.placement.worker_hosts.values())).host
        fake = SimpleNamespace(workers={"a-0": SimpleNamespace(host=first)},
                               placement=cluster.placement, pool=cluster.pool)
        by_host = _workers_by_host(fake)
        return by_host, _later_hosts(fake, by_host)

    by_host, later = asyncio.run(main())
    assert by_host == {hosts[1]: ["a-0"]}
    assert later == {"b": "later", "c": "later", "d": "spare"}
