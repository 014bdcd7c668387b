"""What a cluster checks and sends to every host before anything starts: pure, no network.

Built once with the cluster's plan (:func:`plan_stage`) and carried out by
:mod:`sshdeploy.env.prestart`: the version gate (always, unless
``sshdeploy.version-check`` is ``ignore``), the synced environment
(``environment="sync"``) and the uploaded code (``upload=[...]``). Both of
the latter end up as one setup line that puts their remote directories
first on ``PYTHONPATH``, so the dry run shows them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sshdeploy.errors import ConfigError
from sshdeploy.settings import Settings, VersionPolicy

from .gate import gated_packages
from .sync import EnvPack, local_pack, pythonpath_setup
from .uploads import REMOTE_UPLOADS

ENVIRONMENTS = ("sync", None)


@dataclass(frozen=True)
class StagePlan:
    """The stage before the start.

    Attributes
    ----------
    packages : tuple of str
        The packages the gate compares.
    policy : {"error", "warn", "ignore"}
        What a difference does (``sshdeploy.version-check``).
    env : EnvPack or None
        The environment to sync, if ``environment="sync"``.
    env_limit : int
        ``sshdeploy.env-cache-size`` in bytes.
    relay_fanout : int
        Hosts one holder of the pack serves at once (``sshdeploy.env-relay-fanout``);
        0: no relay, every host gets the pack from this machine (``sshdeploy.env-relay``).
    upload : tuple of str
        Local paths to upload.
    upload_dir : str or None
        This cluster's upload directory on each host, relative to the home.
    upload_warn : int
        ``sshdeploy.upload-warn-size`` in bytes.
    upload_relay : int or None
        Uploads the hosts lack are relayed (with ``relay_fanout``) above this many
        bytes (``sshdeploy.upload-relay-size``); None: never.
    base : Path
        The directory relative upload paths are resolved from.
    """

    packages: tuple[str, ...]
    policy: VersionPolicy
    env: EnvPack | None = None
    env_limit: int = 0
    relay_fanout: int = 0
    upload: tuple[str, ...] = ()
    upload_dir: str | None = None
    upload_warn: int = 0
    upload_relay: int | None = None
    base: Path = field(default_factory=Path.cwd)

    @property
    def active(self) -> bool:
        """Whether there is anything to do before the start."""
        return self.policy != "ignore" or self.env is not None or bool(self.upload)

    def pythonpath_dirs(self) -> list[str]:
        """The remote directories put first on ``PYTHONPATH`` (uploads before the env)."""
        dirs = [self.upload_dir] if self.upload_dir else []
        return dirs + ([self.env.remote_dir] if self.env is not None else [])

    def setup_lines(self) -> list[str]:
        """Setup lines added after the user's (empty when nothing is synced or uploaded)."""
        dirs = self.pythonpath_dirs()
        return [pythonpath_setup(dirs)] if dirs else []

    def describe(self) -> dict[str, Any]:
        """What the dry run shows about the stage."""
        out: dict[str, Any] = {}
        if self.env is not None:
            out["environment"] = (f"sync {self.env.digest}: {len(self.env.dists)} "
                                  f"distributions, {self.env.size / 1e6:.1f} MB unpacked")
        if self.upload:
            out["upload"] = list(self.upload)
        return out


def plan_stage(
    environment: str | None,
    packages: Sequence[str] | None,
    upload: Sequence[str] | None,
    settings: Settings,
    owner: str | None = None,
) -> StagePlan:
    """Resolve the stage's arguments.

    *owner* names the upload directory (a named cluster's name); by default
    each cluster gets a new random one.

    Raises
    ------
    ConfigError
        For an unknown ``environment``.

    Examples
    --------
    >>> from sshdeploy.settings import Settings
    >>> st = plan_stage(None, ["mypkg"], None, Settings.resolve())
    >>> st.packages[-1], st.env, st.setup_lines()
    ('mypkg', None, [])
    """
    if environment not in ENVIRONMENTS:
        raise ConfigError("environment", f"must be 'sync' or None, got {environment!r}",
                          remedy="environment='sync' (dask-ssh --sync-env) brings this "
                          "machine's packages to every host.")
    if isinstance(packages, str) or isinstance(upload, str):
        raise ConfigError("packages" if isinstance(packages, str) else "upload",
                          "must be a list of names, not one string",
                          remedy="Give a list, e.g. upload=['helpers.py'].")
    names = tuple(str(p) for p in packages or ())
    return StagePlan(
        packages=tuple(gated_packages(names)),
        policy=settings.version_check,
        env=local_pack(names) if environment == "sync" else None,
        env_limit=settings.env_cache_size,
        relay_fanout=settings.env_relay_fanout if settings.env_relay else 0,
        upload=tuple(str(p) for p in upload or ()),
        upload_dir=f"{REMOTE_UPLOADS}/{owner or uuid.uuid4().hex[:16]}" if upload else None,
        upload_warn=settings.upload_warn_size,
        upload_relay=settings.upload_relay_size,
    )
