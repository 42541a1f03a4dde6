"""The host twin of the board's SoC filter (firmware/ekf.py), over a whole log.

Same model, same equations, same order of operations: the board runs the filter in
MicroPython once per tick; this module runs it over every sample of a Battery Data Format
log at more than a million samples per second. A per-sample Python loop cannot reach
that, so the loop is cellbench.estimate_kernel, the firmware filter compiled by numba,
with the firmware filter's own parameters and constants. One source, two precisions:
float64 (the reference, what the unix-port simulator computes) and float32 (what the
RP2040's 32-bit floats compute), so the board's float32 behaviour is tested on the host.

When the compiled kernel cannot run (numba missing or failing, or CELLBENCH_NO_JIT=1 in
the environment) the float64 mode says so in one line on stderr and runs firmware/ekf.py
itself, one sample at a time (the same numbers, over 100x slower); the float32 mode then
raises InputError.

Units: t_s seconds, i_A amperes (> 0 charges the cell), v_V volts; SoC 1 = full.
"""

import os
import sys

import numpy as np

from . import fw
from .errors import InputError
from .model import load_model

_ekf = fw.module("ekf")
_kalman = fw.module("kalman")
SOC_MIN = _ekf.SOC_MIN
SOC_MAX = _ekf.SOC_MAX
NO_JIT = "CELLBENCH_NO_JIT"  # set (non-empty, not "0") to run the Python filter instead
DTYPES = {"float64": np.float64, "float32": np.float32}
# The slow states' outputs, in estimate_kernel's order (CAP_AH, ...): capacity (Ah), its
# std, charge-transfer resistance (ohm), its std, the ohmic resistance R0 (ohm), its std.
SLOW = ("cap_Ah", "cap_std_Ah", "rct_ohm", "rct_std_ohm", "r0_ohm", "r0_std_ohm")
# A tester log's step change: the filter sees the old current end EDGE_S before the record
# that opens the new step (short against any tester's sampling, long enough to be a
# positive interval in float32 milliseconds).
EDGE_S = 1e-3
_warned = set()


def _kernel():
    """The module cellbench.estimate_kernel, or None when it cannot be used (then a
    one-line warning, once per reason, and never a traceback)."""
    if os.environ.get(NO_JIT, "") not in ("", "0"):
        return _unavailable(f"{NO_JIT} is set")
    try:
        from . import estimate_kernel
    except Exception as exc:  # numba missing or broken
        return _unavailable(_reason(exc))
    return estimate_kernel


def _compiles(kernel, args) -> bool:
    """Whether kernel.run compiles for the types of ``args`` (numba's on-disk cache
    serves it after the first time); False after a one-line warning."""
    try:
        import numba
        kernel.run.compile(tuple(numba.typeof(a) for a in args))
    except Exception as exc:  # numba's errors, a broken LLVM: all the same here
        _unavailable(_reason(exc))
        return False
    return True


def _reason(exc):
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:120]}"


def _unavailable(reason):
    if reason not in _warned:
        _warned.add(reason)
        print(f"cellbench: warning: compiled estimator unavailable ({reason}); "
              "running the Python filter (slow)", file=sys.stderr)
    return None


def filter_for(model) -> "object":
    """The firmware filter object (firmware/ekf.py Ekf) for a model dict or path.

    Bad model fields raise InputError naming the field.
    """
    model = load_model(model)
    try:
        return _ekf.Ekf(model)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"model: {exc}") from None


def _check_inputs(t_s, i_A, v_V):
    arrays = []
    for name, a in (("Test Time / s", t_s), ("Current / A", i_A), ("Voltage / V", v_V)):
        a = np.ascontiguousarray(a, dtype=np.float64)
        if a.ndim != 1:
            raise InputError(f"{name}: must be one-dimensional")
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name}: contains NaN or infinite values")
        arrays.append(a)
    if not len(arrays[0]) == len(arrays[1]) == len(arrays[2]):
        raise InputError("log: time, current and voltage differ in length")
    if len(arrays[0]) == 0:
        raise InputError("log: no samples")
    return arrays


