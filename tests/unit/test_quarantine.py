"""A quarantine ends by itself, longer for a host quarantined again right after, and the
workers missing for want of a slot are placed again (issue 26, finding 10).

No network and no sleeps: the fleet gets a fake clock and a fake timer, and the test
moves the time and fires what is due.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from distributed.core import Status

from sshdeploy import SSHCluster
from sshdeploy.arguments import ClusterArgs
from sshdeploy.cluster.fleet import Fleet
from sshdeploy.cluster.health import (
    LOST,
    MAX_QUARANTINE_WINDOWS,
    QUARANTINED,
    HostHealth,
    death_kind,
)
from sshdeploy.cluster.processes import WorkerAgents
from sshdeploy.cluster.roster import Roster
from sshdeploy.env.prestart import PreStart
from sshdeploy.hosts import Host
from sshdeploy.logs import LogBook
from sshdeploy.plan import plan_cluster
from sshdeploy.ssh.pool import HostPool

from .test_roster import FakeCluster, FakeProcess

pytestmark = pytest.mark.timeout(30)

WINDOW = 60.0
#: How the agent says a Nanny gave up (built by the agent itself in `nanny_gave_up`).
LOOP = "it died in a loop: its worker process died 2 times within 60 s (last exit code 1)"


class Timer:
    """A handle of :class:`Clock`: fires at *when* unless cancelled."""

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    """The fleet's clock and timer: time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[Timer] = []

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def pending(self) -> list[float]:
        """When each timer still to fire fires, from now."""
        return sorted(t.when - self.now for t in self.timers if not t.cancelled)

    def to(self, now: float) -> None:
        """Move the time to *now*, firing every timer due by then, in order."""
        while due := sorted((t for t in self.timers if not t.cancelled and t.when <= now),
                            key=lambda t: t.when):
            self.now = due[0].when
            self.timers.remove(due[0])
            due[0].callback()
        self.now = now


class Proc(FakeProcess):
    address = ""  # not registered with a scheduler (none is told of its loss)


class Bench:
    """A fleet over s (scheduler), a and b (1 slot each, both running; or *hosts*), with a
    fake clock."""

    def __init__(self, hosts: list[str] | None = None, **kwargs: Any) -> None:
        plan = plan_cluster(ClusterArgs(hosts or ["s", "a", "b"], **kwargs))
        self.plan = plan
        self.cluster = FakeCluster()
        self.roster = Roster(self.cluster, plan,  # type: ignore[arg-type]
                             lambda hp, kw: {"options": {"host": hp.host}})
        for w in plan.placement.workers:
            self.roster.want(w.name, self.roster.spec_for(w.host))
            self.cluster.workers[w.name] = Proc()
        self.clock = Clock()
        self.forgotten: list[str] = []
        pool = HostPool(settings=plan.settings)
        assert plan.stage is not None
        self.fleet = Fleet(self.roster, pool, WorkerAgents(pool, {}, LogBook()),
                           PreStart(plan.stage, pool, []), list(plan.placement.initial_hosts()),
                           self.forgotten.append, clock=self.clock,
                           call_later=self.clock.call_later)

    def host(self, name: str) -> Host:
        return next(hp.host for hp in self.plan.placement.worker_hosts.values()
                    if hp.host.hostname == name)

    def kill(self, worker: str, why: str = LOOP) -> None:
        """*worker* died past its budget: given up (dropped, as WorkerRestarts does), reported."""
        host = self.roster.host_of(worker)
        self.roster.drop(worker)
        self.fleet.worker_given_up(worker, host, why)

    def log(self) -> list[str]:
        return self.cluster.log()

    async def settle(self) -> None:
        """Wait for what the fleet started in the background (moves, starts, stops)."""
        await asyncio.gather(*self.fleet._tasks)


