"""Analysis of a scale study (bench_scale.py): medians, ratios, slopes, issue-9 targets, markdown.

No third-party imports: it runs on the JSON alone (``bench_scale.py --report``).
"""

from __future__ import annotations

import statistics
from typing import Any

IMPLS = ("sshdeploy", "distributed", "local", "floor")

#: key, label, unit, format
METRICS: list[tuple[str, str, str, str]] = [
    ("ready_s", "ready", "s", "{:.2f}"),
    ("close_s", "close until nothing left", "s", "{:.2f}"),
    ("remote_cpu_s", "remote CPU", "CPU-s", "{:.2f}"),
    ("host_cpu_per_host", "remote CPU per worker host, excl. workers", "CPU-s", "{:.2f}"),
    ("cpu_per_worker", "CPU per worker process", "CPU-s", "{:.3f}"),
    ("scheduler_host_cpu_s", "scheduler host CPU", "CPU-s", "{:.2f}"),
    ("controller_cpu_s", "controller CPU", "CPU-s", "{:.2f}"),
    ("controller_rss_mib", "controller RSS", "MiB", "{:.0f}"),
    ("controller_rss_delta_mib", "controller RSS delta", "MiB", "{:.0f}"),
    ("ssh_tcp_connections", "SSH connections (TCP to port 22)", "", "{:.0f}"),
    ("remote_processes", "remote processes", "", "{:.0f}"),
]

#: The costs whose growth the README states (slopes).
SLOPE_METRICS = ("ready_s", "close_s", "remote_cpu_s", "controller_cpu_s",
                 "controller_rss_delta_mib", "ssh_tcp_connections")


