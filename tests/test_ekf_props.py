"""Properties of the SoC filter (hypothesis): OCV table, covariance health, clamps,
tracking, convergence, consistency (NEES) and honest uncertainty on a flat plateau.

Truth comes from cellbench.ecm.simulate (benchmarks.ekf.board_truth), not from the filter.
"""

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import chi2

from cellbench import fw
from cellbench.benchmarks.ekf import (FLAT, SLOPED, board_truth, cycling_profile, measured,
                                      mismatch_case)
from cellbench.estimate import estimate

ekf = fw.module("ekf")
SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _model(voltages, r0=50.0, nrc=1, bias=False):
    m = copy.deepcopy(SLOPED)
    m["ocv"] = {"soc": [k / (len(voltages) - 1) for k in range(len(voltages))],
                "voltage_V": list(voltages)}
    m["window_V"] = [voltages[0], voltages[-1]]
    m["r0_ohm"] = r0
    m["rc"] = m["rc"][:nrc]
    m["estimator"]["bias"] = bias
    return m


increasing_ocv = st.lists(st.floats(1e-4, 0.5), min_size=2, max_size=25).map(
    lambda steps: [round(1.0 + sum(steps[:k]), 9) for k in range(len(steps) + 1)])


@SETTINGS
@given(increasing_ocv, st.lists(st.floats(ekf.SOC_MIN, ekf.SOC_MAX), min_size=2, max_size=30))
def test_ocv_is_monotonic_bounded_and_invertible(volts, zs):
    f = ekf.Ekf(_model(volts))
    zs = sorted(zs)
    v = [f.ocv(z) for z in zs]
    assert all(b >= a for a, b in zip(v, v[1:]))
    # bounded by the end segments' linear extrapolation to the SoC clamp
    lo = volts[0] - 0.05 * (volts[1] - volts[0]) * (len(volts) - 1)
    hi = volts[-1] + 0.05 * (volts[-1] - volts[-2]) * (len(volts) - 1)
    assert all(lo - 1e-9 <= x <= hi + 1e-9 for x in v)
    for z, x in zip(zs, v):
        assert abs(f.soc_at(x) - z) < 1e-7
    for k, vk in enumerate(volts):  # the table's own points come back exactly
        assert abs(f.ocv(k / (len(volts) - 1)) - vk) < 1e-9


samples = st.lists(st.tuples(
    st.integers(-20_000_000, 20_000_000),                    # i_nA: the board's +-20 mA
    st.integers(0, 5_000_000),                               # v_uV: 0..5 V
    st.sampled_from([0, 0, 1, 100, 1000, 60_000, 10**7])),   # dt_ms: repeats, gaps
    min_size=1, max_size=60)


def _is_spd(P, n):
    P = np.reshape(np.asarray(P, dtype=float), (n, n))
    if not np.array_equal(P, P.T):
        return False
    d = np.sqrt(np.diag(P))
    if not np.all(d > 0):
        return False
    return bool(np.linalg.eigvalsh(P / np.outer(d, d)).min() > 0)


@SETTINGS
@given(samples, st.sampled_from([1, 2]), st.booleans(), st.one_of(st.none(), st.floats(0, 1)))
def test_covariance_stays_spd_and_soc_in_clamp(seq, nrc, bias, soc0):
    m = _model([3.0, 3.4, 3.6, 3.7, 3.9, 4.2], nrc=nrc, bias=bias)
    f = ekf.Ekf(m)
    f.reset(soc=soc0) if soc0 is not None else f.reset(v_uV=seq[0][1])
    for i_nA, v_uV, dt_ms in seq:
        f.step(i_nA, v_uV, dt_ms)
        assert ekf.SOC_MIN <= f.soc <= ekf.SOC_MAX
        # SoC 0 and 1 are the rested limits: past them the estimate is off by the excess at least
        assert f.P[0] >= _past_window(f.soc) ** 2
        assert _is_spd(f.P, f.n)
        assert -1.0 <= f.x[f.ih] <= 1.0
    # the host kernel, fed the same sequence, agrees and is just as healthy
    t = np.cumsum([dt for _, _, dt in seq]) / 1000.0
    i = np.array([s[0] for s in seq]) * 1e-9
    v = np.array([s[1] for s in seq]) * 1e-6
    f.reset(soc=soc0) if soc0 is not None else f.reset(v_uV=seq[0][1], i_nA=seq[0][0])
    out = estimate(m, t, i, v, soc0=soc0, full=True)
    assert np.all((out["soc"] >= ekf.SOC_MIN) & (out["soc"] <= ekf.SOC_MAX))
    assert all(np.ravel(P)[0] >= _past_window(z) ** 2 for z, P in zip(out["soc"], out["P"]))
    assert all(_is_spd(P, f.n) for P in out["P"])


