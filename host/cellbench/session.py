"""Run one test: ID, LOAD, (MODEL), START, then log records until the run ends.

The board runs the test on its own (limits included), so the host's job is to hand it
the compiled step table and write down what comes back. Ctrl-C stops the board (or, on a
board that outlives this process, pauses it so ``--resume`` can continue), waits briefly
for the board to confirm, and closes the log cleanly; the current is off either way.

The files a run needs (protocol, board, model) are read once, by :func:`preflight`, into
:class:`RunFiles`; a resumed run gets the same from its log's sidecar, read once by
:func:`preflight_resume`.
"""

import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from . import bdflog, protocol as proto
from .boards import calibration_in_force, load_board
from .errors import InputError
from .link import Link, LinkError
from .outputs import check_output

# Events after which the board is idle and the run is over (firmware/record.py EVENTS).
END_EVENTS = ("END", "FAULT", "STOP")
# The stop reason of a run whose board was reset: resumable with --resume ... --recover.
BOARD_RESET = "board reset"
# The stop reason of a run paused by Ctrl-C on a board that outlives the host.
PAUSED = "interrupted (paused)"
# Board states after a run (docs/link.md "States") and the stop reason each stands for.
FINAL_STATES = {"DONE": "end", "STOPPED": "stop", "FAULT": "fault"}
# Model keys the board has no use for (simulator-only or bookkeeping): not sent with MODEL.
HOST_ONLY_MODEL_KEYS = ("provenance", "fade", "sim_soc0")


