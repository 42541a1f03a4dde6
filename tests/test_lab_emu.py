"""A lab channel on the emulated RP2040: the lab finds it as an RP2040 on USB and runs a job.

The lab's USB channels are real boards on serial ports (cellbench.lab.boards.usb_boards:
the Raspberry Pi vendor id and a serial number). Here the port is a pseudo-terminal whose
other end is the emulated chip's USB CDC (cellbench.emu.board.EmuBoard), so the lab talks
to the official rp2 image through pyserial exactly as to a board on /dev/ttyACM0: it asks
the board's id, queues a job, streams the records into its log. Nothing of the lab is
replaced; the expectations are the cell's truth (the charge that really flowed) and the
firmware's step structure.

Skipped like tests/test_emu.py without an rp2 image ($CELLBENCH_RP2_DIR).
"""

import json
import os
import threading
import tty
from types import SimpleNamespace

import numpy as np
import pytest

from cellbench import bdflog
from cellbench.emu import runtime
from cellbench.sim import read_truth
from polling import wait_for

IMAGE = runtime.image_dir()
pytestmark = pytest.mark.skipif(
    IMAGE is None, reason=f"emu: no rp2 image given (set {runtime.IMAGE_ENV} to the directory "
                          "of the MicroPython RPI_PICO firmware.bin and bootrom_b1.bin)")

from cells import CELL  # a small LTO-like half cell, 0.35 mAh
RATE_C = 10
PROTOCOL = {"sample": {"name": "lab on the emulated chip", "capacity_mAh": 0.35},
            "record": {"time_s": 20, "voltage_V": 0.01},
            "safety": {"max_voltage_V": 2.7, "min_voltage_V": 0.8},
            "method": [{"step": "open_circuit_voltage", "until_time_s": 20},
                       {"step": "constant_current", "rate_C": -RATE_C, "until_voltage_V": 1.0,
                        "until_time_s": 900},
                       {"step": "constant_current", "rate_C": RATE_C, "until_voltage_V": 2.5,
                        "until_time_s": 900}]}
FINAL = ("done", "fault", "stopped", "failed", "cancelled", "interrupted")  # interrupted: a link error
SERIAL = "E0000000000000A1"  # the USB serial number the lab files the channel under


class PtySerial:
    """The emulated board's serial port as a pseudo-terminal: ``port`` is the path a serial
    client opens; two threads copy bytes both ways."""

    def __init__(self, board):
        self.board = board
        self.master, slave = os.openpty()
        tty.setraw(slave)  # bytes through unchanged: no echo, no line discipline
        self.port = os.ttyname(slave)
        self._slave = slave  # held open: the port stays up between the lab's connections
        self.running = True
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._to_host, self._to_board)]
        for t in self._threads:
            t.start()

    def _to_host(self):
        while self.running:
            try:
                data = self.board.read_until(b"\n", 0.2)
            except TimeoutError:
                continue
            except EOFError:
                return
            try:
                os.write(self.master, data)
            except OSError:  # closed by close(): the test is over
                return

    def _to_board(self):
        while self.running:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            if data:
                self.board.write(data)

    def close(self):
        self.running = False
        for fd in (self.master, self._slave):
            os.close(fd)


def test_a_lab_runs_a_job_on_the_emulated_chip(tmp_path, monkeypatch):
    from cellbench.boards import calibration_for
    from cellbench.commands.run import calibration_file
    from cellbench.emu.board import EmuBoard, start_board
    from cellbench.lab.boards import RP2040_VID
    from cellbench.lab.service import Lab
    from cellbench.transport import SerialTransport

    # The board behind this serial port is the emulated chip, several times slower than a
    # real one on a loaded machine (START makes the ring: seconds of wall time): the link
    # waits for its replies as long as it waits for an EmuBoard's.
    monkeypatch.setattr(SerialTransport, "reply_timeout_s", EmuBoard.reply_timeout_s, raising=False)

    (tmp_path / "cell.json").write_text(json.dumps(CELL))
    board = start_board(tmp_path / "cell.json", calibration=calibration_file("rp2040-emu"), image=IMAGE,
                        workdir=tmp_path / "work")
    port = PtySerial(board)
    lab = Lab(tmp_path / "lab", usb=False)
    try:
        found = SimpleNamespace(vid=RP2040_VID, serial_number=SERIAL, device=port.port)
        assert lab.scan_usb([found]) == [f"usb-{SERIAL}"]
        lab.start()
        cid = f"usb-{SERIAL}"
        # The channel thread asks the board which it is (ID over the port).
        wait_for(lambda: lab.db.channel(cid)["board"], "the lab to learn the board's id",
                 until=lambda b: b == "rp2040-emu")
        job = lab.queue_job(cid, {"protocol": PROTOCOL, "cell_name": "emu cell", "tick_ms": 2000})
        done = wait_for(lambda: lab.job(job["id"]), "the job on the emulated chip to end",
                        until=lambda j: j["state"] in FINAL, timeout_s=900)
    finally:
        lab.close()
        port.close()
        board.close()
    assert done["state"] == "done", {k: done.get(k) for k in ("state", "stop_reason") if k in done}
    log = bdflog.read_log(done["log_path"])
    meta = json.loads(bdflog.sidecar_path(done["log_path"]).read_text())
    # The board the lab logged is the emulated one, with its committed calibration in force.
    assert meta["board"]["id"] == "rp2040-emu"
    assert meta["calibration"]["id"] == calibration_for("rp2040-emu")["id"]
    types = log["Step Type"]
    runs = [t for k, t in enumerate(types) if k == 0 or t != types[k - 1]]
    assert runs == ["REST", "CC_DCH", "CC_CHG"]
    np.testing.assert_allclose(log["Current / A"][types == "CC_DCH"], -RATE_C * 3.5e-4, rtol=0.02)
    # The charge the log counted is the charge that flowed in the cell (emulated time).
    truth = read_truth(board.truth_path)
    for column, key in (("Discharging Capacity / Ah", "q_dch_Ah"), ("Charging Capacity / Ah", "q_chg_Ah")):
        assert truth[key][-1] > 2e-4
        assert log[column][-1] == pytest.approx(truth[key][-1], rel=0.01)
