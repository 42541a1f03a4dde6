"""Run one test: ID, LOAD, (MODEL), START, then log records until the run ends.

The board runs the test on its own (limits included), so the host's job is to hand it
the compiled step table and write down what comes back. Ctrl-C sends STOP, waits briefly
for the board to confirm, and closes the log cleanly; the current is off either way.
"""

import binascii
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import bdflog, protocol as proto
from .errors import InputError
from .jsonfile import read_json
from .link import Link, LinkError
from .paths import BOARDS, CALIBRATIONS

# Events after which the board is idle and the run is over (firmware/record.py EVENTS).
END_EVENTS = ("END", "FAULT", "STOP")
# The stop reason of a run whose board was reset: resumable with --resume ... --recover.
BOARD_RESET = "board reset"
# Board states after a run (docs/link.md "States") and the stop reason each stands for.
FINAL_STATES = {"DONE": "end", "STOPPED": "stop", "FAULT": "fault"}
PROGRESS_PERIOD_S = 0.25
# Model keys the board has no use for (simulator-only or bookkeeping): not sent with MODEL.
HOST_ONLY_MODEL_KEYS = ("provenance", "fade", "sim_soc0")


def max_line():
    """Longest line the board accepts: the firmware's own constant (docs/link.md framing)."""
    try:
        from . import fw
        return int(getattr(fw.module("link"), "MAX_LINE", 4096))
    except Exception:  # the firmware tree is unusable: the documented minimum
        return 4096


# ---------------------------------------------------------------- files


def board_path(board):
    """The board file for a name ("sim") or a path; InputError if there is none."""
    p = Path(board)
    if p.suffix != ".json":
        p = BOARDS / f"{board}.json"
    if not p.is_file():
        known = ", ".join(sorted(x.stem for x in BOARDS.glob("*.json"))) or "none"
        raise InputError(f"board: no board file {p} (known boards: {known})")
    return p


def load_board(board):
    """Board file dict for a name or path."""
    return read_json(board_path(board), "board")


def calibration_path(board_id):
    """The path of a board's calibration file (boards/calibration/<id>.json) or None."""
    p = CALIBRATIONS / f"{board_id}.json"
    return p if board_id and p.is_file() else None


def calibration_for(board_id):
    """The contents of a board's calibration file (boards/calibration/<id>.json) or None."""
    p = calibration_path(board_id)
    return read_json(p, "calibration") if p else None


def calibration_id(cal, board_id):
    """The id a board reports for calibration file contents ``cal`` (firmware/board.py)."""
    return str(cal.get("id") or f"{board_id}@{cal.get('created', '')}")


def calibration_in_force(ident, board_id):
    """Sidecar entry for the calibration the board says it applies (its ID reply).

    {"id": the board's calibration id, or "none" when it runs uncalibrated, "file": the
    contents of boards/calibration/<board-id>.json when that file is the one in force
    (same id), else None; "file_matches": whether it is}.
    """
    got = ident.get("calibration") if isinstance(ident, dict) else None
    if not got:
        return {"id": "none", "file": None, "file_matches": False}
    cal = calibration_for(board_id) if board_id else None
    matches = cal is not None and calibration_id(cal, board_id) == got
    return {"id": got, "file": cal if matches else None, "file_matches": matches}


def load_model_file(path):
    """A model file validated by cellbench.model (plain JSON if that module is absent)."""
    try:
        from .model import load_model
    except ImportError:
        return read_json(path, "model")
    return load_model(str(path))


# ---------------------------------------------------------------- progress


