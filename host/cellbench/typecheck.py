"""Type-check the firmware against the MicroPython rp2 stubs (``make typecheck``).

The firmware files run on an RP2040, whose MicroPython lacks much of CPython's standard
library. Checking them with mypy against the port's own stubs (PyPI
``micropython-rp2-rpi_pico-stubs``, which bring a MicroPython typeshed) makes a call to an
API the board lacks fail here, on the host, instead of on the bench.

Usage: ``python -m cellbench.typecheck STUBS_DIR`` (exit status is mypy's).
"""

import os
import subprocess
import sys

from .paths import FIRMWARE


def mypy_command(stubs_dir):
    """The mypy command line that checks every firmware module against ``stubs_dir``."""
    # manifest.py is build metadata for MicroPython's freezer, not code the board runs.
    files = sorted(str(p) for p in FIRMWARE.glob("*.py") if p.name != "manifest.py")
    return [
        sys.executable, "-m", "mypy",
        "--custom-typeshed-dir", str(stubs_dir),  # MicroPython's stdlib, not CPython's
        "--python-version", "3.11",
        "--no-site-packages",
        "--check-untyped-defs",  # the firmware is unannotated: check the bodies anyway
        "--no-error-summary",
        "--show-error-codes",
        *files,
    ]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m cellbench.typecheck STUBS_DIR", file=sys.stderr)
        return 2
    env = dict(os.environ, MYPYPATH=os.path.abspath(argv[0]))
    done = subprocess.run(mypy_command(argv[0]), env=env, capture_output=True, text=True)
    ours = firmware_errors(done.stdout)
    if ours:
        print("\n".join(ours))
        return 1
    if done.returncode > 1:
        print(done.stdout + done.stderr)  # mypy itself failed (bad install, crash)
        return done.returncode
    print(f"firmware type-checks against the rp2 stubs ({argv[0]})")
    return 0


def firmware_errors(mypy_output):
    """mypy's error lines about firmware files.

    The stubs carry a few inconsistencies of their own (duplicate names, a missing
    ``_io``); mypy reports them too, but they say nothing about our code.
    """
    root = str(FIRMWARE)
    return [line for line in mypy_output.splitlines()
            if (line.startswith("firmware/") or line.startswith(root)) and ": error:" in line]


if __name__ == "__main__":
    sys.exit(main())
