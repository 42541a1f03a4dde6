"""Other testers' files -> Battery Data Format logs (``cellbench import``).

Readers: Neware .nda/.ndax through NewareNDA, BioLogic .mpr through galvani, and every
format batterydf's own converters recognise (Neware/Landt/Digatron/Novonix/Basytec CSV or
text exports, BioLogic .mpt, ...) through ``bdf.read``. Each reader returns a
:class:`Raw` table (time, voltage, current, plus whatever step, cycle and wall-clock
information the format has); :func:`to_bdf` then derives the log columns of
docs/design.md with SI units and charge-positive current:

* current sign: where the file labels each record (Neware status ``CC_Chg``/``CC_DChg``),
  the label sets the sign, so a tester exporting magnitudes still comes out charge > 0;
* test time never goes back (step-relative clocks are made cumulative);
* capacities and energies are integrated from current and voltage (trapezoid rule) and
  accumulate from the start of the test, as BDF defines them, whatever the tester
  counted per step.
"""

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bdflog import BASE_COLUMNS, read_log, sidecar_path
from .errors import InputError

SECONDS_PER_HOUR = 3600.0
COLUMNS = [pref for pref, _ in BASE_COLUMNS if pref != "Fault Flags / 1"]  # a tester's faults are not ours
REST_FRACTION = 1e-3        # |I| below this share of the largest |I| is a rest when nothing says otherwise


@dataclass
class Raw:
    """What a reader found. Units s, V, A; ``status`` optional text per record."""

    t_s: np.ndarray
    v_V: np.ndarray
    i_A: np.ndarray
    status: "np.ndarray | None" = None      # CC_Chg, CC_DChg, Rest, CV_Chg, ...
    step: "np.ndarray | None" = None         # the tester's step number per record
    cycle: "np.ndarray | None" = None
    unix_s: "np.ndarray | None" = None
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------- readers


def _neware(path: Path) -> Raw:
    """Neware .nda/.ndax through NewareNDA (columns Time s, Voltage V, Current(mA), Status)."""
    import NewareNDA

    df = NewareNDA.read(str(path), log_level="CRITICAL")   # its errors come back as our one line
    meta = {"reader": f"NewareNDA {getattr(NewareNDA, '__version__', '')}".strip()}
    try:
        info = NewareNDA.read_metadata(str(path))
        if info.get("active_mass_mg"):
            meta["mass_mg"] = float(info["active_mass_mg"])
    except Exception:  # metadata is a bonus; the records are what matter
        pass
    unix = None
    if "Timestamp" in df:
        stamps = df["Timestamp"]
        unix = np.asarray([s.timestamp() for s in stamps], dtype=float)
    return Raw(_float(df["Time"]), _float(df["Voltage"]), _float(df["Current(mA)"]) / 1000.0,
               status=np.asarray(df["Status"].astype(str)), step=_float(df["Step"]),
               cycle=_float(df["Cycle"]), unix_s=unix, meta=meta)


def _biologic_mpr(path: Path) -> Raw:
    """BioLogic .mpr through galvani (time/s, Ewe/V, I/mA or <I>/mA, Ns changes)."""
    from galvani import BioLogic

    mpr = BioLogic.MPRfile(str(path))
    data = mpr.data
    names = data.dtype.names
    current = next((n for n in ("I/mA", "<I>/mA", "control/mA") if n in names), None)
    for needed, found in (("time/s", "time/s" in names), ("Ewe/V", "Ewe/V" in names), ("I/mA", current)):
        if not found:
            raise ValueError(f"no {needed} column (has {', '.join(names)})")
    step = None
    if "Ns changes" in mpr.flags_dict:
        step = np.cumsum(mpr.get_flag("Ns changes").astype(int)).astype(float)
    cycle = _float(data["cycle number"]) + 1 if "cycle number" in names else None
    meta = {"reader": "galvani 0.5.0", "start_date": str(mpr.startdate)}
    # BioLogic's I > 0 is oxidation at the working electrode: charge of a cathode or
    # delithiation of a half-cell anode, the bench's "charge" in both cases.
    return Raw(_float(data["time/s"]), _float(data["Ewe/V"]), _float(data[current]) / 1000.0,
               step=step, cycle=cycle, meta=meta)


