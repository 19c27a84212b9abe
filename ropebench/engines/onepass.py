"""One-pass exact search: every similarity block is computed once and serves every task that needs it.

The per-task path (:mod:`ropebench.engines.faiss`) runs one FAISS search per task, so ``P2V`` and
``V2P`` each compute ``P·Vᵀ``. Here each block is a numpy ``matmul`` in square tiles, and one tile
feeds both directions: ``P2V`` reads it by rows, ``V2P`` by columns. An intra-domain block is
symmetric, so only the tiles on and right of the diagonal are computed (its queries read them by
rows and by columns). The result is the same first-hit counts ``a, t, p`` (docs/protocol.md) as
every other engine, decided by the exactness core (:mod:`ropebench.engines.core`).

How one query's counts are found without ever seeing its whole score row at once:

1. Before a block, the core finds every query's threshold ``T`` (the float64 score of its best
   eligible relevant item) and ``p``, and a float32 cut-off below which a screened score is surely
   below ``T`` (the band's lower end for the largest gallery norm of the block).
2. The block's rows and columns are put in order of their readers' cut-offs, so the queries of one
   tile have similar cut-offs. For each tile, the scores ``>=`` the smallest cut-off of its queries
   are picked with one comparison and ``flatnonzero`` (one memory pass over the tile, far less
   than its GEMM), then handed, per query, to the core: irrelevant eligible candidates are decided
   above / at / below ``T`` pair by pair, the few inside their band settled in float64 right there
   in the worker.
3. Unless exact counts are asked for (per-query output), a query with ``max K`` items above ``T``
   misses at every K: it stops collecting (censored).

``l2`` scores are not symmetric under the query/gallery vector split (:func:`prepare_vectors`),
so with ``l2`` each task gets its own block, read by rows only.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ropebench.engines import kernels
from ropebench.engines.base import COUNTERS, FirstHits, SearchRequest, SearchRun, TaskData
from ropebench.engines.core import (
    FP32,
    Judge,
    LevelCounter,
    Precision,
    RelevantLevels,
    check_range,
    irrelevant_eligible,
    judge_task,
    level_row_counts,
    row_counts,
    task_bound,
)
from ropebench.engines.core.levels import FLOOR_GROUPS, group_maxima
from ropebench.engines.pool import run_tiles

__all__ = ["OnePassEngine", "OnePassSettings", "one_pass_first_hits", "TaskReader", "TILE", "SMALL_BLOCK"]

TILE = 2048  # tile side: (TILE, TILE) float32 scores per worker (16 MiB)
# All-relevant candidates are decided together once this many have come (a tile brings a few hundred:
# deciding them tile by tile costs ~100 small numpy calls per tile, more than the candidates).
LEVEL_BATCH = 1 << 16
LEVEL_OUTLIERS = 64  # rows and columns of a tile compared with their own level cut-off, below the tile's pass
# Blocks below this many multiply-adds, or with a single row or column, are counted row by row.
SMALL_BLOCK = 1 << 22
# With numba installed, the tile selection is compiled by default from this many multiply-adds (summed
# over the tasks; ROPE-test size is about 2^40, a quarter of it 2^36).
COMPILED_WORK = 1 << 38


@dataclass(frozen=True)
class OnePassSettings:
    """The engine's sizes. The defaults are the measured best on 2 cores; tests shrink them so
    that small data reaches every code path (tiles, small blocks)."""

    tile: int = TILE
    small_block: int = SMALL_BLOCK
    # Tile selection by the compiled kernel (kernels.select, numba) when true, by numpy when false,
    # when None by the kernel if numba is installed and the search is large (COMPILED_WORK): the
    # same candidates reach the readers.
    compiled: bool | None = None


def _edges(n: int, tile: int) -> np.ndarray:
    """Tile boundaries: ``ceil(n / tile)`` tiles of nearly equal size (no sliver tiles)."""
    n_tiles = -(-n // tile)
    return (np.arange(n_tiles + 1, dtype=np.int64) * n) // max(n_tiles, 1)


def _waves(tiles: list[tuple[int, int]], n_r: int, symmetric: bool) -> list[tuple[int, int]]:
    """``tiles`` in waves of diagonals: wave ``k`` holds the tiles ``(i, i + k)`` (modulo ``n_r`` unless
    symmetric), ``i`` ascending. A wave meets each tile row and column about once, so between two
    tiles of the same queries lie about a wave's worth of others: the level candidates of the first
    are decided, and their cut-offs raised, before the next (in row order, a row's next tiles came
    right after it, before any batch of its candidates was decided, and with two workers at once).
    Which tiles, and so every count, is unchanged; only the order."""
    def wave(tile: tuple[int, int]) -> tuple[int, int]:
        i, j = tile
        return (j - i if symmetric else (j - i) % n_r), i

    return sorted(tiles, key=wave)


class TaskReader:
    """Running state of one task: per query, counts above and at ``T`` so far, and censoring.

    ``levels``: with all-relevant measures, the task's :class:`LevelCounter`; the reader then
    collects every candidate down to the lowest relevant level still counted (``lo`` is the lower
    of the two cut-offs) and hands each to both; the levels decide theirs in batches of
    ``level_batch`` (a cut-off that lags behind only lets more candidates in, each decided exactly).
    """

    def __init__(self, data: TaskData, judge: Judge, max_k: int, exact: bool,
                 levels: LevelCounter | None = None, level_batch: int | None = None) -> None:
        self.data, self.judge, self.max_k, self.exact = data, judge, max_k, exact
        self.levels, self.level_batch = levels, LEVEL_BATCH if level_batch is None else level_batch
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # level candidates not yet decided
        self.n_pending = 0
        self.g_norm = data.screen_norms[1]
        self.first_lo = judge.cutoff(float(self.g_norm.max(initial=0.0)))  # +inf: not collecting
        self.lo = self.first_lo if levels is None else np.minimum(self.first_lo, levels.lo)
        self.scored = np.isfinite(judge.best)
        nq = len(data.queries)
        self.above = np.zeros(nq, dtype=np.int64)
        self.ties = np.zeros(nq, dtype=np.int64)
        self.censored = np.zeros(nq, dtype=bool)
        self.settled = 0

    def sort_out(self, queries: np.ndarray, gallery: np.ndarray, values: np.ndarray) -> Any:
        """Decide candidate scores (``values >= lo[queries]``). Reads only what never changes
        (the judge), so it runs outside the lock — float64 settlement included."""
        keep = irrelevant_eligible(self.data, queries, gallery)
        queries, gallery = queries[keep], gallery[keep]
        values = values[keep]
        if self.levels is None:
            return self._judge(queries, gallery, values)
        # Level candidates reach below the judge's cut-off; those below it are surely below T.
        # (A query censored meanwhile may still be judged here: its counts are replaced by censoring.)
        first = ~(values < self.first_lo[queries])
        return (*self._judge(queries[first], gallery[first], values[first]), (queries, gallery, values))

    def _judge(self, queries: np.ndarray, gallery: np.ndarray, values: np.ndarray) -> Any:
        decision = self.judge.decide(queries, gallery, values, self.data.exact_gallery, self.g_norm[gallery])
        return (np.unique(queries[decision.above], return_counts=True),
                np.unique(queries[decision.tie], return_counts=True), decision.settled)

    def level_maxima(self, queries: np.ndarray, scores: np.ndarray, by_rows: bool) -> np.ndarray | None:
        """With levels, a tile's :func:`group_maxima` for this reader's ``queries`` while their floors
        still want them (outside the lock)."""
        if self.levels is None or not self.levels.wants_maxima(queries):
            return None
        if by_rows and self.levels.compiled is not None:
            return self.levels.compiled.row_maxima(scores, FLOOR_GROUPS)
        return group_maxima(scores, by_rows)

    def add_maxima(self, queries: np.ndarray, items: np.ndarray, maxima: np.ndarray | None) -> None:
        """Fold :meth:`level_maxima` into the levels' floors (under the lock): cut-offs only rise."""
        if self.levels is None or maxima is None:
            return
        rows = self.levels.add_maxima(queries, items, maxima)
        if len(rows):
            self.lo[rows] = np.minimum(self.first_lo[rows], self.levels.lo[rows])

    def take(self, sorted_out: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Add what :meth:`sort_out` found (under the lock): counts and censoring. With levels, returns
        a batch of level candidates once ``level_batch`` have come, for the caller to decide with
        ``levels.sort_out`` outside the lock and add with :meth:`take_levels`."""
        (counted, n_counted), (tied, n_tied), settled = sorted_out[:3]
        self.settled += settled
        self.ties[tied] += n_tied
        if len(counted):
            self.above[counted] += n_counted
            if not self.exact:
                done = counted[(self.above[counted] >= self.max_k) & np.isfinite(self.first_lo[counted])]
                self.censored[done] = True
                self.first_lo[done] = np.inf
                if self.levels is None:
                    self.lo[done] = np.inf
        if self.levels is not None and len(sorted_out) > 3:
            if len(sorted_out[3][0]):
                self.pending.append(sorted_out[3])
                self.n_pending += len(sorted_out[3][0])
            self.lo[counted] = np.minimum(self.first_lo[counted], self.levels.lo[counted])
            if self.n_pending >= self.level_batch:
                return self.pop_pending()
        return None

    def pop_pending(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The level candidates not yet decided, as one batch (under the lock)."""
        if not self.pending:
            return None
        queries, gallery, values = (np.concatenate(part) for part in zip(*self.pending))
        self.pending, self.n_pending = [], 0
        return queries, gallery, values

    def take_levels(self, decided: tuple[np.ndarray, np.ndarray, np.ndarray, int]) -> None:
        """Add decided level candidates (under the lock); raise the cut-offs of queries whose levels died."""
        if self.levels is not None:
            rows = self.levels.take(decided)
            self.lo[rows] = np.minimum(self.first_lo[rows], self.levels.lo[rows])

    def decide_levels(self) -> None:
        """Decide and add the pending level candidates (no other thread running)."""
        batch = self.pop_pending()
        if batch is not None and self.levels is not None:
            self.take_levels(self.levels.sort_out(*batch))

    def finish(self) -> FirstHits:
        s = self.scored
        return FirstHits(scored=s, a=self.above[s], t=self.ties[s], p=self.judge.p[s], censored=self.censored[s])

    def finish_levels(self) -> RelevantLevels | None:
        if self.levels is None:
            return None
        self.decide_levels()
        return self.levels.finish(self.scored)


@dataclass
class Block:
    """One similarity block ``left · rightᵀ``, the tasks that read it, and its tile plan.

    ``rows`` has the rows of ``left`` as queries; ``columns`` the rows of ``right``.
    ``symmetric``: ``left is right`` and both readers are the same intra-domain task, so only
    tiles on and right of the diagonal are computed.
    """

    left: np.ndarray
    right: np.ndarray
    rows: TaskReader
    columns: TaskReader | None
    symmetric: bool
    tile: int

    def __post_init__(self) -> None:
        # Rows (columns) in order of their reader's cut-off, so a tile's queries have similar
        # cut-offs; the vectors are copied in that order so that tiles are plain slices.
        self.perm_left = np.argsort(self.rows.lo, kind="stable")
        if self.symmetric:
            self.perm_right = self.perm_left
        elif self.columns is not None:
            self.perm_right = np.argsort(self.columns.lo, kind="stable")
        else:
            self.perm_right = np.arange(len(self.right))
        self.sorted_copies()
        self.edges_left, self.edges_right = _edges(len(self.left), self.tile), _edges(len(self.right), self.tile)
        n_l, n_r = len(self.edges_left) - 1, len(self.edges_right) - 1
        self.tiles = [(i, j) for i in range(n_l) for j in range(i if self.symmetric else 0, n_r)]
        if self.rows.levels is not None or (self.columns is not None and self.columns.levels is not None):
            self.tiles = _waves(self.tiles, n_r, self.symmetric)

    def sorted_copies(self) -> None:
        """``sorted_left``/``sorted_right``: the vectors in tile order (an engine that screens from
        its own copies, e.g. on a device, overrides this and keeps none on the host)."""
        self.sorted_left = np.take(self.left, self.perm_left, axis=0)
        if self.symmetric:
            self.sorted_right = self.sorted_left
        elif self.columns is not None:
            self.sorted_right = np.take(self.right, self.perm_right, axis=0)
        else:
            self.sorted_right = self.right


def _single_threaded_blas(enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """BLAS on one thread while our own workers parallelise over tiles (needs threadpoolctl)."""
    if not enabled:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _run_block(block: Block, pool: ThreadPoolExecutor | None, buffers: threading.local,
               on_tile: Callable[[int], None], compiled: bool = False) -> None:
    """Compute the block tile by tile; each worker thread runs a tile's GEMM, its selection and
    the settlement of its band pairs.

    Whole tiles go to the workers (BLAS itself single-threaded): OpenBLAS's own threads spin
    after every GEMM and starve selection threads. Reader updates are serialised by a lock; they
    are sums and one-way flags, so the order in which tiles finish changes no count.
    """
    rows, columns = block.rows, block.columns
    column_reader = rows if block.symmetric else columns
    left, right = block.sorted_left, block.sorted_right
    edges_l, edges_r = block.edges_left, block.edges_right
    lock = threading.Lock()

    def run_tile(tile: tuple[int, int]) -> None:
        i, j = tile
        r0, r1, c0, c1 = edges_l[i], edges_l[i + 1], edges_r[j], edges_r[j + 1]
        shape = (r1 - r0, c1 - c0)
        buffer = getattr(buffers, "tile", None)
        if buffer is None or buffer.size < shape[0] * shape[1]:
            buffer = buffers.tile = np.empty(block.tile * block.tile, dtype=np.float32)
        scores = buffer[: shape[0] * shape[1]].reshape(shape)
        np.matmul(left[r0:r1], right[c0:c1].T, out=scores)
        # Which readers see this tile: by rows, always; by columns, unless it is a diagonal tile
        # of a symmetric block (the square's pairs are all read by rows).
        by_columns = column_reader is not None and not (block.symmetric and i == j)
        read_tile(scores, rows, column_reader if by_columns else None, block.perm_left[r0:r1],
                  block.perm_right[c0:c1], lock, buffers, on_tile, compiled)

    run_tiles(pool, block.tiles, run_tile)


def read_tile(scores: np.ndarray, rows: TaskReader, column_reader: TaskReader | None, query_r: np.ndarray,
              query_c: np.ndarray, lock: threading.Lock, buffers: threading.local, on_tile: Callable[[int], None],
              compiled: bool) -> None:
    """One tile's scores (``query_r`` the rows' queries of ``rows``, ``query_c`` the columns' of
    ``column_reader``, None where the tile is not read by columns) read by its readers: the level
    floors, the selection, the decisions (outside the lock) and the counts (under it). Every tile of
    the one-pass engine is read here, and so are the tiles another search computes for it
    (:class:`SharedCross`)."""
    # All-relevant counting: the tile's best items first raise each query's floor (its depth-th
    # best score is at least that), so only candidates that can still matter are collected.
    maxima_r = rows.level_maxima(query_r, scores, by_rows=True)
    maxima_c = column_reader.level_maxima(query_c, scores, by_rows=False) if column_reader is not None else None
    if maxima_r is not None or maxima_c is not None:
        with lock:
            rows.add_maxima(query_r, query_c, maxima_r)
            if column_reader is not None:
                column_reader.add_maxima(query_c, query_r, maxima_c)
    threshold_r = rows.lo[query_r]
    threshold_c = column_reader.lo[query_c] if column_reader is not None else None
    tau = min(threshold_r.min(), threshold_c.min() if threshold_c is not None else np.inf)
    for_rows = for_columns = None
    if np.isfinite(tau):
        # One pass over the tile for both directions; then each candidate is checked
        # against its own row's and column's cut-off. Read by rows only, each row is compared
        # with its own cut-off right away (a tile's cut-offs can spread widely: few-shot).
        if compiled:
            r, c, values = _select_compiled(scores, threshold_r, threshold_c, buffers)
        else:
            mask = getattr(buffers, "mask", None)
            if mask is None or mask.size < scores.size:
                mask = buffers.mask = np.empty(max(scores.size, TILE * TILE), dtype=bool)
            mask = mask[: scores.size].reshape(scores.shape)
            if threshold_c is not None and rows.levels is not None:
                _select_with_outliers(scores, threshold_r, threshold_c, mask)
            else:
                np.greater_equal(scores, tau if threshold_c is not None else threshold_r[:, None], out=mask)
            flat = np.flatnonzero(mask)
            r, c = np.divmod(flat, scores.shape[1])
            values = scores.reshape(-1)[flat]
        for_rows, for_columns = sort_out_tile(rows, column_reader, query_r, query_c, r, c, values,
                                              threshold_r, threshold_c)
    take_tile(lock, rows, column_reader, for_rows, for_columns, on_tile)


def _select_compiled(scores: np.ndarray, threshold_r: np.ndarray, threshold_c: np.ndarray | None,
                     buffers: threading.local) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tile's scores at or above their row's or their column's cut-off (rows only: their row's),
    by the compiled kernel (:mod:`ropebench.engines.kernels.select`): ``(rows, columns, values)``,
    views of this thread's output buffers (read before the thread's next tile). The buffers grow
    (the kernel runs again) when a tile needs more room; reusing them spares each tile three large
    allocations and their page faults (about 0.13 s of a ROPE-size MAP@R run, one thread)."""
    from ropebench.engines.kernels.select import select_tile

    if threshold_c is None:
        threshold_c = np.full(scores.shape[1], np.inf, dtype=np.float32)
    out = getattr(buffers, "selection", None)
    if out is None:
        out = buffers.selection = _selection_buffers(1 << 12)
    while True:
        found = select_tile(scores, threshold_r, threshold_c, *out)
        if found <= len(out[0]):
            return out[0][:found], out[1][:found], out[2][:found]
        out = buffers.selection = _selection_buffers(found + found // 4)


def _selection_buffers(room: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.empty(room, dtype=np.int64), np.empty(room, dtype=np.int64), np.empty(room, dtype=np.float32)


def _select_with_outliers(scores: np.ndarray, threshold_r: np.ndarray, threshold_c: np.ndarray,
                          mask: np.ndarray) -> None:
    """``mask``: scores at or above their row's or their column's cut-off, or above both some.

    Level cut-offs spread widely within a tile (a few queries have no floor yet), and one pass at the
    lowest of them selected ~6x the candidates any reader keeps. Here the pass is at the
    ``(LEVEL_OUTLIERS + 1)``-th lowest cut-off (``LEVEL_OUTLIERS`` below it), and the rows and
    columns below it are compared with their own cut-offs: every score at or above its row's or
    its column's cut-off is still selected (each once), so the readers receive the same candidates.

    The mask is ``score >= min(cut, row's cut-off, column's cut-off)`` (a row or column at or above
    ``cut`` adds nothing to ``score >= cut``): one pass against the columns' ``min(cut, cut-off)``
    (a broadcast row, as fast as a scalar; a gather of the low columns was 2x the pass), then the
    low rows again against ``min`` of both."""
    both = np.concatenate([threshold_r, threshold_c])
    k = min(LEVEL_OUTLIERS, len(both) - 1)
    cut = np.partition(both, k)[k]
    column = np.minimum(threshold_c, cut)
    np.greater_equal(scores, column, out=mask)
    low_r = np.flatnonzero(threshold_r < cut)
    if len(low_r):
        mask[low_r] = scores[low_r] >= np.minimum(threshold_r[low_r, None], column)


def sort_out_tile(rows: TaskReader, column_reader: TaskReader | None, query_r: np.ndarray, query_c: np.ndarray,
                  r: np.ndarray, c: np.ndarray, values: np.ndarray, threshold_r: np.ndarray,
                  threshold_c: np.ndarray | None) -> tuple[Any, Any]:
    """A tile's candidates (tile row ``r``, column ``c``, screened ``values``) handed to the reader by
    rows and, where the tile is read by columns, to that one: each keeps those at or above its own
    query's cut-off and decides them (outside the lock). Every engine's tile loop ends here."""
    take = values >= threshold_r[r]
    for_rows = rows.sort_out(query_r[r[take]], query_c[c[take]], values[take])
    for_columns = None
    if column_reader is not None and threshold_c is not None:
        take = values >= threshold_c[c]
        for_columns = column_reader.sort_out(query_c[c[take]], query_r[r[take]], values[take])
    return for_rows, for_columns


def take_tile(lock: threading.Lock, rows: TaskReader, column_reader: TaskReader | None, for_rows: Any,
              for_columns: Any, on_tile: Callable[[int], None]) -> None:
    """Add what :func:`sort_out_tile` decided to the readers, under the lock (sums and one-way flags).
    A full batch of level candidates is decided outside the lock (``LevelCounter.sort_out`` reads
    only the levels, whose one write, a band settled to its score, is idempotent) and added under it."""
    batches = []
    with lock:
        if for_rows is not None:
            batches.append((rows, rows.take(for_rows)))
        if for_columns is not None and column_reader is not None:
            batches.append((column_reader, column_reader.take(for_columns)))
        on_tile(1)
    for reader, batch in batches:
        if batch is not None and reader.levels is not None:
            decided = reader.levels.sort_out(*batch)
            with lock:
                reader.take_levels(decided)


def _plan(task_data: Mapping[str, TaskData], tasks: Sequence[str], symmetric_scores: bool
          ) -> list[tuple[str, str | None, bool]]:
    """Blocks as (task read by rows, task read by columns or None, symmetric), paired by the
    tasks' item sets (an intra task has one set on both sides)."""
    plan: list[tuple[str, str | None, bool]] = []
    pending = list(tasks)
    while pending:
        task = pending.pop(0)
        x, y = task_data[task].query_set, task_data[task].gallery_set
        reverse = next((other for other in pending
                        if (task_data[other].query_set, task_data[other].gallery_set) == (y, x)), None)
        if symmetric_scores and x == y:
            plan.append((task, None, True))
        elif symmetric_scores and reverse is not None:
            pending.remove(reverse)
            plan.append((task, reverse, False))
        else:
            plan.append((task, None, False))
    return plan


