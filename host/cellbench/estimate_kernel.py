"""The board's SoC filter (firmware/ekf.py) as a numba kernel, for whole logs on the host.

The same equations in the same order as ``Ekf.reset`` / ``Ekf.step`` (docs/estimator.md
gives them): a per-sample Python loop cannot replay a log at a million samples a second,
this compiled loop does. Its numbers come from the firmware, never from here: the
filter's parameters are the firmware filter's public attributes and its constants
(SOC_MIN, FOLD, ...) are firmware/ekf.py's and kalman.py's, packed into arrays by ``pack``
at every call, so a change there cannot be shadowed by a stale compiled copy.

Precision: every float the filter computes has the dtype of the packed arrays: float64
(the reference; what the unix-port simulator computes) or float32 (what the RP2040's
single-precision floats compute). numba compiles one specialisation per dtype from this
one source and caches both on disk (``cache=True``). No float literal appears in the
arithmetic: numba types a Python float as float64, which would silently widen a float32
expression; constants are written ``R(1)`` with ``R = f.dtype.type``. Only the time step
is taken in float64 (the difference of two log times), then rounded to the dtype.

Units: t_s seconds, i_A amperes (> 0 charges the cell), v_V volts; SoC 1 = full.
"""

import math
import sys

import numpy as np
from numba import njit


# Compiled once per dtype and cached on disk; divisions are plain IEEE ones (no Python
# ZeroDivisionError check in the loop: cellbench.model's validation keeps divisors > 0).
JIT = {"cache": True, "error_model": "numpy"}

# Scalars of the filter, f[...]: its parameters (the firmware filter's attributes of the
# same names), firmware/ekf.py's and kalman.py's constants, the initial SoC, then working
# values.
PARAMS = ("z0", "dz", "q_As", "eta", "m0_V", "gamma", "sigma_v", "sigma_i", "gate", "i_rest",
          "bv_vT", "look_tau_s")
CONSTANTS = ("SOC_MIN", "SOC_MAX", "FOLD", "VAR_SOC_MAX", "VAR_H_MAX", "VAR_UNKNOWN",
             "CAP_MIN", "CAP_MAX", "VAR_CAP_MAX", "ERR_SPAN", "ERR_TAU_MIN_S", "ERR_TAU_MAX_S")
(Z0, DZ, Q_AS, ETA, M0_V, GAMMA, SIGMA_V, SIGMA_I, GATE, I_REST, BV_VT, LOOK_TAU_S,
 SOC_MIN, SOC_MAX, FOLD, VAR_SOC_MAX, VAR_H_MAX, VAR_UNKNOWN,
 CAP_MIN, CAP_MAX, VAR_CAP_MAX, ERR_SPAN, ERR_TAU_MIN_S, ERR_TAU_MAX_S,
 SOC0, PEND, S, OCV, SLOPE, R0, DR0, M, DM, I0, DI0, BV_DI, BV_DZ, DVDI, F0C, SM2, HS,
 KZ, ZC, AH, HIN, HC, ILOOK, LOOKS, NF) = range(49)
# Integers, ip[...]: states, RC pairs, h, bias and capacity indices (-1: not a state),
# table points, iterated-update passes at most, whether soc0 is given, Butler-Volmer on,
# the resistance estimator on (its state: the array e of pack_res).
N, NRC, IH, IB, IC, NPT, ITER_MAX, SOC_GIVEN, BV, RES, NI = range(11)
# Slow estimates per sample, slow[s, ...]: capacity (Ah), its std, R_ct (ohm), its std,
# R0 (ohm: the estimator's scale on the model's R0 at the SoC), its std.
CAP_AH, CAP_STD_AH, RCT_OHM, RCT_STD_OHM, R0_OHM, R0_STD_OHM = range(6)
# Per-state vectors, vec[...]: state, transition diagonal, input sensitivity, work,
# measurement Jacobian, P h, gain, prior state, process variance, floor, prior variance.
X, D, G, U, H, PH, K, XP, Q, FLOOR, P0, NV = range(12)
NX = 6  # states at most: SoC, 2 RC, h, bias, capacity scale
PM, MM = range(2)  # mat[...]: covariance P and the work matrix, row-major
# tab[...]: the OCV, R0, M(z) and i0 tables and the RC pairs' resistance tables
OCV_T, R0_T, M_T, I0_T, RC_T = range(5)


# ------------------------------------------------------------ the resistance estimator
# firmware/resistance.py's Resistance (reset, step, _start, _add, _finish: edgefit.py's; _fold), the
# same equations in the same order, its state and parameters in one array e (``ra`` in
# the filter's functions) of the filter's dtype. In this file, not one of its own: numba's
# cache is keyed on the file of the function it compiled, so an index changed in another
# file would leave a stale compiled run() behind.
# e[...]: parameters (Resistance attributes), firmware/resistance.py's constants, state;
# then, from E_NE on, the knots of R0's scale (_KNOTS of them, a number read from the
# firmware at pack time): their scales, their covariances with r, their covariance
# (row-major) and two work columns of _KNOTS + 1 (res_knots gives the offsets).
RES_PARAMS = ("tau", "q_ohm", "q_res", "p0_ohm", "p0_res", "sigma_v", "one_c")
RES_CONSTANTS = ("_HOLD_TAUS", "_WINDOW_TAUS", "_MIN_SAMPLES", "_EDGE_REST_MULT", "_EDGE_C",
                 "_HOLD_FRAC", "_HOLD_NOISE", "_HOLD_C", "_GATE2", "_NOISE_W", "_SCALE_MIN",
                 "_SCALE_MAX", "_RATE_GAIN", "_RATE_SPAN", "_RATE_FROM_EDGES", "_RATE_MAX",
                 "_KNOTS", "_SHAPE_P0", "_SHAPE_Q")
