"""An imported log's charge is what the tester's own counter counted between its records.

A tester samples the current at each record but counts it continuously: over the ~60 s
between a Novonix's records a CV current decays, and holding a record's value to the next
one over-counts it (the real Novonix log of tests/data/realdata: 3 %). The expectation
here is the exact integral of a known current, never the code's own output.
"""

import numpy as np

from cellbench import cli
from cellbench.fit import data

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
