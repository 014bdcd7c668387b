"""``python -m sshdeploy.cli``: the ``dask-ssh`` command."""

from sshdeploy.cli import main

main()
