"""An imported log's charge is what the tester's own counter counted between its records.

A tester samples the current at each record but counts it continuously: over the ~60 s
between a Novonix's records a CV current decays, and holding a record's value to the next
one over-counts it (the real Novonix log of tests/data/realdata: 3 %). The expectation
here is the exact integral of a known current, never the code's own output.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellbench import cli, estimate
from cellbench.fit import data, filters, soc

MODELS = Path(__file__).parent.parent / "models"

I_CC_A = 1e-3
TAU_S = 1800.0           # the CV current's decay
CC_S, CV_S = 600.0, 3.0 * 3600.0
DT_REST_S, DT_CC_S, DT_CV_S = 10.0, 30.0, 57.0


def _current_A(t_s):
    """A rest to 100 s, a 1 mA CC charge for CC_S, then a CV tail decaying with TAU_S."""
    t = np.asarray(t_s, float) - 100.0
    return np.where(t < 0, 0.0, np.where(t < CC_S, I_CC_A, I_CC_A * np.exp(-(t - CC_S) / TAU_S)))


def _exact_Ah(t_s):
    """The integral of :func:`_current_A` from 0 (Ah)."""
    t = np.clip(np.asarray(t_s, float) - 100.0, 0.0, None)
    cc = I_CC_A * np.minimum(t, CC_S)
    cv = I_CC_A * TAU_S * (1.0 - np.exp(-np.clip(t - CC_S, 0.0, None) / TAU_S))
    return (cc + cv) / 3600.0


def _novonix_csv(path):
    """A Novonix HPC CSV of a CC-CV charge recorded as the real one is: each record the
    current at its time, 'Capacity (Ah)' the tester's exact count."""
    t = np.concatenate((np.arange(0.0, 100.0, DT_REST_S), 100.0 + np.arange(0.0, CC_S, DT_CC_S),
                        100.0 + CC_S + np.arange(0.0, CV_S, DT_CV_S)))
    code = np.where(t < 100.0, 0, np.where(t < 100.0 + CC_S, 7, 8))
    step = np.where(t < 100.0, 1, 2)
    rows = [f"2022-04-11 10:58:07 AM,1,{c},{x / 3600:.9f},0,{_current_A(x):.12g},{3.6 + 0.4 * _exact_Ah(x) / 1e-3:.8f},"
            f"{_exact_Ah(x):.12g},25,23,0,0,0,{s},0" for x, c, s in zip(t, code, step)]
    header = ("Date and Time,Cycle Number,Step Type,Run Time (h),Step Time (h),Current (A),Potential (V),"
              "Capacity (Ah),Temperature (°C),Circuit Temperature (°C),Energy (Wh),dVdt (I/h),dIdt (V/h),"
              "Step Number,Step position")
    path.write_text("\n".join(["[Summary]", "Novonix HPC data file", "Novonix", "[End Summary]", "[Data]",
                               header, *rows]) + "\n", encoding="utf-8")
    return t


def test_imported_cv_tail_is_counted_as_the_tester_counted(tmp_path):
    t = _novonix_csv(tmp_path / "nova.csv")
    assert cli.main(["import", str(tmp_path / "nova.csv"), "--out", str(tmp_path / "nova.bdf.csv")]) == 0
    log = data.load(tmp_path / "nova.bdf.csv")
    exact = _exact_Ah(t)
    np.testing.assert_allclose(log.q_Ah, exact, rtol=0, atol=1e-9 * exact[-1])
    held = np.concatenate(([0.0], np.cumsum(_current_A(t)[:-1] * np.diff(t)))) / 3600.0
    assert held[-1] > 1.01 * exact[-1]      # what holding each record's current counted


def test_the_fit_drives_its_states_with_what_the_tester_counted(tmp_path):
    """The fit's SoC count and the current its RC and hysteresis columns follow
    (fit.data.Log.run_A) carry the exact integral of the CV tail, as the replay does; each
    record held to the next would count 1 % more."""
    t = _novonix_csv(tmp_path / "nova.csv")
    assert cli.main(["import", str(tmp_path / "nova.csv"), "--out", str(tmp_path / "nova.bdf.csv")]) == 0
    log = data.load(tmp_path / "nova.bdf.csv")
    exact = _exact_Ah(t)
    np.testing.assert_allclose(soc.counted_Ah(log, 1.0), exact, rtol=0, atol=1e-6 * exact[-1])
    run = log.run_A
    np.testing.assert_allclose(np.cumsum(run[:-1] * np.diff(t)) / 3600.0, exact[1:], rtol=0, atol=1e-6 * exact[-1])
    # a pair far slower than the log is an integrator: it ends at R * the counted charge / tau
    tau_s = 1e11
    np.testing.assert_allclose(filters.rc_response(t, run, tau_s)[-1], exact[-1] * 3600.0 / tau_s, rtol=1e-5)


def test_a_counter_step_the_currents_do_not_bracket_is_not_taken():
    """Where the counter disagrees with both records' currents (a reset, a wrong unit) the
    interval is counted by holding the record's current; elsewhere the counter's step."""
    t = np.arange(0.0, 600.0, 60.0)
    exact = _exact_Ah(t + 100.0 + CC_S)         # along the CV tail
    i = _current_A(t + 100.0 + CC_S)
    counter = exact.copy()
    counter[5:] += 1.0                          # one step of 1 Ah: nothing like the current
    q = data.charge_Ah(t, i, counter)
    held_5 = i[4] * 60.0 / 3600.0
    expected = exact - exact[0]
    expected[5:] += held_5 - (exact[5] - exact[4])
    np.testing.assert_allclose(q, expected, rtol=0, atol=1e-15)
    # without a counter (the board's logs): each sample's current held to the next
    np.testing.assert_allclose(data.charge_Ah(t, i), np.concatenate(([0.0], np.cumsum(i[:-1] * 60.0))) / 3600.0)


