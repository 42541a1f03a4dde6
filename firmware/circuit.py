"""The equivalent circuit the SoC filter runs (firmware/ekf.py): the model file's tables on
its uniform SoC grid and their lookups (what the filter reads of the model every tick).
Plain Python: runs under MicroPython (the board, 32-bit floats) and CPython (host tests,
cellbench.estimate).

Model (docs/design.md), current i > 0 charges the cell, z the SoC (1 = full):
    v = OCV(z) + M(z)*h + M0*s + R0(z)*i + sum(v_rc) + 2*vT*asinh(i/(2*i0(z)))
with OCV piecewise linear on the grid (extrapolated linearly beyond it), R0, M, the RC
resistances and i0 held at the table ends. The model's JSON text is read by cellmodel.py
and its tables checked and set by ekfsetup.circuit (both loaded for MODEL and dropped
after); the filter's states and noise are ekf.py's and kalman.py's.
"""

import math
import sys
from array import array

try:
    import micropython
except ImportError:  # CPython (the host): the code emitter's decorator does nothing
    class micropython:  # type: ignore[no-redef]
        """The one decorator of MicroPython's micropython module the circuit uses."""

        @staticmethod
        def native(f):
            return f

MICROPYTHON = sys.implementation.name == "micropython"
SOC_MIN = -0.05
SOC_MAX = 1.05
# Typecode of the model tables: the port's own float ('f' on the RP2040's single-precision
# build, 'd' on the 64-bit unix port), so an array holds exactly what a float would and
# the filter's numerics do not depend on where the tables live.
FLOAT = "f" if 1.0 + 1e-9 == 1.0 else "d"


def floats(n):
    """An array of n FLOATs (contents to be overwritten) in one exact allocation: range
    has a length, which array() uses to size itself; a list of zeros would be a second
    block of the same size."""
    return array(FLOAT, range(n))


def _zeros(n):
    """n zeros in an array of the port's floats (one block, no boxed floats)."""
    a = floats(n)
    for k in range(n):
        a[k] = 0.0
    return a


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

    Parameters, set from the model once by ekfsetup.circuit and only read after (public:
    the host's replay kernel, cellbench.estimate, runs the same equations from them):
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
    _lookup(z) sets _ocv, _slope, _r0, _dr0, _m, _dm, _seg, _frac; _rc_at(z) fills _rrc
    (two floats, allocated with the tables); _bv_V(i) sets _bv_di and _bv_dz.
    """

    # Set by ekfsetup.circuit (named here for the type check; annotations alone cost no
    # heap): the parameters above.
    z0: float
    dz: float
    ocv_V: array
    r0_ohm: array
    m_tab: array
    nrc: int
    rc_tab: list
    rc_tau_s: array
    rc_soc: bool
    bv: bool
    bv_vT: float
    i0_tab: array
    me_z: array
    me_c: array
    me_s: array
    look_tau_s: float
    q_As: float
    eta: float
    m_V: float
    m0_V: float
    gamma: float
    _rrc: array


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
