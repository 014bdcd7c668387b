"""The upload relay: which uploads go host to host, and what a fetching host is told.

Uploads are content-addressed (:mod:`sshdeploy.env.uploads`): each host
keeps every content it received under its sha256 and says at the probe which
of the cluster's it lacks. When those come to more than
``sshdeploy.upload-relay-size`` (4 MiB) and the environment relay is on
(``sshdeploy.env-relay``, ``env-relay-fanout``), they travel as the
environment's pack does, by the same plan and driver (:func:`sshdeploy.env.relay.relay`):
this machine sends them to the first host of each network, a host that holds
every content serves its blob store (:func:`sshdeploy.remote.envremote.serve_pack`
with ``blobs``), and the others fetch each content they lack from it, checked
against its sha256 before it enters their store
(:func:`sshdeploy.remote.envremote.fetch_uploads`); a copy refused, or a holder
out of reach, ends in another holder or a send from here, which sends only
what the host still lacks. Pure: no network here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .uploads import Manifest


def blob_sizes(manifest: Manifest) -> dict[str, int]:
    """Each content's size, by its sha256."""
    return {h: manifest.sources[n].stat().st_size for n, h in manifest.files.items()}


def lacking(missing: Sequence[Sequence[str]]) -> list[str]:
    """Every content some host lacks, once, in order.

    Examples
    --------
    >>> lacking([["b", "a"], [], ["a", "c"]])
    ['a', 'b', 'c']
    """
    return sorted({h for m in missing for h in m})


def relays(sizes: Mapping[str, int], missing: Sequence[Sequence[str]], fanout: int,
           threshold: int | None) -> bool:
    """Whether the uploads that the hosts lack (*missing*: one list per host, hosts sharing a
    home counted once) are relayed: the relay on (*fanout*, *threshold* not None), more than
    *threshold* bytes of contents lacked, and a host to fetch them from, or to fetch them.

    A host that lacks none of them holds them all (it can serve), so two hosts are
    enough: two that lack them, or one that lacks them and one that holds them.

    Examples
    --------
    >>> sizes = {"a": 3_000_000, "b": 2_000_000}
    >>> relays(sizes, [["a", "b"], ["a"]], fanout=8, threshold=4_000_000)
    True
    >>> relays(sizes, [["a"], ["a"]], 8, 4_000_000)   # 3 MB: each from here
    False
    >>> relays(sizes, [["a", "b"]], 8, 4_000_000)     # one host: nobody to relay to
    False
    >>> relays(sizes, [["a", "b"], []], 8, 4_000_000)  # the second holds them already
    True
    >>> relays(sizes, [["a", "b"], ["b"]], 0, 4_000_000)  # sshdeploy.env-relay: false
    False
    """
    if not fanout or threshold is None or len(missing) < 2 or not any(missing):
        return False
    return sum(sizes.get(h, 0) for h in lacking(missing)) > threshold


def serving(blobs: Sequence[str]) -> dict[str, Any]:
    """What a holder serves (:meth:`sshdeploy.env.relay.PackServer.start`'s *serves*)."""
    return {"blobs": sorted(blobs)}


def fetch_op(manifest: Manifest, upload_dir: str, missing: Sequence[str], urls: list[str],
             wait: float) -> dict[str, Any]:
    """The remote ``fetch-uploads`` operation: fetch *missing* from a holder at *urls* (each
    GET waits up to *wait* seconds), then lay out the cluster's tree as ``upload`` does.

    Examples
    --------
    >>> from pathlib import Path
    >>> m = Manifest({"p/a.py": "a" * 64}, {"p/a.py": Path("a.py")})
    >>> op = fetch_op(m, ".cache/sshdeploy/uploads/x1", ["a" * 64], ["http://10.0.0.2:9/t"], 70)
    >>> op["op"], op["dir"], op["files"] == m.files, op["timeout"]
    ('fetch-uploads', 'x1', True, 100)
    """
    return {"op": "fetch-uploads", "dir": upload_dir.rsplit("/", 1)[-1],
            "files": manifest.files, "links": manifest.links, "missing": list(missing),
            "urls": urls, "timeout": wait + 30, "connect_timeout": 5}
