"""Each query's relevant levels from a float32 screen of its relevant pairs: every relevant item is
known by its band on its float64 score, and only items whose bands meet another's are settled
(docs/exactness.md, "Relevant levels"). :class:`~.levels.LevelCounter` settles the others on demand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ropebench.engines.core.bound import Bound, pair_widths
from ropebench.engines.core.relevant import product_units
from ropebench.engines.core.scores import exact_scores
from ropebench.engines.core.task import TaskData

__all__ = ["RelevantBands", "relevant_bands"]



@dataclass(frozen=True)
class RelevantBands:
    """Every query's relevant levels, best first, each known by a band on its float64 score.

    A level whose relevant items were settled has ``lo == hi`` (its float64 score) and ``item == -1``;
    any other level is one relevant item (gallery row ``item``) whose band ``[lo, hi]`` (float32
    screen ± its width) meets no other relevant item's band of the query, so its score differs from
    every other relevant score and its place among the levels is known without settling it. The
    intervals ``[lo, hi]`` of a query's levels are disjoint and descending.

    Attributes:
        offsets: ``(nq + 1,)`` query ``i``'s levels are ``offsets[i]:offsets[i + 1]``.
        lo, hi: ``(n_levels,)`` float64 bounds on each level's float64 score.
        relevant: ``(n_levels,)`` int64 relevant items per level.
        item: ``(n_levels,)`` int64 the unsettled level's gallery row, -1 where settled.
        settled: relevant pairs settled.
    """

    offsets: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    relevant: np.ndarray
    item: np.ndarray
    settled: int


def _segment_min(values: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Running minimum within segments (``position``: index within the segment), by doubling."""
    out = values.copy()
    shift, longest = 1, int(position.max(initial=0)) + 1
    while shift < longest:
        moved = np.minimum(out[shift:], out[:-shift])
        out[shift:] = np.where(position[shift:] >= shift, moved, out[shift:])
        shift *= 2
    return out


def relevant_bands(data: TaskData, bound: Bound | None) -> RelevantBands:
    """Every query's relevant levels (:class:`RelevantBands`), from a float32 screen of its relevant
    pairs (:func:`~.relevant.product_units`) with ``bound``'s band: only relevant items whose band
    meets another relevant item's band of the query (they may tie, or their order is unknown) are
    settled in float64. ``bound`` None, exact, or a screen in another frame than the score
    (``l2``): every relevant pair is settled."""
    nq = len(data.queries)
    bands = bound is not None and not bound.exact and data.offset is None
    qs, gs, vs = [], [], []
    for rows_q, rows_g, ok in product_units(data):
        k, i, j = np.nonzero(ok)
        qs.append(rows_q[k, i])
        gs.append(rows_g[k, j])
        if bands and len(k):
            # The product's (queries x items) block as one small matmul of a stack (as best_relevant
            # screens T): each vector gathered once, not once per pair.
            with np.errstate(invalid="ignore", over="ignore"):
                block = np.matmul(data.queries[rows_q], data.gallery[rows_g].transpose(0, 2, 1))
            vs.append(block[k, i, j].astype(np.float64))
    q = np.concatenate(qs) if qs else np.zeros(0, dtype=np.int64)
    g = np.concatenate(gs) if gs else np.zeros(0, dtype=np.int64)
    if not (bands and bound is not None and len(q)):
        s = exact_scores(data.exact_queries, data.exact_gallery, q, g, data.metric) if len(q) else np.zeros(0)
        order = _descending_within(q, s)
        q, g, lo = q[order], g[order], s[order]
        hi, settle_mask, pick = lo, np.ones(len(q), dtype=bool), order
    else:
        v = np.concatenate(vs)
        q_norm, g_norm = data.screen_norms
        width = pair_widths(bound, q_norm[q], g_norm[g], v)
        finite = np.isfinite(v)
        with np.errstate(invalid="ignore"):
            lo = np.where(finite, np.nextafter(v - width, -np.inf), -np.inf)
            hi = np.where(finite, np.nextafter(v + width, np.inf), np.inf)
        # Connected groups of overlapping bands: by upper end, best first, an item joins the group
        # above when its upper end reaches the lowest lower end so far (interval merging). Groups
        # are runs of this order, their hulls disjoint and descending.
        order = _descending_within(q, hi)
        q, g, lo, hi, finite = q[order], g[order], lo[order], hi[order], finite[order]
        first = np.ones(len(q), dtype=bool)
        first[1:] = q[1:] != q[:-1]
        starts = np.flatnonzero(first)
        position = np.arange(len(q)) - np.repeat(starts, np.diff(np.append(starts, len(q))))
        lowest = _segment_min(lo, position)
        joins = ~first
        joins[1:] &= lowest[:-1] <= hi[1:]
        group = np.cumsum(~joins) - 1
        settle_mask = (np.bincount(group)[group] > 1) | ~finite
        pick = np.flatnonzero(settle_mask)
        # Distinct pairs by construction: settled directly (no de-duplication pass).
        s = exact_scores(data.exact_queries, data.exact_gallery, q[pick], g[pick], data.metric) if len(pick) \
            else np.zeros(0)
        lo[pick] = hi[pick] = s
        # Settled items in score order within their group (each group keeps its run of positions).
        within = np.lexsort((-s, group[pick]))
        perm = np.arange(len(q))
        perm[pick] = pick[within]
        q, g, lo, hi, settle_mask = q[perm], g[perm], lo[perm], hi[perm], settle_mask[perm]
    new = np.ones(len(q), dtype=bool)
    new[1:] = (q[1:] != q[:-1]) | (lo[1:] != lo[:-1]) | ~settle_mask[1:] | ~settle_mask[:-1]
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(q)))
    offsets = np.zeros(nq + 1, dtype=np.int64)
    np.add.at(offsets, q[starts] + 1, 1)
    item = np.where(settle_mask[starts], -1, g[starts]).astype(np.int64)
    return RelevantBands(offsets=np.cumsum(offsets), lo=lo[starts], hi=hi[starts], relevant=counts.astype(np.int64),
                         item=item, settled=len(pick))


def _descending_within(q: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Order by ``q``, then ``values`` descending, equal values in any order (one sort by value, one
    by a combined integer key: several times faster than ``lexsort``)."""
    n = len(q)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(-values)] = np.arange(n)
    return np.argsort(q.astype(np.int64) * n + rank)
