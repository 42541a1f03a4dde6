"""Battery Data Format logs: write records as they arrive, read any BDF log back.

A log is ``<name>.bdf.csv`` plus a JSON sidecar ``<name>.bdf.csv.json`` (docs/design.md,
"Log"): the log's own file name with ``.json`` added, so it never takes the name of a
protocol or model next to it (``<name>.json``), of a BDF table in JSON (``<name>.bdf.json``)
or of BDF's JSON-LD metadata (``<name>.jsonld``). Sidecars of older logs (``<name>.json``)
are still read.
Units in the file are BDF's: seconds, volts, amps (current > 0 charges the cell),
amp-hours, watt-hours. The board sends integers (ms, uV, nA, nAh, uWh, ppm); the
conversion here is exact decimal scaling, so no float noise is written.

The writer flushes every row: a log whose process is killed mid-write is valid up to its
last complete line, and :func:`read_log` drops a trailing partial line.
"""

import gzip
import io
import json
import os
import time
from pathlib import Path

import numpy as np

from .errors import InputError
from .jsonfile import read_json
from .outputs import check_output

# (preferred BDF header, machine name). The first 14 are written by this bench, in order;
# the rest are read from other tools' logs.
BASE_COLUMNS = [
    ("Test Time / s", "test_time_second"),
    ("Voltage / V", "voltage_volt"),
    ("Current / A", "current_ampere"),
    ("Unix Time / s", "unix_time_second"),
    ("Cycle Count / 1", "cycle_count"),
    ("Step Count / 1", "step_count"),
    ("Step Index / 1", "step_index"),
    ("Step Type", "step_type"),
    ("Charging Capacity / Ah", "charging_capacity_ah"),
    ("Discharging Capacity / Ah", "discharging_capacity_ah"),
    ("Step Capacity / Ah", "step_capacity_ah"),
    ("Charging Energy / Wh", "charging_energy_wh"),
    ("Discharging Energy / Wh", "discharging_energy_wh"),
    ("Fault Flags / 1", "fault_flags"),
]
SOC_COLUMNS = [("SOC / 1", "soc"), ("SOC Std / 1", "soc_std")]
# The estimator's slow states (issue 14: capacity and charge-transfer resistance tracked as
# the cell ages), written by the board's log and by `cellbench estimate` alike: after the
# SOC columns, when the model has those states on (empty cells while there is no estimate).
AGEING_COLUMNS = [
    ("Capacity Estimate / Ah", "capacity_estimate_ah"),
    ("Capacity Estimate Std / Ah", "capacity_estimate_std_ah"),
    ("Charge Transfer Resistance Estimate / ohm", "charge_transfer_resistance_estimate_ohm"),
    ("Charge Transfer Resistance Estimate Std / ohm", "charge_transfer_resistance_estimate_std_ohm"),
]
# The board's sequence number of each record: always the last column, so a resumed run
# (cellbench run --resume) finds where the log stops by reading only the file's tail.
# Not a BDF column; bdf.validate reports it under "extras" and accepts the file.
SEQ_COLUMN = ("Record Seq / 1", "record_seq")
# Board record field (docs/link.md) behind each SOC and ageing column, and the decimal
# places that turn its integer into the column's unit: ppm -> 1, nAh -> Ah, mohm -> ohm.
SOC_FIELDS = (("soc_ppm", 6), ("soc_std_ppm", 6))
AGEING_FIELDS = (("cap_nAh", 9), ("cap_std_nAh", 9), ("r_mohm", 3), ("r_std_mohm", 3))
OTHER_COLUMNS = [
    ("Ambient Temperature / degC", "ambient_temperature_celsius"),
    ("Net Capacity / Ah", "net_capacity_ah"),
    ("Cumulative Capacity / Ah", "cumulative_capacity_ah"),
    ("Step Energy / Wh", "step_energy_wh"),
    ("Net Energy / Wh", "net_energy_wh"),
    ("Cumulative Energy / Wh", "cumulative_energy_wh"),
    ("Power / W", "power_watt"),
    ("Internal Resistance / ohm", "internal_resistance_ohm"),
    ("Ambient Pressure / Pa", "ambient_pressure_pa"),
    ("Applied Pressure / Pa", "applied_pressure_pa"),
] + [(f"Surface Temperature T{k} / degC", f"temperature_t{k}_celsius") for k in range(1, 6)]

