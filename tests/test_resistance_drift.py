"""The resistance estimator's drift rates (firmware/resistance.py, issue 14): ageing ramps
the resistances with the charge passed, and a random walk tuned to average noisy edges
lags a ramp; the learnt rates remove that lag. The expectation is the synthetic cell's
own ramp; the host twin (cellbench.estimate_kernel res_*) must give the same numbers.
"""

import math

import numpy as np
import pytest

from cellbench import estimate_kernel as ek
from cellbench import fw

R0_OHM = 200.0
R1_OHM = 33.0
TAU_S = 5.0
ONE_C_A = 0.35e-3
I_MIN_A = 2e-6


def ramp_edges(cycles=40, growth_per_cycle=0.015, noise_V=0.6e-3, dt_s=2.0, seed=1):
    """Samples (i A, y V, dt s) of 1C cycles (2000 s out, 60 s rest, 2000 s back, 60 s rest)
    of a cell whose R0 and rc[0] both grow by ``growth_per_cycle`` of their fresh values
    per equivalent full cycle of charge passed (the plant's linear law; 0.56 of them per
    cycle here), with the truth scale per sample."""
    rng = np.random.default_rng(seed)
    blocks = [(-ONE_C_A, 2000.0), (0.0, 60.0), (ONE_C_A, 2000.0), (0.0, 60.0)]
    v_rc, q_cycles = 0.0, 0.0
    out = []
    for _ in range(cycles):
        for i, span in blocks:
            for _ in range(int(span / dt_s)):
                # the current has flowed for dt_s when the board samples (it measures,
                # then sets the next current: an edge is one sample after the change)
                scale = 1.0 + growth_per_cycle * q_cycles
                a = math.exp(-dt_s / TAU_S)
                v_rc = a * v_rc + (1 - a) * R1_OHM * scale * i
                q_cycles += abs(i) * dt_s / (3600.0 * ONE_C_A) / 2.0  # equivalent full cycles
                out.append((i, R0_OHM * scale * i + v_rc + rng.normal(0.0, noise_V), dt_s, scale))
    return out


def firmware_run(samples, **constants):
    mod = fw.module("resistance")
    saved = {k: getattr(mod, k) for k in constants}
    for k, v in constants.items():
        setattr(mod, k, v)
    try:
        rs = mod.Resistance(TAU_S, 1e-7, 3e-8, 0.04, 0.04, 3e-3, ONE_C_A)
        track = []
        for i, y, dt, scale in samples:
            rs.step(i, y, dt, I_MIN_A, R0_OHM, R1_OHM, 0.0, 0.5)
            track.append((rs.v[mod._S], rs.v[mod._R], scale))
        return rs, np.array(track)
    finally:
        for k, v in saved.items():
            setattr(mod, k, v)


def test_the_rates_remove_the_lag_behind_a_ramp():
    """Over three noise draws (the edges' noise makes any one run wander by a few %), the
    mean error of the R_ct scale over the last 20 of 40 cycles, with and without the rates."""
    lag_walk, lag_rates, worst = [], [], 0.0
    for seed in (1, 2, 3):
        samples = ramp_edges(seed=seed)
        late = slice(len(samples) // 2, None)  # after 20 cycles: the rates have learnt
        _, with_rates = firmware_run(samples)
        _, walk_only = firmware_run(samples, _RATE_GAIN=0.0)
        lag_walk.append(np.mean(walk_only[late, 1] / walk_only[late, 2] - 1))
        lag_rates.append(np.mean(with_rates[late, 1] / with_rates[late, 2] - 1))
        worst = max(worst, np.max(np.abs(with_rates[late, 1] / with_rates[late, 2] - 1)))
        assert abs(np.mean(with_rates[late, 0] / with_rates[late, 2] - 1)) < 0.01  # R0's scale
    assert np.mean(lag_walk) < -0.03                            # a random walk trails a ramp
    assert abs(np.mean(lag_rates)) < 0.6 * abs(np.mean(lag_walk))  # the rates catch up
    assert worst < 0.08


def test_a_fresh_cell_learns_no_drift():
    samples = ramp_edges(cycles=30, growth_per_cycle=0.0)
    rs, track = firmware_run(samples)
    mod = fw.module("resistance")
    assert abs(rs.v[mod._DR]) < 0.005  # scale per 1C-hour (the ramp's would be 0.0075)
    assert np.max(np.abs(track[len(track) // 3:, 1] - 1)) < 0.05


def test_kernel_matches_firmware_with_the_rates():
    """The host twin's res_* (estimate_kernel) and firmware/resistance.py, sample by sample,
    over enough edges and charge for the rates to learn."""
    samples = ramp_edges(cycles=12)
    mod = fw.module("resistance")
    rs, track = firmware_run(samples)
    e = ek.pack_res(mod.Resistance(TAU_S, 1e-7, 3e-8, 0.04, 0.04, 3e-3, ONE_C_A), mod, np.float64)
    ek.res_reset(e)
    twin = []
    for i, y, dt, _ in samples:
        ek.res_step(e, i, y, dt, I_MIN_A, R0_OHM, R1_OHM, 0.0, 0.5)
        twin.append((e[ek.E_S], e[ek.E_RS]))
    twin = np.array(twin)
    assert e[ek.E_EDGES] == rs.edges >= 40
    assert e[ek.E_DR] != 0.0
    np.testing.assert_allclose(twin, track[:, :2], rtol=1e-10, atol=0)
    assert e[ek.E_DR] == pytest.approx(rs.v[mod._DR], rel=1e-10)
