"""The local multi-host SSH test bed: network namespaces, two bridges, one sshd per host.

A *bed* is a set of hosts on this machine. Each host is a network namespace
with:

* ``eth0``, a veth into the bed bridge: the default bed and three more share
  ``sdtb0`` (10.213.7.0/24, the controller is 10.213.7.1), further beds have
  a bridge and a /24 of their own (``sdtb<k>``, 10.213.(8+k).0/24). The
  controller reaches every host there; sshd listens there.
* ``eth1``, a veth into the bed's private bridge (``sdtbp<k>``,
  10.213.(100+k).0/24): the hosts reach each other there, the controller has
  no address on it and an ``unreachable`` route for it, so its connects fail
  at once (EHOSTUNREACH).
* ``lo`` up, no default route, its own hostname (``unshare --uts``), its own
  ``/etc/hosts`` (through ``/etc/netns/<ns>/hosts``) and its own sshd that
  accepts one generated ed25519 client key for root.

Nothing leaves the bed's subnets: no default route, no forwarding, no NAT.

One command for users and for tests::

    python -m sshdeploy.testbed up 4        # node1..node4
    python -m sshdeploy.testbed status
    python -m sshdeploy.testbed down

Several beds may exist at once (``--name``); each gets its own block of
addresses, namespace names and host name prefix. State lives in
``/tmp/sshdeploy-testbed/<name>/`` (the root moves with
``SSHDEPLOY_TESTBED_DIR``) and is written as ``up`` goes, so ``down`` also
cleans up after an ``up`` that crashed or was killed.

The sshd configuration, host keys and authorized_keys come from
``provision.sh``, the same file the docker-compose bed uses.

This module is the public API (``__all__``). Modules: ``model`` (Bed, BedHost,
naming, state file), ``system`` (commands, /proc, links), ``net`` (bridge,
namespaces, veths, /etc/hosts), ``procs`` (processes in a host), ``sshd``
(sshd and client files), ``lifecycle`` (up, down, release, status, locking),
``dns`` (a stub resolver on loopback, for runs with unresolvable names) and
``cli`` (the command). Tests of internals import from those modules.
"""

from __future__ import annotations

from sshdeploy.testbed.cli import usage as _usage
from sshdeploy.testbed.lifecycle import (
    check_requirements,
    down,
    list_beds,
    release,
    status,
    up,
)
from sshdeploy.testbed.model import (
    BRIDGE,
    DEFAULT_NAME,
    MAX_HOSTS,
    MAX_HOSTS_OWN_BLOCK,
    NS_PREFIX,
    PRIVATE_INTERFACE,
    Bed,
    BedHost,
    TestbedError,
    host_names,
    state_dir,
)
from sshdeploy.testbed.net import NETNS_ETC, set_link
from sshdeploy.testbed.procs import (
    cut_off_from_each_other,
    host_command,
    host_path,
    mounted,
    processes,
    python_processes,
    run_in,
    shared_directory,
    wait_until,
)
from sshdeploy.testbed.sshd import PROVISION, sshd_log
from sshdeploy.testbed.system import cmdline, is_zombie, links, netns_list

__all__ = [
    "BRIDGE",
    "DEFAULT_NAME",
    "MAX_HOSTS",
    "MAX_HOSTS_OWN_BLOCK",
    "NETNS_ETC",
    "NS_PREFIX",
    "PRIVATE_INTERFACE",
    "PROVISION",
    "Bed",
    "BedHost",
    "TestbedError",
    "check_requirements",
    "cmdline",
    "cut_off_from_each_other",
    "down",
    "host_command",
    "host_names",
    "host_path",
    "is_zombie",
    "links",
    "list_beds",
    "mounted",
    "netns_list",
    "processes",
    "python_processes",
    "release",
    "run_in",
    "set_link",
    "shared_directory",
    "sshd_log",
    "state_dir",
    "status",
    "up",
    "wait_until",
]

# The docstring examples live in the modules; `doctest.testmod(sshdeploy.testbed)` runs them.
__test__ = {
    "Bed": Bed,
    "BedHost": BedHost,
    "TestbedError": TestbedError,
    "host_names": host_names,
    "state_dir": state_dir,
    "up": up,
    "usage": _usage,
    "wait_until": wait_until,
}
