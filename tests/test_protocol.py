"""Protocol compilation against hand-computed step tables, and every validation error."""

import copy
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellbench import protocol as proto
from cellbench.errors import InputError
from cellbench.paths import PROTOCOLS

# A board file reduced to what compilation reads (docs/design.md, board file).
BOARD = {"id": "test", "tick_ms": 1000,
         "current": {"ranges": [{"name": "100uA", "full_scale_mA": 0.1},
                                {"name": "20mA", "full_scale_mA": 20.0}]},
         "compliance_V": [0.0, 5.0],
         "limits": {"max_V": 4.8, "min_V": 0.0, "max_mA": 20.0}}

BASE = {
    "sample": {"name": "x", "capacity_mAh": 0.35},
    "record": {"time_s": 10, "voltage_V": 0.005, "current_mA": 0.002},
    "safety": {"max_voltage_V": 2.6, "min_voltage_V": 0.9, "max_current_mA": 4.0,
               "min_current_mA": -4.0, "max_capacity_mAh": 1.0, "delay_s": 2.5},
    "method": [
        {"step": "open_circuit_voltage", "until_time_s": 60},
        {"step": "tag", "tag": "c"},
        {"step": "constant_current", "rate_C": "D/5", "until_voltage_V": 1.0, "until_time_s": 36000},
        {"step": "constant_current", "current_mA": 0.07, "until_voltage_V": 2.5},
        {"step": "constant_voltage", "voltage_V": 2.5, "until_rate_C": 0.05, "until_time_s": 3600},
        {"step": "loop", "loop_to": "c", "cycle_count": 5},
        {"step": "constant_voltage", "voltage_V": 1.5, "until_current_mA": -0.001},
        {"step": "loop", "loop_to": 1, "cycle_count": 2},
    ],
}

# Worked by hand: 0.2C of 0.35 mAh = 0.07 mA = 70000 nA; 0.05C = 17500 nA; tag "c"
# precedes method[2], which is table step 1; loop_to 1 (1-based, method[0]) is step 0.
EXPECTED = {
    "v": 1, "tick_ms": 1000,
    "safety": {"max_uV": 2_600_000, "min_uV": 900_000, "max_nA": 4_000_000,
               "min_nA": -4_000_000, "max_q_nAh": 1_000_000, "delay_ms": 2500},
    "record": {"dt_ms": 10_000, "dv_uV": 5000, "di_nA": 2000},
    "steps": [["OCV", 60_000],
              ["CC", -70_000, 36_000_000, 1_000_000],
              ["CC", 70_000, 0, 2_500_000],
              ["CV", 2_500_000, 3_600_000, 17_500],
              ["LOOP", 1, 4],
              ["CV", 1_500_000, 0, 1000],
              ["LOOP", 0, 1]],
}


def compile_(doc=None, **kw):
    return proto.compile(copy.deepcopy(doc or BASE), BOARD, **kw)


def with_step(k, **fields):
    doc = copy.deepcopy(BASE)
    doc["method"][k] = dict(fields)
    return doc


def test_hand_computed_table():
    assert compile_() == EXPECTED


def test_defaults_come_from_the_board():
    doc = copy.deepcopy(BASE)
    del doc["record"], doc["safety"]
    table = proto.compile(doc, BOARD, tick_ms=2000)
    assert table["tick_ms"] == 2000
    assert table["record"] == {"dt_ms": 2000, "dv_uV": 0, "di_nA": 0}
    assert table["safety"] == {"max_uV": 4_800_000, "min_uV": 0, "max_nA": 20_000_000,
                               "min_nA": -20_000_000, "max_q_nAh": 0, "delay_ms": 0}


def test_table_is_json_of_integers():
    table = json.loads(json.dumps(compile_()))
    nums = [x for s in table["steps"] for x in s[1:]]
    nums += list(table["safety"].values()) + list(table["record"].values())
    assert all(type(x) is int and abs(x) < 2**30 for x in nums)


@given(rate=st.floats(0.01, 50), cap=st.floats(0.01, 0.3))
def test_rate_converts_with_capacity(rate, cap):
    doc = {"sample": {"capacity_mAh": cap},
           "method": [{"step": "constant_current", "rate_C": -rate, "until_time_s": 1}]}
    i_nA = proto.compile(doc, BOARD)["steps"][0][1]
    assert abs(i_nA - (-rate * cap * 1e6)) <= 0.5


@pytest.mark.parametrize("text,value", [("1/5", 0.2), ("C/2", 0.5), ("D/2", -0.5), ("2C/4", 0.5),
                                        ("0.25", 0.25), (0.3, 0.3)])
def test_c_rate_strings(text, value):
    assert proto.parse_rate(text, "f") == pytest.approx(value)


