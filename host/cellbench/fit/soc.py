"""State of charge along each log, by coulomb counting from window anchors.

A sweep that ends at its log's top voltage leaves the cell at SoC 1, one that ends at the
bottom at SoC 0 (the low-rate cycle defines SoC that way); only sweeps that moved a
sizeable charge count (a short pulse can hit a limit through its IR drop alone). Once the resistance is known
(second pass) the end is placed more exactly: a sweep cut off at ``V`` while passing
``I`` stopped where ``OCV(z) = V - I * R_dc``, short of the limit by the IR drop, more so
at higher rates. Each such end gives a value
for the log's starting SoC; they must agree within ``AGREE_SOC`` (a pulse log that never
reaches the window has a "top" and "bottom" that are only pulse ends, and they disagree).
Without usable anchors the first sample is taken as rested and its voltage inverted
through the OCV table. Charge current counts with the coulombic efficiency, as in the
model.
"""

import numpy as np

from .capacity import LARGE_SWEEP, ends_at
from .data import SECONDS_PER_HOUR, Log

AGREE_SOC = 0.05


def counted_Ah(log: Log, eta: float) -> np.ndarray:
    """Charge stored since the first sample (Ah): charge current weighted by eta."""
    w = np.where(log.i_A[:-1] > 0, eta, 1.0)
    return np.concatenate(([0.0], np.cumsum(w * log.i_A[:-1] * np.diff(log.t_s)))) / SECONDS_PER_HOUR


def _end_soc(log: Log, k: int, end: int, ocv_soc, ocv_V, r_dc_ohm) -> float:
    if r_dc_ohm is None:
        return 1.0 if end > 0 else 0.0
    return float(np.interp(log.v_V[k] - log.i_A[k] * r_dc_ohm, ocv_V, ocv_soc))


def trace(log: Log, capacity_Ah: float, eta: float, ocv_soc, ocv_V, r_dc_ohm=None) -> tuple:
    """(soc array, how it was anchored) for ``log``; ``r_dc_ohm`` refines the anchors."""
    q = counted_Ah(log, eta) / capacity_Ah
    starts = []
    biggest = max((sw.charge_Ah for sw in log.sweeps), default=0.0)
    for sweep in log.sweeps:
        # Only large sweeps anchor: a pulse cut off by its IR drop is nowhere near the end.
        end = ends_at(log, sweep) if sweep.charge_Ah >= LARGE_SWEEP * biggest else 0
        if end:
            k = sweep.stop - 1
            starts.append(_end_soc(log, k, end, ocv_soc, ocv_V, r_dc_ohm) - q[k])
    if starts and np.ptp(starts) <= AGREE_SOC:
        return float(np.mean(starts)) + q, f"window limits ({len(starts)} anchors)"
    z0 = float(np.interp(log.v_V[0], ocv_V, ocv_soc))
    return z0 + q, "first voltage through the OCV (no consistent window anchors)"