def _batterydf(path: Path) -> Raw:
    """Anything batterydf converts (its plugins normalise to BDF names and units)."""
    import bdf

    df = bdf.read(str(path), validate=False)
    cols = {str(c).strip(): c for c in df.columns}
    for name in ("Test Time / s", "Voltage / V", "Current / A"):
        if name not in cols:
            raise ValueError(f"batterydf found no {name!r} (columns: {', '.join(cols)})")
    pick = lambda *names: next((_float(df[cols[n]]) for n in names if n in cols), None)
    return Raw(pick("Test Time / s"), pick("Voltage / V"), pick("Current / A"),
               step=pick("Step Count / 1", "Step Index / 1", "Step Index"),
               cycle=pick("Cycle Count / 1", "Cycle Index"), unix_s=pick("Unix Time / s"),
               meta={"reader": f"batterydf {getattr(bdf, '__version__', '')}".strip()})


def _bdf_log(path: Path) -> Raw:
    """A log that is already BDF (any header style): re-derived and rewritten."""
    cols = read_log(path)
    get = lambda name: cols.get(name)
    return Raw(cols["Test Time / s"], cols["Voltage / V"], cols["Current / A"],
               step=_maybe_float(get("Step Count / 1")), cycle=_maybe_float(get("Cycle Count / 1")),
               unix_s=_maybe_float(get("Unix Time / s")), meta={"reader": "cellbench.bdflog"})


READERS = {".nda": ("Neware .nda", _neware), ".ndax": ("Neware .ndax", _neware),
           ".mpr": ("BioLogic .mpr", _biologic_mpr)}


def _float(series) -> np.ndarray:
    return np.asarray(series, dtype=float)


def _maybe_float(values):
    return None if values is None else np.asarray(values, dtype=float)


