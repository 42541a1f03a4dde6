"""The firmware on the real rp2 MicroPython image in an emulated RP2040 (cellbench.emu).

The image and boot ROM come from $CELLBENCH_RP2_DIR (make test sets it to ../shared/rp2040
when that exists); without one these tests are skipped, saying so. With one, nothing is
skipped: a missing Node or rp2040js is a failure.

One emulated board per module: powered up with a simulated cell, the firmware installed
through the raw REPL as `cellbench flash` installs it, reset; its state at boot is kept,
then a short protocol runs over the emulated USB CDC with the host's own link and session.
Expectations are independent of the firmware: the pins and PWM compare the emulated chip
shows, and the plant's truth (the charge that actually flowed, in emulated time).
"""

import json

import numpy as np
import pytest

from cellbench import bdflog, session
from cellbench.emu import runtime
from cellbench.link import Link
from cellbench.sim import read_truth

IMAGE = runtime.image_dir()
pytestmark = pytest.mark.skipif(
    IMAGE is None, reason=f"emu: no rp2 image given (set {runtime.IMAGE_ENV} to the directory "
                          "of the MicroPython RPI_PICO firmware.bin and bootrom_b1.bin)")

from cells import CELL  # a small LTO-like half cell, 0.35 mAh
RATE_C = 10  # 3.5 mA: the 20 mA range; each half cycle ends on voltage in about 6 min
I_A = RATE_C * 3.5e-4
FAST = {"sample": {"name": "emu fast", "capacity_mAh": 0.35},
        "record": {"time_s": 20, "voltage_V": 0.01},
        "safety": {"max_voltage_V": 2.7, "min_voltage_V": 0.8},
        "method": [{"step": "open_circuit_voltage", "until_time_s": 20},
                   {"step": "tag", "tag": "c"},
                   {"step": "constant_current", "rate_C": -RATE_C, "until_voltage_V": 1.0,
                    "until_time_s": 900},
                   {"step": "constant_current", "rate_C": RATE_C, "until_voltage_V": 2.5,
                    "until_time_s": 900},
                   {"step": "loop", "loop_to": "c", "cycle_count": 2}]}
TICK_MS = 2000


@pytest.fixture(scope="module")
def emu_run(tmp_path_factory):
    """(boot state, run summary, log, truth) of one emulated board."""
    from cellbench.emu.board import start_board

    d = tmp_path_factory.mktemp("emu")
    (d / "cell.json").write_text(json.dumps(CELL))
    (d / "fast.json").write_text(json.dumps(FAST))
    board = start_board(d / "cell.json", calibration="ideal", image=IMAGE, workdir=d / "work")
    try:
        ident = Link(board, reply_timeout_s=30.0).command("ID")
        boot = {"ident": ident, "pins": dict(board.pins), "duty": board.duty,
                "delivered_A": board.plant.delivered_A(), "resets": len(board.resets)}
        out = d / "run.bdf.csv"
        summary = session.run(d / "fast.json", board, out, board="rp2040-emu", tick_ms=TICK_MS)
    finally:
        board.close()
    return boot, summary, bdflog.read_log(out), read_truth(board.truth_path)


def test_boots_the_firmware_with_the_current_off(emu_run):
    boot, _, _, truth = emu_run
    ident = boot["ident"]
    assert ident["board"] == "rp2040-emu" and ident["calibration"] == "rp2040-emu-ideal"
    assert ident["interrupted"] is None
    cfg = json.loads((runtime.HERE.parents[2] / "boards" / "rp2040-emu.json").read_text())
    # The relay pin driven low (0, not floating), the range pins on the smallest range.
    assert boot["pins"][cfg["relay_pin"]] == 0
    assert [boot["pins"][p] for p in cfg["current"]["range_pins"]] == [0, 0]
    # The PWM slice's real duty at mid-scale: 0 A from the Howland pump.
    num, den = boot["duty"]
    assert 2 * num == den
    # The slice's period (den = TOP + 1) gives the board file's frequency at div 1, by the
    # datasheet's f = 125 MHz / ((TOP + 1) * div): the full 16-bit resolution the note claims.
    assert abs(125e6 / den - cfg["source"]["freq_hz"]) < 0.5 and den > 65000
    assert boot["delivered_A"] == 0.0
    before = truth["t_s"] <= truth["t_s"][np.argmax(np.abs(truth["i_A"]) > 0)]
    assert np.all(truth["i_A"][before][:-1] == 0.0)


