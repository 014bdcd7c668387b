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
``spec``
    a record's hosts as they are now (add, remove) and what differs between two specs (pure).
``flow``
    find, record, probe and stop a named cluster across its hosts.

The live side of a named cluster (taking one over, recording it, its adopted
processes, dask-ctl's discovery) belongs to the running cluster:
:mod:`sshdeploy.cluster.kept`, :mod:`sshdeploy.cluster.adopted`,
:mod:`sshdeploy.cluster.discovery`.

One word, one meaning: a *named* cluster is what the user makes; its agents
are *kept* on the hosts (``Keep``); a controller that takes one over
*adopts* its running processes.
"""
