"""The equivalent circuit the SoC filter runs (firmware/ekf.py): the model file's tables on
its uniform SoC grid and their lookups. Plain Python: runs under MicroPython (the board,
32-bit floats) and CPython (host tests, cellbench.estimate).

Model (docs/design.md), current i > 0 charges the cell, z the SoC (1 = full):
    v = OCV(z) + M(z)*h + M0*s + R0(z)*i + sum(v_rc) + 2*vT*asinh(i/(2*i0(z)))
with OCV piecewise linear on the grid (extrapolated linearly beyond it), R0, M, the RC
resistances and i0 held at the table ends. The model's JSON text is read by cellmodel.py;
the filter's states and noise are ekf.py's.
"""

import math

try:
    import micropython
except ImportError:  # CPython (the host): the code emitter's decorator does nothing
    class micropython:  # type: ignore[no-redef]
        """The one decorator of MicroPython's micropython module the circuit uses."""

        @staticmethod
        def native(f):
            return f

from cellmodel import floats, table

SOC_MIN = -0.05
SOC_MAX = 1.05


def _num(d, key, default):
    v = d.get(key, default)
    if v is None:
        return float(default)
    return float(v)


def _zeros(n):
    """n zeros in an array of the port's floats (one block, no boxed floats)."""
    a = floats(n)
    for k in range(n):
        a[k] = 0.0
    return a


def _grid_table(value, npt, name):
    """A model parameter that is a number or a table on the OCV grid, as a table: one
    value for a number (read as a constant), so a model without SoC tables keeps its
    heap."""
    if isinstance(value, (int, float)):
        return table([value])
    if len(value) != npt:
        raise ValueError(name + ": table needs one value per ocv.soc")
    return table(value)


@micropython.native
def _interp(t, j, frac):
    """Table t (one value: a constant) at segment j and fraction frac, held at the ends."""
    if len(t) == 1 or frac <= 0.0:
        return t[0] if len(t) == 1 else t[j]
    if frac >= 1.0:
        return t[j + 1]
    return t[j] + frac * (t[j + 1] - t[j])


@micropython.native
def _locate(knots, x):
    """(segment j, fraction in [0, 1]) of x on the increasing knots, clamped at the ends."""
    last = len(knots) - 2
    if last < 0 or x <= knots[0]:
        return 0, 0.0
    j = 0
    while j < last and x > knots[j + 1]:
        j += 1
    if x >= knots[j + 1]:
        return j, 1.0
    return j, (x - knots[j]) / (knots[j + 1] - knots[j])