def tester_edges(t_s, i_A, v_V, steps=None, counter_Ah=None):
    """A tester log's samples in the board's convention, plus the mask of the real ones.

    The board records current as held over the interval BEFORE each sample (what the
    filter's step() integrates). A tester writes a record at each step change and holds a
    record's current until the next one, as the tester's own charge counter shows (the
    BioLogic log of tests/data/realdata: its '(Q-Qo)/mA.h' grows by 1.4 uAh, not the 16 mAh
    of 23 s at 2.5 A, up to the pulse's first record): the record opening a step ends an
    interval, often tens of seconds long, that carried the previous step's current. Read
    in the board's convention, a 1 s pulse's first record would count as the whole rest
    before it. So before each
    record whose step number (``steps``; without it: whose current, by more than 1 % of the
    log's largest) changed over an interval longer than 2 EDGE_S, a virtual sample EDGE_S
    earlier carries the previous record's current and voltage (the voltage the tester last
    saw in that step). Within a step the two conventions agree.

    ``counter_Ah`` (the tester's own net charge counter per record,
    cellbench.fit.data.tester_counter_Ah): each interval then carries the charge the fit
    counts (cellbench.fit.data.interval_charge_Ah: the counter's step where the two
    records' currents bracket it, else the held current). Within a step the interval's
    current is that charge over its duration (a CV tail's decay between records); at a
    step change the previous current ends when the counter says it did (BattMo: at the
    record that ended the step, not 500 s into the rest after it), kept EDGE_S inside the
    interval. Returns (t_s, i_A, v_V, real).
    """
    if steps is not None:
        changed = np.asarray(steps)[1:] != np.asarray(steps)[:-1]
    else:
        changed = np.abs(np.diff(i_A)) > 0.01 * float(np.max(np.abs(i_A), initial=0.0))
    edges = np.flatnonzero(changed & (np.diff(t_s) > 2.0 * EDGE_S)) + 1
    at = t_s[edges] - EDGE_S
    if counter_Ah is not None:
        i_A, at = _counted(t_s, i_A, counter_Ah, edges)
    virtual = edges + np.arange(edges.size)  # their positions in the longer arrays
    real = np.ones(t_s.size + edges.size, dtype=bool)
    real[virtual] = False
    out = []
    for a, before in ((t_s, at), (i_A, i_A[edges - 1]), (v_V, v_V[edges - 1])):
        b = np.empty(real.size)
        b[real], b[virtual] = a, before
        out.append(b)
    return (*out, real)


def _counted(t_s, i_A, counter_Ah, edges):
    """(the board-convention current per record, the virtual samples' times) with each
    interval's charge as cellbench.fit.data.interval_charge_Ah counts it (see
    tester_edges): within a step, record k carries the interval before it at charge /
    duration; at a step change ``edges`` (k), the previous record's current i[k-1] runs
    to the time the charge says and i[k] after it."""
    from .fit.data import interval_current_A
    counter_Ah = np.asarray(counter_Ah, dtype=float)
    if counter_Ah.shape != t_s.shape:
        raise InputError("Charging/Discharging Capacity: differ in length from the log")
    board = i_A.copy()
    board[1:] = interval_current_A(t_s, i_A, counter_Ah)
    k = edges
    before, after, span = i_A[k - 1], i_A[k], np.diff(t_s)[k - 1]
    jump = before - after
    # the interval's charge, mean * span = before*a + after*(span - a): the previous
    # current ran for a seconds
    with np.errstate(divide="ignore", invalid="ignore"):
        ran_s = np.where(jump != 0, (board[k] - after) * span / jump, span)
    board[k] = after
    return board, t_s[k - 1] + np.clip(ran_s, EDGE_S, span - EDGE_S)


def estimate(model, t_s, i_A, v_V, soc0=None, dtype="float64", full=False, tester_steps=None,
             tester_counter_Ah=None):
    """Run the SoC filter over a log. Returns a dict of numpy arrays (one per sample):

    ``soc`` (1 = full), ``soc_std`` (standard deviation of SoC), ``v_model`` (V, the
    one-step-ahead model voltage); when the model's estimator tracks them (SLOW keys),
    ``cap_Ah``/``cap_std_Ah`` (the capacity now and its std) and ``rct_ohm``/``rct_std_ohm``
    (the charge-transfer resistance rc[0] at the present SoC and its std): what the board
    publishes as cap_nAh, ..., in floats; ``r0_ohm``/``r0_std_ohm`` (R0 at the present
    SoC times the resistance estimator's scale on it, and its std; the board uses it, does
    not publish it). With ``full=True`` also ``x`` (samples x states)
    and ``P`` (samples x states x states). ``soc0`` None initialises from the OCV at the first
    sample (assumed rested, h = 0); a number starts there with variance p0_soc.
    Samples with a non-increasing time are repeats: they leave the estimate unchanged.
    ``dtype="float32"`` runs every operation in 32-bit floats, as the RP2040 does.
    ``tester_steps``: a tester's log (imported), its step numbers per sample (True: a
    tester log without them): the current of a record holds until the next (see
    tester_edges); None: the board's convention. ``tester_counter_Ah`` (with
    ``tester_steps``): that log's own net charge counter per record, which then counts
    each interval's charge as the fit does (tester_edges).
    """
    t_s, i_A, v_V = _check_inputs(t_s, i_A, v_V)
    if tester_steps is not None:
        steps = None if tester_steps is True else np.asarray(tester_steps)
        if steps is not None and steps.shape != t_s.shape:
            raise InputError("Step Count / 1: differs in length from the log")
        t_s, i_A, v_V, real = tester_edges(t_s, i_A, v_V, steps, tester_counter_Ah)
        out = estimate(model, t_s, i_A, v_V, soc0, dtype, full)
        return {key: a[real] for key, a in out.items()}
    ekf = filter_for(model)
    if soc0 is not None and not (SOC_MIN <= float(soc0) <= SOC_MAX):
        raise InputError(f"soc0: must be within [{SOC_MIN}, {SOC_MAX}]")
    if dtype not in DTYPES:
        raise InputError("dtype: must be float64 or float32")
    out, x, P = _outputs(len(t_s), ekf.n, full)
    kernel = _kernel()
    if kernel is not None:
        slow = np.empty((len(t_s), len(SLOW)))
        args = (*kernel.pack(ekf, _ekf, soc0, DTYPES[dtype]), t_s, i_A, v_V, out["soc"],
                out["soc_std"], out["v_model"], slow, x, P, full)
        if _compiles(kernel, args):
            kernel.run(*args)
            if full:
                out["x"], out["P"] = x, P
            _add_slow(ekf, out, slow)
            return out
    if dtype == "float32":
        raise InputError("dtype: float32 needs the compiled estimator (numba)")
    return _estimate_python(ekf, t_s, i_A, v_V, soc0, full)