def _derived(run: dict) -> dict:
    r = dict(run)
    hosts, workers = run.get("hosts") or 0, run.get("workers") or 0
    if run.get("host_overhead_cpu_s") is not None and hosts and run.get("impl") != "local":
        r["host_cpu_per_host"] = run["host_overhead_cpu_s"] / hosts
    found = run.get("workers_found") or 0
    if run.get("worker_cpu_s") is not None and found:
        r["cpu_per_worker"] = run["worker_cpu_s"] / found
    if run.get("impl") == "local":
        r.pop("scheduler_host_cpu_s", None)
    if workers and found and found != workers:
        r["cpu_per_worker"] = None  # not every worker answered: do not guess
    return r


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def summarize(runs: list[dict]) -> dict[str, dict[str, Any]]:
    """``{"impl|hosts|wph": {metric: stats, "ok": .., "runs": .., "errors": [..]}}``."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        key = f"{run.get('impl')}|{run.get('hosts')}|{run.get('wph')}"
        groups.setdefault(key, []).append(_derived(run))
    out: dict[str, dict[str, Any]] = {}
    for key, rs in groups.items():
        ok = [r for r in rs if r.get("ok")]
        g: dict[str, Any] = {"runs": len(rs), "ok": len(ok),
                             "errors": sorted({str(r.get("error") or r.get("close_error"))[:300]
                                               for r in rs if not r.get("ok")}),
                             "left_after_close": sum(len(r.get("left_after_close") or [])
                                                     for r in rs),
                             "left_after_exit": sum(len(r.get("left_after_controller_exit") or [])
                                                    for r in rs),
                             "load_1min": statistics.median(
                                 [r["load_before"][0] for r in rs if r.get("load_before")] or [0])}
        for m, *_ in METRICS:
            s = _stats([r[m] for r in ok if isinstance(r.get(m), (int, float))])
            if s:
                g[m] = s
        out[key] = g
    return out


def _med(summary: dict, impl: str, hosts: int, wph: int, metric: str) -> float | None:
    s = summary.get(f"{impl}|{hosts}|{wph}", {}).get(metric)
    return None if s is None else s["median"]


def configs(summary: dict) -> list[tuple[int, int]]:
    seen = {(int(k.split("|")[1]), int(k.split("|")[2])) for k in summary}
    return sorted(seen, key=lambda c: (c[1], c[0]))


def _lstsq(rows: list[list[float]], y: list[float]) -> list[float] | None:
    """Least squares by the normal equations (a handful of points, 2-3 unknowns)."""
    m = len(rows[0])
    a = [[sum(r[i] * r[j] for r in rows) for j in range(m)] for i in range(m)]
    b = [sum(r[i] * v for r, v in zip(rows, y, strict=True)) for i in range(m)]
    for col in range(m):  # Gauss-Jordan with partial pivoting
        piv = max(range(col, m), key=lambda i: abs(a[i][col]))
        if abs(a[piv][col]) < 1e-12:
            return None
        a[col], a[piv] = a[piv], a[col]
        b[col], b[piv] = b[piv], b[col]
        for i in range(m):
            if i != col:
                f = a[i][col] / a[col][col]
                a[i] = [x - f * z for x, z in zip(a[i], a[col], strict=True)]
                b[i] -= f * b[col]
    return [b[i] / a[i][i] for i in range(m)]


def fit(points: list[tuple[int, int, float]], use_hosts: bool) -> dict[str, Any] | None:
    """Fit ``y = a + b*hosts + c*workers`` (or ``a + c*workers``) to (hosts, workers, y)."""
    hosts = {p[0] for p in points}
    workers = {p[1] for p in points}
    if len(points) < 2 or len(workers) < 2 and not use_hosts:
        return None
    cols: list[str] = ["intercept"]
    if use_hosts and len(hosts) >= 2:
        cols.append("per_host")
    # workers is separable from hosts only with several workers-per-host values.
    ratios = {p[1] / p[0] for p in points if p[0]}
    if not use_hosts or len(ratios) >= 2:
        cols.append("per_worker")
    if len(cols) == 1 or len(points) < len(cols):
        return None
    rows = []
    for h, w, _ in points:
        row = [1.0]
        if "per_host" in cols:
            row.append(float(h))
        if "per_worker" in cols:
            row.append(float(w))
        rows.append(row)
    ys = [p[2] for p in points]
    coef = _lstsq(rows, ys)
    if coef is None:
        return None
    pred = [sum(c * x for c, x in zip(coef, row, strict=True)) for row in rows]
    mean = sum(ys) / len(ys)
    ss_tot = sum((v - mean) ** 2 for v in ys)
    ss_res = sum((v - q) ** 2 for v, q in zip(ys, pred, strict=True))
    res = dict(zip(cols, coef, strict=True))
    res["r2"] = 1 - ss_res / ss_tot if ss_tot > 0 else 1.0
    res["points"] = len(points)
    return res


def slopes(summary: dict) -> dict[str, dict[str, Any]]:
    """Per metric and implementation: the fit over the per-configuration medians."""
    out: dict[str, dict[str, Any]] = {}
    for metric in SLOPE_METRICS:
        for impl in IMPLS:
            pts = []
            for h, k in configs(summary):
                v = _med(summary, impl, h, k, metric)
                if v is not None:
                    pts.append((h, h * k, v))
            # LocalCluster runs on one machine: only its worker count matters.
            f = fit(pts, use_hosts=impl != "local")
            if f:
                out.setdefault(metric, {})[impl] = f
    return out


def ratios(summary: dict) -> dict[str, dict[str, float]]:
    """sshdeploy / distributed per configuration and metric (and sshdeploy / local ready)."""
    out: dict[str, dict[str, float]] = {}
    for h, k in configs(summary):
        row: dict[str, float] = {}
        for m, *_ in METRICS:
            a, b = _med(summary, "sshdeploy", h, k, m), _med(summary, "distributed", h, k, m)
            if a is not None and b:
                row[m] = a / b
        a, c = _med(summary, "sshdeploy", h, k, "ready_s"), _med(summary, "local", h, k, "ready_s")
        if a is not None and c:
            row["ready_vs_local"] = a / c
        f, b = _med(summary, "floor", h, k, "ready_s"), _med(summary, "distributed", h, k,
                                                             "ready_s")
        if f is not None and b:
            row["floor_vs_distributed"] = f / b
        if f and a is not None:
            row["ready_vs_floor"] = a / f
        if row:
            out[f"{h}|{k}"] = row
    return out


def _all(runs: list[dict], impl: str, key: str) -> list[float]:
    vals = []
    for r in runs:
        if r.get("impl") == impl and r.get("ok"):
            v = _derived(r).get(key)
            if isinstance(v, (int, float)):
                vals.append(v)
    return vals


def targets(doc: dict, summary: dict) -> list[dict[str, Any]]:
    """The issue-9 targets: held / not held / not measured, with the numbers."""
    runs = doc.get("runs", [])
    out: list[dict[str, Any]] = []

    def ready_target(h: int, k: int, limit: float) -> None:
        name = f"{h} hosts x {k} workers ready <= {limit}x distributed's"
        a, b = _med(summary, "sshdeploy", h, k, "ready_s"), _med(summary, "distributed", h, k,
                                                                  "ready_s")
        if a is None or not b:
            out.append({"target": name, "held": None, "numbers": "not measured"})
            return
        f = _med(summary, "floor", h, k, "ready_s")
        bound = ("" if f is None else
                 f"; floor (a login and one import distributed per host, nothing else): "
                 f"{f:.2f} s = {f / b:.2f}x distributed's, sshdeploy = {a / f:.2f}x the floor")
        out.append({"target": name, "held": a / b <= limit,
                    "numbers": f"{a:.2f} s vs {b:.2f} s = {a / b:.2f}x{bound}"})

    ready_target(8, 4, 0.25)
    ready_target(32, 1, 0.35)

    worst = None
    for h, k in configs(summary):
        s = summary.get(f"sshdeploy|{h}|{k}", {}).get("close_s")
        if s and (worst is None or s["median"] > worst[2]["median"]):
            worst = (h, k, s)
    nones = sum(1 for r in runs if r.get("impl") == "sshdeploy" and r.get("ok")
                and r.get("close_s") is None)
    if worst is None:
        out.append({"target": "close <= 1.5 s at every size", "held": None,
                    "numbers": "not measured"})
    else:
        held = worst[2]["median"] <= 1.5 and nones == 0
        out.append({"target": "close <= 1.5 s at every size", "held": held,
                    "numbers": f"worst median {worst[2]['median']:.2f} s at {worst[0]} x {worst[1]}"
                               f" (max single run {worst[2]['max']:.2f} s)"
                               + (f"; {nones} run(s) left processes" if nones else "")})

    bad = []
    n_checked = 0
    for r in runs:
        if r.get("impl") == "sshdeploy" and r.get("ok") and "ssh_tcp_connections" in r:
            n_checked += 1
            if r["ssh_tcp_connections"] != r.get("ssh_hosts_used"):
                bad.append(f"{r['hosts']}x{r['wph']}: {r['ssh_tcp_connections']} for "
                           f"{r.get('ssh_hosts_used')} hosts")
    out.append({"target": "SSH connections = hosts (scheduler host + worker hosts)",
                "held": None if not n_checked else not bad,
                "numbers": (f"{n_checked} runs, all equal" if n_checked and not bad
                            else "; ".join(bad[:5]) or "not measured")})

    base = (doc.get("import_baseline") or {}).get("import_distributed_cpu_s")
    per_host = _all(runs, "sshdeploy", "host_cpu_per_host")
    if base and per_host:
        m = statistics.median(per_host)
        out.append({"target": "remote CPU per host, excl. workers <= 1.3x one import distributed",
                    "held": m <= 1.3 * base,
                    "numbers": f"{m:.2f} CPU-s vs import {base:.2f} CPU-s = {m / base:.2f}x "
                               f"(median of {len(per_host)} runs, range "
                               f"{min(per_host):.2f}-{max(per_host):.2f})"})
    else:
        out.append({"target": "remote CPU per host, excl. workers <= 1.3x one import distributed",
                    "held": None, "numbers": "not measured"})

    ours, floor = _all(runs, "sshdeploy", "cpu_per_worker"), _all(runs, "local", "cpu_per_worker")
    if ours and floor:
        a, b = statistics.median(ours), statistics.median(floor)
        out.append({"target": "CPU per worker <= 1.5x LocalCluster(forkserver)'s",
                    "held": a <= 1.5 * b,
                    "numbers": f"{a:.3f} vs {b:.3f} CPU-s = {a / b:.2f}x (medians of "
                               f"{len(ours)} / {len(floor)} runs)"})
    else:
        out.append({"target": "CPU per worker <= 1.5x LocalCluster(forkserver)'s", "held": None,
                    "numbers": "not measured"})
    return out


def analyse(doc: dict) -> dict[str, Any]:
    summary = summarize(doc.get("runs", []))
    return {"summary": summary, "ratios": ratios(summary), "slopes": slopes(summary),
            "targets": targets(doc, summary)}


# --------------------------------------------------------------------------- markdown


def _cell(s: dict | None, fmt: str) -> str:
    if not s:
        return "-"
    if s["n"] == 1 or s["min"] == s["max"]:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"


def _held(v: bool | None) -> str:
    return {True: "held", False: "NOT held", None: "not measured"}[v]


def markdown(doc: dict, report: dict) -> str:
    summary, rat = report["summary"], report["ratios"]
    src = doc.get("source", {})
    base = doc.get("import_baseline") or {}
    lines = [
        "# Scale study: sshdeploy vs distributed's SSHCluster vs LocalCluster (forkserver)",
        "",
        f"- date (UTC): {doc.get('date')}; total {doc.get('total_s', 0) / 60:.0f} min",
        f"- command: `{doc.get('command')}`",
        f"- sshdeploy measured: `{src.get('path')}` at `{src.get('head')}`"
        + (f" (modified: {src['modified']})" if src.get("modified") else "")
        + f", sshdeploy/*.py sha256 `{src.get('sshdeploy_py_sha256')}`",
        f"- machine: {doc['machine']['cores']} cores, {doc['machine']['mem_total_gib']:.0f} GiB, "
        f"Python {doc['machine']['python']}; shared with other work",
        f"- load at start: `{doc.get('uptime_start')}`",
        f"- load at end: `{doc.get('uptime_end')}`",
        f"- `python -c \"import distributed\"`: {base.get('import_distributed_cpu_s', 0):.2f} "
        f"CPU-s, `python -c pass`: {base.get('python_pass_cpu_s', 0):.2f} CPU-s (medians)",
        "",
        "Medians over repeats (min-max when they differ). Hosts = worker hosts; each SSH "
        "cluster also has one scheduler host. Remote CPU = utime+stime (+ reaped children) of "
        "every process in the used hosts' namespaces from the constructor call until 0.5 s after "
        "ready (LocalCluster: the controller's child processes). Close = `close()` call until no "
        "process but sshd is left on any host (LocalCluster: no worker process).",
        "",
    ]
    cols = [m for m in METRICS if m[0] not in ("controller_rss_mib", "remote_processes")]
    head = ["hosts x wph", "impl"] + [f"{label} [{unit}]" if unit else label
                                      for _, label, unit, _ in cols] + ["ok", "load"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for h, k in configs(summary):
        for impl in IMPLS:
            g = summary.get(f"{impl}|{h}|{k}")
            if not g:
                continue
            cells = [_cell(g.get(m), fmt) for m, _, _, fmt in cols]
            lines.append(f"| {h} x {k} | {impl} | " + " | ".join(cells)
                         + f" | {g['ok']}/{g['runs']} | {g['load_1min']:.1f} |")
    lines += ["", "## sshdeploy / distributed, pair by pair (ratio of medians; < 1: sshdeploy "
                  "lower)", ""]
    rcols = [("ready_s", "ready"), ("close_s", "close"), ("remote_cpu_s", "remote CPU"),
             ("host_cpu_per_host", "host CPU excl. workers"), ("cpu_per_worker", "CPU/worker"),
             ("controller_cpu_s", "controller CPU"),
             ("controller_rss_delta_mib", "controller RSS delta"),
             ("ssh_tcp_connections", "SSH conns"), ("ready_vs_local", "ready vs local"),
             ("ready_vs_floor", "ready vs floor"),
             ("floor_vs_distributed", "floor / distributed ready")]
    lines += ["| hosts x wph | " + " | ".join(c[1] for c in rcols) + " |",
              "|" + "---|" * (len(rcols) + 1)]
    for key, row in rat.items():
        h, k = key.split("|")
        lines.append(f"| {h} x {k} | " + " | ".join(
            f"{row[m]:.2f}x" if m in row else "-" for m, _ in rcols) + " |")
    lines += ["", "## Issue 9 targets", ""]
    for t in report["targets"]:
        lines.append(f"- **{_held(t['held'])}**: {t['target']}: {t['numbers']}")
    lines += ["", "## Growth: least squares over the medians, y = a + b x hosts + c x workers",
              "", "(LocalCluster runs on one machine: y = a + c x workers. Per host is a worker "
                  "host with its connection, agent and helpers; per worker is one more worker "
                  "process.)", "",
              "| cost | impl | per host (b) | per worker (c) | intercept (a) | R^2 | points |",
              "|---|---|---|---|---|---|---|"]
    units = {m: u for m, _, u, _ in METRICS}
    for metric, per_impl in report["slopes"].items():
        for impl, f in per_impl.items():
            u = units.get(metric, "")
            lines.append(
                f"| {metric} [{u}] | {impl} | "
                + (f"{f['per_host']:+.3f}" if "per_host" in f else "-") + " | "
                + (f"{f['per_worker']:+.3f}" if "per_worker" in f else "-") + " | "
                + f"{f['intercept']:.2f} | {f['r2']:.2f} | {f['points']} |")
    skipped = doc.get("skipped") or []
    failed = [(key, g) for key, g in summary.items() if g["ok"] < g["runs"]]
    if skipped or failed:
        lines += ["", "## Skipped and failed", ""]
        for s in skipped:
            lines.append(f"- skipped {s['hosts']} x {s['wph']} {s['impl']}: {s['reason']}")
        for key, g in failed:
            lines.append(f"- {key.replace('|', ' ')}: {g['runs'] - g['ok']} of {g['runs']} "
                         f"failed: {'; '.join(g['errors'])[:400]}")
    left = [(key, g["left_after_close"], g["left_after_exit"]) for key, g in summary.items()
            if g["left_after_close"] or g["left_after_exit"]]
    if left:
        lines += ["", "Processes left on hosts after close (summed over runs): " + ", ".join(
            f"{k.replace('|', ' ')}: {a} after close, {b} after the controller's exit"
            for k, a, b in left)]
    return "\n".join(lines) + "\n"
