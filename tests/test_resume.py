"""Host gone mid-run (issue 6): the board carries on under its own limits, a new host
reattaches with `cellbench run --resume` and the log ends up complete: every record and
event seq of the run exactly once, no gap, no duplicate, valid BDF.

The host runs as a separate `cellbench run` process on a detached simulated board and is
killed with SIGKILL, as a crash or a pulled cable would end it.
"""

import contextlib
import json
import os
import pty
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import tty

import numpy as np
import pandas as pd
import pytest

import bdf
from cellbench import bdflog, cli, fw
from cellbench.link import Link
from cellbench.transport import Transport
from cellbench.paths import MODELS, PROTOCOLS, ROOT
from polling import WAIT_S, wait_for

needs_sim = pytest.mark.hil  # the firmware on the simulated board (tests/conftest.py)

CELL = MODELS / "lto-li-coin.json"
CYCLES = 8
KILL_AFTER_ROWS = 300
SAFETY_V = (0.8, 3.0)  # the protocol's window (lto-100-cycles-1C.json)


def cellbench(*argv, **kw):
    return subprocess.Popen([sys.executable, "-m", "cellbench.cli", *map(str, argv)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)




def rows(path):
    try:
        return bdflog.count_rows(path)
    except OSError:
        return 0


def status(board_dir):
    """STATUS of a detached board over a fresh connection (no ACK: nothing is freed)."""
    from cellbench.sim.detached import DetachedTransport

    frame = fw.module("frame")
    with DetachedTransport(board_dir, timeout_s=30.0) as t:
        t.write(frame.encode("STATUS"))
        while True:
            body = frame.decode(t.readline())
            if body and body.startswith("OK STATUS "):
                return json.loads(body[len("OK STATUS "):])


@pytest.fixture
def protocol(tmp_path):
    doc = json.loads((PROTOCOLS / "lto-100-cycles-1C.json").read_text())
    doc["method"][-1]["cycle_count"] = CYCLES
    path = tmp_path / "cycles.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def killed_run(tmp_path, protocol):
    """A detached sim run whose host was SIGKILLed mid-run: (log, board_dir)."""
    with detached_run(tmp_path, protocol) as (log, board_dir, hosts):
        wait_for(lambda: rows(log) >= KILL_AFTER_ROWS or hosts[0].poll() is not None, "log rows")
        assert hosts[0].poll() is None, hosts[0].communicate()
        hosts[0].send_signal(signal.SIGKILL)
        hosts[0].wait()
        yield log, board_dir


def check_board_carries_on(board_dir):
    """With no host the board keeps time, fills its ring, pauses with the current off
    (FULL) and never leaves its limits."""
    from cellbench.sim import detached, read_truth

    assert detached.alive(board_dir)
    first = status(board_dir)
    assert first["state"] in ("RUNNING", "FULL") and first["fault"] == 0
    full = wait_for(lambda: status(board_dir), "the ring to fill (FULL)",
                    until=lambda s: s["state"] == "FULL")
    assert full["t_ms"] >= first["t_ms"] and full["seq_next"] >= first["seq_next"]
    later = wait_for(lambda: status(board_dir), "board time to advance",
                     until=lambda s: s["t_ms"] > full["t_ms"])
    # Paused for want of ring space: no fault, and the measured current is off (< 1 % of
    # the 1C step's 350 uA; i_set_nA is the step's setpoint, kept for when it resumes).
    assert later["state"] == "FULL" and later["fault"] == 0 and abs(later["i_nA"]) < 3500
    truth = read_truth(detached.info(board_dir)["truth_path"])
    assert SAFETY_V[0] <= truth["v_V"].min() and truth["v_V"].max() <= SAFETY_V[1]
    assert truth["i_A"][-1] == 0.0  # the plant sees the current off while FULL
    return full


def check_complete_log(log, board_dir):
    """Every seq of the run exactly once (records in the CSV, events in the sidecar),
    continuous counters, valid BDF, and the charge the plant itself counted."""
    from cellbench.sim import detached, read_truth

    data = bdflog.read_log(log)
    meta = bdflog.read_sidecar(log)
    rec_seq = data["Record Seq / 1"].tolist()
    ev_seq = [e["seq"] for e in meta["events"] if "seq" in e]
    kinds = [e["kind"] for e in meta["events"] if "seq" in e]
    assert kinds[0] == "START" and kinds[-1] == "END" and "FULL" in kinds
    assert np.all(np.diff(rec_seq) > 0)
    assert sorted(rec_seq + ev_seq) == list(range(meta["start_seq"], ev_seq[-1] + 1))
    t = data["Test Time / s"]
    assert np.all(np.diff(t) > 0)
    cycles = data["Cycle Count / 1"]
    assert cycles[0] == 1 and cycles[-1] == CYCLES and set(np.diff(cycles)) <= {0, 1}
    assert set(np.diff(data["Step Count / 1"])) <= {0, 1}
    for col in ("Charging Capacity / Ah", "Discharging Capacity / Ah"):
        assert np.all(np.diff(data[col]) >= 0)
    # Same cell charge as the plant's own counters over the run (1 %: sense noise/offset).
    truth = read_truth(detached.info(board_dir)["truth_path"])
    for col, key in (("Charging Capacity / Ah", "q_chg_Ah"), ("Discharging Capacity / Ah", "q_dch_Ah")):
        assert data[col][-1] == pytest.approx(truth[key][-1] - truth[key][0], rel=0.01)
    report = bdf.validate(pd.read_csv(log), raise_on_error=True)
    assert report["ok"] and report["time_stats"]["monotonic"]
    assert meta["stop_reason"] == "end" and meta["rows"] == len(t)
    assert [e["kind"] for e in meta["events"]].count("resume") == 1


@needs_sim
def test_host_killed_board_carries_on_and_resume_completes_the_log(killed_run):
    log, board_dir = killed_run
    check_board_carries_on(board_dir)
    resumed = cellbench("run", "--resume", log, "--board-dir", board_dir, "--quiet")
    out, err = resumed.communicate(timeout=WAIT_S)
    assert resumed.returncode == 0, err
    assert b"stopped: end" in out
    check_complete_log(log, board_dir)
    from cellbench.sim import detached

    assert not detached.alive(board_dir)  # a finished detached board is shut down


class PtyBridge:
    """A pseudo-terminal whose far end is the detached board: a stand-in for the USB
    serial port of a real board, so --resume --port runs through SerialTransport."""

    def __init__(self, board_dir):
        from cellbench.sim.detached import info

        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)  # no echo or newline translation before pyserial opens it
        self.port = os.ttyname(self.slave)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(info(board_dir)["socket"])
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            ready, _, _ = select.select([self.master, self.sock], [], [], 0.1)
            try:
                if self.master in ready:
                    self.sock.sendall(os.read(self.master, 65536))
                if self.sock in ready:
                    data = self.sock.recv(65536)
                    if not data:
                        return
                    os.write(self.master, data)
            except OSError:
                return

    def close(self):
        self.stop = True
        self.thread.join(5)
        self.sock.close()
        os.close(self.master)
        os.close(self.slave)


