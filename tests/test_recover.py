"""Board reset mid-run (issue 6), end to end through the CLI: a detached simulated board
whose MicroPython process is killed with SIGKILL (a power cut) boots again on the same
flash, reports the interrupted run from its journal, and continues it only on the user's
word (`cellbench run --resume LOG --board-dir DIR --recover`). The final log has every
cycle once, monotonic time and counters, the seq jump recorded as a gap event, the
plant's own charge totals, and validates as BDF.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import bdf
from cellbench import bdflog
from cellbench.paths import MODELS, ROOT
from polling import WAIT_S, wait_for

needs_sim = pytest.mark.hil  # the firmware on the simulated board (tests/conftest.py)

CELL = MODELS / "lto-li-coin.json"
CYCLES = 3
REST_S = 300
PROTOCOL = {
    "sample": {"name": "LTO/Li short cycling with long rests", "capacity_mAh": 0.35},
    "record": {"time_s": 10, "voltage_V": 0.01, "current_mA": 0.01},
    "safety": {"max_voltage_V": 3.0, "min_voltage_V": 0.8, "max_current_mA": 1.0,
               "min_current_mA": -1.0, "delay_s": 5},
    "method": [{"step": "tag", "tag": "cycle"},
               {"step": "constant_current", "rate_C": -1, "until_voltage_V": 1.0,
                "until_time_s": 7200},
               {"step": "open_circuit_voltage", "until_time_s": REST_S},
               {"step": "constant_current", "rate_C": 1, "until_voltage_V": 2.5,
                "until_time_s": 7200},
               {"step": "open_circuit_voltage", "until_time_s": REST_S},
               {"step": "loop", "loop_to": "cycle", "cycle_count": CYCLES}],
}


def cellbench(*argv):
    return subprocess.run([sys.executable, "-m", "cellbench.cli", *map(str, argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=WAIT_S * 2)




def in_second_rest(log):
    """The last logged row is 20+ ticks into the rest after cycle 2's discharge: the
    journal saved that rest's start (at most 10 s after it), and a rest moves no charge."""
    try:
        row = bdflog.last_row(log)
    except (OSError, Exception):
        return None
    if not row or not row.get("Cycle Count / 1"):
        return None
    return (row["Cycle Count / 1"] == "2" and row["Step Type"] == "REST"
            and int(row["Step Index / 1"]) >= 20)


def ideal_calibration_file(tmp_path):
    from cellbench.sim import ideal_calibration

    path = tmp_path / "cal.json"
    path.write_text(json.dumps(ideal_calibration("sim")))
    return path


@pytest.fixture
def board_dir(tmp_path):
    """A detached simulated board (ideal calibration, so counters match the plant to 0.1 %)
    that boots again when its process is killed."""
    from cellbench.sim import detached

    d = tmp_path / "board"
    detached.spawn(CELL, d, board="sim", calibration=ideal_calibration_file(tmp_path),
                   reboot=True)
    yield d
    detached.shutdown(d)