def _hms(seconds):
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """One status line from records, rate-limited to a few refreshes per second of wall time.

    ``durations_s``: expected duration of each executed step (protocol.planned_durations_s),
    used for the remaining-time estimate; ``mass_mg`` adds mAh/g.
    """

    def __init__(self, table, durations_s, mass_mg=None, write=None, period_s=PROGRESS_PERIOD_S):
        self.table = table
        self.mass_mg = mass_mg
        self.write = write or _write_stderr
        self.period_s = period_s
        self._tail = [0.0] * (len(durations_s) + 1)  # remaining planned time after step k
        for k in range(len(durations_s) - 1, -1, -1):
            self._tail[k] = self._tail[k + 1] + durations_s[k]
        self._durations = durations_s
        self._step_count = None
        self._step_t0_ms = 0
        self._shown_at = None

    def remaining_s(self, rec):
        """Estimated test time left (s) at this record."""
        k = rec["step_count"] - 1  # step_count counts from 1
        if rec["step_count"] != self._step_count:
            self._step_count, self._step_t0_ms = rec["step_count"], rec["t_ms"]
        if not 0 <= k < len(self._durations):
            return 0.0
        in_step = (rec["t_ms"] - self._step_t0_ms) / 1000
        return max(0.0, self._durations[k] - in_step) + self._tail[k + 1]

    def line(self, rec):
        """The status text for a record."""
        steps = self.table["steps"]
        no = rec["step_no"]
        kind = steps[no][0] if 0 <= no < len(steps) else "?"
        q_mAh = rec["q_step_nAh"] / 1e6
        cap = f"{q_mAh:+.4f} mAh"
        if self.mass_mg:
            cap += f" {q_mAh / (self.mass_mg / 1000):+.1f} mAh/g"
        return (f"step {no + 1}/{len(steps)} {kind} cycle {rec['cycle']} "
                f"{rec['v_uV'] / 1e6:.4f} V {rec['i_nA'] / 1e6:+.4f} mA {cap} "
                f"t {_hms(rec['t_ms'] / 1000)} left ~{_hms(self.remaining_s(rec))}")

    def update(self, rec, force=False):
        """Show the line for ``rec`` unless one was shown less than ``period_s`` ago."""
        text = self.line(rec)  # always computed: it tracks step starts for the estimate
        now = time.monotonic()
        if force or self._shown_at is None or now - self._shown_at >= self.period_s:
            self._shown_at = now
            self.write(text)

    def done(self):
        self.write(None)


def _write_stderr(text):
    if text is None:
        sys.stderr.write("\n")
    else:
        sys.stderr.write("\r" + text[:150].ljust(150))
    sys.stderr.flush()


# ---------------------------------------------------------------- the run


def _firmware_version(ident):
    if isinstance(ident, dict):
        for key in ("fw", "firmware", "version", "fw_version"):
            if key in ident:
                return ident[key]
    return None


# Fault bits, in bit order (docs/link.md "Fault bits").
FAULT_NAMES = ("OVER_VOLTAGE", "UNDER_VOLTAGE", "OVER_CURRENT", "OVER_CHARGE", "BOARD_LIMIT",
               "OPEN_CIRCUIT", "SHORT", "ADC_STUCK", "SOURCE", "WATCHDOG", "INTERNAL")


def fault_text(bits):
    """"0x3 OVER_VOLTAGE+UNDER_VOLTAGE" for fault bits (unknown bits by number)."""
    names = [FAULT_NAMES[k] if k < len(FAULT_NAMES) else f"bit{k}"
             for k in range(bits.bit_length()) if bits >> k & 1]
    return f"{bits:#x} {'+'.join(names)}"


def _end_reason(msg):
    """"end", "stop", or "fault (0x1 OVER_VOLTAGE)" from the event that ended the run."""
    data = msg.get("data") if isinstance(msg.get("data"), dict) else {}
    fault = data.get("fault", 0)
    return msg["kind"].lower() + (f" ({fault_text(fault)})" if fault else "")


def _compact(obj):
    return json.dumps(obj, separators=(",", ":"))