def test_short_protocol_runs_to_its_end_on_the_chip(emu_run):
    _, summary, log, _ = emu_run
    assert summary["stop_reason"] == "end"
    types = log["Step Type"]
    runs = [t for k, t in enumerate(types) if k == 0 or t != types[k - 1]]
    assert runs == ["REST", "CC_DCH", "CC_CHG", "CC_DCH", "CC_CHG"]
    assert sorted(set(log["Cycle Count / 1"].tolist())) == [1, 2]
    assert sorted(set(log["Step Count / 1"].tolist())) == [1, 2, 3, 4, 5]
    i = log["Current / A"]
    np.testing.assert_allclose(i[types == "CC_DCH"], -I_A, rtol=0.02)
    np.testing.assert_allclose(i[types == "CC_CHG"], I_A, rtol=0.02)
    # Each half ended on its voltage limit, not its 900 s backstop.
    steps = log["Step Count / 1"]
    for k in (2, 3, 4, 5):
        t = log["Test Time / s"][steps == k]
        assert t[-1] - t[0] < 900 - 60


def test_charge_counters_match_the_cells_truth(emu_run):
    _, summary, log, truth = emu_run
    t_log = log["Test Time / s"]
    on_log = t_log[np.argmax(log["Current / A"] < -1e-4)]
    on_truth = truth["t_s"][np.argmax(truth["i_A"] < -1e-4)]
    t = t_log + (on_truth - on_log)
    for column, key in (("Discharging Capacity / Ah", "q_dch_Ah"), ("Charging Capacity / Ah", "q_chg_Ah")):
        q_truth = np.interp(t, truth["t_s"], truth[key]) - np.interp(t[0], truth["t_s"], truth[key])
        assert q_truth[-1] > 2e-4  # two half cycles of most of the 0.35 mAh
        assert abs(log[column][-1] - q_truth[-1]) < 0.01 * q_truth[-1]
        assert np.max(np.abs(log[column] - q_truth)) < 0.03 * q_truth[-1]
    assert summary["cycles"] == 2


# ---- a reset mid-run, recovered from the journal in the emulated flash ----------------------
REST_S = 120
WITH_RESTS = {"sample": {"name": "emu rests", "capacity_mAh": 0.35},
              "record": {"time_s": 20, "voltage_V": 0.01},
              "safety": {"max_voltage_V": 2.7, "min_voltage_V": 0.8},
              "method": [{"step": "tag", "tag": "c"},
                         {"step": "constant_current", "rate_C": -RATE_C, "until_voltage_V": 1.0,
                          "until_time_s": 900},
                         {"step": "open_circuit_voltage", "until_time_s": REST_S},
                         {"step": "constant_current", "rate_C": RATE_C, "until_voltage_V": 2.5,
                          "until_time_s": 900},
                         {"step": "loop", "loop_to": "c", "cycle_count": 2}]}


class ResetInRest:
    """The emulated board's transport, which presses the chip's reset once the host has read
    the third record of the first rest (40-60 s into it: the journal holds the rest's start,
    and a rest moves no charge, so the board's counters lose nothing)."""

    def __init__(self, board):
        self.board = board
        self.seen = 0
        self.pressed = False

    def __getattr__(self, name):
        return getattr(self.board, name)

    def readline(self, *a, **kw):
        line = self.board.readline(*a, **kw)
        if not self.pressed and line.startswith(b"R "):
            fields = line.split(b"*")[0].split()
            if int(fields[8]) == 1 and int(fields[9]) == 0:  # step_no 1 (the rest), REST
                self.seen += 1
                if self.seen == 3:
                    self.pressed = True
                    self.board.reset()
        return line


