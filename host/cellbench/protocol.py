"""aurora-unicycler protocols: load, validate, compile to the board's integer step table.

A protocol is one JSON document (PyPI ``aurora-unicycler`` 0.4.x format)::

    {"sample": {"name": .., "capacity_mAh": ..},
     "record": {"time_s": .., "voltage_V": .., "current_mA": ..},
     "safety": {"max_voltage_V", "min_voltage_V", "max_current_mA", "min_current_mA",
                "max_capacity_mAh", "delay_s"},
     "method": [{"step": "constant_current", "rate_C" | "current_mA", "until_time_s", "until_voltage_V"},
                {"step": "constant_voltage", "voltage_V", "until_time_s", "until_rate_C", "until_current_mA"},
                {"step": "open_circuit_voltage", "until_time_s"},
                {"step": "tag", "tag"}, {"step": "loop", "loop_to": tag | 1-based step, "cycle_count"}]}

Positive current or rate charges the cell. ``cycle_count`` is the total number of passes
(aurora's meaning); the board's LOOP count is the number of jumps back, one less.

:func:`compile_protocol` (alias ``compile``) returns the step table of docs/design.md:
integers in nA, uV, ms and nAh, tags resolved to 0-based step numbers. Every problem raises
InputError naming the field, e.g. ``method[3].constant_current: no end condition``.
"""

import re

from . import fw
from .errors import InputError
from .jsonfile import read_json

TABLE_VERSION = 1
UNSUPPORTED_STEPS = ("impedance_spectroscopy", "voltage_scan")
_STEP_KEYS = {
    "constant_current": {"rate_C", "current_mA", "until_time_s", "until_voltage_V"},
    "constant_voltage": {"voltage_V", "until_time_s", "until_rate_C", "until_current_mA"},
    "open_circuit_voltage": {"until_time_s"},
    "tag": {"tag"},
    "loop": {"loop_to", "cycle_count"},
}
_SECTION_KEYS = {
    "sample": {"name", "capacity_mAh"},
    "record": {"time_s", "voltage_V", "current_mA"},
    "safety": {"max_voltage_V", "min_voltage_V", "max_current_mA", "min_current_mA",
               "max_capacity_mAh", "delay_s"},
}
_TOP_KEYS = {"unicycler", "sample", "record", "safety", "method"}
# Longest unrolled program the time estimate walks (100 cycles x 10 steps is 1000).
_MAX_UNROLLED = 200_000


# ---------------------------------------------------------------- reading


def load_protocol(path):
    """Read a protocol JSON file into a dict; InputError if unreadable or not JSON."""
    return read_json(path, "protocol")


def _number(value, field, positive=False, allow_zero=True):
    """A float from a JSON number (aurora also allows "" for not set: None)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{field}: must be a number, got {value!r}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise InputError(f"{field}: must be finite")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        raise InputError(f"{field}: must be > 0" if not allow_zero else f"{field}: must be >= 0")
    return value


def parse_rate(value, field):
    """A C-rate: a number or aurora's fraction strings ("1/5", "C/2", "D/3" = -1/3)."""
    if isinstance(value, str) and value.strip():
        text = value.replace(" ", "")
        num, sep, den = text.partition("/")
        try:
            if not sep:
                return float(text)
            sign = -1.0 if "D" in num else 1.0
            head = num.replace("C", "").replace("D", "")
            if num.count("C") + num.count("D") > 1:
                raise ValueError
            return sign * (float(head) if head else 1.0) / float(den)
        except (ValueError, ZeroDivisionError):
            raise InputError(f"{field}: not a C-rate: {value!r}") from None
    return _number(value, field)


def _check_keys(obj, allowed, field):
    if not isinstance(obj, dict):
        raise InputError(f"{field}: must be a JSON object")
    extra = sorted(set(obj) - allowed - {"id", "step"})
    if extra:
        raise InputError(f"{field}.{extra[0]}: unknown field")


# ---------------------------------------------------------------- board limits


def board_limits(board):
    """The board file's limits as integers: max_uV, min_uV, max_nA, range_max_nA."""
    try:
        limits = board["limits"]
        ranges = board["current"]["ranges"]
        max_uV = round(float(limits["max_V"]) * 1e6)
        min_uV = round(float(limits["min_V"]) * 1e6)
        max_nA = round(float(limits["max_mA"]) * 1e6)
        range_max_nA = max(round(float(r["full_scale_mA"]) * 1e6) for r in ranges)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"board: missing or bad limits/current ranges ({exc})") from None
    comp = board.get("compliance_V")
    if comp:
        min_uV = max(min_uV, round(float(comp[0]) * 1e6))
        max_uV = min(max_uV, round(float(comp[1]) * 1e6))
    return {"max_uV": max_uV, "min_uV": min_uV, "max_nA": max_nA, "range_max_nA": range_max_nA}


