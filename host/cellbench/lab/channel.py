"""One channel: a board, the thread that runs its queue of jobs, and what it shows.

The thread does what ``cellbench run`` does, through the same session code
(cellbench.session): a job is ``session.run`` on the board's transport, writing its BDF
log and sidecar; a job the service finds running when it starts (it was killed, even with
SIGKILL) is continued with ``session.resume``, which fetches every record the board kept
since (the board holds them until acknowledged) and appends them: no gap, no duplicate.

A user's pause or stop reaches a run the way Ctrl-C reaches ``cellbench run``: the
channel's transport (:class:`Interruptible`) raises KeyboardInterrupt in the session's
read loop, and the session pauses (PAUSE, ``--resume`` continues it) or stops the board,
logs what the board sends up to that event and closes the log. The board's own limits
stay in force whatever is asked: nothing here sends anything but the session's commands.
"""

import collections
import threading
import time
import traceback
from pathlib import Path

from .. import bdflog, session
from ..boards import load_board
from ..errors import InputError
from ..link import LinkError
from ..transport import Interruptible
from .live import Live, replay

STOPPED_BY_USER = "stopped by the user"


def job_state(stop_reason):
    """The job's state for a session's stop reason (cellbench.session)."""
    reason = stop_reason or ""
    if reason == "end":
        return "done"
    if reason.startswith("fault"):
        return "fault"
    if reason in (session.PAUSED, "paused by the user"):
        return "paused"
    if reason in (session.BOARD_RESET, "link lost") or reason.startswith("link error"):
        return "interrupted"  # resumable: the board may still hold the run, or its journal
    if reason in ("stop", "interrupted", STOPPED_BY_USER):
        return "stopped"
    return "failed"


class Feed:
    """The session's progress display for a channel: every record goes to the page."""

    def __init__(self, channel, live):
        self.channel = channel
        self.live = live
        self._faulted = False

    def update(self, rec, force=False):
        if force:  # the session shows the last record again at the end: nothing new
            return
        closed = self.live.add(rec)
        ch = self.channel
        ch.publish_state()
        if closed:
            ch.lab.hub.publish({"type": "cycle", "channel": ch.id, "job": ch.job_id,
                                "row": self.live.cycles.rows[-1]})
        if rec["fault"] and not self._faulted:
            self._faulted = True
            ch.event("fault", f"fault {session.fault_text(rec['fault'])} at t = "
                     f"{rec['t_ms'] / 1000:.0f} s, cycle {rec['cycle']}")

    def done(self):
        pass


