"""One-pass exact search: every similarity block is computed once and serves every task that needs it.

The per-task path (:mod:`ropebench.engines.faiss`) runs one FAISS search per task, so ``P2V`` and ``V2P``
each compute ``P·Vᵀ``. Here each block is a numpy ``matmul`` in square tiles, and one tile feeds
both directions: ``P2V`` reads it by rows, ``V2P`` by columns. An intra-domain block is symmetric,
so only the tiles on and right of the diagonal are computed (its queries read them by rows and by
columns). The result is the same first-hit counts ``a, t, p`` (docs/protocol.md) as the per-task path.

How one query's counts are found without ever seeing its whole score row at once:

1. Before a block, its relevant pairs are scored product by product (small batched matmuls over
   the items of each product): that gives every query an estimate of its best relevant score
   ``s+`` (float32), and a band ``[lo, hi]`` is put around it, wider than the estimate's and the
   GEMM's float32 rounding errors together (``4 d 2⁻²⁴ |q| max|g|``, twice their sum).
2. The block's rows and columns are put in order of their readers' ``lo``, so the queries of one
   tile have similar thresholds. For each tile, the scores ``>=`` the smallest ``lo`` of its
   queries are picked with one comparison and ``flatnonzero`` (one memory pass over the tile,
   far less than its GEMM), then sorted out per query: eligible ones above ``hi`` are only
   counted; those inside the band are kept with their exact GEMM score. The scores of the
   query's relevant pairs are read from the tile too.
3. After the pass, ``s+`` is the max of those relevant scores — GEMM outputs, the very numbers
   the band entries are compared with, so every comparison for a query uses one computation.
   If ``s+`` falls outside ``[lo, hi]`` (the error bound failed), or a query's band grew past
   :data:`BAND_CAP` entries (massive exact ties), the query is rescored against the whole gallery
   by :func:`ropebench.engines.exact.exact_counts`, whose counts all come from its own single product.
4. Unless exact counts are asked for (per-query output), a query with ``max K`` eligible items
   above ``hi`` misses at every K: it stops collecting (censored, stored as ``max K, 0, 1``).

``l2`` scores are not symmetric under the query/gallery vector split (:func:`prepare_vectors`),
so with ``l2`` each task gets its own block, read by rows only. A task whose relevant pairs are
too many to list (:data:`MAX_PAIRS`, e.g. a few products with thousands of items each) is
searched by the per-task path instead.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ropebench.engines.band import BandReader
from ropebench.engines.base import COUNTERS, FirstHits, SearchRun, TaskData
from ropebench.engines.exact import exact_counts
from ropebench.engines.faiss import first_hit_counts
from ropebench.engines.pairs import RelevantPairs, n_relevant_pairs, relevant_pairs

__all__ = ["OnePassEngine", "OnePassSettings", "one_pass_first_hits", "n_relevant_pairs", "BAND_CAP", "TILE",
           "MAX_PAIRS", "SMALL_BLOCK"]

TILE = 2048  # tile side: (TILE, TILE) float32 scores per worker (16 MiB)
BAND_CAP = 4096  # band entries kept per query before it is handed to exact rescoring
MAX_PAIRS = 1 << 25  # relevant pairs a block may list; beyond, its tasks use the per-task path
# Blocks below this many multiply-adds, or with a single row or column, are scored by
# exact_counts: BLAS's small-matrix and matrix-vector kernels do not give bit-identical rows
# equal results at every position, and exact_counts scores each distinct row once.
SMALL_BLOCK = 1 << 22
ESTIMATE_SCORES = 1 << 21  # scores per batched matmul of the per-product estimates


@dataclass(frozen=True)
class OnePassSettings:
    """The engine's sizes. The defaults are the measured best on 2 cores; tests shrink them so
    that small data reaches every code path (tiles, band caps, fallbacks)."""

    tile: int = TILE
    band_cap: int = BAND_CAP
    max_pairs: int = MAX_PAIRS
    small_block: int = SMALL_BLOCK
    estimate_scores: int = ESTIMATE_SCORES


def _edges(n: int, tile: int) -> np.ndarray:
    """Tile boundaries: ``ceil(n / tile)`` tiles of nearly equal size (no sliver tiles)."""
    n_tiles = -(-n // tile)
    return (np.arange(n_tiles + 1, dtype=np.int64) * n) // max(n_tiles, 1)


@dataclass
class Block:
    """One similarity block ``left · rightᵀ``, the tasks that read it, and its tile plan.

    ``rows`` has the rows of ``left`` as queries; ``columns`` the rows of ``right``.
    ``symmetric``: ``left is right`` and both readers are the same intra-domain task, so only
    tiles on and right of the diagonal are computed.
    """

    left: np.ndarray
    right: np.ndarray
    rows: BandReader
    columns: BandReader | None
    symmetric: bool
    pairs: RelevantPairs
    tile: int

    def __post_init__(self) -> None:
        # Rows (columns) in order of their reader's threshold, so a tile's queries have similar
        # thresholds; the vectors are copied in that order so that tiles are plain slices.
        self.perm_left = np.argsort(self.rows.lo, kind="stable")
        self.sorted_left = np.take(self.left, self.perm_left, axis=0)
        if self.symmetric:
            self.perm_right, self.sorted_right = self.perm_left, self.sorted_left
        elif self.columns is not None:
            self.perm_right = np.argsort(self.columns.lo, kind="stable")
            self.sorted_right = np.take(self.right, self.perm_right, axis=0)
        else:
            self.perm_right, self.sorted_right = np.arange(len(self.right)), self.right
        self.edges_left, self.edges_right = _edges(len(self.left), self.tile), _edges(len(self.right), self.tile)
        n_l, n_r = len(self.edges_left) - 1, len(self.edges_right) - 1
        self.tiles = [(i, j) for i in range(n_l) for j in range(i if self.symmetric else 0, n_r)]
        self._pairs_by_tile()

    def _pairs_by_tile(self) -> None:
        """The relevant pairs in tile order: tile key, local (row, column) and the queries."""
        position_l = np.empty(len(self.perm_left), dtype=np.int64)
        position_l[self.perm_left] = np.arange(len(self.perm_left))
        position_r = np.empty(len(self.perm_right), dtype=np.int64)
        position_r[self.perm_right] = np.arange(len(self.perm_right))
        px, py = position_l[self.pairs.x], position_r[self.pairs.y]
        edges_l, edges_r = self.edges_left, self.edges_right
        tile_l = np.repeat(np.arange(len(edges_l) - 1), np.diff(edges_l))  # tile of each position
        tile_r = np.repeat(np.arange(len(edges_r) - 1), np.diff(edges_r))
        tx, ty = tile_l[px], tile_r[py]
        if self.symmetric:
            # Pair (x, y) with tile(x) > tile(y) is read from tile (ty, tx) at (py, px), by columns.
            swap = tx > ty
            px, py = np.where(swap, py, px), np.where(swap, px, py)
            tx, ty = np.where(swap, ty, tx), np.where(swap, tx, ty)
        key = tx * (len(edges_r) - 1) + ty
        # Few distinct keys: a stable sort of small integers is a radix sort.
        order = np.argsort(key.astype(np.int32 if key.max(initial=0) >= 1 << 15 else np.int16), kind="stable")
        self.pair_key = key[order]
        self.pair_row = px[order] - edges_l[tx[order]]
        self.pair_column = py[order] - edges_r[ty[order]]
        self.pair_x, self.pair_y = self.pairs.x[order], self.pairs.y[order]
        del self.pairs  # only the tile-ordered copy is needed from here on


def _single_threaded_blas(enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """BLAS on one thread while our own workers parallelise over tiles (needs threadpoolctl)."""
    if not enabled:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _run_block(block: Block, pool: ThreadPoolExecutor | None, buffers: threading.local,
               on_tile: Callable[[int], None]) -> None:
    """Compute the block tile by tile; each worker thread runs a tile's GEMM and its selection.

    Whole tiles go to the workers (BLAS itself single-threaded): OpenBLAS's own threads spin
    after every GEMM and starve selection threads. Reader updates are serialised by a lock; they
    are sums, maxima and one-way flags, so the order in which tiles finish changes no count.
    """
    rows, columns = block.rows, block.columns
    column_reader = rows if block.symmetric else columns
    left, right = block.sorted_left, block.sorted_right
    edges_l, edges_r = block.edges_left, block.edges_right
    n_r = len(edges_r) - 1
    lock = threading.Lock()

    def run_tile(tile: tuple[int, int]) -> None:
        i, j = tile
        r0, r1, c0, c1 = edges_l[i], edges_l[i + 1], edges_r[j], edges_r[j + 1]
        shape = (r1 - r0, c1 - c0)
        buffer = getattr(buffers, "tile", None)
        if buffer is None or buffer.size < shape[0] * shape[1]:
            buffer = buffers.tile = np.empty(block.tile * block.tile, dtype=np.float32)
            buffers.mask = np.empty(block.tile * block.tile, dtype=bool)
        scores = buffer[: shape[0] * shape[1]].reshape(shape)
        np.matmul(left[r0:r1], right[c0:c1].T, out=scores)
        query_r, query_c = block.perm_left[r0:r1], block.perm_right[c0:c1]
        # Which readers see this tile: by rows, always; by columns, unless it is a diagonal tile
        # of a symmetric block (the square's pairs are all read by rows).
        by_columns = column_reader is not None and not (block.symmetric and i == j)
        threshold_r = rows.lo[query_r]
        threshold_c = column_reader.lo[query_c] if column_reader is not None and by_columns else None
        tau = min(threshold_r.min(), threshold_c.min() if threshold_c is not None else np.inf)
        for_rows = for_columns = None
        if np.isfinite(tau):
            # One pass over the tile for both directions; then each candidate is checked
            # against its own row's and column's threshold.
            mask = buffers.mask[: scores.size].reshape(shape)
            np.greater_equal(scores, tau, out=mask)
            flat = np.flatnonzero(mask)
            r, c = np.divmod(flat, shape[1])
            values = scores.reshape(-1)[flat]
            take = values >= threshold_r[r]
            for_rows = rows.sort_out(query_r[r[take]], query_c[c[take]], values[take])
            if column_reader is not None and threshold_c is not None:
                take = values >= threshold_c[c]
                for_columns = column_reader.sort_out(query_c[c[take]], query_r[r[take]], values[take])
        a, b = np.searchsorted(block.pair_key, [i * n_r + j, i * n_r + j + 1])
        relevant = scores[block.pair_row[a:b], block.pair_column[a:b]]
        with lock:
            if for_rows is not None:
                rows.take(for_rows)
            if for_columns is not None and column_reader is not None:
                column_reader.take(for_columns)
            np.maximum.at(rows.best, block.pair_x[a:b], relevant)
            if columns is not None:  # a cross block: the same score is y's relevant score too
                np.maximum.at(columns.best, block.pair_y[a:b], relevant)
            on_tile(1)

    if pool is None:
        for tile in block.tiles:
            run_tile(tile)
    else:
        for _ in pool.map(run_tile, block.tiles):
            pass


def _plan(tasks: Sequence[str], symmetric_scores: bool) -> list[tuple[str, str | None, bool]]:
    """Blocks as (task read by rows, task read by columns or None, symmetric)."""
    plan: list[tuple[str, str | None, bool]] = []
    pending = list(tasks)
    while pending:
        task = pending.pop(0)
        x, y = task[0], task[2]
        reverse = f"{y}2{x}"
        if symmetric_scores and x == y:
            plan.append((task, None, True))
        elif symmetric_scores and reverse in pending:
            pending.remove(reverse)
            plan.append((task, reverse, False))
        else:
            plan.append((task, None, False))
    return plan


def one_pass_first_hits(
    task_data: Mapping[str, TaskData],
    tasks: Sequence[str],
    *,
    max_k: int,
    exact_censored: bool = False,
    threads: int = 1,
    symmetric_scores: bool = True,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    settings: OnePassSettings | None = None,
    counters: dict[str, int] | None = None,
) -> dict[str, FirstHits]:
    """First-hit counts of every task, computing each similarity block once.

    Args:
        task_data: per task, its :class:`TaskData`; tasks of one domain share its arrays (the
            same array on both sides when the similarity is symmetric: cosine, ip).
        tasks: the tasks to score, e.g. ``("P2V", "V2P", "P2P")``.
        max_k: the largest K reported.
        exact_censored: exact counts even for queries that miss at every K (per-query output).
        threads: worker threads, each running whole tiles (GEMM with single-threaded BLAS, then
            selection; numpy releases the GIL). With 1, BLAS keeps the threads the caller set.
        symmetric_scores: ``q·g`` may serve both directions (False for ``l2``).
        on_start: called once with the total number of tiles.
        on_progress: called with a number of tiles finished.
        settings: tile and band sizes (default :class:`OnePassSettings`).
        counters: if given, the engine's counters are added to it (see ``COUNTERS`` in
            :mod:`ropebench.engines.base`).

    Returns:
        ``{task: FirstHits}``, equal to :func:`ropebench.engines.faiss.first_hit_counts` per task.
    """
    settings = settings or OnePassSettings()
    plan: list[tuple[str, str | None, bool]] = []
    fallback: list[str] = []
    small: list[str] = []
    for row_task, column_task, symmetric in _plan(tasks, symmetric_scores):
        both = [row_task] + ([column_task] if column_task else [])
        left, right = task_data[row_task].queries, task_data[row_task].gallery
        if min(len(left), len(right)) < 2 or len(left) * len(right) * left.shape[1] <= settings.small_block:
            small += both
        elif n_relevant_pairs(task_data[row_task]) > settings.max_pairs:
            fallback += both
        else:
            plan.append((row_task, column_task, symmetric))
    progress = on_progress or (lambda n: None)
    if on_start is not None:
        total = 0
        for row_task, _, symmetric in plan:
            n_l = len(_edges(len(task_data[row_task].queries), settings.tile)) - 1
            n_r = len(_edges(len(task_data[row_task].gallery), settings.tile)) - 1
            total += n_l * (n_l + 1) // 2 if symmetric else n_l * n_r
        on_start(total)
    hits: dict[str, FirstHits] = {}
    readers: dict[str, BandReader] = {}

    def prepare(row_task: str, column_task: str | None, symmetric: bool) -> Block:
        data = task_data[row_task]
        pairs = relevant_pairs(data.queries, data.gallery, data, settings.estimate_scores)
        rows = BandReader(data, max_k, exact_censored, pairs.estimate_left, pairs.scale_left, settings.band_cap)
        columns = None if column_task is None else BandReader(
            task_data[column_task], max_k, exact_censored, pairs.estimate_right, pairs.scale_right, settings.band_cap)
        return Block(data.queries, data.gallery, rows, columns, symmetric, pairs, settings.tile)

    buffers = threading.local()
    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
    try:
        with _single_threaded_blas(pool is not None):
            # The next block is prepared by a worker while this one's tiles run (the first
            # tiles start as soon as the other worker is free).
            upcoming = pool.submit(prepare, *plan[0]) if pool is not None and plan else None
            for index, (row_task, column_task, _) in enumerate(plan):
                block = upcoming.result() if upcoming is not None else prepare(*plan[index])
                upcoming = None
                if pool is not None and index + 1 < len(plan):
                    upcoming = pool.submit(prepare, *plan[index + 1])
                readers[row_task] = block.rows
                if column_task is not None and block.columns is not None:
                    readers[column_task] = block.columns
                _run_block(block, pool, buffers, progress)
                del block
    finally:
        if pool is not None:
            pool.shutdown()
    for task in fallback:
        hits[task] = first_hit_counts(task_data[task], max_k=max_k, exact_censored=exact_censored)
    for task in small:
        data = task_data[task]
        scored = data.n_relevant() > 0
        a, t, p = exact_counts(data, np.flatnonzero(scored))
        hits[task] = FirstHits(scored=scored, a=a, t=t, p=p, censored=np.zeros(len(a), dtype=bool))
    for task, reader in readers.items():
        hits[task] = reader.finish(functools.partial(exact_counts, task_data[task]))
    if counters is not None:
        counters["blocks_tiled"] = counters.get("blocks_tiled", 0) + len(plan)
        counters["blocks_small"] = counters.get("blocks_small", 0) + len(small)
        counters["blocks_fallback"] = counters.get("blocks_fallback", 0) + len(fallback)
        counters["faiss_searches"] = counters.get("faiss_searches", 0) + len(fallback)
    return {task: hits[task] for task in tasks}


class OnePassEngine:
    """``one-pass`` (the default): each similarity block computed once for every task that
    reads it, in tiles, with a threshold band per query (see the module docstring)."""

    name = "one-pass"

    def __init__(self, settings: OnePassSettings | None = None) -> None:
        self.settings = settings or OnePassSettings()

    def search(
        self,
        task_data: Mapping[str, TaskData],
        tasks: Sequence[str],
        *,
        max_k: int,
        exact_censored: bool,
        threads: int,
        symmetric_scores: bool,
        on_start: Callable[[int, str], None] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> SearchRun:
        counters: dict[str, int] = {}
        start = None if on_start is None else (lambda total: on_start(total, "tiles"))
        hits = one_pass_first_hits(task_data, tasks, max_k=max_k, exact_censored=exact_censored,
                                   threads=threads, symmetric_scores=symmetric_scores, on_start=start,
                                   on_progress=on_progress, settings=self.settings, counters=counters)
        counters["queries_rescored"] = sum(h.n_rescored for h in hits.values())
        counters["queries_censored"] = sum(int(h.censored.sum()) for h in hits.values())
        ordered = {name: counters.get(name, 0) for name in COUNTERS}
        return SearchRun(hits=hits, counters=ordered)