(E_TAU, E_Q_OHM, E_Q_RES, E_P0_OHM, E_P0_RES, E_SIGMA_V, E_ONE_C,
 E_HOLD_TAUS, E_WINDOW_TAUS, E_MIN_SAMPLES, E_EDGE_REST_MULT, E_EDGE_C, E_HOLD_FRAC,
 E_HOLD_NOISE, E_HOLD_C, E_GATE2, E_NOISE_W, E_SCALE_MIN, E_SCALE_MAX,
 E_RATE_GAIN, E_RATE_SPAN, E_RATE_FROM_EDGES, E_RATE_MAX, E_KNOTS, E_SHAPE_P0, E_SHAPE_Q,
 E_S, E_RS, E_PSS, E_PRR, E_PSR, E_NOISE2, E_EDGES, E_HELD, E_I_LAST, E_Y_REF, E_OPEN,
 E_FIRST, E_DI, E_T, E_M, E_N00, E_N01, E_N02, E_N11, E_N12, E_N22, E_B0, E_B1, E_B2, E_YY,
 E_DR, E_U, E_CR, E_QT, E_ZE, E_QS, E_R0F, E_NE) = range(59)


def pack_res(rs, firmware, dtype):
    """The array e for the firmware estimator ``rs`` (a resistance.Resistance, or None:
    an array that is never used) and the module ``firmware`` (resistance.py: its constants,
    else its base class's module's, edgefit.py: _constant)."""
    knots = int(firmware._KNOTS) if rs is not None else 0
    e = np.zeros(E_NE + 3 * knots + knots * knots + 2 * (knots + 1))
    if rs is not None:
        e[E_TAU:E_TAU + len(RES_PARAMS)] = [getattr(rs, name) for name in RES_PARAMS]
        e[E_HOLD_TAUS:E_HOLD_TAUS + len(RES_CONSTANTS)] = [_constant(rs, firmware, name) for name in RES_CONSTANTS]
    return e.astype(dtype)


@njit(**JIT)
def res_knots(e):
    """(knots, and the offsets in e of their scales, covariances with r, covariance, the
    work columns P h and P e_r): Resistance's _X, _PC, _PK, _UH, _TH."""
    k = int(e[E_KNOTS])
    x = E_NE
    return k, x, x + k, x + 2 * k, x + 2 * k + k * k, x + 2 * k + k * k + k + 1


@njit(**JIT)
def res_segment(e, z):
    """_segment: (knot j, position f towards knot j+1) of SoC z, clamped to 0..1."""
    R = e.dtype.type
    k = int(e[E_KNOTS])
    pos = min(max(z, R(0)), R(1)) * R(k - 1)
    j = min(int(pos), k - 2)
    return j, pos - R(j)


@njit(**JIT)
def res_reset(e):
    """Resistance.reset."""
    R = e.dtype.type
    e[E_S:E_NE] = R(0)
    e[E_NE:] = R(0)
    e[E_RS] = R(1)
    e[E_PRR] = e[E_P0_RES]
    e[E_QS] = e[E_SHAPE_Q]
    k, ex, _, pk, _, _ = res_knots(e)
    for a in range(k):
        e[ex + a] = R(1)
        for b in range(k):
            e[pk + a * k + b] = e[E_P0_OHM] + e[E_SHAPE_P0] if a == b else e[E_P0_OHM]
    e[E_NOISE2] = e[E_SIGMA_V] * e[E_SIGMA_V]
    e[E_FIRST] = R(1)
    res_at(e, R(0.5))


@njit(**JIT)
def res_at(e, z):
    """Resistance._at: E_S, E_PSS, E_PSR at SoC z."""
    R = e.dtype.type
    k, ex, pc, pk, _, _ = res_knots(e)
    j, f = res_segment(e, z)
    a = R(1) - f
    p = pk + j * (k + 1)
    e[E_S] = a * e[ex + j] + f * e[ex + j + 1]
    e[E_PSS] = (a * a * e[p] + R(2) * a * f * e[p + 1] + f * f * e[p + k + 1]
                + e[E_QT] * (e[E_Q_OHM] + e[E_QS] * (a * a + f * f)))
    e[E_PSR] = a * e[pc + j] + f * e[pc + j + 1]


@njit(**JIT)
def res_step(e, i, y, dt, i_min, r0, r1, u0, z):
    """Resistance.step: one sample (i A, y V, dt s), the current noise floor i_min (A),
    the model's R0 and rc[0] (ohm) at the SoC z and R0's relative variance from the SoC, u0."""
    R = e.dtype.type
    if dt > 0:
        e[E_QT] += dt
        e[E_PRR] += e[E_Q_RES] * dt
        du = abs(i) * dt / (R(3600) * e[E_ONE_C])
        e[E_RS] = min(max(e[E_RS] + e[E_DR] * du, e[E_SCALE_MIN]), e[E_SCALE_MAX])
        e[E_U] += du
    if e[E_QS] > 0 and r0 != e[E_R0F]:
        if e[E_FIRST] != 0:
            e[E_R0F] = r0
        else:
            res_table(e)
    di = i - e[E_I_LAST]
    tol = (e[E_HOLD_FRAC] * max(abs(i), abs(e[E_I_LAST])) + e[E_HOLD_NOISE] * i_min
           + e[E_HOLD_C] * e[E_ONE_C])
    held = -tol <= di <= tol
    first = e[E_FIRST] != 0
    if first:
        held = False
    elif e[E_OPEN] != 0:
        if held and dt > 0:
            res_add(e, y, dt)
            if e[E_T] >= e[E_WINDOW_TAUS] * e[E_TAU]:
                e[E_OPEN] = 0
                res_finish(e, r0, r1, u0)
        elif not held:
            e[E_OPEN] = 0
    if not held and not first and e[E_HELD] >= e[E_HOLD_TAUS] * e[E_TAU] \
            and abs(di) >= e[E_EDGE_REST_MULT] * i_min and abs(di) >= e[E_EDGE_C] * e[E_ONE_C] \
            and 0 < dt <= e[E_TAU]:
        res_start(e, di, y, dt, z)
    if held:
        e[E_HELD] += dt
    else:
        e[E_HELD] = dt if not first else R(0)
    e[E_FIRST] = 0
    if not held:
        e[E_I_LAST] = i
    if e[E_OPEN] == 0:
        e[E_Y_REF] = y
    res_at(e, z)


