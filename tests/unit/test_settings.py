"""Unit tests for sshdeploy.settings: every setting resolved once, typed and checked."""

from __future__ import annotations

import dataclasses

import dask.config
import pytest

from sshdeploy import settings as config
from sshdeploy.errors import ConfigError
from sshdeploy.settings import Settings

pytestmark = pytest.mark.timeout(10)


def test_every_packaged_default_is_a_setting_and_back() -> None:
    names = {f.name.replace("_", "-") for f in dataclasses.fields(Settings)}
    assert names == set(config.DEFAULTS)
    assert Settings.resolve().as_dict() == {k: v for k, v in config.DEFAULTS.items()}


def test_resolve_reads_dask_config_once_and_is_frozen() -> None:
    with dask.config.set({"sshdeploy.start-timeout": 12, "sshdeploy.version-check": "warn"}):
        s = Settings.resolve()
    assert (s.start_timeout, s.version_check) == (12.0, "warn")
    assert Settings.resolve().start_timeout == config.DEFAULTS["start-timeout"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.start_timeout = 1  # type: ignore[misc]


def test_ping_interval_follows_the_heartbeat() -> None:
    with dask.config.set({"sshdeploy.heartbeat-timeout": 9}):
        s = Settings.resolve()
    assert s.heartbeat_timeout == 9 and s.ping_interval == 3


def test_overrides_win_and_none_means_not_given() -> None:
    s = Settings.resolve(start_timeout=5, inherit_config=None)
    assert s.start_timeout == 5 and s.inherit_config is config.DEFAULTS["inherit-config"]


@pytest.mark.parametrize("reset", ["refresh", "empty-tree", "snapshot"])
def test_defaults_survive_any_reset_of_dask_config(reset: str) -> None:
    import copy

    saved = copy.deepcopy(dask.config.config)
    try:
        if reset == "refresh":
            dask.config.refresh()
        elif reset == "empty-tree":
            dask.config.config["sshdeploy"] = {}
        else:  # distributed's test fixtures restore a snapshot taken before we loaded
            dask.config.config.clear()
            dask.config.config.update({k: v for k, v in saved.items() if k != "sshdeploy"})
        assert Settings.resolve().as_dict() == config.DEFAULTS
    finally:
        dask.config.config.clear()
        dask.config.config.update(saved)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("version-check", "maybe", "one of error, warn, ignore"),
        ("multiprocessing-method", "threads", "one of forkserver, spawn, fork"),
        ("start-timeout", "soon", "must be a number"),
        ("start-timeout", -1, "> 0"),
        ("connect-attempts", 0, ">= 1"),
        ("connect-attempts", 2.5, "whole number"),
        ("inherit-config", "yes", "true or false"),
    ],
)
def test_bad_values_name_the_setting(key: str, value: object, words: str) -> None:
    with dask.config.set({f"sshdeploy.{key}": value}):
        with pytest.raises(ConfigError) as info:
            Settings.resolve()
    assert info.value.setting == f"sshdeploy.{key}"
    assert words in str(info.value)


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.resolve(start_timout=3)
    assert "start_timout" in str(info.value) and "start_timeout" in str(info.value)


def test_a_misspelt_key_in_dask_config_is_refused_with_the_nearest_name() -> None:
    import dask

    with dask.config.set({"sshdeploy.conect-timeout": 3}):
        with pytest.raises(ConfigError) as info:
            Settings.resolve()
    err = info.value
    assert err.setting == "sshdeploy.conect-timeout"
    assert "Did you mean sshdeploy.connect-timeout?" in str(err)


def test_known_keys_in_either_spelling_are_accepted() -> None:
    import dask

    with dask.config.set({"sshdeploy.connect_timeout": 3, "sshdeploy.start-timeout": 9}):
        s = Settings.resolve()
    assert (s.connect_timeout, s.start_timeout) == (3.0, 9.0)
