"""Capacity and coulombic efficiency from low-rate full sweeps.

A sweep (see :mod:`.data`) is *full* when it ends at one voltage extreme of its log and
the sweep before it ended at the other: it moved the cell across the whole window. It is
*low-rate* when its charge was passed at C/5 or slower (``rate_C = 1 / active hours``,
since ``Q = I * T`` means ``I / Q = 1 / T``). Capacity (Ah) is the charge of the low-rate
full discharges; the coulombic efficiency is discharge over charge of a full cycle,
because the model applies eta to charge current (docs/design.md). Without a low-rate full
sweep or an HPPC traverse, the slowest checked full cycle at any rate stands in
(:func:`slowest_full_cycle`), and the fit says so. A low-rate sweep's charge counts with
the charge beyond its cut-offs (:func:`beyond_cutoff_Ah`), so capacity is the charge
between the rested window limits.
"""

import dataclasses

import numpy as np

from ..errors import InputError
from .data import SECONDS_PER_HOUR, Log, Sweep

MAX_RATE_C = 0.21         # C/5 (with slack for rounding): what testers' capacity checks use
NEEDS_CYCLE = ("no full sweep that measures capacity (a discharge or charge from one window limit "
               "to the other at C/5 or slower, a full charge and discharge next to each other at any "
               "rate, or an HPPC traverse between the limits); record one, e.g. run protocols/ocv-c20.json")


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


def rate_C(log: Log, sweep: Sweep) -> float:
    """C-rate a sweep's charge was passed at: 1 / (hours of non-rest current)."""
    active_s = 0.0
    dt = np.diff(log.t_s)
    for k in sweep.steps:
        step = log.steps[k]
        if step.sign:
            active_s += float(dt[step.start:min(step.stop, dt.size)].sum())
    return SECONDS_PER_HOUR / active_s if active_s > 0 else np.inf


START_SHARE = 0.02         # charge moved before a sweep, as a share of it, that still counts as "from the start"
SAME_CHARGE = 0.05         # a sweep from the log's start is full if its charge is this close to a checked full sweep's


def _from_start(log: Log, k: int) -> bool:
    """Sweep ``k`` starts where the log starts: the sweeps before it moved next to no charge."""
    before = sum(s.charge_Ah for s in log.sweeps[:k])
    return before <= START_SHARE * log.sweeps[k].charge_Ah


def _ends_at_its_extreme(log: Log, sweep: Sweep) -> bool:
    """The sweep's last voltage is its highest (a charge) or lowest (a discharge), within
    the window tolerance: a current sweep moves the voltage its way to the end; a
    potential scan (a cyclic voltammogram) turns back while its current keeps its sign."""
    v = log.v_V[sweep.start:sweep.stop]
    return sweep.sign * float(v[-1] - (v.max() if sweep.sign > 0 else v.min())) >= -window_tolerance_V(log)


def slow_full_sweeps(logs: list, max_rate_C: float = MAX_RATE_C) -> list:
    """Sweeps at ``max_rate_C`` or slower that reach their window limit and start at the other one.

    The start is checked when the sweep before ended at the opposite limit ("after a
    limit"); a sweep that starts with the log (its first rest or first sample) is taken
    as starting at the opposite limit ("from the log's start") when its charge is within
    SAME_CHARGE of a checked one's, or, with nothing to check it against, assumed.
    Returns dicts {"log", "k" (sweep index), "sweep", "rate_C", "how"}.
    """
    found = []
    for n, log in enumerate(logs):
        for k, sweep in enumerate(log.sweeps):
            if ends_at(log, sweep) != sweep.sign or rate_C(log, sweep) > max_rate_C:
                continue
            if k and ends_at(log, log.sweeps[k - 1]) == -sweep.sign:
                how = "after a limit"
            elif _from_start(log, k) and _ends_at_its_extreme(log, sweep):
                how = "from the log's start"
            else:
                continue
            found.append({"log": n, "k": k, "sweep": sweep, "rate_C": rate_C(log, sweep), "how": how})
    checked = [f["sweep"].charge_Ah for f in found if f["how"] == "after a limit"]
    if checked:
        ref = float(np.median(checked))
        found = [f for f in found if f["how"] == "after a limit"
                 or abs(f["sweep"].charge_Ah - ref) <= SAME_CHARGE * ref]
    return found