@pytest.mark.parametrize("text", ["D", "CC/2", "1/0", "C/x"])
def test_bad_c_rate_strings(text):
    # aurora-unicycler rejects these too (a bare "D" is not a fraction).
    with pytest.raises(InputError, match="f: not a C-rate"):
        proto.parse_rate(text, "f")


def test_unroll_follows_nested_loops():
    steps = EXPECTED["steps"]
    inner = [1, 2, 3] * 5
    assert proto.unroll(steps) == ([0] + inner + [5]) * 2


def test_shipped_protocols_compile():
    board = dict(BOARD)
    for path in sorted(PROTOCOLS.glob("*.json")):
        table = proto.compile(proto.load_protocol(path), board)
        assert table["steps"], path.name


def test_lto_rate_test_matches_the_paper():
    table = proto.compile(proto.load_protocol(PROTOCOLS / "lto-rate-test.json"), BOARD)
    cc = [s for s in table["steps"] if s[0] == "CC"]
    rates = [0.2, 0.5, 1, 3, 5, 10, 0.2]
    assert [s[1] for s in cc] == [round(sign * r * 350_000) for r in rates for sign in (-1, 1)]
    assert cc[0][3] == 1_000_000 and cc[1][3] == 2_500_000  # lithiation to 1.0 V first
    loops = [s for s in table["steps"] if s[0] == "LOOP"]
    assert [s[2] for s in loops] == [4] * 7


ERRORS = [
    (with_step(2, step="constant_current", rate_C=-0.2),
     "method[2].constant_current: no end condition (until_time_s or until_voltage_V)"),
    (with_step(2, step="constant_current", until_time_s=10),
     "method[2].constant_current: no current"),
    (with_step(2, step="constant_voltage", voltage_V=2.0),
     "method[2].constant_voltage: no end condition"),
    (with_step(2, step="constant_voltage", until_time_s=5), "method[2].constant_voltage.voltage_V: missing"),
    (with_step(0, step="open_circuit_voltage"), "method[0].open_circuit_voltage: no end condition"),
    (with_step(0, step="rest", until_time_s=5), "method[0].step: unknown step 'rest'"),
    (with_step(0, step="impedance_spectroscopy"), "method[0].impedance_spectroscopy: not supported"),
    (with_step(0, until_time_s=5), "method[0].step: missing"),
    (with_step(0, step="open_circuit_voltage", until_time_s=5, speed=1),
     "method[0].open_circuit_voltage.speed: unknown field"),
    (with_step(5, step="loop", loop_to="nope", cycle_count=5), "method[5].loop.loop_to: no tag 'nope'"),
    (with_step(5, step="loop", loop_to=7, cycle_count=5), "method[5].loop.loop_to: loops must go backwards"),
    (with_step(5, step="loop", loop_to="c", cycle_count=0), "method[5].loop.cycle_count"),
    (with_step(1, step="tag", tag=""), "method[1].tag.tag: must be a non-empty string"),
    (with_step(2, step="constant_current", current_mA=25, until_time_s=5),
     "method[2].constant_current: current 25 mA beyond the board's range (20 mA)"),
    (with_step(2, step="constant_current", current_mA=-4.5, until_time_s=5),
     "method[2].constant_current: current -4.5 mA outside the safety limits"),
    (with_step(2, step="constant_current", rate_C=1, until_voltage_V=2.7),
     "method[2].constant_current.until_voltage_V: 2.7 V outside the safety limits"),
    (with_step(4, step="constant_voltage", voltage_V=5.5, until_time_s=5),
     "method[4].constant_voltage.voltage_V: 5.5 V outside the board's window"),
    (with_step(2, step="constant_current", rate_C="fast", until_time_s=5),
     "method[2].constant_current.rate_C: not a C-rate"),
    (with_step(2, step="constant_current", current_mA="1", until_time_s=5),
     "method[2].constant_current.current_mA: must be a number"),
    (with_step(2, step="constant_current", current_mA=0.1, until_time_s=-5),
     "method[2].constant_current.until_time_s: must be >= 0"),
]


@pytest.mark.parametrize("doc,message", ERRORS, ids=[m.split(":")[0] + m[-12:] for _, m in ERRORS])
def test_validation_errors_name_the_field(doc, message):
    with pytest.raises(InputError) as err:
        proto.compile(doc, BOARD)
    assert str(err.value).startswith(message)


def _section(section, **fields):
    doc = copy.deepcopy(BASE)
    doc[section].update(fields)
    return doc


