"""The SoC filter's set-up: the model read (MODEL: cellmodel.py's reader, then the
circuit's tables checked and set, and the filter's parameters) and the slow states a run
had learned put back (RECOVER). Plain Python, like ekf.py.

ekf.Ekf imports this module for those calls and drops it after them (ekf._setup), so its
bytecode holds no heap while a run goes on; what runs every tick is ekf.py's and
kalman.py's. The parameters it sets are the ones Ekf documents (noise, state layout,
per-state process variance, floor and prior, the resistance estimator); the model's
"estimator" members that are absent take DEFAULTS (SI units, variances per second of
elapsed time).
"""

import gc
import sys
from array import array

from circuit import MICROPYTHON, _zeros, floats
from kalman import PRR, PSR, R_CT

# Diagonal floors: P never claims more certainty than these (SoC std 1e-5, v_rc std 1 uV,
# h std 1e-4, bias std 1 pA, capacity scale std 1e-5).
FLOOR_SOC = 1e-10
FLOOR_RC_V2 = 1e-12
FLOOR_H = 1e-8
FLOOR_BIAS_A2 = 1e-24
FLOOR_CAP = 1e-10

DEFAULTS = {"sigma_v_V": 0.003, "sigma_i_A": 2e-7, "q_soc": 1e-10, "q_rc_V2": 1e-8,
            "q_h": 1e-6, "p0_soc": 0.01, "gate": 5.0, "bias": False, "q_bias_A2": 1e-18,
            "p0_bias_A2": 1e-12, "p0_rc_V2": 1e-6, "p0_h": 0.1, "capacity": False,
            "p0_cap": 1e-4, "q_cap": 1e-10, "resistance": False, "q_ohm": 1e-9,
            "p0_ohm": 0.04, "q_res": 1e-8, "p0_res": 0.25}


def read(text):
    """The model (ekf.Ekf.from_json) from its JSON text (bytes-like), without building the
    whole document: only what read_model keeps. JsonError for text that is not JSON.
    (cellmodel is imported here, for this call: ekf._setup drops it with this module.)"""
    from cellmodel import read_model
    model = read_model(text)
    if MICROPYTHON:
        # The resistance estimator's code (loaded only for a model that asks for it)
        # goes onto a clean heap: between the parsed tables the unix port found no
        # 944-byte block for it at some heap sizes (tests/test_memory.py's sweep).
        if (model.get("estimator") or {}).get("resistance") and "resistance" not in sys.modules:
            model = None
            gc.collect()
            import resistance  # noqa: F401
            model = read_model(text)
    # (ekf._setup collects the reader's garbage before the filter's arrays fill its holes)
    return model


def build(f, model):
    """The filter f (the Ekf being built) from the model: the circuit's tables set on f
    (circuit), then its parameters returned (parameters)."""
    circuit(f, model)
    return parameters(f, model)


