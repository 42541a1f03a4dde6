"""The SoC count's own drift, as columns beside the cell model in the fit (refine, structure).

The fit's SoC along a log is counted charge anchored at the low-rate sweeps' window limits;
after the last anchor nothing corrects the count. Its drift is the log's, not the cell's:
fitted so it does not bend the cell's parameters, and left out of the model.
"""

import numpy as np

SLOPE_STEP = 0.01          # SoC step of the OCV slope's central difference


def columns(rows, slow: list, ocv_fn) -> list:
    """The count's drift after the last low-rate sweep of each log, as four columns over
    ``rows`` (refine.Rows; ``slow``: per log, the sweeps' samples; ``ocv_fn``: OCV(z), V).

    soc.trace anchors the SoC at the sweeps' window limits; after the last one it only
    counts charge, and a current-sense offset (0.2 % of 1C is 0.2 % SoC an hour) or an
    efficiency a little off moves it: after 8 h of pulse train, 1 % SoC on the PyBaMM
    NMC811 cell. The fit then reads ``v - OCV(z)`` off by ``OCV'(z) * dz``, 5-10 mV on a
    sloped cell, and bends the resistances and time constants to it. Here
    ``dz = a + b * hours since the sweep`` (a sense offset, and where the count starts)
    enters the fit as ``OCV'(z) * 1`` and ``OCV'(z) * hours``, each with both signs (the
    fit is non-negative). A log without a sweep gets none (nothing in it separates an
    offset of its SoC from the OCV), and neither does a log counted by a tester's own
    counter (data.Log.counter_Ah): the tester integrated what the cell passed, and its rest
    offset is taken out at load, so what the count leaves after the last anchor is the
    cell's own (later cycles' fade and efficiency), which a replay and the filter meet as
    well; fitted away here it would be missing from the held-out error the model states
    (the BattMo log: replay 30.6 mV against 26.9 stated).
    """
    z = rows.z
    slope = (ocv_fn(np.minimum(z + SLOPE_STEP, 1.0)) - ocv_fn(np.maximum(z - SLOPE_STEP, 0.0))) / (
        np.minimum(z + SLOPE_STEP, 1.0) - np.maximum(z - SLOPE_STEP, 0.0))

    def hours_after(log, mask):
        """Hours since the last sample of ``mask`` after it, NaN up to it (all without one,
        and all for a log counted by a tester's counter)."""
        end = np.flatnonzero(mask)
        if end.size == 0 or log.counter_Ah is not None:
            return np.full(log.t_s.size, np.nan)
        h = (log.t_s - log.t_s[end[-1]]) / 3600.0
        return np.where(np.arange(log.t_s.size) > end[-1], h, np.nan)

    hours = np.concatenate([hours_after(log, np.asarray(m, dtype=bool))[p]
                            for log, m, p in zip(rows.logs, slow, rows.picks)])
    after = np.isfinite(hours)
    if not np.any(after & rows.fit):
        return []
    level, ramp = slope * after, slope * np.nan_to_num(hours)
    return [level, -level, ramp, -ramp]