class Channel:
    """A board and its queue. ``lab``: the Lab (db, layout, hub, settings)."""

    def __init__(self, lab, row):
        self.lab = lab
        self.id = row["id"]
        self.kind = row["kind"]
        self.live = None        # Live of the run followed now (or last)
        self.job_id = None      # the job the live state belongs to
        self.error = ""         # why the board cannot be reached or a job waits (shown on its card)
        self.busy = False       # the thread is driving a session now
        self._transport = None  # the Interruptible of the session driven now
        self._session = None    # and that session (its on_interrupt says pause or stop)
        self._actions = collections.deque()
        self._wake = threading.Event()
        self.thread = threading.Thread(target=self._main, name=f"channel-{self.id}", daemon=True)

    # ------------------------------------------------------------ requests (any thread)

    @property
    def row(self):
        return self.lab.db.channel(self.id)

    def wake(self):
        self._wake.set()

    def request(self, action, job):
        """A user's ``action`` ("pause", "resume", "stop") on ``job`` (a db row).

        Returns None when accepted, else the reason it cannot be done now (a state
        conflict). Pause and stop of a running job interrupt its session; resume and
        stop of a paused job are done by the channel's thread.
        """
        state = job["state"]
        if action == "stop" and state == "queued":
            self.lab.db.set_job(job["id"], state="cancelled", ended_unix_s=time.time())
            self.event("job_cancel", f"job {job['id']} cancelled before it started", job["id"])
            return None
        running = state == "running" and self.job_id == job["id"] and self._transport
        if action in ("pause", "stop") and running:
            if not self._transport.armed or self._session is None:
                return f"job {job['id']} is between commands; try again"
            self._session.on_interrupt = action  # what the session does on the interrupt
            self._transport.request = action
            return None
        if action in ("resume", "stop") and state in ("paused", "interrupted") and not self.busy:
            self._actions.append((action, job["id"]))
            self.wake()
            return None
        return f"job {job['id']} is {state}: cannot {action} it"

    # ------------------------------------------------------------ what the page shows

    def state(self):
        row = self.row
        jobs = self.lab.db.jobs(self.id)
        job = self.lab.db.active_job(self.id)
        if job is None:  # the newest job that ran (a fault stays shown, across restarts too)
            ran = [j for j in jobs if j["started_unix_s"] is not None]
            job = ran[-1] if ran else None
        queued = [j["id"] for j in jobs if j["state"] == "queued"]
        live = self.live.snapshot() if self.live and job and self.job_id == job["id"] else {}
        return {"id": self.id, "kind": self.kind, "board": row["board"], "held": bool(row["held"]),
                "port": row["port"], "error": self.error, "job": public_job(job), "queued": queued,
                "live": live}

    def publish_state(self):
        self.lab.hub.publish({"type": "state", "channel": self.id, "state": self.state()})

    def event(self, kind, text, job_id=None):
        ev = self.lab.db.add_event(kind, text, self.id, job_id or self.job_id)
        self.lab.hub.publish({"type": "event", "channel": self.id, "event": ev})

    def cycles(self):
        return list(self.live.cycles.rows) if self.live else []

    # ------------------------------------------------------------ the thread

    def start(self):
        self.thread.start()

    def _main(self):
        while not self.lab.stopping.is_set():
            try:
                self._turn()
            except _Retry:
                self._wake.wait(5.0)
            except Exception as exc:  # a host bug must not end the channel silently
                traceback.print_exc()
                self._show_error(f"lab error: {exc!r}")
                self._wake.wait(5.0)
            self._wake.wait(1.0)
            self._wake.clear()

    def _turn(self):
        """One turn of the thread: the board made reachable, then the next thing done.
        A turn that goes through clears the error; one that must wait (_Retry) keeps the
        error it showed, so the card says why until the wait is over."""
        self._board_ready()
        self._step()
        self._show_error("")

    def _show_error(self, text):
        """Set what the card says is wrong ("" for nothing) and publish it if it changed.
        Only changes are published: a channel retrying each second sends nothing new."""
        if text != self.error:
            self.error = text
            self.publish_state()

    def _board_ready(self):
        """Start the simulated board if it is not running (a real one is just there)."""
        try:
            self.lab.boards.ensure(self.row)
        except (InputError, OSError, LinkError) as exc:
            if str(exc) != self.error:
                self.event("board_error", f"board not reachable: {exc}")
            self._show_error(str(exc))
            raise _Retry() from None

    def _step(self):
        """Do the one thing the channel should do next, if any."""
        db = self.lab.db
        job = db.active_job(self.id)
        if job is not None and job["state"] in ("running", "starting"):
            return self._reattach(job)
        if job is not None:  # paused or interrupted: only the user moves it on
            while self._actions:
                action, job_id = self._actions.popleft()
                if job_id != job["id"]:
                    continue
                if action == "resume":
                    return self._continue(job, recover=job["state"] == "interrupted")
                return self._stop_paused(job)
            return None
        self._actions.clear()
        if self.row["held"]:
            return None
        job = db.next_queued(self.id)
        if job is not None:
            return self._start(job)
        return None

    def _start(self, job):
        log = self.lab.layout.log_path(job["cell_name"], job["id"], job["protocol_name"])
        db = self.lab.db
        try:
            files = session.preflight(job["protocol_path"], log, load_board(self.row["board"]),
                                      job["mass_mg"], job["model_path"], job["tick_ms"])
        except InputError as exc:
            db.set_job(job["id"], state="failed", stop_reason=f"refused: {exc}", ended_unix_s=time.time())
            self.event("job_end", f"job {job['id']} refused: {exc}", job["id"])
            return
        meta = {"lab": {"channel": self.id, "job": job["id"], "cell_name": job["cell_name"]}}
        try:
            meta.update(self.lab.boards.sim_meta(self.row))
        except InputError as exc:  # a simulated board still booting: the job waits queued
            self._show_error(f"job {job['id']} waits for the board: {exc}")
            raise _Retry() from None

        def begin():  # the board answered: the job starts (until then it stays queued)
            db.set_job(job["id"], state="starting", log_path=str(log), started_unix_s=time.time())
            self.event("job_start", f"job {job['id']} started: {job['protocol_name']} on "
                       f"{job['cell_name']}", job["id"])

        self._drive(job, lambda t, hooks: session.run(files, t, log, extra_meta=meta, **hooks),
                    on_open=begin)

    def _reattach(self, job):
        """A job the service was running when it went away: continue its log."""
        if not job["log_path"] or not Path(job["log_path"]).is_file():
            self._end(job, "failed", "the lab stopped before the run's log was opened")
            return
        self.event("reattach", f"job {job['id']}: the lab restarted; re-attaching to the "
                   f"board and fetching what it kept", job["id"])
        self._continue(job)

    def _continue(self, job, recover=False):
        log = job["log_path"]
        try:
            meta = session.preflight_resume(log)
        except InputError as exc:
            # The run ended (its log is closed) before the service could note it.
            side = bdflog.read_sidecar(log) if Path(log).is_file() else {}
            reason = side.get("stop_reason")
            self._end(job, job_state(reason) if reason else "failed", reason or str(exc))
            return
        self._drive(job, lambda t, hooks: session.resume(log, t, recover=recover, meta=meta,
                                                         **hooks), replay_log=log)

    def _stop_paused(self, job):
        """Stop a paused run: fetch what the board recorded meanwhile, STOP, close the log."""
        log = job["log_path"]
        meta = session.preflight_resume(log)
        transport = self.lab.boards.open(self.row)
        s = session.Session.reattach(log, meta, transport)
        try:
            from_seq = s.check_board()
            if from_seq is not None:
                s.link.resend_from(from_seq)
            s.halt(STOPPED_BY_USER)
        except (InputError, LinkError, OSError) as exc:
            s.summary["stop_reason"] = f"{STOPPED_BY_USER} ({exc})"
        finally:
            s.close()
            transport.close()
        self._end(job, "stopped", s.summary["stop_reason"], hold=True)

    def _drive(self, job, body, replay_log=None, on_open=None):
        """Run ``body(transport, hooks)`` (session.run or session.resume) and note how it
        ended; ``on_open()`` once the board's transport is open (a board that cannot be
        reached yet leaves everything as it was: the thread tries again)."""
        self.job_id = job["id"]
        self.busy = True
        try:
            transport = self._transport = Interruptible(self.lab.boards.open(self.row))
        except (InputError, OSError) as exc:
            self.busy = False
            self._show_error(f"job {job['id']} waits for the board: {exc}")
            raise _Retry() from None
        self._show_error("")  # the board answers: nothing to wait for
        if on_open is not None:
            on_open()

        def follow(table, protocol, mass_mg):
            model = self._session.model if self._session is not None else None
            live = Live(table, protocol, mass_mg, model)
            if replay_log:
                try:
                    replay(live, bdflog.read_log(replay_log))
                except InputError:  # a log with no record yet: nothing to show
                    pass
            self.live = live
            self.lab.db.set_job(job["id"], state="running", stop_reason=None)
            transport.armed = True
            self.publish_state()
            return Feed(self, live)

        def on_session(s):
            self._session = s

        hooks = {"progress": follow, "on_session": on_session, "on_interrupt": "pause"}
        try:
            summary = body(transport, hooks)
        except session.Interrupted as exc:
            summary = exc.summary
        except InputError as exc:
            # A board reset while nobody listened: its journal waits for the user's resume.
            reset = getattr(self._session, "_journal", None)
            summary = {"stop_reason": session.BOARD_RESET if reset else f"refused: {exc}"}
        except LinkError as exc:
            summary = {"stop_reason": f"link error: {exc}"}
        except Exception as exc:
            traceback.print_exc()
            summary = {"stop_reason": f"lab error: {exc!r}"}
        finally:
            transport.close()
            self._transport = self._session = None
            self.busy = False
        reason = summary.get("stop_reason")
        if reason == "interrupted":  # the session's word for a stop asked by the user
            reason = STOPPED_BY_USER
        elif reason == session.PAUSED:
            reason = "paused by the user"
        state = job_state(reason)
        self._end(job, state, reason, hold=state in ("fault", "stopped", "failed"))

    def _end(self, job, state, reason, hold=False):
        finished = state not in ("paused", "interrupted")
        self.lab.db.set_job(job["id"], state=state, stop_reason=reason,
                            ended_unix_s=time.time() if finished else None)
        if hold:
            self.lab.db.update_channel(self.id, held=1)
        self.event("job_end" if finished else "job_" + state,
                   f"job {job['id']} {state}: {reason}", job["id"])
        self.publish_state()


class _Retry(Exception):
    """The board is not reachable now: the channel tries again later."""


def public_job(job):
    """A job row as the API shows it (paths relative to nothing: the log is downloaded)."""
    if job is None:
        return None
    out = {k: job[k] for k in ("id", "channel_id", "state", "cell_name", "mass_mg",
                               "protocol_name", "tick_ms", "stop_reason", "created_unix_s",
                               "started_unix_s", "ended_unix_s")}
    out["has_log"] = bool(job["log_path"]) and Path(job["log_path"]).is_file()
    out["has_model"] = bool(job["model_path"])
    return out
