"""The same environment and code on every host: the version gate, the synced environment, uploads.

``gate`` compares what matters between this machine and a host (pure);
``sync`` packs this environment's distributions (content-addressed);
``uploads`` lists and hashes the user's files; ``stageplan`` is the pure
plan of the stage before a start; ``prestart`` carries it out over the hosts'
SSH connections (its remote side is ``sshdeploy/remote/envremote.py``);
``clean`` frees the hosts' caches (``dask-ssh clean --envs/--uploads HOST...``).
Imports go one way: gate, uploads -> sync -> stageplan -> prestart -> clean.
"""
