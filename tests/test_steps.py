"""The step engine, safety and records, driven under CPython by a fake board.

The fake board's cell is a known equivalent circuit (linear OCV in charge + R0 + one
RC pair), so every expectation here comes from that truth or from a separate
reference implementation of a rule, never from captured engine output.
"""

import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from cellbench import fw

controller = fw.module("controller")
frame = fw.module("frame")
link = fw.module("link")
record = fw.module("record")
safety = fw.module("safety")
steps = fw.module("steps")
steptable = fw.module("steptable")

NAH = 3_600_000  # nA*ms per nAh


class Firmware:
    """A controller.Controller and its link.Link wired as main.py wires them: commands
    and output go through the link, ticks and the run's state to the controller."""

    def __init__(self, board, capacity=5000, line=None, **kw):
        object.__setattr__(self, "ctl", controller.Controller(board, capacity, **kw))
        object.__setattr__(self, "link", link.Link(self.ctl, line=line))

    def feed(self, data):
        self.link.feed(data)

    def handle(self, line):
        self.link.handle(line)

    def output(self, burst=link.SEND_BURST):
        return self.link.output(burst)

    @property
    def replies(self):
        return self.link.replies

    def __getattr__(self, name):
        return getattr(self.ctl, name)

    def __setattr__(self, name, value):
        setattr(self.link if name == "replies" else self.ctl, name, value)


class FakeCell:
    """v = v0 + slope*q + R0*i + v_rc (uV, nA, nAh; i > 0 charges)."""

    def __init__(self, v0_uV=1_000_000, slope_uV_nAh=40.0, r0_ohm=100.0, r1_ohm=0.0,
                 tau_s=10.0, q_nAh=0.0):
        self.v0, self.slope, self.r0, self.r1, self.tau = v0_uV, slope_uV_nAh, r0_ohm, r1_ohm, tau_s
        self.q_nAh = q_nAh
        self.v_rc = 0.0

    def advance(self, i_nA, dt_ms):
        self.q_nAh += i_nA * dt_ms / NAH
        a = math.exp(-dt_ms / 1000.0 / self.tau)
        self.v_rc = a * self.v_rc + (1 - a) * self.r1 * i_nA / 1000.0

    def voltage_uV(self, i_nA):
        return self.v0 + self.slope * self.q_nAh + self.r0 * i_nA / 1000.0 + self.v_rc


class FakeBoard:
    """The board API of firmware/board.py over a FakeCell; records what it was told.

    Its ADC is exact: the raw sums safety.py checks are the sample itself (uV, nA), with
    rails beyond anything the cell reaches, and one current range.
    """

    id = "fake"
    tick_ms = 1000
    oversample = 1
    max_uV = 4_800_000
    min_uV = 0
    max_nA = 20_000_000
    range_max_nA = 20_000_000
    range_fs_nA = [20_000_000]
    range = 0
    compliance_lo_uV = -5_000_000
    compliance_hi_uV = 10_000_000
    raw_hi = 1 << 29
    raw_lo = -(1 << 29)
    calibration_id = ""

    def __init__(self, cell=None):
        self.cell = cell or FakeCell()
        self.set_nA = 0
        self.relay = False
        self.i_nA = 0
        self.v_uV = int(round(self.cell.voltage_uV(0)))
        self.raw_v = self.v_uV
        self.raw_i = 0
        self.samples = []   # (v_uV, i_nA) of every sample, in order
        self.feeds = 0
        self.led_on = False

    def off(self):
        self.set_nA = 0
        self.relay = False

    def set_current(self, i_nA):
        i_nA = max(-self.range_max_nA, min(self.range_max_nA, int(i_nA)))
        self.set_nA = i_nA
        self.relay = True
        return i_nA

    @property
    def setpoint_nA(self):
        return self.set_nA

    def applied_nA(self):
        return self.set_nA if self.relay else 0

    def elapse(self, dt_ms):
        self.cell.advance(self.applied_nA(), dt_ms)

    def sample(self):
        self.i_nA = self.applied_nA()
        self.v_uV = int(round(self.cell.voltage_uV(self.i_nA)))
        self.raw_v = self.v_uV
        self.raw_i = self.i_nA
        self.samples.append((self.v_uV, self.i_nA))

    def led(self, on):
        self.led_on = bool(on)

    def feed(self):
        self.feeds += 1


