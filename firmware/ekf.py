"""State-of-charge extended Kalman filter, run on the board once per tick.

Plain Python: runs under MicroPython (the board, 32-bit floats; the unix port, 64-bit
floats) and CPython (host tests). The host twin is cellbench.estimate (same equations in C);
docs/estimator.md gives the derivation and the tuning guide.

State x (SI units), n = 3..5 entries:
    x[0]            SoC z (1 = full), clamped to [SOC_MIN, SOC_MAX]
    x[1..nrc]       RC-pair voltages v_rc (V), one per model "rc" entry (1 or 2)
    x[ih]           hysteresis state h (-1..1), Plett one-state model
    x[ib]           current bias b (A) when model.estimator.bias is true:
                    measured current = true current + b
Model (docs/design.md), current i > 0 charges the cell:
    v = OCV(z) + M(z)*h + M0*s + R0(z)*i + sum(v_rc)
    z'   = z + eta*i*dt/(3600*C)          (eta applies on charge only)
    v_rc'= a*v_rc + R*(1-a)*i,  a = exp(-dt/tau)          (exact for a held current)
    h'   = ah*h + (1-ah)*sign(i), ah = exp(-|i|*gamma*dt/(3600*C))
Noise (model.estimator): process variances are per second of elapsed time; the current
noise sigma_i_A enters the prediction through d(x')/di and the measurement as
R = (sigma_i_A*R0 + sigma_v_V)**2 (standard deviations add: the same current sample
drives both, so their errors are correlated and the sum is the safe bound).

Numerics: P is a flat preallocated list (P[r*n + c]) updated in place; the covariance
update is the Joseph form computed as two rank-one corrections, then symmetrised, floored
on the diagonal and capped for the bounded states. SoC increments are collected in a
separate pending sum and folded into x[0] only when they reach FOLD, so a 32-bit float
board does not lose small per-tick increments to rounding (see docs/estimator.md).
"""

import gc
import math
from array import array

# Typecode of the model tables: the port's own float ('f' on the RP2040's single-precision
# build, 'd' on the 64-bit unix port), so an array holds exactly what a float would and
# the filter's numerics do not depend on where the tables live.
FLOAT = "f" if 1.0 + 1e-9 == 1.0 else "d"

SOC_MIN = -0.05
SOC_MAX = 1.05
# Fold the pending SoC sum into x[0] once it reaches this: each fold then rounds at most
# 6e-8/1e-3 = 6e-5 of the folded amount even in float32.
FOLD = 1e-3
# Iterated-EKF passes at most per update (only taken when SoC crosses a table node).
ITER_MAX = 5
# Variance caps for the bounded states (SoC in [-0.05, 1.05], h in [-1, 1]).
VAR_SOC_MAX = 1.0
VAR_H_MAX = 1.0
# SoC variance when nothing is known: uniform on [0, 1].
VAR_UNKNOWN = 1.0 / 12.0
# Diagonal floors: P never claims more certainty than these (SoC std 1e-5, v_rc std 1 uV,
# h std 1e-4, bias std 1 pA).
FLOOR_SOC = 1e-10
FLOOR_RC_V2 = 1e-12
FLOOR_H = 1e-8
FLOOR_BIAS_A2 = 1e-24

DEFAULTS = {"sigma_v_V": 0.003, "sigma_i_A": 2e-7, "q_soc": 1e-10, "q_rc_V2": 1e-8,
            "q_h": 1e-6, "p0_soc": 0.01, "gate": 5.0, "bias": False, "q_bias_A2": 1e-18,
            "p0_bias_A2": 1e-12, "p0_rc_V2": 1e-6, "p0_h": 0.1}


def _num(d, key, default):
    v = d.get(key, default)
    if v is None:
        return float(default)
    return float(v)


def _table(values):
    """A model table as an array of the port's floats (8 or 4 bytes a value, against a
    list's slot plus a float object per value), sized once. An array is kept as it is:
    the only arrays here are read_model's, already of FLOAT (MicroPython's arrays have
    no typecode attribute to check)."""
    if isinstance(values, array):
        return values
    out = _floats(len(values))
    for k in range(len(values)):
        out[k] = float(values[k])
    return out


