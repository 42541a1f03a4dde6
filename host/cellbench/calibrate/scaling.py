"""Nominal scaling of raw converter codes, as firmware/board.py does it with no calibration.

A calibration is fitted against these nominal values: ``V_true = gain * V_nominal +
offset_V`` and, per current range, ``I_true = gain * I_nominal + offset_A`` (the
calibration file's definitions, boards/README.md). Codes come from the board's ``HIST``
replies (docs/link.md): RP2040 12-bit codes before any correction table, or ADS1115
signed 16-bit codes. Units: V, A (current > 0 charges the cell), codes.
"""

import numpy as np

from ..errors import InputError


def converter(board):
    """``"rp2040"`` or ``"ads1115"``: the converter the firmware samples (board ``measure``)."""
    kind = board.get("measure", "rp2040")
    if kind not in ("rp2040", "ads1115"):
        raise InputError(f"board.measure: unknown converter {kind!r}")
    if kind == "ads1115" and not board.get("ext_adc"):
        raise InputError("board.ext_adc: measure is ads1115 but no ext_adc is fitted")
    return kind


def ranges(board):
    """The board's current ranges, smallest first (the firmware's range index order)."""
    return sorted(board["current"]["ranges"], key=lambda r: r["full_scale_mA"])


def volts_per_code(board):
    """Converter input volts per code: vref/4096 (RP2040) or fsr/32768 (ADS1115)."""
    if converter(board) == "rp2040":
        return float(board["adc"]["vref_V"]) / 4096
    return float(board["ext_adc"]["fsr_V"]) / 32768


def mean_code(hist, correction=None):
    """Mean code of a ``HIST`` reply ``{"lo", "counts"}``; with ``correction`` ({code:
    delta in LSB}, RP2040 only) each code counts as ``code + delta``, as the board reads it."""
    counts = np.asarray(hist["counts"], dtype=float)
    if counts.sum() <= 0:
        raise InputError("HIST: no conversions in the reply")
    codes = int(hist["lo"]) + np.arange(len(counts), dtype=float)
    if correction:
        codes = codes + np.array([float(correction.get(int(c), 0.0)) for c in codes])
    return float(np.dot(codes, counts) / counts.sum())


def cell_V(code, board):
    """Cell voltage (V) for a (mean) voltage-channel code: V_adc / divider."""
    return code * volts_per_code(board) / float(board["voltage"]["divider"])


def cell_A(code, board, k):
    """Cell current (A, > 0 charges) for a current-channel code on range index ``k``."""
    r = ranges(board)[k]
    v_adc = code * volts_per_code(board)
    return (v_adc - float(board["current"]["mid_V"])) / (float(r["sense_ohm"]) * float(r["gain"]))


def code_for_A(i_A, board, k):
    """The (fractional) current-channel code that ``i_A`` on range ``k`` reads nominally."""
    r = ranges(board)[k]
    v_adc = float(board["current"]["mid_V"]) + i_A * float(r["sense_ohm"]) * float(r["gain"])
    return v_adc / volts_per_code(board)


def A_per_code(board, k):
    """Cell amps per current-channel code on range ``k``."""
    r = ranges(board)[k]
    return volts_per_code(board) / (float(r["sense_ohm"]) * float(r["gain"]))
