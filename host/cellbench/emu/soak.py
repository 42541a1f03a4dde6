"""``make soak``: a long run of the firmware on the emulated RP2040 (rp2040js, the official
rp2 image), to show that the heap stays flat and no MemoryError comes.

What runs is ``make bench``'s emulated session (cellbench.benchmarks.emu: the firmware
installed as ``cellbench flash`` installs it, then at the raw REPL main.py's boot, MODEL
with the LTO preset, LOAD of 1C cycles, START), and then ``hours`` of ticks as main.py
runs them: sleep to the next tick (the emulated core sleeps and the clock jumps), one
``Controller.tick`` with the estimator, the link's output lines made (and dropped on the
chip), records acknowledged as the host would once more than 100 wait. Every
``every_s`` of emulated time the chip collects and prints its free heap, so the heap is
read as the firmware lives with it, not through the link (which does not report it).
The cell behind the ADC and PWM is the host's plant, on the emulated clock.

Result: a section in BENCHMARKS.md (``--out``), replaced on each soak and kept by
``make bench`` (cellbench.bench keeps sections it does not produce).
"""

import argparse
import json
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from ..benchmarks import emu as emu_bench
from ..benchmarks import sim as sim_bench
from ..errors import InputError

SECTION = "emu soak"
COMMAND = "make soak"
GROWTH_LIMIT_B = 1024  # "flat": no checkpoint lower than this below the baseline
# sim.DRIVER up to here is main.py's boot and the session's MODEL, LOAD, START.
SETUP_END = "def tick():"

# The ticks, after the setup (run in the same raw-REPL exec). Prints one JSON line per
# checkpoint; a MemoryError (or any error) ends the loop with an "error" line.
SOAK = """
def _point(k, late, busy_max):
    gc.collect()
    print(json.dumps({"k": k, "t_s": k * %(tick)d // 1000, "free": gc.mem_free(),
                      "state": ctl.state, "cap": ctl.ring.cap, "soc_ppm": ctl.soc_ppm,
                      "late": late, "busy_max_us": busy_max}))

_late = 0
_busy_max = 0
_point(0, 0, 0)
try:
    _next = utime.ticks_add(utime.ticks_ms(), %(tick)d)
    for _k in range(1, %(ticks)d + 1):
        _wait = utime.ticks_diff(_next, utime.ticks_ms())
        if _wait > 0:
            time.sleep_ms(_wait)
        else:
            _late += 1
        _next = utime.ticks_add(_next, %(tick)d)
        _t0 = utime.ticks_us()
        ctl.tick(%(tick)d)
        lk.output(1000)
        if ctl.ring.count() > 100:
            ctl.ring.ack(ctl.ring.head - 1)
        _busy = utime.ticks_diff(utime.ticks_us(), _t0)
        if _busy > _busy_max:
            _busy_max = _busy
        if _k %% %(every)d == 0:
            _point(_k, _late, _busy_max)
            _busy_max = 0
except Exception as _e:
    print(json.dumps({"error": repr(_e)[:120], "k": _k}))
print("SOAK-END")
"""


def driver_code(model_file, table, hours, tick_ms, every_s):
    """The raw-REPL program: the bench's session setup, then the soak loop."""
    setup = emu_bench.driver_code(model_file, table)
    cut = setup.find(SETUP_END)
    if cut < 0:
        raise RuntimeError(f"benchmarks.sim.DRIVER changed: no {SETUP_END!r} to cut at")
    ticks = int(round(hours * 3600_000 / tick_ms))
    every = max(1, int(round(every_s * 1000 / tick_ms)))
    return setup[:cut] + SOAK % {"tick": tick_ms, "ticks": ticks, "every": every}


