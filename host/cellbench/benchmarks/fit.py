"""Fitting speed: ``cellbench.fit.fit_logs`` on a 200,000-sample characterisation log.

The log is made here with :mod:`cellbench.ecm` from a known model (not by the fit code):
``characterisation_profile`` gives a C/20 OCV cycle plus an HPPC-style pulse train as
piecewise-constant current, ``synthetic_log`` samples it at 1 s with measurement noise
and writes a BDF CSV. tests/test_fit.py uses the same generator.
"""

import csv
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import ecm
from ..model import load_model

TARGET_SAMPLES = 200_000


def known_model(r0_ohm=100.0, rc=((60.0, 15.0), (80.0, 400.0)), m_V=0.0, gamma=0.0) -> dict:
    """A cell with known parameters: 0.4 mAh, smooth OCV with steep ends, window = OCV ends."""
    z = np.linspace(0.0, 1.0, 101)
    v = 1.45 + 0.55 * z + 0.08 * np.tanh((z - 0.5) * 5.0) - 0.35 * np.exp(-z / 0.03) + 0.35 * np.exp((z - 1.0) / 0.03)
    return load_model({
        "schema_version": 1,
        "cell": {"name": "known test cell", "chemistry": "test", "active_mass_g": 0.002},
        "capacity_Ah": 4e-4, "window_V": [float(v[0]), float(v[-1])],
        "ocv": {"soc": z.round(6).tolist(), "voltage_V": v.tolist()},
        "r0_ohm": r0_ohm, "rc": [{"r_ohm": r, "tau_s": t} for r, t in rc],
        "hysteresis": {"m_V": m_V, "m0_V": 0.0, "gamma": gamma},
    })


def _cc(model, state, i_A, until_V=None, until_s=None):
    """(current, whole seconds) of one step, run on ``state`` to find voltage cut-offs."""
    result = ecm.run_step(model, state, i_A, until_V=until_V, until_s=until_s)
    return (i_A, max(1, int(result["duration_s"])))


def ocv_cycle_steps(model, state, rate_C=0.05, rest_s=3600):
    """protocols/ocv-c20.json: C/5 to the top, then C/20 down, up and down, resting between."""
    c = model["capacity_Ah"]
    low, high = model["window_V"]
    steps = [_cc(model, state, 0.2 * c, high), _cc(model, state, 0.0, until_s=rest_s)]
    for i_A, until in ((-rate_C * c, low), (rate_C * c, high), (-rate_C * c, low)):
        steps += [_cc(model, state, i_A, until), _cc(model, state, 0.0, until_s=rest_s)]
    return steps


def hppc_steps(model, state, pulse_C=1.0, rest_s=1800, levels=9):
    """protocols/hppc.json: C/5 to the top, rest; at every 10 % SoC a discharge and a charge
    pulse with short rests, then 10 % down at C/2 and a long rest."""
    c = model["capacity_Ah"]
    low, high = model["window_V"]
    steps = [_cc(model, state, 0.2 * c, high), _cc(model, state, 0.0, until_s=rest_s)]
    for _ in range(levels):
        steps += [_cc(model, state, -pulse_C * c, low, 10), _cc(model, state, 0.0, until_s=60),
                  _cc(model, state, 0.75 * pulse_C * c, model["window_V"][1], 10), _cc(model, state, 0.0, until_s=60),
                  _cc(model, state, -0.5 * c, low, 720), _cc(model, state, 0.0, until_s=rest_s)]
    return steps


def sample(model, steps, soc0, dt_s=1.0):
    """Current series at ``dt_s`` for ``steps`` [(i_A, seconds)], and the true voltage."""
    i_A = np.concatenate([np.full(int(round(s / dt_s)), i) for i, s in steps])
    t_s = np.arange(i_A.size) * dt_s
    return t_s, i_A, ecm.simulate(model, t_s, i_A, soc0)


def write_log(path, t_s, i_A, v_V, step_count=None, machine_names=False):
    """A BDF CSV with the three required columns (and Step Count when given)."""
    names = (["test_time_second", "voltage_volt", "current_ampere", "step_count"] if machine_names
             else ["Test Time / s", "Voltage / V", "Current / A", "Step Count / 1"])
    cols = [t_s, v_V, i_A] + ([step_count] if step_count is not None else [])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names[:len(cols)])
        for row in zip(*cols):
            w.writerow([f"{row[0]:.3f}", f"{row[1]:.6f}", f"{row[2]:.4e}"] + [str(int(x)) for x in row[3:]])
    return Path(path)


def synthetic_log(path, model, seed=0, sigma_v_V=3e-4, sigma_i_rel=1e-3, hppc_levels=9, samples=None):
    """C/20 cycle + HPPC on ``model`` from SoC 0.5, noisy; returns the log's path.

    Sampled every 1 s, or at ``samples`` evenly spread record times when given (to make a
    log of a set size; the current is still exact piecewise-constant between them).
    """
    state = ecm.new_state(model, 0.5)
    steps = ocv_cycle_steps(model, state) + hppc_steps(model, state, levels=hppc_levels)
    t_s, i_A, sim = sample(model, steps, 0.5)
    labels = np.repeat(np.arange(1, len(steps) + 1), [int(round(s)) for _, s in steps])
    v_V = sim["v_V"]
    if samples:
        keep = np.unique(np.round(np.linspace(0, t_s.size - 1, samples)).astype(int))
        t_s, i_A, v_V, labels = t_s[keep], i_A[keep], v_V[keep], labels[keep]
    rng = np.random.default_rng(seed)
    v = v_V + rng.normal(0.0, sigma_v_V, t_s.size)
    i = i_A * (1.0 + rng.normal(0.0, sigma_i_rel, t_s.size))
    return write_log(path, t_s, i, v, labels)


def run() -> list:
    from ..fit import fit_logs

    model = known_model()
    with tempfile.TemporaryDirectory() as tmp:
        path = synthetic_log(Path(tmp) / "char.bdf.csv", model, samples=TARGET_SAMPLES)
        n = sum(1 for _ in open(path)) - 1
        rows = []
        for rc, options in ((1, {}), (2, {}), (2, {"hysteresis": True, "r0_soc": True})):
            elapsed = float("inf")
            for _ in range(2):      # best of two: the machine is shared
                start = time.perf_counter()
                fitted, _ = fit_logs([path], rc=rc, **options)
                elapsed = min(elapsed, time.perf_counter() - start)
            extra = "".join(f", {k}" for k in options)
            rows.append({"name": f"fit {n} samples, {rc} RC{extra}", "value": round(elapsed, 2), "unit": "s",
                         "note": f"C/20 cycle + HPPC (about 1.4 s per record), target < 10 s (best of 2); RMSE "
                                 f"{fitted['provenance']['fit_rmse_V'] * 1e3:.2f} mV"})
    return rows
