#!/usr/bin/env bash
# Check sshdeploy's GPU detection and pinning on a machine with a real NVIDIA GPU (issue 28).
#
#   bash scripts/gpu-check.sh            # from the repository root; no network needed
#   PYTHON=/opt/conda/bin/python bash scripts/gpu-check.sh
#
# 1. runs the probe the hosts run (sshdeploy/remote/gpus.py: NVML through ctypes, else
#    nvidia-smi) and prints what it found;
# 2. compares its UUIDs with `nvidia-smi -L`;
# 3. for each GPU found: a process pinned by UUID (CUDA_VISIBLE_DEVICES=GPU-...) must see
#    exactly one device, that one, and allocate 64 MiB on it (ctypes on libcuda.so.1: no
#    cupy or torch needed);
# 4. only if `ssh localhost` works without a prompt: a one-host SSHCluster with gpus="auto"
#    (the scheduler and the workers on this machine, over SSH); each worker must be named
#    <host>-gpu<index>, have resources GPU=1 and see exactly its own GPU, as in step 3.
# Steps 1-3 need only the standard library (PYTHON may be any python3); step 4 needs dask,
# distributed and asyncssh there. Each step is bounded: the whole check takes well under
# 5 minutes (a hung driver call ends its step with FAILED).
# Exit status: 0 all checks passed, 1 a check failed, 2 no NVIDIA GPU here (nothing to check).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== 1. the probe (sshdeploy/remote/gpus.py)"
probe=$(timeout 60 "$PY" sshdeploy/remote/gpus.py) || {
    echo "FAILED: the probe did not run (or not within 60 s)"; exit 1; }
echo "$probe" | "$PY" -m json.tool
"$PY" - "$probe" <<'EOF' || exit $?
import json, sys
found = json.loads(sys.argv[1])
if not found["gpus"]:
    why = "; ".join(found["tried"]) or "nothing answered"
    if found["devices"]:
        print(f"FAILED: {found['devices']} /dev/nvidia* device(s) exist but no GPU could be "
              f"read ({why}): the driver or its library does not answer")
        sys.exit(1)
    print(f"no NVIDIA GPU here ({why}): nothing to check (exit 2)")
    sys.exit(2)
EOF

echo "== 2. against nvidia-smi -L"
timeout 60 "$PY" - "$probe" <<'EOF' || exit $?
import json, re, shutil, subprocess, sys
found = json.loads(sys.argv[1])
ours = [(g["index"], g["uuid"], g["name"]) for g in found["gpus"]]
print(f"probe: {len(ours)} GPU(s) by {found['source']}:")
for gpu in ours:
    print("   ", *gpu)
if shutil.which("nvidia-smi") is None:
    print("FAILED: nvidia-smi is not on PATH: nothing to compare the probe with")
    sys.exit(1)
listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                        timeout=30).stdout
theirs = [(int(i), u, n.strip()) for i, n, u in
          re.findall(r"^GPU (\d+): (.*) \(UUID: (GPU-[0-9a-fA-F-]+)\)", listed, re.M)]
print(f"nvidia-smi -L: {len(theirs)} GPU(s):")
for gpu in theirs:
    print("   ", *gpu)
if ours != theirs:
    print("FAILED: the probe and nvidia-smi -L disagree (index, UUID or name)")
    sys.exit(1)
print("ok: the same GPUs: indexes, UUIDs, names")
EOF

CHECK=$(mktemp "${TMPDIR:-/tmp}/sshdeploy-gpu-check.XXXXXX") || exit 1
trap 'rm -f "$CHECK"' EXIT
cat > "$CHECK" <<'EOF'
# Run pinned (CUDA_VISIBLE_DEVICES=GPU-...): the devices CUDA sees, and a 64 MiB allocation.
import ctypes, json

def uuid_text(raw):
    h = bytes(raw).hex()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

