"""Differential capacity dQ/dV of one branch (charge or discharge) of one cycle.

Method (as cellpy and BEEP do it): the charge passed in the branch, q, is tabulated
against voltage on a uniform grid, smoothed with a Gaussian kernel and differentiated.
Voltage is made monotonic first (running maximum on charge, running minimum on
discharge) so that noise and relaxation wiggles do not fold q(V) back on itself; the
charge passed on a flat plateau then lands in the grid interval it crosses.

Both branches are reported as positive dQ/dV (q counts up in the branch's own direction,
V moves the same way). Units: mAh/V, or mAh/(g V) with a mass. Peaks are found with
scipy.signal.find_peaks, keeping those of at least ``prominence`` times the highest value.
Charge passed once the voltage stops rising (a constant-voltage step at the end of the
branch) lies beyond the grid's last point and is left out, as dQ/dV is about the
galvanostatic part.
"""

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks

from ..errors import InputError

BRANCHES = ("charge", "discharge")


def branch_samples(series, cycle, branch):
    """(v_V, q_Ah) of the samples of ``branch`` in ``cycle``; q counts from 0 up."""
    if branch not in BRANCHES:
        raise InputError(f"branch: must be charge or discharge, not {branch!r}")
    want = 1 if branch == "charge" else -1
    idx = np.flatnonzero((series.cycle == cycle) & (series.sign == want))
    cum = series.q_chg_Ah if branch == "charge" else series.q_dch_Ah
    if len(idx) == 0:
        return np.empty(0), np.empty(0)
    return series.v_V[idx], cum[idx] - cum[idx[0]]


def q_on_grid(v_V, q, dv_V, increasing):
    """(grid_V, q on it): q as a function of the branch's monotonic voltage envelope."""
    u = v_V if increasing else -v_V
    env = np.maximum.accumulate(u)
    rise = np.concatenate(([True], np.diff(env) > 0))
    x, y = env[rise], q[rise]
    # Keeping the first sample at each new envelope level puts the charge passed while the
    # envelope stood still (a flat plateau) into the interval up to the next level.
    n = int(np.floor((x[-1] - x[0]) / dv_V)) + 1
    grid = x[0] + dv_V * np.arange(n)
    q_grid = np.interp(grid, x, y)
    return (grid if increasing else -grid), q_grid


def dqdv(series, cycle, branch, dv_V=0.001, sigma_V=0.005, mass_g=None, prominence=0.1):
    """dQ/dV of one branch: dict with v_V (grid, ascending), dqdv (>= 0; mAh/V or
    mAh/(g V)), peaks_V and peak heights (same unit), plus the settings used.

    Returns None when the branch has too few samples or spans less than 3 grid steps.
    """
    if dv_V <= 0 or sigma_V < 0:
        raise InputError("dqdv: dv_V must be > 0 and sigma_V >= 0")
    v, q = branch_samples(series, cycle, branch)
    if len(v) < 3:
        return None
    grid, q_grid = q_on_grid(v, q * 1e3 / (mass_g or 1.0), dv_V, branch == "charge")
    if len(grid) < 3:
        return None
    if branch == "discharge":
        grid, q_grid = grid[::-1], q_grid[::-1]
    smooth = gaussian_filter1d(q_grid, sigma_V / dv_V, mode="nearest") if sigma_V > 0 else q_grid
    # q grows as V rises on charge and as V falls on discharge; smoothing keeps q monotonic,
    # so both branches come out >= 0.
    d = np.gradient(smooth, grid) * (1.0 if branch == "charge" else -1.0)
    found, props = find_peaks(d, prominence=prominence * float(np.max(d)) if np.max(d) > 0 else None)
    order = np.argsort(grid[found])
    return {"cycle": int(cycle), "branch": branch, "v_V": grid, "dqdv": d,
            "unit": "mAh/(g V)" if mass_g else "mAh/V",
            "peaks_V": grid[found][order], "peak_heights": d[found][order],
            "dv_V": dv_V, "sigma_V": sigma_V}
