#!/usr/bin/env python
"""Start-up, close and memory: sshdeploy.SSHCluster vs distributed's SSHCluster, same hosts.

Brings up its own test bed (``bench``: HOSTS + 1 hosts, the first runs the
scheduler), then for every repeat measures, in alternating order, each of

sshdeploy
    ``sshdeploy.SSHCluster(hosts, connect_options, worker_options={"n_workers": k})``
distributed
    ``distributed.deploy.ssh.SSHCluster`` with the same arguments
local-forkserver, local-spawn
    the machine's floor: ``LocalCluster(n_workers=HOSTS*k, processes=True)``
    with ``distributed.worker.multiprocessing-method`` forkserver / spawn

Every measurement runs in a fresh Python process (so controller memory is a
clean delta and nothing leaks from one run into the next); this process only
orchestrates, checks the bed between runs and kills whatever a run left.

Usage::

    python benchmarks/bench_startup.py [--hosts 4] [--workers-per-host 2] [--repeat 3]
                                       [--only sshdeploy,distributed] [--source PATH]
                                       [--stages-md out.md] [--json out.json]

``--source PATH`` measures the sshdeploy of another checkout (a ``git worktree``
of an older commit, say) with these scripts: the phase hooks below find the
modules in either layout (``sshdeploy/ssh/pool.py`` today,
``sshdeploy/pool.py`` before the ssh/ and cluster/ folders).

Stage breakdown (issue 29): besides the start-up time, every sshdeploy run
records when each stage of the start began and ended, measured from the
constructor call: ``connect`` (the SSH connection of each host), the agent's
``session`` (from asking for it to the login shell's first word), ``login ->
python`` (the shell, the setup, the interpreter's start), ``python -> import``
(reading the agent; with the gate, describing the host), ``imports`` (dask and
distributed), ``gate`` (the version gate, and how long the scheduler waited
for it after its hello), ``scheduler`` (creating it in its agent), ``worker``
(each worker's start), ``all workers registered``. The table prints after the
summary (``--stages-md`` writes it as markdown for benchmarks/README.md). For
the ratio of issue 29 run it with ``--only sshdeploy,distributed`` at
``--hosts 1 --workers-per-host 1`` and ``--hosts 8 --workers-per-host 4``, for
this checkout and with ``--source`` for the commit before the gate.

Needs root (the bed is network namespaces). Only reports; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
if "--source" in sys.argv[:-1]:  # before _source picks the code to measure
    _given = Path(sys.argv[sys.argv.index("--source") + 1]).resolve()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(_given), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])])
import _source  # noqa: E402,F401  (before anything imports sshdeploy)

BED_NAME = "bench"
IMPLS = ("sshdeploy", "distributed", "local-forkserver", "local-spawn")
SSH_IMPLS = ("sshdeploy", "distributed")


# --------------------------------------------------------------------------- one run (child)


def _controller_conns(addresses: set[str]) -> int:
    import psutil

    n = 0
    for c in psutil.Process().net_connections(kind="tcp"):
        if c.raddr and c.raddr.port == 22 and c.raddr.ip in addresses and c.status == "ESTABLISHED":
            n += 1
    return n


_EVENTS: list[tuple[str, float, float]] = []


def _instrument(impl: str) -> None:
    """Wrap a few async methods to time the phases (benchmark-side only, no behaviour change)."""
    import functools

    def wrap(cls: Any, meth: str, label: Any) -> None:
        orig = getattr(cls, meth, None) if cls is not None else None
        if orig is None:  # renamed since: that phase is not timed
            return

        @functools.wraps(orig)
        async def timed(self: Any, *a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return await orig(self, *a, **kw)
            finally:
                _EVENTS.append((label(self, *a), t, time.perf_counter()))

        setattr(cls, meth, timed)

    if impl == "sshdeploy":
        pool = _first_module("sshdeploy.ssh.pool", "sshdeploy.pool")
        channel = _first_module("sshdeploy.ssh.channel", "sshdeploy.channel", "sshdeploy.remote")
        procs = _first_module("sshdeploy.cluster.processes", "sshdeploy.processes",
                              "sshdeploy.remote")
        core = _first_module("sshdeploy.cluster.core", "sshdeploy.cluster")
        stage = _first_module("sshdeploy.env.prestart", "sshdeploy.env.stage")
        agent = getattr(channel, "AgentChannel", None)
        wrap(getattr(pool, "HostPool", None), "_open", lambda s, h: "connect|" + h.hostname)
        wrap(agent, "start", lambda s, t: f"agent start to hello {s.role}|{s.host.hostname}")
        _instrument_stages(agent)
        prestart = getattr(stage, "PreStart", None)
        wrap(prestart, "gate_agents", lambda s: "gate (on the agents' words)")
        wrap(prestart, "run", lambda s: "gate (stage run)")
        wrap(prestart, "_probe", lambda s, h, py: f"gate probe (a remote Python)|{h.hostname}")
        wrap(getattr(procs, "RemoteWorker", None), "_start",
             lambda s: f"worker ready|{s.name}")
        wrap(getattr(procs, "RemoteWorker", None), "close", lambda s: f"close worker|{s.name}")
        wrap(agent, "shutdown", lambda s, t: f"close agent {s.role}|{s.host.hostname}")
        wrap(getattr(procs, "WorkerAgents", None), "close", lambda s: "close all worker agents")
        wrap(getattr(procs, "RemoteScheduler", None), "close", lambda s: "close scheduler")
        wrap(getattr(pool, "HostPool", None), "close", lambda s: "close connections")
        wrap(getattr(core, "SSHCluster", None), "_close", lambda s: "close total")
    elif impl == "distributed":
        from distributed.deploy import ssh

        wrap(getattr(ssh, "Scheduler", None), "start", lambda s: "scheduler ready")
        wrap(getattr(ssh, "Worker", None), "start", lambda s: f"worker-host ready|{s.address}")
        wrap(getattr(ssh, "Worker", None), "close", lambda s: f"close worker-host|{s.address}")
        wrap(getattr(ssh, "Scheduler", None), "close", lambda s: "close scheduler")


def _first_module(*names: str) -> Any:
    """The first of *names* that imports (the layout of the measured checkout), else None."""
    import importlib

    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _instrument_stages(agent: Any) -> None:
    """Time an agent's start by its own events: session, login, python, import, hello.

    The events each agent sends (``stage`` and ``hello``) are handled by
    ``AgentChannel._dispatch``; their arrival times give the stages of its
    start, and ``call`` the scheduler's and each worker's creation.
    """
    import functools

    if agent is None or not hasattr(agent, "_dispatch"):
        return
    seen: dict[int, dict[str, float]] = {}
    orig_dispatch, orig_start, orig_call = agent._dispatch, agent.start, agent.call

    @functools.wraps(orig_dispatch)
    def dispatch(self: Any, ev: dict[str, Any]) -> Any:
        kind = ev.get("stage") if ev.get("ev") == "stage" else ev.get("ev")
        if kind in ("login", "setup", "python", "import", "hello", "described"):
            times = seen.setdefault(id(self), {})
            times.setdefault(str(kind), time.perf_counter())
            who = f"{self.role}|{self.host.hostname}"
            steps = (("asked", "login", "agent session opened"),
                     ("login", "python", "agent login -> python"),
                     ("python", "import", "agent python -> import (reads the agent, describes)"),
                     ("import", "hello", "agent imports dask, distributed"))
            for a, b, label in steps:
                if kind == b and a in times:
                    _EVENTS.append((f"{label} ({self.role})|{who}", times[a], times[b]))
        return orig_dispatch(self, ev)

    @functools.wraps(orig_start)
    async def start(self: Any, *a: Any, **kw: Any) -> Any:
        seen.setdefault(id(self), {})["asked"] = time.perf_counter()
        return await orig_start(self, *a, **kw)

    @functools.wraps(orig_call)
    async def call(self: Any, cmd: str, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        hello = seen.get(id(self), {}).get("hello")
        if cmd == "start_scheduler" and hello is not None:
            _EVENTS.append(("scheduler waits after its hello (gate)", hello, t))
        try:
            return await orig_call(self, cmd, *a, **kw)
        finally:
            if cmd in ("start_scheduler", "start_worker"):
                label = "scheduler created" if cmd == "start_scheduler" else "worker started"
                _EVENTS.append((f"{label}|{a[0] if a else ''}", t, time.perf_counter()))

    agent._dispatch, agent.start, agent.call = dispatch, start, call


def _phases(t0: float, t1: float | None) -> dict[str, Any]:
    """Summarize the events: start-up ones relative to t0, close ones relative to t1."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for label, a, b in _EVENTS:
        closing = label.startswith("close")
        base = t1 if closing and t1 is not None else t0
        key = label.split("|", 1)[0]
        groups.setdefault(key, []).append((a - base, b - base))
    return {k: {"n": len(v), "first_start": min(x[0] for x in v),
                "last_end": max(x[1] for x in v),
                "max_duration": max(x[1] - x[0] for x in v)}
            for k, v in sorted(groups.items(), key=lambda kv: min(x[0] for x in kv[1]))}


