"""Open-circuit voltage on a uniform SoC grid, from slow branches or from rest points.

Slow branches: during a low-rate full charge SoC runs 0 -> 1 with the charge passed
(normalised by that sweep's own charge), during the full discharge 1 -> 0. Each branch
sits above (charge) or below (discharge) the OCV by the same IR drop and hysteresis when
the currents match, so their mean is the OCV and half their gap is ``|I|*R + M``.

Rest points (GITT, pulse tests): the voltage at the end of each rest inside the full
sweeps, at the SoC counted to that moment. Charge-side and discharge-side points are
averaged when both exist (they straddle the OCV by the hysteresis).

SoC 0 and 1 are the rested window limits: each sweep's SoC map includes the charge beyond
its cut-offs (:func:`.capacity.beyond_cutoff_Ah`), and the OCV runs straight from the
branches' ends to the limit voltages there (:func:`to_limits`).

Either way the result is made monotonic (isotonic regression, then strictly increasing by
``EPS_V``) because the model and the estimator invert OCV(z).
"""

import numpy as np
from scipy.optimize import isotonic_regression

from .capacity import full_Ah, window_V
from .data import Log, Sweep

GRID_POINTS = 101          # 1 % SoC steps, like the presets
BIN_SOC = 0.002            # averaging bins for the branches (noise), finer than the grid
EPS_V = 1e-6               # strict increase the model format needs, far below noise
MIN_RESTS = 5              # a full sweep with this many rests is a GITT/pulse sweep
LONG_REST_SHARE = 0.25     # rest points: rests at least this share of the sweep's longest
RELAXED_RATIO = 10.0       # a rest this many times longer than the step before it has relaxed


def grid() -> np.ndarray:
    return np.linspace(0.0, 1.0, GRID_POINTS)


def sweep_soc(log: Log, sweep: Sweep) -> np.ndarray:
    """SoC (0..1) of samples sweep.start .. sweep.stop-1, normalised by the sweep's charge
    over the whole window (passed plus ``sweep.beyond_Ah``, the charge beyond the cut-offs
    at its start and end): SoC 0 and 1 are the rested window limits, so the sweep runs
    from ``beyond_Ah[0]`` inside its starting limit to ``beyond_Ah[1]`` short of its end."""
    start_Ah = sweep.beyond_Ah[0]
    q = log.q_Ah[sweep.start:sweep.stop] - log.q_Ah[sweep.start]
    # signed: a merged traverse turns back
    frac = np.clip((start_Ah + sweep.sign * q) / full_Ah(sweep), 0.0, 1.0)
    return frac if sweep.sign > 0 else 1.0 - frac


def soc_span(sweep: Sweep) -> tuple:
    """(lowest, highest) SoC the sweep's samples reach (:func:`sweep_soc` at its ends)."""
    full = full_Ah(sweep)
    start, end = sweep.beyond_Ah[0] / full, 1.0 - sweep.beyond_Ah[1] / full
    return (start, end) if sweep.sign > 0 else (1.0 - end, 1.0 - start)


def to_limits(v: np.ndarray, span: tuple, limits_V: tuple) -> np.ndarray:
    """OCV ``v`` on the grid, its points outside ``span`` (the SoC the branches covered)
    replaced by straight lines to the window limits ``limits_V`` at SoC 0 and 1: beyond the
    loaded cut-offs no branch was measured, and the rested limits are the OCV there by
    definition (see :func:`.capacity.beyond_cutoff_Ah`)."""
    z, v = grid(), np.array(v, dtype=float)
    lo, hi = span
    v_lo, v_hi = float(np.interp(lo, z, v)), float(np.interp(hi, z, v))
    below, above = z < lo, z > hi
    v[below] = np.interp(z[below], [0.0, lo], [limits_V[0], v_lo])
    v[above] = np.interp(z[above], [hi, 1.0], [v_hi, limits_V[1]])
    return v