@njit(**JIT)
def res_table(e):
    """Resistance._table: R0 a table in SoC, the knots one scale."""
    R = e.dtype.type
    k, ex, pc, pk, _, _ = res_knots(e)
    e[E_QS] = R(0)
    for a in range(k):
        e[ex + a] = e[E_S]
        e[pc + a] = e[E_PSR]
        for b in range(k):
            e[pk + a * k + b] = e[E_PSS]
    e[E_QT] = R(0)


@njit(**JIT)
def res_start(e, di, y, dt, z):
    """Resistance._start."""
    R = e.dtype.type
    e[E_OPEN] = 1
    e[E_DI] = di
    e[E_ZE] = z
    e[E_T] = R(0)
    e[E_M] = R(0)
    e[E_N00:E_YY + 1] = R(0)
    res_add(e, y, dt)


@njit(**JIT)
def res_add(e, y, dt):
    """Resistance._add."""
    R = e.dtype.type
    e[E_T] += dt
    t = e[E_T]
    phi = R(1) - math.exp(-t / e[E_TAU])
    u = t / (e[E_WINDOW_TAUS] * e[E_TAU])
    w = y - e[E_Y_REF]
    e[E_M] += R(1)
    e[E_N00] += R(1)
    e[E_N01] += phi
    e[E_N02] += u
    e[E_N11] += phi * phi
    e[E_N12] += phi * u
    e[E_N22] += u * u
    e[E_B0] += w
    e[E_B1] += phi * w
    e[E_B2] += u * w
    e[E_YY] += w * w


@njit(**JIT)
def res_finish(e, r0, r1, u0):
    """Resistance._finish: the window's fit folded into the scales."""
    R = e.dtype.type
    if e[E_M] < e[E_MIN_SAMPLES] or not (r0 > 0 and r1 > 0):
        return
    a, b, c = e[E_N00], e[E_N01], e[E_N02]
    d, f, g = e[E_N11], e[E_N12], e[E_N22]
    c00 = d * g - f * f
    c01 = c * f - b * g
    c02 = b * f - c * d
    det = a * c00 + b * c01 + c * c02
    if not det > R(1e-6) * (a * d * g):
        return
    c11 = (a * g - c * c) / det
    c12 = (b * c - a * f) / det
    c00, c01, c02 = c00 / det, c01 / det, c02 / det
    b0, b1, b2 = e[E_B0], e[E_B1], e[E_B2]
    th0 = c00 * b0 + c01 * b1 + c02 * b2
    th1 = c01 * b0 + c11 * b1 + c12 * b2
    th2 = c02 * b0 + c12 * b1 + ((a * d - b * b) / det) * b2
    ssr = e[E_YY] - th0 * b0 - th1 * b1 - th2 * b2
    if ssr < 0:
        ssr = R(0)
    e[E_EDGES] += R(1)
    w = R(1) / e[E_EDGES] if e[E_EDGES] * e[E_NOISE_W] < R(1) else e[E_NOISE_W]
    e[E_NOISE2] += w * (ssr / (e[E_M] - R(3)) - e[E_NOISE2])
    n2 = e[E_NOISE2]
    k0 = R(1) / (e[E_DI] * r0)
    k1 = R(1) / (e[E_DI] * r1)
    ms, mr = th0 * k0, th1 * k1
    css = n2 * (c00 + R(1)) * k0 * k0 + ms * ms * u0
    crr = n2 * c11 * k1 * k1
    csr = n2 * c01 * k0 * k1
    res_fold(e, ms, mr, css, crr, csr)


@njit(**JIT)
def res_fold(e, ms, mr, css, crr, csr):
    """Resistance._fold: Kalman update of (knots, r) with (ms, mr), covariance C."""
    R = e.dtype.type
    k, ex, pc, pk, uh, th = res_knots(e)
    q, qs = e[E_QT] * e[E_Q_OHM], e[E_QT] * e[E_QS]  # the knots' walk since the last edge
    e[E_QT] = R(0)
    for a in range(k):
        for b in range(k):
            e[pk + a * k + b] += q + qs if a == b else q
    j, f = res_segment(e, e[E_ZE])
    a = R(1) - f
    for c in range(k):
        p = pk + c * k + j
        e[uh + c] = a * e[p] + f * e[p + 1]
        e[th + c] = e[pc + c]
    e[uh + k] = a * e[pc + j] + f * e[pc + j + 1]
    e[th + k] = e[E_PRR]
    pss = a * e[uh + j] + f * e[uh + j + 1]
    psr, prr = e[uh + k], e[E_PRR]
    es, er = ms - (a * e[ex + j] + f * e[ex + j + 1]), mr - e[E_RS]
    a, b, d = pss + css, psr + csr, prr + crr
    det = a * d - b * b
    if not det > 0:
        return
    nis = (d * es * es - R(2) * b * es * er + a * er * er) / det
    if nis > e[E_GATE2]:
        g = nis / e[E_GATE2]
        css, crr, csr = css * g, crr * g, csr * g
        a, b, d = pss + css, psr + csr, prr + crr
        det = a * d - b * b
    i00, i01, i11 = d / det, -b / det, a / det
    cr = R(0)
    for r in range(k + 1):
        ur, tr = e[uh + r], e[th + r]
        k0, k1 = ur * i00 + tr * i01, ur * i01 + tr * i11
        dx = k0 * es + k1 * er
        if r < k:
            e[ex + r] = min(max(e[ex + r] + dx, e[E_SCALE_MIN]), e[E_SCALE_MAX])
            for c in range(k):
                e[pk + r * k + c] -= k0 * e[uh + c] + k1 * e[th + c]
            e[pc + r] -= k0 * e[uh + k] + k1 * e[th + k]
        else:
            cr = dx
            e[E_RS] = min(max(e[E_RS] + dx, e[E_SCALE_MIN]), e[E_SCALE_MAX])
            e[E_PRR] -= k0 * e[uh + k] + k1 * e[th + k]
    res_learn_rate(e, cr)


