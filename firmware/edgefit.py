"""Current step edges and their window fits: the measurements of the slow resistance
estimator (resistance.Resistance, the base class of which this is).

Plain Python: runs under MicroPython (the board, 32-bit floats) and CPython (host tests);
its host twin is in cellbench.estimate_kernel (res_step, ...: the same equations compiled
by numba). docs/estimator.md "Resistance" gives the derivation.

Per edge (the current changes by di at sample k after being held for _HOLD_TAUS*tau, tau
the time constant of rc[0]): the voltage y (V, the terminal voltage less the model's
OCV, hysteresis and Butler-Volmer terms, from the SoC filter) at the samples t_j (s)
after the edge, measured from y at the sample before it, is

    y_j - y_ref = di*rho0 + di*rho1*phi_j + beta*t_j,    phi_j = 1 - exp(-t_j/tau)

rho0 the ohmic resistance (ohm), rho1 the charge-transfer resistance (ohm; the RC pair
charges by di*rho1*phi after a held current), beta (V/s) the drift of everything slow
over the window (OCV with the charge passed, the slow RC pairs, hysteresis). Over a
window of _WINDOW_TAUS*tau the three are a linear least-squares fit (regressors scaled to
order one: 1, phi, t/T); the voltage *difference* cancels the model's OCV and hysteresis
error, so the noise is the sensor's, estimated from the fits' own residuals (pooled over
edges), not the SoC filter's model-error budget.

The edge gives measurements of the scales s(z_e) = rho0/R0(z) (z_e the SoC at the edge)
and r = rho1/R1(z) (the model's values at the window's end, z: on LTO/Li's simulated
board the R0 at the edge instead, 2 % off at one edge of the first cycle, was enough to
tip its SoC off the plateau; docs/estimator.md) with covariance C (the
fit's, plus the reference sample's noise on rho0, plus s^2 (R0'/R0)^2 var(z) on s: an R0
steep in SoC, LTO's below 30 %, makes the scale only as good as the SoC). The subclass
folds them into its scales: _fold(ms, mr, css, crr, csr, z_e). Units: A, V, s, ohm.
"""

import math

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x

if False:  # names for the type check only (MicroPython compiles the block away)
    from array import array

# Private consts: inlined, so they cost the board's heap nothing (the twin reads them too).
# A previous current held this many tau of rc[0] (its RC voltage settled) makes an edge.
_HOLD_TAUS = const(4.0)
# The fit window after an edge, in tau: the RC pair settles to 2 % of its step.
_WINDOW_TAUS = const(4.0)
# Fewest samples in a window (three parameters, and residual degrees of freedom).
_MIN_SAMPLES = const(6)
# An edge: |di| at least this many times the current noise's 3 sigma (the EKF's i_rest)
# and _EDGE_C of the cell's 1C current. A current within _HOLD_FRAC of the held level plus
# _HOLD_NOISE times i_min plus _HOLD_C of 1C is "held" (a level, not the last sample: a slow
# drift such as a CV taper is not a hold). _HOLD_C because a board's current reading at
# rest wanders by more than the filter's sigma_i (the simulated board's: +-10 uA on a
# 0.4 mAh cell, 2.5 % of 1C); a hold broken at every sample would never make an edge.
_EDGE_REST_MULT = const(10.0)
_EDGE_C = const(0.1)
_HOLD_FRAC = const(0.02)
_HOLD_NOISE = const(2.0)
_HOLD_C = const(0.05)
# Weight of a new edge's residual variance in the pooled sensor noise (after the first
# few edges: 1/k before, a plain mean).
_NOISE_W = const(0.05)
# This class's floats in the subclass's array v (v[0:5] are the scales' public slots,
# v[22:] the subclass's own: resistance.py): the pooled noise (V^2), the hold time (s),
# the held current level (A), the reference voltage (V), the edge's di (A), the window's
# time (s), its normal equations, the edge's SoC. Private consts: inlined, so they cost
# the board's heap no module dictionary entries.
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
_ZE = const(21)


