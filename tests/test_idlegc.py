"""firmware/idlegc.py: the heap is collected between ticks, before the allocator must.

Against a model heap (an independent stand-in for MicroPython's ``gc``): a fixed free heap
after a collection, each tick leaving a known amount of garbage, and the allocator
collecting by itself inside a tick whose garbage does not fit. The collector must leave the
allocator no collection to make while spending no more collections than the heap needs.
"""

import pytest

from cellbench import fw

idlegc = fw.module("idlegc")


class ModelHeap:
    """free bytes after a collection, garbage per tick; counts the allocator's own
    (in-tick) collections and the scans gc.mem_free costs."""

    def __init__(self, free_B, garbage_B):
        self.free_after_B = free_B
        self.free_B = free_B
        self.garbage_B = garbage_B
        self.in_tick = 0
        self.scans = 0

    def tick(self, garbage_B=None):
        g = self.garbage_B if garbage_B is None else garbage_B
        if g > self.free_B:
            self.in_tick += 1  # the allocator had to collect inside the tick
            self.free_B = self.free_after_B
        self.free_B -= g

    # the part of MicroPython's gc module the collector uses
    def collect(self):
        self.free_B = self.free_after_B

    def mem_free(self):
        self.scans += 1
        return self.free_B


@pytest.mark.parametrize("free_B, garbage_B", [(42_000, 16_400), (42_000, 9_500), (120_000, 6_000),
                                               (42_000, 30_000), (42_000, 0)])
def test_the_allocator_never_collects_inside_a_tick(monkeypatch, free_B, garbage_B):
    heap = ModelHeap(free_B, garbage_B)
    monkeypatch.setattr(idlegc, "gc", heap)
    c = idlegc.IdleCollector()
    assert c.enabled
    ticks = 2000
    for _ in range(ticks):
        heap.tick()
        c.after_tick()
    assert heap.in_tick == 0
    # ... with about as few collections as the heap allows: one per run of ticks that fits.
    fits = free_B // garbage_B if garbage_B else idlegc.MAX_EVERY
    needed = ticks / min(fits, idlegc.MAX_EVERY)
    assert needed <= c.collections <= 1.3 * needed + idlegc.REMEASURE
    # Measuring is rare: two heap scans per REMEASURE collections, not one per tick.
    assert heap.scans <= 2 * (c.collections / idlegc.REMEASURE + 2)


def test_a_tick_that_allocates_more_is_measured_again(monkeypatch):
    """A run that starts allocating more (a model loaded): restart() measures it again, and
    from then on the allocator need not collect inside a tick either."""
    heap = ModelHeap(42_000, 500)
    monkeypatch.setattr(idlegc, "gc", heap)
    c = idlegc.IdleCollector()
    for _ in range(200):
        heap.tick()
        c.after_tick()
    assert c.every == idlegc.MAX_EVERY
    heap.garbage_B = 16_000
    c.restart()
    before = heap.in_tick
    for _ in range(500):
        heap.tick()
        c.after_tick()
    assert heap.in_tick - before <= 1  # at most the one tick the change fell in
    assert c.every == 2


def test_under_cpython_it_does_nothing():
    c = idlegc.IdleCollector()
    assert not c.enabled and not any(c.after_tick() for _ in range(10)) and c.collections == 0
