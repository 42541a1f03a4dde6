"""Joint time-domain refinement: time constants on a grid, resistances by NNLS.

For fixed time constants (and hysteresis rate gamma) the model voltage is linear in the
remaining parameters::

    v - OCV(z) = R0*i + sum_j R_j*x_j(tau_j) + M*h(gamma) + M0*s

(with ``r0_knots``, R0(z) is piecewise linear between knots: ``R0(z)*i =
sum_k R0_k * hat_k(z) * i``, still linear, one column per knot)

with ``x_j`` the RC response per ohm and ``h`` the hysteresis state, both computed once
per candidate value over every log (:mod:`.filters`). Each candidate combination is
then one ``scipy.optimize.nnls`` solve (all parameters are >= 0). Only samples at
5-95 % SoC count, where the OCV is well defined. To keep 200,000-sample logs fast the
solve works on the normal equations (Gram matrix of the candidate's columns, taken from
one precomputed matrix of all columns), which has the same minimiser. The grid is
searched twice, coarse then fine around the best, so the result is deterministic.
"""

import itertools

import numpy as np
from scipy.optimize import nnls

from ..errors import InputError
from . import filters

SOC_RANGE = (0.05, 0.95)
COARSE_SPAN = 8.0          # candidate taus from tau0/8 to tau0*8
COARSE_POINTS = 17
FINE_POINTS = 11
GAMMAS = np.geomspace(1.0, 1000.0, 13)


def hat(z, knots, k) -> np.ndarray:
    """Weight of knot ``k`` in linear interpolation over ``knots`` at ``z`` (clamped)."""
    unit = np.zeros(len(knots))
    unit[k] = 1.0
    return np.interp(z, knots, unit)


class Problem:
    """Every log's samples at 5-95 % SoC and the columns candidates are built from."""

    def __init__(self, logs, socs, ocv_fn, capacity_Ah, hysteresis, r0_knots=None):
        self.logs, self.socs, self.ocv_fn = logs, socs, ocv_fn
        self.capacity_Ah, self.hysteresis = capacity_Ah, hysteresis
        self.masks = [(z >= SOC_RANGE[0]) & (z <= SOC_RANGE[1]) for z in socs]
        self.y = np.concatenate([(log.v_V - ocv_fn(z))[m] for log, z, m in zip(logs, socs, self.masks)])
        self.n = self.y.size
        if r0_knots is None:
            fixed = [self._stack(lambda log: log.i_A)]
        else:
            fixed = [np.concatenate([(log.i_A * hat(z, r0_knots, k))[m]
                                     for log, z, m in zip(logs, socs, self.masks)])
                     for k in range(len(r0_knots))]
        self.n_r0 = len(fixed)
        self.h_cols = []
        if hysteresis:
            fixed.append(self._stack(lambda log: filters.held_sign(log.i_A, log.rest_tol_A)))
            self.h_cols = [self._stack(lambda log, g=g: filters.hysteresis_state(
                log.t_s, log.i_A, g, capacity_Ah)) for g in GAMMAS]
        self.fixed = fixed

    def _stack(self, fn) -> np.ndarray:
        return np.concatenate([fn(log)[m] for log, m in zip(self.logs, self.masks)])

    def rc_column(self, tau_s: float) -> np.ndarray:
        return self._stack(lambda log: filters.rc_response(log.t_s, log.i_A, tau_s))


def _solve(gram, rhs, yy, n, idx):
    """NNLS on the columns ``idx`` through their Gram matrix; returns (rmse_V, coefficients).

    Columns that are zero over the fitted samples (an R0 knot no sample is near) get a
    zero coefficient instead of entering the solve.
    """
    idx = np.asarray(idx)
    diag = np.diag(gram)[idx]
    live = diag > 1e-24 * max(float(diag.max()), 1e-300)
    x = np.zeros(idx.size)
    use = idx[live]
    g = gram[np.ix_(use, use)]
    c = rhs[use]
    scale = np.sqrt(np.diag(g))
    gs = g / np.outer(scale, scale) + 1e-12 * np.eye(use.size)
    chol = np.linalg.cholesky(gs)
    x_s, _ = nnls(chol.T, np.linalg.solve(chol, c / scale))
    x[live] = x_s / scale
    sse = yy - 2.0 * c @ x[live] + x[live] @ g @ x[live]
    return float(np.sqrt(max(sse, 0.0) / n)), x