def _is_bdf(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith((".parquet", ".bdf.csv", ".bdf.gz")):
        return True
    if name.endswith(".csv"):
        try:
            head = path.open("rb").readline().decode("utf-8", "replace")
        except OSError:
            return False
        return "Test Time / s" in head or "test_time_second" in head
    return False


def read_foreign(path) -> Raw:
    """Read any supported file; InputError("<file>: ...") naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    kind, reader = READERS.get(path.suffix.lower(), (None, None))
    if reader is None:
        kind, reader = ("BDF log", _bdf_log) if _is_bdf(path) else ("batterydf format", _batterydf)
    try:
        with warnings.catch_warnings():
            # Vendor readers use pandas APIs that now warn; users should not see that.
            warnings.simplefilter("ignore")
            raw = reader(path)
    except InputError as exc:
        raise InputError(f"{path.name}: {exc}") from None
    except Exception as exc:  # vendor readers raise anything from struct.error to KeyError
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path.name}: cannot read as {kind}: {detail}") from None
    raw.meta["format"] = kind
    return _checked(path, raw)


def _checked(path: Path, raw: Raw) -> Raw:
    n = raw.t_s.size
    if n == 0:
        raise InputError(f"{path.name}: no records")
    for name, arr in (("voltage", raw.v_V), ("current", raw.i_A)):
        if arr.size != n:
            raise InputError(f"{path.name}: {arr.size} {name} values for {n} times")
    keep = np.isfinite(raw.t_s) & np.isfinite(raw.v_V) & np.isfinite(raw.i_A)
    if not keep.any():
        raise InputError(f"{path.name}: no record has time, voltage and current")
    for name in ("t_s", "v_V", "i_A", "status", "step", "cycle", "unix_s"):
        arr = getattr(raw, name)
        if arr is not None:
            setattr(raw, name, np.asarray(arr)[keep])
    return raw


# ---------------------------------------------------------------- derivation


def test_time_s(t_s: np.ndarray, unix_s=None) -> np.ndarray:
    """A test clock that never goes back: wall-clock offsets if known, else step clocks summed."""
    t = np.asarray(t_s, dtype=float)
    if np.all(np.diff(t) >= 0):
        return t - t[0] if t[0] < 0 else t
    if unix_s is not None and np.all(np.isfinite(unix_s)) and np.all(np.diff(unix_s) >= 0):
        return unix_s - unix_s[0]
    # Step-relative clock: each reset starts from where the previous record ended, plus
    # the typical record interval (the gap between steps is not in the file).
    dt = np.diff(t)
    typical = float(np.median(dt[dt > 0])) if np.any(dt > 0) else 1.0
    dt = np.where(dt < 0, typical + np.maximum(t[1:], 0.0), dt)
    return np.concatenate(([0.0], np.cumsum(dt)))


def signed_current_A(raw: Raw) -> np.ndarray:
    """Charge-positive current: a record's charge/discharge label wins over the file's sign."""
    i = np.asarray(raw.i_A, dtype=float)
    if raw.status is None:
        return i
    text = np.char.lower(raw.status.astype(str))
    dch = np.char.find(text, "dchg") >= 0
    chg = (np.char.find(text, "chg") >= 0) & ~dch
    return np.where(dch, -np.abs(i), np.where(chg, np.abs(i), i))


def step_types(raw: Raw, i_A: np.ndarray) -> np.ndarray:
    """BDF Step Type per record: from the tester's label, else from the current's sign."""
    if raw.status is not None:
        table = {"cc_chg": "CC_CHG", "cc_dchg": "CC_DCH", "cv_chg": "CV_CHG", "cv_dchg": "CV_DCH",
                 "cccv_chg": "CCCV_CHG", "cccv_dchg": "CCCV_DCH", "rest": "REST", "ocv": "OCV"}
        return np.array([table.get(s.lower(), s.upper()) for s in raw.status.astype(str)])
    i_A = _step_means(raw.step, i_A)
    rest = np.abs(i_A) <= REST_FRACTION * max(float(np.max(np.abs(i_A))), 1e-30)
    return np.where(rest, "REST", np.where(i_A > 0, "CC_CHG", "CC_DCH"))


def _step_means(step, i_A: np.ndarray) -> np.ndarray:
    """Each record's current replaced by its tester step's mean (as is without step numbers).

    A rest's noise can exceed REST_FRACTION of the largest current (a few tens of nA on
    a coin cell tested at uA); record by record it would split one rest into hundreds
    of steps, while the step's mean is ~0.
    """
    if step is None:
        return i_A
    starts = np.flatnonzero(np.concatenate(([True], step[1:] != step[:-1])))
    sums = np.add.reduceat(i_A, starts)
    lengths = np.diff(np.concatenate((starts, [i_A.size])))
    return np.repeat(sums / lengths, lengths)


def step_counts(raw: Raw, types: np.ndarray) -> np.ndarray:
    """Step Count (1, 2, ...): a new step wherever the tester's step number or the type changes."""
    change = np.zeros(types.size, dtype=bool)
    change[1:] = types[1:] != types[:-1]
    if raw.step is not None:
        change[1:] |= raw.step[1:] != raw.step[:-1]
    return np.cumsum(change) + 1


def step_index(counts: np.ndarray) -> np.ndarray:
    """Point number within each step, from 1."""
    starts = np.flatnonzero(np.concatenate(([True], counts[1:] != counts[:-1])))
    lengths = np.diff(np.concatenate((starts, [counts.size])))
    return np.arange(counts.size) - np.repeat(starts, lengths) + 1


