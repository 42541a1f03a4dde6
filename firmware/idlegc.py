"""Garbage collection in the idle time between ticks (main.py's loop calls it after a tick).

A tick with the estimator leaves 10-16 KB of garbage on the RP2040 (32-bit floats are heap
objects on the rp2 port too), and a collection with the record ring in place takes ~15 ms
(MicroPython's collector scans every live block, the ring's arrays included). Left to the
allocator, a collection falls inside a tick every few ticks and delays that tick's work.
IdleCollector collects right after a tick instead, often enough that the allocator never
has to: every ``every`` ticks, with ``every`` measured from the heap itself.

Measuring costs two heap scans (gc.mem_free walks the whole allocation table, ~9 ms on
the RP2040), so it is done once after a (re)start and again every REMEASURE collections,
never per tick. Under CPython (no gc.mem_free) it does nothing.
"""

import gc

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x

MAX_EVERY = const(64)   # ticks between collections when a tick leaves (almost) no garbage
REMEASURE = const(16)   # collections between two measurements of the garbage per tick


class IdleCollector:
    """Collect after every ``every``-th tick, ``every`` being the ticks whose garbage fits
    in the heap a collection leaves free (with a quarter of a tick's to spare).

    ``after_tick()`` right after each tick (in the idle time before the next); ``restart()``
    when what a tick allocates may change (a run starts, a model is loaded). ``collections``
    counts the collections it made."""

    def __init__(self):
        self.collections = 0
        self.every = 0
        self.count = 0
        self._free0 = -1
        self._since = 0
        try:
            gc.mem_free()
            self.enabled = True
        except AttributeError:
            self.enabled = False

    def restart(self):
        """Measure the garbage per tick again from the next tick on."""
        self.every = 0
        self._free0 = -1

    def after_tick(self):
        """Called right after a tick; True when it collected the heap."""
        if not self.enabled:
            return False
        if self.every == 0 and self._measure():
            return True  # the collection a measurement starts with
        self.count += 1
        if self.count < self.every:
            return False
        self._collect()
        self._since += 1
        if self._since >= REMEASURE:
            self.restart()
        return True

    def _measure(self):
        # First call: collect and note the free heap (True). Second: the tick in between left
        # free0 - free1 bytes of garbage (an allocator collection in it would show as no
        # garbage, and MAX_EVERY; the next measurement corrects it).
        if self._free0 < 0:
            self._collect()
            self._free0 = gc.mem_free()
            return True
        free1 = gc.mem_free()
        garbage = self._free0 - free1
        if garbage <= 0:
            every = MAX_EVERY
        else:
            # the ticks whose garbage fits, a quarter of a tick's to spare for the ones
            # that allocate more (an iterated update)
            every = max(1, min(MAX_EVERY, (self._free0 - garbage // 4) // garbage))
        self.every = every
        self.count = 0  # the measured tick counts next, in after_tick
        self._since = 0
        self._free0 = -1
        return False

    def _collect(self):
        gc.collect()
        self.collections += 1
        self.count = 0
