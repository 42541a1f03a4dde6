"""State-of-charge extended Kalman filter, run on the board once per tick.

Plain Python: runs under MicroPython (the board, 32-bit floats; the unix port, 64-bit
floats) and CPython (host tests). The host twin is cellbench.estimate (the same equations
compiled by numba, from this filter's public parameters and this module's constants);
docs/estimator.md gives the derivation, why the noise is what it is, and the tuning guide.
The model's JSON text is read by cellmodel.py, its tables looked up by circuit.py; the
filter's parameters are set from it (and learned slow states put back) by ekfsetup.py.

State x (SI units), n = 2..6 entries:
    x[0]            SoC z (1 = full), clamped to [SOC_MIN, SOC_MAX]
    x[1..nrc]       RC-pair voltages v_rc (V), one per model "rc" entry (0, 1 or 2)
    x[ih]           hysteresis state h (-1..1), Plett one-state model
    x[ib]           current bias b (A) when model.estimator.bias is true:
                    measured current = true current + b
    x[ic]           capacity scale c when model.estimator.capacity is true:
                    true capacity = capacity_Ah * c, clamped to [CAP_MIN, CAP_MAX]
With model.estimator.resistance, rc[0]'s R(z) below is scaled by r and R0(z) and the
slower pairs' R(z) by s, the slow estimates of resistance.Resistance (fed by the
current's step edges, dual estimation: docs/estimator.md "Resistance"; the slow pairs are
not seen in an edge's window and are taken to age with the ohmic part), and their
variances add (R0*i)^2*P_ss + (R1*i)^2*P_rr + 2*R0*R1*i^2*P_sr to the measurement variance.
Model (docs/design.md; the voltage v(z, h, s, v_rc, i) is circuit.py's), current i > 0
charges the cell:
    z'   = z + eta*i*dt/(3600*C*c)        (eta applies on charge only)
    v_rc'= a*v_rc + R(z)*(1-a)*i,  a = exp(-dt/tau)       (exact for a held current)
    h'   = ah*h + (1-ah)*sign(i), ah = exp(-|i|*gamma*dt/(3600*C))
Noise (model.estimator): process variances are per second of elapsed time; the current
noise sigma_i_A enters the prediction through d(x')/di. The measurement variance is
    R = (sigma_i*|dv/di| + sigma_v)**2 + sigma_m(z, |c-rate|)**2 * tau_err/dt
(standard deviations of voltage and current noise add: the same current sample drives
both, so their errors are correlated and the sum is the safe bound). sigma_m is the
model's own held-out error (model_error); it is correlated in time, so per sample it
counts tau_err/dt times: a stretch of tau_err seconds is worth one independent look at
the model error, however fast the board samples (docs/estimator.md).

Numerics: P is a flat preallocated array (P[r*n + c]) updated in place; the covariance
update is the Joseph form computed as two rank-one corrections, then symmetrised, floored
on the diagonal and capped for the bounded states. SoC increments are collected in a
separate pending sum and folded into x[0] only when they reach FOLD, so a 32-bit float
board does not lose small per-tick increments to rounding (see docs/estimator.md).
"""

import gc
import math
import sys

from cellmodel import MICROPYTHON
from circuit import SOC_MAX, SOC_MIN, Circuit, _zeros, micropython
# The public part of resistance.Resistance.v (its S, R, PSS, PRR, PSR; tests/test_ekf.py
# checks they agree): the ohmic and charge-transfer scales and their covariance. Named
# here because resistance.py is imported only for a model that asks for it (its code is
# heap the board does not spend otherwise).
R_OHM, R_CT, PSS, PRR, PSR = 0, 1, 2, 3, 4

# Capacity scale c is kept within these (a cell at half or 1.5x its model capacity is not
# the cell of the model: the voltage model would be wrong long before).
CAP_MIN = 0.5
CAP_MAX = 1.5
# Fold the pending SoC sum into x[0] once it reaches this: each fold then rounds at most
# 6e-8/1e-3 = 6e-5 of the folded amount even in float32.
FOLD = 1e-3
# Iterated-EKF passes at most per update (only taken when SoC crosses a table node).
ITER_MAX = 5
# Variance caps for the bounded states (SoC in [-0.05, 1.05], h in [-1, 1], c in [0.5, 1.5]).
VAR_SOC_MAX = 1.0
VAR_H_MAX = 1.0
VAR_CAP_MAX = 0.25
# SoC variance when nothing is known: uniform on [0, 1].
VAR_UNKNOWN = 1.0 / 12.0
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


