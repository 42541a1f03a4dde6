"""A reader's :class:`~.raw.Raw` table -> the log columns of docs/design.md.

What the tester recorded wins over what can be derived:

* cycle number: the tester's own (renumbered from 1 if it counts from 0) unless it
  never advances while the steps alternate, else the rule of docs/design.md (+1 when a step of the first active sign follows the other sign);
* step type: the tester's label, else the sign of the tester step's mean current (a
  rest's noise does not make it a charge or discharge); impedance records stay ``EIS``;
* capacities and energies: the tester's counters, made cumulative from the test start
  as BDF defines them whatever the tester reset them on; else the trapezoid integral of
  current and power over the non-impedance records;
* current sign: a record labelled charge or discharge gets that sign (files that
  export magnitudes or count discharge positive come out charge > 0);
* test time never goes back (step-relative clocks are made cumulative).
"""

import numpy as np

SECONDS_PER_HOUR = 3600.0
# Columns written, in docs/design.md's order (a tester's faults are not ours: no Fault Flags).
COLUMNS = ["Test Time / s", "Voltage / V", "Current / A", "Unix Time / s", "Cycle Count / 1",
           "Step Count / 1", "Step Index / 1", "Step Type", "Charging Capacity / Ah",
           "Discharging Capacity / Ah", "Step Capacity / Ah", "Charging Energy / Wh",
           "Discharging Energy / Wh"]
REST_FRACTION = 1e-3        # a step whose mean |I| is below this share of the largest is a rest
# ... or that moved less than this share of the charge the busiest step moved: 36 ms at the
# test's current against a one-hour step (Arbin logs a rest's first 25 ms record at the
# previous step's current); a 1 s pulse at that current moves 3e-4: still a step.
STEP_CHARGE_FRACTION = 1e-5


def test_time_s(t_s, unix_s=None):
    """A test clock that never goes back, at the tester clock's full resolution.

    A clock that never goes back is kept. A step-relative clock (it restarts each step)
    is laid end to end: each step starts where the wall clock says it started (its
    first record's wall time minus its step time; wall clocks often tick in whole
    seconds), never before the previous step ended, and within the step the tester's own
    step time is used, so sub-second records keep their spacing. Without a wall clock a
    step starts one typical record interval after the previous one ended.
    """
    t = np.asarray(t_s, dtype=float)
    if np.all(np.diff(t) >= 0):
        return t - t[0] if t[0] < 0 else t
    starts = np.flatnonzero(np.concatenate(([True], np.diff(t) < 0)))
    ends = np.concatenate((starts[1:], [t.size])) - 1
    dt = np.diff(t)
    typical = float(np.median(dt[dt > 0])) if np.any(dt > 0) else 1.0
    wall = unix_s is not None and np.all(np.isfinite(unix_s))
    offsets = np.empty(starts.size)
    previous_end = -np.inf
    for k, (a, b) in enumerate(zip(starts, ends)):
        guess = (unix_s[a] - unix_s[0] - (t[a] - t[0]) if wall else previous_end + typical) if k else -t[0]
        offset = max(guess, previous_end - t[a] + (0.0 if wall else typical)) if k else guess
        offsets[k] = offset
        previous_end = offset + t[b]
    lengths = ends - starts + 1
    out = t + np.repeat(offsets, lengths)
    return np.maximum.accumulate(out)


def unix_time_s(unix_s, t_s):
    """The tester's wall clock, or, where it is coarser than the test clock (whole seconds
    against 0.1 s records: repeated stamps), its start plus the test time, so Unix Time
    keeps the test clock's resolution. None without a wall clock."""
    if unix_s is None or not np.all(np.isfinite(unix_s)):
        return unix_s
    coarse = np.any((np.diff(unix_s) <= 0) & (np.diff(t_s) > 0))
    return unix_s[0] + (t_s - t_s[0]) if coarse else unix_s