def test_a_quarantine_ends_after_the_window_and_the_missing_workers_are_placed_again() -> None:
    async def main() -> None:
        b = Bench(["s", "a"])
        b.kill("a-0")
        assert list(b.roster) == [] and b.fleet.missing == 1  # no other host to move to
        assert b.clock.pending() == [WINDOW]
        out = next(line for line in b.log() if line.startswith("host a quarantined"))
        assert "host a quarantined (worker a-0: it died in a loop" in out
        assert "no free slot or spare for 1 of its workers" in out
        assert out.endswith("It is readmitted in 60 s; cluster.readmit() readmits it now.")
        assert "unless readmitted" not in out
        assert not [line for line in b.log() if line.startswith("every host's")]  # one host
        await b.settle()
        b.clock.to(WINDOW - 1)
        assert b.fleet.health.excluded() and list(b.roster) == []
        corrected = b.cluster.corrected
        b.clock.to(WINDOW)
        assert not b.fleet.health.excluded()
        assert list(b.roster) == ["a-0"] and b.fleet.missing == 0
        assert b.log()[-1] == ("host a readmitted after 60 s of quarantine: "
                               "1 worker(s) placed again (a-0)")
        assert "a-0" in b.forgotten  # what was given up on it is history
        await b.settle()
        assert b.cluster.corrected == corrected + 1  # the worker placed again is started
        assert b.clock.pending() == []
    asyncio.run(main())


def test_the_workers_moved_elsewhere_are_not_placed_again() -> None:
    async def main() -> None:
        b = Bench()
        b.kill("a-0")  # moves to b
        assert sorted(b.roster) == ["b-0", "b-1"] and b.fleet.missing == 0
        b.clock.to(WINDOW)
        assert sorted(b.roster) == ["b-0", "b-1"]  # the count it wants, never more
        assert b.log()[-1] == "host a readmitted after 60 s of quarantine: 0 worker(s) placed again"
        await b.settle()
    asyncio.run(main())


def test_the_user_scaling_meanwhile_sets_the_count_readmission_returns_to() -> None:
    async def main() -> None:
        b = Bench(["s", "a"])
        b.kill("a-0")
        assert b.fleet.missing == 1
        assert b.fleet.room_for(0, str) == 0  # scale(0) while a is out
        b.clock.to(WINDOW)
        assert list(b.roster) == [] and b.fleet.missing == 0
        await b.settle()
    asyncio.run(main())


def test_a_host_quarantined_again_right_after_waits_twice_as_long_up_to_a_bound() -> None:
    async def main() -> None:
        b = Bench(["s", "a"])
        lengths = []
        for _ in range(7):
            b.kill("a-0")  # dies again 5 s after each readmission
            lengths.append(b.clock.pending()[0])
            b.clock.to(b.clock.now + lengths[-1])
            assert "a-0" in b.roster
            b.clock.to(b.clock.now + 5)
        cap = MAX_QUARANTINE_WINDOWS * WINDOW
        assert lengths == [60, 120, 240, 480, 960, cap, cap]
        assert "quarantined again right after its readmission: longer each time, up to " \
               f"{cap:.0f} s" in "\n".join(b.log())
        # a host that ran for longer than its last quarantine starts again at one window
        b.clock.to(b.clock.now + cap)
        b.kill("a-0")
        assert b.clock.pending() == [WINDOW]
        await b.settle()
    asyncio.run(main())


def test_readmit_by_hand_ends_a_quarantine_at_once_and_its_timer() -> None:
    async def main() -> None:
        b = Bench(["s", "a"])
        b.kill("a-0")
        b.clock.to(10)
        assert b.fleet.readmit("a") is True
        assert b.clock.pending() == [] and "a-0" in b.roster
        assert b.log()[-1] == ("host a readmitted (cluster.readmit) after 10 s of quarantine: "
                               "1 worker(s) placed again (a-0)")
        assert b.fleet.readmit("a") is False  # not out any more
        b.clock.to(WINDOW)  # the cancelled timer does nothing
        assert b.log()[-1].startswith("host a readmitted (cluster.readmit)")
        await b.settle()
    asyncio.run(main())