@njit(**JIT)
def res_learn_rate(e, cr):
    """The end of Resistance._fold: an edge's correction of r into its drift rate."""
    R = e.dtype.type
    if e[E_EDGES] < e[E_RATE_FROM_EDGES]:
        e[E_U] = R(0)
        return
    e[E_CR] += cr
    u = e[E_U]
    if u >= e[E_RATE_SPAN]:
        e[E_DR] = min(max(e[E_DR] + e[E_RATE_GAIN] * e[E_CR] / u, -e[E_RATE_MAX]), e[E_RATE_MAX])
        e[E_CR], e[E_U] = R(0), R(0)


def _constant(ekf, firmware, name):
    """The firmware constant ``name`` where the filter's code reads it: the module
    ``firmware`` (ekf.py) or, when that does not hold it, the first module of the filter's
    base classes that does (kalman.py: FOLD, ITER_MAX, ERR_*)."""
    for mod in [firmware] + [sys.modules[c.__module__] for c in type(ekf).__mro__]:
        if hasattr(mod, name):
            return getattr(mod, name)
    raise AttributeError(f"firmware constant {name}: in no module of the filter")


def pack(ekf, firmware, soc0, dtype):
    """The kernel's arrays (f, ip, vec, mat, tab, tau, me_z, me_c, me_s, ra) for the
    firmware filter ``ekf`` (an ekf.Ekf), the firmware module ``firmware`` (ekf.py: its
    constants, and its base classes' modules' ones: _constant) and ``soc0`` (None: from
    the OCV at the first sample), in ``dtype`` (np.float32 or np.float64). tau holds the
    RC time constants (s); me_* the model_error table; ra the resistance estimator
    (pack_res)."""
    f = np.zeros(NF)
    f[Z0:Z0 + len(PARAMS)] = [getattr(ekf, name) for name in PARAMS]
    f[SOC_MIN:SOC_MIN + len(CONSTANTS)] = [_constant(ekf, firmware, name) for name in CONSTANTS]
    f[SOC0] = 0.0 if soc0 is None else soc0
    ip = np.zeros(NI, dtype=np.int64)
    ip[[N, NRC, IH, IB, IC, NPT]] = ekf.n, ekf.nrc, ekf.ih, ekf.ib, ekf.ic, len(ekf.ocv_V)
    ip[ITER_MAX] = _constant(ekf, firmware, "ITER_MAX")
    ip[SOC_GIVEN], ip[BV] = soc0 is not None, ekf.bv
    ip[RES] = ekf.rs is not None
    vec = np.zeros((NV, NX))
    for row, values in ((Q, ekf.q), (FLOOR, ekf.floor), (P0, ekf.p0)):
        vec[row, :ekf.n] = values
    tab = np.ones((RC_T + 2, len(ekf.ocv_V)))  # one-value tables (constants) spread out
    tab[[OCV_T, R0_T, M_T]] = ekf.ocv_V, ekf.r0_ohm, ekf.m_tab
    tab[I0_T] = ekf.i0_tab
    for j in range(ekf.nrc):
        tab[RC_T + j] = ekf.rc_tab[j]
    tau = np.ones(2)
    tau[:ekf.nrc] = ekf.rc_tau_s
    me = [np.array(a, dtype=np.float64) for a in (ekf.me_z, ekf.me_c, ekf.me_s)]
    # the resistance estimator's constants from its own firmware module
    res = sys.modules[type(ekf.rs).__module__] if ekf.rs is not None else None
    ra = pack_res(ekf.rs, res, dtype)
    return (f.astype(dtype), ip, vec.astype(dtype), np.zeros((2, NX * NX), dtype),
            tab.astype(dtype), tau.astype(dtype), *(a.astype(dtype) for a in me), ra)


@njit(**JIT)
def grid_segment(f, ip, z):
    """(segment, position in it) of SoC z on the uniform OCV grid; the segment is clamped
    to the table, the position is not (beyond the ends it runs below 0 or above 1)."""
    pos = (z - f[Z0]) / f[DZ]
    last = ip[NPT] - 2
    j = int(pos) if pos > 0 else 0
    if j > last:
        j = last
    return j, pos - f.dtype.type(j)


@njit(**JIT)
def lookup(f, ip, tab, z):
    """Set OCV, SLOPE, R0, DR0, M, DM, I0, DI0 at SoC z (Ekf._lookup); returns the segment."""
    R = f.dtype.type
    j, frac = grid_segment(f, ip, z)
    v, r, m, i0 = tab[OCV_T], tab[R0_T], tab[M_T], tab[I0_T]
    f[SLOPE] = (v[j + 1] - v[j]) / f[DZ]
    f[OCV] = v[j] + frac * (v[j + 1] - v[j])
    if frac <= 0 or frac >= 1:
        e = j if frac <= 0 else j + 1
        f[R0], f[M], f[I0] = r[e], m[e], i0[e]
        f[DR0], f[DM], f[DI0] = R(0), R(0), R(0)
    else:
        f[R0] = r[j] + frac * (r[j + 1] - r[j])
        f[DR0] = (r[j + 1] - r[j]) / f[DZ]
        f[M] = m[j] + frac * (m[j + 1] - m[j])
        f[DM] = (m[j + 1] - m[j]) / f[DZ]
        f[I0] = i0[j] + frac * (i0[j + 1] - i0[j])
        f[DI0] = (i0[j + 1] - i0[j]) / f[DZ]
    return j


@njit(**JIT)
def rc_at(f, ip, tab, z, rr):
    """The RC resistances at SoC z into rr (Ekf._rc_at)."""
    j, frac = grid_segment(f, ip, z)
    for p in range(ip[NRC]):
        t = tab[RC_T + p]
        if frac <= 0:
            rr[p] = t[j]
        elif frac >= 1:
            rr[p] = t[j + 1]
        else:
            rr[p] = t[j] + frac * (t[j + 1] - t[j])


