"""The linear core of the fit: model voltage as columns, NNLS, and held-out prediction.

For fixed time constants (and hysteresis rate gamma, exchange current i0) the model
voltage less the OCV is linear in the remaining parameters::

    v - OCV(z) = R0(z)*i + sum_j R_j(z)*x_j(tau_j) + M*h(gamma) + M0*s + v_T*2*asinh(i/(2*i0))

``x_j`` is the RC response per ohm and ``h`` the hysteresis state, computed over every
log (:mod:`.filters`). A scalar parameter is one column; an SoC table (``KNOTS``, every
10 %) is one column per knot: ``R0(z)*i = sum_k R0_k*hat_k(z)*i`` and an RC pair whose
resistance is a table is driven by ``i*hat_k(z)``, exactly the model's
``dv/dt = -v/tau + i*R(z)/tau``. All coefficients are >= 0 (NNLS). Table knots are tied
to their neighbours by a small first-difference penalty, so a knot few samples reach
takes its neighbours' value instead of a wild one. Where the SoC is only counted (after a
log's last low-rate sweep), :func:`.drift.columns` can take the count's own drift off the
rows (the structure search decides whether they are used).

Rows: the samples with a usable SoC; long constant stretches are thinned to a stride
(each kept sample weighted by the stride) so a 500,000-sample log costs about what
60,000 do, while every sample near a current step stays. The rows fall into *blocks*
(the data between long rests: one pulse level, one slow sweep) and the blocks into
``FOLDS`` interleaved folds. Held-out prediction: the coefficients fitted on the other
folds predict each fold (the states run through the whole log, as in the model); and
the fit on the lower currents predicts the highest (see :class:`Fit`).
Only rows at ``SOC_RANGE`` are fitted and scored, where the OCV is well defined; the
held-out residuals of every row feed the model-error table.
"""

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import nnls

from . import drift, filters

SOC_RANGE = (0.05, 0.95)
KNOTS = np.linspace(0.0, 1.0, 11)
GAMMAS = np.geomspace(1.0, 1000.0, 13)
I0_PER_C = np.geomspace(0.03, 30.0, 13)    # exchange current candidates, in units of 1C (A)
COARSE_SPAN = 8.0                          # candidate taus from tau0/8 to tau0*8
COARSE_POINTS = 17
FINE_POINTS = 11
FOLDS = 3
MAX_ROWS = 30_000
TRANSIENT_SAMPLES = 40                     # samples after each step kept unthinned
TABLE_PENALTY = 0.002                      # first-difference tie, relative to a knot's data weight
LONG_REST_S = 600.0
HIGH_SHARE = 0.75                          # rows above this share of the largest |i| test extrapolation


def hat(z, knots, k) -> np.ndarray:
    """Weight of knot ``k`` in linear interpolation over ``knots`` at ``z`` (clamped)."""
    unit = np.zeros(len(knots))
    unit[k] = 1.0
    return np.interp(z, knots, unit)


@dataclass
class Rows:
    """The rows of the least-squares problem, gathered from every log."""

    logs: list
    socs: list                 # per log: SoC trace (finite everywhere, clipped 0..1)
    picks: list                # per log: sample indices used
    w: np.ndarray              # weight per row (the thinning stride)
    fold: np.ndarray           # fold per row
    block: np.ndarray          # block per row (numbered across the logs; folds interleave them)
    z: np.ndarray              # SoC per row
    i_A: np.ndarray            # current per row
    y: np.ndarray              # v - OCV(z) per row
    fit: np.ndarray = field(default=None)    # rows inside SOC_RANGE
    slow: np.ndarray = field(default=None)   # rows on the low-rate full sweeps (capacity, OCV)
    drift: list = field(default_factory=list)   # the count's drift columns (:func:`.drift.columns`)
    cache: dict = field(default_factory=dict)

    def column(self, fn, key=None) -> np.ndarray:
        """``fn(log, z)`` (a full-length series per log) gathered at the rows; with ``key``
        computed once (every candidate structure shares its columns)."""
        if key is not None and key in self.cache:
            return self.cache[key]
        out = np.concatenate([np.asarray(fn(log, z), dtype=float)[p]
                              for log, z, p in zip(self.logs, self.socs, self.picks)])
        if key is not None:
            self.cache[key] = out
        return out