def _row_by_row(data: TaskData, small_block: int) -> bool:
    """Whether the engine counts a block row by row instead of in tiles: below ``small_block``
    multiply-adds, or with a single row or column."""
    left, right = data.queries, data.gallery
    return min(len(left), len(right)) < 2 or len(left) * len(right) * left.shape[1] <= small_block


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
    precision: Precision = FP32,
    all_relevant: bool = False,
    depth_k: int = 0,
    levels_out: dict[str, RelevantLevels] | None = None,
) -> dict[str, FirstHits]:
    """First-hit counts of every task, computing each similarity block once.

    Args:
        task_data: per task, its :class:`TaskData`; tasks of one item set share its arrays (the
            same array on both sides when the similarity is symmetric: cosine, ip).
        tasks: the tasks to score, e.g. ``("P2V", "V2P", "P2P")``.
        max_k: the largest K reported.
        exact_censored: exact counts even for queries that miss at every K (per-query output).
        threads: worker threads, each running whole tiles (GEMM with single-threaded BLAS, then
            selection and settlement; numpy releases the GIL). With 1, BLAS keeps its threads.
        symmetric_scores: ``q·g`` may serve both directions (False for ``l2``).
        on_start: called once with the total number of tiles.
        on_progress: called with a number of tiles finished.
        settings: tile and small-block sizes (default :class:`OnePassSettings`).
        counters: if given, the engine's counters are added to it (see ``COUNTERS``).
        precision: the screening precision of the tiles (numpy float32).
        all_relevant, depth_k, levels_out: also count every relevant level (MAP@R, RP, mAP@K) in
            the same tiles, down to rank ``max(R, depth_k)``, into ``levels_out[task]``.

    Returns:
        ``{task: FirstHits}``, equal to every other engine's.
    """
    settings = settings or OnePassSettings()
    plan: list[tuple[str, str | None, bool]] = []
    small: list[str] = []
    for row_task, column_task, symmetric in _plan(task_data, tasks, symmetric_scores):
        both = [row_task] + ([column_task] if column_task else [])
        if _row_by_row(task_data[row_task], settings.small_block):
            small += both
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
    # Per task read by a block, once the block is done: its counts, and the reader's numbers for the
    # counters. Readers (their level state above all) are dropped block by block, not kept to the end.
    finished: dict[str, tuple[FirstHits, RelevantLevels | None, int, int]] = {}

    def finish(task: str, task_reader: TaskReader) -> None:
        found = task_reader.finish_levels() if levels_out is not None else None
        levels = task_reader.levels
        extra = levels.settled if found is not None and levels is not None else 0
        finished[task] = (task_reader.finish(), found, task_reader.settled + extra,
                          task_reader.judge.relevant_settled)

    def reader(task: str) -> TaskReader:
        data = task_data[task]
        if not all_relevant:
            return TaskReader(data, judge_task(data, precision), max_k, exact_censored)
        check_range(data)
        bound = task_bound(data, precision)
        levels = LevelCounter(data, bound, depth_k, compiled=level_kernels)
        # T and p are the best level's: the relevant pairs are screened once, for both.
        return TaskReader(data, levels.judge(bound), max_k, exact_censored, levels)

    def prepare(row_task: str, column_task: str | None, symmetric: bool, helper: ThreadPoolExecutor | None = None
                ) -> Block:
        data = task_data[row_task]
        # ``helper``: a pool with a free worker, which builds the column reader meanwhile.
        other = helper.submit(reader, column_task) if helper is not None and column_task is not None else None
        rows = reader(row_task)
        columns = other.result() if other is not None else None if column_task is None else reader(column_task)
        return Block(data.queries, data.gallery, rows, columns, symmetric, settings.tile)

    buffers = threading.local()
    work = sum(len(data.queries) * len(data.gallery) * data.queries.shape[1] for data in task_data.values())
    compiled = kernels.chosen(settings.compiled, work, COMPILED_WORK, "compiled tile selection")
    level_kernels: Any = None  # the levels' per-candidate loops, compiled with the selection
    if compiled and all_relevant:
        from ropebench.engines.kernels import levels as found_kernels

        level_kernels = found_kernels
    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
    try:
        with _single_threaded_blas(pool is not None):
            # The next block is prepared by a worker while this one's tiles run; the first is prepared
            # here, its column reader by a worker (nothing else runs yet).
            upcoming = None
            for index, (row_task, column_task, _) in enumerate(plan):
                block = upcoming.result() if upcoming is not None else prepare(*plan[index], helper=pool)
                upcoming = None
                if pool is not None and index + 1 < len(plan):
                    upcoming = pool.submit(prepare, *plan[index + 1])
                _run_block(block, pool, buffers, progress, compiled)
                finish(row_task, block.rows)
                if column_task is not None and block.columns is not None:
                    finish(column_task, block.columns)
                del block
    finally:
        if pool is not None:
            pool.shutdown()
    hits: dict[str, FirstHits] = {}
    settled = relevant = 0
    for task in small:
        data = task_data[task]
        judge = judge_task(data, precision)
        scored = np.isfinite(judge.best)
        a, t, n = row_counts(data, judge, np.flatnonzero(scored))
        hits[task] = FirstHits(scored=scored, a=a, t=t, p=judge.p[scored], censored=np.zeros(len(a), dtype=bool))
        settled += n
        relevant += judge.relevant_settled
        if all_relevant and levels_out is not None:
            levels_out[task] = level_row_counts(data, task_bound(data, FP32), depth_k)
    for task, (task_hits, found, n_settled, n_relevant) in finished.items():
        hits[task] = task_hits
        settled += n_settled
        relevant += n_relevant
        if found is not None and levels_out is not None:
            levels_out[task] = found
    if counters is not None:
        counters["blocks_tiled"] = counters.get("blocks_tiled", 0) + len(plan)
        counters["blocks_small"] = counters.get("blocks_small", 0) + len(small)
        counters["pairs_settled"] = counters.get("pairs_settled", 0) + settled
        counters["relevant_settled"] = counters.get("relevant_settled", 0) + relevant
    return {task: hits[task] for task in tasks}