MIN_TRAVERSE_RESTS = 5     # a traverse with this many rests gives a rest-point OCV


def traverses(logs: list) -> list:
    """Full traverses made of pulses and steps (HPPC): from one window limit (or the log's
    start) to the other, moving charge both ways on the way, with at least
    MIN_TRAVERSE_RESTS rests (their relaxed voltages give the OCV). Each is returned as a
    merged :class:`Sweep` (``charge_Ah`` the net charge) in the dicts of
    :func:`slow_full_sweeps`, ``how`` "traverse"."""
    out = []
    for n, log in enumerate(logs):
        sw = log.sweeps
        tol = window_tolerance_V(log)
        for k, last in enumerate(sw):
            end = ends_at(log, last)
            v_end = float(log.v_V[last.stop - 1])
            # The log's own extreme, not the median sweep end: an HPPC's steps all end mid-way.
            extreme = v_end <= log.v_V.min() + tol if end < 0 else v_end >= log.v_V.max() - tol
            if end != last.sign or not extreme:
                continue
            j = k
            while j > 0 and ends_at(log, sw[j - 1]) != -end:
                j -= 1
            first = sw[j]
            steps = list(range(first.steps[0], last.steps[-1] + 1))
            rests = sum(1 for m in steps if log.steps[m].sign == 0)
            stop = min(last.stop, log.q_Ah.size - 1)
            net = end * float(log.q_Ah[stop] - log.q_Ah[first.start])
            if j == k or rests < MIN_TRAVERSE_RESTS or net <= 0:
                continue
            merged = Sweep(end, steps, first.start, last.stop, net)
            out.append({"log": n, "k": k, "sweep": merged, "rate_C": rate_C(log, merged), "how": "traverse"})
    return out


END_SLOPE_SHARE = 0.01    # the branch's end slope dV/dQ: a line over its last 1 % of charge
MIN_SLOPE_SAMPLES = 3
CV_TAIL_SHARE = 0.5       # an end current below this share of the sweep's median: a CV tail
MAX_BEYOND_SHARE = 0.05   # the residual is a small correction; more is not a cut-off's shortfall


def beyond_cutoff_Ah(log: Log, sweep: Sweep, window_Ah: float = 0.0):
    """Charge (Ah, >= 0) between ``sweep``'s loaded cut-off and the window limit at rest;
    ``window_Ah``: the charge of the whole window (``sweep``'s own when it is a full
    sweep; for a partial one the capacity, or the full sweep after it; 0: none known).

    A low-rate sweep stops when the *loaded* voltage meets the limit; the cell then still
    holds (discharge) or lacks (charge) some charge before its *rested* voltage would. The
    rest after the cut-off shows how far: the voltage relaxes by dV (IR drop plus
    diffusion) to the OCV of the cut-off state, and the OCV falls back to the limit over
    dV / (dV/dQ), with dV/dQ the branch's slope at its end (a least-squares line over its
    last END_SLOPE_SHARE of charge: the OCV's slope there plus the change of the
    polarisation, which is small over 1 %). On the PyBaMM cells this gives the true
    residual within about 0.1 % of capacity (LFP bottom 0.87 % against 0.84 %, NMC811 top
    1.48 % against 1.37 %, graphite/Li bottom 1.88 % against 1.94 %). A rest that has not
    fully relaxed gives less (a lower bound). None when no rest follows the sweep, its end
    is a CV tail (the cell was held at the limit: its voltage has no slope to divide by)
    or the last step holds too few samples; capped at MAX_BEYOND_SHARE of the sweep (a
    partial sweep's correction is a small one too). None also when the quotient exceeds
    MAX_BEYOND_SHARE of the window: a rest rise that large is not a shortfall the end
    slope measures (the Arbin Si-like half cell's bottom rests rise 13-26 mV, 5.4-10 % of
    the sweep over its end slope, every time; the PyBaMM cells' 0.8-1.9 %), and counting
    the cap instead claimed 5 % that nothing measured (Arbin: capacity 1.524 mAh where its
    C/5 discharges count 1.46-1.53, a fit of 18.0 mV RMS against 14.5 without it).
    """
    last = log.steps[sweep.steps[-1]]
    nxt = sweep.steps[-1] + 1
    if nxt >= len(log.steps) or log.steps[nxt].sign != 0 or last.sign == 0:
        return None
    i = np.abs(log.i_A[last.start:last.stop])
    if i[-1] < CV_TAIL_SHARE * float(np.median(i)):
        return None
    q, v = log.q_Ah[last.start:last.stop], log.v_V[last.start:last.stop]
    near = np.abs(q - q[-1]) <= END_SLOPE_SHARE * sweep.charge_Ah
    if np.count_nonzero(near) < MIN_SLOPE_SAMPLES:
        return None
    slope = float(np.polyfit(q[near], v[near], 1)[0])   # V per Ah: > 0 (the voltage follows the charge)
    if slope <= 0:
        return None
    relax_V = sweep.sign * float(log.v_V[sweep.stop - 1] - log.v_V[log.steps[nxt].stop - 1])
    beyond_Ah = max(relax_V / slope, 0.0)
    if window_Ah and beyond_Ah > MAX_BEYOND_SHARE * window_Ah:
        return None
    return min(beyond_Ah, MAX_BEYOND_SHARE * sweep.charge_Ah)


