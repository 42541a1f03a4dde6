"""Hardware faults on the simulated board (HIL, MicroPython unix port with the board heap):
each injected fault (CELLBENCH_SIM_FAULTS via start_board(faults=...)) is detected within
its documented bound of ticks (firmware/safety.py), the current goes off in the plant,
the fault bit is in the record and a FAULT event ends the run.
"""

import json

import numpy as np
import pytest

from cellbench import fw, sim
from cellbench.paths import FIRMWARE

frame = fw.module("frame")
safety = fw.module("safety")

from test_hil import MODEL, Link  # noqa: E402

pytestmark = pytest.mark.hil

TICK_MS = 1000
I_nA = 150_000
FAULT_S = 60  # virtual seconds since boot (the run starts when the host's START arrives)
ADC_READS = ("open", "short", "source")  # faults after which the ADC still reads the current


def run_with_fault(tmp_path, fault, i_nA, name=None):
    """Run a 1 h CC step with ``fault`` injected at FAULT_S; return (end, link, truth)."""
    name = name or fault
    cell = tmp_path / "cell.json"
    cell.write_text(json.dumps(MODEL))
    cfg = json.loads(sim.board_path("sim").read_text())
    cfg["sim"]["truth_dt_s"] = 1.0
    board_file = tmp_path / f"{name}-board.json"
    board_file.write_text(json.dumps(cfg))
    board = sim.start_board(cell, board=board_file, calibration="ideal", workdir=tmp_path / name,
                            seed=3, soc0=0.5, faults=f"{fault}@{FAULT_S}")
    link = Link(board)
    table = {"v": 1, "tick_ms": TICK_MS, "record": {"dt_ms": 1000},
             "steps": [["CC", i_nA, 3_600_000, 0]]}
    try:
        assert link.cmd("LOAD " + json.dumps(table)).startswith("OK")
        assert link.cmd("START").startswith("OK")
        end = link.run_to_end()
        status = link.idle_status(reads_zero=fault in ADC_READS)  # the board samples on in idle
    finally:
        board.close()
    return end, link, status, sim.read_truth(board.truth_path)


CASES = [  # fault, current, bit expected, bound in ticks after the fault
    ("open", -I_nA, safety.OPEN_CIRCUIT, safety.OPEN_TICKS),
    ("open", I_nA, safety.OPEN_CIRCUIT, 1),  # 5 V compliance: over the board limit at once
    ("short", -I_nA, safety.SHORT, safety.SHORT_TICKS),
    ("stuck", I_nA, safety.ADC_STUCK, safety.STUCK_TICKS),
    ("saturate", I_nA, safety.ADC_RAIL, 1),
    ("source", I_nA, safety.SOURCE, safety.SOURCE_TICKS),
]


@pytest.mark.parametrize("fault,i_nA,bit,bound", CASES, ids=[f"{c[0]}{'+' if c[1] > 0 else '-'}" for c in CASES])
def test_fault_is_detected_within_its_bound_and_switches_off(tmp_path, fault, i_nA, bit, bound):
    end, link, status, truth = run_with_fault(tmp_path, fault, i_nA,
                                              name=fault + ("p" if i_nA > 0 else "n"))
    assert end == "FAULT"
    clean = [r for r in link.records if not r["fault"]]
    faulted = [r for r in link.records if r["fault"]]
    assert faulted, link.records[-3:]
    first = faulted[0]
    assert first["fault"] & bit, (first, safety.NAMES)
    # the run's t_ms = 0 is when the plant's current came on (virtual s since boot)
    t_start = truth["t_s"][truth["i_A"] != 0][0]
    fault_ms = (FAULT_S - t_start) * 1000
    # nothing was wrong before the fault (no false alarm), and within the bound: the
    # N-th sample showing the fault trips (the simulated board's ticks land on whole ms,
    # so a tick at the fault's instant is the first to show it)
    assert clean
    assert fault_ms <= first["t_ms"] <= fault_ms + bound * TICK_MS
    fault_events = [e for e in link.events if e.split()[2] == "FAULT"]
    assert len(fault_events) == 1 and json.loads(fault_events[0].split(" ", 3)[3])["fault"] & bit
    # the plant: the source is off (no current) from the fault record's tick on
    # (virtual time since boot runs a few ms ahead of the run's t_ms)
    on = truth["t_s"][truth["i_A"] != 0]
    assert truth["i_A"][-1] == 0 and on.max() <= t_start + first["t_ms"] / 1000 + 0.01
    assert status["state"] == "FAULT"
    if fault in ADC_READS:  # the ADC still reads: it sees no current
        assert abs(status["i_nA"]) < 2_000, status


