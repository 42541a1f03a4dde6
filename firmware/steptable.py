"""What a valid step table is (docs/design.md "Step table"): the check LOAD runs.

validate(table, board) names the first bad field of a parsed table, or returns None; the
step engine (firmware/steps.py) then runs only tables this accepted (firmware/runsetup.py
compiles them). The check is needed only while a table is loaded, so the board does not
keep it: LOAD imports this module for the call and drops it afterwards (controller._once;
its bytecode, ~1 KB of heap, goes back to the ring). The host runs the same check before it sends a table
(cellbench.protocol).

Units: voltage uV, current nA (> 0 charges the cell), time ms, charge nAh; all integers.
"""

import safety
from steps import MAX_LOOP_COUNT

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x


ARITY = {"CC": 4, "CV": 4, "OCV": 2, "LOOP": 3}  # a step's list length, tag included

_VERSION = const(1)
_TICK_MIN_ms = const(50)
_TICK_MAX_ms = const(60000)
_MAX_STEPS = const(500)
_MAX_TIME_ms = const(1 << 30)          # keeps until_ms (and the engine's step_ms) a small int


def _int(x):
    # JSON integers only: bool is an int subclass and floats are not exact.
    return type(x) is int


def _check_int(x, field, lo, hi):
    if not _int(x):
        return (field, "must be an integer")
    if x < lo or x > hi:
        return (field, "must be in [%d, %d]" % (lo, hi))
    return None


def _validate_safety(table, board):
    sec = table.get("safety")
    if sec is None:
        return None
    if not isinstance(sec, dict):
        return ("safety", "must be an object")
    bounds = {"max_uV": (board.min_uV, board.max_uV), "min_uV": (board.min_uV, board.max_uV),
              "max_nA": (0, board.max_nA), "min_nA": (-board.max_nA, 0),
              "max_q_nAh": (0, 1 << 30), "delay_ms": (0, 3600000)}
    for key in sec:
        if key not in bounds:
            return ("safety." + str(key), "unknown key")
        lo, hi = bounds[key]
        err = _check_int(sec[key], "safety." + key, lo, hi)
        if err:
            return err
    lim = safety.limits(board, table.get("safety"))
    if lim["max_uV"] <= lim["min_uV"]:
        return ("safety.max_uV", "must be above safety.min_uV")
    return None


def _validate_record(table):
    sec = table.get("record")
    if sec is None:
        return None
    if not isinstance(sec, dict):
        return ("record", "must be an object")
    for key in sec:
        if key not in ("dt_ms", "dv_uV", "di_nA"):
            return ("record." + str(key), "unknown key")
        err = _check_int(sec[key], "record." + key, 0, 1 << 30)
        if err:
            return err
    return None


def _check_safe(x, field, lo, hi):
    if x > hi or x < lo:
        return (field, "outside the safety limits [%d, %d]" % (lo, hi))
    return None


def _validate_current(i, field, board, lim):
    return _check_int(i, field, -board.range_max_nA, board.range_max_nA) or \
        _check_safe(i, field, lim["min_nA"], lim["max_nA"])


def _validate_voltage(v, field, board, lim, zero_ok):
    if zero_ok and v == 0 and _int(v):
        return None
    return _check_int(v, field, board.min_uV, board.max_uV) or \
        _check_safe(v, field, lim["min_uV"], lim["max_uV"])


def _validate_step(k, s, steps, board, lim):
    f = "steps[%d]" % k
    if not isinstance(s, list) or not s or not isinstance(s[0], str):
        return (f, "must be a list starting with a tag (CC, CV, OCV, LOOP)")
    tag = s[0]
    if tag not in ARITY:
        return (f + ".type", "unknown step type " + tag[:8])
    if len(s) != ARITY[tag]:
        return (f, "%s takes %d values" % (tag, ARITY[tag] - 1))
    if tag == "LOOP":
        err = _check_int(s[1], f + ".to_step_no", 0, k - 1) or \
            _check_int(s[2], f + ".count", 0, MAX_LOOP_COUNT)
        if err:
            return err
        if steps[s[1]][0] == "LOOP":
            return (f + ".to_step_no", "must not be a LOOP step")
        return None
    if tag == "OCV":
        return _check_int(s[1], f + ".until_ms", 1, _MAX_TIME_ms)
    err = _check_int(s[2], f + ".until_ms", 0, _MAX_TIME_ms)
    if err:
        return err
    if tag == "CC":
        err = _validate_current(s[1], f + ".i_nA", board, lim) or \
            _validate_voltage(s[3], f + ".until_uV", board, lim, True)
        if err:
            return err
        if s[2] == 0 and (s[3] == 0 or s[1] == 0):
            return (f + ".until_ms", "needs an end: until_ms, or until_uV with a current")
        return None
    err = _validate_voltage(s[1], f + ".v_uV", board, lim, False) or \
        _check_int(s[3], f + ".until_nA", 0, board.range_max_nA)
    if err:
        return err
    if s[2] == 0 and s[3] == 0:
        return (f + ".until_ms", "needs an end: until_ms or until_nA")
    return None


def validate(table, board):
    """Check a step table before it is accepted.

    Returns None when the table is fine, else (field, message) with the field named like
    "steps[3].until_uV". Checks: version, integer types, ranges against the board's limits
    and range, safety limits, an end condition on every step, LOOP targets before the
    LOOP step (and not LOOP steps themselves, so a run of LOOPs always ends).
    """
    if not isinstance(table, dict):
        return ("table", "must be a JSON object")
    if table.get("v") != _VERSION or not _int(table.get("v")):
        return ("v", "must be %d" % _VERSION)
    for key in table:
        if key not in ("v", "tick_ms", "safety", "record", "steps"):
            return (str(key)[:20], "unknown key")
    if "tick_ms" in table:
        err = _check_int(table["tick_ms"], "tick_ms", _TICK_MIN_ms, _TICK_MAX_ms)
        if err:
            return err
    err = _validate_safety(table, board) or _validate_record(table)
    if err:
        return err
    steps = table.get("steps")
    if not isinstance(steps, list) or not steps:
        return ("steps", "must be a non-empty list")
    if len(steps) > _MAX_STEPS:
        return ("steps", "at most %d steps" % _MAX_STEPS)
    lim = safety.limits(board, table.get("safety"))
    for k in range(len(steps)):
        err = _validate_step(k, steps[k], steps, board, lim)
        if err:
            return err
    return None
