"""The extended Kalman filter's predict and update for the cell's state, run by ekf.Ekf
once per sample (ekf.py: the state vector x and the filter's life cycle). Plain Python:
MicroPython (the board, 32-bit floats) and CPython (host tests, cellbench.estimate).

The textbook equations (filterpy's ExtendedKalmanFilter), written out for this state on
flat preallocated arrays and updated in place:
    predict  x' = f(x, i),  P' = F P F' + sigma_i^2 g g' + Q dt   (g = d(x')/di)
    update   e = v - h(x),  S = H P H' + R,  K = P H'/S,  x' = x + K e,
             P' = (I - K H) P (I - K H)' + K R K'   (Joseph form, as two rank-one steps)
Model (docs/design.md; the voltage h(x) = v(z, h, s, v_rc, i) is circuit.py's), current
i > 0 charges the cell:
    z'   = z + eta*i*dt/(3600*C*c)        (eta applies on charge only)
    v_rc'= a*v_rc + R(z)*(1-a)*i,  a = exp(-dt/tau)       (exact for a held current)
    h'   = ah*h + (1-ah)*sign(i), ah = exp(-|i|*gamma*dt/(3600*C))
Noise (model.estimator): process variances are per second of elapsed time; the current
noise sigma_i_A enters the prediction through g. The measurement variance is
    R = (sigma_i*|dv/di| + sigma_v)**2 + sigma_m(z, |c-rate|)**2 * tau_err/dt
(standard deviations of voltage and current noise add: the same current sample drives
both, so their errors are correlated and the sum is the safe bound). sigma_m is the
model's own held-out error (model_error); it is correlated in time, so per sample it
counts tau_err/dt times: a stretch of tau_err seconds is worth one independent look at
the model error, however fast the board samples (docs/estimator.md). With the resistance
estimator the scales' variances add (R0*i)^2*P_ss + (R1*i)^2*P_rr + 2*R0*R1*i^2*P_sr.
SoC increments are collected in a pending sum _pend, folded into x[0] only when they
reach FOLD: a 32-bit float board does not lose small per-tick increments to rounding.
"""

import math

from circuit import Circuit, _zeros, micropython

if False:  # names for the type check only (MicroPython compiles the block away)
    from array import array
    from resistance import Resistance

# The slots of resistance.Resistance.v the filter reads (its _S, _R, _PSS, _PRR, _PSR;
# tests/test_ekf.py checks they agree): the ohmic and charge-transfer scales and their covariance, named
# here: resistance.py is imported only for a model that asks for it.
R_OHM, R_CT, PSS, PRR, PSR = 0, 1, 2, 3, 4
# Fold the pending SoC sum into x[0] once it reaches this: each fold then rounds at most
# 6e-8/1e-3 = 6e-5 of the folded amount even in float32.
FOLD = 1e-3
# Iterated-EKF passes at most per update (only taken when SoC crosses a table node).
ITER_MAX = 5
# Correlation time of the model's voltage error (s): the time the cell takes to cross
# ERR_SPAN of SoC at the present current (the error is a function of SoC, so it stays
# the same until SoC moves), within [ERR_TAU_MIN_S, ERR_TAU_MAX_S]: at rest the error
# holds for as long as the rest, and the cap keeps one look per hour.
ERR_SPAN = 0.2
ERR_TAU_MIN_S = 300.0
ERR_TAU_MAX_S = 3600.0
# Ekf._ec[...]: what the edge estimator's counted SoC and predicted h chain with: the last
# prediction's SoC per A (KZ) and h' = AH*h + HIN, the chained SoC (ZC) and h (HC).
KZ, AH, HIN, ZC, HC = range(5)
NEC = 5


