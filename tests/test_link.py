"""The link protocol of firmware/link.py (docs/link.md), driven under CPython.

Every command, commands out of order, bad frames, re-send and acknowledgement rules,
and that a refused command changes neither the state nor the current. The last tests
run the same modules under the MicroPython unix port.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from cellbench import fw, unixport

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

controller = fw.module("controller")
frame = fw.module("frame")
link = fw.module("link")
record = fw.module("record")
safety = fw.module("safety")
from test_steps import FakeBoard, FakeCell, Firmware  # noqa: E402

TABLE = {"v": 1, "tick_ms": 500, "record": {"dt_ms": 1000},
         "steps": [["CC", 200_000, 4000, 0], ["OCV", 3000], ["LOOP", 0, 1]]}


def send(ctl, body):
    """Send one framed command; return the parsed reply lines (bodies) it produced."""
    ctl.feed(frame.encode(body))
    return _drain_replies(ctl)


def _drain_replies(ctl):
    out = [frame.decode(x) for x in ctl.replies]
    ctl.replies = []
    return out


def reply(ctl, body):
    (r,) = send(ctl, body)
    return r


def ok_json(r, cmd):
    assert r.startswith("OK " + cmd), r
    rest = r[len("OK " + cmd):].strip()
    return json.loads(rest) if rest else None


def err_field(r, cmd):
    parts = r.split(" ", 3)
    assert parts[0] == "ERR" and parts[1] == cmd, r
    return parts[2]


def snapshot(ctl, b):
    return (ctl.state, b.set_nA, b.relay, ctl.ring.head, ctl.ring.tail, ctl.fault,
            ctl.table is not None, ctl.engine.step_no, ctl.engine.step_count)


def tick(ctl, b, n=1, dt=500):
    for _ in range(n):
        b.elapse(dt)
        ctl.tick(dt)


def stream(ctl):
    """Everything output() would write now, decoded, ring lines all drained."""
    out = []
    while True:
        lines = ctl.output()
        if not lines:
            return out
        out += [frame.decode(x) for x in lines]


@pytest.fixture
def board():
    b = FakeBoard(FakeCell(v0_uV=1_500_000, slope_uV_nAh=5.0))
    b.sample()
    return b


@pytest.fixture
def ctl(board):
    return Firmware(board, capacity=64)


def loaded(ctl):
    ok_json(reply(ctl, "LOAD " + json.dumps(TABLE)), "LOAD")
    return ctl


# ---------------------------------------------------------------- commands

def test_id(ctl, board):
    d = ok_json(reply(ctl, "ID"), "ID")
    assert d["board"] == "fake" and d["range_max_nA"] == board.range_max_nA
    assert d["capacity"] == 64 and d["fields"].split() == list(record.FIELDS)


def test_load_start_run_to_end(ctl, board):
    assert ok_json(reply(ctl, "LOAD " + json.dumps(TABLE)), "LOAD") == {"steps": 3, "tick_ms": 500}
    start = ok_json(reply(ctl, "START"), "START")
    assert start["tick_ms"] == 500 and ctl.tick_ms == 500
    assert board.relay and board.set_nA == 200_000
    tick(ctl, board, 40)
    assert ctl.state == controller.DONE and not board.relay
    lines = stream(ctl)
    seqs = [int(x.split()[1]) for x in lines]
    assert seqs == list(range(start["seq"], start["seq"] + len(lines)))
    kinds = [x.split()[2] for x in lines if x.startswith("E ")]
    assert kinds == ["START", "END"]
    recs = [x for x in lines if x.startswith("R ")]
    assert all(len(x.split()) == 2 + len(record.FIELDS) for x in recs)


def test_status_model_pause_resume_stop(ctl, board):
    s = ok_json(reply(ctl, "STATUS"), "STATUS")
    assert s["state"] == "IDLE" and s["soc_ppm"] == -1
    loaded(ctl)
    ok_json(reply(ctl, "START"), "START")
    tick(ctl, board, 2)
    ok_json(reply(ctl, "PAUSE"), "PAUSE")
    assert ctl.state == controller.PAUSED and not board.relay
    step_ms = ctl.engine.step_ms
    tick(ctl, board, 3)
    assert ctl.engine.step_ms == step_ms  # a pause does not eat the step's time
    ok_json(reply(ctl, "RESUME"), "RESUME")
    assert ctl.state == controller.RUNNING and board.relay and board.set_nA == 200_000
    assert ok_json(reply(ctl, "STOP"), "STOP") == {"state": "STOPPED"}
    assert not board.relay
    kinds = [x.split()[2] for x in stream(ctl) if x.startswith("E ")]
    assert kinds == ["START", "PAUSE", "RESUME", "STOP"]
    # A new run may start after STOP.
    ok_json(reply(ctl, "START"), "START")
    assert ctl.state == controller.RUNNING


def test_model_without_or_with_estimator(ctl, board, monkeypatch):
    monkeypatch.setattr(link, "estimator_class", lambda: None)
    assert ok_json(reply(ctl, 'MODEL {"capacity_Ah": 1e-4}'), "MODEL") == {"estimator": False}

    class Est:
        def __init__(self, model):
            self.soc_ppm, self.std_ppm, self.n = 500_000, 1000, 0

        def step(self, i_nA, v_uV, dt_ms):
            self.n += 1
            self.soc_ppm += 1

    monkeypatch.setattr(link, "estimator_class", lambda: Est)
    assert ok_json(reply(ctl, 'MODEL {"capacity_Ah": 1e-4}'), "MODEL") == {"estimator": True}
    loaded(ctl)
    reply(ctl, "START")
    tick(ctl, board, 3)
    recs = [x.split() for x in stream(ctl) if x.startswith("R ")]
    # The fake estimator adds 1 ppm per tick (500 ms): each record shows its tick's value.
    assert len(recs) >= 2
    soc = 2 + record.FIELDS.index("soc_ppm")  # "R", seq, then the fields
    assert all(int(r[soc]) == 500_000 + int(r[2]) // 500 and int(r[soc + 1]) == 1000 for r in recs)
    # an estimator without the slow states: no capacity or resistance estimate
    assert all(r[soc + 2:] == ["-1"] * 4 for r in recs)


def test_estimator_failure_keeps_the_run(ctl, board, monkeypatch):
    class Bad:
        def __init__(self, model):
            self.soc_ppm = self.std_ppm = 0

        def step(self, i_nA, v_uV, dt_ms):
            raise ValueError("boom")

    monkeypatch.setattr(link, "estimator_class", lambda: Bad)
    reply(ctl, "MODEL {}")
    loaded(ctl)
    reply(ctl, "START")
    tick(ctl, board, 2)
    assert ctl.state == controller.RUNNING and ctl.est is None
    kinds = [x.split()[2] for x in stream(ctl) if x.startswith("E ")]
    assert "ESTIMATOR" in kinds


# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize("body,cmd,field", [
    ("START", "START", "state"),            # no protocol
    ("RESUME", "RESUME", "state"),          # not paused
    ("PAUSE", "PAUSE", "state"),            # not running
    ("LOAD {bad json", "LOAD", "json"),
    ('LOAD {"v": 2, "steps": []}', "LOAD", "v"),
    ('LOAD {"v": 1, "steps": [["CC", 100000, 0, 0]]}', "LOAD", "steps[0].until_ms"),
    ("MODEL [1, 2]", "MODEL", "json"),
    ("SEND x", "SEND", "from_seq"),
    ("SEND -1", "SEND", "from_seq"),
    ("SEND 5", "SEND", "from_seq"),         # beyond the newest
    ("ACK 0", "ACK", "seq"),                # nothing sent yet
    ("ACK", "ACK", "seq"),
    ("ID now", "ID", "args"),
    ("FLY 3", "FLY", "cmd"),
    ("", "?", "cmd"),
])
def test_refused_commands_change_nothing(ctl, board, body, cmd, field):
    before = snapshot(ctl, board)
    assert err_field(reply(ctl, body), cmd) == field
    assert snapshot(ctl, board) == before


def test_out_of_order_during_run(ctl, board):
    loaded(ctl)
    reply(ctl, "START")
    tick(ctl, board, 2)
    before = snapshot(ctl, board)
    for body, cmd in [("LOAD " + json.dumps(TABLE), "LOAD"), ("MODEL {}", "MODEL"),
                      ("START", "START"), ("RESUME", "RESUME")]:
        assert err_field(reply(ctl, body), cmd) == "state"
        assert snapshot(ctl, board) == before


def test_bad_checksum_is_not_applied(ctl, board):
    loaded(ctl)
    line = bytearray(frame.encode("START"))
    line[0] ^= 0x20  # "sTART": the CRC no longer matches
    ctl.feed(bytes(line))
    assert _drain_replies(ctl) == ["ERR ? frame checksum"]
    assert ctl.state == controller.READY and not board.relay
    ctl.feed(b"START\n")  # no frame at all
    assert _drain_replies(ctl) == ["ERR ? frame checksum"] and ctl.state == controller.READY


def test_overlong_line_is_refused_and_the_next_one_works(ctl):
    ctl.feed(b"x" * (link.MAX_LINE + 10) + b"\n")
    assert _drain_replies(ctl) == ["ERR ? frame line too long"]
    assert ok_json(reply(ctl, "STATUS"), "STATUS")["state"] == "IDLE"


def test_bytes_split_anywhere(ctl):
    data = frame.encode("ID") + frame.encode("STATUS")
    for c in data:
        ctl.feed(bytes([c]))
    r = _drain_replies(ctl)
    assert r[0].startswith("OK ID") and r[1].startswith("OK STATUS")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_raises_or_moves_current(data):
    b = FakeBoard()
    b.sample()
    ctl = Firmware(b, capacity=16)
    ctl.feed(data + b"\n")
    for x in ctl.replies:
        assert frame.decode(x) is not None
    assert not b.relay and ctl.state == controller.IDLE


# ---------------------------------------------------------------- SEND / ACK

def test_send_resends_exactly_the_missing_records(ctl, board):
    loaded(ctl)
    reply(ctl, "START")
    tick(ctl, board, 10)
    first = stream(ctl)
    seqs = [int(x.split()[1]) for x in first]
    # The host lost a middle stretch: ask from its first missing seq.
    missing = seqs[4]
    r = ok_json(reply(ctl, "SEND %d" % missing), "SEND")
    assert r == {"from": missing, "to": seqs[-1]}
    again = stream(ctl)
    assert again == first[4:]  # the same bytes, in order, nothing else
    assert ok_json(reply(ctl, "SEND %d" % (seqs[-1] + 1)), "SEND") == {"from": seqs[-1] + 1,
                                                                       "to": seqs[-1]}
    assert stream(ctl) == []


def test_ack_frees_and_freed_cannot_be_resent(ctl, board):
    loaded(ctl)
    reply(ctl, "START")
    tick(ctl, board, 10)
    seqs = [int(x.split()[1]) for x in stream(ctl)]
    held = ctl.ring.count()
    r = ok_json(reply(ctl, "ACK %d" % seqs[3]), "ACK")
    assert r["oldest"] == seqs[3] + 1 and ctl.ring.count() == held - 4
    assert err_field(reply(ctl, "SEND %d" % seqs[2]), "SEND") == "from_seq"
    ok_json(reply(ctl, "ACK %d" % seqs[1]), "ACK")  # an old ACK is harmless
    assert ctl.ring.tail == seqs[3] + 1
    assert err_field(reply(ctl, "ACK %d" % (seqs[-1] + 1)), "ACK") == "seq"


def test_ring_full_pauses_without_losing_and_resumes_on_ack(board):
    ctl = Firmware(board, capacity=12)
    reply(ctl, "LOAD " + json.dumps({**TABLE, "steps": [["CC", 100_000, 60_000, 0]]}))
    reply(ctl, "START")
    tick(ctl, board, 40)
    assert ctl.state == controller.FULL and not board.relay
    lines = stream(ctl)
    seqs = [int(x.split()[1]) for x in lines]
    # It pauses while RESERVE slots are still free (for STOP/FAULT events), FULL last.
    assert seqs == list(range(12 - controller.RESERVE + 1)) and lines[-1].split()[2] == "FULL"
    n = len(seqs)
    tick(ctl, board, 5)
    assert stream(ctl) == [] and ctl.state == controller.FULL
    ok_json(reply(ctl, "ACK %d" % seqs[-1]), "ACK")
    assert ctl.state == controller.RUNNING and board.relay
    tick(ctl, board, 2)
    more = stream(ctl)
    assert more[0].split()[:3] == ["E", str(n), "RESUME"] and int(more[1].split()[1]) == n + 1


def test_internal_error_in_tick_switches_off(ctl, board, monkeypatch):
    loaded(ctl)
    reply(ctl, "START")
    tick(ctl, board, 1)

    def broken(dt):
        raise RuntimeError("bug")

    monkeypatch.setattr(ctl.engine, "control", broken)
    tick(ctl, board, 1)
    assert ctl.state == controller.FAULT and ctl.fault & safety.INTERNAL and not board.relay
    assert ok_json(reply(ctl, "STATUS"), "STATUS")["error"].startswith("RuntimeError")


# ---------------------------------------------------------------- MicroPython

FAKE_MPY = """
import gc, json, sys
import steps, controller, link, safety, record, frame