# ---------------------------------------------------------------- sections


def _safety(protocol, limits):
    """The safety section in board integers; missing limits default to the board's own."""
    s = protocol.get("safety") or {}
    _check_keys(s, _SECTION_KEYS["safety"], "safety")
    get = lambda key, **kw: _number(s.get(key), f"safety.{key}", **kw)
    out = {
        "max_uV": _uV(get("max_voltage_V"), limits["max_uV"]),
        "min_uV": _uV(get("min_voltage_V"), limits["min_uV"]),
        "max_nA": _nA(get("max_current_mA"), limits["max_nA"]),
        "min_nA": _nA(get("min_current_mA"), -limits["max_nA"]),
        "max_q_nAh": _nA(get("max_capacity_mAh", positive=True), 0),  # 0: no limit
        "delay_ms": _ms(get("delay_s", positive=True), 0),
    }
    if out["max_uV"] > limits["max_uV"]:
        raise InputError(f"safety.max_voltage_V: above the board's limit {limits['max_uV'] / 1e6:g} V")
    if out["min_uV"] < limits["min_uV"]:
        raise InputError(f"safety.min_voltage_V: below the board's limit {limits['min_uV'] / 1e6:g} V")
    if out["max_nA"] > limits["max_nA"]:
        raise InputError(f"safety.max_current_mA: above the board's limit {limits['max_nA'] / 1e6:g} mA")
    if out["min_nA"] < -limits["max_nA"]:
        raise InputError(f"safety.min_current_mA: below the board's limit -{limits['max_nA'] / 1e6:g} mA")
    if out["max_uV"] <= out["min_uV"]:
        raise InputError("safety.max_voltage_V: must be above safety.min_voltage_V")
    if out["max_nA"] <= out["min_nA"]:
        raise InputError("safety.max_current_mA: must be above safety.min_current_mA")
    return out


def _record(protocol, tick_ms):
    """The record section: record when dt_ms passed or |dV| / |dI| exceeded (0 = off)."""
    r = protocol.get("record")
    if r is None:
        return {"dt_ms": tick_ms, "dv_uV": 0, "di_nA": 0}
    _check_keys(r, _SECTION_KEYS["record"], "record")
    dt = _number(r.get("time_s"), "record.time_s", positive=True, allow_zero=False)
    dv = _number(r.get("voltage_V"), "record.voltage_V", positive=True, allow_zero=False)
    di = _number(r.get("current_mA"), "record.current_mA", positive=True, allow_zero=False)
    dt_ms = _ms(dt, tick_ms)
    if dt_ms < tick_ms:
        raise InputError(f"record.time_s: {dt_ms / 1000:g} s is shorter than the tick ({tick_ms} ms)")
    return {"dt_ms": dt_ms, "dv_uV": _uV(dv, 0), "di_nA": _nA(di, 0)}


def _uV(volts, default):
    return default if volts is None else round(volts * 1e6)


def _nA(milli, default):
    """mA -> nA (also mAh -> nAh)."""
    return default if milli is None else round(milli * 1e6)


def _ms(seconds, default):
    return default if seconds is None else round(seconds * 1000)


# ---------------------------------------------------------------- steps


