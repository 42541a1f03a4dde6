"""Import the firmware's plain-Python modules (``firmware/*.py``) on the host.

The step engine, safety checks, frames and estimator are the same files the board runs;
the host imports them from the repository instead of keeping a copy.
"""

import importlib
import sys

from .paths import FIRMWARE


def module(name):
    """Return the firmware module ``name`` (for example ``"frame"``), imported from firmware/."""
    path = str(FIRMWARE)
    if path not in sys.path:
        sys.path.append(path)
    return importlib.import_module(name)
