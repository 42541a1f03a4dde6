"""Neware: binary .nda/.ndax through NewareNDA, and the BTS client's CSV/XLSX exports.

NewareNDA gives per record Time (s, step-relative), Voltage (V), Current(mA), Status
(CC_Chg, CC_DChg, Rest, ...), Step, Cycle, the tester's Charge_/Discharge_Capacity(mAh)
and Energy(mWh) counters (reset per step) and a Timestamp; an .ndax also names the active mass. The BTS "regular" export
nests records under step rows under cycle rows (``,,DataPoint,Time,Total Time,...``):
each record gets the cycle and step type of the rows above it (a cycle row may carry
its first step's fields after its own eight). Flat exports
(``Record,Cycle,Step,Total Time(s),Current(A),Voltage(V)...``) and the XLSX export's
``record`` sheet are plain tables.
"""


import numpy as np

from ..errors import InputError
from .raw import Raw, mass_meta, step_labels
from .table import as_text, find, integers, optional_si, read_text
from .units import durations_s, numbers, timestamps_s

FORMAT_CSV = "Neware CSV export"
# Statuses whose first record can start a cycle in Neware's "charge first" statistic.
CHARGE_FIRST_STARTS = ("CC_Chg", "CCCV_Chg", "CP_Chg")


def _col(df, name):
    return np.asarray(df[name], dtype=float) if name in df else None