def table(step_list, safety_sec=None, rec=None, tick_ms=1000):
    t = {"v": 1, "tick_ms": tick_ms, "steps": step_list}
    if safety_sec is not None:
        t["safety"] = safety_sec
    if rec is not None:
        t["record"] = rec
    return t


def make(step_list, cell=None, capacity=5000, **kw):
    """A started Controller on a fake board (records every tick unless rec is given)."""
    b = FakeBoard(cell)
    ctl = Firmware(b, capacity)
    b.sample()
    t = table(step_list, **kw)
    assert steptable.validate(t, b) is None
    for body in ("LOAD " + json.dumps(t), "START"):
        ctl.handle(frame.encode(body))
    assert [x.split(b" ")[0] for x in ctl.replies] == [b"OK", b"OK"], ctl.replies
    ctl.replies = []
    return ctl, b


def run(ctl, b, dt_ms=1000, max_ticks=100_000, until=None):
    """Tick until the run leaves RUNNING (or `until(ctl)`); return the records."""
    for _ in range(max_ticks):
        b.elapse(dt_ms)
        ctl.tick(dt_ms)
        if ctl.state != controller.RUNNING or (until and until(ctl)):
            break
    return records(ctl)


def records(ctl):
    r = ctl.ring
    out = []
    for seq in range(r.tail, r.head):
        if r.kind_of(seq) == record.RECORD:
            out.append(dict(zip(record.FIELDS, r.values(seq))))
    return out


def step_runs(recs):
    """[(step_count, step_no, step_type, cycle, [records])] in order."""
    runs = []
    for r in recs:
        if not runs or runs[-1][0] != r["step_count"]:
            runs.append((r["step_count"], r["step_no"], r["step_type"], r["cycle"], []))
        runs[-1][4].append(r)
    return runs


# ---------------------------------------------------------------- CC transitions

def test_cc_charge_and_discharge_end_at_their_voltages():
    cell = FakeCell(v0_uV=1_500_000, slope_uV_nAh=50.0, r0_ohm=100.0)
    ctl, b = make([["CC", 400_000, 0, 2_400_000], ["CC", -400_000, 0, 1_400_000]], cell)
    recs = run(ctl, b)
    assert ctl.state == controller.DONE
    runs = step_runs(recs)
    assert [(r[1], r[2]) for r in runs] == [(0, steps.CC_CHG), (1, steps.CC_DCH)]
    chg, dch = runs[0][4], runs[1][4]
    # The step ends on the first sample at/over the limit, not before.
    assert all(r["v_uV"] < 2_400_000 for r in chg[:-1]) and chg[-1]["v_uV"] >= 2_400_000
    assert all(r["v_uV"] > 1_400_000 for r in dch[:-1]) and dch[-1]["v_uV"] <= 1_400_000
    # Against the cell: v = v0 + slope*q + R*i, so the charge moved to reach 2.4 V is known.
    q_expected = (2_400_000 - 1_500_000 - 100 * 400_000 / 1000) / 50.0
    per_tick = 400_000 * 1000 / NAH
    assert chg[-1]["q_step_nAh"] == pytest.approx(q_expected, abs=per_tick + 1)
    assert chg[-1]["step_index"] == len(chg) - 1
    assert b.applied_nA() == 0


def test_cc_until_ms_counts_real_elapsed_time():
    ctl, b = make([["CC", 100_000, 4500, 0], ["OCV", 2000]])
    recs = run(ctl, b, dt_ms=700)
    first = step_runs(recs)[0][4]
    # 700 ms ticks: 6 ticks = 4200 ms < 4500, the 7th (4900 ms) ends the step.
    assert len(first) == 7 and first[-1]["t_ms"] == 4900


def test_step_count_and_index():
    ctl, b = make([["OCV", 3000], ["CC", -50_000, 2000, 0], ["OCV", 1000]])
    runs = step_runs(run(ctl, b))
    assert [r[0] for r in runs] == [1, 2, 3]
    assert [[x["step_index"] for x in r[4]] for r in runs] == [[0, 1, 2], [0, 1], [0]]
    assert [r[2] for r in runs] == [steps.REST, steps.CC_DCH, steps.REST]


# ---------------------------------------------------------------- LOOP and cycles

def reference_sequence(step_list):
    """The step numbers a table runs, by direct recursion (independent of the engine)."""
    seq = []
    counters = {}
    k = 0
    while k < len(step_list):
        s = step_list[k]
        if s[0] != "LOOP":
            seq.append(k)
            k += 1
            continue
        left = counters.get(k, s[2])
        if left > 0:
            counters[k] = left - 1
            k = s[1]
        else:
            counters[k] = s[2]
            k += 1
    return seq


def reference_cycles(signs):
    """design.md's rule, written out: cycle per step from the step current signs."""
    cycle, first, last, out = 1, 0, 0, []
    for s in signs:
        if s:
            if first == 0:
                first = s
            elif s == first and last == -s:
                cycle += 1
            last = s
        out.append(cycle)
    return out


LOOP_TABLES = [
    [["OCV", 1000], ["OCV", 1000], ["LOOP", 1, 2], ["OCV", 1000], ["LOOP", 0, 1]],
    [["OCV", 1000], ["LOOP", 0, 3]],
    [["OCV", 1000], ["OCV", 1000], ["LOOP", 0, 0], ["OCV", 1000]],
    [["OCV", 1000], ["OCV", 1000], ["LOOP", 1, 1], ["LOOP", 0, 2]],
]


@pytest.mark.parametrize("tbl", LOOP_TABLES)
def test_loops_follow_reference_order(tbl):
    ctl, b = make(tbl)
    runs = step_runs(run(ctl, b))
    assert [r[1] for r in runs] == reference_sequence(tbl)
    assert [r[0] for r in runs] == list(range(1, len(runs) + 1))


@pytest.mark.parametrize("tbl", [
    # charge-first full cell: CC+ CV+ rest CC- rest, 3 times
    [["CC", 300_000, 3000, 0], ["CV", 1_800_000, 2000, 0], ["OCV", 1000],
     ["CC", -300_000, 3000, 0], ["OCV", 1000], ["LOOP", 0, 2]],
    # discharge-first half cell, with a rest first
    [["OCV", 1000], ["CC", -200_000, 2000, 0], ["CC", 200_000, 2000, 0], ["LOOP", 1, 3]],
    # two charges in a row still make one cycle
    [["CC", -100_000, 1000, 0], ["CC", 100_000, 1000, 0], ["CC", 50_000, 1000, 0],
     ["LOOP", 0, 1]],
])
def test_cycle_counting_rule(tbl):
    cell = FakeCell(v0_uV=1_500_000, slope_uV_nAh=1.0)
    ctl, b = make(tbl, cell)
    runs = step_runs(run(ctl, b))
    sign = {steps.REST: 0, steps.CC_CHG: 1, steps.CV_CHG: 1, steps.CC_DCH: -1, steps.CV_DCH: -1}
    assert [r[3] for r in runs] == reference_cycles([sign[r[2]] for r in runs])
    assert runs[-1][3] > 1


# ---------------------------------------------------------------- charge counting

@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-20_000_000, 20_000_000), st.integers(0, 150_000),
                          st.integers(0, 5_000_000)), min_size=1, max_size=60))
def test_integer_charge_is_exact_sum(ticks):
    b = FakeBoard()
    e = steps.Engine(b)
    chg = dch = 0
    e_chg = e_dch = 0
    tv = 0
    vmax = 0
    last_v = None
    for i, dt, v in ticks:
        b.i_nA, b.v_uV = i, v
        e.count(dt)
        if i > 0:
            chg += i * dt
            e_chg += v * i * dt
        else:
            dch += -i * dt
            e_dch += v * -i * dt
        tv += abs(v - last_v) if last_v is not None else 0
        vmax = max(vmax, v)
        last_v = v
    a = e.acc
    # No charge lost to rounding: whole nAh plus remainder is exactly sum(i*dt).
    assert a[steps.Q_CHG] * NAH + a[steps.Q_CHG + 1] == chg
    assert a[steps.Q_DCH] * NAH + a[steps.Q_DCH + 1] == dch
    assert 0 <= a[steps.Q_CHG + 1] < NAH and 0 <= a[steps.Q_DCH + 1] < NAH
    step_total = a[steps.Q_STEP] * NAH + a[steps.Q_STEP + 1]
    assert step_total == chg + dch
    # Energy: exact up to 1 nAh priced at (vmax + voltage travel), plus uWh truncation.
    tol_uWh = 1 + (vmax + tv) / 1e9
    assert abs(a[steps.E_CHG] - e_chg / (NAH * 1e9)) <= tol_uWh
    assert abs(a[steps.E_DCH] - e_dch / (NAH * 1e9)) <= tol_uWh


