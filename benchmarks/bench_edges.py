#!/usr/bin/env python
"""Edge figures of issue 11: dry-run size, one huge log line, the CLI's log throughput.

dry
    ``SSHCluster.remote_commands(["n0", "n1", ...])`` (and ``dask-ssh --dry-run
    --hostfile`` with stdout to /dev/null) for 1000, 8000 and 50000 fake hosts:
    the dry run connects nowhere. Each in a fresh interpreter with a timeout.
line
    One 64 MiB line without a newline through the worker-side output tagger
    (the preload every worker process gets) and through the agent's log pump,
    each measured alone in a fresh interpreter: from the first byte written
    until the parent has read every byte back; and end to end on the bed: a
    task printing it (``print("x" * N, end="")``), until the task returns and
    until the controller has every byte.
cli
    A worker task prints N MiB in 100-byte lines. Under ``python -m sshdeploy.cli``
    with stdout to a file: submit -> the last line is in the file. Through the
    Python API (a handler on the ``sshdeploy.remote`` logger): submit -> the
    last line is handled. MiB/s of each and their ratio (issue 11 target: the
    CLI within 1.5x of the API).

Usage (root for ``line``'s end-to-end part and ``cli``: they use a 2-host bed)::

    python benchmarks/bench_edges.py [--only dry,line,cli] [--dry-hosts 1000,8000,50000]
                                     [--line-mib 64] [--cli-mib 64] [--bed bench]
                                     [--out benchmarks/results/]

Writes ``edges.json`` and ``edges.md`` into ``--out``. Only reports.

Which code is measured: see ``_source.py`` (``PYTHONPATH=/work/main`` measures
main's). The tagger and pump are found by :func:`line_impls` in whichever layout
the measured code has: ``sshdeploy/remote/tagger.py`` and the agent part
``sshdeploy/remote/agent/wire.py`` (``Wire.pump_logs``) today; before, a single
agent file (``sshdeploy/remote/agent.py``, earlier ``sshdeploy/agent.py``) with
``Wire.pump_logs`` or ``Agent.pump_logs``, and a ``tagger.py`` or its
``CHILD_TAGGER`` text.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import platform
import resource
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _source  # noqa: E402  (before anything imports sshdeploy)

SENTINEL = "SSHDEPLOY-BENCH-FLOOD-END"
LABEL = "bench-0"  # no "x" in it: the payload is counted as "x" bytes


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 20.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


# --------------------------------------------------------------------------- dry run


def child_dry(n: int, wph: int) -> dict[str, Any]:
    from sshdeploy import SSHCluster

    hosts = [f"n{i}" for i in range(n)]
    t = time.perf_counter()
    plans = SSHCluster.remote_commands(hosts, worker_options={"n_workers": wph})
    return {"remote_commands_s": time.perf_counter() - t, "plans": len(plans),
            "workers": sum(len(p.names) for p in plans if p.role == "worker")}


def _py(args: list[str], timeout: float, **kw: Any) -> tuple[int | None, float, str, str]:
    """Run a Python child in its own process group; (rc or None on timeout, wall, out, err)."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], stdout=kw.pop("stdout", subprocess.PIPE),
                            stderr=subprocess.PIPE, start_new_session=True, text=True, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, time.perf_counter() - t, out or "", err or ""
    except subprocess.TimeoutExpired:
        _stop(proc, signal.SIGKILL, 5)
        return None, time.perf_counter() - t, "", ""
    except BaseException:
        _stop(proc, signal.SIGKILL, 5)
        raise


