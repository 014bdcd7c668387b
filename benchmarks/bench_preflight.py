#!/usr/bin/env python
"""What ``dask-ssh --check`` costs: wall time and remote CPU per host, on a 48-host bed.

Side by side in one run, ``--repeats`` times in alternating order, on the
same hosts (all of a bed of ``--hosts``, 48 by default, the bed's maximum):

login
    the floor: one SSH connection per host (8 handshakes at a time, as
    sshdeploy's ``connect-parallelism``) running ``true``; what any command
    over SSH costs on these hosts (sshd, the login shell and its ``~/.bashrc``)
check
    ``dask-ssh --check`` (versions from package metadata: the default probe)
check-imports
    ``dask-ssh --check --check-imports`` (imports dask and distributed on
    every host, the old probe)

Remote CPU is utime+stime of everything in the hosts' network namespaces
(sshd's reaped children included), from just before the command until it
ended; the probe's own cost is ``check - login`` per host. Prints a table and
which issue-9 targets hold; writes ``--out`` JSON and markdown. Only reports;
asserts nothing.

    python benchmarks/bench_preflight.py --hosts 48 --repeats 3 --out benchmarks/results/
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bedprobe  # noqa: E402
import _source  # noqa: E402,F401  (before anything imports sshdeploy)

MODES = ("login", "check", "check-imports")


def _cli(bed: Any, deep: bool) -> list[str]:
    cmd = [sys.executable, "-m", "sshdeploy.cli", "--check", "--no-progress",
           "--ssh-private-key", str(bed.client_key), "--known-hosts", str(bed.known_hosts)]
    if deep:
        cmd.append("--check-imports")
    return cmd + [h.address for h in bed.hosts]


def run_one(bed: Any, mode: str, inodes: dict[int, str]) -> dict[str, Any]:
    """One measurement: wall time, remote CPU, controller CPU, exit status."""
    base = _bedprobe.cpu_table(_bedprobe.snapshot(bed, inodes))
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out: dict[str, Any] = {"mode": mode, "hosts": len(bed.hosts), "load": os.getloadavg()[0]}
    if mode == "login":
        c0 = time.process_time()
        asyncio.run(_bedprobe.run_everywhere([h.address for h in bed.hosts],
                                             bed.connect_options(), "true"))
        out["controller_cpu_s"] = time.process_time() - c0
        out["rc"] = 0
    else:
        proc = subprocess.run(_cli(bed, deep=mode == "check-imports"), capture_output=True,
                              text=True, timeout=300)
        out["rc"] = proc.returncode
        out["tail"] = proc.stdout[-400:] + proc.stderr[-400:]
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out["controller_cpu_s"] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    out["wall_s"] = time.perf_counter() - t0
    # Sessions end a moment after the client: wait until only the listeners are left.
    _bedprobe.wait_gone(bed, 10.0)
    after = _bedprobe.cpu_table(_bedprobe.snapshot(bed, inodes))
    table = _bedprobe.cpu_since(base, after)
    out["remote_cpu_s"] = sum(v[2] for v in table.values())
    out["remote_cpu_per_host_s"] = out["remote_cpu_s"] / len(bed.hosts)
    return out


def _med(runs: list[dict[str, Any]], mode: str, key: str) -> float | None:
    vals = [r[key] for r in runs if r["mode"] == mode and r.get("rc") == 0 and key in r]
    return statistics.median(vals) if vals else None


def report(doc: dict[str, Any]) -> str:
    runs, n = doc["runs"], doc["hosts"]
    lines = [f"# `dask-ssh --check` on {n} hosts", "",
             f"- date (UTC): {doc['date']}; sshdeploy `{doc['source'].get('head')}`",
             f"- command: `{doc['command']}`",
             f"- load at start: `{doc['uptime_start']}`; at end: `{doc['uptime_end']}`", "",
             "Medians of the repeats. Remote CPU: every process in the hosts' namespaces "
             "(sshd and its reaped children). Probe alone = that mode minus `login`, per host.",
             "", "| mode | wall [s] | remote CPU [CPU-s] | per host [CPU-s] | "
             "probe alone per host [CPU-s] | controller CPU [CPU-s] | ok |",
             "|---|---|---|---|---|---|---|"]
    login = _med(runs, "login", "remote_cpu_per_host_s")
    for mode in MODES:
        wall, cpu = _med(runs, mode, "wall_s"), _med(runs, mode, "remote_cpu_s")
        per, ctl = _med(runs, mode, "remote_cpu_per_host_s"), _med(runs, mode, "controller_cpu_s")
        if wall is None or cpu is None or per is None or ctl is None:
            lines.append(f"| {mode} | - | - | - | - | - | 0 |")
            continue
        alone = "-" if mode == "login" or login is None else f"{per - login:.3f}"
        ok = sum(1 for r in runs if r["mode"] == mode and r.get("rc") == 0)
        total = sum(1 for r in runs if r["mode"] == mode)
        lines.append(f"| {mode} | {wall:.2f} | {cpu:.2f} | {per:.3f} | {alone} | {ctl:.2f} | "
                     f"{ok}/{total} |")
    wall, per = _med(runs, "check", "wall_s"), _med(runs, "check", "remote_cpu_per_host_s")
    lines += ["", "## Issue 9 targets", ""]
    if wall is not None:
        lines.append(f"- **{'held' if wall <= 3.0 and n >= 48 else 'NOT held'}**: `--check` of "
                     f"48 hosts <= 3 s: {wall:.2f} s on {n} hosts")
    if per is not None and login is not None:
        alone = per - login
        lines.append(f"- **{'held' if alone <= 0.1 else 'NOT held'}**: the probe costs <= 0.1 "
                     f"CPU-s per host: {alone:.3f} CPU-s beyond the login ({per:.3f} with it; "
                     f"the login alone, sshd + the login shell's ~/.bashrc: {login:.3f})")
    deep = _med(runs, "check-imports", "remote_cpu_per_host_s")
    if deep is not None and per is not None and login is not None:
        lines.append(f"- for comparison, `--check-imports`: {deep - login:.3f} CPU-s per host "
                     f"beyond the login ({(per - login) / max(1e-9, deep - login):.2f}x of it "
                     f"for the default probe)")
    return "\n".join(lines) + "\n"


def main() -> int:
    from sshdeploy import testbed

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=testbed.MAX_HOSTS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bed", default="bpre")
    p.add_argument("--out", default=None, help="directory for preflight.json / preflight.md")
    p.add_argument("--keep-bed", action="store_true")
    args = p.parse_args()
    doc: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "source": _bedprobe.source_state(), "hosts": args.hosts,
        "uptime_start": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "runs": [],
    }
    print(f"bringing up bed {args.bed!r} with {args.hosts} hosts ...", flush=True)
    bed = _bedprobe.bring_up(args.hosts, args.bed)
    try:
        inodes = _bedprobe._netns_inodes(bed)
        for r in range(args.repeats):
            for mode in (MODES if r % 2 == 0 else tuple(reversed(MODES))):
                res = run_one(bed, mode, inodes)
                doc["runs"].append(res)
                print(f"r{r + 1} {mode:<14} wall {res['wall_s']:6.2f} s  remote "
                      f"{res['remote_cpu_per_host_s']:.3f} CPU-s/host  rc {res['rc']}",
                      flush=True)
    finally:
        if not args.keep_bed:
            testbed.down(args.bed)
    doc["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    text = report(doc)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "preflight.json").write_text(json.dumps(doc, indent=1))
        (out / "preflight.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
