"""All-relevant counts: where every relevant item of a query ranks, from counts by score decided in
float64 (what MAP@R, R-Precision and mAP@K need; first-hit measures never ask for them).

A query's eligible relevant items, scored in float64 by the definition (:mod:`.scores`), fall into
*levels*: their distinct scores ``s_1 > s_2 > …``, with ``r_l`` relevant items at level ``l``. For
each level the engine counts ``above_l``, the irrelevant eligible items scoring strictly above
``s_l``, and ``tied_l``, those scoring exactly ``s_l``. The ranks follow: the items of level ``l``
occupy ranks ``A_l + 1 … A_l + r_l + tied_l`` with ``A_l = above_l + r_1 + … + r_{l-1}``, in an
order the tie policy decides (:mod:`ropebench.measures`). Level 1 is the first hit: ``above_1 = a``,
``tied_1 = t``, ``r_1 = p``.

Only ranks up to a query's *depth* (``R``, its number of eligible relevant items, or the largest
``K`` of ``mAP@K`` if larger) matter: a level with ``A_l >= depth`` contributes to no measure, so
an engine may stop counting once that is certain (counts only grow), and every engine records
such levels the same way — dropped — so that results never depend on the order an engine met the
gallery in.

:class:`LevelCounter` decides screened candidates against a query's levels with the band of
:mod:`.bound` and the float64 settlement of :mod:`.scores`, exactly as a :class:`~.decide.Judge`
decides them against ``T``: a candidate whose band holds no level is decided by the screen, any
other is settled once in float64 and compared with the levels' float64 scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ropebench.engines.core.bands import RelevantBands, relevant_bands
from ropebench.engines.core.bound import Bound, pair_widths, query_terms
from ropebench.engines.core.decide import Judge, settle
from ropebench.engines.core.scores import exact_scores
from ropebench.engines.core.task import TaskData

__all__ = ["RelevantLevels", "LevelCounter", "level_row_counts", "fill_levels", "ALL_RELEVANT",
           "FIRST_HIT", "group_maxima"]

# Relevant levels from a float32 screen, settling only relevant items whose bands meet (False: every
# relevant pair settled, the same numbers; tests compare the two).
SETTLE_BY_BAND = True
# A candidate's place among its query's levels guessed by a binary search of its padded row (False:
# by comparing the whole row; the same guess wherever a row is non-increasing, and any guess is
# checked in float64).
GUESS_BY_SEARCH = True
# Dead levels dropped by steps from each touched query's last live level (False: its live levels
# recounted from all its levels; the same live levels and counts, tests compare the two).
LIVE_BY_STEPS = True
FIRST_HIT = "first_hit"  # the counts a, t, p (FirstHits): R@K, MRR
ALL_RELEVANT = "all_relevant"  # per relevant level, irrelevant items above and tied: MAP@R, RP, mAP@K


@dataclass(frozen=True)
class RelevantLevels:
    """All-relevant counts of the scored queries of one task (query order as :class:`FirstHits`).

    Attributes:
        n_relevant: ``(n,)`` int64 ``R``, eligible relevant items per query.
        depth: ``(n,)`` int64: ranks that were counted (``max(R, largest mAP K)``).
        offsets: ``(n + 1,)`` int64: query ``i``'s levels are ``offsets[i]:offsets[i + 1]``, best first;
            only levels with ``A_l < depth`` are kept.
        above, tied, relevant: ``(n_levels,)`` int64 per level (see the module docstring).
    """

    n_relevant: np.ndarray
    depth: np.ndarray
    offsets: np.ndarray
    above: np.ndarray
    tied: np.ndarray
    relevant: np.ndarray

    @property
    def query_of_level(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.n_relevant)), np.diff(self.offsets))

    @property
    def relevant_above(self) -> np.ndarray:
        """Per level, relevant items of its query at better levels."""
        before = np.cumsum(self.relevant) - self.relevant
        return before - before[self.offsets[self.query_of_level]]


# Floors (docs/fewshot.md, "How engines count it"): a certified lower bound on each query's depth-th
# best score, so that candidates stop near rank depth instead of at the lowest relevant item.
FLOOR_GROUPS = 32  # per query and tile, the best item of each of this many disjoint item groups
FLOOR_KEEP = 32  # best group maxima kept per query across tiles
FLOOR_TILES = 1  # tiles per query whose maxima are folded in (4 tiles: ~4x the floors' cost for ~15% fewer candidates)
FLOOR_DEPTH = 256  # queries deeper than this get no floor (they collect down to their lowest live level)


def group_maxima(scores: np.ndarray, by_rows: bool, groups: int = FLOOR_GROUPS) -> np.ndarray:
    """``(n, G)``: per query (a row of ``scores``, or a column when not ``by_rows``), the best
    screened value of each of ``G`` disjoint groups of its items (item ``j`` in group ``j mod G``):
    G distinct items per query, one vectorised pass over the tile."""
    n_items = scores.shape[1] if by_rows else scores.shape[0]
    groups = max(1, min(groups, n_items))
    width = n_items // groups
    if by_rows:
        out: np.ndarray = scores[:, :groups * width].reshape(len(scores), width, groups).max(axis=1)
        return out
    out = scores[:groups * width].reshape(width, groups, scores.shape[1]).max(axis=0)
    return out.T


_PAD_WIDTH = 64  # queries with at most this many levels are compared against a padded matrix
_PAD_CHUNK = 1 << 13  # candidates per padded comparison (its (chunk, width) block stays in cache: 3x faster than 256k)


def _padded(level_q: np.ndarray, values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``(nq, min(max levels, _PAD_WIDTH))`` level values, NaN-padded (NaN compares False)."""
    n_levels = np.diff(offsets)
    width = int(min(n_levels.max(initial=0), _PAD_WIDTH))
    out = np.full((len(n_levels), max(width, 1)), np.nan)
    column = np.arange(len(level_q)) - offsets[level_q]
    fits = column < width
    out[level_q[fits], column[fits]] = values[fits]
    return out