def test_a_lost_host_has_no_end_of_its_own() -> None:
    async def main() -> None:
        b = Bench(["s", "a"])
        b.fleet.host_lost(b.host("a"), "unreachable for 120 s")
        assert b.clock.pending() == []
        assert b.log()[-1].endswith("It gets no worker again unless readmitted (cluster.readmit).")
        assert b.fleet.readmit("a") and "a-0" in b.roster
        assert "after 0 s out (lost): 1 worker(s) placed again" in b.log()[-1]
        await b.settle()
    asyncio.run(main())


def test_every_host_quarantined_alike_is_said_to_be_the_workloads_doing() -> None:
    async def main() -> None:
        b = Bench()
        b.kill("a-0")  # moves to b
        b.clock.to(0.4)
        b.kill("b-0", LOOP.replace("2 times", "3 times"))  # the same kind, counts aside
        said = [line for line in b.log() if line.startswith("every host's")]
        assert said == [
            "every host's workers died past their restart budget the same way (it died in a "
            "loop: its worker process died 3 times within 60 s (last exit code 1)): the tasks "
            "may be killing their workers (os._exit, segfaults); the hosts are readmitted in "
            "60 s"]
        assert list(b.roster) == [] and b.fleet.missing == 2
        b.clock.to(WINDOW)  # a back: its one free slot is filled, the other waits for b
        assert list(b.roster) == ["a-0"] and b.fleet.missing == 1
        b.clock.to(WINDOW + 0.4)  # both back, the cluster at its count again
        assert sorted(b.roster) == ["a-0", "b-0"] and b.fleet.missing == 0
        await b.settle()
    asyncio.run(main())


@pytest.mark.parametrize("second", ["segfault", "lost"])
def test_hosts_out_for_different_reasons_are_not_blamed_on_the_workload(second: str) -> None:
    async def main() -> None:
        b = Bench()
        b.kill("a-0")
        if second == "segfault":
            b.kill("b-0", LOOP.replace("exit code 1", "exit code -11"))
        else:
            b.fleet.host_lost(b.host("b"), "unreachable for 120 s")
        assert not [line for line in b.log() if line.startswith("every host's")]
        await b.settle()
    asyncio.run(main())


def test_death_kinds_keep_the_exit_code_and_drop_the_counts() -> None:
    assert death_kind(LOOP) == death_kind(LOOP.replace("2 times within 60", "7 times within 9"))
    assert death_kind(LOOP) == death_kind(LOOP.replace("code 1", "code 1; memory limit 900 MiB"))
    assert death_kind(LOOP) != death_kind(LOOP.replace("exit code 1", "exit code -11"))


def test_a_scale_while_hosts_are_out_counts_the_workers_they_will_take() -> None:
    async def main() -> None:
        b = Bench()
        b.kill("a-0")
        said: list[int] = []

        def over(slots: int) -> str:
            said.append(slots)
            return f"more than the {slots} slots"

        # 5 asked for: 2 slots in all, 1 of them on the host out
        assert b.fleet.room_for(5, over) == 1
        assert b.fleet.missing == 1 and said == [2]
        assert b.log()[-2:] == ["more than the 2 slots", "1 worker(s) start now, 1 more once "
                                "a quarantined or lost host is readmitted (it holds their slots)"]
        assert b.fleet.room_for(5, over) == 1
        assert said == [2] and len(b.log()) == 3  # said once per request: adapt asks often
        assert b.fleet.room_for(1, over) == 1 and b.fleet.missing == 0
        await b.settle()
    asyncio.run(main())


def test_hosts_without_slots_take_any_number_but_not_while_every_one_is_out() -> None:
    async def main() -> None:
        b = Bench(worker_options={"n_workers": 0})
        assert b.fleet.room_for(5, str) == 5 and b.fleet.missing == 0
        assert b.log() == []  # no slots given: no cap, nothing to say
        for name in ("a", "b"):
            b.fleet.take_out(b.host(name), QUARANTINED, "died")
        assert b.fleet.room_for(3, str) == 0 and b.fleet.missing == 3
        b.clock.to(WINDOW)  # both back: the three are placed again
        assert len(b.roster) == 3 and b.fleet.missing == 0
        await b.settle()
    asyncio.run(main())


