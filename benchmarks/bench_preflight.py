#!/usr/bin/env python
"""What ``dask-ssh --check`` costs: wall time and remote CPU per host, on a 48-host bed.

Side by side in one run, ``--repeats`` times in alternating order, on the
same hosts (all of a bed of ``--hosts``, 48 by default, the bed's maximum):

login
    the floor: one SSH connection per host (8 handshakes at a time, as
    sshdeploy's ``connect-parallelism``) running ``true``; what any command
    over SSH costs on these hosts (sshd, the login shell and its ``~/.bashrc``)
login-python
    the same login starting the remote Python once (``python -c pass``): the
    floor issue 29 compares ``--check`` with (target: <= 1.25x)
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

``--bad-names N`` (issue 29) measures instead ``dask-ssh --no-progress`` on two
good bed hosts and N names that do not resolve, given in a hostfile and on the
command line: seconds to its first line of output, to its error, and to its
exit. ``--resolver stub`` (the default) runs it in a mount namespace whose
resolv.conf names a stub on loopback (:mod:`sshdeploy.testbed.dns`: NXDOMAIN
at once, no answer at all for ``--quiet`` of the names, as a resolver that
drops queries), so no query leaves the machine; ``--resolver system`` uses this
machine's resolver as it is (the issue's measurement: 21 s before the fix).

    python benchmarks/bench_preflight.py --bad-names 100 --quiet 10 --repeats 3
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

MODES = ("login", "login-python", "check", "check-imports")


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
    if mode in ("login", "login-python"):
        c0 = time.process_time()
        command = "true" if mode == "login" else f"{sys.executable} -c pass"
        asyncio.run(_bedprobe.run_everywhere([h.address for h in bed.hosts],
                                             bed.connect_options(), command))
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
    floor = _med(runs, "login-python", "wall_s")
    if wall is not None and floor:
        lines.append(f"- issue 29: **{'held' if wall <= 1.25 * floor else 'NOT held'}**: "
                     f"`--check` <= 1.25x a login that starts the remote Python once: "
                     f"{wall / floor:.2f}x ({wall:.2f} s vs {floor:.2f} s)")
    deep = _med(runs, "check-imports", "remote_cpu_per_host_s")
    if deep is not None and per is not None and login is not None:
        lines.append(f"- for comparison, `--check-imports`: {deep - login:.3f} CPU-s per host "
                     f"beyond the login ({(per - login) / max(1e-9, deep - login):.2f}x of it "
                     f"for the default probe)")
    return "\n".join(lines) + "\n"


def bad_names_run(bed: Any, n: int, quiet: int, resolver: str, given: str,
                  tmp: Path) -> dict[str, Any]:
    """One ``dask-ssh --no-progress`` on 2 good hosts and *n* bad names; its timings."""
    from sshdeploy.testbed.dns import StubResolver, with_resolver

    names = [f"quiet{i:03d}.invalid" if i < quiet else f"nohost{i:03d}.invalid"
             for i in range(n)]
    names = names[::2] + names[1::2]
    good = [f"root@{h.name}" for h in bed.hosts[:2]]
    if given == "hostfile":
        path = tmp / "hosts"
        path.write_text("\n".join([*good, *names]) + "\n")
        hosts = ["--hostfile", str(path)]
    else:
        hosts = [*good, *names]
    argv = [sys.executable, "-m", "sshdeploy.cli", "--no-progress", "--known-hosts",
            str(bed.known_hosts), "--ssh-private-key", str(bed.client_key), *hosts]
    stub = StubResolver() if resolver == "stub" else None
    try:
        if stub is not None:
            argv = with_resolver(stub.resolv_conf(tmp), argv)
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        first = error = None
        named = 0
        assert proc.stdout is not None
        for raw in proc.stdout:
            now = time.perf_counter() - t0
            line = raw.decode(errors="replace")
            first = now if first is None else first
            if error is None and line.startswith("Error:"):
                error = now
            named += line.startswith("  - [")
        rc = proc.wait(300)
        out = {"given": given, "resolver": resolver, "bad": n, "quiet": quiet, "rc": rc,
               "first_output_s": first, "error_s": error,
               "exit_s": time.perf_counter() - t0, "named": named,
               "load": os.getloadavg()[0],
               # with it set, every run compiles sshdeploy, asyncssh... anew (~1 CPU-s)
               "dont_write_bytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))}
    finally:
        if stub is not None:
            stub.close()
    return out


def bad_names_report(runs: list[dict[str, Any]]) -> str:
    lines = ["# Unresolvable names: `dask-ssh --no-progress` on 2 good hosts and N bad names",
             "", "| given | resolver | bad (quiet) | first output [s] | error [s] | exit [s] | "
             "named | rc |", "|---|---|---|---|---|---|---|---|"]
    for given in ("hostfile", "command line"):
        mine = [r for r in runs if r["given"] == given]
        if not mine:
            continue

        def med(key: str, mine: list[dict[str, Any]] = mine) -> str:
            vals = [r[key] for r in mine if r.get(key) is not None]
            return f"{statistics.median(vals):.2f}" if vals else "-"

        r0 = mine[0]
        lines.append(f"| {given} | {r0['resolver']} | {r0['bad']} ({r0['quiet']}) | "
                     f"{med('first_output_s')} | {med('error_s')} | {med('exit_s')} | "
                     f"{min(r['named'] for r in mine)} | {sorted({r['rc'] for r in mine})} |")
    worst = max((r["exit_s"] for r in runs), default=None)
    if worst is not None:
        lines += ["", f"- issue 29: **{'held' if worst <= 5.0 else 'NOT held'}**: every run "
                  f"failed within 5 s (slowest exit {worst:.2f} s)"]
    return "\n".join(lines) + "\n"


def main() -> int:
    from sshdeploy import testbed

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=testbed.MAX_HOSTS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bed", default="bpre")
    p.add_argument("--out", default=None, help="directory for preflight.json / preflight.md")
    p.add_argument("--keep-bed", action="store_true")
    p.add_argument("--bad-names", type=int, default=0,
                   help="measure N unresolvable names beside 2 good hosts instead")
    p.add_argument("--quiet", type=int, default=10,
                   help="of --bad-names, how many the stub resolver never answers")
    p.add_argument("--resolver", choices=("stub", "system"), default="stub")
    args = p.parse_args()
    if args.bad_names:
        return main_bad_names(args)
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


def main_bad_names(args: argparse.Namespace) -> int:
    import tempfile

    from sshdeploy import testbed

    bed = _bedprobe.bring_up(2, args.bed)
    runs: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.repeats):
                for given in ("hostfile", "command line"):
                    res = bad_names_run(bed, args.bad_names, args.quiet, args.resolver, given,
                                        Path(tmp))
                    runs.append(res)
                    print(f"r{r + 1} {given:<12} first {res['first_output_s'] or -1:5.2f} s  "
                          f"error {res['error_s'] or -1:5.2f} s  exit {res['exit_s']:5.2f} s  "
                          f"named {res['named']}  rc {res['rc']}", flush=True)
    finally:
        if not args.keep_bed:
            testbed.down(args.bed)
    text = bad_names_report(runs)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bad_names.json").write_text(json.dumps(runs, indent=1))
        (out / "bad_names.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