def _blocks(log, usable: np.ndarray) -> np.ndarray:
    """Block number per sample: a new block after each long rest (>= LONG_REST_S, or a
    quarter of the log's longest rest when that is shorter)."""
    rests = [s for s in log.steps if s.sign == 0 and s.stop - s.start > 1]
    durations = [log.t_s[s.stop - 1] - log.t_s[s.start] for s in rests]
    long_s = min(LONG_REST_S, 0.25 * max(durations)) if durations else np.inf
    cuts = [s.stop for s, d in zip(rests, durations) if d >= long_s]
    block = np.zeros(log.t_s.size, dtype=int)
    for c in cuts:
        block[c:] += 1
    # Fewer than two folds' worth of blocks among the usable samples: cut by time instead.
    if np.unique(block[usable]).size < 2 * FOLDS and usable.any():
        t = log.t_s
        edges = np.linspace(t[usable][0], t[usable][-1], 2 * FOLDS + 1)[1:-1]
        block = np.searchsorted(edges, t, side="right")
    return block


def _thin(log, usable: np.ndarray, budget: int):
    """(indices, weights): every usable sample near a step start, a stride of the rest."""
    near = np.zeros(log.t_s.size, dtype=bool)
    for step in log.steps:
        near[step.start:step.start + TRANSIENT_SAMPLES] = True
    near &= usable
    rest = np.flatnonzero(usable & ~near)
    stride = max(1, int(np.ceil(rest.size / max(budget - near.sum(), budget // 4))))
    kept = rest[::stride]
    idx = np.concatenate([np.flatnonzero(near), kept])
    w = np.concatenate([np.ones(int(near.sum())), np.full(kept.size, float(stride))])
    order = np.argsort(idx, kind="stable")
    return idx[order], w[order]


def rows(logs, socs, usable, ocv_fn, slow=None) -> Rows:
    """Rows over ``logs``: ``socs`` SoC traces, ``usable`` boolean masks of samples whose
    SoC is trusted (e.g. not before a formation discharge), ``slow`` boolean masks of the
    samples on the low-rate full sweeps (None: none)."""
    total = sum(int(u.sum()) for u in usable)
    picks, ws, folds, block_ids, next_block = [], [], [], [], 0
    clipped = [np.clip(np.nan_to_num(z, nan=0.5), 0.0, 1.0) for z in socs]
    for log, u in zip(logs, usable):
        idx, w = _thin(log, u, max(1000, int(MAX_ROWS * u.sum() / max(total, 1))))
        block = _blocks(log, u)
        _, local = np.unique(block[idx], return_inverse=True)
        folds.append((local + next_block) % FOLDS)
        block_ids.append(local + next_block)
        next_block += int(local.max()) + 1 if local.size else 0
        picks.append(idx)
        ws.append(w)
    out = Rows(list(logs), clipped, picks, np.concatenate(ws), np.concatenate(folds).astype(int),
               np.concatenate(block_ids).astype(int), np.zeros(0), np.zeros(0), np.zeros(0))
    out.z = out.column(lambda log, z: z)
    out.i_A = out.column(lambda log, z: log.i_A)
    out.y = out.column(lambda log, z: log.v_V - ocv_fn(z))
    out.fit = (out.z >= SOC_RANGE[0]) & (out.z <= SOC_RANGE[1])
    masks = slow or [np.zeros(log.t_s.size, dtype=bool) for log in logs]
    out.slow = np.concatenate([np.asarray(m, dtype=bool)[p] for m, p in zip(masks, picks)])
    out.drift = drift.columns(out, masks, ocv_fn)
    return out


# --------------------------------------------------------------------------- columns

def r0_columns(rows: Rows, table: bool) -> list:
    if not table:
        return [rows.i_A.copy()]
    return [rows.i_A * hat(rows.z, KNOTS, k) for k in range(KNOTS.size)]


def rc_columns(rows: Rows, tau_s: float, table: bool) -> list:
    if not table:
        return [rows.column(lambda log, z: filters.rc_response(log.t_s, log.run_A, tau_s), ("rc", tau_s))]
    return [rows.column(lambda log, z, k=k: filters.rc_response(log.t_s, log.run_A * hat(z, KNOTS, k), tau_s),
                        ("rc", tau_s, k)) for k in range(KNOTS.size)]


def sign_column(rows: Rows) -> np.ndarray:
    return rows.column(lambda log, z: filters.held_sign(log.i_A, log.rest_tol_A), ("sign",))


def hysteresis_column(rows: Rows, gamma: float, capacity_Ah: float) -> np.ndarray:
    return rows.column(lambda log, z: filters.hysteresis_state(log.t_s, log.run_A, gamma, capacity_Ah),
                       ("h", gamma))


def bv_column(rows: Rows, i0_A: float) -> np.ndarray:
    """Per volt of v_T: 2*asinh(i/(2*i0))."""
    return 2.0 * np.arcsinh(rows.i_A / (2.0 * i0_A))


# --------------------------------------------------------------------------- solving

def nnls_gram(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Non-negative least squares from the normal equations (same minimiser as the
    rows); columns no row reaches (zero diagonal) get 0."""
    diag = np.diag(gram)
    live = diag > 1e-24 * max(float(diag.max(initial=0.0)), 1e-300)
    x = np.zeros(rhs.size)
    if not live.any():
        return x
    g = gram[np.ix_(live, live)]
    c = rhs[live]
    scale = np.sqrt(np.diag(g))
    gs = g / np.outer(scale, scale)
    for ridge in (1e-10, 1e-7, 1e-4):      # near-collinear columns (a table knot few rows reach)
        try:
            chol = np.linalg.cholesky(gs + ridge * np.eye(c.size))
            break
        except np.linalg.LinAlgError:
            continue
    else:
        return x
    x_s, _ = nnls(chol.T, np.linalg.solve(chol, c / scale), maxiter=50 * c.size)
    x[live] = x_s / scale
    return x


def table_penalty(gram: np.ndarray, blocks: list) -> np.ndarray:
    """First-difference penalty tying each table's neighbouring knots (``blocks``: lists of
    column indices, one list per table), scaled to the table's typical data weight."""
    pen = np.zeros_like(gram)
    for cols in blocks:
        if len(cols) < 2:
            continue
        d = np.zeros((len(cols) - 1, gram.shape[0]))
        for r, (a, b) in enumerate(zip(cols[:-1], cols[1:])):
            d[r, a], d[r, b] = -1.0, 1.0
        weight = TABLE_PENALTY * max(float(np.mean(np.diag(gram)[cols])), 1e-300)
        pen += weight * d.T @ d
    return pen


@dataclass
class Fit:
    """Coefficients on all fitted rows, held-out residuals on every row, and their RMSEs.

    Three ways of holding out: ``block_rmse_V``, each fold of blocks predicted from the
    others (interpolation across SoC and time); ``sweep_rmse_V``, the low-rate full
    sweeps predicted from the rest of the logs (pulses, steps: extrapolation in time, to
    the sustained polarisation of a long load, which an RC pair fitted to a pulse's
    relaxation can overstate several-fold); and ``rate_rmse_V``, the rows above
    HIGH_SHARE of the largest current predicted from the rows below it (extrapolation in
    current, what a drive profile beyond the pulses' rates asks of the model; without
    the big pulses the step edges that pin R0 are gone, so this one is too harsh to rank
    structures by and only widens the model-error table at those rows).
    ``held_out_rmse_V``, the score structures are compared by, is the RMS of the block
    and sweep ones (the block one alone when the logs hold no current outside the sweeps).
    """

    coef: np.ndarray
    train_rmse_V: float
    held_out_rmse_V: float
    held_out_V: np.ndarray       # prediction - measurement per row, from the fold's own fit
    block_rmse_V: float = np.nan
    rate_rmse_V: float = np.nan
    sweep_rmse_V: float = np.nan
    fold_V: np.ndarray = None    # the folds' residuals alone (held_out_V before the rates' widen it)
    sweep_V: np.ndarray = None   # the sweeps' held-out residuals on their rows, NaN elsewhere


def solve(rows: Rows, columns: list, blocks: list, held_out: bool = True) -> Fit:
    """Fit ``columns`` on the rows at SOC_RANGE (all folds) and, with ``held_out``, each
    fold from the others; ``blocks`` are the table column groups for the penalty."""
    a = np.column_stack(columns)
    fw = rows.w * rows.fit
    gram = a.T @ (a * fw[:, None])
    rhs = a.T @ (rows.y * fw)
    pen = table_penalty(gram, blocks)
    coef = nnls_gram(gram + pen, rhs)
    resid = a @ coef - rows.y
    train = float(np.sqrt(np.sum(fw * resid ** 2) / max(np.sum(fw), 1e-300)))
    if not held_out:
        return Fit(coef, train, np.nan, resid)
    held = np.full(rows.y.size, np.nan)
    for f in range(FOLDS):
        inside = rows.fold == f
        if inside.any():
            held[inside] = _predict(rows, a, fw, blocks, (gram, rhs), ~inside, inside)
    block, fold_V = _rms(held, fw), held.copy()
    sweep_V = _sweep_residuals(rows, a, fw, blocks, (gram, rhs))
    sweep, score = _rms(sweep_V, fw) if np.any(np.isfinite(sweep_V)) else np.nan, block
    if np.isfinite(sweep):
        score = float(np.sqrt(0.5 * (block ** 2 + sweep ** 2)))
    top = np.abs(rows.i_A) > HIGH_SHARE * float(np.max(np.abs(rows.i_A)))
    rate = np.nan
    if np.any(top & rows.fit) and np.any(~top & rows.fit):
        by_rate = _predict(rows, a, fw, blocks, (gram, rhs), ~top, top)
        rate = _rms(by_rate, fw[top])
        held[top] = np.where(np.abs(by_rate) > np.abs(held[top]), by_rate, held[top])
    return Fit(coef, train, score, held, block, rate, sweep, fold_V, sweep_V)


def _sweep_residuals(rows: Rows, a, fw, blocks, normal) -> np.ndarray:
    """Residuals (V) on the low-rate sweeps' rows of the fit on the other rows, NaN on
    every other row; all NaN when either side has no current to fit or to predict."""
    moving = np.abs(rows.i_A) > 0
    slow, other = rows.slow & rows.fit, ~rows.slow & rows.fit
    out = np.full(rows.y.size, np.nan)
    if np.any(slow & moving) and np.any(other & moving):
        out[slow] = _predict(rows, a, fw, blocks, normal, other, slow)
    return out


def _predict(rows: Rows, a, fw, blocks, normal, train, target) -> np.ndarray:
    """Residuals on the ``target`` rows of the fit on the ``train`` rows. ``normal``: the
    Gram matrix and right-hand side of all rows; the rows left out are taken off it (a
    fold is a third of the rows: a third of the products of building it anew)."""
    out = ~train & (fw > 0)
    g_t = normal[0] - a[out].T @ (a[out] * fw[out, None])
    x = nnls_gram(g_t + table_penalty(g_t, blocks), normal[1] - a[out].T @ (rows.y[out] * fw[out]))
    return a[target] @ x - rows.y[target]


def _rms(residual, w) -> float:
    scored = w * np.isfinite(residual)
    return float(np.sqrt(np.nansum(scored * np.nan_to_num(residual) ** 2) / max(np.sum(scored), 1e-300)))


def _sse(gram, rhs, yy, x) -> float:
    return float(yy - 2.0 * rhs @ x + x @ gram @ x)


def search_taus(rows: Rows, seeds_s: list, extra: list = ()) -> list:
    """Time constants (fast to slow) for len(seeds_s) RC pairs with scalar R0 and R (and
    the ``extra`` columns, e.g. :func:`.drift.columns`): a coarse then a fine grid around
    the seeds, each candidate one NNLS on the precomputed Gram matrix. Deterministic."""
    if not seeds_s:
        return []
    fw = rows.w * rows.fit
    yy = float(np.sum(fw * rows.y ** 2))

    def best_of(grids):
        cols = [rows.i_A] + list(extra) + [c for g in grids for t in g for c in rc_columns(rows, t, False)]
        a = np.column_stack(cols)
        gram, rhs = a.T @ (a * fw[:, None]), a.T @ (rows.y * fw)
        head = 1 + len(extra)
        offsets = np.cumsum([head] + [len(g) for g in grids])
        best = (np.inf, None)
        for combo in itertools.product(*[range(len(g)) for g in grids]):
            taus = [g[k] for g, k in zip(grids, combo)]
            if any(b <= a_ for a_, b in zip(taus[:-1], taus[1:])):
                continue
            idx = list(range(head)) + [off + k for off, k in zip(offsets[:-1], combo)]
            x = nnls_gram(gram[np.ix_(idx, idx)], rhs[idx])
            sse = _sse(gram[np.ix_(idx, idx)], rhs[idx], yy, x)
            if sse < best[0]:
                best = (sse, taus)
        return best

    coarse = [t * np.geomspace(1 / COARSE_SPAN, COARSE_SPAN, COARSE_POINTS) for t in sorted(seeds_s)]
    sse, taus = best_of(coarse)
    ratio = COARSE_SPAN ** (2.0 / (COARSE_POINTS - 1))
    fine_sse, fine = best_of([t * np.geomspace(1 / ratio, ratio, FINE_POINTS) for t in taus])
    return [float(t) for t in (fine if fine_sse < sse else taus)]


def best_of_grid(rows: Rows, fixed: list, blocks: list, pools: list) -> list:
    """For each pool (a list of candidate columns: one per hysteresis gamma, one per i0)
    the index of the column that, with ``fixed`` and one column of every other pool, fits
    the rows best (all combinations, one Gram matrix)."""
    if not pools:
        return []
    fw = rows.w * rows.fit
    yy = float(np.sum(fw * rows.y ** 2))
    a = np.column_stack(fixed + [c for pool in pools for c in pool])
    gram, rhs = a.T @ (a * fw[:, None]), a.T @ (rows.y * fw)
    gram_pen = gram + table_penalty(gram, blocks)
    n = len(fixed)
    offsets = np.cumsum([n] + [len(pool) for pool in pools])
    best = (np.inf, None)
    for combo in itertools.product(*[range(len(pool)) for pool in pools]):
        idx = list(range(n)) + [off + k for off, k in zip(offsets[:-1], combo)]
        sub = np.ix_(idx, idx)
        x = nnls_gram(gram_pen[sub], rhs[idx])
        sse = _sse(gram[sub], rhs[idx], yy, x)
        if sse < best[0]:
            best = (sse, list(combo))
    return best[1]
