"""The firmware fits the heap an RP2040 leaves free (boards/sim.json sim.heap_kb).

The simulated board (cellbench.sim) runs the unmodified firmware from .mpy files, as
`cellbench flash` installs it, and gives it exactly heap_kb free at boot: the
simulator's own modules and plant are loaded first, measured, and everything above
heap_kb is reserved (the heap report). On that heap a session with the LTO preset must
go through: boot, MODEL (estimator on), LOAD, START, the protocol to its END, for
several seeds, with no MemoryError anywhere, a ring of at least MIN_RING slots and the
estimator alive to the end; and a second MODEL + START after the run must fit too.
Objects on the 64-bit unix port are larger than on the 32-bit RP2040, so passing here
is conservative for the board.
"""

import json
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellbench import fw, sim
from cellbench.link import Link, LinkError
from cellbench.paths import MODELS

LTO = MODELS / "lto-li-coin.json"
BOARD_HEAP_KB = json.loads(sim.board_path("sim").read_text())["sim"]["heap_kb"]
# Smallest ring START may make on the board's heap with the LTO estimator loaded
# (docs/link.md): 300 records at the default 60 s record interval is 5 h unacknowledged.
MIN_RING = 300
MODEL_LINE = json.dumps(json.loads(LTO.read_text()))  # one line: the whole file, unchanged


def _table(model, rec_dt_ms=30_000):
    """1C discharge to the window's low end, 10 min rest, 1C charge to the high end:
    about 2 h of cell time from SoC 0.5, a few thousand ticks and GC cycles."""
    i_nA = int(round(model["capacity_Ah"] * 1e9))
    lo, hi = (int(round(v * 1e6)) for v in model["window_V"])
    return {"v": 1, "tick_ms": 1000, "record": {"dt_ms": rec_dt_ms},
            "steps": [["CC", -i_nA, 0, lo], ["OCV", 600_000], ["CC", i_nA, 0, hi]]}


def _start(tmp_path, seed, heap_kb=BOARD_HEAP_KB, soc0=0.5):
    board = sim.start_board(LTO, workdir=tmp_path / f"s{seed}-{heap_kb}", seed=seed,
                            heap_kb=heap_kb, soc0=soc0)
    return board, Link(board, reply_timeout_s=30.0)


def _run_to_end(link):
    """Consume the run's stream; the records and event kinds it delivered."""
    records, kinds = [], []
    for kind, msg in link.messages(idle_timeout_s=60):
        if kind == "record":
            records.append(msg)
            continue
        kinds.append(msg["kind"])
        if msg["kind"] in ("END", "FAULT", "STOP"):
            link.consumed(msg["seq"])
            link.acknowledge()
            break
    return records, kinds


def _assert_no_memory_error(board):
    said = board.stderr_text() + "".join(getattr(board, "_buf", b"").decode(errors="replace"))
    assert "MemoryError" not in said, said[-500:]


