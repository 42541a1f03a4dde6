"""Ohmic and charge-transfer resistance from the rest that follows each current step.

When a constant current ``I`` stops, the terminal voltage of a cell jumps at once by the
ohmic drop ``R_ohm * I`` (electrolyte, contacts) and then relaxes as the charge-transfer
double layer discharges, ``R_ct * I * exp(-t/tau)`` with tau of seconds, on top of a slow
diffusion relaxation (minutes). This is what EIS separates as the high-frequency
intercept and the semicircle; a galvanostatic log shows it in the time domain.

For every rest (a run of records at rest current) that directly follows an active run,
the rest's records at ``t`` seconds after the switch are fitted with

    v(t) = a + b * exp(-t / tau) + c * t

over the rest's first FIT_WINDOW_S seconds (where the slow diffusion relaxation is close to
linear, its time constant being much longer): for each tau on a log grid the rest is a linear least-squares problem in (a, b,
c), and the best tau is refined by a bounded scalar search. Then, with ``v_on`` the last
record under current and ``T`` the active run's duration (the double layer charged for
``T`` from rest before it):

    R_ohm = (v_on - (a + b)) / I          the jump extrapolated back to the switch
    R_ct  = b / I / (1 - exp(-T / tau))   the relaxing part, fully charged

Sign conventions: current > 0 charges; both resistances come out positive for either
direction (after a charge the voltage falls, after a discharge it rises).

Assumptions, stated in summary.json: the current switched off at the time of the last
active record (this bench records each step's first instant; a tester that switches
between records puts up to one record interval of relaxation into R_ohm and takes it from
R_ct); the rest holds at least ``MIN_POINTS`` records and lasts several tau; the double
layer had relaxed before the active run began. A rest that breaks one of these (too few
records, tau at a bound of the search, a relaxation of the wrong sign) gives NaN.
"""

import math

import numpy as np
from scipy.optimize import minimize_scalar

from .groups import group_median

MIN_POINTS = 4           # records in a rest needed to fit a, b, c and tau
TAU_RANGE_S = (0.2, 120.0)  # where tau is searched; a fit at a bound is rejected
TAU_GRID = 40            # log-spaced starting grid over TAU_RANGE_S
POOL_WINDOW = 5          # rests of the same branch on each side pooled for tau
FIT_WINDOW_S = 120.0     # only a rest's first 2 minutes: later, diffusion is no longer linear in t
BRANCH_NAMES = {1: "chg", -1: "dch"}  # the rest after a charge / after a discharge
COLUMNS = ("r_ohm_chg_ohm", "r_ohm_dch_ohm", "r_ct_chg_ohm", "r_ct_dch_ohm", "r_ct_ohm", "r_relax")


def _runs(sign):
    """(start, end) index pairs (end exclusive) of runs of equal sign."""
    cut = np.flatnonzero(np.diff(sign) != 0) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [len(sign)]))
    return starts, ends


def _sse(tau, t, v):
    """Least-squares residual of v = a + b exp(-t/tau) + c t, and (a, b, c)."""
    basis = np.column_stack((np.ones_like(t), np.exp(-t / tau), t))
    coef, *_ = np.linalg.lstsq(basis, v, rcond=None)
    r = v - basis @ coef
    return float(r @ r), coef


def fit_rest(t, v):
    """(tau_s, a, b, c, rms_V) of the relaxation model over one rest (t from the switch),
    or None when tau lands on a bound of the search (no relaxation it can resolve)."""
    lo, hi = TAU_RANGE_S
    hi = min(hi, max(t[-1], lo * 2))
    grid = np.geomspace(lo, hi, TAU_GRID)
    sse = [_sse(tau, t, v)[0] for tau in grid]
    k = int(np.argmin(sse))
    if k == 0 or k == len(grid) - 1:
        return None
    best = minimize_scalar(lambda x: _sse(math.exp(x), t, v)[0], method="bounded",
                           bounds=(math.log(grid[k - 1]), math.log(grid[k + 1])),
                           options={"xatol": 1e-4})
    tau = math.exp(best.x)
    err, (a, b, c) = _sse(tau, t, v)
    return tau, a, b, c, math.sqrt(err / len(t))


def _pooled_tau(tau, branch, window):
    """Per rest, the median of the finite tau of the rests of its branch at most ``window``
    rests away: the double layer's time constant changes slowly with ageing, while one
    short rest determines it poorly."""
    out = np.full(len(tau), np.nan)
    for br in BRANCH_NAMES:
        idx = np.flatnonzero(branch == br)
        for j, k in enumerate(idx):
            near = tau[idx[max(0, j - window):j + window + 1]]
            near = near[np.isfinite(near)]
            if len(near):
                out[k] = np.median(near)
    return out


