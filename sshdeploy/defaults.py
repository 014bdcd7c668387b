"""The defaults that the CLI and the planner share, in one leaf module (it imports nothing).

The CLI cannot import :mod:`sshdeploy.plan` (it imports distributed, which
``dask-ssh --help`` must not), so both read these from here.
"""

#: The worker class used unless ``worker_class`` / ``--worker-class`` says otherwise.
DEFAULT_WORKER_CLASS = "distributed.Nanny"

#: ``worker_module`` values of distributed's older SSHCluster (and of the classic
#: ``--remote-dask-worker``) that mean "the default worker".
CLASSIC_WORKER_MODULES = ("distributed.cli.dask_worker", "distributed.cli.dask_spec")

#: The scheduler's port (``--scheduler-port``).
DEFAULT_SCHEDULER_PORT = 8786

#: Where the scheduler serves its dashboard (``--dashboard-address``).
DEFAULT_DASHBOARD = ":8787"
