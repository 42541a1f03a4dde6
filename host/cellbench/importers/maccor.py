"""Maccor: text exports (``Rec# Cyc# Step TestTime ... Amps Volts State``), tab separated,
after one or two lines of test information.

``Amps`` are magnitudes; ``State`` says C (charge), D (discharge), R (rest), O/S (other).
``Amp-hr``/``Watt-hr`` count the current state's charge and energy and restart with it,
so they are split by state into charge and discharge counters. Times are seconds
(``Test (Sec)``) or ``Nd hh:mm:ss.s`` (``TestTime``); ``DPt Time`` is the wall clock.

Maccor's own binary data files (same numbered names, ``.001``...) are recognised and
refused with what to do instead: see :func:`read_raw`.
"""

import re

import numpy as np

from ..errors import InputError
from .raw import Raw, step_labels
from .table import as_text, find, integers, read_table
from .units import durations_s, numbers, timestamps_s

FORMAT = "Maccor text"
FORMAT_RAW = "Maccor raw data file"
RAW_SUFFIX = re.compile(r"^\.\d{3}$")     # MacTest numbers a test's files .001, .002, ...


def is_raw(path, lines):
    """A numbered Maccor file (``.001``...) that is binary: the tester's own raw data."""
    return bool(RAW_SUFFIX.match(path.suffix)) and not lines


def read_raw(path):
    """Refused: Maccor publishes no description of its binary data files and no public
    sample of one exists to check a reader against; Maccor's own reader is a Windows
    DLL (MacReadDataFileLIB). MacTest/MIMS export the same data as text, read above."""
    raise InputError("binary Maccor data files cannot be read here (the format is not published); "
                     "export the test as text (MacTest/MIMS: tab-delimited ASCII) and import that")


def header_row(lines):
    """Index of the ``Rec#`` header line, or None."""
    for k, line in enumerate(lines[:10]):
        if line.startswith("Rec#") and "Cyc#" in line:
            return k
    return None


def detect(lines):
    return header_row(lines) is not None


def read(path, lines):
    df = read_table(path, header_row(lines), "\t", encoding="cp1252")
    t_h = find(df, "Test (Sec)", "Test", "TestTime", required="test time")
    t = durations_s(df[t_h])
    v_h, i_h = find(df, "Volts", required="Volts"), find(df, "Amps", required="Amps")
    v, i = numbers(df[v_h]), numbers(df[i_h])
    state = as_text(df, find(df, "State", required="State"))
    kinds = step_labels(state)
    chg, dch = kinds == "CC_CHG", kinds == "CC_DCH"
    i = np.where(dch, -np.abs(i), np.where(chg, np.abs(i), i))
    counters = {}
    for key, name in (("q", "Amp-hr"), ("e", "Watt-hr")):
        h = find(df, name)
        if h is not None:
            x = np.abs(numbers(df[h]))
            counters[key] = (np.where(chg, x, 0.0), np.where(dch, x, 0.0))
    date = find(df, "DPt Time")
    unix = None
    if date is not None:
        try:
            unix = timestamps_s(df[date])
        except InputError:
            unix = None      # a wall clock we cannot parse is not worth refusing the file
    q = counters.get("q", (None, None))
    e = counters.get("e", (None, None))
    if not np.isfinite(t).any():
        raise InputError(f"column {t_h!r}: no times")
    return Raw(t, v, i, step_type=kinds, step=integers(df, find(df, "Step")),
               cycle=integers(df, find(df, "Cyc#")), unix_s=unix,
               q_chg_Ah=q[0], q_dch_Ah=q[1], e_chg_Wh=e[0], e_dch_Wh=e[1],
               columns={"time": t_h, "voltage": v_h, "current": i_h})
