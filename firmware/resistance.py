"""Slow resistance estimator fed by current step edges: the cell's ohmic resistance R0 and
charge-transfer resistance R_ct (the model's rc[0]) as scales on the model's values.

Plain Python: runs under MicroPython (the board, 32-bit floats) and CPython (host tests);
its host twin is in cellbench.estimate_kernel (res_step, ...: the same equations compiled by numba).
docs/estimator.md "Resistance" gives the derivation and why it is a separate estimator
(dual estimation) rather than two more states of the SoC filter.

Its measurements come from current step edges (edgefit.EdgeFit, its base class: the
edge's window fit): per edge, a measurement ms of R0's scale s(z_e) at the edge's SoC z_e
and mr of R_ct's r, with covariance C.

R0's scale is not one number but a function of SoC when the model's R0 is (one value: the
fit found no SoC dependence): _KNOTS scales s_k on hat functions over SoC 0..1 (linear
between knots), because ageing does not scale R0 alike at every SoC. A film that grows on
the electrodes (SEI) adds a resistance flat in SoC to a kinetic part steep at the window's
ends: on the PyBaMM SEI cell the 1 s resistance at the bottom (SoC 3 %) is 1.22x that at
mid SoC fresh and 1.08x after 100 cycles, so one scale fitted to the edges at both ends is
right at neither (docs/estimator.md "Resistance"). The knots share a random walk (q_ohm:
R0 ageing alike everywhere, the plants' law, which carries the growth an edge sees to
SoCs without edges) and each has one of its own (_SHAPE_Q: the shape ageing), over a
prior p0_ohm common plus _SHAPE_P0 each (the fitted R0's level and its shape). A model
whose R0 is a table in SoC says its shape: at the first sample whose R0 differs from the
first one's the knots become one scale (_predict), as on the LTO/Li preset, whose steep
bottom made any shape freedom bend with the SoC's error there. Three knots: with five,
LTO's edges (at SoC 0.05, 0.24 and 1) left knots that no edge sees, and those walked with
the common part until the SoC filter lost the plateau's SoC. The state (s_0..s_K-1, r) is a
random walk:

    P(0) = p0_ohm 1 1' + _SHAPE_P0 I on the knots, p0_res on r
    P <- P + Q dt, Q = q_ohm 1 1' + _SHAPE_Q I on the knots, q_res on r   (every sample)
    S = H P H' + C, K = P H' S^-1, theta <- theta + K (m - H theta), P <- P - K H P
                                                                           (every edge)

H's first row the hat weights at z_e, its second picks r. The knots' random walk is added
when an edge needs it (the time since the last one), so a sample costs nothing more. The
SoC filter reads v[_S], v[_PSS], v[_PSR]: the scale at the present SoC (the hat weights w
there: w s), its variance (w P w') and its covariance with r, set every sample.
An edge whose normalised innovation e' S^-1 e exceeds _GATE2 gets C inflated until it sits
on the gate (a disturbed edge moves the estimate little). Units: A, V, s, ohm.

Ageing drifts the scales with the charge passed (a ramp, not a random walk: the LTO/Li
preset's R_ct grows 1 % a cycle), and a random walk with a gain small enough to average
the edges' noise (an LTO edge gives r to +-18 %) lags a ramp by a constant amount (7 % on
the simulated LTO/Li board). So the R_ct scale also carries a drift rate (per 1C-hour of charge
passed, u = |i| dt / (3600 * one_c)), applied every sample; the rates learn from the
corrections the edges make (alpha-beta tracking): the corrections summed over at least
_RATE_SPAN 1C-hours, divided by the charge passed, are the rate still missing, and
_RATE_GAIN of that goes into the rate (from the _RATE_FROM_EDGES-th edge on: the first
edges correct the prior, not a drift). The rate stays within +-_RATE_MAX. R0's scales
need none: their edges are ten times as precise, so their random walk's gain keeps up.
"""

from circuit import floats
from edgefit import EdgeFit

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x