def preflight(protocol_path, out_path, board=None, mass_mg=None, model_path=None,
              tick_ms=None, force=False):
    """Check all the host can before a board is touched: (protocol, board dict, model).

    Reads the protocol, board file and model, refuses an existing log without ``force``
    and, when the board is known, compiles the protocol for it. ``board`` None stays None.
    """
    if mass_mg is not None and not mass_mg > 0:
        raise InputError(f"mass_mg: must be > 0, got {mass_mg}")
    protocol = proto.load_protocol(protocol_path)
    for p in (Path(out_path), bdflog.sidecar_path(out_path)):
        if p.exists() and not force:
            raise InputError(f"out: {p} exists (use --force to overwrite)")
    if board is not None and not isinstance(board, dict):
        board = load_board(board)
    model = load_model_file(model_path) if model_path else None
    if board is not None:
        proto.compile(protocol, board, tick_ms, model)
    return protocol, board, model


def preflight_resume(log_path):
    """Check, without touching the file or a board, that a log can be resumed; its sidecar.

    InputError unless the log exists, was written by this bench (header), its sidecar
    holds what a resume needs (table, protocol, start_seq), and its run has not ended.
    """
    path = Path(log_path)
    if not path.is_file():
        raise InputError(f"resume: no log {path}")
    bdflog.appendable_with_soc(path)
    meta = bdflog.read_sidecar(path)
    for key in ("table", "protocol", "start_seq", "started_unix_s"):
        if key not in meta:
            raise InputError(f"resume: the sidecar of {path.name} has no {key!r}; "
                             f"it was not written by a resumable run")
    ended = [e for e in meta.get("events", []) if e.get("kind") in END_EVENTS and "seq" in e]
    if ended:
        raise InputError(f"resume: the run in {path.name} already ended "
                         f"({ended[-1]['kind']} at seq {ended[-1]['seq']})")
    return meta


