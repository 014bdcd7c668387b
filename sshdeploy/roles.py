"""The roles a remote process and a remote agent play, as one ``Literal`` each.

A *process* is the scheduler or one worker (:class:`sshdeploy.plan.Launch`,
errors, log prefixes); an *agent* runs either the scheduler or every worker of
its host, so its role on the wire (:class:`sshdeploy.bootstrap.AgentSpec`) is
``"workers"``. :func:`agent_role` maps one to the other.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["ROLES", "AgentRole", "Role", "agent_role"]

#: What a remote process is.
Role = Literal["scheduler", "worker"]

#: What a remote agent runs (its spec's ``role``, as the agent reads it).
AgentRole = Literal["scheduler", "workers"]

#: Every :data:`Role`, in start order.
ROLES: tuple[Role, ...] = get_args(Role)


def agent_role(role: Role) -> AgentRole:
    """Return the role of the agent that starts a process of *role*.

    Examples
    --------
    >>> agent_role("worker")
    'workers'
    >>> agent_role("scheduler")
    'scheduler'
    """
    return "scheduler" if role == "scheduler" else "workers"
