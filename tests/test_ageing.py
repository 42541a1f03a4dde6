"""Ageing: the paper's 100-cycle tests on the simulated board, and `cellbench analyze`
recovering them (docs/ageing.md).

The HIL runs are protocols/lto-ageing-1C.json and protocols/gr-ageing-1Ag.json (one
formation cycle, then 100 cycles at 1C / 1 A/g) with the reference presets, one run per
cell for this module. Three independent sides are compared:

* the paper (Ding et al. 2026, ../shared/reference/coin-cells.md, typed in here): capacity
  and charge-transfer resistance (EIS) at cycles 1 and 100, CE; the reference gives no
  values at cycles 25 and 50, so there only the paper's shape is checked (early fast fade,
  then slower);
* the simulated truth: the plant's charge counters (truth CSV) and its ageing state
  (the state file: capacity, resistance multipliers) at every current change;
* what analyze recovers from the board's log alone.
"""

import json
import math

import numpy as np
import pytest

from cellbench import ecm
from cellbench import model as cm
from cellbench.analyze import relaxation
from cellbench.analyze.series import prepare
from cellbench.benchmarks.ageing import run_cell, truth_q_dch, truth_rct_per_cycle
from cellbench.errors import InputError
from cellbench.paths import MODELS
from cellbench.sim.mpy import simcell

MASS_G = 0.002
CHECKPOINTS = (1, 25, 50, 100)           # block cycles compared (the paper's cycle numbers)
PAPER = {  # Ding et al.: capacity mAh/g and R_ct ohm at cycles 1 and 100, least CE %
    "lto": {"q": (171.0, 125.0), "r_ct": (33.0, 58.0), "ce_min_pct": 98.0},
    "gr": {"q": (24.0, 12.0), "r_ct": (40.0, 178.0), "ce_min_pct": 90.0},
}
CELLS = {"LTO/Li": "lto", "Gr/Li": "gr"}
PAPER_TOL = 0.15
TRUTH_TOL_Q = 0.02      # analyze's capacity vs the plant's charge: the board's current error
TRUTH_TOL_RCT = 0.15    # one rest gives R_ct to ~10 % (LTO: ADC noise over an 11-20 mV relaxation)


def within(got, want, tol):
    return abs(got - want) <= tol * abs(want)


# ------------------------------------------------------------------ the ageing law itself

def linear_cell(**fade):
    """A cell whose ageing is easy to predict by hand: linear OCV, one RC pair."""
    model = {"capacity_Ah": 1e-3, "ocv": {"soc": [0.0, 1.0], "voltage_V": [1.0, 2.0]},
             "r0_ohm": 10.0, "rc": [{"r_ohm": 20.0, "tau_s": 5.0}, {"r_ohm": 30.0, "tau_s": 500.0}],
             "fade": fade}
    return simcell.Cell(model, soc0=0.5)


def cycle_throughput(cell, i_A, efc, pieces=40):
    """``efc`` equivalent full cycles of throughput at |i_A| in alternating half steps."""
    half_s = cell.c0_Ah * 3600.0 / abs(i_A) / pieces
    for _ in range(int(round(efc * 2 * pieces))):
        cell.step(i_A, half_s / 2)
        cell.step(-i_A, half_s / 2)


def test_capacity_fades_as_sqrt_plus_linear_in_throughput():
    cell = linear_cell(capacity_sqrt=0.02, capacity_per_cycle=0.001)
    for n in (1.0, 4.0, 16.0):
        cycle_throughput(cell, 1e-3, n - cell.cycles())
        assert cell.cycles() == pytest.approx(n, rel=1e-9)
        assert cell.cap_Ah / cell.c0_Ah == pytest.approx(1 - 0.02 * math.sqrt(n) - 0.001 * n, rel=1e-9)