class Session:
    """One run's state: link, compiled table, log. Use :func:`run` for the whole thing."""

    def __init__(self, protocol_path, transport, out_path, board=None, mass_mg=None,
                 model_path=None, tick_ms=None, force=False, progress=None, extra_meta=None):
        self.extra_meta = dict(extra_meta or {})
        self.protocol_path = Path(protocol_path)
        self.out_path = Path(out_path)
        self.protocol, self.board, self.model = preflight(
            protocol_path, out_path, board, mass_mg, model_path, tick_ms, force)
        self.model_path = model_path
        self.mass_mg, self.tick_ms, self.force = mass_mg, tick_ms, force
        self.progress = progress
        self.link = Link(transport)
        self.log = None
        self.ident = None
        self.table = None
        self.offsets = {}  # added to record fields after a board reset (see recover)
        self.summary = {"out": str(self.out_path), "rows": 0, "stop_reason": None}

    def prepare(self):
        """ID, compile against the board, LOAD, MODEL. Returns the table."""
        ident = self.link.command("ID")
        if self.board is None:
            board_id = ident.get("board") if isinstance(ident, dict) else None
            if not board_id:
                raise InputError("board: the board did not say which it is; pass --board")
            self.board = load_board(board_id)
        self.table = proto.compile(self.protocol, self.board, self.tick_ms, self.model)
        limit = max_line() - 20  # room for the command word and the checksum
        table_json = _compact(self.table)
        if len(table_json) > limit:
            raise InputError(f"method: the step table is {len(table_json)} bytes, more than a link "
                             f"line holds ({limit}); use loops instead of repeated steps")
        self._command("LOAD", table_json)
        self.table_json = table_json  # the exact text: RECOVER checks its CRC-32
        if self.model is not None:
            model_json = _compact({k: v for k, v in self.model.items() if k not in HOST_ONLY_MODEL_KEYS})
            if len(model_json) > limit:
                raise InputError(f"model: {len(model_json)} bytes as JSON, more than a link line "
                                 f"holds ({limit}); use a coarser ocv grid")
            self._command("MODEL", model_json)
        self.ident = ident
        return self.table

    def _command(self, name, *args):
        try:
            return self.link.command(name, *args)
        except LinkError as exc:
            if exc.field:  # the board rejected our input: the user can fix it
                raise InputError(f"{name.lower()}.{exc.field}: {exc.message} (board)") from None
            raise

    def _meta(self, ident):
        return {
            "board": {"id": self.board.get("id"), "file": self.board},
            "id_reply": ident,
            "firmware_version": _firmware_version(ident),
            "protocol_file": str(self.protocol_path),
            "protocol": self.protocol,
            "table": self.table,
            "table_json": getattr(self, "table_json", None),
            "model_file": str(self.model_path) if self.model_path else None,
            "model": self.model,
            "calibration": calibration_in_force(ident, self.board.get("id", "")),
            "mass_mg": self.mass_mg,
            "host": "cellbench",
            **self.extra_meta,
        }

    def stream(self):
        """START, open the log, and log every record until an end event (or the board goes quiet)."""
        started = self.link.command("START")
        self.link.reset_sequence(started["seq"])  # the START event's seq opens this run
        # The log exists only once the board runs: a refused START leaves no empty log.
        meta = dict(self._meta(self.ident), start_seq=started["seq"])
        self.log = bdflog.LogWriter(self.out_path, with_soc=self.model is not None,
                                    meta=meta, force=self.force)
        self.follow()

    def follow(self):
        """Log records and events from the link until an end event (or the board goes quiet).

        Each message is written before the next is asked for, and the link acknowledges
        only what was asked past, so whatever the board has freed is on disk.
        """
        capacity = (self.protocol.get("sample") or {}).get("capacity_mAh")
        durations = proto.planned_durations_s(self.table, capacity)
        show = Progress(self.table, durations, self.mass_mg, self.progress) if self.progress else None
        last = None
        for kind, msg in self.link.messages(idle_timeout_s=self._idle_s()):
            if kind == "record":
                msg = self._continued(msg)
                self.log.write(msg)
                last = msg
                if show:
                    show.update(msg)
                continue
            if msg["kind"] == "START" and msg["seq"] != self.log.meta.get("start_seq"):
                # Another run began on the board after ours (only after records were lost).
                self.summary["stop_reason"] = "board started another run"
                break
            self.log.event(msg["kind"], seq=msg["seq"], data=msg.get("data"))
            if msg["kind"] == "INTERRUPTED":
                # The board was reset mid-run: current off, the run waits for the user.
                self.summary["stop_reason"] = BOARD_RESET
                self.summary["journal"] = msg.get("data")
                break
            if msg["kind"] == "FAULT":
                self.summary["faults"] = self.summary.get("faults", 0) + 1
            if msg["kind"] in END_EVENTS:
                self.link.consumed(msg["seq"])
                self.summary["stop_reason"] = _end_reason(msg)
                break
        else:
            self.summary["stop_reason"] = "link lost"
        try:
            self.link.acknowledge()  # free the board's ring for the next run
        except (OSError, LinkError):
            pass
        if show and last:
            show.update(last, force=True)
            show.done()
        self._finish(last)

    @classmethod
    def reattach(cls, log_path, transport, progress=None):
        """A Session continuing the log at ``log_path`` (its partial last line cut off)."""
        s = cls.__new__(cls)
        s.out_path = Path(log_path)
        preflight_resume(s.out_path)
        s.log = bdflog.LogWriter.reopen(s.out_path)
        meta = s.log.meta
        s.protocol_path = Path(meta.get("protocol_file") or "")
        s.protocol, s.table, s.model = meta["protocol"], meta["table"], meta.get("model")
        s.board = (meta.get("board") or {}).get("file") or {}
        s.model_path, s.mass_mg = meta.get("model_file"), meta.get("mass_mg")
        s.tick_ms, s.force, s.progress = None, False, progress
        s.extra_meta = {}
        s.table_json = meta.get("table_json") or _compact(s.table)
        recovered = [e for e in meta.get("events", []) if e.get("kind") == "recover"]
        s.offsets = dict(recovered[-1].get("offsets") or {}) if recovered else {}
        s.link = Link(transport)
        s.ident = None
        s._journal = None
        s.summary = {"out": str(s.out_path), "rows": 0, "stop_reason": None}
        return s

    def check_board(self):
        """ID and STATUS: the same board, still holding our run. Returns the seq to fetch from.

        InputError when the board is another one, has restarted since, or no longer holds
        anything of this run.
        """
        meta = self.log.meta
        last = bdflog.last_seq(self.out_path)
        # Consumed in order: records to the CSV, events to the sidecar, each before the next
        # was read. The newest of either is where the log stops (events may follow the last
        # record, and the board may have freed them already on the old host's ACK).
        logged = [int(meta["start_seq"])] + list(self.log.logged_seqs())
        from_seq = max([-1 if last is None else last] + logged) + 1
        ident = self._command("ID")
        want = (meta.get("board") or {}).get("id")
        got = ident.get("board") if isinstance(ident, dict) else None
        if want and got and want != got:
            raise InputError(f"resume: the board is {got!r}, the log was written by {want!r}")
        journal = ident.get("interrupted") if isinstance(ident, dict) else None
        if journal:
            # Reset mid-run: it holds none of the records sent before (RECOVER continues).
            self.ident, self._journal = ident, journal
            return None
        status = self._command("STATUS")
        seq_next = int(status.get("seq_next", 0))
        if seq_next < from_seq or status.get("state") == "IDLE":  # IDLE: no table since boot
            raise InputError(f"resume: the board has restarted since the log was written "
                             f"(its next seq is {seq_next}, the log needs {from_seq}); "
                             f"the rest of the run is lost")
        self.ident = ident
        self._status = status
        self.log.event("resume", from_seq=from_seq, last_logged_seq=last,
                       board_state=status.get("state"), seq_next=seq_next,
                       seq_oldest=status.get("seq_oldest"), board_lost=status.get("lost"))
        return from_seq

    def journal_text(self):
        """The board's journal summary in words: step, cycle, time and counters."""
        j, steps = self._journal, self.table["steps"]
        no = j.get("step_no", -1)
        kind = steps[no][0] if 0 <= no < len(steps) else "?"
        return (f"step {no + 1}/{len(steps)} {kind} (step count {j.get('step_count')}), "
                f"cycle {j.get('cycle')}, test time {_hms(j.get('t_ms', 0) / 1000)}, "
                f"charged {j.get('q_chg_nAh', 0) / 1e6:.4f} mAh, "
                f"discharged {j.get('q_dch_nAh', 0) / 1e6:.4f} mAh, seq {j.get('seq')}")

    def check_recover(self, recover):
        """The board was reset mid-run: refuse unless the user said ``recover`` and the
        board's interrupted run is this log's (its step table's CRC-32). Changes nothing."""
        said = f"the board was reset mid-run (current off); its journal: {self.journal_text()}"
        crc = binascii.crc32(self.table_json.encode("ascii")) & 0x3FFFFFFF
        if self._journal.get("table_crc") != crc:
            raise InputError(f"resume: {said}; but its step table is not this log's "
                             f"(checksum {self._journal.get('table_crc')} != {crc})")
        if not recover:
            raise InputError(f"resume: {said}; nothing was sent to it: run the same command "
                             f"with --recover to continue the run from that step")

    def recover(self):
        """LOAD the run's table text again (and MODEL), RECOVER, then follow the run.

        The board continues from its journal: its t_ms and counters go back to the last
        save, and its seq jumps (journal seq + 528). The host records the seq jump as a
        ``seq_gap`` event (not lost records) and offsets t_ms and the q/e counters by what
        the log already holds beyond the journal, so the log's time and cumulative
        capacities stay monotonic and count nothing twice.
        """
        self._command("LOAD", self.table_json)
        if self.model is not None:
            self._command("MODEL", _compact({k: v for k, v in self.model.items()
                                             if k not in HOST_ONLY_MODEL_KEYS}))
        offsets = self._offsets_after_reset(self._journal)
        reply = self._command("RECOVER")
        seq = int(reply["seq"])
        last = self._last_logged_seq()
        # Up to the boot's INTERRUPTED event (logged if a host was attached), else RECOVER.
        boot = [e["seq"] for e in self.log.meta["events"] if e.get("kind") == "INTERRUPTED"
                and isinstance(e.get("seq"), int) and last < e["seq"] < seq]
        end = min(boot + [seq]) - 1
        self.log.event("seq_gap", first=last + 1, last=end, count=end - last,
                       reason="board reset: seqs the board never sent")
        self.log.event("recover", journal=self._journal, recover_seq=seq, reply=reply,
                       offsets=offsets)
        self.offsets = offsets
        self.link.reset_sequence(seq)
        self.follow()

    def _last_logged_seq(self):
        """The newest seq in the log (record or event), the out-of-band INTERRUPTED aside."""
        last = bdflog.last_seq(self.out_path)
        logged = [int(self.log.meta["start_seq"])] + [
            e["seq"] for e in self.log.meta["events"]
            if isinstance(e.get("seq"), int) and e.get("kind") != "INTERRUPTED"]
        return max([-1 if last is None else last] + logged)

    def _offsets_after_reset(self, journal):
        """Offsets for record fields after RECOVER: the logged value past the journal's.

        t_ms and charge come from the journal summary (exact); energies, which it lacks,
        from the last logged record before the journal's seq. All >= the previous offsets.
        """
        prev = self.offsets
        log = bdflog.read_log(self.out_path)
        if not len(log["Record Seq / 1"]):
            return dict(prev)
        logged = _row_counters({col: values[-1] for col, values in log.items()})
        off = {"t_ms": logged["t_ms"] - journal.get("t_ms", 0),
               "q_chg_nAh": logged["q_chg_nAh"] - journal.get("q_chg_nAh", 0),
               "q_dch_nAh": logged["q_dch_nAh"] - journal.get("q_dch_nAh", 0)}
        before = np.flatnonzero(log["Record Seq / 1"] < journal.get("seq", 0))
        for key, col, scale in (("e_chg_uWh", "Charging Energy / Wh", 1e6),
                                ("e_dch_uWh", "Discharging Energy / Wh", 1e6)):
            at = round(float(log[col][before[-1]]) * scale) if len(before) else logged[key]
            off[key] = prev.get(key, 0) + logged[key] - at
        return {k: max(int(v), int(prev.get(k, 0))) for k, v in off.items()}

    def _continued(self, rec):
        """A record with the offsets of earlier board resets added (itself if none)."""
        if not self.offsets:
            return rec
        rec = dict(rec)
        for key, value in self.offsets.items():
            rec[key] += value
        return rec

    def catch_up(self, from_seq):
        """Fetch everything from ``from_seq`` (SEND), then follow the run live to its end."""
        status = self._status
        if status.get("state") in FINAL_STATES and int(status.get("seq_next", 0)) <= from_seq:
            # The run ended and everything up to its end is logged; nothing to fetch.
            self.summary["stop_reason"] = FINAL_STATES[status["state"]]
            return
        self.link.resend_from(from_seq)
        self.follow()
        lost = self.link.stats.get("lost", 0)
        if lost:
            self.log.event("records_lost", count=lost)

    def _idle_s(self):
        # The board sends at least one record per record.dt_ms of test time; on a real board
        # that is wall time. Allow generous slack before calling the link lost.
        return max(30.0, 3 * self.table["record"]["dt_ms"] / 1000)

    def stop(self, reason):
        """Ask the board to stop (current off) and log what it still sends. Never raises
        LinkError: the stop is best effort on a link that may be gone."""
        self.summary["stop_reason"] = reason
        try:
            self.link.command("STOP")
            if self.log is None:
                return
            for kind, msg in self.link.messages(idle_timeout_s=3.0):
                if kind == "record":
                    self.log.write(self._continued(msg))
                    continue
                self.log.event(msg["kind"], seq=msg["seq"], data=msg.get("data"))
                if msg["kind"] in END_EVENTS:
                    break
        except (LinkError, OSError) as exc:
            if self.log is not None:
                self.log.event("stop_failed", message=str(exc))

    def _finish(self, last):
        if last:
            self.summary.update(test_time_s=last["t_ms"] / 1000, cycles=last["cycle"],
                                q_chg_Ah=last["q_chg_nAh"] / 1e9, q_dch_Ah=last["q_dch_nAh"] / 1e9)

    def close(self):
        if self.log is not None:
            self.summary["rows"] = self.log.rows
            self.summary["link"] = dict(self.link.stats)
            self.log.close(stop_reason=self.summary["stop_reason"], link=self.summary["link"])


