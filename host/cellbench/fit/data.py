"""A log prepared for fitting: time, voltage, current, cumulative charge, steps and sweeps.

Units: s, V, A (current > 0 charges the cell), Ah. Sample ``k``'s current is taken to
flow from ``t[k]`` to ``t[k+1]`` (as :func:`cellbench.ecm.simulate` assumes), so the
charge passed up to ``t[k]`` is ``q_Ah[k] = sum(i[m] * dt[m] for m < k) / 3600``, except
where an imported log carries the tester's own charge counter (:func:`charge_Ah`).

A *step* is a run of samples at one setpoint (split on the log's ``Step Count`` column
when it has one, else on current jumps); a *sweep* is a run of steps whose non-rest
steps all move charge the same way (a CC discharge, or a GITT/pulse discharge with its
rests).
"""

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ..bdflog import read_log, read_sidecar
from ..errors import InputError

TIME, VOLT, CURR, STEP = "Test Time / s", "Voltage / V", "Current / A", "Step Count / 1"
STEP_TYPE = "Step Type"
REST_TYPES = ("REST", "OCV", "PAUSE")
SECONDS_PER_HOUR = 3600.0


@dataclass
class Step:
    """Samples ``start`` .. ``stop - 1`` of a log; ``sign`` +1 charge, -1 discharge, 0 rest."""

    start: int
    stop: int
    sign: int
    mean_A: float


@dataclass
class Sweep:
    """Consecutive steps (``steps`` indexes into Log.steps) moving charge one way (``sign``)."""

    sign: int
    steps: list
    start: int          # first sample
    stop: int           # one past the last sample of the last active step
    charge_Ah: float    # |charge| passed
    # charge (Ah) between the window limit and the sweep's start / end, beyond the low-rate
    # cut-offs (fit.capacity.beyond_cutoff_Ah); SoC runs over the limits' full window
    beyond_Ah: tuple = (0.0, 0.0)


@dataclass
class Log:
    """One log's arrays plus its segmentation (see the module docstring)."""

    path: Path
    t_s: np.ndarray
    v_V: np.ndarray
    i_A: np.ndarray
    q_Ah: np.ndarray
    rest_tol_A: float
    steps: list = field(default_factory=list)
    sweeps: list = field(default_factory=list)
    sidecar: dict = field(default_factory=dict)
    offset_A: float = 0.0     # current-sensor offset measured during rests and taken out
    counter_Ah: np.ndarray = None   # the tester's own net charge counter (offset taken out), or None

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def run_A(self) -> np.ndarray:
        """Per sample, the current (A) that ran over the interval after it, as the log's
        charge counts it (:func:`run_current_A`): what SoC, the RC pairs and the hysteresis
        follow; R0 sees the record's own ``i_A``. Computed once, on first use (every RC
        column of the fit reads it), after :func:`load` has taken the sensor offset out."""
        return run_current_A(self.t_s, self.i_A, self.counter_Ah)


def load(path) -> Log:
    """Read a BDF log (CSV/Parquet, any header style) and segment it; InputError if unusable."""
    path = Path(path)
    cols = read_log(path)
    t, v, i = (np.asarray(cols[name], dtype=float) for name in (TIME, VOLT, CURR))
    keep = np.isfinite(t) & np.isfinite(v) & np.isfinite(i)
    t, v, i = t[keep], v[keep], i[keep]
    if t.size < 10:
        raise InputError(f"log: {path.name} has {t.size} complete rows; a fit needs a real test")
    if np.any(np.diff(t) < 0):
        raise InputError(f"log: {path.name}: '{TIME}' goes backwards")
    sidecar = _sidecar(path)
    counter = tester_counter_Ah(cols, sidecar)
    counter = None if counter is None else counter[keep]
    labels = cols.get(STEP)
    labels = None if labels is None else np.asarray(labels, dtype=float)[keep]
    log = Log(path, t, v, i, charge_Ah(t, i, counter), _rest_tolerance(i), sidecar=sidecar, counter_Ah=counter)
    log.steps = _steps(log, labels)
    types = cols.get(STEP_TYPE)
    rested = None if types is None else np.char.upper(np.asarray(types, dtype=str)[keep])
    offset = current_offset_A(log, None if rested is None else np.isin(rested, REST_TYPES))
    if offset:
        # The current sensor reads this during rests, when the cell carries none: it is
        # in every sample, and left in it would count as 4 % of a C/20 sweep's charge.
        log.i_A = i - offset
        # (a tester's counter counted the same offset: taken out of it too)
        if counter is not None:
            log.counter_Ah = counter - offset * t / SECONDS_PER_HOUR
        log.q_Ah = charge_Ah(t, log.i_A, log.counter_Ah)
        log.offset_A = offset
        log.rest_tol_A = _rest_tolerance(log.i_A)
        log.steps = _steps(log, labels)
    log.sweeps = _sweeps(log)
    return log