class Kalman(Circuit):
    """The filter's predict and update on the circuit's tables. ekf.Ekf sets the
    parameters they read (n, ih, ib, ic, bias, cap, rs, sigma_v, sigma_i, gate, q: Ekf's
    docstring) and its edge chain _ec, then calls _alloc(n) for the arrays of the port's
    floats these update in place: x, P (state and covariance, P[r*n + c]); from the last
    _predict _d, _g (diagonal of F, g = d(x')/di); from the last _measure / _gain _h,
    _ph, _k (H, P H', K); work _M, _u, _xp ((I - K H) P, its product with H', the prior).
    Scalars of the last step: _f0c (d(z')/dc), _dvdi (dv/di, ohm), _sm2 (sigma_m^2, V^2),
    _looks (the looks sigma_m^2 counts as in R, tau_err/dt or 1), _hs (the OCV slope in
    H[0], V), _pend (the SoC not yet folded into x[0]).
    """

    # Set by ekf.Ekf (named here for the type check; annotations alone cost no heap): its
    # parameters, the hysteresis sign s, the model_error look-up current, the edge chain.
    n: int
    ih: int
    ib: int
    ic: int
    bias: bool
    cap: bool
    sigma_v: float
    sigma_i: float
    gate: float
    q: "array"
    rs: "Resistance | None"
    _s: float
    _ilook: float
    _pend: float
    _ec: "array"

    def _alloc(self, n):
        """The state, covariance and work arrays for n states: arrays, not lists. Lists
        were faster (an array boxes a new float on every read: 1.5x the time per step,
        1.7x the garbage on the unix port), but a list keeps every value as a boxed float
        that lives until it is overwritten: with the capacity state and the resistance
        estimator on (n = 5), ~100 of them scattered over the heap the ring left free, the
        board found no block for a STATUS reply after a run (tests/test_memory.py)."""
        self.x = _zeros(n)
        self.P = _zeros(n * n)
        self._M = _zeros(n * n)
        self._d = _zeros(n)
        self._g = _zeros(n)
        self._u = _zeros(n)
        self._h = _zeros(n)
        self._ph = _zeros(n)
        self._k = _zeros(n)
        self._xp = _zeros(n)
        self._f0c = 0.0
        self._dvdi = 0.0
        self._sm2 = 0.0
        self._looks = 1.0
        self._hs = 0.0

    def _r0_scale(self):
        """The resistance estimator's scale on R0 (1 without it)."""
        return 1.0 if self.rs is None else self.rs.v[R_OHM]

    @micropython.native
    def _predict(self, i, dt):
        """Propagate x and P over dt seconds with the (bias-corrected) current i (A)."""
        x, d, g = self.x, self._d, self._g
        k = dt / self.q_As
        if i > 0.0:
            k = k * self.eta
        ic = self.ic
        if ic >= 0:
            c = x[ic]
            k = k / c
            d[ic] = 1.0
            g[ic] = 0.0
            self._f0c = -k * i / c  # d(z')/dc
        self._ec[KZ] = k  # SoC per A of this step (the edge estimator counts with it)
        if self.rc_soc:
            self._rc_at(x[0] + self._pend)  # R(z) at the prior SoC
        d[0] = 1.0
        g[0] = k
        self._pend += k * i
        for j in range(self.nrc):
            a = math.exp(-dt / self.rc_tau_s[j])
            b = self._rrc[j] * (1.0 - a)
            if self.rs is not None:
                b = b * self.rs.v[R_CT if j == 0 else R_OHM]
            x[1 + j] = a * x[1 + j] + b * i
            d[1 + j] = a
            g[1 + j] = b
        ih = self.ih
        sg = 1.0 if i > 0.0 else (-1.0 if i < 0.0 else 0.0)
        kh = self.gamma * dt / self.q_As
        ah = math.exp(-abs(i) * kh)
        h = x[ih]
        x[ih] = ah * h + (1.0 - ah) * sg
        self._ec[AH], self._ec[HIN] = ah, (1.0 - ah) * sg  # h' = ah*h + hin (the edge estimator's)
        d[ih] = ah
        g[ih] = -kh * sg * ah * (h - sg)
        if self.bias:
            d[self.ib] = 1.0
            g[self.ib] = 0.0
        self._propagate_cov(dt)
        if self._pend >= FOLD or self._pend <= -FOLD:
            x[0] += self._pend
            self._pend = 0.0

    @micropython.native
    def _propagate_cov(self, dt):
        """P = F P F' + sigma_i^2 g g' + Q dt, with F = diag(d) - g e_b' + f0c e_0 e_c'
        (the bias column: i = i_meas - b; the capacity entry: z' depends on c)."""
        n, P, d, g, q, A = self.n, self.P, self._d, self._g, self.q, self._M
        si2 = self.sigma_i * self.sigma_i
        ib, ic = self.ib, self.ic
        if ib < 0 and ic < 0:  # F diagonal: the upper triangle directly (the common case)
            for r in range(n):
                for c in range(r, n):
                    v = d[r] * d[c] * P[r * n + c] + si2 * g[r] * g[c]
                    if r == c:
                        v = v + q[r] * dt
                    P[r * n + c] = v
                    P[c * n + r] = v
            return
        f0c = self._f0c if ic >= 0 else 0.0
        # A = F P: row r is d[r] P[r,:] - g[r] P[ib,:] (+ f0c P[ic,:] on row 0)
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
        # P = A F' + noise: (A F')[r, c] = d[c] A[r,c] - g[c] A[r,ib] (+ f0c A[r,ic] at c = 0)
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

    @micropython.native
    def _measure(self, z, i):
        """Model voltage and Jacobian row (into _h) at SoC z and the other states in x;
        sets _dvdi (V/A), the voltage's sensitivity to the current."""
        x, H, ih = self.x, self._h, self.ih
        self._lookup(z)
        sr = self._r0_scale()
        vm = self._ocv + self._m * x[ih] + self.m0_V * self._s + sr * self._r0 * i
        for j in range(self.nrc):
            vm += x[1 + j]
            H[1 + j] = 1.0
        self._hs = self._slope  # the OCV slope in H[0]
        H[0] = self._slope + sr * self._dr0 * i + self._dm * x[ih]
        H[ih] = self._m
        self._dvdi = sr * self._r0
        if self.bv:
            vm += self._bv_V(i)
            H[0] += self._bv_dz
            self._dvdi += self._bv_di
        if self.bias:
            H[self.ib] = -self._dvdi
        if self.cap:
            H[self.ic] = 0.0
        return vm

    @micropython.native
    def _gain(self, R):
        """_ph = P h, _k = _ph / S with S = h P h' + R; returns h P h'."""
        n, P, H, ph, K = self.n, self.P, self._h, self._ph, self._k
        hph = 0.0
        for r in range(n):
            acc = 0.0
            for c in range(n):
                acc += P[r * n + c] * H[c]
            ph[r] = acc
            hph += H[r] * acc
        S = hph + R
        for r in range(n):
            K[r] = ph[r] / S
        return hph

    @micropython.native
    def noise_V2(self, z, i, dt):
        """Measurement variance R (V^2) at SoC z, current i (A), dt (s) since the last
        sample (0: a first sample), with _dvdi from the last _measure: white voltage and
        current noise, plus the model's error sigma_m^2 (at the look-up current _ilook)
        counted tau_err/dt times (one independent look per correlation time, at the present
        current). Sets _sm2 = sigma_m^2."""
        rv = self.sigma_i * abs(self._dvdi) + self.sigma_v
        if len(self.me_s) == 0:
            self._sm2 = 0.0
            return rv * rv
        self._looks = 1.0  # the looks sigma_m^2 is counted as
        sm = self._model_error(z, self._ilook)
        sm2 = self._sm2 = sm * sm
        if sm2 > 0.0 and dt > 0.0:
            # correlation time of the model's error at this current: see ERR_SPAN
            ai = abs(i)
            if ai * ERR_TAU_MAX_S < ERR_SPAN * self.q_As:
                tau = ERR_TAU_MAX_S
            else:
                tau = max(ERR_SPAN * self.q_As / ai, ERR_TAU_MIN_S)
            if tau > dt:
                self._looks = tau / dt
                sm2 = sm2 * self._looks
        return rv * rv + sm2

    @micropython.native
    def _chord(self, zp, vm, v, i):
        """Slope (V per unit SoC) of the model voltage's chord from the prior SoC zp (model
        voltage vm) to the SoC whose OCV explains v with the other terms held, when that
        SoC is outside [0, 1]; else H[0]. H and the look-up are left at zp."""
        zs = self.soc_at(v - vm + self._ocv)
        if 0.0 <= zs <= 1.0 or zs == zp:
            return self._h[0]
        vs = self._measure(zs, i)
        self._measure(zp, i)
        return (vs - vm) / (zs - zp)

    @micropython.native
    def _update(self, i, v, dt):
        """Correct with the voltage v (V) measured at current i (A, bias-corrected).

        The voltage never tells SoC better than the model's own error through the local
        slope: the update may not bring the SoC variance below sigma_m^2/H0^2 (nor below
        where the prediction left it, when counting knew better). An error that is
        systematic over a stretch of SoC does not average out over many looks.

        Iterated EKF: the OCV is piecewise linear, so the update is exact when the corrected
        SoC stays in the prior's table segment (one pass, the plain EKF). When it lands in
        another segment the measurement is re-linearised there (Gauss-Newton, at most
        ITER_MAX passes), so a large correction from a poor initial SoC does not collapse
        P on the wrong slope.
        """
        n, x, P, H, ph, K, M, xp = (self.n, self.x, self.P, self._h, self._ph, self._k,
                                    self._M, self._xp)
        for r in range(n):
            xp[r] = x[r]
        zp = x[0] + self._pend
        z = zp
        vm = self._measure(z, i)
        seg0 = self._seg
        self.v_model = vm
        e = v - vm
        R = self.noise_V2(z, i, dt)
        rs = self.rs
        if rs is not None:  # the resistance scales' own uncertainty, through the current
            a0, a1 = self._r0 * i, self._rrc[0] * i
            rv = rs.v
            R += a0 * a0 * rv[PSS] + a1 * a1 * rv[PRR] + 2.0 * a0 * a1 * rv[PSR]
        p00 = P[0]
        hph = self._gain(R)
        g2 = self.gate * self.gate
        # An innovation beyond the gate of one look at the model's error (sigma_m^2 counted
        # once, not tau/dt times) that only a SoC outside [0, 1] explains says the cell is
        # at a window end the count has not reached (a capacity grown since the fit:
        # Neware test_2). If the chord to that SoC is steeper than H[0] and brings the
        # innovation inside the gate, the update takes the chord and one look, in one pass
        # (the chord spans the segments; the variance rule below still shrinks P[0] only
        # by the flattest slope crossed). On the plateau's slope, one 1/(tau/dt) look a
        # sample, the SoC would reach the knee after the cut-off.
        on_chord = False
        e2 = e * e
        r1 = R - self._sm2 * (self._looks - 1.0)
        if e2 > g2 * (hph + r1):
            d = self._chord(zp, vm, v, i) - H[0]
            if d > 0.0 and e2 <= g2 * (hph + d * (2.0 * ph[0] + d * p00) + r1):
                H[0] += d
                self._hs += d  # so the variance rule below sees the chord's slope
                R = r1
                self._gain(R)
                on_chord = True
        # Gate: a normalised innovation beyond `gate` inflates R until it sits on the gate,
        # so a wrong SoC still walks back (re-anchoring) while a spike moves it little.
        if not on_chord and e2 > g2 * (hph + R):
            R = e2 / g2 - hph
            self._gain(R)
        zn = zp
        passes = 1 if on_chord else ITER_MAX
        for it in range(passes):
            seg = self._seg
            dz = K[0] * e
            zn = zp + dz
            for r in range(1, n):
                x[r] = xp[r] + K[r] * e
            self._lookup(zn)
            if self._seg == seg or it == passes - 1:
                break
            # re-linearise at the new iterate; innovation about the prior (Bell-Cathey)
            z = zn
            e = v - self._measure(z, i) - H[0] * (zp - z)
            for r in range(1, n):
                e -= H[r] * (xp[r] - x[r])
            self._gain(R)
        self._pend += dz  # the correction itself, not zn - zp: keeps float32 digits
        # The SoC variance with the flattest OCV slope the correction crossed, from the
        # prior SoC to the new one (docs/estimator.md): inside one segment that is H
        # itself; across a knee the gain still comes from the local slope (the state
        # re-anchors), but the SoC variance shrinks only as much as the flattest slope
        # passed over justifies, so it does not collapse on the wrong side of a knee. It
        # is [(I - K Hc) P (I - K Hc)' + K R K']_00 with Hc = H + dh e_0: a bound raised
        # on P[0] alone (a positive definite P stays so).
        dh = 0.0
        if self._seg != seg0:  # the correction left the prior's segment
            dh = self._min_slope(min(zp, zn), max(zp, zn)) - self._hs
        p00c = 0.0
        if dh < 0.0:
            hph = 0.0
            for r in range(n):
                hph += H[r] * ph[r]
            phc0 = ph[0] + p00 * dh
            hphc = hph + dh * (2.0 * ph[0] + dh * p00)
            p00c = p00 - 2.0 * K[0] * phc0 + K[0] * K[0] * (hphc + R)
        # Joseph form: P = (I - K H) P (I - K H)' + K R K', as two rank-one steps.
        for r in range(n):
            for c in range(n):
                M[r * n + c] = P[r * n + c] - K[r] * ph[c]
        w = self._u
        for r in range(n):
            acc = 0.0
            for c in range(n):
                acc += M[r * n + c] * H[c]
            w[r] = acc
        # forced symmetry: compute the upper triangle, mirror it
        for r in range(n):
            kr = K[r] * R
            for c in range(r, n):
                P[r * n + c] = P[c * n + r] = M[r * n + c] - w[r] * K[c] + kr * K[c]
        if P[0] < p00c:
            P[0] = p00c
        if self._sm2 > 0.0:
            h0 = H[0] + dh if dh < 0.0 else H[0]
            if h0 * h0 > 0.0:
                lo = min(p00, self._sm2 / (h0 * h0))
                if P[0] < lo:
                    P[0] = lo  # adds a positive diagonal term: P stays positive definite
