"""Firmware entry point: the fixed-rate tick loop and the serial port.

Everything else lives in importable modules (controller.Controller does the work of a
tick, link.Link reads and answers the commands); this file owns only the clock and
stdin/stdout. The tick is
fixed-rate with time.ticks_* arithmetic (wraparound-safe): deadlines advance by tick_ms
so jitter does not accumulate, a late tick is not repeated to catch up, and dt passed
to the controller is always the real elapsed ms. Between ticks, select.poll waits on
stdin for at most the time left (under the simulator that advances virtual time).
"""

import gc

# Claimed before any import fragments the heap: the command line buffer (a MODEL line
# is 5-8 KB). The record ring is made later, at START (controller.Controller._refit_ring), so
# that the model and the step table get their memory first.
LINE = bytearray(12288)

import select  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import controller  # noqa: E402
import journal  # noqa: E402
import link  # noqa: E402
import record  # noqa: E402

link.estimator_class()  # compile the estimator now, not in the middle of a MODEL

import board  # noqa: E402

RING_MAX = 1500           # records + events kept until the host acknowledges them
HEAP_RESERVE = 38 * 1024  # left free after the ring: replies, record lines, estimator, GC
# (32 KB ran out on a 15 %-smaller heap once the filter read model-error tables and a
# capacity state: tests/test_memory.py::test_headroom_below_the_board_heap; 38 and 40 KB
# both pass it and both fail at 18 % less, so the last 2 KB bought nothing but ring)


def _idle_collector():
    """The heap collected between ticks instead of inside one (firmware/idlegc.py), on the
    chip, where a collection takes ~15 ms of a tick. Not on the unix port: there it takes
    microseconds, and its 64-bit heap, the simulated board's stand-in for the chip's, would
    pay 1.5 KB for it (the chip has the room: make bench's emu rows)."""
    if sys.platform != "rp2":
        return None
    import idlegc

    return idlegc.IdleCollector()


def _ports():
    out = getattr(sys.stdout, "buffer", sys.stdout)
    inp = getattr(sys.stdin, "buffer", sys.stdin)
    return inp, out


JOURNAL = "journal.bin"   # the run journal in the flash root (firmware/journal.py)


def boot():
    """Board up with the current off, its controller and link (the ring comes at START).

    After any reset (watchdog, brown-out, power cut) this is where the board starts: the
    current is off before anything else, and an unfinished run found in the journal is
    reported (INTERRUPTED event, ID/STATUS "interrupted") but resumed only on RECOVER.
    """
    b = board.load()
    b.off()
    ctl = controller.Controller(b, capacity=RING_MAX, ring=record.Ring(0),
                                reserve_bytes=HEAP_RESERVE, journal=journal.Journal(JOURNAL))
    lk = link.Link(ctl, line=LINE)
    gc.collect()
    return b, ctl, lk


class Loop:
    """The fixed-rate tick and the non-blocking serial port around one Controller."""

    def __init__(self, b, ctl, lk):
        self.board = b
        self.ctl = ctl
        self.link = lk
        self.inp, self.out = _ports()
        self.poll = select.poll()
        self.poll.register(sys.stdin, select.POLLIN)
        self.reading = True
        self.idle = _idle_collector()
        self.last = time.ticks_ms()
        self.deadline = time.ticks_add(self.last, ctl.tick_ms)

    def run(self):
        """Until stdin closes on the unix port; forever on the board."""
        while self.reading or sys.platform == "rp2":
            wait = time.ticks_diff(self.deadline, time.ticks_ms())
            if wait <= 0:
                self._tick()
                if self.idle:
                    self.idle.after_tick()
            elif not self._write(self.link.output()):
                self._read(self._wait_ms(wait))
        self.board.off()  # unix port: nothing can reconnect, end with the current off

    def _wait_ms(self, wait):
        # A tick longer than the watchdog's timeout (a 10 s tick, a 5 s watchdog) must not
        # reset the board: wait at most half the timeout at a time and feed the dog in
        # between. The loop coming round is the liveness the watchdog is there to check;
        # a hung tick or link still stops it.
        half = self.board.wdt_ms >> 1
        if half and wait > half:
            self.board.feed()
            return half
        return wait

    def _tick(self):
        now = time.ticks_ms()
        self.ctl.tick(time.ticks_diff(now, self.last))
        self.last = now
        self.deadline = time.ticks_add(self.deadline, self.ctl.tick_ms)
        if time.ticks_diff(self.deadline, now) <= 0:
            self.deadline = time.ticks_add(now, self.ctl.tick_ms)  # late: skip, don't burst

    def _write(self, lines):
        # Replies and records go out in bursts; the caller checks the deadline in between.
        if not lines:
            return False
        try:
            for line in lines:
                self.out.write(line)
            if hasattr(self.out, "flush"):
                self.out.flush()
        except OSError:
            pass  # nobody listening: the ring keeps the records until a host ACKs them
        return True

    def _read(self, wait_ms):
        if not self.reading:
            time.sleep_ms(wait_ms)
            return
        for ev in self.poll.poll(wait_ms):
            if ev[1] & select.POLLIN:
                data = self.inp.read(1)
                if data:
                    self._feed(data)
                else:
                    self.reading = False  # the host closed stdin
            elif ev[1] & (select.POLLHUP | select.POLLERR):
                self.reading = False

    def _feed(self, data):
        self.link.feed(data)
        if self.ctl.resync:
            # A run starts: its ticks (and dt) count from now, at its tick_ms.
            self.ctl.resync = False
            if self.idle:
                self.idle.restart()  # what a tick allocates changes with the run (model, ring)
            self.last = time.ticks_ms()
            self.deadline = time.ticks_add(self.last, self.ctl.tick_ms)


BOARD, CONTROLLER, LINK = boot()
try:
    Loop(BOARD, CONTROLLER, LINK).run()
finally:
    # Whatever ends the loop (a bug, Ctrl-C at the REPL), the cell is left with no
    # current; the watchdog, no longer fed, then resets the board into boot().
    BOARD.off()
