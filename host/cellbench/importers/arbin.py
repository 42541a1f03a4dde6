"""Arbin: CSV/XLSX exports of MITS Pro, and .res (an MS Access database) through mdbtools.

A .res holds the records in ``Channel_Normal_Table`` (the CSV export's columns without
units: s, A, V, Ah, Wh; ``DateTime`` as an OLE Automation date, days since 1899-12-30)
and the test in ``Global_Table`` (name, ``Start_DateTime``, schedule, ``MASS`` in g).

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

import numpy as np

from ..errors import InputError
from .raw import Raw, mass_meta
from .table import find, integers, optional_si
from .units import numbers, timestamps_s

FORMAT_CSV = "Arbin CSV/XLSX export"
FORMAT_RES = "Arbin .res"
OLE_EPOCH_UNIX_DAYS = 25569.0       # 1970-01-01 counted in days from 1899-12-30
SECONDS_PER_DAY = 86400.0
MDB_TIMEOUT_S = 600


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


def _mdb_tables(tool, path, tables):
    """Tables of the Access database as DataFrames, through ``mdb-export`` (CSV out), one
    process per table, all started at once (the largest table is listed last and read
    first; the small ones wait in their pipes)."""
    import pandas as pd

    procs = [subprocess.Popen([tool, str(path), table], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for table in tables]
    outputs = {}
    try:
        for table, proc in reversed(list(zip(tables, procs))):
            try:
                outputs[table] = (*proc.communicate(timeout=MDB_TIMEOUT_S), proc.returncode)
            except subprocess.TimeoutExpired:
                raise InputError(f"mdb-export of {table} took over {MDB_TIMEOUT_S} s") from None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    frames = []
    for table in tables:
        out, err, code = outputs[table]
        if code != 0 or not out.strip():
            detail = err.decode("utf-8", "replace").strip().splitlines()
            why = detail[0] if detail else "no rows" if code == 0 else "not an Access database or no such table"
            raise InputError(f"mdb-export cannot read {table}: {why}")
        frames.append(pd.read_csv(io.BytesIO(out), low_memory=False))
    return frames


def ole_days_to_unix_s(days):
    """OLE Automation dates (days since 1899-12-30, Arbin's ``DateTime``) as Unix seconds
    (the tester's local time taken as UTC: only differences matter for the test clock)."""
    return (np.asarray(days, dtype=float) - OLE_EPOCH_UNIX_DAYS) * SECONDS_PER_DAY


def _test_meta(test):
    """What ``Global_Table`` says of the test: name, start, schedule and active mass (g)."""
    row = test.iloc[0]
    meta = {"test_name": str(row.get("Test_Name", "")), "schedule": str(row.get("Schedule_File_Name", ""))}
    start = _number(row.get("Start_DateTime"))
    if start is not None:
        meta["start_unix_s"] = float(ole_days_to_unix_s(start))
    mass_g = _number(row.get("MASS"))
    meta.update(mass_meta(None if mass_g is None else mass_g * 1e3, "Arbin .res Global_Table MASS (g)"))
    return meta


def _number(value):
    """A table cell as a float, None when blank or not a number."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def read_res(path):
    """The records (``Channel_Normal_Table``) and test information (``Global_Table``) of a
    MITS Pro .res file, exported table by table with ``mdb-export`` (Debian's mdbtools)."""
    tool = shutil.which("mdb-export")
    if tool is None:
        raise InputError("reading .res needs mdbtools (mdb-export), which is not installed; "
                         "install it (apt-get install mdbtools) or export the test to CSV from MITS Pro")
    test, records = _mdb_tables(tool, path, ("Global_Table", "Channel_Normal_Table"))
    if len(test) != 1:
        raise InputError(f"Global_Table holds {len(test)} tests; export the one wanted to CSV from MITS Pro")
    records = records.sort_values("Data_Point", kind="stable")
    if "DateTime" in records:
        records["DateTime"] = ole_days_to_unix_s(records["DateTime"])
    raw = from_frame(records)
    raw.meta.update(_test_meta(test))
    return raw
