"""The per-cycle table battery papers report: capacities, efficiencies, plateaus, retention.

Conventions (stated again in summary.json):
- "charge" and "discharge" follow the cell's terminal current (current > 0 charges).
- mode "full": coulombic efficiency CE = discharge / charge capacity.
- mode "half" (working electrode vs Li metal, the battery tools' "anode" convention): the
  working electrode is lithiated while the cell discharges, so CE = delithiation /
  lithiation = charge / discharge capacity (LTO or graphite vs Li).
- Energy efficiency is the cell's round trip in both modes: discharge / charge energy.
- Mean voltage = energy / capacity of that direction (the plateau position).
- Retention is the discharge capacity against the first cycle (cycle 0, a lone half
  before the first full cycle, is not one) and a reference cycle.
- The cycle's rate comes from the median |current| of its discharge samples.
"""

import numpy as np

from ..errors import InputError
from .kind import MODES
from .groups import group_first_last, group_index, group_median, group_sum


END_TOL = 0.02     # share of the voltage range within which two halves end "at the same cutoff"

COLUMNS = (
    "cycle", "t_start_s", "t_end_s", "records",
    "q_chg_mAh", "q_dch_mAh", "q_chg_mAh_g", "q_dch_mAh_g", "ce_pct",
    "e_chg_mWh", "e_dch_mWh", "ee_pct", "v_chg_mean_V", "v_dch_mean_V",
    "retention_first_pct", "retention_ref_pct",
    "i_dch_median_mA", "current_density_mA_g", "c_rate",
)


def _ratio_pct(num, den):
    """100 * num / den, NaN where the denominator is not positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, 100.0 * num / den, np.nan)


def _per_cycle_sums(series, inverse, n):
    """Per-cycle increments of the cumulative sums. Interval k (from sample k to k+1)
    belongs to the cycle of sample k, so the charge passed between a cycle's last record
    and the next cycle's first record is not lost."""
    own = inverse[:-1]
    return {name: group_sum(np.diff(getattr(series, name)), own, n)
            for name in ("q_chg_Ah", "q_dch_Ah", "e_chg_Wh", "e_dch_Wh")}


def first_row(cycles):
    """Row of the first real cycle: cycle 0 is the lone half before the first full cycle
    (a pre-charged cell's first discharge), never the base of a retention."""
    rows = np.flatnonzero(cycles >= 1)
    return int(rows[0]) if len(rows) else 0


def default_ref_cycle(cycles):
    """Cycle 2 (the first after formation) when the log has it, else the first cycle."""
    return 2 if 2 in set(cycles.tolist()) else int(cycles[first_row(cycles)])


def _ref_index(cycles, ref_cycle):
    """(reference cycle number, its row)."""
    ref = default_ref_cycle(cycles) if ref_cycle is None else int(ref_cycle)
    hit = np.flatnonzero(cycles == ref)
    if len(hit) == 0:
        raise InputError(f"ref_cycle: cycle {ref} is not in the log (cycles {cycles[0]}..{cycles[-1]})")
    return ref, int(hit[0])


def _end_V(series, own, sign):
    """Voltage of the last record of ``sign`` among the records ``own`` (None if none)."""
    k = np.flatnonzero(own & (series.sign == sign))
    return float(series.v_V[k[-1]]) if len(k) else None


def _complete(series, inverse, n):
    """Cycles with both a charge and a discharge. Efficiencies need both: a cycle cut
    short (the log ends after its discharge) gets none rather than a misleading 0 %. A
    direction counts when the cycle has records beyond the rest threshold, so rest noise
    does not. The last cycle also needs its last half finished: it ends at the voltage
    the previous cycle's same half ended at (the protocol's cutoff, within END_TOL of the
    voltage range), or lasts or moves as much charge as that half did; a log that stops
    mid-half leaves that cycle without CE."""
    has = [np.bincount(inverse[series.sign == s], minlength=n) > 0 for s in (1, -1)]
    complete = has[0] & has[1]
    if n >= 2 and complete[-1]:
        own, before = inverse == n - 1, inverse == n - 2
        last = int(series.sign[np.flatnonzero(own & (series.sign != 0))[-1]])
        end, ref = _end_V(series, own, last), _end_V(series, before, last)
        span = float(np.ptp(series.v_V[own | before])) or 1.0
        if ref is not None:
            # ...or it lasted or moved as much as the previous one (time- or
            # capacity-limited steps end where the protocol says, not at a voltage)
            t_own, t_ref = (_half_span(series, m, last) for m in (own, before))
            complete[-1] = (abs(end - ref) <= END_TOL * span or t_own[0] >= (1 - END_TOL) * t_ref[0]
                            or t_own[1] >= (1 - END_TOL) * t_ref[1])
    return complete