def circuit(f, model):
    """The circuit's parameters and tables (circuit.Circuit's) from the model, checked, set
    on f; ValueError naming the field for a model the filter cannot run."""
    f._rrc = _zeros(2)  # RC resistances at the last _rc_at SoC (ohm)
    cap = float(model["capacity_Ah"])
    if not cap > 0:
        raise ValueError("capacity_Ah: must be > 0")
    f.q_As = 3600.0 * cap
    ocv = model["ocv"]
    zs = ocv["soc"]
    vs = ocv["voltage_V"]
    npt = len(zs)
    if npt < 2 or len(vs) != npt:
        raise ValueError("ocv: soc and voltage_V need the same length >= 2")
    f.z0 = float(zs[0])
    f.dz = (float(zs[-1]) - f.z0) / (npt - 1)
    for k in range(npt):
        if abs(float(zs[k]) - (f.z0 + k * f.dz)) > 1e-6:
            raise ValueError("ocv.soc: grid must be uniform")
        if k and not float(vs[k]) > float(vs[k - 1]):
            raise ValueError("ocv.voltage_V: must be strictly increasing")
    f.ocv_V = table(vs)
    r0 = model["r0_ohm"]
    f.r0_ohm = table([r0] * npt if isinstance(r0, (int, float)) else r0)
    if len(f.r0_ohm) != npt:
        raise ValueError("r0_ohm: table needs one value per ocv.soc")
    rc = model.get("rc") or []
    if len(rc) > 2:
        raise ValueError("rc: at most 2 pairs")
    f.nrc = len(rc)
    f.rc_tab = [_grid_table(p["r_ohm"], npt, "rc.r_ohm") for p in rc]
    f.rc_tau_s = table([p["tau_s"] for p in rc])
    for tau in f.rc_tau_s:
        if not tau > 0:
            raise ValueError("rc.tau_s: must be > 0")
    f.rc_soc = False  # any RC resistance a table on the grid
    for j in range(f.nrc):
        f._rrc[j] = f.rc_tab[j][0]
        f.rc_soc = f.rc_soc or len(f.rc_tab[j]) > 1
    bv = model.get("butler_volmer")
    f.bv = bool(bv)
    f.bv_vT = _num(bv, "v_T", 0.0) if bv else 0.0
    f.i0_tab = _grid_table(bv["i0_A"] if bv else 1.0, npt, "butler_volmer.i0_A")
    for i0 in f.i0_tab:
        if not i0 > 0:
            raise ValueError("butler_volmer.i0_A: must be > 0")
    # model_error's knots and sigma_V table (empty without one)
    me = model.get("model_error") or {}
    f.me_z, f.me_c = table(me.get("soc") or []), table(me.get("c_rate") or [])
    f.me_s = table(me.get("sigma_V") or [])
    if len(f.me_s) != len(f.me_z) * len(f.me_c):
        raise ValueError("model_error.sigma_V: needs soc x c_rate values")
    # The table's current axis is the recent load the model's states still carry
    # (Ekf.step), decayed with this time constant; 0: the present current.
    f.look_tau_s = _num(me, "look_tau_s", 0.0)
    if not f.look_tau_s >= 0.0:
        raise ValueError("model_error.look_tau_s: must be >= 0")
    f.eta = _num(model, "coulombic_efficiency", 1.0)
    hy = model.get("hysteresis") or {}
    f.m_V = _num(hy, "m_V", 0.0)
    # M(z): half the gap of the slow charge/discharge branches when the model has
    # both (as the simulators do), else the constant m_V.
    cv, dv = ocv.get("charge_V"), ocv.get("discharge_V")
    if cv and dv:
        if len(cv) != npt or len(dv) != npt:
            raise ValueError("ocv.charge_V/discharge_V: one value per ocv.soc")
        m = f.m_tab = floats(npt)
        for k in range(npt):
            m[k] = 0.5 * (float(cv[k]) - float(dv[k]))
    else:
        f.m_tab = table([f.m_V] * npt)
    f.m0_V = _num(hy, "m0_V", 0.0)
    f.gamma = _num(hy, "gamma", 0.0)


def _num(d, key, default):
    """d[key] as a float: default when it is absent or null."""
    v = d.get(key, default)
    if v is None:
        return float(default)
    return float(v)


def table(values):
    """A model table as an array of the port's floats (8 or 4 bytes a value, against a
    list's slot plus a float object per value), sized once. An array is kept as it is:
    the only arrays here are read_model's, already of FLOAT (MicroPython's arrays have
    no typecode attribute to check)."""
    if isinstance(values, array):
        return values
    out = floats(len(values))
    for k in range(len(values)):
        out[k] = float(values[k])
    return out


def _grid_table(value, npt, name):
    """A model parameter that is a number or a table on the OCV grid, as a table: one
    value for a number (read as a constant), so a model without SoC tables keeps its
    heap."""
    if isinstance(value, (int, float)):
        return table([value])
    if len(value) != npt:
        raise ValueError(name + ": table needs one value per ocv.soc")
    return table(value)


