"""Drop-in for distributed's SSHCluster, without network (issue 12).

What code written for ``distributed.deploy.ssh.SSHCluster`` relies on and
must keep working after changing the import: sshdeploy's settings survive any
reset of ``dask.config`` (distributed's test fixtures, ``refresh()``, a
``set`` of the whole ``sshdeploy`` tree); every error is a ``RuntimeError``;
the old ``worker_module`` keyword is accepted (classic values) or refused
clearly. Clusters are built inside a running event loop with
``asynchronous=True`` and never started, so nothing connects anywhere.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.config
import pytest
import yaml
from distributed import utils_test

import sshdeploy
from sshdeploy import SSHCluster, errors
from sshdeploy import settings as config
from sshdeploy.errors import ConfigError, MultiHostError, SSHDeployError, StartError

pytestmark = pytest.mark.timeout(30)

PACKAGED = yaml.safe_load(Path(sshdeploy.__file__).with_name("sshdeploy.yaml").read_text())[
    "sshdeploy"
]
HOSTS = ["node1", "node2", "node3"]
CLASSIC_WORKER_MODULES = ["distributed.cli.dask_worker", "distributed.cli.dask_spec"]


@pytest.fixture(autouse=True)
def restore_dask_config() -> Iterator[None]:
    """Put dask.config back exactly as it was after each test."""
    saved = copy.deepcopy(dask.config.config)
    try:
        yield
    finally:
        dask.config.config.clear()
        dask.config.config.update(saved)


def build(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Construct an SSHCluster in a running loop without starting it; return what it planned.

    Returns the worker spec (name -> spec) and ``_supports_scaling``; the
    cluster is closed before returning (nothing was started, nothing connects).
    """

    async def make() -> dict[str, Any]:
        cluster = SSHCluster(*args, asynchronous=True, **kwargs)
        try:
            return {
                "worker_spec": copy.copy(cluster.worker_spec),
                "supports_scaling": cluster._supports_scaling,
            }
        finally:
            await cluster.close()  # type: ignore[misc]

    return asyncio.run(make())


def worker_classes(planned: dict[str, Any]) -> set[Any]:
    """Return the worker class named in every planned worker's spec."""
    return {spec["options"]["cls"] for spec in planned["worker_spec"].values()}


def all_error_classes() -> list[type[SSHDeployError]]:
    """Every subclass of SSHDeployError defined in sshdeploy.errors, recursively."""
    found: list[type[SSHDeployError]] = [SSHDeployError]
    todo = [SSHDeployError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                todo.append(sub)
    return [c for c in found if c.__module__ == errors.__name__]


def assert_packaged_defaults_in_force() -> None:
    for key, value in PACKAGED.items():
        assert config.get(key) == value, key
        assert config.get(key.replace("-", "_")) == value, key


# -- settings survive any reset of dask.config ---------------------------------------------


def test_defaults_after_refresh() -> None:
    dask.config.refresh()
    assert_packaged_defaults_in_force()
    assert build(HOSTS)["worker_spec"]


def test_defaults_after_refresh_without_registered_defaults() -> None:
    # A refresh from an explicit list of defaults drops what sshdeploy registered.
    dask.config.refresh(defaults=[d for d in dask.config.defaults if "sshdeploy" not in d])
    assert "sshdeploy" not in dask.config.config
    assert_packaged_defaults_in_force()
    assert build(HOSTS)["worker_spec"]


def test_defaults_when_the_whole_tree_is_set_empty() -> None:
    with dask.config.set({"sshdeploy": {}}):
        assert_packaged_defaults_in_force()
        assert [p.role for p in SSHCluster.remote_commands(HOSTS)] == [
            "scheduler", "worker", "worker",
        ]
        assert build(HOSTS)["worker_spec"]


def test_a_partial_tree_keeps_its_value_and_defaults_the_rest() -> None:
    with dask.config.set({"sshdeploy": {"connect-timeout": 3}}):
        assert config.get("connect-timeout") == 3
        assert config.get("start-timeout") == PACKAGED["start-timeout"]
        assert config.get("log-buffer-lines") == PACKAGED["log-buffer-lines"]
        assert build(HOSTS)["worker_spec"]


def test_defaults_when_the_tree_is_deleted() -> None:
    del dask.config.config["sshdeploy"]
    assert_packaged_defaults_in_force()
    assert build(HOSTS)["worker_spec"]


def test_an_explicit_value_still_wins_over_the_fallback() -> None:
    del dask.config.config["sshdeploy"]
    assert config.get("connect-timeout", 7) == 7
    with dask.config.set({"sshdeploy.start-timeout": 5}):
        assert config.get("start-timeout") == 5


def test_defaults_after_distributed_utils_test_snapshot_restore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What distributed's `loop` fixture does: reset_config() to a snapshot taken
    # when distributed.utils_test was imported (here: before sshdeploy was).
    snapshot = copy.deepcopy(dask.config.config)
    snapshot.pop("sshdeploy", None)
    monkeypatch.setattr(utils_test, "original_config", snapshot)
    with utils_test.config_for_cluster_tests():
        assert "sshdeploy" not in dask.config.config
        assert_packaged_defaults_in_force()
        assert build(HOSTS)["worker_spec"]
        assert len(SSHCluster.remote_commands(HOSTS)) == 3


# -- every error is a RuntimeError, keeping its class and fields ----------------------------


def test_every_error_class_is_a_runtime_error() -> None:
    classes = all_error_classes()
    assert {"ConfigError", "StartError", "ConnectError", "MultiHostError"} <= {
        c.__name__ for c in classes
    }
    for cls in classes:
        assert issubclass(cls, RuntimeError), cls.__name__


def test_value_errors_stay_value_errors() -> None:
    assert issubclass(ConfigError, ValueError)
    assert issubclass(errors.HostfileError, ValueError)


@pytest.mark.parametrize("hosts", [None, []])
def test_no_hosts_is_a_value_error_and_a_runtime_error(hosts: list[str] | None) -> None:
    with pytest.raises(ValueError) as info:
        SSHCluster(hosts=hosts)
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value, ConfigError) and info.value.setting == "hosts"
    assert "at least one host" in str(info.value)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("connect_options", [{"known_hosts": None}] * 4),
        ("connect_options", [{}] * 2),
        ("remote_python", ["/usr/bin/python3"] * 4),
        ("remote_python", ["/usr/bin/python3"]),
    ],
)
def test_wrong_length_per_host_list_is_caught_as_runtime_error(setting: str, value: list) -> None:
    kwargs: dict[str, Any] = {setting: value}
    for attempt in (lambda: build(HOSTS, **kwargs),
                    lambda: SSHCluster.remote_commands(HOSTS, **kwargs)):
        with pytest.raises(RuntimeError) as info:
            attempt()
        err = info.value
        assert isinstance(err, ConfigError)
        assert err.setting == setting
        assert f"got {len(value)} for 3 hosts" in str(err)


