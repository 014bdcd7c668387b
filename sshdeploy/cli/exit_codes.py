"""The exit statuses of ``dask-ssh``, by name (see :mod:`sshdeploy.cli` for when each).

:class:`~sshdeploy.errors.SSHDeployError` subclasses carry their own
``exit_code`` (1 unless they say otherwise), as click's exceptions do.
"""

#: Stopped by a signal once the cluster ran, or a dry run / check that passed.
OK = 0
#: A failure sshdeploy diagnosed: an error, a failed ``--check``, the scheduler died.
FAILED = 1
#: A usage error (click's own status for it).
USAGE = 2
#: A signal during start-up (the start is cancelled), or a second Ctrl-C: 128 + SIGINT.
INTERRUPTED = 130
#: Stdout's reader went away (``dask-ssh ... | head``): 128 + SIGPIPE, so ``set -o
#: pipefail`` sees the cut.
OUTPUT_CLOSED = 141