def parameters(f, model):
    """The filter's parameters from the model, for f (the Ekf being built, its circuit
    read): (sigma_v, sigma_i, gate, i_rest, bias, cap, ih, ib, ic, n, q, floor, p0, rs)."""
    est = model.get("estimator") or {}
    sigma_v = _num(est, "sigma_v_V", DEFAULTS["sigma_v_V"])
    sigma_i = _num(est, "sigma_i_A", DEFAULTS["sigma_i_A"])
    gate = _num(est, "gate", DEFAULTS["gate"])
    bias = bool(est.get("bias", False))
    cap = bool(est.get("capacity", False))
    # Below this |i| the cell counts as resting for the instantaneous hysteresis sign:
    # measured noise around zero must not flip s every tick.
    i_rest = 3.0 * sigma_i
    ih = 1 + f.nrc
    ib = ih + 1 if bias else -1
    ic = ih + 1 + (1 if bias else 0) if cap else -1
    n = ih + 1 + (1 if bias else 0) + (1 if cap else 0)
    v = (_zeros(n), _zeros(n), _zeros(n))  # q, floor, p0
    _prior(v, 0, est, "q_soc", FLOOR_SOC, "p0_soc")
    for j in range(f.nrc):
        _prior(v, 1 + j, est, "q_rc_V2", FLOOR_RC_V2, "p0_rc_V2")
    _prior(v, ih, est, "q_h", FLOOR_H, "p0_h")
    if bias:
        _prior(v, ib, est, "q_bias_A2", FLOOR_BIAS_A2, "p0_bias_A2")
    if cap:
        _prior(v, ic, est, "q_cap", FLOOR_CAP, "p0_cap")
    rs = None
    if est.get("resistance", False):
        if f.nrc == 0:
            raise ValueError("estimator.resistance: needs an rc pair (rc[0] is R_ct)")
        from resistance import Resistance
        rs = Resistance(f.rc_tau_s[0], _num(est, "q_ohm", DEFAULTS["q_ohm"]),
                        _num(est, "q_res", DEFAULTS["q_res"]),
                        _num(est, "p0_ohm", DEFAULTS["p0_ohm"]),
                        _num(est, "p0_res", DEFAULTS["p0_res"]), sigma_v,
                        f.q_As / 3600.0)
    return (sigma_v, sigma_i, gate, i_rest, bias, cap, ih, ib, ic, n) + v + (rs,)


def _prior(v, r, est, q_key, floor, p0_key):
    """State r's process variance per second, floor and prior into v = (q, floor, p0)."""
    v[0][r] = _num(est, q_key, DEFAULTS[q_key])
    v[1][r] = floor
    v[2][r] = _num(est, p0_key, DEFAULTS[p0_key])


def set_slow(f, cap_nAh, cap_std_nAh, r_mohm, r_std_mohm):
    """Put back into the filter f what a run had learned (the controller's RECOVER, from
    the journal): capacity (nAh) and its std, charge-transfer resistance (mohm) and its
    std, as published; a value < 0 (a state that was off) leaves that state as it is.
    The cross-covariances of a restored state start at 0."""
    ic = f.ic
    if ic >= 0 and cap_nAh >= 0:
        q_nAh = f.q_As * (1e9 / 3600.0)
        _restore(f, ic, cap_nAh / q_nAh, cap_std_nAh / q_nAh)
    rs = f.rs
    if rs is not None and r_mohm >= 0:
        f._rc_at(f.x[0] + f._pend)
        r1_mohm = f._rrc[0] * 1e3
        rs.v[R_CT] = r_mohm / r1_mohm
        rs.v[PRR] = (r_std_mohm / r1_mohm) ** 2 if r_std_mohm >= 0 else rs.p0_res
        rs.v[PSR] = 0.0
    f._condition()
    f._publish()


def _restore(f, r, value, std):
    """State r of the filter f set to value with variance std**2 (std < 0: keep its prior
    p0), uncorrelated with the others."""
    n, P = f.n, f.P
    f.x[r] = value
    for k in range(n):
        P[r * n + k] = P[k * n + r] = 0.0
    P[r * n + r] = std * std if std >= 0 else f.p0[r]