def _with_beyond(log: Log, f: dict) -> dict:
    """``f`` (a slow_full_sweeps dict) with its sweep's ``beyond_Ah``: at its end from the rest
    after it, at its start from the rest after the sweep before (0 from the log's start,
    taken as the rested limit)."""
    sweep = f["sweep"]
    start = 0.0
    if f["how"] == "after a limit":
        before = log.sweeps[f["k"] - 1]
        full = f["k"] >= 2 and ends_at(log, log.sweeps[f["k"] - 2]) == -before.sign
        start = beyond_cutoff_Ah(log, before, before.charge_Ah if full else sweep.charge_Ah)
    ends = (start or 0.0, beyond_cutoff_Ah(log, sweep, sweep.charge_Ah) or 0.0)
    return {**f, "sweep": dataclasses.replace(sweep, beyond_Ah=ends)}


def full_Ah(sweep: Sweep) -> float:
    """The sweep's charge over the whole window: passed plus beyond both cut-offs."""
    return sweep.charge_Ah + sum(sweep.beyond_Ah)


def beyond_note(ref: dict) -> str:
    """What the capacity adds beyond the cut-offs, for the report and the provenance ('' for none)."""
    sweeps = [s for s in (ref["discharge"], ref["charge"]) if s is not None]
    added = float(np.mean([sum(s.beyond_Ah) for s in sweeps]))
    if added <= 0:
        return ""
    bottom = [s.beyond_Ah[1 if s.sign < 0 else 0] for s in sweeps]
    top = [s.beyond_Ah[1 if s.sign > 0 else 0] for s in sweeps]
    return (f"charge beyond the low-rate cut-offs counted: {100 * added / ref['capacity_Ah']:.2f} % of "
            f"capacity ({1e3 * max(bottom):.4f} mAh at the bottom, {1e3 * max(top):.4f} mAh at the top), "
            "each cut-off's rest rise over the branch's end slope dV/dQ, because the loaded cut-off "
            "stops short of the rested limit; SoC 0 and 1 are the rested window limits")


FAST_ASSUMPTION = ("capacity from the slowest full cycle, at {rate:.2g}C (no full sweep at C/5 or "
                   "slower, no HPPC traverse): the charge beyond its cut-off is not counted, so the "
                   "capacity is low by about the IR drop there over the OCV's end slope, and SoC 0 and 1 "
                   "sit at that rate's cut-offs; model_error widened for the OCV's doubt and the "
                   "slow polarisation's timing, which fast sweeps cannot show")