REQUIRED = ("Test Time / s", "Voltage / V", "Current / A")
TEXT_COLUMNS = ("Step Type",)
INT_COLUMNS = ("Cycle Count / 1", "Step Count / 1", "Step Index / 1", "Fault Flags / 1",
               "Record Seq / 1")

# Board step_type number -> BDF step type name (docs/design.md, record fields).
STEP_TYPES = ("REST", "CC_CHG", "CC_DCH", "CV_CHG", "CV_DCH")

_CANONICAL = {}
for _pref, _machine in BASE_COLUMNS + SOC_COLUMNS + AGEING_COLUMNS + [SEQ_COLUMN] + OTHER_COLUMNS:
    _CANONICAL[_pref] = _pref
    _CANONICAL[_machine] = _pref

_LOG_SUFFIXES = (".bdf.csv", ".bdf.parquet", ".bdf.gz", ".bdf.csv.gz", ".csv.gz", ".csv", ".parquet", ".gz")


def sidecar_path(log_path):
    """The sidecar a log gets: ``run.bdf.csv`` -> ``run.bdf.csv.json`` (same folder)."""
    p = Path(log_path)
    return p.with_name(p.name + ".json")


# Top-level keys of the user's own JSON files that may sit at an older sidecar's name:
# a protocol (method) or a cell model (ocv). A sidecar holds them only nested.
NOT_A_SIDECAR = {"method", "ocv"}


def _legacy_sidecar_path(log_path):
    """Where older versions put the sidecar: ``run.bdf.csv`` -> ``run.json``."""
    p = Path(log_path)
    for suffix in _LOG_SUFFIXES:
        if p.name.endswith(suffix):
            return p.with_name(p.name[: -len(suffix)] + ".json")
    return None


def existing_sidecar_path(log_path):
    """The sidecar file a log has: its own (:func:`sidecar_path`), else an older-style
    ``<name>.json`` that holds a sidecar (not a protocol or model), else None."""
    own = sidecar_path(log_path)
    if own.is_file():
        return own
    old = _legacy_sidecar_path(log_path)
    if old is not None and old.is_file():
        try:
            meta = read_json(old, "sidecar")
        except InputError:
            return None
        if not NOT_A_SIDECAR & meta.keys():
            return old
    return None


def log_files(*logs):
    """Every file of these logs that a command reads: each log and its sidecar, if any
    (the inputs an output must never overwrite)."""
    return [f for log in logs for f in (Path(log), existing_sidecar_path(log)) if f is not None]


def fixed(n, digits):
    """Format the integer ``n * 10**-digits`` as an exact decimal string ("-0.00035")."""
    n = int(n)
    sign = "-" if n < 0 else ""
    whole, frac = divmod(abs(n), 10 ** digits)
    text = f"{frac:0{digits}d}".rstrip("0") if digits else ""
    return f"{sign}{whole}.{text}" if text else f"{sign}{whole}"


def step_type_name(step_type):
    """BDF name of a board step type number; unknown numbers are written as the number."""
    return STEP_TYPES[step_type] if 0 <= step_type < len(STEP_TYPES) else str(step_type)


def _estimates(rec, fields):
    # -1 (or a record without the field) means "no estimate": an empty cell (NaN when read).
    # Any other value is written, negative too: the filter's SoC may stray below 0 (to
    # ekf.SOC_MIN), and that is what it believed.
    out = []
    for key, digits in fields:
        value = rec.get(key, -1)
        out.append("" if value == -1 else fixed(value, digits))
    return out


