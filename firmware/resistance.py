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

The edge gives measurements of the scales s = rho0/R0(z) and r = rho1/R1(z) (the model's
values at the edge's SoC z) with covariance C (the fit's, plus the reference sample's
noise on rho0, plus s^2 (R0'/R0)^2 var(z) on s: an R0 steep in SoC, LTO's below 30 %,
makes the scale only as good as the SoC). The scales are a random walk with variances q_ohm, q_res per second:

    P <- P + diag(q_ohm, q_res)*dt                  (every sample)
    S = P + C, K = P S^-1, theta <- theta + K (m - theta), P <- (I - K) P  (every edge)

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
edges correct the prior, not a drift). The rate stays within +-_RATE_MAX. The R0 scale
needs none: its edges are ten times as precise, so its random walk's gain keeps up.
"""

import math

from cellmodel import floats

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
# The estimator's floats, Resistance.v[...]: the scales s (R0) and r (rc[0]), their
# covariance, the pooled noise (V^2), the hold time (s), the held current level (A), the
# reference voltage (V), the edge's di (A), the window's time (s), its normal equations,
# the drift rate of r (per 1C-hour), the charge passed (1C-hours) and the corrections of
# r summed since the rate last learned.
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
_NV = const(24)


class Resistance:
    """The two resistance scales and their 2x2 covariance, from step edges.

    Resistance(tau_s, q_ohm, q_res, p0_ohm, p0_res, sigma_v, one_c_A): tau_s the rc[0] time
    constant (s), q_* the scales' process variance per second, p0_* their prior variance,
    sigma_v (V) the prior of the per-sample noise until the first edge is fitted, one_c_A
    the cell's 1C current (A).
    After reset(), step() once per sample; v[S], v[R] (scales of R0 and of rc[0]) and
    v[PSS], v[PRR], v[PSR] (their covariance) are public: the SoC filter uses them; open
    is True while a sample is inside an edge's window (the filter counts SoC there),
    edges counts the edges fitted.
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
        v[S] = v[R] = 1.0
        v[PSS] = self.p0_ohm
        v[PRR] = self.p0_res
        v[_NOISE2] = self.sigma_v * self.sigma_v
        self.edges = 0      # edges fitted so far
        self.m = 0          # samples in the window
        self.open = False   # inside an edge's window
        self.first = True

    def step(self, i, y, dt, i_min, r0, r1, u0):
        """One sample: current i (A), voltage y (V, less the model's non-resistive
        terms), dt (s) since the previous sample, i_min (A) the current noise floor (|di|
        must exceed EDGE_REST_MULT*i_min), r0 and r1 (ohm) the model's R0 and rc[0] at the
        present SoC, u0 the relative variance of r0 from the SoC's uncertainty
        ((dR0/dz / R0)^2 * var(z): where R0 is steep in SoC, an edge says little about
        the scale)."""
        v = self.v
        if dt > 0.0:
            v[PSS] += self.q_ohm * dt
            v[PRR] += self.q_res * dt
            du = abs(i) * dt / (3600.0 * self.one_c)
            v[R] = min(max(v[R] + v[_DR] * du, SCALE_MIN), SCALE_MAX)
            v[_U] += du
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
            self._start(di, y, dt)
        if held:
            v[_HELD] += dt
        else:
            v[_HELD] = 0.0 if first else dt
            v[_LEVEL] = i  # a new level
        self.first = False
        if not self.open:
            v[_YREF] = y

    def _start(self, di, y, dt):
        """Open a window at an edge of di (A), the reference being the previous sample."""
        v = self.v
        self.open = True
        self.m = 0
        v[_DI] = di
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
        """Kalman update of (s, r) with the measurement (ms, mr), covariance C."""
        v = self.v
        pss, prr, psr = v[PSS], v[PRR], v[PSR]
        es, er = ms - v[S], mr - v[R]
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
        # K = P S^-1
        i00, i01, i11 = d / det, -b / det, a / det
        k00 = pss * i00 + psr * i01
        k01 = pss * i01 + psr * i11
        k10 = psr * i00 + prr * i01
        k11 = psr * i01 + prr * i11
        cr = k10 * es + k11 * er
        v[S] = min(max(v[S] + k00 * es + k01 * er, SCALE_MIN), SCALE_MAX)
        v[R] = min(max(v[R] + cr, SCALE_MIN), SCALE_MAX)
        # P <- (I - K) P
        v[PSS] = pss - (k00 * pss + k01 * psr)
        v[PSR] = psr - (k00 * psr + k01 * prr)
        v[PRR] = prr - (k10 * psr + k11 * prr)
        # the drift rate learns from the corrections (see the module docstring)
        if self.edges < _RATE_FROM_EDGES:
            v[_U] = 0.0  # the charge before counts for no rate
            return
        v[_CR] += cr
        u = v[_U]
        if u >= _RATE_SPAN:
            v[_DR] = min(max(v[_DR] + _RATE_GAIN * v[_CR] / u, -_RATE_MAX), _RATE_MAX)
            v[_CR] = v[_U] = 0.0
