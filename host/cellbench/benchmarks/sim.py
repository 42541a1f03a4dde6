"""Benchmark: the simulated board (firmware + plant under the MicroPython unix port), all
at the board's own heap (boards/sim.json sim.heap_kb, what an RP2040 leaves free).

Three measurements:

* end to end: the LTO preset through 1C CC cycles at a 1 s tick for SIM_HOURS of cell
  time over the real link (frames, records, ACKs): simulated cell-hours per wall second.
  The demo simulates ~135 cell-hours in under 2 minutes, so it needs >= 1.2 h/s.
* in process: a driver on the simulator's own boot (same heap, same .mpy firmware)
  times Controller.tick and the plant separately with the real clock (utime), and
  counts heap bytes allocated per tick (gc.mem_alloc with the GC off) for the whole tick
  and for the sampling path alone (sample -> safety -> steps -> record, estimator off),
  which should be 0; the estimator's floats are heap objects on the unix port, so its
  share is reported apart.
* heap: the simulator's own cost (measured at boot), the ring START makes with the LTO
  estimator loaded, the live heap during the run, and the smallest heap on which the
  LTO session still starts with a MIN_RING ring (bisection), i.e. the headroom.
  micropython.mem_peak is not used: it counts every allocation the GC later frees,
  so it exceeds the heap within seconds.
"""

import json
import tempfile
import time
from pathlib import Path

SIM_HOURS = 10.0
TICK_MS = 1000
TARGET_US = 200.0
DRIVER_TICKS = 600     # ticks timed in process (each half with and without the estimator)
ALLOC_TICKS = 20       # ticks whose allocations are counted one by one
MIN_RING = 300         # tests/test_memory.py and docs/link.md


def _frame():
    from .. import fw

    return fw.module("frame")


def _lto():
    from ..paths import MODELS

    path = MODELS / "lto-li-coin.json"
    return path, json.loads(path.read_text())


def _table(model):
    i_nA = int(round(model["capacity_Ah"] * 1e9))  # 1C
    lo, hi = (int(round(v * 1e6)) for v in model["window_V"])
    return {"v": 1, "tick_ms": TICK_MS, "record": {"dt_ms": 60_000},
            "steps": [["CC", -i_nA, 0, lo], ["CC", i_nA, 0, hi], ["LOOP", 0, 100000]]}


class _Board:
    """Framed commands and bodies over a SimBoard, failing loudly."""

    def __init__(self, board):
        self.board = board
        self.frame = _frame()

    def body(self):
        raw = self.board.readline(timeout_s=120)
        if not raw:
            raise RuntimeError("sim board ended: " + self.board.stderr_text()[-300:])
        return self.frame.decode(raw) or ""

    def cmd(self, text):
        self.board.write(self.frame.encode(text))
        name = text.split()[0]
        while True:
            body = self.body()
            if body.startswith(("OK ", "ERR ")) and body.split()[1] == name:
                if body.startswith("ERR"):
                    raise RuntimeError(body)
                rest = body.split(" ", 2)
                return json.loads(rest[2]) if len(rest) > 2 else None


def _session(work, heap_kb=None, seed=1):
    """Boot, MODEL (LTO), LOAD, START on a simulated board; (SimBoard, _Board, ring capacity)."""
    from .. import sim

    path, model = _lto()
    board = sim.start_board(path, workdir=work, seed=seed, heap_kb=heap_kb, soc0=0.95)
    b = _Board(board)
    try:
        b.cmd("MODEL " + json.dumps(model))
        b.cmd("LOAD " + json.dumps(_table(model)))
        b.cmd("START")
        return board, b, b.cmd("ID")["capacity"]
    except Exception:
        board.close()
        raise


def _end_to_end(work):
    board, b, capacity = _session(work)
    try:
        start = time.perf_counter()
        t_ms = n = 0
        while t_ms < SIM_HOURS * 3600_000:
            body = b.body()
            if body.startswith("R "):
                t_ms = int(body.split()[2])
                n += 1
                if n % 100 == 0:
                    board.write(b.frame.encode("ACK " + body.split()[1]))
            elif body.startswith("E ") and body.split()[2] in ("FAULT", "END", "FULL"):
                raise RuntimeError(body)
        wall_s = time.perf_counter() - start
        b.cmd("STOP")
        heap = board.heap()
    finally:
        board.close()
    stats = [list(map(int, line.split())) for line in (Path(work) / "stats.txt").read_text().splitlines()
             if len(line.split()) == 6]
    return {"wall_s": wall_s, "t_ms": t_ms, "stats": stats, "capacity": capacity, "heap": heap}


