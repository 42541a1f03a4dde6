"""One log as the analysis sees it: time, voltage, current, cycle and cumulative sums.

Logs come from this bench or from other testers, so only the Battery Data Format columns
are relied on: ``Test Time / s``, ``Voltage / V`` and ``Current / A`` (current > 0 charges
the cell) are required; ``Cycle Count / 1``, ``Charging Capacity / Ah``,
``Discharging Capacity / Ah`` (cumulative from test start), ``Charging Energy / Wh``,
``Discharging Energy / Wh``, ``SOC / 1`` and ``SOC Std / 1`` are used when present and
derived otherwise (trapezoid integration of current and power; the cycle rule of
docs/design.md). ``Series.sources`` says which was used. The board estimator's capacity
and charge-transfer resistance (bdflog.AGEING_COLUMNS) are read when present.
"""

from dataclasses import dataclass, field

import numpy as np

from ..bdflog import AGEING_COLUMNS
from ..errors import InputError

T, V, I = "Test Time / s", "Voltage / V", "Current / A"
CYCLE, STEP = "Cycle Count / 1", "Step Count / 1"  # STEP: written by synthetic logs
Q_CHG, Q_DCH = "Charging Capacity / Ah", "Discharging Capacity / Ah"
E_CHG, E_DCH = "Charging Energy / Wh", "Discharging Energy / Wh"
SOC, SOC_STD = "SOC / 1", "SOC Std / 1"
(CAP_EST, _), (CAP_EST_STD, _), (R_EST, _), (R_EST_STD, _) = AGEING_COLUMNS

# Current below this fraction of the log's largest current counts as rest: it separates
# real rest from noise without hiding CV tails (which only matter for sums, not signs).
REST_FRACTION = 2e-3
# A cumulative column may step back by this much (Ah or Wh) from rounding and still count
# as monotonic.
MONOTONIC_SLACK = 1e-12


@dataclass
class Series:
    """Per-sample arrays of one log (all the same length n, time non-decreasing).

    t_s: test time (s); v_V: terminal voltage (V); i_A: current (A, > 0 charges);
    sign: -1/0/+1 per sample (0 = rest, |i| <= rest_A); cycle: cycle number (int, >= 1
    for derived cycles);
    q_chg_Ah / q_dch_Ah / e_chg_Wh / e_dch_Wh: cumulative charge and energy into and out
    of the cell since the test start (all >= 0, non-decreasing); soc / soc_std: the
    board estimator's SoC and its standard deviation (fraction) or None, NaN where absent;
    cap_est_Ah / cap_est_std_Ah, r_est_ohm / r_est_std_ohm: its capacity (Ah) and
    charge-transfer resistance (ohm) estimates and their standard deviations, alike.
    """

    t_s: np.ndarray
    v_V: np.ndarray
    i_A: np.ndarray
    sign: np.ndarray
    cycle: np.ndarray
    q_chg_Ah: np.ndarray
    q_dch_Ah: np.ndarray
    e_chg_Wh: np.ndarray
    e_dch_Wh: np.ndarray
    rest_A: float
    soc: np.ndarray | None = None
    soc_std: np.ndarray | None = None
    cap_est_Ah: np.ndarray | None = None
    cap_est_std_Ah: np.ndarray | None = None
    r_est_ohm: np.ndarray | None = None
    r_est_std_ohm: np.ndarray | None = None
    sources: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def __len__(self):
        return len(self.t_s)


def _float_column(log, name):
    try:
        arr = np.asarray(log[name], dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"log.{name}: not numeric") from None
    if arr.ndim != 1:
        raise InputError(f"log.{name}: must be one column")
    return arr


def _required(log):
    for name in (T, V, I):
        if name not in log:
            raise InputError(f"log: missing required column {name!r}")
    cols = [_float_column(log, name) for name in (T, V, I)]
    n = len(cols[0])
    for name in log:
        if len(log[name]) != n:
            raise InputError(f"log.{name}: {len(log[name])} values, expected {n}")
    return cols


