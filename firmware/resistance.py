"""Slow resistance estimator fed by current step edges: the cell's ohmic resistance R0 and
charge-transfer resistance R_ct (the model's rc[0]) as scales on the model's values.

Plain Python: runs under MicroPython (the board, 32-bit floats) and CPython (host tests);
its host twin is in cellbench.estimate_kernel (res_step, ...: the same equations compiled by numba).
docs/estimator.md "Resistance" gives the derivation and why it is a separate estimator
(dual estimation) rather than two more states of the SoC filter.

Per edge (the current changes by di at sample k after being held for HOLD_TAUS*tau, tau
the time constant of rc[0]): the voltage y (V, the terminal voltage less the model's
OCV, hysteresis and Butler-Volmer terms, from the SoC filter) at the samples t_j (s)
after the edge, measured from y at the sample before it, is

    y_j - y_ref = di*rho0 + di*rho1*phi_j + beta*t_j,    phi_j = 1 - exp(-t_j/tau)

rho0 the ohmic resistance (ohm), rho1 the charge-transfer resistance (ohm; the RC pair
charges by di*rho1*phi after a held current), beta (V/s) the drift of everything slow
over the window (OCV with the charge passed, the slow RC pairs, hysteresis). Over a
window of WINDOW_TAUS*tau the three are a linear least-squares fit (regressors scaled to
order one: 1, phi, t/T); the voltage *difference* cancels the model's OCV and hysteresis
error, so the noise is the sensor's, estimated from the fits' own residuals (pooled over
edges), not the SoC filter's model-error budget.

The edge gives measurements of the scales s(z_e) = rho0/R0(z) (z_e the SoC at the edge)
and r = rho1/R1(z) (the model's values at the window's end, z: on LTO/Li's simulated
board the R0 at the edge instead, 2 % off at one edge of the first cycle, was enough to
tip its SoC off the plateau; docs/estimator.md) with covariance C (the
fit's, plus the reference sample's noise on rho0, plus s^2 (R0'/R0)^2 var(z) on s: an R0
steep in SoC, LTO's below 30 %, makes the scale only as good as the SoC).

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
first one's the knots become one scale (_table), as on the LTO/Li preset, whose steep
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
SoC filter reads v[S], v[PSS], v[PSR]: the scale at the present SoC (the hat weights w
there: w s), its variance (w P w') and its covariance with r, set every sample.
An edge whose normalised innovation e' S^-1 e exceeds GATE2 gets C inflated until it sits
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

import math

from circuit import floats

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x

# A previous current held this many tau of rc[0] (its RC voltage settled) makes an edge.
HOLD_TAUS = 4.0
# The fit window after an edge, in tau: the RC pair settles to 2 % of its step.
WINDOW_TAUS = 4.0
# Fewest samples in a window (three parameters, and residual degrees of freedom).
MIN_SAMPLES = 6
# An edge: |di| at least this many times the current noise's 3 sigma (the EKF's i_rest)
# and EDGE_C of the cell's 1C current. A current within HOLD_FRAC of the held level plus
# HOLD_NOISE times i_min plus HOLD_C of 1C is "held" (a level, not the last sample: a slow
# drift such as a CV taper is not a hold). HOLD_C because a board's current reading at
# rest wanders by more than the filter's sigma_i (the simulated board's: +-10 uA on a
# 0.4 mAh cell, 2.5 % of 1C); a hold broken at every sample would never make an edge.
EDGE_REST_MULT = 10.0
EDGE_C = 0.1
HOLD_FRAC = 0.02
HOLD_NOISE = 2.0
HOLD_C = 0.05
# Normalised innovation (2 degrees of freedom) beyond which an edge is down-weighted.
GATE2 = 25.0
# Weight of a new edge's residual variance in the pooled sensor noise (after the first
# few edges: 1/k before, a plain mean).
NOISE_W = 0.05
# Scales are kept within these (the model is not that cell outside them).
SCALE_MIN = 0.1
SCALE_MAX = 20.0
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
# their covariance, the pooled noise (V^2), the hold time (s), the held current level (A),
# the reference voltage (V), the edge's di (A), the window's time (s), its normal
# equations, the drift rate of r (per 1C-hour), the charge passed (1C-hours), the
# corrections of r summed since the rate last learned, the time since the knots' random
# walk was last added (s), the edge's SoC, the knots' own walk (per second; 0: R0's shape
# is the model's table), the model's R0 at the first sample (ohm), the knots'
# scales, their covariances with r, their covariance (row-major), and two columns of work
# (P h and P e_r in an update).
# An array, not attributes: a float attribute is a boxed float that lives until the next
# sample, and tens of those scattered over the heap leave no hole for a reply (the board's
# STATUS failed so); an array keeps them in one block.
S, R, PSS, PRR, PSR = 0, 1, 2, 3, 4  # public (ekf.py reads them)
# private: const, so they cost the board's heap no module dictionary entries
_NOISE2 = const(5)
_HELD = const(6)
_LEVEL = const(7)
_YREF = const(8)
_DI = const(9)
_T = const(10)
_N00 = const(11)
_N01 = const(12)
_N02 = const(13)
_N11 = const(14)
_N12 = const(15)
_N22 = const(16)
_B0 = const(17)
_B1 = const(18)
_B2 = const(19)
_YY = const(20)
_DR = const(21)
_U = const(22)
_CR = const(23)
_QT = const(24)
_ZE = const(25)
_QS = const(26)
_R0F = const(27)
_X = const(28)
_PC = const(_X + _KNOTS)
_PK = const(_PC + _KNOTS)
_UH = const(_PK + _KNOTS * _KNOTS)
_TH = const(_UH + _KNOTS + 1)
_NV = const(_TH + _KNOTS + 1)


class Resistance:
    """R0's scale per SoC region and rc[0]'s scale, with their covariance, from step edges.

    Resistance(tau_s, q_ohm, q_res, p0_ohm, p0_res, sigma_v, one_c_A): tau_s the rc[0] time
    constant (s), q_* the scales' process variance per second, p0_* their prior variance,
    sigma_v (V) the prior of the per-sample noise until the first edge is fitted, one_c_A
    the cell's 1C current (A).
    After reset(), step() once per sample; v[S], v[R] (scales of R0 at the present SoC and
    of rc[0]) and v[PSS], v[PRR], v[PSR] (their covariance) are public: the SoC filter uses
    them; open is True while a sample is inside an edge's window (the filter counts SoC
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
        v = self.v
        for k in range(_NV):
            v[k] = 0.0
        v[R] = 1.0
        v[PRR] = self.p0_res
        v[_QS] = _SHAPE_Q
        for a in range(_KNOTS):
            v[_X + a] = 1.0
            for b in range(_KNOTS):
                v[_PK + a * _KNOTS + b] = self.p0_ohm + _SHAPE_P0 if a == b else self.p0_ohm
        v[_NOISE2] = self.sigma_v * self.sigma_v
        self.edges = 0      # edges fitted so far
        self.m = 0          # samples in the window
        self.open = False   # inside an edge's window
        self.first = True
        self._at(0.5)

    def step(self, i, y, dt, i_min, r0, r1, u0, z):
        """One sample: current i (A), voltage y (V, less the model's non-resistive
        terms), dt (s) since the previous sample, i_min (A) the current noise floor (|di|
        must exceed EDGE_REST_MULT*i_min), r0 and r1 (ohm) the model's R0 and rc[0] at the
        present SoC z, u0 the relative variance of r0 from the SoC's uncertainty
        ((dR0/dz / R0)^2 * var(z): where R0 is steep in SoC, an edge says little about
        the scale)."""
        v = self.v
        if dt > 0.0:
            v[_QT] += dt  # the knots' random walk, added when an edge needs it (_fold)
            v[PRR] += self.q_res * dt
            du = abs(i) * dt / (3600.0 * self.one_c)
            v[R] = min(max(v[R] + v[_DR] * du, SCALE_MIN), SCALE_MAX)
            v[_U] += du
        if v[_QS] > 0.0 and r0 != v[_R0F]:
            if self.first:
                v[_R0F] = r0
            else:
                self._table()
        level = v[_LEVEL]
        di = i - level
        tol = HOLD_FRAC * max(abs(i), abs(level)) + HOLD_NOISE * i_min + HOLD_C * self.one_c
        held = -tol <= di <= tol
        first = self.first
        if first:
            held = False
        elif self.open:
            if held and dt > 0.0:
                self._add(y, dt)
                if v[_T] >= WINDOW_TAUS * self.tau:
                    self.open = False
                    self._finish(r0, r1, u0)
            elif not held:
                self.open = False  # the window was cut short: no fit
        if not held and not first and v[_HELD] >= HOLD_TAUS * self.tau \
                and abs(di) >= EDGE_REST_MULT * i_min and abs(di) >= EDGE_C * self.one_c \
                and 0.0 < dt <= self.tau:
            self._start(di, y, dt, z)
        if held:
            v[_HELD] += dt
        else:
            v[_HELD] = 0.0 if first else dt
            v[_LEVEL] = i  # a new level
        self.first = False
        if not self.open:
            v[_YREF] = y
        self._at(z)

    def _at(self, z):
        """v[S], v[PSS], v[PSR]: R0's scale at SoC z, its variance, its covariance with r."""
        v = self.v
        j, f = _segment(z)
        a = 1.0 - f
        p = _PK + j * (_KNOTS + 1)  # P[j][j]
        v[S] = a * v[_X + j] + f * v[_X + j + 1]
        v[PSS] = (a * a * v[p] + 2.0 * a * f * v[p + 1] + f * f * v[p + _KNOTS + 1]
                  + v[_QT] * (self.q_ohm + v[_QS] * (a * a + f * f)))
        v[PSR] = a * v[_PC + j] + f * v[_PC + j + 1]

    def _table(self):
        """The model's R0 varies with SoC (a table): its shape is the model's, and the knots
        become one scale (the present one, with its variance and covariance with r)."""
        v = self.v
        v[_QS] = 0.0
        for a in range(_KNOTS):
            v[_X + a] = v[S]
            v[_PC + a] = v[PSR]
            for b in range(_KNOTS):
                v[_PK + a * _KNOTS + b] = v[PSS]
        v[_QT] = 0.0

    def _start(self, di, y, dt, z):
        """Open a window at an edge of di (A) at SoC z, the reference being the previous
        sample."""
        v = self.v
        self.open = True
        self.m = 0
        v[_DI] = di
        v[_ZE] = z
        v[_T] = 0.0
        for k in range(_N00, _YY + 1):  # normal equations of (1, phi, t/_T): triangle, rhs, y'y
            v[k] = 0.0
        self._add(y, dt)

    def _add(self, y, dt):
        """One sample of the window, dt after the previous one."""
        v = self.v
        v[_T] += dt
        t = v[_T]
        phi = 1.0 - math.exp(-t / self.tau)
        u = t / (WINDOW_TAUS * self.tau)
        w = y - v[_YREF]
        self.m += 1
        v[_N00] += 1.0
        v[_N01] += phi
        v[_N02] += u
        v[_N11] += phi * phi
        v[_N12] += phi * u
        v[_N22] += u * u
        v[_B0] += w
        v[_B1] += phi * w
        v[_B2] += u * w
        v[_YY] += w * w

    def _finish(self, r0, r1, u0):
        """Solve the window's fit and fold the edge into the scales."""
        v = self.v
        if self.m < MIN_SAMPLES or not (r0 > 0.0 and r1 > 0.0):
            return
        a, b, c = v[_N00], v[_N01], v[_N02]
        d, e, f = v[_N11], v[_N12], v[_N22]
        # inverse of the symmetric [[a b c] [b d e] [c e f]] by cofactors
        c00 = d * f - e * e
        c01 = c * e - b * f
        c02 = b * e - c * d
        det = a * c00 + b * c01 + c * c02
        if not det > 1e-6 * (a * d * f):  # phi and t too alike over this window
            return
        c11 = (a * f - c * c) / det
        c12 = (b * c - a * e) / det
        c00, c01, c02 = c00 / det, c01 / det, c02 / det
        b0, b1, b2 = v[_B0], v[_B1], v[_B2]
        th0 = c00 * b0 + c01 * b1 + c02 * b2
        th1 = c01 * b0 + c11 * b1 + c12 * b2
        th2 = c02 * b0 + c12 * b1 + ((a * d - b * b) / det) * b2
        ssr = v[_YY] - th0 * b0 - th1 * b1 - th2 * b2
        if ssr < 0.0:
            ssr = 0.0
        self.edges += 1
        w = 1.0 / self.edges if self.edges * NOISE_W < 1.0 else NOISE_W
        v[_NOISE2] += w * (ssr / (self.m - 3) - v[_NOISE2])
        n2 = v[_NOISE2]
        # the measured scales and their covariance (the reference sample's noise is on
        # every difference: it goes to the constant, rho0, alone)
        k0 = 1.0 / (v[_DI] * r0)
        k1 = 1.0 / (v[_DI] * r1)
        ms, mr = th0 * k0, th1 * k1
        css = n2 * (c00 + 1.0) * k0 * k0 + ms * ms * u0
        crr = n2 * c11 * k1 * k1
        csr = n2 * c01 * k0 * k1
        self._fold(ms, mr, css, crr, csr)

    def _fold(self, ms, mr, css, crr, csr):
        """Kalman update of (knots, r) with the measurement (ms, mr), covariance C: ms of
        R0's scale at the edge's SoC (the knots' hat weights h), mr of r."""
        v = self.v
        q, qs = v[_QT] * self.q_ohm, v[_QT] * v[_QS]  # the knots' walk since the last edge
        v[_QT] = 0.0
        for a in range(_KNOTS):
            for b in range(_KNOTS):
                v[_PK + a * _KNOTS + b] += q + qs if a == b else q
        j, f = _segment(v[_ZE])
        a = 1.0 - f
        # u = P h (h: a at knot j, f at j+1), t = P e_r; over the knots, then r
        for k in range(_KNOTS):
            p = _PK + k * _KNOTS + j
            v[_UH + k] = a * v[p] + f * v[p + 1]
            v[_TH + k] = v[_PC + k]
        v[_UH + _KNOTS] = a * v[_PC + j] + f * v[_PC + j + 1]
        v[_TH + _KNOTS] = v[PRR]
        pss = a * v[_UH + j] + f * v[_UH + j + 1]
        psr, prr = v[_UH + _KNOTS], v[PRR]
        es, er = ms - (a * v[_X + j] + f * v[_X + j + 1]), mr - v[R]
        a, b, d = pss + css, psr + csr, prr + crr  # S
        det = a * d - b * b
        if not det > 0.0:
            return
        nis = (d * es * es - 2.0 * b * es * er + a * er * er) / det
        if nis > GATE2:  # inflate C so the innovation sits on the gate
            g = nis / GATE2
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
                v[_X + k] = min(max(v[_X + k] + dx, SCALE_MIN), SCALE_MAX)
                for c in range(_KNOTS):
                    v[_PK + k * _KNOTS + c] -= k0 * v[_UH + c] + k1 * v[_TH + c]
                v[_PC + k] -= k0 * v[_UH + _KNOTS] + k1 * v[_TH + _KNOTS]
            else:
                cr = dx
                v[R] = min(max(v[R] + dx, SCALE_MIN), SCALE_MAX)
                v[PRR] -= k0 * v[_UH + _KNOTS] + k1 * v[_TH + _KNOTS]
        # the drift rate learns from the corrections (see the module docstring)
        if self.edges < _RATE_FROM_EDGES:
            v[_U] = 0.0  # the charge before counts for no rate
            return
        v[_CR] += cr
        u = v[_U]
        if u >= _RATE_SPAN:
            v[_DR] = min(max(v[_DR] + _RATE_GAIN * v[_CR] / u, -_RATE_MAX), _RATE_MAX)
            v[_CR] = v[_U] = 0.0


def _segment(z):
    """(knot j, position f in 0..1 towards knot j+1) of SoC z, clamped to 0..1."""
    pos = min(max(z, 0.0), 1.0) * (_KNOTS - 1)
    j = min(int(pos), _KNOTS - 2)
    return j, pos - j
