"""The run: its state machine, the commands that move it and the records they leave.

The commands (LOAD, START, PAUSE, ...) arrive here already parsed by firmware/link.py as
plain values; a refusal raises CommandError and changes neither the state nor the
current. Those that run only between runs or once in a while are loaded for the command
and dropped after it (_once): setting a run up (runsetup.py: LOAD, START), continuing
one a reset interrupted (recovery.py), calibration (calibration.py: SET, HIST), the
run's report (status.py: STATUS). The
work of each tick is firmware/runtick.py's, the journal's saves firmware/runjournal.py's.

Units: uV, nA (> 0 charges the cell), ms, nAh, uWh, ppm; all integers.
"""

import gc
import sys

import journal
import record
import runjournal
import runtick
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


# Modules loaded for a command only (runsetup.py loads steptable.py for LOAD).
_ONCE = ("runsetup", "steptable", "recovery", "calibration", "status")


def _once(name, fn, *args):
    """name.fn(*args) from a module only some commands need (one of _ONCE): it is imported
    for the call and dropped after it, with any other of _ONCE it imported (LOAD's
    steptable, RECOVER's runsetup), so their bytecode holds no heap during a run. (Under
    CPython cellbench.fw caches them as cellbench.firmware.<name>; nothing to drop.)"""
    mod = __import__(name)
    try:
        return getattr(mod, fn)(*args)
    finally:
        for n in _ONCE:
            sys.modules.pop(n, None)


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
        self.j_due = False       # a step boundary waits for the journal's gap
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
        """LOAD: take a step table (a parsed JSON object) whose text has checksum crc
        (firmware/runsetup.py, loaded for the command only)."""
        return _once("runsetup", "load", self, table, crc)

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
        """START: run the loaded table from its first step (firmware/runsetup.py)."""
        return self._begin("runsetup")

    def recover(self):
        """RECOVER: continue the run the journal found unfinished at boot (docs/link.md;
        firmware/recovery.py)."""
        return self._begin("recovery")

    def pause(self):
        if self.state not in (RUNNING, FULL):
            raise CommandError("state", "not running (state %s)" % self.state)
        self.engine.stop()
        self.state = PAUSED
        self.event(record.EV_PAUSE)

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
            self.event(record.EV_STOP)
            runjournal.save(self, 0)
        return {"state": self.state}

    def status(self):
        """STATUS: the run in one reply (firmware/status.py, loaded for the command only)."""
        return _once("status", "status", self)

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

    def _begin(self, name):
        # START and RECOVER: name.prepare checks the command and resets the estimator,
        # name.begin sets the run going. The ring is made in between, with neither module
        # loaded, so that the heap their bytecode held goes to the ring as well.
        est = _once(name, "prepare", self)
        self._make_ring()
        return _once(name, "begin", self, est)

    def _make_ring(self):
        """The ring for a run: made again from the heap then free if it holds nothing
        (record.make_ring), refused (CommandError, nothing started) if it has no room."""
        if self.ring.count() == 0:
            head = self.ring.head
            self.ring = record.Ring(0, head)  # its memory counts as free for the new one
            gc.collect()
            try:
                self.ring = record.make_ring(self.max_slots, self.reserve_bytes, head)
            except MemoryError:
                pass  # refused below
        if self.ring.free() <= RESERVE:
            raise CommandError("ring", "record buffer full (ACK first)")

    def _continue(self):
        self.engine.resume()
        self.state = RUNNING
        self.event(record.EV_RESUME)

    # ------------------------------------------------------------ journal

    def _boot_journal(self):
        """At boot: note an unfinished journaled run (firmware/recovery.py, loaded only
        when the journal holds one)."""
        j = self.journal
        if j is not None and j.load() and j.words[journal.W_ACTIVE]:
            _once("recovery", "note_interrupted", self)

    # ------------------------------------------------------------ estimator

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

    # ------------------------------------------------------------ tick

    def tick(self, dt_ms):
        """One sampling tick; dt_ms = real ms since the previous tick. Never raises
        (firmware/runtick.py)."""
        runtick.tick(self, dt_ms)

    def push(self, kind):
        """A record (kind record.RECORD) or event into the ring: its seq, -1 if no slot."""
        e = self.engine
        b = self.board
        a = e.acc
        # t_ms is stored modulo 2**32 (49.7 days; the host unwraps it, it only grows).
        return self.ring.put(kind, self.t_ms & _T_MASK, b.v_uV, b.i_nA, e.step_count, e.step_index,
                             e.cycle, e.step_no, e.step_type, self.fault, a[steps.Q_CHG],
                             a[steps.Q_DCH], a[steps.Q_STEP], a[steps.E_CHG], a[steps.E_DCH],
                             self.soc_ppm, self.std_ppm, self.cap_nAh, self.cap_std_nAh,
                             self.r_mohm, self.r_std_mohm)

    def event(self, kind):
        seq = self.push(kind)
        if seq < 0:
            self.lost += 1
        return seq