def test_records_carry_exact_charge_of_the_cell():
    cell = FakeCell(v0_uV=1_500_000, slope_uV_nAh=5.0)
    ctl, b = make([["CC", 333_333, 7000, 0], ["CC", -123_457, 5000, 0]], cell)
    recs = run(ctl, b, dt_ms=997)
    last = recs[-1]
    chg = sum(i * 997 for v, i in b.samples[1:] if i > 0)
    dch = sum(-i * 997 for v, i in b.samples[1:] if i < 0)
    assert last["q_chg_nAh"] == chg // NAH and last["q_dch_nAh"] == dch // NAH


# ---------------------------------------------------------------- CV

@pytest.mark.parametrize("r1_ohm", [0.0, 80.0])
def test_cv_converges_without_overshoot_and_ends_on_current(r1_ohm):
    cell = FakeCell(v0_uV=1_500_000, slope_uV_nAh=20.0, r0_ohm=60.0, r1_ohm=r1_ohm, tau_s=20.0)
    tbl = [["CC", 500_000, 0, 2_000_000], ["CV", 2_000_000, 3_600_000, 20_000]]
    ctl, b = make(tbl, cell, safety_sec={"max_uV": 2_050_000})
    recs = run(ctl, b)
    assert ctl.state == controller.DONE and ctl.fault == 0
    cv = [r for r in recs if r["step_no"] == 1]
    assert cv[0]["step_type"] == steps.CV_CHG
    # An integral loop at half gain lags an OCV ramp by 2 ticks of rise at most.
    rise_uV = 20.0 * 500_000 * 1000 / NAH
    assert max(r["v_uV"] for r in cv) <= 2_000_000 + 2 * rise_uV
    assert all(r["i_nA"] >= 0 for r in cv)
    # Ends on |i| <= until_nA at the target voltage, well before until_ms.
    assert cv[-1]["i_nA"] <= 20_000 and abs(cv[-1]["v_uV"] - 2_000_000) <= steps.CV_BAND_uV
    assert cv[-1]["t_ms"] - cv[0]["t_ms"] < 3_600_000
    # Once settled it holds the target: the cell's own OCV sets the current.
    settled = cv[len(cv) // 2:]
    assert all(abs(r["v_uV"] - 2_000_000) <= 3_000 for r in settled)


def test_cv_discharge_from_rest():
    cell = FakeCell(v0_uV=2_000_000, slope_uV_nAh=4.0, r0_ohm=100.0)
    ctl, b = make([["OCV", 2000], ["CV", 1_900_000, 0, 10_000]], cell)
    recs = run(ctl, b)
    cv = [r for r in recs if r["step_no"] == 1]
    assert cv[0]["step_type"] == steps.CV_DCH
    assert all(r["i_nA"] <= 0 for r in cv)
    # Undershoot bounded by the integral loop's lag: 2 ticks of OCV fall at peak current.
    fall_uV = 4.0 * max(-r["i_nA"] for r in cv) * 1000 / NAH
    assert min(r["v_uV"] for r in cv) >= 1_900_000 - 2 * fall_uV - 1000
    assert ctl.state == controller.DONE and abs(cv[-1]["i_nA"]) <= 10_000


def test_cv_ends_on_time():
    ctl, b = make([["CV", 1_200_000, 5000, 0]], FakeCell(v0_uV=1_000_000))
    recs = run(ctl, b)
    assert recs[-1]["t_ms"] == 5000 and ctl.state == controller.DONE


# ---------------------------------------------------------------- safety

def test_over_voltage_trips_in_the_same_tick():
    cell = FakeCell(v0_uV=1_500_000, slope_uV_nAh=50.0)
    ctl, b = make([["CC", 400_000, 1_000_000, 0]], cell, safety_sec={"max_uV": 2_000_000})
    recs = run(ctl, b)
    assert ctl.state == controller.FAULT and ctl.fault == safety.OVER_VOLTAGE
    assert recs[-1]["fault"] == safety.OVER_VOLTAGE and recs[-1]["v_uV"] > 2_000_000
    assert all(r["v_uV"] <= 2_000_000 for r in recs[:-1])
    assert b.applied_nA() == 0 and not b.relay
    # Nothing more happens after the trip.
    n = len(b.samples)
    run(ctl, b, max_ticks=5)
    assert b.applied_nA() == 0 and len(records(ctl)) == len(recs) and len(b.samples) == n + 1


def test_protocol_limit_waits_delay_but_board_limit_does_not():
    cell = FakeCell(v0_uV=1_500_000, slope_uV_nAh=50.0)
    ctl, b = make([["CC", 400_000, 1_000_000, 0]], cell,
                  safety_sec={"max_uV": 2_000_000, "delay_ms": 3000})
    recs = run(ctl, b)
    over = [r for r in recs if r["v_uV"] > 2_000_000]
    assert ctl.fault == safety.OVER_VOLTAGE
    assert over[-1]["t_ms"] - over[0]["t_ms"] == 3000
    # Board limit: at once, whatever delay_ms says.
    b = FakeBoard(FakeCell(v0_uV=4_790_000, slope_uV_nAh=50.0))
    s = safety.Safety(b)
    s.configure({"delay_ms": 60_000})
    b.v_uV, b.i_nA = 4_800_001, 100
    b.set_current(100)
    assert s.check(0, 1000) == safety.BOARD_LIMIT and b.applied_nA() == 0


def test_over_charge_and_over_current():
    ctl, b = make([["CC", 1_000_000, 1_000_000, 0]], FakeCell(slope_uV_nAh=1.0),
                  safety_sec={"max_q_nAh": 1000})
    recs = run(ctl, b)
    assert ctl.fault == safety.OVER_CHARGE and recs[-1]["q_step_nAh"] > 1000
    assert recs[-2]["q_step_nAh"] <= 1000
    b = FakeBoard()
    s = safety.Safety(b)
    s.configure({"max_nA": 500_000, "min_nA": -500_000})
    b.i_nA = -500_001
    assert s.check(0, 1000) == safety.OVER_CURRENT


# ---------------------------------------------------------------- validate

def test_validate_names_the_field():
    b = FakeBoard()
    ok = table([["CC", 100_000, 0, 2_000_000], ["OCV", 1000], ["LOOP", 0, 3]])
    assert steptable.validate(ok, b) is None
    cases = [
        ({**ok, "v": 2}, "v"),
        ({**ok, "tick_ms": 10}, "tick_ms"),
        ({**ok, "tick_ms": 1000.0}, "tick_ms"),
        (table([["CC", 100_000, 0, 9_000_000]]), "steps[0].until_uV"),
        (table([["CC", 100_000, 0, 0]]), "steps[0].until_ms"),
        (table([["CC", 30_000_000, 1000, 0]]), "steps[0].i_nA"),
        (table([["CC", 100_000.5, 1000, 0]]), "steps[0].i_nA"),
        (table([["CC", True, 1000, 0]]), "steps[0].i_nA"),
        (table([["CC", 600_000, 1000, 0]], safety_sec={"max_nA": 500_000}), "steps[0].i_nA"),
        (table([["CV", 2_000_000, 0, 0]]), "steps[0].until_ms"),
        (table([["CV", 2_000_000, 1000, 0]], safety_sec={"max_uV": 1_900_000}), "steps[0].v_uV"),
        (table([["OCV", 0]]), "steps[0].until_ms"),
        (table([["OCV", 10], ["LOOP", 1, 2]]), "steps[1].to_step_no"),
        (table([["OCV", 10], ["LOOP", 0, 1], ["LOOP", 1, 1]]), "steps[2].to_step_no"),
        (table([["OCV", 10], ["LOOP", 0, -1]]), "steps[1].count"),
        (table([["XX", 10]]), "steps[0].type"),
        (table([["OCV", 10, 5]]), "steps[0]"),
        (table([]), "steps"),
        (table([["OCV", 10]], safety_sec={"max_uV": 5_000_000}), "safety.max_uV"),
        (table([["OCV", 10]], safety_sec={"min_uV": 2_000_000, "max_uV": 1_000_000}),
         "safety.max_uV"),
        (table([["OCV", 10]], rec={"dt_ms": -1}), "record.dt_ms"),
        ("nope", "table"),
    ]
    for t, field in cases:
        err = steptable.validate(t, b)
        assert err is not None and err[0] == field, (t, err)


# ---------------------------------------------------------------- records

def test_record_trigger_dt_dv_di():
    cell = FakeCell(v0_uV=1_000_000, slope_uV_nAh=10.0, r0_ohm=0.0)
    ctl, b = make([["CC", 360_000, 20_000, 0]], cell, rec={"dt_ms": 5000, "dv_uV": 3000})
    recs = run(ctl, b)
    # 100 nAh per 1 s tick = 1000 uV per tick: dv triggers every 3 ticks, before dt (5).
    ts = [r["t_ms"] for r in recs]
    assert ts[0] == 1000 and ts[-1] == 20_000
    gaps = [b - a for a, b in zip(ts, ts[1:-1])]
    assert set(gaps) == {3000}


def test_ring_full_pauses_and_ack_resumes():
    ctl, b = make([["OCV", 100_000]], capacity=20)
    run(ctl, b, max_ticks=40)
    assert ctl.state == controller.FULL and b.applied_nA() == 0
    assert ctl.ring.count() <= ctl.ring.cap
    held = ctl.ring.count()
    step_ms = ctl.engine.step_ms
    for _ in range(5):
        b.elapse(1000)
        ctl.tick(1000)
    assert ctl.ring.count() == held and ctl.engine.step_ms == step_ms  # paused, nothing lost
    ctl.handle(frame.encode("ACK %d" % (ctl.ring.head - 1)))
    assert ctl.state == controller.RUNNING


def _paused_until_full(ctl, b):
    ctl.handle(frame.encode("PAUSE"))
    for _ in range(60):  # a paused board's clock and records go on: the ring fills
        b.elapse(1000)
        ctl.tick(1000)
    assert ctl.state == controller.FULL and b.applied_nA() == 0


def test_a_ring_full_while_paused_stays_paused_after_ack():
    ctl, b = make([["OCV", 100_000]], capacity=20)
    _paused_until_full(ctl, b)
    ctl.handle(frame.encode("ACK %d" % (ctl.ring.head - 1)))
    assert ctl.state == controller.PAUSED and b.applied_nA() == 0


def test_resume_of_a_ring_full_while_paused_goes_on_at_the_ack():
    """The host that comes back after a Ctrl-C PAUSE finds FULL: its RESUME is taken, and
    the ACK that frees the ring continues the run (not back to PAUSED forever)."""
    ctl, b = make([["OCV", 100_000]], capacity=20)
    _paused_until_full(ctl, b)
    ctl.handle(frame.encode("RESUME"))
    assert ctl.state == controller.FULL  # still no room: nothing runs before the ACK
    ctl.handle(frame.encode("ACK %d" % (ctl.ring.head - 1)))
    assert ctl.state == controller.RUNNING


def test_safety_reads_the_declared_raw_sums():
    """The ADC checks read the board's declared raw_v/raw_i: sums frozen while current
    flows trip ADC_STUCK on the STUCK_TICKS-th identical sample; a board that lacks the
    interface is refused when the check is built, never silently skipped."""
    b = FakeBoard()
    b.set_current(100_000)
    check = safety.Safety(b)
    bits = n = 0
    while not bits and n < 100:
        b.sample()
        b.raw_v = b.raw_i = 7  # a converter that stopped converting
        n += 1
        bits = check.check(0, 1000)
    assert bits == safety.ADC_STUCK and n == safety.STUCK_TICKS

    class Bare:
        max_uV, min_uV, max_nA = 4_800_000, 0, 20_000_000

    with pytest.raises(AttributeError):
        safety.Safety(Bare())
