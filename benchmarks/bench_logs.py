#!/usr/bin/env python
"""Remote log throughput: a worker task prints N MiB; when does the last line reach the controller?

sshdeploy
    Lines come back through the agent and are logged on ``sshdeploy.remote.*``
    with ``record.sshdeploy_label`` set to the worker's name (``bench2-0``).
    A handler counts them; we time from ``submit`` until the last (sentinel)
    line is handled, and also until the task itself finished remotely.
distributed
    Its SSHCluster never reads the remote stdout after start-up, so the lines
    never arrive; what matters is whether the worker *stalls* once the SSH
    channel's window is full. The task runs with a deadline (60 s by
    default): "stalled" if it has not finished by then.

Each implementation runs in a fresh interpreter on the bed ``bench`` (2 hosts:
scheduler, one worker); the bed is taken down at the end. Only reports.

Usage::

    python benchmarks/bench_logs.py [--mib 16] [--line-bytes 100] [--deadline 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _source  # noqa: E402,F401  (before anything imports sshdeploy)

BED_NAME = "bench"
SENTINEL = "SSHDEPLOY-BENCH-FLOOD-END"


def flood(mib: float, line_bytes: int) -> int:
    """Print *mib* MiB as lines of *line_bytes* (newline included), then a sentinel line."""
    import sys as _sys

    line = ("x" * (line_bytes - 1)) + "\n"
    n = int(mib * 2**20) // line_bytes
    per_write = max(1, 65536 // line_bytes)
    block = line * per_write
    written = 0
    while written + per_write <= n:
        _sys.stdout.write(block)
        written += per_write
    _sys.stdout.write(line * (n - written))
    _sys.stdout.write(SENTINEL + "\n")
    _sys.stdout.flush()
    return n


class Counter(logging.Handler):
    """Counts the lines of one remote source; notes when the sentinel arrives."""

    def __init__(self, label: str) -> None:
        super().__init__(logging.DEBUG)
        self.label = label
        self.lines = 0
        self.bytes = 0
        self.other = 0
        self.done = threading.Event()
        self.first: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "sshdeploy_label", None) != self.label:
            self.other += 1
            return
        msg = record.getMessage()
        if self.first is None:
            self.first = time.perf_counter()
        self.lines += 1
        self.bytes += len(msg) + 1
        if msg == SENTINEL:
            self.done.set()


def _role(cmd: str) -> str:
    if cmd.startswith("sshd"):
        return "sshd"
    if "sshdeploy-agent" in cmd:
        return "agent"
    if "dask_spec" in cmd:
        return "dask_spec (nanny)"
    if "forkserver" in cmd or "spawn_main" in cmd:
        return "worker"
    return "other"


def _cpu_by_pid(bed: Any) -> dict[int, tuple[str, float]]:
    import _bedprobe
    import psutil

    out = {}
    for p in _bedprobe.snapshot(bed).procs:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(p.pid).cpu_times()
            out[p.pid] = (_role(p.cmd), t.user + t.system)
    return out


def run_one(impl: str, mib: float, line_bytes: int, deadline: float) -> dict[str, Any]:
    import psutil
    from distributed import Client
    from distributed.deploy.ssh import SSHCluster as DistSSHCluster

    import sshdeploy
    from sshdeploy import testbed

    bed = testbed.status(BED_NAME)
    assert bed is not None
    names = [h.name for h in bed.hosts[:2]]
    me = psutil.Process()
    out: dict[str, Any] = {"impl": impl, "mib": mib, "line_bytes": line_bytes}
    opts = dict(connect_options=bed.connect_options(),
                worker_options={"n_workers": 1, "nthreads": 1})
    counter = None
    if impl == "sshdeploy":
        counter = Counter(f"{names[1]}-0")
        remote_logger = logging.getLogger("sshdeploy.remote")
        remote_logger.setLevel(logging.DEBUG)
        remote_logger.addHandler(counter)
        remote_logger.propagate = False
        cluster = sshdeploy.SSHCluster(names, **opts)
    else:
        cluster = DistSSHCluster(names, **opts)
    client = Client(cluster, timeout=30)
    client.wait_for_workers(1, timeout=60)
    rss0 = me.memory_info().rss
    cpu_before = _cpu_by_pid(bed)
    my_cpu0 = sum(me.cpu_times()[:2])
    if counter is not None:
        counter.lines = counter.bytes = 0
    t0 = time.perf_counter()
    fut = client.submit(flood, mib, line_bytes, pure=False)
    task_done: dict[str, Any] = {}

    def wait_task() -> None:
        try:
            task_done["n"] = fut.result()
            task_done["t"] = time.perf_counter() - t0
        except Exception as exc:
            task_done["error"] = f"{type(exc).__name__}: {exc}"

    th = threading.Thread(target=wait_task, daemon=True)
    th.start()
    th.join(deadline)
    if "t" in task_done:
        out["task_done_s"] = task_done["t"]
        out["lines_sent"] = task_done["n"] + 1
    elif "error" in task_done:
        out["error"] = task_done["error"]
    else:
        out["stalled"] = True
        out["task_done_s"] = None
    if counter is not None:
        arrived = counter.done.wait(max(0.0, deadline - (time.perf_counter() - t0)))
        out["last_line_s"] = (time.perf_counter() - t0) if arrived else None
        out["lines_arrived"] = counter.lines
        out["mib_arrived"] = counter.bytes / 2**20
        if arrived:
            out["throughput_mib_s"] = counter.bytes / 2**20 / out["last_line_s"]
            out["throughput_lines_s"] = counter.lines / out["last_line_s"]
        out["other_records"] = counter.other
    else:
        out["lines_arrived"] = 0  # distributed forwards nothing after start-up
    out["controller_rss_delta_mib"] = (me.memory_info().rss - rss0) / 2**20
    # CPU seconds spent during the flood, by process kind (where the time goes).
    cpu: dict[str, float] = {"controller": sum(me.cpu_times()[:2]) - my_cpu0}
    for pid, (role, t) in _cpu_by_pid(bed).items():
        cpu[role] = cpu.get(role, 0.0) + t - cpu_before.get(pid, (role, 0.0))[1]
    out["flood_cpu_s"] = {k: round(v, 2) for k, v in cpu.items()}

    # Close with a deadline: a stalled worker may not close cleanly.
    closed: dict[str, Any] = {}

    def close() -> None:
        t = time.perf_counter()
        with contextlib.suppress(Exception):
            client.close(timeout=10)
        with contextlib.suppress(Exception):
            cluster.close(timeout=20)
        closed["s"] = time.perf_counter() - t

    ct = threading.Thread(target=close, daemon=True)
    ct.start()
    ct.join(30)
    out["close_s"] = closed.get("s")
    return out


def _spawn(impl: str, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    result = logdir / f"{impl}.json"
    log = logdir / f"{impl}.log"
    cmd = [sys.executable, __file__, "--child", impl, "--mib", str(args.mib), "--line-bytes",
           str(args.line_bytes), "--deadline", str(args.deadline), "--result", str(result)]
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                timeout=args.deadline * 2 + 90).returncode
        except subprocess.TimeoutExpired:
            rc = None
    try:
        return dict(json.loads(result.read_text()))
    except (OSError, ValueError):
        tail = log.read_text()[-1500:] if log.exists() else ""
        return {"impl": impl, "error": f"run {'timed out' if rc is None else f'exited {rc}'}: "
                f"{tail}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mib", type=float, default=16.0, help="MiB the task prints")
    p.add_argument("--line-bytes", type=int, default=100, help="bytes per line (with newline)")
    p.add_argument("--deadline", type=float, default=60.0, help="seconds before 'stalled'")
    p.add_argument("--only", help="sshdeploy or distributed")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--keep-bed", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        res = run_one(args.child, args.mib, args.line_bytes, args.deadline)
        Path(args.result).write_text(json.dumps(res, indent=1))
        sys.stdout.flush()
        os._exit(0)  # a stalled cluster's threads must not keep us alive

    import _bedprobe

    from sshdeploy import testbed

    logdir = Path(tempfile.mkdtemp(prefix="sshdeploy-benchlogs-"))
    impls = [args.only] if args.only else ["sshdeploy", "distributed"]
    results = []
    t_start = time.perf_counter()
    try:
        bed = _bedprobe.bring_up(2, BED_NAME)
        for impl in impls:
            res = _spawn(impl, args, logdir)
            killed = _bedprobe.kill_leftovers(bed)
            res["left_after_run"] = len([k for k in killed if not k.is_sshd])
            results.append(res)
            print(json.dumps(res), flush=True)
    finally:
        if not args.keep_bed:
            with contextlib.suppress(Exception):
                testbed.down(BED_NAME)
    print()
    print(f"one worker prints {args.mib:g} MiB in {args.line_bytes}-byte lines "
          f"({int(args.mib * 2**20) // args.line_bytes} lines); deadline {args.deadline:.0f} s; "
          f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print("| | task finished remotely [s] | last line at controller [s] | MiB/s | lines/s "
          "| lines arrived | outcome |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        t = r.get("task_done_s")
        last = r.get("last_line_s")
        if r.get("stalled"):
            outcome = f"stalled (not done in {args.deadline:.0f} s)"
        else:
            outcome = str(r["error"])[:80] if r.get("error") else "ok"
        print(f"| {r['impl']} | {'-' if t is None else f'{t:.2f}'} | "
              f"{'-' if last is None else f'{last:.2f}'} | "
              f"{r.get('throughput_mib_s', 0) and round(r['throughput_mib_s'], 1) or '-'} | "
              f"{r.get('throughput_lines_s', 0) and int(r['throughput_lines_s']) or '-'} | "
              f"{r.get('lines_arrived', '-')} | {outcome} |")
    for r in results:
        if r.get("flood_cpu_s"):
            print(f"  {r['impl']}: CPU seconds during the flood by process: {r['flood_cpu_s']}")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                               "cores": os.cpu_count(), "args": vars(args),
                                               "sshdeploy_source": _bedprobe.source_state(),
                                               "results": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
