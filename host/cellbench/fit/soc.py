"""State of charge along each log, by coulomb counting from anchors.

The log with the low-rate cycle defines SoC: a large sweep that ends at its top voltage
leaves the cell at SoC 1, one that ends at the bottom at SoC 0, less the charge beyond
the cut-off when a rest after it shows it (SoC 0 and 1 are the rested limits). Only sweeps that moved a
sizeable charge count (a short pulse can hit a limit through its IR drop alone).

Other logs are anchored by relaxed voltages at the end of rests where the OCV is steep
(no IR drop to guess, and 1 mV of error is a tiny SoC error there); failing that by their
window-limit sweep ends, placed where ``OCV(z) = V - I * R_dc`` once the resistance is
known (second pass); failing that by their first voltage through the OCV. Sweep-end
anchors of another log must agree within ``AGREE_SOC`` (or be ``MANY_ANCHORS``); between
anchors the starting SoC moves linearly (:func:`_anchored`), so a long log's drift is
taken out at every limit. Only sweeps up to about C/2 anchor. Charge current counts with
the coulombic efficiency, as in the model.
"""

import numpy as np

from .capacity import (
    LARGE_SWEEP,
    MAX_RATE_C,
    beyond_cutoff_Ah,
    ends_at,
    rate_C,
    window_tolerance_V,
)
from .data import SECONDS_PER_HOUR, Log

AGREE_SOC = 0.05
MAX_ANCHOR_RATE_C = 0.55  # sweeps up to about C/2 anchor SoC at their cut-off
MANY_ANCHORS = 4          # this many window-limit anchors follow a drift rather than agree
STEEP_V_PER_SOC = 2.0     # 20 mV per % SoC: 1 mV of error is 0.05 % SoC
MIN_REST_SAMPLES = 10


def counted_Ah(log: Log, eta: float) -> np.ndarray:
    """Charge stored since the first sample (Ah): charge current weighted by eta, each
    interval's charge as the log counts it (:attr:`.data.Log.run_A`: a tester's counter
    where it has one, not the record's current held over the interval after it)."""
    run = log.run_A[:-1]
    w = np.where(run > 0, eta, 1.0)
    return np.concatenate(([0.0], np.cumsum(w * run * np.diff(log.t_s)))) / SECONDS_PER_HOUR


def _end_soc(log: Log, sweep, end: int, capacity_Ah: float, ocv_soc, ocv_V, r_dc_ohm,
             defining: bool = False, full: bool = True) -> float:
    """SoC at the cut-off of ``sweep``, which ended at the window limit ``end`` (+1 top, -1
    bottom). SoC 0 and 1 are the rested limits, so the cut-off sits inside them by the
    charge beyond it (:func:`.capacity.beyond_cutoff_Ah`, from the rest after it); without
    such a rest, at the limit itself, or (``r_dc_ohm`` known) where the OCV meets the
    cut-off voltage less its IR drop. Sweeps faster than C/5 keep the old rule: the
    fallback's capacity does not count the charge beyond them. ``full``: the sweep started
    at the other limit (its own charge is the window the charge beyond is judged against;
    a partial sweep's is ``capacity_Ah``).

    In the ``defining`` log a low-rate sweep without such a rest ends at the limit
    itself: its cut-offs are what SoC 0 and 1 mean (its charge is the capacity), and
    ``OCV(z) = V - I * R_dc`` would read the branch's hysteresis as IR drop: on the
    Arbin half cell (0.2 V between its C/10 branches, R_dc 1.2 kohm from the edges)
    it put the C/5 discharges' ends at SoC 0.78 and the fit's count out of phase.
    """
    low = rate_C(log, sweep) <= MAX_RATE_C
    # Only low-rate cut-offs: after the fast fallback SoC 0 and 1 are that cycle's cut-offs.
    beyond = beyond_cutoff_Ah(log, sweep, sweep.charge_Ah if full else capacity_Ah) if low else None
    k = sweep.stop - 1
    if beyond is not None:
        return 1.0 - beyond / capacity_Ah if end > 0 else beyond / capacity_Ah
    if r_dc_ohm is None or (defining and low):
        return 1.0 if end > 0 else 0.0
    return float(np.interp(log.v_V[k] - log.i_A[k] * r_dc_ohm, ocv_V, ocv_soc))


