"""The checks and arithmetic of ``scale`` and ``adapt`` (pure: no cluster, no network)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from dask.utils import parse_bytes

from sshdeploy.errors import ConfigError


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


def over_slots(n: int, memory: str | None, cores: int | None, wanted: int, slots: int) -> str:
    """What to say when a scale asks for more workers than the hosts have slots.

    Examples
    --------
    >>> over_slots(5, None, None, 5, 2)[:68]
    'scale(5) asks for 5 workers, more than the 2 slots of the hosts: sta'
    """
    asked = f"scale({n}" + (f", memory={memory!r}" if memory is not None else "") \
        + (f", cores={cores}" if cores is not None else "") + ")"
    return (f"{asked} asks for {wanted} workers, more than the {slots} slots "
            f"of the hosts: starting {slots} (give hosts more slots: n_workers, "
            "a hostfile's slots=, or repeat a host)")
