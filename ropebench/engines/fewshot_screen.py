"""The few-shot *linear* screen: every prototype score screened from one item-score block per domain
pair (docs/fewshot.md, "How it is searched").

A prototype is a multiple of the sum of its supports (up to its float32 rounding), so a query's
score against it is, up to a certified band, ``w Σ_i ŝ(q, y_i)``, a combination of the query's
screened scores against the supports. The block ``S = X · Yᵀ`` of a domain pair is computed once,
in tiles, and serves ``X2Y`` (a row's scores combined over each Y product's columns) and ``Y2X`` (a
column's scores combined over each X product's rows), for every draw and every number of shots at once:
the GEMM work of the 120 few-shot tasks becomes that of the three cross blocks, plus small batched
products (items of one product × that product's prototypes).

Each domain's items are ordered by (items of their product, product): a product's items are
contiguous and tile boundaries fall between products, so a tile holds whole products on both sides,
and products with the same item count ``c`` form runs whose scores reshape to ``(…, products, c)``
without a copy. The combination's weights are one ``(c, J)`` matrix per product (``J`` = shots ×
draws; a column holds the prototype's weight on its supports, zeros elsewhere).

Every combined score is judged by the exactness core with the band of
:mod:`ropebench.engines.core.combine` (per prototype, an effective norm), so candidates near a
query's threshold ``T`` — the float64 score of its own product's prototype, as on the per-task path —
are settled in float64 against the prototype itself: the counts are those of the per-task path, bit
for bit. ``T`` is first known by an interval (:class:`_Thresholds`) and settled only where a
candidate's band reaches it; scores above the interval's top plus the widest band (``hi``) are
counted in bulk, never judged one by one (docs/exactness.md, "Few-shot thresholds by interval, and
scores counted in bulk"). Used for cosine and ip on the default one-pass engine; other metrics and
engines keep the per-task path.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from ropebench.engines import fewshot_fused, kernels
from ropebench.engines.base import COUNTERS, FirstHits, SearchRun, TaskData
from ropebench.engines.core import Decision, Judge, check_range, task_bound
from ropebench.engines.core.bound import pair_widths
from ropebench.engines.core.combine import (
    ColumnJudges,
    column_scores,
    combination_bound,
    combination_weights,
    effective_norms,
    support_sums,
)
from ropebench.engines.core.decide import censor, settle
from ropebench.engines.core.scores import screen_norms
from ropebench.engines.pool import run_tiles

__all__ = ["SupportColumn", "LinearSettings", "linear_applies", "linear_search", "SCREEN_NAME"]

SCREEN_NAME = "linear"
# The linear screen's own counters (besides COUNTERS): (query, prototype) pairs surely above their
# threshold, counted in bulk; candidates decided pair by pair (by the band, or settled); and combined
# scores formed (numpy: every one; the kernels: those of the (query, product) pairs their bound let through).
OWN_COUNTERS = ("prototype_pairs_bulk", "prototype_pairs_decided", "prototype_scores_formed")
METRICS = ("cosine", "ip")


@dataclass(frozen=True)
class SupportColumn:
    """Where one few-shot task's prototypes come from.

    Attributes:
        query_set, support_set: the task's query domain X and support domain Y.
        column: the prototype set's key inside Y (``(shots, draw)``): tasks into one Y with the same
            key share their prototypes (V2P and L2P).
        positions: ``(n_ways, k)`` rows of Y's items (in Y's member order) averaged into each
            prototype, in the task's gallery order.
    """

    query_set: str
    support_set: str
    column: tuple[int, int]
    positions: np.ndarray


@dataclass(frozen=True)
class LinearSettings:
    """Tile sizes (items of the row domain, items of the column domain; each rounded to whole
    products), and which path combines the scores: the compiled kernels
    (:mod:`ropebench.engines.fewshot_fused`) when ``fused`` is true, numpy when false, the kernels
    when None if numba is installed and the tasks have at least :data:`FUSED_SCORES` (query,
    prototype) scores. The kernels need at most 8 shot counts and no negative weight
    (:attr:`~ropebench.engines.fewshot_fused.Tables.usable`); elsewhere numpy combines, with the
    same counts. Tests shrink the tiles so that small data reaches every path, and run both.
    2,048 rows: 1-8% faster than 1,024 at ROPE size with the kernels in four alternating pairs of
    few-shot runs (fewer tiles to keep books for and for the retrieval tasks to read), within the
    full benchmark's run-to-run noise (about 10%); the same with numpy; 4,096 rows or columns slower."""

    rows: int = 2048
    columns: int = 2048
    fused: bool | None = None


# Queries per batch of threshold dot products (1,024 x d float32: cache-sized; 2,048 measured slower).
THRESHOLD_BATCH = 1 << 10


