"""BioLogic EC-Lab: .mpr through galvani, and the .mpt / CSV exports of the same columns.

Columns (EC-Lab names): ``time/s``, ``Ewe/V`` (or ``Ecell/V``, ``<Ewe>/V``), a measured
current ``I/mA`` or ``<I>/mA``; GCPL files often have neither, only ``control/V/mA`` (the
setpoint) and ``dq/mA.h`` (charge passed since the previous record), so the current is
``dq/dt``. ``mode`` is 1 galvanostatic, 2 potentiostatic, 3 rest; ``freq/Hz`` marks
impedance (PEIS/GEIS) records, kept apart as step type EIS; ``Ns`` (or the ``Ns changes``
flag) numbers the technique's sequences, ``cycle number``/``half cycle`` its cycles.
BioLogic's I > 0 is oxidation of the working electrode: charge of a cathode or
delithiation of an anode vs Li, the bench's "charge" in both cases.
Exports write decimals with a comma in some locales and times as dates in CSV.
"""

import numpy as np

from ..errors import InputError
from .raw import Raw
from .units import timestamps_s

FORMAT_MPR = "BioLogic .mpr"
FORMAT_TEXT = "BioLogic .mpt/CSV export"
SECONDS_PER_HOUR = 3600.0


def _first(get, *names):
    for name in names:
        values = get(name)
        if values is not None:
            return values, name
    return None, None


def current_from_dq(t_s, dq_mAh):
    """Current (A) from the charge each record reports since the previous one: the mean
    current over that interval, dq / dt. Zero-length intervals take the next record's."""
    dt = np.diff(t_s, prepend=t_s[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        i = np.where(dt > 0, dq_mAh * 1e-3 * SECONDS_PER_HOUR / dt, np.nan)
    if np.isnan(i).all():
        return np.zeros_like(i)
    # the first record (and any repeated time) inherits the current of the next interval
    idx = np.where(np.isnan(i), i.size, np.arange(i.size))
    nxt = np.minimum.accumulate(idx[::-1])[::-1]
    filled = np.where(nxt < i.size, i[np.minimum(nxt, i.size - 1)], 0.0)
    return np.where(np.isnan(i), filled, i)


def from_columns(get, n):
    """A Raw from EC-Lab columns; ``get(name)`` returns a float array or None."""
    t = get("time/s")
    if t is None:
        raise InputError("no time/s column")
    v, v_name = _first(get, "Ewe/V", "Ecell/V", "<Ewe>/V", "Ewe-Ece/V")
    if v is None:
        raise InputError("no Ewe/V or Ecell/V column")
    i_mA, i_name = _first(get, "I/mA", "<I>/mA")
    dq = get("dq/mA.h")
    if i_mA is not None:
        i = i_mA / 1e3
    elif dq is not None:
        i, i_name = current_from_dq(t, dq), "dq/mA.h"
    else:
        raise InputError("no current: neither I/mA, <I>/mA nor dq/mA.h")
    kinds = np.full(n, "", dtype="<U8")
    mode = get("mode")
    if mode is not None:
        kinds[mode == 3] = "REST"
        # potentiostatic records (CV, CA, CV holds): the current's own sign says the
        # direction record by record, as it may change within one sequence
        held = mode == 2
        kinds[held & (i > 0)] = "CV_CHG"
        kinds[held & (i < 0)] = "CV_DCH"
    freq = get("freq/Hz")
    if freq is not None:
        kinds[np.nan_to_num(freq) > 0] = "EIS"
    step = get("Ns")
    if step is None:
        changes = get("Ns changes")
        step = None if changes is None else np.cumsum(changes > 0).astype(float)
    cycle = get("cycle number")
    if cycle is None and get("half cycle") is not None:
        cycle = np.floor(get("half cycle") / 2)
    q_chg = q_dch = None
    if dq is not None:
        # the instrument's own charge count, record by record
        q_chg = np.cumsum(np.maximum(np.nan_to_num(dq), 0.0)) / 1e3
        q_dch = np.cumsum(np.maximum(-np.nan_to_num(dq), 0.0)) / 1e3
    return Raw(t, v, i, step_type=kinds, step=step, cycle=cycle, q_chg_Ah=q_chg, q_dch_Ah=q_dch,
               columns={"time": "time/s", "voltage": v_name, "current": i_name})


def read_mpr(path):
    from galvani import BioLogic

    mpr = BioLogic.MPRfile(str(path))
    data = mpr.data
    names = set(data.dtype.names)
    flags = set(getattr(mpr, "flags_dict", {}))

    def get(name):
        if name in names:
            return np.asarray(data[name], dtype=float)
        if name in flags:
            return np.asarray(mpr.get_flag(name), dtype=float)
        return None

    raw = from_columns(get, len(data))
    stamp = getattr(mpr, "timestamp", None)
    if stamp is not None:
        raw.unix_s = stamp.timestamp() + raw.t_s
    raw.meta = {"reader": "galvani", "start_date": str(getattr(mpr, "startdate", ""))}
    return raw


def detect_text(lines):
    """An .mpt (``EC-Lab ASCII FILE``) or a CSV export (``;mode;`` or ``time/s;``)."""
    if lines and lines[0].startswith("EC-Lab ASCII FILE"):
        return True
    return bool(lines) and "time/s" in lines[0] and ("Ewe/V" in lines[0] or "Ecell/V" in lines[0])


def read_text(path):
    import pandas as pd

    with open(path, encoding="cp1252", errors="replace") as f:
        first, second = f.readline(), f.readline()
    skip = 0
    if first.startswith("EC-Lab ASCII FILE"):
        try:
            skip = int(second.split(":")[1]) - 1
        except (IndexError, ValueError):
            raise InputError("no 'Nb header lines' on line 2") from None
    sep = "\t" if skip or "\t" in first else ";" if ";" in first else ","
    df = pd.read_csv(path, sep=sep, skiprows=skip, header=0, encoding="cp1252", low_memory=False,
                     index_col=False, dtype=str)
    df.columns = [str(c).strip() for c in df.columns]
    sample = df.iloc[0].astype(str).str.cat(sep=" ") if len(df) else ""
    comma_decimal = "," in sample and sep != ","
    dates = None

    def get(name):
        nonlocal dates
        if name not in df:
            return None
        col = df[name].str.strip()
        if name == "time/s" and col.str.contains("/|-", regex=True).iloc[0] and ":" in col.iloc[0]:
            dates = timestamps_s(col)             # CSV exports write the time as a date
            return dates - dates[0]
        if comma_decimal:
            col = col.str.replace(",", ".", regex=False)
        return pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)

    raw = from_columns(get, len(df))
    if dates is not None:
        raw.unix_s = dates
    return raw