@needs_sim
def test_board_killed_mid_run_recovers_on_the_users_word(tmp_path, board_dir):
    from cellbench.sim import detached

    protocol = tmp_path / "cycles.json"
    protocol.write_text(json.dumps(PROTOCOL))
    log = tmp_path / "run.bdf.csv"
    host = subprocess.Popen([sys.executable, "-m", "cellbench.cli", "run", str(protocol),
                             "--board-dir", str(board_dir), "--board", "sim", "--out", str(log),
                             "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: in_second_rest(log) or host.poll() is not None, "cycle 2's rest")
        assert host.poll() is None, host.communicate()
        first_pid = detached.info(board_dir)["board_pid"]
        os.kill(first_pid, signal.SIGKILL)  # the board, not the host: a power cut
        out, err = host.communicate(timeout=WAIT_S)
    finally:
        if host.poll() is None:
            host.kill()
            host.communicate()
    # The host saw the reset, left the run to the user and said what to run.
    assert host.returncode == 1, err
    assert "--recover" in err and str(board_dir) in err
    meta = bdflog.read_sidecar(log)
    assert meta["stop_reason"] == "board reset"
    interrupted = [e for e in meta["events"] if e["kind"] == "INTERRUPTED"]
    assert len(interrupted) == 1
    journal = interrupted[0]["data"]
    rel = detached.info(board_dir)
    assert rel["reboots"] == 1 and rel["board_pid"] != first_pid
    before = bdflog.read_log(log)

    # Without the user's word: one line saying what the journal holds, nothing sent.
    refused = cellbench("run", "--resume", log, "--board-dir", board_dir, "--quiet")
    assert refused.returncode == 2
    message = refused.stderr.strip().splitlines()
    assert len(message) == 1 and "--recover" in message[0] and "cycle 2" in message[0]
    assert len(bdflog.read_log(log)["Test Time / s"]) == len(before["Test Time / s"])

    done = cellbench("run", "--resume", log, "--board-dir", board_dir, "--recover", "--quiet")
    assert done.returncode == 0, done.stderr
    check_recovered_log(log, board_dir, journal, before)


def check_recovered_log(log, board_dir, journal, before):
    from cellbench.sim import detached, read_truth

    data = bdflog.read_log(log)
    meta = bdflog.read_sidecar(log)
    n0 = len(before["Test Time / s"])
    assert meta["stop_reason"] == "end"
    kinds = [e["kind"] for e in meta["events"] if "seq" in e]
    assert kinds[0] == "START" and kinds[-1] == "END"
    assert kinds.count("INTERRUPTED") == 1 and kinds.count("RECOVER") == 1
    # The seq jump is a gap event, not lost records: every other seq exactly once.
    gap = [e for e in meta["events"] if e["kind"] == "seq_gap"]
    assert len(gap) == 1 and gap[0]["count"] > 0
    skipped = set(range(gap[0]["first"], gap[0]["last"] + 1))
    rec_seq = data["Record Seq / 1"].tolist()
    ev_seq = [e["seq"] for e in meta["events"] if "seq" in e]
    assert np.all(np.diff(rec_seq) > 0)
    assert rec_seq[n0] - rec_seq[n0 - 1] > gap[0]["count"]
    expected = set(range(meta["start_seq"], max(rec_seq + ev_seq) + 1)) - skipped
    assert sorted(rec_seq + ev_seq) == sorted(expected)
    assert not meta["link"].get("lost")
    # Time and counters go on; the interrupted cycle is neither lost nor counted twice.
    assert np.all(np.diff(data["Test Time / s"]) > 0)
    cycles = data["Cycle Count / 1"]
    assert cycles[0] == 1 and cycles[-1] == CYCLES and set(np.diff(cycles)) <= {0, 1}
    assert cycles[n0] == 2 == journal["cycle"]
    assert set(np.diff(data["Step Count / 1"])) <= {0, 1}
    for col in ("Charging Capacity / Ah", "Discharging Capacity / Ah",
                "Charging Energy / Wh", "Discharging Energy / Wh"):
        assert np.all(np.diff(data[col]) >= 0), col
    # The plant's own totals. The journal was saved at the rest's start and a rest moves
    # no charge, so nothing is missing from the counters (docs/link.md: the charge moved
    # between the last save and the reset is lost; here that is the rest's none).
    q_log_end = before["Discharging Capacity / Ah"][-1]
    assert journal["q_dch_nAh"] * 1e-9 == pytest.approx(q_log_end, rel=1e-4)
    truth = read_truth(detached.info(board_dir)["truth_path"])
    for col, key in (("Charging Capacity / Ah", "q_chg_Ah"),
                     ("Discharging Capacity / Ah", "q_dch_Ah")):
        assert data[col][-1] == pytest.approx(truth[key][-1] - truth[key][0], rel=1e-3), col
    report = bdf.validate(pd.read_csv(log), raise_on_error=True)
    assert report["ok"] and report["time_stats"]["monotonic"]
    assert meta["rows"] == len(data["Test Time / s"])
