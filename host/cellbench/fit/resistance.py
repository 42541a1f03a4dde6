"""First estimates of R0 (current-step edges) and RC pairs (relaxations).

R0: at a current step the RC voltages and the OCV cannot move within one sample, so the
voltage jump over the current jump is R0 (ohm): ``R0 = dV / dI``.

RC: during a rest after a current step ``v(t) = V_inf + sum_j a_j * exp(-t / tau_j)``.
For every candidate time constant (pair) on a log grid the amplitudes and ``V_inf`` are
linear, so each candidate is one least-squares solve; the best is kept. An RC pair driven
by current ``I`` for ``T`` seconds from rest holds ``I * R * (1 - exp(-T / tau))``, which
gives ``R_j`` from ``a_j``. The medians over all relaxations seed the joint refinement.
"""

import numpy as np

from ..errors import InputError
from .data import Log

MIN_EDGES = 3
MIN_REST_SAMPLES = 10
TAU_POINTS = 48
LONG_REST = 0.25          # keep rests at least this share of the longest
STRONG_STEP = 0.3         # and steps at least this share of the strongest before them
NEEDS_EDGES = ("no current step (a change of current between two samples) to take R0 from; "
               "record a rest before the sweep, or run protocols/hppc.json")


def _edge_threshold(log: Log) -> float:
    return max(20.0 * log.rest_tol_A / 6.0, 0.02 * float(np.max(np.abs(log.i_A))))


def edges(log: Log):
    """(sample index, R0 estimate in ohm) of every clear current step in ``log``."""
    # Any jump between two samples, not only at the step labels: testers' step counters
    # can change a sample before or after the current does.
    d_i = np.diff(log.i_A)
    jumps = np.flatnonzero(np.abs(d_i) > _edge_threshold(log)) + 1
    return [(int(b), float((log.v_V[b] - log.v_V[b - 1]) / d_i[b - 1])) for b in jumps]


def r0_from_edges(logs: list, soc_traces: list) -> dict:
    """Median R0 over the edges at 5-95 % SoC (all edges if fewer than MIN_EDGES there);
    InputError naming what to record when the logs hold no current step at all."""
    values, socs = [], []
    for log, z in zip(logs, soc_traces):
        for b, r in edges(log):
            values.append(r)
            socs.append(z[b])
    if not values:
        raise InputError(f"r0: {NEEDS_EDGES}")
    values, socs = np.array(values), np.array(socs)
    inside = (socs >= 0.05) & (socs <= 0.95)
    chosen = values[inside] if inside.sum() >= MIN_EDGES else values
    return {"r0_ohm": float(np.median(chosen)), "edges_soc": socs, "edges_ohm": values}


def relaxations(log: Log):
    """(rest step, previous active step) pairs whose rest is long enough to fit."""
    out = []
    for prev, step in zip(log.steps[:-1], log.steps[1:]):
        if step.sign == 0 and prev.sign != 0 and step.stop - step.start >= MIN_REST_SAMPLES:
            out.append((step, prev))
    return out


def _tau_grid(t: np.ndarray) -> np.ndarray:
    dt = float(np.median(np.diff(t)))
    return np.geomspace(max(0.5 * dt, 0.05), max(t[-1] / 2.0, dt), TAU_POINTS)


def _fit_relaxation(t, v, n_rc: int):
    """Best (taus, amplitudes) for v(t) = V_inf + sum a_j exp(-t/tau_j); t from 0.

    Every candidate is solved at once through its normal equations (batched 2x2 or 3x3
    systems built from one Gram matrix of the exponentials).
    """
    grid = _tau_grid(t)
    basis = np.vstack([np.ones_like(t), np.exp(-np.outer(1.0 / grid, t))])   # row 0: V_inf
    gram, rhs, vv = basis @ basis.T, basis @ v, float(v @ v)
    if n_rc == 1:
        combos = np.array([(0, k) for k in range(1, grid.size + 1)])
    else:
        combos = np.array([(0, j, k) for j in range(1, grid.size + 1) for k in range(j + 1, grid.size + 1)])
    g = gram[combos[:, :, None], combos[:, None, :]]
    b = rhs[combos]
    ok = np.linalg.cond(g) < 1e12
    if not ok.any():
        return None, None
    coef = np.linalg.solve(g[ok], b[ok][..., None])[..., 0]
    sse = vv - np.einsum("ij,ij->i", coef, b[ok])
    best = int(np.argmin(sse))
    return grid[combos[ok][best, 1:] - 1], coef[best, 1:]


def _informative(logs: list) -> list:
    """The relaxations that show the slow pair best: the longest rests after the strongest steps.

    Short rests (between HPPC pulses) cannot show a slow time constant and weak steps (a
    C/20 sweep) leave an amplitude buried in noise; medians over those would pull the
    estimate to whatever they can see.
    """
    found = [(log, rest, prev) for log in logs for rest, prev in relaxations(log)]
    if not found:
        return []
    length = lambda item: item[0].t_s[item[1].stop - 1] - item[0].t_s[item[1].start]
    longest = max(length(item) for item in found)
    found = [item for item in found if length(item) >= LONG_REST * longest]
    strongest = max(abs(item[2].mean_A) for item in found)
    return [item for item in found if abs(item[2].mean_A) >= STRONG_STEP * strongest]


def rc_from_relaxations(logs: list, n_rc: int) -> dict:
    """Median tau_s and r_ohm per RC pair over the informative relaxations in ``logs``
    (empty lists when the logs hold no rest after a current step)."""
    taus, resistances = [], []
    for log, rest, prev in _informative(logs):
        t = log.t_s[rest.start:rest.stop] - log.t_s[rest.start]
        v = log.v_V[rest.start:rest.stop]
        tau, amp = _fit_relaxation(t, v, n_rc)
        if tau is None:
            continue
        duration = log.t_s[rest.start] - log.t_s[prev.start]
        drive = prev.mean_A * -np.expm1(-duration / tau)
        taus.append(tau)
        resistances.append(amp / drive)
    if not taus:
        return {"tau_s": [], "r_ohm": [], "count": 0}
    tau_med = np.median(np.array(taus), axis=0)
    r_med = np.median(np.abs(np.array(resistances)), axis=0)
    return {"tau_s": tau_med.tolist(), "r_ohm": r_med.tolist(), "count": len(taus)}