def run_one(impl: str, hosts: int, wph: int, ready_deadline: float, close_deadline: float) -> dict:
    """Start, sample, close and watch one cluster; return the measurements."""
    # Import everything first: the controller memory delta is the cluster's, not the imports'.
    import _bedprobe
    import dask
    import distributed
    import psutil
    from distributed import Client, LocalCluster
    from distributed.deploy.ssh import SSHCluster as DistSSHCluster

    import sshdeploy
    from sshdeploy import testbed
    from sshdeploy.ssh.sshlib import asyncssh  # noqa: F401

    me = psutil.Process()
    n = hosts * wph
    out: dict[str, Any] = {"impl": impl, "workers": n, "ok": False}
    bed = testbed.status(BED_NAME)
    if impl in SSH_IMPLS:
        assert bed is not None, "bench bed is not up"
        names = [h.name for h in bed.hosts[: hosts + 1]]
        addresses = {h.address for h in bed.hosts}
    import gc

    _instrument(impl)
    gc.collect()
    rss0 = me.memory_info().rss
    cpu0 = sum(me.cpu_times()[:2])
    cluster = None
    t0 = time.perf_counter()
    try:
        if impl == "sshdeploy":
            cluster = sshdeploy.SSHCluster(
                names, connect_options=bed.connect_options(), worker_options={"n_workers": wph}
            )
        elif impl == "distributed":
            cluster = DistSSHCluster(
                names, connect_options=bed.connect_options(), worker_options={"n_workers": wph}
            )
        else:
            method = impl.split("-", 1)[1]
            dask.config.set({"distributed.worker.multiprocessing-method": method})
            cluster = LocalCluster(
                n_workers=n,
                processes=True,
                threads_per_worker=os.cpu_count() or 1,  # as a Nanny's default nthreads
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
            )
        out["ctor_s"] = time.perf_counter() - t0
        if not _bedprobe.wait_workers(cluster, n, ready_deadline):
            out["error"] = (
                f"only {len(cluster.scheduler_info.get('workers', {}))} of {n} workers "
                f"registered within {ready_deadline:.0f} s"
            )
        else:
            out["startup_s"] = time.perf_counter() - t0
            out["controller_cpu_s"] = sum(me.cpu_times()[:2]) - cpu0
            _EVENTS.append(("all workers registered", t0, t0 + out["startup_s"]))
    except Exception as exc:  # record, don't crash the whole run (e.g. MaxStartups)
        out["startup_failed_after_s"] = time.perf_counter() - t0
        out["error"] = f"{type(exc).__name__}: {exc}"[:2000]

    # -- while running: memory and connections
    time.sleep(0.5)  # let things settle equally for all
    out["controller_rss_delta_mib"] = (me.memory_info().rss - rss0) / 2**20
    out["controller_threads"] = me.num_threads()
    if impl in SSH_IMPLS:
        snap = _bedprobe.snapshot(bed)
        remote = snap.remote()
        out["remote_processes"] = len(remote)
        out["remote_mem"] = _bedprobe.memory(p.pid for p in remote)
        out["sshd_mem"] = _bedprobe.memory(p.pid for p in snap.sessions())
        conns = snap.connections()
        out["conns_per_host"] = conns
        out["conns_total"] = sum(conns.values())
        out["controller_tcp_to_22"] = _controller_conns(addresses)
    else:
        kids = me.children(recursive=True)
        out["remote_processes"] = len(kids)
        out["remote_mem"] = _bedprobe.memory(k.pid for k in kids)
    if cluster is not None and "startup_s" in out:
        try:
            with Client(cluster, timeout=30) as client:
                out["sanity"] = client.submit(sum, [1, 2]).result(timeout=30) == 3
        except Exception as exc:
            out["sanity"] = f"{type(exc).__name__}: {exc}"

    # -- close
    t1 = None
    if cluster is not None:
        t1 = time.perf_counter()
        try:
            cluster.close(timeout=60)
        except Exception as exc:
            out["close_error"] = f"{type(exc).__name__}: {exc}"[:500]
        out["close_call_s"] = time.perf_counter() - t1
        if impl in SSH_IMPLS:
            gone, sessions_gone, snap = _bedprobe.wait_gone(bed, close_deadline)
            out["close_gone_s"] = None if gone is None else out["close_call_s"] + gone
            out["close_sessions_gone_s"] = (
                None if sessions_gone is None else out["close_call_s"] + sessions_gone
            )
            out["left_after_close"] = [
                {"host": p.host, "pid": p.pid, "cmd": p.cmd[:160]} for p in snap.remote()
            ]
        else:
            # multiprocessing's forkserver and resource tracker live as long as the
            # controller (by design); what must go are the workers.
            def workers_left() -> list[Any]:
                helpers = set()
                for c in me.children():
                    with contextlib.suppress(psutil.Error):
                        cmd = " ".join(c.cmdline())
                        if "forkserver import main" in cmd or "resource_tracker" in cmd:
                            helpers.add(c.pid)
                return [k for k in me.children(recursive=True) if k.pid not in helpers]

            end = time.perf_counter() + close_deadline
            while workers_left() and time.perf_counter() < end:
                time.sleep(0.005)
            left = workers_left()
            out["close_gone_s"] = None if left else time.perf_counter() - t1
            out["left_after_close"] = [{"pid": k.pid} for k in left]
    out["phases"] = _phases(t0, t1)
    out["ok"] = "startup_s" in out and "close_error" not in out
    out["versions"] = {"distributed": distributed.__version__, "sshdeploy": sshdeploy.__version__}
    return out


