"""Vectorised per-group reductions (per cycle), so a million records need no Python loop."""

import numpy as np


def group_index(keys):
    """(unique keys in ascending order, index of each sample's group)."""
    return np.unique(keys, return_inverse=True)


def group_sum(values, inverse, n_groups):
    """Sum of ``values`` per group (0 for an empty group)."""
    return np.bincount(inverse, weights=values, minlength=n_groups)


def group_median(values, inverse, n_groups):
    """Median of ``values`` per group; NaN for a group with no values.

    Sorts once by (group, value) and takes the middle element(s) of each group.
    """
    out = np.full(n_groups, np.nan)
    if len(values) == 0:
        return out
    order = np.lexsort((values, inverse))
    v, g = values[order], inverse[order]
    counts = np.bincount(g, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    out[has] = 0.5 * (v[lo] + v[hi])
    return out


def group_first_last(inverse, n_groups):
    """(first, last) sample index of each group (-1 for an empty group)."""
    n = len(inverse)
    first = np.full(n_groups, n, dtype=np.int64)
    last = np.full(n_groups, -1, dtype=np.int64)
    idx = np.arange(n)
    np.minimum.at(first, inverse, idx)
    np.maximum.at(last, inverse, idx)
    first[first == n] = -1
    return first, last