def run(protocol_path, transport, out_path, board=None, mass_mg=None, model_path=None,
        tick_ms=None, force=False, progress=None, extra_meta=None):
    """Run a protocol on a board and log it; returns the summary dict.

    ``board``: board file dict, name or path (None: the board id from the ID reply).
    ``progress``: callable(str | None) for the status line (None: no display).
    ``extra_meta``: more sidecar entries (e.g. the simulated cell).
    Ctrl-C stops the board and closes the log, then re-raises KeyboardInterrupt.
    """
    s = Session(protocol_path, transport, out_path, board, mass_mg, model_path, tick_ms,
                force, progress, extra_meta)
    s.prepare()  # nothing runs yet: errors here need no STOP
    return _guarded(s, s.stream)


def _row_counters(row):
    """Board integers (t_ms, q_*_nAh, e_*_uWh) of one log row ({column: value})."""
    def num(col, scale):
        return int(round(float(row[col]) * scale))
    return {"t_ms": num("Test Time / s", 1e3),
            "q_chg_nAh": num("Charging Capacity / Ah", 1e9),
            "q_dch_nAh": num("Discharging Capacity / Ah", 1e9),
            "e_chg_uWh": num("Charging Energy / Wh", 1e6),
            "e_dch_uWh": num("Discharging Energy / Wh", 1e6)}