def _runs(keys):
    """(start index, length) of each run of equal consecutive values."""
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    return starts, np.diff(np.concatenate((starts, [keys.size])))


def step_types(step_type, step, i_A, through_Ah=None):
    """BDF Step Type per record: the tester's label where it gave one, else from the
    sign of its step's mean current (``through_Ah``: see :func:`_from_current`)."""
    derived = _from_current(step, i_A, through_Ah)
    if step_type is None:
        return derived
    given = np.asarray(step_type, dtype=str)
    return np.where(given == "", derived, given)


def _from_current(step, i_A, through_Ah=None):
    """CC_CHG/CC_DCH by the sign of each tester step's mean current; REST where that
    mean is below REST_FRACTION of the largest current, or where the step moved less
    than STEP_CHARGE_FRACTION of the charge the busiest step moved (``through_Ah``:
    cumulative charge in either direction per record, from the tester's counters; a
    16 ms resistance probe between two rests moves nothing and starts no cycle)."""
    keys = step if step is not None else np.arange(i_A.size)
    starts, lengths = _runs(np.nan_to_num(np.asarray(keys, dtype=float), nan=-1.0))
    means = np.add.reduceat(i_A, starts) / lengths
    rest = np.abs(means) <= REST_FRACTION * max(float(np.max(np.abs(i_A))), 1e-30)
    if through_Ah is not None:
        ends = np.concatenate((starts[1:], [i_A.size])) - 1
        moved = through_Ah[ends] - np.concatenate(([0.0], through_Ah[ends[:-1]]))
        rest |= moved <= STEP_CHARGE_FRACTION * max(float(np.max(moved)), 0.0)
    kinds = np.where(rest, "REST", np.where(means > 0, "CC_CHG", "CC_DCH"))
    return np.repeat(kinds, lengths)


def step_counts(step, types):
    """Step Count (1, 2, ...): a new step wherever the tester's step number or the type changes."""
    change = np.zeros(types.size, dtype=bool)
    change[1:] = types[1:] != types[:-1]
    if step is not None:
        s = np.nan_to_num(np.asarray(step, dtype=float), nan=-1.0)
        change[1:] |= s[1:] != s[:-1]
    return np.cumsum(change) + 1


def step_index(counts):
    """Point number within each step, from 1."""
    starts, lengths = _runs(counts)
    return np.arange(counts.size) - np.repeat(starts, lengths) + 1


def _sign(types):
    """+1 for charge step types, -1 for discharge, 0 otherwise (text handled once per
    distinct type: logs hold a handful of types over millions of records)."""
    uniq, inverse = np.unique(np.asarray(types, dtype=str), return_inverse=True)
    t = np.char.upper(uniq)
    signs = np.where(np.char.find(t, "DCH") >= 0, -1, np.where(np.char.find(t, "CHG") >= 0, 1, 0))
    return signs[inverse.reshape(-1)]


def cycle_counts(types):
    """Cycle Count as docs/design.md defines it: +1 when a step of the first active sign
    starts after a step of the other sign ran."""
    sign = _sign(types)
    active = sign[sign != 0]
    if active.size == 0:
        return np.ones(sign.size, dtype=np.int64)
    first = active[0]
    # Index of each active record among the active ones; a cycle starts at an active
    # record of the first sign whose previous active record had the other sign.
    idx = np.flatnonzero(sign)
    s = sign[idx]
    starts_at = idx[1:][(s[1:] == first) & (s[:-1] == -first)]
    rises = np.zeros(sign.size, dtype=np.int64)
    rises[starts_at] = 1
    return np.cumsum(rises) + 1


def tester_cycles(cycle):
    """The tester's cycle numbers from 1, gaps (NaN) filled from the record before."""
    c = np.asarray(cycle, dtype=float)
    if np.isnan(c).all():
        return None
    ok = np.isfinite(c)
    c = c[np.maximum.accumulate(np.where(ok, np.arange(c.size), 0))]
    c = np.where(np.isfinite(c), c, np.nanmin(c))
    c = c.astype(np.int64)
    return c - c.min() + 1 if c.min() < 1 else c


