"""Virtual-time ``select`` for the simulated board (shadows MicroPython's module).

``poll().poll(timeout_ms)`` first asks the real stdin/stdout whether they are ready
(timeout 0). If something is, it returns at once, as the board would. If not, the board
would have waited ``timeout_ms``: virtual time moves on by that much and ``[]`` comes back.
A negative timeout (wait forever) blocks on the real descriptors with the clock stopped.
"""

import uselect as _real

import time as _clock  # the virtual clock (time.py next to this file)

POLLIN = _real.POLLIN
POLLOUT = _real.POLLOUT
POLLERR = _real.POLLERR
POLLHUP = _real.POLLHUP


class _Poll:
    def __init__(self):
        self._p = _real.poll()

    def register(self, obj, eventmask=POLLIN | POLLOUT):
        self._p.register(obj, eventmask)

    def unregister(self, obj):
        self._p.unregister(obj)

    def modify(self, obj, eventmask):
        self._p.modify(obj, eventmask)

    def poll(self, timeout=-1):
        ready = self._p.poll(0)
        if ready:
            return ready
        if timeout is None or timeout < 0:
            return self._p.poll(-1)
        _clock.advance_us(int(timeout) * 1000)
        return []

    def ipoll(self, timeout=-1, flags=0):
        return iter(self.poll(timeout))


def poll():
    return _Poll()