def soak(hours, tick_ms, every_s, progress=None, wall_limit_s=None):
    """Run the soak; a dict of its checkpoints and verdict. ``progress(point)`` is called
    with each checkpoint as it arrives. ``wall_limit_s``: stop reading after this much
    wall time and judge the checkpoints so far (the verdict says it stopped early)."""
    from . import install
    from .board import EmuBoard
    from ..boards import load_board

    _, model = sim_bench._lto()
    cfg = load_board(emu_bench.BOARD)
    table = sim_bench._table(model)
    table["tick_ms"] = tick_ms
    with tempfile.TemporaryDirectory() as tmp:
        board = EmuBoard(cfg, model, image=emu_bench.rp2_dir(), workdir=Path(tmp), seed=1, soc0=0.95)
        try:
            install.install(board, cfg, None, reset=False)
            install.put_file(board, "simcell.py", emu_bench.SIMCELL_SHIM)
            install.put_file(board, "model.line", sim_bench._frame().encode("MODEL " + json.dumps(model)))
            code = driver_code("model.line", table, hours, tick_ms, every_s)
            board.write(code.encode() + b"\x04")
            head = board.read_until(b"OK", 60)
            if not head.endswith(b"OK"):
                raise RuntimeError(f"raw REPL refused the soak: {head[-200:]!r}")
            t0_us, wall0 = board.t_us, time.perf_counter()
            points, error, stopped = [], None, False
            while True:
                left = 3600.0 if wall_limit_s is None else wall_limit_s - (time.perf_counter() - wall0)
                try:
                    line = board.read_until(b"\n", max(0.1, min(3600.0, left))).decode(errors="replace").strip()
                except TimeoutError:
                    if wall_limit_s is None or time.perf_counter() - wall0 < wall_limit_s - 0.05:
                        raise  # no checkpoint for an hour, or silence before the limit
                    stopped = True
                    break
                if line.startswith("SOAK-END") or "\x04" in line:
                    break
                if not line.startswith("{"):
                    continue
                p = json.loads(line)
                if "error" in p:
                    error = p
                    continue
                points.append(p)
                if progress:
                    progress(p)
            wall_s, emu_s = time.perf_counter() - wall0, (board.t_us - t0_us) / 1e6
            err = b"" if stopped else board.read_until(b"\x04>", 60)[:-2].replace(b"\x04", b"").strip()
            if err and error is None:
                error = {"error": err.decode(errors="replace")[-200:], "k": None}
        finally:
            board.close()
    return verdict(points, error, hours, tick_ms, wall_s, emu_s, stopped)


def verdict(points, error, hours, tick_ms, wall_s, emu_s, stopped=False):
    """The soak's figures from its checkpoints (free heap after a collection)."""
    if len(points) < 2:
        raise RuntimeError(f"soak: fewer than two checkpoints ({error})")
    # Every checkpoint collects first: it reads the live heap, not garbage. The baseline is
    # the second checkpoint: the first, right after START, is before the link's buffers
    # and the step engine's state of a running tick exist.
    frees = [p["free"] for p in points]
    base = frees[1]
    return {"hours": hours, "tick_ms": tick_ms, "ticks_done": points[-1]["k"],
            "points": points, "error": error, "free_first": frees[0], "free_last": frees[-1],
            "free_min": min(frees), "free_max": max(frees), "wall_s": wall_s, "emu_s": emu_s,
            "late": points[-1]["late"], "busy_max_us": max(p["busy_max_us"] for p in points),
            "free_base": base, "flat": base - min(frees[1:]) <= GROWTH_LIMIT_B,
            "stopped": stopped,
            "ok": error is None and points[-1]["k"] * tick_ms >= hours * 3600_000 - tick_ms}


