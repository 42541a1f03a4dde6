"""The cell model's state recurrences x[k+1] = a[k]*x[k] + b[k] over a whole log.

The RC voltages, the hysteresis state and the held current sign of the cell model
(docs/design.md) are such recurrences with a time-varying ``a`` (any, also irregular,
sampling); this is their one implementation, used by the open-loop simulator
(cellbench.ecm.simulate) and by the fit. A Python loop over 200,000 samples is
slow, so this evaluates the closed form ``x[k+1] = P_k * (x_s + sum_{m<=k} b_m / P_m)``
(``P_k`` the running product of ``a`` since block start ``s``) with numpy, in blocks
short enough that ``1 / P`` cannot overflow.
"""

import numpy as np

BLOCK_LOG = 500.0     # max of -log(P) within a block: exp(550) is still a finite float
MIN_LOG_A = -50.0     # a below exp(-50) is 0 to double precision anyway


def scan(log_a, b, x0: float = 0.0) -> np.ndarray:
    """x[0] = x0, x[k+1] = exp(log_a[k]) * x[k] + b[k]; returns len(b) + 1 values."""
    log_a = np.maximum(np.asarray(log_a, dtype=float), MIN_LOG_A)
    b = np.asarray(b, dtype=float)
    out = np.empty(b.size + 1)
    out[0] = x = float(x0)
    block = np.floor(np.cumsum(-log_a) / BLOCK_LOG)
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(block)) + 1, [b.size]))
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        if e <= s:
            continue
        c = np.cumsum(log_a[s:e])
        out[s + 1:e + 1] = np.exp(c) * (x + np.cumsum(b[s:e] * np.exp(-c)))
        x = out[e]
    return out


def rc_response(t_s, i_A, tau_s: float, r_ohm: float = 1.0, v0_V: float = 0.0) -> np.ndarray:
    """Voltage (V) of an RC pair (``r_ohm``, ``tau_s``) at each sample, from ``v0_V``:
    exact for current held constant from each sample to the next. With the default
    ``r_ohm`` 1 and rest it is the response per ohm (V/ohm = A) a fit scales by R.
    ``r_ohm`` may also be one value per sample (R(z) read at the sample that drives the
    interval after it)."""
    dt = np.diff(t_s)
    log_a = -dt / tau_s
    r = np.asarray(r_ohm, dtype=float)
    r = r[:-1] if r.ndim else r
    return scan(log_a, -np.expm1(log_a) * r * np.asarray(i_A)[:-1], v0_V)


def hysteresis_state(t_s, i_A, gamma: float, capacity_Ah: float, h0: float = 0.0) -> np.ndarray:
    """Plett's hysteresis state h (-1..1) at each sample, from ``h0`` (docs/design.md):
    dh/dt = -|i*gamma/(3600*C)| * (h - sign(i)), current held from sample to sample."""
    i_A = np.asarray(i_A)
    dt = np.diff(t_s)
    log_a = -np.abs(i_A[:-1] * gamma * dt / (3600.0 * capacity_Ah))
    return scan(log_a, -np.expm1(log_a) * np.sign(i_A[:-1]), h0)


def held_sign(i_A, rest_tol_A: float, s0: float = 0.0) -> np.ndarray:
    """sign(i) with rests (|i| <= rest_tol_A) holding the last non-zero sign (``s0``, the
    sign before the series, until there is one): the model's s."""
    sign = np.where(np.abs(i_A) > rest_tol_A, np.sign(i_A), 0.0)
    idx = np.where(sign != 0, np.arange(sign.size), -1)
    last = np.maximum.accumulate(idx)
    return np.where(last >= 0, sign[np.maximum(last, 0)], float(np.sign(s0)))
