"""Rate capability: consecutive cycles at one rate grouped into blocks, as papers tabulate.

A block is a run of consecutive cycles whose rate stays within ``tol`` (relative) of the
block's first cycle. Each block reports its mean discharge capacity (mAh/g with a mass,
else mAh) and that mean as a percentage of the first block at the same rate, which is the
"recovery" when a rate returns (100 for the first block at a rate).
"""

import math

import numpy as np

from ..errors import InputError

DEFAULT_TOL = 0.05


RATE_COLUMNS = {"C": "c_rate", "mA/g": "current_density_mA_g", "mA": "i_dch_median_mA"}


def _rate_column(table, unit=None):
    """(per-cycle rate, its unit): the given unit, else C-rate if known, else mA/g, else mA."""
    if unit is not None:
        if unit not in RATE_COLUMNS:
            raise InputError(f"rate_unit: must be one of {', '.join(RATE_COLUMNS)}, not {unit!r}")
        values = np.asarray(table[RATE_COLUMNS[unit]], dtype=float)
        if not np.isfinite(values).any():
            need = {"C": "a capacity (--capacity-mAh)", "mA/g": "a mass (--mass-mg)"}.get(unit, "a discharge")
            raise InputError(f"rate_unit: {unit} needs {need}")
        return values, unit
    for unit, column in RATE_COLUMNS.items():
        values = np.asarray(table[column], dtype=float)
        if np.isfinite(values).any():
            return values, unit
    return np.full(len(table["cycle"]), np.nan), "mA"


def _capacity_column(table):
    specific = np.asarray(table["q_dch_mAh_g"], dtype=float)
    if np.isfinite(specific).any():
        return specific, "mAh/g"
    return np.asarray(table["q_dch_mAh"], dtype=float), "mAh"


def _same(a, b, tol):
    return abs(a - b) <= tol * max(abs(a), abs(b))


def _runs(rates, tol):
    """(start, stop) index pairs of consecutive cycles at one rate; cycles without a
    discharge (NaN or zero rate) end a run and belong to none."""
    runs, start = [], None
    for k, r in enumerate(rates):
        valid = math.isfinite(r) and r > 0
        if start is not None and (not valid or not _same(rates[start], r, tol)):
            runs.append((start, k))
            start = None
        if valid and start is None:
            start = k
    if start is not None:
        runs.append((start, len(rates)))
    return runs


def _pct_of_first(blocks, rate, mean_q, tol):
    """mean_q as % of the first earlier block at ``rate`` (100 when there is none)."""
    first = next((b for b in blocks if _same(b["rate"], rate, tol)), None)
    if first is None:
        return 100.0
    return 100.0 * mean_q / first["mean_q_dch"] if first["mean_q_dch"] > 0 else math.nan


def rate_blocks(table, tol=DEFAULT_TOL, unit=None):
    """List of block dicts: rate, rate_unit, first_cycle, last_cycle, n_cycles,
    mean_q_dch, q_unit, pct_of_first (of the first earlier block at the same rate).
    unit: "C", "mA/g" or "mA" (default: the first of these the table has)."""
    rates, rate_unit = _rate_column(table, unit)
    q, q_unit = _capacity_column(table)
    cycles = np.asarray(table["cycle"])
    blocks = []
    for start, stop in _runs(rates, tol):
        rate = float(np.mean(rates[start:stop]))
        mean_q = float(np.mean(q[start:stop]))
        pct = _pct_of_first(blocks, rate, mean_q, tol)
        blocks.append({"rate": rate, "rate_unit": rate_unit,
                       "first_cycle": int(cycles[start]), "last_cycle": int(cycles[stop - 1]),
                       "n_cycles": stop - start, "mean_q_dch": mean_q, "q_unit": q_unit,
                       "pct_of_first": pct})
    return blocks


def _plain(x):
    """A number to 3 significant digits, never in exponent notation ("3000", "0.35")."""
    if not np.isfinite(x) or x == 0:
        return f"{x:g}"
    digits = 2 - int(np.floor(np.log10(abs(x))))
    if digits <= 0:
        return f"{round(x, digits):.0f}"
    return f"{round(x, digits):.{digits}f}".rstrip("0").rstrip(".")


def rate_label(rate, unit):
    """'0.2C', '200 mA/g', '0.35 mA', '3 A' (currents of 1000 mA and up in A, below
    1 uA in nA): readable at a glance, never '3e+03 mA'."""
    if unit == "C":
        return f"{_plain(rate)}C"
    if unit == "mA" and abs(rate) >= 1000:
        return f"{_plain(rate / 1000)} A"
    if unit == "mA" and 0 < abs(rate) < 1e-3:
        return f"{_plain(rate * 1e6)} nA"
    return f"{_plain(rate)} {unit}"


def _line(cells, widths):
    """Left-align the first two cells (rate, cycles), right-align the numbers."""
    return "  ".join(c.ljust(w) if k < 2 else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))


def format_rate_table(blocks, reference=None):
    """Plain-text table: rate, cycles, mean discharge capacity, % of the first block.

    ``blocks``: the list from :func:`rate_blocks` (or anything with a ``rate_blocks``
    attribute holding one, such as an analysis result). ``reference``: optionally a
    paper table (reference.PAPER_RATES["LTO/Li"] ...) added as two columns, the paper's
    value and the deviation from it in %.
    """
    from .reference import match_reference

    blocks = getattr(blocks, "rate_blocks", blocks)
    if not blocks:
        return "no rate blocks (no cycle has a discharge)"
    q_unit = blocks[0]["q_unit"]
    digits = 1 if q_unit == "mAh/g" else 4  # a coin cell holds well under 1 mAh
    head = ["rate", "cycles", f"mean {q_unit}", "% of 1st at rate"]
    rows = [[rate_label(b["rate"], b["rate_unit"]),
             f"{b['first_cycle']}-{b['last_cycle']}" if b["n_cycles"] > 1 else str(b["first_cycle"]),
             f"{b['mean_q_dch']:.{digits}f}", f"{b['pct_of_first']:.1f}"] for b in blocks]
    if reference is not None:
        head += ["paper", "diff %"]
        for row, b, ref in zip(rows, blocks, match_reference(blocks, reference)):
            row += ["", ""] if ref is None else [f"{ref:.1f}", f"{100.0 * (b['mean_q_dch'] / ref - 1):+.1f}"]
    widths = [max(len(r[c]) for r in rows + [head]) for c in range(len(head))]
    return "\n".join(_line(r, widths).rstrip() for r in [head] + rows)
