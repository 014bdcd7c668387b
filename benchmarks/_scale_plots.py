"""PNG plots of a scale study; the only place matplotlib is imported (the ``bench`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {"sshdeploy": "tab:blue", "distributed": "tab:red", "local": "tab:gray",
           "floor": "tab:green"}
STYLES = {1: "-", 4: "--"}

#: file suffix, metric, y label, implementations that have it
PLOTS = [
    ("ready", "ready_s", "ready: constructor -> all workers registered [s]", None),
    ("remote-cpu", "remote_cpu_s", "remote CPU until ready [CPU-s]", None),
    ("controller-cpu", "controller_cpu_s", "controller CPU until ready [CPU-s]",
     ("sshdeploy", "distributed", "local")),
    ("controller-rss", "controller_rss_delta_mib", "controller RSS delta while running [MiB]",
     ("sshdeploy", "distributed", "local")),
    ("close", "close_s", "close() -> no remote process left [s]",
     ("sshdeploy", "distributed", "local")),
    ("ssh-connections", "ssh_tcp_connections", "TCP connections to port 22 while running",
     ("sshdeploy", "distributed")),
]


def plot_all(doc: dict, report: dict, out_dir: Path, stem: str) -> list[Path]:
    """Write one PNG per cost vs worker hosts (a line per implementation and workers/host)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary: dict[str, Any] = report["summary"]
    src = doc.get("source", {})
    note = f"{doc.get('date', '')[:16]}  sshdeploy {src.get('head', '?')}"
    paths = []
    for suffix, metric, ylabel, only in PLOTS:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=80)
        drawn = False
        for key in sorted({k.rsplit("|", 2)[0] + "|" + k.rsplit("|", 1)[1] for k in summary}):
            impl, wph = key.split("|")
            if only and impl not in only:
                continue
            pts = sorted(
                (int(k.split("|")[1]), g[metric])
                for k, g in summary.items()
                if k.startswith(impl + "|") and k.endswith("|" + wph) and metric in g
            )
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ys = [p[1]["median"] for p in pts]
            err = [[p[1]["median"] - p[1]["min"] for p in pts],
                   [p[1]["max"] - p[1]["median"] for p in pts]]
            label = f"{impl}, {wph} worker{'s' if wph != '1' else ''}/host"
            if impl == "local":
                label = f"LocalCluster forkserver, same workers ({wph}/host)"
            elif impl == "floor":
                label = "floor: a login + one import distributed per host"
                if wph != "1":
                    continue  # the same for every workers/host: drawn once
            ax.errorbar(xs, ys, yerr=err, color=COLOURS.get(impl, "black"),
                        linestyle=STYLES.get(int(wph), ":"), marker="o", markersize=4,
                        capsize=2, label=label)
            drawn = True
        if metric == "ssh_tcp_connections" and drawn:
            hs = sorted({int(k.split("|")[1]) for k in summary})
            ax.plot(hs, [h + 1 for h in hs], color="black", linewidth=0.8, linestyle=":",
                    label="hosts used (worker hosts + scheduler host)")
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xticks(sorted({int(k.split("|")[1]) for k in summary}))
        ax.set_xlabel("worker hosts")
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(note, fontsize=7, loc="right")
        fig.tight_layout()
        path = out_dir / f"{stem}-{suffix}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths
