"""The `faiss` engine: for each query, the first-hit counts ``a, t, p`` (docs/protocol.md). No I/O here.

How a task is searched:

1. FAISS exact inner-product search (``IndexFlatIP``) returns each query's top ``k`` gallery
   items with ``k = max K + (most items any query excludes) + 1``, so every query keeps more
   than ``max K`` eligible candidates after self/group exclusion (see 4).
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ropebench.engines.base import FirstHits, SearchRun, TaskData
from ropebench.engines.exact import counts_from_scores, eligible_mask, exact_counts

__all__ = ["FaissEngine", "first_hit_counts", "faiss_threads", "QUERY_BATCH"]

QUERY_BATCH = 4096  # queries per FAISS call: bounds the candidate arrays, paces the progress bar

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


def _faiss() -> Any:
    """Import FAISS, remembering its own thread setting, and apply :func:`faiss_threads`'s."""
    global _faiss_default_threads
    first = "faiss" not in sys.modules
    import faiss

    if first:
        _faiss_default_threads = faiss.omp_get_max_threads()
    if _faiss_thread_count is not None:
        faiss.omp_set_num_threads(_faiss_thread_count)
    return faiss


def first_hit_counts(
    data: TaskData,
    *,
    max_k: int,
    exact_censored: bool = False,
    on_progress: Callable[[int], None] | None = None,
    query_batch: int | None = None,
) -> FirstHits:
    """First-hit counts for every query of a task (see the module docstring for the method).

    Args:
        data: the task's vectors and labels.
        max_k: the largest K reported.
        exact_censored: also compute the exact ``a`` of queries that miss at every K.
        on_progress: called with the number of queries finished after each batch.
        query_batch: queries per FAISS call (default :data:`QUERY_BATCH`).
    """
    faiss = _faiss()
    if query_batch is None:
        query_batch = QUERY_BATCH

    scored = data.n_relevant() > 0
    query_index = np.flatnonzero(scored)
    n_gallery = data.gallery.shape[0]
    # One candidate beyond max K (+ exclusions): with no relevant item listed, max K eligible items
    # strictly above the list's last score prove a miss at every K, which needs max K + 1 listed.
    k = int(min(n_gallery, max_k + data.n_excluded().max(initial=0) + 1))
    a = np.zeros(len(query_index), dtype=np.int64)
    t = np.zeros_like(a)
    p = np.ones_like(a)
    censored = np.zeros(len(query_index), dtype=bool)
    unresolved = []
    n_rescored = 0
    index = faiss.IndexFlatIP(data.gallery.shape[1])
    index.add(data.gallery)
    for start in range(0, len(query_index), query_batch):
        rows = query_index[start:start + query_batch]
        scores, columns = index.search(data.queries[rows], k)
        relevant = data.gallery_products[columns] == data.query_products[rows, None]
        eligible = eligible_mask(data, rows, columns)
        batch_a, batch_t, batch_p, has = counts_from_scores(scores, relevant, eligible)
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
            n_rescored = len(redo)
    return FirstHits(scored=scored, a=a, t=t, p=p, censored=censored, n_rescored=n_rescored)


class FaissEngine:
    """``faiss``: one exact FAISS ``IndexFlatIP`` search per task (see the module docstring).

    The plain reference the one-pass engine is compared against, and its fallback for blocks
    with too many relevant pairs to list. Computes each cross block twice (once per direction).
    """

    name = "faiss"

    def __init__(self, *, query_batch: int = QUERY_BATCH) -> None:
        self.query_batch = query_batch

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
        if on_start is not None:
            on_start(sum(len(task_data[task].queries) for task in tasks), "queries")
        hits: dict[str, FirstHits] = {}
        searches = 0
        with faiss_threads(threads):
            for task in tasks:
                hits[task] = first_hit_counts(task_data[task], max_k=max_k, exact_censored=exact_censored,
                                              on_progress=on_progress, query_batch=self.query_batch)
                n_queries = int(hits[task].scored.sum())
                searches += -(-n_queries // self.query_batch)
        counters = {
            "queries_rescored": sum(h.n_rescored for h in hits.values()),
            "queries_censored": sum(int(h.censored.sum()) for h in hits.values()),
            "blocks_tiled": 0,
            "blocks_small": 0,
            "blocks_fallback": 0,
            "faiss_searches": searches,
        }
        return SearchRun(hits=hits, counters=counters)
