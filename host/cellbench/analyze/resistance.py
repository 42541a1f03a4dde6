"""DC resistance from current steps: |dV/dI| across each step edge, median per cycle.

At an edge between records k and k+1 (current jumps by dI), R = |v[k+1] - v[k]| /
|i[k+1] - i[k]|. Sampling caveat: the record after the edge is taken some time dt after
the current changed (and the one before, some time before it), so the voltage difference
also holds whatever the cell did in that time: RC and diffusion polarisation growing
(about R1 * dt / tau1 of each RC pair for dt << tau1) and the OCV moving. The estimate is
therefore R0 plus a share of the faster polarisation that grows with the record interval:
at 1 s records it is close to the ohmic + charge-transfer resistance, at 60 s it is a
"DC resistance at 60 s". Edges wider than ``max_gap_s`` are skipped for that reason, and
logs that record at each step's first instant (as this bench and most testers do) give
the smallest error.

The per-cycle median mixes the edges at both ends of the window (the end of a discharge
is at low SoC, the end of a charge at high SoC), whose resistances can differ a lot; the
edges themselves are kept (edges.csv) for a closer look.

An edge is a jump of at least half the larger of the two currents (so CV tails that decay
smoothly are not edges) and of at least ``min_frac`` of the cycle's median active |current|
(so a CV tail stepping to rest, a tiny dI, does not give a noisy R).
"""

import numpy as np

from .groups import group_index, group_median

RELATIVE_JUMP = 0.5


def edges(series, max_gap_s=60.0, min_frac=0.5):
    """Step edges: dict of arrays t_s (time of the record after the edge), cycle (of that
    record), r_ohm, di_A (signed jump), dt_s (record interval across the edge)."""
    i, v, t = series.i_A, series.v_V, series.t_s
    di = np.diff(i)
    dt = np.diff(t)
    big = np.abs(di) >= RELATIVE_JUMP * np.maximum(np.abs(i[1:]), np.abs(i[:-1]))
    cycles, inverse = group_index(series.cycle)
    active = series.sign != 0
    typical = group_median(np.abs(i[active]), inverse[active], len(cycles))
    floor = min_frac * np.nan_to_num(typical[inverse[1:]], nan=np.inf)
    k = np.flatnonzero(big & (np.abs(di) >= floor) & (np.abs(di) > series.rest_A) & (dt <= max_gap_s))
    return {"t_s": t[k + 1], "cycle": series.cycle[k + 1],
            "r_ohm": np.abs((v[k + 1] - v[k]) / di[k]), "di_A": di[k], "dt_s": dt[k]}


def per_cycle(edge, cycles):
    """(median R in ohm, number of edges) for each cycle in ``cycles`` (NaN, 0 if none)."""
    pos = np.searchsorted(cycles, edge["cycle"])
    n = len(cycles)
    ok = (pos < n) & (cycles[np.minimum(pos, n - 1)] == edge["cycle"])
    med = group_median(edge["r_ohm"][ok], pos[ok], n)
    return med, np.bincount(pos[ok], minlength=n).astype(np.int64)
