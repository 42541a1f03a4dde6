"""State of charge along each log, by coulomb counting from window anchors.

A sweep that ends at its log's top voltage leaves the cell at SoC 1, one that ends at the
bottom at SoC 0 (the low-rate cycle defines SoC that way); only sweeps that moved a
sizeable charge count (a short pulse can hit a limit through its IR drop alone). Once the resistance is known
(second pass) the end is placed more exactly: a sweep cut off at ``V`` while passing
``I`` stopped where ``OCV(z) = V - I * R_dc``, short of the limit by the IR drop, more so
at higher rates. Each such end gives a value
for the log's starting SoC; they must agree within ``AGREE_SOC`` (a pulse log that never
reaches the window has a "top" and "bottom" that are only pulse ends, and they disagree).
Logs other than the one with the low-rate cycle are better anchored by relaxed voltages
at the end of rests where the OCV is steep (no IR drop to guess); without any of these
the first sample is taken as rested and its voltage inverted through the OCV table. Charge current counts with the coulombic efficiency, as in the
model.
"""

import numpy as np

from .capacity import LARGE_SWEEP, ends_at
from .data import SECONDS_PER_HOUR, Log

AGREE_SOC = 0.05
STEEP_V_PER_SOC = 2.0     # 20 mV per % SoC: 1 mV of error is 0.05 % SoC
MIN_REST_SAMPLES = 10


def counted_Ah(log: Log, eta: float) -> np.ndarray:
    """Charge stored since the first sample (Ah): charge current weighted by eta."""
    w = np.where(log.i_A[:-1] > 0, eta, 1.0)
    return np.concatenate(([0.0], np.cumsum(w * log.i_A[:-1] * np.diff(log.t_s)))) / SECONDS_PER_HOUR


def _end_soc(log: Log, k: int, end: int, ocv_soc, ocv_V, r_dc_ohm) -> float:
    if r_dc_ohm is None:
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


def _sweep_starts(log: Log, q: np.ndarray, ocv_soc, ocv_V, r_dc_ohm) -> list:
    """Starting-SoC estimates from large sweeps cut off at the window limits."""
    starts = []
    biggest = max((sw.charge_Ah for sw in log.sweeps), default=0.0)
    for sweep in log.sweeps:
        # Only large sweeps anchor: a pulse cut off by its IR drop is nowhere near the end.
        end = ends_at(log, sweep) if sweep.charge_Ah >= LARGE_SWEEP * biggest else 0
        if end:
            k = sweep.stop - 1
            starts.append(_end_soc(log, k, end, ocv_soc, ocv_V, r_dc_ohm) - q[k])
    return starts


def trace(log: Log, capacity_Ah: float, eta: float, ocv_soc, ocv_V, r_dc_ohm=None,
          defining: bool = False) -> tuple:
    """(soc array, how it was anchored) for ``log``.

    ``defining``: the log holds the low-rate cycle that defines SoC 0 and 1 (its sweep
    ends are the anchors by definition). Other logs are anchored by relaxed rests on
    steep OCV, else by their sweep ends (``r_dc_ohm`` corrects those for the IR drop),
    else by their first voltage.
    """
    q = counted_Ah(log, eta) / capacity_Ah
    sweeps = _sweep_starts(log, q, ocv_soc, ocv_V, r_dc_ohm)
    if defining and sweeps and np.ptp(sweeps) <= AGREE_SOC:
        return float(np.mean(sweeps)) + q, f"the low-rate cycle's limits ({len(sweeps)} anchors)"
    rests = _rest_starts(log, q, ocv_soc, ocv_V)
    if rests:
        return float(np.median(rests)) + q, f"relaxed voltages on steep OCV ({len(rests)} rests)"
    if sweeps and np.ptp(sweeps) <= AGREE_SOC:
        return float(np.mean(sweeps)) + q, f"window limits ({len(sweeps)} anchors)"
    z0 = float(np.interp(log.v_V[0], ocv_V, ocv_soc))
    return z0 + q, "first voltage through the OCV (no consistent window anchors)"