def _half_span(series, rows, sign):
    """(duration s, charge moved Ah) of the records of ``sign`` among ``rows``."""
    k = np.flatnonzero(rows & (series.sign == sign))
    q = series.q_chg_Ah if sign > 0 else series.q_dch_Ah
    last = min(k[-1] + 1, len(series) - 1)
    return float(series.t_s[last] - series.t_s[k[0]]), float(q[last] - q[k[0]])


def _efficiencies(q_chg, q_dch, e_chg, e_dch, complete, mode):
    ce = _ratio_pct(q_chg, q_dch) if mode == "half" else _ratio_pct(q_dch, q_chg)
    return {"ce_pct": np.where(complete, ce, np.nan),
            "e_chg_mWh": e_chg, "e_dch_mWh": e_dch,
            "ee_pct": np.where(complete, _ratio_pct(e_dch, e_chg), np.nan),
            "v_chg_mean_V": _ratio_pct(e_chg, q_chg) / 100.0,
            "v_dch_mean_V": _ratio_pct(e_dch, q_dch) / 100.0}


def _rates(series, inverse, n, mass, nominal_Ah):
    dch = series.sign < 0
    i_dch = 1e3 * group_median(np.abs(series.i_A[dch]), inverse[dch], n)
    return {"i_dch_median_mA": i_dch, "current_density_mA_g": i_dch / mass,
            "c_rate": i_dch / (1e3 * nominal_Ah) if nominal_Ah else np.full(n, np.nan)}


def cycle_table(series, mass_g=None, mode="half", ref_cycle=None, nominal_Ah=None):
    """Per-cycle table: dict of column name (see COLUMNS) -> numpy array, one row a cycle;
    returns (table, reference cycle number).

    mass_g: active mass in grams (specific columns are NaN without it); nominal_Ah: the
    capacity that defines 1C (``c_rate`` is NaN without it); ref_cycle: the cycle for
    ``retention_ref_pct`` (default: :func:`default_ref_cycle`).
    """
    if mode not in MODES:
        raise InputError(f"mode: must be one of {', '.join(MODES)}, not {mode!r}")
    cycles, inverse = group_index(series.cycle)
    n = len(cycles)
    ref, ref_row = _ref_index(cycles, ref_cycle)
    sums = _per_cycle_sums(series, inverse, n)
    q_chg, q_dch = 1e3 * sums["q_chg_Ah"], 1e3 * sums["q_dch_Ah"]
    first, last = group_first_last(inverse, n)
    mass = float(mass_g) if mass_g else np.nan
    table = {
        "cycle": cycles.astype(np.int64),
        "t_start_s": series.t_s[first],
        "t_end_s": series.t_s[last],
        "records": np.bincount(inverse, minlength=n).astype(np.int64),
        "q_chg_mAh": q_chg, "q_dch_mAh": q_dch,
        "q_chg_mAh_g": q_chg / mass, "q_dch_mAh_g": q_dch / mass,
        **_efficiencies(q_chg, q_dch, 1e3 * sums["e_chg_Wh"], 1e3 * sums["e_dch_Wh"],
                        _complete(series, inverse, n), mode),
        "retention_first_pct": _ratio_pct(q_dch, np.full(n, q_dch[first_row(cycles)])),
        "retention_ref_pct": _ratio_pct(q_dch, np.full(n, q_dch[ref_row])),
        **_rates(series, inverse, n, mass, nominal_Ah),
    }
    return {name: table[name] for name in COLUMNS}, ref


def conventions(mode):
    """The sign and efficiency conventions of ``mode``, for summary.json."""
    common = {"current_sign": "current > 0 charges the cell (BDF)",
              "energy_efficiency": "discharge energy / charge energy (the cell's round trip)",
              "retention": "discharge capacity / that of the first (or reference) cycle",
              "rate": "median |current| of the cycle's discharge samples"}
    if mode == "half":
        return dict(common, mode="half", convention="anode (working electrode vs Li metal)",
                    lithiation="discharge (current < 0): the working electrode takes up Li",
                    delithiation="charge (current > 0): the working electrode gives up Li",
                    coulombic_efficiency="charge / discharge capacity (delithiation / lithiation)")
    return dict(common, mode="full", convention="full cell",
                coulombic_efficiency="discharge / charge capacity")
