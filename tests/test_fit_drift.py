"""The fit's SoC-count drift (cellbench.fit.drift.columns, chosen in structure.search).

After a log's last low-rate sweep the fit only counts charge, and a count that drifts
moves ``v - OCV(z)`` by ``OCV'(z) * dz`` (on the PyBaMM NMC811 char-log, 1 % SoC: 5-10 mV).
Here the log is made by cellbench.ecm from a known one-pair cell (cellbench.benchmarks.fit's
generator: a C/20 cycle then an HPPC train), and the SoC the structure search is given is
the simulation's true SoC plus a known drift after the cycle. The expectation is the known
cell and the known drift.
"""

import numpy as np
import pytest

from cellbench import ecm
from cellbench.benchmarks import fit as gen
from cellbench.fit import refine, structure
from cellbench.fit.data import load
from cellbench import model as cellmodel

R0_OHM, RC = 100.0, ((140.0, 40.0),)
SEEDS = {0: [], 1: [40.0], 2: [15.0, 400.0]}
DRIFT = (0.002, 0.0015)     # SoC off by 0.2 % at the cycle's end, then 0.15 % an hour more


def _search(tmp_path, drift):
    truth = gen.known_model(r0_ohm=R0_OHM, rc=RC)
    state = ecm.new_state(truth, 0.5)
    cycle = gen.ocv_cycle_steps(truth, state)
    steps = cycle + gen.hppc_steps(truth, state, levels=8)
    t_s, i_A, sim = gen.sample(truth, steps, 0.5)
    counts = np.array([int(round(s)) for _, s in steps])
    labels = np.repeat(np.arange(1, len(steps) + 1), counts)
    v = sim["v_V"] + np.random.default_rng(3).normal(0.0, 3e-4, t_s.size)
    log = load(gen.write_log(tmp_path / "char.bdf.csv", t_s, i_A, v, labels))
    # the C/20 sweeps: the cycle's steps 3, 5 and 7 (after its C/5 charge and first rest)
    slow = np.isin(labels, [3, 5, 7])
    end = np.flatnonzero(slow)[-1]
    hours = np.where(np.arange(t_s.size) > end, (t_s - t_s[end]) / 3600.0, np.nan)
    z = sim["soc"] + np.where(np.isfinite(hours), drift[0] + drift[1] * np.nan_to_num(hours), 0.0)
    rows = refine.rows([log], [z], [np.ones(t_s.size, dtype=bool)],
                       lambda s: cellmodel.ocv(truth, s), [slow])
    return truth, structure.search(rows, SEEDS, truth["capacity_Ah"])


def test_a_drifting_count_is_fitted_beside_the_cell_and_the_cell_recovered(tmp_path):
    truth, (chosen, results) = _search(tmp_path, DRIFT)
    assert chosen["drift"] and len(results) == 24
    p = chosen["params"]
    assert np.median(p["r0_ohm"]) == pytest.approx(R0_OHM, rel=0.03)
    assert [np.median(q["r_ohm"]) for q in p["rc"] if np.max(q["r_ohm"]) > 0] == pytest.approx([140.0], rel=0.1)
    # the columns read y = v - OCV(z + dz) = eta - OCV'(z) * dz: level and ramp are -dz's
    c = chosen["fit"].coef[-4:]
    assert c[0] - c[1] == pytest.approx(-DRIFT[0], abs=1e-3)
    assert c[2] - c[3] == pytest.approx(-DRIFT[1], abs=5e-4)


def test_a_count_that_holds_keeps_the_plain_fit(tmp_path):
    """No drift: the four coefficients do not earn their place, the cell is still found."""
    _, (chosen, _) = _search(tmp_path, (0.0, 0.0))
    assert not chosen["drift"]
    assert np.median(chosen["params"]["r0_ohm"]) == pytest.approx(R0_OHM, rel=0.03)


def test_a_log_without_a_sweep_gets_no_drift_columns(tmp_path):
    """Nothing to anchor the count: an offset cannot be told from the OCV, so none is fitted."""
    truth = gen.known_model(r0_ohm=R0_OHM, rc=RC)
    t_s, i_A, sim = gen.sample(truth, [(-truth["capacity_Ah"], 60), (0.0, 600)] * 5, 0.8)
    log = load(gen.write_log(tmp_path / "pulses.bdf.csv", t_s, i_A, sim["v_V"]))
    rows = refine.rows([log], [sim["soc"]], [np.ones(t_s.size, dtype=bool)], lambda s: cellmodel.ocv(truth, s))
    assert rows.drift == []
