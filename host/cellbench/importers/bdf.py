"""Battery Data Format tables in any of their units (``Test Time / h``, ``Current / mA``,
machine names such as ``test_time_second``), CSV or Parquet.

The unit comes from each header. Step labels (``Step Type``, ``Step Type / 1``) set the
current's sign, so a file that counts discharge positive still comes out charge > 0.
"""

from ..errors import InputError
from .raw import Raw, step_labels
from .table import as_text, find, integers, optional_si, read_table

FORMAT = "BDF"
# machine-name unit suffixes -> header unit
_MACHINE = {"second": "s", "hour": "h", "minute": "min", "volt": "V", "millivolt": "mV",
            "ampere": "A", "milliampere": "mA", "ah": "Ah", "mah": "mAh", "wh": "Wh", "mwh": "mWh"}
_MACHINE_NAMES = {"test_time": "Test Time", "voltage": "Voltage", "current": "Current",
                  "unix_time": "Unix Time", "charging_capacity": "Charging Capacity",
                  "discharging_capacity": "Discharging Capacity",
                  "charging_energy": "Charging Energy", "discharging_energy": "Discharging Energy"}


def detect(path, lines):
    """A BDF table: Parquet, or a header line with ``Test Time /`` or ``test_time_``."""
    if str(path).lower().endswith(".parquet"):
        return True
    return bool(lines) and ("Test Time /" in lines[0] or "test_time_" in lines[0])


def _preferred(header):
    """``test_time_hour`` -> ``Test Time / h``; other headers unchanged."""
    h = str(header).strip()
    for prefix, name in _MACHINE_NAMES.items():
        if h.startswith(prefix + "_") and h[len(prefix) + 1:] in _MACHINE:
            return f"{name} / {_MACHINE[h[len(prefix) + 1:]]}"
    return h


def read(path):
    import pandas as pd

    if str(path).lower().endswith(".parquet"):
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for a bad file
            raise InputError(f"not a Parquet table ({exc})") from None
    else:
        df = read_table(path, 0, ",")
    return from_frame(df)


def from_frame(df):
    """A Raw from a BDF-named DataFrame (also what batterydf's converters return)."""
    df = df.rename(columns=_preferred)
    t, t_h = optional_si(df, "time", "Test Time")
    v, v_h = optional_si(df, "voltage", "Voltage")
    i, i_h = optional_si(df, "current", "Current")
    for values, name in ((t, "Test Time"), (v, "Voltage"), (i, "Current")):
        if values is None:
            raise InputError(f"no {name!r} column")
    unix, _ = optional_si(df, "time", "Unix Time")
    q_chg, _ = optional_si(df, "charge", "Charging Capacity", "Charge Capacity")
    q_dch, _ = optional_si(df, "charge", "Discharging Capacity", "Discharge Capacity")
    e_chg, _ = optional_si(df, "energy", "Charging Energy", "Charge Energy")
    e_dch, _ = optional_si(df, "energy", "Discharging Energy", "Discharge Energy")
    label = find(df, "Step Type")
    return Raw(t, v, i, step_type=None if label is None else step_labels(as_text(df, label)),
               step=integers(df, find(df, "Step Count", "Step Index")),
               cycle=integers(df, find(df, "Cycle Count", "Cycle Index")), unix_s=unix,
               q_chg_Ah=q_chg, q_dch_Ah=q_dch, e_chg_Wh=e_chg, e_dch_Wh=e_dch,
               columns={"time": t_h, "voltage": v_h, "current": i_h})