@pytest.mark.parametrize("doc,message", [
    (_section("sample", capacity_mAh=None), "method[2].constant_current.rate_C: needs sample.capacity_mAh"),
    (_section("sample", capacity_mAh=-1), "sample.capacity_mAh: must be > 0"),
    (_section("safety", max_voltage_V=6.0), "safety.max_voltage_V: above the board's limit"),
    (_section("safety", max_current_mA=30.0), "safety.max_current_mA: above the board's limit"),
    (_section("safety", min_voltage_V=3.0), "safety.max_voltage_V: must be above safety.min_voltage_V"),
    (_section("safety", volts=3.0), "safety.volts: unknown field"),
    (_section("record", time_s=0.5), "record.time_s: 0.5 s is shorter than the tick"),
    (_section("record", time_s=0), "record.time_s: must be > 0"),
    ({**BASE, "method": []}, "method: must be a non-empty list"),
    ({**BASE, "extra": 1}, "protocol.extra: unknown field"),
])
def test_section_errors_name_the_field(doc, message):
    with pytest.raises(InputError) as err:
        proto.compile(doc, BOARD)
    assert str(err.value).startswith(message)


def test_model_window_is_enforced():
    model = {"window_V": [1.2, 2.5]}
    with pytest.raises(InputError, match=r"method\[2\].constant_current.until_voltage_V: 1 V outside the model's window_V"):
        compile_(model=model)
    assert compile_(model={"window_V": [1.0, 2.5]})["steps"] == EXPECTED["steps"]


def test_crossing_loops_rejected():
    doc = {"method": [{"step": "tag", "tag": "a"},
                      {"step": "open_circuit_voltage", "until_time_s": 1},
                      {"step": "tag", "tag": "b"},
                      {"step": "open_circuit_voltage", "until_time_s": 1},
                      {"step": "loop", "loop_to": "a", "cycle_count": 2},
                      {"step": "open_circuit_voltage", "until_time_s": 1},
                      {"step": "loop", "loop_to": "b", "cycle_count": 2}]}
    with pytest.raises(InputError, match="cross"):
        proto.compile(doc, BOARD)


def test_loop_right_after_its_tag_rejected():
    doc = {"method": [{"step": "open_circuit_voltage", "until_time_s": 1},
                      {"step": "tag", "tag": "a"},
                      {"step": "loop", "loop_to": "a", "cycle_count": 2}]}
    with pytest.raises(InputError, match=r"method\[2\].loop.loop_to: loop has no steps"):
        proto.compile(doc, BOARD)


def test_load_protocol_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{\"method\": [")
    with pytest.raises(InputError, match="protocol: bad.json is not valid JSON"):
        proto.load_protocol(bad)
    with pytest.raises(InputError, match="protocol: cannot read"):
        proto.load_protocol(tmp_path / "missing.json")


# ---------------------------------------------------------------- errors in the user's words


def test_a_loop_count_the_board_cannot_hold_is_refused_on_the_host_by_its_protocol_name():
    """The board keeps count - 1 jumps in a counter of at most steps.MAX_LOOP_COUNT: one
    pass more is refused here (not as the table's steps[4].count by the board)."""
    from cellbench import fw

    most = fw.module("steps").MAX_LOOP_COUNT + 1
    doc = copy.deepcopy(BASE)
    doc["method"][5]["cycle_count"] = most
    assert proto.compile(doc, BOARD)["steps"][4] == ["LOOP", 1, most - 1]
    doc["method"][5]["cycle_count"] = most + 1
    with pytest.raises(InputError) as err:
        proto.compile(doc, BOARD)
    assert str(err.value).startswith(f"method[5].loop.cycle_count: at most {most}")


@pytest.mark.parametrize("table_field, protocol_field", [
    ("steps[4].count", "method[5].loop.cycle_count"),       # tag "c" at method[1] is no step
    ("steps[4].to_step_no", "method[5].loop.loop_to"),
    ("steps[1].i_nA", "method[2].constant_current.rate_C"),
    ("steps[2].i_nA", "method[3].constant_current.current_mA"),
    ("steps[1].until_uV", "method[2].constant_current.until_voltage_V"),
    ("steps[3].until_nA", "method[4].constant_voltage.until_rate_C"),
    ("steps[5].until_nA", "method[6].constant_voltage.until_current_mA"),
    ("steps[0].until_ms", "method[0].open_circuit_voltage.until_time_s"),
    ("steps[0]", "method[0].open_circuit_voltage"),
    ("safety.max_uV", "safety.max_voltage_V"),
    ("record.dt_ms", "record.time_s"),
    ("steps[99].count", "load.steps[99].count"),
])
def test_board_fields_map_back_to_the_protocol(table_field, protocol_field):
    assert proto.source_field(BASE, table_field) == protocol_field


def test_every_step_table_field_the_board_names_maps_to_a_protocol_field():
    """Whatever field firmware/steptable.validate names for a table compiled from BASE, the
    user is told a field of the protocol (never a bare steps[k] / load. name)."""
    table = proto.compile(BASE, BOARD)
    for k, step in enumerate(table["steps"]):
        for key in proto._STEP_SOURCES[step[0]]:
            named = proto.source_field(BASE, f"steps[{k}].{key}")
            assert named.startswith("method[") and "steps" not in named, named
