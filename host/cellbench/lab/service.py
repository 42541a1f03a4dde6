"""The lab: every channel of this host, their queues, the database and the live feed.

:class:`Lab` is what the HTTP API (cellbench.lab.api) drives: it adds simulated channels,
finds RP2040 boards on USB, queues jobs (checked by cellbench.lab.jobs first, so a bad
request changes nothing), passes pause/resume/stop to the channel that runs the job,
and starts one thread per channel (cellbench.lab.channel). Started on a data directory
that a killed service left, it re-attaches: every channel thread first continues the job
the database says was running, from the board's kept records.
"""

import threading
import time
from pathlib import Path

from .. import fw
from ..boards import load_board
from ..errors import InputError
from ..model import load_model
from ..paths import MODELS
from .boards import Boards, usb_boards
from .channel import Channel, public_job
from .db import Database
from .hub import Hub
from .jobs import check_request, store
from .layout import Layout


# The firmware modules the host's link, session and protocol checks load (cellbench.fw).
FIRMWARE_USED = ("frame", "steps", "link")
USB_SCAN_S = 5.0  # how often the lab looks for RP2040 boards plugged in meanwhile


def cell_path(cell, field="cell"):
    """The model file of a simulated cell named ``cell`` (a models/ name or a path), checked."""
    if not isinstance(cell, str) or not cell:
        raise InputError(f"{field}: must name a model file (models/<name>.json or a path)")
    path = Path(cell) if cell.endswith(".json") else MODELS / f"{cell}.json"
    if not path.is_file():
        raise InputError(f"{field}: no model file {path}")
    load_model(str(path))  # a plant the simulator cannot load would fail at boot
    return path


class NotFound(Exception):
    """No such channel or job (the API's 404)."""


class Conflict(Exception):
    """The request is valid but not now (the API's 409): a job that is not running, ..."""


class Lab:
    """``data_dir``: the lab's data directory; ``sim_speed``: virtual seconds per real
    second of the simulated boards it starts; ``usb``: look for RP2040 boards on USB."""

    def __init__(self, data_dir, sim_speed=1.0, usb=True):
        self.layout = Layout(data_dir)
        self.db = Database(self.layout.db)
        self.hub = Hub()
        self.boards = Boards(self)
        self.sim_speed = float(sim_speed)
        self.usb = usb
        self.stopping = threading.Event()
        self.channels = {}
        self.started_unix_s = time.time()
        self._lock = threading.Lock()

    def start(self):
        """Find USB boards, then start every channel's thread (re-attaching running jobs)."""
        for name in FIRMWARE_USED:  # loaded once here: cellbench.fw's first load is not thread-safe
            fw.module(name)
        running = [j for j in self.db.jobs() if j["state"] in ("running", "starting", "paused")]
        self.db.add_event("lab_start", f"lab started on {self.layout.root}; "
                          f"{len(running)} job(s) to re-attach or waiting paused")
        if self.usb:
            self.scan_usb()
            threading.Thread(target=self._watch_usb, name="usb-scan", daemon=True).start()
        for row in self.db.channels():
            self._start_channel(row)

    def _watch_usb(self):
        """Look for RP2040 boards plugged in (or moved to another port) while the lab runs."""
        while not self.stopping.wait(USB_SCAN_S):
            try:
                for cid in self.scan_usb():
                    self._start_channel(self.db.channel(cid))
            except OSError:  # the port list could not be read this time
                pass

    def _start_channel(self, row):
        ch = Channel(self, row)
        self.channels[row["id"]] = ch
        ch.start()
        return ch

    def scan_usb(self, comports=None):
        """Add a channel for every RP2040 board on USB not yet known; note new ports."""
        added = []
        for found in usb_boards(comports):
            row = self.db.channel(found["id"])
            if row is None:
                self.db.add_channel(found["id"], "usb", port=found["port"], usb_serial=found["usb_serial"])
                added.append(found["id"])
            elif row["port"] != found["port"]:
                self.db.update_channel(found["id"], port=found["port"])
        return added

    def close(self):
        self.stopping.set()
        for ch in self.channels.values():
            ch.wake()

    # ------------------------------------------------------------ channels

    def add_sim_channel(self, request):
        """A new simulated channel from {"cell": model name or path, "seed", "board"}."""
        if not isinstance(request, dict):
            raise InputError("body: must be a JSON object")
        for key in request:
            if key not in ("cell", "seed", "board"):
                raise InputError(f"{key}: unknown field (known: cell, seed, board)")
        path = cell_path(request.get("cell"))
        seed = request.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed: must be an integer >= 0, got {seed!r}")
        board = request.get("board", "sim")
        if not isinstance(board, str):
            raise InputError("board: must be a board name")
        if load_board(board).get("sim") is None:
            raise InputError(f"board: {board} is not a simulated board (no sim section)")
        with self._lock:
            n = 1 + sum(1 for r in self.db.channels() if r["kind"] == "sim")
            cid = f"sim-{n}"
            while self.db.channel(cid) is not None:
                n += 1
                cid = f"sim-{n}"
            self.db.add_channel(cid, "sim", board=board, cell_file=str(path.resolve()), seed=seed)
        self.db.add_event("channel_add", f"simulated channel {cid} added ({path.name})", cid)
        return self._start_channel(self.db.channel(cid))

    def channel(self, cid):
        ch = self.channels.get(cid)
        if ch is None:
            raise NotFound(f"channel: no channel {cid!r}")
        return ch

    def release(self, cid):
        """Let a held channel (after a fault or a stop) start its queued jobs again."""
        ch = self.channel(cid)
        self.db.update_channel(cid, held=0)
        ch.event("release", "queue released: queued jobs may start")
        ch.wake()
        ch.publish_state()

    # ------------------------------------------------------------ jobs

    def queue_job(self, cid, request):
        """Check and queue a job on channel ``cid``; its public row."""
        ch = self.channel(cid)
        board = ch.row["board"]
        if not board:
            raise Conflict(f"channel: {cid} has not said which board it is yet")
        checked = check_request(request, load_board(board))
        job_id = self.db.add_job(cid, checked["cell_name"], checked["mass_mg"],
                                 checked["protocol_name"], "", None, checked["tick_ms"])
        protocol_path, model_path = store(self.layout.job_dir(job_id), checked)
        self.db.set_job(job_id, protocol_path=str(protocol_path),
                        model_path=str(model_path) if model_path else None)
        ch.event("job_queue", f"job {job_id} queued: {checked['protocol_name']} on "
                 f"{checked['cell_name']}", job_id)
        ch.wake()
        ch.publish_state()
        return public_job(self.db.job(job_id))

    def job(self, job_id):
        job = self.db.job(job_id)
        if job is None:
            raise NotFound(f"job: no job {job_id}")
        return job

    def act(self, job_id, action):
        """pause / resume / stop a job; Conflict when its state does not allow it."""
        job = self.job(job_id)
        why = self.channel(job["channel_id"]).request(action, job)
        if why:
            raise Conflict(f"state: {why}")
        return public_job(self.db.job(job_id))

    # ------------------------------------------------------------ views

    def overview(self):
        return {"started_unix_s": self.started_unix_s, "data_dir": str(self.layout.root),
                "sim_speed": self.sim_speed, "db_version": self.db.version,
                "channels": [ch.state() for ch in self.channels.values()]}
