"""One-pass exact search: every similarity block is computed once and serves every task that needs it.

The per-task path (:mod:`ropebench.search`) runs one FAISS search per task, so ``P2V`` and ``V2P``
each compute ``P·Vᵀ``. Here each block is a numpy ``matmul`` in row tiles, and one tile feeds both
directions: ``P2V`` reads it by rows, ``V2P`` by columns. An intra-domain block is symmetric, so
only the tiles on and right of the diagonal are computed (its queries read them by rows and by
columns). The result is the same first-hit counts ``a, t, p`` (DESIGN.md §2) as the per-task path.

How one query's counts are found without ever seeing its whole score row at once:

1. Before the pass, its best relevant score ``s+`` is estimated (float32) from its (few) relevant
   pairs, and a band ``[lo, hi]`` is put around it, wider than the estimate's and the GEMM's
   float32 rounding errors together (``4 d 2⁻²⁴ |q| max|g|``, twice their sum).
2. During the pass, for each tile: scores ``>= lo`` are picked with one comparison and
   ``flatnonzero`` (selection costs two memory passes, far less than the GEMM). Eligible ones
   above ``hi`` are only counted; those inside the band are kept with their exact GEMM score. The
   scores of the query's relevant pairs are read from the tile too.
3. After the pass, ``s+`` is the max of those relevant scores — GEMM outputs, the very numbers
   the band entries are compared with, so every comparison for a query uses one computation.
   If ``s+`` falls outside ``[lo, hi]`` (the error bound failed), or a query's band grew past
   :data:`BAND_CAP` entries (massive exact ties), the query is rescored against the whole gallery
   by :func:`ropebench.search.exact_counts`, whose counts all come from its own single product.
4. Unless exact counts are asked for (per-query output), a query with ``max K`` eligible items
   above ``hi`` misses at every K: it stops collecting (censored, stored as ``max K, 0, 1``).

``l2`` scores are not symmetric under the query/gallery vector split (:func:`prepare_vectors`),
so with ``l2`` each task gets its own block, read by rows only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ropebench.search import FirstHits, TaskData, exact_counts

__all__ = ["one_pass_first_hits", "BAND_CAP", "TILE_SCORES"]

TILE_SCORES = 1 << 23  # scores per GEMM tile (32 MiB of float32, one per worker): bounds memory
CHUNK_SCORES = 1 << 22  # scores per selection chunk: the unit of work of a selection thread
BAND_CAP = 4096  # band entries kept per query before it is handed to exact rescoring
_U32 = 2.0 ** -24  # unit roundoff of float32


@dataclass
class _Accumulator:
    """Running state of one task: per query, counts above the band, band entries, relevant scores."""

    data: TaskData
    max_k: int
    exact: bool  # per-query output: never censor
    lo: np.ndarray = field(init=False)  # float32 thresholds; +inf = not collecting
    lo_band: np.ndarray = field(init=False)  # the band as planned (lo is overwritten on censoring)
    hi: np.ndarray = field(init=False)
    above: np.ndarray = field(init=False)
    band_size: np.ndarray = field(init=False)
    best: np.ndarray = field(init=False)  # s+ from GEMM outputs, filled during the pass
    redo: np.ndarray = field(init=False)  # queries for exact rescoring
    censored: np.ndarray = field(init=False)
    band: list = field(default_factory=list)
    pairs_by_query: tuple = field(init=False)
    pairs_by_gallery: tuple = field(init=False)

    def __post_init__(self) -> None:
        d = self.data
        nq = len(d.queries)
        q, g = _relevant_pairs(d)
        estimate = np.full(nq, -np.inf)
        scale = np.zeros(nq)
        q_norm = np.linalg.norm(d.queries, axis=1).astype(np.float64)
        g_norm = np.linalg.norm(d.gallery, axis=1).astype(np.float64)
        step = 1 << 13  # pairs gathered at a time: (step, d) float32 per side
        for start in range(0, len(q), step):
            qs, gs = q[start:start + step], g[start:start + step]
            # A float32 estimate: it and the GEMM value each lie within d·u·|q||g| of the exact
            # dot product, so they differ by at most twice that; the band is twice that again.
            dots = np.einsum("ij,ij->i", d.queries[qs], d.gallery[gs]).astype(np.float64)
            np.maximum.at(estimate, qs, dots)
            np.maximum.at(scale, qs, q_norm[qs] * g_norm[gs])
        width = 4.0 * (d.queries.shape[1] + 2) * _U32 * scale * (1 + 1e-3) + 1e-30
        scored = np.isfinite(estimate)
        low, high = estimate - width, estimate + width
        lo = np.where(scored, low, np.inf).astype(np.float32)
        hi = np.where(scored, high, np.inf).astype(np.float32)
        # Round outwards so the float32 band still contains the float64 one.
        self.lo = np.where(scored & (lo > low), np.nextafter(lo, np.float32(-np.inf)), lo)
        self.hi = np.where(scored & (hi < high), np.nextafter(hi, np.float32(np.inf)), hi)
        self.lo_band = self.lo.copy()
        self.above = np.zeros(nq, dtype=np.int64)
        self.band_size = np.zeros(nq, dtype=np.int64)
        self.best = np.full(nq, -np.inf, dtype=np.float32)
        self.redo = np.zeros(nq, dtype=bool)
        self.censored = np.zeros(nq, dtype=bool)
        order = np.argsort(g, kind="stable")
        self.pairs_by_query = (q, g)  # _relevant_pairs returns them sorted by query
        self.pairs_by_gallery = (q[order], g[order])

    def add(self, queries: np.ndarray, gallery: np.ndarray, values: np.ndarray) -> None:
        """Take candidate scores (``values >= lo[queries]``) of (query, gallery item) pairs."""
        d = self.data
        if d.intra:
            keep = gallery != d.query_rows[queries]
            if d.query_groups is not None:
                group = d.query_groups[queries]
                keep &= ~((d.gallery_groups[gallery] == group) & (group >= 0))
            queries, gallery, values = queries[keep], gallery[keep], values[keep]
        nq = len(self.lo)
        high = values > self.hi[queries]
        self.above += np.bincount(queries[high], minlength=nq)
        inside = ~high
        if inside.any():
            entry = (queries[inside], gallery[inside], values[inside])
            self.band.append(entry)
            self.band_size += np.bincount(entry[0], minlength=nq)
        full = self.band_size > BAND_CAP
        if full.any():
            self.redo |= full
            self.lo[full] = np.inf
            self.band_size[full] = 0  # counted once; their entries are dropped at the end
        if not self.exact:
            done = (self.above >= self.max_k) & np.isfinite(self.lo)
            if done.any():
                self.censored |= done
                self.lo[done] = np.inf

    def add_relevant(self, scores: np.ndarray, q0: int, q1: int, g0: int, g1: int, *, by_rows: bool) -> None:
        """Read the scores of relevant pairs with query in ``[q0, q1)`` and gallery in ``[g0, g1)``."""
        if by_rows:
            q, g = self.pairs_by_query
            lo, hi = np.searchsorted(q, [q0, q1])
            q, g = q[lo:hi], g[lo:hi]
            keep = (g >= g0) & (g < g1)
            q, g = q[keep], g[keep]
            values = scores[q - q0, g - g0]
        else:
            q, g = self.pairs_by_gallery
            lo, hi = np.searchsorted(g, [g0, g1])
            q, g = q[lo:hi], g[lo:hi]
            keep = (q >= q0) & (q < q1)
            q, g = q[keep], g[keep]
            values = scores[g - g0, q - q0]
        np.maximum.at(self.best, q, values)

    def finish(self, on_redo: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]) -> FirstHits:
        d = self.data
        scored = np.isfinite(self.lo_band)
        best = self.best
        outside = scored & ((best < self.lo_band) | (best > self.hi))
        redo = self.redo | outside
        censored = self.censored & ~redo
        nq = len(best)
        a = self.above.copy()
        t = np.zeros(nq, dtype=np.int64)
        p = np.zeros(nq, dtype=np.int64)
        if self.band:
            q = np.concatenate([e[0] for e in self.band])
            g = np.concatenate([e[1] for e in self.band])
            v = np.concatenate([e[2] for e in self.band])
            self.band = []
            keep = ~(redo[q] | censored[q])
            q, g, v = q[keep], g[keep], v[keep]
            relevant = d.gallery_products[g] == d.query_products[q]
            s = best[q]
            a += np.bincount(q[(v > s) & ~relevant], minlength=nq)
            t += np.bincount(q[(v == s) & ~relevant], minlength=nq)
            p += np.bincount(q[(v == s) & relevant], minlength=nq)
        a[censored], t[censored], p[censored] = self.max_k, 0, 1
        todo = np.flatnonzero(redo & scored)
        if len(todo):
            a[todo], t[todo], p[todo] = on_redo(todo)
        return FirstHits(scored=scored, a=a[scored], t=t[scored], p=p[scored], censored=censored[scored])


def _relevant_pairs(data: TaskData) -> tuple[np.ndarray, np.ndarray]:
    """All eligible (query, gallery) pairs of the same product, sorted by query; int64 arrays."""
    order = np.argsort(data.gallery_products, kind="stable")
    sorted_products = data.gallery_products[order]
    first = np.searchsorted(sorted_products, data.query_products, side="left")
    last = np.searchsorted(sorted_products, data.query_products, side="right")
    counts = last - first
    q = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    offsets = np.arange(len(q), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    g = order[np.repeat(first, counts) + offsets].astype(np.int64)
    if data.intra:
        keep = g != data.query_rows[q]
        if data.query_groups is not None:
            group = data.query_groups[q]
            keep &= ~((data.gallery_groups[g] == group) & (group >= 0))
        q, g = q[keep], g[keep]
    return q, g


@dataclass(frozen=True)
class Block:
    """One similarity block ``left · rightᵀ`` and the tasks that read it.

    ``by_rows`` has the rows of ``left`` as queries; ``by_columns`` the rows of ``right``.
    ``symmetric``: ``left is right`` and both readers are the same intra-domain task, so only
    tiles on and right of the diagonal are computed.
    """

    left: np.ndarray
    right: np.ndarray
    by_rows: _Accumulator
    by_columns: _Accumulator | None
    symmetric: bool = False


def _single_threaded_blas(enabled: bool):
    """BLAS on one thread while our own workers parallelise over tiles (needs threadpoolctl)."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _select(scores: np.ndarray, thresholds: np.ndarray, *, axis: int, buffers: threading.local) -> np.ndarray:
    """Flat indices of ``scores >= thresholds`` (thresholds along rows if axis=1, else along columns)."""
    mask = getattr(buffers, "mask", None)
    if mask is None or mask.size < scores.size:
        mask = buffers.mask = np.empty(max(scores.size, CHUNK_SCORES), dtype=bool)
    view = mask[:scores.size].reshape(scores.shape)
    np.greater_equal(scores, thresholds[:, None] if axis == 1 else thresholds[None, :], out=view)
    return np.flatnonzero(view)


