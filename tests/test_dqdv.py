"""dQ/dV: peaks where the known plateaus are, and the curve integrates back to the charge."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellbench.analyze import analyze_log
from cellbench.analyze.dqdv import dqdv, q_on_grid
from cellbench.analyze.series import prepare
from cellbench.analyze.synthetic import PlateauCell, make_log
from cellbench.errors import InputError

CAP_AH = 0.35e-3
I_A = 0.07e-3


def one_cycle(cell, dt_s=5.0, noise_V=0.0, seed=0):
    # From z = 0.98 down to 0.02 and back: both plateaus are crossed on both branches.
    t_s = 0.96 * 3600 * CAP_AH / I_A
    log, truth = make_log(cell, [{"i_dch_A": I_A, "t_dch_s": t_s, "i_chg_A": I_A, "t_chg_s": t_s}],
                          dt_s=dt_s, z0=0.98)
    if noise_V:
        log["Voltage / V"] = log["Voltage / V"] + np.random.default_rng(seed).normal(0, noise_V, len(log["Voltage / V"]))
    return prepare(log), truth


def test_two_plateaus_found_on_both_branches():
    cell = PlateauCell(CAP_AH, plateaus_V=(1.55, 1.85), weights=(0.5, 0.35), r0_ohm=100.0)
    s, _ = one_cycle(cell)
    shift = I_A * 100.0  # the IR drop moves charge peaks up and discharge peaks down
    chg = dqdv(s, 1, "charge")
    dch = dqdv(s, 1, "discharge")
    np.testing.assert_allclose(chg["peaks_V"], [1.55 + shift, 1.85 + shift], atol=0.0015)
    np.testing.assert_allclose(dch["peaks_V"], [1.55 - shift, 1.85 - shift], atol=0.0015)
    # The bigger plateau holds more charge, so its peak is higher.
    assert chg["peak_heights"][0] > chg["peak_heights"][1]


def test_dqdv_integrates_to_the_branch_charge():
    cell = PlateauCell(CAP_AH, plateaus_V=(1.55, 1.85), weights=(0.5, 0.35), r0_ohm=50.0)
    s, truth = one_cycle(cell)
    for branch, key in (("charge", "q_chg_Ah"), ("discharge", "q_dch_Ah")):
        c = dqdv(s, 1, branch, mass_g=None)
        area = np.trapezoid(c["dqdv"], c["v_V"])
        assert area == pytest.approx(1e3 * truth[key][0], rel=0.01)
        assert np.all(c["dqdv"] >= -1e-12)
        assert np.all(np.diff(c["v_V"]) > 0)


def test_peaks_survive_voltage_noise():
    cell = PlateauCell(CAP_AH, plateaus_V=(1.55,), weights=(0.9,), r0_ohm=50.0)
    s, _ = one_cycle(cell, dt_s=2.0, noise_V=0.0005)
    c = dqdv(s, 1, "discharge", sigma_V=0.005)
    assert len(c["peaks_V"]) == 1
    assert c["peaks_V"][0] == pytest.approx(1.55 - I_A * 50.0, abs=0.003)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v1=st.floats(1.2, 1.6), gap=st.floats(0.15, 0.6), w1=st.floats(0.3, 0.6),
       dv_mV=st.sampled_from([0.5, 1.0, 2.0]))
def test_peak_positions_property(v1, gap, w1, dv_mV):
    cell = PlateauCell(CAP_AH, plateaus_V=(v1, v1 + gap), weights=(w1, 0.85 - w1), r0_ohm=0.0,
                       window_V=(1.0, 2.5))
    s, _ = one_cycle(cell, dt_s=10.0)
    for branch in ("charge", "discharge"):
        c = dqdv(s, 1, branch, dv_V=dv_mV / 1e3, sigma_V=0.004)
        np.testing.assert_allclose(c["peaks_V"], [v1, v1 + gap], atol=dv_mV / 1e3 + 0.001)


def test_q_on_grid_is_monotonic_even_when_voltage_wiggles():
    v = np.array([1.0, 1.1, 1.05, 1.2, 1.2, 1.2, 1.3])
    q = np.arange(7, dtype=float)
    grid, qg = q_on_grid(v, q, 0.01, increasing=True)
    assert grid[0] == 1.0 and grid[-1] == pytest.approx(1.3)
    assert np.all(np.diff(qg) >= 0)
    # Charge passed while the voltage stood at 1.2 V lands between 1.2 and 1.3 V.
    assert qg[np.argmin(np.abs(grid - 1.2))] == pytest.approx(3.0)
    assert qg[-1] == pytest.approx(6.0)


def test_analysis_reports_peaks_per_selected_cycle():
    cell = PlateauCell(CAP_AH, plateaus_V=(1.55,), weights=(0.9,), r0_ohm=50.0)
    t_s = 0.9 * 3600 * CAP_AH / I_A
    cyc = [{"i_dch_A": I_A, "t_dch_s": t_s, "i_chg_A": I_A, "t_chg_s": t_s}] * 4
    log, _ = make_log(cell, cyc, dt_s=10.0, z0=0.95)
    r = analyze_log(log, mass_mg=2.0, dqdv_cycles=[1, 4], mode="half", figures=False)
    assert [(p["cycle"], p["branch"]) for p in r.summary["dqdv_peaks"]] == [
        (1, "charge"), (1, "discharge"), (4, "charge"), (4, "discharge")]
    assert all(p["unit"] == "mAh/(g V)" for p in r.summary["dqdv_peaks"])
    with pytest.raises(InputError, match="dqdv_cycles"):
        analyze_log(log, dqdv_cycles=[7], figures=False)


def test_bad_branch_and_grid_rejected():
    cell = PlateauCell(CAP_AH, plateaus_V=(1.55,), weights=(0.9,))
    s, _ = one_cycle(cell, dt_s=60.0)
    with pytest.raises(InputError):
        dqdv(s, 1, "up")
    with pytest.raises(InputError):
        dqdv(s, 1, "charge", dv_V=0.0)
    assert dqdv(s, 99, "charge") is None
