"""Text tables (CSV, tab-separated, spreadsheets) and finding a column by its name.

Testers name one quantity many ways (``Current(A)``, ``Current (mA)``, ``Amps``,
``I/mA``, ``current_ampere``); each family module lists its names, and :func:`find`
matches them against a table's headers with the unit taken off (case and spacing
ignored), so the unit always comes from the file's own header.
"""

import io

import numpy as np

from ..errors import InputError
from .units import factor, numbers, split_header


def head_lines(path, n=80):
    """The first ``n`` lines of a text file (undecodable bytes replaced), [] for binary."""
    with open(path, "rb") as f:
        chunk = f.read(64 * 1024)
    if b"\x00" in chunk[:4096]:
        return []
    for enc in ("utf-8", "cp1252"):
        try:
            text = chunk.decode(enc)
            break
        except UnicodeDecodeError:
            continue
    return text.splitlines()[:n]


def read_table(path, header_row, sep, encoding="utf-8"):
    """The table whose header is line ``header_row`` (0-based) as a pandas DataFrame."""
    import pandas as pd

    try:
        return pd.read_csv(path, sep=sep, skiprows=header_row, header=0, encoding=encoding,
                           encoding_errors="replace", low_memory=False, index_col=False,
                           skipinitialspace=True)
    except Exception as exc:  # pandas' parser errors vary by version
        raise InputError(f"cannot parse the table: {str(exc).splitlines()[0]}") from None


def read_text(text, sep):
    import pandas as pd

    return pd.read_csv(io.StringIO(text), sep=sep, header=0, low_memory=False, index_col=False)


def _key(text):
    return "".join(str(text).lower().split()).replace("_", "").replace(".", "")


def find(df, *names, required=None):
    """The first header of ``df`` whose name (unit taken off) is one of ``names``; None,
    or InputError("no <required> column") when ``required`` names the quantity."""
    by_name = {}
    for header in df.columns:
        by_name.setdefault(_key(split_header(header)[0]), header)
        by_name.setdefault(_key(header), header)
    for name in names:
        hit = by_name.get(_key(name))
        if hit is not None:
            return hit
    if required:
        raise InputError(f"no {required} column (looked for {', '.join(names)})")
    return None


def si(df, header, quantity, default_unit=None):
    """Column ``header`` as float64 in SI units (its unit from the header)."""
    return numbers(df[header]) * factor(header, quantity, default_unit)


def optional_si(df, quantity, *names, default_unit=None):
    """(values in SI, header) of the first of ``names`` present, or (None, None)."""
    header = find(df, *names)
    if header is None:
        return None, None
    return si(df, header, quantity, default_unit), header


def integers(df, header):
    """A count column (cycle, step) as float64 with NaN for blanks."""
    return None if header is None else numbers(df[header])


def as_text(df, header):
    return None if header is None else np.asarray(df[header].astype(str).str.strip(), dtype=str)