def test_charge_transfer_grows_with_current_weighted_dose_only():
    slow, fast = linear_cell(rct_per_cycle=0.1, stress_current_A=1e-3, stress_exponent=2.0), \
        linear_cell(rct_per_cycle=0.1, stress_current_A=1e-3, stress_exponent=2.0)
    cycle_throughput(slow, 0.5e-3, 2.0)
    cycle_throughput(fast, 1e-3, 2.0)
    assert fast.dose == pytest.approx(2.0, rel=1e-9)          # full weight at the stress current
    assert slow.dose == pytest.approx(2.0 * 0.25, rel=1e-9)   # (1/2)^2 at half of it
    assert fast.rct_mult == pytest.approx(1.2, rel=1e-9)
    fast.step(1e-3, 1e4)  # long enough for both pairs to settle: v_k = R_k * i
    assert fast.v_rc[0] == pytest.approx(20.0 * 1.2 * 1e-3, rel=1e-6)   # rc[0] grew
    assert fast.v_rc[1] == pytest.approx(30.0 * 1e-3, rel=1e-6)         # rc[1] did not
    assert fast.voltage(1e-3) - fast.ocv() - sum(fast.v_rc) == pytest.approx(10.0 * 1e-3, rel=1e-6)


def test_ecm_applies_the_same_ageing_as_the_plant():
    """cellbench.ecm (closed form per piece) and the plant (tick by tick) age a preset alike."""
    model = cm.load_model(MODELS / "gr-li-coin.json")
    state = ecm.new_state(model, 1.0)
    cell = simcell.Cell(json.loads((MODELS / "gr-li-coin.json").read_text()), 1.0)
    i = 1.0 * MASS_G
    for _ in range(30):
        ecm.cycle(model, [(-i, 0.01, None), (0.0, None, 60.0), (i, 3.0, None), (0.0, None, 60.0)], state=state)
        for cur, limit in ((-i, 0.01), (i, 3.0)):
            while (cell.voltage(cur) - limit) * cur < 0:
                cell.step(cur, 0.1)
            cell.step(0.0, 60.0)
    assert state.dose == pytest.approx(cell.dose, rel=0.02)
    assert ecm.aged_capacity_Ah(model, state.cycles(model)) == pytest.approx(cell.cap_Ah, rel=0.002)


def test_stress_exponent_needs_a_stress_current():
    doc = json.loads((MODELS / "gr-li-coin.json").read_text())
    doc["fade"]["stress_current_A"] = 0.0
    with pytest.raises(InputError, match=r"^fade\.stress_current_A: "):
        cm.load_model(doc)


def test_relaxation_separates_ohmic_and_charge_transfer():
    """A rest after a CC step sampled every second, as this bench records (a step's last
    record is taken under its current, which then changes at once): the fit recovers R0
    and R1 of the cell (its RC pair tau 5 s, a slow pair tau 500 s that drifts over the rest,
    as in the presets)."""
    cell = linear_cell()
    i, t, rows = 1e-3, 0.0, []
    for cur, n in ((0.0, 30), (i, 600), (0.0, 60), (-i, 600), (0.0, 60)):
        for _ in range(n):
            cell.step(cur, 1.0)
            t += 1.0
            rows.append((t, cell.voltage(cur), cur))
    t_s, v_V, i_A = map(np.array, zip(*rows))
    relax = relaxation.relaxations(prepare({"Test Time / s": t_s, "Voltage / V": v_V, "Current / A": i_A}))
    got = np.isfinite(relax["r_ct"])
    assert got.sum() == 2 and list(relax["branch"][got]) == [1, -1]
    np.testing.assert_allclose(relax["r_ohm"][got], 10.0, rtol=0.02)
    np.testing.assert_allclose(relax["r_ct"][got], 20.0, rtol=0.02)
    np.testing.assert_allclose(relax["tau_s"][got], 5.0, rtol=0.02)


# ------------------------------------------------------------------ HIL: 100 cycles

@pytest.fixture(scope="module", params=sorted(CELLS))
def aged(request, tmp_path_factory):
    """One 100-cycle run per cell on the simulated board, its analysis and the plant's
    truth (benchmarks/ageing.py makes and reads them the same way). The LTO run is 167 h
    of cell time at 2 s ticks: about 40 s of CPU, most of this module's time."""
    d = tmp_path_factory.mktemp("ageing")
    result, runs = run_cell(request.param, d)
    return CELLS[request.param], result, runs, d


def _block_rows(result):
    block = result.summary["ageing"]
    assert block["cycles"] == 100 and block["first_cycle"] == 2   # cycle 1 is the formation
    return [int(np.flatnonzero(result.table["cycle"] == block["first_cycle"] + k - 1)[0]) for k in CHECKPOINTS]


