"""RP2040 ADC non-linearity (erratum RP2040-E11): correction tables from code density.

Code-density test: an input spread uniformly over a span of codes lands in each code
in proportion to that code's width. With widths ``w_k`` (LSB, from the counts) the
input range that reads code ``k`` has its centre at ``edge + sum(w_j, j < k) + w_k / 2``;
the correction ``delta_k`` makes ``k + delta_k`` that centre, i.e. minus the integral
non-linearity. The board adds it to each raw code before scaling (firmware/board.py).

Windows: the errata's wide codes sit at 512, 1536, 2560, 3584; a window of codes around
each is measured and normalised so that its total width equals its number of codes
(the error is local: the wide code's extra width is taken from its neighbours). This
keeps the table sparse and its statistical error small: errors in the widths add up
only across one window, not across 4096 codes.
"""

import json

import numpy as np

from ..errors import InputError
from ..paths import CALIBRATIONS

E11_CODES = (512, 1536, 2560, 3584)
DEFAULT_TABLE = CALIBRATIONS / "default" / "rp2040-e11.json"
MIN_DELTA_LSB = 1 / 32  # the board keeps corrections in 1/16 LSB: smaller rounds to 0


def window_correction(counts, lo, hi):
    """{code: delta LSB} for codes lo..hi from per-code counts (indexable by code).

    The window's edges are taken as ideal: its first code's bin starts at lo - 0.5 and
    the total width of the window is hi - lo + 1 codes.
    """
    c = np.asarray([counts[k] for k in range(lo, hi + 1)], dtype=float)
    if c.sum() <= 0:
        raise InputError(f"adc_correction: no conversions in codes {lo}-{hi}")
    w = c / c.sum() * len(c)
    centre = lo - 0.5 + np.cumsum(w) - w / 2
    return {k: float(centre[k - lo] - k) for k in range(lo, hi + 1)}


def correction_from_counts(counts, windows):
    """Sparse {code: delta LSB} from code counts over several (lo, hi) windows."""
    out = {}
    for lo, hi in windows:
        out.update(window_correction(counts, lo, hi))
    return sparse(out)


def sparse(delta, min_lsb=MIN_DELTA_LSB):
    """Only the corrections the board would not round to zero, rounded to 1/16 LSB."""
    return {int(k): round(float(d) * 16) / 16 for k, d in delta.items() if abs(d) >= min_lsb}


def as_file_table(delta):
    """The calibration file's form: {"code": delta} with string keys, sorted by code."""
    return {str(k): delta[k] for k in sorted(delta)}


def from_file_table(table):
    """{int code: float delta} from a calibration file's ``adc_correction`` (map, list or
    segments, as firmware/board.py reads them)."""
    if isinstance(table, dict) and "segments" in table:
        out = {}
        for first, last, d0, d1 in table["segments"]:
            for c in range(max(0, int(first)), min(4095, int(last)) + 1):
                out[c] = d0 if last == first else d0 + (d1 - d0) * (c - first) / (last - first)
        return sparse(out)
    if isinstance(table, list):
        return {k: float(d) for k, d in enumerate(table) if d}
    return {int(k): float(d) for k, d in (table or {}).items()}


def _published(path):
    """[(first, last, delta LSB)] of the published table file."""
    try:
        spec = json.loads(path.read_text())
        return [(int(a), int(b), float(d)) for a, b, d in spec["segments"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"adc_correction: cannot read the default table {path}: {e}") from None


def _trend(segments):
    """Least-squares (slope, intercept) of the published deltas over all 4096 codes."""
    delta = np.zeros(4096)
    for a, b, d in segments:
        delta[a:b + 1] = d
    return np.polyfit(np.arange(4096, dtype=float), delta, 1)


def default_file_table(path=DEFAULT_TABLE):
    """The published default table for a calibration file, in the segment form
    ``{"segments": [[first, last, delta_first, delta_last], ...]}`` (linear within a
    segment; firmware/board.py expands it into its 8 KB array): the published deltas
    minus their straight line, since the board's gain and offset are calibrated
    separately (per board, with its own reference)."""
    segments = _published(path)
    slope, icpt = _trend(segments)
    return {"segments": [[a, b, round(d - slope * a - icpt, 4), round(d - slope * b - icpt, 4)]
                         for a, b, d in segments]}


def default_correction(path=DEFAULT_TABLE):
    """The default table (see default_file_table) as {code: delta LSB}, 1/16 LSB."""
    return from_file_table(default_file_table(path))