@njit(**JIT)
def locate(knots, x):
    """(segment, fraction) of x on increasing knots, clamped (circuit._locate)."""
    R = knots.dtype.type
    last = knots.size - 2
    if last < 0 or x <= knots[0]:
        return 0, R(0)
    j = 0
    while j < last and x > knots[j + 1]:
        j += 1
    if x >= knots[j + 1]:
        return j, R(1)
    return j, (x - knots[j]) / (knots[j + 1] - knots[j])


@njit(**JIT)
def model_error(f, me_z, me_c, me_s, z, i):
    """sigma_m (V) at SoC z and current i (Ekf._model_error)."""
    R = f.dtype.type
    if me_s.size == 0:
        return R(0)
    m = me_c.size
    a, fa = locate(me_z, z)
    b, fb = locate(me_c, abs(i) * R(3600) / f[Q_AS])
    a1 = a + 1 if me_z.size > 1 else a
    b1 = b + 1 if m > 1 else b
    lo = me_s[a * m + b] + fb * (me_s[a * m + b1] - me_s[a * m + b])
    hi = me_s[a1 * m + b] + fb * (me_s[a1 * m + b1] - me_s[a1 * m + b])
    return lo + fa * (hi - lo)


@njit(**JIT)
def look(f, i, dt):
    """model_error's look-up current f[ILOOK] (A): |i|, or the recent load decayed with
    look_tau_s if larger (Ekf.step)."""
    R = f.dtype.type
    m = f[ILOOK] * math.exp(-dt / f[LOOK_TAU_S]) if f[LOOK_TAU_S] > 0 else R(0)
    ai = abs(i)
    f[ILOOK] = ai if ai > m else m


@njit(**JIT)
def noise_v2(f, me_z, me_c, me_s, z, i, dt):
    """Measurement variance R (V^2); sets f[SM2] (Ekf.noise_V2 with Ekf.error_tau_s)."""
    R = f.dtype.type
    rv = f[SIGMA_I] * abs(f[DVDI]) + f[SIGMA_V]
    if me_s.size == 0:
        f[SM2] = R(0)
        return rv * rv
    f[LOOKS] = R(1)
    sm = model_error(f, me_z, me_c, me_s, z, f[ILOOK])
    sm2 = sm * sm
    f[SM2] = sm2
    if sm2 > 0 and dt > 0:
        ai = abs(i)
        if ai * f[ERR_TAU_MAX_S] < f[ERR_SPAN] * f[Q_AS]:
            tau = f[ERR_TAU_MAX_S]
        else:
            tau = max(f[ERR_SPAN] * f[Q_AS] / ai, f[ERR_TAU_MIN_S])
        if tau > dt:
            f[LOOKS] = tau / dt
            sm2 = sm2 * (tau / dt)
    return rv * rv + sm2


@njit(**JIT)
def bv_v(f, ip, i):
    """Butler-Volmer overpotential (V) at i with I0, DI0 set (Ekf._bv_V); sets BV_DI, BV_DZ."""
    R = f.dtype.type
    if ip[BV] == 0:
        f[BV_DI], f[BV_DZ] = R(0), R(0)
        return R(0)
    i0, vt = f[I0], f[BV_VT]
    u = i / (R(2) * i0)
    w = R(1) / math.sqrt(R(1) + u * u)
    f[BV_DI] = vt * w / i0
    f[BV_DZ] = -R(2) * vt * u * w * f[DI0] / i0
    a = u if u >= 0 else -u
    y = math.log(a + math.sqrt(a * a + R(1)))
    return R(2) * vt * (y if u >= 0 else -y)


@njit(**JIT)
def soc_at(f, ip, tab, v_V):
    """(SoC whose OCV is v_V clamped to [SOC_MIN, SOC_MAX], whether it was outside)."""
    R = f.dtype.type
    v = tab[OCV_T]
    last = ip[NPT] - 2
    j = 0
    while j < last and v_V > v[j + 1]:
        j += 1
    z = f[Z0] + (R(j) + (v_V - v[j]) / (v[j + 1] - v[j])) * f[DZ]
    outside = z < f[SOC_MIN] or z > f[SOC_MAX]
    return min(max(z, f[SOC_MIN]), f[SOC_MAX]), outside


@njit(**JIT)
def cap(P, n, r, vmax):
    """Scale row and column r of P so P[r, r] <= vmax (Ekf._cap)."""
    prr = P[r * n + r]
    if prr <= vmax:
        return
    s = math.sqrt(vmax / prr)
    for c in range(n):
        P[r * n + c] *= s
        P[c * n + r] *= s


@njit(**JIT)
def condition(f, ip, vec, mat):
    """Clamp SoC, h and c, cap their variances, floor the diagonal of P (Ekf._condition)."""
    R = f.dtype.type
    n, ih, ic = ip[N], ip[IH], ip[IC]
    x, P, floor = vec[X], mat[PM], vec[FLOOR]
    z = x[0] + f[PEND]
    if z < f[SOC_MIN] or z > f[SOC_MAX]:
        x[0] = min(max(z, f[SOC_MIN]), f[SOC_MAX])
        f[PEND] = R(0)
        z = x[0]
    if z > 1 or z < 0:
        out = z - R(1) if z > 1 else z
        if P[0] < out * out:
            P[0] = out * out
    if x[ih] > 1:
        x[ih] = R(1)
    elif x[ih] < -1:
        x[ih] = R(-1)
    cap(P, n, 0, f[VAR_SOC_MAX])
    cap(P, n, ih, f[VAR_H_MAX])
    if ic >= 0:
        x[ic] = min(max(x[ic], f[CAP_MIN]), f[CAP_MAX])
        cap(P, n, ic, f[VAR_CAP_MAX])
    for r in range(n):
        if P[r * n + r] < floor[r]:
            P[r * n + r] = floor[r]


