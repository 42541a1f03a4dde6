"""What kind of cell a log is, and how its charges and discharges pair into cycles.

Two kinds, as the battery tools name them:

* ``half``: a working electrode that takes up lithium on discharge (graphite, Si, LTO...)
  against a Li metal counter electrode. It is lithiated first, so a cycle is a
  discharge (lithiation) then a charge (delithiation), and CE = charge / discharge.
* ``full``: a cell with two insertion electrodes (or a cathode against Li, which follows
  the same convention): a cycle is a charge then a discharge, and CE = discharge / charge.

Without ``--mode`` the sidecar decides when it names the chemistry: the estimator
model's, the simulated cell's, or a protocol sample named "<electrode>/Li ..."
("<electrode>/Li" is a half cell); otherwise the data do: a cell whose first active step
discharges and whose voltage falls below ANODE_MAX_V (but not below PLATING_MIN_V: a
negative cell is wired another way) is an anode against Li (no full
cell is cycled down there), anything else is cycled as a full cell.
"""

import json
import re
from pathlib import Path

import numpy as np

from ..errors import InputError

MODES = ("half", "full")
ANODE_MAX_V = 0.8      # V: only an anode against Li metal is cycled below this
PLATING_MIN_V = -0.05  # V: an anode vs Li may overshoot below 0 V a little, not further


_HALF_NAME = re.compile(r"[A-Za-z0-9]+\s*/\s*Li\b")


def _dig(doc, *keys):
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def _sim_chemistry(sidecar):
    """The simulated cell's chemistry, from the model file the sidecar names (if it is here)."""
    path = _dig(sidecar, "sim", "cell_file")
    if not isinstance(path, str):
        return None
    try:
        return _dig(json.loads(Path(path).read_text()), "cell", "chemistry")
    except (OSError, ValueError):
        return None


def _chemistry(sidecar):
    """(chemistry text, where it was found) from the sidecar, or (None, None)."""
    for where, value in (("sidecar model chemistry", _dig(sidecar, "model", "cell", "chemistry")),
                         ("simulated cell chemistry", _sim_chemistry(sidecar))):
        if isinstance(value, str) and value.strip():
            return value, where
    name = _dig(sidecar, "protocol", "sample", "name")
    if isinstance(name, str) and _HALF_NAME.search(name):
        return _HALF_NAME.search(name).group(0), "protocol sample name"
    return None, None


def decide(mode, series, sidecar):
    """(mode, the reason in words)."""
    if mode is not None:
        if mode not in MODES:
            raise InputError(f"mode: must be half or full, not {mode!r}")
        return mode, "given with --mode"
    chem, where = _chemistry(sidecar)
    if chem:
        if chem.replace(" ", "").endswith("/Li"):
            return "half", f"{where} {chem} (working electrode vs Li)"
        return "full", f"{where} {chem}"
    nz = np.flatnonzero(series.sign)
    if len(nz) == 0:
        return "full", "no charge or discharge in the log (full-cell convention)"
    v_min = float(np.min(series.v_V[series.sign != 0]))
    if series.sign[nz[0]] < 0 and PLATING_MIN_V <= v_min < ANODE_MAX_V:
        return "half", f"first step discharges and the voltage reaches {v_min:.3g} V (< {ANODE_MAX_V} V): an anode vs Li"
    return "full", (f"lowest voltage under current {v_min:.3g} V (not within {PLATING_MIN_V} to {ANODE_MAX_V} V): not an anode vs Li"
                    if series.sign[nz[0]] < 0 else "first active step charges")


def lead_sign(mode):
    """The sign of the half that opens a cycle: discharge for a half cell, charge for a full one."""
    return -1 if mode == "half" else 1


def _consistent(cycle, sign, lead):
    """True when every cycle's first active record has the lead sign, except a first cycle
    that holds only the other half (a formation or a pre-charged cell's first discharge)."""
    nz = np.flatnonzero(sign)
    if len(nz) == 0:
        return True
    c, s = cycle[nz], sign[nz]
    firsts = np.flatnonzero(np.concatenate(([True], c[1:] != c[:-1])))
    opening = s[firsts]
    if len(opening) and opening[0] != lead:
        only_other = not np.any(s[c == c[firsts[0]]] == lead)
        opening = opening[1:] if only_other else opening
    return bool(np.all(opening == lead))


def pair(series, mode):
    """(cycle number per record, how they were made). The log's own cycles when they open
    with the kind's lead half; else re-paired: a cycle starts where the lead half starts
    after the other half ran, and a lone other half before the first lead is cycle 0."""
    lead = lead_sign(mode)
    if series.sources.get("cycle") == "log" and _consistent(series.cycle, series.sign, lead):
        return series.cycle, "the log's own cycle numbers"
    nz = np.flatnonzero(series.sign)
    if len(nz) == 0:
        return np.ones(len(series), dtype=np.int64), "one cycle (no current)"
    s = series.sign[nz]
    starts = nz[1:][(s[1:] == lead) & (s[:-1] == -lead)]
    marks = np.zeros(len(series), dtype=np.int64)
    marks[starts] = 1
    base = 0 if s[0] == -lead else 1
    words = "discharge then charge" if lead < 0 else "charge then discharge"
    return base + np.cumsum(marks), f"re-paired for a {mode} cell: {words}"