def see():
    cuda = ctypes.CDLL("libcuda.so.1")
    out = {"init": cuda.cuInit(0)}
    n = ctypes.c_int(0)
    out["count_status"] = cuda.cuDeviceGetCount(ctypes.byref(n))
    out["count"] = n.value
    out["uuids"] = []
    for i in range(n.value):
        dev = ctypes.c_int(0)
        cuda.cuDeviceGet(ctypes.byref(dev), i)
        raw = (ctypes.c_ubyte * 16)()
        cuda.cuDeviceGetUuid(raw, dev)
        out["uuids"].append(uuid_text(raw))
    if n.value:
        dev, ctx, ptr = ctypes.c_int(0), ctypes.c_void_p(), ctypes.c_uint64(0)
        cuda.cuDeviceGet(ctypes.byref(dev), 0)
        cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev)
        cuda.cuCtxSetCurrent(ctx)
        out["alloc"] = cuda.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(64 << 20))
        if out["alloc"] == 0:
            cuda.cuMemFree_v2(ptr)
        cuda.cuDevicePrimaryCtxRelease(dev)
    return out

if __name__ == "__main__":
    print(json.dumps(see()))
EOF

echo "== 3. pinned by UUID: one device, that one, allocates"
"$PY" - "$probe" "$CHECK" <<'EOF' || exit $?
import json, os, subprocess, sys
found, check = json.loads(sys.argv[1]), sys.argv[2]
if not found["gpus"]:
    print("no GPU found: nothing to pin (exit 2)")
    sys.exit(2)
bad = 0
for gpu in found["gpus"]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu["uuid"]}
    try:
        run = subprocess.run([sys.executable, check], env=env, capture_output=True, text=True,
                             timeout=60)
    except subprocess.TimeoutExpired:
        print(f"gpu{gpu['index']}: FAILED: no answer from CUDA within 60 s")
        bad += 1
        continue
    try:
        seen = json.loads(run.stdout.splitlines()[-1])
    except (IndexError, ValueError):
        last = (run.stderr.strip().splitlines() or [f"exit {run.returncode}"])[-1]
        print(f"gpu{gpu['index']}: FAILED: {last}")
        bad += 1
        continue
    ok = seen["init"] == 0 and seen["count"] == 1 and seen["uuids"] == [gpu["uuid"]] \
        and seen.get("alloc") == 0
    print(f"gpu{gpu['index']} {gpu['uuid']}: {'ok' if ok else 'FAILED'}: {seen}")
    bad += not ok
sys.exit(1 if bad else 0)
EOF

echo "== 4. a one-host SSHCluster with gpus='auto' (needs ssh localhost without a prompt)"
if ! ssh -o BatchMode=yes -o ConnectTimeout=5 localhost true 2>/dev/null; then
    echo "skipped: ssh localhost does not work without a prompt here"
    echo "== checks 1-3 passed (4 skipped)"
    exit 0
fi
timeout 240 "$PY" - "$probe" "$CHECK" <<'EOF' || { echo "FAILED (exit $?)"; exit 1; }
import json, os, sys
from dask.distributed import Client
from sshdeploy import SSHCluster
found, check = json.loads(sys.argv[1]), sys.argv[2]
source = open(check).read()


def in_worker(source=source):
    """In the worker process itself (sent by value): its pin, and what CUDA shows it."""
    import os
    scope = {"__name__": "sshdeploy_gpu_check"}
    exec(source, scope)
    return os.environ.get("CUDA_VISIBLE_DEVICES"), scope["see"]()


host = "localhost"
with SSHCluster([host, host], gpus="auto", remote_python=sys.executable,
                env={"PYTHONPATH": os.environ["PYTHONPATH"]}) as cluster, \
        Client(cluster) as client:
    client.wait_for_workers(len(found["gpus"]), timeout=120)
    info = {w["name"]: w for w in client.scheduler_info()["workers"].values()}
    seen = client.run(in_worker)
    names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
    bad = 0
    for gpu in found["gpus"]:
        name = f"{host}-gpu{gpu['index']}"
        got = next((v for a, v in seen.items() if names[a] == name), None)
        ok = got is not None and info.get(name, {}).get("resources") == {"GPU": 1} and \
            got[0] == gpu["uuid"] and got[1]["uuids"] == [gpu["uuid"]] and \
            got[1].get("alloc") == 0
        print(f"{name}: {'ok' if ok else 'FAILED'}: {got}")
        bad += not ok
    print(cluster.get_logs()["Cluster"])
sys.exit(1 if bad else 0)
EOF
echo "== all checks passed"
