"""Novonix HPC CSV: a ``[Summary]`` block (mass, capacity, start), the protocol, then
``[Data]`` with ``Run Time (h)``, ``Current (A)``, ``Potential (V)``, ``Capacity (Ah)``
(per step), ``Energy (Wh)``, ``Cycle Number``, ``Step Number``. Some files quote each
whole line. Current is signed, charge positive.
"""

import numpy as np

from ..errors import InputError
from .derive import step_types
from .raw import Raw
from .table import find, integers, optional_si, read_text
from .units import timestamps_s

FORMAT = "Novonix CSV"


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
    q, _ = optional_si(df, "charge", "Capacity")
    e, _ = optional_si(df, "energy", "Energy")
    sign = np.char.find(step_types(None, step, i), "DCH") >= 0
    chg = np.char.find(step_types(None, step, i), "_CHG") >= 0
    split = lambda x: (None, None) if x is None else (np.where(chg, np.abs(x), 0.0), np.where(sign, np.abs(x), 0.0))
    date = find(df, "Date and Time")
    unix = None
    if date is not None:
        try:
            unix = timestamps_s(df[date], fmt="%Y-%m-%d %I:%M:%S %p")
        except InputError:
            unix = None
    return Raw(t, v, i, step=step, cycle=integers(df, find(df, "Cycle Number")), unix_s=unix,
               q_chg_Ah=split(q)[0], q_dch_Ah=split(q)[1], e_chg_Wh=split(e)[0], e_dch_Wh=split(e)[1],
               columns={"time": t_h, "voltage": v_h, "current": i_h}, meta=meta)