@njit(**JIT)
def reset(f, ip, vec, mat, tab, me_z, me_c, me_s, ra, rr, soc_given, soc, v, i):
    """Ekf.reset(soc) or, without soc_given, Ekf.reset(v, i) from a sample; returns
    True when no OCV explains v (the filter restarts at the next sample)."""
    R = f.dtype.type
    n, ih = ip[N], ip[IH]
    f[KZ], f[AH], f[HIN] = R(0), R(1), R(0)
    if ip[RES] != 0:
        res_reset(ra)
    x, P, p0 = vec[X], mat[PM], vec[P0]
    P[:] = R(0)
    x[:] = R(0)
    for k in range(n):
        P[k * n + k] = p0[k]
    if ip[IC] >= 0:
        x[ip[IC]] = R(1)
    outside = False
    if soc_given:
        x[0] = min(max(soc, f[SOC_MIN]), f[SOC_MAX])
    else:
        z, outside = soc_at(f, ip, tab, v)
        lookup(f, ip, tab, z)
        z, outside = soc_at(f, ip, tab, v - f[R0] * r0_scale(ip, ra) * i - bv_v(f, ip, i))
        lookup(f, ip, tab, z)
        x[0] = z
        outside = outside or v == 0  # 0: no sample yet (Ekf.reset)
        if outside:
            P[0] = f[VAR_UNKNOWN]
        else:
            p0_h = P[ih * n + ih]
            c = f[M] / f[SLOPE]
            sm = model_error(f, me_z, me_c, me_s, z, i)
            P[0] = c * c * p0_h + (f[SIGMA_V] * f[SIGMA_V] + sm * sm) / (f[SLOPE] * f[SLOPE])
            P[ih] = P[ih * n] = -c * p0_h
    f[PEND] = R(0)
    f[ILOOK] = R(0)
    f[ZC] = x[0]
    f[HC] = x[ih]
    f[S] = R(0)
    condition(f, ip, vec, mat)
    if ip[RES] != 0:  # Ekf._publish: the RC resistances at the SoC
        rc_at(f, ip, tab, x[0] + f[PEND], rr)
    return outside


@njit(**JIT)
def r0_scale(ip, ra):
    """The resistance estimator's scale on R0 (1 without it): Ekf._r0_scale."""
    return ra[E_S] if ip[RES] != 0 else ra.dtype.type(1)


@njit(**JIT)
def propagate_cov(f, ip, vec, mat, dt):
    """P = F P F' + sigma_i^2 g g' + Q dt (Ekf._propagate_cov)."""
    n, ib, ic = ip[N], ip[IB], ip[IC]
    P, A, d, g, q = mat[PM], mat[MM], vec[D], vec[G], vec[Q]
    si2 = f[SIGMA_I] * f[SIGMA_I]
    if ib < 0 and ic < 0:
        for r in range(n):
            for c in range(r, n):
                v = d[r] * d[c] * P[r * n + c] + si2 * g[r] * g[c]
                if r == c:
                    v = v + q[r] * dt
                P[r * n + c] = v
                P[c * n + r] = v
        return
    f0c = f[F0C]
    for r in range(n):
        dr, gr = d[r], g[r]
        for c in range(n):
            a = dr * P[r * n + c]
            if ib >= 0:
                a -= gr * P[ib * n + c]
            A[r * n + c] = a
    if ic >= 0:
        for c in range(n):
            A[c] += f0c * P[ic * n + c]
    for r in range(n):
        for c in range(r, n):
            v = d[c] * A[r * n + c] + si2 * g[r] * g[c]
            if ib >= 0:
                v -= g[c] * A[r * n + ib]
            if c == 0 and ic >= 0:
                v += f0c * A[r * n + ic]
            if r == c:
                v = v + q[r] * dt
            P[r * n + c] = v
            P[c * n + r] = v


@njit(**JIT)
def predict(f, ip, vec, mat, tab, tau, ra, rr, i, dt):
    """Propagate x and P over dt seconds with the bias-corrected current i (Ekf._predict)."""
    R = f.dtype.type
    x, d, g = vec[X], vec[D], vec[G]
    k = dt / f[Q_AS]
    if i > 0:
        k = k * f[ETA]
    ic = ip[IC]
    if ic >= 0:
        c = x[ic]
        k = k / c
        d[ic] = R(1)
        g[ic] = R(0)
        f[F0C] = -k * i / c
    f[KZ] = k
    if ip[NRC] > 0:
        rc_at(f, ip, tab, x[0] + f[PEND], rr)
    d[0] = R(1)
    g[0] = k
    f[PEND] += k * i
    for j in range(ip[NRC]):
        a = math.exp(-dt / tau[j])
        b = rr[j] * (R(1) - a)
        if ip[RES] != 0:
            b = b * (ra[E_RS] if j == 0 else ra[E_S])
        x[1 + j] = a * x[1 + j] + b * i
        d[1 + j] = a
        g[1 + j] = b
    ih, ib = ip[IH], ip[IB]
    sg = R(1) if i > 0 else (R(-1) if i < 0 else R(0))
    kh = f[GAMMA] * dt / f[Q_AS]
    ah = math.exp(-abs(i) * kh)
    h = x[ih]
    x[ih] = ah * h + (R(1) - ah) * sg
    f[AH], f[HIN] = ah, (R(1) - ah) * sg
    d[ih] = ah
    g[ih] = -kh * sg * ah * (h - sg)
    if ib >= 0:
        d[ib] = R(1)
        g[ib] = R(0)
    propagate_cov(f, ip, vec, mat, dt)
    if f[PEND] >= f[FOLD] or f[PEND] <= -f[FOLD]:
        x[0] += f[PEND]
        f[PEND] = R(0)


