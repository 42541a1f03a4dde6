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
Frozen modules keep the bytecode in flash as well. They need a MicroPython built with the
firmware in it, so they are measured only when CELLBENCH_FROZEN_MICROPYTHON names such a
unix port (same driver, its frozen modules first on the path), built from a MicroPython
checkout with

    make -C mpy-cross
    make -C ports/unix FROZEN_MANIFEST=<cellbench>/firmware/manifest.py \
        MICROPY_PY_FFI=0 MICROPY_PY_SSL=0 MICROPY_PY_BTREE=0

(the C modules switched off are ones the firmware does not use; an rp2 build takes the
same FROZEN_MANIFEST).
"""

import os

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


FROZEN_ENV = "CELLBENCH_FROZEN_MICROPYTHON"


def _boot(work, heap_kb, kind):
    """Boot the driver on a simulated board of ``heap_kb``; its JSON dict, or None when it
    does not boot (MemoryError). kind: "py" (source copies first on the path), "mpy" (the
    simulator's .mpy, as `cellbench flash` installs them) or "frozen" (FROZEN_ENV's port)."""
    from .. import sim
    from ..paths import MODELS

    drv = Path(work) / "drv"
    drv.mkdir(parents=True, exist_ok=True)
    (drv / "fw_boot.py").write_text(DRIVER % {"line": LINE_BYTES})
    if kind == "py":
        for src in sim.firmware_sources():
            shutil.copyfile(src, drv / src.name)
    board = sim.start_board(MODELS / "lto-li-coin.json", workdir=Path(work) / "run", heap_kb=heap_kb,
                            entry="fw_boot", entry_dir=drv,
                            binary=os.environ[FROZEN_ENV] if kind == "frozen" else None)
    try:
        while True:
            raw = board.readline(timeout_s=120)
            if not raw:
                return None
            if raw.startswith(b"{"):
                return json.loads(raw)
    finally:
        board.close()


def _smallest_kb(work, hi_kb, kind):
    """Smallest heap_kb (to 2 KB, at most hi_kb) on which the driver boots; the caller has
    seen it boot on hi_kb (a second try there can fail at the edge: the compiler's peak
    for .py sources sits at the board's whole heap)."""
    lo_kb = LO_KB
    while hi_kb - lo_kb > 2:
        mid = (lo_kb + hi_kb) // 2
        if _boot(Path(work) / f"{mid}", mid, kind) is None:
            lo_kb = mid
        else:
            hi_kb = mid
    return hi_kb


def kinds():
    """The installs measured: "py" and "mpy", and "frozen" when FROZEN_ENV names a port."""
    return ("py", "mpy", "frozen") if os.environ.get(FROZEN_ENV) else ("py", "mpy")


def measure(heap_kb=None):
    """{kind: the driver's figures at heap_kb (default the sim board's) plus "smallest_kb"}
    for each of kinds()."""
    from .. import sim

    heap_kb = heap_kb or sim.load_board("sim")["sim"]["heap_kb"]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds():
            res = _boot(Path(tmp) / kind, heap_kb, kind)
            if res is None:
                # A result, not an error: this install does not fit the board; how far off?
                big = _boot(Path(tmp) / f"{kind}-big", 2 * heap_kb, kind)
                out[kind] = {"boots": False, "smallest_kb": None if big is None else
                             _smallest_kb(Path(tmp) / f"{kind}-bisect", 2 * heap_kb, kind)}
                continue
            res["boots"] = True
            res["smallest_kb"] = _smallest_kb(Path(tmp) / f"{kind}-bisect", heap_kb, kind)
            out[kind] = res
    return out


def _bytes(paths):
    return sum(p.stat().st_size for p in paths)


def _version(binary):
    import subprocess

    done = subprocess.run([binary, "-c", "import sys; print(sys.version)"], capture_output=True, text=True)
    return done.stdout.strip().split(";")[-1].strip() or "MicroPython ?"


AS = {"py": "as .py (compiled on the board at import)", "mpy": "as .mpy (cellbench flash)",
      "frozen": "frozen (FROZEN_MANIFEST=firmware/manifest.py)"}


def run() -> list[dict]:
    from .. import sim

    heap_kb = sim.load_board("sim")["sim"]["heap_kb"]
    m = measure(heap_kb)
    with tempfile.TemporaryDirectory() as tmp:
        files = sim.compile_sim_modules(tmp)
        mpy_bytes = _bytes(files / (p.stem + ".mpy") for p in sim.firmware_sources())
    py_bytes = _bytes(sim.firmware_sources())
    kb = lambda b: round(b / 1024, 1)  # noqa: E731
    rows = []
    for kind, res in m.items():
        if not res["boots"]:
            rows.append({"name": f"smallest heap that boots, {kind}", "value": res["smallest_kb"] or "-",
                         "unit": "KB", "note": f"{AS[kind]}: does NOT boot on the board's {heap_kb} KB "
                                               "(install as .mpy, as cellbench flash does)"})
            continue
        rows += [
            {"name": f"resident heap of the firmware modules, {kind}", "value": kb(res["resident"]),
             "unit": "KB", "note": f"{AS[kind]}; 64-bit unix port"},
            {"name": f"free heap after boot, {kind}", "value": kb(res["free_after_boot"]), "unit": "KB",
             "note": f"of {heap_kb} KB, left for MODEL, LOAD and the ring"},
            {"name": f"smallest heap that boots, {kind}", "value": res["smallest_kb"], "unit": "KB",
             "note": "bisection, 2 KB steps" + (": the compiler's peak at import" if kind == "py" else "")},
        ]
    if "frozen" in m:
        rows[-3]["note"] += f", {_version(os.environ[FROZEN_ENV])}"
    else:
        rows.append({"name": "frozen", "value": "-", "unit": "",
                     "note": f"not measured: set {FROZEN_ENV} to a unix port built with the firmware frozen in"})
    rows.append({"name": "firmware size on flash", "value": kb(mpy_bytes), "unit": "KB",
                 "note": f"the .mpy files; {kb(py_bytes)} KB of .py source; main.py not included"})
    return rows