def _run_block(block: Block, pool: ThreadPoolExecutor | None, buffers: threading.local,
               on_tile: Callable[[int], None]) -> None:
    """Compute the block tile by tile; each worker thread runs a tile's GEMM and its selection.

    Whole tiles go to the workers (BLAS itself single-threaded): OpenBLAS's own threads spin
    after every GEMM and starve selection threads, which made a parallel selection no faster
    than a serial one. Accumulator updates are serialised by a lock; they are sums, maxima and
    one-way flags, so the order in which tiles finish changes no count.
    """
    left, right = block.left, block.right
    n_left, n_right = len(left), len(right)
    rows_per_tile = int(max(64, min(n_left, TILE_SCORES // max(n_right, 1))))
    lock = threading.Lock()

    def run_tile(i0: int) -> None:
        i1 = min(n_left, i0 + rows_per_tile)
        c0 = i0 if block.symmetric else 0
        buffer = getattr(buffers, "tile", None)
        if buffer is None or buffer.size < rows_per_tile * n_right:
            buffer = buffers.tile = np.empty(rows_per_tile * n_right, dtype=np.float32)
        scores = buffer[: (i1 - i0) * (n_right - c0)].reshape(i1 - i0, n_right - c0)
        np.matmul(left[i0:i1], right[c0:].T, out=scores)
        # Which part each reader sees: by rows, the whole tile; by columns, for a symmetric block
        # only the columns right of the diagonal square (the square's pairs are read by rows).
        col_start = (i1 - c0) if block.symmetric else 0
        results = [_select_job(job, buffers) for job in _chunks(scores, i0, c0, col_start, block)]
        columns = block.by_rows if block.symmetric else block.by_columns
        with lock:
            for (accumulator, q_of, g_of), r, c, values in results:
                if len(values):
                    accumulator.add(q_of(r, c), g_of(r, c), values)
            block.by_rows.add_relevant(scores, i0, i1, c0, n_right, by_rows=True)
            if columns is not None and n_right - c0 - col_start > 0:
                columns.add_relevant(scores[:, col_start:], c0 + col_start, n_right, i0, i1, by_rows=False)
            on_tile(i1 - i0)

    starts = range(0, n_left, rows_per_tile)
    if pool is None:
        for i0 in starts:
            run_tile(i0)
    else:
        for _ in pool.map(run_tile, starts):
            pass


def _chunks(scores, i0, c0, col_start, block):
    """Selection jobs for one tile: (reader, sub-array, thresholds, axis, index mapping)."""
    jobs = []
    n_rows, n_cols = scores.shape
    step = max(1, CHUNK_SCORES // max(n_cols, 1))
    rows = block.by_rows
    for r0 in range(0, n_rows, step):
        sub = scores[r0:r0 + step]
        jobs.append(((rows, lambda r, c, o=i0 + r0: r + o, lambda r, c: c + c0),
                     sub, rows.lo[i0 + r0:i0 + r0 + len(sub)], 1))
    columns = block.by_rows if block.symmetric else block.by_columns
    if columns is not None and n_cols - col_start > 0:
        q0 = c0 + col_start
        for r0 in range(0, n_rows, step):
            sub = scores[r0:r0 + step, col_start:]
            jobs.append(((columns, lambda r, c, o=q0: c + o, lambda r, c, o=i0 + r0: r + o),
                         sub, columns.lo[q0:q0 + sub.shape[1]], 0))
    return jobs


def _select_job(job, buffers):
    reader, sub, thresholds, axis = job
    flat = _select(sub, thresholds, axis=axis, buffers=buffers)
    r, c = np.divmod(flat, sub.shape[1])
    return reader, r, c, sub[r, c]


def one_pass_first_hits(
    domain_vectors: dict[str, tuple[np.ndarray, np.ndarray]],
    task_data: dict[str, TaskData],
    tasks: Sequence[str],
    *,
    max_k: int,
    exact_censored: bool = False,
    threads: int = 1,
    symmetric_scores: bool = True,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, FirstHits]:
    """First-hit counts of every task, computing each similarity block once.

    Args:
        domain_vectors: per domain code, ``(query-side, gallery-side)`` float32 vectors, C-contiguous;
            the same array twice when the similarity is symmetric (cosine, ip).
        task_data: per task, its :class:`TaskData` (built from the same arrays).
        tasks: the tasks to score, e.g. ``("P2V", "V2P", "P2P")``.
        max_k: the largest K reported.
        exact_censored: exact counts even for queries that miss at every K (per-query output).
        threads: worker threads, each running whole tiles (GEMM with single-threaded BLAS, then
            selection; numpy releases the GIL). With 1, BLAS keeps the threads the caller set.
        symmetric_scores: ``q·g`` may serve both directions (False for ``l2``).
        on_start: called once with the total number of block rows.
        on_progress: called with a number of block rows finished.

    Returns:
        ``{task: FirstHits}``, equal to :func:`ropebench.search.first_hit_counts` per task.
    """
    accumulators = {task: _Accumulator(task_data[task], max_k, exact_censored) for task in tasks}
    blocks: list[Block] = []
    pending = list(tasks)
    while pending:
        task = pending.pop(0)
        x, y = task[0], task[2]
        queries, _ = domain_vectors[x]
        _, gallery = domain_vectors[y]
        reverse = f"{y}2{x}"
        if symmetric_scores and x == y:
            blocks.append(Block(queries, queries, accumulators[task], None, symmetric=True))
        elif symmetric_scores and reverse in pending:
            pending.remove(reverse)
            blocks.append(Block(queries, gallery, accumulators[task], accumulators[reverse]))
        else:
            blocks.append(Block(queries, gallery, accumulators[task], None))
    if on_start is not None:
        on_start(sum(len(block.left) for block in blocks))
    buffers = threading.local()
    progress = on_progress or (lambda n: None)
    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
    try:
        with _single_threaded_blas(pool is not None):
            for block in blocks:
                _run_block(block, pool, buffers, progress)
    finally:
        if pool is not None:
            pool.shutdown()
    return {task: accumulators[task].finish(lambda rows, t=task: exact_counts(task_data[t], rows))
            for task in tasks}
