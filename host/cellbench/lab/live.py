"""What a channel shows: its latest record in display units, capacity and coulombic
efficiency per completed cycle, the board's live capacity and charge-transfer resistance
estimates (issue 14: the estimator's slow states, when its model tracks them) now and at
the end of each cycle, and the estimated time left.

Counters come from the board's records (docs/link.md): ``q_chg_nAh`` and ``q_dch_nAh``
only grow, and a step's last point is always recorded, so the counters at the last
record of a cycle close that cycle exactly. Coulombic efficiency is what comes out over
what went in, "in" being the direction of the run's first active step (a half cell run
discharge-first, LTO/Li or graphite/Li: charge / discharge; a full cell: discharge /
charge).
"""

import math
import time

from .. import protocol as proto
from ..bdflog import AGEING_COLUMNS, AGEING_FIELDS, STEP_TYPES
from ..commands.run import Progress
from ..session import fault_text

FIRST_SIGN = {1: 1, 2: -1, 3: 1, 4: -1}  # step_type -> current sign (REST: none)
# Record fields of the estimates, their display name and divisor: nAh -> mAh, mohm -> ohm.
ESTIMATES = (("cap_nAh", "cap_mAh", 1e6), ("cap_std_nAh", "cap_std_mAh", 1e6),
             ("r_mohm", "r_ohm", 1e3), ("r_std_mohm", "r_std_ohm", 1e3))
assert tuple(e[0] for e in ESTIMATES) == tuple(f for f, _ in AGEING_FIELDS)


def estimates(rec):
    """The board's capacity (mAh) and charge-transfer resistance (ohm) estimates of a
    record with their std, keyed cap_mAh, cap_std_mAh, r_ohm, r_std_ohm; None for -1 (no
    estimate: the state is off, or the record has no such field)."""
    out = {}
    for field, key, scale in ESTIMATES:
        value = rec.get(field, -1)
        out[key] = value / scale if value >= 0 else None
    return out


class Cycles:
    """Charge and discharge (mAh) per completed cycle, fed record by record, with the
    board's estimates at the cycle's last record (:func:`estimates`)."""

    def __init__(self):
        self.rows = []          # [{"cycle", "chg_mAh", "dch_mAh", "ce", "cap_mAh", ...}]
        self._cycle = None
        self._last = None       # (q_chg_nAh, q_dch_nAh) at the newest record
        self._last_est = None   # estimates() of the newest record
        self._closed = (0, 0)   # counters where the open cycle began
        self.first_sign = 0     # sign of the run's first active step (0: none yet)

    def add(self, cycle, step_type, q_chg_nAh, q_dch_nAh, est=None):
        """One record (``est``: its :func:`estimates`, None: none); True when it closed a
        cycle (a new row in ``rows``)."""
        if not self.first_sign:
            self.first_sign = FIRST_SIGN.get(step_type, 0)
        closed = False
        if self._cycle is not None and cycle != self._cycle and self._last is not None:
            chg = (self._last[0] - self._closed[0]) / 1e6
            dch = (self._last[1] - self._closed[1]) / 1e6
            into, out = (dch, chg) if self.first_sign < 0 else (chg, dch)
            row = {"cycle": self._cycle, "chg_mAh": chg, "dch_mAh": dch,
                   "ce": out / into if into > 0 else None}
            row.update(self._last_est or estimates({}))
            self.rows.append(row)
            self._closed = self._last
            closed = True
        self._cycle = cycle
        self._last = (q_chg_nAh, q_dch_nAh)
        self._last_est = est
        return closed


def _silent(text):
    """The Progress writer of a channel: the lab shows the line on its page, not stderr."""


