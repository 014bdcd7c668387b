# The preflight probe (sshdeploy.bootstrap.build_probe_command): prints the interpreter and
# the versions of python, dask and distributed as one JSON line. Finds each package as
# Python would (the first sys.path entry holding it) and reads its version from the name
# of its *.dist-info directory beside its code: a few directory listings, ~0.01 CPU-s over
# a bare interpreter (importlib.metadata costs ~0.04; importing dask and distributed ~0.5,
# and the start reports an import failure clearly anyway). Anything else (an editable or
# egg install, two dist-info directories) falls back to importlib.metadata after
# find_spec; a package without metadata (a source checkout on the path) is imported for
# its __version__. Runs with `python -c`: standard library only; comment lines not sent.
import json
import os
import sys

versions = {"python": sys.version.split()[0]}
out: dict[str, object] = {"python": sys.executable, "versions": versions, "error": None}
try:
    for m in ('dask','distributed'):  # tests swap this literal
        p, f = m + "-", []
        for d in sys.path:
            try:
                f = [n for n in os.listdir(d or ".") if n.startswith(p)
                     and n.endswith(".dist-info") and n[len(p):len(p) + 1].isdigit()]
            except OSError:
                continue
            if f or os.path.isdir(os.path.join(d or ".", m)):
                break
        if len(f) == 1 and os.path.isdir(os.path.join(d or ".", m)):
            versions[m] = f[0][len(p):-10]
        else:
            from importlib import import_module, metadata, util
            if util.find_spec(m) is None:
                raise ModuleNotFoundError(f"No module named {m!r}")
            try:
                versions[m] = metadata.version(m)
            except metadata.PackageNotFoundError:
                versions[m] = import_module(m).__version__
except BaseException as e:
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
