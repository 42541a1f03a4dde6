"""Random command/tick sequences against link.Controller: the invariants always hold.

Whatever the host sends and however time passes: nothing raises, every line written is
a valid frame, current flows only while RUNNING, the ring never holds more than its
capacity nor loses an unacknowledged slot, and seqs go out in order unless re-sent.
"""

import json
import sys
from pathlib import Path

import numpy as np

from hypothesis import HealthCheck, Phase, given, settings, strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cellbench import fw  # noqa: E402

controller = fw.module("controller")
frame = fw.module("frame")
from test_steps import FakeBoard, FakeCell, Firmware  # noqa: E402

TABLES = [
    {"v": 1, "tick_ms": 500, "steps": [["CC", 300_000, 3000, 2_000_000], ["OCV", 2000],
                                       ["CC", -300_000, 3000, 1_000_000], ["LOOP", 0, 2]]},
    {"v": 1, "tick_ms": 1000, "record": {"dt_ms": 3000, "dv_uV": 2000},
     "safety": {"max_uV": 1_700_000, "delay_ms": 1000},
     "steps": [["CC", 2_000_000, 60_000, 0], ["CV", 1_600_000, 20_000, 1000]]},
    {"v": 1, "steps": [["OCV", 1500]]},
]

COMMANDS = st.one_of(
    st.sampled_from(["ID", "START", "PAUSE", "RESUME", "STOP", "STATUS", "MODEL {}",
                     "MODEL []", "LOAD {}", "START 1", "FOO", ""]),
    st.sampled_from(TABLES).map(lambda t: "LOAD " + json.dumps(t)),
    st.integers(-3, 80).map(lambda n: "SEND %d" % n),
    st.integers(-3, 80).map(lambda n: "ACK %d" % n),
    st.text(max_size=30),
)

OPS = st.lists(st.one_of(
    st.tuples(st.just("cmd"), COMMANDS),
    st.tuples(st.just("tick"), st.integers(0, 3000)),
    st.tuples(st.just("raw"), st.binary(max_size=40)),
), max_size=60)


def check(ctl, b, out, state):
    assert b.applied_nA() == 0 or ctl.state == controller.RUNNING
    r = ctl.ring
    assert 0 <= r.head - r.tail <= r.cap
    assert r.tail >= state["acked"]
    for line in out:
        body = frame.decode(line)
        assert body is not None and line.endswith(b"\n")
        head = body.split(" ", 2)
        assert head[0] in ("OK", "ERR", "R", "E"), body
        if head[0] in ("R", "E"):
            seq = int(head[1])
            # In order, unless the host asked for a re-send from an earlier seq.
            assert seq == state["next"] or seq == state["resend"], (seq, state)
            state["next"] = seq + 1
            state["resend"] = None


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS, st.sampled_from([8, 12, 40]))
def test_random_sessions_keep_invariants(ops, capacity):
    b = FakeBoard(FakeCell(v0_uV=1_500_000, slope_uV_nAh=20.0))
    b.sample()
    ctl = Firmware(b, capacity=capacity)
    state = {"next": 0, "resend": None, "acked": 0}
    for kind, arg in ops:
        if kind == "tick":
            b.elapse(arg)
            ctl.tick(arg)
        elif kind == "raw":
            ctl.feed(arg)
        else:
            ctl.feed(frame.encode(arg))
            word = arg.split(" ")
            if word[0] == "SEND" and ctl.replies and frame.decode(ctl.replies[-1]).startswith("OK SEND"):
                state["resend"] = int(word[1])
            if word[0] == "ACK" and ctl.replies and frame.decode(ctl.replies[-1]).startswith("OK ACK"):
                state["acked"] = max(state["acked"], int(word[1]) + 1)
        check(ctl, b, ctl.output(burst=1000), state)


# ---------------------------------------------------------------- under MicroPython (HIL)
# The same firmware on the simulated board (MicroPython unix port, the board's heap): a
# batch of random byte strings, mutated frames and well-framed random commands per board
# process, many batches. Never a traceback or a dead loop, never an OK for a line whose
# checksum is wrong, never current without a valid LOAD + START, and a corrupted command
# in the middle of a run changes neither the state nor the current.