@needs_sim
def test_log_cut_mid_row_resumes_through_a_serial_port(killed_run):
    """The host died while writing a row: the log ends at an arbitrary byte. --resume
    (here over a serial port) cuts the partial row and fetches from the last whole one."""
    log, board_dir = killed_run
    held = wait_for(lambda: status(board_dir), "FULL", until=lambda s: s["state"] == "FULL")["seq_oldest"]
    data = log.read_bytes()
    lines = data.split(b"\n")
    seqs = [int(line.rsplit(b",", 1)[1]) for line in lines[1:-1]]
    # Rows the board still holds (not yet acknowledged) are the ones a kill can cut.
    unacked = [k for k, s in enumerate(seqs) if s >= held]
    rng = random.Random(6)
    if unacked:
        start = len(b"\n".join(lines[: unacked[0] + 1])) + 1
        cut = rng.randrange(start, len(data))
        log.write_bytes(data[:cut])
    else:  # every logged row was acknowledged: the kill hit the next row's first bytes
        log.write_bytes(data + lines[-2][: rng.randrange(1, len(lines[-2]))])
    bridge = PtyBridge(board_dir)
    try:
        resumed = cellbench("run", "--resume", log, "--port", bridge.port, "--quiet",
                            "--keep-board")
        out, err = resumed.communicate(timeout=WAIT_S)
    finally:
        bridge.close()
    assert resumed.returncode == 0, err
    check_complete_log(log, board_dir)
    from cellbench.sim import detached

    assert detached.alive(board_dir)  # --port: the host does not own the board


# ---------------------------------------------------------------- refusals (exit 2, one line)


def _bad(argv, capsys, starts):
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"cellbench: error: {starts}"), err


