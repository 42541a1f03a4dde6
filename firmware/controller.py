"""The run: its state machine and the work of one tick.

Each tick (docs/design.md data flow): board.sample() -> safety -> step engine ->
estimator -> ring of records, plus the journal's rationed saves. The commands that
change the run (LOAD, START, PAUSE, ...) arrive here already parsed by firmware/link.py
as plain values; a refusal raises CommandError and changes neither the state nor the
current. tick() never raises: an exception inside it switches the current off and ends
the run with the INTERNAL fault bit.

Units: uV, nA (> 0 charges the cell), ms, nAh, uWh, ppm; all integers.
"""

import gc
import sys

import journal
import record
import safety
import steps

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x


RESERVE = const(4)          # ring slots kept for the events that end or pause a run
SET_MS = const(60000)       # SET: default time the forced current stays on (calibration)

_T_MASK = const(0xFFFFFFFF)  # record t_ms field width (array 'I')

# Run journal (firmware/journal.py: why these numbers, and the flash wear they give).
JOURNAL_MS = const(300000)   # within a long step, save the position at least every 5 min
_JOURNAL_GAP_MS = const(10000)  # never more often (a step boundary inside the gap waits)
SEQ_STRIDE = const(512)      # ... except every 512 seqs, so that a reset never reuses a seq
                             # (after one, seqs go on past the journal's: firmware/recovery.py)

IDLE = "IDLE"         # no step table loaded
READY = "READY"       # a table is loaded, no run yet
RUNNING = "RUNNING"
PAUSED = "PAUSED"     # PAUSE: current off, clock and records go on
FULL = "FULL"         # the ring is full of unacknowledged slots: current off until ACK
DONE = "DONE"         # the protocol ran to its end
STOPPED = "STOPPED"   # STOP ended the run
FAULT = "FAULT"       # a safety limit or an internal error ended the run
ACTIVE = (RUNNING, PAUSED, FULL)
LED_ON = (RUNNING, FULL)


def _once(name, fn, *args):
    """name.fn(*args) from a module only some commands need (recovery, calibration): it is
    imported for the call and dropped after it, so its bytecode holds no heap during a run.
    (Under CPython cellbench.fw caches it as cellbench.firmware.<name>; nothing to drop.)"""
    mod = __import__(name)
    try:
        return getattr(mod, fn)(*args)
    finally:
        sys.modules.pop(name, None)


class CommandError(Exception):
    """A command was refused: args are (field, message) for the ERR reply."""


