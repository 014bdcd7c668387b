"""GPU hosts (issue 28) without a GPU: which GPUs a request gets, their workers, the start.

The placement rules (``sshdeploy.gpus``) against inventories as the probe
reports them (``tests/unit/test_gpu_probe.py`` tests the probe itself); the
plan and the dry run; the cluster's GPU step with the probe replaced by a
function; ``dask-ssh --check`` with the checks replaced.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import click
import pytest

from sshdeploy import SSHCluster
from sshdeploy.arguments import ClusterArgs
from sshdeploy.cli.options import GPUS
from sshdeploy.cluster import scaling
from sshdeploy.errors import ConfigError, GPUError, MultiHostError
from sshdeploy.gpus import (
    Gpu,
    GpuProcess,
    Inventory,
    choose,
    place_gpus,
    requests,
)
from sshdeploy.hostfile import parse_hostfile_text
from sshdeploy.hosts import Host
from sshdeploy.placement import next_worker, place
from sshdeploy.plan import plan_cluster

pytestmark = pytest.mark.timeout(60)

#: A pid no process has (above the kernel's default pid_max of 4194304).
GONE_PID = 4194999
MIB = 2**20


# --------------------------------------------------------------------------- the rules


def inventory(*gpus: Gpu, host: str = "root@n3:22", **kw: Any) -> Inventory:
    return Inventory(host, "nvml", tuple(gpus), uid=1000, cores=16, **kw)


T4 = 16 * 2**30
A, B, C, D = (Gpu(i, f"GPU-{c}{c}{c}", "Tesla T4", T4, MIB) for i, c in enumerate("abcd"))


@pytest.mark.parametrize(("visible", "shown", "note"), [
    (None, [0, 1, 2, 3], None),
    ("2,3", [2, 3], "shows 2 of its 4 GPUs"),
    ("GPU-ccc,GPU-a", [2, 0], "shows 2 of its 4 GPUs"),
    ("", [], "shows 0 of its 4 GPUs"),
    ("1,7,2", [1], "'7' is not a GPU found there; CUDA ignores it and what follows"),
    ("MIG-0f1e,1", [], "'MIG-0f1e' is a MIG instance, which sshdeploy does not place yet"),
    ("1,1", [1], "'1' is named twice"),
])
def test_a_preset_cuda_visible_devices_is_honoured_as_cuda_reads_it(
        visible: str | None, shown: list[int], note: str | None) -> None:
    gpus, notes = inventory(A, B, C, D, visible=visible).shown()
    assert [g.index for g in gpus] == shown
    if note is None:
        assert notes == []
    else:
        assert len(notes) == 1 and note in notes[0], notes


def test_auto_takes_every_gpu_shown_and_a_host_without_any_runs_its_workers() -> None:
    assert choose("auto", inventory(A, B, visible="1"), 0.1).chosen == (B,)
    bare = choose("auto", Inventory("root@n2:22", tried=("NVML: not found",)), 0.1,
                  required=False)
    assert (bare.chosen, bare.no_gpu) == ((), True)


def test_free_skips_other_users_processes_and_busy_memory_and_says_why() -> None:
    mine = Gpu(0, "GPU-a", "T4", T4, MIB, (GpuProcess(10, MIB, 1000, "me"),))
    theirs = Gpu(1, "GPU-b", "T4", T4, 2 * MIB, (GpuProcess(4242, MIB, 1001, "bob"),))
    hidden = Gpu(2, "GPU-c", "T4", T4, 2 * MIB, (GpuProcess(GONE_PID, None),))
    full = Gpu(3, "GPU-d", "T4", 100, 45)
    choice = choose("free", inventory(mine, theirs, hidden, full), 0.1)
    assert choice.chosen == (mine,)
    assert [(g.index, why) for g, why in choice.skipped] == [
        (1, "in use by pid 4242 (bob, 0.0 GiB)"),
        (2, f"in use by pid {GONE_PID} (a user not visible on the host)"),
        (3, "45% of its memory is used (above sshdeploy.gpu-busy-memory, 10%)")]
    assert choose("free", inventory(full), 0.5).chosen == (full,)
    said = choice.say("n3")
    assert said.startswith("root@n3:22: gpus=free: 4 GPUs (nvml) -> n3-gpu0; skipped gpu1 "
                           "(GPU-b): in use by pid 4242 (bob")
    taken = choose("free", inventory(theirs), 0.1, required=False)
    assert (taken.chosen, taken.no_gpu) == ((), False)  # a busy GPU host: no worker there
    with pytest.raises(GPUError, match=r"gpus=free found no free GPU: .*gpu1: in use by pid "
                                       r"4242 \(bob"):
        choose("free", inventory(theirs), 0.1, required=True)


@pytest.mark.parametrize(("ask", "chosen", "error"), [
    ("2", [0, 1], None),
    ("5", None, "asked for 5 GPUs, the host shows 4: found 4 GPUs (nvml): gpu0 GPU-aaa Tesla "
                "T4 16.0 GiB (0.0 GiB used), gpu1"),
    ("2,0", [2, 0], None),
    ("GPU-ddd,", [3], None),
    ("3,9", None, "GPU 9 is not on the host: found 4 GPUs (nvml)"),
])
def test_a_count_or_a_list_must_be_met_and_the_error_names_what_was_found(
        ask: str, chosen: list[int] | None, error: str | None) -> None:
    inv = inventory(A, B, C, D)
    if error is None:
        assert [g.index for g in choose(ask, inv, 0.1).chosen] == chosen
        return
    with pytest.raises(GPUError) as info:
        choose(ask, inv, 0.1, required=False)
    assert str(info.value).startswith(f"[root@n3:22] gpus: {error}"), info.value
    assert "dask-ssh --gpus auto --check HOST" in str(info.value)


def test_a_gpu_hidden_by_cuda_visible_devices_is_said_so() -> None:
    with pytest.raises(GPUError, match="GPU 0 is hidden by CUDA_VISIBLE_DEVICES there"):
        choose("0,", inventory(A, B, visible="1"), 0.1)


def test_gpu_devices_that_answer_nothing_are_a_warning_or_for_a_host_that_asked_an_error(
        ) -> None:
    inv = Inventory.from_json("root@n2:22", {"source": None, "gpus": [], "devices": 2, "tried": [
        "NVML: libnvidia-ml.so.1 not found", "nvidia-smi: not found on PATH"]})
    assert inv.warning() == ("2 /dev/nvidia* device(s) exist there but no GPU could be read "
                             "(NVML: libnvidia-ml.so.1 not found; nvidia-smi: not found on PATH)")
    choice = choose("auto", inv, 0.1, required=False)  # only a warning ...
    assert choice.no_gpu and choice.notes == (inv.warning(),)
    with pytest.raises(GPUError, match=r"\[root@n2:22\] gpus: gpus=auto found no GPU: found no "
                                       r"GPU .*; 2 /dev/nvidia\* device\(s\) exist there"):
        choose("auto", inv, 0.1, required=True)  # ... unless the host itself asked


def test_a_probe_that_did_not_run_fails_the_host() -> None:
    with pytest.raises(GPUError, match=r"\[root@n3:22\] gpus: could not look for GPUs: "
                                       r"python3 did not run"):
        choose("auto", Inventory("root@n3:22", error="python3 did not run the GPU probe"), 0.1)


def mixed(**options: Any) -> tuple[Any, dict[Any, Any]]:
    """node2 without GPU, node3 with 2 (GPU 1 busy), node4 with 4: probed, chosen."""
    p = place(["n1", "n2", "n3", "n4"], {"n_workers": 2, **options.pop("wopts", {})},
              gpus=options.pop("gpus", "auto"), cpu_workers=options.pop("cpu_workers", None),
              **options)
    busy = Gpu(1, "GPU-bbb", "Tesla T4", T4, 9 * 2**30, (GpuProcess(GONE_PID, 9 * 2**30),))
    invs = {"n2": Inventory("root@n2:22", tried=("NVML: not found", "nvidia-smi: not found")),
            "n3": inventory(A, busy, host="root@n3:22"),
            "n4": inventory(A, B, C, D, host="root@n4:22")}
    keys = {hp.host.hostname: k for k, hp in p.worker_hosts.items()}
    return p, {keys[h]: inv for h, inv in invs.items()}


def test_hosts_with_0_2_and_4_gpus_give_0_2_and_4_gpu_workers_pinned_by_uuid() -> None:
    p, invs = mixed()
    q = place_gpus(p, {k: choose("auto", inv, 0.1, False) for k, inv in invs.items()})
    assert [w.name for w in q.workers] == ["n2-0", "n2-1", "n3-gpu0", "n3-gpu1", "n4-gpu0",
                                           "n4-gpu1", "n4-gpu2", "n4-gpu3"]
    by_name = {w.name: w.kwargs for w in q.workers}
    assert by_name["n4-gpu2"] == {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": "GPU-ccc"},
                                  "resources": {"GPU": 1}, "dask_cuda": {"device_index": 2}}
    assert by_name["n2-0"] == {}  # a host without GPU: as without gpus=
    # the host's memory is divided among its workers: its slots are its GPU workers
    assert [hp.slots for hp in q.worker_hosts.values()] == [2, 2, 4]


def test_free_and_cpu_workers_on_the_cores_left_with_their_own_resources() -> None:
    p, invs = mixed(gpus="free", cpu_workers=2, wopts={"resources": {"SSD": 1}})
    q = place_gpus(p, {k: choose("free", inv, 0.1, False) for k, inv in invs.items()})
    assert [w.name for w in q.workers] == ["n2-0", "n2-1", "n3-gpu0", "n3-0", "n3-1",
                                           "n4-gpu0", "n4-gpu1", "n4-gpu2", "n4-gpu3", "n4-0",
                                           "n4-1"]
    by_name = {w.name: w.kwargs for w in q.workers}
    # 16 cores: n3's one GPU worker leaves 15 for 2 CPU-only workers, n4's four leave 12
    assert (by_name["n3-0"]["nthreads"], by_name["n4-1"]["nthreads"]) == (7, 6)
    assert by_name["n4-1"]["resources"] == {"SSD": 1, "CPU": 6}
    assert by_name["n4-1"]["env"] == {"CUDA_VISIBLE_DEVICES": ""}  # no GPU taken by chance
    assert by_name["n3-gpu0"]["resources"] == {"SSD": 1, "GPU": 1}


def test_given_nthreads_wins_over_the_gpu_workers_one() -> None:
    p, invs = mixed(wopts={"nthreads": 4})
    q = place_gpus(p, {k: choose("auto", inv, 0.1, False) for k, inv in invs.items()})
    assert {w.kwargs["nthreads"] for w in q.workers} == {4}


def test_initial_workers_are_applied_once_the_gpus_are_known() -> None:
    p, invs = mixed(initial_workers=5)
    assert len(p.workers) == 6 and p.initial_workers == 5  # put off
    q = place_gpus(p, {k: choose("auto", inv, 0.1, False) for k, inv in invs.items()})
    assert [w.name for w in q.workers] == ["n2-0", "n2-1", "n3-gpu0", "n3-gpu1", "n4-gpu0"]
    assert q.initial_workers is None


def test_auto_that_finds_no_gpu_anywhere_fails_naming_each_host() -> None:
    p, invs = mixed()
    bare = {k: choose("auto", Inventory(inv.host, tried=("nvidia-smi: not found on PATH",)),
                      0.1, False) for k, inv in invs.items()}
    with pytest.raises(MultiHostError) as info:
        place_gpus(p, bare)
    text = str(info.value)
    assert text.startswith("3 host(s) failed to find GPUs:")
    assert "[root@n3:22] gpus: gpus=auto found no GPU on any host: found no GPU (nvidia-smi: " \
           "not found on PATH)" in text


def test_scale_places_by_gpu_slots_and_says_the_arithmetic_beyond_them() -> None:
    p, invs = mixed()
    q = place_gpus(p, {k: choose("auto", inv, 0.1, False) for k, inv in invs.items()})
    running = [(w.host, w.name) for w in q.workers if w.name != "n4-gpu2"]
    assert next_worker(q, running)[1] == "n4-gpu2"  # the free GPU, by its name
    n4 = q.workers[-1].host
    assert scaling.slots(q) == 8
    said = scaling.over_slots(20, None, None, 20, scaling.slots(q), q)
    assert said == ("scale(20) asks for 20 workers, more than the 8 slots of the hosts (n2: 2, "
                    "n3: 2 GPUs, n4: 4 GPUs; one worker per GPU): starting 8 (a GPU host takes "
                    "no more workers than its GPUs and cpu_workers)")
    assert "n4: " not in scaling.gpu_slots(q, excluded=[n4.key])


def test_requests_are_per_host_and_a_hosts_own_is_required() -> None:
    hosts = parse_hostfile_text("head\nn2\nn3 gpus=free\nn4 gpus=0,2\nn5 spare gpus=auto\n")
    assert requests(hosts, "auto") == {
        (None, "n2", None): ("auto", False), (None, "n3", None): ("free", True),
        (None, "n4", None): ("0,2", True)}
    assert requests(hosts, None)[(None, "n3", None)] == ("free", True)


# --------------------------------------------------------------------------- the plan


def test_the_plan_starts_gpu_hosts_workers_with_spawn_and_the_dry_run_says_the_rule() -> None:
    plan = plan_cluster(ClusterArgs(["s", "a", Host("b", gpus="0,2")], gpus=None,
                                    cpu_workers=1))
    hp = {h.host.hostname: h for h in plan.placement.worker_hosts.values()}
    assert (plan.launch(hp["a"]).mp_method, plan.launch(hp["b"]).mp_method) == (None, "spawn")
    _, a, b = SSHCluster.remote_commands(["s", "a", Host("b", gpus="0,2")], cpu_workers=1)
    assert (a.names, a.gpus) == (["a-0"], "")
    assert b.names == ["b-gpu<index> per GPU"]
    assert b.gpus.startswith("gpus=0,2: one worker on each of GPUs 0,2 (b-gpu<index>), "
                             "CUDA_VISIBLE_DEVICES=its UUID, resources GPU=1, nthreads 1, "
                             "started with spawn; plus 1 CPU-only worker on")
    assert b.share == "memory_limit = the host's memory / its workers (GPU and CPU-only)"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"gpus": 0}, "gpus: 0 is not a GPU request: give 'auto'"),
    ({"gpus": "all"}, "gpus: 'all' is not a GPU request"),
    ({"cpu_workers": 2}, "cpu_workers: adds CPU-only workers beside the GPU workers"),
    ({"gpus": "auto", "worker_class": "distributed.Worker"},
     "worker_class: distributed.Worker runs in its host's agent process, so gpus= cannot pin"),
    ({"gpus": "auto", "worker_class": "dask_cuda.CUDAWorker"},
     "worker_class: dask_cuda.CUDAWorker starts its own worker per GPU"),
])
def test_what_cannot_work_is_refused_before_anything_starts(kwargs: dict[str, Any],
                                                            message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SSHCluster.remote_commands(["s", "a"], **kwargs)
    assert str(info.value).startswith(message), info.value


def test_the_hostfile_and_the_command_line_take_the_same_requests() -> None:
    (host,) = parse_hostfile_text("n3 gpus=FREE")
    assert host.gpus == "free" and Host("n3", gpus=2).gpus == "2"
    assert GPUS.convert("0, 2", None, None) == "0,2"
    with pytest.raises(click.BadParameter, match="is not a GPU request"):
        GPUS.convert("some", None, None)


# --------------------------------------------------------------------------- the start


def test_the_start_probes_the_gpu_hosts_and_wants_one_worker_per_gpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The cluster's GPU step (``cluster/gpustart.py``) with the probe replaced."""
    import asyncio

    from sshdeploy.cluster import gpustart
    from sshdeploy.cluster.roster import Roster

    _, invs = mixed(gpus="free")
    plan = plan_cluster(ClusterArgs(["n1", "n2", "n3", "n4"], worker_options={"n_workers": 2},
                                    gpus="free",
                                    min_workers=1))
    by_host = {inv.host.split("@")[1].split(":")[0]: inv for inv in invs.values()}
    seen: list[tuple[str, str | None]] = []

    async def probe_gpus(pool: Any, host: Host, python: str, setup: Any, login_shell: bool,
                         visible: str | None, timeout: float) -> Inventory:
        seen.append((host.hostname, visible))
        return by_host[host.hostname]

    monkeypatch.setattr(gpustart, "probe_gpus", probe_gpus)
    logs: list[str] = []
    monkeypatch.setattr("sshdeploy.compat.record_cluster_log",
                        lambda cluster, message: logs.append(message))
    cluster = SimpleNamespace(worker_spec={"old": {}}, workers={}, _created=set())
    roster = Roster(cluster, plan, lambda hp, kw: {"options": {"host": hp.host, "kwargs": kw,
                                                               "share": hp.slots}})

    async def start() -> None:
        step = gpustart.GpuStart(roster, pool=SimpleNamespace())
        step.begin()
        await step.placed()
        await step.placed()  # once

    asyncio.run(start())
    assert sorted(seen) == [("n2", None), ("n3", None), ("n4", None)]
    assert list(cluster.worker_spec) == ["n2-0", "n2-1", "n3-gpu0", "n4-gpu0", "n4-gpu1",
                                         "n4-gpu2", "n4-gpu3"]
    spec = cluster.worker_spec["n4-gpu3"]["options"]
    assert spec["kwargs"]["env"] == {"CUDA_VISIBLE_DEVICES": "GPU-ddd"} and spec["share"] == 4
    assert any(line.startswith("root@n3:22: gpus=free: 2 GPUs (nvml) -> n3-gpu0; skipped gpu1")
               for line in logs)