def measure_dry(sizes: list[int], wph: int, timeout: float) -> list[dict[str, Any]]:
    results = []
    for n in sizes:
        res: dict[str, Any] = {"hosts": n, "wph": wph, "timeout_s": timeout}
        rc, wall, out, err = _py([__file__, "--child", "dry", "--n", str(n), "--wph", str(wph)],
                                 timeout)
        if rc == 0:
            res.update(json.loads(out.strip().splitlines()[-1]))
        else:
            res["remote_commands_error"] = ("timed out" if rc is None
                                            else f"exit {rc}: {err[-300:]}")
        with tempfile.NamedTemporaryFile("w", suffix=".hosts", delete=False) as f:
            f.write("".join(f"n{i}\n" for i in range(n)))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            with open(os.devnull, "w") as null:
                rc, wall, _, err = _py(["-m", "sshdeploy.cli", "--dry-run", "--nworkers",
                                        str(wph), "--hostfile", f.name], timeout, stdout=null)
        finally:
            os.unlink(f.name)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if rc == 0:
            res["cli_dry_run_s"] = wall
            # Under load the wall time is mostly waiting for a core: CPU says what it costs.
            res["cli_dry_run_cpu_s"] = (after.ru_utime - before.ru_utime
                                        + after.ru_stime - before.ru_stime)
        else:
            res["cli_dry_run_error"] = "timed out" if rc is None else f"exit {rc}: {err[-300:]}"
        results.append(res)
        print(f"dry run {n:>6} hosts: remote_commands "
              f"{res.get('remote_commands_s', float('nan')):.2f} s "
              f"{res.get('remote_commands_error', '')}  dask-ssh --dry-run "
              f"{res.get('cli_dry_run_s', float('nan')):.2f} s {res.get('cli_dry_run_error', '')}",
              flush=True)
    return results


# --------------------------------------------------------------------------- one huge line


def _load(name: str) -> Any:
    """Import sshdeploy/NAME.py by path, as a plain module (no package import, no main())."""
    path = _source.SOURCE / "sshdeploy" / f"{name}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(
        f"bench_sshdeploy_{name.replace('/', '_')}", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


#: Where the worker-side tagger's file was, newest layout first.
_TAGGERS = ("remote/tagger", "tagger")
#: Where a single agent file was, before the agent was split into parts.
_AGENTS = ("remote/agent", "agent")


def _agent() -> tuple[str, Any]:
    """The measured code's agent module holding the pump, and its path under ``sshdeploy/``.

    The agent's parts import each other, so its wire part is imported as a
    package module (``_source`` put the measured code first on ``sys.path``).
    """
    if (_source.SOURCE / "sshdeploy" / "remote" / "agent" / "wire.py").exists():
        return "remote/agent/wire", importlib.import_module("sshdeploy.remote.agent.wire")
    for name in _AGENTS:
        agent = _load(name)
        if agent is not None:
            return name, agent
    return "", None


def _tagger_text() -> tuple[str, str] | None:
    """The worker-side tagger's source and where it is (a file, or the agent's text)."""
    for name in _TAGGERS:
        path = _source.SOURCE / "sshdeploy" / f"{name}.py"
        if path.exists():
            return f"sshdeploy/{name}.py", path.read_text()
    for name in _AGENTS:
        agent = _load(name)
        if agent is not None and hasattr(agent, "CHILD_TAGGER"):
            return f"sshdeploy/{name}.py CHILD_TAGGER", agent.CHILD_TAGGER
    return None


def line_impls() -> dict[str, str]:
    """Which tagger and pump the measured code has: {"tagger": how, "pump": how}."""
    found: dict[str, str] = {}
    tagger = _tagger_text()
    if tagger is not None:
        found["tagger"] = f"{tagger[0]} run as the worker preload"
    name, agent = _agent()
    if agent is not None and hasattr(getattr(agent, "Wire", None), "pump_logs"):
        found["pump"] = f"sshdeploy/{name}.py Wire.pump_logs"
    elif agent is not None and hasattr(getattr(agent, "Agent", None), "pump_logs"):
        found["pump"] = f"sshdeploy/{name}.py Agent.pump_logs"
    return found


def _agent_pump(agent: Any) -> Any:
    """The agent's log pump, bound to an event stream that is a dup of our fd 1."""
    if hasattr(getattr(agent, "Wire", None), "pump_logs"):
        return agent.Wire(os.dup(1)).pump_logs
    return agent.Agent().pump_logs  # before the agent split: Agent() dups fd 1 itself


