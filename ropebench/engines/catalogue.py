"""First-hit counts against a catalogue of distractors, decomposed over gallery shards. No I/O here.

Distractors join every task's gallery of their domain and are relevant to no query, so with each
query's best relevant score ``s+`` known from the test items, ``a`` and ``t`` are sums over
shards: the test set's counts plus, per shard, the distractors scoring above / exactly at ``s+``.

How that stays exact (every comparison for one query uses scores from one computation):

1. ``s+`` is *estimated* in float64 from the query's eligible relevant test items, and a band
   ``[lo, hi]`` is put around it: wide enough that a distractor whose float32 score (from any
   kernel: a tile GEMM here, a FAISS search, a rescoring) falls outside it compares with ``s+``
   the same way in *every* computation. A float32 inner product of ``q`` and ``g`` is within
   ``γ |q| |g|`` of the exact one (``γ = (d + 2) u``, ``u = 2⁻²⁴``), so the band is
   ``est ± (γ |q| max|g+| + 2 γ |q| max|g_distractor|)``, with a safety margin.
2. A shard (:func:`scan_shard`) multiplies the collecting queries with its distractors in tiles and
   returns, per task, the count of scores above ``hi`` per query and catalogue segment (two small
   integer arrays, sparse) and the few scores inside the band with their distractors' vectors.
3. Queries with band entries are settled by :mod:`ropebench.engines.settle`: one computation scores
   the query against its test gallery and its band distractors together. Every other query keeps
   the test engine's counts plus the shards' counts above the band.
4. Unless exact counts are asked for, a query with ``max K`` items above ``s+`` misses at every K:
   a shard stops collecting for it once the test set's ``a`` and its own counts reach ``max K``.
5. Where every score is exact in any computation (integer vectors whose sums stay below 2²⁴, as
   binary codes under ip; a zero query), the band is the point ``s+`` itself and ties are counted
   in the shard, never listed, however many there are.

Nested prefixes (``--distractor-sizes``) cut the catalogue into segments; every count is kept per
segment, so one pass reports every size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ropebench.engines.base import FirstHits, TaskData
from ropebench.errors import RopebenchError
from ropebench.protocol import DOMAINS, split_task

__all__ = ["ScanTask", "ScanContext", "TaskPart", "ShardResult", "best_relevant", "band", "build_context",
           "scan_rows", "integer_bound", "TILE_QUERIES", "TILE_ITEMS", "BAND_CAP", "U32"]

TILE_QUERIES = 1024  # query rows per tile
BAND_CAP = 1 << 16  # band entries one query may collect in one shard (beyond: massive near-ties, refused)
EXACT_LIMIT = float(1 << 24)  # integer sums below this are exact in float32
TILE_ITEMS = 1024  # distractor columns per tile: 4 MiB of scores, read again from cache by the selection
U32 = 2.0 ** -24  # unit roundoff of float32
_PAIRS = 1 << 14  # relevant pairs per float64 chunk of the s+ estimate (bounds its gathered rows)


@dataclass(frozen=True)
class ScanTask:
    """One task's collecting queries as a shard sees them.

    Attributes:
        task: e.g. ``"P2V"``.
        rows: ``(m,)`` int64 rows of the query domain's vectors.
        lo, hi: ``(m,)`` float32 band around each query's ``s+`` (rounded outwards).
        base: ``(m,)`` int64 the test set's ``a`` (a shard stops collecting at ``base + own >= max K``).
        exact: ``(m,)`` bool, the query's scores are exact in every computation (integer vectors
            whose sums stay below 2²⁴, or a zero query): ``lo == hi == s+`` and a score inside
            the band *is* a tie, counted, never listed.
    """

    task: str
    rows: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    base: np.ndarray
    exact: np.ndarray

    @property
    def query_domain(self) -> str:
        return split_task(self.task)[0]

    @property
    def gallery_domain(self) -> str:
        return split_task(self.task)[1]


@dataclass(frozen=True)
class ScanContext:
    """Everything a shard needs besides its own rows; sent (broadcast) once per evaluation.

    ``queries[X]``: the prepared query-side vectors of domain X. ``boundaries``: ascending
    catalogue sizes ending the segments (a distractor at position ``i`` is in segment
    ``searchsorted(boundaries, i, "right")``; positions ``>= boundaries[-1]`` are not read).
    """

    metric: str
    center: np.ndarray | None
    queries: Mapping[str, np.ndarray]
    tasks: tuple[ScanTask, ...]
    boundaries: np.ndarray
    max_k: int
    exact_censored: bool
    tile_queries: int = TILE_QUERIES
    tile_items: int = TILE_ITEMS
    band_cap: int = BAND_CAP


@dataclass(frozen=True)
class TaskPart:
    """What one shard found for one task (row indices are into :attr:`ScanTask.rows`).

    ``above_*``: sparse counts of scores above ``hi`` per (segment, query); ``equal_*``: of scores
    equal to ``s+`` for exact queries. ``band_*``: every other score inside the band, with the
    distractor's catalogue position.
    """

    above_segment: np.ndarray  # int64
    above_query: np.ndarray  # int64
    above_count: np.ndarray  # int64
    equal_segment: np.ndarray  # int64
    equal_query: np.ndarray  # int64
    equal_count: np.ndarray  # int64
    band_query: np.ndarray  # int64
    band_position: np.ndarray  # int64
    band_value: np.ndarray  # float32


@dataclass(frozen=True)
class ShardResult:
    """One shard's answer: per task its :class:`TaskPart`, the prepared vectors of its band
    distractors (``band_positions`` ascending), its items per (segment, domain) and its GEMM work."""

    index: int
    parts: Mapping[str, TaskPart]
    band_positions: np.ndarray
    band_vectors: np.ndarray
    n_items: np.ndarray  # (n_segments, 3) int64
    multiply_adds: int


def _pow2(n: np.ndarray) -> np.ndarray:
    """Smallest power of two >= n (n >= 1)."""
    return (1 << np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64)).astype(np.int64)


def best_relevant(data: TaskData, query_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 best relevant score of each query and ``|q| · max |g|`` over its relevant items.

    Each product's (queries × items) block is one small float64 matmul; blocks padded to the same
    power-of-two shape are multiplied as one stack, so the cost follows the relevant pairs, not
    the number of products.

    Args:
        data: the task (its eligibility rules: self and group exclusion).
        query_index: ``(m,)`` queries with at least one eligible relevant item.

    Returns:
        ``(estimate, scale)``: ``(m,)`` float64 each. The estimate is within ``~d 2⁻⁵³ |q||g|`` of
        the exact value (products of float32 numbers are exact in float64).
    """
    m = len(query_index)
    estimate, top_norm = np.full(m, -np.inf), np.zeros(m)
    query_products = data.query_products[query_index]
    n_products = int(max(data.gallery_products.max(initial=-1), query_products.max(initial=-1))) + 1
    order_q = np.argsort(query_products, kind="stable")
    order_g = np.argsort(data.gallery_products, kind="stable")
    count_q = np.bincount(query_products, minlength=n_products)
    count_g = np.bincount(data.gallery_products, minlength=n_products)
    first_q, first_g = np.cumsum(count_q) - count_q, np.cumsum(count_g) - count_g
    common = np.flatnonzero((count_q > 0) & (count_g > 0))
    size_g = _pow2(count_g[common])
    piece = np.minimum(_pow2(count_q[common]), np.maximum(1, _PAIRS // size_g))  # queries per unit
    pieces = -(-count_q[common] // piece)
    product, piece, size_g = np.repeat(common, pieces), np.repeat(piece, pieces), np.repeat(size_g, pieces)
    offset = (np.arange(len(product)) - np.repeat(np.cumsum(pieces) - pieces, pieces)) * piece
    n_left = np.minimum(piece, count_q[product] - offset)
    gallery_norm = np.sqrt(np.einsum("ij,ij->i", data.gallery, data.gallery, dtype=np.float64))
    shape = piece * (int(size_g.max(initial=1)) + 1) + size_g
    for key in np.unique(shape):
        units = np.flatnonzero(shape == key)
        pl, pg = int(piece[units[0]]), int(size_g[units[0]])
        for b in range(0, len(units), max(1, _PAIRS // (pl * pg))):
            u = units[b:b + max(1, _PAIRS // (pl * pg))]
            valid_l = np.arange(pl)[None, :] < n_left[u][:, None]
            local = order_q[first_q[product[u]][:, None] + offset[u][:, None] + np.where(valid_l, np.arange(pl), 0)]
            valid_g = np.arange(pg)[None, :] < count_g[product[u]][:, None]
            items = order_g[first_g[product[u]][:, None] + np.where(valid_g, np.arange(pg), 0)]
            queries = query_index[local]
            scores = np.matmul(data.queries[queries].astype(np.float64),
                               data.gallery[items].astype(np.float64).transpose(0, 2, 1))
            ok = valid_l[:, :, None] & valid_g[:, None, :]
            if data.query_rows is not None:  # not itself, not its group
                ok &= data.query_rows[queries][:, :, None] != items[:, None, :]
                if data.query_groups is not None and data.gallery_groups is not None:
                    group = data.query_groups[queries][:, :, None]
                    ok &= ~((data.gallery_groups[items][:, None, :] == group) & (group >= 0))
            best = np.where(ok, scores, -np.inf).max(axis=2)
            norm = np.where(ok, gallery_norm[items][:, None, :], 0.0).max(axis=2)
            np.maximum.at(estimate, local[valid_l], best[valid_l])
            np.maximum.at(top_norm, local[valid_l], norm[valid_l])
    query_norm = np.sqrt(np.einsum("ij,ij->i", data.queries[query_index], data.queries[query_index],
                                   dtype=np.float64))
    return estimate, query_norm * top_norm


def band(estimate: np.ndarray, relevant_scale: np.ndarray, query_norm: np.ndarray, distractor_norm: float,
         dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The float32 band ``[lo, hi]`` around each ``s+`` estimate (see the module docstring).

    Args:
        estimate: ``(m,)`` float64 ``s+`` estimates.
        relevant_scale: ``(m,)`` ``|q| · max |g|`` over the relevant items.
        query_norm: ``(m,)`` ``|q|``.
        distractor_norm: the largest prepared distractor norm of the gallery domain.
        dim: the prepared dimension ``d'``.
    """
    gamma = (dim + 2) * U32
    width = (gamma * relevant_scale + 2.0 * gamma * query_norm * distractor_norm) * (1 + 1e-3) + 1e-30
    low, high = estimate - width, estimate + width
    lo, hi = low.astype(np.float32), high.astype(np.float32)
    # Round outwards, so the float32 band contains the float64 one.
    lo = np.where(lo > low, np.nextafter(lo, np.float32(-np.inf)), lo)
    hi = np.where(hi < high, np.nextafter(hi, np.float32(np.inf)), hi)
    return lo.astype(np.float32), hi.astype(np.float32)


def integer_bound(vectors: np.ndarray) -> float | None:
    """The largest ``|x|`` of a float32 matrix whose entries are all integers, else None."""
    if not len(vectors):
        return 0.0
    if not np.array_equal(vectors, np.round(vectors)):
        return None
    return float(np.abs(vectors).max())


def build_context(task_data: Mapping[str, TaskData], tasks: Sequence[str], hits: Mapping[str, FirstHits], *,
                  metric: str, center: np.ndarray | None, distractor_norms: Mapping[str, float],
                  boundaries: Sequence[int], max_k: int, exact_censored: bool,
                  distractor_integers: Mapping[str, float | None] | None = None,
                  only: Mapping[str, np.ndarray] | None = None, tile_queries: int = TILE_QUERIES,
                  tile_items: int = TILE_ITEMS, band_cap: int = BAND_CAP) -> tuple[ScanContext, dict[str, np.ndarray]]:
    """The context shards need, and per task the queries (task-local indices) that collect.

    A query collects when it is scored and not censored by the test set (unless exact counts are
    asked for). ``only``: per task, restrict collection to these query indices (agreement samples).
    ``distractor_norms``: per gallery domain the largest prepared distractor norm;
    ``distractor_integers``: per domain the largest ``|x|`` if every prepared distractor is
    integer-valued, else None (then a task's scores may be exact in every computation).
    """
    queries: dict[str, np.ndarray] = {}
    scan_tasks = []
    collecting: dict[str, np.ndarray] = {}
    for task in tasks:
        data, h = task_data[task], hits[task]
        scored = np.flatnonzero(h.scored)
        keep = np.ones(len(scored), dtype=bool) if exact_censored else ~h.censored
        rows = scored[keep]
        base = np.asarray(h.a)[keep]
        if only is not None:
            chosen = np.isin(rows, only.get(task, np.zeros(0, dtype=np.int64)))
            rows, base = rows[chosen], base[chosen]
        gallery_domain = split_task(task)[1]
        estimate, scale = best_relevant(data, rows)
        norm = np.sqrt(np.einsum("ij,ij->i", data.queries[rows], data.queries[rows], dtype=np.float64))
        lo, hi = band(estimate, scale, norm, distractor_norms.get(gallery_domain, 0.0), data.queries.shape[1])
        # Exact scores: a zero query (every score is 0), or integers whose every partial sum stays
        # below 2^24 (products and sums exact in float32, whatever the order). Then est is s+.
        exact = norm == 0
        top_query = integer_bound(data.queries[rows])
        top_gallery = integer_bound(data.gallery)
        top_distractor = (distractor_integers or {}).get(gallery_domain)
        if top_query is not None and top_gallery is not None and top_distractor is not None:
            exact |= data.queries.shape[1] * top_query * max(top_gallery, top_distractor) < EXACT_LIMIT
        point = estimate.astype(np.float32)
        lo, hi = np.where(exact, point, lo), np.where(exact, point, hi)
        queries[split_task(task)[0]] = data.queries
        scan_tasks.append(ScanTask(task, rows.astype(np.int64), lo, hi, base.astype(np.int64), exact))
        collecting[task] = rows
    context = ScanContext(metric, center, queries, tuple(scan_tasks), np.asarray(boundaries, dtype=np.int64), max_k,
                          exact_censored, tile_queries, tile_items, band_cap)
    return context, collecting


def _scan_task(task: ScanTask, queries: np.ndarray, items: np.ndarray, positions: np.ndarray, segments: np.ndarray,
               n_segments: int, context: ScanContext) -> tuple[TaskPart, np.ndarray, int]:
    """Scan one task's collecting queries against one domain's distractors, tile by tile in
    catalogue order (so a query stops collecting only after its earlier segments were counted).

    Returns the task part, the local item rows with band entries, and the multiply-adds done.
    """
    m = len(task.rows)
    above = np.zeros((n_segments, m), dtype=np.int64)
    equal = np.zeros((n_segments, m), dtype=np.int64)
    listed = np.zeros(m, dtype=np.int64)
    lo = task.lo.copy()  # +inf once a query stops collecting
    bands: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    work = 0
    if m == 0 or len(items) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return TaskPart(empty, empty, empty, empty, empty, empty, empty, empty, np.zeros(0, np.float32)), empty, 0
    vectors = np.take(queries, task.rows, axis=0)
    taken = np.zeros(m, dtype=np.int64)  # above counts so far, all segments
    tq, ti = context.tile_queries, context.tile_items
    buffer = np.empty(min(tq, m) * min(ti, len(items)), dtype=np.float32)
    cuts = np.flatnonzero(np.diff(segments)) + 1  # tiles never straddle a segment boundary
    # Item tiles in catalogue order, each cut at segment boundaries.
    tiles = [(int(segments[c0]), c0, min(int(run_stop), c0 + ti))
             for run_start, run_stop in zip(np.r_[0, cuts], np.r_[cuts, len(items)])
             for c0 in range(int(run_start), int(run_stop), ti)]
    # A query block meets the shard's items (a few MiB, kept in cache) in catalogue order; queries
    # are streamed once per shard, not once per item tile.
    for r0 in range(0, m, tq):
        r1 = min(m, r0 + tq)
        for segment, c0, c1 in tiles:
            block = items[c0:c1]
            scores = buffer[: (r1 - r0) * (c1 - c0)].reshape(r1 - r0, c1 - c0)
            np.matmul(vectors[r0:r1], block.T, out=scores)
            work += (r1 - r0) * (c1 - c0) * vectors.shape[1]
            # A row maximum first: one cheap pass, and most rows have no candidate at all.
            hot = np.flatnonzero(scores.max(axis=1) >= lo[r0:r1])
            if not len(hot):
                continue
            rows = r0 + hot
            r, c = np.nonzero(scores[hot] >= lo[rows][:, None])
            values = scores[hot[r], c]
            query = rows[r]
            local = hot[r]  # the tile's own row: its counts touch this tile's rows only
            width = r1 - r0
            up = values > task.hi[query]
            counted = np.bincount(local[up], minlength=width)
            above[segment, r0:r1] += counted
            taken[r0:r1] += counted
            inside = ~up
            exact = inside & task.exact[query]
            if exact.any():
                equal[segment, r0:r1] += np.bincount(local[exact], minlength=width)
            inside &= ~exact
            if inside.any():
                bands.append((query[inside], c0 + c[inside], values[inside]))
                listed[r0:r1] += np.bincount(local[inside], minlength=width)
                if listed[r0:r1].max() > context.band_cap:
                    raise RopebenchError(
                        f"{task.task}: {int((listed > context.band_cap).sum())} queries have more than "
                        f"{context.band_cap:,} distractors of one shard within float32 rounding of their best "
                        "relevant score (massive near-ties: many distinct vectors with equal scores). Exact "
                        "settlement would hold them all. Fix: integer-valued embeddings (scored exactly under ip "
                        "or l2) are counted without listing; otherwise evaluate a smaller catalogue")
            if not context.exact_censored:
                done = rows[task.base[rows] + taken[rows] >= context.max_k]
                lo[done] = np.inf
    seg, query = np.nonzero(above)
    same_seg, same_query = np.nonzero(equal)
    if bands:
        q, local, v = (np.concatenate(parts) for parts in zip(*bands))
    else:
        q, local, v = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    part = TaskPart(seg.astype(np.int64), query.astype(np.int64), above[seg, query], same_seg.astype(np.int64),
                    same_query.astype(np.int64), equal[same_seg, same_query], q.astype(np.int64), positions[local],
                    v.astype(np.float32))
    return part, np.unique(local), work


def scan_rows(index: int, positions: np.ndarray, domains: np.ndarray, matrix: np.ndarray,
              context: ScanContext) -> ShardResult:
    """Scan one shard's rows (positions, domain codes, raw float32 embeddings) for every task.

    Rows at positions ``>= boundaries[-1]`` are ignored. The vectors are prepared here exactly as
    the test set's were (cosine normalised, l2 augmented with the same centre).
    """
    from ropebench.engines.exact import prepare_vectors

    boundaries = context.boundaries
    n_segments = len(boundaries)
    inside = positions < boundaries[-1] if n_segments else np.zeros(len(positions), dtype=bool)
    segments_all = np.searchsorted(boundaries, positions, side="right")
    n_items = np.zeros((n_segments, len(DOMAINS)), dtype=np.int64)
    np.add.at(n_items, (segments_all[inside], domains[inside]), 1)
    parts: dict[str, TaskPart] = {}
    band_positions: list[np.ndarray] = []
    band_vectors: list[np.ndarray] = []
    work = 0
    for code, domain in enumerate(DOMAINS):
        rows = np.flatnonzero(inside & (domains == code))
        readers = [task for task in context.tasks if task.gallery_domain == domain]
        if not len(rows) or not readers:
            continue
        items = prepare_vectors(matrix[rows], context.metric, center=context.center)[1]
        used = []
        for task in readers:
            part, local, done = _scan_task(task, context.queries[task.query_domain], items, positions[rows],
                                           segments_all[rows], n_segments, context)
            parts[task.task] = part
            used.append(local)
            work += done
        chosen = np.unique(np.concatenate(used)) if used else np.zeros(0, dtype=np.int64)
        band_positions.append(positions[rows][chosen])
        band_vectors.append(items[chosen])
    dim = next(iter(context.queries.values())).shape[1] if context.queries else matrix.shape[1]
    order_positions = np.concatenate(band_positions) if band_positions else np.zeros(0, dtype=np.int64)
    vectors = np.concatenate(band_vectors) if band_vectors else np.zeros((0, dim), dtype=np.float32)
    order = np.argsort(order_positions, kind="stable")
    return ShardResult(index, parts, order_positions[order], vectors[order], n_items, work)