# Normalised innovation (2 degrees of freedom) beyond which an edge is down-weighted.
_GATE2 = const(25.0)
# Scales are kept within these (the model is not that cell outside them).
_SCALE_MIN = const(0.1)
_SCALE_MAX = const(20.0)
# Drift rates of the scales (see the module docstring): scale per 1C-hour of charge passed.
# Private consts: inlined, so they cost the board's heap nothing (the twin reads them too).
_RATE_GAIN = const(0.05)
_RATE_SPAN = const(1.0)
_RATE_FROM_EDGES = const(8)
_RATE_MAX = const(0.05)
# R0's scale per SoC (see the module docstring): knots over SoC 0..1; each knot's own prior
# variance and random walk (per second), beyond the shared p0_ohm and q_ohm: R0's shape
# in SoC known to 2 % and changing by a few % over hundreds of hours (PyBaMM's film: the
# bottom's ratio to the middle falls by 0.14 in 250 h). Not shares of the shared ones: a
# cell whose R0 ages fast (LTO/Li's q_ohm 1e-7) does not change its shape faster, and
# freedom the edges cannot pin lets a misplaced edge bend it (docs/estimator.md).
_KNOTS = const(3)
_SHAPE_P0 = const(5e-4)
_SHAPE_Q = const(3e-10)
# The estimator's floats, Resistance.v[...]: R0's scale at the present SoC and r (rc[0]'s),
# their covariance; v[5:22] edgefit.EdgeFit's (the edge's window); then the drift rate
# of r (per 1C-hour), the charge passed (1C-hours), the corrections of r summed since the
# rate last learned, the time since the knots' random walk was last added (s), the
# knots' own walk (per second; 0: R0's shape is the model's table), the model's R0 at
# the first sample (ohm), the knots' scales, their covariances with r, their covariance
# (row-major), and two columns of work (P h and P e_r in an update).
# An array, not attributes: a float attribute is a boxed float that lives until the next
# sample, and tens of those scattered over the heap leave no hole for a reply (the board's
# STATUS failed so); an array keeps them in one block.
# Private consts, so they cost the board's heap no module dictionary entries. The SoC
# filter's slots first (kalman.py names them R_OHM, R_CT, PSS, PRR, PSR; tests/test_ekf.py
# checks they agree).
_S = const(0)
_R = const(1)
_PSS = const(2)
_PRR = const(3)
_PSR = const(4)
_DR = const(22)  # after edgefit's last (_ZE, 21)
_U = const(23)
_CR = const(24)
_QT = const(25)
_QS = const(26)
_R0F = const(27)
_X = const(28)
_PC = const(_X + _KNOTS)
_PK = const(_PC + _KNOTS)
_UH = const(_PK + _KNOTS * _KNOTS)
_TH = const(_UH + _KNOTS + 1)
_NV = const(_TH + _KNOTS + 1)