def _small_log(path, ended):
    with bdflog.LogWriter(path, meta={"table": {}, "protocol": {}, "start_seq": 0}) as log:
        log.write({"seq": 1, "t_ms": 0, "v_uV": 1, "i_nA": 0, "cycle": 1, "step_count": 1,
                   "step_index": 0, "step_type": 0, "fault": 0, "q_chg_nAh": 0, "q_dch_nAh": 0,
                   "q_step_nAh": 0, "e_chg_uWh": 0, "e_dch_uWh": 0})
        if ended:
            log.event("END", seq=2, data=None)
    return path


def test_resume_refusals(tmp_path, capsys):
    done = _small_log(tmp_path / "done.bdf.csv", ended=True)
    going = _small_log(tmp_path / "going.bdf.csv", ended=False)
    _bad(["run", "--resume", done], capsys, "resume: give the board's --port or --board-dir")
    _bad(["run", "--resume", going, "--board-dir", tmp_path / "nothing"], capsys,
         "board_dir: no detached simulated board")
    (tmp_path / "plain.bdf.csv").write_text("Test Time / s,Voltage / V,Current / A\n0,1,0\n")
    _bad(["run", "--resume", tmp_path / "plain.bdf.csv", "--port", "/dev/null"], capsys,
         "resume: plain.bdf.csv was not written by this bench")
    (tmp_path / "going.bdf.csv.json").write_text(json.dumps({"started_unix_s": 0}))
    _bad(["run", "--resume", going, "--port", "/dev/null"], capsys,
         "resume: the sidecar of going.bdf.csv has no 'table'")
    _bad(["run", "x.json", "--resume", done, "--port", "/dev/null"], capsys, "resume: --protocol")
    _bad(["run", "--resume", tmp_path / "none.bdf.csv", "--port", "/dev/null"], capsys,
         "resume: no log")
    _bad(["run", "--resume", done, "--port", "/dev/null"], capsys, "resume: the run in done.bdf.csv already ended")
    _bad(["run", str(PROTOCOLS / "smoke.json"), "--port", "/dev/null", "--out", done], capsys, "out:")
    _bad(["run", str(PROTOCOLS / "smoke.json"), "--out", tmp_path / "n.bdf.csv"], capsys, "board:")
    _bad(["run", str(PROTOCOLS / "smoke.json"), "--port", "/dev/null", "--detach-dir", tmp_path],
         capsys, "detach_dir:")


# ---------------------------------------------------------------- the ACK discipline


class ScriptedBoard(Transport):
    """A transport that plays board lines and records what the host writes."""

    close = lambda self: None  # noqa: E731

    def __init__(self, bodies):
        frame = fw.module("frame")
        self.lines = [frame.encode(b) for b in bodies]
        self.sent = []
        self.decode = frame.decode

    def write(self, data):
        self.sent.append(self.decode(data))

    def readline(self, timeout_s=None):
        return self.lines.pop(0) if self.lines else b""


def test_acks_cover_only_messages_the_caller_has_taken():
    """A host killed after an ACK must have logged what it acknowledged: the link ACKs a
    message only once the caller has asked for the one after it (or marked it consumed)."""
    n = 70
    bodies = [f"R {k} {k * 1000} 1 0 1 {k} 1 0 0 0 0 0 0 0 0 -1 -1 -1 -1 -1 -1" for k in range(n)]
    board = ScriptedBoard(bodies + ["E 70 END {}"])
    link = Link(board, ack_every=8)
    taken = []
    for kind, msg in link.messages(idle_timeout_s=0.2):
        acked = [int(s.split()[1]) for s in board.sent if s.startswith("ACK ")]
        assert not acked or max(acked) < msg["seq"]  # never the one in hand
        taken.append(msg["seq"])
        if kind == "event":
            link.consumed(msg["seq"])
            break
    link.acknowledge()
    assert taken == list(range(n + 1))
    assert board.sent[-1] == f"ACK {n}"


def test_acks_go_out_every_batch_of_messages_taken_from_the_streams_start():
    """docs/link.md: the host ACKs every ``ack_every`` messages it has taken, counted from
    the first of its stream (a board running faster than real time fills its ring within
    a second if the first ACK waits for the clock)."""
    first, n, batch = 100, 70, 8
    bodies = [f"R {k} {k * 1000} 1 0 1 {k} 1 0 0 0 0 0 0 0 0 -1 -1 -1 -1 -1 -1"
              for k in range(first, first + n)]
    board = ScriptedBoard(bodies)
    link = Link(board, ack_every=batch, first_seq=None)
    link.reset_sequence(first)
    for kind, msg in link.messages(idle_timeout_s=5.0):
        if msg["seq"] == first + n - 1:
            break
    acked = [int(s.split()[1]) for s in board.sent if s.startswith("ACK ")]
    assert acked and max(np.diff([first - 1] + acked)) <= batch, acked
    assert acked[-1] >= first + n - 1 - batch, acked


