"""``python -m sshdeploy.testbed``: see :mod:`sshdeploy.testbed.cli`."""

from __future__ import annotations

from sshdeploy.testbed.cli import main

if __name__ == "__main__":
    main()