@njit(**JIT)
def measure(f, ip, vec, tab, ra, z, i):
    """(model voltage at SoC z and the other states, table segment of z); the Jacobian
    row goes into vec[H] and dv/di into f[DVDI] (Ekf._measure)."""
    R = f.dtype.type
    x, Hr = vec[X], vec[H]
    ih, ib, ic = ip[IH], ip[IB], ip[IC]
    seg = lookup(f, ip, tab, z)
    sr = r0_scale(ip, ra)
    vm = f[OCV] + f[M] * x[ih] + f[M0_V] * f[S] + sr * f[R0] * i
    for j in range(ip[NRC]):
        vm += x[1 + j]
        Hr[1 + j] = R(1)
    f[HS] = f[SLOPE]
    Hr[0] = f[SLOPE] + sr * f[DR0] * i + f[DM] * x[ih]
    Hr[ih] = f[M]
    f[DVDI] = sr * f[R0]
    if ip[BV] != 0:
        vm += bv_v(f, ip, i)
        Hr[0] += f[BV_DZ]
        f[DVDI] += f[BV_DI]
    if ib >= 0:
        Hr[ib] = -f[DVDI]
    if ic >= 0:
        Hr[ic] = R(0)
    return vm, seg


@njit(**JIT)
def min_slope(f, ip, tab, za, zb):
    """Smallest OCV segment slope over [za, zb] (Ekf._min_slope)."""
    v, last = tab[OCV_T], ip[NPT] - 2
    pa = (za - f[Z0]) / f[DZ]
    pb = (zb - f[Z0]) / f[DZ]
    ja = min(int(pa), last) if pa > 0 else 0
    jb = min(int(pb), last) if pb > 0 else 0
    m = v[ja + 1] - v[ja]
    for j in range(ja + 1, jb + 1):
        d = v[j + 1] - v[j]
        if d < m:
            m = d
    return m / f[DZ]


@njit(**JIT)
def gain(ip, vec, mat, Rv):
    """vec[PH] = P h, vec[K] = P h / (h P h' + Rv); returns h P h'."""
    R = mat.dtype.type
    n = ip[N]
    P, Hr, ph, Kg = mat[PM], vec[H], vec[PH], vec[K]
    hph = R(0)
    for r in range(n):
        acc = R(0)
        for c in range(n):
            acc += P[r * n + c] * Hr[c]
        ph[r] = acc
        hph += Hr[r] * acc
    Sv = hph + Rv
    for r in range(n):
        Kg[r] = ph[r] / Sv
    return hph


@njit(**JIT)
def chord(f, ip, vec, tab, ra, zp, vm0, v, i):
    """Slope of the chord from zp to the SoC that explains v when it is outside [0, 1],
    else vec[H][0] (Ekf._chord); vec[H] and the look-up are left at zp."""
    zs, _ = soc_at(f, ip, tab, v - vm0 + f[OCV])
    if (zs >= 0 and zs <= 1) or zs == zp:
        return vec[H][0]
    vs, _ = measure(f, ip, vec, tab, ra, zs, i)
    measure(f, ip, vec, tab, ra, zp, i)
    return (vs - vm0) / (zs - zp)


@njit(**JIT)
def update(f, ip, vec, mat, tab, me_z, me_c, me_s, ra, rr, i, v, dt):
    """Iterated-EKF correction with voltage v (Ekf._update); returns the prior model voltage."""
    R = f.dtype.type
    n = ip[N]
    x, P, Hr, ph, Kg, Mw, w, xp = (vec[X], mat[PM], vec[H], vec[PH], vec[K], mat[MM],
                                   vec[U], vec[XP])
    for r in range(n):
        xp[r] = x[r]
    zp = x[0] + f[PEND]
    z = zp
    vm0, seg = measure(f, ip, vec, tab, ra, z, i)
    seg0 = seg
    e = v - vm0
    Rv = noise_v2(f, me_z, me_c, me_s, z, i, dt)
    if ip[RES] != 0:
        a0, a1 = f[R0] * i, rr[0] * i
        Rv += a0 * a0 * ra[E_PSS] + a1 * a1 * ra[E_PRR] + R(2) * a0 * a1 * ra[E_PSR]
    p00 = P[0]
    hph = gain(ip, vec, mat, Rv)
    g2 = f[GATE] * f[GATE]
    on_chord = False
    e2 = e * e
    r1 = Rv - f[SM2] * (f[LOOKS] - R(1))
    if e2 > g2 * (hph + r1):
        d = chord(f, ip, vec, tab, ra, zp, vm0, v, i) - Hr[0]
        if d > 0 and e2 <= g2 * (hph + d * (R(2) * ph[0] + d * p00) + r1):
            Hr[0] += d
            f[HS] += d
            Rv = r1
            gain(ip, vec, mat, Rv)
            on_chord = True
    if not on_chord and e2 > g2 * (hph + Rv):
        Rv = e2 / g2 - hph
        gain(ip, vec, mat, Rv)
    dz = R(0)
    zn = zp
    seg_n = seg
    passes = 1 if on_chord else ip[ITER_MAX]
    for it in range(passes):
        dz = Kg[0] * e
        zn = zp + dz
        for r in range(1, n):
            x[r] = xp[r] + Kg[r] * e
        seg_n = lookup(f, ip, tab, zn)
        if seg_n == seg or it == passes - 1:
            break
        # re-linearise at the new iterate; innovation about the prior (Bell-Cathey)
        z = zn
        vm, seg = measure(f, ip, vec, tab, ra, z, i)
        e = v - vm - Hr[0] * (zp - z)
        for r in range(1, n):
            e -= Hr[r] * (xp[r] - x[r])
        gain(ip, vec, mat, Rv)
    f[PEND] += dz
    dh = R(0)
    if seg_n != seg0:
        dh = min_slope(f, ip, tab, min(zp, zn), max(zp, zn)) - f[HS]
    p00c = R(0)
    if dh < 0:
        hph = R(0)
        for r in range(n):
            hph += Hr[r] * ph[r]
        phc0 = ph[0] + p00 * dh
        hphc = hph + dh * (R(2) * ph[0] + dh * p00)
        p00c = p00 - R(2) * Kg[0] * phc0 + Kg[0] * Kg[0] * (hphc + Rv)
    for r in range(n):
        for c in range(n):
            Mw[r * n + c] = P[r * n + c] - Kg[r] * ph[c]
    for r in range(n):
        acc = R(0)
        for c in range(n):
            acc += Mw[r * n + c] * Hr[c]
        w[r] = acc
    for r in range(n):
        kr = Kg[r] * Rv
        for c in range(r, n):
            P[r * n + c] = P[c * n + r] = Mw[r * n + c] - w[r] * Kg[c] + kr * Kg[c]
    if P[0] < p00c:
        P[0] = p00c
    if f[SM2] > 0:
        h0 = Hr[0] + dh if dh < 0 else Hr[0]
        if h0 * h0 > 0:
            lo = min(p00, f[SM2] / (h0 * h0))
            if P[0] < lo:
                P[0] = lo
    return vm0