# ---------------------------------------------------------------- resume logic on a scripted board


REC_FIELDS = ("seq", "t_ms", "v_uV", "i_nA", "step_count", "step_index", "cycle", "step_no",
              "step_type", "fault", "q_chg_nAh", "q_dch_nAh", "q_step_nAh", "e_chg_uWh",
              "e_dch_uWh", "soc_ppm", "soc_std_ppm", "cap_nAh", "cap_std_nAh", "r_mohm", "r_std_mohm")


def _rec(seq):
    """A record line (docs/link.md): a learning estimator's capacity and R_ct in it."""
    t = 1000 * seq
    return (f"R {seq} {t} 1500000 -350000 1 {seq} 1 0 2 0 0 {10 * seq} {10 * seq} 0 {15 * seq} "
            f"{500_000 - seq} 2000 {400_000 - seq} 4000 {33_000 + seq} 900")


class RingBoard(Transport):
    """A board with a ring holding seqs oldest..next-1 (docs/link.md SEND / ACK / STATUS)."""

    close = lambda self: None  # noqa: E731

    def __init__(self, held, state="DONE", board_id="sim"):
        self.frame = fw.module("frame")
        self.held = dict(held)  # seq -> body
        self.state, self.board_id = state, board_id
        self.out = []
        self.sent = []

    def _reply(self, body):
        self.out.append(self.frame.encode(body))

    def write(self, data):
        body = self.frame.decode(data)
        self.sent.append(body)
        cmd, _, arg = body.partition(" ")
        oldest = min(self.held) if self.held else None
        nxt = max(self.held) + 1 if self.held else 0
        if cmd == "ID":
            self._reply('OK ID {"board": "%s", "fw": "test"}' % self.board_id)
        elif cmd == "STATUS":
            self._reply("OK STATUS " + json.dumps({"state": self.state, "seq_next": nxt,
                                                   "seq_oldest": oldest, "lost": 0}))
        elif cmd == "SEND":
            n = int(arg)
            if oldest is not None and n < oldest:
                self._reply(f"ERR SEND from_seq freed by ACK; oldest held is {oldest}")
                n = oldest
            else:
                self._reply('OK SEND {"from": %d, "to": %d}' % (n, nxt - 1))
            for seq in sorted(self.held):
                if seq >= n:
                    self._reply(self.held[seq])
        elif cmd == "ACK":
            for seq in [s for s in self.held if s <= int(arg)]:
                del self.held[seq]
            self._reply("OK ACK {}")
        elif cmd == "STOP":
            self._reply('OK STOP {"state": "STOPPED"}')

    def readline(self, timeout_s=None):
        return self.out.pop(0) if self.out else b""


def _interrupted_log(tmp_path, seqs, events, with_soc=False, with_ageing=False):
    from cellbench import boards, protocol as proto

    table = proto.compile(proto.load_protocol(PROTOCOLS / "smoke.json"), boards.load_board("sim"))
    path = tmp_path / "cut.bdf.csv"
    meta = {"table": table, "protocol": {}, "start_seq": 0, "board": {"id": "sim"}}
    log = bdflog.LogWriter(path, start_unix_s=0.0, meta=meta, with_soc=with_soc,
                           with_ageing=with_ageing)
    for seq in seqs:
        rec = dict(zip(REC_FIELDS, map(int, _rec(seq).split()[1:])))
        assert len(rec) == len(REC_FIELDS) == len(_rec(seq).split()) - 1
        log.write(rec)
    for seq, kind in events:
        log.event(kind, seq=seq, data=None)
    log.close_file()  # killed: no final sidecar
    return path