import pytest  # noqa: E402

from cellbench import sim  # noqa: E402
from test_hil import MODEL, Link  # noqa: E402

RUN_TABLE = {"v": 1, "tick_ms": 200, "steps": [["CC", 150_000, 3_600_000, 0]]}
VALID = ["STOP", "PAUSE", "RESUME", "START", "ID", "STATUS", "SEND 0", "ACK 0", "RECOVER",
         "LOAD " + json.dumps(RUN_TABLE), "MODEL {}"]
IDLE_SAFE = st.one_of(  # well-framed commands that cannot start a run with no table
    st.sampled_from(["ID", "STATUS", "START", "PAUSE", "RESUME", "STOP", "RECOVER", "MODEL []",
                     "MODEL {", "LOAD {}", "LOAD []", "LOAD " + json.dumps({"v": 1, "steps": []}),
                     "START 1", "FOO", "", " ", "ACK x", "SEND -1", "\x7f"]),
    st.integers(-5, 10**12).map(lambda n: "ACK %d" % n),
    st.integers(-5, 10**12).map(lambda n: "SEND %d" % n),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
)


def _mutate(body, flips):
    line = bytearray(frame.encode(body).rstrip(b"\n"))
    for pos, x in flips:
        line[pos % len(line)] ^= x
    return bytes(line)


MUTATED = st.tuples(st.sampled_from(VALID),
                    st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)),
                             min_size=1, max_size=4, unique_by=lambda f: f[0])).map(
    lambda a: _mutate(a[0], a[1])).filter(lambda b: frame.decode(b) is None)

IDLE_ITEMS = st.one_of(st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"") + b"\n"),
                       MUTATED.map(lambda b: b + b"\n"),
                       IDLE_SAFE.map(frame.encode))
BATCH = 150


@pytest.fixture(scope="module")
def sim_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    cell = tmp / "cell.json"
    cell.write_text(json.dumps(MODEL))
    return tmp, cell


SYNC = "ZQXSYNC"  # an unknown command word no strategy here produces: marks the batch's end


def _lines_until_status(lk):
    """Every body the board writes until the reply to a marker sent now, then STATUS."""
    lk.board.write(frame.encode(SYNC))
    out = []
    while True:
        body = lk._line()
        if body == "ERR %s cmd unknown command" % SYNC:
            return out, json.loads(lk.cmd("STATUS")[len("OK STATUS "):])
        out.append(body)


def _check_frames_only(lk):
    assert not lk.junk, "".join(lk.junk[-5:]) + lk.board.stderr_text()[-500:]


