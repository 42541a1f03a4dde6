"""PEC SBT CSV exports: lines of test information, then a table whose headers carry
their units: ``Total Time (Seconds)`` or ``Total Time (Hours in hh:mm:ss.xxx)``,
``Voltage (mV)`` or ``(V)``, ``Current (mA)`` or ``(A)``, ``Cycle``, ``Step``,
``Instruction Name`` (Idle, Charge, Discharge, ...), ``Real Time`` (m/d/Y H:M:S),
``Charge Capacity (mAh)``, ``Discharge Capacity (mAh)``, ``Charge Energy (mWh)``,
``Discharge Energy (mWh)``. Every value is scaled by its own header's unit.
Current is signed, charge positive.
"""

from ..errors import InputError
from .raw import Raw, step_labels
from .table import as_text, find, integers, optional_si, read_table
from .units import durations_s, split_header, timestamps_s

FORMAT = "PEC CSV"
CLOCK_UNIT = "hh:mm:ss"         # in a unit such as "Hours in hh:mm:ss.xxx": a clock text
WALL_CLOCK_FORMAT = "%m/%d/%Y %H:%M:%S"


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
    t, t_h = _total_time_s(df)
    v, v_h = optional_si(df, "voltage", "Voltage")
    i, i_h = optional_si(df, "current", "Current")
    if t is None or v is None or i is None:
        raise InputError("no Total Time, Voltage or Current column")
    q_chg, _ = optional_si(df, "charge", "Charge Capacity")
    q_dch, _ = optional_si(df, "charge", "Discharge Capacity")
    e_chg, _ = optional_si(df, "energy", "Charge Energy")
    e_dch, _ = optional_si(df, "energy", "Discharge Energy")
    label = find(df, "Instruction Name")
    return Raw(t, v, i, step_type=None if label is None else step_labels(as_text(df, label)),
               step=integers(df, find(df, "Step")), cycle=integers(df, find(df, "Cycle")),
               unix_s=_wall_clock_s(df), q_chg_Ah=q_chg, q_dch_Ah=q_dch, e_chg_Wh=e_chg, e_dch_Wh=e_dch,
               columns={"time": t_h, "voltage": v_h, "current": i_h})


def _total_time_s(df):
    """(seconds, header) of ``Total Time``: a number in its header's unit, or clock text
    when the header says ``hh:mm:ss`` (hours may pass 24)."""
    header = find(df, "Total Time")
    if header is not None and CLOCK_UNIT in split_header(header)[1].lower():
        return durations_s(df[header]), header
    return optional_si(df, "time", "Total Time")


def _wall_clock_s(df):
    """``Real Time`` as Unix seconds (whole seconds), None without one or unparsable."""
    header = find(df, "Real Time")
    if header is None:
        return None
    try:
        return timestamps_s(df[header], fmt=WALL_CLOCK_FORMAT)
    except InputError:
        return None     # a wall clock we cannot parse is not worth refusing the file