class _Ctx:
    """What step compilation checks against: capacity, limits, safety, model window."""

    def __init__(self, capacity_mAh, limits, safety, window_uV):
        self.capacity_mAh = capacity_mAh
        self.limits = limits
        self.safety = safety
        self.window_uV = window_uV

    def current(self, step, field):
        """Setpoint in nA from rate_C (priority, needs capacity) or current_mA."""
        rate = parse_rate(step.get("rate_C"), f"{field}.rate_C")
        if rate:
            if not self.capacity_mAh:
                raise InputError(f"{field}.rate_C: needs sample.capacity_mAh")
            i_nA = round(rate * self.capacity_mAh * 1e6)
        else:
            ma = _number(step.get("current_mA"), f"{field}.current_mA")
            if not ma:
                raise InputError(f"{field}: no current (rate_C or current_mA, non-zero)")
            i_nA = round(ma * 1e6)
        self.check_current(i_nA, field)
        return i_nA

    def check_current(self, i_nA, field):
        cap = min(self.limits["range_max_nA"], self.limits["max_nA"])
        if abs(i_nA) > cap:
            raise InputError(f"{field}: current {i_nA / 1e6:g} mA beyond the board's range ({cap / 1e6:g} mA)")
        if i_nA > self.safety["max_nA"] or i_nA < self.safety["min_nA"]:
            raise InputError(f"{field}: current {i_nA / 1e6:g} mA outside the safety limits "
                             f"[{self.safety['min_nA'] / 1e6:g}, {self.safety['max_nA'] / 1e6:g}] mA")
        if i_nA == 0:
            raise InputError(f"{field}: current rounds to 0 nA")

    def voltage(self, volts, field):
        """A step voltage in uV, checked against board window, safety and model window."""
        v_uV = round(volts * 1e6)
        lo, hi = self.limits["min_uV"], self.limits["max_uV"]
        if not lo <= v_uV <= hi:
            raise InputError(f"{field}: {volts:g} V outside the board's window [{lo / 1e6:g}, {hi / 1e6:g}] V")
        lo, hi = self.safety["min_uV"], self.safety["max_uV"]
        if not lo <= v_uV <= hi:
            raise InputError(f"{field}: {volts:g} V outside the safety limits [{lo / 1e6:g}, {hi / 1e6:g}] V")
        if self.window_uV and not self.window_uV[0] <= v_uV <= self.window_uV[1]:
            lo, hi = self.window_uV
            raise InputError(f"{field}: {volts:g} V outside the model's window_V [{lo / 1e6:g}, {hi / 1e6:g}] V")
        return v_uV


def _cc(step, field, ctx):
    i_nA = ctx.current(step, f"{field}")
    t = _number(step.get("until_time_s"), f"{field}.until_time_s", positive=True)
    v = _number(step.get("until_voltage_V"), f"{field}.until_voltage_V")
    if not t and not v:
        raise InputError(f"{field}: no end condition (until_time_s or until_voltage_V)")
    until_uV = ctx.voltage(v, f"{field}.until_voltage_V") if v else 0
    return ["CC", i_nA, _ms(t, 0), until_uV]


def _cv(step, field, ctx):
    v = _number(step.get("voltage_V"), f"{field}.voltage_V")
    if v is None:
        raise InputError(f"{field}.voltage_V: missing")
    v_uV = ctx.voltage(v, f"{field}.voltage_V")
    t = _number(step.get("until_time_s"), f"{field}.until_time_s", positive=True)
    rate = parse_rate(step.get("until_rate_C"), f"{field}.until_rate_C")
    ma = _number(step.get("until_current_mA"), f"{field}.until_current_mA")
    if rate:  # rate takes priority over current (aurora's rule)
        if not ctx.capacity_mAh:
            raise InputError(f"{field}.until_rate_C: needs sample.capacity_mAh")
        until_nA = abs(round(rate * ctx.capacity_mAh * 1e6))
    else:
        until_nA = abs(round(ma * 1e6)) if ma else 0
    if not t and not until_nA:
        raise InputError(f"{field}: no end condition (until_time_s, until_rate_C or until_current_mA)")
    return ["CV", v_uV, _ms(t, 0), until_nA]


def _ocv(step, field, ctx):
    t = _number(step.get("until_time_s"), f"{field}.until_time_s", positive=True)
    if not t:
        raise InputError(f"{field}: no end condition (until_time_s)")
    return ["OCV", _ms(t, 0)]


_COMPILERS = {"constant_current": _cc, "constant_voltage": _cv, "open_circuit_voltage": _ocv}


def _step_kind(step, k):
    if not isinstance(step, dict):
        raise InputError(f"method[{k}]: must be a JSON object")
    kind = step.get("step")
    if not kind:
        raise InputError(f"method[{k}].step: missing step type")
    if kind in UNSUPPORTED_STEPS:
        raise InputError(f"method[{k}].{kind}: not supported by this bench")
    if kind not in _STEP_KEYS:
        raise InputError(f"method[{k}].step: unknown step {kind!r}")
    _check_keys(step, _STEP_KEYS[kind], f"method[{k}].{kind}")
    return kind