class Resistance(EdgeFit):
    """R0's scale per SoC region and rc[0]'s scale, with their covariance, from step edges.

    Resistance(tau_s, q_ohm, q_res, p0_ohm, p0_res, sigma_v, one_c_A): tau_s the rc[0] time
    constant (s), q_* the scales' process variance per second, p0_* their prior variance,
    sigma_v (V) the prior of the per-sample noise until the first edge is fitted, one_c_A
    the cell's 1C current (A).
    After reset(), step() (EdgeFit's) once per sample; v[_S], v[_R] (scales of R0 at the
    present SoC and of rc[0]) and v[_PSS], v[_PRR], v[_PSR] (their covariance) are read by
    the SoC filter; open is True while a sample is inside an edge's window (the filter counts SoC
    there), edges counts the edges fitted.
    """

    def __init__(self, tau_s, q_ohm, q_res, p0_ohm, p0_res, sigma_v, one_c_A):
        self.tau = tau_s
        self.one_c = one_c_A
        self.q_ohm = q_ohm
        self.q_res = q_res
        self.p0_ohm = p0_ohm
        self.p0_res = p0_res
        self.sigma_v = sigma_v
        self.v = floats(_NV)
        self.reset()

    def reset(self):
        """Scales 1 with their prior variances; no edge seen, noise at its prior."""
        EdgeFit.reset(self)
        v = self.v
        v[_R] = 1.0
        v[_PRR] = self.p0_res
        v[_QS] = _SHAPE_Q
        for a in range(_KNOTS):
            v[_X + a] = 1.0
            for b in range(_KNOTS):
                v[_PK + a * _KNOTS + b] = self.p0_ohm + _SHAPE_P0 if a == b else self.p0_ohm
        self._at(0.5)

    def _predict(self, i, dt, r0):
        """The scales' random walk and drift over dt (s) at current i (A), at each sample's
        start (EdgeFit.step), and a model R0 r0 (ohm) other than the first sample's."""
        v = self.v
        if dt > 0.0:
            v[_QT] += dt  # the knots' random walk, added when an edge needs it (_fold)
            v[_PRR] += self.q_res * dt
            du = abs(i) * dt / (3600.0 * self.one_c)
            v[_R] = min(max(v[_R] + v[_DR] * du, _SCALE_MIN), _SCALE_MAX)
            v[_U] += du
        if v[_QS] > 0.0 and r0 != v[_R0F]:
            if self.first:
                v[_R0F] = r0
                return
            # the model's R0 varies with SoC (a table): its shape is the model's, and the
            # knots become one scale (the present one, its variance, its covariance with r)
            v[_QS] = 0.0
            for a in range(_KNOTS):
                v[_X + a] = v[_S]
                v[_PC + a] = v[_PSR]
                for b in range(_KNOTS):
                    v[_PK + a * _KNOTS + b] = v[_PSS]
            v[_QT] = 0.0

    def _at(self, z):
        """v[_S], v[_PSS], v[_PSR]: R0's scale at SoC z, its variance, its covariance with r."""
        v = self.v
        # the knot j below SoC z (clamped to 0..1), the position f towards knot j+1 (as in
        # _fold: written out, a function for it cost the board's ring 2 slots)
        pos = min(max(z, 0.0), 1.0) * (_KNOTS - 1)
        j = min(int(pos), _KNOTS - 2)
        f = pos - j
        a = 1.0 - f
        p = _PK + j * (_KNOTS + 1)  # P[j][j]
        v[_S] = a * v[_X + j] + f * v[_X + j + 1]
        v[_PSS] = (a * a * v[p] + 2.0 * a * f * v[p + 1] + f * f * v[p + _KNOTS + 1]
                   + v[_QT] * (self.q_ohm + v[_QS] * (a * a + f * f)))
        v[_PSR] = a * v[_PC + j] + f * v[_PC + j + 1]

    def _fold(self, ms, mr, css, crr, csr, z):
        """Kalman update of (knots, r) with an edge's measurement (ms, mr), covariance C:
        ms of R0's scale at the edge's SoC z (the knots' hat weights h), mr of r."""
        v = self.v
        q, qs = v[_QT] * self.q_ohm, v[_QT] * v[_QS]  # the knots' walk since the last edge
        v[_QT] = 0.0
        for a in range(_KNOTS):
            for b in range(_KNOTS):
                v[_PK + a * _KNOTS + b] += q + qs if a == b else q
        pos = min(max(z, 0.0), 1.0) * (_KNOTS - 1)  # as in _at
        j = min(int(pos), _KNOTS - 2)
        f = pos - j
        a = 1.0 - f
        # u = P h (h: a at knot j, f at j+1), t = P e_r; over the knots, then r
        for k in range(_KNOTS):
            p = _PK + k * _KNOTS + j
            v[_UH + k] = a * v[p] + f * v[p + 1]
            v[_TH + k] = v[_PC + k]
        v[_UH + _KNOTS] = a * v[_PC + j] + f * v[_PC + j + 1]
        v[_TH + _KNOTS] = v[_PRR]
        pss = a * v[_UH + j] + f * v[_UH + j + 1]
        psr, prr = v[_UH + _KNOTS], v[_PRR]
        es, er = ms - (a * v[_X + j] + f * v[_X + j + 1]), mr - v[_R]
        a, b, d = pss + css, psr + csr, prr + crr  # S
        det = a * d - b * b
        if not det > 0.0:
            return
        nis = (d * es * es - 2.0 * b * es * er + a * er * er) / det
        if nis > _GATE2:  # inflate C so the innovation sits on the gate
            g = nis / _GATE2
            css, crr, csr = css * g, crr * g, csr * g
            a, b, d = pss + css, psr + csr, prr + crr
            det = a * d - b * b
        i00, i01, i11 = d / det, -b / det, a / det
        # K = [u t] S^-1; x += K e; P -= K [u t]'
        cr = 0.0
        for k in range(_KNOTS + 1):
            uk, tk = v[_UH + k], v[_TH + k]
            k0, k1 = uk * i00 + tk * i01, uk * i01 + tk * i11
            dx = k0 * es + k1 * er
            if k < _KNOTS:
                v[_X + k] = min(max(v[_X + k] + dx, _SCALE_MIN), _SCALE_MAX)
                for c in range(_KNOTS):
                    v[_PK + k * _KNOTS + c] -= k0 * v[_UH + c] + k1 * v[_TH + c]
                v[_PC + k] -= k0 * v[_UH + _KNOTS] + k1 * v[_TH + _KNOTS]
            else:
                cr = dx
                v[_R] = min(max(v[_R] + dx, _SCALE_MIN), _SCALE_MAX)
                v[_PRR] -= k0 * v[_UH + _KNOTS] + k1 * v[_TH + _KNOTS]
        # the drift rate learns from the corrections (see the module docstring)
        if self.edges < _RATE_FROM_EDGES:
            v[_U] = 0.0  # the charge before counts for no rate
            return
        v[_CR] += cr
        u = v[_U]
        if u >= _RATE_SPAN:
            v[_DR] = min(max(v[_DR] + _RATE_GAIN * v[_CR] / u, -_RATE_MAX), _RATE_MAX)
            v[_CR] = v[_U] = 0.0