def describe_rate(rate: float) -> str:
    """What the capacity came from, for the report and the provenance (``rate`` in C)."""
    if rate <= MAX_RATE_C:
        return f"low-rate full sweep(s) at C/{1 / rate:.0f}"
    return f"the slowest full sweep(s), at {rate:.2g}C (none at C/5 or slower)"


FADE_SLACK = 1.25          # a cell 20 % faded runs a cycle at the same current 1.25x faster (in 1/h)


ANCHOR_SPAN = 2.5          # after a low-rate reference, sweeps up to this times its rate anchor (and C/5)


def anchor_rate_C(rate: float, usual_C: float) -> float:
    """Sweeps up to this C-rate anchor SoC at their cut-offs. After a low-rate reference
    (``rate`` at most C/5): C/5, or up to ANCHOR_SPAN times ``rate`` when that is faster,
    never above ``usual_C``. A sweep several times faster stops short of the limit's SoC
    by more than its IR drop (diffusion): BattMo's C/2.6 discharges, anchored at
    OCV(z) = V - I * R_dc, sat 15 % of SoC from where the tester's counter puts them
    after its C/26 cycle, and the fit measured its model's error in that SoC (replay
    61 -> 37 mV, filter 4.6 -> 2.8 % without them). After the fallback (``rate``, the
    slowest full cycle's, above C/5) up to FADE_SLACK times that rate, because SoC 0 and
    1 are then defined as that cycle's cut-offs, and the cycles run at its current end
    there too."""
    if rate <= MAX_RATE_C:
        return min(usual_C, max(MAX_RATE_C, ANCHOR_SPAN * rate))
    return max(usual_C, FADE_SLACK * rate)


MIN_GIVEN_BACK = 0.8       # a full cycle's smaller sweep carries at least this share of the larger
MIN_TRAVEL = 0.5           # ... and each sweep's own voltage moves over this share of the window


def _travels(log: Log, sweep: Sweep) -> bool:
    """The sweep's voltage moves over MIN_TRAVEL of the window (bottom..top) under load: a
    full sweep runs the cell across it; a pulse reaches a limit through its IR drop and
    barely moves along it (yadg's 10 s pulses: 2 mV of a 33 mV window)."""
    bottom, top = window_V(log)
    return float(np.ptp(log.v_V[sweep.start:sweep.stop])) >= MIN_TRAVEL * (top - bottom)


def slowest_full_cycle(logs: list) -> list:
    """The fallback when no log holds a low-rate full sweep or a traverse: the adjacent full
    charge and discharge (a CC-CV charge counts with its CV tail) with the lowest rate (the
    larger of the two's), as [first, second]; [] when there is none.

    At a fast rate a sweep can reach a limit through its IR drop alone (a pulse), so only a
    checked cycle counts: both sweeps start at the opposite limit (none "from the log's
    start"), the one gives back at least MIN_GIVEN_BACK of the other's charge (a
    formation cycle loses up to about a fifth) and each moves the voltage across the
    window itself (:func:`_travels`; a pulse and its reverse carry the same charge).
    One cycle, not every cycle at that rate: a cell cycled at a fixed current fades (the
    IFE example loses 20 % in 40 cycles), and the mean charge of many cycles would not
    belong to the cycle that defines the OCV and SoC. Dicts as :func:`slow_full_sweeps`.
    """
    found = [f for f in slow_full_sweeps(logs, np.inf) if f["how"] == "after a limit"]
    by_pos = {(f["log"], f["k"]): f for f in found}
    pairs = []
    for f in found:
        prev = by_pos.get((f["log"], f["k"] - 1))
        log = logs[f["log"]]
        if prev and prev["sweep"].sign == -f["sweep"].sign and all(_travels(log, g["sweep"]) for g in (prev, f)):
            charges = sorted((prev["sweep"].charge_Ah, f["sweep"].charge_Ah))
            if charges[0] >= MIN_GIVEN_BACK * charges[1]:
                pairs.append((max(f["rate_C"], prev["rate_C"]), [prev, f]))
    return min(pairs, key=lambda p: p[0])[1] if pairs else []