class Live:
    """The live state of one run on a channel (``snapshot()`` is what the page gets).

    ``table``, ``protocol``: the run's step table and protocol; ``mass_mg``: the active
    mass (adds mAh/g), or None; ``model``: the estimator's model (its capacity_Ah is what
    the capacity estimate is a percentage of), or None: then of the run's first estimate.
    """

    def __init__(self, table, protocol, mass_mg=None, model=None):
        self.table = table
        self.mass_mg = mass_mg
        cap_Ah = (model or {}).get("capacity_Ah")
        self.cap0_mAh = cap_Ah * 1e3 if cap_Ah else None
        capacity = (protocol.get("sample") or {}).get("capacity_mAh")
        self.progress = Progress(table, proto.planned_durations_s(table, capacity), mass_mg,
                                 write=_silent)
        self.cycles = Cycles()
        self.rec = None
        self.rx_unix_s = None   # host time the newest record arrived (unix s)
        self.remaining_s = None
        self.records = 0

    def add(self, rec):
        """One record from the board; True when it closed a cycle."""
        self.rec = rec
        self.rx_unix_s = time.time()
        self.records += 1
        self.remaining_s = self.progress.remaining_s(rec)
        est = estimates(rec)
        if self.cap0_mAh is None and est["cap_mAh"]:
            self.cap0_mAh = est["cap_mAh"]
        return self.cycles.add(rec["cycle"], rec["step_type"], rec["q_chg_nAh"], rec["q_dch_nAh"], est)

    def snapshot(self):
        """The latest record in display units (V, mA, mAh, s, ohm; SoC 0-1), or {} before
        one. cap_pct: the capacity estimate in % of the model's capacity (else of the run's
        first estimate)."""
        r = self.rec
        if r is None:
            return {}
        steps = self.table["steps"]
        no = r["step_no"]
        soc = r.get("soc_ppm", -1)
        std = r.get("soc_std_ppm", -1)
        return {
            "seq": r.get("seq"), "t_s": r["t_ms"] / 1000, "v_V": r["v_uV"] / 1e6,
            "i_mA": r["i_nA"] / 1e6, "cycle": r["cycle"], "step_no": no,
            "step_count": r["step_count"], "steps": len(steps),
            "step_kind": steps[no][0] if 0 <= no < len(steps) else "?",
            "step_type": STEP_TYPES[r["step_type"]] if 0 <= r["step_type"] < 5 else "?",
            "soc": soc / 1e6 if soc >= 0 else None, "soc_std": std / 1e6 if std >= 0 else None,
            "q_chg_mAh": r["q_chg_nAh"] / 1e6, "q_dch_mAh": r["q_dch_nAh"] / 1e6,
            "fault": r["fault"], "fault_text": fault_text(r["fault"]) if r["fault"] else "",
            "remaining_s": self.remaining_s, "rx_unix_s": self.rx_unix_s,
            "cycles_done": len(self.cycles.rows),
            **self._estimates(r),
        }

    def _estimates(self, rec):
        est = estimates(rec)
        cap = est["cap_mAh"]
        est["cap_pct"] = 100 * cap / self.cap0_mAh if cap is not None and self.cap0_mAh else None
        return est


def logged_records(log):
    """The records of a logged run (``bdflog.read_log`` arrays) as board-integer dicts:
    the fields the live state uses (step_no is not logged: -1)."""
    step_type = {name: k for k, name in enumerate(STEP_TYPES)}
    faults = log.get("Fault Flags / 1")
    logged_est = [(field, log[col], 10 ** digits) for (col, _), (field, digits)
                  in zip(AGEING_COLUMNS, AGEING_FIELDS) if col in log]
    for k in range(len(log["Record Seq / 1"])):
        est = {field: -1 if math.isnan(values[k]) else round(float(values[k]) * scale)
               for field, values, scale in logged_est}
        yield {**est, "seq": int(log["Record Seq / 1"][k]), "t_ms": round(float(log["Test Time / s"][k]) * 1e3),
               "v_uV": round(float(log["Voltage / V"][k]) * 1e6),
               "i_nA": round(float(log["Current / A"][k]) * 1e9),
               "cycle": int(log["Cycle Count / 1"][k]), "step_count": int(log["Step Count / 1"][k]),
               "step_no": -1, "step_type": step_type.get(str(log["Step Type"][k]), 0),
               "fault": int(faults[k]) if faults is not None else 0,
               "q_chg_nAh": round(float(log["Charging Capacity / Ah"][k]) * 1e9),
               "q_dch_nAh": round(float(log["Discharging Capacity / Ah"][k]) * 1e9)}


def logged_cycles(log):
    """The :class:`Cycles` of a logged run."""
    cycles = Cycles()
    for rec in logged_records(log):
        cycles.add(rec["cycle"], rec["step_type"], rec["q_chg_nAh"], rec["q_dch_nAh"], estimates(rec))
    return cycles


def replay(live, log):
    """Feed a logged run into ``live``: a reattached channel shows its cycles and last
    values from before the restart."""
    live.cycles = logged_cycles(log)