def test_resume_fetches_after_the_newest_logged_seq_record_or_event(tmp_path):
    """The old host logged records 1-5 and events FULL 6, RESUME 7 and ACKed them all;
    the board holds 8-12. Nothing is reported lost and nothing is logged twice."""
    from cellbench import session

    path = _interrupted_log(tmp_path, range(1, 6), [(0, "START"), (6, "FULL"), (7, "RESUME")])
    held = {s: _rec(s) for s in range(8, 12)}
    held[12] = 'E 12 END {"t_ms": 12000, "fault": 0}'
    board = RingBoard(held)
    summary = session.resume(path, board)
    assert summary["stop_reason"] == "end" and summary["link"]["lost"] == 0
    assert "SEND 8" in board.sent and not board.held  # all acknowledged at the end
    data = bdflog.read_log(path)
    meta = bdflog.read_sidecar(path)
    assert data["Record Seq / 1"].tolist() == [1, 2, 3, 4, 5, 8, 9, 10, 11]
    assert [(e["kind"], e.get("seq")) for e in meta["events"]] == [
        ("START", 0), ("FULL", 6), ("RESUME", 7), ("resume", None), ("END", 12)]
    assert meta["rows"] == 9 and meta["stop_reason"] == "end"


@pytest.mark.parametrize("with_soc, with_ageing", [(False, False), (True, False), (True, True)])
def test_resume_keeps_the_logs_columns(tmp_path, with_soc, with_ageing):
    """A log written before the ageing columns existed (or without a model) is resumed
    from a board whose records carry the estimates: the appended rows have the log's own
    columns; a log with the ageing columns gets the board's estimates in Ah and ohm."""
    from cellbench import session

    path = _interrupted_log(tmp_path, range(1, 6), [(0, "START")], with_soc, with_ageing)
    header = bdflog.read_header(path)
    held = {s: _rec(s) for s in range(6, 9)}
    held[9] = 'E 9 END {"t_ms": 9000, "fault": 0}'
    assert session.resume(path, RingBoard(held))["stop_reason"] == "end"
    assert bdflog.read_header(path) == header
    data = bdflog.read_log(path)
    seq = np.arange(1, 9)
    assert data["Record Seq / 1"].tolist() == seq.tolist()
    assert ("SOC / 1" in data) == with_soc
    assert ("Capacity Estimate / Ah" in data) == with_ageing
    if with_ageing:  # _rec: cap 400000 - seq nAh (std 4000), R_ct 33000 + seq mohm (std 900)
        np.testing.assert_allclose(data["Capacity Estimate / Ah"], (400_000 - seq) * 1e-9, rtol=1e-12)
        np.testing.assert_allclose(data["Capacity Estimate Std / Ah"], 4e-6, rtol=1e-12)
        np.testing.assert_allclose(data["Charge Transfer Resistance Estimate / ohm"], (33_000 + seq) * 1e-3,
                                   rtol=1e-12)
        np.testing.assert_allclose(data["Charge Transfer Resistance Estimate Std / ohm"], 0.9, rtol=1e-12)


def _old_rec(seq):
    """A record of firmware from before the capacity/resistance fields (16 after seq)."""
    return " ".join(_rec(seq).split()[:-4])


def test_records_of_older_firmware_are_read_without_estimates():
    from cellbench.link import parse_record

    new, old = parse_record(_rec(7)), parse_record(_old_rec(7))
    assert new == dict(zip(REC_FIELDS, map(int, _rec(7).split()[1:])))
    assert old == dict(new, cap_nAh=-1, cap_std_nAh=-1, r_mohm=-1, r_std_mohm=-1)
    for bad in (_rec(7) + " 5", " ".join(_rec(7).split()[:-1]), " ".join(_rec(7).split()[:-5]),
                _rec(7).replace("2000", "x")):
        assert parse_record(bad) is None, bad


def test_an_old_board_and_its_log_resume_with_a_new_host(tmp_path):
    """The run began before the estimate fields existed (old firmware on the board, an old
    log): the new host appends the old board's records to it."""
    from cellbench import session

    path = _interrupted_log(tmp_path, range(1, 6), [(0, "START")], with_soc=True)
    held = {s: _old_rec(s) for s in range(6, 9)}
    held[9] = 'E 9 END {"t_ms": 9000, "fault": 0}'
    summary = session.resume(path, RingBoard(held))
    assert summary["stop_reason"] == "end" and summary["link"]["lost"] == 0
    data = bdflog.read_log(path)
    assert data["Record Seq / 1"].tolist() == list(range(1, 9))
    np.testing.assert_allclose(data["SOC / 1"], (500_000 - np.arange(1, 9)) * 1e-6, rtol=1e-12)


def test_resume_of_a_run_that_ended_with_everything_logged_fetches_nothing(tmp_path):
    from cellbench import session

    path = _interrupted_log(tmp_path, range(1, 4), [(0, "START")])
    board = RingBoard({}, state="DONE")
    # An empty ring whose next seq is 4 (everything up to the END event was acknowledged).
    board.write = _status_only(board, seq_next=4, state="DONE")
    summary = session.resume(path, board)
    assert summary["stop_reason"] == "end"
    assert bdflog.read_log(path)["Record Seq / 1"].tolist() == [1, 2, 3]