def read_binary(path):
    import NewareNDA

    # NewareNDA's own cycle numbering loops over the records in Python (most of its read
    # time); the same numbering is computed here over the status categories instead.
    df = NewareNDA.read(str(path), software_cycle_number=False, log_level="CRITICAL")
    if len(df) == 0:
        raise InputError("no records")
    unix = None
    if "Timestamp" in df:
        unix = df["Timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e9
    names, codes = _categories(df["Status"])
    mAh = lambda name: None if name not in df else _col(df, name) / 1e3
    return Raw(_col(df, "Time"), _col(df, "Voltage"), _col(df, "Current(mA)") / 1e3,
               step_type=step_labels(names)[codes], step=_col(df, "Step"),
               cycle=charge_first_cycles(names, codes),
               unix_s=unix, q_chg_Ah=mAh("Charge_Capacity(mAh)"), q_dch_Ah=mAh("Discharge_Capacity(mAh)"),
               e_chg_Wh=mAh("Charge_Energy(mWh)"), e_dch_Wh=mAh("Discharge_Energy(mWh)"),
               columns={"voltage": "Voltage (V, NewareNDA)", "current": "Current(mA)"},
               meta={"reader": f"NewareNDA {getattr(NewareNDA, '__version__', '')}".strip(),
                     **_ndax_mass(path, NewareNDA)})


def _categories(status):
    """(distinct status names, index of each record's name) of NewareNDA's Status column;
    a record without a status (categorical code -1) gets the name ""."""
    if not hasattr(status, "cat"):
        names, codes = np.unique(np.asarray(status, dtype=str), return_inverse=True)
        return names, codes.reshape(-1)
    names = np.append(np.asarray(status.cat.categories, dtype=str), "")
    codes = status.cat.codes.to_numpy().astype(np.int64)
    return names, np.where(codes < 0, names.size - 1, codes)


def charge_first_cycles(names, codes):
    """Cycle numbers as Neware's "charge first" statistic (NewareNDA's software cycle
    number, mode 'chg') counts them, from 1: a cycle starts at the first record of a run
    of CC/CCCV/CP charge records when a discharge (any ``*_DChg``) or ``SIM`` record came
    after the previous run's first record (the very first record counts as a run start)."""
    names = np.asarray(names, dtype=str)
    starts_kind = np.isin(names, CHARGE_FIRST_STARTS)[codes]
    resets = (np.char.endswith(names, "_DChg") | (names == "SIM"))[codes]
    run_start = np.flatnonzero(starts_kind & ~np.concatenate(([False], starts_kind[:-1])))
    run_start = np.union1d([0], run_start)
    before = np.concatenate(([0], np.cumsum(resets)))         # resets among records [0, k)
    new = np.diff(before[run_start]) > 0                      # one in [previous start, start)
    rises = np.zeros(codes.size, dtype=np.int64)
    rises[run_start[1:][new]] = 1
    return np.cumsum(rises) + 1


def _ndax_mass(path, NewareNDA):
    """{"mass_mg": ...} from an .ndax's NdaxConfig.xml ``BatteryMass`` (kg), when it is a
    plausible active mass (:func:`~.raw.mass_meta`); {} otherwise. An .nda carries no mass worth
    taking (its 1 mg is the client's placeholder), so none is read from it."""
    if not str(path).lower().endswith(".ndax"):
        return {}
    try:
        value = float(NewareNDA.read_metadata(str(path))["NdaxConfig"]["config"]["BatteryMass"])
    except (KeyError, TypeError, ValueError, OSError):
        return {}
    return mass_meta(value * 1e6, "ndax NdaxConfig.xml BatteryMass (kg)")


def detect_csv(lines):
    """The BTS nested export (a ``,,DataPoint`` record header) or a flat export."""
    if len(lines) >= 3 and lines[0].startswith("Cycle Index") and lines[2].startswith(",,DataPoint"):
        return True
    head = lines[0] if lines else ""
    return "Total Time" in head and "Voltage(V)" in head.replace(" ", "")


def read_csv(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline()
    if first.startswith("Cycle Index"):
        return _nested(path)
    import pandas as pd

    return records(pd.read_csv(path, low_memory=False, skipinitialspace=True), None, None)


def _nested(path):
    """Split the three-level export into record lines, carrying cycle and step labels."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    header = lines[2][2:]
    rows, cycles, steps, labels = [], [], [], []
    cycle, step, label = np.nan, np.nan, ""
    for line in lines[3:]:
        if line.startswith(",,"):
            rows.append(line[2:])
            cycles.append(cycle)
            steps.append(step)
            labels.append(label)
        elif line.startswith(","):
            parts = line.split(",")
            step, label = float(parts[2]), parts[3]      # Step Number, Step Type
        elif line.strip():
            parts = line.split(",")
            cycle = float(parts[0])
            if len(parts) > 10 and parts[10]:   # a cycle row may carry its first step inline
                step, label = float(parts[9]), parts[10]
    if not rows:
        raise InputError("no record rows (',,' lines) in the export")
    df = read_text(header + "\n" + "\n".join(rows), ",")
    return records(df, np.array(cycles), (np.array(steps), np.array(labels)))


def records(df, cycles=None, steps=None):
    t_h = find(df, "Total Time", "Total Time(s)", required="Total Time")
    unit = "s" if "(" in str(t_h) else None
    t = durations_s(df[t_h]) if unit is None else numbers(df[t_h])
    v, v_h = optional_si(df, "voltage", "Voltage")
    i, i_h = optional_si(df, "current", "Current")
    if v is None or i is None:
        raise InputError("no Voltage or Current column")
    date = find(df, "Date", "Realtime", "Absolute Time")
    unix = timestamps_s(df[date]) if date is not None else None
    if steps is not None:
        step, labels = steps
        kinds = step_labels(labels)
    else:
        step, kinds = integers(df, find(df, "Step", "Step Index")), None
        label = find(df, "Step Type", "Status")
        kinds = None if label is None else step_labels(as_text(df, label))
    if cycles is None:
        cycles = integers(df, find(df, "Cycle", "Cycle Index"))
    q, _ = optional_si(df, "charge", "Capacity")
    q_chg = q_dch = None
    if q is not None and kinds is not None:
        # the export's Capacity counts per step; the step type says which direction
        q_chg = np.where(np.char.find(kinds, "CHG") >= 0, np.abs(q), 0.0)
        q_dch = np.where(np.char.find(kinds, "DCH") >= 0, np.abs(q), 0.0)
    return Raw(t, v, i, step_type=kinds, step=step, cycle=cycles, unix_s=unix,
               q_chg_Ah=q_chg, q_dch_Ah=q_dch, columns={"time": t_h, "voltage": v_h, "current": i_h})