def _rests(series, max_gap_s):
    """(active run start, last active record, rest start, end of the fit window) of each
    rest that directly follows an active run and has enough records in its first
    FIT_WINDOW_S, its first within ``max_gap_s`` of the switch."""
    starts, ends = _runs(series.sign)
    out = []
    for k in range(1, len(starts)):
        s, e, on = starts[k], ends[k], ends[k - 1] - 1
        if series.sign[s] != 0 or series.sign[on] == 0 or e - s < MIN_POINTS:
            continue
        gap = series.t_s[s] - series.t_s[on]
        e = s + int(np.searchsorted(series.t_s[s:e] - series.t_s[on], FIT_WINDOW_S, side="right"))
        if 0 < gap <= max_gap_s and e - s >= MIN_POINTS:
            out.append((starts[k - 1], on, s, e))
    return out


def relaxations(series, max_gap_s=60.0, window=POOL_WINDOW):
    """One row per rest that follows an active run: dict of arrays t_s (switch time),
    cycle (of the last active record), branch (+1 after a charge, -1 after a discharge),
    i_A (current before the switch, signed), r_ohm, r_ct (ohm), tau_s (pooled over
    ``window`` neighbouring rests of the branch, see _pooled_tau), rms_V, points.

    ``max_gap_s``: widest interval allowed between the switch and the rest's first record
    (a longer one has lost the start of the relaxation)."""
    rests = _rests(series, max_gap_s)
    t_of = [series.t_s[s:e] - series.t_s[on] for _, on, s, e in rests]
    own = np.array([f[0] if f else np.nan for f in
                    (fit_rest(t, series.v_V[s:e]) for t, (_, _, s, e) in zip(t_of, rests))])
    branch = np.array([int(series.sign[on]) for _, on, _, _ in rests], dtype=np.int64)
    tau = _pooled_tau(own, branch, window)
    rows = {k: [] for k in ("r_ohm", "r_ct", "rms_V")}
    i_on = np.array([float(np.median(series.i_A[max(ps, on - 2):on + 1])) for ps, on, _, _ in rests])
    for k, (ps, on, s, e) in enumerate(rests):
        r_ohm = r_ct = rms = math.nan
        if np.isfinite(tau[k]):
            err, (a, b, _) = _sse(tau[k], t_of[k], series.v_V[s:e])
            charged = 1.0 - math.exp(-(series.t_s[on] - series.t_s[ps]) / tau[k])
            rms = math.sqrt(err / (e - s))
            if b * i_on[k] > 0 and charged > 0:
                r_ohm = (series.v_V[on] - (a + b)) / i_on[k]
                r_ct = b / i_on[k] / charged
        rows["r_ohm"].append(r_ohm)
        rows["r_ct"].append(r_ct)
        rows["rms_V"].append(rms)
    on_idx = np.array([on for _, on, _, _ in rests], dtype=np.int64)
    return {"t_s": series.t_s[on_idx], "cycle": series.cycle[on_idx].astype(np.int64), "branch": branch,
            "i_A": i_on, "r_ohm": np.array(rows["r_ohm"]), "r_ct": np.array(rows["r_ct"]), "tau_s": tau,
            "rms_V": np.array(rows["rms_V"]), "points": np.array([e - s for _, _, s, e in rests], dtype=np.int64)}


def per_cycle(relax, cycles):
    """Per cycle (``cycles`` ascending): median R_ohm and R_ct after its charges and after
    its discharges, the median R_ct of both, and how many rests gave a fit. NaN, 0 where
    none did."""
    n = len(cycles)
    pos = np.searchsorted(cycles, relax["cycle"])
    ok = (pos < n) & (cycles[np.minimum(pos, n - 1)] == relax["cycle"]) & np.isfinite(relax["r_ct"])
    out = {}
    for branch, name in BRANCH_NAMES.items():
        sel = ok & (relax["branch"] == branch)
        out[f"r_ohm_{name}_ohm"] = group_median(relax["r_ohm"][sel], pos[sel], n)
        out[f"r_ct_{name}_ohm"] = group_median(relax["r_ct"][sel], pos[sel], n)
    out["r_ct_ohm"] = group_median(relax["r_ct"][ok], pos[ok], n)
    out["r_relax"] = np.bincount(pos[ok], minlength=n).astype(np.int64)
    return {name: out[name] for name in COLUMNS}
