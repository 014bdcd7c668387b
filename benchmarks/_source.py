"""Which sshdeploy a benchmark measures; import this module before ``sshdeploy``.

``python benchmarks/x.py`` puts ``benchmarks/`` first on ``sys.path``, not the
checkout, so a bare ``import sshdeploy`` would find whatever is installed (an
editable install may point at another checkout). Rule:

* if ``$PYTHONPATH`` names a directory holding ``sshdeploy/``, that one is
  measured (e.g. ``PYTHONPATH=/work/main python benchmarks/bench_scale.py``
  measures main's code with this tree's benchmark scripts);
* else the checkout these scripts live in, which is also exported in
  ``$PYTHONPATH`` so that every child process measures the same code.

The agent's source travels from the controller to the hosts, so the remote
side runs the same code too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _choose() -> Path:
    env = os.environ.get("PYTHONPATH", "")
    for entry in env.split(os.pathsep):
        if entry and (Path(entry) / "sshdeploy" / "__init__.py").exists():
            # $PYTHONPATH set by a script after this interpreter started (bench_startup's
            # --source) is not on sys.path yet: put it first, or an installed (editable)
            # sshdeploy would be imported here while the children import the other one.
            sys.path.insert(0, str(Path(entry).resolve()))
            return Path(entry).resolve()
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env] if env else []))
    return root


SOURCE = _choose()
