"""The proof on data this project did not generate: fit and filter on the PyBaMM reference cells.

For each cell of tests/data/pybamm/ (cellbench.refcells; made by tools/pybamm_refs.py from
PyBaMM's DFN model, with the board's noise, quantisation and a current offset of 0.2 % of
1C added), :func:`evaluate_cell` fits a model (``cellbench.fit.fit_logs``) from a
characterisation log, then on each held-out drive profile (6 h, -2C..+1C with rests, down
to below 10 % SoC) reports:

- ``v_rmse_V``: the model's open-loop voltage (``cellbench.ecm.simulate`` from the true start
  SoC, driven by the true current: the model's own error, not the sensor's) against the true
  terminal voltage;
- the SoC filter (``cellbench.estimate.estimate``, the board's filter on the host) on the
  measured current and voltage, against the true SoC: RMSE from the right start (whole
  profile and after the first hour), from a start 40 % too low (after the first hour), the
  largest error, and the share of samples inside the reported +-3 sigma band;
- coulomb counting beside it: the true start and true capacity, the measured current;
- the fit's wall time.

:func:`run` (``make bench``) gives these per cell with the issue-9 targets, plus the fit's
time on a 500,000-sample log.
"""

import tempfile
import time
from pathlib import Path

import numpy as np

from .. import ecm, refcells
from ..bdflog import read_log
from ..model import load_model

FIT_RUNS = ("char-log",)    # the ordinary characterisation log
START_OFF = 0.4             # the wrong start: this much below the true SoC
FIRST_HOUR_S = 3600.0
V_TARGET_SLOPED_V = 0.010
V_TARGET_FLAT_V = 0.025
SOC_TARGET_OFF = 0.01       # SoC RMSE after the first hour from a start 40 % off
INSIDE_TARGET = 0.95        # share of samples inside +-3 sigma
FIT_SAMPLES = 500_000
FIT_TIME_TARGET_S = 10.0


def fit_cell(name, runs=FIT_RUNS, refdir=refcells.REFDIR):
    """(model dict, report, fit wall time s) from the cell's characterisation ``runs``."""
    from ..fit import fit_logs

    paths = [refcells.log_path(name, r, refdir) for r in runs]
    start = time.perf_counter()
    model, report = fit_logs(paths)
    return load_model(model), report, time.perf_counter() - start


def coulomb_count(t_s, i_A, soc0, capacity_Ah):
    """SoC by counting charge: sample k's current over the interval before it (A, > 0 charges)."""
    dt = np.diff(t_s, prepend=t_s[0])
    return soc0 + np.cumsum(i_A * dt) / (capacity_Ah * 3600.0)


def _rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if np.size(x) else float("nan")


def replay(model, name, run="drive", refdir=refcells.REFDIR) -> dict:
    """The held-out metrics of ``model`` on the cell's drive profile ``run`` (module docstring)."""
    from ..estimate import estimate

    facts = refcells.cell(name, refdir)
    log = read_log(refcells.log_path(name, run, refdir))
    tr = refcells.truth(name, run, refdir)
    t, i_meas, v_meas = log["Test Time / s"], log["Current / A"], log["Voltage / V"]
    z_true, soc0 = tr["soc"], float(tr["soc"][0])
    late = t - t[0] >= FIRST_HOUR_S
    v_model = ecm.simulate(model, tr["t_s"], tr["i_A"], soc0)["v_V"]
    right = estimate(model, t, i_meas, v_meas, soc0=soc0)
    off = estimate(model, t, i_meas, v_meas, soc0=max(0.0, soc0 - START_OFF))
    err, err_off = right["soc"] - z_true, off["soc"] - z_true
    cc_err = coulomb_count(t, i_meas, soc0, facts["capacity_Ah"]) - z_true
    return {
        "v_rmse_V": _rms(v_model - tr["v_V"]),
        "v_max_V": float(np.max(np.abs(v_model - tr["v_V"]))),
        "soc_rmse": _rms(err),
        "soc_rmse_after_1h": _rms(err[late]),
        "soc_rmse_off": _rms(err_off),
        "soc_rmse_off_after_1h": _rms(err_off[late]),
        "soc_max_err": float(np.max(np.abs(err))),
        "soc_max_err_off_after_1h": float(np.max(np.abs(err_off[late]))),
        "inside_3sigma": float(np.mean(np.abs(err) <= 3.0 * right["soc_std"])),
        "inside_3sigma_off_after_1h": float(np.mean(np.abs(err_off[late]) <= 3.0 * off["soc_std"][late])),
        "cc_rmse": _rms(cc_err),
        "cc_rmse_after_1h": _rms(cc_err[late]),
        "soc_min_true": float(np.min(z_true)),
    }


