"""Hardware in the loop: the unmodified firmware on the simulated board (MicroPython unix
port, board heap from boards/sim.json), driven over raw link frames, checked against the
plant's own truth (what the simulated cell really did).

Scenario: discharge CC to a cut-off voltage, rest, charge CC to a cut-off, rest, loop
twice. Then a safety cut-off: a charge whose voltage limit lies beyond the protocol's
safety max_uV must be switched off within one tick with the fault flag set.
"""

import json

import numpy as np
import pytest

from cellbench import fw, sim
from polling import wait_for

frame = fw.module("frame")  # firmware/frame.py, the link's framing

pytestmark = pytest.mark.hil

FIELDS = ("seq t_ms v_uV i_nA step_count step_index cycle step_no step_type fault q_chg_nAh "
          "q_dch_nAh q_step_nAh e_chg_uWh e_dch_uWh soc_ppm soc_std_ppm cap_nAh cap_std_nAh "
          "r_mohm r_std_mohm").split()  # docs/link.md, typed in: the board must send exactly these
TICK_MS = 1000
I_nA = 150_000          # 0.15 mA: the 200 uA range
V_LOW_uV = 1_200_000
V_HIGH_uV = 2_300_000
CAP_AH = 1.0e-4

MODEL = {
    "schema_version": 1, "cell": {"name": "hil test cell", "chemistry": "LTO/Li-like"},
    "capacity_Ah": CAP_AH, "window_V": [1.0, 2.5],
    "ocv": {"soc": [i / 10 for i in range(11)],
            "voltage_V": [1.0, 1.45, 1.52, 1.54, 1.55, 1.56, 1.57, 1.58, 1.60, 1.70, 2.5]},
    "r0_ohm": 60.0, "rc": [{"r_ohm": 40.0, "tau_s": 20.0}],
    "hysteresis": {"m_V": 0.01, "m0_V": 0.0, "gamma": 40.0},
    "coulombic_efficiency": 0.998,
}


class Link:
    """Raw frames to and from a SimBoard; records and events collected as they come."""

    def __init__(self, board):
        self.board = board
        self.records = []
        self.events = []
        self.junk = []  # lines that were not frames

    def _line(self):
        raw = self.board.readline(timeout_s=120)
        while raw and frame.decode(raw) is None:  # MicroPython prints tracebacks to stdout
            self.junk.append(raw.decode(errors="replace"))
            raw = self.board.readline(timeout_s=120)
        assert raw, "board ended: " + "".join(self.junk[-8:]) + self.board.stderr_text()[-800:]
        body = frame.decode(raw)
        if body.startswith("R "):
            values = body.split()[1:]
            assert len(values) == len(FIELDS), body
            self.records.append(dict(zip(FIELDS, map(int, values))))
        elif body.startswith("E "):
            self.events.append(body)
        return body

    def read_until(self, done, what):
        """Read frames until ``done()`` holds (checked before each read: it may hold
        already); fails naming ``what`` and the last frame read (polling.wait_for)."""
        wait_for(lambda: None if done() else self._line(), what, until=lambda body: body is None,
                 poll_s=0)

    def cmd(self, text):
        self.board.write(frame.encode(text))
        while True:
            body = self._line()
            if body.startswith(("OK ", "ERR ")) and body.split()[1] == text.split()[0]:
                return body

    def status(self):
        return json.loads(self.cmd("STATUS")[len("OK STATUS "):])

    def idle_status(self, reads_zero=True):
        """STATUS once the board, sampling on in idle, reads ~0 A (virtual time runs while
        the host waits); fails naming the last STATUS if it never does. ``reads_zero=False``
        (an ADC that cannot show the current is off: stuck, railed): the next STATUS."""
        if not reads_zero:
            return self.status()
        return wait_for(self.status, "an idle STATUS reading ~0 A (|i_nA| < 2000)",
                        until=lambda s: abs(s["i_nA"]) < 2_000)

    def run_to_end(self, ack_every=100):
        """Read until the END or FAULT event, acknowledging records as a host does."""
        while True:
            body = self._line()
            if body.startswith("E ") and body.split()[2] in ("END", "FAULT"):
                return body.split()[2]
            if body.startswith("R ") and len(self.records) % ack_every == 0:
                self.board.write(frame.encode("ACK %d" % self.records[-1]["seq"]))


