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
* what analyze recovers from the board's log alone;
* what the board's estimator (the preset loaded as its model, capacity and resistance
  states on) reported live in every record (issue 14): capacity and charge-transfer
  resistance against the plant's, and its SoC error against that of the same filter
  told the plant's true capacity (benchmarks/ageing.py known_capacity_soc).
"""

import json
import math

import numpy as np
import pytest

from cellbench import ecm
from cellbench import model as cm
from cellbench.analyze import relaxation
from cellbench.analyze.series import prepare
from cellbench import bdflog
from cellbench.benchmarks.ageing import (TRACK_FROM_CYCLE, run_cell, tracking, tracking_errors,
                                         truth_q_dch, truth_rct_per_cycle)
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
# Issue 14's proof: the board's live estimates from block cycle TRACK_FROM_CYCLE on, and
# its SoC RMSE over the whole run against the known-capacity filter's plus this margin.
LIVE_TOL_CAP = 0.03
LIVE_TOL_R = 0.10
SOC_MARGIN = 0.005
# Known misses of the live tracking (the filter's part of issue 14 is still open), each
# with what was measured. Strict: a change that meets a bound turns its test red until
# the entry goes, so this list can only shrink.
LIVE_MISSES = {}
# Misses at the edge of their bound (non-strict: measured on one run). None: the board runs
# in lockstep (sim.start_board lockstep=True), so a run repeats bit for bit. Measured
# 2026-12-04, block cycles 10-100: LTO/Li capacity 1.4 %, R_ct 8.9 % (mean -3.9 %; 12.4 %,
# mean -7.3 %, with the random walk alone: it lagged the ramp), SoC RMSE 0.78 % vs 0.57 %
# known-capacity; Gr/Li capacity 0.2 %, R_ct 2.9 %, SoC RMSE 0.05 % vs 0.10 %.
LIVE_EDGE_MISSES = {}


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
    """One 100-cycle run per cell on the simulated board with its estimator on, its
    analysis and the plant's truth (benchmarks/ageing.py makes and reads them the same
    way). Slow on purpose: it is the issue's proof, 100 cycles of the real firmware. The
    LTO run is 167 h of cell time at 2 s ticks, 300k ticks of the filter: about 2-3 min of
    CPU (40 s without the estimator), most of this module's time; Gr/Li about 15 s."""
    d = tmp_path_factory.mktemp("ageing")
    result, runs = run_cell(request.param, d)
    return CELLS[request.param], result, runs, d


@pytest.fixture(scope="module")
def tracked(aged):
    """The board's live estimates beside the plant's truth, and the tracking numbers."""
    name, _, _, d = aged
    chemistry = {v: k for k, v in CELLS.items()}[name]
    track = tracking(d, chemistry)
    return name, track, tracking_errors(track, chemistry)


def _known_miss(request, name, what):
    for misses, strict in ((LIVE_MISSES, True), (LIVE_EDGE_MISSES, False)):
        if (name, what) in misses:
            request.node.add_marker(pytest.mark.xfail(strict=strict, reason=misses[(name, what)]))


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


@pytest.mark.hil
def test_the_boards_log_carries_its_estimates(aged):
    """The preset tracks capacity and resistance, so every record of the board's log has
    the SoC and the ageing columns (docs/design.md "Log"), in physical units."""
    name, _, _, d = aged
    log = bdflog.read_log(d / "run.bdf.csv")
    cap = log["Capacity Estimate / Ah"]
    r_ct = log["Charge Transfer Resistance Estimate / ohm"]
    assert np.isfinite(log["SOC / 1"]).all()
    assert np.isfinite(cap).all() and np.isfinite(log["Capacity Estimate Std / Ah"]).all()
    assert np.isfinite(r_ct).all() and np.isfinite(log["Charge Transfer Resistance Estimate Std / ohm"]).all()
    # a coin cell's capacity (0.4 mAh) and an EIS-size R_ct (tens of ohm), not nAh or mohm
    assert 1e-5 < np.median(cap) < 1e-2 and 1.0 < np.median(r_ct) < 1e4


@pytest.mark.hil
def test_board_tracks_the_capacity_live(tracked, request):
    name, track, err = tracked
    _known_miss(request, name, "capacity")
    assert err["cap_err"] <= LIVE_TOL_CAP, (name, err)


@pytest.mark.hil
def test_board_tracks_the_charge_transfer_resistance_live(tracked, request):
    name, track, err = tracked
    _known_miss(request, name, "resistance")
    assert err["r_err"] <= LIVE_TOL_R, (name, err)


@pytest.mark.hil
def test_soc_as_good_as_with_the_true_capacity(tracked, request):
    """The baseline is the same filter (firmware/ekf.py, the preset's estimator block)
    over the same logged records, told the plant's true capacity before every step
    instead of estimating it: what "a perfectly known capacity" gives. A second board run
    with the capacity state off is not that (it keeps the fresh capacity, 15 % above LTO's
    by cycle 100) and would cost another run."""
    name, track, err = tracked
    _known_miss(request, name, "soc")
    assert err["soc_records"] == err["records"]  # an estimate in every record
    assert err["soc_rmse"] <= err["soc_rmse_known"] + SOC_MARGIN, (name, err)


def test_tracking_compares_against_the_plant(tmp_path):
    """tracking_errors on a made-up track whose errors are known: 2 % capacity and 8 %
    resistance from cycle TRACK_FROM_CYCLE on (larger before, which must not count)."""
    n = 40
    cycle = np.repeat(np.arange(1, 21), 2)
    cap_truth = np.linspace(4e-4, 3e-4, n)
    late = cycle - 1 >= TRACK_FROM_CYCLE
    track = {"t_s": np.arange(n) * 60.0, "cycle": cycle, "i_A": np.zeros(n), "v_V": np.full(n, 1.55),
             "soc": np.full(n, 0.5), "soc_truth": np.full(n, 0.5), "cap_truth_Ah": cap_truth,
             "cap_Ah": cap_truth * np.where(late, 1.02, 1.3), "r_truth_ohm": np.full(n, 40.0),
             "r_ohm": np.where(late, 40.0 * 0.92, 80.0)}
    err = tracking_errors(track, "LTO/Li")
    assert err["cap_err"] == pytest.approx(0.02) and err["r_err"] == pytest.approx(0.08)
    assert err["soc_rmse"] == 0.0 and err["records"] == n


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
