"""The one-pass engine's tile selection, compiled: every score at or above its row's or its
column's cut-off, as (row, column, value), in one pass over the tile (numpy needs a comparison pass,
a mask and ``flatnonzero``; :func:`ropebench.engines.onepass.select_tile` is the numpy path)."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["select_tile"]


@njit(nogil=True, cache=True)
def select_tile(scores, threshold_r, threshold_c, out_r, out_c, out_v):  # pragma: no cover - compiled
    """``scores[i, j] >= min(threshold_r[i], threshold_c[j])``: writes up to ``len(out_r)`` of them,
    row by row, and returns how many there are (more than the room: the caller runs again).

    Args:
        scores: ``(n, m)`` float32 tile; threshold_r ``(n,)``, threshold_c ``(m,)`` float32 cut-offs
            (+inf: the query collects nothing).
        out_r, out_c: int64; out_v: float32 (the score).
    """
    n, m = scores.shape
    pad = (m + 7) // 8 * 8
    mask = np.zeros(pad, np.uint8)
    words = mask.view(np.uint64)
    capacity = out_r.shape[0]
    found = 0
    for i in range(n):
        row = scores[i]
        cut = threshold_r[i]
        hits = 0
        for j in range(m):
            column = threshold_c[j]
            h = row[j] >= (cut if cut < column else column)
            mask[j] = h
            hits += h
        if hits == 0:
            continue
        for word in range(words.shape[0]):
            if words[word] == 0:
                continue
            for j in range(word * 8, min(word * 8 + 8, m)):
                if mask[j]:
                    mask[j] = 0
                    if found < capacity:
                        out_r[found] = i
                        out_c[found] = j
                        out_v[found] = row[j]
                    found += 1
                    hits -= 1
            if hits == 0:  # the row's last hit: the rest of its mask is clear
                break
    return found
