"""Firmware entry point: the fixed-rate tick loop and the serial port.

Everything else lives in importable modules (link.Controller does the work of a tick
and of each command); this file owns only the clock and stdin/stdout. The tick is
fixed-rate with time.ticks_* arithmetic (wraparound-safe): deadlines advance by tick_ms
so jitter does not accumulate, a late tick is not repeated to catch up, and dt passed
to the controller is always the real elapsed ms. Between ticks, select.poll waits on
stdin for at most the time left (under the simulator that advances virtual time).
"""

import gc
import select
import sys
import time

import board
import link
import record

RING_MAX = 1500           # records + events kept until the host acknowledges them
RING_MIN = 64
HEAP_RESERVE = 24 * 1024  # left free after the ring (besides HOLES): replies, JSON, GC slack
HOLES = 4                 # contiguous blocks kept free through the ring's allocation, for
HOLE = 4096               # the copies of a long LOAD/MODEL line and its parsed JSON


def make_ring():
    """The record ring, as large as fits (up to RING_MAX) with HEAP_RESERVE bytes left.

    Made after every import and board.load(), so it takes what is really left (the
    compiler's peaks are over by then); if the fragmented heap refuses it, or it leaves
    less than the reserve, it shrinks by a quarter and tries again (its small chunks
    fit in the holes the imports left).
    """
    gc.collect()
    n = max(RING_MIN, min(RING_MAX, (gc.mem_free() - HEAP_RESERVE) // record.BYTES_PER_SLOT))
    while True:
        try:
            ring = record.Ring(n)
            gc.collect()
            if gc.mem_free() >= HEAP_RESERVE or n == RING_MIN:
                return ring
            del ring
        except MemoryError:
            if n == RING_MIN:
                raise
        gc.collect()
        n = max(RING_MIN, n * 3 // 4)


def keep_holes():
    """Claim up to HOLES contiguous blocks while the heap still has them.

    The ring's chunks would otherwise fill every hole big enough for them; freed once
    the ring is made, these are where long command lines and their JSON fit later.
    """
    held = []
    for _ in range(HOLES):
        try:
            held.append(bytearray(HOLE))
        except MemoryError:
            break
    return held


def _ports():
    out = getattr(sys.stdout, "buffer", sys.stdout)
    inp = getattr(sys.stdin, "buffer", sys.stdin)
    return inp, out


def _write(out, lines):
    for line in lines:
        out.write(line)
    if lines and hasattr(out, "flush"):
        out.flush()


def main():
    b = board.load()
    b.off()
    link.estimator_class()  # import the estimator at boot, not in the middle of a MODEL
    ctl = link.Controller(b, capacity=1)  # its line buffer first, while a hole fits it
    held = keep_holes()
    ctl.ring = make_ring()
    del held
    gc.collect()
    inp, out = _ports()
    poll = select.poll()
    poll.register(sys.stdin, select.POLLIN)
    reading = True
    last = time.ticks_ms()
    deadline = time.ticks_add(last, ctl.tick_ms)
    while True:
        now = time.ticks_ms()
        wait = time.ticks_diff(deadline, now)
        if wait <= 0:
            ctl.tick(time.ticks_diff(now, last))
            last = now
            deadline = time.ticks_add(deadline, ctl.tick_ms)
            if time.ticks_diff(deadline, now) <= 0:
                deadline = time.ticks_add(now, ctl.tick_ms)  # late: skip, don't burst
            continue
        lines = ctl.output()
        if lines:
            # Drain replies and records in bursts, checking the deadline between them.
            _write(out, lines)
            continue
        if not reading:
            time.sleep_ms(wait)
            continue
        for ev in poll.poll(wait):
            if ev[1] & select.POLLIN:
                data = inp.read(1)
                if not data:
                    reading = False  # host closed stdin
                else:
                    ctl.feed(data)
            elif ev[1] & (select.POLLHUP | select.POLLERR):
                reading = False
        if not reading and sys.platform != "rp2":
            # Under the unix port nothing can reconnect: end cleanly, current off.
            b.off()
            return


main()
