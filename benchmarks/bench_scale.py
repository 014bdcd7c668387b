#!/usr/bin/env python
"""Scale study: sshdeploy vs distributed's SSHCluster vs LocalCluster, 1..32 hosts.

For every size (worker hosts) and workers per host, and every repeat, in
alternating order (A B C, then C B A, ...), each of

sshdeploy
    ``sshdeploy.SSHCluster([sched] + hosts, connect_options=bed, worker_options={"n_workers": k})``
distributed
    ``distributed.deploy.ssh.SSHCluster`` with the same arguments (host keys
    checked against the bed's known_hosts, as for sshdeploy)
local
    ``LocalCluster(n_workers=hosts*k, processes=True)`` with the forkserver
    start method: the machine's floor for the same number of workers
floor
    no cluster: one SSH connection per host (scheduler host + worker hosts,
    8 handshakes at a time) running ``python -c "import distributed"``, the same connect
    options. What any deployer that starts distributed on every host pays at
    least (a login and one import per host), so ``floor / distributed`` is
    the best ready-time ratio reachable on this bed

runs in a fresh interpreter that measures ready time, remote CPU (every
process in the bed hosts' network namespaces, from /proc), controller CPU and
RSS, SSH connections and close time, then closes the cluster. This process
only orchestrates: one bed for the largest size, a memory check before each
configuration (skipped, and said so, when it cannot fit), timeouts, cleanup
(also on Ctrl-C / SIGTERM), the JSON, the markdown table and the plots.

Usage (root; the bed is network namespaces)::

    python benchmarks/bench_scale.py --sizes 1,4,8,16,32 --workers 1,4 --repeats 3 \\
        --out benchmarks/results/

    # measure another checkout's sshdeploy with these scripts:
    PYTHONPATH=/work/main python benchmarks/bench_scale.py ...

    # re-make the table and plots from a JSON file:
    python benchmarks/bench_scale.py --report benchmarks/results/scale.json

Writes ``scale.json``, ``scale.md`` and ``scale-*.png`` into ``--out``.
Only reports; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _source  # noqa: E402,F401  (before anything imports sshdeploy)

IMPLS = ("sshdeploy", "distributed", "local", "floor")
SSH_IMPLS = ("sshdeploy", "distributed", "floor")

#: Proportional set size per worker process and per host (agent, forkserver,
#: nanny process, sshd session), MiB, from earlier runs (README), rounded up;
#: used only to skip what cannot fit in the machine's available memory.
MEM_PER_WORKER = {"sshdeploy": 60, "distributed": 75, "local": 40, "floor": 0}
MEM_PER_HOST = {"sshdeploy": 120, "distributed": 110, "local": 0, "floor": 110}


# --------------------------------------------------------------------------- one run (child)


def _cpu(proc: Any) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _tcp_to_22(addresses: set[str]) -> int:
    """ESTABLISHED TCP connections from this machine's namespace to port 22 of the bed."""
    import psutil

    return sum(
        1 for c in psutil.net_connections(kind="tcp")
        if c.raddr and c.raddr.port == 22 and c.raddr.ip in addresses
        and c.status == psutil.CONN_ESTABLISHED
    )


def _kind(cmd: str) -> str:
    """What a remote process is, for the CPU breakdown."""
    if cmd.startswith("sshd") or cmd.startswith("/usr/sbin/sshd"):
        return "sshd"
    if "sshdeploy-agent" in cmd or "sshdeploy" in cmd and "exec(compile" in cmd:
        return "agent"
    if "forkserver" in cmd:
        return "forkserver"
    if "resource_tracker" in cmd:
        return "resource_tracker"
    if "dask_spec" in cmd or "distributed.cli" in cmd:
        return "dask_spec"
    if "spawn_main" in cmd:
        return "spawned"
    if "python" in cmd:
        return "python (other)"
    return "other"


def _worker_pids(cluster: Any) -> dict[str, int]:
    from distributed import Client

    with Client(cluster, timeout=30) as client:
        return dict(client.run(os.getpid))


def _make(impl: str, names: list[str], connect_options: dict, k: int, n: int) -> Any:
    import dask
    from distributed import LocalCluster
    from distributed.deploy.ssh import SSHCluster as DistSSHCluster

    import sshdeploy

    if impl == "sshdeploy":
        return sshdeploy.SSHCluster(names, connect_options=connect_options,
                                    worker_options={"n_workers": k})
    if impl == "floor":
        return _Floor(names, connect_options, n)
    if impl == "distributed":
        return DistSSHCluster(names, connect_options=connect_options,
                              worker_options={"n_workers": k})
    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
    return LocalCluster(n_workers=n, processes=True,
                        threads_per_worker=os.cpu_count() or 1,  # a Nanny's default
                        host="127.0.0.1", dashboard_address="127.0.0.1:0")