class EdgeFit:
    """Edges found in the samples, each window's fit, the pooled noise.

    The subclass sets tau (s, rc[0]'s time constant), one_c (A, 1C), sigma_v (V, the
    per-sample noise's prior until the first edge is fitted) and v (its float array,
    this class's slots included), and provides _predict(i, dt, r0) (run at each sample's
    start), _at(z) (at its end) and _fold (an edge's measurement). open is True while a
    sample is inside an edge's window (the filter counts SoC there), edges counts the
    edges fitted.
    """

    if False:  # set and provided by the subclass, named for the type check only (the
        # annotations' strings would be qstrs on the board's heap): its parameters, its
        # floats, and the three methods the class docstring names (_predict and _at
        # return nothing; _fold(ms, mr, css, crr, csr, z): an edge at SoC z, ms and mr
        # the measured scales of R0 and rc[0], css, crr, csr their covariance)
        tau: float
        one_c: float
        sigma_v: float
        v: "array"

        def _predict(self, i, dt, r0): ...

        def _at(self, z): ...

        def _fold(self, ms, mr, css, crr, csr, z): ...

    def reset(self):
        """All floats 0; no edge seen, noise at its prior."""
        v = self.v
        for k in range(len(v)):
            v[k] = 0.0
        v[_NOISE2] = self.sigma_v * self.sigma_v
        self.edges = 0      # edges fitted so far
        self.m = 0          # samples in the window
        self.open = False   # inside an edge's window
        self.first = True

    def step(self, i, y, dt, i_min, r0, r1, u0, z):
        """One sample: current i (A), voltage y (V, less the model's non-resistive
        terms), dt (s) since the previous sample, i_min (A) the current noise floor (|di|
        must exceed _EDGE_REST_MULT*i_min), r0 and r1 (ohm) the model's R0 and rc[0] at the
        present SoC z, u0 the relative variance of r0 from the SoC's uncertainty
        ((dR0/dz / R0)^2 * var(z): where R0 is steep in SoC, an edge says little about
        the scale)."""
        v = self.v
        self._predict(i, dt, r0)
        level = v[_LEVEL]
        di = i - level
        tol = _HOLD_FRAC * max(abs(i), abs(level)) + _HOLD_NOISE * i_min + _HOLD_C * self.one_c
        held = -tol <= di <= tol
        first = self.first
        if first:
            held = False
        elif self.open:
            if held and dt > 0.0:
                self._add(y, dt)
                if v[_T] >= _WINDOW_TAUS * self.tau:
                    self.open = False
                    self._finish(r0, r1, u0)
            elif not held:
                self.open = False  # the window was cut short: no fit
        if not held and not first and v[_HELD] >= _HOLD_TAUS * self.tau \
                and abs(di) >= _EDGE_REST_MULT * i_min and abs(di) >= _EDGE_C * self.one_c \
                and 0.0 < dt <= self.tau:
            self.open = True  # a window at an edge of di at SoC z, from the previous sample
            self.m = 0
            v[_DI] = di
            v[_ZE] = z
            v[_T] = 0.0
            for k in range(_N00, _YY + 1):  # normal equations of (1, phi, t/_T): triangle, rhs, y'y
                v[k] = 0.0
            self._add(y, dt)
        if held:
            v[_HELD] += dt
        else:
            v[_HELD] = 0.0 if first else dt
            v[_LEVEL] = i  # a new level
        self.first = False
        if not self.open:
            v[_YREF] = y
        self._at(z)

    def _add(self, y, dt):
        """One sample of the window, dt after the previous one."""
        v = self.v
        v[_T] += dt
        t = v[_T]
        phi = 1.0 - math.exp(-t / self.tau)
        u = t / (_WINDOW_TAUS * self.tau)
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
        if self.m < _MIN_SAMPLES or not (r0 > 0.0 and r1 > 0.0):
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
        w = 1.0 / self.edges if self.edges * _NOISE_W < 1.0 else _NOISE_W
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
        self._fold(ms, mr, css, crr, csr, v[_ZE])