@pytest.fixture(scope="module")
def reset_run(tmp_path_factory):
    """(summary at the reset, summary after RECOVER, log, truth, chip resets)."""
    from cellbench.emu.board import start_board

    d = tmp_path_factory.mktemp("emureset")
    (d / "cell.json").write_text(json.dumps(CELL))
    (d / "rests.json").write_text(json.dumps(WITH_RESTS))
    board = start_board(d / "cell.json", calibration="ideal", image=IMAGE, workdir=d / "work")
    out = d / "run.bdf.csv"
    try:
        first = session.run(d / "rests.json", ResetInRest(board), out, board="rp2040-emu",
                            tick_ms=TICK_MS)
        second = session.resume(out, board, recover=True)
    finally:
        board.close()
    return first, second, bdflog.read_log(out), read_truth(board.truth_path), board.resets


def test_reset_mid_run_is_recovered_from_the_flash_journal(reset_run):
    first, second, log, truth, resets = reset_run
    assert first["stop_reason"] == session.BOARD_RESET
    assert first["journal"]["step_no"] == 1 and first["journal"]["cycle"] == 1
    assert resets  # the one pressed mid-run (and the install's, when it installed)
    assert second["stop_reason"] == "end"
    types = log["Step Type"]
    runs = [t for k, t in enumerate(types) if k == 0 or t != types[k - 1]]
    assert runs == ["CC_DCH", "REST", "CC_CHG", "CC_DCH", "REST", "CC_CHG"]
    assert sorted(set(log["Cycle Count / 1"].tolist())) == [1, 2]
    assert np.all(np.diff(log["Test Time / s"]) > 0)
    # The counters carry on across the reset and end at the cell's own totals.
    for column, key in (("Discharging Capacity / Ah", "q_dch_Ah"), ("Charging Capacity / Ah", "q_chg_Ah")):
        assert np.all(np.diff(log[column]) >= 0)
        assert truth[key][-1] > 2e-4
        assert abs(log[column][-1] - truth[key][-1]) < 0.01 * truth[key][-1]


# ---- the estimator on the chip's 32-bit floats against the host twin --------------------------
LTO = runtime.HERE.parents[2] / "models" / "lto-li-coin.json"
EST_TICK_MS = 2000
WITH_MODEL = {"sample": {"name": "emu estimator", "capacity_mAh": 0.35},
              "record": {"time_s": EST_TICK_MS / 1000},  # every tick: the host sees what the filter saw
              "safety": {"max_voltage_V": 3.0, "min_voltage_V": 0.8},
              "method": [{"step": "open_circuit_voltage", "until_time_s": 10},
                         {"step": "constant_current", "rate_C": -1, "until_time_s": 180},
                         {"step": "open_circuit_voltage", "until_time_s": 10},
                         {"step": "constant_current", "rate_C": 1, "until_time_s": 60}]}
# From the top of charge (the board's sim.soc0), where the OCV is steep: the board's filter,
# started at START, and the host's, started at the first record, begin at the same SoC.


@pytest.fixture(scope="module")
def estimator_log(tmp_path_factory):
    from cellbench.emu.board import start_board

    d = tmp_path_factory.mktemp("emuest")
    (d / "p.json").write_text(json.dumps(WITH_MODEL))
    board = start_board(LTO, calibration="ideal", image=IMAGE, workdir=d / "work", seed=2)
    try:
        summary = session.run(d / "p.json", board, d / "run.bdf.csv", board="rp2040-emu",
                              model_path=LTO, tick_ms=EST_TICK_MS)
    finally:
        board.close()
    assert summary["stop_reason"] == "end"
    return d / "run.bdf.csv"


