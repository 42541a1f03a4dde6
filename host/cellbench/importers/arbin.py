"""Arbin: CSV/XLSX exports of MITS Pro, and .res (an MS Access database) through mdbtools.

Columns: ``Test_Time(s)`` or ``Test_Time``, ``Current(A)``/``Current``,
``Voltage(V)``/``Voltage``, ``Step_Index``, ``Cycle_Index``, ``Charge_Capacity(Ah)``,
``Discharge_Capacity(Ah)``, ``Charge_Energy(Wh)``, ``Discharge_Energy(Wh)``, ``DateTime``
(Unix seconds) or ``Date_Time`` (text). Headers without a unit are in Arbin's SI units.
Current is signed, charge positive. Blank ``Step_Index``/``Cycle_Index`` cells (records
logged between steps) take the values of the record before.
"""

import io
import shutil
import subprocess

from ..errors import InputError
from .raw import Raw
from .table import find, integers, optional_si
from .units import numbers, timestamps_s

FORMAT_CSV = "Arbin CSV/XLSX export"
FORMAT_RES = "Arbin .res"


def detect(lines):
    head = lines[0] if lines else ""
    return "Cycle_Index" in head and ("Test_Time" in head or "Data_Point" in head)


def from_frame(df):
    t, t_h = optional_si(df, "time", "Test_Time", default_unit="s")
    v, v_h = optional_si(df, "voltage", "Voltage", default_unit="V")
    i, i_h = optional_si(df, "current", "Current", default_unit="A")
    if t is None or v is None or i is None:
        raise InputError("no Test_Time, Voltage or Current column")
    stamp = find(df, "DateTime", "Date_Time")
    unix = None
    if stamp is not None:
        values = numbers(df[stamp])
        unix = values if values.size and values[0] > 1e8 else timestamps_s(df[stamp])
    q_chg, _ = optional_si(df, "charge", "Charge_Capacity", default_unit="Ah")
    q_dch, _ = optional_si(df, "charge", "Discharge_Capacity", default_unit="Ah")
    e_chg, _ = optional_si(df, "energy", "Charge_Energy", default_unit="Wh")
    e_dch, _ = optional_si(df, "energy", "Discharge_Energy", default_unit="Wh")
    return Raw(t, v, i, step=integers(df, find(df, "Step_Index")),
               cycle=integers(df, find(df, "Cycle_Index")), unix_s=unix,
               q_chg_Ah=q_chg, q_dch_Ah=q_dch, e_chg_Wh=e_chg, e_dch_Wh=e_dch,
               columns={"time": t_h, "voltage": v_h, "current": i_h})


def read_csv(path):
    import pandas as pd

    if str(path).lower().endswith((".xlsx", ".xls")):
        sheets = pd.read_excel(path, sheet_name=None)
        data = [df for name, df in sheets.items() if str(name).lower().startswith("channel")]
        if not data:
            raise InputError("no Channel_* sheet")
        return from_frame(pd.concat(data, ignore_index=True))
    return from_frame(pd.read_csv(path, low_memory=False))


def read_res(path):
    """The records table ``Channel_Normal_Table`` exported by ``mdb-export`` (mdbtools)."""
    import pandas as pd

    tool = shutil.which("mdb-export")
    if tool is None:
        raise InputError("reading .res needs mdbtools (mdb-export), which is not installed; "
                         "export the test to CSV from MITS Pro instead")
    done = subprocess.run([tool, str(path), "Channel_Normal_Table"], capture_output=True, timeout=600)
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise InputError(f"mdb-export failed: {detail[0] if detail else done.returncode}")
    return from_frame(pd.read_csv(io.BytesIO(done.stdout)))
