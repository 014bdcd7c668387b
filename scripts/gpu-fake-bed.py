"""A test bed whose hosts look like GPU servers, for trying `--gpus` without a GPU (issue 28).

    python scripts/gpu-fake-bed.py [--name NAME] [--remove]

Brings up a 4-host bed (``python -m sshdeploy.testbed``; needs root) and gives
its hosts fake GPUs, as ``tests/integration/test_gpus.py`` does:

- host 1 runs the scheduler; host 2 has no GPU at all;
- host 3: the fake ``nvidia-smi`` (tests/fakes) with 2 Tesla T4, GPU 1 busy
  with another user's compute process (a pid not visible on the host);
- host 4: the fake ``libnvidia-ml.so.1`` (built here with gcc) with 4 A100.

Each host's fakes live in its own ``/tmp/fakegpu`` (a bed host's /tmp is its
own); the setup printed at the end puts them on the PATH and library path, so
the real probe finds them (NVML through ctypes, nvidia-smi, neither). It then
prints the commands to try (``--dry-run``, ``--check``). ``--remove`` takes the
fakes away (``python -m sshdeploy.testbed down --name NAME`` the bed).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from sshdeploy import testbed

FAKES = Path(__file__).resolve().parents[1] / "tests" / "fakes"
SETUP = "export PATH=/tmp/fakegpu:$PATH LD_LIBRARY_PATH=/tmp/fakegpu"
#: A pid no process has (above the kernel's default pid_max): another container's process.
OTHERS = 4194999
T4 = [f"GPU-3{i}{'0' * 7}-0000-0000-0000-00000000000{i}" for i in range(2)]
A100 = [f"GPU-4{i}{'0' * 7}-0000-0000-0000-00000000000{i}" for i in range(4)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="gpus", help="the bed's name (default: gpus)")
    parser.add_argument("--remove", action="store_true", help="take the fake GPUs away")
    args = parser.parse_args()
    bed = testbed.up(4, args.name)
    n3, n4 = bed.hosts[2:]
    dirs = {h.name: testbed.host_path(h, "/tmp/fakegpu") for h in (n3, n4)}
    if args.remove:
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)
        print(f"fake GPUs removed; `python -m sshdeploy.testbed down --name {args.name}` "
              "takes the bed down")
        return 0
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        print("no C compiler here to build the fake libnvidia-ml.so.1", file=sys.stderr)
        return 1
    for d in dirs.values():
        d.mkdir(exist_ok=True)
    shutil.copy(FAKES / "nvidia-smi", dirs[n3.name] / "nvidia-smi")
    (dirs[n3.name] / "gpus.txt").write_text(f"{T4[0]},Tesla T4,15360,3\n"
                                            f"{T4[1]},Tesla T4,15360,9000,{OTHERS}:8990\n")
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(dirs[n4.name] / "libnvidia-ml.so.1"),
                    str(FAKES / "fake_nvml.c")], check=True)
    (dirs[n4.name] / "gpus.txt").write_text("".join(f"{u},A100-SXM4-80GB,81920,0\n"
                                                    for u in A100))
    common = ["--known-hosts", str(bed.known_hosts), "--ssh-private-key", str(bed.client_key),
              "--ssh-username", "root", "--setup", SETUP]
    hosts = [h.name for h in bed.hosts]
    print(f"bed {args.name!r}: {hosts[1]} no GPU; {n3.name} 2 GPUs (nvidia-smi), gpu1 busy "
          f"(pid {OTHERS}, another user's); {n4.name} 4 GPUs (NVML)\ntry:")
    for extra in (["--gpus", "free", "--dry-run"], ["--gpus", "free", "--check"]):
        print("  dask-ssh " + shlex.join([*extra, *common, *hosts]))
    print(f"  SSHCluster({hosts!r}, gpus='free', setup={SETUP!r},\n"
          f"             connect_options={bed.connect_options()!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