def _past_window(z):
    """How far SoC ``z`` lies outside [0, 1] (0 inside)."""
    return max(z - 1.0, -z, 0.0)


# C-rates: 0 or at least 0.05C either way. A current inside the filter's rest deadband
# (3 sigma_i) does not set the instantaneous hysteresis sign s, while the simulator's does.
rates = st.one_of(st.just(0.0), st.floats(0.05, 2.0), st.floats(-2.0, -0.05))
pulses = st.lists(st.tuples(rates, st.integers(10, 400)), min_size=3, max_size=12)


def _pulse_profile(steps, c_Ah, rest_s=60):
    """Current (A) per second: each (C-rate, seconds) step followed by a rest."""
    i = [0.0] * 30
    for rate, secs in steps:
        i += [rate * c_Ah] * secs + [0.0] * rest_s
    return np.arange(len(i), dtype=float), np.array(i)


@SETTINGS
@given(pulses, st.floats(0.3, 0.7))
def test_perfect_model_without_noise_tracks_truth(steps, soc_true0):
    m = copy.deepcopy(SLOPED)
    m["estimator"]["bias"] = False
    t, i = _pulse_profile(steps, m["capacity_Ah"])
    truth = board_truth(m, t, i, soc_true0)
    if truth["soc"].min() < 0.01 or truth["soc"].max() > 0.99:
        return  # keep inside the table, where the simulator's OCV equals the filter's
    out = estimate(m, t, i, truth["v_V"], soc0=soc_true0)
    assert np.max(np.abs(out["soc"] - truth["soc"])) < 1e-6
    assert np.max(np.abs(out["v_model"] - truth["v_V"])) < 1e-6


@SETTINGS
@given(st.floats(0.3, 0.7), st.floats(-0.4, 0.4), st.integers(0, 2**31))
def test_converges_from_a_wrong_initial_soc(soc_true0, error, seed):
    m = SLOPED
    steps = [(-1.0, 120), (0.5, 200), (-2.0, 60), (1.0, 150), (-0.5, 300)] * 3
    t, i = _pulse_profile(steps, m["capacity_Ah"])
    truth = board_truth(m, t, i, soc_true0)
    e = m["estimator"]
    i_m, v_m = measured(truth, i, 0.0, e["sigma_i_A"], e["sigma_v_V"], seed)
    soc0 = min(max(soc_true0 + error, 0.0), 1.0)
    out = estimate(m, t, i_m, v_m, soc0=soc0)
    late = t > t[-1] - 600
    assert np.max(np.abs(out["soc"][late] - truth["soc"][late])) < 0.02
    # and it knows roughly how well it knows: the error sits within 3 sigma at the end
    assert abs(out["soc"][-1] - truth["soc"][-1]) < 3 * out["soc_std"][-1] + 2e-3


def test_nees_within_95_percent_chi_square_band():
    """Monte Carlo (Bar-Shalom): initial states drawn from the filter's prior, noise as the
    model states. The SoC NEES averaged over N runs is chi-square(N)/N if the filter is
    consistent; its time average and its final value must lie in the 95 % band. (The share
    of time points inside the band is not tested: successive points are strongly
    correlated, so that share swings widely even for a consistent filter.)"""
    m = copy.deepcopy(SLOPED)
    m["estimator"].update(bias=False, q_soc=1e-16, q_rc_V2=1e-16, q_h=1e-16, p0_soc=0.01,
                          p0_rc_V2=1e-6, p0_h=1e-4)
    m["hysteresis"]["m0_V"] = 0.0
    e = m["estimator"]
    runs, rng = 100, np.random.default_rng(5)
    t, i = _pulse_profile([(-1.0, 120), (0.5, 200), (-1.5, 60), (1.0, 150)] * 3,
                          m["capacity_Ah"])
    nees = np.zeros(t.size)
    for r in range(runs):
        z0 = 0.5 + rng.normal(0.0, np.sqrt(e["p0_soc"]))
        h0 = rng.normal(0.0, np.sqrt(e["p0_h"]))
        v_rc0 = rng.normal(0.0, np.sqrt(e["p0_rc_V2"]), len(m["rc"]))
        truth = board_truth(m, t, i, z0, h0=h0, v_rc0=v_rc0)
        i_m, v_m = measured(truth, i, 0.0, e["sigma_i_A"], e["sigma_v_V"], seed=r)
        out = estimate(m, t, i_m, v_m, soc0=0.5)
        nees += (out["soc"] - truth["soc"]) ** 2 / out["soc_std"] ** 2
    nees /= runs
    lo, hi = chi2.ppf([0.025, 0.975], runs) / runs
    assert lo <= nees.mean() <= hi, (lo, nees.mean(), hi)
    assert lo <= nees[-1] <= hi, (lo, nees[-1], hi)