class Circuit:
    """The cell model of a models/*.json document (SI units), as tables on its OCV grid.

    Parameters, set from the model once and only read after (public: the host's replay
    kernel, cellbench.estimate, runs the same equations from them):
        z0, dz              first SoC of the OCV grid and its uniform step
        ocv_V, r0_ohm, m_tab  tables on that grid: OCV (V), R0 (ohm), M(z) (V)
        nrc, rc_tab, rc_tau_s  RC pairs (0, 1 or 2): resistance tables on the grid or of
                            one value (ohm), time constants (s); rc_soc: any of them a table
        bv, bv_vT, i0_tab   Butler-Volmer term on (bool), its v_T (V), i0 (A: a table on
                            the grid or one value)
        me_z, me_c, me_s    model_error: SoC knots, C-rate knots, sigma_V (V, row-major);
                            empty arrays without one
        q_As                capacity (A s)
        eta                 coulombic efficiency (applies on charge)
        m_V, m0_V, gamma    hysteresis: slow (V, without both OCV branches) and
                            instantaneous (V) parts, and its rate (dimensionless)

    A lookup leaves its results in attributes (no tuple per call on the board's tick):
    _lookup(z) sets _ocv, _slope, _r0, _dr0, _m, _dm, _seg, _frac; _rc_at(z) fills _rrc;
    _bv_V(i) sets _bv_di and _bv_dz.
    """

    def __init__(self, model):
        self._rrc = _zeros(2)  # RC resistances at the last _rc_at SoC (ohm)
        self._load_cell(model)

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
        self.ocv_V = table(vs)
        r0 = model["r0_ohm"]
        self.r0_ohm = table([r0] * npt if isinstance(r0, (int, float)) else r0)
        if len(self.r0_ohm) != npt:
            raise ValueError("r0_ohm: table needs one value per ocv.soc")
        rc = model.get("rc") or []
        if len(rc) > 2:
            raise ValueError("rc: at most 2 pairs")
        self.nrc = len(rc)
        self.rc_tab = [_grid_table(p["r_ohm"], npt, "rc.r_ohm") for p in rc]
        self.rc_tau_s = table([p["tau_s"] for p in rc])
        for tau in self.rc_tau_s:
            if not tau > 0:
                raise ValueError("rc.tau_s: must be > 0")
        self.rc_soc = False  # any RC resistance a table on the grid
        for j in range(self.nrc):
            self._rrc[j] = self.rc_tab[j][0]
            self.rc_soc = self.rc_soc or len(self.rc_tab[j]) > 1
        bv = model.get("butler_volmer")
        self.bv = bool(bv)
        self.bv_vT = _num(bv, "v_T", 0.0) if bv else 0.0
        self.i0_tab = _grid_table(bv["i0_A"] if bv else 1.0, npt, "butler_volmer.i0_A")
        for i0 in self.i0_tab:
            if not i0 > 0:
                raise ValueError("butler_volmer.i0_A: must be > 0")
        # model_error's knots and sigma_V table (empty without one)
        me = model.get("model_error") or {}
        self.me_z, self.me_c = table(me.get("soc") or []), table(me.get("c_rate") or [])
        self.me_s = table(me.get("sigma_V") or [])
        if len(self.me_s) != len(self.me_z) * len(self.me_c):
            raise ValueError("model_error.sigma_V: needs soc x c_rate values")
        # The table's current axis is the recent load the model's states still carry
        # (Ekf.step), decayed with this time constant; 0: the present current.
        self.look_tau_s = _num(me, "look_tau_s", 0.0)
        if not self.look_tau_s >= 0.0:
            raise ValueError("model_error.look_tau_s: must be >= 0")
        self.eta = _num(model, "coulombic_efficiency", 1.0)
        hy = model.get("hysteresis") or {}
        self.m_V = _num(hy, "m_V", 0.0)
        # M(z): half the gap of the slow charge/discharge branches when the model has
        # both (as the simulators do), else the constant m_V.
        cv, dv = ocv.get("charge_V"), ocv.get("discharge_V")
        if cv and dv:
            if len(cv) != npt or len(dv) != npt:
                raise ValueError("ocv.charge_V/discharge_V: one value per ocv.soc")
            m = self.m_tab = floats(npt)
            for k in range(npt):
                m[k] = 0.5 * (float(cv[k]) - float(dv[k]))
        else:
            self.m_tab = table([self.m_V] * npt)
        self.m0_V = _num(hy, "m0_V", 0.0)
        self.gamma = _num(hy, "gamma", 0.0)

    @micropython.native
    def _lookup(self, z):
        """Set _ocv (V), _slope (V per unit SoC), _r0 (ohm), _dr0 (ohm per unit SoC),
        _m (V), _dm (V per unit SoC), _seg (table segment) and _frac (position in it) at z.

        OCV is piecewise linear and extrapolated linearly beyond the table (so the filter
        still sees a slope at SoC -0.05 and 1.05); R0 and M are held at their end values.
        """
        pos = (z - self.z0) / self.dz
        last = len(self.ocv_V) - 2
        j = int(pos) if pos > 0.0 else 0
        if j > last:
            j = last
        self._seg = j
        frac = self._frac = pos - j
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

    @micropython.native
    def _rc_at(self, z):
        """RC resistances at SoC z into _rrc (held at the table ends)."""
        pos = (z - self.z0) / self.dz
        last = len(self.ocv_V) - 2
        j = int(pos) if pos > 0.0 else 0
        if j > last:
            j = last
        for p in range(self.nrc):
            self._rrc[p] = _interp(self.rc_tab[p], j, pos - j)

    @micropython.native
    def _model_error(self, z, i):
        """sigma_m (V): the model_error table at SoC z and C-rate |i|/(C * 1/h), bilinear."""
        zs, cs, sg = self.me_z, self.me_c, self.me_s
        if len(sg) == 0:
            return 0.0
        m = len(cs)
        a, fa = _locate(zs, z)
        b, fb = _locate(cs, abs(i) * 3600.0 / self.q_As)
        a1 = a + 1 if len(zs) > 1 else a
        b1 = b + 1 if m > 1 else b
        lo = sg[a * m + b] + fb * (sg[a * m + b1] - sg[a * m + b])
        hi = sg[a1 * m + b] + fb * (sg[a1 * m + b1] - sg[a1 * m + b])
        return lo + fa * (hi - lo)

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

    @micropython.native
    def _bv_V(self, i):
        """Butler-Volmer overpotential (V) at current i, i0 at the last _lookup's SoC;
        sets _bv_di (V/A) and _bv_dz (V per unit SoC) for the Jacobian. asinh is taken
        through log and sqrt (odd), so every port computes it the same way."""
        t, j, frac = self.i0_tab, self._seg, self._frac
        i0 = _interp(t, j, frac)
        di0 = (t[j + 1] - t[j]) / self.dz if len(t) > 1 and 0.0 < frac < 1.0 else 0.0
        vt = self.bv_vT
        u = i / (2.0 * i0)
        w = 1.0 / math.sqrt(1.0 + u * u)
        self._bv_di = vt * w / i0
        self._bv_dz = -2.0 * vt * u * w * di0 / i0
        a = u if u >= 0.0 else -u
        y = math.log(a + math.sqrt(a * a + 1.0))
        return 2.0 * vt * (y if u >= 0.0 else -y)

    @micropython.native
    def _min_slope(self, za, zb):
        """Smallest OCV segment slope (V per unit SoC) over the SoC range [za, zb],
        the segments clamped to the table's (as the lookup extrapolates the end ones)."""
        v, last = self.ocv_V, len(self.ocv_V) - 2
        pa = (za - self.z0) / self.dz
        pb = (zb - self.z0) / self.dz
        ja = min(int(pa), last) if pa > 0.0 else 0
        jb = min(int(pb), last) if pb > 0.0 else 0
        m = v[ja + 1] - v[ja]
        for j in range(ja + 1, jb + 1):
            d = v[j + 1] - v[j]
            if d < m:
                m = d
        return m / self.dz
