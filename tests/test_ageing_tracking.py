"""Issue 14, the filter's part: the host twin (cellbench.estimate, the board's filter
firmware/ekf.py + firmware/resistance.py compiled) tracks an ageing cell's capacity and
charge-transfer resistance, against truths the filter never sees:

* a PyBaMM ageing run (tests/data/pybamm-ageing: SPMe + SEI growth, 100 cycles at 1C with
  C/10 checks; tools/pybamm_ageing.py): the capacity after every C/10 check after cycle 10
  against PyBaMM's, with a model fitted (cellbench.fit) to the run's first three cycles;
* a PyBaMM ageing run whose resistance grows (tests/data/pybamm-ageing-r: the same cell and
  SEI, whose film resistance doubles the cell's 1 s resistance in 100 cycles; 1 s samples
  and 1C pulses after each check; tools/pybamm_ageing.py --pulses): the twin's R0 and its
  step response at rc[0]'s time constant against PyBaMM's resistance from noise-free pulses
  at each check after cycle 10, and its R0 against PyBaMM's noise-free 1 s step at every 1C
  step after cycle 10, with a model fitted to that run's first three cycles;
* 100-cycle runs of the two reference presets on the simulated cell itself
  (host/cellbench/sim/mpy/simcell.Cell: the plant of the simulated board, the ageing law
  cellbench.ecm uses too, stepped tick by tick with the board's sampling convention and
  ADC-like voltage noise): capacity within 3 % and R_ct within 10 % of the plant's from
  cycle 10 on, and the SoC RMSE over the whole run no worse than the same filter told the
  plant's true capacity at every sample, plus 0.5 %.
"""

import gzip
import json

import numpy as np
import pytest
from cellbench import fw
from cellbench.benchmarks.ageing import (
    PYBAMM,
    PYBAMM_R,
    PYBAMM_TRUTH,
    fit_and_track,
    pulse_truth_ohm,
    pybamm_capacity_tracked,
    pybamm_resistance_pairs,
)
from cellbench.estimate import estimate
from cellbench.paths import MODELS
from cellbench.sim.mpy import simcell

TRACK_FROM_CYCLE = 10
TOL_CAP = 0.03
TOL_RCT = 0.10
SOC_MARGIN = 0.005

# name: preset, tick (s), 1C-like current of the ageing block (A), formation current (A),
# voltage window, the rest after each half cycle as the protocols cut it (s);
# protocols/lto-ageing-1C.json and gr-ageing-1Ag.json, docs/ageing.md.
CELLS = {"lto": ("lto-li-coin.json", 2.0, 0.35e-3, 0.07e-3, (1.0, 2.5), (4, 4, 4, 8, 8, 32)),
         "gr": ("gr-li-coin.json", 1.0, 2.0e-3, 0.4e-3, (0.01, 3.0), (2, 2, 2, 2, 4, 4, 8, 36))}
NOISE_V = 0.5e-3  # the simulated board's ADC noise at these ranges (docs/ageing.md)
# Known misses, each with what was measured; strict, so the list can only shrink.
MISSES = {}


def _miss(request, name):
    if name in MISSES:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=MISSES[name]))


# ------------------------------------------------------------------ PyBaMM ageing run

def _checks(log):
    """(cell.json, the log's cycle column, the cycles whose discharge is the C/10 check)."""
    cell = json.loads((PYBAMM / "cell.json").read_text())
    cycle, i_A = log["Cycle Count / 1"], log["Current / A"]
    dch = i_A < -0.02 * cell["one_c_A"]
    checks = [c for c in np.unique(cycle)
              if np.any((cycle == c) & dch) and np.all(i_A[(cycle == c) & dch] > -0.2 * cell["one_c_A"])]
    return cell, cycle, checks


@pytest.fixture(scope="module")
def pybamm_tracked(tmp_path_factory):
    """The twin over the whole PyBaMM ageing log with a model fitted to its first three
    cycles (the C/10 check and two 1C cycles: what a user has before the fade)."""
    return pybamm_capacity_tracked(tmp_path_factory.mktemp("pybamm"))


def _truth_rows(log, cell):
    """The log rows at the moments PyBaMM's capacity is known (cell.json check_ocv_time_s)."""
    return np.searchsorted(log["Test Time / s"], np.asarray(cell["check_ocv_time_s"]) - 1e-3)