def resume(log_path, transport, progress=None, recover=False):
    """Reattach to a board whose host went away mid-run and complete its log.

    Reads the log's last record seq (its tail only) and the sidecar, checks with ID and
    STATUS that the board is the one and still holds the run, asks it to re-send from the
    next seq, appends exactly the missing records (no gap, no duplicate), then follows
    the run live to its end. Returns the summary dict, like :func:`run`.

    A board reset since (it reports an interrupted run) is continued only with
    ``recover`` (the user's word): LOAD of the log's exact table text, MODEL, RECOVER
    (:meth:`Session.recover`); without it, InputError saying what the journal holds.
    """
    s = Session.reattach(log_path, transport, progress)
    try:
        from_seq = s.check_board()
        if from_seq is None:
            s.check_recover(recover)  # the user's word first: nothing sent before it
    except BaseException:
        s.log.close_file()
        raise
    if from_seq is None:
        return _guarded(s, s.recover)
    return _guarded(s, lambda: s.catch_up(from_seq))


def _guarded(s, body):
    """Run ``body`` (streaming into s.log); on any failure stop the board, close the log."""
    try:
        body()
    except KeyboardInterrupt:
        if s.progress:
            s.progress(None)  # end the status line before the CLI's message
        s.stop("interrupted")
        raise
    except LinkError as exc:
        if s.log is not None:
            s.log.event("link_error", message=str(exc))
        s.stop(f"link error: {exc}")
        raise
    except BaseException as exc:  # a host bug or a full disk: the current goes off first
        s.stop(f"host error: {exc!r}")
        raise
    finally:
        s.close()
    return s.summary
