"""What port forwarding and TLS cost in start-up time, side by side in one run.

Starts the same 1-scheduler + 2-worker cluster on the default test bed plain,
with forwarded ports, with TLS, with both, and on the bed's private network
(auto-forwarded), ``--repeats`` times each in rotation, and prints the
median time from ``SSHCluster(...)`` to ready and the ratio to plain.

    python benchmarks/bench_networks.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

from distributed import Client

from sshdeploy import SSHCluster, testbed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bed = testbed.up(4)
    n1, n2, n3 = (h.name for h in bed.hosts[:3])
    iface = bed.private_interface
    variants = {
        "plain": {},
        "forward_ports=True": {"forward_ports": True},
        "security=True": {"security": True},
        "TLS + forwarding": {"security": True, "forward_ports": True},
        "private network (auto)": {"scheduler_options": {"interface": iface},
                                   "worker_options": {"interface": iface}},
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    try:
        for _ in range(args.repeats):
            for name, kw in variants.items():
                t0 = time.perf_counter()
                with SSHCluster([n1, n2, n3], connect_options=bed.connect_options(),
                                **kw) as cluster:  # type: ignore[arg-type]
                    times[name].append(time.perf_counter() - t0)
                    with Client(cluster) as client:
                        assert client.submit(sum, [1, 2]).result() == 3
    finally:
        testbed.down()
    base = statistics.median(times["plain"])
    print(f"{'variant':28} {'median start (s)':>17} {'ratio to plain':>15}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:28} {med:17.2f} {med / base:15.2f}")


if __name__ == "__main__":
    main()