def _floats(n):
    """An array of n FLOATs (contents to be overwritten) in one exact allocation: range
    has a length, which array() uses to size itself; a list of zeros would be a second
    block of the same size."""
    return array(FLOAT, range(n))


def _zeros(n):
    return [0.0] * n


class JsonError(ValueError):
    """The MODEL text is not valid JSON (or not a JSON object); ``field`` is the link's
    ERR field for it."""

    field = "json"


# What the filter reads of a model (docs/design.md): ALL keeps a value whole (lists of
# numbers become float arrays), a dict keeps only the listed members of an object, and
# everything else (provenance, fade, sim_*, ...) is checked and skipped, keeping nothing
# (its few numbers are parsed to check them and dropped at once).
ALL = 1
MODEL_KEYS = {"capacity_Ah": ALL, "r0_ohm": ALL, "rc": ALL, "hysteresis": ALL,
              "coulombic_efficiency": ALL, "estimator": ALL,
              "ocv": {"soc": ALL, "voltage_V": ALL, "charge_V": ALL, "discharge_V": ALL}}
_WS = b" \t\r\n"
_NUM = b"+-0123456789.eE"


class _Reader:
    """A JSON reader over bytes (or a memoryview of a line buffer) that builds only
    what a ``keep`` pattern asks for. Numbers go through float() / int() of their text,
    as json.loads does, so the values are the same."""

    def __init__(self, buf):
        self.b = buf
        self.k = 0
        self.n = len(buf)

    def fail(self, what="not valid JSON"):
        raise JsonError(what)

    def peek(self):
        b, k, n = self.b, self.k, self.n
        while k < n and b[k] in _WS:
            k += 1
        self.k = k
        if k >= n:
            self.fail()
        return b[k]

    def expect(self, c):
        if self.peek() != c:
            self.fail()
        self.k += 1

    def value(self, keep):
        c = self.peek()
        if c == 123:  # {
            return self.obj(keep)
        if c == 91:   # [
            return self.arr(keep)
        if c == 34:   # "
            return self.string(keep)
        if c in _NUM:
            return self.number(keep)
        for word, v in ((b"true", True), (b"false", False), (b"null", None)):
            if bytes(self.b[self.k:self.k + len(word)]) == word:
                self.k += len(word)
                return v if keep else None
        self.fail()

    def obj(self, keep):
        self.k += 1
        out: dict = {}  # stays empty when skipped
        if self.peek() == 125:
            self.k += 1
            return out if keep else None
        while True:
            if self.peek() != 34:
                self.fail()
            key = self.string(ALL if keep else None)
            self.expect(58)  # :
            sub = keep if keep == ALL else (keep.get(key) if keep else None)
            v = self.value(sub)
            if sub:
                out[key] = v
            c = self.peek()
            self.k += 1
            if c == 125:
                return out if keep else None
            if c != 44:
                self.fail()

    def arr(self, keep):
        self.k += 1
        if keep and self.peek() in _NUM:
            return self.numbers()
        out: list = []  # stays empty when skipped
        if self.peek() == 93:
            self.k += 1
            return out if keep else None
        while True:
            v = self.value(keep)
            if keep:
                out.append(v)
            c = self.peek()
            self.k += 1
            if c == 93:
                return out if keep else None
            if c != 44:
                self.fail()

    def numbers(self):
        """A kept list that starts with a number, straight into a float array: counted
        first, allocated once (no list, no float objects kept), so MODEL needs no block
        larger than the table itself even on a heap the run has fragmented. Such a list
        must hold only numbers (a model's tables do); anything else is refused."""
        b, k, n = self.b, self.k, self.n
        count = 1
        while k < n and b[k] != 93:
            if b[k] == 44:
                count += 1
            k += 1
        out = _floats(count)
        for j in range(count):
            if self.peek() not in _NUM:
                self.fail()
            out[j] = self.number(ALL)
            c = self.peek()
            self.k += 1
            if c != (93 if j == count - 1 else 44):
                self.fail()
        return out

    def string(self, keep):
        b, k, n = self.b, self.k + 1, self.n
        start = k
        esc = False
        while k < n and b[k] != 34:
            if b[k] == 92:  # backslash: the next byte is escaped
                esc = True
                k += 1
            k += 1
        if k >= n:
            self.fail()
        self.k = k + 1
        if not keep:
            return None
        text = bytes(b[start:k])
        if esc:
            import json  # rare (keys and kept strings are plain ASCII): let json decode it
            return json.loads(b'"' + text + b'"')
        return text.decode()

    def number(self, keep):
        b, k, n = self.b, self.k, self.n
        start = k
        while k < n and b[k] in _NUM:
            k += 1
        self.k = k
        text = bytes(b[start:k])  # parsed even when skipped: that checks it (garbage only)
        try:
            v = float(text) if (b"." in text or b"e" in text or b"E" in text) else int(text)
        except ValueError:
            self.fail()
        return v if keep else None