def test_board_soc_in_float32_matches_the_host_twin(estimator_log, tmp_path):
    from cellbench import cli

    est = tmp_path / "est.csv"
    assert cli.main(["estimate", str(estimator_log), "--model", str(LTO), "--float32",
                     "--out", str(est)]) == 0
    log = bdflog.read_log(estimator_log)
    host = np.genfromtxt(est, delimiter=",", names=True)
    t = log["Test Time / s"]
    # Really every tick: none skipped. A tick may come late (a garbage collection on the
    # chip takes ~14 ms, and when it falls depends on when host bytes arrive); dt is the
    # elapsed time, so lateness is no error, only a missing tick is.
    assert t.size > 120 and np.all(np.diff(t) < 1.5 * EST_TICK_MS / 1000)
    soc, std = log["SOC / 1"], log["SOC Std / 1"]
    assert np.ptp(soc) > 0.02  # the SoC really moved
    # The board prints ppm: its float32 filter and the host's agree to a few of them
    # (measured: under 1 ppm over 500 ticks of the smoke protocol).
    assert np.max(np.abs(host["SOC__1"] - soc)) < 1e-5
    assert np.max(np.abs(host["SOC_Std__1"][1:] - std[1:])) < 1e-5


# ---- an open circuit (the cell removed mid-discharge) trips the board's safety -----------------
OPEN_AT_S = 120.0  # plant time (emulated seconds since power-up): a minute into the discharge


@pytest.fixture(scope="module")
def open_run(tmp_path_factory):
    from cellbench.emu.board import start_board

    d = tmp_path_factory.mktemp("emuopen")
    (d / "cell.json").write_text(json.dumps(CELL))
    (d / "fast.json").write_text(json.dumps(FAST))
    board = start_board(d / "cell.json", calibration="ideal", image=IMAGE, workdir=d / "work",
                        faults=f"open@{OPEN_AT_S}")
    out = d / "run.bdf.csv"
    try:
        summary = session.run(d / "fast.json", board, out, board="rp2040-emu", tick_ms=TICK_MS)
    finally:
        board.close()
    relay = int(board.cfg["relay_pin"])
    opened_s = [t / 1e6 for t, pin, level in board.pin_events if pin == relay and level != 1]
    return summary, bdflog.read_log(out), opened_s


def test_open_circuit_trips_within_its_documented_ticks(open_run):
    from cellbench import fw

    safety = fw.module("safety")
    summary, log, opened_s = open_run
    assert "OPEN_CIRCUIT" in summary["stop_reason"]
    flags = log["Fault Flags / 1"].astype(int)
    tripped = np.flatnonzero(flags & safety.OPEN_CIRCUIT)
    assert tripped.size and np.all(flags[:tripped[0]] == 0)
    # The chip's relay pin opens after the cell is gone, within the signature's ticks
    # (docs/link.md) and one tick's phase, in emulated time.
    after = [t for t in opened_s if t > OPEN_AT_S]
    assert after and after[0] <= OPEN_AT_S + (safety.OPEN_TICKS + 1) * TICK_MS / 1000
    # ... and not before it: from START to the fault the relay stayed closed.
    assert not [t for t in opened_s if 25.0 < t < OPEN_AT_S]


# ---- cellbench calibrate --board rp2040-emu: on the emulated chip -----------------------------
# A short plan (the 2 mA range, two voltages; no ADC ramp): three boots of the chip from
# its cached flash and six HISTs of 4096 conversions each. Slow (about a minute of wall
# time): the whole procedure really runs on the emulated chip, which is the point.
CAL_PLAN = {"voltage_V": [1.0, 3.5], "current_A": [-1.0e-3, -0.5e-3, 0.5e-3, 1.0e-3]}


@pytest.fixture(scope="module")
def emu_calibration(tmp_path_factory):
    """(calibration, the kind of board each point ran on) of a short calibration."""
    from cellbench.boards import load_board
    from cellbench.calibrate import calibrate
    from cellbench.calibrate.bench import TruthReference
    from cellbench.commands.calibrate import simulated_bench

    board = load_board("rp2040-emu")
    bench = simulated_bench("rp2040-emu", board, tmp_path_factory.mktemp("emucal"), seed=4, rp2_dir=IMAGE)
    kinds = []
    start = bench.start
    bench.start = lambda *a, **kw: kinds.append(type(b := start(*a, **kw)).__name__) or b
    try:
        cal = calibrate(bench, TruthReference(bench), board, CAL_PLAN, adc="none", say=lambda *_: None)
    finally:
        bench.close()
    return cal, kinds