# --------------------------------------------------------------------------- dask-ssh


def test_the_dry_run_says_each_gpu_hosts_rule() -> None:
    from click.testing import CliRunner

    from sshdeploy.cli import main

    result = CliRunner().invoke(main, ["--dry-run", "--gpus", "free", "--cpu-workers", "1",
                                       "head", "gpu1"])
    assert result.exit_code == 0, result.output
    assert "# gpu1  worker  gpu1-gpu<index> per GPU" in result.output
    assert ("#   gpus:    gpus=free: one worker per GPU found there that nobody else uses "
            "(gpu1-gpu<index>)") in result.output
    bad = CliRunner().invoke(main, ["--dry-run", "--gpus", "all", "head", "gpu1"])
    assert bad.exit_code == 2 and "'all' is not a GPU request" in bad.output


def test_check_probes_the_hosts_asked_and_lists_their_gpus(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from sshdeploy import cli
    from sshdeploy.env import prestart

    _, invs = mixed()
    by_host = {inv.host.split("@")[1].split(":")[0]: inv for inv in invs.values()}
    asked: list[Any] = []

    def check_hosts(hosts: list[Host], connect_options: Any = None, remote_python: Any = None,
                    *, setup: Any = None, deep: bool = False, gpus: Any = None,
                    **gate: Any) -> list[Any]:
        asked.append(gpus)
        return [SimpleNamespace(
            host=f"root@{h.hostname}:22", reachable=True, authenticated=True, python="/py",
            versions={}, local_versions={}, error=None, ok=True,
            gpus=choose(gpus[h.key][0], by_host[h.hostname], 0.1, gpus[h.key][1])
            if gpus and h.key in gpus else None) for h in hosts]

    monkeypatch.setattr(cli, "check_hosts", check_hosts)
    monkeypatch.setattr(prestart, "check_gate", lambda *a, **kw: ([], {}))
    result = CliRunner().invoke(cli.main, ["--check", "--gpus", "free", "n1", "n2", "n3", "n4"])
    assert result.exit_code == 0, result.output
    assert asked == [{(None, h, None): ("free", False) for h in ("n2", "n3", "n4")}]
    lines = result.output.split("GPUs (gpus=free):\n", 1)[1].splitlines()
    assert lines[:4] == [
        "  root@n2:22  no GPU (NVML: not found; nvidia-smi: not found) -> its workers run "
        "without GPU",
        "  root@n3:22  2 GPUs (nvml) -> n3-gpu0",
        "    gpu0  GPU-aaa  Tesla T4  16.0 GiB, 0.0 GiB used",
        f"    gpu1  GPU-bbb  Tesla T4  16.0 GiB, 9.0 GiB used  skipped: in use by pid {GONE_PID} "
        "(a user not visible on the host, 9.0 GiB)"]
    assert lines[4] == "  root@n4:22  4 GPUs (nvml) -> n4-gpu0, n4-gpu1, n4-gpu2, n4-gpu3"
    # no GPU anywhere: the check fails (the start would)
    by_host = {h: Inventory(f"root@{h}:22", tried=("nvidia-smi: not found on PATH",))
               for h in by_host}
    none = CliRunner().invoke(cli.main, ["--check", "--gpus", "auto", "n1", "n2"])
    assert none.exit_code == 1
    assert "FAILED gpus=auto found no GPU on any host: the start would fail" in none.output
