"""Install the firmware into the emulated chip's flash filesystem the way ``cellbench flash``
installs it on a real board: the same files (commands.flash.compile_firmware: the
manifest's modules compiled with mpy-cross for armv6m, main.py as source), the board file
as ``board.json`` and the board's calibration as ``calibration.json``, copied through the
MicroPython raw REPL as mpremote copies them (``open(name, 'wb').write(...)`` chunks),
then ``machine.reset()`` so main.py starts as after power-up.
"""

import json
import tempfile
from pathlib import Path

from ..commands.flash import compile_firmware
from ..errors import InputError
from ..paths import FIRMWARE

RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"
CHUNK = 1024  # file bytes per raw-REPL command


class ReplError(Exception):
    """The board's REPL answered a command with an exception (its text)."""


def enter_raw_repl(board, timeout_s=60.0):
    """Interrupt whatever runs (Ctrl-C) and enter the raw REPL (Ctrl-A), retrying while the
    chip boots and its USB port enumerates."""
    waited = 0.0
    while True:
        board.drain()
        board.write(b"\r\x03\x03\x01")
        try:
            board.read_until(RAW_PROMPT, 2.0)
            return
        except TimeoutError:
            waited += 2.0
            if waited >= timeout_s:
                raise TimeoutError(f"emulated board: no raw REPL in {timeout_s} s") from None


def exec_raw(board, code, timeout_s=60.0):
    """Run ``code`` in the raw REPL; its stdout (str). ReplError with the board's traceback."""
    board.write(code.encode() + b"\x04")
    head = board.read_until(b"OK", timeout_s)
    if not head.endswith(b"OK"):
        raise ReplError(f"raw REPL refused the command: {head[-200:]!r}")
    out = board.read_until(b"\x04", timeout_s)[:-1]
    err = board.read_until(b"\x04>", timeout_s)[:-2]
    if err:
        raise ReplError(err.decode(errors="replace").strip())
    return out.decode(errors="replace")


def put_file(board, name, data):
    """Write ``data`` (bytes) to /``name`` on the board's filesystem."""
    exec_raw(board, f"f=open({name!r},'wb')\nw=f.write")
    for k in range(0, len(data), CHUNK):
        exec_raw(board, f"w({bytes(data[k:k + CHUNK])!r})")
    exec_raw(board, "f.close()")


def install_files(cfg, calibration=None, build_dir=None):
    """[(name on the board, bytes)] that ``cellbench flash`` would copy for board file ``cfg``
    (a dict) and ``calibration`` (a dict or None)."""
    tmp = tempfile.TemporaryDirectory(prefix="cellbench-emu-") if build_dir is None else None
    build = Path(build_dir or tmp.name)
    try:
        files = [(p.name, p.read_bytes()) for p in compile_firmware(build)]
    finally:
        if tmp is not None:
            tmp.cleanup()
    files.append(("main.py", (FIRMWARE / "main.py").read_bytes()))
    files.append(("board.json", json.dumps(cfg, indent=1).encode()))
    if calibration is not None:
        files.append(("calibration.json", json.dumps(calibration).encode()))
    return files


def install(board, cfg, calibration=None, reset=True, files=None):
    """Copy the firmware, board file and calibration onto the emulated board, check them
    back by size, and (``reset``) reset it so main.py starts. ``files``: install_files'
    list when already made. Returns the names installed."""
    files = install_files(cfg, calibration) if files is None else files
    enter_raw_repl(board)
    try:
        for name, data in files:
            put_file(board, name, data)
        sizes = json.loads(exec_raw(board, "import os\nprint('{'+','.join('\"%s\":%d'%(n,os.stat(n)[6]) "
                                           "for n in os.listdir())+'}')"))
    except ReplError as e:
        raise InputError(f"emu: installing the firmware failed on the board: {e}") from None
    for name, data in files:
        if sizes.get(name) != len(data):
            raise InputError(f"emu: {name} is {sizes.get(name)} bytes on the board, not {len(data)}")
    if reset:
        n = len(board.resets)
        board.write(b"import machine\nmachine.reset()\x04")  # still in the raw REPL
        board.wait_reset(n + 1)
        board.drain()  # the raw REPL's last words ("OK") are not the firmware's
    return [name for name, _ in files]
