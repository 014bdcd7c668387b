"""Unit tests for sshdeploy.plan: one plan for the dry run and the real start."""

from __future__ import annotations

import warnings

import pytest

from sshdeploy import SSHCluster
from sshdeploy.arguments import ClusterArgs
from sshdeploy.errors import ConfigError
from sshdeploy.plan import ADVERTISED, plan_cluster

pytestmark = pytest.mark.timeout(30)


def test_dry_run_shows_what_the_start_adds() -> None:
    plans = SSHCluster.remote_commands(
        ["s", "a"], worker_options={"nthreads": 2}, env={"A": "1"}, restart_workers=False,
    )
    sched, worker = plans
    assert sched.options["dashboard_address"] == ":8787"
    assert sched.options["host"] is ADVERTISED and worker.options["host"] is ADVERTISED
    assert worker.options["nthreads"] == 2 and worker.options["env"] == {"A": "1"}
    assert sched.settings["start-timeout"] > 0 and worker.settings == sched.settings


def test_explicit_host_interface_or_nohost_are_kept() -> None:
    p = plan_cluster(ClusterArgs(["s", "a"], worker_options={"interface": "eth1"},
                                 scheduler_options={"host": None}))
    assert "host" not in p.scheduler_options
    hp = p.placement.worker_hosts[(None, "a", None)]
    assert p.worker_options(hp) == {"interface": "eth1"}


@pytest.mark.timeout(120)
def test_a_50000_host_dry_run_finishes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Linear in hosts and workers (it was quadratic): bounded by the test's timeout.
    from click.testing import CliRunner

    from sshdeploy.cli import main

    hostfile = tmp_path / "hosts"
    hostfile.write_text("head\nn[1-50000] slots=2\n")
    result = CliRunner().invoke(main, ["--dry-run", "--hostfile", str(hostfile)])
    assert result.exit_code == 0, result.output[-2000:]
    assert result.output.count("# n") == 50000
    assert "n50000-0, n50000-1" in result.output


def test_classic_worker_module_is_accepted_with_a_warning() -> None:
    with pytest.warns(FutureWarning, match="worker_class"):
        p = plan_cluster(ClusterArgs(["s", "a"], worker_module="distributed.cli.dask_worker"))
    assert p.worker_class == "distributed.Nanny"


def test_other_worker_module_is_refused() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConfigError) as info:
            plan_cluster(ClusterArgs(["s", "a"], worker_module="mypkg.worker"))
    assert info.value.setting == "worker_module" and "worker_class" in str(info.value)


def test_unknown_keyword_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as info:
        SSHCluster(["s", "a"], nthreads=2)
    assert info.value.setting == "nthreads" and "worker_options" in str(info.value)


def test_bad_connect_keyword_fails_in_the_constructor() -> None:
    with pytest.raises(ConfigError) as info:
        SSHCluster(["s", "a"], connect_options={"knwon_hosts": None}, asynchronous=True)
    assert "knwon_hosts" in str(info.value) and "[" not in info.value.setting[:1]


def test_key_file_that_is_not_a_key_fails_in_the_constructor(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "id_bad"
    bad.write_text("not a key\n")
    bad.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        SSHCluster(["s", "a"], connect_options={"client_keys": [str(bad)]}, asynchronous=True)
    assert str(bad) in str(info.value) and "OpenSSH private key" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "setting", "words"),
    [
        ({"worker_options": {"nthreads": "many"}}, "worker_options['nthreads']", "whole number"),
        ({"worker_options": {"nthreads": -2}}, "worker_options['nthreads']", "whole number"),
        ({"worker_options": {"n_workers": 2, "worker_port": 40000}},
         "worker_options['worker_port']", "'40000:40001'"),
        ({"worker_options": {"n_workers": 3, "nanny_port": "40000"}},
         "worker_options['nanny_port']", "3 workers"),
        ({"scheduler_options": {"dashboard_address": "host:abc"}}, "dashboard_address",
         "cannot be parsed"),
        ({"worker_options": {"memory_limit": 1.5}}, "worker_options['memory_limit']", "1.5"),
        ({"worker_options": {"memory_limit": -1}}, "worker_options['memory_limit']", "-1"),
    ],
)
def test_options_that_can_only_fail_remotely_are_refused_up_front(
    kwargs: dict, setting: str, words: str  # type: ignore[type-arg]
) -> None:
    with pytest.raises(ConfigError) as info:
        plan_cluster(ClusterArgs(["s", "a"], **kwargs))
    assert info.value.setting.startswith(setting) and words in str(info.value)


def test_a_fixed_port_with_one_worker_per_host_is_fine() -> None:
    plan_cluster(ClusterArgs(["s", "a", "b"],
                             worker_options={"worker_port": 40000, "nanny_port": "0"}))


def test_a_security_object_of_the_users_is_passed_through_unchanged() -> None:
    from distributed.security import Security

    sec = Security(require_encryption=True)
    p = plan_cluster(ClusterArgs(["s", "a"], security=sec))
    assert p.security is sec and p.scheduler_options["security"] is sec
    hp = p.placement.worker_hosts[(None, "a", None)]
    assert p.worker_options(hp)["security"] is sec
    assert p.scheduler_options["protocol"] == "tls://"


def test_security_true_makes_temporary_credentials() -> None:
    p = plan_cluster(ClusterArgs(["s", "a"], security=True))
    assert p.security is not None and p.security.require_encryption
    assert "BEGIN CERTIFICATE" in str(p.security.tls_ca_file)
