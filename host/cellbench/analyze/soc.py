"""Coulomb-counted state of charge, the reference the board estimator's SoC is drawn against."""

import numpy as np


def coulomb_soc(series, capacity_Ah, efficiency=1.0):
    """SoC (fraction) by counting charge from the estimator's first estimate.

    soc(t) = soc0 + (efficiency * Q_chg(t) - Q_dch(t) - same at t0) / capacity_Ah, with
    t0 the first record that has an estimate and soc0 that estimate (the count has no
    other anchor); efficiency applies on charge as in the model (docs/design.md).
    Returns None when the log has no estimator SoC or the capacity is unknown.
    """
    if series.soc is None or not capacity_Ah:
        return None
    k0 = int(np.flatnonzero(np.isfinite(series.soc))[0])
    net = efficiency * series.q_chg_Ah - series.q_dch_Ah
    return series.soc[k0] + (net - net[k0]) / capacity_Ah
