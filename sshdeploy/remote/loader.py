"""Load the agent's parts as a package on the host, then run the agent.

The launcher (:mod:`sshdeploy.remote.launcher`) reads this program from stdin
and runs it; what follows on stdin is the agent itself, in parts
(:func:`sshdeploy.bootstrap.agent_bundle`): one line with the parts' names,
each part before the parts that import it, then each part's source,
length-prefixed (``b"<n>\\n"`` then n bytes).

Each part becomes the module ``sshdeploy_agent.<name>`` of a package that lives
only in ``sys.modules`` (``__path__ = []``: nothing is looked up on disk), so
parts import each other relatively (``from .protocol import EVENT``), here as
they do on the controller. A part is registered, with its ``__package__``,
before it runs (dataclasses look their module up in ``sys.modules``), and is
compiled as ``sshdeploy-agent/<name>.py``, so remote tracebacks name it.
Then the ``main`` part runs the agent, which reads the rest of stdin.

Standard library only, Python 3.10 compatible. Imported as
:mod:`sshdeploy.remote.loader` (tests) it only defines things.
"""

from __future__ import annotations

import sys
import types
from typing import BinaryIO

#: The agent's package on the hosts.
PACKAGE = "sshdeploy_agent"


def load(stream: BinaryIO) -> types.ModuleType:
    """Read the agent's parts from *stream*, run each as a module of :data:`PACKAGE`.

    Returns the package; each part is its attribute of that name.
    """
    package = types.ModuleType(PACKAGE)
    package.__path__ = []
    package.__package__ = PACKAGE
    sys.modules[PACKAGE] = package
    for name in stream.readline().decode().split():
        source = stream.read(int(stream.readline()))
        module = types.ModuleType(f"{PACKAGE}.{name}")
        module.__package__ = PACKAGE
        sys.modules[module.__name__] = module
        setattr(package, name, module)
        code = compile(source, f"sshdeploy-agent/{name}.py", "exec", dont_inherit=True)
        exec(code, module.__dict__)
    return package


if __name__ == "__main__":
    load(sys.stdin.buffer).main.main()
