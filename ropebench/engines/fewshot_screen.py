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
for bit. Used for cosine and ip on the default one-pass engine; other metrics and engines keep the
per-task path.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from ropebench.engines.base import COUNTERS, FirstHits, SearchRun, TaskData
from ropebench.engines.core import Decision, Judge, judge_task
from ropebench.engines.core.combine import ColumnJudges, combination_bound, combination_weights, effective_norms
from ropebench.engines.core.decide import censor
from ropebench.engines.pool import run_tiles

__all__ = ["SupportColumn", "LinearSettings", "linear_applies", "linear_search", "SCREEN_NAME"]

SCREEN_NAME = "linear"
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
    products). Tests shrink them so that small data reaches every path."""

    rows: int = 1024
    columns: int = 2048
    skip: bool = True  # the product bound (module docstring); False forms every combined score


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
    side's order) and column, the counts above / tied with ``T`` and the float32 cut-off ``lo``
    ``(n_X, J)`` (+inf: not scored, or censored). ``gallery (n_products_Y, J)``: each Y product's
    index in column j's gallery (−1: not a way). ``groups``: the columns of each number of shots
    (contiguous: columns are sorted by (shots, draw)), with per group the support side's weights
    ``(n_Y, J_g)``, each Y product's bound factor ``a`` and each query's float32 skip level ``L``
    (module docstring, "The product bound")."""

    tasks: list[str]
    judges: ColumnJudges
    gallery: np.ndarray
    lo: np.ndarray
    above: np.ndarray
    ties: np.ndarray
    groups: list[_Group]
    settled: int = 0
    formed: int = 0
    skipped: int = 0

    def take(self, query: np.ndarray, column: np.ndarray, decision: Decision, max_k: int | None) -> None:
        """Add one decision's counts (under the lock); with ``max_k``, censor what reached it."""
        self.settled += decision.settled
        width = self.above.shape[1]
        for counts, chosen in ((self.above, decision.above), (self.ties, decision.tie)):
            keys, n = np.unique(query[chosen] * width + column[chosen], return_counts=True)
            counts.reshape(-1)[keys] += n
        if max_k is not None:
            keys = np.unique(query[decision.above] * width + column[decision.above])
            done = keys[self.above.reshape(-1)[keys] >= max_k]
            if len(done):
                self.lo.reshape(-1)[done] = np.inf


@dataclass
class _Group:
    """The columns ``[first, stop)`` of one number of shots in a direction: the support side's
    weights of these columns ``(n_Y, J_g)``, each Y product's factor ``a`` (float32, rounded up:
    ``shots · max_j w_j``) and each query's skip level ``level`` (float32: a product whose
    ``fl32(a · M) < level`` cannot reach the query's threshold in any of these columns)."""

    first: int
    stop: int
    weights: np.ndarray
    factor: np.ndarray
    level: np.ndarray | None


CHUNK = 1 << 18  # combined scores per batch: (products, queries, J) float32 kept in L2 for the comparison


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


DENSE = 0.6  # a chunk forms every combined score when its padded survivors exceed this share


def segment_max(view: np.ndarray) -> np.ndarray:
    """``(n_p, n_q, c)`` item scores -> ``(n_p, n_q)`` their maximum over the product's ``c`` items:
    one elementwise maximum per item (in the memory order of the tile, so whichever axis holds the
    products, each pass streams the chunk)."""
    top = view[:, :, 0].copy(order="K")
    for i in range(1, view.shape[2]):
        np.maximum(top, view[:, :, i], out=top)
    return top


