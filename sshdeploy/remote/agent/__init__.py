"""The remote agent: the program that runs on every host, sent over SSH in parts.

The parts are read as *text* by the controller
(:func:`sshdeploy.bootstrap.agent_bundle`) and run by the remote Python as the
package ``sshdeploy_agent`` (:mod:`sshdeploy.remote.loader`): sshdeploy need
not be installed on the hosts. Each part imports only the standard library at
module level, and earlier parts relatively (``from .protocol import EVENT``);
distributed is imported once, after the spec has been read. Importing a part
here is cheap, so the controller takes what it shares with the agent from the
part that holds it.

``protocol``
    the wire format: the event mark, exit statuses, start stages, line splitting.
``facts``
    what the host is (interpreter, platform, package versions from their
    metadata), for the version gate: sent as the agent starts.
``wire``
    events out (:class:`~.wire.Wire`: the log pump, last words) and commands
    in (:class:`~.wire.Inbox`: EOF and the heartbeat).
``group``
    the process group the agent leads and reaps; its private temporary
    directory, and stale ones of agents that are gone.
``zygote``
    multiprocessing's forkserver and resource tracker, forked from the agent.
``servers``
    the scheduler or Nannies it runs; a worker's share of its host; the
    restart budget.
``jobs``
    a named cluster's jobs on its scheduler host: records, the supervisor, logs, stop.
``marks``
    a named cluster's processes on the host, found by the mark they carry.
``keep``
    a named cluster's files on the host, and what a kept agent adds.
``main``
    :class:`~.main.Agent`: start-up, the command table, every way out.

This file is not sent: it only lists the parts.
"""

#: The agent's parts, each after the parts it imports: the order they are sent and run in.
PARTS = ("protocol", "facts", "wire", "group", "zygote", "servers", "jobs", "marks", "keep", "main")