def test_flat_plateau_std_grows_then_reanchors():
    """On the plateau the gain collapses: the std must grow (counting and q_soc), cover the
    true error, and shrink again once the voltage reaches the steep end."""
    m = copy.deepcopy(FLAT)
    e = m["estimator"]
    t, i = cycling_profile(m, 1, 1.0, pulses=False)
    truth = board_truth(m, t, i, 0.97)
    i_m, v_m = measured(truth, i, 0.0, e["sigma_i_A"], e["sigma_v_V"], seed=2)
    out = estimate(m, t, i_m, v_m, soc0=0.97)
    z = truth["soc"]
    plateau = (z < 0.85) & (z > 0.15) & (i < 0)
    std = out["soc_std"][plateau]
    assert std[-1] > std[0]
    err = np.abs(out["soc"] - z)
    assert np.all(err[plateau] < 3 * out["soc_std"][plateau] + 1e-3)
    end = np.argmin(z)  # the steep low end, before the charge
    assert out["soc_std"][end] < std.max()
    assert err[end] < 0.01


# --- issue 9: a filter model that is not the cell (benchmarks.ekf.mismatch_case) ---------
# The truth is a richer cell (R0 and a slow RC rising at low SoC, Butler-Volmer) than the
# filter's one-RC model with an OCV a few mV off; its model_error comes from a held-out
# drive (cellbench.fit.error.table); the board reads a 0.2 %-of-1C current offset and 1 mV
# noise; the drive reaches 4 % SoC. Each case is a 6 h drive at 1 s (about 0.5 s here).

@pytest.mark.parametrize("base", [SLOPED, FLAT], ids=["sloped", "flat"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_right_start_is_no_worse_than_counting_and_honest(base, seed):
    r = mismatch_case(base, seed=seed)
    assert r["rmse"] <= r["cc_rmse"], r
    assert r["inside"] >= 0.95, r


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sloped_cell_converges_from_40_percent_off(seed):
    r = mismatch_case(SLOPED, seed=seed, soc0_error=-0.4)
    assert r["rmse"] <= 0.01 and r["max"] <= 0.012, r
    assert r["inside"] >= 0.95, r


@pytest.mark.parametrize("base", [SLOPED, FLAT], ids=["sloped", "flat"])
def test_capacity_state_tracks_a_faded_cell(base):
    """The cell has 90 % of the model's capacity: with the capacity-scale state the filter
    finds it (within 4 %) and its band stays honest; without it the band does not hold."""
    with_state = mismatch_case(base, capacity_scale=0.9, hours=12.0, capacity=True,
                               p0_cap=0.0025)  # a cell known to have faded: 5 % std
    without = mismatch_case(base, capacity_scale=0.9, hours=12.0)
    assert abs(with_state["capacity"] - 0.9) < 0.04, with_state
    assert with_state["inside"] >= 0.95, with_state
    assert with_state["rmse"] < without["rmse"], (with_state, without)
    assert without["inside"] < 0.95, without  # the case is one the state is needed for


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flat_cell_from_40_percent_off_keeps_an_honest_band(seed):
    """On a plateau the voltage cannot say where SoC is, so a start 40 % off is only
    resolved at the steep ends (not within the first hour); until then, and across the
    knee where a linearised filter collapses its variance on the wrong side, the band
    must still cover the truth."""
    r = mismatch_case(FLAT, seed=seed, soc0_error=-0.4)
    assert r["inside"] >= 0.95, r