def _cumulative(t_s, rate):
    """Trapezoid integral of ``rate`` over ``t_s``, from 0 (rate per second -> per hour)."""
    return np.concatenate(([0.0], np.cumsum(0.5 * (rate[1:] + rate[:-1]) * np.diff(t_s)))) / SECONDS_PER_HOUR


def cycle_counts(types: np.ndarray) -> np.ndarray:
    """Cycle Count as docs/design.md defines it: +1 when a step of the first active sign
    starts after a step of the other sign ran."""
    sign = np.where(np.char.find(types, "CHG") >= 0, 1, np.where(np.char.find(types, "DCH") >= 0, -1, 0))
    active = sign[sign != 0]
    if active.size == 0:
        return np.ones(types.size, dtype=int)
    first, cycle, seen_other, prev = active[0], 1, False, 0
    out = np.empty(types.size, dtype=int)
    for k, s in enumerate(sign.tolist()):
        if s == -first:
            seen_other = True
        elif s == first and prev != first and seen_other:
            cycle, seen_other = cycle + 1, False
        if s:
            prev = s
        out[k] = cycle
    return out


def to_bdf(raw: Raw) -> dict:
    """The log columns (docs/design.md order, no Fault Flags) as numpy arrays."""
    t = test_time_s(raw.t_s, raw.unix_s)
    i = signed_current_A(raw)
    v = np.asarray(raw.v_V, dtype=float)
    types = step_types(raw, i)
    counts = step_counts(raw, types)
    q_chg = _cumulative(t, np.maximum(i, 0.0))
    q_dch = _cumulative(t, np.maximum(-i, 0.0))
    through = q_chg + q_dch
    starts = np.flatnonzero(np.concatenate(([True], counts[1:] != counts[:-1])))
    lengths = np.diff(np.concatenate((starts, [counts.size])))
    p = v * i
    cols = {
        "Test Time / s": t, "Voltage / V": v, "Current / A": i,
        "Unix Time / s": raw.unix_s if raw.unix_s is not None else None,
        "Cycle Count / 1": cycle_counts(types),
        "Step Count / 1": counts, "Step Index / 1": step_index(counts), "Step Type": types,
        "Charging Capacity / Ah": q_chg, "Discharging Capacity / Ah": q_dch,
        "Step Capacity / Ah": through - np.repeat(through[starts], lengths),
        "Charging Energy / Wh": _cumulative(t, np.maximum(p, 0.0) * (i > 0)),
        "Discharging Energy / Wh": _cumulative(t, np.maximum(-p, 0.0) * (i < 0)),
    }
    return {name: cols[name] for name in COLUMNS if cols.get(name) is not None}


# ---------------------------------------------------------------- writing


def write(columns: dict, out, meta: dict, force: bool = False) -> Path:
    """Write ``columns`` as a BDF log (.parquet, else CSV) plus a JSON sidecar."""
    import json

    import pandas as pd

    out = Path(out)
    side = sidecar_path(out)
    for p in (out, side):
        if p.exists() and not force:
            raise InputError(f"out: {p} exists (use --force to overwrite)")
    frame = pd.DataFrame(columns)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.name.lower().endswith(".parquet"):
            frame.to_parquet(out, index=False)
        else:
            frame.to_csv(out, index=False, float_format="%.9g")
        side.write_text(json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n")
    except OSError as exc:
        raise InputError(f"out: cannot write {out}: {exc.strerror or exc}") from None
    return out


def import_file(path, out, force: bool = False) -> dict:
    """Convert ``path`` to a BDF log at ``out``; returns the sidecar written."""
    import time

    raw = read_foreign(path)
    columns = to_bdf(raw)
    meta = dict(raw.meta)
    meta.update({"imported_from": str(Path(path).name), "imported_unix_s": round(time.time(), 3),
                 "rows": int(columns["Test Time / s"].size),
                 "convention": "BDF: SI units, current > 0 charges the cell"})
    write(columns, out, meta, force)
    return meta
