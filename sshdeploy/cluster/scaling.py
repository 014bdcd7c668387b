"""The checks and arithmetic of ``scale`` and ``adapt`` (pure: no cluster, no network)."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from typing import Any

from dask.utils import parse_bytes

from sshdeploy.errors import ConfigError, ScaleError
from sshdeploy.hosts import ConnectionKey
from sshdeploy.placement import Placement


def check_count(n: Any) -> None:
    """Refuse a worker count that is not a whole number >= 0.

    Examples
    --------
    >>> check_count(-1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sshdeploy.errors.ConfigError: scale(n): must be a whole number >= 0, got -1. ...
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError("scale(n)", f"must be a whole number >= 0, got {n!r}",
                          remedy="Give the number of workers wanted, e.g. scale(4).")


def check_open(status: str, n: int) -> None:
    """Refuse a scale of a closed cluster, or one up of a closing cluster (*status* by name).

    Examples
    --------
    >>> check_open("running", 3), check_open("closing", 0)
    (None, None)
    >>> check_open("closed", 0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sshdeploy.errors.ConfigError: scale(0): the cluster is closed. Build a new SSHCluster ...
    """
    if status == "closed" or (status == "closing" and n):
        raise ConfigError(f"scale({n})", f"the cluster is {status}",
                          remedy="Build a new SSHCluster to start workers again.")


def check_bounds(minimum: Any, maximum: Any) -> None:
    """Refuse adapt bounds that are not whole numbers >= 0, or a minimum above the maximum.

    Examples
    --------
    >>> check_bounds(0, math.inf)
    >>> check_bounds(3, 2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sshdeploy.errors.ConfigError: adapt(minimum=..., maximum=...): minimum 3 is above maximum 2...
    """
    for arg, value in (("minimum", minimum), ("maximum", maximum)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                isinstance(value, float) and value != math.inf and not value.is_integer()):
            raise ConfigError(f"adapt({arg}=...)",
                              f"must be a whole number >= 0, got {value!r}",
                              remedy="E.g. adapt(minimum=0, maximum=8).")
    if minimum > maximum:
        raise ConfigError("adapt(minimum=..., maximum=...)",
                          f"minimum {minimum} is above maximum {maximum}",
                          remedy="Give minimum <= maximum.")


def wanted(n: int, memory: str | None, cores: int | None,
           memory_per_worker: Callable[[], int], threads_per_worker: Callable[[], int]) -> int:
    """The workers ``scale(n, memory=, cores=)`` asks for (the largest of the three).

    Examples
    --------
    >>> wanted(1, "10GiB", None, lambda: 4 * 2**30, lambda: 2)
    3
    >>> wanted(2, None, 9, lambda: 0, lambda: 4)
    3
    """
    count = n
    if memory is not None:
        count = max(count, math.ceil(parse_bytes(memory) / memory_per_worker()))
    if cores is not None:
        count = max(count, math.ceil(cores / threads_per_worker()))
    return count


def slots(placement: Placement, excluded: Collection[ConnectionKey] = ()) -> int:
    """The worker slots of the hosts in use (quarantined and lost hosts *excluded*)."""
    return sum(hp.slots for k, hp in placement.worker_hosts.items() if k not in excluded)


def gpu_slots(placement: Placement, excluded: Collection[ConnectionKey] = ()) -> str:
    """How the GPU hosts' slots add up (empty without GPU hosts), for :func:`over_slots`.

    Examples
    --------
    >>> from sshdeploy.placement import GpuSlot, place
    >>> from dataclasses import replace
    >>> p = place(["s", "a", "b"])
    >>> a, b = p.worker_hosts
    >>> g = replace(p.worker_hosts[a], slots=3, gpu_slots=(GpuSlot("a-gpu0", {}),) * 2)
    >>> gpu_slots(replace(p, worker_hosts={a: g, b: p.worker_hosts[b]}))
    'a: 2 GPUs + 1 CPU-only, b: 1'
    """
    hosts = {k: hp for k, hp in placement.worker_hosts.items() if k not in excluded}
    if not any(hp.gpu_slots for hp in hosts.values()):
        return ""
    parts = []
    for hp in hosts.values():
        n = len(hp.gpu_slots)
        text = f"{n} GPU{'s' if n != 1 else ''}" + (
            f" + {hp.slots - n} CPU-only" if hp.slots > n else "") if n else str(hp.slots)
        parts.append(f"{hp.host.hostname}: {text}")
    return ", ".join(parts)


def _asked(n: int, memory: str | None, cores: int | None) -> str:
    return f"scale({n}" + (f", memory={memory!r}" if memory is not None else "") \
        + (f", cores={cores}" if cores is not None else "") + ")"


def check_gpu_room(n: int, memory: str | None, cores: int | None, wanted: int,
                   placement: Placement, adapting: bool) -> None:
    """Refuse an explicit scale beyond the slots of a cluster with GPU hosts (adapt is capped).

    A GPU host's slots are its GPUs (one worker each) and its ``cpu_workers``;
    more workers there would share a GPU, so ``scale`` says the arithmetic and
    changes nothing. ``adapt`` (*adapting*) is capped at the slots instead
    (:func:`over_slots`), as on any cluster.

    Raises
    ------
    ScaleError
        *wanted* is above the slots of every host (taken-out hosts count: they
        hold their slots until readmitted).

    Examples
    --------
    >>> from sshdeploy.placement import GpuSlot, place
    >>> from dataclasses import replace
    >>> p = place(["s", "a", "b"])
    >>> a, b = p.worker_hosts
    >>> g = replace(p.worker_hosts[a], slots=2, gpu_slots=(GpuSlot("a-gpu0", {}),) * 2)
    >>> p = replace(p, worker_hosts={a: g, b: p.worker_hosts[b]})
    >>> check_gpu_room(3, None, None, 3, p, adapting=False)
    >>> check_gpu_room(3, None, None, 3, p, adapting=True)
    >>> check_gpu_room(4, None, None, 4, p, adapting=False)  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    sshdeploy.errors.ScaleError: scale(4): asks for 4 workers, more than the 3 slots of the
    hosts (a: 2 GPUs, b: 1; one worker per GPU: 2 + 1 = 3). Scale to at most 3 ...
    """
    detail = gpu_slots(placement)
    total = slots(placement)
    if adapting or not detail or wanted <= total:
        return
    sums = " + ".join(str(hp.slots) for hp in placement.worker_hosts.values())
    raise ScaleError(
        _asked(n, memory, cores), f"asks for {wanted} workers, more than the {total} slots of "
        f"the hosts ({detail}; one worker per GPU: {sums} = {total})", wanted=wanted,
        slots=total, remedy=f"Scale to at most {total} (a GPU host takes no more workers than "
        "its GPUs and cpu_workers), or start the cluster with more GPU hosts; adapt() is "
        "capped at the slots.")


def over_slots(n: int, memory: str | None, cores: int | None, wanted: int, slots: int,
               placement: Placement | None = None,
               excluded: Collection[ConnectionKey] = ()) -> str:
    """What to say when a scale asks for more workers than the hosts have slots.

    With GPU hosts, how the slots add up (one per GPU) is said too.

    Examples
    --------
    >>> over_slots(5, None, None, 5, 2)[:68]
    'scale(5) asks for 5 workers, more than the 2 slots of the hosts: sta'
    """
    asked = _asked(n, memory, cores)
    detail = gpu_slots(placement, excluded) if placement is not None else ""
    if detail:
        return (f"{asked} asks for {wanted} workers, more than the {slots} slots of the "
                f"hosts ({detail}; one worker per GPU): starting {slots} (a GPU host takes "
                "no more workers than its GPUs and cpu_workers)")
    return (f"{asked} asks for {wanted} workers, more than the {slots} slots "
            f"of the hosts: starting {slots} (give hosts more slots: n_workers, "
            "a hostfile's slots=, or repeat a host)")