def active_sign(i_A, rest_A, step_type=None):
    """-1 (discharge), 0 (rest) or +1 (charge) per sample.

    A logged Step Type wins where it names the direction (REST/OCV/EIS, *_CHG, *_DCH): a rest
    on a noisy channel must not count as a tiny discharge, however short the active steps
    around it (a 10C step on a 2 s tick is one or two samples). Elsewhere |i| > rest_A.
    """
    sign = np.where(i_A > rest_A, 1, np.where(i_A < -rest_A, -1, 0)).astype(np.int8)
    if step_type is None:
        return sign
    kind = np.asarray(step_type).astype(str)
    sign[np.isin(kind, ("REST", "OCV", "EIS"))] = 0      # impedance records move no net charge
    sign[np.char.endswith(kind, "_CHG")] = 1
    sign[np.char.endswith(kind, "_DCH")] = -1
    return sign


def derive_cycles(sign):
    """Cycle number per sample by the rule of docs/design.md.

    The cycle starts at 1 and increments when the current takes the sign of the run's
    first active step after the opposite sign ran; rests change nothing. Works for
    charge-first full cells and discharge-first half cells alike.
    """
    nz = np.flatnonzero(sign)
    cycle = np.ones(len(sign), dtype=np.int64)
    if len(nz) == 0:
        return cycle
    s = sign[nz]
    first = s[0]
    starts = nz[1:][(s[1:] == first) & (s[:-1] == -first)]
    marks = np.zeros(len(sign), dtype=np.int64)
    marks[starts] = 1
    return cycle + np.cumsum(marks)


def trapezoid_split(t_s, y, sign_of):
    """Cumulative trapezoid integral of ``y`` over ``t_s``, split into the intervals whose
    mean ``sign_of`` is positive and those where it is negative; returns (pos, neg), both
    >= 0 and starting at 0. Units: those of y times seconds."""
    dt = np.diff(t_s)
    part = 0.5 * (y[1:] + y[:-1]) * dt
    s = 0.5 * (sign_of[1:] + sign_of[:-1])
    pos = np.concatenate(([0.0], np.cumsum(np.where(s > 0, np.abs(part), 0.0))))
    neg = np.concatenate(([0.0], np.cumsum(np.where(s < 0, np.abs(part), 0.0))))
    return pos, neg


def _agrees(logged, integrated, name, notes):
    """Whether a logged cumulative column is plausible against the integrated one.

    Sparse records make the trapezoid miss some charge, so the log's own sums (counted at
    every board tick) are preferred; but a total off by more than a factor of 2 (a column
    left at zero, a different unit) means the column is not what its name says."""
    got, ref = float(logged[-1]), float(integrated[-1])
    if ref <= 0:
        return got >= 0
    if not 0.5 <= got / ref <= 2.0:
        notes.append(f"{name}: total {got:.6g} vs {ref:.6g} integrated: column ignored")
        return False
    if abs(got / ref - 1) > 0.02:
        notes.append(f"{name}: total differs by {100 * (got / ref - 1):+.1f} % from the integrated current")
    return True


def _cumulative_pair(log, names, integrated, label, sources, notes):
    """The log's cumulative pair of columns if usable, else the integrated pair."""
    a, b = names
    if a in log and b in log:
        pa, pb = _float_column(log, a), _float_column(log, b)
        ok = all(np.isfinite(p).all() and (np.diff(p) >= -MONOTONIC_SLACK).all() for p in (pa, pb))
        if not ok:
            notes.append(f"{a} / {b} are not cumulative (NaN or decreasing): integrated instead")
        elif _agrees(pa - pa[0], integrated[0], a, notes) and _agrees(pb - pb[0], integrated[1], b, notes):
            sources[label] = "log"
            return pa - pa[0], pb - pb[0]
    sources[label] = "integrated (trapezoid)"
    return integrated


