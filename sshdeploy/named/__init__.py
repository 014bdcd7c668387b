"""Named clusters that outlive the terminal: their policy, their state, their probes.

A named cluster (``SSHCluster(..., name="NAME", shutdown_on_close=False)``,
``dask-ssh up --name NAME``) keeps running when its controller goes: its
agents are *kept* (:class:`sshdeploy.remote.agent.keep.Keep`). This package holds what
the controller needs to find it again and to operate it:

``policy``
    names, lifetime durations, the :class:`KeepPolicy` sent to the agents (pure).
``state``
    the local state files, one JSON file per name (atomic, private; a cache).
``hostops``
    operations on a host's copy of a cluster's files, run by the agent itself.
``status``
    what a cluster's state is, probed from its scheduler host, never read
    from a file alone.
``adopted``
    the scheduler and workers of a running cluster, as distributed's process
    objects, for :meth:`sshdeploy.SSHCluster.from_name`.
"""
