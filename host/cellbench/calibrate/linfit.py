"""Least-squares gain and offset of one measurement path, with plausibility checks.

``reference = gain * measured + offset`` (the calibration file's convention). A gain far
from 1 means a wrong reference reading, a wrong wire or a wrong board file, not a board
that needs correcting, so it is refused with an InputError naming the field.
"""

import numpy as np

from ..errors import InputError

GAIN_MIN = 0.8
GAIN_MAX = 1.2


def fit_line(measured, reference, field, max_offset):
    """Fit ``reference = gain * measured + offset``; returns {gain, offset, residuals}.

    measured, reference: sequences in the same unit (V or A). residuals: reference -
    fitted, per point, in that unit. field: name for errors ("voltage", "current.2mA").
    max_offset: largest plausible |offset| in that unit. Needs two or more points at
    clearly different levels; one level cannot separate gain from offset.
    """
    x = np.asarray(measured, dtype=float)
    y = np.asarray(reference, dtype=float)
    if x.shape != y.shape or x.size < 2:
        raise InputError(f"{field}: need at least 2 reference points, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise InputError(f"{field}: reference or measured values are not finite numbers")
    span = np.ptp(x)
    if span <= 1e-3 * max(np.max(np.abs(x)), max_offset):
        raise InputError(f"{field}: the points must be at different levels to fit a gain")
    a = np.column_stack([x, np.ones_like(x)])
    (gain, offset), *_ = np.linalg.lstsq(a, y, rcond=None)
    if not GAIN_MIN <= gain <= GAIN_MAX:
        raise InputError(f"{field}.gain: {gain:.4f} outside {GAIN_MIN}-{GAIN_MAX}: "
                         "check the reference readings, their units and the wiring")
    if abs(offset) > max_offset:
        raise InputError(f"{field}.offset: {offset:.4g} beyond the plausible {max_offset:.3g}: "
                         "check the reference readings and the wiring")
    return {"gain": float(gain), "offset": float(offset), "residuals": y - (gain * x + offset)}
