"""The boards behind the channels: simulated boards the lab starts, RP2040 boards it finds.

A simulated channel's board is a detached simulated board (cellbench.sim.detached) in
``<data>/boards/<channel>/``: it runs in its own session, so it outlives the service as
a real board on USB does, and a restarted service reconnects to it. It is started with
``reboot`` (a killed board process boots again and reports its interrupted run, as a
reset board does) and paced at the lab's ``sim_speed`` (CELLBENCH_SIM_SPEED: virtual
seconds per real second; 1 is real time).

A real board is found by its USB identity: vendor 0x2E8A (Raspberry Pi; MicroPython on an
RP2040 enumerates as 2E8A:0005) and its USB serial number, which MicroPython sets from
the RP2040's unique flash id, so a channel keeps its name whichever /dev/ttyACM* the
board gets. Its board file id comes from its own ID reply.
"""

from ..boards import load_board
from ..commands.run import calibration_file
from ..errors import InputError
from ..link import Link
from ..sim import detached
from ..transport import SerialTransport

RP2040_VID = 0x2E8A


def usb_boards(comports=None):
    """RP2040 boards on USB serial ports: [{"id", "port", "usb_serial"}], by serial number.

    ``comports``: the port list to look at (default: pyserial's ``comports()``).
    """
    if comports is None:
        from serial.tools import list_ports

        comports = list_ports.comports()
    found = []
    for p in comports:
        if getattr(p, "vid", None) == RP2040_VID and getattr(p, "serial_number", None):
            found.append({"id": f"usb-{p.serial_number}", "port": p.device,
                          "usb_serial": p.serial_number})
    return sorted(found, key=lambda b: b["id"])


def board_id_of(port):
    """The board file id a real board reports (ID), over its serial port."""
    transport = SerialTransport(port)
    try:
        ident = Link(transport).command("ID")
    finally:
        transport.close()
    board = ident.get("board") if isinstance(ident, dict) else None
    if not board:
        raise InputError(f"port: the board on {port} did not say which it is")
    return board


class Boards:
    """Starts, finds and opens the channels' boards of ``lab`` (its layout, db, sim_speed)."""

    def __init__(self, lab):
        self.lab = lab

    def board_dir(self, row):
        return self.lab.layout.board_dir(row["id"])

    def ensure(self, row):
        """Make the channel's board reachable: start a simulated one that is not running;
        ask a real one that has not said which board it is for its id."""
        if row["kind"] == "sim":
            d = self.board_dir(row)
            if not detached.alive(d):
                speed = self.lab.sim_speed
                detached.spawn(row["cell_file"], d, board=row["board"] or "sim", seed=row["seed"],
                               calibration=calibration_file(row["board"] or "sim"), reboot=True,
                               env={"CELLBENCH_SIM_SPEED": repr(float(speed))})
            return
        if not row["board"]:
            board = board_id_of(row["port"])
            load_board(board)  # a board this host has no board file for cannot run jobs
            self.lab.db.update_channel(row["id"], board=board)

    def open(self, row):
        """A transport to the channel's board (a new connection each call)."""
        if row["kind"] == "sim":
            return detached.DetachedTransport(self.board_dir(row))
        return SerialTransport(row["port"])

    def sim_meta(self, row):
        """Sidecar entries naming a simulated board's cell and where its truth goes."""
        if row["kind"] != "sim":
            return {}
        info = detached.info(self.board_dir(row))
        return {"sim": {"cell_file": row["cell_file"], "seed": row["seed"],
                        "truth_path": info.get("truth_path"), "speed": self.lab.sim_speed}}