class _Thresholds:
    """One task's thresholds, known first by an interval and settled in float64 only where a
    candidate needs them (docs/exactness.md, "Thresholds settled on demand").

    A few-shot gallery holds one prototype per product, so a query's threshold ``T`` is the float64
    score of one pair, its own product's prototype. Its float32 screen ``t̂`` (one dot product) and
    the task's pair band ``w`` give ``T ∈ [low, high] = [t̂ − w, t̂ + w]`` (each end rounded outward).
    ``judge`` is built with ``best = low`` until ``T`` is settled (its cut-offs are then lower than
    with ``T``: more candidates, each decided correctly); a candidate whose band lies wholly above
    ``high`` or below ``low`` is decided by the interval, every other one first settles its query's
    ``T`` (:meth:`settle`), which replaces ``low`` and ``high`` — and the judge's ``best`` — by
    ``T`` itself. ``scored`` queries (own product among the ways) have ``p = 1``, as on the per-task
    path; the rest ``best = −inf``."""

    def __init__(self, data: TaskData, gathered: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
                 compiled: bool = False, into: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
                 ) -> None:
        """``gathered``: a list shared by tasks of one query set (used by one thread), in which the
        scored queries' rows are gathered once per distinct set of scored queries: the draws of one
        shot count score the same queries (the products with ``k`` supports), so of the 20 tasks of
        a direction only the two shot counts gather (the same rows, the same dot products).
        ``compiled``: the dot products by the compiled kernel (:func:`~ropebench.engines.kernels.fewshot.own_scores`:
        nothing gathered; another order of the same sum, within the same band). ``into``: the arrays
        ``low``, ``high``, ``known`` and ``own`` are written to (rows of a direction's ``(J, n)``
        arrays: filled in place, not stacked from copies)."""
        check_range(data)
        n_products = int(max(data.query_products.max(initial=-1), data.gallery_products.max(initial=-1))) + 1
        if np.bincount(data.gallery_products, minlength=n_products).max(initial=0) > 1 or data.intra:
            raise ValueError("thresholds by interval need at most one gallery item per product (cross tasks)")
        where = np.full(n_products, -1, dtype=np.int64)
        where[data.gallery_products] = np.arange(len(data.gallery_products))
        self.data = data
        n = len(data.query_products)
        low, high, known, own_of = into if into is not None else (
            np.empty(n), np.empty(n), np.empty(n, dtype=bool), np.empty(n, dtype=np.int64))
        np.take(where, data.query_products, out=own_of)
        self.own = own_of  # each query's relevant prototype (−1: none)
        q = np.flatnonzero(self.own >= 0)
        q_norm, g_norm = data.screen_norms
        self.q_norm = q_norm
        low.fill(-np.inf)
        high.fill(-np.inf)
        if len(q):
            bound = task_bound(data)
            if compiled:
                from ropebench.engines.kernels.fewshot import own_scores

                screened = own_scores(data.queries, q, data.gallery, self.own[q]).astype(np.float64)
            else:
                rows, own = _gathered(data.queries, q, gathered), self.own[q]
                # In batches of rows (each row's dot product is computed alone: the same bits), so
                # that the gathered prototypes stay in cache: 2.7 times faster over the 120 tasks.
                screened = np.concatenate([
                    np.einsum("ij,ij->i", rows[start:start + THRESHOLD_BATCH],
                              data.gallery[own[start:start + THRESHOLD_BATCH]])
                    for start in range(0, len(q), THRESHOLD_BATCH)]).astype(np.float64)
            width = pair_widths(bound, q_norm[q], g_norm[self.own[q]], screened)
            low[q] = np.nextafter(screened - width, -np.inf)
            high[q] = np.nextafter(screened + width, np.inf)
        self.low, self.high = low, high
        self.known = np.less(self.own, 0, out=known)  # T settled (or none to settle)
        self.p = (self.own >= 0).astype(np.int64)
        self.settled = 0

    def settle(self, queries: np.ndarray) -> np.ndarray:
        """Settle ``T`` of ``queries`` (member rows, scored) not yet known; returns those settled."""
        todo = np.unique(queries[~self.known[queries]])
        if len(todo):
            best = settle(self.data.exact_queries, self.data.exact_gallery, todo, self.own[todo], self.data.metric)
            self.low[todo] = best
            self.high[todo] = best
            self.known[todo] = True
            self.settled += len(todo)
        return todo


def _gathered(items: np.ndarray, rows: np.ndarray, found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None
              ) -> np.ndarray:
    """``items[rows]``, taken from ``found`` (``(items, rows, items[rows])``) where gathered before."""
    if found is None:
        return items[rows]
    for source, where, copy in found:
        if source is items and np.array_equal(where, rows):
            return copy
    copy = items[rows]
    found.append((items, rows, copy))
    return copy