# --------------------------------------------------------------------------- orchestration


def _spawn(impl: str, args: argparse.Namespace, logdir: Path, tag: str) -> dict:
    """Run one measurement in a fresh interpreter; kill it if it hangs."""
    result = logdir / f"{tag}.json"
    log = logdir / f"{tag}.log"
    cmd = [
        sys.executable, __file__, "--child", impl, "--hosts", str(args.hosts),
        "--workers-per-host", str(args.workers_per_host), "--result", str(result),
        "--close-deadline", str(args.close_deadline), "--bed", args.bed,
    ]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                timeout=args.run_timeout).returncode
        except subprocess.TimeoutExpired:
            rc = None
    try:
        data = json.loads(result.read_text())
    except (OSError, ValueError):
        tail = log.read_text()[-1500:] if log.exists() else ""
        data = {"impl": impl, "ok": False,
                "error": f"run {'timed out' if rc is None else f'exited {rc}'}: {tail}"}
    data["wall_s"] = time.perf_counter() - t0
    data["log"] = str(log)
    return data


def _orders(repeat: int) -> list[tuple[str, ...]]:
    base = IMPLS
    return [base if r % 2 == 0 else tuple(reversed(base)) for r in range(repeat)]


METRICS = [
    # key, label, unit, lower-is-better
    ("startup_s", "start-up (ctor -> all workers registered)", "s"),
    ("ctor_s", "  of which constructor returned", "s"),
    ("close_call_s", "close() call returned", "s"),
    ("close_gone_s", "close() -> no remote process left", "s"),
    ("controller_rss_delta_mib", "controller RSS delta while running", "MiB"),
    ("remote_rss_mib", "remote/worker processes RSS (sum)", "MiB"),
    ("remote_pss_mib", "remote/worker processes PSS (sum)", "MiB"),
    ("remote_processes", "remote/worker processes (count)", ""),
    ("sshd_rss_mib", "sshd session processes RSS (sum)", "MiB"),
    ("conns_total", "SSH connections (all hosts)", ""),
    ("conns_max_per_host", "SSH connections (max per host)", ""),
    ("controller_threads", "controller threads", ""),
    ("controller_cpu_s", "controller CPU during start-up", "s"),
    ("remote_cpu_s", "remote/worker processes CPU until running", "s"),
]