def _start(tmp_path, table, name):
    cell = tmp_path / "cell.json"
    cell.write_text(json.dumps(MODEL))
    cfg = json.loads(sim.board_path("sim").read_text())
    cfg["sim"]["truth_dt_s"] = 1.0  # a truth row every tick: voltages one tick back
    board_file = tmp_path / f"{name}-board.json"
    board_file.write_text(json.dumps(cfg))
    board = sim.start_board(cell, board=board_file, calibration="ideal", workdir=tmp_path / name,
                            seed=7, soc0=0.9)  # heap: boards/sim.json (or env CELLBENCH_SIM_HEAP_KB)
    link = Link(board)
    ok = link.cmd("LOAD " + json.dumps(table))
    assert ok.startswith("OK"), ok
    ok = link.cmd("START")
    assert ok.startswith("OK"), ok
    return board, link


@pytest.fixture(scope="module")
def cycled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hil")
    table = {"v": 1, "tick_ms": TICK_MS, "record": {"dt_ms": 10_000, "dv_uV": 5_000},
             "steps": [["CC", -I_nA, 0, V_LOW_uV], ["OCV", 300_000],
                       ["CC", I_nA, 0, V_HIGH_uV], ["OCV", 300_000], ["LOOP", 0, 1]]}
    board, link = _start(tmp, table, "cycled")
    try:
        end = link.run_to_end()
    finally:
        board.close()
    return end, link.records, sim.read_truth(board.truth_path)


def _steps(records):
    """Records grouped by step_count, in order."""
    out = {}
    for r in records:
        out.setdefault(r["step_count"], []).append(r)
    return [out[k] for k in sorted(out)]


def _segments(truth):
    """Spans of constant non-zero current in the truth: (i_A, t_on, t_off, v_V at t_off).

    The plant writes a row at every current change, the one just before it still under
    the old current, so v_V at t_off is the voltage when the firmware switched off.
    """
    i, t, v = truth["i_A"], truth["t_s"], truth["v_V"]
    out = []
    k = 0
    while k < len(i):
        if i[k] == 0:
            k += 1
            continue
        j = k
        while j + 1 < len(i) and i[j + 1] == i[k]:
            j += 1
        t_off = t[j + 1] if j + 1 < len(i) else t[j]
        out.append((i[k], t[k], t_off, v[j]))
        k = j + 1
    return out


def test_runs_to_the_end_with_the_expected_step_sequence(cycled):
    end, records, _ = cycled
    assert end == "END"
    steps = _steps(records)
    # step_no per step started: the table twice, the LOOP itself never runs as a step
    assert [s[0]["step_no"] for s in steps] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert [s[0]["step_type"] for s in steps] == [2, 0, 1, 0, 2, 0, 1, 0]
    # discharge first: a new cycle starts when a discharge follows a charge
    assert [s[0]["cycle"] for s in steps] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert all(r["fault"] == 0 for r in records)
    # no MODEL: no estimate of any kind in any record
    assert all(r[k] == -1 for r in records for k in FIELDS[-6:])


def test_cc_steps_end_at_their_cutoff_voltage(cycled):
    _, records, truth = cycled
    cc = [s for s in _steps(records) if s[0]["step_type"] in (1, 2)]
    segs = _segments(truth)
    assert len(segs) == len(cc) == 4
    for s, (i_A, t_on, t_off, v_off) in zip(cc, segs):
        last = s[-1]
        sign = 1 if last["step_type"] == 1 else -1
        cutoff = V_HIGH_uV if sign > 0 else V_LOW_uV
        assert np.sign(i_A) == sign
        # the board's last reading crossed the cut-off; every earlier one had not
        assert sign * (last["v_uV"] - cutoff) >= 0
        assert all(sign * (r["v_uV"] - cutoff) < 0 for r in s[:-1])
        assert (t_off - t_on) * 1000 == pytest.approx(last["t_ms"] - s[0]["t_ms"], abs=2 * TICK_MS)
        # the plant really was at the cut-off when the current went off, and one tick
        # earlier it was not beyond it (ADC resolution 1.6 mV at the cell, noise averaged)
        assert sign * (v_off * 1e6 - cutoff) >= -3_000
        v_tick_before = np.interp(t_off - TICK_MS / 1000 - 1e-3, truth["t_s"], truth["v_V"])
        assert sign * (v_tick_before * 1e6 - cutoff) <= 3_000


