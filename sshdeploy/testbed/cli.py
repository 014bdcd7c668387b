"""The ``python -m sshdeploy.testbed`` command (click): up, down, status."""

from __future__ import annotations

import shlex
import sys
import time
from typing import Any

from sshdeploy.testbed.lifecycle import down, list_beds, status, up
from sshdeploy.testbed.model import DEFAULT_NAME, MAX_HOSTS_OWN_BLOCK, Bed, TestbedError
from sshdeploy.testbed.system import tcp_ok


def usage(bed: Bed) -> str:
    """Return how to use *bed*: its hosts, its files, and lines to copy and paste.

    Shell lines are quoted for ``sh``; the Python line is one statement.

    Examples
    --------
    >>> from pathlib import Path
    >>> from sshdeploy.testbed.cli import usage
    >>> from sshdeploy.testbed.model import Bed, BedHost
    >>> d = Path("/tmp/sshdeploy-testbed/ci")
    >>> bed = Bed("ci", (BedHost("ci1", "10.213.7.61", "sdtb-ci-ci1", "10.213.101.61"),), d,
    ...           d / "client_key", d / "known_hosts", d / "ssh_config", d / "hostfile",
    ...           private_subnet="10.213.101.0/24")
    >>> print(usage(bed))  # doctest: +ELLIPSIS
      ci1        10.213.7.61     eth1 10.213.101.61   netns sdtb-ci-ci1
    private net: 10.213.101.0/24 on eth1 of every host (not reachable from here)
    hostfile:    /tmp/sshdeploy-testbed/ci/hostfile
    ...
    # a Dask cluster from the shell (the first host runs the scheduler; Ctrl-C stops it):
    dask-ssh --hostfile /tmp/sshdeploy-testbed/ci/hostfile --known-hosts ...
    # the same from Python:
    from sshdeploy import SSHCluster; cluster = SSHCluster(['ci1'], connect_options=...)
    # take it down:
    python -m sshdeploy.testbed down --name ci
    """
    q = shlex.quote
    lines = [
        f"  {h.name:<10} {h.address:<15} {bed.private_interface} {h.private_address:<15} "
        f"netns {h.namespace}"
        for h in bed.hosts
    ]
    lines += [
        f"private net: {bed.private_subnet} on {bed.private_interface} of every host "
        "(not reachable from here)",
        f"hostfile:    {bed.hostfile}",
        f"known_hosts: {bed.known_hosts}",
        f"ssh_config:  {bed.ssh_config}",
        f"client key:  {bed.client_key}",
        "",
        "# a shell on a host:",
        f"ssh -F {q(str(bed.ssh_config))} {q(bed.hosts[0].name)}",
        "# a Dask cluster from the shell (the first host runs the scheduler; Ctrl-C stops it):",
        f"dask-ssh --hostfile {q(str(bed.hostfile))} --known-hosts {q(str(bed.known_hosts))} "
        f"--ssh-private-key {q(str(bed.client_key))}",
        "# the same from Python:",
        "from sshdeploy import SSHCluster; "
        f"cluster = SSHCluster({[h.name for h in bed.hosts]!r}, "
        f"connect_options={bed.connect_options()!r})",
        "# take it down:",
        f"python -m sshdeploy.testbed down --name {q(bed.name)}",
    ]
    return "\n".join(lines)


def _cli() -> Any:
    import click

    def fail(exc: TestbedError) -> None:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)

    @click.group(help="The local multi-host SSH test bed (namespaces + sshd; needs root).")
    def main() -> None:
        pass

    @main.command("up", help="Bring up N hosts (idempotent; the default bed: up to 48, "
                  "another --name: up to 200).")
    @click.argument("n", type=click.IntRange(1, MAX_HOSTS_OWN_BLOCK))
    @click.option("--name", default=DEFAULT_NAME, show_default=True, help="Bed name.")
    @click.option(
        "--sshd-option",
        "sshd_option",
        multiple=True,
        metavar="KEY=VALUE",
        help="Extra sshd_config line for every host, e.g. MaxStartups=10:30:100.",
    )
    def up_cmd(n: int, name: str, sshd_option: tuple[str, ...]) -> None:
        opts = {}
        for item in sshd_option:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--sshd-option")
            opts[key] = value
        t0 = time.monotonic()
        try:
            bed = up(n, name, sshd_options=opts)
        except TestbedError as exc:
            fail(exc)
            return
        click.echo(
            f"bed {bed.name!r}: {len(bed.hosts)} host(s) up in {time.monotonic() - t0:.2f} s"
        )
        click.echo(usage(bed))

    @main.command("down", help="Take a bed down and remove everything it left.")
    @click.option("--name", default=DEFAULT_NAME, show_default=True, help="Bed name.")
    @click.option("--all", "all_", is_flag=True, help="Every bed found on this machine.")
    def down_cmd(name: str, all_: bool) -> None:
        try:
            names = list_beds() if all_ else [name]
            for nm in names:
                down(nm)
                click.echo(f"bed {nm!r} is down")
        except TestbedError as exc:
            fail(exc)

    @main.command("status", help="Show a bed and whether each sshd answers.")
    @click.option("--name", default=DEFAULT_NAME, show_default=True, help="Bed name.")
    def status_cmd(name: str) -> None:
        bed = status(name)
        if bed is None:
            left = name in list_beds()
            click.echo(
                f"bed {name!r} is not up"
                + (
                    f" (leftovers found: run `python -m sshdeploy.testbed down --name {name}`)"
                    if left
                    else ""
                )
            )
            sys.exit(3)
        click.echo(f"bed {bed.name!r}: {len(bed.hosts)} host(s), state in {bed.state_dir}")
        bad = 0
        for h in bed.hosts:
            ok = tcp_ok(h.address, 22, 1.0)
            bad += not ok
            click.echo(f"  {h.name:<10} {h.address:<15} sshd {'up' if ok else 'NOT ANSWERING'}")
        click.echo(f"private net: {bed.private_subnet} on {bed.private_interface} of every host")
        click.echo(f"ssh_config:  {bed.ssh_config}")
        sys.exit(1 if bad else 0)

    return main


def main() -> None:
    """Run the ``python -m sshdeploy.testbed`` command."""
    _cli()(prog_name="python -m sshdeploy.testbed")
