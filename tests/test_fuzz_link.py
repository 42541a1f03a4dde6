"""Random command/tick sequences against link.Controller: the invariants always hold.

Whatever the host sends and however time passes: nothing raises, every line written is
a valid frame, current flows only while RUNNING, the ring never holds more than its
capacity nor loses an unacknowledged slot, and seqs go out in order unless re-sent.
"""

import json
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "firmware"))
sys.path.insert(0, str(ROOT / "tests"))

import frame  # noqa: E402
import link  # noqa: E402
from test_steps import FakeBoard, FakeCell  # noqa: E402

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
    assert b.applied_nA() == 0 or ctl.state == link.RUNNING
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
    ctl = link.Controller(b, capacity=capacity)
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