def test_charge_counters_match_the_plant_within_0p1_percent(cycled):
    _, records, truth = cycled
    last = records[-1]
    q_chg_Ah = truth["q_chg_Ah"][-1]
    q_dch_Ah = truth["q_dch_Ah"][-1]
    assert q_chg_Ah > 0.5 * CAP_AH and q_dch_Ah > 0.5 * CAP_AH  # the cell really cycled
    assert last["q_chg_nAh"] * 1e-9 == pytest.approx(q_chg_Ah, rel=1e-3)
    assert last["q_dch_nAh"] * 1e-9 == pytest.approx(q_dch_Ah, rel=1e-3)


def test_cc_current_is_the_plant_current(cycled):
    _, records, truth = cycled
    cc = [s for s in _steps(records) if s[0]["step_type"] in (1, 2)]
    for s, (i_A, t_on, t_off, v_off) in zip(cc, _segments(truth)):
        # what the source really delivered (setpoint plus its gain and offset error) is
        # what the board measures, to the ADC's resolution
        for r in s:
            assert r["i_nA"] * 1e-9 == pytest.approx(i_A, rel=3e-3)


def test_safety_cutoff_switches_off_within_one_tick(tmp_path):
    max_uV = 1_900_000  # above the start (1.74 V under current), long before 10 h
    table = {"v": 1, "tick_ms": TICK_MS, "record": {"dt_ms": 10_000},
             "safety": {"max_uV": max_uV},
             "steps": [["CC", 4 * I_nA, 36_000_000, 0]]}  # ends on time (10 h) only
    board, link = _start(tmp_path, table, "cutoff")
    try:
        end = link.run_to_end()
        status = link.idle_status()  # the board samples on in idle: ~0 A after the run
    finally:
        board.close()
    truth = sim.read_truth(board.truth_path)
    assert end == "FAULT"
    faulted = [r for r in link.records if r["fault"]]
    assert faulted and faulted[0]["fault"] & 1  # OVER_VOLTAGE
    assert faulted[0]["v_uV"] > max_uV
    assert all(r["v_uV"] <= max_uV for r in link.records if not r["fault"])
    # in the plant: the current went off at the first tick that saw the limit crossed
    (i_A, t_on, t_off, v_off) = _segments(truth)[-1]
    assert i_A > 0
    assert v_off * 1e6 >= max_uV - 3_000
    v_tick_before = np.interp(t_off - TICK_MS / 1000 - 1e-3, truth["t_s"], truth["v_V"])
    assert v_tick_before * 1e6 <= max_uV + 3_000
    assert truth["i_A"][-1] == 0
    assert abs(status["i_nA"]) < 2_000 and status["state"] == "FAULT"


def test_sim_board_is_a_transport_whose_eof_waits_for_the_last_line(tmp_path):
    """SimBoard is a cellbench Transport: eof is False while the process runs and while
    lines it wrote before ending are unread, True once both are over."""
    from cellbench.transport import Transport

    cell = tmp_path / "cell.json"
    cell.write_text(json.dumps(MODEL))
    board = sim.start_board(cell, workdir=tmp_path / "eof", seed=1)
    try:
        assert isinstance(board, Transport)
        board.write(frame.encode("STOP"))
        board.proc.stdin.close()  # the firmware answers, then ends with stdin closed
        board.proc.wait(timeout=60)
        assert not board.eof  # the reply to STOP is still unread
        lines = []
        while not board.eof:
            lines.append(board.readline(timeout_s=10))
        assert frame.decode(lines[0]).startswith("OK STOP") and board.readline(timeout_s=1) == b""
    finally:
        board.close()