# Runs on the simulated board's boot in place of main.py; prints one JSON line.
DRIVER = r"""
import gc, json, utime
LINE = bytearray(12288)  # first, as main.py does
import time, simcell
import frame, controller, link, record, board
b = board.load()
b.off()
# main.py's controller, with room for one tick's garbage while allocated() has the GC off
# (the unix port boxes its 64-bit floats: ~34 KB a tick with the estimator); the ring's
# size is not what this driver measures
ctl = controller.Controller(b, capacity=1500, ring=record.Ring(0), reserve_bytes=64 * 1024)
lk = link.Link(ctl, line=LINE)
plant = simcell.plant()

def feed(body):
    lk.feed(frame.encode(body))
    out = lk.output(0)
    if not out[0].startswith(b"OK"):
        raise RuntimeError(out[0])

with open(%(model)r, "rb") as f:  # the framed MODEL line, fed as the port would
    while True:
        chunk = f.read(256)
        if not chunk:
            break
        lk.feed(chunk)
if not lk.output(0)[0].startswith(b"OK"):
    raise RuntimeError("MODEL refused")
feed("LOAD " + %(table)r)
feed("START")

def tick():
    time.sleep_ms(%(tick)d)
    t0 = utime.ticks_us()
    plant.sync()
    t1 = utime.ticks_us()
    ctl.tick(%(tick)d)
    t2 = utime.ticks_us()
    lk.output(1000)
    if ctl.ring.count() > 100:
        ctl.ring.ack(ctl.ring.head - 1)
    return utime.ticks_diff(t1, t0), utime.ticks_diff(t2, t1)

def timed(n):
    p = f = 0
    for k in range(n):
        dp, df = tick()
        p += dp
        f += df
    return p / n, f / n

def allocated(n):
    # Bytes left on the heap by each tick's firmware part (the plant's own share, which
    # lands inside board.sample, subtracted); the GC is off only across one tick.
    total = 0
    for k in range(n):
        time.sleep_ms(%(tick)d)
        plant.sync()
        lk.output(1000)
        ctl.ring.ack(ctl.ring.head - 1) if ctl.ring.count() else None
        gc.collect()
        gc.disable()
        p0 = plant.alloc_bytes
        a0 = gc.mem_alloc()
        ctl.tick(%(tick)d)
        total += gc.mem_alloc() - a0 - (plant.alloc_bytes - p0)
        gc.enable()
    return total / n

res = {"capacity": ctl.ring.cap}
timed(%(warm)d)
res["plant_us"], res["tick_us"] = timed(%(n)d)
res["tick_alloc_B"] = allocated(%(na)d)
est = ctl.est
ctl.est = None
timed(%(warm)d)
res["plant_us_noest"], res["tick_us_noest"] = timed(%(n)d)
res["path_alloc_B"] = allocated(%(na)d)
ctl.est = est
res["state"] = ctl.state
print(json.dumps(res))
"""


