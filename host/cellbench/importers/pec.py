"""PEC SBT CSV exports: lines of test information, then a table whose headers carry
their units: ``Total Time (Seconds)``, ``Voltage (mV)``, ``Current (mA)``, ``Cycle``,
``Step``, ``Charge Capacity (mAh)``, ``Discharge Capacity (mAh)``, ``Charge Energy
(mWh)``, ``Discharge Energy (mWh)``. Every value is scaled by its own header's unit.
Current is signed, charge positive.
"""

from ..errors import InputError
from .raw import Raw
from .table import find, integers, optional_si, read_table

FORMAT = "PEC CSV"


def header_row(lines):
    for k, line in enumerate(lines[:60]):
        low = line.lower()
        if "total time" in low and "voltage (" in low and "current (" in low:
            return k
    return None


def detect(lines):
    return header_row(lines) is not None


def read(path, lines):
    df = read_table(path, header_row(lines), ",")
    t, t_h = optional_si(df, "time", "Total Time")
    v, v_h = optional_si(df, "voltage", "Voltage")
    i, i_h = optional_si(df, "current", "Current")
    if t is None or v is None or i is None:
        raise InputError("no Total Time, Voltage or Current column")
    q_chg, _ = optional_si(df, "charge", "Charge Capacity")
    q_dch, _ = optional_si(df, "charge", "Discharge Capacity")
    e_chg, _ = optional_si(df, "energy", "Charge Energy")
    e_dch, _ = optional_si(df, "energy", "Discharge Energy")
    return Raw(t, v, i, step=integers(df, find(df, "Step")), cycle=integers(df, find(df, "Cycle")),
               q_chg_Ah=q_chg, q_dch_Ah=q_dch, e_chg_Wh=e_chg, e_dch_Wh=e_dch,
               columns={"time": t_h, "voltage": v_h, "current": i_h})
