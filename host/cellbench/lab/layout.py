"""Where the lab keeps things: one data directory, a predictable layout.

::

    <data>/lab.sqlite                        the lab's state (cellbench.lab.db)
    <data>/token                             the API token when listening beyond localhost
    <data>/boards/<channel>/                 a simulated board (relay.json, sim/flash, truth)
    <data>/jobs/<job>/protocol.json          a job's inputs as submitted (and model.json)
    <data>/logs/<cell>/<YYYY-MM-DD>/<cell>_job<job>_<protocol>.bdf.csv   (+ .bdf.csv.json)

The date is the UTC day the job started; cell and protocol names are reduced to
``[A-Za-z0-9._-]`` so that any name makes a valid, shell-friendly path.
"""

import re
import time
from pathlib import Path

DB_NAME = "lab.sqlite"
TOKEN_NAME = "token"


def safe_name(text, default="unnamed"):
    """``text`` with every run of characters outside [A-Za-z0-9._-] replaced by '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")
    return name[:80] or default


class Layout:
    """Paths under one data directory (created on first use)."""

    def __init__(self, root):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def db(self):
        return self.root / DB_NAME

    @property
    def token(self):
        return self.root / TOKEN_NAME

    def board_dir(self, channel_id):
        return self.root / "boards" / safe_name(channel_id)

    def job_dir(self, job_id):
        d = self.root / "jobs" / str(int(job_id))
        d.mkdir(parents=True, exist_ok=True)
        return d

    def log_path(self, cell_name, job_id, protocol_name, unix_s=None):
        """The log of a job started at ``unix_s`` (now if None); its folder is created."""
        day = time.strftime("%Y-%m-%d", time.gmtime(time.time() if unix_s is None else unix_s))
        cell = safe_name(cell_name)
        d = self.root / "logs" / cell / day
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{cell}_job{int(job_id)}_{safe_name(protocol_name, 'protocol')}.bdf.csv"
