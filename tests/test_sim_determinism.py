"""The simulated board in lockstep repeats a run bit for bit (cellbench.sim.start_board
lockstep=True, sim/mpy/select.py and time.py): the same protocol, cell and seed give the
same log and the same plant truth, however differently the host happens to be scheduled.

The expectation is independent of the code under test: two runs of a deterministic
system are identical. The second host is made slow and irregular on purpose (it sleeps
before reading some lines), so its ACKs and re-send probes reach the board at other wall
times than the first host's; the only column allowed to differ is the host's wall clock.
"""

import json
import random
import time

import pytest

from cellbench import bdflog, session
from cellbench.paths import MODELS
from cellbench.sim import start_board

LTO = MODELS / "lto-li-coin.json"
WALL_COLUMNS = ("Unix Time / s",)  # the host's clock at START plus test time: not the board's
# A short LTO/Li protocol with the estimator on: 1C out and back with the rests the
# ageing protocol has (step edges for the resistance state), about 10k ticks.
PROTOCOL = {
    "sample": {"name": "determinism", "capacity_mAh": 0.35},
    "record": {"time_s": 20, "voltage_V": 0.05, "current_mA": 0.05},
    "safety": {"max_voltage_V": 3.0, "min_voltage_V": 0.8, "max_current_mA": 1.0,
               "min_current_mA": -1.0, "delay_s": 5},
    "method": [
        {"step": "constant_current", "rate_C": -1, "until_voltage_V": 1.0, "until_time_s": 7200},
        {"step": "open_circuit_voltage", "until_time_s": 4},
        {"step": "open_circuit_voltage", "until_time_s": 60},
        {"step": "constant_current", "rate_C": 1, "until_voltage_V": 2.5, "until_time_s": 7200},
        {"step": "open_circuit_voltage", "until_time_s": 60},
    ],
}


class Jittery:
    """A transport that now and then sleeps before reading (a busy host): the same lines,
    read at other times."""

    def __init__(self, board, seed):
        self.board = board
        self.rng = random.Random(seed)

    def write(self, data):
        self.board.write(data)

    def readline(self, timeout_s=None):
        if self.rng.random() < 0.05:
            time.sleep(self.rng.uniform(0.0, 0.02))
        return self.board.readline(timeout_s=timeout_s)

    @property
    def eof(self):
        return self.board.eof


def _run(d, jitter):
    protocol = d / "p.json"
    protocol.write_text(json.dumps(PROTOCOL))
    board = start_board(str(LTO), board="sim", workdir=d / "work", seed=5, lockstep=True)
    try:
        summary = session.run(protocol, Jittery(board, jitter) if jitter is not None else board,
                              d / "run.bdf.csv", board="sim", mass_mg=2.0, tick_ms=1000,
                              model_path=LTO)
    finally:
        board.close()
    assert summary["stop_reason"] == "end"
    return bdflog.read_log(d / "run.bdf.csv"), (d / "work" / "truth.csv").read_bytes()


@pytest.mark.hil
def test_the_same_run_twice_gives_the_same_log(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    log_a, truth_a = _run(tmp_path / "a", None)
    log_b, truth_b = _run(tmp_path / "b", 7)
    assert sorted(log_a) == sorted(log_b)
    assert len(log_a["Test Time / s"]) > 300
    assert "SOC / 1" in log_a and bdflog.AGEING_COLUMNS[2][0] in log_a  # the estimator ran
    for col in log_a:
        if col not in WALL_COLUMNS:
            assert log_a[col].tobytes() == log_b[col].tobytes(), col
    assert truth_a == truth_b