class B:
    id = "mpy"; tick_ms = 1000; oversample = 1; max_uV = 4800000; min_uV = 0
    max_nA = 20000000; range_max_nA = 20000000; calibration_id = ""
    range_fs_nA = [20000000]; range = 0; compliance_lo_uV = 0; compliance_hi_uV = 5000000
    raw_hi = 1 << 29; raw_lo = -(1 << 29)
    def __init__(self):
        self.v_uV = 1500000; self.i_nA = 0; self.setpoint_nA = 0; self.q = 0
        self.raw_v = 0; self.raw_i = 0
    def off(self): self.setpoint_nA = 0
    def set_current(self, i): self.setpoint_nA = i; return i
    def sample(self):
        self.i_nA = self.setpoint_nA
        self.q += self.setpoint_nA
        self.v_uV = 1500000 + self.q // 1000 + self.setpoint_nA // 10
        self.raw_v = self.v_uV; self.raw_i = self.i_nA  # an exact ADC
    def led(self, on): pass
    def feed(self): pass

b = B()
ctl = controller.Controller(b, 200)
lk = link.Link(ctl)
t = {"v": 1, "tick_ms": 1000, "record": {"dt_ms": 600000},
     "steps": [["CC", 123457, 0, 1600000], ["CV", 1600000, 0, 1000], ["CC", -123457, 5000, 0],
               ["LOOP", 0, 3]]}