CHARGE_COLUMNS = ("Charging Capacity / Ah", "Discharging Capacity / Ah")
# A counter step this far (as a share of the interval's larger held charge) outside what
# the two records' currents bracket is not taken: the counter's printed resolution, not a
# counter that disagrees with the current (a reset, a wrong unit: the held count is kept).
COUNTER_SLACK = 0.01


def tester_counter_Ah(cols: dict, sidecar: dict):
    """The net charge (Ah, charge > 0) the tester's own counters say passed by each record
    (Charging less Discharging Capacity, which the importer made cumulative), or None when
    the log is not an import of a tester's counters (the board's logs, an import whose
    counters the importer integrated from the current)."""
    if sidecar.get("capacity_from") != "tester counters" or any(c not in cols for c in CHARGE_COLUMNS):
        return None
    chg, dch = (np.asarray(cols[c], dtype=float) for c in CHARGE_COLUMNS)
    return chg - dch


def charge_Ah(t_s: np.ndarray, i_A: np.ndarray, counter_Ah=None) -> np.ndarray:
    """Cumulative charge (Ah) passed by each sample (0 at the first): the running sum of
    :func:`interval_charge_Ah`."""
    return np.concatenate(([0.0], np.cumsum(interval_charge_Ah(t_s, i_A, counter_Ah))))


def interval_charge_Ah(t_s: np.ndarray, i_A: np.ndarray, counter_Ah=None) -> np.ndarray:
    """Charge (Ah, charge > 0) passed from each sample to the next (n - 1 values): sample
    k's current held to t[k+1] (the bench's logs, sampled at the tick, and a tester's
    records without a counter).

    A tester's counter integrates the current it measured between its records, which a
    record only samples: over the ~60 s between a Novonix's records a CV current decays,
    and holding each record's value counts 3 % more than the tester did (trapezoids: 0.4 %
    more; BioLogic .mpr's current is the interval's mean instead, held back from the record).
    So where ``counter_Ah`` (:func:`tester_counter_Ah`) is given, an interval's charge is the
    counter's step whenever that lies within what the two records' currents bracket (with
    COUNTER_SLACK): the current ran between them, or jumped between them at a step change
    the counter timed (BattMo: a step that ends at a record, then a rest). Elsewhere (a
    counter that is missing, reset or disagrees) the held count. The fit's charge, the
    open-loop replay (cellbench.ecm.simulate) and the filter over an imported log
    (cellbench.estimate.tester_edges) all count with this one function.
    """
    t_s, i_A = np.asarray(t_s, dtype=float), np.asarray(i_A, dtype=float)
    dt = np.diff(t_s)
    held = i_A[:-1] * dt / SECONDS_PER_HOUR
    if counter_Ah is None:
        return held
    after = i_A[1:] * dt / SECONDS_PER_HOUR
    with np.errstate(invalid="ignore"):   # a blank counter (NaN) keeps the held count
        counted = np.diff(np.asarray(counter_Ah, dtype=float))
        slack = COUNTER_SLACK * np.maximum(np.abs(held), np.abs(after))
        inside = (counted >= np.minimum(held, after) - slack) & (counted <= np.maximum(held, after) + slack)
    return np.where(np.isfinite(counted) & inside, counted, held)


