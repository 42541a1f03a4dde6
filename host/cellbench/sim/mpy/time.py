"""Virtual clock for the simulated board: shadows MicroPython's ``time`` module.

It sits on MICROPYPATH before ``firmware/``, so the unmodified firmware's ``import time``
gets this module. Virtual time starts at 0 us at boot and only moves when the firmware
sleeps or polls (see select.py): the board computes in no time, so how often it reads
the clock never moves a tick (a tick's dt is exactly its tick_ms, and the same run gives
the same log). Only a busy-wait, SPIN_READS reads in a row with the clock still, makes
progress: from then on each read advances 1 us. A week of cell time runs as fast as the
CPU allows.

The ticks counters wrap with MicroPython's real period (2**30) and start 20 s before the
wrap point, so firmware that mishandles wraparound fails within the first minute.
Wall-clock calls (``time()``, ``localtime()``) are the host's boot time plus virtual time;
``import utime`` still reaches the built-in module.
"""

import utime as _real

PERIOD = 1 << 30  # MicroPython ticks period (MICROPY_PY_TIME_TICKS_PERIOD)
_MASK = PERIOD - 1
_HALF = PERIOD >> 1
MS0 = PERIOD - 20000  # ticks_ms at boot: wraps 20 s in
US0 = PERIOD - 20000000  # ticks_us at boot: wraps 20 s in

_now_us = 0  # virtual microseconds since boot
_epoch0 = _real.time()  # host unix time at boot: origin of the virtual wall clock
_hooks = []  # hook(now_us) runs after every advance: watchdog, timers
SPIN_READS = 100000  # clock reads with no advance between them that make a busy-wait
_reads = 0  # clock reads since virtual time last moved


def now_us():
    """Virtual microseconds since boot (a plain int, never wraps)."""
    return _now_us


def advance_us(dt_us):
    """Move virtual time forward by ``dt_us`` microseconds and run the hooks."""
    global _now_us, _reads
    if dt_us > 0:
        _now_us += int(dt_us)
        _reads = 0
        for hook in _hooks:
            hook(_now_us)


def add_hook(fn):
    """Call ``fn(now_us)`` after every advance of virtual time."""
    _hooks.append(fn)


def _read():
    # A read is free unless the firmware spins on the clock (see the module docstring);
    # a count of reads, not wall time, decides that, so a run still repeats exactly.
    global _reads
    _reads += 1
    if _reads > SPIN_READS:
        advance_us(1)
        _reads = SPIN_READS


def ticks_ms():
    _read()
    return (_now_us // 1000 + MS0) & _MASK


def ticks_us():
    _read()
    return (_now_us + US0) & _MASK


ticks_cpu = ticks_us


def ticks_add(ticks, delta):
    return (ticks + delta) & _MASK


def ticks_diff(end, start):
    """Signed difference ``end - start`` on the wrapping ticks scale."""
    return ((end - start + _HALF) & _MASK) - _HALF


def sleep(seconds):
    advance_us(int(seconds * 1000000))


def sleep_ms(ms):
    advance_us(int(ms) * 1000)


def sleep_us(us):
    advance_us(int(us))


def time():
    """Unix seconds (int, like the rp2 port): host boot time plus virtual time."""
    return int(_epoch0) + _now_us // 1000000


def time_ns():
    return int(_epoch0) * 1000000000 + _now_us * 1000


def localtime(secs=None):
    return _real.localtime(time() if secs is None else secs)


def gmtime(secs=None):
    return _real.gmtime(time() if secs is None else secs)


def mktime(tup):
    return _real.mktime(tup)
