"""All-relevant counting, compiled: where each screened candidate falls among its query's relevant
levels, and the counts it adds (:class:`ropebench.engines.core.levels.LevelCounter`, whose numpy
code these loops replace candidate by candidate, with the same results: the same guess, the same
band, the same candidates left to float64 settlement, the same counts)."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["place", "add_decided", "row_maxima"]


@njit(nogil=True, cache=True)
def place(q, g, values, q_norm, g_norm, extra, pair, floor, gallery, both, output, by_gallery, offsets,
          guess, pad_width, screen_lo, screen_hi, out_j, out_unsure):  # pragma: no cover - compiled
    """For candidate ``i`` (query ``q[i]``, gallery row ``g[i]``, float32 screen ``values[i]``):
    ``out_j[i]`` the levels guessed above it and ``out_unsure[i]`` whether its band leaves that
    open (then the caller settles it in float64). Returns how many are unsure.

    The band is :func:`~ropebench.engines.core.bound.pair_widths` (a bound without residuals) plus
    the query's ``extra``, in the same float64 operations. The guess: levels whose float32 lower end
    ``guess`` is above the float32 screen, or, for a query with more than ``pad_width`` levels,
    whose float64 lower end is above it (as ``LevelCounter.sort_out``'s numpy guess). A query's
    levels are descending, so a binary search counts them.
    """
    n_unsure = 0
    last = screen_lo.shape[0] - 1
    for i in range(q.shape[0]):
        qi = q[i]
        y = values[i]
        v = np.float64(y)
        qn = q_norm[qi]
        gn = g_norm[g[i]]
        product = qn * gn
        nonzero = (gn > 0) if by_gallery else (product > 0)
        width = pair * product + floor * (1.0 if nonzero else 0.0)
        if gallery != 0.0:
            width += gallery * gn * gn
        if both != 0.0:
            width += both * (qn + gn) ** 2
        if output != 0.0:
            width += output * abs(v)
        width = width + extra[qi]
        start = offsets[qi]
        n_levels = offsets[qi + 1] - start
        # Levels above the screen: the first position whose lower end is not above it. (One search
        # per array type, written out: a shared inline helper made this loop 30% slower, 50 -> 65 ms
        # per million candidates.)
        a, b = 0, n_levels
        if n_levels > pad_width:
            while a < b:
                m = (a + b) // 2
                if screen_lo[start + m] > v:
                    a = m + 1
                else:
                    b = m
        else:
            while a < b:
                m = (a + b) // 2
                if guess[start + m] > y:
                    a = m + 1
                else:
                    b = m
        c = a
        out_j[i] = c
        finite = np.isfinite(v)
        if not finite:
            out_unsure[i] = True
            n_unsure += 1
            continue
        high = v + width
        low = v - width
        index = start + c
        clear_above = c == 0 or screen_lo[min(max(index - 1, 0), last)] > high
        clear_below = c == n_levels or screen_hi[min(max(index, 0), last)] < low
        unsure = not (clear_above and clear_below)
        out_unsure[i] = unsure
        n_unsure += unsure
    return n_unsure


@njit(nogil=True, cache=True)
def add_decided(q, j, tie, offsets, live, relevant_above, depth, starts, tied, above_last,
                mark):  # pragma: no cover - compiled
    """Add decided candidates (query ``q[i]``, ``j[i]`` levels at or above it, ``tie[i]``: level
    ``j − 1`` scores exactly as it does) to the counts, and mark the queries whose last live level now
    has ``A ≥ depth`` (``LevelCounter.take``'s numpy loop, candidate by candidate: counts only grow,
    so a query marked on the way is marked at the end, and the other way round)."""
    for i in range(q.shape[0]):
        qi = q[i]
        start = offsets[qi]
        first = start + j[i]
        if j[i] < offsets[qi + 1] - start:
            starts[first] += 1
        if tie[i]:
            tied[first - 1] += 1
        if j[i] < live[qi]:
            above_last[qi] += 1
            if relevant_above[start + live[qi] - 1] + above_last[qi] >= depth[qi]:
                mark[qi] = True



def row_maxima(scores, groups):
    """``group_maxima(scores, by_rows=True, groups)`` of :mod:`ropebench.engines.core.levels`,
    compiled: the same ``(n, G)`` values (NaN where a group holds a NaN), about twice as fast (numpy
    reduces a middle axis of 32 floats slowly; by columns numpy is as fast, and keeps them)."""
    groups = max(1, min(groups, scores.shape[1]))
    out = np.empty((scores.shape[0], groups), dtype=scores.dtype)
    _row_maxima(scores, groups, scores.shape[1] // groups, out)
    return out


@njit(nogil=True, cache=True)
def _row_maxima(scores, groups, width, out):  # pragma: no cover - compiled
    """``out[i, g]``: the largest of ``scores[i, t·G + g]``, ``t < width`` (NaN if one is NaN)."""
    nan = np.zeros(groups, np.bool_)
    for i in range(scores.shape[0]):
        row = scores[i]
        best = out[i]
        for g in range(groups):
            best[g] = row[g]
            nan[g] = row[g] != row[g]
        for t in range(1, width):
            base = t * groups
            for g in range(groups):
                x = row[base + g]
                best[g] = x if x > best[g] else best[g]
                nan[g] |= x != x
        for g in range(groups):
            if nan[g]:
                best[g] = np.nan
    return out