SAME_END_RATE = FADE_SLACK  # two sweeps one way end at the same SoC when their rates are this close


def matched_ratios(logs: list, found: list) -> list:
    """Discharge over charge (each :func:`full_Ah`) of every adjacent full charge and
    discharge whose span closes on itself: the sweep before the pair is a full sweep the
    same way as the pair's second, at a rate within SAME_END_RATE of it, so the pair
    starts at the limit's SoC it ends at (in the dicts of :func:`slow_full_sweeps`).

    A pair whose outer ends differ measures the difference too: Neware TESTCELL's 0.53C
    charge starts from a C/9.4 discharge's bottom and its 0.53C discharge stops 0.9 % of
    capacity above it (the IR drop at the cut-off), so that pair reads 0.9909 where its
    1C cycles, each closing on itself, read 0.9995.
    """
    by_pos = {(f["log"], f["k"]): f for f in found}
    out = []
    for f in found:
        a, before = by_pos.get((f["log"], f["k"] - 1)), by_pos.get((f["log"], f["k"] - 2))
        if not (a and before) or a["sweep"].sign != -f["sweep"].sign or before["sweep"].sign != f["sweep"].sign:
            continue
        if max(before["rate_C"], f["rate_C"]) > SAME_END_RATE * min(before["rate_C"], f["rate_C"]):
            continue
        chg, dch = (a, f) if a["sweep"].sign > 0 else (f, a)
        out.append(full_Ah(dch["sweep"]) / full_Ah(chg["sweep"]))
    return out


def efficiency(logs: list, found: list, pair_ratio: float, clean: bool) -> tuple:
    """(coulombic efficiency, assumptions): the median of :func:`matched_ratios` over the
    capacity's sweeps (``found``), else over every checked full cycle of the logs at any
    rate; with none, the reference pair's own ``pair_ratio`` when its span closes
    (``clean``: the sweep before it is checked too, or it starts with the log, taken as
    the rested limit; its ends are counted to the rested limits), else 1, said. The median, not the reference pair: a cell's first cycles lose more to side
    reactions (the Arbin half cell's C/10 formation cycles 0.92, its 14 later cycles
    0.956), and the filter counts every later cycle with it. At most 1.
    """
    ratios = matched_ratios(logs, found)
    if not ratios:
        cycling = [f for f in slow_full_sweeps(logs, np.inf)
                   if f["how"] == "after a limit" and _travels(logs[f["log"]], f["sweep"])]
        ratios = [r for r in matched_ratios(logs, cycling) if r >= MIN_GIVEN_BACK]
    if ratios:
        return min(1.0, float(np.median(ratios))), []
    if clean:
        return min(1.0, pair_ratio), []
    return 1.0, ["coulombic efficiency 1 (no full charge and discharge whose span closes on itself: "
                 f"the reference pair's {pair_ratio:.4f} includes the difference between its outer ends)"]


def spread(caps_Ah: list) -> float:
    """The largest relative distance of a full sweep's capacity (``caps_Ah``, Ah) from
    their mean, the model's capacity: how far the capacity the filter meets may sit from
    the model's, as the logs showed it (rates, fade, formation); 0 for one sweep."""
    return float(np.max(np.abs(np.asarray(caps_Ah) / np.mean(caps_Ah) - 1.0))) if caps_Ah else 0.0