class SharedCross:
    """The cross-domain tasks of a retrieval request, read from the tiles of another search that
    computes the same blocks. Few-shot's linear screen (:mod:`ropebench.engines.fewshot_screen`)
    computes ``X · Yᵀ`` of every domain pair from the same float32 vectors; each of its tiles is
    also read by ``X2Y`` (by rows) and ``Y2X`` (by columns) exactly as the engine reads its own
    (:func:`read_tile`: the same selection, band and float64 settlement), so those blocks are not
    computed twice. The counts do not depend on which tiles a reader meets in which order or shape,
    only on every pair being met once. Only for first-hit counts with both directions of a pair
    requested (``applies``); the rest of the request is searched as usual."""

    def __init__(self, request: SearchRequest, compiled: bool | None = None, small_block: int = 0) -> None:
        data = request.task_data
        self.pairs: dict[tuple[str, str], tuple[str, str]] = {}  # (X, Y) -> (X2Y, Y2X), both orientations
        # The engine's own pairing of the tasks into blocks; a block it counts row by row
        # (``small_block``: its setting) is left to it (never censored there, counted as small).
        for forward, backward, _ in _plan(data, request.tasks, symmetric_scores=True):
            if backward is not None and not _row_by_row(data[forward], small_block):
                x, y = data[forward].query_set, data[forward].gallery_set
                self.pairs[(x, y)], self.pairs[(y, x)] = (forward, backward), (backward, forward)
        self.tasks = sorted({task for pair in self.pairs.values() for task in pair})
        work = sum(len(data[t].queries) * len(data[t].gallery) * data[t].queries.shape[1] for t in self.tasks)
        self.compiled = kernels.chosen(compiled, work, COMPILED_WORK, "compiled tile selection")
        self.request = request
        self.readers: dict[str, TaskReader] = {}  # built by restrict, once the blocks are known to come
        self.lock = threading.Lock()
        self.buffers = threading.local()

    @staticmethod
    def applies(request: SearchRequest) -> bool:
        """First-hit counts of a symmetric score (cosine, ip) screened in float32."""
        return request.symmetric_scores and not request.all_relevant and request.precision == FP32

    def restrict(self, blocks: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]]) -> None:
        """Keep only the pairs the other search computes, each from ``blocks[(X, Y)]``: its row and
        column vectors, which must be the very arrays ``X2Y`` and ``Y2X`` query with (the tiles'
        scores are then theirs); and build their tasks' readers (their thresholds: not before the
        blocks are known to come)."""
        data = self.request.task_data
        keep = {}
        for (x, y), (forward, backward) in self.pairs.items():
            found = blocks.get((x, y)) or (blocks[(y, x)][::-1] if (y, x) in blocks else None)
            if found is not None and found[0] is data[forward].queries and found[1] is data[backward].queries:
                keep[(x, y)] = (forward, backward)
        self.pairs = keep
        self.tasks = sorted({t for pair in keep.values() for t in pair})
        request = self.request

        def reader(task: str) -> TaskReader:
            return TaskReader(data[task], judge_task(data[task], request.precision), request.max_k,
                              request.exact_censored)

        if request.threads > 1 and len(self.tasks) > 1:
            with ThreadPoolExecutor(max_workers=request.threads) as pool:
                self.readers = dict(zip(self.tasks, pool.map(reader, self.tasks), strict=True))
        else:
            self.readers = {task: reader(task) for task in self.tasks}

    def read(self, x: str, y: str, query_x: np.ndarray, query_y: np.ndarray, scores: np.ndarray) -> None:
        """Read one tile of ``X · Yᵀ``: rows ``query_x`` (rows of ``X2Y``'s queries), columns
        ``query_y`` (of ``Y2X``'s). Thread-safe (the readers' lock)."""
        found = self.pairs.get((x, y))
        if found is None:  # a pair the request does not read both ways
            return
        forward, backward = found
        read_tile(scores, self.readers[forward], self.readers[backward], query_x, query_y, self.lock, self.buffers,
                  lambda n: None, self.compiled)

    def run(self) -> SearchRun:
        """The read tasks' counts, with their counters (a pair's block counted as tiled)."""
        hits = {task: reader.finish() for task, reader in self.readers.items()}
        counters = {name: 0 for name in COUNTERS}
        counters["blocks_tiled"] = len(self.pairs) // 2
        counters["pairs_settled"] = sum(reader.settled for reader in self.readers.values())
        counters["relevant_settled"] = sum(reader.judge.relevant_settled for reader in self.readers.values())
        counters["queries_censored"] = sum(int(h.censored.sum()) for h in hits.values())
        return SearchRun(hits=hits, counters=counters, engine={"name": "one-pass", "screen": FP32.name})