def test_pybamm_capacity_tracked_within_3_percent_after_cycle_10(pybamm_tracked):
    """After every C/10 check after cycle 10 (the moments PyBaMM's capacity is known) the
    twin's capacity is within 3 % of it, and the truth inside the estimate's 3-sigma band."""
    model, log, est = pybamm_tracked
    cell, _, checks = _checks(log)
    assert len(checks) == len(cell[PYBAMM_TRUTH]) == 5
    assert model["capacity_Ah"] == pytest.approx(cell[PYBAMM_TRUTH][0], rel=0.01)  # the fit's
    late = 0
    for after, end, truth in zip(cell["check_after_fast_cycles"], _truth_rows(log, cell),
                                 cell[PYBAMM_TRUTH]):
        if after < TRACK_FROM_CYCLE:
            continue
        late += 1
        got, std = est["cap_Ah"][end], est["cap_std_Ah"][end]
        assert abs(got / truth - 1) <= TOL_CAP, (after, got, truth)
        assert abs(got - truth) <= 3 * std, (after, got, truth, std)
    assert late == 4
    # it followed the fade: 13 % lost, not the fitted fresh capacity held
    assert est["cap_Ah"][-1] < 0.9 * model["capacity_Ah"]


def test_pybamm_capacity_tracked_within_3_percent_between_the_checks(pybamm_tracked):
    """Every sample after cycle 10, against PyBaMM's capacity interpolated linearly between
    the checks (SEI loss grows smoothly with time: between two checks 25 cycles apart it
    moves ~4 %, so the interpolation is good to a fraction of that)."""
    _, log, est = pybamm_tracked
    cell, cycle, _ = _checks(log)
    t_s = log["Test Time / s"]
    truth = np.interp(t_s, t_s[_truth_rows(log, cell)], cell[PYBAMM_TRUTH])
    late = cycle - 1 >= TRACK_FROM_CYCLE
    assert np.max(np.abs(est["cap_Ah"][late] / truth[late] - 1)) <= TOL_CAP


# ------------------------------------------------------------------ PyBaMM resistance run
# PyBaMM's charge transfer is instantaneous at a 1 s tick, so its growth shows in the
# board's R0, not in rc[0]: the proof is of the resistance the twin holds at a step, R0
# (the estimator's scale on the model's R0) and its whole step response at rc[0]'s time
# constant, against the same cell's pulse resistance (cell.json check_pulse_*: the
# overpotential over the current, the OCV's change with the charge passed taken out).


@pytest.fixture(scope="module")
def pybamm_r_tracked(tmp_path_factory):
    """The twin over the whole resistance run with a model fitted to its first three
    cycles (the first check with its pulses, and the first 1C discharge)."""
    model, log, est = fit_and_track(PYBAMM_R / "ageing.bdf.csv.gz", tmp_path_factory.mktemp("pybamm-r"))
    return model, log, est, json.loads((PYBAMM_R / "cell.json").read_text())


def test_pybamm_resistance_tracked_within_10_percent_after_cycle_10(pybamm_r_tracked):
    """At the end of each check's pulse block after cycle 10, the twin's R0 is within 10 %
    of PyBaMM's resistance 1 s after each pulse's edge (the board's tick), and its step
    response at rc[0]'s tau within 10 % of PyBaMM's at tau; PyBaMM's grew by half, and the
    twin followed it (the fitted R0 did not stay)."""
    model, log, est, cell = pybamm_r_tracked
    assert model["rc"], "the fit found no RC pair: nothing to compare at its time scale"
    assert 1.0 < model["rc"][0]["tau_s"] < max(cell["pulse_t_s"])  # inside the reported times
    late = [p for p in pybamm_resistance_pairs(model, log, est, cell) if p["after"] >= TRACK_FROM_CYCLE]
    assert len(late) == 4 * 2 * 2  # checks, pulses, times
    for p in late:
        assert abs(p["twin"] / p["truth"] - 1) <= TOL_RCT, p
    first_1s, last_1s = (pulse_truth_ohm(cell, "discharge", c, 1.0) for c in (0, -1))
    assert last_1s > 1.5 * first_1s
    assert [p["twin"] for p in late if p["t_s"] == 1.0][-1] > 1.5 * np.max(model["r0_ohm"])  # R0


