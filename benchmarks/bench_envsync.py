#!/usr/bin/env python
"""What ``environment="sync"`` and ``upload=`` cost: bytes sent and seconds to a running cluster.

On a bed of ``--hosts`` hosts (8 by default; the bed is brought up under
``--bed`` and taken down at the end unless ``--keep``), one worker per host
but the scheduler's, each mode ``--repeats`` times:

plain-ignore
    the controller's own Python on every host, ``sshdeploy.version-check:
    ignore`` (no stage before the start: sshdeploy before issue 18)
plain
    the same with the version gate (the default): one probe per host
sync-first
    Debian's bare ``/usr/bin/python3`` (no dask) with ``environment="sync"``,
    after the hosts' caches were emptied: the pack goes from here to one
    host and the others fetch it from a host that holds it (the relay, the default)
sync-direct
    the same with ``sshdeploy.env-relay: false``: the pack goes from here to
    every host (sshdeploy before issue 29)
sync-cached
    the same again: a hash check per host, nothing sent
upload-1MiB, upload-50MiB
    a tree of that size with ``upload=[...]``; then one file changes and
    ``cluster.sync_uploads()`` sends it (``delta`` columns)
upload-relay, upload-direct
    a 20 MiB tree (new contents: no host holds them) with ``upload=[...]``,
    above ``sshdeploy.upload-relay-size``: sent from here to one host and
    fetched by the others from a host that holds them (the upload relay, the
    default), or with ``sshdeploy.env-relay: false`` sent to every host from
    here (sshdeploy before the upload relay)

Seconds run from the constructor to every worker connected. ``out bytes``
is what this machine sent on the cluster's SSH connections during the start
(the kernel's count per connection, ``HostPool.bytes_sent``: agents, probes
and packs, SSH framing included); ``env bytes`` the packs' bytes from here
alone. Prints a table; writes ``--out`` JSON and markdown. Only reports;
asserts nothing.

    python benchmarks/bench_envsync.py --hosts 8 --repeats 2 --out benchmarks/results/

``--modes plain-ignore,plain --stem gate`` measures the version gate's cost alone;
``--modes sync-direct,sync-first --stem relay`` the relay against the direct path
(``--modes upload-direct,upload-relay`` the upload relay's);
``--uplink 100mbit`` limits what this machine sends into the bed (a ``tbf`` qdisc
on the bed's own bridge, which shapes only what this machine sends, not
host-to-host traffic; refused on the bridge other beds share), as a laptop's uplink.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bedprobe
import _source  # noqa: F401  (before anything imports sshdeploy)

BARE = "/usr/bin/python3"
MODES = ("plain-ignore", "plain", "sync-direct", "sync-first", "sync-cached", "upload-1MiB",
         "upload-50MiB", "upload-direct", "upload-relay")
#: Each upload mode's tree: bytes, files.
UPLOADS = {"upload-1MiB": (1 << 20, 64), "upload-50MiB": (50 << 20, 100),
           "upload-direct": (20 << 20, 20), "upload-relay": (20 << 20, 20)}


def tree(root: Path, total: int, files: int) -> Path:
    """A package of *files* modules of random bytes (as comments) totalling *total* bytes."""
    pkg = root / f"payload{total}"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("VALUE = 1\n")
    each = total // files
    for i in range(files):
        (pkg / f"m{i}.py").write_text("# " + os.urandom(each // 2).hex()[: each - 3] + "\n")
    return pkg


def start(bed: Any, **kw: Any) -> tuple[Any, float, float]:
    """Start on every bed host; return the cluster, seconds to its workers, controller CPU-s."""
    from sshdeploy import SSHCluster

    t0, cpu0 = time.perf_counter(), time.process_time()
    cluster = SSHCluster([h.name for h in bed.hosts], connect_options=bed.connect_options(), **kw)
    if not _bedprobe.wait_workers(cluster, len(bed.hosts) - 1, 120):
        raise RuntimeError("workers did not connect")
    return cluster, time.perf_counter() - t0, time.process_time() - cpu0


def one(bed: Any, mode: str, work: Path, uplink: str | None = None) -> dict[str, Any]:
    import dask

    from sshdeploy.env.clean import clean

    out: dict[str, Any] = {"mode": mode, "hosts": len(bed.hosts), "load": os.getloadavg()[0],
                           "uplink": uplink}
    kw: dict[str, Any] = {}
    policy = "ignore" if mode == "plain-ignore" else "error"
    if mode.startswith("sync"):
        kw = {"remote_python": BARE, "environment": "sync"}
        if mode in ("sync-first", "sync-direct"):
            clean([h.name for h in bed.hosts], bed.connect_options(), BARE)
    if mode.startswith("upload"):
        size, files = UPLOADS[mode]
        pkg = tree(work / mode, size, files)  # new random contents: no host holds them
        kw = {"upload": [str(pkg)]}
        clean([h.name for h in bed.hosts], bed.connect_options(), envs=False)
    with dask.config.set({"sshdeploy.version-check": policy,
                          "sshdeploy.env-relay": mode not in ("sync-direct", "upload-direct")}):
        cluster, seconds, cpu = start(bed, **kw)
    try:
        reports = cluster.stage_reports
        out["seconds"] = round(seconds, 3)
        # This process's CPU during the start (every thread: packing, hashing, SSH) and its
        # peak RSS so far (the first start's peak includes importing distributed).
        out["controller_cpu_s"] = round(cpu, 3)
        out["controller_peak_rss_mib"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        out["out_bytes"] = sum(cluster.pool.bytes_sent().values())
        out["env_bytes"] = sum(r.env_bytes for r in reports.values()
                               if r.env_cached is False and not r.env_from)
        out["relayed_hosts"] = sum(1 for r in reports.values() if r.env_from or r.upload_from)
        out["refused"] = sum(len(r.env_refused) + len(r.upload_refused)
                             for r in reports.values())
        out["upload_fetched"] = sum(r.upload_fetched for r in reports.values())
        out["upload_bytes"] = sum(r.upload_bytes for r in reports.values())
        out["stage_seconds_max"] = round(max((r.seconds for r in reports.values()),
                                             default=0.0), 3)
        if mode.startswith("upload"):
            (pkg / "m0.py").write_text(f"# changed {os.urandom(8).hex()}\n")
            t0 = time.perf_counter()
            sent = cluster.sync_uploads()
            out["delta_seconds"] = round(time.perf_counter() - t0, 3)
            out["delta_bytes"] = sum(sent.values())
    finally:
        cluster.close()
    return out


def markdown(rows: list[dict[str, Any]], plain: float) -> str:
    """The table; *plain* is the ratios' base (0: no plain-ignore, the ratio is to the first
    mode)."""
    lines = ["| mode | hosts | start s (median) | ratio | out bytes | env bytes | "
             "upload bytes | delta bytes | delta s | controller CPU-s | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    plain = plain or statistics.median(r["seconds"] for r in rows if r["mode"] == rows[0]["mode"])
    for mode in dict.fromkeys(r["mode"] for r in rows):
        rs = [r for r in rows if r["mode"] == mode]
        med = statistics.median(r["seconds"] for r in rs)

        def m(key: str, rs: list[dict[str, Any]] = rs) -> str:
            vals = [r[key] for r in rs if key in r]
            return f"{statistics.median(vals):,.0f}" if vals else "-"

        delta_s = [r["delta_seconds"] for r in rs if "delta_seconds" in r]
        head = (f"| {mode} | {rs[0]['hosts']} | {med:.2f} | {med / plain:.2f} | "
                f"{m('out_bytes')} | {m('env_bytes')} | {m('upload_bytes')} | ")
        cpu = [r["controller_cpu_s"] for r in rs if "controller_cpu_s" in r]
        rss = [r["controller_peak_rss_mib"] for r in rs if "controller_peak_rss_mib" in r]
        tail = (f" {statistics.median(cpu):.2f} | {max(rss):.0f} |" if cpu and rss
                else " - | - |")
        lines.append(head + (f"{m('delta_bytes')} | {statistics.median(delta_s):.2f} |"
                             if delta_s else "- | - |") + tail)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--bed", default="sdbench")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated subset, e.g. plain-ignore,plain (the gate's cost)")
    parser.add_argument("--stem", default="envsync", help="--out file names: STEM.json, STEM.md")
    parser.add_argument("--uplink", default=None,
                        help="limit this machine's sending into the bed, e.g. 100mbit")
    args = parser.parse_args()
    from sshdeploy import testbed

    bed = _bedprobe.bring_up(args.hosts, args.bed)
    if args.uplink:
        if bed.bridge == testbed.BRIDGE:
            if not args.keep:
                testbed.down(args.bed)
            parser.error(f"--uplink needs a bed on a bridge of its own; {args.bed} is on "
                         f"{bed.bridge}, which other beds share")
        import subprocess

        subprocess.run(["tc", "qdisc", "replace", "dev", bed.bridge, "root", "tbf", "rate",
                        args.uplink, "burst", "256kb", "latency", "100ms"], check=True)
    rows: list[dict[str, Any]] = []
    modes = [m for m in MODES if m in args.modes.split(",")]
    try:
        with tempfile.TemporaryDirectory() as work:
            for _ in range(args.repeats):
                for mode in modes:
                    row = one(bed, mode, Path(work), args.uplink)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                    _bedprobe.kill_leftovers(bed)
    finally:
        if args.uplink:
            import subprocess

            subprocess.run(["tc", "qdisc", "del", "dev", bed.bridge, "root"], check=False)
        if not args.keep:
            testbed.down(args.bed)
    base = [r["seconds"] for r in rows if r["mode"] == "plain-ignore"]
    plain = statistics.median(base) if base else 0.0
    md = markdown(rows, plain)
    print(md)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {"source": _bedprobe.source_state(), "rows": rows}
        (args.out / f"{args.stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
        (args.out / f"{args.stem}.md").write_text(md)


if __name__ == "__main__":
    main()