def test_calibrate_runs_on_the_emulated_chip(emu_calibration):
    cal, kinds = emu_calibration
    assert kinds == ["EmuBoard"] * 3  # the current load, then one reference per voltage
    assert cal["board"] == "rp2040-emu"
    # The emulated board's plant has no sense-path gain or offset (only ADC noise and the
    # E11 non-linearity, left uncorrected here): against the cell's truth the fit is nominal.
    assert cal["voltage"]["gain"] == pytest.approx(1.0, abs=2e-3)
    assert abs(cal["voltage"]["offset_V"]) < 3e-3
    assert list(cal["current"]) == ["2mA"]
    assert cal["current"]["2mA"]["gain"] == pytest.approx(1.0, abs=3e-3)
    assert abs(cal["current"]["2mA"]["offset_A"]) < 2e-3 * 2e-3


def test_calibrate_without_an_image_refuses_instead_of_simulating(tmp_path, capsys):
    from cellbench import cli

    out = tmp_path / "cal.json"
    code = cli.main(["calibrate", "--board", "rp2040-emu", "--rp2-dir", str(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "emulated RP2040" in err[0] and "rp2_dir" in err[0]
    assert not out.exists()


# ---- cellbench demo --board rp2040-emu: the demo's path on the emulated chip ------------------
# The paper's protocol is ~140 h of cell time (tens of minutes on the emulated chip), so the
# test runs the demo command with one 5C cycle of it instead: the same cell, tick, session
# and analysis, against the unix-port simulator's figures for the same protocol.
SHORT_DEMO = {"sample": {"name": "demo, one 5C cycle", "capacity_mAh": 0.35},
              "record": {"time_s": 30, "voltage_V": 0.01, "current_mA": 0.01},
              "safety": {"max_voltage_V": 3.0, "min_voltage_V": 0.8},
              "method": [{"step": "tag", "tag": "rate-0-5C"},
                         {"step": "constant_current", "rate_C": -5, "until_voltage_V": 1.0,
                          "until_time_s": 1440},
                         {"step": "open_circuit_voltage", "until_time_s": 60},
                         {"step": "loop", "loop_to": "rate-0-5C", "cycle_count": 1}]}


def _demo(monkeypatch, capsys, protocol, out, *extra):
    from cellbench import cli
    from cellbench.commands import demo

    monkeypatch.setattr(demo, "PROTOCOL", protocol)
    assert cli.main(["demo", "--out", str(out), "--quiet", *extra]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(k for k, line in enumerate(lines) if line.startswith("rate"))
    return lines[head + 1].split(), json.loads((out / "lto-rate.bdf.csv.json").read_text())


def test_demo_runs_on_the_emulated_chip(tmp_path, monkeypatch, capsys):
    protocol = tmp_path / "short.json"
    protocol.write_text(json.dumps(SHORT_DEMO))
    emu_row, emu_meta = _demo(monkeypatch, capsys, protocol, tmp_path / "emu", "--board", "rp2040-emu",
                              "--rp2-dir", str(IMAGE))
    sim_row, sim_meta = _demo(monkeypatch, capsys, protocol, tmp_path / "sim")
    assert json.dumps(emu_meta).count("rp2040-emu") and not json.dumps(sim_meta).count("rp2040-emu")
    # The chip applied the committed calibration (boards/calibration/rp2040-emu.json, installed
    # as `cellbench flash` installs it): the id it reports is that file's.
    committed = json.loads((runtime.HERE.parents[2] / "boards" / "calibration" / "rp2040-emu.json").read_text())
    assert emu_meta["id_reply"]["calibration"] == committed["id"]
    assert emu_meta["calibration"]["file_matches"] and emu_meta["calibration"]["file"] == committed
    # The same cell through the same firmware: the chip's 32-bit floats, its ADC codes and
    # its PWM levels give the simulator's rate and mAh/g to within a percent (each board's
    # plant has its own source error: boards/*.json sim.source_error).
    assert float(emu_row[0][:-1]) == pytest.approx(5.0, rel=0.01)
    assert float(sim_row[0][:-1]) == pytest.approx(5.0, rel=0.01)
    assert float(emu_row[2]) == pytest.approx(float(sim_row[2]), rel=0.01)
    assert float(emu_row[2]) > 10.0


def test_demo_without_an_image_refuses(tmp_path, capsys):
    from cellbench import cli

    out = tmp_path / "demo"
    code = cli.main(["demo", "--board", "rp2040-emu", "--rp2-dir", str(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "emulated RP2040" in err[0]
    assert not out.exists()


# ---- the watchdog at the bare REPL: it resets the chip, and emulated time goes on ------------
WDT_MS = 1000


def test_an_unfed_watchdog_resets_the_chip_and_time_goes_on(tmp_path):
    """machine.WDT armed at the bare REPL (no firmware installed) and never fed: the chip
    must reset by its watchdog after the timeout in emulated time and boot again, as a
    real RP2040 does (rp2040js 1.4.1 alone hangs there: driver.mjs)."""
    from cellbench.boards import load_board
    from cellbench.emu import install
    from cellbench.emu.board import EmuBoard

    (tmp_path / "work").mkdir()
    board = EmuBoard(load_board("rp2040-emu"), CELL, image=IMAGE, workdir=tmp_path / "work")
    try:
        install.enter_raw_repl(board)
        armed = install.exec_raw(board, f"import machine, utime\nw = machine.WDT(timeout={WDT_MS})\n"
                                        "print(utime.ticks_us())")
        board.wait_reset(1)
        assert board.reset_reasons == [1]  # the watchdog's timer, not a forced reset
        # The watchdog counts from its arming, and the chip's clock (us since power-up, the
        # emulator's from 0) was read right after it.
        assert (WDT_MS - 50) * 1e3 < board.resets[0] - int(armed) <= WDT_MS * 1e3
        # It boots again on the same chip: the rp2 port sees a watchdog reset, at a later
        # emulated time (the clock went on through the reset), and runs commands.
        install.enter_raw_repl(board)
        again = install.exec_raw(board, "import machine, utime\n"
                                        "print(machine.reset_cause() == machine.WDT_RESET, utime.ticks_ms())")
        assert again.split()[0] == "True" and board.t_us > board.resets[0]
        assert board.reset_reasons == [1]  # no watchdog armed any more
    finally:
        board.close()


# ---- make soak: its verdict and its section of BENCHMARKS.md (no chip needed) -----------------
def _points(frees):
    return [{"k": 600 * n, "t_s": 600 * n, "free": f, "state": "RUNNING", "cap": 1500, "soc_ppm": 0,
             "late": 0, "busy_max_us": 20000} for n, f in enumerate(frees)]


def test_soak_verdict_calls_a_leak_a_leak():
    from cellbench.emu.soak import GROWTH_LIMIT_B, verdict

    steady = verdict(_points([60000, 59000, 59100, 58900, 59050]), None, 2400 / 3600, 1000, 100.0, 2400.0)
    assert steady["flat"] and steady["ok"]
    leak = verdict(_points([60000, 59000, 58600, 58200, 59000 - GROWTH_LIMIT_B - 1]), None,
                   2400 / 3600, 1000, 100.0, 2400.0)
    assert not leak["flat"]
    short = verdict(_points([60000, 59000, 59000]), None, 2400 / 3600, 1000, 100.0, 1200.0, stopped=True)
    assert short["stopped"] and not short["ok"]


def test_soak_section_replaces_its_own_and_bench_keeps_it(tmp_path):
    from cellbench.bench import kept_sections
    from cellbench.emu.soak import SECTION, write_section

    md = tmp_path / "B.md"
    md.write_text("# Benchmarks\n\n## emu\n\nrows\n\n## sim\n\nmore\n")
    write_section(md, f"## {SECTION}\n\nfirst\n")
    write_section(md, f"## {SECTION}\n\nsecond\n")
    text = md.read_text()
    assert text.count(f"## {SECTION}") == 1 and "second" in text and "first" not in text
    assert "## emu\n\nrows" in text and "## sim\n\nmore" in text
    kept = kept_sections(md, {"emu", "sim"})
    assert kept.strip() == f"## {SECTION}\n\nsecond"
