"""State-of-charge extended Kalman filter, run on the board once per tick.

Plain Python: runs under MicroPython (the board, 32-bit floats; the unix port, 64-bit
floats) and CPython (host tests). The host twin is cellbench.estimate (the same equations
compiled by numba, from this filter's public parameters and its modules' constants);
docs/estimator.md gives the derivation, why the noise is what it is, and the tuning guide.
This module is the filter's life cycle: its start (reset), the per-sample step, the state
bounds and the published estimates, and the feed of the resistance estimator. Its predict
and update equations (the model, the noise, the Joseph form) are kalman.py's, on the
tables of circuit.py; the model's JSON text is read by cellmodel.py, and the circuit's
tables and the filter's parameters are set from it (and learned slow states put back) by
ekfsetup.py (both loaded for those and dropped after).

State x (SI units), n = 2..6 entries:
    x[0]            SoC z (1 = full), clamped to [SOC_MIN, SOC_MAX]
    x[1..nrc]       RC-pair voltages v_rc (V), one per model "rc" entry (0, 1 or 2)
    x[ih]           hysteresis state h (-1..1), Plett one-state model
    x[ib]           current bias b (A) when model.estimator.bias is true:
                    measured current = true current + b
    x[ic]           capacity scale c when model.estimator.capacity is true:
                    true capacity = capacity_Ah * c, clamped to [CAP_MIN, CAP_MAX]
With model.estimator.resistance, rc[0]'s R(z) is scaled by r and R0(z) and the slower
pairs' R(z) by s, the slow estimates of resistance.Resistance (fed by the current's step
edges, _edges: dual estimation, docs/estimator.md "Resistance"; the slow pairs are not
seen in an edge's window and are taken to age with the ohmic part).

After each update the state is conditioned: SoC, h and c clamped, their variances capped
(VAR_*_MAX) and the diagonal of P floored (a congruence and positive diagonal terms, so P
stays positive definite).
"""

import gc
import math
import sys

from circuit import MICROPYTHON, SOC_MAX, SOC_MIN, _zeros, micropython
from kalman import AH, HC, HIN, KZ, NEC, PRR, R_CT, ZC, Kalman

# Capacity scale c is kept within these (a cell at half or 1.5x its model capacity is not
# the cell of the model: the voltage model would be wrong long before).
CAP_MIN = 0.5
CAP_MAX = 1.5
# Variance caps for the bounded states (SoC in [-0.05, 1.05], h in [-1, 1], c in [0.5, 1.5]).
VAR_SOC_MAX = 1.0
VAR_H_MAX = 1.0
VAR_CAP_MAX = 0.25
# SoC variance when nothing is known: uniform on [0, 1].
VAR_UNKNOWN = 1.0 / 12.0


def _setup(fn, *args):
    """ekfsetup.fn(*args): the filter's set-up (MODEL, RECOVER), imported for the call and
    dropped after it with the model reader it imported (cellmodel), so their bytecode
    holds no heap while a run goes on; on the board the heap is collected before the
    filter allocates again (into what the modules held). (Under CPython cellbench.fw
    caches them as cellbench.firmware.<name>: nothing to drop.)"""
    mod = __import__("ekfsetup")
    try:
        out = getattr(mod, fn)(*args)
    finally:
        del mod  # no reference left for the collection below
        sys.modules.pop("ekfsetup", None)
        sys.modules.pop("cellmodel", None)
        if MICROPYTHON:
            gc.collect()
    return out


class Ekf(Kalman):
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
        x, P                state and covariance (kalman.Kalman, which predicts and updates)
        sigma_v, sigma_i    measurement noise std: voltage (V), current (A)
        gate                innovation gate (standard deviations)
        i_rest              |current| (A) below which the hysteresis sign s holds
        q, floor, p0        per state: process variance per second, diagonal floor of P,
                            prior variance at reset (p0[0] = p0_soc)
    """

    def __init__(self, model):
        # the circuit's tables, then noise, state layout, per-state q / floor / p0 and the
        # resistance estimator (ekfsetup.build: ValueError naming the field of a bad model)
        (self.sigma_v, self.sigma_i, self.gate, self.i_rest, self.bias, self.cap, self.ih,
         self.ib, self.ic, self.n, self.q, self.floor, self.p0,
         self.rs) = _setup("build", self, model)
        self._ec = _zeros(NEC)  # the edge estimator's chain (KZ, ...)
        self._alloc(self.n)  # x, P and the work arrays (kalman.Kalman)
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

    # --- state bounds and outputs ----------------------------------------------------
    @micropython.native
    def _condition(self):
        """Clamp SoC, h and c, cap their variances, floor the diagonal of P.

        SoC 0 and 1 are the model's rested limits, so a SoC beyond them is off by at least
        the excess: the SoC variance is raised to its square (a raise on the diagonal
        alone keeps P positive definite). A count that ran past the window, through a
        formation charge the model does not describe (its innovations gated), otherwise
        arrives at the limit 5 % off with a 0.9 % std (yadg GCPL issue 175)."""
        n, x, P = self.n, self.x, self.P
        z = x[0] + self._pend
        if z < SOC_MIN or z > SOC_MAX:
            x[0] = min(max(z, SOC_MIN), SOC_MAX)
            self._pend = 0.0
            z = x[0]
        if z > 1.0 or z < 0.0:  # (inside the window: comparisons only, no float allocated)
            out = z - 1.0 if z > 1.0 else z
            if P[0] < out * out:
                P[0] = out * out
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