def _active_mask(log: Log, sweep: Sweep) -> np.ndarray:
    mask = np.zeros(sweep.stop - sweep.start, dtype=bool)
    for k in sweep.steps:
        step = log.steps[k]
        if step.sign:
            mask[step.start - sweep.start:step.stop - sweep.start] = True
    return mask


def branch(log: Log, sweep: Sweep) -> np.ndarray:
    """The sweep's terminal voltage on the SoC grid (bin averages, then interpolation)."""
    z = sweep_soc(log, sweep)
    v = log.v_V[sweep.start:sweep.stop]
    mask = _active_mask(log, sweep)
    z, v = z[mask], v[mask]
    order = np.argsort(z, kind="stable")
    z, v = z[order], v[order]
    bins = np.minimum((z / BIN_SOC).astype(int), int(1 / BIN_SOC) - 1)
    counts = np.bincount(bins)
    used = counts > 0
    zc = np.bincount(bins, weights=z)[used] / counts[used]
    vc = np.bincount(bins, weights=v)[used] / counts[used]
    # The first and last samples pin the branch ends, which bins would blur on steep ends.
    zc = np.concatenate(([z[0]], zc, [z[-1]]))
    vc = np.concatenate(([v[0]], vc, [v[-1]]))
    return np.interp(grid(), zc, vc)


def rest_points(log: Log, sweep: Sweep):
    """(soc, voltage) at the end of every rest inside ``sweep`` and of the rest just before it.

    The rest before the sweep is the relaxed window end it starts from (at SoC 1 before a
    discharge, 0 before a charge, less the charge beyond that cut-off: ``beyond_Ah[0]``):
    without it the OCV's first or last grid points would only be extrapolated.
    """
    z = sweep_soc(log, sweep)
    points = []
    first = sweep.steps[0]
    if first > 0 and log.steps[first - 1].sign == 0:
        points.append((z[0], log.v_V[log.steps[first - 1].stop - 1]))
    rests = [log.steps[k] for k in sweep.steps if log.steps[k].sign == 0 and log.steps[k].stop - 1 > log.steps[k].start]
    longest = max((log.t_s[r.stop - 1] - log.t_s[r.start] for r in rests), default=0.0)
    for step in rests:
        # Short rests between pulses are not relaxed: only the long ones are OCV points.
        if log.t_s[step.stop - 1] - log.t_s[step.start] >= LONG_REST_SHARE * longest:
            points.append((z[step.stop - 1 - sweep.start], log.v_V[step.stop - 1]))
    return np.array(points).reshape(-1, 2)


def n_rests(log: Log, sweep: Sweep) -> int:
    return sum(1 for k in sweep.steps if log.steps[k].sign == 0)


def monotonic(v: np.ndarray) -> np.ndarray:
    """Closest non-decreasing sequence (least squares), then strictly increasing by EPS_V."""
    v = isotonic_regression(np.asarray(v, dtype=float), increasing=True).x
    ramp = EPS_V * np.arange(v.size)
    return np.maximum.accumulate(v - ramp) + ramp


def from_cycle(log: Log, charge: Sweep, discharge: Sweep) -> dict:
    """OCV from the low-rate full cycle: branch mean, or rest points for GITT/pulse sweeps.

    Returns {"soc", "voltage_V", "charge_V", "discharge_V", "method", "branch_A"}
    (``branch_A``: mean |current| of the two branches, for the IR part of their gap).
    """
    if min(n_rests(log, charge), n_rests(log, discharge)) >= MIN_RESTS:
        chg_pts, dch_pts = rest_points(log, charge), rest_points(log, discharge)
        chg = np.interp(grid(), *_sorted(chg_pts))
        dch = np.interp(grid(), *_sorted(dch_pts))
        method = "mean of rest-point branches (GITT/pulse)"
        current = 0.0      # rested: no IR in the gap
    else:
        chg, dch = branch(log, charge), branch(log, discharge)
        method = "mean of slow charge and discharge branches"
        current = 0.5 * (_mean_abs_A(log, charge) + _mean_abs_A(log, discharge))
    chg, dch = isotonic_regression(chg).x, isotonic_regression(dch).x
    (c_lo, c_hi), (d_lo, d_hi) = soc_span(charge), soc_span(discharge)
    mean = to_limits(0.5 * (chg + dch), (max(c_lo, d_lo), min(c_hi, d_hi)), window_V(log))
    return {"soc": grid(), "voltage_V": monotonic(mean),
            "charge_V": np.maximum(chg, dch), "discharge_V": np.minimum(chg, dch),
            "method": method, "branch_A": current}