def test_right_length_per_host_lists_are_accepted() -> None:
    plans = SSHCluster.remote_commands(
        HOSTS,
        connect_options=[{"username": "a"}, {"username": "b"}, {"username": "c"}],
        remote_python=["/py/s", "/py/w2", "/py/w3"],
    )
    assert [(p.role, p.python) for p in plans] == [
        ("scheduler", "/py/s"), ("worker", "/py/w2"), ("worker", "/py/w3"),
    ]


def test_start_errors_are_caught_by_except_runtime_error() -> None:
    one = StartError(host="root@node2", role="worker", name="node2-0",
                     cause="TypeError: unexpected keyword argument 'x'")
    several = MultiHostError(failures={"root@node2": one, "root@node3": one})
    for err in (one, several):
        try:
            raise err
        except RuntimeError as caught:
            assert caught is err
    assert one.name == "node2-0" and one.host == "root@node2" and one.role == "worker"
    assert "node2-0" in str(one) and "unexpected keyword argument 'x'" in str(one)


# -- worker_module, the keyword of older releases --------------------------------------------


@pytest.mark.parametrize("module", CLASSIC_WORKER_MODULES)
def test_classic_worker_module_warns_and_means_the_default_nanny(module: str) -> None:
    default = worker_classes(build(HOSTS))
    with pytest.warns(FutureWarning, match="worker_class") as record:
        planned = build(HOSTS, worker_module=module)
    assert any("worker_module" in str(w.message) for w in record)
    assert worker_classes(planned) == default
    assert len(planned["worker_spec"]) == 2


@pytest.mark.parametrize("module", ["my_project.custom_worker", "distributed.cli.dask_scheduler"])
def test_other_worker_module_is_a_config_error_naming_both_keywords(module: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(HOSTS, worker_module=module)
    text = str(info.value)
    assert "worker_module" in text and "worker_class" in text
    assert isinstance(info.value, RuntimeError)


def test_unknown_keyword_is_a_config_error_naming_it() -> None:
    # distributed's old names connect_kwargs/worker_kwargs never existed in sshdeploy.
    with pytest.raises(ConfigError, match="connect_kwargs") as info:
        build(HOSTS, connect_kwargs={"known_hosts": None})
    assert "connect_options" in str(info.value)


def test_scaling_is_supported() -> None:
    # distributed's SSHCluster says False; sshdeploy scales (a deliberate difference).
    assert build(HOSTS)["supports_scaling"] is True