def evaluate_cell(name, runs=FIT_RUNS, refdir=refcells.REFDIR) -> dict:
    """Fit on ``runs``, replay every held-out profile: ``{"fit_s", "flat", "v_target_V" (the
    issue's voltage target for this cell), "profiles": {run: replay's metrics}}``."""
    model, _, fit_s = fit_cell(name, runs, refdir)
    flat = bool(refcells.cell(name, refdir)["flat"])
    profiles = {run: replay(model, name, run, refdir) for run in refcells.held_out_runs(name, refdir)}
    return {"fit_s": fit_s, "flat": flat, "profiles": profiles,
            "v_target_V": V_TARGET_FLAT_V if flat else V_TARGET_SLOPED_V}


def upsampled_log(name, run, n, path, refdir=refcells.REFDIR):
    """Write ``run`` resampled to ``n`` evenly spaced samples as a BDF CSV at ``path``: the
    current and step of the record each new sample falls before (the board's records hold the
    current of the interval before them), the voltage interpolated. For timing only."""
    log = read_log(refcells.log_path(name, run, refdir))
    t = log["Test Time / s"]
    t_new = np.linspace(t[0], t[-1], n)
    k = np.minimum(np.searchsorted(t, t_new, side="left"), t.size - 1)
    v = np.interp(t_new, t, log["Voltage / V"])
    cols = np.column_stack([t_new, v, log["Current / A"][k], log["Step Count / 1"][k]])
    header = "Test Time / s,Voltage / V,Current / A,Step Count / 1"
    np.savetxt(path, cols, delimiter=",", header=header, comments="", fmt=("%.3f", "%.6f", "%.9e", "%d"))
    return path


def fit_time_500k(name) -> float:
    """Wall time (s) of the fit on the cell's characterisation log resampled to 500k samples."""
    from ..fit import fit_logs

    with tempfile.TemporaryDirectory() as tmp:
        path = upsampled_log(name, FIT_RUNS[0], FIT_SAMPLES, Path(tmp) / "big.bdf.csv")
        start = time.perf_counter()
        fit_logs([path])
        return time.perf_counter() - start


def _rows(name, run, m, v_target_V, flat) -> list:
    kind = "flat" if flat else "sloped"
    pct = lambda x: 100.0 * x  # noqa: E731
    return [
        {"name": f"{name} {run}: held-out V RMSE", "value": 1e3 * m["v_rmse_V"], "unit": "mV",
         "note": f"target <= {1e3 * v_target_V:g} mV ({kind}); max {1e3 * m['v_max_V']:.0f} mV"},
        {"name": f"{name} {run}: SoC RMSE right start (after 1 h)", "value": pct(m["soc_rmse_after_1h"]),
         "unit": "%", "note": f"target <= coulomb counting {pct(m['cc_rmse_after_1h']):.2f} %; whole "
                              f"profile {pct(m['soc_rmse']):.2f} % (counting {pct(m['cc_rmse']):.2f} %)"},
        {"name": f"{name} {run}: SoC RMSE start 40 % off, after 1 h", "value": pct(m["soc_rmse_off_after_1h"]),
         "unit": "%", "note": f"target <= 1 %; max {pct(m['soc_max_err_off_after_1h']):.1f} %; whole "
                              f"profile {pct(m['soc_rmse_off']):.1f} %"},
        {"name": f"{name} {run}: SoC max error right start", "value": pct(m["soc_max_err"]), "unit": "%",
         "note": f"true SoC reaches {pct(m['soc_min_true']):.1f} %"},
        {"name": f"{name} {run}: inside +-3 sigma", "value": pct(m["inside_3sigma"]), "unit": "%",
         "note": f"target >= 95 %; from 40 % off after 1 h {pct(m['inside_3sigma_off_after_1h']):.0f} %"},
    ]


def run():
    rows = []
    names = refcells.cells()
    for name in names:
        m = evaluate_cell(name)
        for run, metrics in m["profiles"].items():
            rows += _rows(name, run, metrics, m["v_target_V"], m["flat"])
        rows.append({"name": f"{name}: fit time", "value": m["fit_s"], "unit": "s",
                     "note": f"fit on {'+'.join(FIT_RUNS)}"})
    if names:
        rows.append({"name": f"fit time, {FIT_SAMPLES:,} samples", "value": fit_time_500k(names[0]),
                     "unit": "s", "note": f"target < {FIT_TIME_TARGET_S:g} s ({names[0]} {FIT_RUNS[0]} "
                                          f"resampled)"})
    return rows