def _count_levels(padded: np.ndarray, level_q: np.ndarray, level_v: np.ndarray, offsets: np.ndarray,
                  q: np.ndarray, y: np.ndarray, strict: bool) -> np.ndarray:
    """:func:`_count`, by a padded comparison for queries with few levels (the common case) and by
    one sort for the others."""
    out = np.empty(len(q), dtype=np.int64)
    wide = (offsets[q + 1] - offsets[q]) > padded.shape[1]
    narrow = np.flatnonzero(~wide)
    for start in range(0, len(narrow), _PAD_CHUNK):
        rows = narrow[start:start + _PAD_CHUNK]
        block = np.take(padded, q[rows], axis=0)
        hit = np.greater(block, y[rows, None]) if strict else np.greater_equal(block, y[rows, None])
        out[rows] = hit.view(np.uint8).sum(axis=1, dtype=np.uint8)  # at most _PAD_WIDTH: no overflow
    if wide.any():
        rows = np.flatnonzero(wide)
        out[rows] = _count(level_q, level_v, offsets, q[rows], y[rows], strict)
    return out


def _guess_levels(padded: np.ndarray, level_q: np.ndarray, level_v: np.ndarray, offsets: np.ndarray,
                  q: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per candidate, levels of query ``q[i]`` whose value in ``padded`` is ``> y[i]``, where a row is
    non-increasing (a query's levels best first, NaN padding last): a branchless binary search of
    each row (one gather per halving instead of a whole row compared and summed), and one sort for
    the queries wider than the padding (as :func:`_count_levels`)."""
    n_rows, width = padded.shape
    flat = padded.reshape(-1)
    index = np.int32 if n_rows * width < np.iinfo(np.int32).max else np.int64
    start = q.astype(index) * index(width) - index(1)  # flat index of the row's column -1
    at = start.copy()  # flat index of the last column found above y
    limit = start + index(width)
    step = 1 << (width.bit_length() - 1)  # the largest power of two <= width
    while step:
        trial = at + index(step)
        np.minimum(trial, limit, out=trial)
        np.copyto(at, trial, where=np.take(flat, trial) > y)
        step >>= 1
    found = (at - start).astype(np.int64)
    if int(np.diff(offsets).max(initial=0)) <= width:  # no query wider than the padding
        return found
    wide = (offsets[q + 1] - offsets[q]) > width
    if wide.any():
        rows = np.flatnonzero(wide)
        found[rows] = _count(level_q, level_v, offsets, q[rows], y[rows], strict=True)
    return found


def _count(level_q: np.ndarray, level_v: np.ndarray, offsets: np.ndarray, q: np.ndarray, y: np.ndarray,
           strict: bool) -> np.ndarray:
    """Per candidate ``i``: levels of query ``q[i]`` with value ``> y[i]`` (strict) or ``>= y[i]``.

    One sort of levels and candidates together by (query, value); ``level_v`` is ascending-sortable
    as stored (descending within a query), values compared exactly as float64."""
    n_l = len(level_q)
    if not len(q):
        return np.zeros(0, dtype=np.int64)
    keys_q = np.concatenate([level_q, q])
    keys_v = np.concatenate([level_v, y])
    # Candidates after equal levels for "> y" (equal levels count as not greater), before them for ">=".
    kind = np.concatenate([np.zeros(n_l, dtype=np.int8), np.full(len(q), 1 if strict else -1, dtype=np.int8)])
    order = np.lexsort((kind, keys_v, keys_q))
    is_level = order < n_l
    before: np.ndarray = np.cumsum(is_level) - is_level  # levels strictly before each position
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    at_or_below = before[position[n_l:]] - offsets[q]
    return (offsets[q + 1] - offsets[q]) - at_or_below


def _top_relevant(nq: int, level_q: np.ndarray, scores: np.ndarray, relevant: np.ndarray,
                  relevant_above: np.ndarray, depth: int) -> np.ndarray:
    """``(nq, depth + 1)``: column ``m`` the m-th best relevant score of each query (with
    multiplicity; column 0 ``+inf``, ``-inf`` past its relevant items)."""
    out = np.full((nq, depth + 1), -np.inf)
    out[:, 0] = np.inf
    item_level = np.repeat(np.arange(len(scores)), relevant)
    rank = np.arange(len(item_level)) - np.repeat(np.cumsum(relevant) - relevant, relevant) \
        + np.repeat(relevant_above, relevant) + 1
    fits = rank <= depth
    out[level_q[item_level[fits]], rank[fits]] = scores[item_level[fits]]
    return out


class LevelCounter:
    """The running all-relevant counts of one task's queries, and the screening cut-off below which a
    candidate can no longer matter (the band's lower end at the lowest level still counted).

    Args:
        data: the task.
        bound: its band (:func:`ropebench.engines.core.task_bound`).
        depth_k: the largest K of ``mAP@K`` (0: none); a query's depth is ``max(R, depth_k)``.
        exact: never stop counting (all levels kept live; per-query output of exact counts).
    """

    def __init__(self, data: TaskData, bound: Bound, depth_k: int = 0, *, levels: RelevantBands | None = None,
                 compiled: Any = None) -> None:
        self.data, self.bound = data, bound
        # The compiled loops (the module ropebench.engines.kernels.levels, given by the engine) or None:
        # numpy. Not for exact or residual bands (numpy keeps those).
        self.compiled = None if bound.exact or bound.residual else compiled
        if levels is None:
            from ropebench.engines.core import task_bound
            from ropebench.engines.core.precision import FP32

            # The relevant pairs are screened by numpy in float32, whatever the engine's precision.
            levels = relevant_bands(data, task_bound(data, FP32) if SETTLE_BY_BAND else None)
        offsets, relevant = levels.offsets, levels.relevant
        self.offsets, self.relevant = offsets, relevant
        # Per level, bounds on its float64 score (equal once settled) and its one relevant item while
        # unsettled (-1 after): settled on demand when a candidate's float64 score falls in its band.
        self.level_lo, self.level_hi, self.item = levels.lo.copy(), levels.hi.copy(), levels.item.copy()
        if not (self.item >= 0).any():  # every level settled: one array of float64 scores
            self.level_hi = self.level_lo
        scores = self.level_lo
        nq = len(data.queries)
        n_levels = np.diff(offsets)
        self.level_q = np.repeat(np.arange(nq), n_levels)
        self.n_relevant = np.bincount(self.level_q, weights=relevant, minlength=nq).astype(np.int64)
        self.depth = np.maximum(self.n_relevant, int(depth_k))
        before = np.cumsum(relevant) - relevant
        self.relevant_above = before - before[offsets[self.level_q]]
        offset = data.offset
        # In the screening frame (l2: + |x|²; there every level is settled, lo == hi).
        self.screen_lo = self.level_lo if offset is None else self.level_lo + offset[self.level_q]
        self.screen_hi = self.level_hi if offset is None else self.level_hi + offset[self.level_q]
        self.padded_lo = _padded(self.level_q, self.screen_lo, offsets)
        self.padded_hi = self.padded_lo if self.screen_hi is self.screen_lo else \
            _padded(self.level_q, self.screen_hi, offsets)
        self.padded_scores = self.padded_lo if self.screen_lo is self.level_lo else \
            _padded(self.level_q, self.level_lo, offsets)
        # A float32 copy of the lower ends, never updated: it only guesses a candidate's place among
        # the levels, which float64 checks then confirm (half the memory of the float64 comparison).
        self.padded_guess = self.padded_lo.astype(np.float32)
        # The same float32 lower ends by level, for the compiled guess (never updated either).
        self.guess = self.screen_lo.astype(np.float32) if self.compiled is not None else None
        q_norm = data.screen_norms[0]
        self.q_norm = q_norm
        top = np.zeros(nq)
        with np.errstate(invalid="ignore"):
            ends = np.maximum(np.abs(self.level_lo), np.abs(self.level_hi))
        np.maximum.at(top, self.level_q, np.where(np.isfinite(ends), ends, 0.0))
        self.extra = query_terms(bound, q_norm, top)
        self.g_norm = data.screen_norms[1]
        self.g_norm_max = float(self.g_norm.max(initial=0.0))
        self.starts = np.zeros(len(scores) + 1, dtype=np.int64)  # candidates first above level l (CSR index)
        self.tied = np.zeros(len(scores), dtype=np.int64)
        self.live = n_levels.copy()  # levels 0 .. live-1 may still matter
        self.above_last = np.zeros(nq, dtype=np.int64)  # candidates strictly above level live-1
        self.settled = 0
        self.collected = 0  # candidates decided against the levels (a counter for tests and benchmarks)
        self.relevant_settled = levels.settled
        self.lo = np.full(nq, np.float32(np.inf), dtype=np.float32)
        # floor: a float64 score at most the query's depth-th best eligible score (so no level below it
        # can be counted live, and no item below it is needed); raised from screened tiles.
        self.floor = np.full(nq, -np.inf)
        self.top_relevant = _top_relevant(nq, self.level_q, self.level_lo, relevant, self.relevant_above,
                                          int(min(self.depth.max(initial=0), FLOOR_DEPTH)))
        self.floor_ok = self.depth < self.top_relevant.shape[1]
        self.seen = np.full((nq, FLOOR_KEEP), np.float32(-np.inf), dtype=np.float32)  # best maxima met
        self.bad = np.zeros(nq, dtype=np.int64)  # items met of the query's product or group
        self.met = np.zeros(nq, dtype=np.int64)  # tiles folded in
        self.met_all = nq == 0  # every query has met FLOOR_TILES tiles (met only grows): no more maxima
        self.n_codes = int(max(data.query_products.max(initial=-1), data.gallery_products.max(initial=-1))) + 1
        self._update_cutoffs(np.flatnonzero(self.live > 0))

    @property
    def scored(self) -> np.ndarray:
        return self.n_relevant > 0

    def _update_cutoffs(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        live = self.live[rows]
        has = live > 0
        self.lo[rows[~has]] = np.inf
        rows = rows[has]
        if not len(rows):
            return
        lowest = np.maximum(self.level_lo[self.offsets[rows] + self.live[rows] - 1], self.floor[rows])
        offset = None if self.data.offset is None else self.data.offset[rows]
        judge = Judge(self.data.metric, self.bound, self.data.exact_queries[:0], self.q_norm[rows], offset, lowest)
        self.lo[rows] = judge.cutoff(self.g_norm_max)

    def add_maxima(self, q: np.ndarray, items: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Fold a tile's :func:`group_maxima` into the floors of queries ``q`` (distinct): ``values``
        ``(n, G)`` are screened scores of G distinct items among ``items`` (the tile's other side,
        never met before by these queries). Updates state: call under the reader's lock. Returns the
        queries whose cut-off may have risen."""
        if not len(q) or not len(items):
            return q[:0]
        data = self.data
        bad = np.bincount(data.gallery_products[items], minlength=self.n_codes)[data.query_products[q]]
        if data.query_groups is not None and data.gallery_groups is not None:
            group = data.query_groups[q]
            codes, counts = np.unique(data.gallery_groups[items], return_counts=True)
            where = np.clip(np.searchsorted(codes, group), 0, max(len(codes) - 1, 0))
            bad = bad + np.where((group >= 0) & (codes[where] == group), counts[where], 0)
        self.bad[q] += bad
        self.met[q] += 1
        self.met_all = int(self.met.min(initial=FLOOR_TILES)) >= FLOOR_TILES
        # Only queries with a maximum better than the last one kept can get a higher floor.
        values = np.where(np.isnan(values), np.float32(-np.inf), values.astype(np.float32))
        better = values.max(axis=1) > self.seen[q, -1]
        q, values = q[better], values[better]
        if not len(q):
            return q
        keep = self.seen.shape[1]
        self.seen[q] = -np.sort(-np.concatenate([self.seen[q], values], axis=1), axis=1)[:, :keep]
        return self.raise_floor(q, self.floor_from(q))

    def wants_maxima(self, q: np.ndarray) -> bool:
        """Whether a tile of queries ``q`` is worth :func:`group_maxima` (some query has met fewer
        than ``FLOOR_TILES`` tiles)."""
        return not self.met_all and bool(len(q)) and int(self.met[q].min()) < FLOOR_TILES

    def floor_from(self, q: np.ndarray) -> np.ndarray:
        """The floor the queries' best screened items so far certify: the largest ``X`` such that
        at least ``depth`` eligible items surely score ``>= X`` in float64 — its relevant items, and
        kept maxima decided above ``X`` by the band exactly as :meth:`~.decide.Judge.decide` decides
        (with the largest gallery norm), less one for every item met that is of the query's product
        or group (so no maximum is an excluded item, or a relevant one counted twice). ``-inf`` where
        none is certain."""
        with np.errstate(invalid="ignore", over="ignore"):
            return self._floor_from(q)

    def _floor_from(self, q: np.ndarray) -> np.ndarray:
        n = len(q)
        depth = self.depth[q]
        v = self.seen[q].astype(np.float64)  # best first; -inf where none
        keep = v.shape[1]
        finite = np.isfinite(v)
        width = pair_widths(self.bound, self.q_norm[q][:, None], np.full((1, 1), self.g_norm_max), v)
        offset = np.zeros(n) if self.data.offset is None else self.data.offset[q]
        lower = np.where(finite, v - width - offset[:, None] - self.extra[q][:, None], -np.inf)
        # The depth-th best of (irrelevant items) ∪ (relevant items): max over i of
        # min((i + bad)-th best lower end, (depth - i)-th best relevant score).
        ordered = np.full((n, keep + 2), -np.inf)
        ordered[:, 0] = np.inf
        ordered[:, 1:-1] = lower
        i = np.arange(min(keep, int(depth.max(initial=0))) + 1)
        column = np.where(i == 0, 0, np.minimum(i + self.bad[q][:, None], keep + 1))
        top = self.top_relevant.shape[1] - 1
        need = np.clip(depth[:, None] - i, 0, top)
        # Flat takes: several times faster than two-dimensional fancy indexing.
        best_irrelevant = np.take(ordered.reshape(-1), column + (np.arange(n) * (keep + 2))[:, None])
        best_relevant = np.take(self.top_relevant.reshape(-1), need + (q * (top + 1))[:, None])
        estimate = np.max(np.minimum(best_irrelevant, best_relevant), axis=1)
        usable = self.floor_ok[q] & np.isfinite(estimate)
        floor = estimate - 2.0 ** -40 * (1.0 + np.abs(np.where(usable, estimate, 0.0)) + np.abs(offset))
        floor = np.where(usable, floor, -np.inf)
        # Certify: maxima decided above the floor (the Judge's own rule), relevant items at or above it.
        screen = floor + offset
        surely = finite & (v - screen[:, None] > width + query_terms(self.bound, self.q_norm[q], floor)[:, None])
        count = surely.sum(axis=1) - self.bad[q] + (self.top_relevant[q, 1:] >= floor[:, None]).sum(axis=1)
        return np.where(usable & (count >= depth), floor, -np.inf)

    def raise_floor(self, q: np.ndarray, floor: np.ndarray) -> np.ndarray:
        """Raise the floors of queries ``q`` (distinct) and their cut-offs; returns the queries whose
        cut-off may have risen."""
        better = floor > self.floor[q]
        rows = q[better]
        if len(rows):
            self.floor[rows] = floor[better]
            self._update_cutoffs(rows[self.live[rows] > 0])
        return rows

    def sort_out(self, q: np.ndarray, g: np.ndarray, values: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Decide irrelevant eligible candidates ``(q[i], g[i])`` with screened scores ``values[i]``:
        per candidate, ``j`` = levels scoring at least its float64 score, and whether level ``j - 1``
        scores exactly that (a tie). Changes no count, so it may run outside a lock: the one state
        it writes is a level's band replaced by the float64 score it bounds (:meth:`_settle_levels`),
        the same bits whichever thread writes them, and any reader's view (band or score) is true."""
        lq, offsets = self.level_q, self.offsets
        if self.compiled is not None:
            b = self.bound
            j = np.empty(len(q), dtype=np.int64)
            unsure_mask = np.empty(len(q), dtype=np.bool_)
            self.compiled.place(q, g, values, self.q_norm, self.g_norm, self.extra, b.pair, b.floor, b.gallery,
                                b.both, b.output, bool(b.gallery), offsets, self.guess, self.padded_guess.shape[1],
                                self.screen_lo, self.screen_hi, j, unsure_mask)
            return self._settle_unsure(q, g, j, np.flatnonzero(unsure_mask))
        v = values.astype(np.float64)
        g_norm = self.g_norm[g]
        if self.bound.exact:  # every level settled: lo == hi, the screen exact
            screen, points = self.padded_lo, self.screen_lo
            j = _count_levels(screen, lq, points, offsets, q, v, strict=False)
            tie = j > _count_levels(screen, lq, points, offsets, q, v, strict=True)
            return q, j, tie, 0
        width = pair_widths(self.bound, self.q_norm[q], g_norm, v) + self.extra[q]
        finite = np.isfinite(v)
        high = np.where(finite, v + width, np.inf)
        low = np.where(finite, v - width, -np.inf)
        # The levels' intervals are disjoint and descending: for any c, the candidate is decided (j = c)
        # when level c - 1's lower end is above its band and level c's upper end below it (then c
        # levels are surely above it and no other one possibly at or above it); otherwise it is
        # settled. c is guessed in float32 (levels whose lower end is above the screened value): a
        # wrong guess only fails the float64 checks.
        c = _guess_levels(self.padded_guess, lq, self.screen_lo, offsets, q, values) if GUESS_BY_SEARCH else \
            _count_levels(self.padded_guess, lq, self.screen_lo, offsets, q, values, strict=True)
        n_levels = offsets[q + 1] - offsets[q]
        index = offsets[q] + c
        last = len(lq) - 1
        clear_above = (c == 0) | (self.screen_lo[np.clip(index - 1, 0, last)] > high)
        clear_below = (c == n_levels) | (self.screen_hi[np.clip(index, 0, last)] < low)
        return self._settle_unsure(q, g, c, np.flatnonzero(~(clear_above & clear_below) | ~finite))

    def _settle_unsure(self, q: np.ndarray, g: np.ndarray, j: np.ndarray, unsure: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """:meth:`sort_out`'s result from the guessed ``j``: the candidates ``unsure`` (whose band meets a
        level, or not finite) settled in float64 and placed among the levels (``j`` and the ties set
        for them; every other candidate is below exactly ``j`` levels, tied with none)."""
        lq, offsets = self.level_q, self.offsets
        tie = np.zeros(len(q), dtype=bool)
        if len(unsure):
            qu = q[unsure]
            s = settle(self.data.exact_queries, self.data.exact_gallery, qu, g[unsure], self.data.metric)
            # Levels surely above s; the next level's interval is the only one that can hold s.
            above = _count_levels(self.padded_scores, lq, self.level_lo, offsets, qu, s, strict=True)
            index = np.minimum(offsets[qu] + above, len(lq) - 1)
            holds = (above < offsets[qu + 1] - offsets[qu]) & (self.level_hi[index] >= s)
            pending = np.unique(index[holds & (self.item[index] >= 0)])
            if len(pending):
                self._settle_levels(pending)
            level = self.level_lo[index]  # the float64 score where it holds s
            j[unsure] = above + (holds & (level >= s))
            tie[unsure] = holds & (level == s)
        return q, j, tie, len(unsure)

    def judge(self, bound: Bound) -> Judge:
        """The first-hit :class:`~.decide.Judge` of the same queries with the engine's ``bound``: a
        query's ``T`` is its best level's float64 score (settled here where it is still a band) and
        ``p`` that level's relevant items — what :func:`~.relevant.best_relevant` finds, without
        screening the relevant pairs a second time."""
        nq = len(self.depth)
        has = self.offsets[1:] > self.offsets[:-1]
        top = self.offsets[:-1][has]
        pending = top[self.item[top] >= 0]
        if len(pending):
            self._settle_levels(pending)
        best = np.full(nq, -np.inf)
        best[has] = self.level_lo[top]
        p = np.zeros(nq, dtype=np.int64)
        p[has] = self.relevant[top]
        data = self.data
        return Judge(data.metric, bound, data.exact_queries, data.screen_norms[0], data.offset, best, p,
                     self.relevant_settled + len(pending))

    def _settle_levels(self, index: np.ndarray) -> None:
        """Settle unsettled levels ``index`` (one relevant item each): their band becomes their float64
        score. Idempotent; the item is marked settled only after the score is in place."""
        s = exact_scores(self.data.exact_queries, self.data.exact_gallery, self.level_q[index], self.item[index],
                         self.data.metric)
        self.level_lo[index] = s
        self.level_hi[index] = s
        # Unsettled levels exist only where the screen is the score (offset None): the padded copies
        # hold the same values.
        for padded, values in ((self.padded_lo, self.level_lo), (self.padded_hi, self.level_hi)):
            column = index - self.offsets[self.level_q[index]]
            fits = column < padded.shape[1]
            padded[self.level_q[index[fits]], column[fits]] = values[index[fits]]
        self.item[index] = -1

    def take(self, sorted_out: tuple[np.ndarray, np.ndarray, np.ndarray, int], *, prune: bool = True
             ) -> np.ndarray:
        """Add decided candidates; with ``prune``, drop levels that can no longer matter and raise
        their queries' cut-offs. Returns the queries whose cut-off may have risen."""
        q, j, tie, settled = sorted_out
        self.settled += settled
        self.collected += len(q)
        if self.compiled is not None and prune and len(q):
            mark = np.zeros(len(self.depth), dtype=bool)
            self.compiled.add_decided(q, j, tie, self.offsets, self.live, self.relevant_above, self.depth,
                                      self.starts, self.tied, self.above_last, mark)
            return self._drop_marked(np.flatnonzero(mark))
        n_levels = self.offsets[q + 1] - self.offsets[q]
        first = self.offsets[q] + j
        strictly = j < n_levels  # above some level at all
        np.add.at(self.starts, first[strictly], 1)
        if tie.any():
            np.add.at(self.tied, first[tie] - 1, 1)
        if not (prune and len(q)):
            return q[:0]
        # Levels die from the last live one up (A grows along the levels): only a query whose last
        # live level now has A >= depth is recounted, from its own levels.
        hit = j < self.live[q]  # strictly above its last live level
        q = q[hit]
        np.add.at(self.above_last, q, 1)
        last = self.offsets[q] + self.live[q] - 1
        # Distinct, ascending (as np.unique, without sorting the batch's candidates).
        mark = np.zeros(len(self.depth), dtype=bool)
        mark[q[self.relevant_above[last] + self.above_last[q] >= self.depth[q]]] = True
        return self._drop_marked(np.flatnonzero(mark))

    def _drop_marked(self, touched: np.ndarray) -> np.ndarray:
        """Drop the dead levels of queries ``touched`` (distinct) and raise their cut-offs."""
        if len(touched):
            self.live[touched], self.above_last[touched] = self._live_levels(touched) if not LIVE_BY_STEPS \
                else self._drop_levels(touched)
            self._update_cutoffs(touched)
        return touched

    def _above(self) -> np.ndarray:
        running = np.cumsum(self.starts[:-1])
        exclusive = running - self.starts[:-1]
        return running - exclusive[self.offsets[self.level_q]]

    def _drop_levels(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_live_levels` by steps: while the last live level of a query of ``rows`` (distinct)
        has ``A >= depth`` it dies, and the candidates above the one before are those above it less
        those that first rose above it (``starts``). Levels die from the last one up, a few per
        batch: a few steps over the queries still dying, not a running sum over all their levels."""
        live, above = self.live[rows].copy(), self.above_last[rows].copy()
        active = np.arange(len(rows))
        while len(active):
            last = self.offsets[rows[active]] + live[active] - 1
            dead = (live[active] > 0) & (self.relevant_above[last] + above[active] >= self.depth[rows[active]])
            active, last = active[dead], last[dead]
            above[active] -= self.starts[last]
            live[active] -= 1
        return live, np.where(live > 0, above, 0)

    def _live_levels(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Levels still live of queries ``rows`` (distinct), from their own levels only (a running
        sum over each one's levels, not over every level of the task), and the candidates strictly
        above the last live one (0 where none is live)."""
        n = self.offsets[rows + 1] - self.offsets[rows]
        total = int(n.sum())
        if not total:
            return np.zeros(len(rows), dtype=np.int64), np.zeros(len(rows), dtype=np.int64)
        begin = np.cumsum(n) - n
        owner = np.repeat(np.arange(len(rows)), n)
        index = np.arange(total) - begin[owner] + self.offsets[rows][owner]
        counted = self.starts[index]
        running = np.cumsum(counted)
        before = running - counted  # exclusive prefix over the concatenation
        above = running - before[begin[owner]]
        dead = (self.relevant_above[index] + above) >= self.depth[rows][owner]
        # Levels are ordered, A grows along them: the live ones are a prefix.
        live = np.bincount(owner[~dead], minlength=len(rows))
        last = np.maximum(begin + live - 1, 0)
        return live, np.where(live > 0, above[last], 0)

    def finish(self, scored: np.ndarray | None = None) -> RelevantLevels:
        """The counts of the scored queries, levels with ``A_l >= depth`` dropped (canonical)."""
        scored = self.scored if scored is None else scored
        above = self._above()
        keep = ((self.relevant_above + above) < self.depth[self.level_q]) & scored[self.level_q]
        rows = np.flatnonzero(scored)
        kept = np.bincount(self.level_q[keep], minlength=len(self.depth))[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(kept, out=offsets[1:])
        return RelevantLevels(n_relevant=self.n_relevant[rows], depth=self.depth[rows], offsets=offsets,
                              above=above[keep], tied=self.tied[keep], relevant=self.relevant[keep])


def level_row_counts(data: TaskData, bound: Bound, depth_k: int = 0, batch: int = 256) -> RelevantLevels:
    """All-relevant counts of every scored query screened against its whole gallery row (the simple
    path every engine can use: float32 GEMM per batch of queries, every candidate decided by
    :class:`LevelCounter`; each row's floor from its own groups' best items first)."""
    from ropebench.engines.core.rows import irrelevant_eligible

    counter = LevelCounter(data, bound, depth_k)
    rows_all = np.flatnonzero(counter.scored)
    gallery_rows = np.arange(len(data.gallery))
    if len(data.gallery):
        for start in range(0, len(rows_all), batch):
            rows = rows_all[start:start + batch]
            scores = data.queries[rows] @ data.gallery.T
            counter.add_maxima(rows, gallery_rows, group_maxima(scores, by_rows=True))
            r, g = np.nonzero(~(scores < counter.lo[rows, None]))  # NaN screens are candidates too
            q = rows[r]
            keep = irrelevant_eligible(data, q, g)
            r, q, g = r[keep], q[keep], g[keep]
            counter.take(counter.sort_out(q, g, scores[r, g]), prune=False)
    return counter.finish()


def fill_levels(task_data: Mapping[str, TaskData], tasks: Sequence[str], levels: Mapping[str, RelevantLevels],
                depth_k: int = 0) -> dict[str, RelevantLevels]:
    """``levels`` completed for every task by :func:`level_row_counts` where an engine left them out."""
    from ropebench.engines.core import task_bound
    from ropebench.engines.core.precision import FP32

    out = dict(levels)
    for task in tasks:
        if task not in out:
            out[task] = level_row_counts(task_data[task], task_bound(task_data[task], FP32), depth_k)
    return out
