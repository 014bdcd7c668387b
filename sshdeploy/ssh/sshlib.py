"""asyncssh, imported through one door, without its known import-time noise.

Every module of sshdeploy that needs asyncssh writes
``from sshdeploy.ssh.sshlib import asyncssh``. The door exists for one reason:
cryptography 47 and newer deprecate DSA, and asyncssh (2.24 and older)
touches the DSA classes while it is imported, so each import printed five
``CryptographyDeprecationWarning: DSA is deprecated ...`` warnings, with
their source lines, before anything of ``dask-ssh``. That deprecation is
harmless to us (sshdeploy offers no DSA keys) and not the user's to act on.

The filter is as narrow as it can be: that category, that message, raised
from asyncssh's own modules. Any other warning, from asyncssh or anyone,
still shows. It is installed only when the user asked nothing of warnings:
with ``python -W default``, ``-W error`` or ``PYTHONWARNINGS`` set
(:data:`sys.warnoptions` not empty), the user's choice is left alone and the
deprecation shows again.
"""

from __future__ import annotations

import sys
import warnings

#: The deprecation silenced: its message (a regex matched at the start) and where it comes from.
SILENCED_MESSAGE = r"DSA is deprecated"
SILENCED_MODULE = r"asyncssh(\..*)?$"


def quiet_known_warnings() -> bool:
    """Install the narrow filter, unless the user set warning options.

    Returns
    -------
    bool
        Whether a filter was installed (``False`` under ``-W``/``PYTHONWARNINGS``,
        or when cryptography has no such warning class).
    """
    if sys.warnoptions:
        return False
    try:
        from cryptography.utils import CryptographyDeprecationWarning
    except ImportError:  # an old or absent cryptography: nothing to silence
        return False
    warnings.filterwarnings(
        "ignore",
        message=SILENCED_MESSAGE,
        category=CryptographyDeprecationWarning,
        module=SILENCED_MODULE,
    )
    return True


quiet_known_warnings()

import asyncssh  # noqa: E402  (after the filter, which must be in place first)

__all__ = ["asyncssh", "quiet_known_warnings"]
