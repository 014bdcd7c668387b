# The importing preflight probe (`dask-ssh --check --deep`): imports dask and distributed
# for their versions (~0.5 CPU-s), so it proves they import. Runs with `python -c`;
# prints the same JSON line as probe.py. Comment lines are not sent.
import json
import platform
import sys


def versions() -> dict[str, object]:
    """Return the interpreter, the versions and the error (None, or why the import failed)."""
    found = {"python": platform.python_version()}
    out: dict[str, object] = {"python": sys.executable, "versions": found, "error": None}
    try:
        import dask,distributed  # noqa: E401, I001  (a doctest looks for this)

        found.update(dask=dask.__version__, distributed=distributed.__version__)
    except BaseException as e:
        out["error"] = f"{type(e).__name__}: {e}"
    return out


print(json.dumps(versions()))