def _status_only(board, seq_next, state):
    def write(data):
        body = board.frame.decode(data)
        board.sent.append(body)
        if body == "ID":
            board._reply('OK ID {"board": "sim"}')
        elif body == "STATUS":
            board._reply("OK STATUS " + json.dumps({"state": state, "seq_next": seq_next,
                                                   "seq_oldest": seq_next, "lost": 0}))
    return write


@pytest.mark.parametrize("board_id, seq_next, match", [
    ("other", 20, "resume: the board is 'other'"),
    ("sim", 3, "resume: the board has restarted"),
])
def test_resume_refuses_another_or_restarted_board(tmp_path, board_id, seq_next, match):
    from cellbench import session
    from cellbench.errors import InputError

    path = _interrupted_log(tmp_path, range(1, 6), [(0, "START")])
    before = path.read_bytes()
    board = RingBoard({s: _rec(s) for s in range(6, seq_next)}, state="RUNNING", board_id=board_id)
    if seq_next <= 6:
        board.write = _status_only(board, seq_next=seq_next, state="RUNNING")
    with pytest.raises(InputError, match=match):
        session.resume(path, board)
    assert path.read_bytes() == before
    assert not any(s.startswith(("SEND", "STOP", "ACK")) for s in board.sent)  # board untouched


class StreamingRingBoard(RingBoard):
    """A RingBoard whose run goes on while the new host says hello: a live record comes
    before its ID reply and the run's END event before its STATUS reply, streamed from
    the cursor the old host left, as a board does."""

    def write(self, data):
        body = self.frame.decode(data)
        if body in ("ID", "STATUS"):
            seq = max(self.held) + 1
            self.held[seq] = _rec(seq) if body == "ID" else 'E %d END {"fault": 0}' % seq
            self._reply(self.held[seq])
        super().write(data)


def test_lines_streamed_before_the_resume_asks_are_not_counted_lost(tmp_path):
    """Records the board streams while the host sends ID and STATUS (before its SEND) are
    neither gaps nor losses: nothing is lost, so the summary and sidecar say 0."""
    from cellbench import session

    path = _interrupted_log(tmp_path, range(1, 6), [(0, "START")])
    board = StreamingRingBoard({s: _rec(s) for s in range(6, 10)}, state="RUNNING")
    summary = session.resume(path, board)
    assert summary["stop_reason"] == "end" and summary["link"]["lost"] == 0
    meta = bdflog.read_sidecar(path)
    assert "records_lost" not in [e["kind"] for e in meta["events"]]
    assert bdflog.read_log(path)["Record Seq / 1"].tolist() == list(range(1, 11))
    assert [e.get("seq") for e in meta["events"] if e["kind"] == "END"] == [11]


# ---------------------------------------------------------------- many kills, Ctrl-C


def true_gaps(log):
    """Seqs of the run that are in neither the CSV (records) nor the sidecar (events)."""
    data, meta = bdflog.read_log(log), bdflog.read_sidecar(log)
    have = set(data["Record Seq / 1"].tolist()) | {e["seq"] for e in meta["events"] if "seq" in e}
    return sorted(set(range(meta["start_seq"], max(have) + 1)) - have)


def reported_lost(log, stdout):
    """What the host says it lost: the sidecar's link counter, its records_lost events and
    the summary line's "lost N" (all of them must agree)."""
    meta = bdflog.read_sidecar(log)
    events = sum(e["count"] for e in meta["events"] if e["kind"] == "records_lost")
    printed = [int(w.split()[1]) for line in stdout.splitlines() if line.startswith("link: ")
               for w in line[len("link: "):].split(", ") if w.startswith("lost ")]
    return meta["link"]["lost"], events, printed


@contextlib.contextmanager
def detached_run(tmp_path, protocol):
    """`cellbench run` on a detached simulated board: (log, board_dir, hosts), ``hosts`` the
    host processes so far (a test appends its resumes); afterwards every host still
    running is killed and the board shut down."""
    from cellbench.sim import detached

    log, board_dir = tmp_path / "run.bdf.csv", tmp_path / "board"
    hosts = [cellbench("run", protocol, "--cell", CELL, "--out", log, "--detach-dir", board_dir,
                       "--quiet")]
    try:
        yield log, board_dir, hosts
    finally:
        for host in hosts:
            if host.poll() is None:
                host.kill()
            host.wait()
            host.stdout.close()
            host.stderr.close()
        detached.shutdown(board_dir)