class _Floor:
    """The floor "cluster": every host logs in and imports distributed once, at once.

    ``scheduler_info`` reports ``n`` workers once every import has finished,
    so the same ready poll applies; ``close()`` closes the connections.
    """

    def __init__(self, names: list[str], connect_options: dict, n: int) -> None:
        import asyncio
        import shlex
        import threading

        import _bedprobe

        self._n = n
        self._done = False
        self.error: str | None = None
        self._loop = asyncio.new_event_loop()
        self._conns: list[Any] = []  # kept open until close(): measured while open
        # os._exit: no interpreter teardown (an agent does not exit either).
        command = f"{shlex.quote(sys.executable)} -c 'import distributed, os; os._exit(0)'"

        async def main() -> None:
            try:
                await _bedprobe.run_everywhere(names, connect_options, command, self._conns)
                self._done = True
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"

        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(main(),), daemon=True)
        self._thread.start()

    @property
    def scheduler_info(self) -> dict[str, Any]:
        if self.error:
            raise RuntimeError(self.error)
        return {"workers": dict.fromkeys(range(self._n))} if self._done else {}

    def close(self, timeout: float = 60) -> None:
        import asyncio

        self._thread.join(timeout)

        async def close_all() -> None:
            for conn in self._conns:
                conn.close()
            await asyncio.gather(*(c.wait_closed() for c in self._conns))

        self._loop.run_until_complete(close_all())
        self._loop.close()


def _local_cpu_table() -> dict[int, tuple[str, str, float]]:
    """``{pid: ("local", cmd, cpu_s)}`` of every descendant of this (LocalCluster) process."""
    import psutil

    out = {}
    for kid in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            t = kid.cpu_times()
            out[kid.pid] = ("local", " ".join(kid.cmdline()),
                            t.user + t.system + t.children_user + t.children_system)
    return out


def _classify(out: dict, table: dict[int, tuple[str, str, float]], sched_host: str | None,
              pids: dict[str, int]) -> None:
    """Split the remote CPU into worker processes, the scheduler's host and the rest."""
    workers = set(pids.values())
    by_kind: dict[str, float] = {}
    total = worker_cpu = sched_cpu = overhead = 0.0
    for pid, (host, cmd, cpu) in table.items():
        total += cpu
        kind = "worker" if pid in workers else _kind(cmd)
        by_kind[kind] = by_kind.get(kind, 0.0) + cpu
        if pid in workers:
            worker_cpu += cpu
        elif host == sched_host:
            sched_cpu += cpu
        else:
            overhead += cpu
    out["remote_processes"] = len(table)
    out["remote_cpu_s"] = total
    out["remote_cpu_by_kind"] = {k: round(v, 3) for k, v in sorted(by_kind.items())}
    out["worker_cpu_s"] = worker_cpu
    out["scheduler_host_cpu_s"] = sched_cpu
    # Worker hosts, all but the worker processes (agent, forkserver, sshd, ...);
    # LocalCluster: its forkserver and resource tracker.
    out["host_overhead_cpu_s"] = overhead
    out["workers_found"] = len(workers)


