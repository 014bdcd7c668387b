"""What a named cluster costs beside an ordinary one, side by side in one run (issue 17).

On a bed of its own (4 hosts: a scheduler and 3 worker hosts, 1 worker
each), ``--repeats`` rounds in rotation of:

* ``foreground``: ``SSHCluster(hosts)`` to every worker ready, then ``close()``;
* ``up``: ``SSHCluster(hosts, name=..., shutdown_on_close=False)`` to ready
  (the same start plus the records written here and on the scheduler host),
  then ``close()`` (detach);
* ``from_name``: ``SSHCluster.from_name(name)`` to a Client that ran a task;
* ``down``: ``shutdown()`` of it until nothing is left on any host;

then ``list`` (every cluster probed on its scheduler host) with 10 named
clusters recorded. Prints medians and the ratios; ``--out`` writes JSON and
Markdown. Timings on a shared 2-core machine: only large differences mean
anything (the load average is recorded).

    python benchmarks/bench_named.py --repeats 3 --out benchmarks/results/
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from distributed import Client

from sshdeploy import SSHCluster, testbed
from sshdeploy.named import flow
from sshdeploy.named.state import StateStore

BED = "sdbnamed"


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clusters", type=int, default=10, help="named clusters for `list`")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="bench-named-")
    bed = testbed.up(4, BED)
    hosts = [h.name for h in bed.hosts]
    opts = bed.connect_options()
    times: dict[str, list[float]] = {k: [] for k in ("foreground", "up", "detach",
                                                      "from_name", "down")}
    try:
        for r in range(args.repeats):
            def fg() -> None:
                with SSHCluster(hosts, connect_options=opts) as c, Client(c) as client:
                    client.wait_for_workers(3, timeout=120)
            times["foreground"].append(timed(fg))
            name = f"bench{r}"
            box: dict[str, SSHCluster] = {}

            def up() -> None:
                box["c"] = SSHCluster(hosts, connect_options=opts, name=name,
                                      shutdown_on_close=False)
                with Client(box["c"]) as client:
                    client.wait_for_workers(3, timeout=120)
            times["up"].append(timed(up))
            times["detach"].append(timed(lambda: box["c"].close()))

            def attach() -> None:
                box["c"] = SSHCluster.from_name(name)
                with Client(box["c"]) as client:
                    assert client.submit(sum, [1, 2]).result(timeout=60) == 3
            times["from_name"].append(timed(attach))
            times["down"].append(timed(lambda: box["c"].shutdown()))
            assert testbed.python_processes(bed) == {}
        store = StateStore()
        for i in range(args.clusters):  # each: a scheduler on host 1, a worker on one other
            SSHCluster([hosts[0], hosts[1 + i % 3]], connect_options=opts, name=f"many{i}",
                       shutdown_on_close=False).close()
        records = store.records()
        t_list = [timed(lambda: asyncio.run(flow.probe_all(records)))
                  for _ in range(args.repeats)]
        for record in records:
            asyncio.run(flow.stop(record, store))
        assert testbed.python_processes(bed) == {}
    finally:
        testbed.down(BED)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "medians_s": med,
        "all_s": times,
        "up_over_foreground": med["up"] / med["foreground"],
        "list_10_clusters_s": statistics.median(t_list),
        "repeats": args.repeats,
        "loadavg": os.getloadavg(),
        "hosts": len(hosts),
    }
    lines = [
        "| measure | median (s) |", "|---|---|",
        *(f"| {k} | {v:.2f} |" for k, v in med.items()),
        f"| list, {args.clusters} clusters | {result['list_10_clusters_s']:.2f} |",
        "", f"up / foreground start: {result['up_over_foreground']:.2f}x "
        f"(load average {result['loadavg'][0]:.1f} on {os.cpu_count()} cores)",
    ]
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "named.json").write_text(json.dumps(result, indent=1))
        (args.out / "named.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