def record_row(rec, start_unix_s, with_soc, with_ageing=False):
    """One CSV row (list of str) from a record dict of board integers (docs/design.md).

    ``with_soc``: the SOC columns; ``with_ageing``: the AGEING_COLUMNS after them."""
    t_ms = rec["t_ms"]
    row = [
        fixed(t_ms, 3),
        fixed(rec["v_uV"], 6),
        fixed(rec["i_nA"], 9),
        f"{start_unix_s + t_ms / 1000:.3f}",
        str(rec["cycle"]),
        str(rec["step_count"]),
        str(rec["step_index"]),
        step_type_name(rec["step_type"]),
        fixed(rec["q_chg_nAh"], 9),
        fixed(rec["q_dch_nAh"], 9),
        fixed(rec["q_step_nAh"], 9),
        fixed(rec["e_chg_uWh"], 6),
        fixed(rec["e_dch_uWh"], 6),
        str(rec["fault"]),
    ]
    if with_soc:
        row += _estimates(rec, SOC_FIELDS)
    if with_ageing:
        row += _estimates(rec, AGEING_FIELDS)
    seq = rec.get("seq")  # records built off the link (tests, imports) may have none
    row.append("" if seq is None else str(seq))
    return row


class LogWriter:
    """Append BDF CSV rows as records arrive and keep the JSON sidecar up to date.

    ``with_soc``: add the SOC columns (only when a model is loaded on the board);
    ``with_ageing``: and the AGEING_COLUMNS after them (a model whose estimator has the
    capacity or resistance state on: :func:`model_has_ageing`).
    ``start_unix_s``: wall time of test time 0, for the Unix Time column.
    ``meta``: initial sidecar contents (board, firmware, protocol, table, model, ...).
    Refuses to replace an existing log or sidecar unless ``force``.
    """

    def __init__(self, path, with_soc=False, start_unix_s=None, meta=None, force=False,
                 append_to=None, with_ageing=False):
        self.path = Path(path)
        self.sidecar = append_to or sidecar_path(self.path)
        if append_to is None:
            for p in (self.path, self.sidecar):
                check_output(p, force)
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.with_soc = bool(with_soc)
        self.with_ageing = bool(with_ageing)
        self.start_unix_s = time.time() if start_unix_s is None else float(start_unix_s)
        self.meta = dict(meta or {})
        self.meta.setdefault("started_unix_s", self.start_unix_s)
        self.meta.setdefault("events", [])
        if append_to is not None:
            self.meta.pop("ended_unix_s", None)  # the run goes on
            self.rows = count_rows(self.path)
            self._file = open(self.path, "a", newline="")
            return
        self.rows = 0
        self._file = open(self.path, "w", newline="")
        self._file.write(",".join(self.columns()) + "\n")
        self._file.flush()
        self.write_sidecar()

    def columns(self):
        """Header names, in file order."""
        return header_columns(self.with_soc, self.with_ageing)

    def write(self, rec):
        """Append one record (dict of board integers) and flush it to disk."""
        self._file.write(",".join(record_row(rec, self.start_unix_s, self.with_soc,
                                             self.with_ageing)) + "\n")
        self._file.flush()
        self.rows += 1

    @classmethod
    def reopen(cls, path, meta=None):
        """Continue an existing log (``cellbench run --resume``): append rows after its last
        complete line. A partial last line (the writer was killed mid-row) is cut off first.
        ``meta``: its sidecar, already read (read now if None); it is written back where
        it was found. The header must be one this writer writes.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"resume: no log {path}")
        repair_tail(path)
        with_soc, with_ageing = appendable_layout(path)
        side = existing_sidecar_path(path) or sidecar_path(path)
        meta = read_sidecar(path) if meta is None else meta
        if "started_unix_s" not in meta:
            raise InputError(f"resume: {side.name} has no started_unix_s")
        return cls(path, with_soc, float(meta["started_unix_s"]), meta, append_to=side,
                   with_ageing=with_ageing)

    def logged_seqs(self):
        """Sequence numbers of the events already in the sidecar (to skip repeats)."""
        return {e["seq"] for e in self.meta["events"] if isinstance(e.get("seq"), int)}

    def event(self, kind, **data):
        """Note an event (fault, stop reason, link trouble) in the sidecar.

        A board event (``seq=`` given) that is already there is not added twice: a resumed
        run re-fetches from the last logged record, which may precede logged events.
        """
        seq = data.get("seq")
        if isinstance(seq, int) and any(e.get("seq") == seq for e in self.meta["events"]):
            return
        entry = {"kind": kind, "unix_s": round(time.time(), 3)}
        entry.update(data)
        self.meta["events"].append(entry)
        self.write_sidecar()

    def write_sidecar(self):
        """Rewrite the sidecar atomically (write a temp file, then rename)."""
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(self.meta, f, indent=1, sort_keys=True, default=_json_default)
            f.write("\n")
        os.replace(tmp, self.sidecar)

    def close_file(self):
        """Close the CSV only, leaving the sidecar as it is (a resume that gave up)."""
        if not self._file.closed:
            self._file.close()

    def close(self, **final):
        """Close the CSV and write the final sidecar (ended time, plus ``final`` keys)."""
        if self._file.closed:
            return
        self._file.close()
        self.meta["ended_unix_s"] = time.time()
        self.meta["rows"] = self.rows
        self.meta.update(final)
        self.write_sidecar()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


TAIL_CHUNK = 65536  # bytes read from the end per step when looking for the last row


def repair_tail(path):
    """Cut a partial last line (a writer killed mid-row) off a CSV log; bytes removed.

    The header line is never cut: a log holding only part of its header is unusable
    and raises InputError.
    """
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb+") as f:
        end = size
        while end > 0:
            start = max(0, end - TAIL_CHUNK)
            f.seek(start)
            chunk = f.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                if keep < size:
                    f.truncate(keep)
                return size - keep
            end = start
    raise InputError(f"log: {p} has no complete header line")


def read_header(path):
    """The column names of a CSV log (its first line)."""
    with open(path, "rb") as f:
        line = f.readline(1 << 16)
    if not line.endswith(b"\n"):
        raise InputError(f"log: {path} has no complete header line")
    return [c.strip() for c in line.decode("utf-8", "replace").rstrip("\r\n").split(",")]


def header_columns(with_soc, with_ageing=False):
    """The header names LogWriter writes, in file order."""
    cols = (BASE_COLUMNS + (SOC_COLUMNS if with_soc else [])
            + (AGEING_COLUMNS if with_ageing else []) + [SEQ_COLUMN])
    return [pref for pref, _ in cols]


def model_has_ageing(model):
    """Whether a model's estimator tracks the slow states (capacity or resistance), so
    the board's records carry them and its log gets the AGEING_COLUMNS."""
    est = (model or {}).get("estimator") or {}
    return bool(est.get("capacity") or est.get("resistance"))


