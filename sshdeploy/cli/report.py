"""What ``dask-ssh`` reports: the banner, the plan (``--dry-run``), the check table.

Rendering only: everything goes to a rich console (:mod:`sshdeploy.cli.console`),
whose rules decide colour. The module imports neither asyncssh nor distributed.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sshdeploy.cli.remote_output import remote_prefix

__all__ = ["MASK", "mask_env", "print_banner", "print_check_table", "print_gpus", "print_plan"]


def print_banner(
    console: Console,
    *,
    scheduler_address: str,
    dashboard_link: str | None,
    scheduler_host: str,
    workers_by_host: Mapping[str, Sequence[str]],
    versions: Mapping[str, str] | None = None,
    forwarded_from: str | None = None,
    failed_hosts: Mapping[str, str] | None = None,
    connect_line: str | None = None,
    each_by_host: Mapping[str, str] | None = None,
    later_hosts: Mapping[str, str] | None = None,
) -> None:
    """Print the banner shown once the cluster runs.

    Parameters
    ----------
    console : rich.console.Console
    scheduler_address : str
        E.g. ``tcp://10.0.0.1:8786``.
    dashboard_link : str or None
    scheduler_host : str
        The scheduler's host as ``user@host:port``.
    workers_by_host : Mapping[str, Sequence[str]]
        Host (``user@host:port``) to the names of the workers it runs.
    versions : Mapping[str, str], optional
        Shown in the title line, e.g. ``{"sshdeploy": "0.1.0", "distributed": "2026.8.0"}``.
    forwarded_from : str, optional
        The scheduler's own address when *scheduler_address* is a local port
        forwarded to it through SSH; said in one line.
    failed_hosts : Mapping[str, str], optional
        Hosts left out (``--min-workers``) and why: one line each.
    connect_line : str, optional
        The Python line that connects a client (``--tls``), printed whole.
    each_by_host : Mapping[str, str], optional
        Host to what each of its workers has (``1 thread, 11.72 GiB``).
    later_hosts : Mapping[str, str], optional
        Hosts with no worker yet (spares, ``--initial-workers``) to what they
        are kept for: one line each, not connected to yet.

    Examples
    --------
    >>> import io
    >>> from sshdeploy.cli.console import make_console
    >>> buf = io.StringIO()
    >>> print_banner(make_console(buf), scheduler_address="tcp://n1:8786",
    ...     dashboard_link=None, scheduler_host="n1:22", workers_by_host={"n2:22": ["n2-0"]})
    >>> print(buf.getvalue().strip())
    dask-ssh
      scheduler  tcp://n1:8786  on n1:22
      workers    1 on 1 host
        n2:22  n2-0
    """
    title = Text("dask-ssh", style="bold")
    if versions:
        title.append("  " + " · ".join(f"{k} {v}" for k, v in versions.items()), style="dim")
    console.print(title)
    line = Text("  scheduler  ")
    line.append(scheduler_address, style="bold magenta")
    line.append(f"  on {scheduler_host}")
    console.print(line)
    if forwarded_from:
        console.print(Text(f"  scheduler reached through SSH ({forwarded_from} on "
                           f"{scheduler_host})"))
    if dashboard_link:
        line = Text("  dashboard  ")
        line.append(dashboard_link, style="underline")
        console.print(line)
    n_workers = sum(len(names) for names in workers_by_host.values())
    n_hosts = len(workers_by_host)
    console.print(Text(f"  workers    {n_workers} on {n_hosts} host{'s' if n_hosts != 1 else ''}"))
    width = max((len(h) for h in workers_by_host), default=0)
    for host, names in workers_by_host.items():
        line = Text(f"    {host.ljust(width)}  ")
        line.append(", ".join(names), style=remote_prefix(names[0] if names else host).style)
        each = (each_by_host or {}).get(host)
        if each:
            line.append(f"  ({each} each)", style="dim")
        console.print(line)
    for host, what in (later_hosts or {}).items():
        console.print(Text(f"  {what.ljust(9)}  {host}  (no worker yet; not connected to)",
                           style="dim"))
    for host, reason in (failed_hosts or {}).items():
        line = Text("  left out  ", style="bold yellow")
        line.append(f"{host}: {_one_line(reason)}")
        console.print(line, soft_wrap=True)
    if connect_line:
        console.print(Text("  connect with:"))
        console.print(Text(connect_line), soft_wrap=True, highlight=False)


#: What ``--dry-run`` shows instead of an ``--env`` value.
MASK = "***"


def mask_env(text: str, env: Mapping[str, str]) -> str:
    """Replace the value of every ``KEY=value`` of *env* in *text* by :data:`MASK`.

    Plain and shell-quoted spellings are both masked; the names stay.

    Examples
    --------
    >>> mask_env("export TOKEN='s3 cret' A=1; run", {"TOKEN": "s3 cret", "A": "1"})
    'export TOKEN=*** A=***; run'
    """
    for key, value in env.items():
        for spelled in {value, shlex.quote(value), repr(value)}:
            text = text.replace(f"{key}={spelled}", f"{key}={MASK}")
    return text


def _shown_options(options: Mapping[str, Any], env: Mapping[str, str]) -> str:
    parts = []
    for key, value in options.items():
        if isinstance(value, Mapping) and (key == "env" or (env and set(value) <= set(env))):
            value = {k: MASK for k in value}
        text = f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"
        parts.append(mask_env(text, env))
    return " ".join(parts)


def print_plan(
    console: Console, plans: Iterable[Any], env: Mapping[str, str] | None = None
) -> None:
    """Print what ``--dry-run`` would start: per host, role, names, Python, command.

    Parameters
    ----------
    console : rich.console.Console
    plans : iterable of RemotePlan
        Objects with ``host``, ``role``, ``names``, ``python``, ``command``
        and ``options`` attributes (see ``SSHCluster.remote_commands``).
    env : Mapping[str, str], optional
        The ``--env`` variables: their names are shown, their values masked
        (``TOKEN=***``) wherever they appear as ``KEY=value``.

    Examples
    --------
    >>> import io, types
    >>> from sshdeploy.cli.console import make_console
    >>> buf = io.StringIO()
    >>> plan = types.SimpleNamespace(host="u@n1:22", role="scheduler", names=["scheduler"],
    ...     python="/usr/bin/python3", command="TOKEN=abc python3 -m x",
    ...     options={"port": 8786, "env": {"TOKEN": "abc"}})
    >>> print_plan(make_console(buf), [plan], env={"TOKEN": "abc"})
    >>> print(buf.getvalue().strip())
    # u@n1:22  scheduler  scheduler
    #   python:  /usr/bin/python3
    #   options: port=8786 env={'TOKEN': '***'}
    TOKEN=*** python3 -m x
    """
    env = dict(env or {})
    plain = not console.is_terminal  # off a terminal: plain writes, linear and fast
    out: list[str] = []
    first = True
    for plan in plans:
        if first:
            settings = getattr(plan, "settings", None) or {}
            if settings:
                shown = " ".join(f"{k}={v}" for k, v in settings.items())
                _emit(console, out, plain, Text(f"# settings: {shown}", style="dim"))
                _emit(console, out, plain, Text(""))
        else:
            _emit(console, out, plain, Text(""))
        first = False
        head = Text("# ")
        head.append(str(plan.host), style="bold")
        role = "spare" if getattr(plan, "spare", False) else plan.role
        head.append(f"  {role}  ", style="magenta" if role == "scheduler" else "cyan")
        head.append(", ".join(plan.names))
        _emit(console, out, plain, head)
        _emit(console, out, plain, Text(f"#   python:  {plan.python}", style="dim"))
        options = getattr(plan, "options", None) or {}
        if options:
            _emit(console, out, plain,
                  Text(f"#   options: {_shown_options(options, env)}", style="dim"))
        share = getattr(plan, "share", "")
        if share:
            _emit(console, out, plain, Text(f"#   each worker: {share}", style="dim"))
        gpus = getattr(plan, "gpus", "")
        if gpus:
            _emit(console, out, plain, Text(f"#   gpus:    {gpus}", style="dim"))
        _emit(console, out, plain, Text(mask_env(str(plan.command), env)))
        if len(out) > 4096:
            console.file.write("".join(out))
            out.clear()
    if out:
        console.file.write("".join(out))
        console.file.flush()


def _emit(console: Console, out: list[str], plain: bool, text: Text) -> None:
    """Print *text* with rich on a terminal; else queue it as a plain line."""
    if plain:
        out.append(text.plain + "\n")
    else:
        console.print(text)


_VERSION_KEYS = ("python", "dask", "distributed")


def print_check_table(console: Console, checks: Sequence[Any]) -> None:
    """Print the ``--check`` table (one row per host), then the reason of each failure.

    The table's cells stay short; the full reason of each failed host follows
    it, one line per host (``FAILED host: reason``) that is never wrapped, so
    ``dask-ssh --check ... | grep`` finds every message whole. Off a terminal
    the table is not wrapped either: it takes the width it needs.

    Parameters
    ----------
    console : rich.console.Console
    checks : sequence of HostCheck
        Objects with ``host``, ``reachable``, ``authenticated``, ``python``,
        ``versions``, ``local_versions``, ``error`` and ``ok``.

    Notes
    -----
    A version that differs from the controller's is shown as
    ``remote (local here)`` in red.
    """
    console.print(Text("dask-ssh --check", style="italic"))
    table = Table(show_lines=False)
    table.add_column("host", no_wrap=True)
    table.add_column("reachable")
    table.add_column("auth")
    table.add_column("remote python", overflow="fold")  # the full path is also below
    for key in _VERSION_KEYS:
        table.add_column(key)
    table.add_column("result", overflow="fold")
    local: Mapping[str, str] = {}
    for check in checks:
        local = check.local_versions or local
        cells: list[Text | str] = [
            Text(str(check.host), style="bold"),
            _yes_no(check.reachable),
            _yes_no(check.authenticated) if check.reachable else Text("-", style="dim"),
            check.python or Text("-", style="dim"),
        ]
        for key in _VERSION_KEYS:
            remote = (check.versions or {}).get(key)
            here = (check.local_versions or {}).get(key)
            if remote is None:
                cells.append(Text("-", style="dim"))
            elif here is not None and here != remote:
                cells.append(Text(f"{remote} (local {here})", style="red"))
            else:
                cells.append(Text(remote, style="green"))
        if check.ok:
            cells.append(Text("ok", style="green"))
        else:
            cells.append(Text("FAILED (below)", style="red"))
        table.add_row(*cells)
    if console.is_terminal:
        console.print(table)
    else:  # nobody resizes a pipe or a file: the table takes the width it needs
        Console(file=console.file, width=_UNWRAPPED, color_system=None, markup=False,
                emoji=False, highlight=False).print(table)
    for check in checks:
        if not check.ok:
            line = Text("FAILED ", style="bold red")
            line.append(f"{check.host}: ", style="bold")
            line.append(_one_line(check.error or "failed"))
            console.print(line, soft_wrap=True)
    if local:
        console.print(
            Text(
                "controller: " + ", ".join(f"{k} {local[k]}" for k in _VERSION_KEYS if k in local),
                style="dim",
            )
        )
    failed = sum(1 for c in checks if not c.ok)
    if failed:
        console.print(Text(f"{failed} of {len(checks)} host(s) failed the check", style="bold red"))
    else:
        console.print(Text(f"all {len(checks)} host(s) ok", style="bold green"))


_UNWRAPPED = 100_000


def print_gpus(console: Console, checks: Sequence[Any], cpu_workers: int = 0) -> bool:
    """Print, per host asked for GPUs, what ``--check`` found there and who gets what.

    One line per host (what was found, the workers it will run), then one
    line per GPU: index, UUID, name, memory, who else uses it, and whether
    the request skips it. Returns False when ``auto`` / ``free`` found no GPU
    on any host (the start would fail).

    Parameters
    ----------
    console : rich.console.Console
    checks : sequence of HostCheck
        Those with ``gpus`` (a :class:`~sshdeploy.gpus.GpuChoice`) are shown.
    cpu_workers : int
        CPU-only workers beside the GPU workers of each GPU host.

    Examples
    --------
    >>> import io, types
    >>> from sshdeploy.cli.console import make_console
    >>> from sshdeploy.gpus import Gpu, Inventory, choose
    >>> inv = Inventory("root@n3:22", "nvidia-smi", (Gpu(0, "GPU-a", "T4", 2**34, 2**28),))
    >>> check = types.SimpleNamespace(host="root@n3:22", gpus=choose("auto", inv, 0.1))
    >>> buf = io.StringIO()
    >>> print_gpus(make_console(buf), [check])
    True
    >>> print(buf.getvalue().rstrip())
    GPUs (gpus=auto):
      root@n3:22  1 GPU (nvidia-smi) -> n3-gpu0
        gpu0  GPU-a  T4  16.0 GiB, 0.2 GiB used
    """
    shown = [c for c in checks if getattr(c, "gpus", None) is not None]
    if not shown:
        return True
    from sshdeploy.gpus import size

    asks = sorted({c.gpus.ask for c in shown})
    console.print(Text(f"GPUs (gpus={', '.join(asks)}):", style="bold"), soft_wrap=True)
    for check in shown:
        choice = check.gpus
        hostname = str(check.host).rpartition("@")[2].rsplit(":", 1)[0].strip("[]")
        names = choice.names(hostname, cpu_workers)
        then = ", ".join(names) if names else (
            "its workers run without GPU" if choice.no_gpu else "no worker there")
        line = Text(f"  {check.host}  ", style="bold")
        line.append(f"{choice.inventory.found()} -> {then}")
        if names and choice.inventory.dask_cuda:  # its plugins set the GPU workers up
            line.append(f"  (dask-cuda {choice.inventory.dask_cuda})")
        console.print(line, soft_wrap=True)
        skipped = dict((g.index, why) for g, why in choice.skipped)
        chosen = {g.index for g in choice.chosen}
        visible = {g.index for g in choice.inventory.shown()[0]}
        for gpu in choice.inventory.gpus:
            row = Text(f"    gpu{gpu.index}  {gpu.uuid}  {gpu.name}  {size(gpu.memory_total)}, "
                       f"{size(gpu.memory_used)} used", style="" if gpu.index in chosen
                       else "dim")
            others = [p.who() for p in gpu.processes or ()
                      if p.uid is None or p.uid != choice.inventory.uid]
            if gpu.index in skipped:  # (why says who uses it)
                row.append(f"  skipped: {skipped[gpu.index]}", style="yellow")
            else:
                if others:
                    row.append("  in use by " + ", ".join(others), style="yellow")
                if gpu.index not in visible:
                    row.append("  hidden by CUDA_VISIBLE_DEVICES", style="dim")
                elif gpu.index not in chosen:
                    row.append("  not asked for", style="dim")
            console.print(row, soft_wrap=True)
        for note in choice.notes:
            console.print(Text(f"    note: {note}", style="yellow"), soft_wrap=True)
    if not any(c.gpus.chosen for c in shown) and all(c.gpus.ask in ("auto", "free")
                                                      for c in shown):
        console.print(Text(f"FAILED gpus={', '.join(asks)} found no "
                           f"{'free ' if 'free' in asks else ''}GPU on any host: the start "
                           "would fail", style="bold red"), soft_wrap=True)
        return False
    return True


def _one_line(text: str) -> str:
    """Join the lines of a multi-line reason with `` | ``."""
    return " | ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _yes_no(value: bool) -> Text:
    return Text("yes", style="green") if value else Text("no", style="red")