def _model_file(path, capacity_Ah):
    """A preset cell model with the synthetic log's capacity (its OCV and dynamics do not
    enter the SoC checks here)."""
    model = json.loads((MODELS / "gr-li-coin.json").read_text())
    model["capacity_Ah"] = capacity_Ah
    path.write_text(json.dumps(model))
    return path


def test_replay_counts_an_imported_cv_tail_as_the_tester_did(tmp_path):
    """`cellbench simulate` on an import that kept the tester's counter moves SoC by the
    exact integral of the current (what the counter holds), not by each record's current
    held to the next (1 % over here); the same log without the counter (a bench log,
    sampled at the tick) still holds each sample's current."""
    t = _novonix_csv(tmp_path / "nova.csv")
    bdf = tmp_path / "nova.bdf.csv"
    assert cli.main(["import", str(tmp_path / "nova.csv"), "--out", str(bdf)]) == 0
    model = _model_file(tmp_path / "model.json", 1e-3)
    soc0 = 0.2
    assert cli.main(["simulate", str(bdf), "--model", str(model), "--soc0", str(soc0), "--out",
                     str(tmp_path / "sim.csv")]) == 0
    soc = pd.read_csv(tmp_path / "sim.csv")["SOC / 1"].to_numpy()
    np.testing.assert_allclose(soc, soc0 + _exact_Ah(t) / 1e-3, rtol=0, atol=2e-6)

    bench = tmp_path / "bench.csv"     # the same rows, no sidecar: a log of the bench's own
    shutil.copy(bdf, bench)
    assert cli.main(["simulate", str(bench), "--model", str(model), "--soc0", str(soc0), "--out",
                     str(tmp_path / "sim_bench.csv")]) == 0
    soc = pd.read_csv(tmp_path / "sim_bench.csv")["SOC / 1"].to_numpy()
    i = pd.read_csv(bench)["Current / A"].to_numpy()
    held = np.concatenate(([0.0], np.cumsum(i[:-1] * np.diff(t)))) / 3600.0
    np.testing.assert_allclose(soc, soc0 + held / 1e-3, rtol=0, atol=2e-6)
    assert held[-1] > 1.01 * _exact_Ah(t)[-1]


def _board_charge_Ah(t_s, i_A):
    """Charge the filter counts over a series in the board's convention (each sample's
    current over the interval before it)."""
    return float(np.sum(i_A[1:] * np.diff(t_s))) / 3600.0


def test_the_filter_counts_an_imported_cv_tail_as_the_tester_did(tmp_path):
    """What `cellbench estimate` reads of the import (estimate.read_log_columns), through
    estimate.tester_edges: the current the filter integrates carries the exact charge of
    the decaying CV current between every two records."""
    t = _novonix_csv(tmp_path / "nova.csv")
    bdf = tmp_path / "nova.bdf.csv"
    assert cli.main(["import", str(tmp_path / "nova.csv"), "--out", str(bdf)]) == 0
    cols = estimate.read_log_columns(bdf)
    i, v = cols["Current / A"], cols["Voltage / V"]
    exact = _exact_Ah(t)
    tb, ib, _, real = estimate.tester_edges(t, i, v, cols["tester_steps"], cols["tester_counter_Ah"])
    counted = np.cumsum(np.concatenate(([0.0], ib[1:] * np.diff(tb)))) / 3600.0
    # a step's new current runs at least EDGE_S inside the interval it opened (2 step changes)
    np.testing.assert_allclose(counted[real], exact, rtol=0, atol=2 * estimate.EDGE_S * I_CC_A / 3600.0)
    tb, ib, _, _ = estimate.tester_edges(t, i, v, cols["tester_steps"])   # each record's current
    assert _board_charge_Ah(tb, ib) < 0.99 * exact[-1]


@pytest.mark.parametrize("stop_s", [1000.0, 1300.0])
def test_a_step_change_between_records_ends_when_the_counter_says(stop_s):
    """A CC discharge that stops at ``stop_s``, the rest's first record at 1500 s: with the
    counter, the filter's old current runs to ``stop_s`` (BattMo: the step ended at its
    last record, 1000 s); without it, to just before the rest's record, as held."""
    t = np.array([0.0, 500.0, 1000.0, 1500.0, 1560.0])
    i = np.where(t < stop_s, -6e-3, 0.0)
    i[2] = -6e-3                                   # the step's last record
    steps = np.array([1, 1, 1, 2, 2])
    counter = -6e-3 * np.minimum(t, stop_s) / 3600.0   # what the tester counted
    v = np.full(t.size, 3.3)
    tb, ib, _, real = estimate.tester_edges(t, i, v, steps, counter)
    assert real.sum() == t.size and tb[~real] == pytest.approx(max(stop_s, 1000.0 + estimate.EDGE_S))
    assert _board_charge_Ah(tb, ib) == pytest.approx(counter[-1], rel=1e-6)
    tb, ib, _, real = estimate.tester_edges(t, i, v, steps)
    assert tb[~real] == pytest.approx(1500.0 - estimate.EDGE_S)
    assert _board_charge_Ah(tb, ib) == pytest.approx(-6e-3 * (1500.0 - estimate.EDGE_S) / 3600.0, rel=1e-9)
