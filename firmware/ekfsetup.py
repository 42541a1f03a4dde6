"""The SoC filter's set-up: its parameters read from the model (MODEL) and the slow states
a run had learned put back (RECOVER). Plain Python, like ekf.py.

ekf.Ekf imports this module for those calls and drops it after them (ekf._setup), so its
bytecode holds no heap while a run goes on; what runs every tick is ekf.py's and
kalman.py's. The parameters it sets are the ones Ekf documents (noise, state layout,
per-state process variance, floor and prior, the resistance estimator); the model's
"estimator" members that are absent take DEFAULTS (SI units, variances per second of
elapsed time).
"""

import gc
import sys

from cellmodel import MICROPYTHON, read_model
from circuit import _num, _zeros
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
    whole document: only what read_model keeps. JsonError for text that is not JSON."""
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
