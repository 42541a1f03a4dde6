"""The board's step-edge resistance estimator (firmware/resistance.py) as numba functions,
for the host twin of the SoC filter (cellbench.estimate_kernel calls them).

The same equations in the same order as ``Resistance.reset`` / ``Resistance.step``
(docs/estimator.md "Resistance"); its parameters and constants are the firmware's,
packed by :func:`pack` at every call. State and parameters live in one float array
``e`` of the filter's dtype (float64 or float32, as estimate_kernel), indexed by the
names below. Units: A, V, s, ohm.
"""

import math

import numpy as np
from numba import njit

JIT = {"cache": True, "error_model": "numpy"}

# e[...]: parameters (Resistance attributes), firmware/resistance.py's constants, state.
PARAMS = ("tau", "q_ohm", "q_res", "p0_ohm", "p0_res", "sigma_v")
CONSTANTS = ("HOLD_TAUS", "WINDOW_TAUS", "MIN_SAMPLES", "EDGE_REST_MULT", "HOLD_FRAC", "GATE2",
             "NOISE_W", "SCALE_MIN", "SCALE_MAX")
(TAU, Q_OHM, Q_RES, P0_OHM, P0_RES, SIGMA_V,
 HOLD_TAUS, WINDOW_TAUS, MIN_SAMPLES, EDGE_REST_MULT, HOLD_FRAC, GATE2, NOISE_W, SCALE_MIN,
 SCALE_MAX,
 S, RS, PSS, PRR, PSR, NOISE2, EDGES, HELD, I_LAST, Y_REF, OPEN, FIRST, DI, T, M,
 N00, N01, N02, N11, N12, N22, B0, B1, B2, YY, NE) = range(41)


def pack(rs, firmware, dtype):
    """The array e for the firmware estimator ``rs`` (a resistance.Resistance, or None:
    an array that is never used) and the module ``firmware`` (its constants)."""
    e = np.zeros(NE)
    if rs is not None:
        e[TAU:TAU + len(PARAMS)] = [getattr(rs, name) for name in PARAMS]
        e[HOLD_TAUS:HOLD_TAUS + len(CONSTANTS)] = [getattr(firmware, name) for name in CONSTANTS]
    return e.astype(dtype)


@njit(**JIT)
def reset(e):
    """Resistance.reset."""
    R = e.dtype.type
    e[S], e[RS] = R(1), R(1)
    e[PSS], e[PRR], e[PSR] = e[P0_OHM], e[P0_RES], R(0)
    e[NOISE2] = e[SIGMA_V] * e[SIGMA_V]
    e[EDGES], e[HELD], e[I_LAST], e[Y_REF] = R(0), R(0), R(0), R(0)
    e[OPEN], e[FIRST] = R(0), R(1)


@njit(**JIT)
def step(e, i, y, dt, i_min, r0, r1, u0):
    """Resistance.step: one sample (i A, y V, dt s), the current noise floor i_min (A),
    the model's R0 and rc[0] (ohm) and R0's relative variance from the SoC, u0."""
    R = e.dtype.type
    if dt > 0:
        e[PSS] += e[Q_OHM] * dt
        e[PRR] += e[Q_RES] * dt
    di = i - e[I_LAST]
    tol = e[HOLD_FRAC] * max(abs(i), abs(e[I_LAST])) + i_min
    held = -tol <= di <= tol
    first = e[FIRST] != 0
    if first:
        held = False
    elif e[OPEN] != 0:
        if held and dt > 0:
            add(e, y, dt)
            if e[T] >= e[WINDOW_TAUS] * e[TAU]:
                e[OPEN] = 0
                finish(e, r0, r1, u0)
        elif not held:
            e[OPEN] = 0
    if not held and not first and e[HELD] >= e[HOLD_TAUS] * e[TAU] \
            and abs(di) >= e[EDGE_REST_MULT] * i_min and 0 < dt <= e[TAU]:
        start(e, di, y, dt)
    if held:
        e[HELD] += dt
    else:
        e[HELD] = dt if not first else R(0)
    e[FIRST] = 0
    e[I_LAST] = i
    if e[OPEN] == 0:
        e[Y_REF] = y