def _edge_truth(log, step_index):
    """The log rows that open each step of ``step_index`` (1: the 1C discharges, from the
    rest after a 1C charge; 3: the 1C charges, from the rest at the bottom) and PyBaMM's
    resistance 1 s into them, the board's tick: the noise-free voltage step over the
    current step (ageing.truth.csv.gz; in 1 s the OCV moves less than 0.5 ohm's worth)."""
    with gzip.open(PYBAMM_R / "ageing.truth.csv.gz", "rt") as f:
        truth = np.loadtxt(f, delimiter=",", skiprows=1)
    assert np.allclose(truth[:, 0], log["Test Time / s"], atol=1e-3)  # row for row
    idx = log["Step Index / 1"]
    k = np.flatnonzero((idx[1:] == step_index) & (idx[:-1] != step_index)) + 1
    i_A, v_V = truth[:, 1], truth[:, 2]
    return k, (v_V[k] - v_V[k - 1]) / (i_A[k] - i_A[k - 1])


def _edges_tracked(pybamm_r_tracked, step_index):
    """The twin's R0 before each edge of ``step_index`` against PyBaMM's 1 s resistance,
    the edges of 1C cycles from TRACK_FROM_CYCLE on: the relative errors."""
    _, log, est, _ = pybamm_r_tracked
    k, truth = _edge_truth(log, step_index)
    late = log["Cycle Count / 1"][k] - 1 >= TRACK_FROM_CYCLE
    assert late.sum() >= 90  # the 1C cycles from 10 on (the log counts the checks as cycles too)
    assert truth[late][-1] > 1.4 * truth[late][0]  # it grew meanwhile
    return est["r0_ohm"][k - 1][late] / truth[late] - 1


def test_pybamm_resistance_tracked_at_every_1c_discharge_after_cycle_10(pybamm_r_tracked):
    """Between the checks too: at each 1C discharge's first tick (SoC 0.2-0.5, after a
    1200 s rest) the twin's R0 is within 10 % of PyBaMM's 1 s resistance."""
    err = _edges_tracked(pybamm_r_tracked, 1)
    assert np.max(np.abs(err)) <= TOL_RCT, err


def test_pybamm_resistance_tracked_at_every_1c_charge_after_cycle_10(pybamm_r_tracked):
    """At each 1C charge's first tick (true SoC 3-4 %, the bottom of the window, after a
    1200 s rest) the twin's R0 is within 10 % of PyBaMM's 1 s resistance: there it is
    1.22x that at the discharges' SoC fresh and 1.08x after 100 cycles (the SEI film's
    share, flat in SoC, grows), which one scale on the fitted R0 (flat in SoC) could not
    follow at both ends; the estimator's R0 scale per SoC region does."""
    err = _edges_tracked(pybamm_r_tracked, 3)
    assert np.max(np.abs(err)) <= TOL_RCT, err


# ------------------------------------------------------------------ simulated ageing runs

def ageing_run(name, cycles=100, seed=0):
    """The preset's cell aged on the plant, sampled every tick as the board samples:
    a 0.2C-like formation cycle, then ``cycles`` cycles of CC discharge to the lower limit,
    rest, CC charge to the upper limit, rest (the first sample is the rested fresh cell).
    Returns (model, dict of arrays: t_s, i_A, v_V (with noise), soc, cap_Ah, rct_ohm
    (the plant's R_ct now), cycle (0 = formation))."""
    preset, dt, i_run, i_form, (lo, hi), rests = CELLS[name]
    model = json.loads((MODELS / preset).read_text())
    cell = simcell.Cell(model, soc0=model.get("sim_soc0", 1.0))
    rng = np.random.default_rng(seed)
    rct0 = model["rc"][0]["r_ohm"]
    rows = [(0.0, 0.0, cell.voltage(0.0), cell.z, cell.cap_Ah, rct0, 0)]

    def tick(i_A, cyc):
        cell.step(i_A, dt)  # the current over (t - dt, t], the voltage at t carries it
        v = cell.voltage(i_A)
        rows.append((rows[-1][0] + dt, i_A, v, cell.z, cell.cap_Ah,
                     rct0 * cell.r_mult * cell.rct_mult, cyc))
        return v

    for cyc in range(cycles + 1):
        i_A = i_form if cyc == 0 else i_run
        for sign, limit in ((-1, lo), (1, hi)):
            while (tick(sign * i_A, cyc) - limit) * sign < 0:  # noticed at the tick past it
                pass
            for rest_s in rests:
                for _ in range(int(rest_s / dt)):
                    tick(0.0, cyc)
    cols = np.array(rows).T
    run = dict(zip(("t_s", "i_A", "v_V", "soc", "cap_Ah", "rct_ohm"), cols[:6]))
    run["v_V"] = run["v_V"] + rng.normal(0.0, NOISE_V, run["v_V"].size)
    run["cycle"] = cols[6].astype(int)
    return model, run