def accumulated(counter):
    """A tester's capacity/energy counter (magnitudes, reset per step or cycle or never)
    as a BDF counter that accumulates from the test start and never resets."""
    c = np.abs(np.nan_to_num(np.asarray(counter, dtype=float)))
    inc = np.diff(c, prepend=0.0)
    scale = max(float(c.max()), 1e-30)
    reset = inc < -1e-9 * scale
    inc = np.where(reset, c, inc)          # the counter restarted from 0 and reached c
    return np.cumsum(inc) - inc[0]


def _integral(t_s, rate):
    """Trapezoid integral of ``rate`` (per second) over ``t_s``, from 0, per hour."""
    return np.concatenate(([0.0], np.cumsum(0.5 * (rate[1:] + rate[:-1]) * np.diff(t_s)))) / SECONDS_PER_HOUR


def _counter(counter, integral):
    """The tester's counter made cumulative; the integral where the file has none or its
    counter stayed at zero while charge flowed (a column the tester did not fill)."""
    if counter is None:
        return integral
    c = accumulated(counter)
    return integral if c[-1] == 0 and integral[-1] > 0 else c


def _tester_throughput(raw):
    """Charge moved either way since the start per record (Ah) by the tester's own
    counters, None where it has none (or never filled them)."""
    if raw.q_chg_Ah is None or raw.q_dch_Ah is None:
        return None
    through = accumulated(raw.q_chg_Ah) + accumulated(raw.q_dch_Ah)
    return through if through[-1] > 0 else None


def to_bdf(raw):
    """The log columns (docs/design.md order, no Fault Flags) as numpy arrays."""
    t = test_time_s(raw.t_s, raw.unix_s)
    i = np.asarray(raw.i_A, dtype=float)
    v = np.asarray(raw.v_V, dtype=float)
    types = step_types(raw.step_type, raw.step, i, _tester_throughput(raw))
    # A record the tester labels charge or discharge takes its sign from the label: some
    # export magnitudes, some count discharge positive.
    sign = _sign(types)
    i = np.where(sign != 0, sign * np.abs(i), i)
    counts = step_counts(raw.step, types)
    cycles = tester_cycles(raw.cycle) if raw.cycle is not None else None
    derived = cycle_counts(types)
    if cycles is not None and cycles.min() == cycles.max() and derived.max() > 1:
        cycles = None       # a counter the procedure never advanced: the steps say more
    flowing = np.where(types == "EIS", 0.0, 1.0)     # impedance records pass no net charge
    p = v * i * flowing
    q_chg = _counter(raw.q_chg_Ah, _integral(t, np.maximum(i, 0.0) * flowing))
    q_dch = _counter(raw.q_dch_Ah, _integral(t, np.maximum(-i, 0.0) * flowing))
    e_chg = _counter(raw.e_chg_Wh, _integral(t, np.maximum(p, 0.0)))
    e_dch = _counter(raw.e_dch_Wh, _integral(t, np.maximum(-p, 0.0)))
    through = q_chg + q_dch
    starts, lengths = _runs(counts)
    cols = {
        "Test Time / s": t, "Voltage / V": v, "Current / A": i, "Unix Time / s": unix_time_s(raw.unix_s, t),
        "Cycle Count / 1": cycles if cycles is not None else derived,
        "Step Count / 1": counts, "Step Index / 1": step_index(counts), "Step Type": types,
        "Charging Capacity / Ah": q_chg, "Discharging Capacity / Ah": q_dch,
        "Step Capacity / Ah": through - np.repeat(through[starts], lengths),
        "Charging Energy / Wh": e_chg, "Discharging Energy / Wh": e_dch,
    }
    return {name: cols[name] for name in COLUMNS if cols.get(name) is not None}