def test_the_simulator_gives_the_firmware_the_board_heap(tmp_path):
    """Measured, not guessed: whatever the simulator costs, the firmware finds heap_kb."""
    board, link = _start(tmp_path, 0)
    try:
        link.command("ID")
        heap = board.heap()
    finally:
        board.close()
    assert heap["sim"] > 0 and heap["ballast"] > 0
    assert abs(heap["firmware_free"] - BOARD_HEAP_KB * 1024) <= 1024, heap
    assert heap["total"] >= heap["sim"] + heap["ballast"] + heap["firmware_free"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lto_session_runs_to_its_end_on_the_board_heap(tmp_path, seed):
    model = json.loads(LTO.read_text())
    board, link = _start(tmp_path, seed)
    try:
        assert link.command("MODEL", MODEL_LINE) == {"estimator": True}
        link.command("LOAD", json.dumps(_table(model)))
        started = link.command("START")
        link.reset_sequence(started["seq"])
        capacity = link.command("ID")["capacity"]
        records, kinds = _run_to_end(link)
        status = link.command("STATUS")
    finally:
        board.close()
    _assert_no_memory_error(board)
    assert capacity >= MIN_RING
    assert kinds[0] == "START" and kinds[-1] == "END", kinds
    assert "ESTIMATOR" not in kinds and "FULL" not in kinds
    assert status["state"] == "DONE" and status["error"] == "" and status["estimator"]
    assert status["fault"] == 0
    # All three steps ran and the estimator produced a SoC for every record.
    assert {r["step_no"] for r in records} == {0, 1, 2}
    assert all(0 <= r["soc_ppm"] <= 1_100_000 for r in records)


def test_a_second_model_and_run_fit_after_the_first(tmp_path):
    """After a run the ring holds all but the reserve: a new MODEL must still fit."""
    model = json.loads(LTO.read_text())
    table = _table(model)
    table["steps"] = [["CC", -int(model["capacity_Ah"] * 1e9), 120_000, 0]]
    board, link = _start(tmp_path, 4)
    try:
        for _ in range(2):
            assert link.command("MODEL", MODEL_LINE) == {"estimator": True}
            link.command("LOAD", json.dumps(table))
            link.reset_sequence(link.command("START")["seq"])
            capacity = link.command("ID")["capacity"]
            records, kinds = _run_to_end(link)
            assert kinds[-1] == "END" and capacity >= MIN_RING
    finally:
        board.close()
    _assert_no_memory_error(board)


def test_a_model_that_is_not_json_is_refused_without_harm(tmp_path):
    board, link = _start(tmp_path, 5)
    try:
        with pytest.raises(LinkError) as err:
            link.command("MODEL", '{"capacity_Ah": 4e-4, "ocv": {"soc": [0, 1]')
        assert err.value.field == "json"
        assert link.command("MODEL", MODEL_LINE) == {"estimator": True}
    finally:
        board.close()


@pytest.mark.parametrize("heap_kb", range(int(BOARD_HEAP_KB * 0.85), BOARD_HEAP_KB + 1))
def test_headroom_below_the_board_heap(tmp_path, heap_kb):
    """Every heap from 15 % less than the board's up to it boots, takes the model and
    starts a run (with a smaller ring): the firmware does not sit at the edge of the
    board's heap. Every KB, not one point: which block a fragmented heap lacks changes
    from one size to the next (MODEL once failed at 157 KB and passed at 153 and 160)."""
    model = json.loads(LTO.read_text())
    board, link = _start(tmp_path, 6, heap_kb=heap_kb)
    try:
        assert link.command("MODEL", MODEL_LINE) == {"estimator": True}
        link.command("LOAD", json.dumps(_table(model)))
        link.command("START")
        assert link.command("ID")["capacity"] >= 64
        assert link.command("STATUS")["state"] == "RUNNING"
    finally:
        board.close()
    _assert_no_memory_error(board)


# ---------------------------------------------------------------- long runs, small ints

record = fw.module("record")
controller = fw.module("controller")
SMALL_INT_MAX = (1 << 30) - 1  # MicroPython small ints on the RP2040 (31-bit signed)


@given(st.integers(0, 10**13))
def test_run_time_splits_into_small_ints(t_ms):
    """Controller.t_ms (ms since START) is t_hi * T_WRAP + t_lo with t_lo small."""
    ctl = controller.Controller.__new__(controller.Controller)  # only the clock attributes
    ctl.t_ms = t_ms
    assert ctl.t_ms == t_ms
    assert 0 <= ctl.t_lo < record.T_WRAP and record.T_WRAP + 60_000 <= SMALL_INT_MAX


@given(st.integers(0, 10**13), st.integers(1, 10**7), st.integers(0, 10**7))
def test_record_interval_is_kept_across_the_wrap(t0_ms, dt_ms, elapsed_ms):
    """The trigger sees only t modulo T_WRAP and still fires exactly when dt_ms passed."""
    trig = record.Trigger()
    trig.configure(dt_ms, 0, 0)
    trig.mark(t0_ms % record.T_WRAP, 0, 0)
    assert trig.due((t0_ms + elapsed_ms) % record.T_WRAP, 0, 0) == (elapsed_ms >= dt_ms)


# ---------------------------------------------------------------- MODEL without the dict

cellmodel = fw.module("cellmodel")
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
_NUMBERS = st.lists(st.floats(-10.0, 10.0) | st.integers(-5, 5), min_size=1, max_size=12)


def _expected(doc, keep):
    """read_model's result by the reference json.loads: kept members only, number lists as lists."""
    if keep == cellmodel.ALL:
        return doc
    return {k: _expected(v, keep[k]) for k, v in doc.items() if k in keep and isinstance(v, dict)
            or k in keep and keep[k] == cellmodel.ALL}


def _plain(value):
    if isinstance(value, array):
        return list(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@given(st.dictionaries(st.text(max_size=6), _JSON, max_size=5), _NUMBERS, _NUMBERS,
       st.floats(1e-6, 1.0), _JSON, st.sampled_from([None, 0, 2]))
def test_read_model_keeps_what_json_loads_gives(extra, soc, volts, cap, junk, indent):
    doc = dict(extra)
    doc.update({"capacity_Ah": cap, "provenance": junk,
                "ocv": {"soc": soc, "voltage_V": volts, "notes": junk}, "estimator": {"gate": 4.0}})
    text = json.dumps(doc, indent=indent)
    got = cellmodel.read_model(memoryview(bytearray(text.encode())))
    want = _expected(json.loads(text), cellmodel.MODEL_KEYS)
    assert _plain(got) == want
    assert isinstance(got["ocv"]["soc"], array)  # the tables are float arrays


@given(st.text(max_size=40))
def test_read_model_refuses_what_is_not_a_json_object(text):
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        return
    with pytest.raises(cellmodel.JsonError):
        cellmodel.read_model(text)
