"""The local multi-host SSH test bed: network namespaces, one bridge, one sshd per host.

A *bed* is a set of hosts on this machine. Each host is a network namespace
with a veth into one Linux bridge (``sdtb0``, address 10.213.7.1 on the
controller), its own address in 10.213.7.0/24, ``lo`` up, no default route,
its own hostname (``unshare --uts``), its own ``/etc/hosts`` (through
``/etc/netns/<ns>/hosts``) and its own sshd that accepts one generated
ed25519 client key for root. Nothing leaves the subnet: no default route, no
forwarding, no NAT.

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

Modules: ``model`` (Bed, BedHost, naming, state file), ``system`` (commands,
/proc, links), ``net`` (bridge, namespaces, veths, /etc/hosts), ``procs``
(processes in a host), ``sshd`` (sshd and client files), ``lifecycle``
(up, down, release, status, locking) and ``cli`` (the command).
"""

# This module only re-exports: the public API, and the private names tests use.
# ruff: noqa: F401

from __future__ import annotations

from sshdeploy.testbed.cli import (
    _cli,
    main,
)
from sshdeploy.testbed.lifecycle import (
    _allocate_block,
    _down_locked,
    _down_pass,
    _holders,
    _machine_lock,
    _remains,
    _up_locked,
    check_requirements,
    down,
    list_beds,
    release,
    status,
    up,
)
from sshdeploy.testbed.model import (
    _NAME_RE,
    BLOCK_STRIDE,
    BRIDGE,
    BRIDGE_ADDRESS,
    BRIDGE_MAC,
    DEFAULT_NAME,
    FIRST_HOST,
    MAX_HOSTS,
    N_BLOCKS,
    NS_PREFIX,
    PREFIX_LEN,
    SUBNET,
    Bed,
    BedHost,
    TestbedError,
    _address,
    _bed_from_state,
    _bed_of_namespace,
    _check_name,
    _host_prefix,
    _namespace,
    _namespace_re,
    _read_state,
    _root_dir,
    _state_dir,
    _veth,
    _write_state,
    host_names,
)
from sshdeploy.testbed.net import (
    HOSTS_FILE,
    NETNS_ETC,
    _beds_in_hosts_file,
    _begin,
    _end,
    _ensure_bridge,
    _names_in_hosts_file,
    _plug_host,
    _remove_bridge_if_unused,
    _remove_hosts_block,
    _set_hosts_block,
    _without_block,
    _write_hosts_file,
    set_link,
)
from sshdeploy.testbed.procs import (
    _kill_namespace,
    _kill_referencing,
    _sshd_pid,
    host_command,
    processes,
    python_processes,
    run_in,
    wait_until,
)
from sshdeploy.testbed.sshd import (
    PROVISION,
    READY_TIMEOUT,
    SSHD,
    _healthy,
    _provision,
    _start_host,
    _write_client_files,
)
from sshdeploy.testbed.system import (
    _cmdline,
    _is_zombie,
    _links,
    _netns_list,
    _netns_pids,
    _run,
    _tcp_ok,
)

__all__ = [
    "Bed",
    "BedHost",
    "TestbedError",
    "check_requirements",
    "down",
    "host_command",
    "list_beds",
    "processes",
    "release",
    "run_in",
    "set_link",
    "status",
    "up",
]

# The docstring examples live in the modules; `doctest.testmod(sshdeploy.testbed)` runs them.
__test__ = {
    "Bed": Bed,
    "BedHost": BedHost,
    "TestbedError": TestbedError,
    "host_names": host_names,
    "up": up,
    "wait_until": wait_until,
}