lk.feed(frame.encode("LOAD " + json.dumps(t)))
lk.feed(frame.encode("START"))
print(lk.output()[0].decode().strip())
e = ctl.engine
for k in range(20):
    ctl.tick(1000)
lk.output(1000)
gc.collect()
gc.disable()
before = gc.mem_alloc()
for k in range(50):
    ctl.tick(997)  # sample, safety, engine, record (nothing written out)
after = gc.mem_alloc()
gc.enable()
print("engine_alloc", after - before)
n = 0
while ctl.state == "RUNNING" and n < 20000:
    ctl.tick(1000)
    lk.output(1000)
    n += 1
print("state", ctl.state, e.step_count, e.cycle, e.acc[0], e.acc[2])
"""


def run_mpy(code):
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
    return subprocess.run([unixport.micropython_binary(), "-X", "heapsize=180K", "-c", code], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.hil
def test_firmware_runs_under_micropython():
    p = run_mpy(FAKE_MPY)
    assert p.returncode == 0, p.stderr + p.stdout
    lines = p.stdout.split("\n")
    assert lines[0].startswith("OK LOAD")
    alloc = [int(x.split()[1]) for x in lines if x.startswith("engine_alloc")][0]
    assert alloc == 0  # a whole tick (no estimator, no output) holds no new objects
    final = [x.split() for x in lines if x.startswith("state")][0]
    assert final[1] == "DONE" and int(final[2]) == 12 and int(final[3]) == 4


# ---------------------------------------------------------------- simulated board

SIM_CELL = {
    "schema_version": 1,
    "cell": {"name": "test LTO", "chemistry": "LTO/Li", "active_mass_g": 0.002, "notes": ""},
    "capacity_Ah": 3.5e-4, "window_V": [1.0, 2.5],
    "ocv": {"soc": [0.0, 0.25, 0.5, 0.75, 1.0], "voltage_V": [1.2, 1.52, 1.56, 1.6, 2.3]},
    "r0_ohm": 60.0, "rc": [{"r_ohm": 40.0, "tau_s": 20.0}],
    "hysteresis": {"m_V": 0.0, "m0_V": 0.0, "gamma": 40.0},
    "coulombic_efficiency": 1.0,
    "fade": {"capacity_per_cycle": 0.0, "resistance_per_cycle": 0.0},
    "estimator": {"sigma_v_V": 0.003, "sigma_i_A": 2e-7, "q_soc": 1e-10, "q_rc_V2": 1e-8,
                  "q_h": 1e-6, "p0_soc": 0.01, "gate": 5.0},
    "provenance": {"source": "tests/test_link.py", "fit_rmse_V": None, "created": "2026-11-25"},
}


def _sim_session(sb, lines):
    """Send framed commands; read until END/FAULT; return (replies, records, events)."""
    for body in lines:
        sb.write(frame.encode(body))
    replies, recs, events = [], [], []
    while True:
        raw = sb.readline()
        if not raw:
            break
        body = frame.decode(raw)
        assert body is not None, raw + b"".join(sb.readline() for _ in range(8))
        if body.startswith("R "):
            recs.append([int(x) for x in body.split()[1:]])
            if len(recs) % 50 == 0:
                sb.write(frame.encode("ACK %d" % recs[-1][0]))
        elif body.startswith("E "):
            events.append(body.split()[2])
            if events[-1] in ("END", "FAULT"):
                break
        else:
            replies.append(body)
    return replies, recs, events


@pytest.mark.hil
def test_sim_run_counts_the_plants_charge(tmp_path):
    from cellbench import sim

    cell = tmp_path / "cell.json"
    cell.write_text(json.dumps(SIM_CELL))
    table = {"v": 1, "tick_ms": 1000, "record": {"dt_ms": 10_000},
             "safety": {"max_uV": 2_700_000, "min_uV": 900_000},
             "steps": [["CC", 100_000, 1_200_000, 2_400_000], ["OCV", 60_000],
                       ["CC", -100_000, 1_500_000, 1_300_000]]}
    sb = sim.start_board(str(cell), calibration="ideal", workdir=tmp_path / "run", soc0=0.5)
    try:
        replies, recs, events = _sim_session(sb, ["MODEL " + json.dumps(SIM_CELL),
                                                  "LOAD " + json.dumps(table), "START"])
    finally:
        sb.close()
    # The model, the table and the ring all fit in the simulated board's heap.
    assert [r.split()[:2] for r in replies[:3]] == [["OK", "MODEL"], ["OK", "LOAD"],
                                                    ["OK", "START"]], replies
    assert events == ["START", "END"]
    f = {name: k + 1 for k, name in enumerate(record.FIELDS)}
    seqs = [r[0] for r in recs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Fixed tick: every record time is a whole number of 1000 ms ticks after START.
    assert all(r[f["t_ms"]] % 1000 == 0 for r in recs)
    assert [r[f["step_no"]] for r in recs][-1] == 2
    truth = sim.read_truth(sb.truth_path)
    q_chg_true = (truth["q_chg_Ah"][-1] - truth["q_chg_Ah"][0]) * 1e9
    q_dch_true = (truth["q_dch_Ah"][-1] - truth["q_dch_Ah"][0]) * 1e9
    last = recs[-1]
    # The board counts what it measures: within 1 % (ADC noise, calibration) of the plant.
    assert last[f["q_chg_nAh"]] == pytest.approx(q_chg_true, rel=0.01, abs=50)
    assert last[f["q_dch_nAh"]] == pytest.approx(q_dch_true, rel=0.01, abs=50)
    model_ok = json.loads(replies[0].split(" ", 2)[2])["estimator"]
    socs = [r[f["soc_ppm"]] for r in recs]
    if model_ok:  # firmware/ekf.py present: every record carries an estimate
        assert all(-50_000 <= x <= 1_050_000 for x in socs)
    else:
        assert set(socs) == {-1}


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=60),
    st.text(max_size=40).map(lambda t: frame.encode(t).rstrip(b"\n")),
    st.tuples(st.text(max_size=40), st.integers(0, 60), st.integers(0, 255)).map(
        lambda a: _flip(frame.encode(a[0]).rstrip(b"\n"), a[1], a[2])),
    st.text(max_size=20).map(lambda t: frame.encode(t).rstrip(b"\n") + b"\r\r"),
))
def test_in_place_frame_check_agrees_with_frame_decode(line):
    """link checks frames in place (no copies of a 7 KB line); it must match frame.decode."""
    buf = bytearray(line)
    n = frame.body_len(buf, len(buf))
    body = frame.decode(line)
    if body is None:
        assert n < 0
    else:
        assert n >= 0 and bytes(buf[:n]).decode("ascii") == body


def _flip(line, k, byte):
    if not line:
        return line
    b = bytearray(line)
    b[k % len(b)] = byte
    return bytes(b)


@given(st.lists(st.integers(-40, 40), min_size=5, max_size=200), st.integers(1, 5))
def test_a_record_every_n_ticks_survives_tick_jitter(jitter_ms, n):
    """With record.dt_ms = n ticks, ticks a few ms late or early still give exactly one
    record every n ticks (the host replays exactly the samples the board filtered)."""
    tick_ms = 1000
    trig = record.Trigger()
    trig.configure(n * tick_ms, 0, 0, tick_ms // 2)
    recorded = []
    for k, j in enumerate(jitter_ms, start=1):
        t_ms = k * tick_ms + j
        if trig.due(t_ms, 0, 0):
            trig.mark(t_ms, 0, 0)
            recorded.append(k)
    assert recorded == list(range(n, len(jitter_ms) + 1, n))


NAMESPACE_PROBE = r"""
import json, sys
path = list(sys.path)
import cellbench.link
from cellbench import fw
from cellbench.paths import FIRMWARE
names = sorted(p.stem for p in FIRMWARE.glob("*.py") if p.stem not in ("main", "manifest", "board"))
mods = {n: fw.module(n) for n in names}
mods["link"].estimator_class()  # a sibling imported inside a function, after the module ran
print(json.dumps({"names": names, "bare": sorted(n for n in names + ["board"] if n in sys.modules),
                  "path_same": sys.path == path,
                  "full": {n: m.__name__ for n, m in mods.items()},
                  "siblings": [mods["controller"].steps is mods["steps"],
                               mods["link"].controller is mods["controller"],
                               mods["runjournal"].journal is mods["journal"],
                               sys.modules.get("cellbench.firmware.ekf") is mods["ekf"]]}))
