"""The main job, end to end: a local 3-host test bed, a Dask cluster on it over SSH, a computation.

``python -m sshdeploy.demo`` brings up the default test bed (three hosts, each a
network namespace with its own sshd), starts the scheduler on the first host and
workers on the other two over SSH with strict host-key checking, computes
``da.exp(da.random.random((4000, 4000), chunks=(1000, 1000))).sum()``, prints
the result and which hosts did the work, then closes the cluster and takes the
bed down (``--keep`` leaves the bed up).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter

import click


@click.command()
@click.option("--hosts", "n_hosts", default=3, show_default=True, help="Hosts in the bed.")
@click.option("--workers-per-host", default=2, show_default=True)
@click.option("--keep", is_flag=True, help="Leave the test bed up afterwards.")
@click.option("--name", default="sshdeploy", show_default=True, help="Test bed name.")
def main(n_hosts: int, workers_per_host: int, keep: bool, name: str) -> None:
    """Run a real Dask computation on a local multi-host test bed over SSH."""
    import dask.array as da
    from distributed import Client, get_task_stream

    from . import testbed
    from .cluster import SSHCluster
    from .hostfile import load_hostfile

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    out = click.echo
    try:
        t0 = time.monotonic()
        bed = testbed.up(n_hosts, name)
        out(f"test bed: {', '.join(f'{h.name} ({h.address})' for h in bed.hosts)} "
            f"up in {time.monotonic() - t0:.1f} s")
        hosts = load_hostfile(bed.hostfile)[:n_hosts]
        t0 = time.monotonic()
        with SSHCluster(
            hosts,
            # Host keys are checked against the bed's known_hosts; nothing is skipped.
            connect_options=bed.connect_options(),
            worker_options={"n_workers": workers_per_host, "nthreads": 1},
        ) as cluster, Client(cluster) as client:
            out(f"cluster: scheduler {cluster.scheduler_address}, "
                f"{len(cluster.workers)} workers, started in {time.monotonic() - t0:.1f} s")
            out(f"dashboard: {cluster.dashboard_link}")
            x = da.exp(da.random.random((4000, 4000), chunks=(1000, 1000))).sum()
            with get_task_stream(client) as ts:
                result = x.compute()
            info = client.scheduler_info(n_workers=-1)["workers"]
            names = {a: w["name"] for a, w in info.items()}
            hostname = client.run(__import__("socket").gethostname)
            per_host: Counter[str] = Counter(hostname.get(t["worker"], "?") for t in ts.data)
            per_worker: Counter[str] = Counter(names.get(t["worker"], "?") for t in ts.data)
            out(f"result: {result:.6f}")
            for host, n in sorted(per_host.items()):
                workers = sorted(w for w in per_worker if w.startswith(f"{host}-"))
                out(f"  {host}: {n} tasks on {', '.join(workers)}")
            t0 = time.monotonic()
        clean = all(_only_sshd(testbed.processes(h)) for h in bed.hosts)
        out(f"cluster closed in {time.monotonic() - t0:.1f} s; nothing left on the hosts: {clean}")
    finally:
        if not keep:
            testbed.down(name)
            out("test bed down")


def _only_sshd(procs: list[tuple[int, str]]) -> bool:
    return all(cmd.startswith("sshd") for _pid, cmd in procs)


if __name__ == "__main__":
    sys.exit(main())
