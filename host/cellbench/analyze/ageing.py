"""The ageing test in a log: the longest run of cycles at one rate, and how it aged.

Papers report ageing as capacity retention and coulombic efficiency over N cycles at one
rate, with the charge-transfer resistance before and after (EIS). From a galvanostatic
log the same comes from the cycle table (cycles.py) and the rest relaxations
(relaxation.py). One rest gives R_ct to about the ADC noise over the relaxation's
amplitude (10-15 % for an LTO coin cell at 1C on the RP2040 ADC), so the trend is the
median over the rests of ``TREND_HALF_WINDOW`` cycles on each side (``r_ct_trend_ohm``).

Units as the cycle table: mAh/g (mAh without a mass), %, ohm. Cycle numbers are the
log's; ``block_cycle`` k = 1 is the block's first cycle (the paper's cycle 1 when a
formation cycle at another rate precedes it).
"""

import numpy as np

MIN_CYCLES = 10          # a block shorter than this is a rate step, not an ageing test
TREND_HALF_WINDOW = 2    # cycles on each side pooled in the R_ct trend


def trend(relax, cycles, half_window=TREND_HALF_WINDOW):
    """Per cycle of ``cycles``: the median R_ct (ohm) of the fitted rests within
    ``half_window`` cycles of it (NaN where none)."""
    ok = np.isfinite(relax["r_ct"])
    rc, rv = relax["cycle"][ok], relax["r_ct"][ok]
    order = np.argsort(rc, kind="stable")
    rc, rv = rc[order], rv[order]
    lo = np.searchsorted(rc, cycles - half_window, side="left")
    hi = np.searchsorted(rc, cycles + half_window, side="right")
    return np.array([np.median(rv[a:b]) if b > a else np.nan for a, b in zip(lo, hi)])


def ageing_block(blocks):
    """The longest rate block with at least MIN_CYCLES cycles (the later on a tie), or None."""
    long = [b for b in blocks if b["n_cycles"] >= MIN_CYCLES]
    return max(reversed(long), key=lambda b: b["n_cycles"]) if long else None


def _at(table, name, rows):
    return [None if not np.isfinite(table[name][k]) else float(table[name][k]) for k in rows]


def checkpoints(table, block, at=(1, 25, 50, 100)):
    """Values at block cycles ``at`` (those the block has): a list of dicts with
    block_cycle, cycle, q_dch, q_chg, ce_pct, r_ct_trend_ohm, r_ohm_chg_ohm, r_ohm_dch_ohm."""
    cyc = table["cycle"]
    spec = "q_dch_mAh_g" if np.isfinite(table["q_dch_mAh_g"]).any() else "q_dch_mAh"
    out = []
    for k in at:
        c = block["first_cycle"] + k - 1
        hit = np.flatnonzero(cyc == c)
        if k > block["n_cycles"] or not len(hit):
            continue
        row = int(hit[0])
        values = {name: _at(table, name, [row])[0] for name in
                  (spec, spec.replace("dch", "chg"), "ce_pct", "r_ct_trend_ohm", "r_ohm_chg_ohm", "r_ohm_dch_ohm")}
        values["q_dch"] = values.pop(spec)
        values["q_chg"] = values.pop(spec.replace("dch", "chg"))
        out.append(dict(block_cycle=k, cycle=int(c), **values))
    return out


def summary(table, blocks):
    """summary.json's "ageing" entry: the block, its retention (last over first discharge,
    %), CE (min and mean, %), R_ct trend and ohmic parts first and last, checkpoints; None
    when the log has no block of MIN_CYCLES cycles at one rate."""
    block = ageing_block(blocks)
    if block is None:
        return None
    cyc = table["cycle"]
    rows = np.flatnonzero((cyc >= block["first_cycle"]) & (cyc <= block["last_cycle"]))
    q = table["q_dch_mAh_g"] if np.isfinite(table["q_dch_mAh_g"][rows]).any() else table["q_dch_mAh"]
    ce = table["ce_pct"][rows]
    ce = ce[np.isfinite(ce)]
    first, last = rows[0], rows[-1]
    return {
        "first_cycle": block["first_cycle"], "last_cycle": block["last_cycle"],
        "cycles": block["n_cycles"], "rate": block["rate"], "rate_unit": block["rate_unit"],
        "q_unit": block["q_unit"], "q_dch_first": float(q[first]), "q_dch_last": float(q[last]),
        "retention_pct": float(100.0 * q[last] / q[first]) if q[first] > 0 else None,
        "ce_min_pct": float(ce.min()) if len(ce) else None,
        "ce_mean_pct": float(ce.mean()) if len(ce) else None,
        "r_ct_first_ohm": _at(table, "r_ct_trend_ohm", [first])[0],
        "r_ct_last_ohm": _at(table, "r_ct_trend_ohm", [last])[0],
        "r_ohm_chg_first_ohm": _at(table, "r_ohm_chg_ohm", [first])[0],
        "r_ohm_chg_last_ohm": _at(table, "r_ohm_chg_ohm", [last])[0],
        "r_ohm_dch_first_ohm": _at(table, "r_ohm_dch_ohm", [first])[0],
        "r_ohm_dch_last_ohm": _at(table, "r_ohm_dch_ohm", [last])[0],
        "checkpoints": checkpoints(table, block),
    }
