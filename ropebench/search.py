"""Exact search: for each query, the first-hit counts ``a, t, p`` of DESIGN.md §2. No I/O here.

How a task is searched:

1. FAISS exact inner-product search (``IndexFlatIP``) returns each query's top ``k`` gallery
   items with ``k = max K + (most items any query excludes)``, so every query keeps at least
   ``max K`` eligible candidates after self/group exclusion.
2. From one query's candidate list: ``s+`` = best score of an eligible relevant item, and
   ``a, t, p`` are counted *by score*, never by FAISS's order among equal scores.
3. The list is exact unless the tie block at ``s+`` may run past its end (the last candidate
   scores ``>= s+``). Such queries are rescored against the whole gallery with one matrix
   product, and all their counts come from that one row, so every comparison within a query
   uses scores from one computation.
4. A query with no eligible relevant item in its list, but at least ``max K`` eligible items
   scoring strictly above the list's last score, has ``a >= max K``: it misses at every K.
   Its exact ``a`` is only computed when asked (per-query output); any other query without a
   listed relevant item is rescored like (3).

All three similarities are inner products here: ``cosine`` on L2-normalised copies and ``l2``
as ``[q, 1] · [2g, -|g|^2] = -|q - g|^2 + |q|^2``, which ranks a query's gallery exactly as
the negative squared distance does (``|q|^2`` is constant per query).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["TaskData", "FirstHits", "prepare_vectors", "first_hit_counts", "exact_counts", "faiss_threads",
           "QUERY_BATCH"]

QUERY_BATCH = 4096  # queries per FAISS call: bounds the candidate arrays, paces the progress bar
NORMALIZE_BATCH = 4096  # rows normalised per float64 block (bounds its temporary)
EXACT_BATCH = 256  # queries per full-row rescoring block: (256 × gallery) float32 scores


_faiss_thread_count: int | None = None  # set by faiss_threads, applied when a FAISS search runs
_faiss_default_threads: int | None = None  # FAISS's own setting, read when _faiss first imports it


@contextlib.contextmanager
def faiss_threads(count: int) -> Iterator[None]:
    """FAISS searches run inside use ``count`` OpenMP threads.

    FAISS is not imported here (0.2 s): the default engine may never need it. If it is already
    loaded its setting is changed now and restored on exit; otherwise it is set on first use.
    """
    global _faiss_thread_count
    faiss = sys.modules.get("faiss")
    previous_omp = faiss.omp_get_max_threads() if faiss is not None else None
    previous, _faiss_thread_count = _faiss_thread_count, count
    if faiss is not None:
        faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        _faiss_thread_count = previous
        restore = previous_omp if previous_omp is not None else _faiss_default_threads
        if restore is not None:  # loaded before, or first imported by a search inside
            sys.modules["faiss"].omp_set_num_threads(restore)


def _faiss():
    """Import FAISS, remembering its own thread setting, and apply :func:`faiss_threads`'s."""
    global _faiss_default_threads
    first = "faiss" not in sys.modules
    import faiss

    if first:
        _faiss_default_threads = faiss.omp_get_max_threads()
    if _faiss_thread_count is not None:
        faiss.omp_set_num_threads(_faiss_thread_count)
    return faiss


@dataclass(frozen=True)
class TaskData:
    """The arrays of one task ``X2Y``.

    Attributes:
        queries: ``(nq, d')`` float32 query vectors (already prepared for inner product).
        gallery: ``(ng, d')`` float32 gallery vectors.
        query_products, gallery_products: int64 product codes.
        query_rows: ``(nq,)`` int64 row of each query inside the gallery (intra-domain tasks,
            for self-exclusion), or None for cross-domain tasks.
        query_groups, gallery_groups: int64 group codes (-1 = none) for group exclusion in
            intra-domain tasks, or None.
    """

    queries: np.ndarray
    gallery: np.ndarray
    query_products: np.ndarray
    gallery_products: np.ndarray
    query_rows: np.ndarray | None = None
    query_groups: np.ndarray | None = None
    gallery_groups: np.ndarray | None = None

    @property
    def intra(self) -> bool:
        return self.query_rows is not None

    def n_relevant(self) -> np.ndarray:
        """Eligible relevant gallery items per query (0 = the query is skipped)."""
        n_products = int(max(self.query_products.max(initial=-1), self.gallery_products.max(initial=-1))) + 1
        per_product = np.bincount(self.gallery_products, minlength=n_products)
        count = per_product[self.query_products]
        if not self.intra:
            return count
        if self.query_groups is None:
            return count - 1  # the query itself
        # Items sharing both product and group with the query (itself included) are excluded.
        excluded = _pair_counts(self.gallery_products, self.gallery_groups, self.query_products, self.query_groups)
        return count - np.where(self.query_groups >= 0, excluded, 1)

    def n_excluded(self) -> np.ndarray:
        """Gallery items each query excludes (itself and its group), whatever their product."""
        if not self.intra:
            return np.zeros(len(self.queries), dtype=np.int64)
        if self.query_groups is None:
            return np.ones(len(self.queries), dtype=np.int64)
        groups = self.gallery_groups
        sizes = np.bincount(groups[groups >= 0], minlength=int(groups.max(initial=-1)) + 1)
        return np.where(self.query_groups >= 0, sizes[np.maximum(self.query_groups, 0)], 1).astype(np.int64)


