"""Whether the filter tracks the capacity: the fit's own logs decide.

The capacity scale state (fit.ESTIMATOR) keeps the +-3 sigma band honest on the PyBaMM
cells (graphite/Li 36 % -> 100 % inside, NMC811 37 % -> 100 %). On a cell whose voltage
the model misreads near its limits it walks instead: on the Arbin half cell (no RC pair,
a 0.2 V gap between its C/10 branches) each C/5 cut-off read as SoC 0.03-0.06 and moved
the scale up, from 1.52 to 1.59 mAh over 20 cycles whose discharges count 1.47-1.51, and
the estimate ran 2-3 % above the counted SoC after every charge.

So the fit runs the filter (cellbench.estimate: what `cellbench estimate` and the board
run) over its own logs with the state and without, from each log's first voltage, against
the SoC the fit counted between its anchors (fit.soc.trace), and turns the state off only
when the filter without it follows that SoC better by both measures: a lower RMS and a
larger share inside its 3 sigma. Nothing here is fitted to the anchors; they only judge.
"""

import copy

import numpy as np

from ..estimate import estimate, read_log_columns

JUDGED_AFTER_S = 3600.0     # the filter starts from the first voltage: judged after an hour


def filter_inputs(logs: list) -> list:
    """Per log (fit.data.Log), the arguments `cellbench estimate` gives the filter for it,
    read once from its file (cellbench.estimate.read_log_columns: a tester's records, step
    numbers and counter as the CLI takes them, not the fit's offset-corrected current), on
    the rows fit.data.load kept (time, current and voltage all finite): the socs' rows."""
    out = []
    for log in logs:
        cols = read_log_columns(log.path)
        t, i, v = (np.asarray(cols[c], dtype=float) for c in ("Test Time / s", "Current / A", "Voltage / V"))
        keep = np.isfinite(t) & np.isfinite(i) & np.isfinite(v)
        extra = {k: cols[k] if isinstance(cols[k], bool) else np.asarray(cols[k])[keep]
                 for k in ("tester_steps", "tester_counter_Ah") if k in cols}
        out.append((t[keep], i[keep], v[keep], extra))
    return out


def follows(model: dict, inputs: list, socs: list) -> tuple:
    """(SoC RMS, share inside 3 sigma) of the filter run with ``model`` over each log's
    ``inputs`` (:func:`filter_inputs`) against ``socs`` (the fit's SoC per sample, NaN where
    it has none), over the samples after JUDGED_AFTER_S; (nan, nan) when none is judged."""
    errors, inside = [], []
    for (t, i, v, extra), z in zip(inputs, socs):
        out = estimate(model, t, i, v, **extra)
        z = np.asarray(z, dtype=float)
        judged = np.isfinite(z) & (t >= t[0] + JUDGED_AFTER_S)
        e = out["soc"][judged] - z[judged]
        errors.append(e)
        inside.append(np.abs(e) <= 3.0 * out["soc_std"][judged])
    e, ok = np.concatenate(errors), np.concatenate(inside)
    if not e.size:
        return np.nan, np.nan
    return float(np.sqrt(np.mean(e ** 2))), float(np.mean(ok))


def keep_capacity(model: dict, logs: list, socs: list) -> tuple:
    """(the estimator block, what was said: a list): ``model``'s, with the capacity state
    off when the filter without it follows the fit's SoC better by both measures
    (:func:`follows`)."""
    est = dict(model["estimator"])
    if not est.get("capacity"):
        return est, []
    without = copy.deepcopy(model)
    without["estimator"]["capacity"] = False
    inputs = filter_inputs(logs)
    rms_on, in_on = follows(model, inputs, socs)
    rms_off, in_off = follows(without, inputs, socs)
    if not (rms_off < rms_on and in_off > in_on):
        return est, []
    est["capacity"] = False
    return est, [f"capacity not tracked: over the fit's own logs the filter follows its SoC better "
                 f"without the capacity state ({100 * rms_off:.2f} % RMS, {100 * in_off:.0f} % inside "
                 f"3 sigma, against {100 * rms_on:.2f} %, {100 * in_on:.0f} %; set estimator.capacity "
                 "true to track anyway)"]