def _ready() -> None:
    os.write(int(os.environ["BENCH_READY_FD"]), b"R")


def child_tagger(size: int) -> None:
    """Install the worker-side tagger, write *size* bytes without a newline to fd 1."""
    tagger = _tagger_text()
    assert tagger is not None, "no worker-side tagger in the measured code"
    text = tagger[1]
    os.environ["SSHDEPLOY_LABEL"] = LABEL
    exec(compile(text, "sshdeploy_tagger", "exec"), {"__name__": "sshdeploy_tagger"})
    _ready()
    sys.stdin.buffer.readline()
    _write_all(1, b"x" * size)
    # EOF for the tagger's stdout pump (it flushes a last partial line at EOF).
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    sys.stdin.buffer.read()
    os._exit(0)


def child_pump(size: int) -> None:
    """Run the agent's log pump on a pipe; write *size* bytes, then a newline."""
    pump = _agent_pump(_agent()[1])
    r, w = os.pipe()
    threading.Thread(target=pump, args=(r,), daemon=True).start()
    _ready()
    sys.stdin.buffer.readline()
    _write_all(w, b"x" * size + b"\n")
    os.close(w)
    sys.stdin.buffer.read()
    os._exit(0)


def measure_line(kind: str, mib: float, timeout: float) -> dict[str, Any]:
    """Time from 'go' until the parent has read back all *mib* MiB of x's."""
    size = int(mib * 2**20)
    rfd, wfd = os.pipe()
    env = {**os.environ, "BENCH_READY_FD": str(wfd)}
    proc = subprocess.Popen([sys.executable, __file__, "--child", kind, "--size", str(size)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            pass_fds=(wfd,), env=env, start_new_session=True)
    os.close(wfd)
    out: dict[str, Any] = {"kind": kind, "mib": mib, "timeout_s": timeout}
    stream = proc.stderr if kind == "tagger" else proc.stdout
    other = proc.stdout if kind == "tagger" else proc.stderr
    assert stream is not None and other is not None and proc.stdin is not None
    try:
        ready, _, _ = select.select([rfd], [], [], 60)
        if not ready or os.read(rfd, 1) != b"R":
            said = b""
            if select.select([other.fileno()], [], [], 1)[0]:
                said = os.read(other.fileno(), 4000)
            out["error"] = "child did not start: " + said.decode(errors="replace")
            return out
        got = 0
        fds = [stream.fileno(), other.fileno()]
        t0 = time.perf_counter()
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        end = t0 + timeout
        while got < size and time.perf_counter() < end and fds:
            rl, _, _ = select.select(fds, [], [], 0.5)
            for fd in rl:
                data = os.read(fd, 1 << 20)
                if not data:
                    fds.remove(fd)
                elif fd == stream.fileno():
                    got += data.count(b"x")
        elapsed = time.perf_counter() - t0
        out["mib_received"] = got / 2**20
        if got >= size:
            out["seconds"] = elapsed
            out["mib_s"] = mib / elapsed
        else:
            out["error"] = (f"{got / 2**20:.1f} of {mib:g} MiB after {elapsed:.0f} s"
                            + (" (timeout)" if elapsed >= timeout else " (stream ended)"))
    finally:
        os.close(rfd)
        with contextlib.suppress(OSError):
            proc.stdin.close()
        _stop(proc, signal.SIGKILL, 5)
    print(f"{kind}: one {mib:g} MiB line: "
          + (f"{out['seconds']:.2f} s" if "seconds" in out else out.get("error", "?")),
          flush=True)
    return out


# --------------------------------------------------------------------------- on the bed


def flood(mib: float, line_bytes: int = 100) -> int:
    """Print *mib* MiB as lines of *line_bytes* (newline included), then a sentinel line."""
    import sys as _sys

    line = ("x" * (line_bytes - 1)) + "\n"
    n = int(mib * 2**20) // line_bytes
    per_write = max(1, 65536 // line_bytes)
    block = line * per_write
    written = 0
    while written + per_write <= n:
        _sys.stdout.write(block)
        written += per_write
    _sys.stdout.write(line * (n - written))
    _sys.stdout.write(SENTINEL + "\n")
    _sys.stdout.flush()
    return n


def long_line(mib: float) -> int:
    """Print one line of *mib* MiB without a newline."""
    import sys as _sys

    n = int(mib * 2**20)
    _sys.stdout.write("x" * n)
    _sys.stdout.flush()
    return n


class Counter(logging.Handler):
    """Counts what one remote worker printed: lines, payload bytes, x's; notes the sentinel."""

    def __init__(self, label: str) -> None:
        super().__init__(logging.DEBUG)
        self.label = label
        self.lines = self.bytes = self.xs = 0
        self.done = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "sshdeploy_label", None) != self.label:
            return
        msg = record.getMessage()
        self.lines += 1
        self.bytes += len(msg) + 1
        self.xs += msg.count("x")
        if msg == SENTINEL:
            self.done.set()


def _submit(client: Any, fn: Any, *args: Any) -> tuple[Any, dict[str, float]]:
    """Submit; the returned dict gets ``"t"``: seconds from submit until the task was done."""
    done: dict[str, float] = {}
    t0 = time.perf_counter()
    fut = client.submit(fn, *args, pure=False)
    fut.add_done_callback(lambda f: done.setdefault("t", time.perf_counter() - t0))
    return fut, done


def _wait(fut: Any, done: dict[str, float], deadline: float) -> tuple[Any, float | None]:
    """Wait for *fut* up to *deadline* s; return (result or error text, seconds to done)."""
    try:
        res: Any = fut.result(timeout=deadline)
    except Exception as exc:
        res = f"{type(exc).__name__}: {exc}"
    return res, done.get("t")


def child_api(bed_name: str, mib: float, line_mib: float, deadline: float) -> dict[str, Any]:
    """Python API: flood throughput, then one long line end to end."""
    from distributed import Client

    import sshdeploy
    from sshdeploy import testbed

    bed = testbed.status(bed_name)
    assert bed is not None, f"bed {bed_name} is not up"
    names = [h.name for h in bed.hosts[:2]]
    counter = Counter(f"{names[1]}-0")
    remote = logging.getLogger("sshdeploy.remote")
    remote.setLevel(logging.DEBUG)
    remote.addHandler(counter)
    remote.propagate = False
    out: dict[str, Any] = {"mib": mib}
    cluster = sshdeploy.SSHCluster(names, connect_options=bed.connect_options(),
                                   worker_options={"n_workers": 1, "nthreads": 1})
    try:
        with Client(cluster, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
            counter.lines = counter.bytes = 0
            t0 = time.perf_counter()
            fut, done = _submit(client, flood, mib)
            res, task_s = _wait(fut, done, deadline)
            out["task_s"] = task_s
            arrived = counter.done.wait(max(0.0, deadline - (time.perf_counter() - t0)))
            out["last_line_s"] = time.perf_counter() - t0 if arrived else None
            out["lines_arrived"] = counter.lines
            if arrived:
                out["mib_s"] = mib / out["last_line_s"]
            else:
                out["error"] = f"not all lines within {deadline:.0f} s: {res}"
            # One long line, end to end.
            counter.xs = 0
            size = int(line_mib * 2**20)
            t0 = time.perf_counter()
            fut, done = _submit(client, long_line, line_mib)
            res, task_s = _wait(fut, done, deadline)
            line: dict[str, Any] = {"mib": line_mib, "task_s": task_s}
            if task_s is None:
                line["error"] = f"task not done within {deadline:.0f} s"
            # A line without a newline may only come out when the worker ends: wait
            # up to 30 s after the task returned, no longer.
            end = min(t0 + deadline, time.perf_counter() + 30)
            while counter.xs < size and time.perf_counter() < end:
                time.sleep(0.01)
            if counter.xs >= size:
                line["arrived_s"] = time.perf_counter() - t0
            else:
                line["arrived_mib"] = counter.xs / 2**20
            out["long_line"] = line
    finally:
        t = time.perf_counter()
        with contextlib.suppress(Exception):
            cluster.close(timeout=30)
        out["close_s"] = time.perf_counter() - t
    return out


def measure_api(args: argparse.Namespace, bed_name: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result = f.name
    rc, wall, out, err = _py([__file__, "--child", "api", "--bed", bed_name, "--cli-mib",
                              str(args.cli_mib), "--line-mib", str(args.line_mib), "--deadline",
                              str(args.deadline), "--result", result], args.deadline * 3 + 120)
    try:
        return dict(json.loads(Path(result).read_text()))
    except (OSError, ValueError):
        what = "timed out" if rc is None else f"exit {rc}"
        return {"error": f"{what}: {(out + err)[-1500:]}"}
    finally:
        os.unlink(result)


def measure_cli(args: argparse.Namespace, bed: Any) -> dict[str, Any]:
    """``python -m sshdeploy.cli`` with stdout to a file; a client submits the flood."""
    from distributed import Client

    names = [h.name for h in bed.hosts[:2]]
    port = 18786
    address = f"tcp://{bed.hosts[0].address}:{port}"
    tmp = Path(tempfile.mkdtemp(prefix="sshdeploy-edges-cli-"))
    stdout, stderr = tmp / "stdout.txt", tmp / "stderr.txt"
    cmd = [sys.executable, "-m", "sshdeploy.cli", "--scheduler-port", str(port),
           "--dashboard-address", ":0", "--known-hosts", str(bed.known_hosts),
           "--ssh-private-key", str(bed.client_key), "--ssh-username", "root",
           "--nworkers", "1", "--nthreads", "1", *names]
    out: dict[str, Any] = {"mib": args.cli_mib, "stdout": str(stdout)}
    with open(stdout, "wb") as fo, open(stderr, "wb") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, start_new_session=True)
    try:
        client = None
        end = time.perf_counter() + 120
        while client is None and time.perf_counter() < end and proc.poll() is None:
            try:
                client = Client(address, timeout=5)
            except OSError:
                time.sleep(0.5)
        if client is None:
            out["error"] = f"no scheduler at {address}: {stderr.read_text()[-800:]}"
            return out
        with client:
            client.wait_for_workers(1, timeout=60)
            t0 = time.perf_counter()
            fut, done = _submit(client, flood, args.cli_mib)
            end = t0 + args.deadline
            seen = None
            while time.perf_counter() < end:
                size = stdout.stat().st_size
                with open(stdout, "rb") as f:
                    f.seek(max(0, size - 4096))
                    if SENTINEL.encode() in f.read():
                        seen = time.perf_counter() - t0
                        break
                time.sleep(0.01)
            res, task_s = _wait(fut, done, max(1.0, end - time.perf_counter()))
            out["task_s"] = task_s
            out["last_line_s"] = seen
            out["file_mib"] = stdout.stat().st_size / 2**20
            if seen is not None:
                out["mib_s"] = args.cli_mib / seen
            else:
                # How far it got: one newline per 100-byte line of the flood.
                with open(stdout, "rb") as f:
                    lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
                done_mib = min(args.cli_mib, lines * 100 / 2**20)
                out["partial_mib_s"] = done_mib / args.deadline
                out["error"] = (f"last line not in the file within {args.deadline:.0f} s: "
                                f"~{done_mib:.1f} MiB in it, ~{out['partial_mib_s']:.2f} MiB/s")
    finally:
        t = time.perf_counter()
        _stop(proc, signal.SIGINT, 30)
        out["stop_s"] = time.perf_counter() - t
        out["exit_status"] = proc.returncode
    return out


# --------------------------------------------------------------------------- report


def _note(text: object, limit: int = 300) -> str:
    """One table cell: one line, the end of a long error (where its cause is)."""
    one = " ".join(str(text or "").split()).replace("|", "/")
    return one if len(one) <= limit else "..." + one[-limit:]


def markdown(doc: dict) -> str:
    src = doc.get("source", {})
    lines = ["# Edge figures (issue 11 items 6 and 7)", "",
             f"- date (UTC): {doc['date']}; command: `{doc['command']}`",
             f"- sshdeploy measured: `{src.get('path')}` at `{src.get('head')}`"
             + (f" (modified: {src['modified']})" if src.get("modified") else ""),
             f"- load at start: `{doc.get('uptime_start')}`", ""]
    if doc.get("dry"):
        lines += ["## Dry run (fake hosts, connects nowhere)", "",
                  "| hosts | workers/host | `SSHCluster.remote_commands` [s] | "
                  "`dask-ssh --dry-run --hostfile` > /dev/null, whole process: wall [s] | "
                  "its CPU [CPU-s] |",
                  "|---|---|---|---|---|"]
        for r in doc["dry"]:
            a = (f"{r['remote_commands_s']:.2f}" if "remote_commands_s" in r
                 else f"> {r['timeout_s']:.0f} ({r.get('remote_commands_error')})")
            b = (f"{r['cli_dry_run_s']:.2f}" if "cli_dry_run_s" in r
                 else f"> {r['timeout_s']:.0f} ({r.get('cli_dry_run_error')})")
            c = f"{r['cli_dry_run_cpu_s']:.2f}" if "cli_dry_run_cpu_s" in r else "-"
            lines.append(f"| {r['hosts']} | {r['wph']} | {a} | {b} | {c} |")
        lines.append("")
    if doc.get("line") or (doc.get("api") or {}).get("long_line"):
        lines += ["## One line without a newline", "",
                  "| what | MiB | seconds | MiB/s | note |", "|---|---|---|---|---|"]
        for r in doc.get("line") or []:
            how = doc.get("line_impls", {}).get(r["kind"], r["kind"])
            lines.append(f"| {how} | {r['mib']:g} | "
                         + (f"{r['seconds']:.2f} | {r['mib_s']:.1f} | |" if "seconds" in r
                            else f"- | - | {_note(r.get('error'))} |"))
        ll = (doc.get("api") or {}).get("long_line")
        if ll:
            task = f"{ll['task_s']:.2f}" if ll.get("task_s") is not None else "-"
            arrived = (f"all at controller after {ll['arrived_s']:.2f} s" if "arrived_s" in ll
                       else f"{ll.get('arrived_mib', 0):.1f} MiB arrived; {ll.get('error', '')}")
            lines.append(f"| end to end on the bed: task `print('x' * N, end='')` returns "
                         f"| {ll['mib']:g} | {task} | | {arrived} |")
        lines.append("")
    api, cli = doc.get("api"), doc.get("cli")
    if api or cli:
        lines += ["## Log throughput: dask-ssh with stdout to a file vs the Python API", "",
                  "One worker task prints N MiB in 100-byte lines; submit -> last line "
                  "delivered (API: handled by a logging handler; CLI: in the file).", "",
                  "| | MiB | task returned [s] | last line delivered [s] | MiB/s | note |",
                  "|---|---|---|---|---|---|"]
        for name, r in (("Python API", api), ("dask-ssh > file", cli)):
            if not r:
                continue
            ts = f"{r['task_s']:.2f}" if r.get("task_s") is not None else "-"
            last = f"{r['last_line_s']:.2f}" if r.get("last_line_s") is not None else "-"
            rate = f"{r['mib_s']:.1f}" if r.get("mib_s") else "-"
            lines.append(f"| {name} | {r.get('mib', '-')} | {ts} | {last} | {rate} | "
                         f"{_note(r.get('error', ''))} |")
        cli_rate = (cli or {}).get("mib_s") or (cli or {}).get("partial_mib_s")
        if api and cli and api.get("mib_s") and cli_rate:
            ratio = api["mib_s"] / cli_rate
            held = "held" if ratio <= 1.5 else "NOT held"
            lines += ["", f"- **{held}**: CLI throughput within 1.5x of the API's: API "
                          f"{api['mib_s']:.1f} MiB/s, CLI {cli_rate:.2f} MiB/s"
                          + ("" if cli.get("mib_s") else " (at most: not done by the deadline)")
                          + f": the API is {ratio:.2f}x the CLI"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--only", default="dry,line,cli")
    p.add_argument("--dry-hosts", default="1000,8000,50000")
    p.add_argument("--dry-wph", type=int, default=1)
    p.add_argument("--dry-timeout", type=float, default=120.0)
    p.add_argument("--line-mib", type=float, default=64.0)
    p.add_argument("--line-timeout", type=float, default=120.0)
    p.add_argument("--cli-mib", type=float, default=64.0)
    p.add_argument("--deadline", type=float, default=180.0,
                   help="seconds for each task / delivery on the bed")
    p.add_argument("--bed", default="bench")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--name", default="edges")
    p.add_argument("--bed-wait-min", type=float, default=30.0,
                   help="minutes to wait for a free test-bed address block (other beds)")
    p.add_argument("--keep-bed", action="store_true")
    p.add_argument("--report", metavar="JSON", help="only re-make the markdown from JSON")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--wph", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child == "dry":
        print(json.dumps(child_dry(args.n, args.wph)))
        return 0
    if args.child == "tagger":
        child_tagger(args.size)
    if args.child == "pump":
        child_pump(args.size)
    if args.child == "api":
        res = child_api(args.bed, args.cli_mib, args.line_mib, args.deadline)
        Path(args.result).write_text(json.dumps(res, indent=1))
        sys.stdout.flush()
        os._exit(0)  # a stuck cluster thread must not keep us alive

    if args.report:
        text = markdown(json.loads(Path(args.report).read_text()))
        Path(args.report).with_suffix(".md").write_text(text)
        print(text)
        return 0

    import _bedprobe

    only = set(args.only.split(","))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "source": {"path": str(_source.SOURCE), **_bedprobe.source_state()},
        "uptime_start": _uptime(),
    }
    print(f"measuring sshdeploy from {doc['source']}", flush=True)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        if "dry" in only:
            doc["dry"] = measure_dry([int(x) for x in args.dry_hosts.split(",")], args.dry_wph,
                                     args.dry_timeout)
        if "line" in only:
            doc["line_impls"] = line_impls()
            doc["line"] = [measure_line(kind, args.line_mib, args.line_timeout)
                           for kind in ("tagger", "pump") if kind in doc["line_impls"]]
        if "cli" in only:  # the API run also passes one long line end to end
            from sshdeploy import testbed

            bed = _bedprobe.bring_up(2, args.bed, args.bed_wait_min * 60)
            try:
                doc["api"] = measure_api(args, args.bed)
                _bedprobe.kill_leftovers(bed)
                print(f"API: {json.dumps(doc['api'])}", flush=True)
                doc["cli"] = measure_cli(args, bed)
                doc["cli"]["left_on_hosts"] = len(
                    [k for k in _bedprobe.kill_leftovers(bed) if not k.is_sshd])
                print(f"CLI: {json.dumps(doc['cli'])}", flush=True)
            finally:
                if not args.keep_bed:
                    try:
                        testbed.down(args.bed)
                    except Exception as exc:
                        print(f"bed down failed: {exc}", flush=True)
    except KeyboardInterrupt:
        print("interrupted; writing what was measured", flush=True)
    finally:
        doc["uptime_end"] = _uptime()
        (out_dir / f"{args.name}.json").write_text(json.dumps(doc, indent=1, default=str))
        text = markdown(doc)
        (out_dir / f"{args.name}.md").write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