def _in_process(work):
    from .. import sim

    path, model = _lto()
    work = Path(work)
    (work / "drv").mkdir(parents=True, exist_ok=True)
    (work / "model.line").write_bytes(_frame().encode("MODEL " + json.dumps(model)))
    code = DRIVER % {"model": str(work / "model.line"), "table": json.dumps(_table(model)),
                     "tick": TICK_MS, "n": DRIVER_TICKS // 2, "warm": 30, "na": ALLOC_TICKS}
    (work / "drv" / "bench_tick.py").write_text(code)
    board = sim.start_board(path, workdir=work / "run", seed=1, soc0=0.95,
                            entry="bench_tick", entry_dir=work / "drv")
    try:
        lines = []
        while True:
            raw = board.readline(timeout_s=300)
            if not raw:
                break
            lines.append(raw.decode(errors="replace").strip())
            if lines[-1].startswith("{"):
                break
    finally:
        board.close()
    if not lines or not lines[-1].startswith("{"):
        raise RuntimeError("bench driver: " + " | ".join(lines[-5:]) + board.stderr_text()[-300:])
    out = json.loads(lines[-1])
    if out["state"] != "RUNNING":
        raise RuntimeError(f"bench driver: the run ended early ({out['state']})")
    return out


def _smallest_heap_kb(work, hi_kb, lo_kb=60):
    """Smallest heap (KB, to 2 KB, at most ``hi_kb``) on which the LTO session starts with a
    MIN_RING ring."""

    def fits(kb):
        try:
            board, _, capacity = _session(Path(work) / f"h{kb}", heap_kb=kb)
        except (RuntimeError, TimeoutError):
            return False
        board.close()
        return capacity >= MIN_RING

    if not fits(hi_kb):
        return None
    while hi_kb - lo_kb > 2:
        mid = (lo_kb + hi_kb) // 2
        if fits(mid):
            hi_kb = mid
        else:
            lo_kb = mid
    return hi_kb


def run() -> list[dict]:
    from .. import sim

    heap_kb = sim.load_board("sim")["sim"]["heap_kb"]
    with tempfile.TemporaryDirectory() as tmp:
        e2e = _end_to_end(Path(tmp) / "e2e")
        drv = _in_process(Path(tmp) / "drv")
        smallest = _smallest_heap_kb(Path(tmp) / "bisect", heap_kb)
    ticks = e2e["t_ms"] / TICK_MS
    stats = e2e["stats"][1:] or e2e["stats"]
    at = f"at the board's heap ({heap_kb} KB)"
    reserved = (e2e["heap"]["sim"] + e2e["heap"]["ballast"]) / 1024
    return [
        {"name": "sim cell-hours per wall second", "value": round(e2e["t_ms"] / 3.6e6 / e2e["wall_s"], 2),
         "unit": "h/s", "note": f"LTO preset, 1C cycles, {TICK_MS} ms tick, {SIM_HOURS:g} h over the link, {at}"},
        {"name": "sim wall time per tick", "value": round(e2e["wall_s"] / ticks * 1e6, 1), "unit": "us",
         "note": f"firmware + plant + link + host, unix port; target ~{TARGET_US:g} us"},
        {"name": "firmware time per tick", "value": round(drv["tick_us"], 1), "unit": "us",
         "note": "Controller.tick with the LTO estimator, real clock, unix port (plant advanced beforehand)"},
        {"name": "firmware time per tick, estimator off", "value": round(drv["tick_us_noest"], 1), "unit": "us",
         "note": "sample -> safety -> steps -> record"},
        {"name": "plant time per tick", "value": round(drv["plant_us"], 1), "unit": "us",
         "note": "the simulated cell and board advancing one tick (not on a real board)"},
        {"name": "heap allocated per tick, sampling path", "value": round(drv["path_alloc_B"]), "unit": "B",
         "note": "gc.mem_alloc over one tick, estimator off, plant's share removed; should be 0"},
        {"name": "heap allocated per tick, estimator", "value": round(drv["tick_alloc_B"] - drv["path_alloc_B"]),
         "unit": "B", "note": "floats are heap objects on the unix port (garbage, collected; no live growth)"},
        {"name": "ring capacity with the LTO estimator", "value": e2e["capacity"], "unit": "slots",
         "note": f"what START made {at}; minimum {MIN_RING} (docs/link.md)"},
        {"name": "firmware live heap during the run", "value": round(max(s[4] for s in stats) / 1024 - reserved, 1),
         "unit": "KB", "note": f"largest gc.mem_alloc after gc.collect less the simulator and its ballast "
                               f"({reserved:.0f} KB); ring included; of {heap_kb} KB"},
        {"name": "simulator's own heap", "value": round(e2e["heap"]["sim"] / 1024, 1), "unit": "KB",
         "note": "measured at boot and kept out of the firmware's heap (sim BOOT)"},
        {"name": "smallest heap for the LTO session", "value": smallest if smallest is not None else -1,
         "unit": "KB", "note": f"boot + MODEL + LOAD + START with a ring >= {MIN_RING}; the board has {heap_kb} KB"
                               + ("" if smallest is not None else "; FAILS at the board's heap")},
    ]