def _flatten(r: dict) -> dict:
    f = dict(r)
    if "remote_mem" in r:
        f["remote_rss_mib"] = r["remote_mem"]["rss_mib"]
        f["remote_pss_mib"] = r["remote_mem"]["pss_mib"]
        f["remote_cpu_s"] = r["remote_mem"].get("cpu_s")
    if "sshd_mem" in r:
        f["sshd_rss_mib"] = r["sshd_mem"]["rss_mib"]
    if "conns_per_host" in r:
        f["conns_max_per_host"] = max(r["conns_per_host"].values() or [0])
    return f


def summarize(runs: list[dict]) -> dict:
    """Median and min of every metric per implementation, and the ratios."""
    summary: dict[str, Any] = {}
    for impl in IMPLS:
        rs = [_flatten(r) for r in runs if r.get("impl") == impl]
        s: dict[str, Any] = {"runs": len(rs), "failed": sum(not r.get("ok") for r in rs)}
        for key, _label, _unit in METRICS:
            vals = [r[key] for r in rs if r.get(key) is not None and r.get("ok")]
            if vals:
                s[key] = {"median": statistics.median(vals), "min": min(vals), "n": len(vals)}
        s["not_gone_after_close"] = sum(
            1 for r in rs if r.get("ok") and r.get("close_gone_s") is None
        )
        s["errors"] = sorted({str(r.get("error") or r.get("close_error"))[:300]
                              for r in rs if not r.get("ok")})
        summary[impl] = s
    ratios: dict[str, Any] = {}
    for key, _label, _unit in METRICS:
        a = summary["sshdeploy"].get(key)
        for other in ("distributed", "local-forkserver", "local-spawn"):
            b = summary[other].get(key)
            if a and b and a["median"]:
                ratios.setdefault(key, {})[f"{other}/sshdeploy"] = b["median"] / a["median"]
    summary["ratios"] = ratios
    return summary


