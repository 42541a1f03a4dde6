"""Benchmarks for ``make bench``: one module per area, each with ``run() -> list`` of
``{"name", "value", "unit", "note"}`` rows. ``cellbench.bench`` runs them all."""

import time


def best_of(fn, repeats=3) -> float:
    """The shortest wall time in seconds of ``repeats`` calls of ``fn()`` (the machine is shared)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