def _add_slow(ekf, out, slow):
    """The slow states' columns of ``slow`` (samples x SLOW) into out, those the filter has."""
    for k, key in enumerate(SLOW):
        if (ekf.cap if key.startswith("cap") else ekf.rs is not None):
            out[key] = slow[:, k]


def _outputs(ns, n, full):
    """Empty result arrays for ns samples of an n-state filter: (out dict, x, P); x and P
    hold no sample unless ``full``."""
    out = {k: np.empty(ns) for k in ("soc", "soc_std", "v_model")}
    rows = ns if full else 0
    return out, np.empty((rows, n)), np.empty((rows, n, n))


def _estimate_python(ekf, t_s, i_A, v_V, soc0, full):
    """Fallback without the compiled kernel: the firmware filter itself, one sample at a time."""
    ns, n = len(t_s), ekf.n
    out, x, P = _outputs(ns, n, full)
    slow = np.full((ns, len(SLOW)), np.nan)
    if soc0 is not None:
        ekf.reset(soc=soc0)
    else:
        ekf.reset(v_uV=v_V[0] * 1e6, i_nA=i_A[0] * 1e9)
    for s in range(ns):
        dt_ms = (t_s[s] - t_s[s - 1]) * 1000.0 if s else 0.0
        ekf.step(i_A[s] * 1e9, v_V[s] * 1e6, dt_ms)  # a repeat leaves v_model as it was
        out["v_model"][s] = ekf.v_model
        out["soc"][s] = ekf.soc
        out["soc_std"][s] = np.sqrt(ekf.P[0])
        slow[s] = _slow_python(ekf)
        if full:
            x[s] = ekf.x
            x[s, 0] = ekf.soc
            P[s] = np.reshape(ekf.P, (n, n))
    if full:
        out["x"], out["P"] = x, P
    _add_slow(ekf, out, slow)
    return out


def _slow_python(ekf):
    """The SLOW values of the firmware filter after a step (NaN: state off)."""
    cap = cap_std = r = r_std = r0 = r0_std = np.nan
    if ekf.cap:
        q_Ah = ekf.q_As / 3600.0
        cap, cap_std = q_Ah * ekf.x[ekf.ic], q_Ah * np.sqrt(ekf.P[ekf.ic * (ekf.n + 1)])
    if ekf.rs is not None:  # _publish left the RC resistances at the present SoC
        v, k = ekf.rs.v, _kalman   # the slots of Resistance.v, as the filter names them
        r, r_std = v[k.R_CT] * ekf._rrc[0], np.sqrt(v[k.PRR]) * ekf._rrc[0]
        grid = ekf.z0 + ekf.dz * np.arange(len(ekf.r0_ohm))  # R0 held beyond the table
        r0_z = float(np.interp(ekf.soc, grid, list(ekf.r0_ohm)))
        r0, r0_std = v[k.R_OHM] * r0_z, np.sqrt(v[k.PSS]) * r0_z
    return cap, cap_std, r, r_std, r0, r0_std


def read_log_columns(path) -> dict:
    """Time, current and voltage of a log (any format cellbench.bdflog.read_log reads);
    with "tester_steps" (see estimate) when the log was imported from a tester (its
    sidecar says so): its step numbers, or True when it has none; and with
    "tester_counter_Ah" when the import kept the tester's own charge counters
    (cellbench.fit.data.tester_counter_Ah)."""
    from .bdflog import read_log, read_sidecar
    cols = read_log(path)
    out = {name: cols[name] for name in ("Test Time / s", "Current / A", "Voltage / V")}
    sidecar = read_sidecar(path)
    if "imported_from" in sidecar:
        from .fit.data import tester_counter_Ah
        out["tester_steps"] = cols.get("Step Count / 1", True)
        counter = tester_counter_Ah(cols, sidecar)
        if counter is not None:
            out["tester_counter_Ah"] = counter
    return out