class Controller:
    """One board's run: state, ring of records, journal.

    capacity: most ring slots (records + events) kept until the host acknowledges them;
    ring: the initial record.Ring (default Ring(capacity)); at each START with nothing
    unacknowledged the ring is re-made from the heap then free (record.make_ring), so
    MODEL and LOAD get the memory first and the ring the rest, minus reserve_bytes.
    journal: a journal.Journal (main.py), or None: no journal.
    """

    def __init__(self, board, capacity=1500, ring=None, reserve_bytes=24 * 1024, journal=None):
        self.board = board
        self.max_slots = capacity
        self.reserve_bytes = reserve_bytes
        self.ring = ring if ring is not None else record.Ring(capacity)
        self.trigger = record.Trigger()
        self.safety = safety.Safety(board)
        self.engine = steps.Engine(board)
        self.table = None
        self.model = None        # {} once MODEL was accepted (see set_estimator)
        self.model_est = None    # the estimator MODEL built
        self.est = None          # the estimator of the current run
        self.state = IDLE
        self.full_from = RUNNING
        self.fault = 0
        self.t_ms = 0
        self.tick_ms = board.tick_ms
        self.resync = False      # set by START: the loop should restart its tick clock
        self.soc_ppm = -1
        self.std_ppm = -1
        self.no_slow()
        self.lost = 0            # events that found no free slot
        self.error = ""          # the last internal error, for STATUS
        self.set_ms = 0          # ms left of a SET current (0: none), outside runs only
        board.off()
        self.journal = journal
        self.table_crc = 0       # the loaded table's checksum (journal W_TABLE)
        self.interrupted = None  # summary of an unfinished journaled run found at boot
        self.boot_seq = -1       # its INTERRUPTED event's seq (written once by the link)
        self.j_t_ms = 0          # t_ms and ring.head at the last journal save
        self.j_seq = 0
        self.j_due = False       # a step boundary waits for _JOURNAL_GAP_MS
        self._boot_journal()

    @property
    def t_ms(self):
        """Run time since START, ms: t_hi * record.T_WRAP + t_lo. The tick adds to t_lo,
        which stays a MicroPython small int; the full value (a big int on the RP2040
        after 12.4 days) is only made where it is reported (records, STATUS, journal)."""
        return self.t_hi * record.T_WRAP + self.t_lo

    @t_ms.setter
    def t_ms(self, value):
        self.t_hi, self.t_lo = divmod(value, record.T_WRAP)

    @property
    def idle(self):
        """True while nothing happens unless a command comes: no run, no SET current."""
        return self.state not in ACTIVE and not self.set_ms

    # ------------------------------------------------------------ commands

    def check_idle(self):
        """Refuse (CommandError) while a run is in progress."""
        if self.state in ACTIVE:
            raise CommandError("state", "run in progress (STOP first)")

    def load(self, table, crc):
        """LOAD: take a step table (a parsed JSON object) whose text has checksum crc."""
        self.check_idle()
        err = steps.validate(table, self.board)
        if err:
            raise CommandError(err[0], err[1])
        self.engine.load(table)
        self.safety.configure(table.get("safety"))
        rec = table.get("record") or {}
        tick_ms = table.get("tick_ms", self.board.tick_ms)
        self.trigger.configure(rec.get("dt_ms", 0), rec.get("dv_uV", 0), rec.get("di_nA", 0),
                               tick_ms // 2)
        self.table = table
        self.table_crc = crc  # RECOVER checks it (journal.W_TABLE)
        self.state = READY
        return {"steps": len(table["steps"]), "tick_ms": tick_ms}

    def free_empty_ring(self):
        """Before MODEL: an empty ring is made again at START anyway, so its memory goes
        to the model first (after a run the heap is too fragmented to hold both)."""
        self.check_idle()
        if self.ring.count() == 0 and self.ring.cap:
            self.ring = record.Ring(0, self.ring.head)

    def set_estimator(self, est, model):
        """MODEL: keep the estimator it built (None: none); the parsed model only for an
        estimator that cannot reset() itself (a 7 KB model is tens of KB of objects)."""
        self.check_idle()
        self.est = None  # the last run's estimator: its KBs go to the new one and the ring
        self.model_est = est
        self.model = model if est is not None and not hasattr(est, "reset") else {}
        return {"estimator": est is not None}

    def start(self):
        """START: run the loaded table from its first step."""
        self.check_idle()
        if self.table is None:
            raise CommandError("state", "no step table (LOAD first)")
        est = self.prepare_run(None)
        self.est = est
        self.soc_ppm = -1
        self.std_ppm = -1
        self.no_slow()
        self.fault = 0
        self.t_ms = 0
        self.engine.start()
        return {"seq": self.begin_run(self.table, record.EV_START), "tick_ms": self.tick_ms}

    def recover(self):
        """RECOVER: continue the run the journal found unfinished at boot (docs/link.md;
        firmware/recovery.py, loaded for the command only)."""
        return _once("recovery", "recover", self)

    def pause(self):
        if self.state not in (RUNNING, FULL):
            raise CommandError("state", "not running (state %s)" % self.state)
        self.engine.stop()
        self.state = PAUSED
        self._event(record.EV_PAUSE)

    def resume(self):
        """RESUME a PAUSEd run, also one whose ring filled while paused (FULL): that run
        goes on at the ACK that frees the ring, as a FULL from RUNNING does."""
        if self.state == FULL and self.full_from == PAUSED:
            self.full_from = RUNNING
            return
        if self.state != PAUSED:
            raise CommandError("state", "not paused (state %s)" % self.state)
        self._continue()

    def stop(self):
        """STOP: always accepted; whatever the state, the current becomes zero."""
        self.board.off()
        self.set_ms = 0
        if self.state in ACTIVE:
            self.state = STOPPED
            self._event(record.EV_STOP)
            self._journal_save(0)
        return {"state": self.state}

    def status(self):
        e = self.engine
        b = self.board
        return {"state": self.state, "fault": self.fault, "t_ms": self.t_ms,
                "step_no": e.step_no, "step_count": e.step_count, "step_index": e.step_index,
                "step_type": e.step_type, "cycle": e.cycle, "v_uV": b.v_uV, "i_nA": b.i_nA,
                "i_set_nA": e.i_cmd_nA, "q_chg_nAh": e.q_chg_nAh(), "q_dch_nAh": e.q_dch_nAh(),
                "soc_ppm": self.soc_ppm, "soc_std_ppm": self.std_ppm,
                "cap_nAh": self.cap_nAh, "cap_std_nAh": self.cap_std_nAh,
                "r_mohm": self.r_mohm, "r_std_mohm": self.r_std_mohm,
                "seq_next": self.ring.head, "seq_oldest": self.ring.tail,
                "free": self.ring.free(), "lost": self.lost, "tick_ms": self.tick_ms,
                "table": self.table is not None, "model": self.model is not None,
                "estimator": self.est is not None, "error": self.error,
                "interrupted": self.interrupted,
                "journal": "" if self.journal is None else self.journal.error}

    def ack(self, seq):
        """ACK: free the ring up to seq; a run paused by a full ring goes on."""
        r = self.ring
        if not r.ack(seq):
            raise CommandError("seq", "never sent (next seq is %d)" % r.head)
        if self.state == FULL and r.free() > RESERVE:
            if self.full_from == PAUSED:
                self.state = PAUSED
            else:
                self._continue()
        return {"oldest": r.tail, "free": r.free()}

    def set_current(self, i_nA, for_ms):
        """SET: force i_nA outside runs for for_ms (firmware/calibration.py)."""
        return _once("calibration", "set_current", self, i_nA, for_ms)

    def hist(self, ch, n):
        """HIST: histogram of n raw conversions of channel ch (firmware/calibration.py)."""
        return _once("calibration", "hist", self, ch, n)

    # ------------------------------------------------------------ run start

    def prepare_run(self, soc):
        """START and RECOVER before the run's state changes: the estimator reset (None
        without one), the ring made; refused while the ring has no room."""
        self.error = ""
        self.est = None  # the last run's, if another MODEL replaced it: free before the ring
        est = self._reset_estimator(soc)  # before the ring takes the heap: reset allocates
        if self.ring.count() == 0:
            self._refit_ring()
        if self.ring.free() <= RESERVE:
            raise CommandError("ring", "record buffer full (ACK first)")
        return est

    def begin_run(self, table, kind):
        """START and RECOVER once the engine is set: RUNNING, the event, the journal."""
        self.tick_ms = table.get("tick_ms", self.board.tick_ms)
        self.safety.reset()
        self.set_ms = 0  # a run takes the source over from SET
        b = self.board
        self.trigger.mark(self.t_ms, b.v_uV, b.i_nA)
        self.state = RUNNING
        self.resync = True  # main.py restarts the tick clock: the first dt starts now
        seq = self._event(kind)
        self.interrupted = None  # a new run replaces the interrupted one
        self._journal_save(1)
        return seq

    def _refit_ring(self):
        # Drop the empty ring first so that its memory counts as free for the new one.
        head = self.ring.head
        self.ring = record.Ring(0, head)
        gc.collect()
        try:
            self.ring = record.make_ring(self.max_slots, self.reserve_bytes, head)
        except MemoryError:
            pass  # START then refuses with ERR START ring

    def _continue(self):
        self.engine.resume()
        self.state = RUNNING
        self._event(record.EV_RESUME)

    # ------------------------------------------------------------ journal

    def _boot_journal(self):
        """At boot: note an unfinished journaled run (firmware/recovery.py, loaded only
        when the journal holds one)."""
        j = self.journal
        if j is not None and j.load() and j.words[journal.W_ACTIVE]:
            _once("recovery", "note_interrupted", self)

    def _journal_save(self, active):
        j = self.journal
        if j is None or self.table is None:
            return
        w = j.words
        w[journal.W_ACTIVE] = active
        w[journal.W_TABLE] = self.table_crc
        w[journal.W_T_LO] = self.t_ms & 0x3FFFFFFF
        w[journal.W_T_HI] = self.t_ms >> 30
        w[journal.W_SEQ] = self.ring.head
        w[journal.W_SOC] = self.soc_ppm
        w[journal.W_STD] = self.std_ppm
        w[journal.W_CAP] = self.cap_nAh
        w[journal.W_CAP_STD] = self.cap_std_nAh
        w[journal.W_R] = self.r_mohm
        w[journal.W_R_STD] = self.r_std_mohm
        w[journal.W_FAULT] = self.fault
        if not self.engine.save_state(w, journal.W_ENGINE, journal.MAX_LOOPS):
            w[journal.W_ACTIVE] = 0  # too many LOOPs to keep: the run cannot be recovered
            j.error = "journal: more than %d LOOP steps" % journal.MAX_LOOPS
        j.save()
        self.j_t_ms = self.t_ms
        self.j_seq = self.ring.head
        self.j_due = False

    def _journal_tick(self):
        # Rationed flash writes (journal.py): boundaries and the periodic save wait for the
        # gap; the seq stride does not, so a reset can never make a seq be used twice.
        if self.journal is None or self.state not in ACTIVE:
            return
        since = self.t_ms - self.j_t_ms
        if self.ring.head - self.j_seq >= SEQ_STRIDE or \
                (since >= _JOURNAL_GAP_MS and (self.j_due or since >= JOURNAL_MS)):
            self._journal_save(1)

    # ------------------------------------------------------------ estimator

    def _reset_estimator(self, soc=None):
        """The MODEL's estimator reset for a new run (None without one or if it fails)."""
        est = self.model_est
        if est is None:
            return None
        try:
            if hasattr(est, "reset"):
                est.reset(soc, self.board.v_uV, self.board.i_nA)  # None: from the rested voltage
            else:
                est = self.model_est = type(est)(self.model)
            return est
        except Exception as ex:
            self.error = "estimator: " + repr(ex)[:60]
            return None

    def no_slow(self):
        """No capacity (nAh) or charge-transfer resistance (mohm) estimate: all -1."""
        self.cap_nAh = -1
        self.cap_std_nAh = -1
        self.r_mohm = -1
        self.r_std_mohm = -1

    def copy_slow(self, est):
        # The slow states (issue 14); an estimator without them reports none.
        self.cap_nAh = getattr(est, "cap_nAh", -1)
        self.cap_std_nAh = getattr(est, "cap_std_nAh", -1)
        self.r_mohm = getattr(est, "r_mohm", -1)
        self.r_std_mohm = getattr(est, "r_std_mohm", -1)

    def _estimate(self, dt_ms):
        est = self.est
        if est is None:
            return
        try:
            est.step(self.board.i_nA, self.board.v_uV, dt_ms)
            self.soc_ppm = est.soc_ppm
            self.std_ppm = est.std_ppm
            self.copy_slow(est)
        except Exception as ex:
            # The run matters more than the estimate: drop the estimator, say so.
            self.est = None
            self.soc_ppm = -1
            self.std_ppm = -1
            self.no_slow()
            self.error = "estimator: " + repr(ex)[:60]
            self._event(record.EV_ESTIMATOR)

    # ------------------------------------------------------------ tick

    def tick(self, dt_ms):
        """One sampling tick; dt_ms = real ms since the previous tick. Never raises."""
        try:
            self.board.sample()
            if self.state in ACTIVE:
                self._run_tick(dt_ms)
                self._journal_tick()
            elif self.set_ms:
                self._set_tick(dt_ms)
        except Exception as ex:
            self._internal(ex)
        self.board.led(self.state in LED_ON)
        self.board.feed()

    def _set_tick(self, dt_ms):
        # A SET current obeys the board's voltage limits and its time, like a run would.
        b = self.board
        self.set_ms -= dt_ms
        if self.set_ms <= 0 or not b.min_uV <= b.v_uV <= b.max_uV:
            b.off()
            self.set_ms = 0

    def _run_tick(self, dt_ms):
        eng = self.engine
        st = self.state
        self.t_lo += dt_ms  # small ints only (t_ms would outgrow them after 12.4 days)
        if self.t_lo >= record.T_WRAP:
            self.t_lo -= record.T_WRAP
            self.t_hi += 1
        eng.count(dt_ms)
        bits = 0
        ended = False
        force = False
        if st == RUNNING:
            bits = self.safety.check(eng.acc[steps.Q_STEP], dt_ms)
            if bits:
                self.fault |= bits
                force = True
            else:
                ended = eng.control(dt_ms)
                force = ended or eng.step_index == 0
        self._estimate(dt_ms)
        b = self.board
        if st != FULL and (force or self.trigger.due(self.t_lo, b.v_uV, b.i_nA)):
            if self._push(record.RECORD) >= 0:
                self.trigger.mark(self.t_lo, b.v_uV, b.i_nA)
        if bits:
            self._end(FAULT, record.EV_FAULT)
        elif ended and not eng.advance():
            self._end(DONE, record.EV_END)
        elif ended:
            self.j_due = True  # a step boundary: the journal saves the new position
        st = self.state
        if (st == RUNNING or st == PAUSED) and self.ring.free() <= RESERVE:
            # Pause at this safe point rather than overwrite what the host has not got.
            self.full_from = self.state
            eng.stop()
            self.state = FULL
            self._event(record.EV_FULL)

    def _end(self, state, kind):
        self.engine.stop()
        self.state = state
        self._event(kind)
        self._journal_save(0)

    def _internal(self, ex):
        self.board.off()
        self.error = repr(ex)[:80]
        if self.state in ACTIVE:
            self.fault |= safety.INTERNAL
            self.state = FAULT
            try:
                self._event(record.EV_FAULT)
            except Exception:
                self.lost += 1
            try:
                self._journal_save(0)  # a faulted run is not one to recover
            except Exception:
                pass

    def _push(self, kind):
        e = self.engine
        b = self.board
        a = e.acc
        # t_ms is stored modulo 2**32 (49.7 days; the host unwraps it, it only grows).
        return self.ring.put(kind, self.t_ms & _T_MASK, b.v_uV, b.i_nA, e.step_count, e.step_index,
                             e.cycle, e.step_no, e.step_type, self.fault, a[steps.Q_CHG],
                             a[steps.Q_DCH], a[steps.Q_STEP], a[steps.E_CHG], a[steps.E_DCH],
                             self.soc_ppm, self.std_ppm, self.cap_nAh, self.cap_std_nAh,
                             self.r_mohm, self.r_std_mohm)

    def _event(self, kind):
        seq = self._push(kind)
        if seq < 0:
            self.lost += 1
        return seq
