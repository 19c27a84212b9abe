"""The `faiss` engine: for each query, the first-hit counts ``a, t, p`` (docs/protocol.md). No I/O here.

How a task is searched:

1. The exactness core (:mod:`ropebench.engines.core`) finds every query's threshold ``T`` (the
   float64 score of its best eligible relevant item), ``p``, and a float32 cut-off below which a
   screened score is surely below ``T``.
2. FAISS exact inner-product search (``IndexFlatIP``) returns each query's top ``k`` gallery items
   with ``k = max K + (most items any query excludes) + 1``. Its irrelevant eligible candidates
   are decided by the core, pair by pair (float64 settlement inside the band).
3. The list is complete when its last score is below the query's cut-off: every unlisted item
   scores at most that and is surely below ``T``. Otherwise, with ``max K`` items surely above
   ``T`` listed, the query misses at every K (censored; its exact ``a`` is computed only when
   asked, for per-query output); any other query is screened again against its whole gallery
   with numpy, and the core decides every candidate of that row.

All three similarities are inner products here: ``cosine`` on L2-normalised copies and ``l2``
as ``[q, 1] · [2g, -|g|^2] = -|q - g|^2 + |q|^2``, which ranks a query's gallery exactly as
the negative squared distance does (``|q|^2`` is constant per query).
"""


from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ropebench.engines.base import COUNTERS, FirstHits, SearchRequest, SearchRun, TaskData
from ropebench.engines.core import (
    FP32,
    RelevantLevels,
    irrelevant_eligible,
    judge_task,
    level_row_counts,
    row_counts,
    task_bound,
)

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
    counters: dict[str, int] | None = None,
) -> FirstHits:
    """First-hit counts for every query of a task (see the module docstring for the method).

    Args:
        data: the task's vectors and labels.
        max_k: the largest K reported.
        exact_censored: also compute the exact ``a`` of queries that miss at every K.
        on_progress: called with the number of queries finished after each batch.
        query_batch: queries per FAISS call (default :data:`QUERY_BATCH`).
        counters: if given, ``pairs_settled``, ``relevant_settled`` and ``faiss_searches`` are added to it.
    """
    faiss = _faiss()
    if query_batch is None:
        query_batch = QUERY_BATCH
    judge = judge_task(data, FP32)
    scored = np.isfinite(judge.best)
    query_index = np.flatnonzero(scored)
    g_norm = data.screen_norms[1]
    lo = judge.cutoff(float(g_norm.max(initial=0.0)))
    n_gallery = data.gallery.shape[0]
    k = int(min(n_gallery, max_k + data.n_excluded().max(initial=0) + 1))
    a = np.zeros(len(query_index), dtype=np.int64)
    t = np.zeros_like(a)
    censored = np.zeros(len(query_index), dtype=bool)
    unresolved = []
    settled = 0
    searches = 0
    index = faiss.IndexFlatIP(data.gallery.shape[1])
    index.add(data.gallery)
    for start in range(0, len(query_index), query_batch):
        rows = query_index[start:start + query_batch]
        scores, columns = index.search(data.queries[rows], k)
        searches += 1
        r, c = np.nonzero((columns >= 0) & ~(scores < lo[rows, None]))
        q, g = rows[r], columns[r, c]
        keep = irrelevant_eligible(data, q, g)
        r, q, g = r[keep], q[keep], g[keep]
        decision = judge.decide(q, g, scores[r, c[keep]], data.exact_gallery, g_norm[g])
        settled += decision.settled
        block = slice(start, start + len(rows))
        a[block] = np.bincount(r[decision.above], minlength=len(rows))
        t[block] = np.bincount(r[decision.tie], minlength=len(rows))
        if k < n_gallery:
            complete = scores[:, -1] < lo[rows]
            surely_missed = ~complete & (a[block] >= max_k)
            censored[block] = surely_missed & (not exact_censored)
            unresolved.append(start + np.flatnonzero(~complete & ~censored[block]))
        if on_progress is not None:
            on_progress(len(rows))
    n_rescored = 0
    if unresolved:
        redo = np.concatenate(unresolved)
        if len(redo):
            a[redo], t[redo], n = row_counts(data, judge, query_index[redo])
            settled += n
            n_rescored = len(redo)
    if counters is not None:
        counters["pairs_settled"] = counters.get("pairs_settled", 0) + settled
        counters["relevant_settled"] = counters.get("relevant_settled", 0) + judge.relevant_settled
        counters["faiss_searches"] = counters.get("faiss_searches", 0) + searches
    return FirstHits(scored=scored, a=a, t=t, p=judge.p[scored], censored=censored, n_rescored=n_rescored)


class FaissEngine:
    """``faiss``: one exact FAISS ``IndexFlatIP`` search per task (see the module docstring).

    The plain reference the one-pass engine is compared against. Computes each cross block twice
    (once per direction).
    """

    name = "faiss"

    def __init__(self, *, query_batch: int = QUERY_BATCH) -> None:
        self.query_batch = query_batch

    def search(self, request: SearchRequest) -> SearchRun:
        task_data = request.task_data
        if request.on_start is not None:
            request.on_start(sum(len(task_data[task].queries) for task in request.tasks), "queries")
        hits: dict[str, FirstHits] = {}
        levels: dict[str, RelevantLevels] = {}
        counters: dict[str, int] = {}
        with faiss_threads(request.threads):
            for task in request.tasks:
                hits[task] = first_hit_counts(task_data[task], max_k=request.max_k,
                                              exact_censored=request.exact_censored, on_progress=request.on_progress,
                                              query_batch=self.query_batch, counters=counters)
                if request.all_relevant:
                    # Every relevant item's rank: whole rows screened with numpy (a FAISS list of max K
                    # items does not reach R); each candidate decided by the core in float64.
                    levels[task] = level_row_counts(task_data[task], task_bound(task_data[task], FP32),
                                                    request.depth_k)
        counters["queries_rescored"] = sum(h.n_rescored for h in hits.values())
        counters["queries_censored"] = sum(int(h.censored.sum()) for h in hits.values())
        return SearchRun(hits=hits, counters={name: counters.get(name, 0) for name in COUNTERS},
                         engine={"name": self.name, "screen": "fp32"}, levels=levels)
