"""Benchmark: the simulated board (firmware + plant under the MicroPython unix port).

Runs the LTO preset through 1C CC cycles (window_V) at a 1 s tick for SIM_HOURS hours of
cell time over the real link (frames, records, ACKs) and reports simulated cell-hours per
wall second, microseconds per tick, heap bytes allocated per tick (all, and the plant's
own share; micropython.mem_total in the plant's stats file) and the live heap.
The demo simulates ~135 cell-hours in under 2 minutes, so it needs >= 1.2 cell-h per
wall second (<= 2.7 ms per 1 s tick); the target for firmware + plant is ~200 us per tick.
The run uses the board's heap (boards/sim.json sim.heap_kb); if the firmware cannot run
there, the rows say so and come from a run with FALLBACK_HEAP_KB.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

SIM_HOURS = 10.0
TICK_MS = 1000
TARGET_US = 200.0
FALLBACK_HEAP_KB = 300  # used, and said so, when the board's own heap cannot START a run


def _frame():
    from ..paths import FIRMWARE

    if str(FIRMWARE) not in sys.path:
        sys.path.insert(0, str(FIRMWARE))
    import frame

    return frame


def _body(board, frame):
    """The next framed line's body ("" for a line that is not a frame)."""
    raw = board.readline(timeout_s=120)
    if not raw:  # MicroPython prints an uncaught exception's traceback to stdout
        raise RuntimeError("sim board ended: " + (board.stderr_text()[-200:] or _LAST[-1]))
    body = frame.decode(raw)
    if body is None:
        _LAST.append(raw.decode(errors="replace").strip())
    return body or ""


_LAST = [""]  # the last line from the board that was not a frame


def _cmd(board, frame, text):
    board.write(frame.encode(text))
    while True:
        body = _body(board, frame)
        if body.startswith(("OK ", "ERR ")) and body.split()[1] == text.split()[0]:
            return body


def _table(model):
    i_nA = int(round(model["capacity_Ah"] * 1e9))  # 1C
    lo, hi = (int(round(v * 1e6)) for v in model["window_V"])
    return {"v": 1, "tick_ms": TICK_MS, "record": {"dt_ms": 60_000},
            "steps": [["CC", -i_nA, 0, lo], ["CC", i_nA, 0, hi], ["LOOP", 0, 100000]]}


def _run(heap_kb, work):
    from .. import sim
    from ..paths import MODELS

    frame = _frame()
    model_path = MODELS / "lto-li-coin.json"
    model = json.loads(model_path.read_text())
    board = sim.start_board(model_path, workdir=work, seed=1, heap_kb=heap_kb, soc0=0.95)
    try:
        reply = _cmd(board, frame, "LOAD " + json.dumps(_table(model)))
        if not reply.startswith("OK"):
            raise RuntimeError(reply)
        reply = _cmd(board, frame, "START")
        if not reply.startswith("OK"):
            return None, reply
        start = time.perf_counter()
        t_ms = n = 0
        while t_ms < SIM_HOURS * 3600_000:
            body = _body(board, frame)
            if body.startswith("R "):
                t_ms = int(body.split()[2])
                n += 1
                if n % 100 == 0:
                    board.write(frame.encode("ACK " + body.split()[1]))
            elif body.startswith("E ") and body.split()[2] in ("FAULT", "END"):
                raise RuntimeError(body)
        wall_s = time.perf_counter() - start
        _cmd(board, frame, "STOP")
    finally:
        board.close()
    stats = [list(map(int, line.split())) for line in (Path(work) / "stats.txt").read_text().splitlines()
             if len(line.split()) == 6]
    return {"wall_s": wall_s, "t_ms": t_ms, "stats": stats}, None


def run() -> list[dict]:
    from .. import sim

    heap_note = ""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            res, err = _run(None, Path(tmp) / "a")
        except RuntimeError as ex:  # e.g. the firmware cannot boot in the board's heap
            res, err = None, str(ex).replace("\n", " ")
        if res is None:
            board_heap = json.loads(sim.board_path("sim").read_text())["sim"]["heap_kb"]
            heap_note = (f"; FAILS at the board's heap ({board_heap} KB): {err[:100]}; "
                         f"figures from a run with {FALLBACK_HEAP_KB} KB")
            res, err = _run(FALLBACK_HEAP_KB, Path(tmp) / "b")
            if res is None:
                raise RuntimeError(err)
    ticks = res["t_ms"] / TICK_MS
    us_per_tick = res["wall_s"] / ticks * 1e6
    first, last = res["stats"][1], res["stats"][-1]  # skip the line before START
    d_ticks = max(1, last[1] - first[1])
    rows = [
        {"name": "sim cell-hours per wall second", "value": round(res["t_ms"] / 3.6e6 / res["wall_s"], 2),
         "unit": "h/s", "note": f"LTO preset, 1C cycles, {TICK_MS} ms tick, {SIM_HOURS:g} h{heap_note}"},
        {"name": "sim wall time per tick", "value": round(us_per_tick, 1), "unit": "us",
         "note": f"firmware + plant + link, unix port; target ~{TARGET_US:g} us"},
        {"name": "heap allocated per tick (all)", "value": round((last[2] - first[2]) / d_ticks),
         "unit": "B", "note": "micropython.mem_total delta: garbage plus call frames freed at return"},
        {"name": "heap allocated per tick (plant)", "value": round((last[3] - first[3]) / d_ticks),
         "unit": "B", "note": "the simulator's own share of the line above (floats of the cell model)"},
        {"name": "live heap during the run", "value": round(max(s[4] for s in res["stats"][1:]) / 1024, 1),
         "unit": "KB", "note": f"largest gc.mem_alloc after gc.collect, of {last[5] / 1024:.0f} KB; "
                               "firmware + simulator (~35 KB), 64-bit unix objects"},
    ]
    return rows