def run_one(impl: str, n: int, k: int, bed_name: str, ready_deadline: float,
            close_deadline: float) -> dict[str, Any]:
    """Start, sample, close and watch one cluster; return the measurements."""
    # Import everything first: the controller's RSS delta is the cluster's, not the imports'.
    import _bedprobe
    import distributed
    import psutil
    from distributed import Client  # noqa: F401
    from distributed.deploy.ssh import SSHCluster  # noqa: F401

    import sshdeploy
    from sshdeploy import cluster as _cluster  # noqa: F401  (sshdeploy imports it lazily)
    from sshdeploy import testbed
    from sshdeploy.ssh.sshlib import asyncssh  # noqa: F401

    me = psutil.Process()
    out: dict[str, Any] = {"impl": impl, "hosts": n, "wph": k, "workers": n * k, "ok": False,
                           "load_before": os.getloadavg()}
    names: list[str] = []
    bed = inodes = base = None
    connect_options: dict = {}
    if impl in SSH_IMPLS:
        bed = testbed.status(bed_name)
        if bed is None:
            raise RuntimeError(f"bed {bed_name!r} is not up")
        names = [h.name for h in bed.hosts[: n + 1]]
        connect_options = bed.connect_options()
        addresses = {h.address for h in bed.hosts}
        inodes = _bedprobe._netns_inodes(bed)
        base = _bedprobe.cpu_table(_bedprobe.snapshot(bed, inodes))
    gc.collect()
    rss0 = me.memory_info().rss
    cpu0 = _cpu(me)
    cluster = None
    t0 = time.perf_counter()
    try:
        try:
            cluster = _make(impl, names, connect_options, k, n * k)
            out["ctor_s"] = time.perf_counter() - t0
            if _bedprobe.wait_workers(cluster, n * k, ready_deadline):
                out["ready_s"] = time.perf_counter() - t0
                out["controller_cpu_ready_s"] = _cpu(me) - cpu0
            else:
                out["error"] = (f"only {len(cluster.scheduler_info.get('workers', {}))} of "
                                f"{n * k} workers registered within {ready_deadline:.0f} s")
        except Exception as exc:  # record it; the orchestrator cleans the bed
            out["failed_after_s"] = time.perf_counter() - t0
            out["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        if "ready_s" in out:
            time.sleep(0.5)  # the same settling time for all
            out["controller_cpu_s"] = _cpu(me) - cpu0
            out["controller_rss_mib"] = me.memory_info().rss / 2**20
            out["controller_rss_delta_mib"] = (me.memory_info().rss - rss0) / 2**20
            # Sample the remote CPU now; classify it after asking the workers their pids
            # (the client's connection costs the workers a little CPU).
            if bed is not None and base is not None:
                after = _bedprobe.cpu_table(_bedprobe.snapshot(bed, inodes))
                table = {pid: v for pid, v in _bedprobe.cpu_since(base, after).items()
                         if v[0] in names}
                out["ssh_tcp_connections"] = _tcp_to_22(addresses)
                conns: dict[str, int] = _bedprobe.snapshot(bed, inodes).connections()
                out["ssh_sshd_connections"] = sum(conns.values())
                out["ssh_hosts_used"] = len(names)
            else:
                table = _local_cpu_table()
            try:
                pids = {} if impl == "floor" else _worker_pids(cluster)
            except Exception as exc:
                pids = {}
                out["pids_error"] = f"{type(exc).__name__}: {exc}"[:500]
            _classify(out, table, names[0] if names else None, pids)
    finally:
        if cluster is not None:
            t1 = time.perf_counter()
            try:
                cluster.close(timeout=60)
            except Exception as exc:
                out["close_error"] = f"{type(exc).__name__}: {exc}"[:500]
            out["close_call_s"] = time.perf_counter() - t1
            _wait_closed(out, impl, bed, close_deadline, me, t1)
    out["ok"] = "ready_s" in out and "close_error" not in out
    out["versions"] = {"distributed": distributed.__version__, "sshdeploy": sshdeploy.__version__}
    return out


def _wait_closed(out: dict, impl: str, bed: Any, deadline_s: float, me: Any, t1: float) -> None:
    """close() call until no remote process is left (LocalCluster: no worker process)."""
    import _bedprobe
    import psutil

    if impl in SSH_IMPLS:
        gone, sessions_gone, snap = _bedprobe.wait_gone(bed, deadline_s)
        out["close_s"] = None if gone is None else out["close_call_s"] + gone
        out["close_sessions_gone_s"] = (None if sessions_gone is None
                                        else out["close_call_s"] + sessions_gone)
        out["left_after_close"] = [{"host": p.host, "pid": p.pid, "cmd": p.cmd[:160]}
                                   for p in snap.remote()]
        return

    def workers_left() -> list[Any]:
        # multiprocessing's forkserver and resource tracker live as long as the
        # controller, by design; what must go are the workers.
        left = []
        for c in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                cmd = " ".join(c.cmdline())
                if c.status() != psutil.STATUS_ZOMBIE and not (
                        "forkserver import main" in cmd or "resource_tracker" in cmd):
                    left.append(c)
        return left

    end = time.perf_counter() + deadline_s
    while workers_left() and time.perf_counter() < end:
        time.sleep(0.005)
    left = workers_left()
    out["close_s"] = None if left else time.perf_counter() - t1
    out["left_after_close"] = [{"pid": c.pid} for c in left]


def _child_main(args: argparse.Namespace) -> int:
    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through run_one's finally: close()

    signal.signal(signal.SIGTERM, on_term)
    res = run_one(args.child, args.hosts_n, args.wph, args.bed, args.ready_deadline,
                  args.close_deadline)
    Path(args.result).write_text(json.dumps(res, indent=1))
    return 0


# --------------------------------------------------------------------------- orchestration


class Interrupted(Exception):
    """SIGTERM or SIGINT reached the orchestrator."""


def _on_signal(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _stop_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the run's process group (its close() runs), then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def _deadlines(workers: int, close_deadline: float) -> tuple[float, float]:
    ready = min(600.0, 90.0 + 2.5 * workers)
    return ready, ready + close_deadline + 120.0


def _spawn(impl: str, n: int, k: int, args: argparse.Namespace, logdir: Path, tag: str) -> dict:
    """One measurement in a fresh interpreter (own process group); bounded in time."""
    result = logdir / f"{tag}.json"
    log = logdir / f"{tag}.log"
    ready_deadline, run_timeout = _deadlines(n * k, args.close_deadline)
    cmd = [sys.executable, __file__, "--child", impl, "--hosts-n", str(n), "--wph", str(k),
           "--bed", args.bed, "--result", str(result), "--ready-deadline", str(ready_deadline),
           "--close-deadline", str(args.close_deadline)]
    t0 = time.perf_counter()
    rc: int | None = None
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(run_timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
        except BaseException:
            _stop_group(proc)
            raise
    try:
        data = json.loads(result.read_text())
    except (OSError, ValueError):
        tail = log.read_text()[-1500:] if log.exists() else ""
        what = f"timed out after {run_timeout:.0f} s" if rc is None else f"exited {rc}"
        data = {"impl": impl, "hosts": n, "wph": k, "workers": n * k, "ok": False,
                "error": f"run {what}: {tail}"}
    data["wall_s"] = time.perf_counter() - t0
    data["log"] = str(log)
    return data


def _mem_available_mib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _mem_needed_mib(impl: str, n: int, k: int) -> float:
    hosts = n + 1 if impl in SSH_IMPLS else 0
    return MEM_PER_WORKER[impl] * n * k + MEM_PER_HOST[impl] * hosts


def measure_import(runs: int) -> dict[str, Any]:
    """CPU seconds of ``python -c "import distributed"`` (and of ``python -c pass``), medians."""
    import statistics

    def cpu_of(code: str) -> float:
        proc = subprocess.Popen([sys.executable, "-c", code])
        _, _, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0
        return usage.ru_utime + usage.ru_stime

    cpu_of("import distributed")  # warm the page cache and __pycache__
    imp = [cpu_of("import distributed") for _ in range(runs)]
    bare = [cpu_of("pass") for _ in range(runs)]
    return {"import_distributed_cpu_s": statistics.median(imp), "runs": imp,
            "python_pass_cpu_s": statistics.median(bare), "python_pass_runs": bare}


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _save(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)


def _configs(sizes: list[int], wphs: list[int]) -> list[tuple[int, int]]:
    """Cheapest first, so that a time budget drops the largest ones."""
    return sorted(((n, k) for k in wphs for n in sizes), key=lambda c: (c[0] * c[1], c[1]))


def _line(res: dict) -> str:
    def f(key: str) -> str:
        v = res.get(key)
        return f"{v:6.2f}" if isinstance(v, (int, float)) else "     -"

    status = "ok" if res.get("ok") else f"FAILED: {str(res.get('error'))[:200]}"
    return (f"ready {f('ready_s')} s  close {f('close_s')} s  remote CPU {f('remote_cpu_s')} s  "
            f"ssh {res.get('ssh_tcp_connections', '-')}  ({res.get('wall_s', 0):.0f} s wall) "
            f"{status}")


def run_study(args: argparse.Namespace) -> dict:
    import _bedprobe

    from sshdeploy import testbed

    impls = tuple(args.impls.split(","))
    sizes = [int(x) for x in args.sizes.split(",")]
    wphs = [int(x) for x in args.workers.split(",")]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{args.name}.json"
    logdir = out_dir / ".logs" if args.keep_logs else Path(f"/tmp/sshdeploy-scale-{os.getpid()}")
    logdir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "mem_total_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                    / 2**30},
        "source": {"path": str(_source.SOURCE), **_bedprobe.source_state()},
        "args": {k: v for k, v in vars(args).items() if not k.startswith("child")},
        "uptime_start": _uptime(),
        "runs": [], "skipped": [],
    }
    print(f"measuring sshdeploy from {doc['source']}", flush=True)
    print(f"load: {doc['uptime_start']}", flush=True)
    t_start = time.perf_counter()
    bed = None
    try:
        doc["import_baseline"] = measure_import(args.import_runs)
        print(f"python -c 'import distributed': "
              f"{doc['import_baseline']['import_distributed_cpu_s']:.2f} CPU-s (median)",
              flush=True)
        if any(i in SSH_IMPLS for i in impls):
            print(f"bringing up bed {args.bed!r} with {max(sizes) + 1} hosts ...", flush=True)
            bed = _bedprobe.bring_up(max(sizes) + 1, args.bed, args.bed_wait_min * 60)
            print(f"  up in {time.perf_counter() - t_start:.0f} s", flush=True)
        budget_end = (t_start + args.budget_min * 60) if args.budget_min else None
        last_cost: tuple[float, int] | None = None  # (seconds per repeat, workers)
        for n, k in _configs(sizes, wphs):
            if budget_end is not None and last_cost is not None:
                estimate = last_cost[0] * (n * k + n) / last_cost[1] * args.repeats
                if time.perf_counter() + estimate > budget_end:
                    reason = (f"time budget: ~{estimate / 60:.0f} min estimated, "
                              f"{max(0, budget_end - time.perf_counter()) / 60:.0f} min left")
                    doc["skipped"].append({"hosts": n, "wph": k, "impl": "all",
                                           "reason": reason})
                    print(f"{n} x {k}: skipped ({reason})", flush=True)
                    continue
            run_impls = []
            for impl in impls:
                need, avail = _mem_needed_mib(impl, n, k), _mem_available_mib()
                if need > args.mem_fraction * avail:
                    reason = (f"memory: ~{need / 1024:.1f} GiB estimated, "
                              f"{avail / 1024:.1f} GiB available")
                    doc["skipped"].append({"hosts": n, "wph": k, "impl": impl, "reason": reason})
                    print(f"{n} x {k} {impl}: skipped ({reason})", flush=True)
                else:
                    run_impls.append(impl)
            t_config = time.perf_counter()
            for r in range(args.repeats):
                order = run_impls if r % 2 == 0 else list(reversed(run_impls))
                for impl in order:
                    res = _spawn(impl, n, k, args, logdir, f"{n}x{k}-r{r}-{impl}")
                    res["repeat"] = r
                    if impl in SSH_IMPLS and bed is not None:
                        killed = _bedprobe.kill_leftovers(bed)
                        res["left_after_controller_exit"] = [
                            {"host": p.host, "pid": p.pid, "cmd": p.cmd[:160]}
                            for p in killed if not p.is_sshd]
                    doc["runs"].append(res)
                    _save(json_path, doc)
                    print(f"{n:>3} x {k} r{r + 1} {impl:<12} {_line(res)}", flush=True)
            if run_impls:
                last_cost = ((time.perf_counter() - t_config) / args.repeats, n * k + n)
    finally:
        if bed is not None and not args.keep_bed:
            print(f"taking bed {args.bed!r} down ...", flush=True)
            try:
                testbed.down(args.bed)
            except Exception as exc:  # report; `python -m sshdeploy.testbed down` finishes it
                print(f"  bed down failed: {exc}", flush=True)
        doc["uptime_end"] = _uptime()
        doc["total_s"] = time.perf_counter() - t_start
        _save(json_path, doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--sizes", default="1,4,8,16,32", help="worker hosts, comma-separated")
    p.add_argument("--workers", default="1,4", help="workers per host, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--name", default="scale", help="file name stem of the outputs")
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--bed", default="bench", help="test-bed name (hosts NAME1..)")
    p.add_argument("--mem-fraction", type=float, default=0.7,
                   help="skip a configuration whose estimated memory exceeds this fraction of "
                        "MemAvailable")
    p.add_argument("--budget-min", type=float, default=0.0,
                   help="skip configurations that would end after this many minutes (0: none)")
    p.add_argument("--close-deadline", type=float, default=30.0)
    p.add_argument("--import-runs", type=int, default=5)
    p.add_argument("--bed-wait-min", type=float, default=30.0,
                   help="minutes to wait for a free test-bed address block (other beds)")
    p.add_argument("--keep-bed", action="store_true")
    p.add_argument("--keep-logs", action="store_true", help="per-run logs under OUT/.logs")
    p.add_argument("--report", metavar="JSON", help="only re-make table and plots from JSON")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--hosts-n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--wph", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--ready-deadline", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child_main(args)

    import _scale_report

    if args.report:
        doc = json.loads(Path(args.report).read_text())
        out_dir = Path(args.report).parent
        stem = Path(args.report).stem
    else:
        previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            doc = run_study(args)
        except Interrupted as exc:
            print(f"interrupted ({exc}); partial results were saved", flush=True)
            return 130
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        out_dir, stem = Path(args.out), args.name
    report = _scale_report.analyse(doc)
    doc["analysis"] = report
    text = _scale_report.markdown(doc, report)
    (out_dir / f"{stem}.md").write_text(text)
    _save(out_dir / f"{stem}.json", doc)
    print(text)
    if not args.no_plots:
        import _scale_plots

        for path in _scale_plots.plot_all(doc, report, out_dir, stem):
            print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