def max_line():
    """Longest line the board accepts: the firmware's own constant (docs/link.md framing)."""
    try:
        from . import fw
        return int(getattr(fw.module("link"), "MAX_LINE", 4096))
    except Exception:  # the firmware tree is unusable: the documented minimum
        return 4096


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, after the board was stopped (or paused) and the log closed.

    ``summary``: the run's summary dict (log path, rows, stop reason), for the message.
    """

    def __init__(self, summary):
        super().__init__("interrupted")
        self.summary = summary


# ---------------------------------------------------------------- files


@dataclass(frozen=True)
class RunFiles:
    """What a run reads from files, read once: the protocol (dict and path), the board
    file (dict; None: the one the board names in its ID reply), the estimator's model
    (dict and path, or None), the active mass (mg) and the tick override (ms)."""

    protocol_path: Path
    protocol: dict
    board: Optional[dict] = None
    model_path: Optional[Path] = None
    model: Optional[dict] = None
    mass_mg: Optional[float] = None
    tick_ms: Optional[int] = None

    @classmethod
    def from_sidecar(cls, meta):
        """The files of a logged run, as its sidecar recorded them (nothing is re-read)."""
        return cls(protocol_path=Path(meta.get("protocol_file") or ""), protocol=meta["protocol"],
                   board=(meta.get("board") or {}).get("file") or {},
                   model_path=meta.get("model_file"), model=meta.get("model"),
                   mass_mg=meta.get("mass_mg"))


def load_model_file(path):
    """A model file validated by cellbench.model."""
    from .model import load_model

    return load_model(str(path))


def preflight(protocol_path, out_path, board=None, mass_mg=None, model_path=None,
              tick_ms=None, force=False):
    """Check all the host can before a board is touched; the run's :class:`RunFiles`.

    Reads the protocol, board file and model once, refuses an existing log or sidecar
    without ``force`` (and over an input file always) and, when the board is known,
    compiles the protocol for it. ``board`` None stays None (the board names itself).
    """
    if mass_mg is not None and not mass_mg > 0:
        raise InputError(f"mass_mg: must be > 0, got {mass_mg}")
    inputs = [protocol_path, model_path]
    for p in (out_path, bdflog.sidecar_path(out_path)):
        check_output(p, force, inputs)
    protocol = proto.load_protocol(protocol_path)
    board = load_board(board) if board is not None else None
    model = load_model_file(model_path) if model_path else None
    if board is not None:
        proto.compile(protocol, board, tick_ms, model)
    return RunFiles(Path(protocol_path), protocol, board,
                    Path(model_path) if model_path else None, model, mass_mg, tick_ms)


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


def hms(seconds):
    """"H:MM:SS" for a duration in seconds (negative: 0)."""
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


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


class Session:
    """One run's state: link, compiled table, log. Use :func:`run` / :func:`resume`.

    ``files``: the run's :class:`RunFiles`. ``table``, ``table_json``: the compiled step
    table and its exact text once known (a reattached run has them from its sidecar).
    ``log``: the open log of a reattached run (None: :meth:`stream` creates it).
    ``offsets``: added to record fields after a board reset (see :meth:`recover`).
    ``progress``: a factory ``progress(table, protocol, mass_mg)`` of a status display
    with ``update(rec, force=False)`` and ``done()`` (the run command's), or None.
    ``on_interrupt``: what Ctrl-C does to the board: "stop", or "pause" on a board that
    outlives this process (``--resume`` then continues the run).
    """

    def __init__(self, files, transport, out_path, table=None, table_json=None, log=None,
                 offsets=None, force=False, progress=None, extra_meta=None,
                 on_interrupt="stop"):
        self.files = files
        self.protocol, self.board, self.model = files.protocol, files.board, files.model
        self.out_path = Path(out_path)
        self.table, self.table_json = table, table_json
        self.log = log
        self.offsets = dict(offsets or {})
        self.force = force
        self.progress = progress
        self.show = None  # the status display of the current follow()
        self.extra_meta = dict(extra_meta or {})
        self.on_interrupt = on_interrupt
        # The link follows no stream until START or SEND says where ours starts: lines a
        # board sends meanwhile (to an earlier host) are neither gaps nor losses.
        # A board slower than real time (the emulated RP2040) says how long a reply may take.
        self.link = Link(transport, first_seq=None,
                         reply_timeout_s=getattr(transport, "reply_timeout_s", 5.0))
        self.ident = None
        self._journal = None
        self._status = None
        self.paused_by_host = False  # set by reattach from the sidecar: stopped by a Ctrl-C PAUSE
        self.summary = {"out": str(self.out_path), "rows": 0, "stop_reason": None}

    @classmethod
    def reattach(cls, log_path, meta, transport, progress=None, on_interrupt="stop"):
        """A Session continuing the log at ``log_path`` (its partial last line cut off),
        whose sidecar ``meta`` (:func:`preflight_resume`) holds the run's files and table."""
        log = bdflog.LogWriter.reopen(log_path, meta)
        recovered = [e for e in meta.get("events", []) if e.get("kind") == "recover"]
        s = cls(RunFiles.from_sidecar(meta), transport, log_path, table=meta["table"],
                   table_json=meta.get("table_json") or _compact(meta["table"]), log=log,
                   offsets=recovered[-1].get("offsets") if recovered else None,
                   progress=progress, on_interrupt=on_interrupt)
        s.paused_by_host = meta.get("stop_reason") == PAUSED
        return s

    def prepare(self):
        """ID, compile against the board, LOAD, MODEL. Returns the table."""
        ident = self.link.command("ID")
        if self.board is None:
            board_id = ident.get("board") if isinstance(ident, dict) else None
            if not board_id:
                raise InputError("board: the board did not say which it is; pass --board")
            self.board = load_board(board_id)
        self.table = proto.compile(self.protocol, self.board, self.files.tick_ms, self.model)
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
            if not exc.field:
                raise
            # The board rejected our input: name the field of the file the user wrote.
            if name == "LOAD":
                field = proto.source_field(self.protocol, exc.field)
            else:
                field = f"{name.lower()}.{exc.field}"
            raise InputError(f"{field}: {exc.message} (board)") from None

    def _meta(self, ident):
        return {
            "board": {"id": self.board.get("id"), "file": self.board},
            "id_reply": ident,
            "firmware_version": _firmware_version(ident),
            "protocol_file": str(self.files.protocol_path),
            "protocol": self.protocol,
            "table": self.table,
            "table_json": self.table_json,
            "model_file": str(self.files.model_path) if self.files.model_path else None,
            "model": self.model,
            "calibration": calibration_in_force(ident, self.board.get("id", "")),
            "mass_mg": self.files.mass_mg,
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
                                    with_ageing=bdflog.model_has_ageing(self.model),
                                    meta=meta, force=self.force)
        self.follow()

    def follow(self):
        """Log records and events from the link until an end event (or the board goes quiet).

        Each message is written before the next is asked for, and the link acknowledges
        only what was asked past, so whatever the board has freed is on disk.
        """
        show = self.show = (self.progress(self.table, self.protocol, self.files.mass_mg)
                            if self.progress else None)
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
                f"cycle {j.get('cycle')}, test time {hms(j.get('t_ms', 0) / 1000)}, "
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
        if status.get("state") == "PAUSED" or (status.get("state") == "FULL" and self.paused_by_host):
            # Paused by Ctrl-C (the only PAUSE a host sends): the user asked to continue.
            # A paused board's clock and records go on, so its ring may have filled (FULL)
            # before we came back: RESUME then lets the ACKs that free it continue the run.
            self._command("RESUME")
        self.follow()
        lost = self.link.stats.get("lost", 0)
        if lost:
            self.log.event("records_lost", count=lost)

    def _idle_s(self):
        # The board sends at least one record per record.dt_ms of test time; on a real board
        # that is wall time. Allow generous slack before calling the link lost.
        return max(30.0, 3 * self.table["record"]["dt_ms"] / 1000)

    def halt(self, reason, command="STOP"):
        """Switch the current off: STOP the run, or PAUSE it (``command``) so that
        ``--resume`` can continue it; then log what the board still sends up to that
        event. A board that cannot pause (its run is not going) is stopped. Never raises
        LinkError: this is best effort on a link that may be gone."""
        self.summary["stop_reason"] = reason
        until = END_EVENTS + (("PAUSE",) if command == "PAUSE" else ())
        try:
            try:
                self.link.command(command)
            except LinkError as exc:
                if not exc.field:
                    raise
                self.link.command("STOP")  # always accepted, whatever the state
                until = END_EVENTS
                if command == "PAUSE":  # nothing left to pause: the run is not going on
                    self.summary["stop_reason"] = "interrupted"
            if self.log is None:
                return
            for kind, msg in self.link.messages(idle_timeout_s=3.0):
                if kind == "record":
                    self.log.write(self._continued(msg))
                    continue
                self.log.event(msg["kind"], seq=msg["seq"], data=msg.get("data"))
                if msg["kind"] in until:
                    self.link.consumed(msg["seq"])
                    break
            self.link.acknowledge()
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


def run(protocol, transport, out_path, board=None, mass_mg=None, model_path=None,
        tick_ms=None, force=False, progress=None, extra_meta=None, on_interrupt="stop",
        on_session=None):
    """Run a protocol on a board and log it; returns the summary dict.

    ``protocol``: the :class:`RunFiles` of :func:`preflight` (then ``board``, ``mass_mg``,
    ``model_path`` and ``tick_ms`` are ignored), or a protocol path, read now.
    ``board``: board file dict, name or path (None: the board id from the ID reply).
    ``progress``, ``on_interrupt``: see :class:`Session`.
    ``extra_meta``: more sidecar entries (e.g. the simulated cell).
    Ctrl-C stops (or pauses) the board and closes the log, then raises :class:`Interrupted`.
    ``on_session``: called with the :class:`Session` before it touches the board (the lab
    service sets its ``on_interrupt`` when a user asks for a pause or a stop).
    """
    files = protocol if isinstance(protocol, RunFiles) else preflight(
        protocol, out_path, board, mass_mg, model_path, tick_ms, force)
    s = Session(files, transport, out_path, force=force, progress=progress,
                extra_meta=extra_meta, on_interrupt=on_interrupt)
    if on_session:
        on_session(s)
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


def resume(log_path, transport, progress=None, recover=False, meta=None, on_interrupt="stop",
           on_session=None):
    """Reattach to a board whose host went away mid-run and complete its log.

    Reads the log's last record seq (its tail only) and the sidecar, checks with ID and
    STATUS that the board is the one and still holds the run, asks it to re-send from the
    next seq, appends exactly the missing records (no gap, no duplicate), then follows
    the run live to its end. Returns the summary dict, like :func:`run`.

    A board reset since (it reports an interrupted run) is continued only with
    ``recover`` (the user's word): LOAD of the log's exact table text, MODEL, RECOVER
    (:meth:`Session.recover`); without it, InputError saying what the journal holds.
    ``meta``: the sidecar as :func:`preflight_resume` returned it (read now if None).
    ``on_session``: as for :func:`run`.
    """
    meta = preflight_resume(log_path) if meta is None else meta
    s = Session.reattach(log_path, meta, transport, progress, on_interrupt)
    if on_session:
        on_session(s)
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
        if s.show:
            s.show.done()  # end the status line before the message
        if s.on_interrupt == "pause":
            s.halt(PAUSED, "PAUSE")
        else:
            s.halt("interrupted")
        s.close()
        raise Interrupted(s.summary) from None
    except LinkError as exc:
        if s.log is not None:
            s.log.event("link_error", message=str(exc))
        s.halt(f"link error: {exc}")
        raise
    except BaseException as exc:  # a host bug or a full disk: the current goes off first
        s.halt(f"host error: {exc!r}")
        raise
    finally:
        s.close()
    return s.summary