def _int_column(log, name):
    arr = _float_column(log, name)
    if not np.isfinite(arr).all():
        return None
    return arr.astype(np.int64)


def _cycles(log, sign, sources):
    cycle = _int_column(log, CYCLE) if CYCLE in log else None
    sources["cycle"] = "log" if cycle is not None else "derived (docs/design.md cycle rule)"
    return derive_cycles(sign) if cycle is None else cycle


def _estimate(log, name, std_name):
    """(value, std) of one estimate of the board's (SoC, capacity, resistance) with NaN
    where the board had none; (None, None) if never."""
    value = _float_column(log, name) if name in log else None
    std = _float_column(log, std_name) if std_name in log else None
    if value is None:
        return None, None
    # The bench writes an empty cell (NaN) while no estimate exists; a negative standard
    # deviation is the board's "-1 = none" sentinel in other writers' logs.
    bad = ~np.isfinite(value)
    if std is not None:
        bad |= ~np.isfinite(std) | (std < 0)
    if bad.all():
        return None, None
    return np.where(bad, np.nan, value), None if std is None else np.where(bad, np.nan, std)


def _usable_rows(log, notes):
    """(log, t_s, v_V, i_A) without the rows lacking time, voltage or current."""
    t_s, v_V, i_A = _required(log)
    keep = np.isfinite(t_s) & np.isfinite(v_V) & np.isfinite(i_A)
    if not keep.all():
        notes.append(f"dropped {int((~keep).sum())} rows without time, voltage or current")
        log = {k: np.asarray(col)[keep] for k, col in log.items()}
        t_s, v_V, i_A = t_s[keep], v_V[keep], i_A[keep]
    if len(t_s) < 2:
        raise InputError("log: fewer than 2 usable records")
    back = np.flatnonzero(np.diff(t_s) < 0)
    if len(back):
        raise InputError(f"log.{T}: decreases at record {int(back[0]) + 1}")
    return log, t_s, v_V, i_A


def prepare(log):
    """Build a :class:`Series` from a log dict (BDF column name -> array).

    Rows whose time, voltage or current is not a number are dropped (with a note); time
    must never decrease. Raises InputError naming the column for anything unusable.
    """
    notes, sources = [], {}
    log, t_s, v_V, i_A = _usable_rows(log, notes)
    rest_A = max(REST_FRACTION * float(np.max(np.abs(i_A))), 1e-15)
    sign = active_sign(i_A, rest_A, log.get("Step Type"))
    # Intervals wholly inside a rest (or an impedance measurement) count no charge: their
    # current is noise or an AC mean, not a charge or discharge.
    active_i = np.where(sign != 0, i_A, 0.0)
    q_int = tuple(p / 3600.0 for p in trapezoid_split(t_s, active_i, active_i))
    e_int = tuple(p / 3600.0 for p in trapezoid_split(t_s, v_V * active_i, active_i))
    q_chg, q_dch = _cumulative_pair(log, (Q_CHG, Q_DCH), q_int, "capacity", sources, notes)
    e_chg, e_dch = _cumulative_pair(log, (E_CHG, E_DCH), e_int, "energy", sources, notes)
    soc, soc_std = _estimate(log, SOC, SOC_STD)
    cap, cap_std = _estimate(log, CAP_EST, CAP_EST_STD)
    r_ct, r_ct_std = _estimate(log, R_EST, R_EST_STD)
    return Series(t_s=t_s, v_V=v_V, i_A=i_A, sign=sign, cycle=_cycles(log, sign, sources),
                  q_chg_Ah=q_chg, q_dch_Ah=q_dch, e_chg_Wh=e_chg, e_dch_Wh=e_dch,
                  rest_A=rest_A, soc=soc, soc_std=soc_std, cap_est_Ah=cap, cap_est_std_Ah=cap_std,
                  r_est_ohm=r_ct, r_est_std_ohm=r_ct_std, sources=sources, notes=notes)