class OnePassEngine:
    """``one-pass`` (the default): each similarity block computed once for every task that
    reads it, in tiles, every candidate decided by the exactness core (see the module docstring)."""

    name = "one-pass"

    def __init__(self, settings: OnePassSettings | None = None) -> None:
        self.settings = settings or OnePassSettings()

    def fewshot_search(self, task_data: Mapping[str, TaskData], columns: Mapping[str, Any], *, max_k: int,
                       threads: int, shared: SharedCross | None = None) -> SearchRun | None:
        """The few-shot tasks through the linear screen (:mod:`ropebench.engines.fewshot_screen`:
        one item-score block per domain pair, prototype scores combined from it), or None where it
        does not apply (l2; a task without its support columns; ip sums that could leave
        float32's range): then the caller searches them
        task by task. An engine without this method always gets the per-task path.

        ``shared`` (:meth:`shared_cross`): the retrieval tasks that read the screen's blocks too
        (each block computed once for both); its counts are complete once this returns a run."""
        from ropebench.engines.fewshot_screen import linear_applies, linear_search

        if not linear_applies(task_data, columns):
            return None
        hook = None
        if shared is not None:
            blocks = {}
            for column in columns.values():
                x, y = column.query_set, column.support_set
                if (x, y) not in blocks and (y, x) not in blocks:
                    forward = next(n for n, c in columns.items() if (c.query_set, c.support_set) == (x, y))
                    backward = next(n for n, c in columns.items() if (c.query_set, c.support_set) == (y, x))
                    blocks[(x, y)] = (task_data[forward].queries, task_data[backward].queries)
            shared.restrict(blocks)
            hook = shared.read if shared.pairs else None
        return linear_search(task_data, columns, max_k=max_k, threads=threads, tile_hook=hook)

    def shared_cross(self, request: SearchRequest) -> SharedCross | None:
        """The cross tasks of ``request`` to be read from the few-shot screen's blocks
        (:class:`SharedCross`), or None where that does not apply, or where the tile selection is
        numpy's: the screen's tiles hold queries in product order, whose cut-offs spread widely, and
        numpy selects a tile at its lowest cut-off (the compiled selection compares each score with
        its own row's and column's)."""
        if not SharedCross.applies(request):
            return None
        shared = SharedCross(request, self.settings.compiled, self.settings.small_block)
        return shared if shared.compiled else None

    def search(self, request: SearchRequest) -> SearchRun:
        counters: dict[str, int] = {}
        on_start = request.on_start
        start = None if on_start is None else (lambda total: on_start(total, "tiles"))
        levels: dict[str, RelevantLevels] = {}
        hits = one_pass_first_hits(request.task_data, request.tasks, max_k=request.max_k,
                                   exact_censored=request.exact_censored, threads=request.threads,
                                   symmetric_scores=request.symmetric_scores, on_start=start,
                                   on_progress=request.on_progress, settings=self.settings, counters=counters,
                                   precision=request.precision, all_relevant=request.all_relevant,
                                   depth_k=request.depth_k, levels_out=levels)
        counters["queries_censored"] = sum(int(h.censored.sum()) for h in hits.values())
        ordered = {name: counters.get(name, 0) for name in COUNTERS}
        return SearchRun(hits=hits, counters=ordered, engine={"name": self.name, "screen": request.precision.name},
                         levels=levels)