def render(r, command, stamp):
    """The BENCHMARKS.md section for soak result ``r``."""
    planned = int(round(r["hours"] * 3600_000 / r["tick_ms"]))
    if r["stopped"] and r["error"] is None:
        ok = f"STOPPED EARLY at {r['ticks_done'] * r['tick_ms'] / 3600_000:g} h"
        why = "the wall-clock limit ended it: no MemoryError, no exception up to the last checkpoint"
    else:
        ok = "yes" if r["ok"] else "NO"
        why = f"error: {r['error']['error']}" if r["error"] else "no MemoryError, no exception"
    rows = [
        ("soak ended without error", ok, "",
         f"{r['ticks_done']} ticks checked of {planned} planned ({r['hours']:g} h); {why}"),
        ("emulated time run", round(r["emu_s"] / 3600, 2), "h",
         f"tick {r['tick_ms']} ms with the LTO estimator, 1C CC cycles; {emu_bench.CAVEAT}"),
        ("heap free right after START", round(r["free_first"] / 1024, 1), "KB",
         "gc.mem_free after gc.collect: model, filter and full ring in place"),
        ("heap free, baseline", round(r["free_base"] / 1024, 1), "KB",
         f"same, at the first checkpoint of the run ({r['points'][1]['t_s'] / 3600:g} h)"),
        ("heap free, last checkpoint", round(r["free_last"] / 1024, 1), "KB", "same, at the end"),
        ("heap free, min / max over the run", f"{r['free_min'] / 1024:.1f} / {r['free_max'] / 1024:.1f}",
         "KB", f"{len(r['points'])} checkpoints; flat: {'yes' if r['flat'] else 'NO'} "
               f"(none more than {GROWTH_LIMIT_B} B below the baseline)"),
        ("ticks started late", r["late"], "", "a tick whose deadline had passed (no catch-up)"),
        ("longest tick (busy)", round(r["busy_max_us"] / 1000, 2), "ms",
         "Controller.tick + link output + ack, a collection included when one came"),
        ("wall time", round(r["wall_s"] / 60, 1), "min",
         f"{r['emu_s'] / r['wall_s']:.1f} emulated s per wall s"),
    ]
    lines = [f"## {SECTION}", "",
             f"Produced by `{command}` on {stamp}; kept by `make bench`.", "",
             "| metric | value | unit | note |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


def write_section(path, text):
    """Replace (or append) the soak's section in the markdown file at ``path``."""
    path = Path(path)
    old = path.read_text() if path.is_file() else "# Benchmarks\n"
    pat = re.compile(rf"^## {re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pat.sub(lambda _m: text + "\n", old) if pat.search(old) else old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def _positive(name, value):
    if not value > 0:
        raise InputError(f"{name}: must be > 0, got {value}")
    return value


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0, help="emulated hours (default 24)")
    ap.add_argument("--tick-ms", type=int, default=1000)
    ap.add_argument("--every-s", type=float, default=600.0, help="emulated s between heap checkpoints")
    ap.add_argument("--out", default=None, help="markdown file to write the section into")
    ap.add_argument("--wall-min", type=float, default=None,
                    help="stop after this many wall minutes and judge the checkpoints so far")
    args = ap.parse_args(argv)
    try:
        _positive("hours", args.hours)
        _positive("tick_ms", args.tick_ms)
        _positive("every_s", args.every_s)
        from . import runtime
        why = runtime.missing(emu_bench.rp2_dir())
        if why:
            raise InputError(why)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()

    def progress(p):
        print(f"soak: {p['t_s'] / 3600:6.2f} h emulated, {time.perf_counter() - t0:7.0f} s wall, "
              f"free {p['free']} B, state {p['state']}", file=sys.stderr, flush=True)

    r = soak(args.hours, args.tick_ms, args.every_s, progress,
             None if args.wall_min is None else args.wall_min * 60)
    cmd = COMMAND if (args.hours, args.tick_ms) == (24.0, 1000) else \
        f"{COMMAND} SOAK_HOURS={args.hours:g} SOAK_TICK_MS={args.tick_ms}"
    if args.wall_min is not None:
        cmd += f" SOAK_WALL_MIN={args.wall_min:g}"
    text = render(r, cmd, datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    print(text)
    if args.out:
        write_section(args.out, text)
    return 0 if r["ok"] and r["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