def _screen_group(view: np.ndarray, weights: np.ndarray, cut: np.ndarray, survive: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Combined scores of one chunk and group at or above their cut-off.

    ``view (n_p, n_q, c)``: item scores; ``weights (n_p, c, J_g)``; ``cut (n_q, J_g)``: the cut-offs
    of the chunk's queries; ``survive (n_p, n_q)`` (C-contiguous): the (product, query) pairs the
    product bound keeps (None: all). The survivors' item scores are gathered per product (padded to
    the product with most), combined by one batched matmul and compared with their query's lowest
    cut-off of the group, then with their own. Returns products, queries (chunk positions), group
    columns and values of the candidates, and the number of scores formed."""
    n_p, n_q, _ = view.shape
    if survive is not None:
        counts = np.count_nonzero(survive, axis=1)
        width = int(counts.max(initial=0))
        if not width:
            return (*(np.zeros(0, dtype=np.int64),) * 3, np.zeros(0, dtype=np.float32), 0)
        if width <= DENSE * n_q:
            product, query = np.nonzero(survive)
            slot = np.arange(len(product)) - np.repeat(np.cumsum(counts) - counts, counts)
            index = np.zeros((n_p, width), dtype=np.int64)
            index[product, slot] = query
            values = np.matmul(view[np.arange(n_p)[:, None], index], weights)  # (n_p, width, J_g)
            lowest = np.full((n_p, width, 1), np.inf, dtype=np.float32)  # the padding never passes
            lowest[product, slot, 0] = cut.min(axis=1)[query]
            flat = at_or_above(values, lowest)
            p, s, j = np.unravel_index(flat, values.shape)
            q, found = index[p, s], values.reshape(-1)[flat]
            mine = found >= cut[q, j]
            return p[mine], q[mine], j[mine], found[mine], len(product) * weights.shape[2]
    values = np.matmul(view, weights)
    flat = at_or_above(values, cut)
    p, q, j = np.unravel_index(flat, values.shape)
    return p, q, j, values.reshape(-1)[flat], values.size


def at_or_above(values: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """Flat indices of ``values >= cut`` (broadcast); ``values`` is one :data:`CHUNK`, so the mask
    stays in cache between the comparison and ``flatnonzero`` (a per-thread buffer)."""
    mask = getattr(_BUFFERS, "mask", None)
    if mask is None or mask.size < values.size:
        mask = _BUFFERS.mask = np.empty(max(values.size, CHUNK), dtype=bool)
    view = mask[:values.size].reshape(values.shape)
    np.greater_equal(values, cut, out=view)
    return np.flatnonzero(view)


_BUFFERS = threading.local()


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


def _weights(side: _Side, items: np.ndarray, tasks: Mapping[tuple[int, int], str],
             task_data: Mapping[str, TaskData], columns: Mapping[str, SupportColumn]
             ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], float]:
    """A support domain's ``(n_items, J)`` float32 weights (items in the side's order), each product's
    gallery index per column, each column's effective norms, and the largest weight.

    ``items``: the domain's vectors in member order (the supports' positions index them)."""
    keys = list(tasks)
    weights = np.zeros((len(side.codes), len(keys)), dtype=np.float32)
    gallery = np.full((len(side.product_codes), len(keys)), -1, dtype=np.int64)
    norms: list[np.ndarray] = []
    weight_max = 0.0
    for j, key in enumerate(keys):
        data, positions = task_data[tasks[key]], columns[tasks[key]].positions
        if not len(positions):
            norms.append(np.zeros(0))
            continue
        w = combination_weights(data.exact_gallery, items, positions)
        rows = side.position[positions]  # the side's positions of every support
        weights[rows, j] = np.repeat(w, positions.shape[1]).reshape(positions.shape)
        slots = side.slot[rows[:, 0]]
        gallery[slots, j] = np.arange(len(positions))
        norms.append(effective_norms(data.exact_gallery, items, positions, w, side.sizes[slots]))
        weight_max = max(weight_max, float(np.abs(w).max(initial=0.0)))
    return weights, gallery, norms, weight_max


def linear_search(task_data: Mapping[str, TaskData], columns: Mapping[str, SupportColumn], *, max_k: int,
                  exact_censored: bool = False, threads: int = 1, settings: LinearSettings | None = None
                  ) -> SearchRun | None:
    """First-hit counts of every few-shot task through the linear screen (see the module docstring),
    or None when combined scores could overflow float32 (then the per-task path runs).

    Args:
        task_data: per task, its :class:`TaskData` (gallery: the draw's float32 prototypes).
        columns: per task, its :class:`SupportColumn` (:func:`linear_applies` must hold).
        max_k: the largest K reported; exact_censored: count beyond it too.
        threads: worker threads, each running whole tiles (BLAS single-threaded inside).
    """
    settings = settings or LinearSettings()
    names = list(task_data)
    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
    counters = {name: 0 for name in (*COUNTERS, "prototype_scores_formed", "prototype_scores_skipped")}
    hits: dict[str, FirstHits] = {}
    try:
        judged = list(pool.map(lambda n: judge_task(task_data[n]), names)) if pool is not None else \
            [judge_task(task_data[n]) for n in names]
        thresholds = dict(zip(names, judged, strict=True))
        pairs: list[tuple[str, str]] = []
        for column in columns.values():
            x, y = column.query_set, column.support_set
            if (y, x) not in pairs and (x, y) not in pairs:
                pairs.append((x, y))
        for x, y in pairs:
            _pair(x, y, task_data, columns, thresholds, None if exact_censored else max_k, settings, pool, hits,
                  counters)
    except _Unbounded:
        return None
    finally:
        if pool is not None:
            pool.shutdown()
    counters["queries_censored"] = sum(int(h.censored.sum()) for h in hits.values())
    return SearchRun(hits={name: hits[name] for name in names}, counters=counters,
                     engine={"name": "one-pass", "screen": "fp32", "fewshot_screen": SCREEN_NAME})


def _groups(keys: list[tuple[int, int]], weights: np.ndarray, side: _Side, judges: list[Judge],
            norms: list[np.ndarray], floor: float, order: np.ndarray, skip: bool) -> list[_Group]:
    """The direction's columns grouped by number of shots, each with the product bound's factor per
    support product and skip level per query (module docstring, "The product bound"; ``order``: the
    query side's member rows in its order). Without ``skip``, or with a negative weight anywhere
    (then a smaller weight bounds a negative maximum: the bound would need the minimum too), the
    levels are None: every combined score is formed."""
    shots = np.array([key[0] for key in keys], dtype=np.int64)
    edges = np.flatnonzero(np.r_[True, shots[1:] != shots[:-1], True])
    n_products = len(side.sizes)
    # A prototype's weight sits on its supports, zeros elsewhere: its product's maximum is the weight.
    per_product = np.maximum.reduceat(weights, side.starts[:-1], axis=0) if n_products else \
        np.zeros((0, len(keys)), dtype=np.float32)
    usable = skip and not bool((weights < 0).any())
    groups = []
    for first, stop in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        factor = level = None
        if usable:
            exact = int(shots[first]) * per_product[:, first:stop].astype(np.float64).max(axis=1, initial=0.0)
            factor = exact.astype(np.float32)
            factor = np.where(factor < exact, np.nextafter(factor, np.float32(np.inf)), factor)  # round up
            level = _skip_levels(judges[first:stop], norms[first:stop], floor, order)
        groups.append(_Group(first, stop, np.ascontiguousarray(weights[:, first:stop]),
                             np.zeros(n_products, dtype=np.float32) if factor is None else factor, level))
    return groups


def _skip_levels(judges: list[Judge], norms: list[np.ndarray], floor: float, order: np.ndarray) -> np.ndarray:
    """Each query's float32 skip level ``L`` for one group of columns (module docstring): below the
    smallest of its thresholds over the group's columns by the widest band of the group's
    prototypes, rounded so that ``fl32(a · M) < L`` implies ``a · max(M, 0) < T − band`` in exact
    arithmetic; −inf (never skip) where that is not positive and normal."""
    best = np.stack([judge.best for judge in judges])  # (J_g, n) float64, −inf: not scored
    threshold = np.where(np.isfinite(best), best, np.inf).min(axis=0)  # +inf: scored in no column
    q_norm = judges[0].q_norm
    extra = np.stack([judge.extra for judge in judges]).max(axis=0)
    g_top = max(float(norm.max(initial=0.0)) for norm in norms)
    band = q_norm * g_top + floor + extra
    # Float64 rounding of this arithmetic (a few ulps) and of the float32 product fl(a·M) ≥ a·M (1 − u₃₂):
    # L = T − band − 4u₆₄(|T| + band), then scaled by (1 − 2⁻²²) and rounded down to float32.
    with np.errstate(invalid="ignore"):
        low = threshold - band - 4 * 2.0 ** -53 * (np.abs(threshold) + band)
    low = np.where(np.isnan(low), -np.inf, low) * (1.0 - 2.0 ** -22)
    level = low.astype(np.float32)
    level = np.where(level > low, np.nextafter(level, np.float32(-np.inf)), level)
    level = np.where(level >= np.float32(2.0 ** -126), level, np.float32(-np.inf))
    return level[order].astype(np.float32)


def _pair(x: str, y: str, task_data: Mapping[str, TaskData], columns: Mapping[str, SupportColumn],
          thresholds: Mapping[str, Judge], max_k: int | None, settings: LinearSettings,
          pool: ThreadPoolExecutor | None, hits: dict[str, FirstHits], counters: dict[str, int]) -> None:
    """Both directions of one domain pair from one tiled block ``X · Yᵀ``."""
    tasks = {(a, b): {c.column: n for n, c in sorted(columns.items()) if (c.query_set, c.support_set) == (a, b)}
             for a, b in ((x, y), (y, x))}
    tasks = {d: dict(sorted(found.items())) for d, found in tasks.items()}
    first = {d: task_data[next(iter(found.values()))] for d, found in tasks.items()}
    rows = _Side(first[(x, y)].queries, first[(x, y)].query_products, settings.rows)
    cols = _Side(first[(y, x)].queries, first[(y, x)].query_products, settings.columns)
    directions: dict[tuple[str, str], _Direction] = {}
    for (a, b), named in tasks.items():
        query_side, support_side = (rows, cols) if a == x else (cols, rows)
        w, gallery, norms, weight_max = _weights(support_side, first[(b, a)].queries, named, task_data, columns)
        data = [task_data[name] for name in named.values()]
        dim = data[0].exact_queries.shape[1]
        # Every term of a combination is at most |x| |w| |y_i| (1 + c): refuse sums that could overflow.
        q_top = float(thresholds[next(iter(named.values()))].q_norm.max(initial=0.0))
        y_top = float(first[(b, a)].screen_norms[0].max(initial=0.0))
        if q_top * weight_max * y_top * int(support_side.sizes.max(initial=1)) > 1e37:
            raise _Unbounded
        bound = combination_bound(dim, weight_max, int(support_side.sizes.max(initial=1)))
        judges = [Judge(d.metric, bound, d.exact_queries, thresholds[n].q_norm, None, thresholds[n].best,
                        thresholds[n].p, thresholds[n].relevant_settled) for n, d in zip(named.values(), data,
                                                                                         strict=True)]
        n_q, n_columns = len(query_side.codes), len(named)
        lo = np.empty((n_q, n_columns), dtype=np.float32)
        for j, judge in enumerate(judges):
            lo[:, j] = judge.cutoff(float(norms[j].max(initial=0.0)))[query_side.order]
        groups = _groups(list(named), w, support_side, judges, norms, bound.floor, query_side.order,
                         settings.skip)
        directions[(a, b)] = _Direction(
            list(named.values()), ColumnJudges(judges, [d.exact_gallery for d in data], norms), gallery, lo,
            np.zeros((n_q, n_columns), dtype=np.int64), np.zeros((n_q, n_columns), dtype=np.int64), groups)
    forward, backward = directions[(x, y)], directions[(y, x)]
    lock = threading.Lock()
    tiles = [(i, j) for i in range(len(rows.edges) - 1) for j in range(len(cols.edges) - 1)]

    def run_tile(tile: tuple[int, int]) -> None:
        i, j = tile
        r0, r1, c0, c1 = (int(rows.edges[i]), int(rows.edges[i + 1]), int(cols.edges[j]), int(cols.edges[j + 1]))
        scores = rows.items[r0:r1] @ cols.items[c0:c1].T
        decided = []
        formed = skipped = 0
        # X2Y: Y's products are the tile's columns; Y2X: X's products are its rows. Either way a chunk
        # is viewed as (products, queries, items of a product), without a copy.
        for direction, support_side, query_side, q0, q1, along_rows in (
                (forward, cols, rows, r0, r1, False), (backward, rows, cols, c0, c1, True)):
            s_lo, s_hi = (r0, r1) if along_rows else (c0, c1)
            found = []
            n_q, n_columns = q1 - q0, direction.lo.shape[1]
            skipping = all(g.level is not None for g in direction.groups)
            step = max(1, CHUNK // max(n_q * n_columns, 1))
            for p0, p1, s0, s1, size in support_side.runs(s_lo, s_hi):
                # The run's (products, queries, items) without a copy.
                if along_rows:
                    view = scores[s0 - r0:s1 - r0].reshape(p1 - p0, size, n_q).transpose(0, 2, 1)
                else:
                    view = scores[:, s0 - c0:s1 - c0].reshape(n_q, p1 - p0, size).transpose(1, 0, 2)
                survivals: list[np.ndarray | None] = [None] * len(direction.groups)
                if skipping:
                    top = segment_max(view)
                    survivals = [np.ascontiguousarray(np.multiply(top, g.factor[p0:p1, None]) >= g.level[None, q0:q1])
                                 for g in direction.groups if g.level is not None]
                for first in range(0, p1 - p0, step):
                    last = min(first + step, p1 - p0)
                    for group, survive in zip(direction.groups, survivals, strict=True):
                        weights = group.weights[s0 + first * size:s0 + last * size].reshape(last - first, size, -1)
                        p, q, jj, values, n_formed = _screen_group(
                            view[first:last], weights, direction.lo[q0:q1, group.first:group.stop],
                            None if survive is None else survive[first:last])
                        formed += n_formed
                        skipped += (last - first) * n_q * (group.stop - group.first) - n_formed
                        found.append((p0 + first + p, q0 + q, group.first + jj, values))
            product, query, column, values = (np.concatenate([item[k] for item in found]) if found else
                                              np.zeros(0, dtype=np.float32 if k == 3 else np.int64) for k in range(4))
            gallery = direction.gallery[product, column]
            keep = (gallery >= 0) & (support_side.product_codes[product] != query_side.codes[query])
            query, column = query[keep], column[keep]
            decision = direction.judges.decide(query_side.order[query], column, gallery[keep], values[keep])
            decided.append((direction, query, column, decision))
        with lock:
            for direction, query, column, decision in decided:
                direction.take(query, column, decision, max_k)
            forward.formed += formed
            forward.skipped += skipped

    with threadpool_limits(limits=1, user_api="blas") if pool is not None else contextlib.nullcontext():
        run_tiles(pool, tiles, run_tile)
    for (a, _), direction in directions.items():
        query_side = rows if a == x else cols
        for j, name in enumerate(direction.tasks):
            judge = direction.judges.judges[j]
            scored = np.isfinite(judge.best)
            above = np.empty(len(scored), dtype=np.int64)
            tied = np.empty(len(scored), dtype=np.int64)
            above[query_side.order] = direction.above[:, j]
            tied[query_side.order] = direction.ties[:, j]
            a_s, t_s, p_s = above[scored], tied[scored], judge.p[scored]
            limited = np.zeros(len(a_s), dtype=bool)
            if max_k is not None:
                a_s, t_s, p_s, limited = censor(a_s, t_s, p_s, limited, max_k)
            hits[name] = FirstHits(scored=scored, a=a_s, t=t_s, p=p_s, censored=limited)
            counters["relevant_settled"] += judge.relevant_settled
        counters["pairs_settled"] += direction.settled
        counters["prototype_scores_formed"] += direction.formed
        counters["prototype_scores_skipped"] += direction.skipped
    counters["blocks_tiled"] += 1
