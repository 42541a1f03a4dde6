"""The charge beyond a low-rate sweep's cut-off (fit.capacity.beyond_cutoff_Ah) and its use in
the capacity, the OCV's SoC map and the SoC anchors.

A loaded sweep stops when its voltage meets the limit, short of the state whose rested voltage
is the limit. Checked against a synthetic cell with a known answer (linear OCV, so the residual
is the polarisation at the cut-off over the OCV's slope) and against PyBaMM's own capacity and
SoC on the reference cells (tests/data/pybamm).
"""

import numpy as np
import pytest
from cellbench import refcells
from cellbench.fit import capacity, ocv, soc
from cellbench.fit.data import load

CAP_AH = 2e-3
I_A = CAP_AH / 20                          # C/20
R0_OHM, R1_OHM, TAU_S = 20.0, 30.0, 300.0  # 5 mV of polarisation at C/20
V_MIN, SLOPE_V = 3.0, 1.0                  # OCV = V_MIN + SLOPE_V * SoC
DT_S = 60.0


def _write(path, t, v, i, step):
    cols = np.column_stack([t, v, i, step])
    np.savetxt(path, cols, delimiter=",", header="Test Time / s,Voltage / V,Current / A,Step Count / 1",
               comments="", fmt=("%.3f", "%.6f", "%.9e", "%d"))
    return path


def _discharge_then_rest(path, cv_tail=False, rest=True, branch_V=0.0):
    """A C/20 discharge from SoC 1 of the linear-OCV cell until its loaded voltage meets V_MIN
    (or, ``cv_tail``, held there while the current falls), then an hour's rest, in which the
    voltage also rises by ``branch_V`` (an electrode relaxing off its discharge branch, with
    no charge moved). Returns the log path and the true SoC at the cut-off."""
    t = np.arange(0.0, 25 * 3600.0, DT_S)
    z = 1.0 - I_A * t / 3600.0 / CAP_AH
    v = V_MIN + SLOPE_V * z - I_A * (R0_OHM + R1_OHM * (1 - np.exp(-t / TAU_S)))
    n = int(np.argmax(v <= V_MIN)) + 1
    t, v, i, step = list(t[:n]), list(v[:n]), [-I_A] * n, [1] * n
    z_end = float(z[n - 1] - I_A * DT_S / 3600.0 / CAP_AH)   # the current flows until the next sample
    if cv_tail:
        for k in range(1, 40):             # current halves every 10 min at the limit
            t.append(t[-1] + DT_S)
            v.append(V_MIN)
            i.append(-I_A * 0.5 ** (k / 10))
            step.append(2)
    if rest:
        rc_V = abs(i[-1]) * R1_OHM
        for k in range(1, 61):
            t.append(t[-1] + DT_S)
            # the IR drop goes at once, the RC part relaxes: the rested voltage is OCV(z_end)
            v.append(V_MIN + SLOPE_V * z_end - rc_V * np.exp(-k * DT_S / TAU_S)
                     + branch_V * (1 - np.exp(-k * DT_S / TAU_S)))
            i.append(0.0)
            step.append(3)
    return _write(path, np.array(t), np.array(v), np.array(i), np.array(step)), z_end


def test_residual_is_the_polarisation_over_the_ocv_slope(tmp_path):
    path, z_end = _discharge_then_rest(tmp_path / "dch.csv")
    log = load(path)
    beyond = capacity.beyond_cutoff_Ah(log, log.sweeps[0])
    # the true residual: the charge between the cut-off state and the rested limit OCV = V_MIN
    assert beyond == pytest.approx(z_end * CAP_AH, rel=0.03)
    # ... which is about the polarisation over the slope (less up to two samples' overshoot)
    assert 0.6 < z_end / (I_A * (R0_OHM + R1_OHM) / SLOPE_V) <= 1.0


def test_no_residual_without_a_rest_or_after_a_cv_tail(tmp_path):
    log = load(_discharge_then_rest(tmp_path / "norest.csv", rest=False)[0])
    assert capacity.beyond_cutoff_Ah(log, log.sweeps[0]) is None
    log = load(_discharge_then_rest(tmp_path / "cv.csv", cv_tail=True)[0])
    assert capacity.beyond_cutoff_Ah(log, log.sweeps[0]) is None


def test_a_rest_rise_beyond_any_shortfall_counts_no_charge(tmp_path):
    """A rest that rises 0.2 V more than the cut-off's polarisation (20 % of the window
    over the end slope; the Arbin half cell's bottom rests give 5.4-10 %) is not a
    shortfall: nothing is counted beyond it, and the capacity is the charge the sweep
    passed, not that plus the 5 % cap."""
    path, z_end = _discharge_then_rest(tmp_path / "branch.csv", branch_V=0.2)
    log = load(path)
    sweep = log.sweeps[0]
    assert capacity.beyond_cutoff_Ah(log, sweep, sweep.charge_Ah) is None
    assert capacity.beyond_cutoff_Ah(log, sweep) == pytest.approx(capacity.MAX_BEYOND_SHARE * sweep.charge_Ah)
    ref = capacity.find_reference([log])
    assert ref["capacity_Ah"] == pytest.approx(sweep.charge_Ah, rel=1e-9)
    assert ref["capacity_Ah"] == pytest.approx((1.0 - z_end) * CAP_AH, rel=0.02)


@pytest.mark.parametrize("name", refcells.cells())
def test_capacity_counts_the_charge_beyond_both_cut_offs(name):
    """PyBaMM's capacity is the charge between the rested limits; the C/20 sweeps stop short of
    them by 0.2-1.9 % (the graphite half cell's bottom, LFP's 0.84 %)."""
    log = load(refcells.log_path(name, "char-log"))
    ref = capacity.find_reference([log])
    true_Ah = refcells.cell(name)["capacity_Ah"]
    passed_Ah = ref["discharge"].charge_Ah
    assert abs(ref["capacity_Ah"] - true_Ah) < 0.2 * abs(passed_Ah - true_Ah) + 0.001 * true_Ah
    assert "beyond the low-rate cut-offs" in capacity.beyond_note(ref)


@pytest.mark.parametrize("name", refcells.cells())
def test_the_sweeps_soc_map_and_anchors_match_pybamms_soc(name):
    """The branches' SoC map and the defining log's anchors at the cut-offs sit where PyBaMM's
    SoC is, not at 0 and 1."""
    log = load(refcells.log_path(name, "char-log"))
    tr = refcells.truth(name, "char-log")
    ref = capacity.find_reference([log])
    for sweep in (ref["charge"], ref["discharge"]):
        z = ocv.sweep_soc(log, sweep)
        assert np.max(np.abs(z - tr["soc"][sweep.start:sweep.stop])) < 3e-3, sweep.sign
    z, _ = soc.trace(log, ref["capacity_Ah"], ref["coulombic_efficiency"], ocv.grid(),
                     np.linspace(2.5, 4.2, ocv.GRID_POINTS), defining=True)
    for sweep in (ref["charge"], ref["discharge"]):
        assert z[sweep.stop - 1] == pytest.approx(tr["soc"][sweep.stop - 1], abs=3e-3)
