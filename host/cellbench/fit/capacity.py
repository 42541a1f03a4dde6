"""Capacity and coulombic efficiency from a low-rate full cycle.

A sweep (see :mod:`.data`) is *full* when it ends at one voltage extreme of its log and
the sweep before it ended at the other: it moved the cell across the whole window. It is
*low-rate* when its charge was passed at C/10 or slower (``rate_C = 1 / active hours``,
since ``Q = I * T`` means ``I / Q = 1 / T``). Capacity (Ah) is the charge of the low-rate
full discharges; the coulombic efficiency is discharge over charge of a full cycle,
because the model applies eta to charge current (docs/design.md).
"""

import numpy as np

from ..errors import InputError
from .data import SECONDS_PER_HOUR, Log, Sweep

MAX_RATE_C = 0.105        # C/10 with a little slack for rounding in the protocol
NEEDS_CYCLE = ("no low-rate full cycle (a full charge and a full discharge between the "
               "window limits at C/10 or slower); run protocols/ocv-c20.json (or protocols/gitt.json)")


LARGE_SWEEP = 0.25         # share of the log's largest sweep charge that makes a sweep "large"


def window_tolerance_V(log: Log) -> float:
    """How close to a log's window limit a sweep must end to count as reaching it."""
    return max(0.005, 0.01 * float(np.ptp(log.v_V)))


def window_V(log: Log) -> tuple:
    """(bottom, top): the median end voltages of the log's large discharge and charge sweeps.

    Large sweeps only, because a short charge pulse near the top can overshoot the
    limit the long sweeps stop at (a pulse is not a window limit). Medians, not extremes,
    because the sweeps that reach a limit overshoot it by what one tick adds on a steep
    end: 20 mV for a GITT pulse on the LTO preset's top, against 1 mV for a C/5 charge.
    """
    if not log.sweeps:
        return float(log.v_V.min()), float(log.v_V.max())
    biggest = max(s.charge_Ah for s in log.sweeps)
    ends = [(s.sign, float(log.v_V[s.stop - 1])) for s in log.sweeps if s.charge_Ah >= LARGE_SWEEP * biggest]
    tops = [v for sign, v in ends if sign > 0] or [float(log.v_V.max())]
    bottoms = [v for sign, v in ends if sign < 0] or [float(log.v_V.min())]
    return float(np.median(bottoms)), float(np.median(tops))


def ends_at(log: Log, sweep: Sweep) -> int:
    """+1 if ``sweep`` ended at the log's top limit, -1 at its bottom, 0 elsewhere."""
    v_end = float(log.v_V[sweep.stop - 1])
    tol = window_tolerance_V(log)
    bottom, top = window_V(log)
    if sweep.sign > 0 and v_end >= top - tol:
        return 1
    if sweep.sign < 0 and v_end <= bottom + tol:
        return -1
    return 0


def full_sweeps(log: Log) -> list:
    """Sweeps that crossed the whole window (start after the opposite end, reach their end)."""
    out = []
    for prev, sweep in zip(log.sweeps[:-1], log.sweeps[1:]):
        if ends_at(log, sweep) == sweep.sign and ends_at(log, prev) == -sweep.sign:
            out.append(sweep)
    return out


def rate_C(log: Log, sweep: Sweep) -> float:
    """C-rate a sweep's charge was passed at: 1 / (hours of non-rest current)."""
    active_s = 0.0
    dt = np.diff(log.t_s)
    for k in sweep.steps:
        step = log.steps[k]
        if step.sign:
            active_s += float(dt[step.start:min(step.stop, dt.size)].sum())
    return SECONDS_PER_HOUR / active_s if active_s > 0 else np.inf


def find_cycle(logs: list) -> dict:
    """The low-rate full cycle(s) across ``logs``: capacity, efficiency and where they came from.

    A cycle is two adjacent low-rate full sweeps. Preferred are cycles whose first sweep
    itself starts from a low-rate end (discharge, charge, discharge at C/20): then both
    sweeps run between the same two states and neither the capacity nor the efficiency
    carries the difference between a fast and a slow cut-off. Capacity is the mean charge
    of the low-rate full discharges that start from such an end (all of them if none do).

    Returns {"capacity_Ah", "coulombic_efficiency", "rate_C", "log" (index), "charge",
    "discharge" (Sweep objects), "clean" (bool: the preferred kind)}; InputError naming the
    protocol to run when no log has one.
    """
    pairs, clean_dch, all_dch = [], [], []
    for n, log in enumerate(logs):
        slow = {id(s) for s in full_sweeps(log) if rate_C(log, s) <= MAX_RATE_C}
        for k in range(1, len(log.sweeps)):
            a, b = log.sweeps[k - 1], log.sweeps[k]
            clean = k >= 2 and id(log.sweeps[k - 2]) in slow
            if id(b) in slow and b.sign < 0:
                all_dch.append(b.charge_Ah)
                if id(a) in slow:
                    clean_dch.append(b.charge_Ah)
            if id(a) in slow and id(b) in slow:
                pairs.append((not clean, n, a, b))
    if not pairs:
        names = ", ".join(log.name for log in logs)
        raise InputError(f"capacity: {names}: {NEEDS_CYCLE}")
    unclean, n, a, b = min(pairs, key=lambda p: (p[0], p[1]))
    chg, dch = (a, b) if a.sign > 0 else (b, a)
    eta = min(1.0, dch.charge_Ah / chg.charge_Ah)
    return {"capacity_Ah": float(np.mean(clean_dch or all_dch or [dch.charge_Ah])),
            "coulombic_efficiency": eta, "rate_C": max(rate_C(logs[n], chg), rate_C(logs[n], dch)),
            "log": n, "charge": chg, "discharge": dch, "clean": not unclean}
