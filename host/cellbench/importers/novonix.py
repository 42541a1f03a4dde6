"""Novonix HPC CSV: a ``[Summary]`` block (mass, capacity, start), the protocol, then
``[Data]`` with ``Run Time (h)``, ``Current (A)``, ``Potential (V)``, ``Capacity (Ah)``,
``Energy (Wh)``, ``Cycle Number``, ``Step Type`` (a code, :data:`STEP_CODES`) and
``Step Number`` (the protocol step's ordinal). Some files quote each whole line.
Current is signed, charge positive.

``Capacity``/``Energy`` are magnitudes that count on through consecutive steps of one
direction (a CC-CV charge's CC and CV phases, then a CC charge) and restart at 0; they
are split into charge and discharge counters by the record's step type.
"""

import numpy as np

from ..errors import InputError
from .derive import step_types
from .raw import Raw
from .table import find, integers, optional_si, read_text
from .units import numbers, timestamps_s

FORMAT = "Novonix CSV"

# The data's ``Step Type`` codes (as BEEP's novonix_conversion.yaml and preparenovonix
# name them): 0 open-circuit storage, 1/2 constant-current charge/discharge, 7/8 the CC
# and CV phases of a CC-CV charge, 9/10 those of a CC-CV discharge. Both phases of a
# CC-CV step are one protocol step (one Step Number), so they map to one BDF type.
# Other codes (none seen in public files) are left "" for derive.step_types to fill.
STEP_CODES = {0: "REST", 1: "CC_CHG", 2: "CC_DCH", 7: "CCCV_CHG", 8: "CCCV_CHG",
              9: "CCCV_DCH", 10: "CCCV_DCH"}


def step_codes(codes):
    """BDF step types of Novonix ``Step Type`` codes ("" for codes not in STEP_CODES)."""
    c = np.nan_to_num(np.asarray(codes, dtype=float), nan=-1.0)
    out = np.full(c.size, "", dtype="<U8")
    for code, name in STEP_CODES.items():
        out[c == code] = name
    return out


def _held(values, mine):
    """``values`` where ``mine``, elsewhere the last of them before (0 before the first):
    one direction's counter through the other direction's records and rests."""
    last = np.maximum.accumulate(np.where(mine, np.arange(values.size), -1))
    return np.where(last >= 0, values[np.maximum(last, 0)], 0.0)


def by_direction(counter, kinds):
    """(charge, discharge) counters from one magnitude counter and the step types."""
    if counter is None:
        return None, None
    x = np.abs(np.nan_to_num(np.asarray(counter, dtype=float)))
    return _held(x, np.char.endswith(kinds, "_CHG")), _held(x, np.char.endswith(kinds, "_DCH"))


def detect(lines):
    return bool(lines) and lines[0].strip().strip('"') == "[Summary]" and any("Novonix" in l for l in lines[:5])


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    try:
        start = next(k for k, l in enumerate(lines) if l.strip().strip('"') == "[Data]") + 1
    except StopIteration:
        raise InputError("no [Data] section") from None
    meta = {}
    for line in lines[:start]:
        key, _, value = line.partition(":")
        if key.strip() == "Mass (g)":
            meta["mass_g_in_file"] = value.strip()
    body = "\n".join(l[1:-1] if l.startswith('"') and l.endswith('"') else l for l in lines[start:] if l.strip())
    df = read_text(body, ",")
    t, t_h = optional_si(df, "time", "Run Time")
    v, v_h = optional_si(df, "voltage", "Potential", "Voltage")
    i, i_h = optional_si(df, "current", "Current")
    if t is None or v is None or i is None:
        raise InputError("no Run Time, Potential or Current column")
    step = integers(df, find(df, "Step Number"))
    code = find(df, "Step Type")
    given = step_codes(numbers(df[code])) if code is not None else None
    kinds = step_types(given, step, i)
    q, _ = optional_si(df, "charge", "Capacity")
    e, _ = optional_si(df, "energy", "Energy")
    (q_chg, q_dch), (e_chg, e_dch) = by_direction(q, kinds), by_direction(e, kinds)
    date = find(df, "Date and Time")
    unix = None
    if date is not None:
        try:
            unix = timestamps_s(df[date], fmt="%Y-%m-%d %I:%M:%S %p")
        except InputError:
            unix = None
    return Raw(t, v, i, step_type=given, step=step, cycle=integers(df, find(df, "Cycle Number")), unix_s=unix,
               q_chg_Ah=q_chg, q_dch_Ah=q_dch, e_chg_Wh=e_chg, e_dch_Wh=e_dch,
               columns={"time": t_h, "voltage": v_h, "current": i_h}, meta=meta)
