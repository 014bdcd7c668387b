#!/usr/bin/env python
"""Many hosts: 64 hosts x 1 worker, sshdeploy beside distributed's SSHCluster; bad hosts fail fast.

Two parts (issue 19 point 3, issue 20 finding 7):

cluster
    A bed of ``--hosts`` + 1 hosts (the first runs the scheduler). For each
    implementation (sshdeploy, then distributed's SSHCluster on the same hosts,
    host keys checked against the bed's known_hosts for both), in a fresh
    interpreter: build the cluster, wait until every worker has registered
    (bounded: distributed may not start at all; the run then says "did not
    start within N s"), run a small real computation (``sum(x*x)`` over 4096
    tasks), record ready time, controller CPU and RSS (and per host), remote
    CPU, the scheduler process's CPU and the scheduler host's, then close and
    check that nothing is left on any host.
failures
    ``--good`` bed hosts plus N hosts that fail before TCP: names that do not
    resolve (100 and 3000), refused ports, unreachable addresses (the bed's
    private subnet, which has an ``unreachable`` route here). Time until
    ``SSHCluster(...)`` raises (Python API), and for ``dask-ssh --no-progress``
    the time to its first line on stderr and to its exit. Name lookups use a
    resolv.conf that names 127.0.0.1 (the run is re-executed under ``unshare
    -m`` with it bind-mounted): no DNS query leaves the machine.

Usage (root; the bed is network namespaces)::

    python benchmarks/bench_many.py --hosts 64 --out benchmarks/results/ [--bed sdmbig]

Writes ``many.json`` and ``many.md`` into ``--out``. Only reports; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _source  # noqa: E402,F401  (before anything imports sshdeploy)

IMPLS = ("sshdeploy", "distributed")
TASKS = 4096
RESOLV = "nameserver 127.0.0.1\noptions attempts:1 timeout:1\n"


def _square(x: int) -> int:
    return x * x


# --------------------------------------------------------------------------- cluster run (child)


def run_cluster(impl: str, n: int, bed_name: str, ready_deadline: float,
                close_deadline: float) -> dict[str, Any]:
    """Start, compute on, sample and close one cluster of *n* worker hosts x 1 worker."""
    import _bedprobe
    import bench_scale
    import distributed
    import psutil
    from distributed import Client, get_task_stream
    from distributed.deploy.ssh import SSHCluster  # noqa: F401

    import sshdeploy
    from sshdeploy import cluster as _cluster  # noqa: F401  (sshdeploy imports it lazily)
    from sshdeploy import testbed
    from sshdeploy.ssh.sshlib import asyncssh  # noqa: F401

    me = psutil.Process()
    out: dict[str, Any] = {"impl": impl, "hosts": n, "workers": n, "ok": False,
                           "load_before": os.getloadavg(), "ready_deadline_s": ready_deadline}
    bed = testbed.status(bed_name)
    if bed is None:
        raise RuntimeError(f"bed {bed_name!r} is not up")
    names = [h.name for h in bed.hosts[: n + 1]]
    inodes = _bedprobe._netns_inodes(bed)
    base = _bedprobe.cpu_table(_bedprobe.snapshot(bed, inodes))
    gc.collect()
    rss0 = me.memory_info().rss
    cpu0 = bench_scale._cpu(me)
    cluster = None
    t0 = time.perf_counter()
    try:
        try:
            cluster = bench_scale._make(impl, names, bed.connect_options(), 1, n)
            out["ctor_s"] = time.perf_counter() - t0
            if _bedprobe.wait_workers(cluster, n, ready_deadline - out["ctor_s"]):
                out["ready_s"] = time.perf_counter() - t0
                out["controller_cpu_ready_s"] = bench_scale._cpu(me) - cpu0
            else:
                got = len(cluster.scheduler_info.get("workers", {}))
                out["error"] = (f"did not start within {ready_deadline:.0f} s: {got} of {n} "
                                "workers registered")
        except Exception as exc:  # record it; the orchestrator cleans the bed
            out["failed_after_s"] = time.perf_counter() - t0
            out["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        if "ready_s" in out:
            assert cluster is not None
            out["controller_cpu_s"] = bench_scale._cpu(me) - cpu0
            out["controller_rss_mib"] = me.memory_info().rss / 2**20
            out["controller_rss_delta_mib"] = (me.memory_info().rss - rss0) / 2**20
            out["controller_cpu_per_host_ms"] = 1000 * out["controller_cpu_s"] / (n + 1)
            out["controller_rss_per_host_kib"] = 1024 * out["controller_rss_delta_mib"] / (n + 1)
            after = _bedprobe.cpu_table(_bedprobe.snapshot(bed, inodes))
            table = {pid: v for pid, v in _bedprobe.cpu_since(base, after).items()
                     if v[0] in names}
            out["ssh_tcp_connections"] = bench_scale._tcp_to_22({h.address for h in bed.hosts})
            with Client(cluster, timeout=60) as client, get_task_stream(client) as stream:
                t1 = time.perf_counter()
                futures = client.map(_square, range(TASKS))
                total = client.submit(sum, futures).result(timeout=300)
                out["compute_s"] = time.perf_counter() - t1
                out["compute_ok"] = total == sum(x * x for x in range(TASKS))
                pids = dict(client.run(os.getpid))
                sched_pid = client.run_on_scheduler(os.getpid)
            # Which workers ran the tasks (the task stream, filled when its block ends).
            out["compute_workers_used"] = len({t["worker"] for t in stream.data})
            ticks = _bedprobe.cpu_ticks(sched_pid)
            out["scheduler_process_cpu_s"] = None if ticks is None else ticks[0]
            bench_scale._classify(out, table, names[0], pids)
    finally:
        if cluster is not None:
            t1 = time.perf_counter()
            try:
                cluster.close(timeout=120)
            except Exception as exc:
                out["close_error"] = f"{type(exc).__name__}: {exc}"[:500]
            out["close_call_s"] = time.perf_counter() - t1
            bench_scale._wait_closed(out, impl, bed, close_deadline, me, t1)
    out["ok"] = bool("ready_s" in out and out.get("compute_ok") and "close_error" not in out
                     and not out.get("left_after_close"))
    out["versions"] = {"distributed": distributed.__version__, "sshdeploy": sshdeploy.__version__}
    return out


# --------------------------------------------------------------------------- failure runs (child)


def bad_hosts(kind: str, count: int, bed: Any) -> list[str]:
    """*count* hosts that fail before TCP in the way *kind* names."""
    import ipaddress

    if kind == "unresolvable":
        return [f"nosuchhost{i}" for i in range(count)]
    if kind == "refused":  # ports where no bed sshd listens: RST at once
        return [f"{bed.hosts[0].name}:{2000 + i}" for i in range(count)]
    if kind == "unreachable":  # the controller has an `unreachable` route for it: EHOSTUNREACH
        net = ipaddress.ip_network(bed.private_subnet)
        return [str(a) for a in list(net.hosts())[10:10 + count]]
    raise ValueError(kind)


def run_failures(kind: str, count: int, good: int, bed_name: str,
                 deadline: float) -> dict[str, Any]:
    """Python API, then ``dask-ssh --no-progress``: *good* bed hosts + *count* bad ones."""
    import socket

    from sshdeploy import SSHCluster, testbed

    bed = testbed.status(bed_name)
    if bed is None:
        raise RuntimeError(f"bed {bed_name!r} is not up")
    with contextlib.suppress(socket.gaierror):
        socket.getaddrinfo("nosuchhost0", 22)
        raise RuntimeError("nosuchhost0 resolves: the resolv.conf trick did not apply")
    hosts = [h.name for h in bed.hosts[:good]] + bad_hosts(kind, count, bed)
    out: dict[str, Any] = {"kind": kind, "bad": count, "good": good,
                           "load_before": os.getloadavg()}
    t0 = time.perf_counter()
    try:
        cluster = SSHCluster(hosts, connect_options=bed.connect_options())
    except Exception as exc:
        out["api_failed_s"] = time.perf_counter() - t0
        text = str(exc)
        out["api_error_first_line"] = text.splitlines()[0][:300]
        out["api_error_hosts_listed"] = text.count("\n  - ")
    else:
        out["api_failed_s"] = None
        out["api_error_first_line"] = "started (unexpected)"
        cluster.close()
    # The CLI, stderr read line by line as it comes.
    hostfile = Path(tempfile.mkdtemp(prefix="sdm-bench-")) / "hostfile"
    hostfile.write_text("\n".join(f"root@{h}" for h in hosts) + "\n")
    cmd = [sys.executable, "-m", "sshdeploy.cli", "--hostfile", str(hostfile), "--no-progress",
           "--known-hosts", str(bed.known_hosts), "--ssh-private-key", str(bed.client_key),
           "--scheduler-port", "0", "--dashboard-address", ":0"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    first: float | None = None
    first_line = ""
    lines = 0
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if first is None:
                first, first_line = time.perf_counter() - t0, line.strip()[:300]
            lines += 1
            if time.perf_counter() - t0 > deadline:
                break
        proc.wait(max(1.0, deadline - (time.perf_counter() - t0)))
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            out["cli_killed_after_s"] = deadline
    out["cli_exit_s"] = time.perf_counter() - t0
    out["cli_status"] = proc.returncode
    out["cli_first_stderr_s"] = first
    out["cli_first_stderr_line"] = first_line
    out["cli_stderr_lines"] = lines
    shutil.rmtree(hostfile.parent, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- orchestration


def _spawn(argv: list[str], timeout: float, log: Path, resolv: Path | None = None) -> dict:
    """Run this script as a child (own process group; with *resolv* under ``unshare -m``)."""
    result = log.with_suffix(".json")
    cmd = [sys.executable, __file__, *argv, "--result", str(result)]
    if resolv is not None:
        inner = " ".join(f"'{c}'" for c in cmd)
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c",
               f"mount --bind {resolv} /etc/resolv.conf && exec {inner}"]
    t0 = time.perf_counter()
    rc: int | None = None
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                import bench_scale

                bench_scale._stop_group(proc)
    try:
        data = json.loads(result.read_text())
    except (OSError, ValueError):
        tail = log.read_text()[-1500:] if log.exists() else ""
        what = f"timed out after {timeout:.0f} s" if rc is None else f"exited {rc}"
        data = {"ok": False, "error": f"run {what}: {tail}"}
    data["wall_s"] = time.perf_counter() - t0
    data["log"] = str(log)
    return data


PYENV_LOCK = Path.home() / ".pyenv" / "shims" / ".pyenv-shim"


def clear_stale_pyenv_lock(min_age_s: float = 90.0) -> str | None:
    """Remove pyenv's rehash lock if no ``pyenv-rehash`` runs and it is old; say so.

    Every bed host shares this machine's ``~/.bashrc``, which runs ``pyenv
    init`` (a ``pyenv rehash`` under a lock file) in each login shell. A login
    shell killed while it holds the lock (a stalled start that is killed) leaves
    the file behind, and every later login shell on the machine then waits 60 s
    for it: the next run would measure that wait.
    """
    try:
        age = time.time() - PYENV_LOCK.stat().st_mtime
    except OSError:
        return None
    running = subprocess.run(["pgrep", "-f", "pyenv-rehash"], capture_output=True).returncode == 0
    if running or age < min_age_s:
        return None
    PYENV_LOCK.unlink(missing_ok=True)
    return f"removed a stale pyenv rehash lock ({age:.0f} s old)"


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _save(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)


def run_all(args: argparse.Namespace) -> dict:
    import _bedprobe

    from sshdeploy import testbed

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{args.name}.json"
    logdir = Path(tempfile.mkdtemp(prefix="sdm-many-"))
    resolv = logdir / "resolv.conf"
    resolv.write_text(RESOLV)
    import bench_scale

    doc: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "mem_total_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                    / 2**30},
        "source": {"path": str(_source.SOURCE), **_bedprobe.source_state()},
        "uptime_start": _uptime(), "clusters": [], "failures": [], "logs": str(logdir),
    }
    print(f"measuring sshdeploy from {doc['source']}\nload: {doc['uptime_start']}", flush=True)
    t_start = time.perf_counter()
    size = args.hosts + 1
    doc["pyenv_lock_before"] = clear_stale_pyenv_lock()
    try:
        print(f"bringing up bed {args.bed!r} with {size} hosts ...", flush=True)
        bed = _bedprobe.bring_up(size, args.bed, 600)
        doc["bed_up_s"] = time.perf_counter() - t_start
        print(f"  up in {doc['bed_up_s']:.1f} s", flush=True)
        if not args.skip_failures:
            for kind, count in ((k, int(c)) for k, c in
                                (item.split(":") for item in args.failures.split(","))):
                res = _spawn(["--child-failures", kind, "--count", str(count),
                              "--good", str(args.good), "--bed", args.bed,
                              "--deadline", str(args.failure_deadline)],
                             3 * args.failure_deadline + 60, logdir / f"fail-{kind}-{count}.log",
                             resolv)
                res.setdefault("kind", kind)
                res.setdefault("bad", count)
                res["load_after"] = os.getloadavg()
                doc["failures"].append(res)
                _save(json_path, doc)
                print(f"  {count:>5} {kind:<12} API raised after {res.get('api_failed_s')} s; "
                      f"CLI first stderr {res.get('cli_first_stderr_s')} s, exit "
                      f"{res.get('cli_exit_s')} s (status {res.get('cli_status')}) "
                      f"{res.get('error', '')[:200]}", flush=True)
                _bedprobe.kill_leftovers(bed)
        # Read by the child's dask.config at import; recorded with the results.
        os.environ["DASK_SSHDEPLOY__START_TIMEOUT"] = str(args.start_timeout)
        doc["sshdeploy_start_timeout_s"] = args.start_timeout
        for impl in filter(None, args.impls.split(",")):
            deadline = args.ready_deadline
            res = _spawn(["--child", impl, "--hosts", str(args.hosts), "--bed", args.bed,
                          "--ready-deadline", str(deadline),
                          "--close-deadline", str(args.close_deadline)],
                         deadline + args.close_deadline + 300, logdir / f"{impl}.log")
            res.setdefault("impl", impl)
            killed = _bedprobe.kill_leftovers(bed)
            res["pyenv_lock"] = clear_stale_pyenv_lock()
            res["left_after_controller_exit"] = [
                {"host": p.host, "pid": p.pid, "cmd": p.cmd[:160]} for p in killed
                if not p.is_sshd]
            res["load_after"] = os.getloadavg()
            doc["clusters"].append(res)
            _save(json_path, doc)
            print(f"  {impl:<12} {bench_scale._line(res)}", flush=True)
    finally:
        if not args.keep_bed:
            print(f"taking bed {args.bed!r} down ...", flush=True)
            try:
                testbed.down(args.bed)
            except Exception as exc:  # report; `python -m sshdeploy.testbed down` finishes it
                print(f"  bed down failed: {exc}", flush=True)
        doc["uptime_end"] = _uptime()
        doc["total_s"] = time.perf_counter() - t_start
        if args.reuse:
            _reuse(doc, Path(args.reuse))
        _save(json_path, doc)
    return doc


def _reuse(doc: dict, path: Path) -> None:
    """Take the part not run this time (cluster runs or failure runs) from an earlier JSON."""
    old = json.loads(path.read_text())
    for part in ("clusters", "failures"):
        if not doc[part] and old.get(part):
            doc[part] = old[part]
            doc.setdefault("reused", {})[part] = {
                "date": old["date"], "source": old["source"], "uptime_start": old["uptime_start"],
                "uptime_end": old.get("uptime_end"),
                "sshdeploy_start_timeout_s": old.get("sshdeploy_start_timeout_s")}


def _f(v: Any, fmt: str = "{:.2f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _start_timeout(doc: dict) -> Any:
    reused = doc.get("reused", {}).get("clusters", {})
    return reused.get("sshdeploy_start_timeout_s") or doc.get("sshdeploy_start_timeout_s")


def markdown(doc: dict) -> str:
    lines = [
        f"# Many hosts ({doc['date']})", "",
        f"`{doc['command']}` on {doc['machine']['cores']} cores, "
        f"{doc['machine']['mem_total_gib']:.0f} GiB, Python {doc['machine']['python']}; "
        f"sshdeploy from `{doc['source']['path']}` at {doc['source']['head']} "
        f"(modified: {doc['source']['modified'] or 'none'}).", "",
        f"Load: start `{doc['uptime_start']}`; end `{doc.get('uptime_end', '?')}`. "
        "The machine's 2 cores were shared with other sessions' tests.", "",
        f"sshdeploy.start-timeout: {_start_timeout(doc)} s for the cluster runs (all bed "
        "hosts share this machine's cores).", "",
        *(f"The {part} below are from an earlier run: {r['date']}, sshdeploy at "
          f"{r['source']['head']}, load `{r['uptime_start']}` .. `{r.get('uptime_end')}`."
          for part, r in doc.get("reused", {}).items()), "",
        "## 64 hosts x 1 worker", "",
        "| impl | ready [s] | compute [s] (workers used) | close until nothing left [s] | "
        "left after close | controller CPU [CPU-s] (per host [ms]) | controller RSS delta [MiB] "
        "(per host [KiB]) | scheduler process CPU, start + compute [CPU-s] | "
        "scheduler host CPU until ready [CPU-s] | "
        "remote CPU [CPU-s] | SSH connections | load before / after | outcome |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["clusters"]:
        outcome = "ok" if r.get("ok") else str(r.get("error", "failed"))[:160].replace("|", "/")
        lines.append(
            f"| {r['impl']} | {_f(r.get('ready_s'))} | {_f(r.get('compute_s'))} "
            f"({r.get('compute_workers_used', '-')}) | {_f(r.get('close_s'))} | "
            f"{len(r.get('left_after_close', []) or [])} | {_f(r.get('controller_cpu_s'))} "
            f"({_f(r.get('controller_cpu_per_host_ms'), '{:.1f}')}) | "
            f"{_f(r.get('controller_rss_delta_mib'), '{:.0f}')} "
            f"({_f(r.get('controller_rss_per_host_kib'), '{:.0f}')}) | "
            f"{_f(r.get('scheduler_process_cpu_s'))} | {_f(r.get('scheduler_host_cpu_s'))} | "
            f"{_f(r.get('remote_cpu_s'))} | {r.get('ssh_tcp_connections', '-')} | "
            f"{_f((r.get('load_before') or [None])[0], '{:.1f}')} / "
            f"{_f((r.get('load_after') or [None])[0], '{:.1f}')} | {outcome} |")
    lines += [
        "", "## Hosts that fail before TCP, among good ones", "",
        "| bad hosts | kind | good hosts | API: SSHCluster raised after [s] | "
        "dask-ssh --no-progress: first stderr line [s] | exit [s] (status) | first line | "
        "load before |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["failures"]:
        lines.append(
            f"| {r.get('bad')} | {r.get('kind')} | {r.get('good', '-')} | "
            f"{_f(r.get('api_failed_s'))} | {_f(r.get('cli_first_stderr_s'))} | "
            f"{_f(r.get('cli_exit_s'))} ({r.get('cli_status', '-')}) | "
            f"`{str(r.get('cli_first_stderr_line') or r.get('error', ''))[:120]}` | "
            f"{_f((r.get('load_before') or [None])[0], '{:.1f}')} |")
    return "\n".join(lines) + "\n"


def _on_term(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through run_cluster's finally: close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--hosts", type=int, default=64, help="worker hosts (1 worker each)")
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--bed", default="sdmbig")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--name", default="many")
    p.add_argument("--ready-deadline", type=float, default=300.0)
    p.add_argument("--close-deadline", type=float, default=60.0)
    p.add_argument("--start-timeout", type=float, default=240.0,
                   help="sshdeploy.start-timeout for the cluster runs (every bed host shares "
                        "this machine's cores: 65 remote imports of distributed at once)")
    p.add_argument("--failures", default="unresolvable:100,unresolvable:3000,refused:100,"
                                         "unreachable:100")
    p.add_argument("--good", type=int, default=4, help="good hosts in the failure runs")
    p.add_argument("--failure-deadline", type=float, default=120.0)
    p.add_argument("--skip-failures", action="store_true")
    p.add_argument("--keep-bed", action="store_true")
    p.add_argument("--reuse", metavar="JSON",
                   help="take the part not run (--impls '' or --skip-failures) from this JSON")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-failures", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child or args.child_failures:
        signal.signal(signal.SIGTERM, _on_term)
        if args.child:
            res = run_cluster(args.child, args.hosts, args.bed, args.ready_deadline,
                              args.close_deadline)
        else:
            res = run_failures(args.child_failures, args.count, args.good, args.bed,
                               args.deadline)
        Path(args.result).write_text(json.dumps(res, indent=1, default=str))
        return 0
    doc = run_all(args)
    text = markdown(doc)
    Path(args.out, f"{args.name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