@needs_sim
def test_four_kills_and_resumes_report_exactly_the_true_losses(tmp_path, protocol):
    """The host is killed four times, each time resumed at once while the board runs on
    (it streams to nobody meanwhile): the log ends complete, and every loss counter equals
    the records really missing from it (none)."""
    with detached_run(tmp_path, protocol) as (log, board_dir, hosts):
        for _ in range(4):
            target = rows(log) + 150
            wait_for(lambda: rows(log) >= target or hosts[-1].poll() is not None, "more log rows")
            assert hosts[-1].poll() is None, hosts[-1].communicate()
            hosts[-1].kill()
            hosts.append(cellbench("run", "--resume", log, "--board-dir", board_dir, "--quiet"))
        out, err = hosts[-1].communicate(timeout=WAIT_S)
        assert hosts[-1].returncode == 0, err
    meta = bdflog.read_sidecar(log)
    assert meta["stop_reason"] == "end"
    assert [e["kind"] for e in meta["events"]].count("resume") == 4
    gaps = true_gaps(log)
    sidecar_lost, event_lost, printed = reported_lost(log, out.decode())
    assert gaps == [] and sidecar_lost == event_lost == len(gaps)
    assert printed in ([], [len(gaps)])


@needs_sim
def test_ctrl_c_pauses_a_detached_board_and_says_how_to_continue(tmp_path, protocol):
    """Ctrl-C: the current goes off (the run pauses on the board), the message names the
    log, its record count and the command that continues; that command completes the run."""
    with detached_run(tmp_path, protocol) as (log, board_dir, hosts):
        seen = wait_for(lambda: (rows(log), hosts[0].poll()), "100 log rows (rows, host exit)",
                        until=lambda s: s[0] >= 100 or s[1] is not None)
        assert seen[1] is None, f"the host ended (exit {seen[1]}) after {seen[0]} rows, before Ctrl-C"
        hosts[0].send_signal(signal.SIGINT)
        _, err = hosts[0].communicate(timeout=WAIT_S)
        err = err.decode().strip().splitlines()
        assert hosts[0].returncode == 130 and len(err) == 1, err
        said = err[0]
        assert "the current is off" in said and f"log {log} holds {rows(log)} records" in said
        command = f"cellbench run --resume {log} --board-dir {board_dir}"
        assert said.endswith(command), said
        paused = status(board_dir)
        assert paused["state"] == "PAUSED" and abs(paused["i_nA"]) < 3500
        hosts.append(cellbench(*command.split()[1:], "--quiet"))
        out, err = hosts[-1].communicate(timeout=WAIT_S)
        assert hosts[-1].returncode == 0, err
    meta = bdflog.read_sidecar(log)
    kinds = [e["kind"] for e in meta["events"]]
    assert meta["stop_reason"] == "end" and "PAUSE" in kinds and "RESUME" in kinds
    assert true_gaps(log) == [] and b"stopped: end" in out


class FirmwareLine(Transport):
    """The real firmware (controller and link, under CPython on a FakeBoard) behind a
    serial line, in firmware/main.py's loop order: output first, then one input line when
    there is none to write, else a tick of virtual time. ``interrupt_after``: Ctrl-C (a
    KeyboardInterrupt from the read, where the lab's pause arrives too) once that many
    records were read."""

    close = lambda self: None  # noqa: E731
    eof = False

    def __init__(self, capacity):
        from test_steps import FakeBoard, FakeCell, Firmware

        self.board = FakeBoard(FakeCell(v0_uV=1_500_000, slope_uV_nAh=5.0))
        self.board.id = "sim"  # the board file the protocol is compiled for
        self.board.sample()
        self.fw = Firmware(self.board, capacity=capacity)
        self.inbox, self.out = b"", []
        self.records, self.interrupt_after = 0, None

    def write(self, data):
        self.inbox += data

    def step(self):
        """One pass of main.py's loop with nothing to write: an input line, else a tick."""
        if self.inbox:
            cut = self.inbox.find(b"\n") + 1 or len(self.inbox)
            line, self.inbox = self.inbox[:cut], self.inbox[cut:]
            self.fw.feed(line)
        else:
            self.board.elapse(self.fw.tick_ms)
            self.fw.tick(self.fw.tick_ms)

    def readline(self, timeout_s=None):
        if self.interrupt_after is not None and self.records >= self.interrupt_after:
            self.interrupt_after = None
            raise KeyboardInterrupt
        while not self.out:
            self.out = self.fw.output()
            if not self.out:
                if not self.inbox and self.fw.state == "FULL":
                    return b""  # nothing to send until an ACK: the line is quiet
                self.step()
        line = self.out.pop(0)
        self.records += line.startswith(b"R ")
        return line


