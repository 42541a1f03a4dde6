"""Benchmark: what installing the firmware as compiled .mpy (``cellbench flash``, the
modules firmware/manifest.py lists) saves on the board's heap, against copying the .py
sources and letting the board compile them at import.

Both measured on the simulated board's boot (cellbench.sim.start_board: the MicroPython
unix port, the board's heap made exactly ``heap_kb`` free for the firmware, the
simulator's own modules kept out of it), with a driver in place of main.py that boots as
main.py does (the line buffer first, then the modules, the estimator, board.load,
Controller, Link):

* resident heap of the firmware's modules: gc.mem_alloc after gc.collect, before and
  after importing them all (main.py's imports and the estimator's);
* free heap after boot: gc.mem_free once the controller and link exist (what MODEL, LOAD
  and the ring share);
* smallest heap that boots: bisection on heap_kb (2 KB steps). Compiling from source has
  a peak (the parser and compiler's temporaries) far above what stays resident.

The .py runs put copies of the sources first on MICROPYPATH (they shadow the .mpy the
simulator installs); everything else is identical. The unix port is 64-bit: object
sizes (pointers, dict slots) are up to twice the RP2040's; bytecode and strings are not.
Frozen modules (an rp2 build with FROZEN_MANIFEST=firmware/manifest.py) would keep the
bytecode in flash as well; that needs a custom MicroPython build and is not measured.
"""

import json
import shutil
import tempfile
from pathlib import Path

LINE_BYTES = 12288  # main.py's command line buffer, claimed first
LO_KB = 16          # bisection floor: nothing boots below this

# Runs on the simulated board's boot in place of main.py; prints one JSON line.
DRIVER = r"""
import gc, json
LINE = bytearray(%(line)d)
gc.collect()
res = {"before": gc.mem_alloc()}
import controller, journal, link, record
link.estimator_class()
import board
gc.collect()
res["resident"] = gc.mem_alloc() - res["before"]
b = board.load()
b.off()
ctl = controller.Controller(b, capacity=1500, ring=record.Ring(0), reserve_bytes=32 * 1024,
                            journal=journal.Journal("journal.bin"))
lk = link.Link(ctl, line=LINE)
gc.collect()
res["free_after_boot"] = gc.mem_free()
print(json.dumps(res))
"""


def _boot(work, heap_kb, source):
    """Boot the driver on a simulated board of ``heap_kb``; its JSON dict, or None when it
    does not boot (MemoryError). source: the firmware from .py (copies first on the path)
    instead of the simulator's .mpy."""
    from .. import sim
    from ..paths import MODELS

    drv = Path(work) / "drv"
    drv.mkdir(parents=True, exist_ok=True)
    (drv / "fw_boot.py").write_text(DRIVER % {"line": LINE_BYTES})
    if source:
        for src in sim.firmware_sources():
            shutil.copyfile(src, drv / src.name)
    board = sim.start_board(MODELS / "lto-li-coin.json", workdir=Path(work) / "run", heap_kb=heap_kb,
                            entry="fw_boot", entry_dir=drv)
    try:
        while True:
            raw = board.readline(timeout_s=120)
            if not raw:
                return None
            if raw.startswith(b"{"):
                return json.loads(raw)
    finally:
        board.close()


def _smallest_kb(work, hi_kb, source):
    """Smallest heap_kb (to 2 KB, at most hi_kb) on which the driver boots; None if none."""
    if _boot(Path(work) / f"{hi_kb}", hi_kb, source) is None:
        return None
    lo_kb = LO_KB
    while hi_kb - lo_kb > 2:
        mid = (lo_kb + hi_kb) // 2
        if _boot(Path(work) / f"{mid}", mid, source) is None:
            lo_kb = mid
        else:
            hi_kb = mid
    return hi_kb


def measure(heap_kb=None):
    """{"py": ..., "mpy": ...}: each the driver's figures at heap_kb (default the sim
    board's) plus "smallest_kb"."""
    from .. import sim

    heap_kb = heap_kb or sim.load_board("sim")["sim"]["heap_kb"]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, source in (("py", True), ("mpy", False)):
            res = _boot(Path(tmp) / kind, heap_kb, source)
            if res is None:
                raise RuntimeError(f"install bench: the firmware from .{kind} does not boot on {heap_kb} KB")
            res["smallest_kb"] = _smallest_kb(Path(tmp) / f"{kind}-bisect", heap_kb, source)
            out[kind] = res
    return out


def _bytes(paths):
    return sum(p.stat().st_size for p in paths)


def run() -> list[dict]:
    from .. import sim

    heap_kb = sim.load_board("sim")["sim"]["heap_kb"]
    m = measure(heap_kb)
    py, mpy = m["py"], m["mpy"]
    with tempfile.TemporaryDirectory() as tmp:
        files = sim.compile_sim_modules(tmp)
        mpy_bytes = _bytes(files / (p.stem + ".mpy") for p in sim.firmware_sources())
    py_bytes = _bytes(sim.firmware_sources())
    kb = lambda b: round(b / 1024, 1)  # noqa: E731
    return [
        {"name": "resident heap of the firmware modules", "value": kb(mpy["resident"]), "unit": "KB",
         "note": f"as .mpy; {kb(py['resident'])} KB as .py: the same bytecode ends up in RAM either way "
                 "(64-bit unix port)"},
        {"name": "free heap after boot", "value": kb(mpy["free_after_boot"]), "unit": "KB",
         "note": f"as .mpy, of {heap_kb} KB; {kb(py['free_after_boot'])} KB as .py (left for MODEL, LOAD, the ring)"},
        {"name": "smallest heap that boots", "value": mpy["smallest_kb"] or -1, "unit": "KB",
         "note": f"as .mpy; {py['smallest_kb'] or 'over ' + str(heap_kb)} KB as .py: compiling at import "
                 f"needs {(py['smallest_kb'] or heap_kb) - (mpy['smallest_kb'] or 0)} KB more (parser and compiler)"},
        {"name": "firmware size on flash", "value": kb(mpy_bytes), "unit": "KB",
         "note": f"the .mpy files (bytecode, portable); {kb(py_bytes)} KB of .py source; main.py not included"},
    ]