"""


def test_firmware_imports_under_its_namespace_only():
    """The host imports the firmware as cellbench.firmware.<name> (cellbench.fw.module): in a
    fresh interpreter, importing the host link and every plain firmware module puts nothing
    on sys.path and no top-level link, record, steps, ... in sys.modules, and a module's
    bare sibling imports (also one inside a function) are those same namespaced modules."""
    done = subprocess.run([sys.executable, "-c", NAMESPACE_PROBE], capture_output=True, text=True,
                          cwd=ROOT / "tests")
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.splitlines()[-1])
    assert {"controller", "link", "record", "steps", "frame"} <= set(got["names"])
    assert got["bare"] == [] and got["path_same"]
    assert got["full"] == {n: f"cellbench.firmware.{n}" for n in got["names"]}
    assert all(got["siblings"])


THREADS_PROBE = """
import json, threading
from cellbench import fw
start = threading.Barrier(8)
seen = []
def load():
    start.wait()
    link = fw.module("link")
    seen.append(hasattr(link, "Link") and hasattr(link.frame, "encode"))
threads = [threading.Thread(target=load) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(seen))
"""


def test_firmware_loads_whole_when_threads_ask_at_once():
    """Eight threads ask for the same firmware module in a fresh interpreter (the lab's
    channel threads): each gets it fully loaded, never the half-run module a first load
    leaves in sys.modules while it runs."""
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", THREADS_PROBE], capture_output=True, text=True,
                              cwd=ROOT / "tests")
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout.splitlines()[-1]) == [True] * 8