def _fmt(v: dict | None, unit: str) -> str:
    if not v:
        return "-"
    if unit == "s":
        return f"{v['median']:.2f} ({v['min']:.2f})"
    if unit == "MiB":
        return f"{v['median']:.0f} ({v['min']:.0f})"
    return f"{v['median']:.0f}"


def table(summary: dict) -> str:
    cols = IMPLS
    head = f"| metric, median (min) | {' | '.join(cols)} | distributed / sshdeploy |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for key, label, unit in METRICS:
        cells = [_fmt(summary[c].get(key), unit) for c in cols]
        if all(c == "-" for c in cells):
            continue
        ratio = summary["ratios"].get(key, {}).get("distributed/sshdeploy")
        u = f" [{unit}]" if unit else ""
        lines.append(f"| {label}{u} | {' | '.join(cells)} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}x'} |")
    ok = [f"{summary[c]['runs'] - summary[c]['failed']}/{summary[c]['runs']}" for c in cols]
    lines.append(f"| runs ok | {' | '.join(ok)} | |")
    gone = [str(summary[c]["not_gone_after_close"]) for c in cols]
    lines.append(f"| runs with processes left after close | {' | '.join(gone)} | |")
    floor = summary["ratios"].get("startup_s", {}).get("local-forkserver/sshdeploy")
    if floor:
        lines.append("")
        lines.append(f"sshdeploy start-up is {1 / floor:.2f}x the LocalCluster(forkserver) floor.")
    return "\n".join(lines)