class _Side:
    """One domain's items ordered by (product size, product): the reordered vectors, each product's
    slot, first item and size, each item's position in that order, and the tile edges."""

    def __init__(self, items: np.ndarray, codes: np.ndarray, tile: int) -> None:
        n_products = int(codes.max(initial=-1)) + 1
        size = np.bincount(codes, minlength=n_products)
        self.order = np.lexsort((np.arange(len(codes)), codes, size[codes]))
        self.items = np.ascontiguousarray(items[self.order])
        sorted_codes = codes[self.order]
        self.codes = sorted_codes
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]) if len(codes) else \
            np.zeros(0, dtype=np.int64)
        self.starts = np.r_[starts, len(codes)].astype(np.int64)
        self.product_codes = sorted_codes[starts]
        self.sizes = np.diff(self.starts)
        self.slot = np.repeat(np.arange(len(starts)), self.sizes)  # item -> its product's slot
        self.position = np.empty(len(codes), dtype=np.int64)  # member row -> sorted position
        self.position[self.order] = np.arange(len(codes))
        # Tiles end at the product boundary nearest to each multiple of ``tile``.
        n_tiles = max(1, round(len(codes) / max(tile, 1)))
        wanted = (np.arange(1, n_tiles) * len(codes)) // n_tiles
        cuts = self.starts[np.clip(np.searchsorted(self.starts, wanted), 0, len(self.starts) - 1)]
        self.edges = np.unique(np.r_[0, cuts, len(codes)]).astype(np.int64)

    def runs(self, start: int, stop: int) -> list[tuple[int, int, int, int, int]]:
        """Runs of products of equal size inside items ``[start, stop)`` (whole products):
        ``(first product, last product + 1, first item, last item + 1, size)``."""
        p0, p1 = int(self.slot[start]), int(self.slot[stop - 1]) + 1
        sizes = self.sizes[p0:p1]
        bounds = np.flatnonzero(np.r_[True, sizes[1:] != sizes[:-1], True])
        return [(p0 + int(a), p0 + int(b), int(self.starts[p0 + a]), int(self.starts[p0 + b]), int(sizes[a]))
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


@dataclass
class _Direction:
    """One direction ``X2Y``: its tasks by column, their judges, and its state: per query (X in the
    side's order) and column, the counts above / tied with ``T``, the float32 cut-off ``lo`` (+inf:
    not scored, or censored) and the float32 level ``hi`` above which a combined score is surely
    above ``T`` (counted in bulk, never decided pair by pair). ``gallery (n_products_Y, J)``: each
    Y product's index in column j's gallery (−1: not a way). ``by_columns``: X is the block's
    column side, so ``lo`` and ``hi`` are stored ``(J, n_X)`` (the layout its scores come in)."""

    tasks: list[str]
    judges: ColumnJudges
    gallery: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    above: np.ndarray
    ties: np.ndarray
    by_columns: bool
    thresholds: list[_Thresholds]
    low: np.ndarray
    high: np.ndarray
    known: np.ndarray
    own: np.ndarray
    settled: int = 0
    taken: int = 0
    decided: int = 0

    def decide(self, query: np.ndarray, column: np.ndarray, gallery: np.ndarray, values: np.ndarray,
               lock: threading.Lock) -> Decision:
        """Candidate ``i`` is ``(query[i], gallery[i])`` of column ``column[i]`` (query: member row),
        screened ``values[i]``: decided by the threshold's interval where the candidate's band lies
        wholly above or below it, else by the column's judge once ``T`` is settled (:class:`_Thresholds`)."""
        judges = self.judges
        v = values.astype(np.float64)
        width = pair_widths(judges.bound, judges.q_norm[query], judges.norms[judges.offset[column] + gallery], v) \
            + judges.extra[column, query]
        finite = np.isfinite(v)
        above = finite & (v - self.high[column, query] > width)
        unsure = ~above & ~(finite & (v - self.low[column, query] < -width))
        tie = np.zeros(len(v), dtype=bool)
        if not unsure.any():
            return Decision(above, tie, 0)
        pick = np.flatnonzero(unsure)
        with lock:
            self._settle(query[pick], column[pick])
        found = judges.decide(query[pick], column[pick], gallery[pick], values[pick])
        above[pick], tie[pick] = found.above, found.tie
        return Decision(above, tie, found.settled)

    def _settle(self, query: np.ndarray, column: np.ndarray) -> None:
        """Settle ``T`` of the (query, column) cells not yet known (under the lock): every column's
        in one float64 batch where the columns share their query vectors (the values and counts of
        :meth:`_Thresholds.settle`, column by column)."""
        first = self.thresholds[0].data
        if not all(t.data.exact_queries is first.exact_queries for t in self.thresholds):
            for j in np.unique(column).tolist():
                self.thresholds[j].settle(query[column == j])
            return
        n = self.low.shape[1]
        cells = np.unique(column * n + query)
        todo = ~self.known.reshape(-1)[cells]
        if not todo.any():
            return
        j, q = np.divmod(cells[todo], n)
        best = column_scores(first.exact_queries, self.judges.galleries, q, j, self.own[j, q], first.metric)
        self.low[j, q] = best
        self.high[j, q] = best
        self.known[j, q] = True
        for found, count in zip(*np.unique(j, return_counts=True), strict=True):
            self.thresholds[int(found)].settled += int(count)

    def candidates(self, values: np.ndarray, first_product: int, first_query: int, counts: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The combined scores in the band ``[lo, hi]``: ``values`` is ``(products, queries, J)``
        (``(products, J, queries)`` by columns); those above ``hi`` are added to ``counts`` (the
        chunk's queries' layout, ``values`` without its product axis). Returns products, queries
        (side positions), columns and values."""
        n_queries = values.shape[2] if self.by_columns else values.shape[1]
        span = slice(first_query, first_query + n_queries)
        cut, sure = (self.lo[:, span], self.hi[:, span]) if self.by_columns else (self.lo[span], self.hi[span])
        flat = at_or_above(values, cut)
        found = values.reshape(-1)[flat]
        cell = flat % counts.size  # the (query, column) cell in the layout of ``counts``
        surely = found > sure[np.divmod(cell, sure.shape[1])]
        counts.reshape(-1)[:] += np.bincount(cell[surely], minlength=counts.size)
        flat, found = flat[~surely], found[~surely]
        product, a, b = np.unravel_index(flat, values.shape)
        column, query = (a, b) if self.by_columns else (b, a)
        return first_product + product, first_query + query, column, found

    def add(self, counts: np.ndarray, first: int, max_k: int | None) -> None:
        """Add a tile's bulk counts ``(queries, J)`` of queries ``first…`` (under the lock); with
        ``max_k``, censor what reached it."""
        block = self.above[first:first + len(counts)]
        block += counts  # dense: a tile's (queries, J) cells, cheaper than finding the counted ones
        if max_k is not None:
            # only the cells counted here can newly reach max_k (the others are closed or below it)
            reached = block >= max_k
            reached &= counts > 0
            if reached.any():
                q, j = np.divmod(np.flatnonzero(reached), reached.shape[1])  # 2-D nonzero: 5x slower
                self._close(q + first, j)

    @property
    def bulk(self) -> int:
        """Pairs counted in bulk: every count in ``above`` but those :meth:`take` added (summed
        once at the end instead of once per tile)."""
        return int(self.above.sum()) - self.taken

    def take(self, query: np.ndarray, column: np.ndarray, decision: Decision, max_k: int | None) -> None:
        """Add one decision's counts (under the lock); with ``max_k``, censor what reached it."""
        self.settled += decision.settled
        self.decided += len(query)
        q, j = query[decision.above], column[decision.above]
        np.add.at(self.above, (q, j), 1)  # a cell may be chosen more than once
        self.taken += len(q)
        if decision.tie.any():
            np.add.at(self.ties, (query[decision.tie], column[decision.tie]), 1)
        if max_k is not None and len(q):
            reached = self.above[q, j] >= max_k
            if reached.any():
                self._close(q[reached], j[reached])

    def _close(self, q: np.ndarray, j: np.ndarray) -> None:
        """Queries ``q`` of columns ``j`` have ``max_k`` above ``T``: no score counts any more."""
        if self.by_columns:
            self.lo[j, q] = self.hi[j, q] = np.inf
        else:
            self.lo[q, j] = self.hi[q, j] = np.inf


# With numba installed, the kernels combine by default from this many (query, prototype) scores over
# the tasks (ROPE-test size: 9.3G; half its items, a quarter of that).
FUSED_SCORES = 1 << 31

# Combined scores per batch, (products, queries, J) float32: 4 MiB. Fewer, larger batches measured
# 3% (ROPE size) to 11% (half of it) faster than 2^18 on one thread; 2^21 and 2^22 were slower.
CHUNK = 1 << 20


def _chunks(runs: list[tuple[int, int, int, int, int]], per_product: int
            ) -> list[tuple[int, int, tuple[int, int]]]:
    """Runs split into batches of whole products whose combined scores (``per_product`` each) fit
    :data:`CHUNK`: ``(first product, first item, (products, items per product))``."""
    out = []
    step = max(1, CHUNK // max(per_product, 1))
    for p0, p1, s0, _, size in runs:
        for first in range(p0, p1, step):
            count = min(step, p1 - first)
            out.append((first, s0 + (first - p0) * size, (count, size)))
    return out


def at_or_above(values: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """Flat indices of ``values >= cut`` (broadcast); ``values`` is at most one :data:`CHUNK`, so
    the mask is one reused per-thread buffer (:func:`_reused`)."""
    view = _reused("mask", values.shape, np.bool_, least=CHUNK)
    np.greater_equal(values, cut, out=view)
    return np.flatnonzero(view)


_BUFFERS = threading.local()


def _reused(name: str, shape: tuple[int, ...], dtype: type, least: int = 0) -> np.ndarray:
    """This thread's buffer ``name`` (at least ``least`` elements) as an array of ``shape``
    (contents undefined), valid until the thread asks for ``name`` again: a tile's scores (16 MiB),
    counts (a few hundred KiB) and masks, fresh per tile, were mapped and faulted in anew by the
    allocator (about 400,000 page faults and 1 s of system time in the first few-shot evaluation of
    a process at ROPE size)."""
    size = math.prod(shape)
    buffer = getattr(_BUFFERS, name, None)
    if buffer is None or buffer.size < size:
        buffer = np.empty(max(size, least), dtype=dtype)
        setattr(_BUFFERS, name, buffer)
    return buffer[:size].reshape(shape)


def _tile_scores(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left · rightᵀ`` in this thread's reused tile buffer (:func:`_reused`)."""
    scores = _reused("tile", (len(left), len(right)), np.float32)
    np.matmul(left, right.T, out=scores)
    return scores


def _zeros(name: str, shape: tuple[int, int]) -> np.ndarray:
    """Zeroed int64 counts in this thread's reused buffer ``name`` (:func:`_reused`)."""
    counts = _reused(name, shape, np.int64)
    counts.fill(0)
    return counts


TileHook = Callable[[str, str, np.ndarray, np.ndarray, np.ndarray], None]


class _Unbounded(Exception):
    """Combined scores that could overflow float32: the per-task path is used instead."""


def linear_applies(task_data: Mapping[str, TaskData], columns: Mapping[str, SupportColumn]) -> bool:
    """Whether the linear screen can run these tasks: cosine or ip, every task described and with
    queries, and both directions of each domain pair present with the same columns."""
    if not columns or set(columns) != set(task_data):
        return False
    if any(data.metric not in METRICS or not len(data.queries) for data in task_data.values()):
        return False
    keys: dict[tuple[str, str], set[tuple[int, int]]] = {}
    for column in columns.values():
        keys.setdefault((column.query_set, column.support_set), set()).add(column.column)
    return all((y, x) in keys and keys[(y, x)] == found for (x, y), found in keys.items()) and \
        all(x != y for x, y in keys)


class _Combinations:
    """Each prototype set's weights and effective norms, computed once and shared by the threads:
    V2P and L2P combine the same supports into the same prototypes (the same arrays), so a third
    of the 120 columns need none of their own."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.found: dict[tuple[int, int, int], tuple[np.ndarray, ...]] = {}

    def get(self, prototypes: np.ndarray, items: np.ndarray, positions: np.ndarray, terms: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
        """``(w, effective norms)`` of ``prototypes`` combined from ``items[positions]`` (``terms``
        per prototype); raises :class:`_Unbounded` where a weight leaves float32."""
        key = (id(prototypes), id(items), id(positions))
        with self.lock:
            hit = self.found.get(key)  # the arrays themselves are kept: no id is reused meanwhile
        if hit is not None and hit[0] is prototypes and hit[1] is items and hit[2] is positions and \
                np.array_equal(hit[3], terms):
            return hit[4], hit[5]
        sums = support_sums(items, positions)  # once for the weights and the effective norms
        w = combination_weights(prototypes, items, positions, sums)
        if not np.isfinite(w).all():
            raise _Unbounded  # supports that nearly cancel: a weight beyond float32
        norms = effective_norms(prototypes, items, positions, w, terms, sums=sums)
        with self.lock:
            self.found[key] = (prototypes, items, positions, terms, w, norms)
        return w, norms


def _weights(side: _Side, items: np.ndarray, tasks: Mapping[tuple[int, int], str],
             task_data: Mapping[str, TaskData], columns: Mapping[str, SupportColumn],
             combinations: _Combinations
             ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], float, list[tuple[np.ndarray, np.ndarray]]]:
    """A support domain's ``(n_items, J)`` float32 weights (items in the side's order), each product's
    gallery index per column, each column's effective norms, the largest weight, and per column its
    ways' supports (side positions, ``(n_ways, k)``) with their weights.

    ``items``: the domain's vectors in member order (the supports' positions index them);
    ``combinations``: the weights and norms already computed (by any thread)."""
    keys = list(tasks)
    weights = np.zeros((len(side.codes), len(keys)), dtype=np.float32)
    gallery = np.full((len(side.product_codes), len(keys)), -1, dtype=np.int64)
    norms: list[np.ndarray] = []
    ways: list[tuple[np.ndarray, np.ndarray]] = []
    weight_max = 0.0
    for j, key in enumerate(keys):
        data, positions = task_data[tasks[key]], columns[tasks[key]].positions
        if not len(positions):
            ways.append((np.zeros((0, positions.shape[1]), dtype=np.int64), np.zeros(0, dtype=np.float32)))
            norms.append(np.zeros(0))
            weights[:, j] = np.nan  # no ways: nothing to combine
            continue
        rows = side.position[positions]  # the side's positions of every support
        slots = side.slot[rows[:, 0]]
        w, found_norms = combinations.get(data.exact_gallery, items, positions, side.sizes[slots])
        ways.append((rows, w))
        weights[rows, j] = np.repeat(w, positions.shape[1]).reshape(positions.shape)
        gallery[slots, j] = np.arange(len(positions))
        norms.append(found_norms)
        # A product that is not a way of this column combines to NaN: never a candidate, never counted.
        weights[gallery[side.slot, j] < 0, j] = np.nan
        weight_max = max(weight_max, float(np.abs(w).max(initial=0.0)))
    return weights, gallery, norms, weight_max, ways


def linear_search(task_data: Mapping[str, TaskData], columns: Mapping[str, SupportColumn], *, max_k: int,
                  exact_censored: bool = False, threads: int = 1, settings: LinearSettings | None = None,
                  tile_hook: TileHook | None = None) -> SearchRun | None:
    """First-hit counts of every few-shot task through the linear screen (see the module docstring),
    or None when combined scores could overflow float32 (then the per-task path runs).

    Args:
        task_data: per task, its :class:`TaskData` (gallery: the draw's float32 prototypes).
        columns: per task, its :class:`SupportColumn` (:func:`linear_applies` must hold).
        max_k: the largest K reported; exact_censored: count beyond it too.
        threads: worker threads, each running whole tiles (BLAS single-threaded inside).
        tile_hook: called with every tile of every block, ``(X, Y, rows, columns, scores)`` (rows and
            columns as member rows of X's and Y's vectors; ``scores`` read-only, valid during the
            call), on the worker threads: the retrieval tasks reading the same blocks
            (:class:`ropebench.engines.onepass.SharedCross`).
    """
    settings = settings or LinearSettings()
    names = list(task_data)
    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
    counters = {name: 0 for name in (*COUNTERS, *OWN_COUNTERS)}
    hits: dict[str, FirstHits] = {}
    try:
        _share_norms(task_data)
        pairs: list[tuple[str, str]] = []
        for column in columns.values():
            x, y = column.query_set, column.support_set
            if (y, x) not in pairs and (x, y) not in pairs:
                pairs.append((x, y))
        scores = sum(len(data.queries) * len(data.gallery) for data in task_data.values())
        fused = kernels.chosen(settings.fused, scores, FUSED_SCORES, "the few-shot kernels")
        sides: dict[tuple[int, int], tuple[np.ndarray, _Side]] = {}  # a domain: rows of one pair, columns of another
        plans = [_Plan.of(x, y, task_data, columns, settings, sides) for x, y in pairs]
        # Every direction's set-up (thresholds, weights, tables, judges) on the workers, side by
        # side: the six are independent, and run one after another they were the search's largest
        # serial part.
        jobs = [(plan, direction) for plan in plans for direction in plan.tasks]

        combinations = _Combinations()

        def set_up(job: tuple[_Plan, tuple[str, str]]) -> tuple[_Direction, np.ndarray, fewshot_fused.Tables | None]:
            return _set_up(job[0], job[1], task_data, columns, fused, combinations)

        # Submitted first, so a pair's tiles start once its own two set-ups are done while the
        # workers carry on with the others' (no thread waits between the set-ups and the tiles).
        waiting = [pool.submit(set_up, job) for job in jobs] if pool is not None else None
        for i, (plan, direction) in enumerate(jobs):
            plan.built[direction] = waiting[i].result() if waiting is not None else set_up((plan, direction))
            if len(plan.built) == len(plan.tasks):
                _pair(plan, None if exact_censored else max_k, fused, pool, counters, tile_hook)
        limit = None if exact_censored else max_k
        ends = [(plan, direction) for plan in plans for direction in plan.tasks]

        def collect(end: tuple[_Plan, tuple[str, str]]) -> tuple[dict[str, FirstHits], dict[str, int]]:
            return _collect(end[0], end[1], limit)

        for found_hits, found_counters in (pool.map(collect, ends) if pool is not None else map(collect, ends)):
            hits.update(found_hits)
            for name, value in found_counters.items():
                counters[name] += value
    except _Unbounded:
        return None
    finally:
        if pool is not None:
            pool.shutdown()
    counters["queries_censored"] = sum(int(h.censored.sum()) for h in hits.values())
    return SearchRun(hits={name: hits[name] for name in names}, counters=counters,
                     engine={"name": "one-pass", "screen": "fp32", "fewshot_screen": SCREEN_NAME})


def _sure_level(judge: Judge, high: np.ndarray, g_norm_max: float) -> np.ndarray:
    """Float32 level per query above which a combined score is surely above ``T`` for every
    prototype of effective norm at most ``g_norm_max``: ``high + w`` rounded up (``high ≥ T``, the
    upper end of ``T``'s interval; ``w`` the widest band). +inf where the query is not scored, or
    where the band grows with the score itself (an output term): then nothing is counted in bulk."""
    b = judge.bound
    top = np.full(len(judge.q_norm), g_norm_max)
    width = pair_widths(b, judge.q_norm, top, np.zeros(len(top))) + judge.extra
    usable = np.isfinite(high) & (b.output == 0) & (not b.exact)
    with np.errstate(invalid="ignore"):
        up = np.nextafter(high + width, np.inf)  # the float64 sum, rounded up
    up = np.where(usable & (up < float(np.finfo(np.float32).max)), up, np.inf)
    level = up.astype(np.float32)
    return np.where(level < up, np.nextafter(level, np.float32(np.inf)), level).astype(np.float32)


def _share_norms(task_data: Mapping[str, TaskData]) -> None:
    """Fill each task's cached ``screen_norms`` from one computation per distinct array: the tasks
    of a direction share their queries (and V2P and L2P their prototypes), so the 120 tasks need the
    norms of 3 query sets and 60 galleries, not 240 arrays. The same function, the same values."""
    found: dict[tuple[int, str], np.ndarray] = {}

    def norms(vectors: np.ndarray, metric: str, side: str) -> np.ndarray:
        key = (id(vectors), side)
        if key not in found:
            found[key] = screen_norms(vectors, metric, side)
        return found[key]

    for data in task_data.values():
        if "screen_norms" not in data.__dict__:  # TaskData.screen_norms is a cached_property
            q = norms(data.queries, data.metric, "queries")
            g = q if data.gallery is data.queries else norms(data.gallery, data.metric, "gallery")
            data.__dict__["screen_norms"] = (q, g)


@dataclass
class _Plan:
    """One domain pair ``(x, y)``: its tasks per direction (by column key, sorted), its two sides
    (x: the block's rows, y: its columns) and, once set up, per direction its :class:`_Direction`,
    the support side's weights and the kernels' tables (None: numpy combines)."""

    x: str
    y: str
    tasks: dict[tuple[str, str], dict[tuple[int, int], str]]
    rows: _Side
    cols: _Side
    built: dict[tuple[str, str], tuple[_Direction, np.ndarray, fewshot_fused.Tables | None]]

    @staticmethod
    def of(x: str, y: str, task_data: Mapping[str, TaskData], columns: Mapping[str, SupportColumn],
           settings: LinearSettings, sides: dict[tuple[int, int], tuple[np.ndarray, _Side]] | None = None) -> _Plan:
        """``sides``: the sides already built (by the identity of their vectors and the tile, with
        their codes), shared by the pairs: each domain is built once, not once per pair it is in."""
        tasks = {(a, b): {c.column: n for n, c in sorted(columns.items()) if (c.query_set, c.support_set) == (a, b)}
                 for a, b in ((x, y), (y, x))}
        tasks = {d: dict(sorted(found.items())) for d, found in tasks.items()}
        first = {d: task_data[next(iter(found.values()))] for d, found in tasks.items()}
        found = {} if sides is None else sides

        def side(data: TaskData, tile: int) -> _Side:
            key = (id(data.queries), tile)  # the arrays stay alive meanwhile
            hit = found.get(key)
            if hit is None or not np.array_equal(hit[0], data.query_products):  # each task has its own codes array
                hit = found[key] = (data.query_products, _Side(data.queries, data.query_products, tile))
            return hit[1]

        return _Plan(x, y, tasks, side(first[(x, y)], settings.rows), side(first[(y, x)], settings.columns), {})


def _set_up(plan: _Plan, direction: tuple[str, str], task_data: Mapping[str, TaskData],
            columns: Mapping[str, SupportColumn], fused: bool, combinations: _Combinations
            ) -> tuple[_Direction, np.ndarray, fewshot_fused.Tables | None]:
    """One direction ``(a, b)`` of a pair: its tasks' thresholds, the support side's weights, the
    kernels' tables (when ``fused``), the judges and the cut-offs."""
    a, b = direction
    named = plan.tasks[direction]
    query_side, support_side = (plan.rows, plan.cols) if a == plan.x else (plan.cols, plan.rows)
    supports = task_data[next(iter(plan.tasks[(b, a)].values()))]  # its queries: b's items
    w, gallery, norms, weight_max, ways = _weights(support_side, supports.queries, named, task_data, columns,
                                                   combinations)
    found_tables = None
    if fused:
        found_tables = fewshot_fused.tables(support_side.slot, support_side.starts, support_side.product_codes,
                                            [key[0] for key in named], ways)
    data = [task_data[name] for name in named.values()]
    gathered: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    # The columns' threshold intervals in one (J, n) array each, settled in place: the judges'
    # ``best`` (and ColumnJudges' stacked screen) are rows of ``low``.
    n_rows = (len(data), len(data[0].query_products))
    low, high = np.empty(n_rows), np.empty(n_rows)
    known, own = np.empty(n_rows, dtype=bool), np.empty(n_rows, dtype=np.int64)
    mine = [_Thresholds(d, gathered, compiled=fused, into=(low[j], high[j], known[j], own[j]))
            for j, d in enumerate(data)]
    dim = data[0].exact_queries.shape[1]
    # Every term of a combination is at most |x| |w| |y_i| (1 + c): refuse sums that could overflow.
    q_top = float(mine[0].q_norm.max(initial=0.0))
    y_top = float(supports.screen_norms[0].max(initial=0.0))
    if q_top * weight_max * y_top * int(support_side.sizes.max(initial=1)) > 1e37:
        raise _Unbounded
    bound = combination_bound(dim, weight_max, int(support_side.sizes.max(initial=1)))
    judges = [Judge(d.metric, bound, d.exact_queries, t.q_norm, None, t.low, t.p, 0)
              for t, d in zip(mine, data, strict=True)]
    n_q, n_columns = len(query_side.codes), len(named)
    lo = np.empty((n_columns, n_q), dtype=np.float32)
    hi = np.empty((n_columns, n_q), dtype=np.float32)
    for j, judge in enumerate(judges):
        lo[j] = judge.cutoff(float(norms[j].max(initial=0.0)))[query_side.order]
        hi[j] = _sure_level(judge, high[j], float(norms[j].max(initial=0.0)))[query_side.order]
    # The same values, shared: a settled T reaches every judge and the stacked screen.
    column_judges = ColumnJudges(judges, [d.exact_gallery for d in data], norms, best=low)
    by_columns = a == plan.y
    found = _Direction(
        list(named.values()), column_judges, gallery,
        lo if by_columns else np.ascontiguousarray(lo.T), hi if by_columns else np.ascontiguousarray(hi.T),
        np.zeros((n_q, n_columns), dtype=np.int64),
        np.zeros((n_q, n_columns), dtype=np.int64), by_columns=by_columns, thresholds=mine, low=low, high=high,
        known=known, own=own)
    return found, w, found_tables


def _collect(plan: _Plan, direction: tuple[str, str], max_k: int | None
             ) -> tuple[dict[str, FirstHits], dict[str, int]]:
    """One searched direction's first hits per task (queries back in member order, censored at
    ``max_k``) and its counters."""
    found, query_side = plan.built[direction][0], plan.rows if direction[0] == plan.x else plan.cols
    hits: dict[str, FirstHits] = {}
    counters = {"relevant_settled": 0, "pairs_settled": found.settled, "prototype_pairs_bulk": found.bulk,
                "prototype_pairs_decided": found.decided}
    for j, name in enumerate(found.tasks):
        judge = found.judges.judges[j]
        scored = np.isfinite(judge.best)
        above = np.empty(len(scored), dtype=np.int64)
        tied = np.empty(len(scored), dtype=np.int64)
        above[query_side.order] = found.above[:, j]
        tied[query_side.order] = found.ties[:, j]
        a_s, t_s, p_s = above[scored], tied[scored], judge.p[scored]
        limited = np.zeros(len(a_s), dtype=bool)
        if max_k is not None:
            a_s, t_s, p_s, limited = censor(a_s, t_s, p_s, limited, max_k)
        hits[name] = FirstHits(scored=scored, a=a_s, t=t_s, p=p_s, censored=limited)
        counters["relevant_settled"] += found.thresholds[j].settled
    return hits, counters


def _pair(plan: _Plan, max_k: int | None, fused: bool, pool: ThreadPoolExecutor | None,
          counters: dict[str, int], tile_hook: TileHook | None = None) -> None:
    """Both directions of one domain pair from one tiled block ``X · Yᵀ``; ``fused``: by the
    kernels where their tables allow (:attr:`~ropebench.engines.fewshot_fused.Tables.usable`)."""
    x, y, rows, cols, tasks = plan.x, plan.y, plan.rows, plan.cols, plan.tasks
    directions = {d: found[0] for d, found in plan.built.items()}
    weights = {d[1]: found[1] for d, found in plan.built.items()}
    kernel_tables = {d[1]: found[2] for d, found in plan.built.items() if found[2] is not None}
    fused = fused and all(found[2] is not None and found[2].usable for found in plan.built.values())
    forward, backward = directions[(x, y)], directions[(y, x)]
    n_columns = len(tasks[(x, y)])
    # One lock per direction: a tile's two directions share no state, so two threads finishing
    # tiles wait for each other only on the same direction.
    locks = {id(forward): threading.Lock(), id(backward): threading.Lock()}
    formed_total = [0]
    tiles = [(i, j) for i in range(len(rows.edges) - 1) for j in range(len(cols.edges) - 1)]

    def finish(found: list, counts_forward: np.ndarray, counts_backward: np.ndarray, r0: int, c0: int,
               formed: int) -> None:
        """Decide a tile's candidates (``found``: per pass, its direction, support products, queries
        as side positions, columns, values, support side and query side) and add its counts."""
        decided = []
        for direction in (forward, backward):
            mine = [item[1:] for item in found if item[0] is direction and len(item[1])]
            if not mine:  # nothing between ``lo`` and ``hi`` (about a third of the passes)
                continue
            product, query, column, values = mine[0][:4] if len(mine) == 1 else \
                (np.concatenate([item[k] for item in mine]) for k in range(4))
            support_side, query_side = mine[0][4], mine[0][5]
            gallery = direction.gallery[product, column]
            keep = (gallery >= 0) & (support_side.product_codes[product] != query_side.codes[query])
            query, column = query[keep], column[keep]
            if len(query):
                decision = direction.decide(query_side.order[query], column, gallery[keep], values[keep],
                                            locks[id(direction)])
                decided.append((direction, query, column, decision))
        for direction, counts, first in ((forward, counts_forward, r0), (backward, counts_backward.T, c0)):
            with locks[id(direction)]:
                for mine_direction, query, column, decision in decided:
                    if mine_direction is direction:
                        direction.take(query, column, decision, max_k)
                direction.add(counts, first, max_k)
                if direction is forward:
                    formed_total[0] += formed

    def run_tile(tile: tuple[int, int]) -> None:
        i, j = tile
        r0, r1, c0, c1 = (int(rows.edges[i]), int(rows.edges[i + 1]), int(cols.edges[j]), int(cols.edges[j + 1]))
        scores = _tile_scores(rows.items[r0:r1], cols.items[c0:c1])
        if tile_hook is not None:
            tile_hook(x, y, rows.order[r0:r1], cols.order[c0:c1], scores)
        found = []
        formed = 0
        counts_forward = _zeros("forward", (r1 - r0, n_columns))
        counts_backward = _zeros("backward", (n_columns, c1 - c0))
        # X2Y: each Y product's scores (its columns) combined into its prototypes' (products, rows, J).
        for p0, s0, (n_p, size) in _chunks(cols.runs(c0, c1), (r1 - r0) * n_columns):
            s1 = s0 + n_p * size
            block = scores[:, s0 - c0:s1 - c0].reshape(r1 - r0, n_p, size).transpose(1, 0, 2)
            values = np.matmul(block, weights[y][s0:s1].reshape(n_p, size, n_columns))
            found.append((forward, *forward.candidates(values, p0, r0, counts_forward), cols, rows))
            formed += values.size
        # Y2X: each X product's scores (its rows) combined into (products, J, columns).
        for p0, s0, (n_p, size) in _chunks(rows.runs(r0, r1), (c1 - c0) * n_columns):
            s1 = s0 + n_p * size
            block = scores[s0 - r0:s1 - r0].reshape(n_p, size, c1 - c0)
            matrix = np.ascontiguousarray(weights[x][s0:s1].reshape(n_p, size, n_columns).transpose(0, 2, 1))
            values = np.matmul(matrix, block)
            found.append((backward, *backward.candidates(values, p0, c0, counts_backward), rows, cols))
            formed += values.size
        finish(found, counts_forward, counts_backward, r0, c0, formed)

    if fused:
        # The column side slot-major inside each tile's runs (fewshot_fused.Interleaved): the X2Y
        # kernel's statistics then vectorise over products; the Y2X kernel reads whole rows.
        inter = fewshot_fused.interleave([cols.runs(int(cols.edges[j]), int(cols.edges[j + 1]))
                                          for j in range(len(cols.edges) - 1)], cols.starts, cols.edges)
        inter_items = cols.items[inter.order]
        # Per column tile: each column's side position, its code, and where each side position
        # sits among the tile's columns (so the Y2X counts return to side order by a gather: a
        # scatter over columns cost four times as much); per row tile, its products.
        tile_at = [inter.order[int(cols.edges[j]):int(cols.edges[j + 1])] for j in range(len(cols.edges) - 1)]
        tile_back = [np.argsort(at) for at in tile_at]  # a tile's columns are a permutation of its positions
        tile_codes = [cols.codes[at] for at in tile_at]
        tile_rows = [fewshot_fused.row_products(rows.starts, rows.slot, int(rows.edges[i]), int(rows.edges[i + 1]))
                     for i in range(len(rows.edges) - 1)]

    def run_tile_fused(tile: tuple[int, int]) -> None:
        i, j = tile
        r0, r1, c0, c1 = (int(rows.edges[i]), int(rows.edges[i + 1]), int(cols.edges[j]), int(cols.edges[j + 1]))
        scores = _tile_scores(rows.items[r0:r1], inter_items[c0:c1])
        at = tile_at[j]  # the side position of each of the tile's columns
        if tile_hook is not None:
            tile_hook(x, y, rows.order[r0:r1], cols.order[at], scores)
        counts_forward = _zeros("forward", (r1 - r0, n_columns))
        formed = np.zeros(1, dtype=np.int64)
        product, query, column, values = fewshot_fused.run_rows(
            scores, inter.runs[j], kernel_tables[y], rows.codes[r0:r1], forward.lo[r0:r1], forward.hi[r0:r1],
            counts_forward, formed)
        found = [(forward, product, r0 + query, column, values, cols, rows)]
        interleaved = _zeros("backward", (n_columns, c1 - c0))
        product, query, column, values = fewshot_fused.run_columns(
            scores, tile_rows[i], kernel_tables[x], tile_codes[j], backward.lo[:, at], backward.hi[:, at], interleaved,
            formed)
        found.append((backward, product, at[query], column, values, rows, cols))
        counts_backward = interleaved[:, tile_back[j]]  # side order: column m holds side position c0 + m
        finish(found, counts_forward, counts_backward, r0, c0, int(formed[0]))

    with threadpool_limits(limits=1, user_api="blas") if pool is not None else contextlib.nullcontext():
        run_tiles(pool, tiles, run_tile_fused if fused else run_tile)
    counters["blocks_tiled"] += 1
    counters["prototype_scores_formed"] += formed_total[0]
