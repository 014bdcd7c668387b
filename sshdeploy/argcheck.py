"""Type checks of :class:`sshdeploy.SSHCluster`'s arguments, before anything is planned.

Pure, no network: each wrong type or value becomes a
:class:`~sshdeploy.errors.ConfigError` naming the argument, instead of an
``AttributeError`` from deep inside, or a host called ``None`` that fails
to connect after 26 s. Checks that need the placement (``min_workers``
against the slots) are in :func:`check_min_workers`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError
from .hosts import Host

#: What the CLI's ``--env KEY=VALUE`` accepts as KEY (a shell variable name).
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def check_hosts(hosts: Any) -> None:
    """Each entry of *hosts* is a non-empty string or a :class:`Host`.

    Examples
    --------
    >>> check_hosts(["a", None])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sshdeploy.errors.ConfigError: hosts[1]: must be a host name or Host, got None. Give ...
    """
    if not _is_list(hosts):
        return  # None, "" and a single string have their own messages (placement.as_hosts)
    for i, h in enumerate(hosts):
        if isinstance(h, Host) or (isinstance(h, str) and h.strip()):
            continue
        raise ConfigError(f"hosts[{i}]", f"must be a host name or Host, got {h!r}",
                          remedy="Give 'host', 'user@host:port' or a sshdeploy.Host.")


def check_env(env: Any) -> None:
    """*env* is a mapping of variable names (as ``--env`` takes them) to strings.

    Numbers are accepted as values (written as text); None, other objects and
    a NUL byte (which no environment can hold) are not.

    Examples
    --------
    >>> check_env({"BAD-NAME": "1"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sshdeploy.errors.ConfigError: env: 'BAD-NAME' is not a variable name ...
    """
    if env is None:
        return
    if not isinstance(env, Mapping):
        raise ConfigError("env", f"must be a dict of variable names to values, got {env!r}",
                          remedy="E.g. env={'OMP_NUM_THREADS': '1'}.")
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            raise ConfigError(
                "env", f"{name!r} is not a variable name (letters, digits, '_'; not starting "
                "with a digit)", remedy="Rename it, as the shell would need.")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"env[{name!r}]", f"must be a string, got {value!r}",
                              remedy="Give the value as text; leave the name out to unset it.")
        if "\0" in str(value):
            raise ConfigError(f"env[{name!r}]", "holds a NUL byte, which no environment "
                              "variable can hold", remedy="Remove it.")


def check_connect_options(value: Any) -> None:
    """A dict of ``asyncssh.connect`` keywords, or a list of them (one per host)."""
    items = value if _is_list(value) else [value]
    for i, item in enumerate(items):
        if item is not None and not isinstance(item, Mapping):
            where = f"connect_options[{i}]" if _is_list(value) else "connect_options"
            raise ConfigError(where, f"must be a dict of asyncssh.connect keywords, got {item!r}",
                              remedy="E.g. connect_options={'known_hosts': '~/.ssh/known_hosts'}.")


def check_remote_python(value: Any) -> None:
    """A path or command name, or a list of them (one per host)."""
    items = value if _is_list(value) else [value]
    for i, item in enumerate(items):
        if item is None and _is_list(value):
            continue  # that host's default
        if not isinstance(item, str) or not item.strip() or "\0" in item:
            where = f"remote_python[{i}]" if _is_list(value) else "remote_python"
            raise ConfigError(where, f"must be the path or name of an interpreter, got {item!r}",
                              remedy="E.g. remote_python='/opt/conda/envs/dask/bin/python'.")


def check_port(setting: str, port: Any) -> None:
    """A port: a whole number 0..65535 (a string of digits is taken), or None.

    Examples
    --------
    >>> check_port("scheduler_options['port']", "abc")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sshdeploy.errors.ConfigError: scheduler_options['port']: must be a port number ...
    """
    if port is None:
        return
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(setting, f"must be a port number 0..65535 (0: any free port), "
                          f"got {port!r}")


def check_arguments(
    hosts: Any, connect_options: Any, worker_options: Any, scheduler_options: Any,
    worker_class: Any, remote_python: Any, *, setup: Any, env: Any, inherit_config: Any,
    scheduler_class: Any, restart_workers: Any, forward_ports: Any,
) -> None:
    """Check the type of every :class:`SSHCluster` argument; raise ConfigError naming one.

    ``setup`` is checked for its type only (a string or a list of commands).
    """
    check_hosts(hosts)
    check_connect_options(connect_options)
    if remote_python is not None:
        check_remote_python(remote_python)
    for name, value in (("worker_options", worker_options),
                        ("scheduler_options", scheduler_options)):
        if value is not None and not isinstance(value, Mapping):
            raise ConfigError(name, f"must be a dict of keywords, got {value!r}")
    for name, value, none_ok in (("worker_class", worker_class, False),
                                 ("scheduler_class", scheduler_class, True)):
        if not (value is None and none_ok) and not isinstance(value, (str, type)):
            raise ConfigError(name, f"must be an import path such as 'distributed.Nanny', "
                              f"got {value!r}")
    if setup is not None and not isinstance(setup, (str, list, tuple)):
        raise ConfigError("setup", f"must be shell commands (a string), got {setup!r}",
                          remedy="E.g. setup='conda activate dask'.")
    check_env(env)
    for name, value, none_ok in (("inherit_config", inherit_config, True),
                                 ("restart_workers", restart_workers, False),
                                 ("forward_ports", forward_ports, True)):
        if not isinstance(value, bool) and not (value is None and none_ok):
            raise ConfigError(name, f"must be True or False{' or None' if none_ok else ''}, "
                              f"got {value!r}")
    if isinstance(scheduler_options, Mapping):
        check_port("scheduler_options['port']", scheduler_options.get("port"))


def check_min_workers(min_workers: int | None, slots: int) -> None:
    """``min_workers`` cannot be above the workers the start places (it could never be met).

    Examples
    --------
    >>> check_min_workers(5, 4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sshdeploy.errors.ConfigError: min_workers: 5 is more than the 4 workers the hosts hold, ...
    """
    if min_workers is not None and min_workers > slots:
        raise ConfigError(
            "min_workers", f"{min_workers} is more than the {slots} workers the hosts hold, "
            "so the start could never succeed",
            remedy=f"Give min_workers <= {slots}, or more hosts or slots (n_workers), "
            "or more initial_workers.")
