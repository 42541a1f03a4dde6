"""Virtual clock for the simulated board: shadows MicroPython's ``time`` module.

It sits on MICROPYPATH before ``firmware/``, so the unmodified firmware's ``import time``
gets this module. Virtual time starts at 0 us at boot and only moves when the firmware
sleeps, polls (see select.py) or reads a tick counter (1 us per read, so a busy-wait loop
still makes progress). A week of cell time therefore runs as fast as the CPU allows.

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


def now_us():
    """Virtual microseconds since boot (a plain int, never wraps)."""
    return _now_us


def advance_us(dt_us):
    """Move virtual time forward by ``dt_us`` microseconds and run the hooks."""
    global _now_us
    if dt_us > 0:
        _now_us += int(dt_us)
        for hook in _hooks:
            hook(_now_us)


def add_hook(fn):
    """Call ``fn(now_us)`` after every advance of virtual time."""
    _hooks.append(fn)


def ticks_ms():
    global _now_us
    _now_us += 1
    return (_now_us // 1000 + MS0) & _MASK


def ticks_us():
    global _now_us
    _now_us += 1
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
