"""SSHCluster's keywords, declared once: :class:`ClusterArgs`. Pure, no distributed.

Each keyword is one field of :class:`ClusterArgs`: its type, its default, a
line of doc, and what is done with it everywhere else:

- ``check``: how a wrong value is refused (a :class:`~sshdeploy.errors.ConfigError`
  naming it, before anything is planned; :meth:`ClusterArgs.check`);
- ``record``: how a named cluster's record keeps it (:meth:`ClusterArgs.to_record`,
  :meth:`ClusterArgs.from_record`), so ``from_name``, ``dask-ssh add`` / ``scale``
  and the restarts of a later controller plan the same hosts and workers;
- ``compared``: whether an ``up`` that changes it asks for another cluster;
- ``cli``: the classic ``dask-ssh`` option that sets it (None: none does);
- ``example``: a value other than the default (the tests give every keyword one).

:class:`sshdeploy.SSHCluster` keeps its own explicit signature (what users and
IDEs see); a unit test fails when it and these fields differ in a name, a
default, a kind or a type. ``dask-ssh --help`` imports this module: it must
not import distributed, dask or asyncssh (a ruff rule and a unit test hold it).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field, fields
from typing import Any, Literal

from .defaults import DEFAULT_WORKER_CLASS
from .errors import ConfigError
from .hosts import Host, check_gpus
from .placement import as_hosts, per_host, with_spares

#: How a named cluster's record keeps a keyword:
#: ``value`` as given (JSON); ``options`` a dict, with what JSON cannot hold left out
#: (and named under ``dropped``); ``per-host`` one entry per host, spares included;
#: ``hosts`` the hosts, spares appended (``spare: true``); ``spares`` inside ``hosts``;
#: ``given`` only whether it was given (TLS: the credentials are kept apart);
#: ``paths`` as absolute paths of this machine (another working directory finds them);
#: ``no`` not kept (it only shapes the start, or this controller, or from_name gives it).
Record = Literal["value", "options", "per-host", "hosts", "spares", "given", "paths", "no"]

#: Check of one keyword's value: raise ConfigError naming it.
Check = Callable[["Keyword", Any], None]

#: What the CLI's ``--env KEY=VALUE`` accepts as KEY (a shell variable name).
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Keyword:
    """One keyword of :class:`sshdeploy.SSHCluster`, as :class:`ClusterArgs` declares it.

    Attributes
    ----------
    name, annotation : str
        As in the signature.
    default : Any
    doc : str
        One line: what it does (SSHCluster's docstring says it at length).
    record : Record
        How a named cluster's record keeps it.
    cli : str or None
        The ``dask-ssh`` option (with a value if it takes one) that sets it.
    example : Any
        A value other than the default.
    compared : bool
        Recorded and compared: an ``up`` that changes it asks for another
        cluster (``spares``: as part of the hosts).
    check : callable or None
        ``check(keyword, value)`` raises ConfigError for a value that cannot work.
    """

    name: str
    annotation: str
    default: Any
    doc: str
    record: Record
    cli: str | None
    example: Any
    compared: bool = False
    check: Check | None = None


def keyword(default: Any, doc: str, *, record: Record, cli: str | None, example: Any,
            compared: bool = False, check: Check | None = None) -> Any:
    """Declare one field of :class:`ClusterArgs` (see :class:`Keyword`)."""
    return field(default=default, metadata={
        "doc": doc, "record": record, "cli": cli, "example": example, "compared": compared,
        "check": check})


# --------------------------------------------------------------------------- checks


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
    """A path or command name, or a list of them (one per host); None: the default."""
    if value is None:
        return
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


def _hosts(kw: Keyword, value: Any) -> None:
    check_hosts(value)


def _connect_options(kw: Keyword, value: Any) -> None:
    check_connect_options(value)


def _remote_python(kw: Keyword, value: Any) -> None:
    check_remote_python(value)


def _env(kw: Keyword, value: Any) -> None:
    check_env(value)


def _options(kw: Keyword, value: Any) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise ConfigError(kw.name, f"must be a dict of keywords, got {value!r}")


def _scheduler_options(kw: Keyword, value: Any) -> None:
    _options(kw, value)
    if isinstance(value, Mapping):
        check_port("scheduler_options['port']", value.get("port"))


def _import_path(kw: Keyword, value: Any) -> None:
    if not (value is None and kw.default is None) and not isinstance(value, (str, type)):
        raise ConfigError(kw.name, f"must be an import path such as 'distributed.Nanny', "
                          f"got {value!r}")


def _setup(kw: Keyword, value: Any) -> None:
    """Its type only: a string or a list of commands."""
    if value is not None and not isinstance(value, (str, list, tuple)):
        raise ConfigError("setup", f"must be shell commands (a string), got {value!r}",
                          remedy="E.g. setup='conda activate dask'.")


def _flag(kw: Keyword, value: Any) -> None:
    none_ok = kw.default is None
    if not isinstance(value, bool) and not (value is None and none_ok):
        raise ConfigError(kw.name, f"must be True or False{' or None' if none_ok else ''}, "
                          f"got {value!r}")


def _gpus(kw: Keyword, value: Any) -> None:
    try:
        check_gpus(value)
    except ValueError as err:
        raise ConfigError("gpus", str(err), remedy="E.g. gpus='auto' (dask-ssh --gpus auto).") \
            from None


def _count(kw: Keyword, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ConfigError(kw.name, f"must be a whole number >= 0, got {value!r}")


# --------------------------------------------------------------------------- the keywords


@dataclass(frozen=True)
class ClusterArgs:
    """The keywords of :class:`sshdeploy.SSHCluster` (SpecCluster's own aside), in its order.

    The one declaration of them (see the module docstring): ``SSHCluster``
    builds one from its arguments and plans from it
    (:func:`sshdeploy.plan.plan_cluster`), ``dask-ssh`` builds one from its
    options (:func:`sshdeploy.cli.options.build_cluster_args`), and a named
    cluster's record is one in JSON form (:meth:`to_record`, :meth:`from_record`).
    See :class:`sshdeploy.SSHCluster` for what each keyword does.

    Examples
    --------
    >>> args = ClusterArgs(["head", "node1"], upload=["/src/helpers.py"])
    >>> again = ClusterArgs.from_record(args.to_record())
    >>> [h.as_written() for h in again.hosts], again.upload
    (['head', 'node1'], ['/src/helpers.py'])
    """

    hosts: Sequence[str | Host] | None = keyword(
        None, "hosts[0] runs the scheduler, every later entry workers",
        record="hosts", compared=True, cli="--scheduler head",
        example=[Host("head"), Host("node1"), Host("node2", slots=2)], check=_hosts)
    connect_options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = keyword(
        None, "asyncssh.connect keywords, for all hosts or one per host",
        record="per-host", cli="--connect-timeout 5", example={"port": 2222},
        check=_connect_options)
    worker_options: Mapping[str, Any] | None = keyword(
        None, "keywords of the worker class, plus n_workers",
        record="options", compared=True, cli="--nthreads 2", example={"nthreads": 2},
        check=_options)
    scheduler_options: Mapping[str, Any] | None = keyword(
        None, "keywords of the scheduler",
        record="options", compared=True, cli="--scheduler-port 0", example={"port": 0},
        check=_scheduler_options)
    worker_class: str = keyword(
        DEFAULT_WORKER_CLASS, "import path of the worker class",
        record="value", compared=True, cli="--worker-class distributed.Worker",
        example="mylab.workers.LabNanny", check=_import_path)
    remote_python: str | Sequence[str] | None = keyword(
        None, "the remote interpreter, for all hosts or one per host",
        record="per-host", compared=True, cli="--remote-python /opt/py/bin/python",
        example="/opt/py/bin/python", check=_remote_python)
    _: KW_ONLY
    setup: str | Sequence[str] | None = keyword(
        None, "shell commands run before the remote Python",
        record="value", compared=True, cli="--setup 'module load python'",
        example="module load python", check=_setup)
    env: Mapping[str, str] | None = keyword(
        None, "environment variables of every remote process",
        record="options", compared=True, cli="--env OMP_NUM_THREADS=1",
        example={"OMP_NUM_THREADS": "1"}, check=_env)
    inherit_config: bool | None = keyword(
        None, "send the local dask config to the remote processes",
        record="value", cli=None, example=False, check=_flag)
    scheduler_class: str | None = keyword(
        None, "import path of another scheduler class",
        record="value", compared=True, cli=None, example="distributed.Scheduler",
        check=_import_path)
    restart_workers: bool = keyword(
        True, "start lost workers again, a bounded number of times",
        record="value", cli="--no-restart", example=False, check=_flag)
    worker_module: str | None = keyword(
        None, "deprecated: its classic values mean the default worker class",
        record="no", cli=None, example="distributed.cli.dask_worker")
    security: Any = keyword(
        None, "True: new TLS credentials for every process; or a distributed.Security",
        record="given", compared=True, cli="--tls", example=True)
    forward_ports: bool | None = keyword(
        None, "reach the scheduler and dashboard through SSH (None: when needed)",
        record="value", cli="--forward-ports", example=True, check=_flag)
    min_workers: int | None = keyword(
        None, "come up with the workers that started if at least this many did",
        record="no", cli="--min-workers 1", example=1, check=_count)
    progress: bool | None = keyword(
        None, "show the start in a notebook (None: when in one)",
        record="no", cli=None, example=False)
    name: str | None = keyword(
        None, "the cluster's name (dask-ssh up --name; from_name gives it)",
        record="no", cli=None, example="demo")
    shutdown_on_close: bool = keyword(
        True, "False, with a name: a named cluster that outlives its controller",
        record="no", cli=None, example=False)
    idle_timeout: str | float | None = keyword(
        None, "a named cluster stops after this long idle (dask-ssh up --idle-timeout)",
        record="value", compared=True, cli=None, example=3600.0)
    max_lifetime: str | float | None = keyword(
        None, "a named cluster stops this long after its start (dask-ssh up --max-lifetime)",
        record="value", compared=True, cli=None, example=86400.0)
    environment: str | None = keyword(
        None, "'sync': send this machine's packages to every host",
        record="value", cli="--sync-env", example="sync")
    packages: Sequence[str] | None = keyword(
        None, "more packages the version gate compares (and a sync carries)",
        record="value", cli="--package mypkg", example=["mypkg"])
    upload: Sequence[str] | None = keyword(
        None, "local files and directories put on sys.path on every host",
        record="paths", cli="--upload helpers.py", example=["/src/helpers.py"])
    login_shell: bool = keyword(
        False, "run the remote commands in the user's login shell",
        record="value", cli="--login-shell", example=True)
    spares: Sequence[str | Host] | None = keyword(
        None, "hosts kept in reserve for scale/adapt and lost hosts' workers",
        record="spares", compared=True, cli="--spare spare1", example=[Host("spare1")])
    initial_workers: int | None = keyword(
        None, "start only this many workers, filling the hosts in order",
        record="no", cli="--initial-workers 1", example=1)
    gpus: str | int | None = keyword(
        None, "one worker per GPU of each worker host: 'auto', 'free', a count or '0,2'",
        record="value", compared=True, cli="--gpus auto", example="auto", check=_gpus)
    cpu_workers: int | None = keyword(
        None, "CPU-only workers beside the GPU workers of each GPU host",
        record="value", compared=True, cli="--cpu-workers 2", example=2, check=_count)

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> ClusterArgs:
        """Pick the keywords out of *values* (``SSHCluster.__init__``'s ``locals()``)."""
        return cls(**{kw.name: values[kw.name] for kw in KEYWORDS})

    def kwargs(self) -> dict[str, Any]:
        """Return the keyword arguments of ``SSHCluster`` (and ``remote_commands``).

        Every keyword is there (a default as the default); mappings and lists are
        copies, so the caller may change them.
        """
        return {kw.name: _copy(getattr(self, kw.name)) for kw in KEYWORDS}

    def check(self) -> None:
        """Refuse every value that cannot work (its type), naming the keyword.

        Raises
        ------
        ConfigError
            The first keyword, in the signature's order, whose value is wrong.
        """
        for kw in KEYWORDS:
            if kw.check is not None:
                kw.check(kw, getattr(self, kw.name))

    def to_record(self) -> dict[str, Any]:
        """Return the JSON form a named cluster's record keeps (see :data:`Record`).

        Only JSON values are kept: what cannot be (an ``asyncssh`` key object
        or a callable in an option) is left out and named under ``dropped``.
        """
        hosts = as_hosts(with_spares(self.hosts, self.spares, self.remote_python,
                                     self.connect_options))
        dropped: list[str] = []
        out: dict[str, Any] = {}
        for kw in KEYWORDS:
            encode = _ENCODE[kw.record]
            if encode is not None:
                out[kw.name] = encode(kw.name, getattr(self, kw.name), hosts, dropped)
        out["dropped"] = dropped
        return out

    @classmethod
    def from_record(cls, spec: Mapping[str, Any]) -> ClusterArgs:
        """Return the arguments kept in a named cluster's record (its ``spec``).

        A keyword the record does not hold (one it does not keep, or a record
        written before it was kept) takes its default; so does ``security``'s
        credentials, which the record keeps apart (``from_name`` adds them).
        """
        values = {}
        for kw in KEYWORDS:
            decode = _DECODE[kw.record]
            if decode is not None:
                values[kw.name] = decode(kw, spec.get(kw.name))
        return cls(**values)


#: The keywords, in the signature's order.
KEYWORDS: tuple[Keyword, ...] = tuple(
    Keyword(f.name, str(f.type), f.default, **f.metadata) for f in fields(ClusterArgs))


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    return list(value) if isinstance(value, list) else value


# --------------------------------------------------------------------------- the record


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


def host_json(host: Host) -> dict[str, Any]:
    """One host of a record: its set fields (``spare`` only when it is one).

    Examples
    --------
    >>> host_json(Host("node1", "alice", slots=2))
    {'hostname': 'node1', 'user': 'alice', 'slots': 2}
    """
    return {k: v for k, v in dataclasses.asdict(host).items() if v is not None and v is not False}


_Encode = Callable[[str, Any, list[Host], list[str]], Any]
_Decode = Callable[[Keyword, Any], Any]


def _one_or_each(entries: Any) -> Any:
    """A per-host list back as one value when every host has the same (None when empty)."""
    entries = list(entries or [])
    if not entries:
        return None
    first = entries[0]
    return first if all(e == first for e in entries) else entries


#: How each kind of :data:`Record` is written (None: not kept) ...
_ENCODE: dict[str, _Encode | None] = {
    "value": lambda name, v, hosts, dropped: jsonable(v, dropped, name),
    "options": lambda name, v, hosts, dropped: jsonable(dict(v or {}), dropped, name),
    "per-host": lambda name, v, hosts, dropped: [
        jsonable(e, dropped, name) for e in per_host(v, len(hosts), name)],
    "hosts": lambda name, v, hosts, dropped: [host_json(h) for h in hosts],
    "spares": None,
    "given": lambda name, v, hosts, dropped: v is not None and v is not False,
    "paths": lambda name, v, hosts, dropped: None if v is None else [
        os.path.abspath(p) for p in v],
    "no": None,
}

#: ... and read back (a value the record does not hold is the default).
_DECODE: dict[str, _Decode | None] = {
    "value": lambda kw, v: kw.default if v is None else v,
    "options": lambda kw, v: dict(v or {}),
    "per-host": lambda kw, v: _one_or_each(v),
    "hosts": lambda kw, v: [Host(**h) for h in v or []],
    "spares": None,
    "given": lambda kw, v: bool(v),
    "paths": lambda kw, v: kw.default if v is None else list(v),
    "no": None,
}
