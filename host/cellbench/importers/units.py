"""Column headers with units, as testers write them, and their factors to BDF's SI units.

Headers come as ``Name / unit`` (BDF), ``Name (unit)`` (PEC, Novonix), ``Name(unit)``
(Neware exports) or ``name/unit`` (BioLogic). :func:`split_header` takes the unit off;
:func:`factor` gives what multiplies a value in that unit to get seconds, volts, amps,
amp-hours or watt-hours. A unit we do not know is refused, never guessed.
"""

import re

import numpy as np

from ..errors import InputError

# unit text (lower case, spaces removed) -> (quantity, factor to the SI/BDF unit)
UNITS = {
    "s": ("time", 1.0), "sec": ("time", 1.0), "secs": ("time", 1.0), "second": ("time", 1.0),
    "seconds": ("time", 1.0), "ms": ("time", 1e-3), "min": ("time", 60.0), "minutes": ("time", 60.0),
    "h": ("time", 3600.0), "hr": ("time", 3600.0), "hour": ("time", 3600.0), "hours": ("time", 3600.0),
    "d": ("time", 86400.0), "day": ("time", 86400.0), "days": ("time", 86400.0),
    "v": ("voltage", 1.0), "volt": ("voltage", 1.0), "volts": ("voltage", 1.0), "mv": ("voltage", 1e-3),
    "uv": ("voltage", 1e-6), "µv": ("voltage", 1e-6), "kv": ("voltage", 1e3),
    "a": ("current", 1.0), "amp": ("current", 1.0), "amps": ("current", 1.0), "ma": ("current", 1e-3),
    "ua": ("current", 1e-6), "µa": ("current", 1e-6), "na": ("current", 1e-9),
    "ah": ("charge", 1.0), "a.h": ("charge", 1.0), "amp-hr": ("charge", 1.0), "mah": ("charge", 1e-3),
    "ma.h": ("charge", 1e-3), "uah": ("charge", 1e-6), "µah": ("charge", 1e-6), "µa.h": ("charge", 1e-6),
    "c": ("charge", 1.0 / 3600.0), "mc": ("charge", 1e-3 / 3600.0),
    "wh": ("energy", 1.0), "w.h": ("energy", 1.0), "watt-hr": ("energy", 1.0), "mwh": ("energy", 1e-3),
    "mw.h": ("energy", 1e-3), "kwh": ("energy", 1e3), "j": ("energy", 1.0 / 3600.0),
    "degc": ("temperature", 1.0), "°c": ("temperature", 1.0), "c°": ("temperature", 1.0),
}

_PATTERNS = (re.compile(r"^(.*?)\s*/\s*([^/]+)$"),      # "Test Time / h", "time/s", "dq/mA.h"
             re.compile(r"^(.*?)\s*\(([^()]*)\)\s*$"))   # "Voltage (mV)", "Current(A)"


def split_header(header):
    """(name, unit) of a column header; unit "" when the header carries none."""
    text = str(header).strip()
    for pattern in _PATTERNS:
        m = pattern.match(text)
        if m and m.group(1):
            return m.group(1).strip(), m.group(2).strip()
    return text, ""


def factor(header, quantity, default_unit=None):
    """Factor from ``header``'s unit to SI for ``quantity`` ("time", "voltage", "current",
    "charge", "energy"). ``default_unit`` is the format's documented unit when the header
    has none; a unit of another quantity or an unknown unit is an InputError."""
    _, unit = split_header(header)
    unit = unit or default_unit
    if unit is None:
        raise InputError(f"column {header!r}: no unit in the header")
    key = unit.lower().replace(" ", "")
    found = UNITS.get(key)
    if found is None or found[0] != quantity:
        raise InputError(f"column {header!r}: unit {unit!r} is not a unit of {quantity}")
    return found[1]


def numbers(series):
    """A pandas column as float64; blanks and text become NaN (the caller decides)."""
    import pandas as pd

    if series.dtype.kind in "fiu":
        return series.to_numpy(dtype=float)
    return pd.to_numeric(series.astype(str).str.strip().str.replace(",", "", regex=False)
                         .replace({"": None, "N/A": None, "nan": None}), errors="coerce").to_numpy(dtype=float)


_CLOCK = re.compile(r"^\s*(?:(\d+)\s*d\s*)?(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)\s*$")


def durations_s(series):
    """Elapsed times as seconds: plain numbers (already s) or ``[Nd ]hh:mm:ss[.fff]``."""
    values = numbers(series)
    if np.isfinite(values).all():
        return values
    parts = series.astype(str).str.extract(_CLOCK)
    if parts[1].isna().any():
        bad = series[parts[1].isna()].iloc[0]
        raise InputError(f"column {series.name!r}: {bad!r} is not a duration (s or hh:mm:ss)")
    days = parts[0].astype(float).fillna(0.0).to_numpy()
    return (days * 86400.0 + parts[1].astype(float).to_numpy() * 3600.0
            + parts[2].astype(float).to_numpy() * 60.0 + parts[3].astype(float).to_numpy())


def timestamps_s(series, fmt=None):
    """Wall-clock text ("2026-03-06 12:37:25", "12/11/2020 12:22:12 PM") as Unix seconds
    (the tester's local time taken as UTC: only differences matter for the test clock)."""
    import pandas as pd

    try:
        stamps = pd.to_datetime(series.astype(str).str.strip(), format=fmt)
    except (ValueError, TypeError):
        try:
            stamps = pd.to_datetime(series.astype(str).str.strip(), format="mixed")
        except (ValueError, TypeError) as exc:
            raise InputError(f"column {series.name!r}: not a date and time ({exc})") from None
    ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return ns / 1e9