def _rest_starts(log: Log, q: np.ndarray, ocv_soc, ocv_V) -> list:
    """Starting-SoC estimates from relaxed rests on steep parts of the OCV.

    Where the OCV is steep (at least ``STEEP_V_PER_SOC``) a relaxed voltage pins the SoC
    to well under 1 %, whatever the IR drop of the step before; on a plateau it cannot.
    """
    slope = np.gradient(np.asarray(ocv_V), np.asarray(ocv_soc))
    out = []
    for step in log.steps:
        if step.sign == 0 and step.stop - step.start >= MIN_REST_SAMPLES:
            k = step.stop - 1
            z = float(np.interp(log.v_V[k], ocv_V, ocv_soc))
            if np.interp(z, ocv_soc, slope) >= STEEP_V_PER_SOC:
                out.append(z - q[k])
    return out


def _ends_in(log: Log, sweep, window_V) -> int:
    """+1/-1 if ``sweep`` ended at the top/bottom of ``window_V`` (the defining log's),
    else 0; without a window, at the limits of its own log (:func:`.capacity.ends_at`)."""
    if window_V is None:
        return ends_at(log, sweep)
    v_end, tol = float(log.v_V[sweep.stop - 1]), window_tolerance_V(log)
    if sweep.sign > 0 and v_end >= window_V[1] - tol:
        return 1
    if sweep.sign < 0 and v_end <= window_V[0] + tol:
        return -1
    return 0


def _sweep_starts(log: Log, q: np.ndarray, capacity_Ah: float, ocv_soc, ocv_V, r_dc_ohm, window_V=None,
                  max_rate_C=MAX_ANCHOR_RATE_C, defining=False) -> tuple:
    """(sample indices, starting-SoC estimates) from large sweeps cut off at the window limits."""
    at, starts = [], []
    biggest = max((sw.charge_Ah for sw in log.sweeps), default=0.0)
    for n, sweep in enumerate(log.sweeps):
        # Only large sweeps anchor: a pulse cut off by its IR drop is nowhere near the end.
        end = _ends_in(log, sweep, window_V) if sweep.charge_Ah >= LARGE_SWEEP * biggest else 0
        # A fast sweep's cut-off is far from the limit's SoC (diffusion, not only IR).
        end = end if rate_C(log, sweep) <= max_rate_C else 0
        if end:
            k = sweep.stop - 1
            at.append(k)
            full = n > 0 and _ends_in(log, log.sweeps[n - 1], window_V) == -end
            starts.append(_end_soc(log, sweep, end, capacity_Ah, ocv_soc, ocv_V, r_dc_ohm, defining, full) - q[k])
    return at, starts


def _anchored(q: np.ndarray, at: list, starts: list) -> np.ndarray:
    """The count ``q`` plus a starting SoC that moves linearly from one anchor to the
    next (constant before the first and after the last): a long log's drift (efficiency
    below 1, fade, current offset) is taken out at every anchor instead of piling up."""
    if np.ptp(starts) <= AGREE_SOC / 10:
        return float(np.mean(starts)) + q
    return q + np.interp(np.arange(q.size), at, starts)


def trace(log: Log, capacity_Ah: float, eta: float, ocv_soc, ocv_V, r_dc_ohm=None,
          defining: bool = False, window_V=None, max_rate_C=MAX_ANCHOR_RATE_C) -> tuple:
    """(soc array, how it was anchored) for ``log``; sweeps up to ``max_rate_C`` anchor.

    ``defining``: the log holds the low-rate cycle that defines SoC 0 and 1 (its sweep
    ends are the anchors by definition); the others' sweep ends count only at that
    log's limits ``window_V`` (a sweep that ends at the bottom of its own log may be far
    from empty). Other logs are anchored by relaxed rests on
    steep OCV, else by their sweep ends (``r_dc_ohm`` corrects those for the IR drop),
    else by their first voltage.
    """
    q = counted_Ah(log, eta) / capacity_Ah
    at, sweeps = _sweep_starts(log, q, capacity_Ah, ocv_soc, ocv_V, r_dc_ohm, None if defining else window_V,
                               max_rate_C, defining)
    if defining and sweeps:
        return _anchored(q, at, sweeps), f"the window limits of its sweeps ({len(sweeps)} anchors)"
    rests = _rest_starts(log, q, ocv_soc, ocv_V)
    if rests:
        return float(np.median(rests)) + q, f"relaxed voltages on steep OCV ({len(rests)} rests)"
    if sweeps and (np.ptp(sweeps) <= AGREE_SOC or len(sweeps) >= MANY_ANCHORS):
        return _anchored(q, at, sweeps), f"window limits ({len(sweeps)} anchors)"
    z0 = float(np.interp(log.v_V[0], ocv_V, ocv_soc))
    return z0 + q, "first voltage through the OCV (no consistent window anchors)"
