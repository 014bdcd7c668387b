"""The JSON form of a named cluster's arguments: stored, compared, turned back into arguments.

Pure, no I/O. Only JSON values are kept (an ``asyncssh`` key object or a
callable in an option cannot be stored and is left out, by name); what is
kept is enough to rebuild the cluster's plan (``from_name``, ``scale``) and
to tell whether an ``up`` asks for the running cluster or another one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from sshdeploy.hosts import Host
from sshdeploy.placement import as_hosts, per_host

#: The arguments that make a cluster what it is (an ``up`` that changes one is another cluster).
COMPARED = ("hosts", "worker_options", "scheduler_options", "worker_class", "scheduler_class",
            "remote_python", "setup", "env", "security", "idle_timeout", "max_lifetime")


def jsonable(value: Any, dropped: list[str], where: str) -> Any:
    """Return *value* with what JSON cannot hold left out (its place named in *dropped*).

    Examples
    --------
    >>> dropped = []
    >>> jsonable({"a": 1, "b": [1, "x"], "c": object()}, dropped, "opts")
    {'a': 1, 'b': [1, 'x']}
    >>> dropped
    ['opts.c']
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                dropped.append(f"{where}[{k!r}]")
                continue
            item = jsonable(v, dropped, f"{where}.{k}")
            if item is not None or v is None:
                out[k] = item
        return out
    if isinstance(value, (list, tuple)):
        return [jsonable(v, dropped, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "__fspath__"):
        return str(value)
    dropped.append(where)
    return None


def cluster_spec(
    hosts: Sequence[str | Host] | None,
    connect_options: Any,
    worker_options: Mapping[str, Any] | None,
    scheduler_options: Mapping[str, Any] | None,
    worker_class: str,
    remote_python: str | Sequence[str] | None,
    *,
    setup: str | Sequence[str] | None,
    env: Mapping[str, str] | None,
    scheduler_class: str | None,
    restart_workers: bool,
    security: bool,
    forward_ports: bool | None,
    idle_timeout: float | None,
    max_lifetime: float | None,
    wanted: int,
) -> dict[str, Any]:
    """Return the JSON form of SSHCluster's arguments (what ``from_name`` rebuilds from)."""
    hs = as_hosts(hosts)
    dropped: list[str] = []
    pythons = per_host(remote_python, len(hs), "remote_python")
    copts = per_host(connect_options, len(hs), "connect_options")
    return {
        "hosts": [host_json(h) for h in hs],
        "connect_options": [jsonable(dict(o or {}), dropped, "connect_options") for o in copts],
        "worker_options": jsonable(dict(worker_options or {}), dropped, "worker_options"),
        "scheduler_options": jsonable(dict(scheduler_options or {}), dropped,
                                      "scheduler_options"),
        "worker_class": worker_class,
        "scheduler_class": scheduler_class,
        "remote_python": pythons,
        "setup": setup,
        "env": dict(env or {}),
        "restart_workers": restart_workers,
        "security": bool(security),
        "forward_ports": forward_ports,
        "idle_timeout": idle_timeout,
        "max_lifetime": max_lifetime,
        "wanted": wanted,
        "dropped": dropped,
    }


def host_json(host: Host) -> dict[str, Any]:
    """One host of a stored spec: its set fields (``spare`` only when it is one)."""
    return {k: v for k, v in dataclasses.asdict(host).items()
            if v is not None and v is not False}


def with_hosts(spec: Mapping[str, Any], worker_hosts: Sequence[tuple[Host, int, str, bool]]
               ) -> dict[str, Any]:
    """Return *spec* with the worker hosts a running cluster has now (added, removed).

    Parameters
    ----------
    spec : dict
        The stored spec; its first host (the scheduler's) always stays.
    worker_hosts : list of (Host, slots, python, spare)
        Every worker host of the cluster now.

    Entries of hosts still there are kept as written (their per-host
    ``connect_options`` and ``remote_python`` entries too); a new host is
    appended with its slots, Python and spare flag, and the connect options
    of the first worker host.

    Examples
    --------
    >>> spec = {"hosts": [{"hostname": "s"}, {"hostname": "a"}, {"hostname": "b"}],
    ...         "connect_options": [{}, {"port": 22}, {"port": 22}],
    ...         "remote_python": ["/py", "/py", "/py"]}
    >>> new = with_hosts(spec, [(Host("a"), 1, "/py", False), (Host("c"), 2, "/py", True)])
    >>> new["hosts"]
    [{'hostname': 's'}, {'hostname': 'a'}, {'hostname': 'c', 'slots': 2, 'spare': True}]
    >>> new["connect_options"], new["remote_python"]
    ([{}, {'port': 22}, {'port': 22}], ['/py', '/py', '/py'])
    """
    hosts = [Host(**h) for h in spec.get("hosts") or []]
    n = len(hosts)
    copts = list(spec.get("connect_options") or [{}] * n)
    pythons = list(spec.get("remote_python") or [None] * n)
    now = {h.hostname: h for h, *_ in worker_hosts}
    keep = [0, *(i for i in range(1, n) if hosts[i].hostname in now)]
    model = copts[keep[1]] if len(keep) > 1 else copts[0] if copts else {}
    out_hosts = [spec["hosts"][i] for i in keep]
    out_copts = [copts[i] for i in keep]
    out_pythons = [pythons[i] for i in keep]
    there = {hosts[i].hostname for i in keep[1:]}
    for host, slots, python, spare in worker_hosts:
        if host.hostname in there:
            continue
        out_hosts.append(host_json(dataclasses.replace(host, slots=slots, spare=spare)))
        out_copts.append(model)
        out_pythons.append(python)
    return {**spec, "hosts": out_hosts, "connect_options": out_copts,
            "remote_python": out_pythons}


def hosts_of(spec: Mapping[str, Any]) -> list[Host]:
    """Return the hosts of a stored spec."""
    return [Host(**h) for h in spec.get("hosts") or []]


def arguments(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Return SSHCluster keyword arguments rebuilt from a stored spec (security aside)."""
    return {
        "hosts": hosts_of(spec),
        "connect_options": list(spec.get("connect_options") or []) or None,
        "worker_options": dict(spec.get("worker_options") or {}),
        "scheduler_options": dict(spec.get("scheduler_options") or {}),
        "worker_class": spec.get("worker_class") or "distributed.Nanny",
        "scheduler_class": spec.get("scheduler_class"),
        "remote_python": list(spec.get("remote_python") or []) or None,
        "setup": spec.get("setup"),
        "env": dict(spec.get("env") or {}),
        "restart_workers": bool(spec.get("restart_workers", True)),
        "forward_ports": spec.get("forward_ports"),
        "idle_timeout": spec.get("idle_timeout"),
        "max_lifetime": spec.get("max_lifetime"),
    }


def differences(running: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Say which compared arguments differ between two specs, one entry each.

    Examples
    --------
    >>> a = {"hosts": [{"hostname": "n1"}, {"hostname": "n2"}], "setup": None}
    >>> b = {"hosts": [{"hostname": "n1"}, {"hostname": "n3"}], "setup": None}
    >>> differences(a, b)
    ['hosts: n1, n2 -> n1, n3']
    >>> differences(a, a)
    []
    """
    out = []
    for key in COMPARED:
        old, new = running.get(key), wanted.get(key)
        if old == new:
            continue
        if key == "hosts":
            def show(hs: Any) -> str:
                return ", ".join(Host(**h).as_written() for h in hs or [])

            out.append(f"hosts: {show(old)} -> {show(new)}")
        else:
            out.append(f"{key}: {old!r} -> {new!r}")
    return out
