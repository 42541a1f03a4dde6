"""Virtual-time ``select`` for the simulated board (shadows MicroPython's module).

``poll().poll(timeout_ms)`` first asks the real stdin/stdout whether they are ready
(timeout 0). If something is, it returns at once, as the board would. If not, the board
would have waited ``timeout_ms``: virtual time moves on by that much and ``[]`` comes back,
so a running board goes through its ticks as fast as the CPU allows.

An idle board (no run, no SET current: the firmware's ``main.CONTROLLER.idle``; the loop
polls only when it has nothing to write) has nothing to compute until a command comes:
it waits on the real descriptors for ``timeout_ms / IDLE_SPEEDUP`` of real time instead
of spinning, and virtual time moves on by IDLE_SPEEDUP times the real time waited (all of
``timeout_ms`` when nothing came). Idle, a board thus costs a few ticks of CPU per real
second instead of thousands, while a host that waits for idle ticks (a STATUS after the
current went off) still sees them come a hundred times faster than on a real board;
what the firmware does and sees is the same.
A negative timeout (wait forever) blocks on the real descriptors with the clock stopped.

CELLBENCH_SIM_WAIT_PACED=1 (set by the relay of a detached board, cellbench.sim.detached)
paces an unpaced board the same way while its run waits for a command: PAUSED, or FULL
(current off until a host ACKs). A detached board outlives its host, and so may wait
like that for as long as no host comes; its clock, records and limits go on as before,
a hundred times faster than real time rather than as fast as a whole core allows.

CELLBENCH_SIM_SPEED=N (virtual seconds per real second, e.g. 1 for real time, 600 for ten
minutes a second) paces a running board the same way: it waits on the real descriptors
for ``timeout_ms / N`` between ticks instead of running as fast as the CPU allows (the
lab service, `cellbench lab`, runs many boards at once). Unset or 0: unpaced.

CELLBENCH_SIM_SYNC="<request fd>,<reply fd>" (set by cellbench.sim.start_board with
lockstep=True; unpaced only) makes a run repeat bit for bit: whatever the host sends
arrives at a virtual time fixed by what the board sent, not by when the host got round
to it. Before each advance of the clock the board writes one byte on the request pipe and
waits, clock stopped, for the host's byte on the reply pipe, which the host
(sim.SimBoard.readline) writes only once it has read every line the board wrote and
waits for more: anything it sent in answer is then in stdin and is read first. The board
still sees only a serial line whose bytes come when they come; a host that stops
reading holds the clock (and the plant) still, and closing the reply pipe ends lockstep.
"""

import os
import sys
import utime as _wall  # the host's real clock (time.py shadows the name `time`)
import uselect as _real

import time as _clock  # the virtual clock (time.py next to this file)

IDLE_SPEEDUP = 100  # virtual ms per real ms while the firmware is idle (see above)
_SPEED = float(os.getenv("CELLBENCH_SIM_SPEED") or 0)  # virtual ms per real ms running; 0: unpaced
_SYNC = os.getenv("CELLBENCH_SIM_SYNC") if not _SPEED else None  # lockstep pipes (see above)
_WAIT_PACED = bool(os.getenv("CELLBENCH_SIM_WAIT_PACED")) and not _SPEED  # (see above)

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
        if _lockstep.on:
            ready = _lockstep.wait(self._p)
            if ready:
                return ready
            _clock.advance_us(int(timeout) * 1000)
            return []
        speedup = IDLE_SPEEDUP if _idle() else _SPEED
        if speedup > 0:
            t0 = _wall.ticks_us()
            ready = self._p.poll(int(int(timeout) // speedup))
            waited_us = int(_wall.ticks_diff(_wall.ticks_us(), t0) * speedup)
            _clock.advance_us(min(max(waited_us, 0), int(timeout) * 1000) if ready else int(timeout) * 1000)
            return ready
        _clock.advance_us(int(timeout) * 1000)
        return []

    def ipoll(self, timeout=-1, flags=0):
        return iter(self.poll(timeout))


class _Lockstep:
    """The board's end of the lockstep pipes (CELLBENCH_SIM_SYNC, see the docstring)."""

    def __init__(self, spec):
        self.on = False
        if spec:
            req, rep = spec.split(",")
            self.req = open(int(req), "wb")
            self.rep = open(int(rep), "rb")
            self.on = True

    def wait(self, p):
        """Ask the host, wait for its go, then what it sent meanwhile (poll list or [])."""
        try:
            self.req.write(b"?")
            go = self.rep.read(1)
        except OSError:
            go = b""
        if not go:  # the host closed its end: back to free running
            self.on = False
        return p.poll(0)


_lockstep = _Lockstep(_SYNC)


def _idle():
    # The firmware's own word for it (controller.Controller.idle), once main.py has booted;
    # with _WAIT_PACED a run that waits for a command counts too (its states' names are
    # the controller's).
    ctl = getattr(sys.modules.get("main"), "CONTROLLER", None)
    if ctl is None:
        return False
    if ctl.idle:
        return True
    if not _WAIT_PACED:
        return False
    c = sys.modules["controller"]
    return ctl.state == c.PAUSED or ctl.state == c.FULL


def poll():
    return _Poll()