def test_scale_with_every_host_quarantined_returns_and_waits_for_them(
        caplog: pytest.LogCaptureFixture) -> None:
    """SpecCluster.scale would loop for ever asking for a worker no host can take."""
    async def main() -> tuple[int, int]:
        cluster = SSHCluster(["s", "a", "b"], asynchronous=True)

        async def nothing() -> None:
            return None

        cluster._correct_state = nothing  # type: ignore[method-assign]
        try:
            for hp in cluster.placement.worker_hosts.values():
                cluster._fleet.health.take_out(hp.host.key, QUARANTINED, "died")
            cluster.scale(2)
            return len(cluster.worker_spec), cluster._fleet.missing
        finally:
            await cluster.close()  # type: ignore[misc]

    with caplog.at_level(logging.WARNING, logger="sshdeploy.cluster"):
        assert asyncio.run(main()) == (0, 2)
    assert "0 worker(s) start now, 2 more once a quarantined or lost host is readmitted" \
        in caplog.text


def test_a_worker_whose_start_the_take_out_cancelled_is_forgotten_not_reported() -> None:
    async def main() -> None:
        b = Bench()
        assert not b.fleet.move_on("a-0", b.host("a"), RuntimeError("x"))  # reported as ever
        b.kill("a-0")  # moves to b-1, which starts...
        assert "b-1" in b.roster
        b.kill("b-0")  # ...when b is taken out too: its start is cancelled
        b.cluster.workers["b-1"] = Proc()  # SpecCluster tracks it again once its start ends
        assert b.fleet.move_on("b-1", b.host("b"), RuntimeError("CancelledError"))
        assert "b-1" not in b.cluster.workers
        await b.settle()
    asyncio.run(main())


def test_closing_cancels_the_ends_and_an_end_while_closing_does_nothing() -> None:
    async def main() -> None:
        b = Bench(["s", "a"])
        b.kill("a-0")
        [timer] = b.clock.timers
        await b.fleet.close()
        assert timer.cancelled
        b = Bench(["s", "a"])
        b.kill("a-0")
        b.cluster.status = Status.closing
        b.clock.to(WINDOW)
        assert b.fleet.health.excluded() and list(b.roster) == []  # no readmission
        await b.fleet.close()
    asyncio.run(main())


def test_a_host_removed_while_quarantined_leaves_no_timer() -> None:
    async def main() -> None:
        b = Bench()
        b.kill("a-0")
        await b.settle()
        await b.fleet._drop_hosts([b.host("a").key])
        assert b.clock.pending() == [] and not b.fleet.health.excluded()
        assert b.fleet.health.last == {}
    asyncio.run(main())


def test_health_records_each_quarantines_length_only() -> None:
    h = HostHealth(window=10)
    key = ("u", "n2", 22)
    h.take_out(key, LOST, "unreachable", now=0)
    h.readmit(key, now=5)
    assert h.last == {}  # a lost host has no quarantine to back off from
    h.take_out(key, QUARANTINED, "died", now=6)
    assert h.quarantine_length(key, 6) == 10 and h.ends() == 16


def test_readmit_from_the_users_thread_places_the_workers_in_the_clusters_loop() -> None:
    """A sync cluster's ``readmit`` runs in the user's thread, with no event loop there."""
    import threading

    async def main() -> None:
        b = Bench(["s", "a"])
        b.kill("a-0")
        b.clock.to(10)
        answer: list[bool] = []
        thread = threading.Thread(target=lambda: answer.append(b.fleet.readmit("a")))
        thread.start()
        while thread.is_alive():  # the loop stays free for what the thread hands it
            await asyncio.sleep(0.01)
        assert answer == [True] and "a-0" in b.roster
        await b.settle()
    asyncio.run(main())
