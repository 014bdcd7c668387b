#!/usr/bin/env python
"""Hosts that come and go: lazy bring-up and the replacement of a lost host, side by side.

Two parts, on one bed of ``--hosts`` hosts (17 by default: a scheduler host and
16 worker hosts; the bed is brought up under ``--bed`` and taken down at the
end unless ``--keep``), each run ``--repeats`` times:

first-worker
    Seconds from the constructor to the first worker registered, and the
    hosts logged into by then, for: sshdeploy with every worker
    (``all``), sshdeploy with ``initial_workers=1`` (``lazy``, what
    ``adapt(minimum=1, ...)`` over a pool starts from) and distributed's
    SSHCluster (which starts every worker). The ratio is lazy over the others.
lost-host
    4 worker hosts and one spare; 200 tasks of 50 ms run while one worker
    host's link is cut for good. sshdeploy (``host-lost-after`` 5 s,
    heartbeat 3 s, keepalive 1 s x 2): seconds from the cut until 4 workers
    run on reachable hosts again, and whether the result is right.
    distributed's SSHCluster on the same hosts (no spares): the workers on
    reachable hosts 60 s after the cut.

Prints a table; writes ``--out`` JSON and markdown. Only reports; asserts
nothing.

    python benchmarks/bench_comego.py --hosts 17 --repeats 2 --out benchmarks/results/
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bedprobe
import _source  # noqa: F401  (before anything imports sshdeploy)

TASKS = 200


def _logged_in(bed: Any) -> int:
    """Worker hosts running any Python process of ours (a login that got that far)."""
    from sshdeploy import testbed

    return len(set(testbed.python_processes(bed)) - {bed.hosts[0].name})


def first_worker(bed: Any, impl: str) -> dict[str, Any]:
    from distributed.deploy.ssh import SSHCluster as DistSSHCluster

    from sshdeploy import SSHCluster

    names = [h.name for h in bed.hosts]
    t0 = time.perf_counter()
    if impl == "distributed":
        cluster: Any = DistSSHCluster(names, connect_options=bed.connect_options())
    else:
        extra = {"initial_workers": 1} if impl == "lazy" else {}
        cluster = SSHCluster(names, connect_options=bed.connect_options(), **extra)
    try:
        ok = _bedprobe.wait_workers(cluster, 1, 120)
        out = {"impl": impl, "first_worker_s": time.perf_counter() - t0 if ok else None,
               "hosts_logged_in": _logged_in(bed), "load": os.getloadavg()[0]}
    finally:
        cluster.close()
    _bedprobe.kill_leftovers(bed)
    return out


def lost_host(bed: Any, impl: str) -> dict[str, Any]:
    import dask
    from distributed import Client
    from distributed.deploy.ssh import SSHCluster as DistSSHCluster

    from sshdeploy import SSHCluster, testbed

    names = [h.name for h in bed.hosts[:6]]  # scheduler, 4 workers, a spare
    settings = {"sshdeploy.heartbeat-timeout": 3, "sshdeploy.keepalive-interval": 1,
                "sshdeploy.keepalive-count-max": 2, "sshdeploy.connect-timeout": 2,
                "sshdeploy.connect-attempts": 1, "sshdeploy.host-lost-after": 5}
    out: dict[str, Any] = {"impl": impl, "load": os.getloadavg()[0]}
    lost = bed.host(names[2])

    def elsewhere(client: Any) -> int:
        """Workers the scheduler knows that are not on the host cut off (usable ones)."""
        return sum(1 for address in client.scheduler_info()["workers"]
                   if f"//{lost.address}:" not in address)
    with dask.config.set(settings):
        if impl == "distributed":
            cluster: Any = DistSSHCluster(names[:5], connect_options=bed.connect_options())
        else:
            cluster = SSHCluster(names[:5], connect_options=bed.connect_options(),
                                 spares=[names[5]])
        try:
            with Client(cluster) as client:
                client.wait_for_workers(4, timeout=120)
                futures = client.map(lambda x: __import__("time").sleep(0.05) or x * x,
                                     range(TASKS))
                testbed.set_link(lost, False)
                cut = time.perf_counter()
                try:
                    deadline = cut + 60
                    back = None
                    while time.perf_counter() < deadline:
                        n = elsewhere(client)
                        if n == 4:
                            back = time.perf_counter() - cut
                            break
                        time.sleep(0.1)
                    out["back_to_4_s"] = back
                    out["workers_60s_after"] = elsewhere(client)
                    try:
                        total = client.submit(sum, futures).result(timeout=120)
                        out["result_ok"] = total == sum(x * x for x in range(TASKS))
                    except Exception as exc:  # distributed may lose the tasks for good
                        out["result_ok"] = False
                        out["result_error"] = f"{type(exc).__name__}: {exc}"[:300]
                finally:
                    testbed.set_link(lost, True)
        finally:
            cluster.close()
    _bedprobe.kill_leftovers(bed)
    return out


def _median(rows: list[dict[str, Any]], impl: str, key: str) -> float | None:
    values = [r[key] for r in rows if r["impl"] == impl and r.get(key) is not None]
    return statistics.median(values) if values else None


def markdown(doc: dict[str, Any]) -> str:
    rows = doc["first_worker"]
    lines = [f"# Hosts that come and go ({doc['hosts']} hosts, {doc['repeats']} repeats)", "",
             "| first worker | seconds (median) | worker hosts logged into | lazy / this |",
             "|---|---|---|---|"]
    lazy = _median(rows, "lazy", "first_worker_s")
    for impl in ("lazy", "all", "distributed"):
        s = _median(rows, impl, "first_worker_s")
        hosts = _median(rows, impl, "hosts_logged_in")
        ratio = f"{lazy / s:.2f}x" if lazy and s else "-"
        lines.append(f"| {impl} | {s if s is None else round(s, 2)} | {hosts} | {ratio} |")
    lines += ["", "| lost host | back to 4 usable workers after the cut (s) | usable workers "
              "60 s after | result right |", "|---|---|---|---|"]
    for r in doc["lost_host"]:
        back = r.get("back_to_4_s")
        lines.append(f"| {r['impl']} | {'never (60 s)' if back is None else round(back, 1)} "
                     f"| {r.get('workers_60s_after')} | {r.get('result_ok')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=17)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--bed", default="sdcomego")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--parts", default="first-worker,lost-host")
    args = ap.parse_args(argv)
    from sshdeploy import testbed

    bed = _bedprobe.bring_up(args.hosts, args.bed)
    doc: dict[str, Any] = {"hosts": args.hosts, "repeats": args.repeats,
                           "first_worker": [], "lost_host": [],
                           "source": _bedprobe.source_state()}
    try:
        for _ in range(args.repeats if "first-worker" in args.parts else 0):
            for impl in ("lazy", "all", "distributed"):
                doc["first_worker"].append(first_worker(bed, impl))
                print(doc["first_worker"][-1], flush=True)
        for impl in ("sshdeploy", "distributed") if "lost-host" in args.parts else ():
            doc["lost_host"].append(lost_host(bed, impl))
            print(doc["lost_host"][-1], flush=True)
    finally:
        if not args.keep:
            testbed.down(bed.name)
    text = markdown(doc)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "comego.json").write_text(json.dumps(doc, indent=1))
        (args.out / "comego.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
