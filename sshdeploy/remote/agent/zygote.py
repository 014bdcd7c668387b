"""The workers' forkserver and resource tracker, forked from the agent itself.

See :func:`start_zygote` and :func:`start_tracker`: one ``import distributed``
per host, inherited by every worker process.
"""

# Keep this file Python 3.10 compatible: the standard library and other parts only.
from __future__ import annotations

import os
import signal
import sys

#: Python versions whose multiprocessing internals :func:`start_zygote` and
#: :func:`start_tracker` rely on (outside them, multiprocessing's own start).
FORKABLE_PYTHONS = ((3, 10), (3, 13))


def _fork_with_pipe() -> tuple[int, int, int]:
    """``os.pipe()``, then ``os.fork()``; return ``(pid, read_end, write_end)``.

    The pipe is closed again if the fork fails.
    """
    r, w = os.pipe()
    try:
        return os.fork(), r, w
    except BaseException:
        os.close(r)
        os.close(w)
        raise


def _detach_child(close_fds: list[int]) -> None:
    """In a child forked from the agent: let go of the agent's channel.

    Closes *close_fds* (the protocol fd, the log pipe's read end) and points
    stdin at /dev/null (``sys.stdin.close()`` would keep fd 0), so the SSH
    channel closes when the agent exits.
    """
    for fd in close_fds:
        os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def start_zygote(close_fds: list[int]) -> int | None:
    """Fork multiprocessing's forkserver from this interpreter; return its pid.

    The standard forkserver is a new interpreter that imports distributed a
    second time (~0.4 CPU-s per host). Forking it from the agent, which has
    just imported distributed, gives the same server (``forkserver.main``,
    the same socket protocol, the same preload list, all already imported)
    at no import cost; workers forked from it inherit distributed too. It is
    installed in the ``forkserver._forkserver`` singleton exactly as
    ``ForkServer.ensure_running`` would (its address, alive fd and pid), so
    multiprocessing uses it and restarts a normal one if it dies.

    Call it single-threaded (no lock held by another thread is copied). The
    child closes *close_fds* (the protocol fd, the log pipe's read end) and
    stdin, so the SSH channel closes when the agent exits; it stays in our
    process group, so :meth:`ProcessGroup.reap` stops it, and it exits by
    itself when the agent does (its alive pipe closes).

    Returns None, having done nothing, where the private names it relies on
    differ (Python outside 3.10-3.13 or a changed ForkServer): the caller
    then starts the normal forkserver.
    """
    import socket
    from multiprocessing import connection, forkserver, util

    server = getattr(forkserver, "_forkserver", None)
    names = ("_forkserver_address", "_forkserver_alive_fd", "_forkserver_pid",
             "_preload_modules")
    low, high = FORKABLE_PYTHONS
    if not (low <= sys.version_info[:2] <= high) or server is None or not all(
            hasattr(server, n) for n in names) or hasattr(server, "_forkserver_authkey"):
        return None
    if server._forkserver_pid is not None:
        return None  # already running
    # Not under server._lock: the child would inherit it locked.
    preload = list(server._preload_modules)
    with socket.socket(socket.AF_UNIX) as listener:
        # In our private TMPDIR, like multiprocessing's own (pymp-*/listener-*).
        address = connection.arbitrary_address("AF_UNIX")  # type: ignore[attr-defined]
        listener.bind(address)
        os.chmod(address, 0o600)
        listener.listen()
        pid, alive_r, alive_w = _fork_with_pipe()
        if pid == 0:  # the forkserver
            try:
                # Not the agent's handler: it would reap the agent's whole group.
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.close(alive_w)
                _detach_child(close_fds)
                # Imported already: the preload loop only checks.
                forkserver.main(listener.fileno(), alive_r, preload)
            finally:
                os._exit(0)
        os.close(alive_r)
    server._forkserver_address = address
    server._forkserver_alive_fd = alive_w
    server._forkserver_pid = pid
    util.debug("sshdeploy: forkserver forked from the agent, pid %d", pid)
    return pid


def start_tracker(close_fds: list[int]) -> int | None:
    """Fork multiprocessing's resource tracker from this interpreter; return its pid.

    The first worker would otherwise start the standard tracker: a new
    interpreter (``python -c 'from multiprocessing.resource_tracker import
    main; main(fd)'``, ~0.1 CPU-s per host). Forked, it is the same program
    (``resource_tracker.main`` reading the same pipe) at the cost of a fork.
    It is installed in the ``resource_tracker._resource_tracker`` singleton
    exactly as ``ResourceTracker.ensure_running`` would (the pipe's write end
    and the pid), so multiprocessing uses it, passes it to the forkserver's
    children, and restarts a normal one if it dies.

    Call it single-threaded, before :func:`start_zygote` (the forkserver then
    holds the tracker's pipe, as the standard one does). The child closes
    *close_fds* and stdin (the SSH channel closes when the agent exits); its
    stderr stays the agent's log pipe, so what it reports about leaked
    resources reaches the controller. It ignores SIGTERM, like the standard
    tracker (:meth:`ProcessGroup.reap` kills it), and exits by itself when
    every holder of the pipe has exited.

    Returns None, having done nothing, where the private names it relies on
    differ (Python outside 3.10-3.13 or a changed ResourceTracker): the first
    worker then starts the normal tracker.
    """
    from multiprocessing import resource_tracker

    tracker = getattr(resource_tracker, "_resource_tracker", None)
    low, high = FORKABLE_PYTHONS
    if not (low <= sys.version_info[:2] <= high) or tracker is None or not all(
            hasattr(tracker, n) for n in ("_fd", "_pid", "_lock", "_check_alive")) or not callable(
            getattr(resource_tracker, "main", None)):
        return None
    if tracker._fd is not None:
        return None  # already running
    pid, r, w = _fork_with_pipe()
    if pid == 0:  # the tracker
        try:
            os.close(w)
            _detach_child(close_fds)
            resource_tracker.main(r)  # ignores SIGINT/SIGTERM, reads until every writer is gone
        finally:
            os._exit(0)
    os.close(r)
    tracker._fd = w
    tracker._pid = pid
    return pid