@pytest.mark.hil
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # shrinking: a process each
@given(idle=st.lists(IDLE_ITEMS, min_size=BATCH, max_size=BATCH),
       running=st.lists(MUTATED, min_size=BATCH // 2, max_size=BATCH // 2))
def test_micropython_board_survives_random_and_corrupted_frames(sim_files, idle, running):
    tmp, cell = sim_files
    board = sim.start_board(cell, calibration="ideal", workdir=tmp / "w", seed=1, soc0=0.5)
    lk = Link(board)
    try:
        # idle: whatever arrives, the board answers, stays without current, keeps going
        board.write(b"".join(idle))
        out, status = _lines_until_status(lk)
        _check_frames_only(lk)
        assert status["state"] in ("IDLE", "READY") and status["i_set_nA"] == 0, status
        assert not [b for b in out if b.startswith("E ")]  # no run ever started
        # running: corrupted frames (a STOP, a LOAD, a PAUSE with a bad checksum...) are
        # each refused, and the run goes on at its current
        assert lk.cmd("STOP").startswith("OK")
        reply = lk.cmd("LOAD " + json.dumps(RUN_TABLE))
        assert reply.startswith("OK"), reply
        assert lk.cmd("START").startswith("OK")
        board.write(b"".join(b + b"\n" for b in running))
        out, status = _lines_until_status(lk)
        _check_frames_only(lk)
        replies = [b for b in out if b.startswith(("OK", "ERR"))]
        assert replies and all(b.startswith("ERR ? frame") for b in replies), replies[:5]
        assert status["state"] == "RUNNING" and status["i_set_nA"] == 150_000
        assert all(e.split()[2] == "START" for e in lk.events), lk.events
        assert lk.cmd("STOP").startswith("OK STOP")
    finally:
        board.close()
    truth = sim.read_truth(board.truth_path)
    i_on = truth["i_A"][truth["i_A"] != 0]
    # current only from the START on, and only the table's (within the source's error)
    assert ((i_on > 0.9 * 150e-6) & (i_on < 1.1 * 150e-6)).all()


def _status(lk):
    return json.loads(lk.cmd("STATUS")[len("OK STATUS "):])


@pytest.mark.hil
def test_micropython_board_refuses_out_of_order_commands_and_unsafe_tables(sim_files):
    """Hand-made frames a host library would never send: each refused with ERR naming the
    field, the state and the current unchanged (the board checks, whatever the host did)."""
    tmp, cell = sim_files
    board = sim.start_board(cell, calibration="ideal", workdir=tmp / "order", seed=2, soc0=0.5)
    lk = Link(board)
    bad_tables = [  # (table, the ERR field)
        ({"v": 1, "steps": [["CC", 25_000_000, 1000, 0]]}, "steps[0].i_nA"),  # > range 20 mA
        ({"v": 1, "steps": [["CC", -20_000_001, 1000, 0]]}, "steps[0].i_nA"),
        ({"v": 1, "safety": {"max_uV": 5_500_000}, "steps": [["OCV", 1000]]}, "safety.max_uV"),
        ({"v": 1, "safety": {"min_uV": -1}, "steps": [["OCV", 1000]]}, "safety.min_uV"),
        ({"v": 1, "steps": [["CV", 4_900_000, 1000, 0]]}, "steps[0].v_uV"),   # > board 4.8 V
        ({"v": 1, "steps": [["CC", 100_000, 1000, 5_000_000]]}, "steps[0].until_uV"),
        ({"v": 1, "safety": {"max_nA": 1_000_000}, "steps": [["CC", 2_000_000, 1000, 0]]},
         "steps[0].i_nA"),
        ({"v": 1, "steps": [["CC", 100_000, 0, 0]]}, "steps[0].until_ms"),    # never ends
        ({"v": 1, "steps": [["CC", 100.5, 1000, 0]]}, "steps[0].i_nA"),       # not an integer
        ({"v": 1, "steps": [["LOOP", 0, 3]]}, "steps[0].to_step_no"),
    ]
    try:
        for text in ("START", "PAUSE", "RESUME", "RECOVER", "START now", "FROB", "ACK x",
                     "SEND -4", "LOAD {nope", "MODEL [1]"):
            reply = lk.cmd(text)
            assert reply.startswith("ERR "), (text, reply)
        for table, field in bad_tables:
            reply = lk.cmd("LOAD " + json.dumps(table))
            assert reply.startswith("ERR LOAD " + field + " "), (table, reply)
        s = _status(lk)
        assert s["state"] == "IDLE" and not s["table"] and s["i_set_nA"] == 0
        assert lk.cmd("LOAD " + json.dumps(RUN_TABLE)).startswith("OK")
        assert lk.cmd("START").startswith("OK")
        before = _status(lk)
        for text in ["LOAD " + json.dumps(RUN_TABLE), "MODEL {}", "START", "RESUME", "RECOVER",
                     "LOAD " + json.dumps(bad_tables[0][0]), "STOP please", "FROB", "PAUSE 3"]:
            reply = lk.cmd(text)
            assert reply.startswith("ERR "), (text, reply)
        after = _status(lk)
        assert after["state"] == before["state"] == "RUNNING"
        assert after["i_set_nA"] == before["i_set_nA"] == 150_000
        assert after["step_count"] == 1 and after["fault"] == 0
        assert [e.split()[2] for e in lk.events] == ["START"]
        assert lk.cmd("STOP").startswith("OK STOP")
    finally:
        board.close()
    truth = sim.read_truth(board.truth_path)
    on = truth["i_A"] != 0
    # one block of current, START to STOP, never interrupted by the refused commands
    assert on.any() and np.all(np.diff(np.flatnonzero(on)) == 1)