ALLOC_MPY = """
import gc, json, sys
sys.path.insert(0, %r)
import controller, link, frame, safety

class B:
    # The board API with what safety.py's hardware checks read (board.py has them all).
    id = "mpy"; tick_ms = 1000; oversample = 1; max_uV = 4800000; min_uV = 0
    max_nA = 20000000; range_max_nA = 20000000; calibration_id = ""
    compliance_lo_uV = 0; compliance_hi_uV = 5000000; raw_hi = 1040000; raw_lo = 128
    range_fs_nA = [200000, 2000000, 20000000]
    def __init__(self):
        self.v_uV = 1500000; self.i_nA = 0; self.setpoint_nA = 0; self.range = 1; self.q = 0
        self.raw_v = 0; self.raw_i = 0
    def off(self): self.setpoint_nA = 0
    def set_current(self, i): self.setpoint_nA = i; return i
    def sample(self):
        self.i_nA = self.setpoint_nA
        self.q += self.setpoint_nA
        self.v_uV = 1500000 + self.q // 1000 + self.setpoint_nA // 10
        self.raw_v = self.v_uV // 100
        self.raw_i = 500000 + self.i_nA // 10
    def led(self, on): pass
    def feed(self): pass

b = B()
ctl = controller.Controller(b, 200)
lk = link.Link(ctl)
t = {"v": 1, "tick_ms": 1000, "record": {"dt_ms": 600000},
     "steps": [["CC", 1234567, 0, 4000000]]}
lk.feed(frame.encode("LOAD " + json.dumps(t)))
lk.feed(frame.encode("START"))
lk.output(1000)
for k in range(5):
    ctl.tick(1000)
lk.output(1000)
gc.collect()
gc.disable()
before = gc.mem_alloc()
k = 0
while k < 50:
    ctl.tick(1000)  # sample, safety with the hardware checks, engine, record
    k += 1
after = gc.mem_alloc()
gc.enable()
print("alloc", after - before, ctl.state, ctl.fault)
"""


def test_hardware_checks_keep_the_tick_allocation_free(tmp_path):
    """Under MicroPython with the board's heap: a tick with every hardware check active
    holds no new objects (small ints only), and a healthy run raises none of them."""
    import subprocess

    exe = sim.micropython_binary()
    p = subprocess.run([exe, "-X", "heapsize=180K", "-c", ALLOC_MPY % str(FIRMWARE)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr + p.stdout
    out = [x.split() for x in p.stdout.splitlines() if x.startswith("alloc")][0]
    assert out[1:] == ["0", "RUNNING", "0"], out


def test_ring_full_with_no_host_pauses_with_current_off_and_resumes_on_ack(tmp_path):
    """Out of record memory while the host is away (HIL): nothing unacknowledged is
    dropped; the run pauses at a safe point with the current off (FULL) and goes on
    once the host acknowledges."""
    cell = tmp_path / "cell.json"
    cell.write_text(json.dumps(MODEL))
    board = sim.start_board(cell, calibration="ideal", workdir=tmp_path / "full", seed=4, soc0=0.5)
    link = Link(board)
    table = {"v": 1, "tick_ms": 100, "steps": [["CC", I_nA, 3_600_000, 0]]}  # a record a tick
    try:
        assert link.cmd("LOAD " + json.dumps(table)).startswith("OK")
        start = json.loads(link.cmd("START")[len("OK START "):])
        link.read_until(lambda: link.events and link.events[-1].split()[2] == "FULL",
                        "the FULL event")  # read, never ACK: as if no host were there
        full_seq = int(link.events[-1].split()[1])
        status = link.idle_status()  # let board time pass while FULL
        assert status["state"] == "FULL" and status["fault"] == 0
        # FULL came when RESERVE slots were left; its own event took one of them
        assert status["free"] == link_module_reserve() - 1 and status["seq_next"] == full_seq + 1
        seqs = [r["seq"] for r in link.records] + [int(e.split()[1]) for e in link.events]
        assert sorted(seqs) == list(range(start["seq"], full_seq + 1))  # nothing dropped
        link.cmd("ACK %d" % full_seq)
        link.read_until(lambda: link.events[-1].split()[2] == "RESUME", "the RESUME event after the ACK")
        status = link.status()
        assert status["state"] == "RUNNING" and status["free"] > link_module_reserve()
        assert link.cmd("STOP").startswith("OK STOP")
    finally:
        board.close()
    truth = sim.read_truth(board.truth_path)
    on = truth["i_A"] != 0
    gaps = np.flatnonzero(np.diff(on.astype(int)) == -1)  # current went off: FULL, then STOP
    assert len(gaps) == 2 and on.any()


def link_module_reserve():
    return fw.module("controller").RESERVE


def test_a_tick_longer_than_the_watchdog_runs_to_its_end(tmp_path):
    """A step table whose tick (12 s) outlasts the board's watchdog (boards/sim.json, 5 s):
    the loop feeds the dog while it waits, so the run ends normally instead of the board
    resetting in its first wait (machine.WDT exits the unix port on a reset)."""
    wdt_ms = json.loads(sim.board_path("sim").read_text())["wdt_ms"]
    tick_ms = 12_000
    assert tick_ms > wdt_ms
    cell = tmp_path / "cell.json"
    cell.write_text(json.dumps(MODEL))
    board = sim.start_board(cell, calibration="ideal", workdir=tmp_path / "slow", seed=5, soc0=0.5)
    link = Link(board)
    table = {"v": 1, "tick_ms": tick_ms, "record": {"dt_ms": tick_ms},
             "steps": [["CC", I_nA, 10 * tick_ms, 0]]}
    try:
        assert link.cmd("LOAD " + json.dumps(table)).startswith("OK")
        assert link.cmd("START").startswith("OK")
        assert link.run_to_end() == "END"
        assert link.status()["state"] == "DONE"
    finally:
        board.close()
    assert len(link.records) >= 10  # a record a tick: every tick ran