def appendable_layout(path):
    """(with_soc, with_ageing) of a log this writer can append to: which estimate columns
    its header has (a log written before the ageing columns existed has none of them);
    InputError if its header is not one this writer writes."""
    header = read_header(path)
    layout = (SOC_COLUMNS[0][0] in header, AGEING_COLUMNS[0][0] in header)
    if header != header_columns(*layout):
        raise InputError(f"resume: {Path(path).name} was not written by this bench "
                         f"(its columns differ), cannot append to it")
    return layout


def appendable_with_soc(path):
    """Whether a log this writer can append to has the SoC columns (appendable_layout)."""
    return appendable_layout(path)[0]


def last_row(path):
    """The last complete data row of a CSV log as {column: text}, or None if it has none.

    Reads only the header and the file's tail, so it is cheap for a log of any length
    (a resumed run needs the last ``Record Seq / 1``). A partial last line is ignored.
    """
    header = read_header(path)
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        f.seek(0)
        header_len = len(f.readline(1 << 16))
        end, tail = size, b""
        while end > header_len:
            start = max(header_len, end - TAIL_CHUNK)
            f.seek(start)
            tail = f.read(end - start) + tail
            end = start
            complete = tail[: tail.rfind(b"\n") + 1]
            lines = complete.rstrip(b"\n").split(b"\n")
            if complete and (len(lines) > 1 or end == header_len):
                values = lines[-1].decode("utf-8", "replace").rstrip("\r").split(",")
                if len(values) != len(header):
                    raise InputError(f"log: the last row of {p.name} has {len(values)} fields, "
                                     f"not {len(header)}")
                return dict(zip(header, values))
    return None