def find_reference(logs: list) -> dict:
    """Capacity, coulombic efficiency and the slow sweep(s) that define SoC.

    Preferred: a low-rate full charge and discharge next to each other in one log (the
    OCV from both branches, the efficiency from their ratio), best when the first of the
    two itself starts from a low-rate end (as :func:`find_cycle` always preferred). Else
    one low-rate full sweep (a discharge before a charge): efficiency 1 assumed. Capacity
    is the mean charge of the low-rate full discharges (of the full charges when there
    are none), each with the charge beyond its cut-offs (:func:`full_Ah`), as is the
    efficiency. Returns {"capacity_Ah", "spread" (:func:`spread` of those sweeps),
    "coulombic_efficiency", "rate_C", "log", "fit_from" (the first sample of that log
    the dynamics are fitted from: the first clean full sweep's, a low-rate full sweep
    with two before it, or the reference sweeps' when earlier),
    "charge", "discharge" (Sweep or None), "clean", "assumptions"}. Without a low-rate
    full sweep: an HPPC traverse, else the slowest full cycle at any rate (each said in
    the assumptions); InputError naming what to record when there is none of them.
    """
    found = slow_full_sweeps(logs)
    extra = []
    found = [_with_beyond(logs[f["log"]], f) for f in found]
    if not found:
        found = sorted(traverses(logs), key=lambda f: -f["sweep"].charge_Ah)[:1]
        extra = [f"capacity from a pulse/step traverse at C/{1 / f['rate_C']:.1f} (charge below its "
                 "last cut-off not counted)" for f in found]
    if not found:
        found = slowest_full_cycle(logs)
        extra = [FAST_ASSUMPTION.format(rate=max(f["rate_C"] for f in found))] if found else []
    if not found:
        names = ", ".join(log.name for log in logs)
        raise InputError(f"capacity: {names}: {NEEDS_CYCLE}")
    by_pos = {(f["log"], f["k"]): f for f in found}
    pairs = []
    for f in found:
        prev = by_pos.get((f["log"], f["k"] - 1))
        if prev and prev["sweep"].sign == -f["sweep"].sign:
            clean = (f["log"], f["k"] - 2) in by_pos
            pairs.append((not clean, max(f["rate_C"], prev["rate_C"]), f["log"], prev, f))
    assumptions = extra + [f"{f['sweep'].sign > 0 and 'charge' or 'discharge'} in {logs[f['log']].name} "
                           "taken as full from the log's first sample (nothing to check it against)"
                           for f in found if f["how"] == "from the log's start" and len(found) == 1]
    dch_all = [f for f in found if f["sweep"].sign < 0]
    if pairs:
        unclean, rate, n, a, b = min(pairs, key=lambda p: (p[0], p[2], p[1]))
        chg, dch = (a, b) if a["sweep"].sign > 0 else (b, a)
        closes = not unclean or a["how"] == "from the log's start"     # from the rested limit it ends at
        eta, said = efficiency(logs, found, full_Ah(dch["sweep"]) / full_Ah(chg["sweep"]), closes)
        assumptions += said
        clean = [f for f in found if (f["log"], f["k"] - 1) in by_pos and (f["log"], f["k"] - 2) in by_pos]
        clean_dch = [f for f in clean if f["sweep"].sign < 0]
        caps = [full_Ah(f["sweep"]) for f in (clean_dch or dch_all)]
        return {"capacity_Ah": float(np.mean(caps)), "spread": spread(caps),
                "coulombic_efficiency": eta, "rate_C": rate, "log": n,
                "charge": chg["sweep"], "discharge": dch["sweep"], "clean": not unclean,
                "fit_from": min([f["sweep"].start for f in clean if f["log"] == n]
                                + [chg["sweep"].start, dch["sweep"].start]),
                "assumptions": assumptions}
    one = min(found, key=lambda f: (f["sweep"].sign > 0, f["rate_C"], f["log"]))
    side = [f for f in found if f["sweep"].sign == one["sweep"].sign]
    assumptions.append("coulombic efficiency 1 (no low-rate full charge and discharge next to each other)")
    assumptions.append("no hysteresis in the OCV (one slow branch: OCV = branch less its IR drop)")
    caps = [full_Ah(f["sweep"]) for f in side]
    return {"capacity_Ah": float(np.mean(caps)), "spread": spread(caps),
            "coulombic_efficiency": 1.0,
            "rate_C": one["rate_C"], "log": one["log"], "fit_from": one["sweep"].start,
            "charge": one["sweep"] if one["sweep"].sign > 0 else None,
            "discharge": one["sweep"] if one["sweep"].sign < 0 else None, "clean": False,
            "assumptions": assumptions}