@pytest.mark.hil
def test_simulated_cell_ages_as_the_paper(aged):
    name, result, truth, _ = aged
    paper = PAPER[name]
    q = truth_q_dch(truth)
    r_ct = truth_rct_per_cycle(result, truth)[_block_rows(result)]
    for got, want in ((q[1], paper["q"][0]), (q[100], paper["q"][1]),
                      (r_ct[0], paper["r_ct"][0]), (r_ct[-1], paper["r_ct"][1])):
        assert within(got, want, PAPER_TOL), (name, got, want)
    # the paper's shape: the fade slows down (more lost over cycles 1-50 than over 50-100)
    assert q[1] - q[50] > q[50] - q[100] > 0
    assert np.all(np.diff(r_ct) > 0)


@pytest.mark.hil
def test_analyze_recovers_the_simulated_truth(aged):
    name, result, truth, _ = aged
    rows = _block_rows(result)
    t = result.table
    q_truth = truth_q_dch(truth)
    # cycles.py gives the interval between a cycle's last record and the next cycle's
    # first (the next discharge's first tick) to the earlier cycle; the log's last cycle
    # has no next one and is short by that tick (2 % of a late Gr/Li cycle at 1 s ticks)
    np.testing.assert_allclose(t["q_dch_mAh_g"][rows[0]:rows[0] + 99], q_truth[1:100], rtol=TRUTH_TOL_Q)
    assert within(t["q_dch_mAh_g"][rows[-1]], q_truth[100], 2 * TRUTH_TOL_Q)
    r_truth = truth_rct_per_cycle(result, truth)
    for k, row in zip(CHECKPOINTS, rows):
        assert within(t["r_ct_trend_ohm"][row], r_truth[row], TRUTH_TOL_RCT), (name, k, t["r_ct_trend_ohm"][row], r_truth[row])
    # the whole trend, not just the checkpoints
    trend_err = np.abs(t["r_ct_trend_ohm"][rows[0]:rows[-1] + 1] / r_truth[rows[0]:rows[-1] + 1] - 1)
    assert np.median(trend_err) < 0.05 and trend_err.max() < TRUTH_TOL_RCT


@pytest.mark.hil
def test_analyze_reports_the_papers_ageing(aged):
    name, result, _, out = aged
    paper = PAPER[name]
    ageing = result.summary["ageing"]
    first, *_, last = ageing["checkpoints"]
    assert first["block_cycle"] == 1 and last["block_cycle"] == 100
    for got, want in ((first["q_dch"], paper["q"][0]), (last["q_dch"], paper["q"][1]),
                      (first["r_ct_trend_ohm"], paper["r_ct"][0]), (last["r_ct_trend_ohm"], paper["r_ct"][1])):
        assert within(got, want, PAPER_TOL), (name, got, want)
    assert ageing["retention_pct"] == pytest.approx(100 * last["q_dch"] / first["q_dch"])
    # CE: the paper's floor holds from the second cycle at the ageing rate (the first
    # follows a slower formation charge, so it delithiates less than the cell took up)
    ce = result.table["ce_pct"][_block_rows(result)[0] + 1:]
    assert np.nanmin(ce) >= paper["ce_min_pct"]
    assert (out / "analysis" / "ageing.png").stat().st_size > 0
    assert (out / "analysis" / "relaxations.csv").stat().st_size > 0


# ------------------------------------------------------------------ PyBaMM ageing reference

def test_analyze_reads_the_pybamm_sei_ageing_reference():
    """tests/data/pybamm-ageing (tools/pybamm_ageing.py: SPMe + SEI growth, a coin-size
    LG M50 cell, 100 cycles at 1C with C/10 checks): analyze's discharge capacity at each
    check against PyBaMM's true one (the logged current carries the board's offset of
    0.2 % of 1C, 2 % of a C/10 current), and the SEI's shape, fast first, then slower."""
    from cellbench.analyze import analyze_log
    from cellbench.paths import ROOT

    data = ROOT / "tests" / "data" / "pybamm-ageing"
    cell = json.loads((data / "cell.json").read_text())
    result = analyze_log(data / "ageing.bdf.csv.gz")
    t = result.table
    checks = t["q_dch_mAh"][t["c_rate"] < 0.2]
    truth = np.array(cell["check_capacity_Ah"]) * 1e3
    assert cell["fast_cycles"] >= 100 and len(checks) == len(truth) == 5
    np.testing.assert_allclose(checks, truth, rtol=0.03)
    lost = -np.diff(truth)
    assert np.all(lost > 0) and lost[0] > lost[-1]
    assert 0.05 < 1 - truth[-1] / truth[0] < 0.30
