"""Which tester wrote a file: by its extension for binary formats, by its first lines
for text. Each family module says whether it recognises the lines (``detect``) and
reads the file (``read``); anything else goes to batterydf's own converters."""

import contextlib
import io
import warnings
from pathlib import Path

from ..errors import InputError
from . import arbin, bdf, biologic, maccor, neware, novonix, pec
from .raw import checked
from .table import head_lines

MAX_DETAIL = 160    # characters of a reader's own message kept in our one-line error


def _batterydf(path):
    import bdf as batterydf

    try:
        df = batterydf.read(str(path), validate=False)
    except Exception:  # batterydf's long multi-converter report is not for users
        raise InputError("not a Neware, BioLogic, Arbin, Maccor, PEC, Novonix or BDF file, "
                         "nor one batterydf converts") from None
    return bdf.from_frame(df)


def _xlsx(path):
    """A spreadsheet export: Neware's ``record`` sheet or Arbin's ``Channel_*`` sheets."""
    import pandas as pd

    names = pd.ExcelFile(path).sheet_names
    if "record" in [n.lower() for n in names]:
        sheet = next(n for n in names if n.lower() == "record")
        return neware.records(pd.read_excel(path, sheet_name=sheet))
    return arbin.read_csv(path)


def choose(path):
    """(format name, reader taking the path) for ``path``."""
    suffix = path.suffix.lower()
    if suffix in (".nda", ".ndax"):
        return f"Neware {suffix}", neware.read_binary
    if suffix == ".mpr":
        return biologic.FORMAT_MPR, biologic.read_mpr
    if suffix == ".res":
        return arbin.FORMAT_RES, arbin.read_res
    if suffix == ".parquet":
        return bdf.FORMAT, bdf.read
    lines = head_lines(path)
    if maccor.is_raw(path, lines):
        return maccor.FORMAT_RAW, maccor.read_raw
    for detect, fmt, reader in (
            (bdf.detect, bdf.FORMAT, bdf.read),
            (lambda p, ls: biologic.detect_text(ls), biologic.FORMAT_TEXT, biologic.read_text),
            (lambda p, ls: neware.detect_csv(ls), neware.FORMAT_CSV, neware.read_csv),
            (lambda p, ls: arbin.detect(ls), arbin.FORMAT_CSV, arbin.read_csv),
            (lambda p, ls: maccor.detect(ls), maccor.FORMAT, lambda p: maccor.read(p, lines)),
            (lambda p, ls: novonix.detect(ls), novonix.FORMAT, novonix.read),
            (lambda p, ls: pec.detect(ls), pec.FORMAT, lambda p: pec.read(p, lines))):
        if detect(path, lines):
            return fmt, reader
    if suffix in (".xlsx", ".xls"):
        return "Neware/Arbin XLSX export", _xlsx
    return "unrecognised format", _batterydf


def _short(exc):
    text = str(exc).strip()
    detail = text.splitlines()[0] if text else type(exc).__name__
    return detail if len(detail) <= MAX_DETAIL else detail[:MAX_DETAIL - 3] + "..."


def read_foreign(path):
    """Read any supported file as a checked Raw; InputError("<file>: <format>: <problem>")."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    kind, reader = choose(path)
    sink = io.StringIO()
    try:
        # Vendor readers warn about pandas APIs and print progress; users see one line.
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            raw = checked(reader(path))
    except InputError as exc:
        raise InputError(f"{path.name}: {kind}: {_short(exc)}") from None
    except Exception as exc:  # vendor readers raise anything from struct.error to KeyError
        raise InputError(f"{path.name}: cannot read as {kind}: {_short(exc)}") from None
    raw.meta["format"] = kind
    return raw