def known_capacity_soc(model, run):
    """The same filter (the preset's estimator block, capacity state off) told the
    plant's true capacity before every sample: the "perfectly known capacity" baseline.
    The firmware filter itself, sample by sample (the twin has no per-sample capacity)."""
    model = dict(model, estimator=dict(model["estimator"], capacity=False))
    f = fw.module("ekf").Ekf(model)
    i_nA = np.round(run["i_A"] * 1e9).astype(np.int64)
    v_uV = np.round(run["v_V"] * 1e6).astype(np.int64)
    t_ms = np.round(run["t_s"] * 1e3).astype(np.int64)
    out = np.empty(t_ms.size)
    f.q_As = 3600.0 * run["cap_Ah"][0]
    f.reset(None, int(v_uV[0]), int(i_nA[0]))
    for k in range(t_ms.size):
        f.q_As = 3600.0 * float(run["cap_Ah"][k])
        f.step(int(i_nA[k]), int(v_uV[k]), int(t_ms[k] - t_ms[k - 1]) if k else 0)
        out[k] = f.soc
    return out


@pytest.fixture(scope="module", params=sorted(CELLS))
def tracked(request):
    """One 100-cycle run per preset and the twin over it. Slow on purpose (LTO: 300k
    ticks of plant, ~10 s; the known-capacity baseline runs the Python filter per sample,
    ~15 s): the issue's 100 cycles are the proof."""
    model, run = ageing_run(request.param)
    est = estimate(model, run["t_s"], run["i_A"], run["v_V"])
    return request.param, model, run, est


def test_simulated_capacity_within_3_percent_after_cycle_10(tracked, request):
    name, _, run, est = tracked
    _miss(request, name)
    late = run["cycle"] - 1 >= TRACK_FROM_CYCLE
    err = np.abs(est["cap_Ah"][late] / run["cap_Ah"][late] - 1)
    assert err.max() <= TOL_CAP, err.max()
    # the plant lost capacity and the filter followed it, not a number it started with
    assert run["cap_Ah"][-1] < 0.95 * run["cap_Ah"][0]


def test_simulated_charge_transfer_resistance_within_10_percent_after_cycle_10(tracked, request):
    name, _, run, est = tracked
    _miss(request, name)
    late = run["cycle"] - 1 >= TRACK_FROM_CYCLE
    err = np.abs(est["rct_ohm"][late] / run["rct_ohm"][late] - 1)
    assert err.max() <= TOL_RCT, err.max()
    assert run["rct_ohm"][-1] > 1.5 * run["rct_ohm"][0]  # it grew, and was followed


def test_simulated_estimates_carry_honest_bands(tracked, request):
    """From cycle 10 on the truth lies within 3 sigma of the estimate in 95 % of the
    samples, for capacity and resistance (a band that claims more than it knows would
    make a 3 % error look like a fault)."""
    name, _, run, est = tracked
    _miss(request, name)
    late = run["cycle"] - 1 >= TRACK_FROM_CYCLE
    for key, truth in (("cap_Ah", "cap_Ah"), ("rct_ohm", "rct_ohm")):
        inside = np.abs(est[key] - run[truth]) <= 3 * est[key.replace("_", "_std_", 1)]
        assert inside[late].mean() >= 0.95, (key, inside[late].mean())


def test_simulated_soc_as_good_as_with_the_true_capacity(tracked, request):
    name, model, run, est = tracked
    _miss(request, name)
    known = known_capacity_soc(model, run)
    rmse = np.sqrt(np.mean((est["soc"] - run["soc"]) ** 2))
    rmse_known = np.sqrt(np.mean((known - run["soc"]) ** 2))
    assert rmse <= rmse_known + SOC_MARGIN, (rmse, rmse_known)
