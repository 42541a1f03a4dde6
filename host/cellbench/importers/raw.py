"""What a tester's reader hands over, in SI units, and the checks every import passes.

Every reader (one module per tester family) returns a :class:`Raw`: time (s), voltage
(V) and current (A, charge positive) per record, plus whatever the tester itself knew:
its step type per record (BDF names, ``EIS`` for impedance), step number, cycle number,
wall clock and capacity/energy counters (Ah, Wh; any reset pattern: per step, per
cycle or cumulative). :func:`checked` drops records without time, voltage or current
and refuses values no cell can have, naming the column and the unit they were read in.
"""

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

# A single cell: no chemistry sits beyond +-10 V, and no cell tester drives 2 kA.
MAX_ABS_V = 10.0
MAX_ABS_A = 2000.0

# An active mass a tester's file may state: 0.01 mg (a thin film) to 10 g (a large pouch).
MASS_RANGE_MG = (0.01, 1e4)

STEP_TYPES = ("REST", "OCV", "CC_CHG", "CC_DCH", "CV_CHG", "CV_DCH", "CCCV_CHG", "CCCV_DCH", "EIS")


@dataclass
class Raw:
    """One cell's records as a reader found them (units s, V, A, Ah, Wh; charge > 0).

    step_type: BDF step type text per record ("" where the file does not say);
    step: the tester's step number; cycle: its cycle number; unix_s: wall clock;
    q_chg_Ah / q_dch_Ah / e_chg_Wh / e_dch_Wh: the tester's own counters (any reset
    pattern, magnitudes); columns: quantity -> (header, unit) as read, for messages.
    """

    t_s: np.ndarray
    v_V: np.ndarray
    i_A: np.ndarray
    step_type: "np.ndarray | None" = None
    step: "np.ndarray | None" = None
    cycle: "np.ndarray | None" = None
    unix_s: "np.ndarray | None" = None
    q_chg_Ah: "np.ndarray | None" = None
    q_dch_Ah: "np.ndarray | None" = None
    e_chg_Wh: "np.ndarray | None" = None
    e_dch_Wh: "np.ndarray | None" = None
    columns: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    ARRAYS = ("t_s", "v_V", "i_A", "step_type", "step", "cycle", "unix_s",
              "q_chg_Ah", "q_dch_Ah", "e_chg_Wh", "e_dch_Wh")


def mass_meta(mass_mg, source):
    """{"mass_mg", "mass_source"} for an active mass a file states, when it is plausible
    (:data:`MASS_RANGE_MG`); {} otherwise (testers' placeholders such as 0 or 1e-9 g)."""
    lo, hi = MASS_RANGE_MG
    if mass_mg is None or not lo <= mass_mg <= hi:
        return {}
    return {"mass_mg": float(mass_mg), "mass_source": source}


def _where(raw, quantity, default):
    header = raw.columns.get(quantity)
    return f"column {header!r}" if header else default


def checked(raw: Raw) -> Raw:
    """``raw`` with incomplete records dropped; InputError for an empty table or values
    outside a cell's physical range (``|V| > 10 V``, ``|I| > 2 kA``)."""
    n = raw.t_s.size
    if n == 0:
        raise InputError("no records")
    for name in Raw.ARRAYS:
        arr = getattr(raw, name)
        if arr is not None and len(arr) != n:
            raise InputError(f"{len(arr)} {name} values for {n} times")
    keep = np.isfinite(raw.t_s) & np.isfinite(raw.v_V) & np.isfinite(raw.i_A)
    if not keep.any():
        raise InputError("no record has time, voltage and current")
    if not keep.all():
        for name in Raw.ARRAYS:
            arr = getattr(raw, name)
            if arr is not None:
                setattr(raw, name, np.asarray(arr)[keep])
    for quantity, values, limit, unit in (("voltage", raw.v_V, MAX_ABS_V, "V"),
                                          ("current", raw.i_A, MAX_ABS_A, "A")):
        worst = float(np.max(np.abs(values)))
        if worst > limit:
            header = raw.columns.get(quantity, quantity)
            raise InputError(f"column {header!r}: {worst:.6g} {unit} is beyond a cell's range "
                             f"(|{quantity}| <= {limit:g} {unit}); check the column's unit")
    return raw


def _one_label(text):
    t = "".join(str(text).lower().split()).replace("-", "").replace("_", "")
    if not t or t in ("nan", "none"):
        return ""
    if any(k in t for k in ("eis", "imped")):
        return "EIS"
    if t.startswith("ocv") or "opencircuit" in t:
        return "OCV"
    if any(k in t for k in ("rest", "pause", "relax", "storage", "idle")):
        return "REST"
    if any(k in t for k in ("dchg", "dischg", "discharge", "dch")) or t in ("d", "dis"):
        direction = "DCH"
    elif "chg" in t or "charge" in t or t == "c":
        direction = "CHG"
    elif t == "r":
        return "REST"
    else:
        return ""
    mode = "CCCV" if "cccv" in t else "CV" if t.startswith("cv") else "CC"
    return f"{mode}_{direction}"


def step_labels(texts):
    """A tester's step labels ("CC DChg", "CCCV_Chg", "Rest", "discharge", Maccor "C"/"D"/"R")
    as BDF step types; "" for labels that do not say (the derivation fills those in)."""
    arr = np.asarray(texts, dtype=str)
    uniq, inverse = np.unique(arr, return_inverse=True)
    return np.array([_one_label(u) for u in uniq], dtype="<U8")[inverse]