def last_seq(path):
    """The board sequence number of the log's last complete record (None: no records)."""
    row = last_row(path)
    if row is None:
        return None
    text = row.get(SEQ_COLUMN[0], row.get(SEQ_COLUMN[1], ""))
    try:
        return int(text)
    except ValueError:
        raise InputError(f"log: the last row of {Path(path).name} has no record seq "
                         f"({SEQ_COLUMN[0]!r}); it cannot be resumed") from None


def count_rows(path):
    """Complete data rows in a CSV log (newlines after the header's)."""
    n = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
    return max(0, n - 1)


def _json_default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _read_csv_bytes(path):
    """File bytes up to the last complete line (a killed writer leaves a partial one)."""
    p = str(path)
    opener = gzip.open if p.endswith(".gz") else open
    try:
        with opener(p, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise InputError(f"log: cannot read {path}: {exc}") from None
    cut = data.rfind(b"\n")
    return data[: cut + 1] if cut >= 0 else b""


def _frame(path):
    import pandas as pd

    p = str(path)
    if not Path(p).is_file():
        raise InputError(f"log: no such file {path}")
    if p.endswith(".parquet"):
        try:
            return pd.read_parquet(p)
        except Exception as exc:  # pyarrow raises many types for a bad file
            raise InputError(f"log: cannot read {path} as parquet: {exc}") from None
    data = _read_csv_bytes(path)
    if not data.strip():
        raise InputError(f"log: {path} is empty")
    try:
        return pd.read_csv(io.BytesIO(data), skipinitialspace=True)
    except Exception as exc:  # pandas' parser errors vary by version
        raise InputError(f"log: cannot parse {path}: {exc}") from None


def _column(name, series):
    if name in TEXT_COLUMNS:
        return np.array(["" if v is None or v != v else str(v) for v in series], dtype=str)
    values = np.asarray(series.to_numpy(), dtype=object)
    try:
        arr = np.array(values, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"log.{name}: not numeric") from None
    if name in INT_COLUMNS and not np.isnan(arr).any():
        return arr.astype(np.int64)
    return arr


def read_log(path):
    """Read a BDF log (.csv, .bdf.csv, .csv.gz, .parquet) into numpy arrays.

    Returns a dict mapping canonical preferred BDF names ("Test Time / s", "Voltage / V",
    "Current / A", "Step Type", ...) to arrays: floats in SI/BDF units (current > 0
    charges), int64 for counts and fault flags, str for Step Type. Machine-name headers
    (``test_time_second``...) are mapped to the preferred names; unknown columns are kept
    under their own header. Raises InputError for a missing, empty or malformed log.
    """
    df = _frame(path)
    out = {}
    for header in df.columns:
        name = _CANONICAL.get(str(header).strip(), str(header).strip())
        if name in out:
            raise InputError(f"log.{name}: column given twice")
        out[name] = _column(name, df[header])
    for name in REQUIRED:
        if name not in out:
            raise InputError(f"log: missing required column {name!r}")
    return out


def read_sidecar(path):
    """The sidecar dict of a log (pass the log path or the sidecar path); {} if none."""
    p = Path(path)
    side = p if p.suffix == ".json" else existing_sidecar_path(p)
    return read_json(side, "sidecar") if side is not None and side.is_file() else {}
