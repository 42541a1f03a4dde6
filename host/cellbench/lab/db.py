"""The lab's own state in SQLite: channels, jobs (which log belongs to which cell), events.

One file, ``<data>/lab.sqlite``, opened by one service at a time. The schema is built by
numbered migrations (MIGRATIONS, applied in order inside a transaction; the file's
``PRAGMA user_version`` says how many ran), so a data directory written by an older
cellbench opens in a newer one. WAL journaling: a service killed with SIGKILL leaves the
database as of its last committed statement.

Job states (``JOB_STATES``): queued -> starting -> running <-> paused -> done | fault |
stopped | failed; ``interrupted`` is a run whose board was reset (resumable with the
journal); ``cancelled`` a queued job removed before it started. Times are unix seconds.
"""

import json
import sqlite3
import threading
import time

JOB_STATES = ("queued", "starting", "running", "paused", "interrupted", "done", "fault",
              "stopped", "failed", "cancelled")
ACTIVE = ("starting", "running", "paused", "interrupted")  # a job the channel is busy with
FINISHED = ("done", "fault", "stopped", "failed", "cancelled")

MIGRATIONS = (
    # 1: channels, jobs, events
    """
    CREATE TABLE channels (
        id TEXT PRIMARY KEY,            -- 'sim-3', or 'usb-<USB serial number>'
        kind TEXT NOT NULL CHECK (kind IN ('sim', 'usb')),
        board TEXT,                     -- board file id ('sim', or what the board's ID says)
        cell_file TEXT,                 -- sim: the simulated cell's model file (the plant)
        seed INTEGER NOT NULL DEFAULT 0,
        port TEXT,                      -- usb: the serial device last seen
        usb_serial TEXT,
        held INTEGER NOT NULL DEFAULT 0, -- 1: queued jobs wait (after a fault or a stop)
        created_unix_s REAL NOT NULL
    );
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel_id TEXT NOT NULL REFERENCES channels(id),
        state TEXT NOT NULL,
        cell_name TEXT NOT NULL,
        mass_mg REAL,
        protocol_name TEXT NOT NULL,
        protocol_path TEXT NOT NULL,    -- the protocol as submitted, under <data>/jobs/<id>/
        model_path TEXT,
        tick_ms INTEGER,
        log_path TEXT,                  -- <data>/logs/<cell>/<date>/...bdf.csv
        stop_reason TEXT,
        created_unix_s REAL NOT NULL,
        started_unix_s REAL,
        ended_unix_s REAL
    );
    CREATE INDEX jobs_by_channel ON jobs(channel_id, state);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        unix_s REAL NOT NULL,
        channel_id TEXT,
        job_id INTEGER,
        kind TEXT NOT NULL,             -- lab_start, job_start, job_end, fault, reattach, ...
        text TEXT NOT NULL
    );
    """,
    # 2: the lab's settings (key -> JSON value), e.g. the simulated boards' speed
    """
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
)


def migrate(conn):
    """Apply the migrations the database has not had yet; the schema version after."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number in range(version, len(MIGRATIONS)):
        # One transaction per migration: a crash mid-way leaves the previous version.
        conn.executescript("BEGIN;" + MIGRATIONS[number]
                           + f";PRAGMA user_version = {number + 1};COMMIT;")
    return conn.execute("PRAGMA user_version").fetchone()[0]


class Database:
    """The lab database, shared by the service's threads (one connection, one lock)."""

    def __init__(self, path):
        self.path = str(path)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._lock = threading.Lock()
        with self._lock:
            self.version = migrate(self._conn)

    def _run(self, sql, args=()):
        with self._lock:
            cur = self._conn.execute(sql, args)
            return cur.lastrowid, [dict(r) for r in cur.fetchall()]

    def rows(self, sql, args=()):
        return self._run(sql, args)[1]

    def close(self):
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------ channels

    def add_channel(self, cid, kind, board=None, cell_file=None, seed=0, port=None,
                    usb_serial=None):
        self._run("INSERT INTO channels (id, kind, board, cell_file, seed, port, usb_serial, "
                  "created_unix_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                  (cid, kind, board, cell_file, seed, port, usb_serial, time.time()))

    def update_channel(self, cid, **fields):
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._run(f"UPDATE channels SET {sets} WHERE id = ?", (*fields.values(), cid))

    def channels(self):
        return self.rows("SELECT * FROM channels ORDER BY created_unix_s, id")

    def channel(self, cid):
        found = self.rows("SELECT * FROM channels WHERE id = ?", (cid,))
        return found[0] if found else None

    # ------------------------------------------------------------ jobs

    def add_job(self, channel_id, cell_name, mass_mg, protocol_name, protocol_path,
                model_path=None, tick_ms=None):
        job_id, _ = self._run(
            "INSERT INTO jobs (channel_id, state, cell_name, mass_mg, protocol_name, "
            "protocol_path, model_path, tick_ms, created_unix_s) "
            "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
            (channel_id, cell_name, mass_mg, protocol_name, str(protocol_path),
             str(model_path) if model_path else None, tick_ms, time.time()))
        return job_id

    def set_job(self, job_id, **fields):
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._run(f"UPDATE jobs SET {sets} WHERE id = ?", (*fields.values(), job_id))

    def job(self, job_id):
        found = self.rows("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return found[0] if found else None

    def jobs(self, channel_id=None):
        if channel_id is None:
            return self.rows("SELECT * FROM jobs ORDER BY id")
        return self.rows("SELECT * FROM jobs WHERE channel_id = ? ORDER BY id", (channel_id,))

    def active_job(self, channel_id):
        """The job the channel is busy with (started, not finished), or None."""
        marks = ",".join("?" * len(ACTIVE))
        found = self.rows(f"SELECT * FROM jobs WHERE channel_id = ? AND state IN ({marks}) "
                          "ORDER BY id LIMIT 1", (channel_id, *ACTIVE))
        return found[0] if found else None

    def next_queued(self, channel_id):
        """The oldest queued job whose files are stored (queue_job adds the row first: its
        id names the job's folder; a channel must not take it before its protocol is there)."""
        found = self.rows("SELECT * FROM jobs WHERE channel_id = ? AND state = 'queued' "
                          "AND protocol_path != '' ORDER BY id LIMIT 1", (channel_id,))
        return found[0] if found else None

    # ------------------------------------------------------------ events and settings

    def add_event(self, kind, text, channel_id=None, job_id=None):
        eid, _ = self._run("INSERT INTO events (unix_s, channel_id, job_id, kind, text) "
                           "VALUES (?, ?, ?, ?, ?)", (time.time(), channel_id, job_id, kind, text))
        return {"id": eid, "unix_s": time.time(), "channel_id": channel_id, "job_id": job_id,
                "kind": kind, "text": text}

    def events(self, channel_id=None, limit=50):
        if channel_id is None:
            return self.rows("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        return self.rows("SELECT * FROM events WHERE channel_id = ? ORDER BY id DESC LIMIT ?",
                         (channel_id, limit))

    def setting(self, key, default=None):
        found = self.rows("SELECT value FROM settings WHERE key = ?", (key,))
        return json.loads(found[0]["value"]) if found else default

    def set_setting(self, key, value):
        self._run("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) "
                  "DO UPDATE SET value = excluded.value", (key, json.dumps(value)))