def _sorted(points):
    order = np.argsort(points[:, 0], kind="stable")
    return points[order, 0], points[order, 1]


def _mean_abs_A(log: Log, sweep: Sweep) -> float:
    mask = _active_mask(log, sweep)
    return float(np.mean(np.abs(log.i_A[sweep.start:sweep.stop][mask])))


def from_one_branch(log: Log, sweep: Sweep, r_dc_ohm: float) -> dict:
    """OCV from a single low-rate full sweep: its rest points (GITT/pulse sweep), else the
    branch less its IR drop ``i * r_dc_ohm`` (i signed: a discharge branch lies below the
    OCV). No second branch, so no hysteresis can be seen (the caller says so)."""
    if n_rests(log, sweep) >= MIN_RESTS:
        v = np.interp(grid(), *_sorted(rest_points(log, sweep)))
        method, current = "rest points of one GITT/pulse sweep", 0.0
    else:
        current = float(np.sign(sweep.sign)) * _mean_abs_A(log, sweep)
        v = branch(log, sweep) - current * r_dc_ohm
        method = f"one slow {'charge' if sweep.sign > 0 else 'discharge'} branch less its IR drop"
    v = isotonic_regression(to_limits(v, soc_span(sweep), window_V(log))).x
    return {"soc": grid(), "voltage_V": monotonic(v), "charge_V": v, "discharge_V": v,
            "method": method, "branch_A": abs(current)}


def relaxed_rests(log: Log, soc: np.ndarray) -> list:
    """(SoC, voltage) at the end of the log's relaxed rests: its first step when that is a
    rest (the cell as it came to the tester), and every rest at least RELAXED_RATIO times
    longer than the current step before it (a pulse's rest; not the short pause after a
    long sweep). ``soc``: the log's SoC trace; rests where it is not finite are left out."""
    out = []
    for k, step in enumerate(log.steps):
        if step.sign != 0:
            continue
        end = step.stop - 1
        before = log.steps[k - 1] if k else None
        if before is not None and before.sign == 0:
            continue
        relaxed = before is None or (
            log.t_s[end] - log.t_s[step.start] >= RELAXED_RATIO * (log.t_s[step.start] - log.t_s[before.start]))
        if relaxed and np.isfinite(soc[end]):
            out.append((float(soc[end]), float(log.v_V[end])))
    return out


def through_rests(curve: dict, points: list) -> dict:
    """``curve`` (an OCV from one branch) moved to pass through the relaxed ``points``
    (SoC, V) between 5 % and 95 % SoC: their offsets from it, interpolated in SoC and
    tapering to none at SoC 0 and 1 (there the window limits, not a rest, define the
    OCV). The branch less its step-edge IR drop misses the slow polarisation (diffusion):
    a relaxed rest is the OCV itself. ``curve`` unchanged without such points."""
    inner = sorted((z, v) for z, v in points if 0.05 <= z <= 0.95)
    if not inner:
        return curve
    z = np.array([0.0] + [p[0] for p in inner] + [1.0])
    base = np.asarray(curve["voltage_V"])
    d = np.array([0.0] + [v - float(np.interp(zk, curve["soc"], base)) for zk, v in inner] + [0.0])
    v = monotonic(base + np.interp(curve["soc"], z, d))
    return {**curve, "voltage_V": v, "charge_V": v, "discharge_V": v,
            "method": f"{curve['method']}, moved through {len(inner)} relaxed rest(s)"}
