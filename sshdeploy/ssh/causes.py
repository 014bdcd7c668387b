"""The cause of a remote start failure, from its traceback, with the option behind it.

A scheduler or worker that fails remotely raises deep inside distributed;
the agent sends back the exception and its traceback. :func:`explain`
finds the root exception and, for the failures users cause themselves (a
port in use, an option the class does not take, an unparsable address),
says which option to change. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sshdeploy.roles import Role

#: A line that states an exception: ``OSError: [Errno 98] ...``.
_EXC_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Exit|Interrupt)): (.*)$")
_UNEXPECTED_KW = re.compile(r"unexpected keyword argument '(\w+)'")
_BIND = re.compile(r"address \(?'?([^',()]*)'?, (\d+)\)?|:(\d+)\b")


@dataclass(frozen=True)
class Explanation:
    """What failed, why, and what to do: the parts of a StartError."""

    what: str
    cause: str
    remedy: str
    known: bool


def root_exception(error: str, tb: str) -> str:
    """Return the first exception stated in *tb* (the root of a chain), else *error*.

    Examples
    --------
    >>> tb = "Traceback...\\nOSError: [Errno 98] in use\\n\\nThe above...\\nRuntimeError: failed"
    >>> root_exception("RuntimeError: failed", tb)
    'OSError: [Errno 98] in use'
    """
    for line in tb.splitlines():
        m = _EXC_LINE.match(line.strip())
        if m and "failed to start" not in m.group(2):
            return f"{m.group(1)}: {m.group(2)}"
    return error


def explain(role: Role, kwargs: Mapping[str, Any], error: str, tb: str) -> Explanation:
    """Turn a remote start failure into what, cause and remedy.

    Parameters
    ----------
    role : {"scheduler", "worker"}
    kwargs : Mapping
        The keywords the process was started with.
    error, tb : str
        The exception text and traceback the agent sent.

    Examples
    --------
    >>> e = explain("scheduler", {"port": 22}, "RuntimeError: Scheduler failed to start",
    ...             "OSError: [Errno 98] Address already in use")
    >>> e.what, "--scheduler-port" in e.remedy
    ('port 22 is in use', True)
    """
    root = root_exception(error, tb)
    options = "scheduler_options" if role == "scheduler" else "worker_options"
    text = root + "\n" + tb
    if "Address already in use" in text or "Errno 98" in text:
        return _port_in_use(role, kwargs, text, root)
    m = _UNEXPECTED_KW.search(root)
    if m:
        return Explanation(
            what=f"the {role} class does not take the option {m.group(1)!r}",
            cause=root, known=True,
            remedy=f"Remove or correct {m.group(1)!r} in {options}.",
        )
    if "dashboard" in tb and ("start_http_server" in tb or "clean_dashboard_address" in tb):
        value = kwargs.get("dashboard_address")
        return Explanation(
            what=f"dashboard_address {value!r} cannot be used", cause=root, known=True,
            remedy="Give ':PORT' or 'HOST:PORT' (--dashboard-address, or "
            "scheduler_options={'dashboard_address': ...}).",
        )
    return Explanation(what="failed to start", cause=root, known=False,
                       remedy="Read the remote output below; fix the option or the "
                       "environment it names.")


def _port_in_use(role: Role, kwargs: Mapping[str, Any], text: str, root: str) -> Explanation:
    if role == "scheduler":
        port = kwargs.get("port")
        return Explanation(
            what=f"port {port} is in use" if port else "its port is in use",
            cause=root, known=True,
            remedy="Choose another --scheduler-port (scheduler_options={'port': N}; "
            "0 picks a free one).",
        )
    ports = [v for k in ("worker_port", "nanny_port") if (v := kwargs.get(k))]
    shown = ", ".join(f"{k}={kwargs[k]!r}" for k in ("worker_port", "nanny_port")
                      if kwargs.get(k))
    return Explanation(
        what=f"its port is in use ({shown})" if ports else "its port is in use",
        cause=root, known=True,
        remedy="Choose other --worker-port / --nanny-port values (a free range such as "
        "'40000:40100', or 0 for a free port).",
    )