@pytest.mark.parametrize("extra", [-1, 0, 1, 32])
def test_resume_of_a_paused_board_whose_ring_filled_completes_the_run(tmp_path, extra):
    """Ctrl-C paused the run; the paused board's records filled its ring (FULL) before
    the host came back. The host re-fetches the backlog, RESUMEs and ACKs what it took, so
    the board goes on to the end: for every backlog size around the link's ACK batch.

    (A backlog that was a whole number of ACK batches used to hang until the idle limit:
    the ACKs sent while RESUME waited for its reply covered nothing, yet settled the count,
    and no ACK went out once the backlog was taken.)"""
    from cellbench import session

    batch = Link(None).ack_every
    backlog = batch + extra
    reserve = fw.module("controller").RESERVE
    line = FirmwareLine(capacity=backlog + reserve - 1)  # paused: fills to RESERVE, then FULL
    log = tmp_path / "run.bdf.csv"
    line.interrupt_after = 20
    with pytest.raises(session.Interrupted):
        session.run(PROTOCOLS / "smoke.json", line, log, board="sim", on_interrupt="pause")
    while line.fw.state != "FULL" or line.inbox:
        line.step()
    held = line.fw.status()
    assert held["seq_next"] - held["seq_oldest"] == backlog  # the premise
    summary = session.resume(log, line, on_interrupt="pause")
    assert summary["stop_reason"] == "end", summary
    kinds = [e["kind"] for e in bdflog.read_sidecar(log)["events"]]
    assert {"PAUSE", "FULL", "RESUME", "END"} <= set(kinds)
    assert true_gaps(log) == []


def test_ctrl_c_while_a_row_is_made_loses_nothing_and_counts_right(tmp_path, monkeypatch, capsys):
    """Ctrl-C comes at the worst moment: a record is taken from the link and not yet on
    disk. The run pauses at the next read instead: the message's count is the log's, no
    seq of the run is missing, and the command it gives completes the run.

    (Raised where it came, the interrupt used to lose that record, which the PAUSE's ACK
    then freed on the board, or leave the count one short of the rows written.)"""
    from cellbench.commands import run as run_command

    assert threading.current_thread() is threading.main_thread()  # signals reach this thread
    line = FirmwareLine(capacity=5000)
    monkeypatch.setattr(run_command, "open_transport", lambda args, board_file=None: (line, "sim"))
    real_row, made = bdflog.record_row, []

    def row(rec, *args, **kw):
        made.append(rec["seq"])
        if len(made) == 30:
            os.kill(os.getpid(), signal.SIGINT)  # its handler runs before the next line
        return real_row(rec, *args, **kw)

    monkeypatch.setattr(bdflog, "record_row", row)
    log = tmp_path / "run.bdf.csv"
    port = ["--port", "/dev/null", "--quiet"]
    assert cli.main(["run", str(PROTOCOLS / "smoke.json"), "--board", "sim", "--out", str(log)] + port) == 130
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and f"log {log} holds {bdflog.count_rows(log)} records" in said[0], said
    assert said[0].endswith(f"cellbench run --resume {log} --port /dev/null")
    assert bdflog.read_sidecar(log)["rows"] == bdflog.count_rows(log) >= 30
    assert true_gaps(log) == []
    assert cli.main(["run", "--resume", str(log)] + port) == 0
    assert bdflog.read_sidecar(log)["stop_reason"] == "end" and true_gaps(log) == []


def test_resume_reads_the_sidecar_once(tmp_path, monkeypatch):
    import builtins

    from cellbench import session

    path = _interrupted_log(tmp_path, range(1, 6), [(0, "START")])
    side = str(bdflog.sidecar_path(path))
    reads = []
    real_open = builtins.open

    def counting_open(file, mode="r", *args, **kw):
        if str(file) == side and "r" in mode:
            reads.append(mode)
        return real_open(file, mode, *args, **kw)

    monkeypatch.setattr(builtins, "open", counting_open)
    held = {s: _rec(s) for s in range(6, 9)}
    held[9] = 'E 9 END {"t_ms": 9000, "fault": 0}'
    assert session.resume(path, RingBoard(held))["stop_reason"] == "end"
    assert len(reads) == 1
