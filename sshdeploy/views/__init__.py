"""What the cluster's repr, Jupyter and ``dask-ssh`` share: host rows and the live status.

Library code may import these (no click, no CLI state): :mod:`.hostrows` (one
row per host and its text/HTML tables), :mod:`.livestatus` (the live start-up
table), :mod:`.notebook` (the live status and errors in Jupyter).
"""
