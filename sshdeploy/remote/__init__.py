"""What runs on the hosts: programs sent over SSH as text, never installed there.

Every module here is read by :mod:`sshdeploy.bootstrap` and executed by the
remote Python, where sshdeploy is not installed. So each imports only the
standard library at module level (a unit test parses every file and holds
this); dask and distributed are imported inside functions, once needed.

``launcher.py``
    run by ``python -u -c`` from the login shell: says "python started", then
    reads the loader from stdin and runs it.
``loader.py``
    reads the agent's parts from stdin, registers them as the package
    ``sshdeploy_agent`` and runs the agent.
``agent/``
    the agent, in parts (its ``PARTS``, each one job): one per host, starts
    and watches the scheduler or workers. The controller imports what it
    shares with the agent from the part that holds it.
``tagger.py``
    the preload that tags each worker process's output with its name.
``probe.py`` / ``deep_probe.py``
    the preflight probes (``dask-ssh --check``): interpreter and versions,
    as one JSON line; the deep one imports dask and distributed.

Importing the agent's parts, :mod:`sshdeploy.remote.loader` or
:mod:`sshdeploy.remote.tagger` here (the controller, tests) only defines things;
the launcher and the probes run when imported, so nothing imports them.
"""