def _positions(method):
    """Map each method index (0-based) to the table index its step (or the next step) gets."""
    pos, n = [], 0
    tags = {}
    for k, step in enumerate(method):
        pos.append(n)
        if step["step"] == "tag":
            tag = step.get("tag")
            if not isinstance(tag, str) or not tag.strip():
                raise InputError(f"method[{k}].tag.tag: must be a non-empty string")
            if tag in tags:
                raise InputError(f"method[{k}].tag.tag: duplicate tag {tag!r}")
            tags[tag] = k
        else:
            n += 1
    return pos, tags


def _loop(step, k, pos, tags, here):
    field = f"method[{k}].loop"
    target = step.get("loop_to", 1)
    count = step.get("cycle_count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(f"{field}.cycle_count: must be an integer >= 1")
    most = fw.module("steps").MAX_LOOP_COUNT + 1  # the board counts jumps back: one less
    if count > most:
        raise InputError(f"{field}.cycle_count: at most {most} (the board's loop counter)")
    if isinstance(target, str):
        if target not in tags:
            raise InputError(f"{field}.loop_to: no tag {target!r}")
        origin = tags[target]
    elif isinstance(target, int) and not isinstance(target, bool) and target >= 1:
        origin = target - 1  # aurora numbers steps from 1, tags included
    else:
        raise InputError(f"{field}.loop_to: must be a tag or a step number >= 1")
    if origin >= k:
        raise InputError(f"{field}.loop_to: loops must go backwards")
    to = pos[origin]
    if to >= here:
        raise InputError(f"{field}.loop_to: loop has no steps to repeat")
    return ["LOOP", to, count - 1]


def _check_nesting(steps):
    """Loops may nest but not cross: the board keeps one counter per LOOP step."""
    spans = [(s[1], k) for k, s in enumerate(steps) if s[0] == "LOOP"]
    for a0, a1 in spans:
        for b0, b1 in spans:
            if a0 < b0 <= a1 < b1:
                raise InputError(f"method: loops to steps {a0} and {b0} cross each other")


def _window(model):
    if not model:
        return None
    try:
        lo, hi = model["window_V"]
        return round(float(lo) * 1e6), round(float(hi) * 1e6)
    except (KeyError, TypeError, ValueError):
        raise InputError("model.window_V: must be [min_V, max_V]") from None


def compile_protocol(protocol, board, tick_ms=None, model=None):
    """Compile a protocol dict to the step table (docs/design.md) for ``board`` (board file dict).

    ``tick_ms`` overrides the board's default tick; ``model`` (a loaded model dict) adds
    the check that every step voltage lies within its ``window_V``.
    """
    if not isinstance(protocol, dict):
        raise InputError("protocol: must be a JSON object")
    extra = sorted(set(protocol) - _TOP_KEYS)
    if extra:
        raise InputError(f"protocol.{extra[0]}: unknown field")
    sample = protocol.get("sample") or {}
    _check_keys(sample, _SECTION_KEYS["sample"], "sample")
    capacity = _number(sample.get("capacity_mAh"), "sample.capacity_mAh", positive=True, allow_zero=False)
    tick = int(tick_ms if tick_ms is not None else board.get("tick_ms", 1000))
    if tick <= 0:
        raise InputError("tick_ms: must be > 0")
    limits = board_limits(board)
    safety = _safety(protocol, limits)
    ctx = _Ctx(capacity, limits, safety, _window(model))
    method = protocol.get("method")
    if not isinstance(method, list) or not method:
        raise InputError("method: must be a non-empty list of steps")
    kinds = [_step_kind(step, k) for k, step in enumerate(method)]
    pos, tags = _positions(method)
    steps = []
    for k, (step, kind) in enumerate(zip(method, kinds)):
        if kind == "tag":
            continue
        if kind == "loop":
            steps.append(_loop(step, k, pos, tags, len(steps)))
        else:
            steps.append(_COMPILERS[kind](step, f"method[{k}].{kind}", ctx))
    if all(s[0] == "LOOP" for s in steps):
        raise InputError("method: no steps to run")
    _check_nesting(steps)
    table = {"v": TABLE_VERSION, "tick_ms": tick, "safety": safety,
             "record": _record(protocol, tick), "steps": steps}
    _check_as_the_board_will(table, limits, protocol)
    return table


compile = compile_protocol  # the name the brief uses; shadows the builtin inside this module only


# ---------------------------------------------------------------- the board's own check

# Step table field -> the protocol keys it comes from (the first one present is named).
_STEP_SOURCES = {
    "CC": {"i_nA": ("rate_C", "current_mA"), "until_ms": ("until_time_s",),
           "until_uV": ("until_voltage_V",)},
    "CV": {"v_uV": ("voltage_V",), "until_ms": ("until_time_s",),
           "until_nA": ("until_current_mA", "until_rate_C")},
    "OCV": {"until_ms": ("until_time_s",)},
    "LOOP": {"count": ("cycle_count",), "to_step_no": ("loop_to",)},
}
_SECTION_SOURCES = {
    "safety": {"max_uV": "max_voltage_V", "min_uV": "min_voltage_V", "max_nA": "max_current_mA",
               "min_nA": "min_current_mA", "max_q_nAh": "max_capacity_mAh", "delay_ms": "delay_s"},
    "record": {"dt_ms": "time_s", "dv_uV": "voltage_V", "di_nA": "current_mA"},
}


class _BoardLimits:
    """The board as firmware/steptable.validate sees it: its integer limits (board_limits)."""

    def __init__(self, limits):
        self.__dict__.update(limits)


def _check_as_the_board_will(table, limits, protocol):
    """Run the board's own table check (firmware/steptable.validate) here, so a table the
    board would refuse is refused before it is sent, naming the protocol's field."""
    err = fw.module("steptable").validate(table, _BoardLimits(limits))
    if err:
        field, message = err
        raise InputError(f"{source_field(protocol, field)}: {message} (step table {field})")


def source_field(protocol, table_field):
    """The protocol field a step table field ("steps[1].count", "safety.max_uV") comes
    from ("method[2].loop.cycle_count", "safety.max_voltage_V"); the board names table
    fields in its errors, the user wrote the protocol. Unknown fields: ``load.<field>``."""
    section, _, key = table_field.partition(".")
    if section in _SECTION_SOURCES and key in _SECTION_SOURCES[section]:
        return f"{section}.{_SECTION_SOURCES[section][key]}"
    if section == "tick_ms":
        return "tick_ms"
    m = re.fullmatch(r"steps\[(\d+)\]", section)
    method = protocol.get("method") if isinstance(protocol, dict) else None
    if not m or not isinstance(method, list):
        return f"load.{table_field}"
    k = int(m.group(1))
    run = [j for j, step in enumerate(method) if isinstance(step, dict) and step.get("step") != "tag"]
    if k >= len(run):
        return f"load.{table_field}"
    j = run[k]
    step = method[j]
    kind = step.get("step")
    where = f"method[{j}].{kind}"
    table_kind = {"constant_current": "CC", "constant_voltage": "CV",
                  "open_circuit_voltage": "OCV", "loop": "LOOP"}.get(kind)
    sources = _STEP_SOURCES.get(table_kind, {}).get(key)
    if not sources:
        return where
    return f"{where}.{next((s for s in sources if s in step), sources[0])}"


# ---------------------------------------------------------------- time estimate


def unroll(steps, limit=_MAX_UNROLLED):
    """The sequence of step numbers the board runs (LOOP steps executed, not listed).

    Each LOOP has its own counter, reset when the loop completes, so nested loops
    multiply. Stops after ``limit`` entries.
    """
    out, counters, k = [], {}, 0
    while k < len(steps) and len(out) < limit:
        s = steps[k]
        if s[0] != "LOOP":
            out.append(k)
            k += 1
            continue
        done = counters.get(k, 0)
        if done < s[2]:
            counters[k] = done + 1
            k = s[1]
        else:
            counters[k] = 0
            k += 1
    return out


def step_duration_s(step, capacity_mAh):
    """Expected duration of one step in seconds (a guess for voltage-ended steps).

    A CC step ended by voltage is taken to pass the sample's capacity at its current;
    a CV step ended by current is taken as 1/20 of its time limit or one hour.
    """
    if step[0] == "OCV":
        return step[1] / 1000
    if step[0] == "CC":
        t = step[2] / 1000 if step[2] else float("inf")
        if step[3] and capacity_mAh:
            t = min(t, 3600.0 * capacity_mAh * 1e6 / abs(step[1]))
        return t if t != float("inf") else 0.0
    if step[0] == "CV":
        if step[3]:
            return step[2] / 1000 / 20 if step[2] else 3600.0
        return step[2] / 1000
    return 0.0


def planned_durations_s(table, capacity_mAh):
    """Expected duration (s) of every step the run executes, in order (index = step_count - 1)."""
    return [step_duration_s(table["steps"][k], capacity_mAh) for k in unroll(table["steps"])]