def interval_current_A(t_s: np.ndarray, i_A: np.ndarray, counter_Ah) -> np.ndarray:
    """Mean current (A) from each sample to the next (n - 1 values): the interval's charge
    (:func:`interval_charge_Ah`) over its duration; a zero-length interval (a repeated
    time) keeps the record's current."""
    t_s, i_A = np.asarray(t_s, dtype=float), np.asarray(i_A, dtype=float)
    dt = np.diff(t_s)
    out = i_A[:-1].copy()
    np.divide(interval_charge_Ah(t_s, i_A, counter_Ah) * SECONDS_PER_HOUR, dt, out=out, where=dt > 0)
    return out


def run_current_A(t_s: np.ndarray, i_A: np.ndarray, counter_Ah=None) -> np.ndarray:
    """Per sample, the mean current (A) over the interval after it (:func:`interval_current_A`),
    the last sample keeping its record's current; without a counter, ``i_A`` itself (each
    record held to the next). The fit and the open-loop replay (cellbench.ecm.simulate)
    drive the model's states with this one series."""
    i_A = np.asarray(i_A, dtype=float)
    if counter_Ah is None:
        return i_A
    return np.append(interval_current_A(t_s, i_A, counter_Ah), i_A[-1])


QUIET_SHARE = 0.01        # a step at under 1 % of the log's largest current ...
MIN_QUIET_S = 60.0        # ... held this long is a rest, whatever the sensor reads


def current_offset_A(log: "Log", labelled_rest=None) -> float:
    """The current the sensor reads while the cell rests (A): the duration-weighted median
    over the rest steps (those the log's Step Type labels REST when it has the column,
    else the steady steps far below every test current); 0 when there are none or they
    read exactly 0 (a tester that logs rests as 0)."""
    top = float(np.max(np.abs(log.i_A)))
    means, weights = [], []
    for step in log.steps:
        seg = log.i_A[step.start:step.stop]
        duration = log.t_s[step.stop - 1] - log.t_s[step.start]
        quiet = (np.all(labelled_rest[step.start:step.stop]) if labelled_rest is not None
                 else np.all(np.abs(seg) <= QUIET_SHARE * top))
        if duration >= MIN_QUIET_S and quiet:
            means.append(float(np.mean(seg)))
            weights.append(duration)
    if not means:
        return 0.0
    order = np.argsort(means)
    cum = np.cumsum(np.asarray(weights)[order])
    return float(np.asarray(means)[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _sidecar(path: Path) -> dict:
    try:
        return read_sidecar(path)
    except InputError:
        return {}   # the sidecar only supplies names and mass; the log itself is fine


def _noise_A(i: np.ndarray) -> float:
    """Robust standard deviation of the current's sample-to-sample noise (MAD of diffs)."""
    d = np.abs(np.diff(i))
    return float(1.4826 * np.median(d) / np.sqrt(2.0)) if d.size else 0.0


def _rest_tolerance(i: np.ndarray) -> float:
    """|i| at or below this is a rest: above the noise, far below any test current."""
    return max(6.0 * _noise_A(i), 2e-3 * float(np.max(np.abs(i))), 1e-12)


def _steps(log: Log, labels) -> list:
    if labels is not None and np.all(np.isfinite(labels)):
        cuts = np.flatnonzero(np.diff(labels) != 0) + 1
    else:
        jump = max(8.0 * _noise_A(log.i_A), 5e-3 * float(np.max(np.abs(log.i_A))))
        cuts = np.flatnonzero(np.abs(np.diff(log.i_A)) > jump) + 1
    bounds = np.concatenate(([0], cuts, [log.i_A.size]))
    steps = []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        mean = float(np.mean(log.i_A[a:b]))
        sign = 0 if abs(mean) <= log.rest_tol_A else int(np.sign(mean))
        steps.append(Step(a, b, sign, mean))
    return steps


def _sweeps(log: Log) -> list:
    sweeps, current = [], None
    for k, step in enumerate(log.steps):
        if step.sign == 0:
            continue
        if current is not None and current.sign == step.sign:
            current.steps.extend(range(current.steps[-1] + 1, k + 1))
            current.stop = step.stop
        else:
            current = Sweep(step.sign, [k], step.start, step.stop, 0.0)
            sweeps.append(current)
    for sw in sweeps:
        end = min(sw.stop, log.q_Ah.size - 1)
        sw.charge_Ah = abs(float(log.q_Ah[end] - log.q_Ah[sw.start]))
    return sweeps