def _setup(fn, *args):
    """ekfsetup.fn(*args): the filter's set-up (MODEL, RECOVER), imported for the call and
    dropped after it, so its bytecode holds no heap while a run goes on; on the board the
    heap is collected before the filter allocates again (into what the module held).
    (Under CPython cellbench.fw caches it as cellbench.firmware.ekfsetup: nothing to drop.)"""
    mod = __import__("ekfsetup")
    try:
        out = getattr(mod, fn)(*args)
    finally:
        del mod  # no reference left for the collection below
        sys.modules.pop("ekfsetup", None)
        if MICROPYTHON:
            gc.collect()
    return out


class Ekf(Circuit):
    """Board SoC estimator. Ekf(model_dict) takes a models/*.json document (SI units);
    Ekf.from_json(text) the same from its JSON text (cellmodel.read_model).

    After reset(), call step(i_nA, v_uV, dt_ms) once per sample; it sets soc (float),
    soc_ppm and std_ppm (ints, parts per million of full SoC), v_model (float, V, the
    one-step-ahead predicted terminal voltage for that sample) and the slow states as
    ints (-1 when off): cap_nAh, cap_std_nAh (capacity now and its std), r_mohm,
    r_std_mohm (the charge-transfer resistance rc[0] at the present SoC and its std).

    Parameters, set from the model once and only read after (public: the host's replay
    kernel, cellbench.estimate, runs the same filter from them):
        n, nrc, ih, ib, ic  states, RC pairs, index of h, of the bias and of the capacity
                            scale (-1: not a state)
        bias, cap           True when the current-bias / capacity-scale state is on
        rs                  the resistance estimator (resistance.Resistance) or None
        (the circuit's tables and parameters: circuit.Circuit)
        sigma_v, sigma_i    measurement noise std: voltage (V), current (A)
        gate                innovation gate (standard deviations)
        i_rest              |current| (A) below which the hysteresis sign s holds
        q, floor, p0        per state: process variance per second, diagonal floor of P,
                            prior variance at reset (p0[0] = p0_soc)
    """

    def __init__(self, model):
        super().__init__(model)
        self._ec = _zeros(NEC)  # the edge estimator's chain (KZ, ...)
        # noise, state layout, per-state q / floor / p0 and the resistance estimator
        (self.sigma_v, self.sigma_i, self.gate, self.i_rest, self.bias, self.cap, self.ih,
         self.ib, self.ic, self.n, self.q, self.floor, self.p0,
         self.rs) = _setup("parameters", self, model)
        n = self.n
        # State, covariance and work vectors are arrays of the port's floats, preallocated
        # and updated in place. Lists were faster (an array boxes a new float on every
        # read: 1.5x the time per step, 1.7x the garbage on the unix port), but a list
        # keeps every value as a boxed float that lives until it is overwritten: with the
        # capacity state and the resistance estimator on (n = 5), ~100 of them scattered
        # over the heap the ring left free, the board found no block for a STATUS reply
        # after a run (tests/test_memory.py). An array keeps them in one block each.
        self.x = _zeros(n)
        self.P = _zeros(n * n)
        self._M = _zeros(n * n)
        self._d = _zeros(n)    # diagonal of the state transition
        self._g = _zeros(n)    # d(x')/d(i): input sensitivity
        self._u = _zeros(n)
        self._h = _zeros(n)    # measurement Jacobian
        self._ph = _zeros(n)   # P h
        self._k = _zeros(n)    # gain
        self._xp = _zeros(n)   # prior state during an update
        self._f0c = 0.0        # d(z')/dc of the last prediction
        self._dvdi = 0.0       # dv/di of the last measurement (ohm)
        self._sm2 = 0.0        # model error variance of the last measurement (V^2)
        self._hs = 0.0         # OCV slope in the last measurement Jacobian (V)
        self.reset()

    @classmethod
    def from_json(cls, text):
        """An Ekf from the model's JSON text (bytes-like), without building the whole
        document: only what read_model keeps. JsonError for text that is not JSON."""
        return cls(_setup("read", text))

    # --- public API ------------------------------------------------------------------
    def reset(self, soc=None, v_uV=None, i_nA=0):
        """Start over: at SoC `soc` (variance p0_soc), or from a rested voltage v_uV.

        From a voltage the SoC is OCV^-1(v - R0*i - BV(i)) with h = 0; its variance comes
        from the voltage noise, the model's error at rest and the unknown hysteresis
        through the local OCV slope, so a reading on a flat plateau honestly says it
        knows little. With neither, or from a voltage no SoC in the clamp range explains
        (e.g. 0 before the first sample), the filter starts again from the first sample
        whose voltage is credible (until then SoC 0.5 or the clamped inversion, with the
        variance of a uniform [0, 1] guess). reset() is what a host replaying the log
        from its first record does, so board and host agree. The capacity scale starts
        at 1 (variance p0_cap), the bias at 0 (p0_bias_A2), the resistance scales at 1.
        """
        ec = self._ec
        ec[KZ] = 0.0  # SoC per A over the last prediction (dt/(3600*C*c), eta on charge)
        ec[AH], ec[HIN] = 1.0, 0.0  # h' = ah*h + hin over the last prediction
        if self.rs is not None:
            self.rs.reset()
        n = self.n
        x, P = self.x, self.P
        for k in range(n * n):
            P[k] = 0.0
        for k in range(n):
            x[k] = 0.0
        defer = False
        p0 = self.p0
        for k in range(1, n):
            P[k * (n + 1)] = p0[k]
        if self.cap:
            x[self.ic] = 1.0
        p0_soc, p0_h = p0[0], p0[self.ih]
        ih = self.ih
        if soc is not None:
            x[0] = min(max(float(soc), SOC_MIN), SOC_MAX)
            P[0] = p0_soc
        elif v_uV is not None:
            v = v_uV * 1e-6
            i = i_nA * 1e-9
            z = self.soc_at(v)
            self._lookup(z)
            z = self.soc_at(v - self._r0 * self._r0_scale() * i - (self._bv_V(i) if self.bv else 0.0))
            self._lookup(z)
            x[0] = z
            if self._outside or v_uV == 0:
                # No OCV gives this voltage (not a rested cell), or no sample yet (0: the
                # board's reset before its first sample, which a graphite OCV starting at
                # 0 V would otherwise take as empty): say so, and start again from the
                # first sample that is credible.
                P[0] = VAR_UNKNOWN
                defer = True
            else:
                c = self._m / self._slope
                sm = self._model_error(z, i)
                P[0] = c * c * p0_h + (self.sigma_v * self.sigma_v + sm * sm) / (self._slope * self._slope)
                P[ih] = P[ih * n] = -c * p0_h
        else:
            x[0] = 0.5
            P[0] = max(p0_soc, VAR_UNKNOWN)
            defer = True  # initialise from the first sample's voltage
        self._pend = 0.0
        self._ilook = 0.0  # model_error's look-up current (A, >= 0): see step
        ec[ZC] = x[0]  # the edge estimator's counted SoC and predicted h
        ec[HC] = x[ih]
        self._s = 0.0
        self._fresh = True
        self._defer = defer
        self._condition()
        self.v_model = 0.0
        self._publish()

    def set_slow(self, cap_nAh, cap_std_nAh, r_mohm, r_std_mohm):
        """Put back what a run had learned (the controller's RECOVER, from the journal):
        capacity (nAh) and its std, charge-transfer resistance (mohm) and its std, as
        published; a value < 0 (a state that was off) leaves that state as it is. The
        cross-covariances of a restored state start at 0."""
        _setup("set_slow", self, cap_nAh, cap_std_nAh, r_mohm, r_std_mohm)

    @micropython.native
    def step(self, i_nA, v_uV, dt_ms):
        """One sample: current i_nA (int, > 0 charges), voltage v_uV (int), dt_ms since the
        previous sample (int). Predicts over dt_ms, then corrects with the voltage.

        dt_ms <= 0 is a repeated sample: it is ignored (no new information), except as the
        first sample after reset(), which is a correction without prediction. After a
        reset from a voltage no OCV explains, each sample restarts the filter from its own
        voltage until one is credible.
        """
        if self._defer:
            self.reset(v_uV=v_uV, i_nA=i_nA)
            dt_ms = 0  # the state is defined at this sample: nothing to predict
        if dt_ms <= 0 and not self._fresh:
            return
        i = i_nA * 1e-9
        if self.bias:
            i = i - self.x[self.ib]
        if i > self.i_rest:
            self._s = 1.0
        elif i < -self.i_rest:
            self._s = -1.0
        dt = dt_ms * 0.001
        # model_error is indexed by the load the model's states still carry: a rest just
        # after 1C holds the 1C error until the slow RC pairs relax (the fit bins its
        # held-out residuals at the same current, fit.error.look_current_A).
        tl = self.look_tau_s
        m = self._ilook * math.exp(-dt / tl) if tl > 0.0 else 0.0
        ai = abs(i)
        self._ilook = ai if ai > m else m
        if dt_ms > 0:
            self._predict(i, dt)
        self._update(i, v_uV * 1e-6, dt)
        self._fresh = False
        self._condition()
        if self.rs is not None:
            self._edges(i, v_uV * 1e-6, dt)
        self._publish()

    @micropython.native
    def _edges(self, i, v, dt):
        """Feed the resistance estimator: the voltage less the model's terms that are not
        resistances: OCV and M(z)*h at a coulomb-counted SoC and a predicted h (so the
        window's fit sees no OCV or hysteresis curvature: at 5C the SoC moves 2 % in an
        edge's window), Butler-Volmer and M0*s; with the model's R0 and rc[0] there. The
        counted SoC and h chain from sample to sample inside an edge's window (the
        prediction alone, no correction noise) and restart from the filter's outside one."""
        ec = self._ec
        zc = ec[ZC] + ec[KZ] * i
        hc = ec[AH] * ec[HC] + ec[HIN]
        self._lookup(zc)
        y = v - self._ocv - self._m * hc - self.m0_V * self._s - (self._bv_V(i) if self.bv else 0.0)
        self._rc_at(zc)
        rs = self.rs
        if rs is None:
            return
        g = self._dr0 / self._r0 if self._r0 > 0.0 else 0.0
        rs.step(i, y, dt, self.i_rest, self._r0, self._rrc[0], g * g * self.P[0], zc)
        if rs.open:
            ec[ZC], ec[HC] = zc, hc
        else:
            ec[ZC], ec[HC] = self.x[0] + self._pend, self.x[self.ih]

    def _r0_scale(self):
        """The resistance estimator's scale on R0 (1 without it)."""
        return 1.0 if self.rs is None else self.rs.v[R_OHM]

    # --- filter ----------------------------------------------------------------------
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
                sm2 = sm2 * (tau / dt)
        return rv * rv + sm2

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
        # Gate: a normalised innovation beyond `gate` inflates R until it sits on the gate,
        # so a wrong SoC still walks back (re-anchoring) while a spike moves it little.
        if e * e > self.gate * self.gate * (hph + R):
            R = e * e / (self.gate * self.gate) - hph
            self._gain(R)
        zn = zp
        for it in range(ITER_MAX):
            seg = self._seg
            dz = K[0] * e
            zn = zp + dz
            for r in range(1, n):
                x[r] = xp[r] + K[r] * e
            self._lookup(zn)
            if self._seg == seg or it == ITER_MAX - 1:
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

    @micropython.native
    def _condition(self):
        """Clamp SoC, h and c, cap their variances, floor the diagonal of P."""
        n, x, P = self.n, self.x, self.P
        z = x[0] + self._pend
        if z < SOC_MIN or z > SOC_MAX:
            x[0] = min(max(z, SOC_MIN), SOC_MAX)
            self._pend = 0.0
        ih = self.ih
        if x[ih] > 1.0:
            x[ih] = 1.0
        elif x[ih] < -1.0:
            x[ih] = -1.0
        self._cap(0, VAR_SOC_MAX)
        self._cap(ih, VAR_H_MAX)
        ic = self.ic
        if ic >= 0:
            x[ic] = min(max(x[ic], CAP_MIN), CAP_MAX)
            self._cap(ic, VAR_CAP_MAX)
        f = self.floor
        for r in range(n):
            if P[r * n + r] < f[r]:
                P[r * n + r] = f[r]

    @micropython.native
    def _cap(self, r, vmax):
        """Scale row and column r so P[r, r] <= vmax (a congruence: P stays positive definite)."""
        n, P = self.n, self.P
        prr = P[r * n + r]
        if prr <= vmax:
            return
        f = math.sqrt(vmax / prr)
        for c in range(n):
            P[r * n + c] *= f
            P[c * n + r] *= f
        # the diagonal got f twice: f*f*prr == vmax

    @micropython.native
    def _publish(self):
        """The public estimates as ints (the board's records have no floats): soc_ppm,
        std_ppm; cap_nAh, cap_std_nAh (capacity now, capacity_Ah * c, and its std) and
        r_mohm, r_std_mohm (the charge-transfer resistance rc[0] at the present SoC, and
        its std), -1 when that state is off."""
        z = self.x[0] + self._pend
        self.soc = z
        self.soc_ppm = int(round(z * 1e6))
        self.std_ppm = int(round(math.sqrt(self.P[0]) * 1e6))
        ic = self.ic
        if ic >= 0:
            q_nAh = self.q_As * (1e9 / 3600.0)
            self.cap_nAh = int(round(q_nAh * self.x[ic]))
            self.cap_std_nAh = int(round(q_nAh * math.sqrt(self.P[ic * self.n + ic])))
        else:
            self.cap_nAh = self.cap_std_nAh = -1
        rs = self.rs
        if rs is not None:
            self._rc_at(z)
            r1_mohm = self._rrc[0] * 1e3
            self.r_mohm = int(round(rs.v[R_CT] * r1_mohm))
            self.r_std_mohm = int(round(math.sqrt(rs.v[PRR]) * r1_mohm))
        else:
            self.r_mohm = self.r_std_mohm = -1