def _search(problem: Problem, tau_grids: list) -> dict:
    """Best candidate over the product of ``tau_grids`` (and gammas with hysteresis)."""
    rc_cols = [[problem.rc_column(t) for t in grid] for grid in tau_grids]
    columns = problem.fixed + [c for cols in rc_cols for c in cols] + problem.h_cols
    a = np.column_stack(columns)
    gram, rhs, yy = a.T @ a, a.T @ problem.y, float(problem.y @ problem.y)
    n_fixed = len(problem.fixed)
    offsets = np.cumsum([n_fixed] + [len(g) for g in tau_grids])
    h_start = offsets[-1]
    gammas = range(len(problem.h_cols)) if problem.hysteresis else [None]
    best = {"rmse_V": np.inf}
    for combo in itertools.product(*[range(len(g)) for g in tau_grids]):
        taus = [grid[k] for grid, k in zip(tau_grids, combo)]
        if any(b <= a_ for a_, b in zip(taus[:-1], taus[1:])):
            continue          # pairs ordered fast to slow, each once
        for g in gammas:
            idx = list(range(n_fixed)) + [off + k for off, k in zip(offsets[:-1], combo)]
            idx += [] if g is None else [h_start + g]
            rmse, x = _solve(gram, rhs, yy, problem.n, idx)
            if rmse < best["rmse_V"]:
                best = {"rmse_V": rmse, "coef": x, "tau_s": taus, "gamma_index": g}
    return best


def _unpack(best: dict, n_rc: int, hysteresis: bool, n_r0: int) -> dict:
    x = best["coef"]
    r0 = float(x[0]) if n_r0 == 1 else x[:n_r0].tolist()
    out = {"rmse_V": best["rmse_V"], "r0_ohm": r0, "m0_V": 0.0, "m_V": 0.0, "gamma": 0.0}
    k = n_r0
    if hysteresis:
        out["m0_V"] = float(x[k])
        k += 1
    out["rc"] = [{"r_ohm": float(x[k + j]), "tau_s": float(best["tau_s"][j])} for j in range(n_rc)]
    if hysteresis:
        out["m_V"] = float(x[k + n_rc])
        out["gamma"] = float(GAMMAS[best["gamma_index"]])
    return out


def refine(logs, socs, ocv_fn, capacity_Ah, tau0_s: list, hysteresis: bool = False,
           r0_knots=None) -> dict:
    """Jointly refit R0, the RC pairs (and hysteresis) over all ``logs``.

    ``socs``: SoC trace of each log; ``ocv_fn(z)`` the fitted OCV in V; ``tau0_s`` the
    relaxation estimates (one per pair); ``r0_knots`` (SoC values) makes R0 piecewise
    linear in SoC. Returns {"rmse_V", "r0_ohm" (float, or one value per knot), "rc":
    [{r_ohm, tau_s}], "m_V", "m0_V", "gamma", "samples"}.
    """
    problem = Problem(logs, socs, ocv_fn, capacity_Ah, hysteresis, r0_knots)
    if problem.n == 0:
        raise InputError("logs: no samples between 5 % and 95 % SoC to refine on; "
                         "run protocols/hppc.json")
    coarse = [t * np.geomspace(1 / COARSE_SPAN, COARSE_SPAN, COARSE_POINTS) for t in sorted(tau0_s)]
    best = _search(problem, coarse)
    ratio = COARSE_SPAN ** (2.0 / (COARSE_POINTS - 1))    # one coarse step
    fine = [t * np.geomspace(1 / ratio, ratio, FINE_POINTS) for t in best["tau_s"]]
    best = min((best, _search(problem, fine)), key=lambda b: b["rmse_V"])
    out = _unpack(best, len(tau0_s), hysteresis, problem.n_r0)
    out["samples"] = problem.n
    return out