def phase_table(runs: list[dict], impl: str) -> str:
    """Median over runs of when each phase began and ended (start-up from the constructor
    call, close from the close() call) and of its longest single duration."""
    keys: dict[str, list[dict]] = {}
    for r in runs:
        if r.get("impl") == impl and r.get("ok"):
            for k, v in r.get("phases", {}).items():
                keys.setdefault(k, []).append(v)
    if not keys:
        return ""
    lines = [f"{impl} phases, median over runs [s]: first start / last end / longest one",
             ]
    for k, vs in keys.items():
        med = {f: statistics.median(v[f] for v in vs) for f in ("first_start", "last_end",
                                                                  "max_duration")}
        lines.append(f"  {k:<32} x{vs[0]['n']:<3} {med['first_start']:6.2f} / "
                     f"{med['last_end']:6.2f} / {med['max_duration']:6.2f}")
    return "\n".join(lines)


def stages_markdown(runs: list[dict], impl: str, hosts: int, wph: int) -> str:
    """The stage breakdown of *impl*'s runs as a markdown table (medians over the runs)."""
    keys: dict[str, list[dict]] = {}
    for r in runs:
        if r.get("impl") == impl and r.get("ok"):
            for k, v in r.get("phases", {}).items():
                if not k.startswith("close"):
                    keys.setdefault(k, []).append(v)
    if not keys:
        return ""
    lines = [f"**{impl}, {hosts} host(s) x {wph} worker(s)** (medians over "
             f"{len([r for r in runs if r.get('impl') == impl and r.get('ok')])} run(s); "
             "seconds from the constructor call)", "",
             "| stage | count | first began | last ended | longest one |",
             "|---|---|---|---|---|"]
    for k, vs in sorted(keys.items(), key=lambda kv: statistics.median(
            v["first_start"] for v in kv[1])):
        med = {f: statistics.median(v[f] for v in vs)
               for f in ("first_start", "last_end", "max_duration")}
        lines.append(f"| {k} | {vs[0]['n']} | {med['first_start']:.2f} | "
                     f"{med['last_end']:.2f} | {med['max_duration']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hosts", type=int, default=4, help="worker hosts (the bed gets one more)")
    p.add_argument("--workers-per-host", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", help="write every run and the summary here")
    p.add_argument("--only", help="comma-separated subset of " + ",".join(IMPLS))
    p.add_argument("--close-deadline", type=float, default=15.0,
                   help="seconds to wait for remote processes to go after close()")
    p.add_argument("--run-timeout", type=float, default=240.0)
    p.add_argument("--keep-bed", action="store_true", help="don't take the bed down at the end")
    p.add_argument("--source", help="measure the sshdeploy of this checkout (see the docstring)")
    p.add_argument("--stages-md", help="write the stage breakdown here, as markdown")
    p.add_argument("--bed", default=BED_NAME, help="bed name (default %(default)s)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    globals()["BED_NAME"] = args.bed  # the child's run_one looks its bed up by this name

    if args.child:
        res = run_one(args.child, args.hosts, args.workers_per_host, 120.0, args.close_deadline)
        Path(args.result).write_text(json.dumps(res, indent=1))
        return 0

    import _bedprobe

    from sshdeploy import testbed

    impls = tuple(args.only.split(",")) if args.only else IMPLS
    runs: list[dict] = []
    t_start = time.perf_counter()
    logdir = Path(tempfile.mkdtemp(prefix="sshdeploy-bench-"))
    print(f"bringing up bed {args.bed!r} with {args.hosts + 1} hosts ...", flush=True)
    try:
        bed = _bedprobe.bring_up(args.hosts + 1, args.bed)
        print(f"  up in {time.perf_counter() - t_start:.1f} s; logs in {logdir}", flush=True)
        for r, order in enumerate(_orders(args.repeat)):
            for impl in order:
                if impl not in impls:
                    continue
                res = _spawn(impl, args, logdir, f"r{r}-{impl}")
                if impl in SSH_IMPLS:
                    # Whatever survived close() and the controller's exit: report, then kill.
                    killed = _bedprobe.kill_leftovers(bed)
                    res["left_after_controller_exit"] = [
                        {"host": k.host, "pid": k.pid, "cmd": k.cmd[:160]}
                        for k in killed if not k.is_sshd
                    ]
                    res["confirm_clean"] = _bedprobe.confirm_clean(bed)
                runs.append(res)
                error = str(res.get("error"))[:200]
                status = "ok" if res.get("ok") else f"FAILED: {error}"
                print(
                    f"  repeat {r + 1} {impl:<17}"
                    f" start-up {res.get('startup_s', float('nan')):6.2f} s"
                    f"  close->gone {res.get('close_gone_s') or float('nan'):6.2f} s"
                    f"  left after close {len(res.get('left_after_close', []))}"
                    f"  ({res['wall_s']:.0f} s wall) {status}",
                    flush=True,
                )
    finally:
        if not args.keep_bed:
            with contextlib.suppress(Exception):
                testbed.down(args.bed)
    summary = summarize(runs)
    print()
    print(f"{args.hosts} hosts x {args.workers_per_host} workers = "
          f"{args.hosts * args.workers_per_host} workers, {args.repeat} repeat(s), "
          f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"sshdeploy source: {_bedprobe.source_state()}")
    print(table(summary))
    for impl in IMPLS:
        for e in summary[impl]["errors"]:
            print(f"  {impl} error: {e}")
        left = [x for r in runs if r.get("impl") == impl for x in r.get("left_after_close", [])]
        if left:
            print(f"  {impl}: {len(left)} process(es) still running {args.close_deadline:.0f} s "
                  f"after close() returned, e.g. {left[0]}")
        after = [x for r in runs if r.get("impl") == impl
                 for x in r.get("left_after_controller_exit", [])]
        if after:
            print(f"  {impl}: {len(after)} process(es) survived even the controller's exit "
                  f"(killed by the benchmark), e.g. {after[0]}")
    for impl in SSH_IMPLS:
        text = phase_table(runs, impl)
        if text:
            print(text)
    stages = stages_markdown(runs, "sshdeploy", args.hosts, args.workers_per_host)
    if stages:
        ratio = summary["ratios"].get("startup_s", {}).get("distributed/sshdeploy")
        if ratio:
            stages += (f"\nready ratio sshdeploy / distributed's SSHCluster, same run: "
                       f"{1 / ratio:.2f}\n")
        print(stages)
        if args.stages_md:
            Path(args.stages_md).write_text(
                f"sshdeploy source: {_bedprobe.source_state()}\n\n{stages}")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "args": {k: v for k, v in vars(args).items() if k not in ("child", "result")},
            "sshdeploy_source": _bedprobe.source_state(),
            "runs": runs,
            "summary": summary,
        }, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
