"""A named cluster's recorded arguments (its ``spec``): hosts as they are now, what differs.

Pure, no I/O. The spec itself is written and read back by
:meth:`sshdeploy.arguments.ClusterArgs.to_record` / ``from_record`` (one entry
per keyword its declaration keeps, plus ``wanted`` and ``dropped``); here is
what changes it while the cluster runs (hosts added and removed) and what
tells whether an ``up`` asks for the running cluster or another one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from sshdeploy.arguments import KEYWORDS, host_json
from sshdeploy.hosts import Host

#: The arguments that make a cluster what it is (an ``up`` that changes one is another cluster).
COMPARED = tuple(kw.name for kw in KEYWORDS if kw.compared)


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
