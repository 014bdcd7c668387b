"""Unit tests for sshdeploy.settings' dask.config side: defaults, overrides, spellings, env vars."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import dask.config
import pytest
import yaml

import sshdeploy
from sshdeploy import settings as config

pytestmark = pytest.mark.timeout(10)

YAML = Path(sshdeploy.__file__).with_name("sshdeploy.yaml")


@pytest.fixture
def restore_dask_config() -> Iterator[None]:
    """Put dask.config back exactly as it was (refresh() rebuilds it from scratch)."""
    saved = copy.deepcopy(dask.config.config)
    try:
        yield
    finally:
        dask.config.config.clear()
        dask.config.config.update(saved)


def test_every_yaml_default_is_in_dask_config() -> None:
    defaults = yaml.safe_load(YAML.read_text())["sshdeploy"]
    assert defaults, "sshdeploy.yaml has no settings"
    for key, value in defaults.items():
        assert "_" not in key, f"YAML spells settings with '-': {key}"
        assert dask.config.get(f"sshdeploy.{key}") == value
        assert config.get(key) == value
        assert config.get(key.replace("-", "_")) == value


def test_known_defaults() -> None:
    assert config.get("connect-timeout") == 10
    assert config.get("connect-attempts") == 4
    assert config.get("version-check") == "error"
    assert config.get("multiprocessing-method") == "forkserver"


def test_defaults_survive_refresh(restore_dask_config: None) -> None:
    dask.config.refresh()
    assert config.get("connect_timeout") == 10


def test_override_wins_unless_none() -> None:
    assert config.get("connect_timeout", 3) == 3
    assert config.get("connect-timeout", 0) == 0  # a falsy override still wins
    assert config.get("inherit-config", False) is False
    assert config.get("connect-timeout", None) == 10


def test_dask_config_set_in_either_spelling() -> None:
    with dask.config.set({"sshdeploy.connect-timeout": 5}):
        assert config.get("connect-timeout") == 5
        assert config.get("connect_timeout") == 5
        assert config.get("connect_timeout", 2) == 2
    with dask.config.set({"sshdeploy.connect_timeout": 6}):
        assert config.get("connect-timeout") == 6
    assert config.get("connect-timeout") == 10


def test_unknown_setting_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        config.get("no-such-setting")


def test_environment_variable(monkeypatch: pytest.MonkeyPatch, restore_dask_config: None) -> None:
    monkeypatch.setenv("DASK_SSHDEPLOY__CONNECT_TIMEOUT", "7")
    monkeypatch.setenv("DASK_SSHDEPLOY__VERSION_CHECK", "warn")
    dask.config.refresh()
    assert config.get("connect_timeout") == 7  # parsed as a number, not "7"
    assert config.get("connect-timeout") == 7
    assert config.get("version-check") == "warn"
    assert config.get("connect-attempts") == 4  # the others keep their defaults
    assert config.get("connect_timeout", 1) == 1


def test_environment_variable_is_gone_after_restore() -> None:
    # runs after test_environment_variable: the fixture restored dask.config
    assert config.get("connect_timeout") == 10
    assert config.get("version-check") == "error"