@njit(**JIT)
def edges(f, ip, vec, mat, tab, ra, rr, i, v, dt):
    """Feed the resistance estimator (Ekf._edges): the voltage less OCV and M(z)*h at the
    counted SoC and predicted h, M0*s and Butler-Volmer; R0, rc[0] and R0's relative
    variance from the SoC."""
    zc = f[ZC] + f[KZ] * i
    hc = f[AH] * f[HC] + f[HIN]
    lookup(f, ip, tab, zc)
    y = v - f[OCV] - f[M] * hc - f[M0_V] * f[S] - bv_v(f, ip, i)
    rc_at(f, ip, tab, zc, rr)
    g = f[DR0] / f[R0] if f[R0] > 0 else f.dtype.type(0)
    res_step(ra, i, y, dt, f[I_REST], f[R0], rr[0], g * g * mat[PM][0], zc)
    if ra[E_OPEN] != 0:
        f[ZC], f[HC] = zc, hc
    else:
        f[ZC], f[HC] = vec[X][0] + f[PEND], vec[X][ip[IH]]


@njit(**JIT)
def publish_slow(f, ip, vec, mat, tab, ra, rr, out):
    """Ekf._publish's slow estimates as floats into out (NaN for a state that is off):
    capacity and its std (Ah), R_ct and R0 at the present SoC and their stds (ohm)."""
    x, P, n, ic = vec[X], mat[PM], ip[N], ip[IC]
    if ic >= 0:
        q_Ah = f[Q_AS] / f.dtype.type(3600)
        out[CAP_AH] = q_Ah * x[ic]
        out[CAP_STD_AH] = q_Ah * math.sqrt(P[ic * n + ic])
    else:
        out[CAP_AH] = out[CAP_STD_AH] = np.nan
    if ip[RES] != 0:
        rc_at(f, ip, tab, x[0] + f[PEND], rr)
        out[RCT_OHM] = ra[E_RS] * rr[0]
        out[RCT_STD_OHM] = math.sqrt(ra[E_PRR]) * rr[0]
        j, frac = grid_segment(f, ip, x[0] + f[PEND])  # lookup's R0 (clamped), f untouched
        r = tab[R0_T]
        r0 = r[j] + min(max(frac, f.dtype.type(0)), f.dtype.type(1)) * (r[j + 1] - r[j])
        out[R0_OHM] = ra[E_S] * r0
        out[R0_STD_OHM] = math.sqrt(ra[E_PSS]) * r0
    else:
        out[RCT_OHM] = out[RCT_STD_OHM] = out[R0_OHM] = out[R0_STD_OHM] = np.nan


@njit(**JIT)
def run(f, ip, vec, mat, tab, tau, me_z, me_c, me_s, ra, t_s, i_A, v_V, soc, std, v_model,
        slow, x_out, P_out, full):
    """The filter over every sample (t_s, i_A, v_V: float64), as the board runs it from a
    reset at the first sample: soc, std, v_model (float64, one per sample) and slow
    (samples x 6: CAP_AH, ...; NaN for a state that is off) are written; with ``full``
    also x_out (samples x n, SoC with its pending sum) and P_out."""
    R = f.dtype.type
    n, ib = ip[N], ip[IB]
    x, P = vec[X], mat[PM]
    rr = np.zeros(2, dtype=f.dtype)
    defer = False
    for s in range(t_s.size):
        # the board receives integer nA, uV, ms and scales them into its own floats
        i, v = R(i_A[s]), R(v_V[s])
        dt = t_s[s] - t_s[s - 1] if s else 0.0
        first = s == 0
        if first:
            defer = reset(f, ip, vec, mat, tab, me_z, me_c, me_s, ra, rr, ip[SOC_GIVEN] != 0,
                          f[SOC0], v, i)
        elif defer:  # no credible OCV yet: restart from this sample
            defer = reset(f, ip, vec, mat, tab, me_z, me_c, me_s, ra, rr, False, R(0), v, i)
            first = True
            dt = 0.0
        if first or dt > 0:
            if ib >= 0:
                i = i - x[ib]
            if i > f[I_REST]:
                f[S] = R(1)
            elif i < -f[I_REST]:
                f[S] = R(-1)
            dtr = R(dt)
            look(f, i, dtr)
            if dt > 0:
                predict(f, ip, vec, mat, tab, tau, ra, rr, i, dtr)
            v_model[s] = update(f, ip, vec, mat, tab, me_z, me_c, me_s, ra, rr, i, v, dtr)
            condition(f, ip, vec, mat)
            if ip[RES] != 0:
                edges(f, ip, vec, mat, tab, ra, rr, i, v, dtr)
            publish_slow(f, ip, vec, mat, tab, ra, rr, slow[s])
        else:  # a repeated sample: nothing new
            v_model[s] = v_model[s - 1]
            slow[s] = slow[s - 1]
        soc[s] = x[0] + f[PEND]
        std[s] = math.sqrt(P[0])
        if full:
            for k in range(n):
                x_out[s, k] = x[k]
            x_out[s, 0] = soc[s]
            for k in range(n * n):
                P_out[s, k // n, k % n] = P[k]
