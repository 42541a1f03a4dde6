"""The simulated board: the unmodified firmware under the MicroPython unix port, with a
mocked ``machine``, a virtual clock and an equivalent-circuit cell (host/cellbench/sim/mpy).

``start_board(cell)`` gives a :class:`SimBoard` with the same transport interface as a
real board (write / readline / close); ``read_truth`` loads the plant's own record of
what the cell did (time, current, voltage, SoC, charge in and out), the ground truth
tests and the demo compare the firmware's measurements against.
"""

import hashlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..jsonfile import read_json
from ..paths import FIRMWARE, SIM_MPY
from ..transport import Transport
from ..boards import board_path, load_board  # noqa: F401 (board_path: sim.board_path callers)
from ..unixport import micropython_binary, mpy_cross_binary  # noqa: F401 (the one lookup)

TRUTH_COLUMNS = ("t_s", "i_A", "v_V", "soc", "q_chg_Ah", "q_dch_Ah")
WDT_EXIT = 86  # exit status of a watchdog reset (sim/mpy/machine.py)
RESET_EXIT = 87  # exit status of machine.reset()


def _compiled(src, cross):
    """The .mpy of ``src`` from a cache shared by all simulated boards (keyed by the
    source's content and the compiler), compiled once; concurrent starts are safe
    because each compiles to a private name and renames atomically."""
    st = cross.stat()
    key = hashlib.sha1(src.read_bytes() + f"{st.st_size}:{st.st_mtime_ns}:bytecode".encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / "cellbench-mpy"
    cache.mkdir(exist_ok=True)
    out = cache / f"{src.stem}-{key}.mpy"
    if not out.exists():
        tmp = cache / f".{src.stem}-{key}-{os.getpid()}.mpy"
        # Bytecode only: the RP2040's native code (ekf's @micropython.native, Thumb) is 2.7x
        # its bytecode, x64's would be 5x and cost the simulated heap 25 KB the board does not
        # pay; the emulated RP2040 runs and measures the native build. Blank lines keep the
        # line numbers of tracebacks.
        plain = tmp.with_suffix(".py")
        plain.write_text("".join("\n" if line.strip() == "@micropython.native" else line
                                 for line in src.read_text().splitlines(keepends=True)))
        done = subprocess.run([str(cross), "-s", src.name, "-o", str(tmp), str(plain)],
                              capture_output=True, text=True)
        plain.unlink()
        if done.returncode != 0:
            raise InputError(f"sim: mpy-cross failed on {src.name}: {done.stderr.strip()[:300]}")
        os.replace(tmp, out)
    return out


def firmware_sources():
    """The firmware modules a board runs as .mpy: every firmware/*.py but main.py (which
    stays source, as `cellbench flash` installs it) and manifest.py (build metadata)."""
    return sorted(p for p in FIRMWARE.glob("*.py") if p.name not in ("main.py", "manifest.py"))


def compile_sim_modules(dest):
    """Precompile the simulator's modules (sim/mpy/*.py) and the firmware's modules (all
    but main.py) to .mpy files in ``dest``; returns ``dest``.

    A real board runs the firmware from .mpy files (``cellbench flash``), so the
    compiler never runs on its heap; compiling from source inside the simulated board
    would cost the firmware the compiler's peak and leave the heap fragmented by its
    temporaries. The .mpy files are the unmodified firmware, only precompiled.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cross = Path(mpy_cross_binary())
    for src in sorted(SIM_MPY.glob("*.py")) + firmware_sources():
        shutil.copyfile(_compiled(src, cross), dest / (src.stem + ".mpy"))
    return dest


# Run by ``micropython -c`` in place of the board's boot. The board's heap comes first,
# in one piece at the bottom of the process heap, as a fresh RP2040 has it; the
# simulator's modules and plant are then loaded above it (their objects scattered by the
# garbage of loading, which is why they must not share the board's region), measured,
# and the simulator's leftover free space is filled with ballast. Freeing the board's
# block leaves the firmware exactly heap_kb free, contiguous, whatever the simulator
# costs: measured, not guessed. The figures go to the heap report (read_heap_report).
BOOT = r"""
import gc, sys
_board = bytearray({heap_bytes})
import time, select, machine
gc.collect()
_sim = gc.mem_alloc() - len(_board)
_ballast = []
_n = gc.mem_free()
while _n >= 256 and gc.mem_free() >= 256:
    try:
        _ballast.append(bytearray(_n))
    except MemoryError:
        _n //= 2
_board = None
gc.collect()
# What the simulator left unreachable only now (conservative GC) is ballast too.
_n = gc.mem_free() - {heap_bytes}
if _n > 256:
    _ballast.append(bytearray(_n - 64))
    gc.collect()
_spare = sum(len(b) for b in _ballast)
_total = gc.mem_alloc() + gc.mem_free()
with open({report!r}, "w") as _f:
    _f.write("total %d\nsim %d\nballast %d\nfirmware_free %d\n" % (
        _total, _sim, _spare, gc.mem_free()))
_f = None
import {entry}
"""


def read_heap_report(path):
    """The simulated board's heap at boot (bytes): total (-X heapsize), sim (the
    simulator's own modules and plant, measured), ballast (what the simulator reserved
    above the board's heap) and firmware_free (gc.mem_free when main.py started)."""
    try:
        rows = [line.split() for line in Path(path).read_text().splitlines()]
        return {k: int(v) for k, v in rows}
    except (OSError, ValueError) as e:
        raise InputError(f"sim: no heap report {path}: {e}") from None


def ideal_calibration(board="sim"):
    """A calibration for a simulated board from its known imperfections.

    Only the ADC correction table is needed: the sim's sense path is otherwise exact
    (its source errors change the delivered current, which the sense path measures).
    """
    cfg = load_board(board) if not isinstance(board, dict) else board
    from .mpy import simcell  # plain Python, importable on the host

    return {"board": cfg["id"], "created": "sim", "id": f"{cfg['id']}-ideal",
            "voltage": {"gain": 1.0, "offset_V": 0.0},
            "current": {r["name"]: {"gain": 1.0, "offset_A": 0.0} for r in cfg["current"]["ranges"]},
            "adc_correction": simcell.adc_correction(cfg.get("sim") or {}),
            "provenance": "cellbench.sim.ideal_calibration: exact inverse of the sim's ADC DNL model"}


class SimBoard(Transport):
    """A running simulated board. ``readline`` blocks until a line or EOF (b"");
    ``eof`` once the process has ended and everything it wrote has been read."""

    def __init__(self, proc, flash_dir, truth_path, timeout_s=300.0, sync=None):
        self.proc = proc
        self.sync = sync  # lockstep (sim/mpy/select.py): (request fd, reply fd), or None
        self.flash_dir = Path(flash_dir)
        self.truth_path = Path(truth_path)
        self.stats_path = self.flash_dir.parent / "stats.txt"
        self.heap_path = self.flash_dir.parent / "heap.txt"
        self.timeout_s = timeout_s  # wall seconds readline waits before TimeoutError
        self._buf = b""
        self._fd = proc.stdout.fileno()

    def write(self, data: bytes):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def readline(self, timeout_s=None) -> bytes:
        """One line from the board (with its ``\\n``); b"" once the process has ended."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        while b"\n" not in self._buf:
            fds = [self._fd] + ([self.sync[0]] if self.sync else [])
            ready, _, _ = select.select(fds, [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"sim board: no line in {limit} s; stderr: {self.stderr_text()[-500:]}")
            if self._fd not in ready:
                self._go()
                continue
            chunk = os.read(self._fd, 65536)
            if not chunk:
                out, self._buf = self._buf, b""
                return out
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line + b"\n"

    def _go(self):
        """The board asks to move its clock on (lockstep): it wrote its request after its
        last line, so with stdout empty now, every line it wrote has been read and this
        host, in readline with no whole line left, waits on it. Let it go on."""
        if select.select([self._fd], [], [], 0)[0]:
            return  # more lines first: the answer waits for the next empty-handed readline
        try:
            if os.read(self.sync[0], 1):
                os.write(self.sync[1], b"!")
                return
        except OSError:
            pass
        self._end_sync()  # the board is gone

    def _end_sync(self):
        if self.sync:
            for fd in self.sync:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.sync = None

    def heap(self):
        """The heap report written at boot (see :func:`read_heap_report`), in bytes."""
        return read_heap_report(self.heap_path)

    def stderr_text(self) -> str:
        try:
            return (self.flash_dir / "stderr.txt").read_text(errors="replace")
        except OSError:
            return ""

    @property
    def returncode(self):
        return self.proc.poll()

    @property
    def eof(self):
        if self._buf or self.proc.poll() is None:
            return False
        try:
            ready, _, _ = select.select([self._fd], [], [], 0)
            chunk = os.read(self._fd, 65536) if ready else b""
        except (OSError, ValueError):  # closed: nothing more to read
            return True
        self._buf += chunk
        return not chunk

    def close(self, timeout_s=10.0):
        """End the process (stdin closed first so the firmware can switch off cleanly)."""
        self._end_sync()  # a board in lockstep runs free to its end
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout_s)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        return self.proc.returncode


def _short(d, base):
    """``d`` relative to ``base`` when that is the shorter spelling, else as given."""
    rel = os.path.relpath(str(d), str(base))
    return rel if len(rel) < len(str(d)) else str(d)


def start_board(cell, board="sim", calibration=None, workdir=None, seed=0, heap_kb=None,
                soc0=None, faults=None, entry="main", entry_dir=None, binary=None, lockstep=False):
    """Start the firmware on a simulated board holding the cell model ``cell`` (a path).

    board: board name or path (its ``sim`` section sets the imperfections and heap).
    calibration: None, a path, a dict, or ``"ideal"`` (:func:`ideal_calibration`).
    workdir: where the flash dir, truth CSV and stats go (a new temp dir if None).
    seed: noise seed. heap_kb: heap the firmware finds free at boot, KB (default: env
    CELLBENCH_SIM_HEAP_KB, else the board's ``sim.heap_kb``). The process gets
    ``heap_kb + sim.overhead_kb``; the simulator loads its own modules and plant first,
    measures them and reserves the rest above heap_kb (see BOOT and the heap report,
    ``SimBoard.heap()``).
    soc0: initial SoC (default the board's ``sim.soc0``). faults: CELLBENCH_SIM_FAULTS.
    entry, entry_dir: the module run after the boot (``main``: firmware/main.py) and a
    directory searched first for it (benchmarks run their own drivers on the same boot).
    binary: a unix port to run instead of cellbench.unixport's, its frozen modules first on
    the path after entry_dir (benchmarks/install.py: the firmware frozen in, as a board
    built with FROZEN_MANIFEST=firmware/manifest.py has it).
    lockstep: the board's clock moves only while the host waits in ``readline`` having
    read every line (sim/mpy/select.py), so the same protocol, cell and seed give the same
    log bit for bit, whenever the host's commands and ACKs happen to be written. Off by
    default: a host that stops reading then stops the board (and the lab paces instead).
    """
    cfg = load_board(board)
    sim = cfg.get("sim") or {}
    cell = Path(cell).resolve()
    read_json(cell, "cell")
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="cellbench-sim-"))
    flash = work / "flash"
    flash.mkdir(parents=True, exist_ok=True)
    (flash / "board.json").write_text(json.dumps(cfg, indent=1))
    if calibration is not None:
        cal = ideal_calibration(cfg) if calibration == "ideal" else (
            calibration if isinstance(calibration, dict) else read_json(calibration, "calibration"))
        (flash / "calibration.json").write_text(json.dumps(cal))
    truth = work / "truth.csv"
    if heap_kb is None:
        heap_kb = os.environ.get("CELLBENCH_SIM_HEAP_KB") or sim.get("heap_kb", 180)
    heap_bytes = int(float(heap_kb) * 1024)
    heap = heap_bytes // 1024 + int(sim.get("overhead_kb", 0))
    simlib = compile_sim_modules(work / "simlib")
    report = work / "heap.txt"
    # Paths relative to the flash dir where shorter: each module's __file__ is interned on
    # the firmware's heap, and a board's are "/ekf.mpy"; a deep pytest temp dir cost ~1 KB.
    path = ":".join(_short(d, flash) for d in (entry_dir, binary and ".frozen", simlib, FIRMWARE) if d)
    env = dict(os.environ, MICROPYPATH=path, CELLBENCH_SIM_CELL=str(cell),
               CELLBENCH_SIM_SEED=str(seed), CELLBENCH_SIM_TRUTH=str(truth),
               CELLBENCH_SIM_STATS=str(work / "stats.txt"))
    if soc0 is not None:
        env["CELLBENCH_SIM_SOC0"] = repr(float(soc0))
    if faults:
        env["CELLBENCH_SIM_FAULTS"] = faults
    pipes = (os.pipe(), os.pipe()) if lockstep else ()  # (board -> host, host -> board)
    if pipes:
        env["CELLBENCH_SIM_SYNC"] = f"{pipes[0][1]},{pipes[1][0]}"
    # main.py is found last on the path and compiled from source, as on the board.
    boot = BOOT.format(heap_bytes=heap_bytes, report=str(report), entry=entry)
    cmd = [binary or micropython_binary(), "-X", f"heapsize={heap}K", "-c", boot]
    with open(flash / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=flash, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err,
                                pass_fds=[pipes[0][1], pipes[1][0]] if pipes else ())
    if pipes:
        os.close(pipes[0][1])  # the board's ends
        os.close(pipes[1][0])
    return SimBoard(proc, flash, truth, sync=(pipes[0][0], pipes[1][1]) if pipes else None)


def read_truth(path):
    """The plant's truth CSV as a dict of numpy arrays (TRUTH_COLUMNS).

    A process killed mid-write (or a file read while it is written) may end in a partial
    line, one without its ``\n``: only complete lines count, so that line is dropped even
    when what was written of it parses.
    """
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise InputError(f"truth: cannot read {path}: {e}") from None
    lines = text[:text.rfind("\n") + 1].splitlines()
    if not lines or lines[0].split(",") != list(TRUTH_COLUMNS):
        raise InputError(f"truth: {path} is not a truth file")
    rows = [r.split(",") for r in lines[1:]]
    rows = [r for r in rows if len(r) == len(TRUTH_COLUMNS) and all(rows and x for x in r)]
    try:
        data = np.array(rows, dtype=float).reshape(-1, len(TRUTH_COLUMNS))
    except ValueError:
        data = np.array([r for r in rows if _floats(r)], dtype=float).reshape(-1, len(TRUTH_COLUMNS))
    return {name: data[:, k] for k, name in enumerate(TRUTH_COLUMNS)}


def _floats(row):
    try:
        [float(x) for x in row]
        return True
    except ValueError:
        return False