def read_model(text, keep=MODEL_KEYS):
    """The members of the model JSON ``text`` (bytes-like) that the filter uses, as a
    small dict whose number lists are float arrays; JsonError if the text is not one
    JSON object. A 9 KB model file costs a few KB this way instead of tens as a dict."""
    if isinstance(text, str):
        text = text.encode()
    # Collect first: MicroPython then allocates from the bottom of the heap, so the
    # tables go into the lowest holes, not wherever the last ticks' garbage left off.
    gc.collect()
    r = _Reader(text)
    if r.peek() != 123:
        r.fail("must be a JSON object")
    out = r.obj(keep)
    while r.k < r.n and r.b[r.k] in _WS:
        r.k += 1
    if r.k != r.n:
        r.fail()
    return out


class Ekf:
    """Board SoC estimator. Ekf(model_dict) takes a models/*.json document (SI units).

    After reset(), call step(i_nA, v_uV, dt_ms) once per sample; it sets soc (float),
    soc_ppm and std_ppm (ints, parts per million of full SoC) and v_model (float, V, the
    one-step-ahead predicted terminal voltage for that sample).
    """

    def __init__(self, model):
        self._load_cell(model)
        est = model.get("estimator") or {}
        self._load_noise(est)
        n = 2 + self.nrc + (1 if self.bias else 0)
        self.n = n
        self.ih = 1 + self.nrc
        self.ib = self.ih + 1 if self.bias else -1
        # State, covariance and work vectors stay lists, preallocated and updated in
        # place: they are read many times a step, and an array would box a new float on
        # every read (measured: 1.5x the time per step, 1.7x the garbage on the unix
        # port). The model tables, read a few times a step, are arrays.
        self.x = _zeros(n)
        self.P = _zeros(n * n)
        self._M = _zeros(n * n)
        self._d = _zeros(n)    # diagonal of the state transition
        self._g = _zeros(n)    # d(x')/d(i): input sensitivity
        self._q = _zeros(n)    # process variance per second
        self._floor = _zeros(n)
        self._u = _zeros(n)
        self._h = _zeros(n)    # measurement Jacobian
        self._ph = _zeros(n)   # P h
        self._k = _zeros(n)    # gain
        self._xp = _zeros(n)   # prior state during an update
        self._fill_q_floor()
        self.reset()

    @classmethod
    def from_json(cls, text):
        """An Ekf from the model's JSON text (bytes-like), without building the whole
        document: only what read_model keeps. JsonError for text that is not JSON."""
        return cls(read_model(text))

    def _load_cell(self, model):
        cap = float(model["capacity_Ah"])
        if not cap > 0:
            raise ValueError("capacity_Ah: must be > 0")
        self.q_As = 3600.0 * cap
        ocv = model["ocv"]
        zs = ocv["soc"]
        vs = ocv["voltage_V"]
        npt = len(zs)
        if npt < 2 or len(vs) != npt:
            raise ValueError("ocv: soc and voltage_V need the same length >= 2")
        self.z0 = float(zs[0])
        self.dz = (float(zs[-1]) - self.z0) / (npt - 1)
        for k in range(npt):
            if abs(float(zs[k]) - (self.z0 + k * self.dz)) > 1e-6:
                raise ValueError("ocv.soc: grid must be uniform")
            if k and not float(vs[k]) > float(vs[k - 1]):
                raise ValueError("ocv.voltage_V: must be strictly increasing")
        self.ocv_V = _table(vs)
        r0 = model["r0_ohm"]
        if isinstance(r0, (int, float)):
            self.r0_ohm = _table([r0] * npt)
        else:
            if len(r0) != npt:
                raise ValueError("r0_ohm: table needs one value per ocv.soc")
            self.r0_ohm = _table(r0)
        rc = model.get("rc") or []
        if len(rc) > 2:
            raise ValueError("rc: at most 2 pairs")
        self.nrc = len(rc)
        self.rc_ohm = _table([p["r_ohm"] for p in rc])
        self.rc_tau_s = _table([p["tau_s"] for p in rc])
        for tau in self.rc_tau_s:
            if not tau > 0:
                raise ValueError("rc.tau_s: must be > 0")
        hy = model.get("hysteresis") or {}
        self.m_V = _num(hy, "m_V", 0.0)
        # M(z): half the gap of the slow charge/discharge branches when the model has
        # both (as the simulators do), else the constant m_V.
        cv, dv = ocv.get("charge_V"), ocv.get("discharge_V")
        if cv and dv:
            if len(cv) != npt or len(dv) != npt:
                raise ValueError("ocv.charge_V/discharge_V: one value per ocv.soc")
            m = self.m_tab = _floats(npt)
            for k in range(npt):
                m[k] = 0.5 * (float(cv[k]) - float(dv[k]))
        else:
            self.m_tab = _table([self.m_V] * npt)
        self.m0_V = _num(hy, "m0_V", 0.0)
        self.gamma = _num(hy, "gamma", 0.0)
        self.eta = _num(model, "coulombic_efficiency", 1.0)

    def _load_noise(self, est):
        self.sigma_v = _num(est, "sigma_v_V", DEFAULTS["sigma_v_V"])
        self.sigma_i = _num(est, "sigma_i_A", DEFAULTS["sigma_i_A"])
        self.gate = _num(est, "gate", DEFAULTS["gate"])
        self.bias = bool(est.get("bias", False))
        # Below this |i| the cell counts as resting for the instantaneous hysteresis sign:
        # measured noise around zero must not flip s every tick.
        self.i_rest = 3.0 * self.sigma_i
        self._est = est

    def _fill_q_floor(self):
        est = self._est
        q, f = self._q, self._floor
        q[0] = _num(est, "q_soc", DEFAULTS["q_soc"])
        f[0] = FLOOR_SOC
        for j in range(self.nrc):
            q[1 + j] = _num(est, "q_rc_V2", DEFAULTS["q_rc_V2"])
            f[1 + j] = FLOOR_RC_V2
        q[self.ih] = _num(est, "q_h", DEFAULTS["q_h"])
        f[self.ih] = FLOOR_H
        if self.bias:
            q[self.ib] = _num(est, "q_bias_A2", DEFAULTS["q_bias_A2"])
            f[self.ib] = FLOOR_BIAS_A2

    # --- OCV table -------------------------------------------------------------------
    def _lookup(self, z):
        """Set _ocv (V), _slope (V per unit SoC), _r0 (ohm), _dr0 (ohm per unit SoC),
        _m (V), _dm (V per unit SoC) and _seg (table segment) at z.

        OCV is piecewise linear and extrapolated linearly beyond the table (so the filter
        still sees a slope at SoC -0.05 and 1.05); R0 and M are held at their end values.
        """
        pos = (z - self.z0) / self.dz
        last = len(self.ocv_V) - 2
        j = int(pos) if pos > 0.0 else 0
        if j > last:
            j = last
        self._seg = j
        frac = pos - j
        v = self.ocv_V
        self._slope = (v[j + 1] - v[j]) / self.dz
        self._ocv = v[j] + frac * (v[j + 1] - v[j])
        r, m = self.r0_ohm, self.m_tab
        if frac <= 0.0:
            self._r0, self._m = r[j], m[j]
            self._dr0 = self._dm = 0.0
        elif frac >= 1.0:
            self._r0, self._m = r[j + 1], m[j + 1]
            self._dr0 = self._dm = 0.0
        else:
            self._r0 = r[j] + frac * (r[j + 1] - r[j])
            self._dr0 = (r[j + 1] - r[j]) / self.dz
            self._m = m[j] + frac * (m[j + 1] - m[j])
            self._dm = (m[j + 1] - m[j]) / self.dz

    def ocv(self, z):
        """Open-circuit voltage (V) at SoC z, as the filter sees it."""
        self._lookup(z)
        return self._ocv

    def soc_at(self, v_V):
        """Invert the OCV table: the SoC whose OCV is v_V, clamped to [SOC_MIN, SOC_MAX]."""
        v = self.ocv_V
        last = len(v) - 2
        j = 0
        while j < last and v_V > v[j + 1]:
            j += 1
        z = self.z0 + (j + (v_V - v[j]) / (v[j + 1] - v[j])) * self.dz
        self._outside = z < SOC_MIN or z > SOC_MAX
        return min(max(z, SOC_MIN), SOC_MAX)

    # --- public API ------------------------------------------------------------------
    def reset(self, soc=None, v_uV=None, i_nA=0):
        """Start over: at SoC `soc` (variance p0_soc), or from a rested voltage v_uV.

        From a voltage the SoC is OCV^-1(v - R0*i) with h = 0; its variance comes from the
        voltage noise and the unknown hysteresis through the local OCV slope, so a reading
        on a flat plateau honestly says it knows little. With neither, or from a voltage no
        SoC in the clamp range explains (e.g. 0 before the first sample), the filter starts
        again from the first sample whose voltage is credible (until then SoC 0.5 or the
        clamped inversion, with the variance of a uniform [0, 1] guess). reset() is what a
        host replaying the log from its first record does, so board and host agree.
        """
        n = self.n
        x, P = self.x, self.P
        for k in range(n * n):
            P[k] = 0.0
        for k in range(n):
            x[k] = 0.0
        est = self._est
        defer = False
        p0_soc = _num(est, "p0_soc", DEFAULTS["p0_soc"])
        p0_h = _num(est, "p0_h", DEFAULTS["p0_h"])
        ih = self.ih
        P[ih * n + ih] = p0_h
        for j in range(self.nrc):
            P[(1 + j) * (n + 1)] = _num(est, "p0_rc_V2", DEFAULTS["p0_rc_V2"])
        if self.bias:
            P[self.ib * (n + 1)] = _num(est, "p0_bias_A2", DEFAULTS["p0_bias_A2"])
        if soc is not None:
            x[0] = min(max(float(soc), SOC_MIN), SOC_MAX)
            P[0] = p0_soc
        elif v_uV is not None:
            v = v_uV * 1e-6
            z = self.soc_at(v)
            self._lookup(z)
            z = self.soc_at(v - self._r0 * i_nA * 1e-9)
            self._lookup(z)
            x[0] = z
            if self._outside:
                # No OCV gives this voltage (not a rested cell, or no sample yet): say so,
                # and start again from the first sample that is credible.
                P[0] = VAR_UNKNOWN
                defer = True
            else:
                c = self._m / self._slope
                P[0] = c * c * p0_h + (self.sigma_v / self._slope) ** 2
                P[ih] = P[ih * n] = -c * p0_h
        else:
            x[0] = 0.5
            P[0] = max(p0_soc, VAR_UNKNOWN)
            defer = True  # initialise from the first sample's voltage
        self._pend = 0.0
        self._s = 0.0
        self._fresh = True
        self._defer = defer
        self._condition()
        self.v_model = 0.0
        self._publish()

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
        if dt_ms > 0:
            self._predict(i, dt_ms * 0.001)
        self._update(i, v_uV * 1e-6)
        self._fresh = False
        self._condition()
        self._publish()

    # --- filter ----------------------------------------------------------------------
    def _predict(self, i, dt):
        """Propagate x and P over dt seconds with the (bias-corrected) current i (A)."""
        x, d, g = self.x, self._d, self._g
        k = dt / self.q_As
        if i > 0.0:
            k = k * self.eta
        d[0] = 1.0
        g[0] = k
        self._pend += k * i
        for j in range(self.nrc):
            a = math.exp(-dt / self.rc_tau_s[j])
            b = self.rc_ohm[j] * (1.0 - a)
            x[1 + j] = a * x[1 + j] + b * i
            d[1 + j] = a
            g[1 + j] = b
        ih = self.ih
        sg = 1.0 if i > 0.0 else (-1.0 if i < 0.0 else 0.0)
        kh = self.gamma * dt / self.q_As
        ah = math.exp(-abs(i) * kh)
        h = x[ih]
        x[ih] = ah * h + (1.0 - ah) * sg
        d[ih] = ah
        g[ih] = -kh * sg * ah * (h - sg)
        if self.bias:
            d[self.ib] = 1.0
            g[self.ib] = 0.0
        self._propagate_cov(dt)
        if self._pend >= FOLD or self._pend <= -FOLD:
            x[0] += self._pend
            self._pend = 0.0

    def _propagate_cov(self, dt):
        """P = F P F' + sigma_i^2 g g' + Q dt, with F = diag(d) - g e_b' (bias column)."""
        n, P, d, g, q, u = self.n, self.P, self._d, self._g, self._q, self._u
        si2 = self.sigma_i * self.sigma_i
        ib = self.ib
        if ib >= 0:
            for r in range(n):
                u[r] = d[r] * P[r * n + ib]
            pbb = P[ib * n + ib]
        for r in range(n):
            for c in range(r, n):
                v = d[r] * d[c] * P[r * n + c] + si2 * g[r] * g[c]
                if ib >= 0:
                    # c_vec = -g is d(x')/d(b)
                    v = v - u[r] * g[c] - g[r] * u[c] + g[r] * g[c] * pbb
                if r == c:
                    v = v + q[r] * dt
                P[r * n + c] = v
                P[c * n + r] = v

    def _measure(self, z, i):
        """Model voltage and Jacobian row (into _h) at SoC z and the other states in x."""
        x, H, ih = self.x, self._h, self.ih
        self._lookup(z)
        vm = self._ocv + self._m * x[ih] + self.m0_V * self._s + self._r0 * i
        for j in range(self.nrc):
            vm += x[1 + j]
            H[1 + j] = 1.0
        H[0] = self._slope + self._dr0 * i + self._dm * x[ih]
        H[ih] = self._m
        if self.bias:
            H[self.ib] = -self._r0
        return vm

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

    def _update(self, i, v):
        """Correct with the voltage v (V) measured at current i (A, bias-corrected).

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
        self.v_model = vm
        e = v - vm
        rv = self.sigma_i * self._r0 + self.sigma_v
        R = rv * rv
        hph = self._gain(R)
        # Gate: a normalised innovation beyond `gate` inflates R until it sits on the gate,
        # so a wrong SoC still walks back (re-anchoring) while a spike moves it little.
        if e * e > self.gate * self.gate * (hph + R):
            R = e * e / (self.gate * self.gate) - hph
            self._gain(R)
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

    def _condition(self):
        """Clamp SoC and h, cap their variances, floor the diagonal of P."""
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
        f = self._floor
        for r in range(n):
            if P[r * n + r] < f[r]:
                P[r * n + r] = f[r]

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

    def _publish(self):
        z = self.x[0] + self._pend
        self.soc = z
        self.soc_ppm = int(round(z * 1e6))
        self.std_ppm = int(round(math.sqrt(self.P[0]) * 1e6))
