"""Benchmarks for ``make bench``: one module per area, each with ``run() -> list`` of
``(metric, value_str, note)`` rows. ``cellbench.bench`` runs them all."""
