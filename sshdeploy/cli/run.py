"""Run a cluster in the foreground: signals, the wait loop, the summary.

:func:`run_cluster` starts an :class:`~sshdeploy.cluster.SSHCluster`, prints the
banner, waits, closes the cluster and returns the exit status of ``dask-ssh``.

Waiting: the cluster runs asynchronously in run_cluster's own event loop (in the
main thread), so a signal during start-up cancels the start at once: what
started is closed, stalled remote starts are killed, and the exit status is
130. Once it runs, the loop checks every ``poll_interval`` seconds whether
a signal came, whether the scheduler (or
the cluster) has gone to ``closing``/``closed``/``failed``, or whether the
cluster's connection to the scheduler is lost, or whether stdout's reader
has gone (``dask-ssh ... | head``: see :class:`~sshdeploy.cli.console.GuardedStream`).
SIGINT, SIGTERM and SIGHUP (the terminal closed) set the event; a second one
exits at once with status 130 (the remote agents clean up when their
connection drops). Closing is bounded (``close_timeout``). When stdout's
reader has gone, the cluster is stopped the same way, quietly.

While it runs, remote lines and sshdeploy's own warnings are printed (and
written to ``--log-directory``) through the handlers of :mod:`sshdeploy.cli.remote_output`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live

from sshdeploy.cli import exit_codes, remote_output, report
from sshdeploy.cli.console import output_closed
from sshdeploy.cluster import SSHCluster
from sshdeploy.hosts import Host
from sshdeploy.placement import as_hosts, name_order
from sshdeploy.remote.agent.group import remove_stale_dirs, write_owner
from sshdeploy.versions import package_versions
from sshdeploy.views import livestatus
from sshdeploy.views.hostrows import HostRow, worker_resources

if TYPE_CHECKING:
    from sshdeploy.arguments import ClusterArgs

__all__ = ["ClientCredentials", "run_cluster"]

_STOPPED_STATES = frozenset({"closing", "closed", "failed"})
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stop:
    """What SIGINT / SIGTERM do: the first sets :attr:`event`, the second exits at once.

    A signal handler only records (distributed's ``_signals.py``: "Do not log
    or print anything in here"); the wait loop of :func:`run_cluster` says what
    happened. The second signal cannot wait for that loop, so it writes one
    fixed line straight to file descriptor 2 (``os.write``, safe in a handler)
    and exits with status 130.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        #: Run before exiting at once (e.g. delete the ``--tls`` client's files).
        self.on_exit: Callable[[], None] | None = None

    def __call__(self, signum: int, frame: FrameType | None = None) -> None:
        if self.event.is_set():
            _write_stderr(b"dask-ssh: second interrupt, exiting now\n")
            if self.on_exit is not None:
                self.on_exit()
            os._exit(exit_codes.INTERRUPTED)
        self.signum = signum
        self.event.set()


def _write_stderr(data: bytes) -> None:
    try:
        os.write(2, data)
    except OSError:  # stderr closed: nothing to tell
        pass


@contextmanager
def _signal_handlers(stop: _Stop) -> Iterator[None]:
    """Route SIGINT, SIGTERM and SIGHUP to *stop* while inside; restore the old handlers after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, stop) for s in _STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def _remote_logging(
    console: Console, err_console: Console, log_directory: str | None, show_level: int
) -> Iterator[remote_output.RemoteLogHandler]:
    """Print remote lines (logger ``sshdeploy.remote``) and sshdeploy's warnings while inside."""
    remote = logging.getLogger(remote_output.REMOTE_LOGGER)
    own = logging.getLogger("sshdeploy")
    warnings = remote_output.ControllerLogHandler(err_console)
    handler = remote_output.RemoteLogHandler(console, log_directory, others=warnings,
                                       show_level=show_level)
    saved = (remote.level, remote.propagate, own.level, own.propagate)
    remote.addHandler(handler)
    remote.setLevel(logging.DEBUG)
    remote.propagate = False
    own.addHandler(warnings)
    if own.getEffectiveLevel() > logging.WARNING:
        own.setLevel(logging.WARNING)
    own.propagate = False
    try:
        yield handler
    finally:
        remote.removeHandler(handler)
        own.removeHandler(warnings)
        remote.level, remote.propagate, own.level, own.propagate = saved
        handler.close()


def _status_name(obj: Any) -> str | None:
    status = getattr(obj, "status", None)
    return getattr(status, "name", None) or (status if isinstance(status, str) else None)


def _scheduler_gone(cluster: Any) -> bool:
    """Whether the scheduler (or the whole cluster) has closed or failed on its own.

    Looks at ``cluster.scheduler.status`` and ``cluster.status``, then at the
    task in which distributed's ``Cluster`` listens to the scheduler for worker
    updates: that task ends when the connection to the scheduler is lost.
    """
    if (
        _status_name(getattr(cluster, "scheduler", None)) in _STOPPED_STATES
        or _status_name(cluster) in _STOPPED_STATES
    ):
        return True
    watch = getattr(cluster, "_watch_worker_status_task", None)
    done = getattr(watch, "done", None)
    return bool(done()) if callable(done) else False


def _workers_by_host(cluster: Any) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, worker in dict(getattr(cluster, "workers", {}) or {}).items():
        host: Any = getattr(worker, "host", None)
        host_text = host.as_written() if isinstance(host, Host) else str(host or "?")
        grouped.setdefault(host_text, []).append(str(name))
    return {host: sorted(names, key=name_order) for host, names in grouped.items()}


def _each_by_host(cluster: Any) -> dict[str, str]:
    """Host (as in the banner) to what each of its workers has, as the scheduler reports."""
    workers = dict(getattr(cluster, "workers", {}) or {})
    infos: dict[str, list[Any]] = {}
    for info in dict((getattr(cluster, "scheduler_info", None) or {}).get("workers") or {}
                     ).values():
        host: Any = getattr(workers.get(info.get("name")), "host", None)
        if isinstance(host, Host):
            infos.setdefault(host.as_written(), []).append(info)
    return {host: worker_resources(group) for host, group in infos.items()}


def run_cluster(
    args: ClusterArgs,
    *,
    console: Console,
    err_console: Console,
    log_directory: str | None = None,
    show_level: int = logging.NOTSET,
    poll_interval: float = 0.2,
    close_timeout: float = 30.0,
    progress: bool = True,
    keep: Mapping[str, Any] | None = None,
) -> int:
    """Run the cluster until a signal, the scheduler's end or stdout's close; return the status.

    With *keep* (``dask-ssh up``: ``name``, ``idle_timeout``, ``max_lifetime``)
    the cluster is a named one that outlives this process: once every worker
    is ready the banner is printed, this process detaches and returns 0.

    The cluster runs asynchronously in this thread's own event loop, so a
    signal during start-up cancels the start at once (what did start is
    stopped, and the remote starts that stalled are killed).

    Parameters
    ----------
    args : ClusterArgs
    console, err_console : rich.console.Console
        Where the banner and remote lines / messages and warnings go.
    log_directory : str, optional
        Controller directory for one log file per label.
    show_level : int
        Remote lines below this level are not printed (``--log-level``);
        WARNING and above, and sshdeploy's own lines, always are.
    poll_interval : float
        Seconds between checks of the scheduler's status (and of a signal
        during start-up).
    close_timeout : float
        Seconds the cluster is given to close; after that ``dask-ssh`` gives
        up and exits 1 (the remote agents stop when their connection drops).
    progress : bool
        Show each host's start-up state while the cluster starts: a live
        table when stdout is a terminal, else one plain line per change of a
        host's state on stderr (``dask-ssh: root@node2:22: ready (1.2 s)``).

    Returns
    -------
    int
        0 when stopped by a signal (SIGINT, SIGTERM, SIGHUP) or because
        stdout's reader went away (then nothing more is printed; the command
        exits 141), 130 when a signal came during start-up (the start is
        cancelled), 1 when the scheduler ended on its own or the cluster did
        not close in time.

    Raises
    ------
    SSHDeployError
        If the cluster cannot start.
    """
    stop = _Stop()
    with _remote_logging(console, err_console, log_directory, show_level) as remote_log, \
            _signal_handlers(stop), ClientCredentials() as credentials:
        stop.on_exit = credentials.remove  # a second Ctrl-C exits at once: remove them first
        run = _Run(args, stop, console, err_console, remote_log, credentials,
                   poll_interval, close_timeout, progress, keep)
        return asyncio.run(run.main())


class ClientCredentials:
    """The ``--tls`` client's files in a private local directory, removed on exit.

    The directory is made 0700 and each file 0600; :meth:`remove` (also run
    on leaving the ``with`` block, whatever the reason) deletes them; those
    of a dask-ssh that was killed are removed by the next ``--tls`` run.

    Examples
    --------
    >>> from distributed import Security
    >>> with ClientCredentials() as creds:
    ...     line = creds.write(Security.temporary(), "tls://127.0.0.1:8786")
    ...     files = sorted(p.name for p in creds.directory.iterdir())
    >>> files, creds.directory.exists()
    (['ca.pem', 'client.key', 'client.pem', 'owner'], False)
    >>> line.startswith('from distributed import Client, Security; client = Client("tls://')
    True
    """

    PREFIX = "dask-ssh-tls-"

    def __init__(self) -> None:
        self.directory: Path | None = None

    def __enter__(self) -> ClientCredentials:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def write(self, security: Any, address: str) -> str:
        """Write the client's CA, certificate and key; return the Python line to connect."""
        # Those of a dask-ssh killed with SIGKILL: nothing else removes them.
        remove_stale_dirs(tempfile.gettempdir(), self.PREFIX)
        self.directory = Path(tempfile.mkdtemp(prefix=self.PREFIX))
        os.chmod(self.directory, 0o700)
        write_owner(str(self.directory))
        paths = {}
        for name, attr in (("ca.pem", "tls_ca_file"), ("client.pem", "tls_client_cert"),
                           ("client.key", "tls_client_key")):
            pem = getattr(security, attr, None) or ""
            path = self.directory / name
            if pem and not pem.lstrip().startswith("-----"):  # a file name, not PEM text
                pem = Path(pem).read_text()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(pem)
            paths[attr] = str(path)
        return (
            "from distributed import Client, Security; "
            f"client = Client({address!r}, security=Security("
            f"tls_ca_file={paths['tls_ca_file']!r}, "
            f"tls_client_cert={paths['tls_client_cert']!r}, "
            f"tls_client_key={paths['tls_client_key']!r}, require_encryption=True))"
        ).replace("'", '"')

    def remove(self) -> None:
        """Delete the directory and its files (idempotent)."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def _later_hosts(cluster: Any, by_host: Mapping[str, Any]) -> dict[str, str]:
    """Worker hosts with no worker yet: ``spare`` or ``later`` (``--initial-workers``).

    Spelt as *by_host* spells the hosts with workers (as written: the banner's
    spelling), so that a host that has workers is never listed as one without.
    """
    placement = getattr(cluster, "placement", None)
    if placement is None:
        return {}
    out = {}
    for key, hp in placement.worker_hosts.items():
        where = hp.host.as_written()
        if where in by_host or not hp.slots:
            continue
        out[where] = "spare" if key in placement.spares else "later"
    return out


def _failed_hosts(cluster: Any) -> dict[str, str]:
    """Host -> the first line of why it was left out (``--min-workers``)."""
    failed = dict(getattr(cluster, "failed_hosts", None) or {})
    reasons = {}
    for host, err in failed.items():
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        reasons[host] = first.removeprefix(f"{host}: ")  # the banner names the host already
    return reasons


def _forwarded_from(cluster: Any) -> str | None:
    """The scheduler's real address when the controller reaches it through SSH."""
    scheduler = getattr(cluster, "scheduler", None)
    if getattr(scheduler, "forwarding", None) is None:
        return None
    return str(getattr(scheduler, "address", None) or "?")


class _Run:
    """One foreground run of a cluster, in the event loop of :func:`run_cluster`."""

    def __init__(self, args: ClusterArgs, stop: _Stop, console: Console,
                 err_console: Console, remote_log: remote_output.RemoteLogHandler,
                 credentials: ClientCredentials, poll_interval: float,
                 close_timeout: float, progress: bool = True,
                 keep: Mapping[str, Any] | None = None) -> None:
        self.args = args
        self.keep = dict(keep) if keep is not None else None
        self.stop = stop
        self.console = console
        self.err_console = err_console
        self.remote_log = remote_log
        self.credentials = credentials
        self.poll_interval = poll_interval
        self.close_timeout = close_timeout
        self.progress = progress
        self.where = as_hosts(args.hosts)[0].as_written()

    async def main(self) -> int:
        extra = {} if self.keep is None else {**self.keep, "shutdown_on_close": False}
        cluster = SSHCluster(asynchronous=True, **{**self.args.kwargs(), **extra})
        starting = asyncio.ensure_future(_started(cluster))
        with self._progress(cluster) as show:
            show()
            while not starting.done() and not self.stop.event.is_set():
                await asyncio.wait({starting}, timeout=self.poll_interval)
                if not _failed(starting):  # a failed start has closed its hosts: keep the last view
                    show()
        if not starting.done():
            return await self._cancel_start(cluster, starting)
        try:
            starting.result()
        except BaseException as exc:
            error = await _close(cluster, self.close_timeout)
            self._say_not_started(exc, error)
            raise
        try:
            if self.keep is not None:
                return await self._detach(cluster)
            return await self._run_until_stopped(cluster)
        except BaseException:
            await _close(cluster, self.close_timeout)
            raise

    def _say_not_started(self, exc: BaseException, error: str | None) -> None:
        """``dask-ssh up`` whose start failed: say that nothing of it is left (or why not)."""
        from sshdeploy.errors import ClusterExistsError, ClusterNotFoundError, ClusterStateError

        if self.keep is None or isinstance(
                exc, (ClusterExistsError, ClusterNotFoundError, ClusterStateError)):
            return  # nothing was started: the error says it all
        name = str(self.keep["name"])
        self._say_held_back(exc)
        if error is None:
            self.err_console.print(
                f"dask-ssh: cluster {name!r} did not start (why follows); what had started of "
                "it was stopped: nothing of it is left on its hosts, and it is not recorded")
        else:
            self.err_console.print(
                f"dask-ssh: cluster {name!r} did not start (why follows), and what had "
                f"started of it did not stop within {self.close_timeout:.0f} s ({error}); "
                "it was never recorded, so its processes stop by themselves once their SSH "
                "connection is gone")

    def _say_held_back(self, exc: BaseException) -> None:
        """Print the failing hosts' last remote lines that ``up`` did not show (none streamed)."""
        if self.remote_log.show_level < remote_output.HIDE_REMOTE:
            return  # they were printed as they came
        for host in _failing_hosts(exc):
            lines = self.remote_log.host_tail(host)
            if lines:
                self.err_console.print(f"last remote lines of {host}:", markup=False,
                                       highlight=False)
                for line in lines:
                    self.err_console.print("  " + line, markup=False, highlight=False)

    async def _detach(self, cluster: Any) -> int:
        """``dask-ssh up``: print the banner and how to reach it again, then leave it running."""
        assert self.keep is not None
        name = str(self.keep["name"])
        self.remote_log.flush()
        kept = cluster.kept
        if kept is not None and kept.adopted:
            self.console.print(f"dask-ssh: cluster {name!r} already runs with this spec")
        self._banner(cluster, _workers_by_host(cluster),
                     f"from sshdeploy import SSHCluster; cluster = SSHCluster.from_name({name!r})")
        policy = kept.policy.describe() if kept is not None else ""
        self.console.print(f"  {name} {policy}; it keeps running after this command "
                           f"(dask-ssh attach {name}, dask-ssh down {name})")
        await _close(cluster, self.close_timeout)  # detaches: the cluster stays
        return exit_codes.OK

    @contextmanager
    def _progress(self, cluster: Any) -> Iterator[Callable[[], None]]:
        """Show the hosts' start-up states while inside; yield the function that polls them.

        On a terminal: a transient ``rich.live.Live`` table on the banner's
        console (remote lines printed meanwhile go through that console, so
        they stay above the table; so do sshdeploy's warnings when stderr is
        the terminal too). Otherwise: one plain line on stderr per
        change of a host's state. Nothing with ``progress=False``.
        """
        if not self.progress:
            yield lambda: None
            return
        started = time.monotonic()
        view = livestatus.StatusView()
        if not self.console.is_terminal:
            last: list[HostRow] = []

            def print_changes() -> None:
                nonlocal last
                rows = _host_rows(cluster)
                if rows is None:
                    return
                for line in livestatus.changed_lines(last, rows, time.monotonic() - started):
                    self.err_console.print(line)
                last = rows

            yield print_changes
            return
        live = Live(console=self.console, transient=True, auto_refresh=False,
                    redirect_stdout=False, redirect_stderr=False)

        def refresh() -> None:
            rows = _host_rows(cluster)
            if rows is not None:
                live.update(view.render(rows, time.monotonic() - started), refresh=True)

        # sshdeploy's own warnings go to stderr; on the same terminal they would
        # break the table: print them through the live console meanwhile.
        others = self.remote_log.others
        moved = (others if isinstance(others, remote_output.ControllerLogHandler)
                 and self.err_console.is_terminal else None)
        self.remote_log.flush()
        self.remote_log.through_console = True
        if moved is not None:
            moved.console = self.console
        try:
            with live:
                yield refresh
        finally:
            self.remote_log.flush()
            self.remote_log.through_console = False
            if moved is not None:
                moved.console = self.err_console

    async def _cancel_start(self, cluster: Any, starting: asyncio.Future[Any]) -> int:
        """A signal came during start-up: cancel the start, stop what started."""
        assert self.stop.signum is not None
        self.err_console.print(
            f"dask-ssh: {signal.Signals(self.stop.signum).name} received during start-up; "
            "cancelling the start and stopping what started"
        )
        starting.cancel()
        with contextlib.suppress(BaseException):  # cancelled, or failed meanwhile
            await starting
        await _close(cluster, self.close_timeout)
        return exit_codes.INTERRUPTED

    def _banner(self, cluster: Any, by_host: dict[str, list[str]],
                connect_line: str | None) -> None:
        """Print the banner of the running *cluster* (foreground run and ``up`` alike)."""
        report.print_banner(
            self.console,
            scheduler_address=str(getattr(cluster, "scheduler_address", "?")),
            dashboard_link=getattr(cluster, "dashboard_link", None),
            scheduler_host=self.where,
            workers_by_host=by_host,
            each_by_host=_each_by_host(cluster),
            versions=package_versions(("sshdeploy", "distributed")),
            forwarded_from=_forwarded_from(cluster),
            failed_hosts=_failed_hosts(cluster),
            connect_line=connect_line,
            later_hosts=_later_hosts(cluster, by_host),
        )

    async def _run_until_stopped(self, cluster: Any) -> int:
        console, err_console, stop = self.console, self.err_console, self.stop
        by_host = _workers_by_host(cluster)
        self.remote_log.flush()  # the lines that came during start-up go before the banner
        connect_line = None
        if self.args.security:
            address = str(getattr(cluster, "scheduler_address", "?"))
            connect_line = self.credentials.write(cluster.security, address)
        self._banner(cluster, by_host, connect_line)
        scheduler_died = False
        while not stop.event.is_set():
            await asyncio.sleep(self.poll_interval)
            if output_closed(console):
                break
            if _scheduler_gone(cluster):
                scheduler_died = True
                break
        if stop.signum is not None:
            err_console.print(
                f"dask-ssh: {signal.Signals(stop.signum).name} received, stopping the "
                "cluster (again to exit at once)"
            )
        by_host = _workers_by_host(cluster) or by_host
        if scheduler_died:
            err_console.print(
                f"dask-ssh: the scheduler on {self.where} stopped; closing the workers.")
            tail = self.remote_log.tail("scheduler")
            if tail:
                err_console.print("last scheduler output:")
                for line in tail:
                    err_console.print("  " + line)
        started = time.monotonic()
        error = await _close(cluster, self.close_timeout)
        elapsed = time.monotonic() - started
        if error is not None:
            err_console.print(
                f"dask-ssh: the cluster did not stop cleanly within {self.close_timeout:.0f} s "
                f"({error}); its remote processes stop by themselves once their SSH "
                "connection is gone."
            )
            return exit_codes.FAILED
        if scheduler_died:
            return exit_codes.FAILED
        if stop.signum is None and output_closed(console):
            return exit_codes.OK  # stdout's reader has gone: stop quietly, like any Unix tool
        n_workers = sum(len(v) for v in by_host.values())
        # After SIGHUP stdout may be the closed terminal: then the summary goes to stderr.
        summary_console = err_console if output_closed(console) else console
        summary_console.print(
            f"dask-ssh: stopped {n_workers} worker{'s' if n_workers != 1 else ''} on "
            f"{len(by_host)} host{'s' if len(by_host) != 1 else ''} and the scheduler "
            f"in {elapsed:.1f} s"
        )
        return exit_codes.OK


def _failing_hosts(exc: BaseException) -> list[str]:
    """The host names an error of a failed start is about (``user@host:port`` -> ``host``).

    >>> from sshdeploy.errors import MultiHostError, StartError
    >>> _failing_hosts(MultiHostError(failures={"root@n2:22": StartError(host="root@n2:22",
    ...     what="x"), "[::1]:22": StartError(host="[::1]:22", what="y")}))
    ['n2', '::1']
    """
    from sshdeploy.errors import HostError, MultiHostError

    if isinstance(exc, MultiHostError):
        return [h for err in exc.failures.values() for h in _failing_hosts(err)]
    if not isinstance(exc, HostError) or exc.stderr_tail.strip():
        return []  # not tied to a host, or the error already carries its remote lines
    where = exc.host.rpartition("@")[2]
    if where.startswith("["):
        return [where[1:].partition("]")[0]]
    return [where.rsplit(":", 1)[0] if where.count(":") == 1 else where]


def _failed(task: asyncio.Future[Any]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


def _host_rows(cluster: Any) -> list[HostRow] | None:
    """The cluster's host rows, or None when they cannot be read (yet): never fail the start."""
    try:
        return list(cluster.host_rows())
    except Exception:  # a display must not break the start it shows
        return None


async def _started(cluster: Any) -> Any:
    """Start *cluster* (``await cluster``: the scheduler, then every worker)."""
    return await cluster


async def _close(cluster: Any, timeout: float) -> str | None:
    """Close *cluster* within *timeout* seconds; return what went wrong, or None."""
    try:
        closing = cluster.close(timeout=timeout)
        if inspect.isawaitable(closing):
            await asyncio.wait_for(closing, timeout + 1)
    except Exception as err:  # a dead scheduler, a lost host, the deadline
        return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return None
