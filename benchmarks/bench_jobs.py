"""`dask-ssh submit` against a local Client: time to the script's first line, in one run
(issue 27, must-hold 7).

On a bed (2 hosts: the scheduler's and one worker host), one named cluster is
started with ``dask-ssh up``; then ``--repeats`` rounds in rotation of:

* ``submit``: ``dask-ssh submit NAME first_line.py`` as a new process, from its
  start to the first line the script prints (its ``Client()`` connected),
  read from that process's stdout: the CLI's start, the SSH connection, the
  upload (content-addressed: nothing is sent after the first round), the
  job's start beside the scheduler (its Python, ``import distributed``);
* ``local``: ``python first_line.py`` as a new process on this machine with
  ``DASK_SCHEDULER_ADDRESS`` of the attached cluster
  (``SSHCluster.from_name(NAME).scheduler_address``), from its start to its
  first line: what a user pays to run the same script with a local Client.

Prints medians and the ratio submit / local; ``--out`` writes JSON and
Markdown. On a shared 2-core machine only large differences mean anything
(the load average is recorded).

    python benchmarks/bench_jobs.py --repeats 5 --out benchmarks/results/
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _source  # noqa: F401  (before anything imports sshdeploy)

from sshdeploy import SSHCluster, testbed

#: The script both ways run: its first line comes once its Client() is connected.
SCRIPT = """\
from distributed import Client

client = Client()
print("connected to", len(client.scheduler_info()["workers"]), "worker(s)", flush=True)
print("result", client.submit(sum, range(10)).result(), flush=True)
"""


def first_line(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Start *argv*; return the seconds to its first stdout line, and that line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    took = time.perf_counter() - t0
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0 and line.startswith("connected"), (line, out, err)
    return took, line.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bed", default="sdbjobs", help="bed name (brought up if missing)")
    parser.add_argument("--hosts", type=int, default=2, help="bed size (the cluster uses 2)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    state = tempfile.mkdtemp(prefix="bench-jobs-")
    os.environ["XDG_STATE_HOME"] = state
    env = {**os.environ, "NO_COLOR": "1"}
    bed = testbed.up(args.hosts, args.bed)
    hosts = [h.name for h in bed.hosts][:2]
    work = Path(state) / "work"
    work.mkdir()
    script = work / "first_line.py"
    script.write_text(SCRIPT)
    name = "benchjobs"
    dask_ssh = [sys.executable, "-m", "sshdeploy.cli"]
    up = subprocess.run([*dask_ssh, "up", "--name", name, "--known-hosts", str(bed.known_hosts),
                         "--ssh-private-key", str(bed.client_key), "--ssh-username", "root",
                         "--scheduler-port", "0", "--dashboard-address", ":0", *hosts],
                        env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    times: dict[str, list[float]] = {"submit": [], "local": []}
    try:
        cluster = SSHCluster.from_name(name)
        local_env = {**env, "DASK_SCHEDULER_ADDRESS": cluster.scheduler_address}
        try:
            for _ in range(args.repeats):
                took, _line = first_line([*dask_ssh, "submit", name, str(script)], env)
                times["submit"].append(took)
                took, _line = first_line([sys.executable, str(script)], local_env)
                times["local"].append(took)
        finally:
            cluster.close()  # detach
    finally:
        down = subprocess.run([*dask_ssh, "down", name], env=env, capture_output=True,
                              text=True, timeout=300)
        assert down.returncode == 0, down.stdout + down.stderr
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "medians_s": med,
        "all_s": times,
        "submit_over_local": med["submit"] / med["local"],
        "repeats": args.repeats,
        "loadavg": os.getloadavg(),
        "cpus": os.cpu_count(),
        "hosts": len(hosts),
    }
    lines = [
        "| to the script's first line | median (s) | all (s) |", "|---|---|---|",
        *(f"| {k} | {med[k]:.2f} | {', '.join(f'{t:.2f}' for t in times[k])} |"
          for k in ("submit", "local")),
        "", f"submit / local: {result['submit_over_local']:.2f}x "
        f"(load average {result['loadavg'][0]:.1f} on {os.cpu_count()} cores)",
    ]
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "jobs.json").write_text(json.dumps(result, indent=1))
        (args.out / "jobs.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