def _pair_counts(g_first: np.ndarray, g_second: np.ndarray, q_first: np.ndarray, q_second: np.ndarray) -> np.ndarray:
    """For each query, how many gallery rows share both its codes (codes >= -1)."""
    width = int(max(g_second.max(initial=0), q_second.max(initial=0))) + 2
    keys = np.concatenate([g_first * width + g_second + 1, q_first * width + q_second + 1])
    _, inverse = np.unique(keys, return_inverse=True)
    counts = np.bincount(inverse[: len(g_first)], minlength=int(inverse.max(initial=-1)) + 1)
    return counts[inverse[len(g_first):]]


@dataclass(frozen=True)
class FirstHits:
    """First-hit counts of the scored queries of one task.

    Attributes:
        scored: ``(nq,)`` bool, False for skipped queries (no eligible relevant item).
        a, t, p: ``(n_scored,)`` int64 counts for the scored queries, in query order. Where
            ``censored`` is True, the exact ``a`` was not computed: the query misses at every K, and
            ``a, t, p`` are stored as ``max K, 0, 1``.
        censored: ``(n_scored,)`` bool.
    """

    scored: np.ndarray
    a: np.ndarray
    t: np.ndarray
    p: np.ndarray
    censored: np.ndarray


def prepare_vectors(embeddings: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Query-side and gallery-side float32 vectors whose inner product ranks as ``metric``.

    Never modifies ``embeddings``. For ``cosine`` and ``ip`` both sides are the same array.
    """
    if metric == "cosine":
        # Normalise in float64 and round once: vectors with the same direction (x and 2x, or
        # integer vectors) become bit-identical float32 rows, so their scores tie exactly.
        vectors = np.empty(embeddings.shape, dtype=np.float32)
        for start in range(0, len(vectors), NORMALIZE_BATCH):
            block = np.asarray(embeddings[start:start + NORMALIZE_BATCH], dtype=np.float64)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            vectors[start:start + NORMALIZE_BATCH] = block
        return vectors, vectors
    if metric == "ip":
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        return vectors, vectors
    vectors = np.asarray(embeddings, dtype=np.float32)
    n = vectors.shape[0]
    queries = np.empty((n, vectors.shape[1] + 1), dtype=np.float32)
    queries[:, :-1] = vectors
    queries[:, -1] = 1.0
    gallery = np.empty_like(queries)
    np.multiply(vectors, 2.0, out=gallery[:, :-1])
    gallery[:, -1] = -np.einsum("ij,ij->i", vectors, vectors)
    return queries, gallery


def _counts_from_scores(
    scores: np.ndarray, relevant: np.ndarray, eligible: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``a, t, p`` and "has an eligible relevant item" from score rows (any column order)."""
    relevant_eligible = relevant & eligible
    best = np.where(relevant_eligible, scores, -np.inf).max(axis=1, initial=-np.inf)
    has = np.isfinite(best)
    above = scores > best[:, None]
    equal = scores == best[:, None]
    irrelevant = eligible & ~relevant
    a = np.count_nonzero(above & irrelevant, axis=1)
    t = np.count_nonzero(equal & irrelevant, axis=1)
    p = np.count_nonzero(equal & relevant_eligible, axis=1)
    return a, t, p, has


def _eligible(data: TaskData, query_index: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``(len(query_index), ncol)`` mask of gallery items a query may retrieve (not itself, not its group)."""
    if not data.intra:
        return np.ones(columns.shape, dtype=bool)
    eligible = columns != data.query_rows[query_index, None]
    if data.query_groups is not None:
        groups = data.query_groups[query_index, None]
        eligible &= ~((data.gallery_groups[columns] == groups) & (groups >= 0))
    return eligible


def _distinct_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(distinct rows, inverse)`` when some rows are bit-identical, else ``(matrix, None)``."""
    if len(matrix) < 2:
        return matrix, None
    view = np.ascontiguousarray(matrix).view(np.dtype((np.void, matrix.dtype.itemsize * matrix.shape[1])))
    _, first, inverse = np.unique(view.reshape(-1), return_index=True, return_inverse=True)
    if len(first) == len(matrix):
        return matrix, None
    return matrix[first], inverse.reshape(-1)


def exact_counts(data: TaskData, query_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``a, t, p`` of the given queries against the whole gallery (one matrix product per row block).

    Bit-identical gallery rows are scored once and the score is shared: BLAS does not promise
    equal results for equal rows at different positions (OpenBLAS's small-matrix and
    matrix-vector kernels differ in the last bit), and such rows must tie exactly.
    """
    n_gallery = data.gallery.shape[0]
    distinct, inverse = _distinct_rows(data.gallery)
    columns = np.broadcast_to(np.arange(n_gallery), (min(EXACT_BATCH, len(query_index)), n_gallery))
    out = [np.empty(len(query_index), dtype=np.int64) for _ in range(3)]
    for start in range(0, len(query_index), EXACT_BATCH):
        rows = query_index[start:start + EXACT_BATCH]
        scores = data.queries[rows] @ distinct.T
        if inverse is not None:
            scores = scores[:, inverse]
        relevant = data.gallery_products[None, :] == data.query_products[rows, None]
        cols = columns[: len(rows)]
        a, t, p, _ = _counts_from_scores(scores, relevant, _eligible(data, rows, cols))
        for array, value in zip(out, (a, t, p)):
            array[start:start + len(rows)] = value
    return out[0], out[1], out[2]


def first_hit_counts(
    data: TaskData,
    *,
    max_k: int,
    exact_censored: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> FirstHits:
    """First-hit counts for every query of a task (see the module docstring for the method).

    Args:
        data: the task's vectors and labels.
        max_k: the largest K reported.
        exact_censored: also compute the exact ``a`` of queries that miss at every K.
        on_progress: called with the number of queries finished after each batch.
    """
    faiss = _faiss()

    scored = data.n_relevant() > 0
    query_index = np.flatnonzero(scored)
    n_gallery = data.gallery.shape[0]
    k = int(min(n_gallery, max_k + data.n_excluded().max(initial=0)))
    a = np.zeros(len(query_index), dtype=np.int64)
    t = np.zeros_like(a)
    p = np.ones_like(a)
    censored = np.zeros(len(query_index), dtype=bool)
    unresolved = []
    index = faiss.IndexFlatIP(data.gallery.shape[1])
    index.add(data.gallery)
    for start in range(0, len(query_index), QUERY_BATCH):
        rows = query_index[start:start + QUERY_BATCH]
        scores, columns = index.search(data.queries[rows], k)
        relevant = data.gallery_products[columns] == data.query_products[rows, None]
        eligible = _eligible(data, rows, columns)
        batch_a, batch_t, batch_p, has = _counts_from_scores(scores, relevant, eligible)
        block = slice(start, start + len(rows))
        a[block], t[block], p[block] = batch_a, batch_t, np.maximum(batch_p, 1)
        if k < n_gallery:
            last = scores[:, -1:]
            best = np.where(relevant & eligible, scores, -np.inf).max(axis=1)
            tie_may_continue = has & (last[:, 0] >= best)
            # No relevant item listed: s+ <= last score, so every eligible item strictly above
            # the last score is above s+. With max K of them the query misses at every K.
            surely_missed = ~has & (np.count_nonzero(eligible & (scores > last), axis=1) >= max_k)
            censored[block] = surely_missed
            a[block][surely_missed] = max_k
            t[block][surely_missed] = 0
            unresolved.append(start + np.flatnonzero(
                tie_may_continue | (~has & ~surely_missed) | (surely_missed & exact_censored)))
        if on_progress is not None:
            on_progress(len(rows))
    if unresolved:
        redo = np.concatenate(unresolved)
        if len(redo):
            a[redo], t[redo], p[redo] = exact_counts(data, query_index[redo])
            censored[redo] = False
    return FirstHits(scored=scored, a=a, t=t, p=p, censored=censored)