@njit(**JIT)
def start(e, di, y, dt):
    """Resistance._start."""
    R = e.dtype.type
    e[OPEN] = 1
    e[DI] = di
    e[T] = R(0)
    e[M] = R(0)
    e[N00:YY + 1] = R(0)
    add(e, y, dt)


@njit(**JIT)
def add(e, y, dt):
    """Resistance._add."""
    R = e.dtype.type
    e[T] += dt
    t = e[T]
    phi = R(1) - math.exp(-t / e[TAU])
    u = t / (e[WINDOW_TAUS] * e[TAU])
    w = y - e[Y_REF]
    e[M] += R(1)
    e[N00] += R(1)
    e[N01] += phi
    e[N02] += u
    e[N11] += phi * phi
    e[N12] += phi * u
    e[N22] += u * u
    e[B0] += w
    e[B1] += phi * w
    e[B2] += u * w
    e[YY] += w * w


@njit(**JIT)
def finish(e, r0, r1, u0):
    """Resistance._finish: the window's fit folded into the scales."""
    R = e.dtype.type
    if e[M] < e[MIN_SAMPLES] or not (r0 > 0 and r1 > 0):
        return
    a, b, c = e[N00], e[N01], e[N02]
    d, f, g = e[N11], e[N12], e[N22]
    c00 = d * g - f * f
    c01 = c * f - b * g
    c02 = b * f - c * d
    det = a * c00 + b * c01 + c * c02
    if not det > R(1e-6) * (a * d * g):
        return
    c11 = (a * g - c * c) / det
    c12 = (b * c - a * f) / det
    c00, c01, c02 = c00 / det, c01 / det, c02 / det
    b0, b1, b2 = e[B0], e[B1], e[B2]
    th0 = c00 * b0 + c01 * b1 + c02 * b2
    th1 = c01 * b0 + c11 * b1 + c12 * b2
    th2 = c02 * b0 + c12 * b1 + ((a * d - b * b) / det) * b2
    ssr = e[YY] - th0 * b0 - th1 * b1 - th2 * b2
    if ssr < 0:
        ssr = R(0)
    e[EDGES] += R(1)
    w = R(1) / e[EDGES] if e[EDGES] * e[NOISE_W] < R(1) else e[NOISE_W]
    e[NOISE2] += w * (ssr / (e[M] - R(3)) - e[NOISE2])
    n2 = e[NOISE2]
    k0 = R(1) / (e[DI] * r0)
    k1 = R(1) / (e[DI] * r1)
    ms, mr = th0 * k0, th1 * k1
    css = n2 * (c00 + R(1)) * k0 * k0 + ms * ms * u0
    crr = n2 * c11 * k1 * k1
    csr = n2 * c01 * k0 * k1
    fold(e, ms, mr, css, crr, csr)


@njit(**JIT)
def fold(e, ms, mr, css, crr, csr):
    """Resistance._fold: Kalman update of (s, r) with (ms, mr), covariance C."""
    R = e.dtype.type
    pss, prr, psr = e[PSS], e[PRR], e[PSR]
    es, er = ms - e[S], mr - e[RS]
    a, b, d = pss + css, psr + csr, prr + crr
    det = a * d - b * b
    if not det > 0:
        return
    nis = (d * es * es - R(2) * b * es * er + a * er * er) / det
    if nis > e[GATE2]:
        g = nis / e[GATE2]
        css, crr, csr = css * g, crr * g, csr * g
        a, b, d = pss + css, psr + csr, prr + crr
        det = a * d - b * b
    i00, i01, i11 = d / det, -b / det, a / det
    k00 = pss * i00 + psr * i01
    k01 = pss * i01 + psr * i11
    k10 = psr * i00 + prr * i01
    k11 = psr * i01 + prr * i11
    e[S] = min(max(e[S] + k00 * es + k01 * er, e[SCALE_MIN]), e[SCALE_MAX])
    e[RS] = min(max(e[RS] + k10 * es + k11 * er, e[SCALE_MIN]), e[SCALE_MAX])
    e[PSS] = pss - (k00 * pss + k01 * psr)
    e[PSR] = psr - (k00 * psr + k01 * prr)
    e[PRR] = prr - (k10 * psr + k11 * prr)
